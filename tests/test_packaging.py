"""A wheel installed non-editable must still find its templates, styles and probes."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    (whl,) = out.glob("attn_report-*.whl")
    return whl


def test_wheel_carries_templates_styles_and_probes(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "reporter/templates/report.html.j2" in names
    assert {"reporter/styles/report.css", "reporter/styles/print.css"} <= names
    assert "reporter/data/probes/long_passage.txt" in names


def test_unpacked_wheel_finds_its_own_templates(wheel: Path, tmp_path: Path) -> None:
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = ("import reporter.render.assets as a, reporter.probes as p; "
            "print(a.data_filename('templates')); print(a.data_filename('styles')); print(len(p.bundled_probes()))")
    # cwd comes first on sys.path with -c, ahead of the editable install of this checkout
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    templates, styles, n_probes = res.stdout.split()
    assert Path(templates) == tmp_path / "reporter" / "templates"
    assert Path(styles) == tmp_path / "reporter" / "styles"
    assert int(n_probes) >= 5
