"""Large models: the memory estimate made before loading, the refusal when a run cannot fit, --device-map."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporter import memory
from reporter.memory import config_params, estimate_footprint, safetensors_params
from tests.conftest import load_json, run_cli, save_tiny


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("scale") / "llama", "llama")


def _base_model_params(folder: Path) -> int:
    from transformers import AutoModel

    return sum(p.numel() for p in AutoModel.from_pretrained(folder).parameters())


def test_parameter_count_from_safetensors_headers_is_the_base_models(tiny_llama: Path) -> None:
    # the saved file also holds lm_head, which the base model attn-report loads does not have
    assert safetensors_params(tiny_llama) == _base_model_params(tiny_llama)


def test_parameter_count_of_sharded_weights_reads_only_the_indexed_shards(tiny_llama: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tiny_llama).save_pretrained(tmp_path, max_shard_size="30KB")
    shards = sorted(tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    shutil.copy(shards[0], tmp_path / "consolidated.safetensors")  # a stray extra copy is not counted
    assert safetensors_params(tmp_path) == _base_model_params(tiny_llama)


def test_parameter_count_from_the_config_is_close_to_the_real_one(tiny_llama: Path) -> None:
    from transformers import AutoConfig

    real = _base_model_params(tiny_llama)
    estimate = config_params(AutoConfig.from_pretrained(tiny_llama))
    assert 0.97 * real <= estimate <= real  # norms are left out, nothing is counted twice


def test_footprint_scales_with_dtype_and_with_the_square_of_the_input(tiny_llama: Path) -> None:
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(tiny_llama)
    fp32 = estimate_footprint(tiny_llama, cfg, "float32", 1000)
    bf16 = estimate_footprint(tiny_llama, cfg, "bfloat16", 1000)
    assert fp32.params_source == "safetensors headers" and fp32.n_params == safetensors_params(tiny_llama)
    assert fp32.weights == 4 * fp32.n_params and bf16.weights == 2 * fp32.n_params
    # 4 heads x n^2 fp32 maps x the workspace factor, plus a KV cache that is linear in n
    maps = memory.WORKSPACE_MAPS * 4 * 1000**2 * 4
    assert maps < fp32.workspace < 1.01 * maps
    assert estimate_footprint(tiny_llama, cfg, "float32", 2000).workspace == pytest.approx(4 * fp32.workspace, rel=0.01)
    assert estimate_footprint(None, cfg, "float32", 10).params_source == "config"


def test_a_run_that_cannot_fit_is_refused_before_loading_with_the_estimate(
        tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from reporter.cli import main

    monkeypatch.setattr(memory, "host_available", lambda: 50_000)  # 50 kB free
    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as exc:
        main([str(tiny_llama), "--out", str(out), "-q"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.count("\n") == 1 and err.startswith("Error: the model does not fit") and "Traceback" not in err
    assert "but 50 kB is free on cpu memory" in err and "--dtype bfloat16" in err
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_an_input_too_long_for_memory_is_refused_as_one_line(tmp_path: Path) -> None:
    # a model whose position limit allows 10^6 tokens and a probe that long: the attention maps alone
    # would need terabytes, more than any test machine has
    from transformers import AutoModelForCausalLM, LlamaConfig

    from tests.conftest import byte_tokenizer

    folder = tmp_path / "long_llama"
    tok = byte_tokenizer(add_bos=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1_000_000)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    probes = tmp_path / "long.txt"
    probes.write_text("ab" * 300_000, encoding="utf-8")  # 600k byte tokens
    res = run_cli(str(folder), "--probes", str(probes), "--max-tokens", "1000000", "--out", str(tmp_path / "r.html"))
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the model does not fit"), res.stderr
    assert "600001 tokens" in lines[0] and "--max-tokens" in lines[0]
    assert not (tmp_path / "r.html").exists()


def test_device_map_auto_writes_a_report(tiny_llama: Path, short_probes: Path, tmp_path: Path) -> None:
    res = run_cli(str(tiny_llama), "--device-map", "auto", "--probes", str(short_probes), "--max-tokens", "96",
                  "--out", str(tmp_path / "r.html"), "-q")
    assert res.returncode == 0, res.stderr
    d = load_json(tmp_path / "r.json")
    assert d["model"]["device"] == "cpu"
    assert any(n.startswith("--device-map auto: accelerate placed the weights on cpu") for n in d["notices"])
    assert len(d["heads"]) == 8 and d["distance"]["mean_attention"]


def test_device_map_with_a_device_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    res = run_cli(str(tiny_llama), "--device-map", "auto", "--device", "cuda", "--out", str(tmp_path / "r.html"))
    assert res.returncode == 2
    assert res.stderr.count("\n") == 1 and "cannot be combined with --device cuda" in res.stderr


@pytest.mark.parametrize("blob", [bytes(range(256)) * 64, (2**37).to_bytes(8, "little") + b"{}",
                                  (2**63 + 5).to_bytes(8, "little") + b"x" * 100])
def test_a_corrupt_safetensors_header_gives_no_count_instead_of_a_crash(tmp_path: Path, blob: bytes) -> None:
    (tmp_path / "model.safetensors").write_bytes(blob)
    assert safetensors_params(tmp_path) is None  # the config's estimate is used; loading names the broken file
