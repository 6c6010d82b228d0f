"""--baseline: read an earlier report's JSON (validated, before the model loads) and diff this run against it.

Pure data in, plain data out: no torch, no jinja. Both sides are first reduced to the same `Snapshot`, from the
baseline's JSON (`snapshot_of_json`) and from this run's `Report` (`snapshot_of_report`), so the comparison
itself (`compare`) is symmetric and testable on hand-made JSON.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reporter import __version__
from reporter.errors import InputError
from reporter.report import (
    SCHEMA_VERSION,
    AlertChange,
    BaselineDiff,
    FamilyChange,
    FamilyCountDelta,
    GammaDrift,
    Report,
    RunDifference,
)

GENERATOR_PREFIX = "attn-report "
MAX_BASELINE_BYTES = 512 * 1024 * 1024  # a report of a 100-layer x 64-head model is ~50 MB; past this, not ours
_HINT = "give --baseline the .json that attn-report wrote beside an earlier report"


@dataclass(frozen=True)
class HeadSnap:
    layer: int
    head: int
    family: str
    scores: dict[str, float | None]


@dataclass(frozen=True)
class AlertSnap:
    code: str
    severity: str
    title: str
    message: str


@dataclass(frozen=True)
class Snapshot:
    """The parts of one report that a comparison reads."""

    generator: str
    schema_version: str
    model_id: str
    num_layers: int
    num_heads: int
    dtype: str
    device: str
    heads: tuple[HeadSnap, ...]
    family_counts: dict[str, int]
    gamma: float | None
    gamma_ci95: tuple[float, float] | None
    predicted: float | None  # None when the prediction does not apply
    regime: str
    alerts: tuple[AlertSnap, ...]
    probes: tuple[tuple[str, int], ...]  # (name, tokens analysed)
    probe_set: str
    settings: dict[str, Any]  # JSON-normalised (lists, not tuples)
    versions: dict[str, str]  # attn_report, transformers, torch


# ---------------------------------------------------------------------------------------------------- reading


def read_baseline(path: Path) -> Snapshot:
    """Read and validate an earlier report's JSON; every problem is an InputError with a hint."""
    shown = str(path)
    if not path.exists():
        raise InputError(f"baseline '{shown}' does not exist", "check the --baseline path")
    if not path.is_file():
        raise InputError(f"baseline '{shown}' is not a file", _HINT)
    if path.stat().st_size > MAX_BASELINE_BYTES:
        raise InputError(f"baseline '{shown}' is larger than {MAX_BASELINE_BYTES // 2**20} MB, "
                         "too large for a report JSON", _HINT)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"baseline '{shown}' is not UTF-8 text, so not a report JSON", _HINT) from None
    except OSError as exc:
        raise InputError(f"baseline '{shown}' cannot be read ({exc.strerror or exc})", _HINT) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"baseline '{shown}' is not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})",
                         _HINT) from None
    gen = doc.get("generator") if isinstance(doc, dict) else None
    if not isinstance(gen, str) or not gen.startswith(GENERATOR_PREFIX):
        raise InputError(f"baseline '{shown}' is JSON but not an attn-report report (no 'generator: "
                         f"attn-report …' field)", _HINT)
    version = doc.get("schema_version")
    if not isinstance(version, str) or not version.split(".")[0].isdigit():
        raise InputError(f"baseline '{shown}' has no valid schema_version", _HINT)
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(f"baseline '{shown}' uses report schema {version}; this attn-report {__version__} "
                         f"reads schema {SCHEMA_VERSION.split('.')[0]}.x",
                         "regenerate the baseline with this version of attn-report")
    return snapshot_of_json(doc, shown)


_KIND_NAMES = {dict: "an object", list: "an array", str: "a string", int: "an integer", float: "a number",
               bool: "true or false"}


class _Doc:
    """Typed access into the baseline's JSON: a missing or mistyped field names itself in the error."""

    def __init__(self, where: str) -> None:
        self.where = where

    def get(self, obj: Any, key: str, kinds: tuple[type, ...], dotted: str, optional: bool = False) -> Any:
        value = obj.get(key) if isinstance(obj, dict) else None
        if value is None and optional:
            return None
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            kind = " or ".join(_KIND_NAMES.get(k, k.__name__) for k in kinds)
            raise InputError(f"baseline '{self.where}' is not a complete attn-report JSON: "
                             f"'{dotted}' is missing or not {kind}",
                             "regenerate the baseline with this version of attn-report")
        return value

    def interval(self, obj: Any, dotted: str) -> tuple[float, float] | None:
        ci = obj.get("ci95") if isinstance(obj, dict) else None
        if ci is None:
            return None
        ok = isinstance(ci, list) and len(ci) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in ci)
        if not ok:
            raise InputError(f"baseline '{self.where}' has a malformed '{dotted}.ci95'",
                             "regenerate the baseline with this version of attn-report")
        return float(ci[0]), float(ci[1])


def snapshot_of_json(doc: dict[str, Any], where: str = "baseline") -> Snapshot:
    """Reduce a report JSON (a parsed dict) to a Snapshot, checking each field it reads."""
    d = _Doc(where)
    model = d.get(doc, "model", (dict,), "model")
    n_layers = d.get(model, "num_layers", (int,), "model.num_layers")
    n_heads = d.get(model, "num_heads", (int,), "model.num_heads")
    heads = []
    for i, h in enumerate(d.get(doc, "heads", (list,), "heads")):
        heads.append(HeadSnap(
            layer=d.get(h, "layer", (int,), f"heads[{i}].layer"), head=d.get(h, "head", (int,), f"heads[{i}].head"),
            family=d.get(h, "family", (str,), f"heads[{i}].family"),
            scores={str(k): (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None)
                    for k, v in d.get(h, "scores", (dict,), f"heads[{i}].scores").items()}))
    keys = {(h.layer, h.head) for h in heads}
    if len(heads) != n_layers * n_heads or len(keys) != len(heads):
        raise InputError(f"baseline '{where}' is inconsistent: {len(heads)} head entries for "
                         f"{n_layers} layers x {n_heads} heads", "regenerate the baseline")
    counts = d.get(doc, "family_counts", (dict,), "family_counts")
    distance = d.get(doc, "distance", (dict,), "distance")
    gamma = d.get(distance, "gamma", (dict,), "distance.gamma", optional=True)
    pred = d.get(doc, "prediction", (dict,), "prediction")
    applies = d.get(pred, "applies", (bool,), "prediction.applies")
    alerts = tuple(AlertSnap(code=d.get(a, "code", (str,), f"alerts[{i}].code"),
                             severity=str(a.get("severity", "")), title=str(a.get("title", "")),
                             message=str(a.get("message", "")))
                   for i, a in enumerate(d.get(doc, "alerts", (list,), "alerts")))
    probes = tuple((d.get(p, "name", (str,), f"probes[{i}].name"),
                    d.get(p, "num_tokens", (int,), f"probes[{i}].num_tokens"))
                   for i, p in enumerate(d.get(doc, "probes", (list,), "probes")))
    env = d.get(doc, "environment", (dict,), "environment")
    settings = d.get(doc, "settings", (dict,), "settings")
    return Snapshot(
        generator=str(doc.get("generator", f"{GENERATOR_PREFIX}{__version__}")),
        schema_version=d.get(doc, "schema_version", (str,), "schema_version"),
        model_id=d.get(model, "id", (str,), "model.id"),
        num_layers=n_layers, num_heads=n_heads,
        dtype=str(model.get("dtype", "")), device=str(model.get("device", "")),
        heads=tuple(heads),
        family_counts={str(k): int(v) for k, v in counts.items() if isinstance(v, int)},
        gamma=d.get(gamma, "value", (float,), "distance.gamma.value", optional=True) if gamma is not None else None,
        gamma_ci95=d.interval(gamma, "distance.gamma") if gamma is not None else None,
        predicted=d.get(pred, "gamma", (float,), "prediction.gamma", optional=True) if applies else None,
        regime=str(pred.get("regime", "not_applicable")),
        alerts=alerts,
        probes=probes,
        probe_set=str(env.get("probe_set", "")),
        settings=_normalised(settings),
        versions={k: str(env.get(k, "")) for k in ("attn_report", "transformers", "torch")},
    )


def snapshot_of_report(report: Report) -> Snapshot:
    """The same reduction from this run's Report, without serialising its thumbnails."""
    g = report.distance.gamma
    env = report.environment
    return Snapshot(
        generator=f"{GENERATOR_PREFIX}{__version__}",
        schema_version=report.schema_version,
        model_id=report.model.id,
        num_layers=report.model.num_layers, num_heads=report.model.num_heads,
        dtype=report.model.dtype, device=report.model.device,
        heads=tuple(HeadSnap(h.layer, h.head, h.family, {k: _finite(v) for k, v in h.scores.items()})
                    for h in report.heads),
        family_counts=dict(report.family_counts),
        gamma=_finite(g.value) if g else None,
        gamma_ci95=(float(g.ci95[0]), float(g.ci95[1])) if g and g.ci95 else None,
        predicted=_finite(report.prediction.gamma) if report.prediction.applies else None,
        regime=report.prediction.regime,
        alerts=tuple(AlertSnap(a.code, a.severity, a.title, a.message) for a in report.alerts),
        probes=tuple((p.name, p.num_tokens) for p in report.probes),
        probe_set=env.probe_set,
        settings=_normalised(report.settings),
        versions={"attn_report": env.attn_report, "transformers": env.transformers, "torch": env.torch},
    )


def _finite(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _normalised(settings: dict[str, Any]) -> dict[str, Any]:
    """As the JSON holds it: tuples become lists, so a setting read back compares equal to itself."""
    return json.loads(json.dumps(settings, allow_nan=True))  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------------------- comparing


def diff_against(baseline: Snapshot, report: Report) -> BaselineDiff:
    """This run's report compared with the baseline read by `read_baseline`."""
    return compare(baseline, snapshot_of_report(report))


def compare(old: Snapshot, new: Snapshot) -> BaselineDiff:
    """What changed from `old` (the baseline) to `new` (this run)."""
    warnings: list[str] = []
    same_shape = (old.num_layers, old.num_heads) == (new.num_layers, new.num_heads)
    if old.model_id != new.model_id:
        warnings.append(f"The baseline is a different model ('{old.model_id}'): differences reflect the model, "
                        "not only a change in it.")
    if not same_shape:
        warnings.append(f"The layer x head shape differs (baseline {old.num_layers} x {old.num_heads}, now "
                        f"{new.num_layers} x {new.num_heads}): per-head comparison is not applicable.")
    changes: list[FamilyChange] = []
    if same_shape:
        before = {(h.layer, h.head): h for h in old.heads}
        for h in new.heads:
            b = before.get((h.layer, h.head))
            if b is not None and b.family != h.family:
                changes.append(FamilyChange(
                    layer=h.layer, head=h.head, old=b.family, new=h.family,
                    old_score=b.scores.get(b.family), old_score_now=h.scores.get(b.family),
                    new_score_before=b.scores.get(h.family), new_score=h.scores.get(h.family)))
        changes.sort(key=lambda c: (c.layer, c.head))
    families = [*new.family_counts, *(f for f in old.family_counts if f not in new.family_counts)]
    counts = tuple(FamilyCountDelta(f, old.family_counts.get(f, 0), new.family_counts.get(f, 0),
                                    new.family_counts.get(f, 0) - old.family_counts.get(f, 0)) for f in families)
    return BaselineDiff(
        generator=old.generator, schema_version=old.schema_version, model_id=old.model_id,
        same_model=old.model_id == new.model_id and same_shape, shape=(old.num_layers, old.num_heads),
        heads_comparable=same_shape, warnings=tuple(warnings),
        n_heads_compared=len(new.heads) if same_shape else 0,
        family_changes=tuple(changes), family_counts=counts,
        gamma=gamma_drift(old, new), alerts=alert_changes(old, new), differences=run_differences(old, new),
    )


def gamma_drift(old: Snapshot, new: Snapshot) -> GammaDrift:
    diff = None if old.gamma is None or new.gamma is None else round(new.gamma - old.gamma, 4) + 0.0  # no -0.0
    overlap = None
    if old.gamma_ci95 and new.gamma_ci95:
        overlap = old.gamma_ci95[0] <= new.gamma_ci95[1] and new.gamma_ci95[0] <= old.gamma_ci95[1]
    if diff is None:
        which = "either run" if old.gamma is None and new.gamma is None else (
            "the baseline" if old.gamma is None else "this run")
        note = f"γ was not measured in {which}, so its drift is unknown."
    elif overlap is None:
        note = "One of the runs has no interval for γ, so the drift cannot be weighed against its uncertainty."
    elif overlap:
        note = "The two 95% intervals overlap: this drift alone is no evidence that the decay changed."
    else:
        note = "The two 95% intervals do not overlap: γ moved by more than either run's uncertainty."
    return GammaDrift(old=old.gamma, old_ci95=old.gamma_ci95, new=new.gamma, new_ci95=new.gamma_ci95,
                      difference=diff, intervals_overlap=overlap, old_predicted=old.predicted,
                      new_predicted=new.predicted, old_regime=old.regime, new_regime=new.regime, note=note)


def alert_changes(old: Snapshot, new: Snapshot) -> tuple[AlertChange, ...]:
    before = {a.code: a for a in old.alerts}
    now = {a.code: a for a in new.alerts}
    out = [AlertChange(c, "new", now[c].severity, now[c].title, "", now[c].message)
           for c in sorted(now.keys() - before.keys())]
    out += [AlertChange(c, "resolved", before[c].severity, before[c].title, before[c].message, "")
            for c in sorted(before.keys() - now.keys())]
    out += [AlertChange(c, "still", now[c].severity, now[c].title, before[c].message, now[c].message)
            for c in sorted(now.keys() & before.keys())]
    return tuple(out)


def _probes_str(probes: tuple[tuple[str, int], ...]) -> str:
    n_tokens = [n for _, n in probes]
    return f"{len(probes)} probes, {sum(n_tokens)} tokens, longest {max(n_tokens, default=0)}"


def run_differences(old: Snapshot, new: Snapshot) -> tuple[RunDifference, ...]:
    """What besides the model can move the numbers: probes, settings, versions, dtype and device."""
    out: list[RunDifference] = []
    for what, a, b in (("attn-report version", old.versions.get("attn_report", ""), new.versions["attn_report"]),
                       ("transformers version", old.versions.get("transformers", ""), new.versions["transformers"]),
                       ("torch version", old.versions.get("torch", ""), new.versions["torch"]),
                       ("dtype", old.dtype, new.dtype), ("device", old.device, new.device),
                       ("probe set", old.probe_set, new.probe_set)):
        if a != b:
            out.append(RunDifference(what, a or "unknown", b or "unknown"))
    if old.probes != new.probes:
        a, b = _probes_str(old.probes), _probes_str(new.probes)
        what = "probes" if a != b else "probes (same counts; names or lengths differ)"
        out.append(RunDifference(what, a, b))
    for key in [*new.settings, *(k for k in old.settings if k not in new.settings)]:
        if key == "probe_set":  # reported above, from the environment
            continue
        a_val, b_val = old.settings.get(key, _ABSENT), new.settings.get(key, _ABSENT)
        if a_val != b_val:
            out.append(RunDifference(f"setting {key}", _show(a_val), _show(b_val)))
    return tuple(out)


_ABSENT = object()


def _show(value: Any) -> str:
    return "absent" if value is _ABSENT else json.dumps(value, ensure_ascii=False)
