"""--baseline: reading an earlier report, the diff against it, its gates, and its section in every output."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from reporter.baseline import compare, read_baseline, snapshot_of_json
from reporter.errors import InputError
from reporter.gates import parse_gate
from reporter.report import FamilyChange, RunDifference
from tests.conftest import REPO, load_json, run_cli

RUN_BLOCK = re.compile(r'"run":\{"seconds":\{[^{}]*\},"peak_rss_mb":[-0-9.e]+,"peak_rss_mb_by_stage":\{[^{}]*\}\}')


@pytest.fixture(scope="module")
def first(tiny_models: dict[str, Path], short_probes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ordinary report of the tiny Llama (RoPE, so the prediction applies): the baseline of these tests."""
    out = tmp_path_factory.mktemp("baseline_first")
    res = run_cli(str(tiny_models["llama"]), "--out", str(out / "r0.html"), "--probes", str(short_probes),
                  "--max-tokens", "64", "-q")
    assert res.returncode == 0, res.stderr
    return out / "r0.json"


@pytest.fixture()
def doc(first: Path) -> dict[str, Any]:
    return load_json(first)


def _other_family(family: str) -> str:
    return "induction" if family != "induction" else "local"


# ------------------------------------------------------------------------------------------- the diff, pure


def test_a_report_compared_with_itself_shows_no_change(doc: dict[str, Any]) -> None:
    snap = snapshot_of_json(doc)
    d = compare(snap, snap)
    assert d.same_model and d.heads_comparable and d.warnings == ()
    assert d.n_heads_compared == 8 and d.family_changes == ()
    assert all(c.delta == 0 for c in d.family_counts) and sum(c.new for c in d.family_counts) == 8
    assert d.gamma.difference == 0.0 and d.gamma.intervals_overlap is True
    assert d.gamma.old_regime == d.gamma.new_regime == doc["prediction"]["regime"]
    assert {a.status for a in d.alerts} == {"still"} and len(d.alerts) == len(doc["alerts"])
    assert d.differences == ()


def test_edited_family_gamma_alerts_and_settings_give_the_known_diff(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    head = old["heads"][6]  # layer 1, head 2
    now_family, now_scores = head["family"], dict(head["scores"])
    was = _other_family(now_family)
    head["family"] = was
    head["scores"][was] = 0.91
    old["family_counts"][was] += 1
    old["family_counts"][now_family] -= 1
    g_new = doc["distance"]["gamma"]
    old["distance"]["gamma"]["value"] = round(g_new["value"] + 0.2, 4)
    old["distance"]["gamma"]["ci95"] = [g_new["ci95"][1] + 0.1, g_new["ci95"][1] + 0.3]
    old["prediction"]["regime"] = "normal"
    gone = old["alerts"].pop(0)["code"]  # present now, absent then: new
    old["alerts"].append({"code": "SINK_HEADS", "severity": "warning", "title": "Heads parked on the first token",
                          "message": "2 heads", "heads": [[0, 1], [1, 1]]})  # absent now: resolved
    old["settings"]["bar_sink"] = 0.4
    old["environment"]["transformers"] = "4.99.0"

    d = compare(snapshot_of_json(old), snapshot_of_json(doc))

    assert d.same_model and d.warnings == ()
    assert d.family_changes == (FamilyChange(layer=1, head=2, old=was, new=now_family, old_score=0.91,
                                             old_score_now=now_scores[was], new_score_before=now_scores[now_family],
                                             new_score=now_scores[now_family]),)
    deltas = {c.family: c.delta for c in d.family_counts}
    assert deltas[was] == -1 and deltas[now_family] == 1 and sum(map(abs, deltas.values())) == 2
    assert d.gamma.old == round(g_new["value"] + 0.2, 4) and d.gamma.new == g_new["value"]
    assert d.gamma.difference == pytest.approx(-0.2, abs=1e-4)
    assert d.gamma.intervals_overlap is False and "do not overlap" in d.gamma.note
    assert (d.gamma.old_regime, d.gamma.new_regime) == ("normal", doc["prediction"]["regime"])
    assert d.gamma.old_predicted == d.gamma.new_predicted == doc["prediction"]["gamma"]
    status = {a.code: a.status for a in d.alerts}
    assert status[gone] == "new" and status["SINK_HEADS"] == "resolved"
    assert {c for c, s in status.items() if s == "still"} == {a["code"] for a in doc["alerts"]} - {gone}
    assert [a.status for a in d.alerts] == sorted((a.status for a in d.alerts),
                                                  key=["new", "resolved", "still"].index)
    resolved = next(a for a in d.alerts if a.code == "SINK_HEADS")
    assert (resolved.old_message, resolved.new_message, resolved.severity) == ("2 heads", "", "warning")
    assert d.differences == (RunDifference("transformers version", "4.99.0", doc["environment"]["transformers"]),
                             RunDifference("setting bar_sink", "0.4", "0.5"))


def test_small_drift_inside_overlapping_intervals_is_not_called_a_change(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    old["distance"]["gamma"]["value"] += 0.001
    d = compare(snapshot_of_json(old), snapshot_of_json(doc)).gamma
    assert d.difference == pytest.approx(-0.001, abs=1e-9) and d.intervals_overlap is True
    assert "no evidence" in d.note


def test_gamma_missing_in_the_baseline_makes_the_drift_unknown(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    old["distance"]["gamma"] = None
    d = compare(snapshot_of_json(old), snapshot_of_json(doc)).gamma
    assert d.old is None and d.difference is None and d.intervals_overlap is None
    assert "not measured in the baseline" in d.note


def test_other_shape_means_no_per_head_comparison(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    old["model"]["id"] = "some/other-model"
    old["model"]["num_layers"] = 1
    old["heads"] = old["heads"][:4]
    old["family_counts"] = {k: (4 if v == 8 else 0) for k, v in doc["family_counts"].items()}
    d = compare(snapshot_of_json(old), snapshot_of_json(doc))
    assert not d.same_model and not d.heads_comparable and d.shape == (1, 4)
    assert d.family_changes == () and d.n_heads_compared == 0
    assert len(d.warnings) == 2 and "some/other-model" in d.warnings[0]
    assert "1 x 4" in d.warnings[1] and "not applicable" in d.warnings[1]
    assert sum(c.delta for c in d.family_counts) == 4  # the counts are still compared


def test_probe_and_version_differences_are_listed(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    old["probes"] = old["probes"][:2]
    old["environment"]["attn_report"] = "0.0.9"
    old["model"]["dtype"] = "bfloat16"
    whats = [x.what for x in compare(snapshot_of_json(old), snapshot_of_json(doc)).differences]
    assert whats == ["attn-report version", "dtype", "probes"]


def test_a_report_from_an_older_1x_version_is_still_read() -> None:
    # The committed samples predate the horizon block: same major schema, fewer fields.
    snap = read_baseline(REPO / "sample_reports" / "minilm-l6.json")
    assert (snap.num_layers, snap.num_heads) == (6, 12) and len(snap.heads) == 72
    assert snap.model_id.startswith("sentence-transformers/all-MiniLM-L6-v2") and snap.predicted is None


# ------------------------------------------------------------------------------------------- gates, pure


def _fake_report(old: dict[str, Any], new: dict[str, Any]) -> Any:
    """Gates read only `baseline` and the model's shape."""
    diff = compare(snapshot_of_json(old), snapshot_of_json(new))
    return SimpleNamespace(baseline=diff, model=SimpleNamespace(num_layers=new["model"]["num_layers"],
                                                                num_heads=new["model"]["num_heads"]))


def test_gamma_drift_gate_fires_only_past_its_limit(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    old["distance"]["gamma"]["value"] = round(doc["distance"]["gamma"]["value"] - 0.1, 4)
    r = _fake_report(old, doc)
    assert parse_gate("gamma-drift:0.2").check(r) is None
    why = parse_gate("gamma-drift:0.05").check(r)
    assert why is not None and "Δ +0.100" in why and "more than 0.05" in why
    old["distance"]["gamma"] = None
    assert "not measured" in (parse_gate("gamma-drift:1").check(_fake_report(old, doc)) or "")


def test_family_changed_gate_counts_heads_and_refuses_other_shapes(doc: dict[str, Any]) -> None:
    old = copy.deepcopy(doc)
    old["heads"][0]["family"] = _other_family(old["heads"][0]["family"])
    r = _fake_report(old, doc)
    assert parse_gate("family-changed:1").check(r) is None
    assert "1 of 8 heads changed family" in (parse_gate("family-changed:0").check(r) or "")
    old["model"]["num_layers"], old["heads"] = 1, old["heads"][:4]
    assert "cannot be compared" in (parse_gate("family-changed:5").check(_fake_report(old, doc)) or "")


@pytest.mark.parametrize("cond", ["gamma-drift:abc", "gamma-drift:-1", "gamma-drift:nan", "family-changed:x",
                                  "family-changed:-1"])
def test_bad_baseline_gate_grammar_is_an_input_error(cond: str) -> None:
    with pytest.raises(InputError, match="--fail-on"):
        parse_gate(cond)


def test_baseline_module_imports_no_torch_and_no_jinja() -> None:
    code = ("import sys, reporter.baseline; "
            "sys.exit(1 if {'torch', 'transformers', 'jinja2', 'matplotlib'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


# ------------------------------------------------------------------------------------------- bad input, CLI


def _write_bad(tmp: Path, kind: str, good: dict[str, Any]) -> Path:
    p = tmp / "old.json"
    if kind == "missing":
        return tmp / "nowhere.json"
    if kind == "folder":
        p.mkdir()
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "not-json":
        p.write_text("<html>not a report</html>")
    elif kind == "binary":
        p.write_bytes(b"\xff\xfe\x00\x01garbage")
    elif kind == "array":
        p.write_text("[1, 2, 3]")
    elif kind == "foreign":
        p.write_text(json.dumps({"name": "some other tool", "version": 3}))
    elif kind == "schema-2":
        p.write_text(json.dumps({**good, "schema_version": "2.0"}))
    elif kind == "no-schema":
        p.write_text(json.dumps({k: v for k, v in good.items() if k != "schema_version"}))
    elif kind == "incomplete":
        p.write_text(json.dumps({k: v for k, v in good.items() if k != "heads"}))
    elif kind == "wrong-type":
        p.write_text(json.dumps({**good, "model": {**good["model"], "num_layers": "two"}}))
    return p


@pytest.mark.parametrize("kind, needle", [
    ("missing", "does not exist"),
    ("folder", "is not a file"),
    ("empty", "is not JSON"),
    ("not-json", "is not JSON"),
    ("binary", "not UTF-8"),
    ("array", "not an attn-report report"),
    ("foreign", "not an attn-report report"),
    ("schema-2", "uses report schema 2.0"),
    ("no-schema", "no valid schema_version"),
    ("incomplete", "'heads' is missing"),
    ("wrong-type", "'model.num_layers' is missing or not an integer"),
])
def test_bad_baseline_exits_2_with_one_line_before_the_model_loads(first: Path, tmp_path: Path, kind: str,
                                                                   needle: str) -> None:
    bad = _write_bad(tmp_path, kind, load_json(first))
    # A model that does not exist: the baseline must be refused before the model is even looked for.
    res = run_cli("no-such-model-needed", "--baseline", str(bad), "--out", str(tmp_path / "r.html"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: ") and needle in lines[0], lines
    assert "--baseline" in lines[0] or "regenerate" in lines[0].lower()  # each message says what to do
    assert "Traceback" not in res.stderr and not list(tmp_path.glob("r.*"))


@pytest.mark.parametrize("how", ["json-beside-the-report", "explicit-json"])
def test_baseline_is_never_an_output(first: Path, tmp_path: Path, how: str) -> None:
    base = tmp_path / "r.json"
    base.write_bytes(first.read_bytes())  # written by attn-report, so only the input rule protects it
    args = ["--out", str(tmp_path / "r.html")] if how == "json-beside-the-report" else [
        "--out", str(tmp_path / "x.html"), "--json", str(base)]
    res = run_cli("no-such-model-needed", "--baseline", str(base), *args)
    assert res.returncode == 2 and "is one of the input files" in res.stderr
    assert base.read_bytes() == first.read_bytes()


def test_baseline_gate_without_baseline_exits_2_before_loading(tmp_path: Path) -> None:
    res = run_cli("no-such-model-needed", "--fail-on", "gamma-drift:0.05", "--out", str(tmp_path / "r.html"))
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "no --baseline was given" in lines[0]


# ------------------------------------------------------------------------------------------- end to end


def test_same_command_twice_gives_byte_identical_json_and_no_change(
        tiny_models: dict[str, Path], short_probes: Path, first: Path, tmp_path: Path) -> None:
    blobs = []
    for i in range(2):
        res = run_cli(str(tiny_models["llama"]), "--out", str(tmp_path / f"r{i}.html"), "--probes", str(short_probes),
                      "--max-tokens", "64", "--baseline", str(first), "--fail-on", "gamma-drift:0",
                      "--fail-on", "family-changed:0", "-q")
        assert res.returncode == 0, res.stderr  # same inputs as the baseline: nothing drifted
        text = (tmp_path / f"r{i}.json").read_text(encoding="utf-8")
        assert len(RUN_BLOCK.findall(text)) == 1
        blobs.append(RUN_BLOCK.sub('"run":null', text))
    assert blobs[0] == blobs[1]
    b = json.loads(blobs[0])["baseline"]
    assert b["same_model"] and b["family_changes"] == [] and b["differences"] == [] and b["warnings"] == []
    assert b["gamma"]["difference"] == 0.0 and {a["status"] for a in b["alerts"]} == {"still"}
    assert str(first.parent) not in json.dumps(b) and str(tmp_path) not in json.dumps(b)  # no paths
    assert 'id="baseline"' in (tmp_path / "r0.html").read_text(encoding="utf-8")


def test_edited_baseline_shows_in_html_pdf_json_and_markdown(
        tiny_models: dict[str, Path], short_probes: Path, first: Path, tmp_path: Path) -> None:
    now = load_json(first)
    old = copy.deepcopy(now)
    old["model"]["id"] = "<b>old</b> & model"
    was = _other_family(old["heads"][1]["family"])
    old["heads"][1]["family"] = was
    old["distance"]["gamma"]["value"] = round(now["distance"]["gamma"]["value"] + 0.3, 4)
    old["distance"]["gamma"]["ci95"] = [now["distance"]["gamma"]["ci95"][1] + 0.2,
                                        now["distance"]["gamma"]["ci95"][1] + 0.4]
    old["alerts"] = [{"code": "SINK_HEADS", "severity": "warning", "title": "Heads parked on the first token",
                      "message": "<i>then</i>", "heads": []}]
    (tmp_path / "old.json").write_text(json.dumps(old), encoding="utf-8")
    res = run_cli(str(tiny_models["llama"]), "--out", str(tmp_path / "r.html"), "--pdf", str(tmp_path / "r.pdf"),
                  "--markdown", str(tmp_path / "card.md"), "--probes", str(short_probes), "--max-tokens", "64",
                  "--baseline", str(tmp_path / "old.json"), "--fail-on", "gamma-drift:0.1",
                  "--fail-on", "family-changed:0", "-q")
    assert res.returncode == 1, res.stderr
    fails = [ln for ln in res.stderr.splitlines() if ln.startswith("Fail: ")]
    assert len(fails) == 2 and "Δ -0.300" in fails[0] and "intervals apart" in fails[0]
    assert "1 of 8 heads changed family" in fails[1]

    b = load_json(tmp_path / "r.json")["baseline"]
    assert b["model_id"] == "<b>old</b> & model" and not b["same_model"] and b["heads_comparable"]
    assert [(c["layer"], c["head"], c["old"], c["new"]) for c in b["family_changes"]] == [
        (0, 1, was, now["heads"][1]["family"])]
    assert b["gamma"]["intervals_overlap"] is False and b["gamma"]["difference"] == pytest.approx(-0.3, abs=1e-4)
    status = {a["code"]: a["status"] for a in b["alerts"]}
    assert status == {"SINK_HEADS": "resolved", **{a["code"]: "new" for a in now["alerts"]}}

    html = (tmp_path / "r.html").read_text(encoding="utf-8")
    section = html[html.index('<section id="baseline">'):html.index('<section id="method">')]
    assert "Changes since baseline" in section and 'href="#baseline"' in html
    assert "&lt;b&gt;old&lt;/b&gt; &amp; model" in section and "<b>old</b>" not in html and "<i>then" not in html
    assert 'href="#head-0-1"' in section and "Δγ = -0.300" in section and "intervals apart" in section
    for href in re.findall(r'href="#([^"]+)"', html):
        assert f'id="{href}"' in html, f"dangling internal link #{href}"

    from pypdf import PdfReader

    text = "\n".join(p.extract_text() for p in PdfReader(str(tmp_path / "r.pdf")).pages)
    assert "Changes since baseline" in text and "Δγ = -0.300" in text

    card = (tmp_path / "card.md").read_text(encoding="utf-8")
    assert "Since the baseline (\\<b\\>old\\</b\\> & model" in card and "1 of 8 heads changed family" in card


def test_report_without_baseline_has_no_baseline_section(first: Path) -> None:
    html = first.with_suffix(".html").read_text(encoding="utf-8")
    assert 'id="baseline"' not in html and 'href="#baseline"' not in html
    assert load_json(first)["baseline"] is None


def test_readme_documents_the_baseline_the_gates_and_the_ci_example() -> None:
    yaml = pytest.importorskip("yaml")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for needle in ("--baseline PATH", "gamma-drift:X", "family-changed:N", "## Using it in CI", "if: always()",
                   "| exit code | meaning |", "examples/github-actions.yml"):
        assert needle in readme, needle
    job = yaml.safe_load((REPO / "examples" / "github-actions.yml").read_text(encoding="utf-8"))
    steps = job["jobs"]["attn-report"]["steps"]
    run = next(s["run"] for s in steps if "attn-report" in s.get("run", "") and "--baseline" in s["run"])
    assert "--fail-on" in run and "bash scripts/setup.sh" in [s.get("run") for s in steps]
    upload = next(s for s in steps if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()"
    assert all(f"out/report.{x}" in upload["with"]["path"] for x in ("html", "pdf", "json"))
    for line in run.splitlines():  # the README shows the same command
        assert line.strip() in readme, line
