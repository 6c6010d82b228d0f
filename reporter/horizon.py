"""The attention horizon: how far back attention still carries weight, measured and from the closed form.

Empirical: D_f is the smallest distance d whose cumulative non-sink attention mass (distances 0..d,
key 0 left out as everywhere in the distance analysis) reaches a fraction f of the total.

Closed form (Marín 2026): d_horizon = θ·√2·(1 − γ)/(1 + γ). With γ = γ_Padé(θ, T) = (2 − z)/(2 + z),
z = √2·T/θ, it gives (1 − γ)/(1 + γ) = z/2 and so d_horizon = T exactly: fed the predicted γ it only
returns the context it started from. It says something only when fed a measured γ.
"""

from __future__ import annotations

import math

import numpy as np

# cumulative sums in float64 can fall short of f * total by rounding; this keeps exact cases exact
_REL_TOL = 1e-12


def reach(mass: np.ndarray, fraction: float) -> np.ndarray:
    """[...]: smallest d with sum(mass[..., :d+1]) >= fraction * sum(mass[..., :]); -1 where the mass is 0.

    mass: [..., D] non-negative attention mass at distance d = 0..D-1 (key 0 already excluded).
    fraction in (0, 1]. D_1.0 is the farthest distance that holds any mass at all.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    m = np.asarray(mass, dtype=np.float64)
    if (m < 0).any():
        raise ValueError("attention mass must be non-negative")
    cum = np.cumsum(m, axis=-1)
    total = cum[..., -1:]
    if fraction == 1.0:
        # the last distance holding mass, not the first where rounding lets the sum look complete
        nonzero = m > 0
        last = m.shape[-1] - 1 - np.argmax(nonzero[..., ::-1], axis=-1)
        return np.where(total[..., 0] > 0, last, -1)
    hit = cum >= fraction * total * (1.0 - _REL_TOL)
    first = np.argmax(hit, axis=-1)
    return np.where(total[..., 0] > 0, first, -1)


def closed_form_horizon(theta: float, gamma: float) -> float:
    """d_horizon = θ·√2·(1 − γ)/(1 + γ), defined for 0 < γ < 1 only.

    γ ≥ 1 means a tail falling at least as fast as 1/d (the form gives d ≤ 0); γ ≤ 0 is no decay at all
    (the form gives d ≥ √2·θ, the end of the RoPE range). Both are refused rather than extrapolated.
    """
    if not (math.isfinite(gamma) and 0.0 < gamma < 1.0):
        raise ValueError(f"the closed-form horizon needs 0 < γ < 1, got γ = {gamma:g}")
    if not (math.isfinite(theta) and theta > 0):
        raise ValueError(f"θ must be positive, got {theta:g}")
    return theta * math.sqrt(2.0) * (1.0 - gamma) / (1.0 + gamma)


def closed_form_interval(theta: float, ci: tuple[float, float]) -> tuple[float | None, float | None]:
    """The horizon's interval from γ's interval. The form falls as γ rises, so the ends swap.

    An end of γ's interval outside (0, 1) leaves that end of the horizon open (None).
    """
    lo_g, hi_g = ci
    lo = closed_form_horizon(theta, hi_g) if 0.0 < hi_g < 1.0 else None
    hi = closed_form_horizon(theta, lo_g) if 0.0 < lo_g < 1.0 else None
    return lo, hi
