"""Where the report files go: planned and checked before any work starts, written atomically at the end."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reporter.errors import InputError, OutputError

REPORT_SUFFIXES = {".html": "html", ".htm": "html", ".pdf": "pdf"}
# What marks a file as one of ours, in the exact form our renderers write it. A file that merely mentions
# attn-report (a README, notes) is not ours and is never replaced.
HTML_MARK = b'<meta name="generator" content="attn-report '  # in the <head>, within the first KB
JSON_MARK = b'{"generator":"attn-report '  # the JSON's first bytes
MARKDOWN_MARK = b"<!-- attn-report "  # the model card's first line
PDF_ID = b"attn-report"  # the PDF trailer's /ID, as WeasyPrint writes pdf_identifier
_PDF_TRAILER_ID = b"/ID [(" + PDF_ID + b")"


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
    if no_json and json_path:
        raise InputError(f"--no-json and --json '{json_path}' contradict each other", "give one of them")
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
    json_option = "--json" if json_path else "--out (the JSON goes beside it), --json or --no-json"
    for option, p in (("--out", out_p), ("--pdf", pdf_p if pdf else None), (json_option, json_p),
                      ("--markdown", md_p)):
        if p is not None:
            check_writable(p, input_set, option)
    return plan


def check_writable(path: Path, inputs: set[Path], option: str = "--out") -> None:
    """The folder exists and takes a new file, the path is no input, and we never clobber a foreign file."""
    if path.resolve() in inputs:
        raise InputError(f"output '{path}' is one of the input files", "choose another output name")
    folder = path.parent if str(path.parent) else Path(".")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output folder '{folder}' is a file, not a folder", f"choose another {option}")
    if not folder.is_dir():
        raise OutputError(f"output folder '{folder}' does not exist", f"create it first or choose another {option}")
    if path.is_dir():
        raise OutputError(f"output '{path}' is a folder", "give a file name")
    try:  # the real test: os.access says yes to root, and some file systems refuse new files anyway
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".check", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"output folder '{folder}' is not writable ({exc.strerror or exc})",
                          f"choose another {option}") from exc
    if path.exists() and not written_by_us(path):
        raise OutputError(f"'{path}' exists and was not written by attn-report",
                          "move it away or choose another output name; attn-report only replaces its own reports")


def written_by_us(path: Path) -> bool:
    """True only for a file that carries our mark where our renderers put it (see the *_MARK constants)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            fh.seek(max(0, path.stat().st_size - 65536))
            tail = fh.read()
    except OSError:
        return False
    return (head.startswith(JSON_MARK) or head.startswith(MARKDOWN_MARK) or HTML_MARK in head[:1024]
            or (head.startswith(b"%PDF-") and _PDF_TRAILER_ID in tail))


def write_all(blobs: list[tuple[Path, bytes]], before_commit: Callable[[], None] = lambda: None) -> None:
    """Write every output or none: each goes to a temp file beside its target first; only when all of
    them are on disk are they renamed over their targets. `before_commit` may raise to cancel (an
    interrupt that arrived while rendering)."""
    staged: list[tuple[str, Path]] = []
    try:
        for path, data in blobs:
            staged.append((_stage(path, data), path))
        before_commit()
        for tmp, path in staged:
            os.replace(tmp, path)
    except OSError as exc:
        raise OutputError(f"cannot write '{path}' ({exc.strerror or exc}); nothing was written",
                          "free some space or choose another output folder") from exc
    finally:
        for tmp, _ in staged:
            if os.path.exists(tmp):
                os.unlink(tmp)


def _stage(path: Path, data: bytes) -> str:
    """data in a temp file in path's folder, flushed to disk; the temp file's name."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
    except BaseException:
        os.unlink(tmp)
        raise
    return tmp


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over the target: all or nothing."""
    write_all([(path, data)])
