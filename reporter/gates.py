"""CI gates: `--fail-on` conditions, parsed before the run and checked against the finished Report."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from reporter.alerts import AlertKind
from reporter.errors import InputError
from reporter.report import Report
from reporter.scores import FAMILIES

GRAMMAR = "gamma-outside:LO,HI | alert:CODE | family-count:FAMILY(>|>=|<|<=|=)N"
_OPS: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "=": operator.eq,
}
_COUNT = re.compile(r"^([a-z_]+)(>=|<=|>|<|=)(\d+)$")


@dataclass(frozen=True)
class Gate:
    """One condition; `check` returns the reason it fired, or None."""

    text: str
    check: Callable[[Report], str | None]


def parse_gate(text: str) -> Gate:
    kind, _, arg = text.partition(":")
    if kind == "gamma-outside":
        try:
            lo, hi = (float(v) for v in arg.split(","))
        except ValueError:
            raise InputError(f"--fail-on '{text}': expected gamma-outside:LO,HI with two numbers",
                             "for example gamma-outside:0.4,1.1") from None
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
    raise InputError(f"--fail-on '{text}': unknown condition '{kind}'", f"use {GRAMMAR}")


def _gamma_outside(r: Report, lo: float, hi: float) -> str | None:
    g = r.distance.gamma
    if g is None:
        return f"γ could not be measured, so it is not inside [{lo:g}, {hi:g}]"
    return None if lo <= g.value <= hi else f"measured γ = {g.value:.3f} is outside [{lo:g}, {hi:g}]"


def failed_gates(report: Report, gates: list[Gate]) -> list[str]:
    """The reasons of every gate that fired, in the order given."""
    return [f"{g.text}: {why}" for g in gates if (why := g.check(report)) is not None]
