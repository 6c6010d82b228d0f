"""Where the report files go: planned and checked before any work starts, written atomically at the end."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from reporter.errors import InputError, OutputError

REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".pdf": "pdf"}
MARK = b"attn-report"  # every file we write carries this near its start


@dataclass(frozen=True)
class OutputPlan:
    html: Path | None
    pdf: Path | None
    json: Path | None
    markdown: Path | None = None
    paper: str = "a4"  # PDF page size: a4 | letter

    def paths(self) -> list[Path]:
        return [p for p in (self.html, self.pdf, self.json, self.markdown) if p is not None]


def plan_outputs(out: str, pdf: str | None, json_path: str | None, no_json: bool,
                 inputs: list[Path], markdown: str | None = None) -> OutputPlan:
    """Decide and validate every output path; raise before the model is even loaded."""
    out_p = Path(out).expanduser()
    kind = REPORT_SUFFIXES.get(out_p.suffix.lower())
    if kind is None:
        raise InputError(f"--out '{out}' has an unknown suffix '{out_p.suffix}'",
                         "use a name ending in .html or .pdf")
    html_p = out_p if kind == "html" else None
    pdf_p = out_p if kind == "pdf" else None
    if pdf:
        if kind == "pdf":
            raise InputError(f"--out '{out}' is already a PDF, so --pdf '{pdf}' would replace it",
                             "use --out report.html --pdf report.pdf for both formats")
        extra = Path(pdf).expanduser()
        if extra.suffix.lower() != ".pdf":
            raise InputError(f"--pdf '{pdf}' must end in .pdf", "rename the output")
        pdf_p = extra
    json_p = None if no_json else (Path(json_path).expanduser() if json_path else out_p.with_suffix(".json"))
    if json_p is not None and json_p.suffix.lower() != ".json":
        raise InputError(f"--json '{json_path}' must end in .json", "rename the output")
    md_p = Path(markdown).expanduser() if markdown else None
    if md_p is not None and md_p.suffix.lower() not in (".md", ".markdown"):
        raise InputError(f"--markdown '{markdown}' must end in .md", "rename the output")
    plan = OutputPlan(html_p, pdf_p, json_p, md_p)
    resolved = [p.resolve() for p in plan.paths()]
    if len(set(resolved)) != len(resolved):
        raise InputError("two outputs point to the same file", "give --out, --pdf and --json different names")
    input_set = {i.resolve() for i in inputs if i.exists()}
    for p in plan.paths():
        check_writable(p, input_set)
    return plan


def check_writable(path: Path, inputs: set[Path]) -> None:
    """The folder exists and is writable, the path is no input, and we never clobber a foreign file."""
    if path.resolve() in inputs:
        raise InputError(f"output '{path}' is one of the input files", "choose another output name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise OutputError(f"output folder '{folder}' does not exist", "create it first or choose another --out")
    if not os.access(folder, os.W_OK):
        raise OutputError(f"output folder '{folder}' is not writable", "choose another --out")
    if path.is_dir():
        raise OutputError(f"output '{path}' is a folder", "give a file name")
    if path.exists() and not written_by_us(path):
        raise OutputError(f"'{path}' exists and was not written by attn-report",
                          "move it away or choose another output name; attn-report only replaces its own reports")


def written_by_us(path: Path) -> bool:
    """HTML and JSON carry the mark near their start, a PDF in its trailer at the end."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
            fh.seek(max(0, path.stat().st_size - 65536))
            tail = fh.read()
    except OSError:
        return False
    return MARK in head or MARK in tail


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over the target: all or nothing."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
