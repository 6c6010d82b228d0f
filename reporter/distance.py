"""Attention against distance: the U curve's sums, the tail power-law fit, its bootstrap CI, the null.

Distances are d = i - j for causal models and |i - j| for bidirectional ones. Key 0 (the sink) is
kept out of the distance sums and reported on its own, so the tail measures how attention decays
over ordinary tokens rather than how much of it is parked on the first token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


def by_distance(attn: np.ndarray, is_causal: bool, row0: int = 0) -> np.ndarray:
    """[heads, query, d]: weight each query row puts on the key at distance d (key 0 excluded).

    For bidirectional maps both sides are added: out[h, i, d] = A[i, i-d] + A[i, i+d] (d > 0).
    `attn` may be a block of query rows starting at query `row0`; the key axis is the whole probe.
    """
    h, m, n = attn.shape
    # P[h, r, n + j] = A[h, r, j] for keys j >= 1, zero for key 0 and for the padding on either side, so
    # that reading row r backwards from column n + i (i = row0 + r) gives A[i, i-d] for every d, with
    # zeros where i - d < 1, and forwards gives A[i, i+d] with zeros past the last key. Both readings are
    # strided views of P (no index arrays); every address they touch lies inside row r of P.
    p = np.zeros((h, m, (2 if is_causal else 3) * n), dtype=attn.dtype)
    p[:, :, n + 1:2 * n] = attn[:, :, 1:]
    s_h, s_r, s_k = p.strides
    start = p[:, :, n + row0:]  # column n + i of row r sits r * (s_r + s_k) from here
    out = as_strided(start, shape=(h, m, n), strides=(s_h, s_r + s_k, -s_k), writeable=False).copy()
    if not is_causal:
        ahead = as_strided(start, shape=(h, m, n), strides=(s_h, s_r + s_k, s_k), writeable=False)
        out[..., 1:] += ahead[..., 1:]
    return out


def pair_counts(n: int, is_causal: bool) -> np.ndarray:
    """[query, d]: number of valid (query, key >= 1) pairs at each distance for each row (0, 1 or 2)."""
    i = np.arange(n)[:, None]
    d = np.arange(n)[None, :]
    c = (i - d >= 1).astype(np.int64)
    if not is_causal:
        c = c + ((i + d < n) & (d > 0)).astype(np.int64)
    return c


def uniform_map(n: int, is_causal: bool) -> np.ndarray:
    """[1, n, n] the attention of a head that spreads weight evenly over every visible key."""
    if is_causal:
        a = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
    else:
        a = np.full((n, n), 1.0 / n)
    return a[None]


@dataclass(frozen=True)
class TailFit:
    gamma: float  # A(d) ∝ d^-gamma; the negative slope of log A on log d
    intercept: float
    r2: float
    n_points: int  # log-spaced bins that entered the fit


def fit_tail(d: np.ndarray, a: np.ndarray, d_min: int, d_max: int, n_bins: int) -> TailFit | None:
    """Least squares of log A on log d over [d_min, d_max], on log-spaced bins of d.

    Binning first gives each octave of distance the same weight: a fit on every integer d would be
    dominated by the many points at large d. Returns None when fewer than 3 bins hold data.
    """
    d = np.asarray(d, dtype=np.float64)
    a = np.asarray(a, dtype=np.float64)
    sel = (d >= d_min) & (d <= d_max) & np.isfinite(a) & (a > 0)
    if sel.sum() < 3 or d_max <= d_min:
        return None
    edges = np.unique(np.round(np.geomspace(d_min, d_max + 1, n_bins + 1)))
    xs, ys = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = sel & (d >= lo) & (d < hi)
        if m.any():
            xs.append(np.log(d[m]).mean())
            ys.append(np.log(a[m].mean()))
    if len(xs) < 3:
        return None
    x, y = np.array(xs), np.array(ys)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss_tot = ((y - y.mean()) ** 2).sum()
    r2 = 1.0 - (resid**2).sum() / ss_tot if ss_tot > 0 else 0.0
    return TailFit(gamma=float(-slope), intercept=float(intercept), r2=float(r2), n_points=len(xs))


def bootstrap_gammas(unit_sums: np.ndarray, unit_counts: np.ndarray, d_min: int, d_max: int, n_bins: int,
                     n_samples: int, seed: int) -> np.ndarray:
    """γ of each bootstrap resample of (probe, query-block) units; NaN where the fit failed.

    unit_sums, unit_counts: [units, d]. The resampling depends only on the seed and the number of units,
    so two calls with the same seed are paired: resample k draws the same units in both.
    """
    n_units = unit_sums.shape[0]
    rng = np.random.default_rng(seed)
    d = np.arange(unit_sums.shape[1])
    out = np.full(n_samples, np.nan)
    for k in range(n_samples):
        w = np.bincount(rng.integers(0, n_units, n_units), minlength=n_units).astype(np.float64)
        fit = fit_tail(d, mean_curve(w @ unit_sums, w @ unit_counts), d_min, d_max, n_bins)
        if fit is not None:
            out[k] = fit.gamma
    return out


def percentile_ci(samples: np.ndarray) -> tuple[float, float] | None:
    """95% percentile interval, or None when fewer than half of the resamples gave a value."""
    ok = samples[np.isfinite(samples)]
    if ok.size < max(1, samples.size // 2):
        return None
    lo, hi = np.percentile(ok, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_gamma(unit_sums: np.ndarray, unit_counts: np.ndarray, d_min: int, d_max: int, n_bins: int,
                    n_samples: int, seed: int) -> tuple[float, float] | None:
    """95% percentile interval of γ over bootstrap resamples of the units (None with fewer than 2 units)."""
    if unit_sums.shape[0] < 2:
        return None
    return percentile_ci(bootstrap_gammas(unit_sums, unit_counts, d_min, d_max, n_bins, n_samples, seed))


def mean_curve(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean attention per distance; NaN where no pair exists."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.where(counts > 0, counts, 1), np.nan)
