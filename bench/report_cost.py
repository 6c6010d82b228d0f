"""Bench: for each builtin model, the report's sizes against the caps and where the wall time goes.

Prints one table, measured side by side in one run: HTML / PDF / JSON bytes (caps: 3 MB each for
HTML and PDF), seconds per stage, and the share of wall time spent outside the model's forward passes.
Run: .venv/bin/python bench/report_cost.py [model ...]
"""

from __future__ import annotations

import sys
import time

from reporter.cli import _quiet_libraries
from reporter.pipeline import RunOptions, run
from reporter.render.figures import render_figures
from reporter.render.html import render_html
from reporter.render.pdf import render_pdf
from reporter.report import to_json
from reporter.settings import DEFAULT_SETTINGS

CAP = 3_000_000


def main(models: list[str]) -> None:
    _quiet_libraries()
    print(f"{'model':<14} {'html KB':>8} {'pdf KB':>8} {'json KB':>8} {'load s':>7} {'fwd s':>6} {'reduce s':>8} "
          f"{'analyze s':>9} {'render s':>8} {'outside fwd':>11} {'peak MB':>8}")
    for model in models:
        t0 = time.perf_counter()
        report = run(RunOptions(model=model), DEFAULT_SETTINGS)
        t1 = time.perf_counter()
        figs = render_figures(report)
        t_fig = time.perf_counter()
        html = render_html(report, figs=figs).encode()
        t_html = time.perf_counter()
        pdf = render_pdf(report, figs=figs)  # the figures drawn once for both, as the CLI does
        t_pdf = time.perf_counter()
        js = to_json(report).encode()
        t2 = time.perf_counter()
        sec = report.run.seconds
        total = t2 - t0 - sec["load"]  # loading weights is neither model compute nor our overhead
        outside = 1 - sec["forward"] / total
        print(f"{model:<14} {len(html) / 1e3:>8.0f} {len(pdf) / 1e3:>8.0f} {len(js) / 1e3:>8.0f} {sec['load']:>7.1f} "
              f"{sec['forward']:>6.1f} {sec['capture_reduce']:>8.1f} {sec['analyze']:>9.1f} {t2 - t1:>8.1f} "
              f"{outside:>11.0%} {report.run.peak_rss_mb:>8.0f}")
        print(f"  render: figures {t_fig - t1:.1f} s, HTML {t_html - t_fig:.1f} s, PDF {t_pdf - t_html:.1f} s "
              f"(figures shared with the HTML), JSON {t2 - t_pdf:.1f} s")
        for name, size in (("HTML", len(html)), ("PDF", len(pdf))):
            if size > CAP:
                print(f"  {name} is over the {CAP / 1e6:.0f} MB cap")


if __name__ == "__main__":
    main(sys.argv[1:] or ["smollm2-135m", "minilm-l6"])
