"""Attention rollout (Abnar & Zuidema 2020), one layer at a time: pure functions on arrays.

Rollout estimates where a position's information comes from after several layers: each layer's
heads are fused into one map, mixed with the identity for the residual stream, rows renormalised,
and the layers multiplied: R_l = norm(a·A_l + (1−a)·I) · R_{l−1}, R_0 = I. Every row of R is a
distribution over source tokens (it sums to 1); in a causal model no weight comes from the future.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

HeadFusion = Literal["mean", "max", "min"]
_FUSE: dict[HeadFusion, Callable[[np.ndarray], np.ndarray]] = {
    "mean": lambda a: a.mean(0, dtype=np.float64),  # accumulates in float64 without a float64 copy of the map
    "max": lambda a: a.max(0).astype(np.float64),
    "min": lambda a: a.min(0).astype(np.float64),
}


@dataclass(frozen=True)
class RolloutOptions:
    residual: float = 0.5  # a in a·A + (1−a)·I; 1 = ignore the residual stream
    head_fusion: HeadFusion = "mean"  # how a layer's heads become one map
    discard_ratio: float = 0.0  # share of the smallest weights of each row set to 0 before mixing


def fuse_heads(attn: np.ndarray, how: HeadFusion) -> np.ndarray:
    """[heads, query, key] -> [query, key]. Max and min fusion leave rows unnormalised; the step fixes it."""
    return _FUSE[how](np.asarray(attn))


def discard_smallest(m: np.ndarray, ratio: float) -> np.ndarray:
    """Zero the `ratio` smallest weights of each row (among the nonzero ones), never the diagonal."""
    if ratio <= 0:
        return m
    out = m.copy()
    n = m.shape[0]
    for i in range(n):
        cand = np.nonzero((out[i] > 0) & (np.arange(n) != i))[0]
        k = int(np.floor(ratio * cand.size))
        if k > 0:
            drop = cand[np.argsort(out[i, cand], kind="stable")[:k]]
            out[i, drop] = 0.0
    return out


def rollout_step(r: np.ndarray, fused: np.ndarray, opts: RolloutOptions, causal: bool = False) -> np.ndarray:
    """One layer: R' = norm(a·A + (1−a)·I) · R, rows renormalised after the product as well.

    `causal`: A and R are lower-triangular (nothing comes from the future), so the product skips the
    blocks above the diagonal, a third of the work of a full product, with the same result.
    """
    n = fused.shape[0]
    a = discard_smallest(fused, opts.discard_ratio)
    # a·norm(A) + (1−a)·I built in one new array (no n x n identity or sum of two n x n temporaries)
    step = a * (opts.residual / np.maximum(a.sum(-1, keepdims=True), 1e-300))
    step[np.diag_indices(n)] += 1.0 - opts.residual
    step /= step.sum(-1, keepdims=True)
    out = _lower_product(step, r) if causal else step @ r
    out /= out.sum(-1, keepdims=True)
    return out  # type: ignore[no-any-return]


def _lower_product(x: np.ndarray, y: np.ndarray, block: int = 256) -> np.ndarray:
    """x @ y for lower-triangular square x and y: row block [lo, hi) of the product only needs columns
    and rows < hi of its factors."""
    n = x.shape[0]
    out = np.zeros((n, n), dtype=np.result_type(x, y))
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        out[lo:hi, :hi] = x[lo:hi, :hi] @ y[:hi, :hi]
    return out


def rollout(layers: list[np.ndarray], opts: RolloutOptions) -> list[np.ndarray]:
    """R after each layer, from a list of [heads, query, key] maps (for tests and small inputs)."""
    n = layers[0].shape[-1]
    r = np.eye(n)
    out = []
    for attn in layers:
        r = rollout_step(r, fuse_heads(attn, opts.head_fusion), opts)
        out.append(r)
    return out


def effective_sources(row: np.ndarray) -> float:
    """exp(entropy) of a distribution: how many source tokens it effectively draws on (1 .. n)."""
    p = np.asarray(row, dtype=np.float64)
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))
