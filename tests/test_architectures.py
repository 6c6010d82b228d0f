"""The real CLI on tiny random-init models of many architectures: what applies, what does not, and clean refusals.

Every model is built from its config (hidden 32, 2 layers, byte-level tokenizer from conftest), saved to a
temp folder and run through `python -m reporter` exactly as a user would. The runs are made once per module,
two at a time, and each test reads the outcome of its architecture.
"""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import byte_tokenizer, load_json, run_cli

WINDOW = 16  # sliding window of the Mistral and Gemma-2 models; shorter than the 64 tokens analysed
MAX_TOKENS = 64


@dataclass(frozen=True)
class Run:
    res: subprocess.CompletedProcess[str]
    out: Path

    @property
    def json(self) -> dict[str, Any]:
        return load_json(self.out / "r.json")

    def why(self) -> str:
        return f"exit {self.res.returncode}; stderr: {self.res.stderr.strip()[-2000:]}"


def _build(kind: str, folder: Path) -> Path:
    """A tiny random-init model of the given architecture, saved with its tokenizer."""
    import torch
    import transformers as tf
    from transformers import AutoModel, AutoModelForCausalLM

    torch.manual_seed(0)
    add_bos = kind not in ("bloom", "qwen2", "t5")  # as their real tokenizers do
    tok = byte_tokenizer(add_bos=add_bos)
    ids = {"vocab_size": len(tok), "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2}
    small = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "max_position_embeddings": 256}
    causal = True
    cfg: Any
    if kind == "gpt_neox":
        cfg = tf.GPTNeoXConfig(**small, **ids, num_attention_heads=4, rotary_pct=0.25)
    elif kind == "llama_gqa":
        cfg = tf.LlamaConfig(**small, **ids, num_attention_heads=8, num_key_value_heads=2, head_dim=4)
    elif kind == "mistral":
        cfg = tf.MistralConfig(**small, **ids, num_attention_heads=4, num_key_value_heads=2, sliding_window=WINDOW)
    elif kind == "gemma2":  # layer 0 local (sliding window), layer 1 global
        cfg = tf.Gemma2Config(**small, **ids, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                              sliding_window=WINDOW)
    elif kind == "bloom":
        cfg = tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **ids)
    elif kind == "qwen2":
        cfg = tf.Qwen2Config(**small, **ids, num_attention_heads=4, num_key_value_heads=2)
    elif kind == "t5":
        cfg = tf.T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                          eos_token_id=1, pad_token_id=2, decoder_start_token_id=2)
        causal = False
    elif kind == "bart":
        cfg = tf.BartConfig(d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                            max_position_embeddings=256, decoder_start_token_id=2, **ids)
        causal = False
    elif kind == "mamba":
        cfg = tf.MambaConfig(hidden_size=32, state_size=4, num_hidden_layers=2, expand=2, conv_kernel=4, **ids)
    else:
        raise ValueError(kind)
    model = (AutoModelForCausalLM if causal else AutoModel).from_config(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


KINDS = ("gpt_neox", "llama_gqa", "mistral", "gemma2", "bloom", "qwen2", "t5", "bart", "mamba")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Run]:
    base = tmp_path_factory.mktemp("arch")
    probes = base / "probes.txt"
    probes.write_text(
        "The cat sat on the mat, and the dog sat on the log.\n\n"
        + " ".join(["the old river ran slowly past the town"] * 4) + "\n",
        encoding="utf-8",
    )
    folders = {k: _build(k, base / "models" / k) for k in KINDS}

    def one(kind: str) -> tuple[str, Run]:
        out = base / "out" / kind
        out.mkdir(parents=True)
        res = run_cli(str(folders[kind]), "--out", str(out / "r.html"), "--probes", str(probes),
                      "--max-tokens", str(MAX_TOKENS), "-q", timeout=300)
        return kind, Run(res, out)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(one, KINDS))


def _assert_report(run: Run) -> dict[str, Any]:
    assert run.res.returncode == 0, run.why()
    assert {p.name for p in run.out.iterdir()} == {"r.html", "r.json"}
    return run.json


def _assert_clean_refusal(run: Run) -> None:
    """Exit 2, exactly one stderr line starting 'Error:', no traceback, nothing written."""
    lines = run.res.stderr.strip().splitlines()
    assert run.res.returncode == 2, run.why()
    assert len(lines) == 1 and lines[0].startswith("Error:"), run.why()
    assert "Traceback" not in run.res.stderr and "internal error" not in run.res.stderr
    assert list(run.out.iterdir()) == []


def _assert_report_or_refusal(run: Run) -> dict[str, Any] | None:
    if run.res.returncode == 0:
        return _assert_report(run)
    _assert_clean_refusal(run)
    return None


def test_gpt_neox_partial_rotary_is_rope_and_the_prediction_names_it(runs: dict[str, Run]) -> None:
    d = _assert_report(runs["gpt_neox"])
    assert d["model"]["position_encoding"] == "rope" and d["model"]["rope_theta"] == 10000.0
    assert d["model"]["partial_rotary_factor"] == 0.25
    p = d["prediction"]
    assert p["applies"] is True and p["gamma"] is not None
    assert "0.25" in p["reason"] and "rotate" in p["reason"]


def test_llama_grouped_query_attention_maps_heads_to_kv_groups(runs: dict[str, Run]) -> None:
    d = _assert_report(runs["llama_gqa"])
    assert (d["model"]["num_heads"], d["model"]["num_kv_heads"]) == (8, 2)
    assert len(d["heads"]) == 2 * 8
    for layer in (0, 1):
        assert [h["kv_group"] for h in d["heads"] if h["layer"] == layer] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert d["model"]["position_encoding"] == "rope" and d["prediction"]["applies"] is True


def test_mistral_sliding_window_is_named_in_the_prediction_and_seen_in_the_maps(runs: dict[str, Run]) -> None:
    d = _assert_report(runs["mistral"])
    p = d["prediction"]
    assert d["model"]["position_encoding"] == "rope" and p["applies"] is True
    assert "sliding window" in p["reason"] and str(WINDOW) in p["reason"]
    # every layer slides: no weight at all at distance >= WINDOW (key 0 is kept out of the curve)
    far = [v for v in d["distance"]["mean_attention"][WINDOW:] if v is not None]
    assert far and max(far) == 0.0


def test_gemma2_alternating_local_global_gives_a_report_or_a_clear_refusal(runs: dict[str, Run]) -> None:
    d = _assert_report_or_refusal(runs["gemma2"])
    if d is not None:
        assert d["model"]["position_encoding"] == "rope" and d["model"]["num_layers"] == 2
        assert "sliding window" in d["prediction"]["reason"]


def test_gemma2_reason_does_not_claim_zero_attention_beyond_the_window_of_local_layers_only(
        runs: dict[str, Run]) -> None:
    d = _assert_report(runs["gemma2"])
    far = [v for v in d["distance"]["mean_attention"][WINDOW:] if v is not None]
    assert far and max(far) > 0.0  # the global layer reads past the window
    reason = d["prediction"]["reason"]
    assert "on 1 of 2 layers" in reason and "the others attend globally" in reason


def test_bloom_alibi_is_reported_and_the_prediction_does_not_apply(runs: dict[str, Run]) -> None:
    d = _assert_report(runs["bloom"])
    assert d["model"]["position_encoding"] == "alibi" and d["model"]["rope_theta"] is None
    p = d["prediction"]
    assert p["applies"] is False and p["gamma"] is None and "ALiBi" in p["reason"]


def test_qwen2_is_rope_and_the_prediction_applies(runs: dict[str, Run]) -> None:
    d = _assert_report(runs["qwen2"])
    assert d["model"]["position_encoding"] == "rope" and d["model"]["rope_theta"] is not None
    assert d["prediction"]["applies"] is True and d["prediction"]["gamma"] is not None
    assert not d["model"]["bos_added"]
    assert "sliding window" not in d["prediction"]["reason"]  # use_sliding_window is False by default


def _assert_encoder_decoder(run: Run) -> None:
    d = _assert_report(run)  # the encoder's self-attention is analysed, and the report says so
    assert any("encoder's self-attention is analysed" in n for n in d["notices"])
    if d is not None:
        assert d["model"]["is_causal"] is False
        assert d["prediction"]["applies"] is False and d["prediction"]["reason"]


def test_t5_encoder_decoder_gives_a_report_or_a_clean_refusal(runs: dict[str, Run]) -> None:
    _assert_encoder_decoder(runs["t5"])


def test_bart_encoder_decoder_gives_a_report_or_a_clean_refusal(runs: dict[str, Run]) -> None:
    _assert_encoder_decoder(runs["bart"])


def test_mamba_is_refused_in_one_line_without_traceback_or_files(runs: dict[str, Run]) -> None:
    run = runs["mamba"]
    _assert_clean_refusal(run)
    assert "exposes no attention maps" in run.res.stderr
    assert run.res.stdout == ""


def test_every_report_is_valid_json_with_one_head_row_per_layer_and_head(runs: dict[str, Run]) -> None:
    for kind, run in runs.items():
        if run.res.returncode != 0:
            continue
        d = json.loads((run.out / "r.json").read_text(encoding="utf-8"))
        m = d["model"]
        assert len(d["heads"]) == m["num_layers"] * m["num_heads"], kind
        assert m["attn_implementation"] == "eager", kind


def test_value_norms_are_read_where_the_layout_is_known_and_said_to_be_missing_elsewhere(
        runs: dict[str, Run]) -> None:
    known = {"llama_gqa", "mistral", "gemma2", "qwen2", "t5", "bart"}  # separate value and output projections
    for kind in ("gpt_neox", "bloom", *sorted(known)):
        run = runs[kind]
        if run.res.returncode != 0:
            continue
        ev = run.json["sink_evidence"]
        if kind in known:
            assert ev["applies"] is True, kind
            assert len(ev["heads"]) == run.json["model"]["num_layers"] * run.json["model"]["num_heads"], kind
            assert all(h["value_share"] is None or 0.0 <= h["value_share"] <= 1.0 + 1e-6 for h in ev["heads"]), kind
        else:  # fused, per-head interleaved q/k/v: not guessed at
            assert ev["applies"] is False and ev["heads"] == [] and "value" in ev["reason"], kind
            assert "not available" in (run.out / "r.html").read_text(encoding="utf-8"), kind
