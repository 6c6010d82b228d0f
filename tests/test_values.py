"""Known-answer tests for value-weighted attention, no-op scores and massive activations.

The reductions are checked on hand-built tensors against loop-level arithmetic, then through the real
loading and capture path on tiny models whose weights are set by hand (zero value at token 0, equal
value norms, a head with an all-zero output projection).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from reporter.pipeline import RunOptions, run
from reporter.report import Report
from reporter.settings import DEFAULT_SETTINGS
from reporter.values import activation_stats, norm_ratio, value_stats
from tests.conftest import byte_tokenizer

S = dataclasses.replace(DEFAULT_SETTINGS, bootstrap_samples=50)


def causal_rows(rng: np.random.Generator, heads: int, n: int) -> torch.Tensor:
    """[heads, n, n] random causal softmax rows."""
    a = rng.random((heads, n, n)) * np.tril(np.ones((n, n)))
    a /= a.sum(-1, keepdims=True)
    return torch.from_numpy(a.astype(np.float32))


def by_hand(a: np.ndarray, v: np.ndarray, w_o: np.ndarray) -> dict[str, np.ndarray]:
    """Loops over heads, rows and keys: f_j = W_O,h v_j, y_i = Σ_j α_ij f_j (one KV head per query head)."""
    heads, n, _ = a.shape
    dh = w_o.shape[1] // heads
    out = {k: np.zeros(heads) for k in ("out_sum", "sink_out_sum", "rest_out_sum", "sink_vshare_sum")}
    for h in range(heads):
        wh = w_o[:, h * dh:(h + 1) * dh]
        f = [wh @ v[j, h * dh:(h + 1) * dh] for j in range(n)]
        for i in range(1, n):
            y = sum(a[h, i, j] * f[j] for j in range(n))
            rest = sum(a[h, i, j] * f[j] for j in range(1, n))
            moved = sum(a[h, i, j] * np.linalg.norm(f[j]) for j in range(n))
            out["out_sum"][h] += np.linalg.norm(y)
            out["sink_out_sum"][h] += a[h, i, 0] * np.linalg.norm(f[0])
            out["rest_out_sum"][h] += np.linalg.norm(rest)
            out["sink_vshare_sum"][h] += a[h, i, 0] * np.linalg.norm(f[0]) / moved
    return out


def gram_of(w_o: np.ndarray, heads: int) -> torch.Tensor:
    dh = w_o.shape[1] // heads
    return torch.stack([torch.from_numpy((w_o[:, h * dh:(h + 1) * dh].T @ w_o[:, h * dh:(h + 1) * dh])
                                         .astype(np.float32)) for h in range(heads)])


def test_value_stats_match_loop_arithmetic() -> None:
    rng = np.random.default_rng(0)
    heads, n, dh, hidden = 2, 6, 3, 5
    a = causal_rows(rng, heads, n)
    v = rng.normal(size=(n, heads * dh)).astype(np.float32)
    w_o = rng.normal(size=(hidden, heads * dh)).astype(np.float32)
    st = value_stats(a, torch.from_numpy(v), gram_of(w_o, heads), heads, np.zeros(n, dtype=bool))
    ref = by_hand(a.numpy().astype(np.float64), v.astype(np.float64), w_o.astype(np.float64))
    for k, want in ref.items():
        assert st[k] == pytest.approx(want, rel=1e-4), k
    assert st["vshare_rows"].tolist() == [n - 1, n - 1]


def test_zero_value_at_token_0_gives_zero_value_weighted_share_whatever_the_weights() -> None:
    rng = np.random.default_rng(1)
    heads, n, dh = 3, 8, 4
    v = rng.normal(size=(n, heads * dh)).astype(np.float32)
    v[0] = 0.0
    w_o = rng.normal(size=(7, heads * dh)).astype(np.float32)
    a = causal_rows(rng, heads, n)
    a[:, 1:, 0] += 5.0  # nearly all weight on the sink
    a /= a.sum(-1, keepdim=True)
    st = value_stats(a, torch.from_numpy(v), gram_of(w_o, heads), heads, np.zeros(n, dtype=bool))
    assert a[:, 1:, 0].mean() > 0.7
    assert st["sink_vshare_sum"] == pytest.approx(np.zeros(heads), abs=1e-7)
    assert st["sink_out_sum"] == pytest.approx(np.zeros(heads), abs=1e-7)


def test_equal_value_norms_make_value_weighted_shares_equal_to_the_weights() -> None:
    rng = np.random.default_rng(2)
    heads, n, dh = 2, 10, 4
    v = rng.normal(size=(n, heads, dh))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)  # every value vector has norm 1 ...
    q, _ = np.linalg.qr(rng.normal(size=(heads * dh, heads * dh)))  # ... and W_O keeps norms
    a = causal_rows(rng, heads, n)
    st = value_stats(a, torch.from_numpy(v.reshape(n, -1).astype(np.float32)), gram_of(q, heads), heads,
                     np.zeros(n, dtype=bool))
    assert st["fnorm"] == pytest.approx(np.ones((heads, n)), abs=1e-5)
    assert st["sink_vshare_sum"] == pytest.approx(a[:, 1:, 0].sum(-1).numpy(), abs=1e-5)


def test_grouped_query_heads_read_their_kv_group() -> None:
    rng = np.random.default_rng(3)
    heads, kv, n, dh = 4, 2, 5, 3
    v = rng.normal(size=(n, kv * dh)).astype(np.float32)
    w_o = np.tile(np.eye(dh, dtype=np.float32), (1, heads))  # W_O,h = I for every head
    st = value_stats(causal_rows(rng, heads, n), torch.from_numpy(v), gram_of(w_o, heads), kv,
                     np.zeros(n, dtype=bool))
    norms = np.linalg.norm(v.reshape(n, kv, dh), axis=-1).T  # [kv, n]
    assert st["fnorm"] == pytest.approx(norms[[0, 0, 1, 1]], rel=1e-5)


def test_special_key_shares_count_only_the_special_keys() -> None:
    a = torch.tensor([[[1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.2, 0.6, 0], [0.1, 0.1, 0.1, 0.7]]],
                     dtype=torch.float32)
    v = torch.tensor([[1.0], [2.0], [1.0], [4.0]])  # ‖f_j‖ = |v_j| with W_O = 1
    special = np.array([False, False, False, True])
    st = value_stats(a, v, torch.ones(1, 1, 1), 1, special)
    assert st["special_w_sum"][0] == pytest.approx(0.7)
    # row 3: 0.7·4 / (0.1·1 + 0.1·2 + 0.1·1 + 0.7·4) = 2.8 / 3.2
    assert st["special_vshare_sum"][0] == pytest.approx(2.8 / 3.2)


def test_norm_ratio_by_hand() -> None:
    f = np.array([[0.1, 1.0, 2.0, 3.0, 10.0]])
    keys = np.array([True, False, False, False, False])
    others = np.array([False, True, True, True, False])
    assert norm_ratio(f, keys, others)[0] == pytest.approx(0.1 / 2.0)
    assert np.isnan(norm_ratio(f, np.zeros(5, dtype=bool), others)[0])


def test_activation_stats_finds_the_massive_value_and_its_dimension() -> None:
    h = torch.ones(6, 8)
    h[0, 5] = -300.0  # the sign does not matter
    h[3, 2] = 4.0
    peak, median, dims = activation_stats(h)
    assert peak == 300.0 and median == 1.0  # median of the other tokens' peaks (1, 1, 4, 1, 1)
    assert int(np.argmax(dims)) == 5


# --- through the real loading and capture path -------------------------------------------------------------


def _tiny_llama(folder: Path, edit: str) -> Path:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    tok = byte_tokenizer(add_bos=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      rope_theta=10000.0, bos_token_id=0, eos_token_id=1, pad_token_id=2,
                      attention_bias=edit == "equal_values")
    model = AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for layer in model.model.layers:
            attn = layer.self_attn
            if edit == "zero_bos":  # a zero embedding stays zero: RMSNorm(0) = 0, no biases, MLP(0) = 0
                model.model.embed_tokens.weight[0] = 0.0
            elif edit == "equal_values":  # every token gets the same value vector
                attn.v_proj.weight.zero_()
                attn.v_proj.bias.copy_(torch.linspace(-1, 1, attn.v_proj.bias.numel()))
            elif edit == "dead_head":  # head 1 writes nothing
                dh = attn.o_proj.weight.shape[1] // 4
                attn.o_proj.weight[:, dh:2 * dh] = 0.0
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _report(folder: Path, probes: Path) -> Report:
    return run(RunOptions(model=str(folder), probes_file=probes, max_tokens=64), S)


@pytest.fixture(scope="module")
def hand_set(tmp_path_factory: pytest.TempPathFactory, short_probes: Path) -> dict[str, Report]:
    base = tmp_path_factory.mktemp("values")
    return {e: _report(_tiny_llama(base / e, e), short_probes) for e in ("zero_bos", "equal_values", "dead_head")}


def test_model_with_zero_value_at_bos_moves_nothing_from_the_sink(hand_set: dict[str, Report]) -> None:
    ev = hand_set["zero_bos"].sink_evidence
    assert ev.applies and len(ev.heads) == 2 * 4
    for h in ev.heads:
        assert h.weight_share > 0.0  # the heads do attend to BOS ...
        assert h.value_share == pytest.approx(0.0, abs=1e-6)  # ... and carry nothing from it
        assert h.sink_output_norm == pytest.approx(0.0, abs=1e-6)
        assert h.value_norm_ratio == pytest.approx(0.0, abs=1e-6)


def test_model_with_equal_values_has_value_weighted_share_equal_to_weight(hand_set: dict[str, Report]) -> None:
    ev = hand_set["equal_values"].sink_evidence
    for h in ev.heads:
        assert h.value_share == pytest.approx(h.weight_share, abs=2e-4)
        assert h.value_norm_ratio == pytest.approx(1.0, abs=1e-4)


def test_head_with_zero_output_projection_has_no_op_score_zero(hand_set: dict[str, Report]) -> None:
    r = hand_set["dead_head"]
    ev = r.sink_evidence
    dead = [h for h in ev.heads if h.head == 1]
    assert dead and all(h.noop_score == 0.0 and h.output_norm == 0.0 for h in dead)
    assert all(h.noop_score is not None and h.noop_score > 0.0 for h in ev.heads if h.head != 1)
    assert set(ev.noop_heads) == {(0, 1), (1, 1)}
    noop = [a for a in r.alerts if a.code == "NOOP_HEADS"]
    assert noop and set(noop[0].heads) == {(0, 1), (1, 1)} and noop[0].evidence == "sink-evidence"


def test_massive_activations_are_measured_per_layer(hand_set: dict[str, Report]) -> None:
    ev = hand_set["dead_head"].sink_evidence
    assert ev.activations_applies and [a.layer for a in ev.activations] == [0, 1]
    assert all(a.ratio is not None and a.ratio > 0 and len(a.top_dims) == 3 for a in ev.activations)
    # zero BOS embedding: token 0 stays exactly zero in every layer, so its ratio is 0
    assert all(a.sink_peak == 0.0 and a.ratio == 0.0 for a in hand_set["zero_bos"].sink_evidence.activations)


def test_encoder_reports_cls_and_sep(tiny_models: dict[str, Path], short_probes: Path) -> None:
    ev = _report(tiny_models["bert"], short_probes).sink_evidence
    assert ev.applies and "[CLS]" in ev.sink_label and ev.special_label == "[SEP]"
    assert ev.special_weight is not None and ev.special_value_share is not None and "no-op" in ev.special_note
    assert all(h.special_weight_share is not None for h in ev.heads)


def test_gpt2_fused_qkv_is_read(tiny_models: dict[str, Path], short_probes: Path) -> None:
    ev = _report(tiny_models["gpt2"], short_probes).sink_evidence
    assert ev.applies and all(h.value_share is not None for h in ev.heads)
