"""Known-answer tests for the U curve and γ through the real capture → analysis path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reporter.analyze import analyze_distance, pade_gamma, predict_gamma, validity_gate
from reporter.capture import Captured, _Reducer
from reporter.probes import TokenizedProbe
from reporter.settings import Settings
from tests.test_prediction import facts

S = Settings(bootstrap_samples=300)


def planted_map(n: int, gamma: float, rng: np.random.Generator, sink: float = 0.3) -> np.ndarray:
    """[1, 1, n, n] causal map: weight C·d^-γ (times mean-one noise) on key i-d, a recency bump on
    d = 1..3, and the rest on key 0 (the sink). Every row shares C, so the mean curve is C·d^-γ."""
    d = np.arange(1, n)
    c = (1 - sink - 0.3) / (d ** -gamma).sum()
    a = np.zeros((n, n))
    for i in range(1, n):
        dd = np.arange(1, i)  # keys i-1 .. 1
        w = c * dd ** -gamma * rng.lognormal(-0.08, 0.4, dd.size)
        w[: min(3, dd.size)] += 0.1  # recency bump
        a[i, i - dd] = w
        a[i, 0] = 1.0 - w.sum()
    a[0, 0] = 1.0
    return a[None, None]


def capture_synthetic(maps: list[np.ndarray]) -> Captured:
    n_max = max(m.shape[-1] for m in maps)
    red = _Reducer(1, 1, n_max, True, "float32", S, display_probe="p0")
    for k, m in enumerate(maps):
        n = m.shape[-1]
        red.start_probe(TokenizedProbe(f"p{k}", "long", tuple(range(n)), tuple("t" for _ in range(n)),
                                       tuple(False for _ in range(n)), n))
        red.fold(torch.from_numpy(m.astype(np.float32)), 0)
        red.end_probe()
    return red.c


@pytest.mark.parametrize("gamma", [0.3, 0.7, 1.0, 1.5])
def test_planted_gamma_is_recovered_and_covered_by_the_ci(gamma: float) -> None:
    rng = np.random.default_rng(int(gamma * 100))
    c = capture_synthetic([planted_map(512, gamma, rng) for _ in range(3)])
    dist = analyze_distance(c, 512, S)
    assert dist.gamma is not None and dist.gamma.ci95 is not None
    assert dist.gamma.value == pytest.approx(gamma, abs=0.03)
    lo, hi = dist.gamma.ci95
    assert lo <= gamma <= hi
    assert dist.gamma.fit_range[0] > dist.recency_end >= 3  # the bump is kept out of the tail
    assert dist.sink_share > 0.2  # the sink column is reported apart


def test_uniform_attention_measures_exactly_the_null_gamma() -> None:
    maps = []
    for n in (300, 512, 400):
        a = np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None]
        maps.append(a[None, None])
    dist = analyze_distance(capture_synthetic(maps), 512, S)
    assert dist.gamma is not None and dist.null_gamma is not None
    assert dist.gamma.value == pytest.approx(dist.null_gamma.value, abs=1e-4)
    assert dist.distinguishable_from_uniform is False


def test_pade_special_values() -> None:
    theta = 1e4
    assert pade_gamma(theta, 0) == pytest.approx(1.0)
    assert pade_gamma(theta, theta / math.sqrt(2)) == pytest.approx(1 / 3)
    assert pade_gamma(theta, math.sqrt(2) * theta) == pytest.approx(0.0, abs=1e-12)


def test_linear_scaling_divides_T_and_yarn_multiplies_theta() -> None:
    import dataclasses

    base = facts(rope_theta=1e4)
    lin = predict_gamma(dataclasses.replace(base, rope_scaling_type="linear", rope_scaling_factor=4.0), 4096)
    yarn = predict_gamma(dataclasses.replace(base, rope_scaling_type="yarn", rope_scaling_factor=4.0), 4096)
    z = math.sqrt(2) * 1024 / 1e4  # T/4 with θ, or T with 4θ: the same z
    expected = (2 - z) / (2 + z)
    assert lin.gamma == pytest.approx(expected, abs=1e-6) and yarn.gamma == pytest.approx(expected, abs=1e-6)
    assert "first-order" in lin.scaling_note and "first-order" in yarn.scaling_note
    assert yarn.theta_effective == 4e4


@pytest.mark.parametrize("gamma_obs, regime", [(0.99, "over_pade"), (0.5, "compressed"), (1.2, "phase_b")])
def test_validity_gate_regimes(gamma_obs: float, regime: str) -> None:
    p = validity_gate(predict_gamma(facts(rope_theta=1e4), 1024), gamma_obs)
    assert p.regime == regime and p.regime_text


def test_validity_gate_normal_when_measured_equals_the_geometry() -> None:
    T, theta = 1024.0, 1e4
    # η = 1 exactly when √2·T/(1 − γ) = θ + T/√2, by hand:
    gamma_obs = 1 - math.sqrt(2) * T / (theta + T / math.sqrt(2))
    p = validity_gate(predict_gamma(facts(rope_theta=theta), int(T)), gamma_obs)
    assert p.eta == pytest.approx(1.0, abs=1e-3) and p.regime == "normal"


def test_prediction_at_trained_context_is_reported() -> None:
    p = predict_gamma(facts(rope_theta=1e5), 1024)  # max_position_embeddings = 2048 in these facts
    z = math.sqrt(2) * 2048 / 1e5
    assert p.T_trained == 2048 and p.gamma_trained == pytest.approx((2 - z) / (2 + z), abs=1e-6)


def test_sliding_window_layers_are_fitted_inside_the_window() -> None:
    rng = np.random.default_rng(9)
    maps = []
    for _ in range(3):
        a = planted_map(256, 0.7, rng)[0, 0]
        window = 64
        a = np.where(np.subtract.outer(np.arange(256), np.arange(256)) >= window, 0.0, a)
        a[:, 0] = 0.0
        a[:, 0] = 1.0 - a.sum(-1)  # keep rows stochastic: the sink takes what the window cut off
        maps.append(a[None, None])
    dist = analyze_distance(capture_synthetic(maps), 256, S, windows={0: 64})
    assert dist.gamma is not None and dist.gamma.fit_range[1] == 63
    assert dist.gamma.value == pytest.approx(0.7, abs=0.05)
    assert dist.sliding_windows == {"0": 64}
    assert len(dist.curve_per_layer) == 1 and len(dist.curve_per_head[0]) == 1
    assert len(dist.curve_per_layer[0]) == len(dist.bin_edges) - 1
