"""Distance sums, pair counts, the tail fit and its bootstrap, on maps with a planted power law."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.distance import bootstrap_gamma, by_distance, fit_tail, mean_curve, pair_counts, uniform_map

N = 1024
D_MIN, BINS = 16, 24
D_MAX = N // 2


def power_law_map(n: int, gamma: float, noise: float = 0.0, seed: int = 0, causal: bool = True) -> np.ndarray:
    """[1, n, n]: row i gives C * d^-gamma to each key at distance d >= 1 (j >= 1, j < i if causal); key 0
    takes the rest of the row.

    C is the same for every row, so the mean attention at distance d is exactly C * d^-gamma (times the
    noise factor, whose mean is 1). C is small enough that no row overflows.
    """
    d = np.arange(1, n, dtype=np.float64)
    c = 0.5 / (2 * (d ** -gamma).sum())
    i = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    dist = (i - j).astype(np.float64) if causal else np.abs(i - j).astype(np.float64)
    a = np.where((j >= 1) & (dist >= 1), c * np.where(dist >= 1, dist, 1.0) ** -gamma, 0.0)
    if noise:
        rng = np.random.default_rng(seed)
        a = a * rng.lognormal(-noise**2 / 2, noise, size=a.shape)
    a[:, 0] = 0.0
    a[:, 0] = 1.0 - a.sum(-1)
    assert (a[:, 0] > 0).all()
    return a[None]


def curve_of(attn: np.ndarray, is_causal: bool) -> np.ndarray:
    h, n, _ = attn.shape
    sums = by_distance(attn, is_causal).sum((0, 1))
    counts = pair_counts(n, is_causal).sum(0) * h
    return mean_curve(sums, counts)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 1.5])
def test_fit_tail_recovers_a_planted_power_law(gamma, causal):
    a = power_law_map(N, gamma, causal=causal)
    np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-12)
    fit = fit_tail(np.arange(N), curve_of(a, causal), D_MIN, D_MAX, BINS)
    assert fit is not None
    assert fit.gamma == pytest.approx(gamma, abs=0.05)
    assert fit.r2 > 0.99
    assert fit.n_points >= 3


def test_fit_tail_returns_none_when_too_few_bins_hold_data():
    d = np.arange(40, dtype=np.float64)
    a = np.full(40, np.nan)
    a[20:22] = 0.1  # two distances with data
    assert fit_tail(d, a, 16, 30, 24) is None


def test_uniform_map_rows_sum_to_one():
    for causal in (True, False):
        u = uniform_map(50, causal)
        assert u.shape == (1, 50, 50)
        np.testing.assert_allclose(u.sum(-1), 1.0, atol=1e-12)
    causal_u = uniform_map(50, True)[0]
    assert np.all(np.triu(causal_u, 1) == 0)  # nothing above the diagonal
    np.testing.assert_allclose(causal_u[9, :10], 0.1)  # row 9 sees 10 keys


def test_uniform_causal_attention_fits_a_positive_gamma():
    # Long rows spread thinner, and only long rows reach large d: the mean curve falls with d even
    # though no head prefers near keys. This bias is why the report fits the uniform null too.
    fit = fit_tail(np.arange(N), curve_of(uniform_map(N, True), True), D_MIN, D_MAX, BINS)
    assert fit is not None
    assert fit.gamma > 0.1


def _units(attn: np.ndarray, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query block: distance sums and pair counts, [units, d]."""
    h, n, _ = attn.shape
    bd = by_distance(attn, True).sum(0)  # [query, d]
    pc = pair_counts(n, True) * h
    starts = range(0, n, block)
    return (np.stack([bd[s:s + block].sum(0) for s in starts]),
            np.stack([pc[s:s + block].sum(0) for s in starts]).astype(np.float64))


def test_bootstrap_interval_contains_the_point_estimate_and_is_deterministic():
    n = 512
    a = power_law_map(n, 1.0, noise=0.5, seed=3)
    sums, counts = _units(a, 32)
    point = fit_tail(np.arange(n), mean_curve(sums.sum(0), counts.sum(0)), D_MIN, n // 2, BINS)
    assert point is not None
    ci = bootstrap_gamma(sums, counts, D_MIN, n // 2, BINS, n_samples=200, seed=7)
    assert ci is not None
    lo, hi = ci
    assert lo < point.gamma < hi
    assert hi - lo < 0.5
    assert bootstrap_gamma(sums, counts, D_MIN, n // 2, BINS, n_samples=200, seed=7) == ci


def test_bootstrap_needs_at_least_two_units():
    sums = np.ones((1, 64))
    assert bootstrap_gamma(sums, sums, D_MIN, 32, BINS, n_samples=10, seed=0) is None


def test_pair_counts_counts_both_sides_for_bidirectional_models():
    n = 5
    causal = pair_counts(n, True)
    bidir = pair_counts(n, False)
    # Row 2, distance 1: key 1 on the left; in a bidirectional model also key 3 on the right.
    assert causal[2, 1] == 1
    assert bidir[2, 1] == 2
    # Row 0, distance 2: the left side is out of range, the right side is key 2.
    assert causal[0, 2] == 0
    assert bidir[0, 2] == 1
    # d = 0 (the key itself) is counted once, and not for row 0, whose self is key 0.
    np.testing.assert_array_equal(bidir[:, 0], [0, 1, 1, 1, 1])
    # Total pairs: every (query, key >= 1) pair once; the causal model only has key <= query.
    assert bidir.sum() == n * (n - 1)
    assert causal.sum() == sum(range(n))  # row i sees keys 1..i


def test_by_distance_adds_both_sides_for_bidirectional_maps():
    n = 6
    a = np.zeros((1, n, n))
    a[0, 3, 1] = 0.25  # row 3, two to the left
    a[0, 3, 5] = 0.5  # row 3, two to the right
    a[0, 3, 3] = 0.25  # row 3, itself
    out = by_distance(a, False)
    assert out[0, 3, 2] == pytest.approx(0.75)
    assert out[0, 3, 0] == pytest.approx(0.25)
    assert by_distance(a, True)[0, 3, 2] == pytest.approx(0.25)


def test_by_distance_excludes_key_zero():
    n = 8
    a = np.zeros((2, n, n))
    a[:, :, 0] = 1.0  # every row on the sink
    np.testing.assert_array_equal(by_distance(a, True), 0.0)
    np.testing.assert_array_equal(by_distance(a, False), 0.0)


def test_by_distance_places_weight_at_the_right_distance():
    n = 8
    a = np.zeros((1, n, n))
    a[0, 6, 2] = 1.0
    out = by_distance(a, True)
    assert out[0, 6, 4] == 1.0
    assert out.sum() == 1.0


def test_mean_curve_is_nan_where_no_pair_exists():
    curve = mean_curve(np.array([1.0, 2.0, 0.0]), np.array([2, 4, 0]))
    np.testing.assert_allclose(curve[:2], [0.5, 0.5])
    assert np.isnan(curve[2])


def test_distance_functions_do_not_modify_their_input():
    a = power_law_map(64, 1.0)
    before = a.copy()
    by_distance(a, True)
    by_distance(a, False)
    np.testing.assert_array_equal(a, before)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 12), data=st.data(), causal=st.booleans())
def test_by_distance_of_any_row_block_equals_a_plain_loop(n: int, data: st.DataObject, causal: bool) -> None:
    row0 = data.draw(st.integers(0, n - 1))
    m = data.draw(st.integers(1, n - row0))
    a = np.random.default_rng(n * 100 + row0).random((2, m, n))
    want = np.zeros((2, m, n))
    for r in range(m):
        i = row0 + r
        for j in range(1, n):  # key 0 never counts
            if j <= i:
                want[:, r, i - j] += a[:, r, j]
            elif not causal:
                want[:, r, j - i] += a[:, r, j]
    np.testing.assert_allclose(by_distance(a, causal, row0), want, rtol=0, atol=1e-15)
