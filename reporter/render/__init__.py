"""Stage 5: render a Report to HTML, PDF and JSON. Reads only the Report; never imports torch."""

from __future__ import annotations

from pathlib import Path

from reporter import interrupts
from reporter.outputs import OutputPlan, write_all
from reporter.report import Report, to_json


def render_all(report: Report, plan: OutputPlan) -> list[Path]:
    """Build every output in memory first, then write them all or none (a signal meanwhile cancels)."""
    from reporter.render.figures import render_figures
    from reporter.render.html import render_html

    blobs: list[tuple[Path, bytes]] = []
    figs = render_figures(report) if plan.html is not None or plan.pdf is not None else None  # drawn once for both
    if plan.html is not None:
        blobs.append((plan.html, render_html(report, medium="screen", figs=figs).encode("utf-8")))
    if plan.pdf is not None:
        from reporter.render.pdf import render_pdf

        blobs.append((plan.pdf, render_pdf(report, paper=plan.paper, figs=figs)))
    if plan.json is not None:
        blobs.append((plan.json, to_json(report).encode("utf-8")))
    if plan.markdown is not None:
        from reporter.render.markdown import render_markdown

        blobs.append((plan.markdown, render_markdown(report, plan.markdown, plan.pdf).encode("utf-8")))
    write_all(blobs, before_commit=interrupts.check)
    return [p for p, _ in blobs]
