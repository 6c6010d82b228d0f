"""Known-answer and property tests for attention rollout (Abnar & Zuidema 2020)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.rollout import RolloutOptions, discard_smallest, effective_sources, fuse_heads, rollout, rollout_step


def test_two_token_two_layer_example_by_hand() -> None:
    a = np.array([[[1.0, 0.0], [0.5, 0.5]]])  # one causal head
    # step = 0.5·A + 0.5·I = [[1, 0], [0.25, 0.75]]; two layers: step @ step
    expected = np.array([[1.0, 0.0], [0.25 + 0.75 * 0.25, 0.75 * 0.75]])
    out = rollout([a, a], RolloutOptions())
    np.testing.assert_allclose(out[0], [[1.0, 0.0], [0.25, 0.75]], atol=1e-12)
    np.testing.assert_allclose(out[1], expected, atol=1e-12)


def _reference(layers: list[np.ndarray], residual: float, fusion: str, discard: float) -> np.ndarray:
    """A deliberately naive loop version, written from the paper's description."""
    n = layers[0].shape[-1]
    r = [[1.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    for attn in layers:
        fused = [[0.0] * n for _ in range(n)]
        for i in range(n):
            for j in range(n):
                vals = [attn[h][i][j] for h in range(attn.shape[0])]
                fused[i][j] = {"mean": sum(vals) / len(vals), "max": max(vals), "min": min(vals)}[fusion]
        for i in range(n):
            if discard > 0:
                cands = sorted((fused[i][j], j) for j in range(n) if j != i and fused[i][j] > 0)
                for _, j in cands[: int(discard * len(cands))]:
                    fused[i][j] = 0.0
            total = sum(fused[i])
            fused[i] = [v / total for v in fused[i]]
        step = [[residual * fused[i][j] + (1 - residual) * (i == j) for j in range(n)] for i in range(n)]
        step = [[v / sum(row) for v in row] for row in step]
        new = [[sum(step[i][k] * r[k][j] for k in range(n)) for j in range(n)] for i in range(n)]
        r = [[v / sum(row) for v in row] for row in new]
    return np.array(r)


def _causal_layers(rng: np.random.Generator, n_layers: int = 3, heads: int = 2, n: int = 4) -> list[np.ndarray]:
    out = []
    for _ in range(n_layers):
        a = np.tril(rng.random((heads, n, n)))
        out.append(a / a.sum(-1, keepdims=True))
    return out


@pytest.mark.parametrize("residual, fusion, discard", [
    (0.5, "mean", 0.0), (1.0, "mean", 0.0), (0.5, "max", 0.0), (0.5, "min", 0.0), (0.5, "mean", 0.5),
])
def test_three_layer_four_token_example_matches_the_naive_reference(residual: float, fusion: str,
                                                                    discard: float) -> None:
    layers = _causal_layers(np.random.default_rng(1))
    out = rollout(layers, RolloutOptions(residual, fusion, discard))  # type: ignore[arg-type]
    np.testing.assert_allclose(out[-1], _reference(layers, residual, fusion, discard), atol=1e-12)


def test_identity_maps_give_identity_rollout() -> None:
    eye = np.eye(5)[None].repeat(3, 0)
    for r in rollout([eye] * 4, RolloutOptions()):
        np.testing.assert_allclose(r, np.eye(5), atol=1e-12)


def test_mean_fusion_of_identical_heads_equals_one_head() -> None:
    one = _causal_layers(np.random.default_rng(2), heads=1)
    three = [np.repeat(a, 3, axis=0) for a in one]
    np.testing.assert_allclose(rollout(three, RolloutOptions())[-1], rollout(one, RolloutOptions())[-1], atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 12), residual=st.floats(0.0, 1.0),
       fusion=st.sampled_from(["mean", "max", "min"]), discard=st.floats(0.0, 0.9))
def test_rows_sum_to_one_and_no_weight_comes_from_the_future(seed: int, n: int, residual: float, fusion: str,
                                                             discard: float) -> None:
    layers = _causal_layers(np.random.default_rng(seed), n_layers=3, heads=3, n=n)
    for r in rollout(layers, RolloutOptions(residual, fusion, discard)):  # type: ignore[arg-type]
        np.testing.assert_allclose(r.sum(-1), 1.0, atol=1e-6)
        assert np.abs(np.triu(r, 1)).max() == 0.0


def test_discard_never_drops_the_diagonal_and_leaves_the_input_alone() -> None:
    m = np.array([[0.1, 0.2, 0.7], [0.5, 0.1, 0.4], [0.3, 0.3, 0.4]])
    before = m.copy()
    out = discard_smallest(m, 0.5)
    np.testing.assert_array_equal(m, before)
    assert np.all(np.diag(out) == np.diag(m))
    assert out[0, 1] == 0.0 and out[0, 2] == 0.7  # of 0.2 and 0.7 the smaller goes


def test_fusion_max_and_min_pick_elementwise() -> None:
    a = np.array([[[0.2, 0.8]], [[0.6, 0.4]]])
    np.testing.assert_allclose(fuse_heads(a, "max"), [[0.6, 0.8]])
    np.testing.assert_allclose(fuse_heads(a, "min"), [[0.2, 0.4]])


def test_effective_sources_counts_uniform_support() -> None:
    assert effective_sources(np.array([0.25, 0.25, 0.25, 0.25])) == pytest.approx(4.0)
    assert effective_sources(np.array([1.0, 0.0, 0.0])) == pytest.approx(1.0)


@pytest.mark.parametrize("n", [1, 255, 256, 600])
def test_the_lower_triangular_product_of_a_causal_model_equals_the_full_product(n: int) -> None:
    layers = _causal_layers(np.random.default_rng(n), n_layers=3, heads=2, n=n)
    opts = RolloutOptions()
    full, lower = np.eye(n), np.eye(n)
    for a in layers:
        full = rollout_step(full, fuse_heads(a, "mean"), opts)
        lower = rollout_step(lower, fuse_heads(a, "mean"), opts, causal=True)
        np.testing.assert_allclose(lower, full, rtol=1e-12, atol=1e-15)
