"""CI gates: `--fail-on` conditions, parsed before the run and checked against the finished Report."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from reporter.alerts import AlertKind
from reporter.errors import InputError
from reporter.report import Report
from reporter.scores import FAMILIES

GRAMMAR = ("gamma-outside:LO,HI | alert:CODE | family-count:FAMILY(>|>=|<|<=|=)N | "
           "gamma-drift:X | family-changed:N (the last two need --baseline)")
_OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq,
}
_COUNT = re.compile(r"^([a-z_]+)(>=|<=|>|<|=)(\d+)$")


@dataclass(frozen=True)
class Gate:
    """One condition; `check` returns the reason it fired, or None."""

    text: str
    check: Callable[[Report], str | None]
    needs_baseline: bool = False  # compares with --baseline, so cannot be checked without one


def parse_gate(text: str) -> Gate:
    kind, _, arg = text.partition(":")
    if kind == "gamma-outside":
        try:
            lo, hi = (float(v) for v in arg.split(","))
        except ValueError:
            raise InputError(f"--fail-on '{text}': expected gamma-outside:LO,HI with two numbers",
                             "for example gamma-outside:0.4,1.1") from None
        if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
            raise InputError(f"--fail-on '{text}': LO and HI must be finite numbers with LO <= HI",
                             "for example gamma-outside:0.4,1.1")
        return Gate(text, lambda r: _gamma_outside(r, lo, hi))
    if kind == "alert":
        codes = {k.value for k in AlertKind}
        if arg not in codes:
            raise InputError(f"--fail-on '{text}': unknown alert code '{arg}'",
                             "known codes: " + ", ".join(sorted(codes)))
        return Gate(text, lambda r: next((f"alert {a.code} fired: {a.message}" for a in r.alerts if a.code == arg),
                                         None))
    if kind == "family-count":
        m = _COUNT.match(arg)
        fams = (*FAMILIES, "mixed")
        if not m or m.group(1) not in fams:
            raise InputError(f"--fail-on '{text}': expected family-count:FAMILY(>|>=|<|<=|=)N",
                             "families: " + ", ".join(fams))
        fam, op, n = m.group(1), m.group(2), int(m.group(3))

        def count(r: Report) -> str | None:
            have = r.family_counts.get(fam, 0)
            return f"{have} heads are '{fam}' ({fam} {op} {n})" if _OPS[op](have, n) else None

        return Gate(text, count)
    if kind == "gamma-drift":
        try:
            limit = float(arg)
        except ValueError:
            limit = -1.0
        if not limit >= 0:  # also refuses nan
            raise InputError(f"--fail-on '{text}': expected gamma-drift:X with X >= 0",
                             "for example gamma-drift:0.05")
        return Gate(text, lambda r: _gamma_drift(r, limit), needs_baseline=True)
    if kind == "family-changed":
        if not arg.isdigit():
            raise InputError(f"--fail-on '{text}': expected family-changed:N with a whole number N",
                             "for example family-changed:0 (fire when any head changed family)")
        return Gate(text, lambda r: _family_changed(r, int(arg)), needs_baseline=True)
    raise InputError(f"--fail-on '{text}': unknown condition '{kind}'", f"use {GRAMMAR}")


def _gamma_outside(r: Report, lo: float, hi: float) -> str | None:
    g = r.distance.gamma
    if g is None:
        return f"γ could not be measured, so it is not inside [{lo:g}, {hi:g}]"
    return None if lo <= g.value <= hi else f"measured γ = {g.value:.3f} is outside [{lo:g}, {hi:g}]"


def _gamma_drift(r: Report, limit: float) -> str | None:
    if r.baseline is None:
        return "no baseline to compare with"
    g = r.baseline.gamma
    if g.difference is None:
        return g.note
    if abs(g.difference) <= limit:
        return None
    overlap = {True: "intervals overlap", False: "intervals apart", None: "no intervals"}[g.intervals_overlap]
    return f"γ moved from {g.old:.3f} to {g.new:.3f} (Δ {g.difference:+.3f}, more than {limit:g}; {overlap})"


def _family_changed(r: Report, limit: int) -> str | None:
    if r.baseline is None:
        return "no baseline to compare with"
    b = r.baseline
    if not b.heads_comparable:
        return (f"heads cannot be compared: the baseline has {b.shape[0]} x {b.shape[1]} heads, this model "
                f"{r.model.num_layers} x {r.model.num_heads}")
    n = len(b.family_changes)
    return f"{n} of {b.n_heads_compared} heads changed family (more than {limit})" if n > limit else None


def require_baseline(gates: list[Gate], baseline: str | None) -> None:
    """A gate that compares with a baseline needs one: say so before the model loads."""
    need = [g.text for g in gates if g.needs_baseline]
    if need and not baseline:
        raise InputError(f"--fail-on '{need[0]}' compares with an earlier report, but no --baseline was given",
                         "add --baseline old.json (the JSON of an earlier report)")


def failed_gates(report: Report, gates: list[Gate]) -> list[str]:
    """The reasons of every gate that fired, in the order given."""
    return [f"{g.text}: {why}" for g in gates if (why := g.check(report)) is not None]
