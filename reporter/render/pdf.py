"""The PDF: the same document as the HTML, laid out for paper by WeasyPrint (no JavaScript)."""

from __future__ import annotations

import logging

from reporter.outputs import MARK
from reporter.render.html import render_html
from reporter.report import Report


def render_pdf(report: Report) -> bytes:
    import weasyprint

    logging.getLogger("weasyprint").setLevel(logging.ERROR)
    logging.getLogger("fontTools").setLevel(logging.ERROR)
    html = render_html(report, medium="print")
    doc = weasyprint.HTML(string=html, base_url=None)
    # The identifier lands in the uncompressed trailer, where outputs.written_by_us finds it.
    return doc.write_pdf(pdf_identifier=MARK)  # type: ignore[no-any-return]
