"""Data-driven findings: one enum of alert kinds, one table kind -> severity and title."""

from __future__ import annotations

from enum import Enum

from reporter.report import Alert


class AlertKind(str, Enum):
    SINK_HEADS = "SINK_HEADS"
    """Heads that put more than the alert share of their attention on token 0."""

    SINK_ON_FIRST_WORD = "SINK_ON_FIRST_WORD"
    """A causal model whose tokenizer adds no BOS: the sink lands on the first real token."""

    SINK_ON_SPECIAL = "SINK_ON_SPECIAL"
    """An encoder whose position 0 is a special token ([CLS]): weight there is not on a word."""

    DECAY_LIKE_UNIFORM = "DECAY_LIKE_UNIFORM"
    """The measured γ interval overlaps the one uniform attention gives: no evidence of real decay."""

    NULL_INTERVALS_OVERLAP = "NULL_INTERVALS_OVERLAP"
    """The γ intervals overlap, but the paired bootstrap separates the measured decay from uniform."""

    PREDICTION_OUTSIDE_CI = "PREDICTION_OUTSIDE_CI"
    """The config's closed-form γ falls outside the measured 95% interval."""

    POOR_TAIL_FIT = "POOR_TAIL_FIT"
    """The power law explains the tail poorly (low R²): read γ as a rough slope only."""

    NOOP_HEADS = "NOOP_HEADS"
    """Heads whose output norm is a small share of their layer's median head: close to switched off."""

    MASSIVE_ACTIVATIONS = "MASSIVE_ACTIVATIONS"
    """Hidden states at token 0 hold values far above the other tokens' (Sun et al. 2024)."""

    ROLLOUT_ON_FIRST_TOKEN = "ROLLOUT_ON_FIRST_TOKEN"
    """Rollout of a causal model piles its mass on token 0: the sink carried through the layers."""

    PROBES_TRUNCATED = "PROBES_TRUNCATED"
    """Some probes were cut to the token limit."""


# kind -> (severity, title, section of the report that holds the evidence)
_TABLE: dict[AlertKind, tuple[str, str, str]] = {
    AlertKind.SINK_HEADS: ("warning", "Heads parked on the first token", "table"),
    AlertKind.SINK_ON_FIRST_WORD: ("info", "No BOS token: the sink is the first word", "reading"),
    AlertKind.SINK_ON_SPECIAL: ("info", "Position 0 is a special token", "reading"),
    AlertKind.DECAY_LIKE_UNIFORM: ("warning", "Decay not distinguishable from uniform attention", "distance"),
    AlertKind.NULL_INTERVALS_OVERLAP: ("info", "γ intervals overlap the null's; the paired test separates them",
                                       "distance"),
    AlertKind.PREDICTION_OUTSIDE_CI: ("info", "Config prediction outside the measured interval", "distance"),
    AlertKind.POOR_TAIL_FIT: ("warning", "Power law fits the tail poorly", "distance"),
    AlertKind.NOOP_HEADS: ("info", "Heads that move almost nothing", "sink-evidence"),
    AlertKind.MASSIVE_ACTIVATIONS: ("info", "Massive activations at the first token", "sink-evidence"),
    AlertKind.ROLLOUT_ON_FIRST_TOKEN: ("info", "Rollout mass piles up on the first token", "rollout"),
    AlertKind.PROBES_TRUNCATED: ("info", "Probes truncated", "method"),
}


def make_alert(kind: AlertKind, message: str, heads: list[tuple[int, int]] | None = None,
               evidence: str | None = None) -> Alert:
    """An alert of `kind`; `evidence` overrides the table's section when a better one exists in this report."""
    severity, title, section = _TABLE[kind]
    return Alert(code=kind.value, severity=severity, title=title, message=message,
                 heads=tuple(heads or ()), evidence=evidence or section)


def heads_str(heads: list[tuple[int, int]], limit: int = 12) -> str:
    """'3.1, 3.4, …' in layer.head form (0-based), cut after `limit` entries."""
    names = [f"{layer}.{head}" for layer, head in heads]
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")
