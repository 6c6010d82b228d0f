"""Output planning (checked before any work) and atomic writing (all or nothing)."""

from __future__ import annotations

import os

import pytest

from reporter import outputs
from reporter.errors import InputError, OutputError
from reporter.outputs import plan_outputs, write_atomic

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
    with pytest.raises(OSError, match="disk full"):
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
