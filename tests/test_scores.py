"""Known-answer tests for the head scorers and `classify`, on hand-built [heads, query, key] maps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from reporter.scores import (
    FAMILIES,
    SCORERS,
    MapContext,
    classify,
    score_broad,
    score_delimiter_band,
    score_induction,
    score_local,
    score_next_token,
    score_previous_token,
    score_sink,
)
from reporter.settings import Settings

S = Settings()


def ctx(n: int, *, causal: bool = True, delim: np.ndarray | None = None, period: int | None = None,
        period_start: int = 0, s: Settings = S) -> MapContext:
    d = np.zeros(n, dtype=bool) if delim is None else delim
    return MapContext(causal, d, s, period, period_start)


def one_hot_map(targets: list[int]) -> np.ndarray:
    """[1, n, n]: row i puts all of its weight on key targets[i]."""
    n = len(targets)
    a = np.zeros((1, n, n))
    a[0, np.arange(n), targets] = 1.0
    return a


def previous_token_map(n: int) -> np.ndarray:
    """Row 0 on itself (the only key it sees), every other row on i-1."""
    return one_hot_map([0] + list(range(0, n - 1)))


def next_token_map(n: int) -> np.ndarray:
    """Bidirectional: row i on i+1; the last row, which has no next token, on itself."""
    return one_hot_map(list(range(1, n)) + [n - 1])


def uniform_causal(n: int) -> np.ndarray:
    return (np.tril(np.ones((n, n))) / np.arange(1, n + 1)[:, None])[None]


def rows_from_keys(n: int, keys_of_row) -> np.ndarray:
    """[1, n, n]: row i spreads its weight evenly over keys_of_row(i)."""
    a = np.zeros((1, n, n))
    for i in range(n):
        ks = keys_of_row(i)
        a[0, i, ks] = 1.0 / len(ks)
    return a


# --- previous / next token: values and direction ------------------------------------------------------


def test_perfect_previous_token_map_scores_one_on_previous_token():
    vals = score_previous_token(previous_token_map(32), ctx(32))
    assert vals.shape == (1, 30)  # rows 2..31
    np.testing.assert_array_equal(vals, 1.0)


def test_previous_token_map_puts_sink_weight_only_on_row_one():
    # Row 1's previous token is token 0, so exactly one counted sink row carries weight.
    vals = score_sink(previous_token_map(32), ctx(32))
    expected = np.zeros((1, 31))
    expected[0, 0] = 1.0
    np.testing.assert_array_equal(vals, expected)
    assert vals.mean() < 0.05


def test_perfect_next_token_map_scores_one_on_next_and_zero_on_previous():
    n = 16
    a = next_token_map(n)
    c = ctx(n, causal=False)
    np.testing.assert_array_equal(score_next_token(a, c), np.ones((1, n - 2)))
    np.testing.assert_array_equal(score_previous_token(a, c), np.zeros((1, n - 2)))


def test_perfect_previous_token_map_scores_zero_on_next_token_when_bidirectional():
    n = 16
    a = previous_token_map(n)
    c = ctx(n, causal=False)
    np.testing.assert_array_equal(score_previous_token(a, c), np.ones((1, n - 2)))
    np.testing.assert_array_equal(score_next_token(a, c), np.zeros((1, n - 2)))


def test_next_token_is_empty_for_causal_models():
    vals = score_next_token(uniform_causal(10), ctx(10, causal=True))
    assert vals.shape == (1, 0)


def test_pure_previous_token_head_scores_zero_on_local():
    vals = score_local(previous_token_map(20), ctx(20))
    np.testing.assert_array_equal(vals, 0.0)


# --- sink ----------------------------------------------------------------------------------------------


def test_map_with_all_weight_on_key_zero_scores_one_on_sink():
    n = 12
    a = np.zeros((2, n, n))
    a[:, :, 0] = 1.0
    vals = score_sink(a, ctx(n))
    assert vals.shape == (2, n - 1)  # row 0 is not counted
    np.testing.assert_array_equal(vals, 1.0)
    np.testing.assert_array_equal(score_previous_token(a, ctx(n)), 0.0)


# --- broad ---------------------------------------------------------------------------------------------


def test_uniform_causal_map_scores_one_on_broad():
    n = 64
    vals = score_broad(uniform_causal(n), ctx(n))
    assert vals.shape == (1, n - S.broad_min_keys + 1)  # rows seeing >= 8 keys
    np.testing.assert_allclose(vals, 1.0, atol=1e-6)  # float32 statistics


def test_uniform_causal_map_stays_below_every_other_bar():
    n = 64
    a = uniform_causal(n)
    c = ctx(n, delim=(np.arange(n) % 5 == 4))
    means = {fam: float(SCORERS[fam](a, c).mean()) for fam in ("previous_token", "local", "sink")}
    # Row i of a uniform causal map gives 1/(i+1) to each key, so these are small averages of 1/(i+1).
    assert means["previous_token"] < 0.1
    assert means["sink"] < 0.1
    assert means["local"] < 0.2
    np.testing.assert_allclose(score_delimiter_band(a, c), 0.0, atol=1e-12)
    assert score_induction(a, c).shape == (1, 0)
    scores = {fam: means.get(fam) for fam in FAMILIES}
    scores["broad"] = float(score_broad(a, c).mean())
    scores["delimiter_band"] = float(score_delimiter_band(a, c).mean())
    scores["next_token"] = None
    scores["induction"] = None
    assert classify(scores, S) == "broad"


def test_one_hot_rows_score_zero_on_broad():
    vals = score_broad(previous_token_map(30), ctx(30))
    np.testing.assert_array_equal(vals, 0.0)


def test_broad_skips_rows_seeing_fewer_than_min_keys():
    # Causal, n = 7 < broad_min_keys = 8: no row sees enough keys.
    assert score_broad(uniform_causal(7), ctx(7)).shape == (1, 0)


# --- local ---------------------------------------------------------------------------------------------


def test_local_band_map_scores_one_on_local_and_zero_on_previous_token():
    n = 20
    # Row i >= 1 spreads over i, i-2, i-3 (the band minus the previous token, never key 0).
    a = rows_from_keys(n, lambda i: [0] if i == 0 else [j for j in (i, i - 2, i - 3) if j >= 1])
    c = ctx(n)
    np.testing.assert_allclose(score_local(a, c), 1.0, atol=1e-12)
    np.testing.assert_array_equal(score_previous_token(a, c), 0.0)
    np.testing.assert_array_equal(score_sink(a, c), 0.0)


def test_local_counts_both_sides_for_bidirectional_maps():
    n = 20
    a = rows_from_keys(n, lambda i: [j for j in (i - 2, i + 2, i + 3) if 1 <= j < n] or [i])
    np.testing.assert_allclose(score_local(a, ctx(n, causal=False)), 1.0, atol=1e-12)


def test_local_ignores_weight_beyond_the_window():
    n = 20
    w = S.local_window
    a = rows_from_keys(n, lambda i: [i - w - 1] if i - w - 1 >= 1 else [i])
    vals = score_local(a, ctx(n))
    # Rows i >= w + 2 look just outside the band and score 0; earlier rows look at themselves.
    np.testing.assert_array_equal(vals[0, w + 1:], 0.0)


# --- delimiter band ------------------------------------------------------------------------------------


def _delims(n: int) -> np.ndarray:
    return np.arange(n) % 4 == 3  # keys 3, 7, 11, ...


def test_weight_only_on_delimiter_keys_scores_one_on_delimiter_band():
    n = 24
    delim = _delims(n)
    # Rows that see a delimiter spread over the visible ones; earlier rows look at themselves.
    a = rows_from_keys(n, lambda i: [j for j in range(1, i + 1) if delim[j]] or [i])
    vals = score_delimiter_band(a, ctx(n, delim=delim))
    assert vals.shape == (1, n - 3)  # rows 3..23 see delimiter key 3; rows 1, 2 see none
    np.testing.assert_allclose(vals, 1.0, atol=1e-12)


def test_uniform_map_scores_zero_on_delimiter_band():
    n = 24
    vals = score_delimiter_band(uniform_causal(n), ctx(n, delim=_delims(n)))
    np.testing.assert_allclose(vals, 0.0, atol=1e-12)


def test_weight_on_key_zero_is_not_delimiter_weight_even_if_key_zero_is_a_delimiter():
    n = 16
    delim = _delims(n)
    delim[0] = True
    a = np.zeros((1, n, n))
    a[0, :, 0] = 1.0
    c = ctx(n, delim=delim)
    np.testing.assert_array_equal(score_delimiter_band(a, c), 0.0)
    assert c.is_delimiter[0]  # the scorer must not clear the caller's mask


# --- induction -----------------------------------------------------------------------------------------


def _induction_setup(p: int = 8, s: int = 1) -> tuple[int, int, int]:
    return p, s, s + 2 * p + 1  # BOS, block, block, a trailing special token


def test_planted_induction_map_scores_one_on_induction():
    p, s, n = _induction_setup()
    targets = list(range(n))  # default: look at yourself
    for i in range(s + p, s + 2 * p):
        targets[i] = i - p + 1  # the token right after the earlier copy of token i
    vals = score_induction(one_hot_map(targets), ctx(n, period=p, period_start=s))
    assert vals.shape == (1, p)
    np.testing.assert_array_equal(vals, 1.0)


def test_head_attending_to_the_earlier_copy_itself_is_not_an_induction_head():
    p, s, n = _induction_setup()
    targets = list(range(n))
    for i in range(s + p, s + 2 * p):
        targets[i] = i - p  # duplicate-token head: the copy, not the token after it
    vals = score_induction(one_hot_map(targets), ctx(n, period=p, period_start=s))
    np.testing.assert_array_equal(vals, 0.0)


def test_previous_token_head_scores_zero_on_induction_probe():
    p, s, n = _induction_setup()
    vals = score_induction(previous_token_map(n), ctx(n, period=p, period_start=s))
    np.testing.assert_array_equal(vals, 0.0)


def test_induction_is_empty_without_a_period():
    assert score_induction(uniform_causal(12), ctx(12)).shape == (1, 0)


# --- purity --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("causal", [True, False])
def test_scorers_do_not_modify_their_input(family, causal):
    n = 20
    rng = np.random.default_rng(0)
    raw = rng.random((3, n, n))
    if causal:
        raw = np.tril(raw)
    a = raw / raw.sum(-1, keepdims=True)
    delim = _delims(n)
    delim[0] = True
    before_a, before_d = a.copy(), delim.copy()
    SCORERS[family](a, ctx(n, causal=causal, delim=delim, period=6, period_start=1))
    np.testing.assert_array_equal(a, before_a)
    np.testing.assert_array_equal(delim, before_d)


# --- classify ------------------------------------------------------------------------------------------


def _low_scores() -> dict:
    return {fam: 0.05 for fam in FAMILIES}


@pytest.mark.parametrize("family", FAMILIES)
def test_classify_picks_the_planted_family(family):
    scores = _low_scores()
    scores[family] = 0.95
    assert classify(scores, S) == family


def test_classify_returns_mixed_when_nothing_clears_a_bar():
    scores = {
        "previous_token": 0.49, "next_token": 0.49, "local": 0.49, "sink": 0.49,
        "delimiter_band": 0.29, "broad": 0.79, "induction": 0.29,
    }
    assert classify(scores, S) == "mixed"


def test_classify_skips_families_that_do_not_apply():
    scores = _low_scores()
    scores["next_token"] = None
    scores["induction"] = None
    scores["sink"] = 0.9
    assert classify(scores, S) == "sink"
    assert classify({fam: None for fam in FAMILIES}, S) == "mixed"


def test_classify_compares_margins_over_the_bar_not_raw_scores():
    # sink 0.75 clears its 0.5 bar by half the remaining room; broad 0.85 clears 0.8 by a quarter.
    scores = _low_scores()
    scores["sink"] = 0.75
    scores["broad"] = 0.85
    assert classify(scores, S) == "sink"


def test_classify_uses_the_bars_from_settings():
    scores = _low_scores()
    scores["previous_token"] = 0.6
    assert classify(scores, Settings(bar_previous_token=0.7)) == "mixed"
    assert classify(scores, Settings(bar_previous_token=0.5)) == "previous_token"


# --- invariant: every value lies in [0, 1] --------------------------------------------------------------


@st.composite
def causal_maps(draw):
    n = draw(st.integers(2, 24))
    h = draw(st.integers(1, 3))
    raw = draw(hnp.arrays(np.float64, (h, n, n), elements=st.floats(0.0, 1.0)))
    raw = np.tril(raw)
    raw[:, np.arange(n), np.arange(n)] += 1e-6  # every row keeps some mass
    a = raw / raw.sum(-1, keepdims=True)
    delim = draw(hnp.arrays(np.bool_, (n,)))
    period = None
    start = 0
    if n >= 4 and draw(st.booleans()):
        period = draw(st.integers(1, (n - 1) // 2))
        start = draw(st.integers(0, n - 2 * period))
    return a, MapContext(True, delim, S, period, start)


@settings(max_examples=150, deadline=None)
@given(causal_maps())
def test_every_scorer_returns_values_in_unit_interval_on_row_stochastic_causal_maps(case):
    a, c = case
    for fam, scorer in SCORERS.items():
        vals = scorer(a, c)
        assert vals.ndim == 2 and vals.shape[0] == a.shape[0], fam
        if vals.size:
            assert vals.min() >= -1e-9, fam
            assert vals.max() <= 1 + 1e-9, fam
