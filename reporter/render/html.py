"""The HTML document: one self-contained file, CSS inlined, figures as data URIs, no network."""

from __future__ import annotations

from typing import Any

import jinja2

from reporter.render.assets import data_filename
from reporter.render.figures import FAMILY_COLOURS, MIN_PAIRS_DRAWN, Figures, render_figures
from reporter.report import HeadResult, Report
from reporter.scores import FAMILIES

FAMILY_LABELS = {
    "previous_token": "previous token",
    "next_token": "next token",
    "local": "local",
    "sink": "sink",
    "delimiter_band": "delimiter band",
    "broad": "broad",
    "induction": "induction",
    "mixed": "mixed",
}


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers for people: fixed digits, and 'n/a' where a value does not exist."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def pct(value: float | None, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:.{digits}%}"


SHORT_LABELS = {
    "previous_token": "prev", "next_token": "next", "local": "local", "sink": "sink",
    "delimiter_band": "delim", "broad": "broad", "induction": "induct", "mixed": "mixed",
}


def head_label(head: HeadResult) -> str:
    """Thumbnail caption: 'sink .67'; a mixed head shows its best score: 'mixed: prev .31'."""
    if head.family == "mixed":
        if not head.top2:
            return "mixed"
        fam, val = head.top2[0]
        return f"mixed: {SHORT_LABELS[fam]} {val:.2f}".replace(" 0.", " .")
    val = head.scores.get(head.family) or 0.0
    return f"{SHORT_LABELS[head.family]} {val:.2f}".replace(" 0.", " .").replace(" 1.00", " 1")


def top2_str(head: HeadResult) -> str:
    return ", ".join(f"{FAMILY_LABELS[f]} {v:.2f}" for f, v in head.top2)


def head_name(pair: Any) -> str:
    layer, head = pair
    return f"{layer}.{head}"


def token_str(tok: str) -> str:
    """Byte-level BPE markers made readable; the template escapes the result."""
    return tok.replace("Ġ", "·").replace("▁", "·").replace("Ċ", "⏎").replace("\n", "⏎")


def make_env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(data_filename("templates"))),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(fmt=fmt, pct=pct, head_name=head_name, token_str=token_str, head_label=head_label,
                       top2_str=top2_str)
    return env


def context(report: Report, figs: Figures, medium: str) -> dict[str, Any]:
    styles = data_filename("styles")
    # A4 content is ~680 px wide: fit one row of heads (plus the layer label) across the page.
    n = report.model.num_heads + 0.6
    thumb = max(48, min(104, int(1080 / n) - 14)) if medium == "screen" else max(24, min(54, int(620 / n) - 12))
    return {
        "r": report,
        "figs": figs,
        "medium": medium,
        "thumb_px": thumb,
        "min_pairs_drawn": MIN_PAIRS_DRAWN,
        "families": (*FAMILIES, "mixed"),
        "family_labels": FAMILY_LABELS,
        "family_colours": FAMILY_COLOURS,
        "css": (styles / "report.css").read_text(encoding="utf-8"),
        "print_css": (styles / "print.css").read_text(encoding="utf-8"),
        "alerts_by_severity": sorted(report.alerts, key=lambda a: (a.severity != "warning", a.code)),
    }


def render_html(report: Report, medium: str = "screen", figs: Figures | None = None) -> str:
    """medium 'screen' adds the click-to-zoom and sortable-table script; 'print' is for WeasyPrint."""
    figs = figs or render_figures(report)
    return make_env().get_template("report.html.j2").render(**context(report, figs, medium))
