"""Output planning (checked before any work) and atomic writing (all or nothing)."""

from __future__ import annotations

import os

import pytest

from reporter import outputs
from reporter.errors import InputError, OutputError
from reporter.outputs import plan_outputs, write_all, write_atomic

# --- plan_outputs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["report.txt", "report", "report.json", "report.html.bak"])
def test_unknown_report_suffix_is_an_input_error(tmp_path, name):
    with pytest.raises(InputError) as info:
        plan_outputs(str(tmp_path / name), None, None, False, [])
    assert ".html" in info.value.hint


def test_report_suffix_is_case_insensitive(tmp_path):
    plan = plan_outputs(str(tmp_path / "R.HTML"), None, None, False, [])
    assert plan.html == tmp_path / "R.HTML"


def test_html_report_gets_a_json_next_to_it_by_default(tmp_path):
    plan = plan_outputs(str(tmp_path / "r.html"), None, None, False, [])
    assert plan.html == tmp_path / "r.html"
    assert plan.pdf is None
    assert plan.json == tmp_path / "r.json"


def test_no_json_plans_no_json(tmp_path):
    plan = plan_outputs(str(tmp_path / "r.pdf"), None, None, True, [])
    assert plan.paths() == [tmp_path / "r.pdf"]


def test_missing_output_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError) as info:
        plan_outputs(str(tmp_path / "nope" / "r.html"), None, None, True, [])
    assert "does not exist" in info.value.message


def test_output_equal_to_an_input_file_is_an_input_error(tmp_path):
    src = tmp_path / "r.html"
    src.write_bytes(b"attn-report: even one of ours may not be overwritten when it is an input")
    with pytest.raises(InputError) as info:
        plan_outputs(str(src), None, None, True, [src])
    assert "input" in info.value.message


def test_json_equal_to_an_input_file_is_an_input_error(tmp_path):
    probes = tmp_path / "probes.json"
    probes.write_text("[]")
    with pytest.raises(InputError):
        plan_outputs(str(tmp_path / "r.html"), None, str(probes), False, [probes])


def test_existing_foreign_file_is_refused(tmp_path):
    foreign = tmp_path / "r.html"
    foreign.write_bytes(b"<html>someone else's page</html>")
    with pytest.raises(OutputError) as info:
        plan_outputs(str(foreign), None, None, True, [])
    assert "not written by attn-report" in info.value.message
    assert foreign.read_bytes() == b"<html>someone else's page</html>"


def test_existing_file_carrying_our_mark_is_accepted(tmp_path):
    ours = tmp_path / "r.html"
    ours.write_bytes(b'<html><meta name="generator" content="attn-report 0.1.0">')
    plan = plan_outputs(str(ours), None, None, True, [])
    assert plan.html == ours


def test_existing_foreign_json_is_refused(tmp_path):
    (tmp_path / "r.json").write_text('{"mine": true}')
    with pytest.raises(OutputError):
        plan_outputs(str(tmp_path / "r.html"), None, None, False, [])


def test_output_that_is_a_folder_is_refused(tmp_path):
    (tmp_path / "r.html").mkdir()
    with pytest.raises(OutputError):
        plan_outputs(str(tmp_path / "r.html"), None, None, True, [])


def test_two_outputs_on_one_file_are_refused(tmp_path):
    with pytest.raises(InputError):
        plan_outputs(str(tmp_path / "r.pdf"), str(tmp_path / "r.html"), None, True, [])  # --pdf not .pdf
    with pytest.raises(InputError):
        plan_outputs(str(tmp_path / "r.html"), None, str(tmp_path / "r.html"), False, [])


def test_pdf_report_plus_extra_pdf_keeps_both_or_refuses(tmp_path):
    out, extra = tmp_path / "a.pdf", tmp_path / "b.pdf"
    try:
        plan = plan_outputs(str(out), str(extra), None, True, [])
    except InputError:
        return  # refusing the combination is also acceptable
    assert out in plan.paths()
    assert extra in plan.paths()


# --- write_atomic ---------------------------------------------------------------------------------------


def test_write_atomic_replaces_the_whole_content_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "r.html"
    target.write_bytes(b"x" * 10_000)
    write_atomic(target, b"short")
    assert target.read_bytes() == b"short"
    assert os.listdir(tmp_path) == ["r.html"]


def test_write_atomic_creates_a_new_file(tmp_path):
    target = tmp_path / "new.json"
    write_atomic(target, b"{}")
    assert target.read_bytes() == b"{}"
    assert os.listdir(tmp_path) == ["new.json"]
    assert target.stat().st_mode & 0o777 == 0o644  # readable like any report, not mkstemp's 0600


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_bytes(b"old report")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "replace", boom)
    with pytest.raises(OutputError, match="disk full"):
        write_atomic(target, b"new report")
    assert target.read_bytes() == b"old report"
    assert os.listdir(tmp_path) == ["r.html"]
    assert not any(n.endswith(".tmp") for n in os.listdir(tmp_path))


def test_interrupted_write_leaves_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "r.html"
    target.write_bytes(b"old report")

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(outputs.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, b"new report")
    assert target.read_bytes() == b"old report"
    assert os.listdir(tmp_path) == ["r.html"]


@pytest.mark.parametrize("name, text", [
    ("notes.html", "<html><body>My notes on attn-report and its sinks.</body></html>"),
    ("notes.json", '{"tool": "attn-report", "mine": true}'),
    ("README.md", "# My model\n\nWe ran attn-report on it; the card section follows.\n"),
])
def test_a_file_that_only_mentions_attn_report_is_not_taken_for_ours(tmp_path, name, text):
    f = tmp_path / name
    f.write_text(text)
    args = {".html": (str(f), None, None, True, []), ".json": (str(tmp_path / "notes.html"), None, str(f), False, []),
            ".md": (str(tmp_path / "r.html"), None, None, True, [])}[f.suffix]
    with pytest.raises(OutputError, match="not written by attn-report"):
        plan_outputs(*args, markdown=str(f) if f.suffix == ".md" else None)
    assert f.read_text() == text


def test_our_own_files_carry_the_mark_where_we_look_for_it():
    from reporter.outputs import HTML_MARK, JSON_MARK, MARKDOWN_MARK

    root = outputs.Path(__file__).resolve().parent.parent / "sample_reports"
    assert (root / "smollm2-135m.json").read_bytes().startswith(JSON_MARK)
    assert HTML_MARK in (root / "smollm2-135m.html").read_bytes()[:1024]
    assert (root / "smollm2-135m.md").read_bytes().startswith(MARKDOWN_MARK)
    for f in ("smollm2-135m.json", "smollm2-135m.html", "smollm2-135m.md", "smollm2-135m.pdf"):
        assert outputs.written_by_us(root / f), f


def test_a_failure_while_writing_the_second_output_leaves_every_target_as_it_was(tmp_path, monkeypatch):
    a, b = tmp_path / "r.html", tmp_path / "r.json"
    a.write_bytes(b"old html")
    real = outputs._stage
    calls = []

    def stage(path, data):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(outputs, "_stage", stage)
    with pytest.raises(OutputError, match="No space left on device.*nothing was written"):
        write_all([(a, b"new html"), (b, b"{}")])
    assert a.read_bytes() == b"old html" and not b.exists()
    assert sorted(os.listdir(tmp_path)) == ["r.html"]


def test_an_interrupt_before_the_commit_writes_nothing(tmp_path):
    def cancel():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_all([(tmp_path / "r.html", b"x"), (tmp_path / "r.json", b"{}")], before_commit=cancel)
    assert os.listdir(tmp_path) == []


def test_a_folder_that_refuses_new_files_is_caught_before_the_run_naming_the_option(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", refuse)  # what root meets under /proc or /sys
    with pytest.raises(OutputError, match="not writable") as info:
        plan_outputs(str(tmp_path / "r.html"), None, None, True, [])
    assert "--out" in info.value.hint


def test_the_json_option_is_named_when_its_folder_is_the_problem(tmp_path):
    with pytest.raises(OutputError) as info:
        plan_outputs(str(tmp_path / "r.html"), None, str(tmp_path / "nope" / "r.json"), False, [])
    assert "--json" in info.value.hint and "--out" not in info.value.hint


def test_an_output_folder_that_is_a_file_is_called_a_file(tmp_path):
    (tmp_path / "one.txt").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        plan_outputs(str(tmp_path / "one.txt" / "r.html"), None, None, True, [])


def test_no_json_and_json_together_are_refused(tmp_path):
    with pytest.raises(InputError, match="contradict"):
        plan_outputs(str(tmp_path / "r.html"), None, str(tmp_path / "r.json"), True, [])
