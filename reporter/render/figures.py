"""Figures as bytes: heatmaps as PNG, line plots as SVG. Deterministic: same report, same bytes."""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from reporter.report import GalleryItem, Report  # noqa: E402

plt.rcParams.update({
    "svg.hashsalt": "attn-report",  # stable element ids in SVG output
    "svg.fonttype": "none",  # text stays text: selectable in the PDF, small in the HTML
    "font.size": 8,
    "font.family": "DejaVu Sans",
    "axes.spines.top": False,
    "axes.spines.right": False,
})
_CMAP = "magma_r"
MAX_FULL_THUMBS = 600  # above this many heads, thumbnails drop to one pixel per token
MIN_PAIRS_DRAWN = 32  # the U curve is drawn only where each head has at least this many pairs
_THUMB_SCALE = 2  # nearest-neighbour upscaling so a 30-token map stays crisp at thumbnail size

FAMILY_COLOURS = {
    "previous_token": "#1f77b4",
    "next_token": "#17becf",
    "local": "#2ca02c",
    "sink": "#d62728",
    "delimiter_band": "#9467bd",
    "broad": "#7f7f7f",
    "induction": "#ff7f0e",
    "mixed": "#c7c7c7",
}


def _maybe_svg(data: bytes | None) -> str:
    return "" if data is None else data_uri(data, "image/svg+xml")


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def map_png(a: np.ndarray, scale: int = _THUMB_SCALE) -> bytes:
    """One attention map [query, key] as a PNG, colour = sqrt(weight) on a fixed [0, 1] scale.

    The square root lifts small weights into view; the fixed scale keeps heads comparable.
    """
    v = np.sqrt(np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0))
    rgb = (matplotlib.colormaps[_CMAP](v)[..., :3] * 255).astype(np.uint8)
    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
    buf = io.BytesIO()
    Image.fromarray(rgb, "RGB").save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _save(fig: plt.Figure, **kwargs: Any) -> bytes:
    """The figure's bytes; the figure is closed. Tokens in scripts DejaVu Sans lacks (CJK, emoji) are
    drawn as boxes: matplotlib warns once per glyph, which must not flood a CI log."""
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph .* missing from", category=UserWarning)
        fig.savefig(buf, bbox_inches="tight", **kwargs)
    plt.close(fig)
    return buf.getvalue()


def _png(fig: plt.Figure, dpi: int = 110) -> bytes:
    return _save(fig, format="png", dpi=dpi, metadata={"Software": None})


def _svg(fig: plt.Figure) -> bytes:
    return _save(fig, format="svg", metadata={"Date": None, "Creator": None})


def _short(tok: str, n: int = 10) -> str:
    t = tok.replace("Ġ", "·").replace("▁", "·").replace("Ċ", "⏎").replace("\n", "⏎")
    return t if len(t) <= n else t[: n - 1] + "…"


def ucurve_svg(report: Report) -> bytes:
    """Mean attention against distance, log-log, with the null, the fit and the regions marked."""
    dist = report.distance
    d = np.array(dist.d, dtype=float)
    a = np.array([np.nan if v is None else v for v in dist.mean_attention], dtype=float)
    nul = np.array([np.nan if v is None else v for v in dist.null_mean_attention], dtype=float)
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    # distances backed by only a handful of (query, key) pairs are noise, not signal: not drawn
    dense = np.array(dist.pairs_per_head, dtype=float) >= MIN_PAIRS_DRAWN
    ok = (d >= 1) & np.isfinite(a) & (a > 0) & dense
    ax.loglog(d[ok], a[ok], color="#1f3b73", lw=1.2, label="measured A(d), key 0 excluded")
    okn = (d >= 1) & np.isfinite(nul) & (nul > 0) & dense
    ax.loglog(d[okn], nul[okn], color="#999999", lw=1.0, ls="--", label="uniform attention (null)")
    ax.axvspan(1, max(1.0, dist.recency_end), color="#f2c14e", alpha=0.18, lw=0, label="recency region")
    g = dist.gamma
    if g is not None:
        lo, hi = g.fit_range
        ax.axvspan(lo, hi, color="#5aa469", alpha=0.10, lw=0, label=f"tail fit window [{lo}, {hi}]")
        sel = ok & (d >= lo) & (d <= hi)
        if sel.any():
            # draw the fitted slope through the geometric centre of the window's points
            x0 = np.exp(np.log(d[sel]).mean())
            y0 = np.exp(np.log(a[sel]).mean())
            xs = np.array([lo, hi], dtype=float)
            ax.loglog(xs, y0 * (xs / x0) ** (-g.value), color="#c0392b", lw=1.6,
                      label=f"fit γ = {g.value:.3f}")
            if g.ci95 is not None:  # slopes at the ends of the 95% interval, through the same pivot
                lo_line, hi_line = y0 * (xs / x0) ** (-g.ci95[0]), y0 * (xs / x0) ** (-g.ci95[1])
                ax.fill_between(xs, np.minimum(lo_line, hi_line), np.maximum(lo_line, hi_line), color="#c0392b",
                                alpha=0.15, lw=0, label=f"95% CI of γ [{g.ci95[0]:.3f}, {g.ci95[1]:.3f}]")
    if dist.sink_share > 0:
        ax.annotate(f"sink (key 0): {dist.sink_share:.1%} of all weight,\nnot part of this curve",
                    xy=(0.98, 0.97), xycoords="axes fraction", ha="right", va="top", fontsize=7, color="#d62728")
    ax.set_xlabel("distance d = |i − j| (tokens)")
    ax.set_ylabel("mean attention A(d)")
    ax.set_title(f"U curve: sink share {dist.sink_share:.1%} kept apart, A(0) = {dist.self_share:.3f}",
                 fontsize=8)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    return _svg(fig)


def gamma_layers_svg(report: Report) -> bytes:
    """γ of each layer's head-averaged curve, with the overall γ and the prediction as lines."""
    vals = [np.nan if v is None else v for v in report.distance.gamma_per_layer]
    fig, ax = plt.subplots(figsize=(6.4, 2.2))
    ax.plot(range(len(vals)), vals, marker="o", ms=3, color="#1f3b73", lw=1, label="γ per layer")
    if report.distance.gamma is not None:
        ax.axhline(report.distance.gamma.value, color="#c0392b", lw=1, label="γ all layers")
    if report.prediction.applies and report.prediction.gamma is not None:
        ax.axhline(report.prediction.gamma, color="#5aa469", lw=1, ls=":", label="γ predicted (config)")
    if report.distance.null_gamma is not None:
        ax.axhline(report.distance.null_gamma.value, color="#999999", lw=1, ls="--", label="γ uniform (null)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("γ")
    ax.legend(fontsize=7, frameon=False, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 1.25))
    return _svg(fig)


def _layer_head_png(values: np.ndarray, title: str, label: str, log: bool = False) -> bytes:
    """A layer × head heatmap, grey where a head has no value; the colour range skips 2% outliers each side."""
    n_layers, n_heads = values.shape
    fig, ax = plt.subplots(figsize=(min(7.0, 1.6 + 0.42 * n_heads), min(6.0, 1.0 + 0.17 * n_layers)))
    cmap = matplotlib.colormaps["viridis"].copy()
    cmap.set_bad("#dddddd")
    finite = values[np.isfinite(values)]
    vmin, vmax = (float(np.percentile(finite, 2)), float(np.percentile(finite, 98))) if finite.size else (0, 1)
    norm: Any = None
    if log:
        norm = LogNorm(vmin=max(1.0, vmin), vmax=max(2.0, vmax))
        values = np.where(values < 1, 1, values)  # d = 0 (a head reading only itself) drawn at the floor
        im = ax.imshow(values, cmap=cmap, norm=norm, aspect="auto", interpolation="nearest")
    else:
        im = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(n_heads), [str(h) for h in range(n_heads)], fontsize=6)
    step = max(1, n_layers // 15)
    ax.set_yticks(range(0, n_layers, step), [str(i) for i in range(0, n_layers, step)], fontsize=6)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(title, fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label=label)
    return _png(fig, dpi=110)


def _grid(rows: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=float)


def gamma_heads_png(report: Report) -> bytes:
    """γ of every head's own curve, as a layer × head heatmap (grey where no fit was possible)."""
    return _layer_head_png(_grid(report.distance.gamma_per_head), "γ per head (tail fit on each head's own curve)",
                           "γ")


def horizon_heads_png(report: Report) -> bytes:
    """D_f of every head (f = the list fraction), log colour scale: reach spans one token to the whole probe."""
    hz = report.horizon
    f = f"{hz.list_fraction:g}"
    return _layer_head_png(_grid(hz.per_head[f]), f"D_{f} per head: distance holding {hz.list_fraction:.0%} of "
                           "the non-sink weight", f"D_{f} (tokens)", log=True)


def horizon_layers_svg(report: Report) -> bytes:
    """D_f per layer for every fraction, log y, with T as the ceiling."""
    hz = report.horizon
    fig, ax = plt.subplots(figsize=(6.4, 2.2))
    styles = ["#5aa469", "#1f3b73", "#c0392b"]
    for k, f in enumerate(hz.fractions):
        vals = [np.nan if v is None else max(v, 0.5) for v in hz.per_layer[f"{f:g}"]]
        ax.plot(range(len(vals)), vals, marker="o", ms=3, lw=1, color=styles[k % len(styles)],
                label=f"D_{f:g} per layer")
    ax.axhline(hz.T, color="#999999", lw=1, ls="--", label=f"T = {hz.T} (longest probe)")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("distance (tokens)")
    ax.legend(fontsize=7, frameon=False, ncol=3, loc="upper center", bbox_to_anchor=(0.5, 1.25))
    return _svg(fig)


def sink_values_svg(report: Report) -> bytes | None:
    """Every head: weight on token 0 against its value-weighted share, sink heads highlighted; None if n/a."""
    ev = report.sink_evidence
    if not ev.applies or not ev.heads:
        return None
    sinks = set(ev.sink_heads)
    fig, ax = plt.subplots(figsize=(4.6, 3.6))
    ax.plot([0, 1], [0, 1], color="#999999", lw=0.8, ls="--", label="value-weighted = weight")
    pts = [(h.weight_share, h.value_share, (h.layer, h.head) in sinks) for h in ev.heads if h.value_share is not None]
    other = np.array([(x, y) for x, y, s in pts if not s]).reshape(-1, 2)
    hot = np.array([(x, y) for x, y, s in pts if s]).reshape(-1, 2)
    ax.scatter(other[:, 0], other[:, 1], s=9, color="#7f7f7f", alpha=0.7, lw=0, label="other heads")
    if hot.size:
        ax.scatter(hot[:, 0], hot[:, 1], s=16, color="#d62728", marker="D", lw=0,
                   label=f"sink heads (> {report.settings['alert_sink_share']:.0%} on token 0)")
    sp = [(h.special_weight_share, h.special_value_share) for h in ev.heads
          if h.special_weight_share is not None and h.special_value_share is not None]
    if ev.special_label and sp:
        arr = np.array(sp)
        ax.scatter(arr[:, 0], arr[:, 1], s=9, color="#9467bd", marker="^", lw=0, alpha=0.8,
                   label=f"weight on {_short(ev.special_label, 24)} (special tokens past 0)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"attention weight on {_short(ev.sink_label, 30)}")
    ax.set_ylabel("value-weighted share there")
    ax.set_title("below the diagonal: the head moves less from there than its weight says", fontsize=7.5)
    ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    return _svg(fig)


def activations_svg(report: Report) -> bytes | None:
    """Per layer: largest |hidden state| at token 0 over the median token's, log scale; None if n/a."""
    ev = report.sink_evidence
    if not ev.activations_applies or not ev.activations:
        return None
    ratios = [np.nan if a.ratio is None else a.ratio for a in ev.activations]
    fig, ax = plt.subplots(figsize=(6.4, 2.2))
    bar = report.settings["massive_ratio"]
    colours = ["#d62728" if np.isfinite(r) and r >= bar else "#1f3b73" for r in ratios]
    ax.bar(range(len(ratios)), ratios, color=colours, width=0.75)
    ax.axhline(1.0, color="#999999", lw=0.8)
    ax.axhline(bar, color="#d62728", lw=0.8, ls=":", label=f"{bar:g}×: massive (Sun et al. 2024)")
    ax.set_yscale("log")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("after layer")
    ax.set_ylabel("max |h| at token 0 / median token")
    ax.legend(fontsize=7, frameon=False, loc="upper right")
    return _svg(fig)


def _depth_panel(ax: Any, rows: np.ndarray, labels: list[str], title: str) -> Any:
    im = ax.imshow(np.sqrt(np.clip(rows, 0, 1)), cmap=_CMAP, vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=5)
    ax.set_ylabel("after layer", fontsize=7)
    ax.set_title(title, fontsize=7.5)
    return im


def rollout_png(report: Report) -> bytes:
    """The depth view: where the readout's information comes from after each layer, rollout beside raw."""
    r = report.rollout
    labels = [_short(t) for t in r.tokens]
    second = bool(r.second_label and r.second_rows_per_layer)
    n_rows = 3 if second else 2
    fig, axes = plt.subplots(n_rows, 2, figsize=(10.5, 3.3 * n_rows), squeeze=False)
    mat = np.array(r.matrix, dtype=float)
    mlabels = [_short(t) for t in report.thumbnails.tokens]
    ax = axes[0][0]
    ax.imshow(np.sqrt(np.clip(mat, 0, 1)), cmap=_CMAP, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(mlabels)), mlabels, rotation=90, fontsize=5)
    ax.set_yticks(range(len(mlabels)), mlabels, fontsize=5)
    ax.set_xlabel("source token (key)", fontsize=7)
    ax.set_title("rollout after the last layer (√ scale)", fontsize=7.5)
    ax = axes[0][1]
    layers = np.arange(len(r.first_token_share_per_layer))
    ax.plot(layers, r.first_token_share_per_layer, color="#d62728", marker="o", ms=2.5, lw=1,
            label="rollout share on token 0")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("after layer", fontsize=7)
    ax.set_ylabel("share on token 0", fontsize=7, color="#d62728")
    ax2 = ax.twinx()
    ax2.plot(layers, r.effective_sources_per_layer, color="#1f3b73", marker="s", ms=2.5, lw=1,
             label="effective number of source tokens")
    ax2.set_ylabel("effective sources, exp(entropy)", fontsize=7, color="#1f3b73")
    ax2.spines["right"].set_visible(True)
    ax.set_title(f"{r.readout_label}: mass on token 0 and spread, layer by layer", fontsize=7.5)
    _depth_panel(axes[1][0], np.array(r.rows_per_layer, dtype=float), labels,
                 f"rollout of the {r.readout_label} after each layer")
    im = _depth_panel(axes[1][1], np.array(r.raw_rows_per_layer, dtype=float), labels,
                      f"raw attention of the {r.readout_label} in that layer alone")
    if second:
        _depth_panel(axes[2][0], np.array(r.second_rows_per_layer, dtype=float), labels,
                     f"rollout, {r.second_label}")
        _depth_panel(axes[2][1], np.array(r.second_raw_rows_per_layer, dtype=float), labels,
                     f"raw attention, {r.second_label}")
    fig.colorbar(im, ax=[row[1] for row in axes[1:]], fraction=0.025, pad=0.01, label="√ weight")
    fig.subplots_adjust(hspace=0.55, wspace=0.25)
    return _png(fig, dpi=120)


def gallery_png(item: GalleryItem) -> bytes:
    """One head's map drawn large, tokens on both axes (thinned when there are many)."""
    a = np.array(item.map, dtype=float)
    n = a.shape[0]
    step = max(1, -(-n // 48))
    labels = [_short(t, 8) for t in item.tokens[:n]]
    fig, ax = plt.subplots(figsize=(3.6, 3.6))
    ax.imshow(np.sqrt(np.clip(a, 0, 1)), cmap=_CMAP, vmin=0, vmax=1, interpolation="nearest")
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [labels[i] for i in ticks], rotation=90, fontsize=4.5)
    ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=4.5)
    ax.set_xlabel("key", fontsize=6)
    ax.set_ylabel("query", fontsize=6)
    ax.set_title(f"head {item.layer}.{item.head} · {item.family.replace('_', ' ')} {item.score:.2f}\n"
                 f"probe “{item.probe}”", fontsize=7)
    return _png(fig, dpi=130)


@dataclass(frozen=True)
class Figures:
    thumbs: dict[tuple[int, int], str]  # (layer, head) -> data URI
    ucurve: str
    gamma_layers: str
    rollout: str
    gallery: tuple[str, ...]  # data URIs, in the order of report.gallery
    gamma_heads: str
    horizon_heads: str
    horizon_layers: str
    sink_values: str  # "" when value norms are not available
    activations: str  # "" when hidden states are not available
    thumb_note: str  # says so when thumbnails were reduced to keep the file small


def render_figures(report: Report) -> Figures:
    thumbs = {}
    n_maps = report.model.num_layers * report.model.num_heads
    scale = _THUMB_SCALE if n_maps <= MAX_FULL_THUMBS else 1  # a big model gets one pixel per token
    note = "" if scale == _THUMB_SCALE else (
        f"{n_maps} heads: thumbnails are stored at one pixel per token to keep this file small.")
    for layer, lmaps in enumerate(report.thumbnails.maps):
        for head, hmap in enumerate(lmaps):
            thumbs[(layer, head)] = data_uri(map_png(np.array(hmap, dtype=float), scale), "image/png")
    return Figures(
        thumbs=thumbs,
        ucurve=data_uri(ucurve_svg(report), "image/svg+xml"),
        gamma_layers=data_uri(gamma_layers_svg(report), "image/svg+xml"),
        rollout=data_uri(rollout_png(report), "image/png"),
        gallery=tuple(data_uri(gallery_png(g), "image/png") for g in report.gallery),
        gamma_heads=data_uri(gamma_heads_png(report), "image/png"),
        horizon_heads=data_uri(horizon_heads_png(report), "image/png"),
        horizon_layers=data_uri(horizon_layers_svg(report), "image/svg+xml"),
        sink_values=_maybe_svg(sink_values_svg(report)),
        activations=_maybe_svg(activations_svg(report)),
        thumb_note=note,
    )
