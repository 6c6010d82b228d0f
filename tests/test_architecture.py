"""The shape of the code: imports point downstream, and the linter and type checker pass."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_render_side_never_imports_torch() -> None:
    code = ("import sys, reporter.render, reporter.render.html, reporter.render.pdf, reporter.report; "
            "sys.exit(1 if 'torch' in sys.modules or 'transformers' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_analysis_never_imports_rendering_libraries() -> None:
    code = ("import sys, reporter.analyze, reporter.scores, reporter.distance; "
            "sys.exit(1 if {'jinja2', 'matplotlib', 'weasyprint'} & set(sys.modules) else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_ruff_passes() -> None:
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "reporter", "tests"], cwd=REPO,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_mypy_passes() -> None:
    res = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
