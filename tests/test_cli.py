"""The CLI end to end on tiny models: outputs, contract, determinism, escaping, and bad input."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_json, run_cli

REQUIRED_MODEL_FIELDS = {"id", "architecture", "num_layers", "num_heads", "num_kv_heads", "position_encoding",
                         "rope_theta", "max_position_embeddings", "bos_added", "dtype"}


@pytest.fixture(scope="module")
def llama_run(tiny_models: dict[str, Path], short_probes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("llama_out")
    res = run_cli(str(tiny_models["llama"]), "--out", str(out / "r.html"), "--pdf", str(out / "r.pdf"),
                  "--probes", str(short_probes), "--max-tokens", "96", "-q")
    assert res.returncode == 0, res.stderr
    return out


def test_writes_html_pdf_and_json_beside_the_report(llama_run: Path) -> None:
    assert {p.name for p in llama_run.iterdir()} == {"r.html", "r.pdf", "r.json"}


def test_json_holds_the_contract_fields(llama_run: Path) -> None:
    d = load_json(llama_run / "r.json")
    assert d["schema_version"] and REQUIRED_MODEL_FIELDS <= set(d["model"])
    assert d["model"]["num_layers"] == 2 and d["model"]["num_heads"] == 4 and d["model"]["num_kv_heads"] == 2
    assert len(d["heads"]) == 8
    assert {"layer", "head", "family", "scores", "entropy", "sink_mass"} <= set(d["heads"][0])
    assert [h["kv_group"] for h in d["heads"][:4]] == [0, 0, 1, 1]
    assert {"d", "mean_attention", "gamma"} <= set(d["distance"])
    assert {"method", "gamma", "theta", "T", "applies", "reason"} <= set(d["prediction"])
    assert d["prediction"]["applies"] and d["prediction"]["theta"] == 10000.0
    assert {"python", "torch", "transformers", "attn_report"} <= set(d["environment"])
    assert all({"name", "category", "num_tokens"} <= set(p) for p in d["probes"])
    assert any(p["category"] == "induction" for p in d["probes"])
    assert sum(d["family_counts"].values()) == 8


def test_prediction_matches_the_closed_form_at_the_longest_probe(llama_run: Path) -> None:
    d = load_json(llama_run / "r.json")
    T = max(p["num_tokens"] for p in d["probes"])
    z = 2**0.5 * T / 10000.0
    assert d["prediction"]["T"] == T
    assert d["prediction"]["gamma"] == pytest.approx((2 - z) / (2 + z), abs=1e-6)


def test_html_is_self_contained(llama_run: Path) -> None:
    html = (llama_run / "r.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    assert "<link" not in html and "@import" not in html
    for section in ("summary", "alerts", "reading", "heads", "rollout", "distance", "table", "method"):
        assert f'id="{section}"' in html
    for href in re.findall(r'href="#([^"]+)"', html):
        assert f'id="{href}"' in html, f"dangling internal link #{href}"


def test_probe_text_is_escaped_in_html(llama_run: Path) -> None:
    html = (llama_run / "r.html").read_text(encoding="utf-8")
    assert "<b>" not in html  # from the probe "<b>bold</b>"
    assert "&lt;" in html


def test_pdf_is_valid_with_pages(llama_run: Path) -> None:
    from pypdf import PdfReader

    reader = PdfReader(str(llama_run / "r.pdf"))
    assert len(reader.pages) >= 1
    assert "attn-report" in reader.pages[0].extract_text()


def test_same_input_gives_the_same_json(tiny_models: dict[str, Path], short_probes: Path, tmp_path: Path) -> None:
    outs = []
    for i in range(2):
        res = run_cli(str(tiny_models["gpt2"]), "--out", str(tmp_path / f"r{i}.html"), "--probes", str(short_probes),
                      "--max-tokens", "64", "-q")
        assert res.returncode == 0, res.stderr
        d = load_json(tmp_path / f"r{i}.json")
        d.pop("run")
        outs.append(d)
    assert outs[0] == outs[1]


def test_absolute_position_model_says_not_applicable(tiny_models: dict[str, Path], short_probes: Path,
                                                     tmp_path: Path) -> None:
    res = run_cli(str(tiny_models["bert"]), "--out", str(tmp_path / "b.html"), "--probes", str(short_probes), "-q")
    assert res.returncode == 0, res.stderr
    d = load_json(tmp_path / "b.json")
    assert d["prediction"]["applies"] is False and d["prediction"]["gamma"] is None
    assert "absolute" in d["prediction"]["reason"]
    assert "not applicable" in (tmp_path / "b.html").read_text(encoding="utf-8")
    assert all(h["scores"]["next_token"] is not None for h in d["heads"])


def test_causal_model_has_no_next_token_score(llama_run: Path) -> None:
    d = load_json(llama_run / "r.json")
    assert all(h["scores"]["next_token"] is None for h in d["heads"])


@pytest.mark.parametrize("args, needle", [
    (["--out", "{tmp}/r.txt"], "unknown suffix"),
    (["--out", "{tmp}/missing/r.html"], "does not exist"),
    (["--probes", "{tmp}/none.txt", "--out", "{tmp}/r.html"], "does not exist"),
])
def test_bad_input_exits_2_with_one_line(tiny_models: dict[str, Path], tmp_path: Path, args: list[str],
                                         needle: str) -> None:
    res = run_cli(str(tiny_models["gpt2"]), *[a.format(tmp=tmp_path) for a in args])
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]
    assert "Traceback" not in res.stderr
    assert not list(tmp_path.glob("r.*"))


def test_missing_model_path_exits_2(tmp_path: Path) -> None:
    res = run_cli(str(tmp_path / "no-such-model"), "--out", str(tmp_path / "r.html"))
    assert res.returncode == 2 and "does not exist" in res.stderr and "Traceback" not in res.stderr


def test_foreign_file_is_never_overwritten(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "notes.html"
    target.write_text("my own notes")
    res = run_cli(str(tiny_models["gpt2"]), "--out", str(target))
    assert res.returncode == 2 and "not written by attn-report" in res.stderr
    assert target.read_text() == "my own notes"


def test_own_report_is_replaced(llama_run: Path, tiny_models: dict[str, Path], short_probes: Path) -> None:
    res = run_cli(str(tiny_models["gpt2"]), "--out", str(llama_run / "r.html"), "--no-json", "--probes",
                  str(short_probes), "-q")
    assert res.returncode == 0, res.stderr
    assert "GPT2Model" in (llama_run / "r.html").read_text(encoding="utf-8")


def test_hub_id_while_offline_fails_fast_with_a_hint(tmp_path: Path) -> None:
    res = run_cli("some-org/not-cached-model", "--out", str(tmp_path / "r.html"),
                  env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}, timeout=120)
    assert res.returncode == 2
    assert "hub is not reachable" in res.stderr and "builtin alias" in res.stderr
    assert "Traceback" not in res.stderr and not list(tmp_path.glob("r.*"))


def test_own_pdf_is_recognised_and_replaced(llama_run: Path, tiny_models: dict[str, Path],
                                            short_probes: Path) -> None:
    res = run_cli(str(tiny_models["gpt2"]), "--out", str(llama_run / "r.pdf"), "--no-json", "--probes",
                  str(short_probes), "--max-tokens", "32", "-q")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("args, needle", [
    (["--max-tokens", "0"], "--max-tokens"),
    (["--dtype", "float64"], "--dtype"),
    (["smollm"], "Did you mean 'smollm2-135m'?"),
])
def test_usage_errors_are_one_line_too(tmp_path: Path, args: list[str], needle: str) -> None:
    res = run_cli(*args, "--out", str(tmp_path / "r.html"), cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0]
    assert "?." not in lines[0]


def test_error_after_start_is_still_one_line(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    res = run_cli(str(tmp_path / "model"), "--out", str(tmp_path / "r.html"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "no config.json" in lines[0]


def test_rollout_options_reach_the_json(tiny_models: dict[str, Path], short_probes: Path, tmp_path: Path) -> None:
    res = run_cli(str(tiny_models["llama"]), "--out", str(tmp_path / "r.html"), "--probes", str(short_probes),
                  "--max-tokens", "48", "--rollout-head-fusion", "max", "--rollout-residual", "0.7",
                  "--rollout-position", "3", "-q")
    assert res.returncode == 0, res.stderr
    ro = load_json(tmp_path / "r.json")["rollout"]
    assert ro["method"]["head_fusion"] == "max" and ro["method"]["residual"] == 0.7
    assert ro["second_label"].startswith("position 3")
    assert len(ro["rows_per_layer"]) == 2 and len(ro["second_rows_per_layer"]) == 2
    for row in ro["rows_per_layer"] + ro["second_rows_per_layer"]:
        assert abs(sum(row) - 1) < 1e-3


def test_markdown_card_links_to_the_pdf_and_paper_size_applies(tiny_models: dict[str, Path], short_probes: Path,
                                                                 tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    res = run_cli(str(tiny_models["llama"]), "--out", str(tmp_path / "r.pdf"), "--markdown",
                  str(tmp_path / "docs" / "card.md"), "--paper", "letter", "--probes", str(short_probes),
                  "--max-tokens", "48", "-q")
    assert res.returncode == 0, res.stderr
    card = (tmp_path / "docs" / "card.md").read_text(encoding="utf-8")
    assert "](../r.pdf)" in card and "γ measured" in card and "| head families |" in card
    from pypdf import PdfReader

    box = PdfReader(str(tmp_path / "r.pdf")).pages[0].mediabox
    assert (round(float(box.width)), round(float(box.height))) == (612, 792)  # US letter in points


@pytest.mark.parametrize("cond", ["gamma-outside:1", "gamma-outside:0.9,0.1", "gamma-outside:nan,nan", "alert:NOPE",
                                  "family-count:sink>>3", "weird:1"])
def test_bad_fail_on_grammar_exits_2_before_loading(tmp_path: Path, cond: str) -> None:
    res = run_cli("no-such-model-needed", "--fail-on", cond, "--out", str(tmp_path / "r.html"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "--fail-on" in lines[0]


def test_fail_on_conditions_exit_1_with_reasons_and_still_write_the_report(
        tiny_models: dict[str, Path], short_probes: Path, tmp_path: Path) -> None:
    args = [str(tiny_models["gpt2"]), "--out", str(tmp_path / "r.html"), "--probes", str(short_probes),
            "--max-tokens", "64", "-q"]
    res = run_cli(*args, "--fail-on", "gamma-outside:100,101", "--fail-on", "family-count:mixed>=0",
                  "--fail-on", "alert:PROBES_TRUNCATED")
    assert res.returncode == 1
    fails = [ln for ln in res.stderr.splitlines() if ln.startswith("Fail: ")]
    assert len(fails) == 3 and "gamma-outside:100,101" in fails[0] and "family-count:mixed>=0" in fails[1]
    assert "PROBES_TRUNCATED" in fails[2]  # the third short probe is cut to --max-tokens 64
    assert (tmp_path / "r.html").is_file() and (tmp_path / "r.json").is_file()
    ok = run_cli(*args, "--fail-on", "gamma-outside:-100,100")
    assert ok.returncode == 0, ok.stderr


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_a_signal_while_rendering_leaves_no_output(tiny_models: dict[str, Path], short_probes: Path, tmp_path: Path,
                                                   sig: int, code: int, word: str) -> None:
    # Sent when the progress log says rendering has begun: WeasyPrint's finalizers can swallow the
    # KeyboardInterrupt, and the recorded signal must still stop the files from being committed.
    out = tmp_path / "r.html"
    proc = subprocess.Popen([sys.executable, "-m", "reporter", str(tiny_models["llama"]), "--probes", str(short_probes),
                             "--out", str(out), "--pdf", str(tmp_path / "r.pdf"), "-v"],
                            stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if line.startswith("rendering"):
            proc.send_signal(sig)
            break
    rest = proc.communicate(timeout=300)[1]
    assert proc.returncode == code, "".join(lines) + rest
    assert f"Error: {word}" in rest and "no report was written" in rest
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_rollout_position_past_the_probe_or_on_an_encoder_is_said(tiny_models: dict[str, Path], short_probes: Path,
                                                                    tmp_path: Path) -> None:
    for kind, needle in (("llama", "past the end of the probe shown"), ("bert", "is for decoders")):
        res = run_cli(str(tiny_models[kind]), "--out", str(tmp_path / f"{kind}.html"), "--probes", str(short_probes),
                      "--max-tokens", "48", "--rollout-position", "99999", "--no-json", "-q")
        assert res.returncode == 0, res.stderr
        assert needle in (tmp_path / f"{kind}.html").read_text(encoding="utf-8")
