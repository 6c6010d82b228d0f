"""End to end on the two builtin pretrained models (short probes, to keep CI quick)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import load_json, run_cli

pytestmark = pytest.mark.realmodel


def _run(model: str, out: Path, probes: Path) -> dict[str, Any]:
    res = run_cli(model, "--out", str(out / "r.html"), "--pdf", str(out / "r.pdf"), "--probes", str(probes),
                  "--max-tokens", "256", "-q")
    assert res.returncode == 0, res.stderr
    return load_json(out / "r.json")


@pytest.fixture(scope="module")
def minilm(short_probes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("minilm")
    return out, _run("minilm-l6", out, short_probes)


@pytest.fixture(scope="module")
def smollm(short_probes: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("smollm")
    return out, _run("smollm2-135m", out, short_probes)


def test_minilm_is_a_bert_encoder_with_no_rope_prediction(minilm: tuple[Path, dict[str, Any]]) -> None:
    out, d = minilm
    m = d["model"]
    assert (m["num_layers"], m["num_heads"], m["position_encoding"], m["is_causal"]) == (6, 12, "absolute", False)
    assert d["prediction"]["applies"] is False and d["prediction"]["gamma"] is None
    assert len(d["heads"]) == 72
    assert m["first_token"] == "[CLS]"


def test_smollm2_facts_match_the_published_config(smollm: tuple[Path, dict[str, Any]]) -> None:
    _, d = smollm
    m = d["model"]
    assert (m["num_layers"], m["num_heads"], m["num_kv_heads"]) == (30, 9, 3)
    assert m["position_encoding"] == "rope" and m["rope_theta"] == 100000.0
    assert m["attn_implementation"] == "eager" and m["dtype"] == "float32"
    assert m["bos_added"] is False and m["first_token"] == ""  # no BOS: the sink is each probe's first word
    assert d["prediction"]["applies"] is True


def test_smollm2_has_sink_heads_and_says_why(smollm: tuple[Path, dict[str, Any]]) -> None:
    out, d = smollm
    sinks = [h for h in d["heads"] if h["sink_mass"] > 0.8]
    assert sinks, "a trained Llama-style model parks weight on token 0 in many heads"
    codes = {a["code"] for a in d["alerts"]}
    assert {"SINK_HEADS", "SINK_ON_FIRST_WORD"} <= codes
    html = (out / "r.html").read_text(encoding="utf-8")
    assert "structural, not importance" in html and "Attention is not explanation" in html


def test_smollm2_has_induction_heads(smollm: tuple[Path, dict[str, Any]]) -> None:
    _, d = smollm
    best = max(h["scores"]["induction"] for h in d["heads"])
    assert best > 0.3  # trained LMs copy from the earlier occurrence of a repeated random sequence


def test_real_reports_render_pdf(minilm: tuple[Path, dict[str, Any]], smollm: tuple[Path, dict[str, Any]]) -> None:
    from pypdf import PdfReader

    for out, _ in (minilm, smollm):
        assert len(PdfReader(str(out / "r.pdf")).pages) >= 3


def test_interrupted_or_damaged_gguf_cache_is_never_loaded_broken(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import PreTrainedModel

    from reporter import load

    monkeypatch.setenv("ATTN_REPORT_CACHE", str(tmp_path))
    gguf = load.locate_builtin("smollm2-135m")
    real_save = PreTrainedModel.save_pretrained

    def save_then_die(self: Any, folder: Any, *a: Any, **k: Any) -> None:
        real_save(self, folder, *a, **k)
        raise KeyboardInterrupt  # Ctrl-C after the weights hit the disk, before the tokenizer and marker

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        load.convert_gguf(gguf)
    assert not list((tmp_path / "gguf").iterdir()), "no folder, finished or temporary, may remain"
    monkeypatch.setattr(PreTrainedModel, "save_pretrained", real_save)
    folder = load.convert_gguf(gguf)
    assert (folder / "attn-report-complete.json").is_file() and (folder / "model.safetensors").is_file()
    # a damaged cache (a disk that filled up, a stray edit) is rebuilt, not reported as a broken model
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4096])
    loaded = load.load_model("smollm2-135m")
    assert loaded.facts.num_layers == 30 and weights.stat().st_size > 100_000_000


def test_an_unusable_cache_folder_is_one_clear_line(tmp_path: Path) -> None:
    from tests.conftest import run_cli

    not_a_folder = tmp_path / "cachefile"
    not_a_folder.write_text("x")
    res = run_cli("smollm2-135m", "--out", str(tmp_path / "r.html"), env={"ATTN_REPORT_CACHE": str(not_a_folder)})
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert "cannot write the conversion cache" in res.stderr and "ATTN_REPORT_CACHE" in res.stderr
    assert not (tmp_path / "r.html").exists()

