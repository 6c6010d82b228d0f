"""Head scorers: one pure function per pattern family, each mapping attention maps to per-row values.

Every scorer takes `attn` of shape [heads, query, key] (rows sum to 1) and a `MapContext`, and returns
`[heads, n_rows]`: one value in [0, 1] per head and per *counted* row. `attn` may be a block of query
rows (the capture folds long maps a block at a time to bound memory): its first row is query
`ctx.row0`, and the key axis always holds the whole probe; sums over blocks equal the whole map's.
A head's family score is the mean of those values over every counted row of every probe, so long and
short probes weigh by rows.
Scorers never modify `attn`. Token 0 is treated as the sink position throughout: the first token of
a causal model (BOS where the tokenizer adds one, else the first real word), [CLS] in an encoder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from reporter.settings import Settings

FamilyName = Literal[
    "previous_token", "next_token", "local", "sink", "delimiter_band", "broad", "induction"
]
FAMILIES: tuple[FamilyName, ...] = (
    "previous_token", "next_token", "local", "sink", "delimiter_band", "broad", "induction"
)


@dataclass(frozen=True)
class MapContext:
    """What a scorer needs to know about the probe besides the map itself."""

    is_causal: bool
    is_delimiter: np.ndarray  # [key] bool
    settings: Settings
    period: int | None = None  # induction probe: distance between a token and its earlier copy
    period_start: int = 0  # induction probe: index of the first token of the first random block
    # False for encoders whose token 0 is [CLS]: weight there belongs to the special-token band
    # (scored by delimiter_band), not to a first-token sink (Clark et al. 2019).
    sink_applies: bool = True
    row0: int = 0  # query index of attn's first row (a block of rows); the key axis is always complete
    entropy: np.ndarray | None = None  # [heads, rows] row_entropy(attn), when the caller already has it


def _visible(n: int, is_causal: bool) -> np.ndarray:
    """[query] number of keys each query row can see."""
    return np.arange(1, n + 1) if is_causal else np.full(n, n)


def _rows(attn: np.ndarray, ctx: MapContext, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """(absolute query indices in [lo, hi) present in this block, their positions in the block)."""
    m = attn.shape[1]
    i = np.arange(max(lo, ctx.row0), min(hi, ctx.row0 + m))
    return i, i - ctx.row0


def score_previous_token(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """Weight on the key just before the query, A[i, i-1], for rows i >= 2.

    1 = every row puts all its weight on the previous token; 0 = none. Rows 0 and 1 are not counted
    (row 1's previous token is token 0, the sink, and would confuse the two families).
    """
    i, k = _rows(attn, ctx, 2, attn.shape[-1])
    return attn[:, k, i - 1]  # [heads, rows]


def score_next_token(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """Weight on the key just after the query, A[i, i+1], rows 1..n-2. Bidirectional models only.

    In a causal model A[i, i+1] is 0 by construction; the family does not apply (empty result).
    """
    if ctx.is_causal:
        return np.zeros((attn.shape[0], 0), dtype=attn.dtype)
    i, k = _rows(attn, ctx, 1, attn.shape[-1] - 1)
    return attn[:, k, i + 1]


def score_local(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """Weight within |i-j| <= w (w = settings.local_window) beyond what previous/next token explain.

    Counts the diagonal and offsets 2..w on both sides, excluding j = i-1, j = i+1 and key 0 (the
    sink), rows i >= 1. 1 = all weight in that band; a pure previous-token head scores 0 here.
    """
    n = attn.shape[-1]
    w = ctx.settings.local_window
    rows, k = _rows(attn, ctx, 1, n)
    offsets = np.arange(-w, w + 1)
    offsets = offsets[np.abs(offsets) != 1]
    cols = rows[:, None] + offsets[None, :]  # [rows, offsets]
    ok = (cols >= 1) & (cols < n)
    vals = attn[:, k[:, None], np.clip(cols, 0, n - 1)]  # [heads, rows, offsets]
    return np.where(ok[None], vals, 0.0).sum(-1)


def score_sink(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """Weight on key 0, A[i, 0], rows i >= 1 (row 0 can only see itself in a causal model).

    1 = every row parks all of its weight on the first token. A high value is structural (rows must
    sum to 1 and the first token is always visible), not a sign that token 0 is important.
    Empty (does not apply) for encoders whose token 0 is a special token such as [CLS].
    """
    if not ctx.sink_applies:
        return np.zeros((attn.shape[0], 0), dtype=attn.dtype)
    _, k = _rows(attn, ctx, 1, attn.shape[-1])
    return attn[:, k, 0]


def score_delimiter_band(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """Excess weight on delimiter keys (punctuation, newline, special tokens) over chance, rows i >= 1.

    Per row: obs = weight on visible delimiter keys j >= 1; exp = their share of visible keys;
    value = clip((obs - exp) / (1 - exp), 0, 1). 0 = no more than a uniform row would give, 1 = all
    weight on delimiters. Key 0 is left to the sink score, except in encoders where it is [CLS] and
    part of the special-token band. Rows that see no delimiter are not counted.
    """
    n = attn.shape[-1]
    delim = ctx.is_delimiter.astype(bool).copy()
    delim[0] = delim[0] and not ctx.sink_applies
    vis = _visible(n, ctx.is_causal)
    # visible delimiters per query: a running count in a causal map, all of them in a bidirectional one
    n_delim = np.cumsum(delim) if ctx.is_causal else np.full(n, int(delim.sum()))  # [query]
    i, k = _rows(attn, ctx, 1, n)
    keep = (n_delim[i] > 0) & (n_delim[i] < vis[i])
    i, k = i[keep], k[keep]
    if i.size == 0:
        return np.zeros((attn.shape[0], 0), dtype=np.float64)
    dcols = np.nonzero(delim)[0]
    sub = attn[:, k[:, None], dcols[None, :]]  # [heads, rows, delimiters]
    if ctx.is_causal:  # count only the delimiters a query can see
        sub = np.where((dcols[None, :] <= i[:, None])[None], sub, 0.0)
    obs = sub.sum(-1)  # [heads, rows]
    exp = n_delim[i] / vis[i]
    return np.clip((obs - exp[None]) / (1.0 - exp[None]), 0.0, 1.0)


def score_broad(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """Row entropy normalised by ln(visible keys): 1 = perfectly uniform, 0 = one-hot.

    Dividing by ln(visible keys) makes the value mean the same at 10 tokens and at 1000. Rows seeing
    fewer than settings.broad_min_keys keys are not counted.
    """
    n = attn.shape[-1]
    vis = _visible(n, ctx.is_causal)
    if vis[-1] < ctx.settings.broad_min_keys:
        return np.zeros((attn.shape[0], 0), dtype=np.float64)
    first = int(np.argmax(vis >= ctx.settings.broad_min_keys))  # vis is non-decreasing: rows first.. count
    i, k = _rows(attn, ctx, first, n)
    ent = ctx.entropy[:, k] if ctx.entropy is not None else row_entropy(attn[:, k, :])
    # clip: float32 rounding can put a perfectly uniform row a hair above 1
    return np.clip(ent / np.log(vis[i])[None], 0.0, 1.0)


def score_induction(attn: np.ndarray, ctx: MapContext) -> np.ndarray:
    """On the repeated random-token probe: weight on the token right after the earlier copy.

    For a query in the second copy at position i, the target is j = i - period + 1 (Olsson et al.
    2022). 1 = a perfect induction head. Empty on every other probe.
    """
    if ctx.period is None:
        return np.zeros((attn.shape[0], 0), dtype=attn.dtype)
    p, s = ctx.period, ctx.period_start
    i, k = _rows(attn, ctx, s + p, s + 2 * p)
    return attn[:, k, i - p + 1]


def row_entropy(attn: np.ndarray) -> np.ndarray:
    """Shannon entropy in nats of each row over the last axis (0 log 0 = 0).

    Computed in float32 like every statistic here (about 1e-7 relative error), summed in float64.
    """
    a = np.asarray(attn, dtype=np.float32)
    plogp = a * np.log(np.maximum(a, np.float32(1e-30)))  # 0 * log(tiny) = 0 exactly
    return -plogp.sum(-1, dtype=np.float64)


SCORERS: dict[FamilyName, Callable[[np.ndarray, MapContext], np.ndarray]] = {
    "previous_token": score_previous_token,
    "next_token": score_next_token,
    "local": score_local,
    "sink": score_sink,
    "delimiter_band": score_delimiter_band,
    "broad": score_broad,
    "induction": score_induction,
}


def bar_of(family: FamilyName, s: Settings) -> float:
    """The score a head must reach to be labelled with this family."""
    bars: dict[FamilyName, float] = {
        "previous_token": s.bar_previous_token,
        "next_token": s.bar_next_token,
        "local": s.bar_local,
        "sink": s.bar_sink,
        "delimiter_band": s.bar_delimiter,
        "broad": s.bar_broad,
        "induction": s.bar_induction,
    }
    return bars[family]


def classify(scores: dict[FamilyName, float | None], s: Settings) -> str:
    """The family whose score clears its bar by the largest margin, or 'mixed' if none does.

    Margin = (score - bar) / (1 - bar), so a bar of 0.3 and a bar of 0.8 are compared fairly.
    Families that do not apply to this model (score None) are skipped.
    """
    best, best_margin = "mixed", 0.0
    for fam in FAMILIES:
        v = scores.get(fam)
        if v is None:
            continue
        bar = bar_of(fam, s)
        margin = (v - bar) / (1.0 - bar)
        if v >= bar and margin >= best_margin:
            best, best_margin = fam, margin
    return best
