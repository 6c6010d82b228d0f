"""The PDF: the same document as the HTML, laid out for paper by WeasyPrint (no JavaScript)."""

from __future__ import annotations

import logging

from reporter.outputs import PDF_ID
from reporter.render.figures import Figures
from reporter.render.html import render_html
from reporter.report import Report

PAPER_SIZES = {"a4": "A4", "letter": "letter"}


def render_pdf(report: Report, paper: str = "a4", figs: Figures | None = None) -> bytes:
    """The report as PDF bytes; `figs` are the figures already drawn for the HTML, if any."""
    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    html = render_html(report, medium="print", figs=figs)
    doc = weasyprint.HTML(string=html, base_url=None)
    # The identifier lands in the uncompressed trailer, where outputs.written_by_us finds it.
    page = weasyprint.CSS(string=f"@page {{ size: {PAPER_SIZES[paper]}; }}")
    return doc.write_pdf(pdf_identifier=PDF_ID, stylesheets=[page])  # type: ignore[no-any-return]
