"""A model-card section in Markdown: summary table, γ line, top alerts, a link to the PDF."""

from __future__ import annotations

import os
from pathlib import Path

import jinja2

from reporter.render.assets import data_filename
from reporter.render.html import FAMILY_LABELS, fmt, pct
from reporter.report import Report
from reporter.scores import FAMILIES


def md_escape(text: object) -> str:
    """Keep user text (model ids, tokens, messages) from being read as Markdown or HTML."""
    out = str(text)
    for ch in ("\\", "|", "*", "_", "`", "[", "]", "<", ">"):
        out = out.replace(ch, "\\" + ch)
    return " ".join(out.split())


def render_markdown(report: Report, md_path: Path, pdf_path: Path | None) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_filename("templates"))),
                             autoescape=False, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters.update(fmt=fmt, pct=pct, md=md_escape)
    link = os.path.relpath(pdf_path.resolve(), md_path.resolve().parent) if pdf_path else None
    alerts = sorted(report.alerts, key=lambda a: (a.severity != "warning", a.code))
    return env.get_template("model_card.md.j2").render(
        r=report, families=(*FAMILIES, "mixed"), family_labels=FAMILY_LABELS, alerts=alerts,
        pdf_link=link.replace(os.sep, "/") if link else None)
