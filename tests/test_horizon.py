"""Known-answer tests for the attention horizon: D_f from planted maps, and the closed form's circularity."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from reporter.analyze import analyze_distance, analyze_horizon, pade_gamma, predict_gamma
from reporter.horizon import closed_form_horizon, closed_form_interval, reach
from reporter.load import ModelFacts
from reporter.report import HeadResult, Horizon
from reporter.settings import Settings
from tests.test_gamma import capture_synthetic, planted_map
from tests.test_prediction import facts

S = Settings(bootstrap_samples=200)


def by_hand_reach(maps: list[np.ndarray], f: float) -> int:
    """D_f with plain loops over (query, key) pairs, key 0 left out: an independent reference."""
    n_max = max(m.shape[-1] for m in maps)
    mass = [0.0] * n_max
    for m in maps:
        a = m[0, 0]
        for i in range(a.shape[0]):
            for j in range(1, i + 1):
                mass[i - j] += float(a[i, j])
    total, run = sum(mass), 0.0
    for d, w in enumerate(mass):
        run += w
        if run >= f * total * (1 - 1e-12):
            return d
    raise AssertionError("unreachable")


def head(layer: int, h: int, sink_mass: float) -> HeadResult:
    return HeadResult(layer, h, 0, "mixed", {}, (), 0.0, sink_mass)


def test_reach_of_a_flat_mass_by_hand() -> None:
    mass = np.array([1.0, 1.0, 1.0, 1.0])  # d = 0..3; 90% of 4 is 3.6, reached at d = 3
    assert int(reach(mass, 0.5)) == 1 and int(reach(mass, 0.9)) == 3 and int(reach(mass, 1.0)) == 3
    assert int(reach(np.zeros(4), 0.9)) == -1  # no mass: no reach
    with pytest.raises(ValueError):
        reach(mass, 0.0)


def test_reach_works_per_layer_and_head() -> None:
    mass = np.zeros((2, 3, 10))
    for layer in range(2):
        for h in range(3):
            mass[layer, h, layer * 3 + h] = 1.0  # all weight at one distance
    assert reach(mass, 0.9).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize("gamma", [0.3, 0.7, 1.5])
@pytest.mark.parametrize("f", [0.5, 0.9])
def test_planted_power_law_reach_matches_the_hand_count(gamma: float, f: float) -> None:
    rng = np.random.default_rng(int(gamma * 10) + int(f * 100))
    maps = [planted_map(n, gamma, rng) for n in (200, 256)]
    c = capture_synthetic(maps)  # the capture's own reduction, as in a real run
    assert int(reach(c.dist_sums[0, 0], f)) == by_hand_reach(maps, f)


def test_steeper_tails_reach_less_far() -> None:
    rng = np.random.default_rng(3)
    d90 = [int(reach(capture_synthetic([planted_map(256, g, rng)]).dist_sums[0, 0], 0.9)) for g in (0.3, 1.0, 1.5)]
    assert d90[0] > d90[1] > d90[2]


@pytest.mark.parametrize("window", [8, 32, 100])
def test_hard_window_bounds_the_full_reach(window: int) -> None:
    rng = np.random.default_rng(window)
    maps = []
    n = 256
    for _ in range(2):
        a = planted_map(n, 0.5, rng)[0, 0]
        a = np.where(np.subtract.outer(np.arange(n), np.arange(n)) >= window, 0.0, a)  # keys i-w+1 .. i only
        a[:, 0] = 0.0
        a[:, 0] = 1.0 - a.sum(-1)
        maps.append(a[None, None])
    c = capture_synthetic(maps)
    d_all = int(reach(c.dist_sums[0, 0], 1.0))
    assert d_all <= window
    assert d_all == window - 1  # the planted tail fills the window to its last distance
    assert int(reach(c.dist_sums[0, 0], 0.9)) == by_hand_reach(maps, 0.9)


@pytest.mark.parametrize("theta", [1e4, 1e5, 5e5])
@pytest.mark.parametrize("T", [1, 128, 1024, 8192])
def test_closed_form_fed_the_pade_gamma_returns_T(theta: float, T: int) -> None:
    assert closed_form_horizon(theta, pade_gamma(theta, T)) == pytest.approx(T, abs=1e-9 * max(1, T))


def test_closed_form_by_hand() -> None:
    # θ·√2·(1 − γ)/(1 + γ) at θ = 1e4, γ = 0.5: 1e4 · 1.41421356 · 0.5 / 1.5
    assert closed_form_horizon(1e4, 0.5) == pytest.approx(4714.045207910317, rel=1e-12)


@pytest.mark.parametrize("gamma", [0.0, 1.0, -0.2, 1.3, float("nan"), float("inf")])
def test_closed_form_refuses_gamma_outside_zero_one(gamma: float) -> None:
    with pytest.raises(ValueError, match="0 < γ < 1"):
        closed_form_horizon(1e4, gamma)


def test_interval_ends_swap_and_open_outside_zero_one() -> None:
    lo, hi = closed_form_interval(1e4, (0.4, 0.6))
    assert lo == pytest.approx(closed_form_horizon(1e4, 0.6)) and hi == pytest.approx(closed_form_horizon(1e4, 0.4))
    assert lo is not None and hi is not None and lo < hi
    assert closed_form_interval(1e4, (-0.1, 0.6))[1] is None
    assert closed_form_interval(1e4, (0.4, 1.2))[0] is None


def _horizon_for(gamma: float, model_facts: ModelFacts) -> Horizon:
    rng = np.random.default_rng(11)
    c = capture_synthetic([planted_map(512, gamma, rng) for _ in range(3)])
    dist = analyze_distance(c, 512, S)
    pred = predict_gamma(model_facts, 512)
    return analyze_horizon(c, model_facts, [head(0, 0, 0.3)], dist, pred, 512, S)


def test_rope_model_gets_the_closed_form_from_the_measured_gamma_with_its_interval() -> None:
    hz = _horizon_for(0.7, facts(rope_theta=1e4))
    assert hz.closed_form_applies
    g = 0.7
    # with the measured γ (close to the planted 0.7) the horizon is about θ·√2·0.3/1.7 ≈ 2496 tokens
    assert hz.closed_form == pytest.approx(1e4 * math.sqrt(2) * (1 - g) / (1 + g), rel=0.1)
    lo, hi = hz.closed_form_ci95
    assert lo is not None and hi is not None and lo <= hz.closed_form <= hi
    assert hz.closed_form_ratio == pytest.approx(hz.closed_form / 512, abs=1e-3)
    assert hz.predicted_check == pytest.approx(512, abs=1e-6)
    assert "by construction" in hz.circularity_note
    assert hz.overall["0.9"] == hz.per_head["0.9"][0][0]  # one head: overall and per head agree


def test_linear_scaling_keeps_the_circularity_exact() -> None:
    f = dataclasses.replace(facts(rope_theta=1e4), rope_scaling_type="linear", rope_scaling_factor=4.0)
    hz = _horizon_for(0.7, f)
    assert hz.predicted_check == pytest.approx(512, abs=1e-6)


@pytest.mark.parametrize("gamma", [1.5])
def test_steep_tail_gets_no_closed_form(gamma: float) -> None:
    hz = _horizon_for(gamma, facts(rope_theta=1e4))
    assert not hz.closed_form_applies and hz.closed_form is None
    assert "≥ 1" in hz.closed_form_reason
    assert hz.overall["0.9"] is not None  # the measured reach still applies


def test_absolute_position_model_gets_no_closed_form() -> None:
    hz = _horizon_for(0.7, facts(position_encoding="absolute", rope_theta=None))
    assert not hz.closed_form_applies and hz.closed_form is None and hz.predicted_check is None
    assert hz.closed_form_reason.startswith("Not applicable") and "absolute" in hz.closed_form_reason


def test_sink_heads_are_left_off_the_reach_lists() -> None:
    rng = np.random.default_rng(5)
    c = capture_synthetic([planted_map(128, 0.7, rng)])
    dist = analyze_distance(c, 128, S)
    hz = analyze_horizon(c, facts(), [head(0, 0, 0.95)], dist, predict_gamma(facts(), 128), 128, S)
    assert hz.longest == () and hz.shortest == () and "1 head(s)" in hz.list_note
