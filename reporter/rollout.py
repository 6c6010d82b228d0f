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
    "mean": lambda a: a.mean(0),
    "max": lambda a: a.max(0),
    "min": lambda a: a.min(0),
}


@dataclass(frozen=True)
class RolloutOptions:
    residual: float = 0.5  # a in a·A + (1−a)·I; 1 = ignore the residual stream
    head_fusion: HeadFusion = "mean"  # how a layer's heads become one map
    discard_ratio: float = 0.0  # share of the smallest weights of each row set to 0 before mixing


def fuse_heads(attn: np.ndarray, how: HeadFusion) -> np.ndarray:
    """[heads, query, key] -> [query, key]. Max and min fusion leave rows unnormalised; the step fixes it."""
    return _FUSE[how](np.asarray(attn, dtype=np.float64))


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


def rollout_step(r: np.ndarray, fused: np.ndarray, opts: RolloutOptions) -> np.ndarray:
    """One layer: R' = norm(a·A + (1−a)·I) · R, rows renormalised after the product as well."""
    n = fused.shape[0]
    a = discard_smallest(fused, opts.discard_ratio)
    a = a / np.maximum(a.sum(-1, keepdims=True), 1e-300)
    step = opts.residual * a + (1.0 - opts.residual) * np.eye(n)
    step /= step.sum(-1, keepdims=True)
    out = step @ r
    return out / out.sum(-1, keepdims=True)  # type: ignore[no-any-return]


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
