"""Known-answer tests for the family classifier on synthetic maps with planted families."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.scores import SCORERS, MapContext
from tests.synthetic import PLANTABLE, S, head_scores, label, plant

SIZES = (16, 64, 128, 512)
NOISES = (0.0, 0.1, 0.2, 0.3)


def _cases() -> list[tuple[str, int, bool, float]]:
    out = []
    for fam, n, causal, noise in itertools.product(PLANTABLE, SIZES, (True, False), NOISES):
        if fam == "next_token" and causal:
            continue  # a causal head cannot look ahead
        out.append((fam, n, causal, noise))
    return out


def test_classifier_recovers_at_least_95_percent_of_planted_families() -> None:
    rng = np.random.default_rng(7)
    cases = _cases()
    wrong = []
    for fam, n, causal, noise in cases:
        a, ctx = plant(fam, n, causal, noise, rng)
        got = label(a, ctx)
        if got != fam:
            wrong.append((fam, n, causal, noise, got))
    rate = 1 - len(wrong) / len(cases)
    assert rate >= 0.95, f"recovered {rate:.1%}; misses: {wrong}"


def test_every_scorer_gives_its_planted_family_a_high_score_clean_and_noisy() -> None:
    rng = np.random.default_rng(11)
    for fam in PLANTABLE:
        for noise in (0.0, 0.3):
            a, ctx = plant(fam, 64, causal=(fam != "next_token"), noise=noise, rng=rng)
            score = head_scores(a, ctx)[fam]
            assert score is not None and score >= 0.6, (fam, noise, score)


def test_clean_previous_and_next_token_maps_are_not_swapped() -> None:
    rng = np.random.default_rng(3)
    prev, ctx = plant("previous_token", 32, causal=False, noise=0.0, rng=rng)
    nxt, ctx2 = plant("next_token", 32, causal=False, noise=0.0, rng=rng)
    assert label(prev, ctx) == "previous_token" and label(nxt, ctx2) == "next_token"
    assert head_scores(prev, ctx)["next_token"] == 0.0 and head_scores(nxt, ctx2)["previous_token"] == 0.0


def test_encoder_cls_weight_is_a_special_token_band_not_a_sink() -> None:
    rng = np.random.default_rng(5)
    a, ctx = plant("sink", 48, causal=False, noise=0.1, rng=rng)
    delim = ctx.is_delimiter.copy()
    delim[0] = True  # token 0 is [CLS]
    enc = MapContext(False, delim, S, sink_applies=False)
    scores = head_scores(a, enc)
    assert scores["sink"] is None
    assert label(a, enc) == "delimiter_band"


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(12, 80), causal=st.booleans())
def test_permuting_heads_permutes_labels(seed: int, n: int, causal: bool) -> None:
    rng = np.random.default_rng(seed)
    fams = ["previous_token", "sink", "broad", "local"]
    maps = [plant(f, n, causal, 0.1, rng)[0][0] for f in fams]
    ctx = MapContext(causal, np.zeros(n, dtype=bool), S)
    stack = np.stack(maps)
    perm = rng.permutation(len(fams))
    for fam, fn in SCORERS.items():
        base, permuted = fn(stack, ctx), fn(stack[perm], ctx)
        np.testing.assert_array_equal(permuted, base[perm], err_msg=fam)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), fam=st.sampled_from(PLANTABLE), lo=st.floats(0.0, 0.5),
       hi=st.floats(0.5, 0.9))
def test_less_noise_never_lowers_the_planted_score(seed: int, fam: str, lo: float, hi: float) -> None:
    causal = fam != "next_token"
    scores = []
    for noise in (lo, hi):
        a, ctx = plant(fam, 40, causal, noise, np.random.default_rng(seed))  # same noise rows for both
        scores.append(head_scores(a, ctx)[fam])
    assert scores[0] is not None and scores[1] is not None
    assert scores[0] >= scores[1] - 1e-9
