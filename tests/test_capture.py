"""The capture folds each layer's map a block of query rows at a time: the sums must not depend on the block."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from reporter.capture import Captured, _Reducer
from reporter.errors import CaptureCheckError
from reporter.probes import TokenizedProbe
from reporter.settings import Settings


def random_maps(n_heads: int, n: int, causal: bool, rng: np.random.Generator) -> np.ndarray:
    """[1, heads, n, n] softmax rows of random scores, masked to the past for a causal model."""
    s = rng.normal(0, 2, (n_heads, n, n))
    if causal:
        s = np.where(np.tril(np.ones((n, n), dtype=bool))[None], s, -np.inf)
    e = np.exp(s - s.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True))[None].astype(np.float32)


def probe(name: str, n: int, rng: np.random.Generator, period: int | None = None) -> TokenizedProbe:
    ids = tuple(int(x) for x in rng.integers(5, 50, n))
    if period is not None:  # [first token] + block + the same block again
        block = ids[1:1 + period]
        ids = (ids[0], *block, *block)
        n = len(ids)
    delim = tuple(bool(x) for x in rng.random(n) < 0.2)
    return TokenizedProbe(name, "prose", ids, tuple(f"t{i}" for i in ids), delim, n, period)


def run(fold_rows: int, causal: bool, seed: int = 0) -> Captured:
    rng = np.random.default_rng(seed)
    s = Settings(fold_rows=fold_rows, query_block=16, thumbnail_max_tokens=20)
    probes = [probe("show", 37, rng), probe("long", 150, rng), probe("rep", 31, rng, period=30)]
    n_layers, n_heads = 3, 4
    red = _Reducer(n_layers, n_heads, max(p.n_tokens for p in probes), causal, "float32", s, display_probe="show")
    for p in probes:
        red.start_probe(p)
        for layer in range(n_layers):
            red.fold(torch.from_numpy(random_maps(n_heads, p.n_tokens, causal, rng)), layer)
        red.end_probe()
    return red.c


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("fold_rows", [1, 7, 16, 50])
def test_folding_by_row_blocks_gives_the_same_sums_as_the_whole_map(causal: bool, fold_rows: int) -> None:
    whole, blocks = run(10_000, causal), run(fold_rows, causal)
    for f in dataclasses.fields(Captured):
        x, y = getattr(whole, f.name), getattr(blocks, f.name)
        if f.name in ("forward_seconds", "reduce_seconds", "values", "activations"):
            continue
        if isinstance(x, np.ndarray):
            np.testing.assert_allclose(y, x, rtol=1e-9, atol=1e-9, err_msg=f.name)
        elif isinstance(x, list):
            assert len(x) == len(y), f.name
            for u, v in zip(x, y):
                np.testing.assert_allclose(v, u, rtol=1e-9, atol=1e-9, err_msg=f.name)
        elif isinstance(x, dict):
            assert x.keys() == y.keys()
            for k in x:
                assert y[k] == pytest.approx(x[k], rel=1e-9), (f.name, k)
        else:
            assert x == y, f.name


def test_a_future_weight_in_a_late_block_is_caught_with_its_head() -> None:
    rng = np.random.default_rng(1)
    s = Settings(fold_rows=8)
    n = 40
    m = random_maps(3, n, True, rng)
    m[0, 2, 30, 35] = 0.25  # head 2, query 30 (block 3) looks 5 tokens ahead
    m[0, 2, 30, :31] *= 0.75
    red = _Reducer(1, 3, n, True, "float32", s, display_probe="p")
    red.start_probe(probe("p", n, rng))
    with pytest.raises(CaptureCheckError, match=r"layer 0, head 2 .* future tokens"):
        red.fold(torch.from_numpy(m), 0)


def test_a_nan_in_a_late_block_names_layer_and_head() -> None:
    rng = np.random.default_rng(2)
    n = 40
    m = random_maps(2, n, False, rng)
    m[0, 1, 39, 3] = np.nan
    red = _Reducer(5, 2, n, False, "float32", Settings(fold_rows=8), display_probe="p")
    red.start_probe(probe("p", n, rng))
    with pytest.raises(CaptureCheckError, match=r"layer 4, head 1 .*NaN"):
        red.fold(torch.from_numpy(m), 4)
