"""The report as a document: PDF sections, and the HTML in a real headless browser with no network."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import run_cli

SECTIONS = ("Summary", "Alerts", "How to read this report", "Head grid", "Family gallery", "Attention rollout",
            "Distance and γ", "Per-head table", "Method and environment")


@pytest.fixture(scope="module")
def report(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("doc")
    probes = out / "probes.txt"
    probes.write_text("A probe with <script>alert(1)</script> and &amp; inside, and more words after it.\n\n"
                      + "the river ran past the town and the town slept " * 6, encoding="utf-8")
    res = run_cli(str(tiny_models["llama"]), "--out", str(out / "r.html"), "--pdf", str(out / "r.pdf"),
                  "--probes", str(probes), "--max-tokens", "96", "-q")
    assert res.returncode == 0, res.stderr
    return out


def test_pdf_holds_every_section_title(report: Path) -> None:
    from pypdf import PdfReader

    reader = PdfReader(str(report / "r.pdf"))
    text = "\n".join(p.extract_text() for p in reader.pages)
    assert len(reader.pages) >= 4
    for title in SECTIONS:
        assert title in text, title


def test_probe_markup_is_text_not_markup(report: Path) -> None:
    html = (report / "r.html").read_text(encoding="utf-8")
    assert "<script>alert(1)" not in html
    assert html.count("<script") == 1  # only the report's own inline script


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (scripts/setup.sh installs it)")
def test_html_renders_in_headless_chromium_offline_without_script_errors(report: Path) -> None:
    assert CHROMIUM is not None
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",  # any network fetch fails
             f"--user-data-dir={tempfile.mkdtemp()}", "--enable-logging=stderr", "--v=0"]
    url = (report / "r.html").as_uri()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'id="summary"' in dom.stdout and 'id="heads"' in dom.stdout  # not a blank page
    assert "Uncaught" not in dom.stderr, [ln for ln in dom.stderr.splitlines() if "Uncaught" in ln]
    shot = report / "r.png"
    subprocess.run([CHROMIUM, *flags, "--window-size=1280,2000", f"--screenshot={shot}", url],
                   capture_output=True, text=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000  # a page with content, not a white rectangle
