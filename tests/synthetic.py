"""A generator of synthetic attention maps with a planted head family, for known-answer tests."""

from __future__ import annotations

import numpy as np

from reporter.scores import SCORERS, MapContext, classify
from reporter.settings import Settings

S = Settings()
PLANTABLE = ("previous_token", "next_token", "local", "sink", "delimiter_band", "broad", "induction")


def _visible(i: int, n: int, causal: bool) -> np.ndarray:
    return np.arange(i + 1) if causal else np.arange(n)


def plant(family: str, n: int, causal: bool, noise: float, rng: np.random.Generator,
          ) -> tuple[np.ndarray, MapContext]:
    """One head [1, n, n]: (1 - noise) * the family's pattern + noise * random rows (Dirichlet(1))."""
    delim = np.zeros(n, dtype=bool)
    period, start = None, 0
    if family == "delimiter_band":
        delim[1] = True
        delim[rng.choice(np.arange(2, n), size=max(1, int(0.15 * n)), replace=False)] = True
    if family == "induction":
        period, start = (n - 1) // 2, 1
    pattern = np.zeros((n, n))
    noise_rows = np.zeros((n, n))
    for i in range(n):
        vis = _visible(i, n, causal)
        noise_rows[i, vis] = rng.dirichlet(np.ones(len(vis)))
        target: list[int] = []
        if family == "previous_token" and i >= 1:
            target = [i - 1]
        elif family == "next_token" and i + 1 < n:
            target = [i + 1]
        elif family == "local":
            target = [j for j in (i, i - 2, i - 3, i + 2, i + 3) if 1 <= j < n and j in vis]
        elif family == "sink":
            target = [0]
        elif family == "delimiter_band":
            target = [j for j in vis if delim[j] and j >= 1]
        elif family == "broad":
            target = list(vis)
        elif family == "induction":
            assert period is not None
            if start + period <= i < start + 2 * period:
                target = [i - period + 1]
            else:
                target = list(vis)
        pattern[i, target or [i]] = 1.0 / max(1, len(target))
    a = (1 - noise) * pattern + noise * noise_rows
    return a[None], MapContext(causal, delim, S, period, start)


def head_scores(attn: np.ndarray, ctx: MapContext) -> dict[str, float | None]:
    """Mean row value per family for a single head, None where the family has no counted rows."""
    out: dict[str, float | None] = {}
    for fam, fn in SCORERS.items():
        v = fn(attn, ctx)
        out[fam] = float(v[0].mean()) if v.shape[-1] else None
    if ctx.period is None:
        out["induction"] = None
    return out


def label(attn: np.ndarray, ctx: MapContext) -> str:
    return classify(head_scores(attn, ctx), S)  # type: ignore[arg-type]
