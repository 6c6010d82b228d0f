"""Stage 4: turn the captured reductions into a Report: families, distance and γ, prediction, alerts."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict

import numpy as np

from reporter.alerts import AlertKind, heads_str, make_alert
from reporter.capture import Captured
from reporter.distance import bootstrap_gammas, fit_tail, mean_curve, percentile_ci
from reporter.horizon import closed_form_horizon, closed_form_interval, reach
from reporter.load import ModelFacts
from reporter.probes import PROBE_SET_VERSION, TokenizedProbe
from reporter.report import (
    SCHEMA_VERSION,
    Alert,
    Distance,
    Environment,
    GalleryItem,
    GammaFit,
    HeadReach,
    HeadResult,
    HeadValues,
    Horizon,
    LayerActivation,
    ModelInfo,
    Prediction,
    ProbeInfo,
    Report,
    Rollout,
    SinkEvidence,
    Thumbnails,
)
from reporter.rollout import effective_sources
from reporter.scores import FAMILIES, classify
from reporter.settings import Settings

PREDICTION_METHOD = "Padé closed form, RoPE geometry (Marín 2026): γ = (2−z)/(2+z), z = √2·T/θ"


def _r(x: float, nd: int = 4) -> float:
    return float(round(float(x), nd))


def score_heads(c: Captured, facts: ModelFacts, has_induction: bool, s: Settings) -> list[HeadResult]:
    """Mean row value per family per head, then the family label."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = c.family_sums / np.where(c.family_rows > 0, c.family_rows, 1)
    group = max(1, facts.num_heads // max(1, facts.num_kv_heads))
    out = []
    for layer in range(c.n_layers):
        for head in range(c.n_heads):
            scores: dict[str, float | None] = {}
            for f, fam in enumerate(FAMILIES):
                applies = c.family_rows[layer, head, f] > 0
                if fam == "next_token" and facts.is_causal:
                    applies = False
                if fam == "induction" and not has_induction:
                    applies = False
                scores[fam] = _r(means[layer, head, f]) if applies else None
            ranked = sorted(((k, v) for k, v in scores.items() if v is not None), key=lambda kv: -kv[1])
            out.append(HeadResult(
                layer=layer, head=head, kv_group=head // group,
                family=classify(scores, s),  # type: ignore[arg-type]
                scores=scores, top2=tuple(ranked[:2]),
                entropy=_r(c.entropy_sum[layer, head] / max(1.0, c.entropy_rows[layer, head])),
                sink_mass=_r(c.sink_sum[layer, head] / max(1, c.sink_rows)),
            ))
    return out


def pade_gamma(theta: float, T: float) -> float:
    """γ_Padé = (2 − z) / (2 + z), z = √2·T/θ (Marín 2026). 1 at T = 0, 1/3 at T = θ/√2, 0 at T = √2·θ."""
    z = math.sqrt(2.0) * T / theta
    return (2.0 - z) / (2.0 + z)


_REGIME_TEXT = {
    "normal": "the measured decay matches the RoPE geometry: η is within 15% of 1.",
    "compressed": "attention decays much faster than the geometry predicts, as if θ were about η times as large; "
                  "instruction tuning, sliding windows and recency-specialised heads all do this.",
    "over_pade": "attention decays more slowly than the geometry predicts: the model reads further than its θ "
                 "suggests.",
    "phase_b": "γ ≥ 1: the tail falls at least as fast as 1/d, outside the range the closed form describes.",
    "unknown": "η lies between the bands; no regime is claimed.",
}
PRIOR_CAVEAT = ("The closed form is an architecture-only prior: it knows θ and T, nothing about training. "
                "Instruction tuning, sliding windows and undertraining are known to break it.")


def rope_geometry(facts: ModelFacts) -> tuple[float, float, str]:
    """(θ_eff, t_scale, note): RoPE scaling as the closed form sees it, to first order.

    linear / dynamic scaling stretch positions (T becomes T·t_scale); yarn, ntk, llama3 and longrope
    stretch the base (θ becomes θ_eff). Only for RoPE models (facts.rope_theta set).
    """
    assert facts.rope_theta is not None
    theta_eff, t_scale, note = facts.rope_theta, 1.0, ""
    kind, factor = facts.rope_scaling_type, facts.rope_scaling_factor
    if kind and factor:
        if kind in ("linear", "dynamic"):
            t_scale = 1.0 / factor
            note = f"{kind} RoPE scaling ×{factor:g}: evaluated at T/{factor:g} (first-order estimate)"
        elif kind in ("yarn", "ntk", "llama3", "longrope"):
            theta_eff = facts.rope_theta * factor
            note = f"{kind} RoPE scaling ×{factor:g}: evaluated with θ·{factor:g} (first-order estimate)"
        else:
            note = f"RoPE scaling '{kind}' is not modelled; plain θ used"
    return theta_eff, t_scale, note


def predict_gamma(facts: ModelFacts, T: int) -> Prediction:
    """The config's closed-form γ at the analysed span T and at the trained context, or 'not applicable'."""
    pe = facts.position_encoding
    if pe != "rope" or facts.rope_theta is None:
        reasons = {
            "absolute": "absolute position embeddings: the closed form is derived from RoPE's rotation "
                        "geometry and says nothing about learned or sinusoidal position tables",
            "alibi": "ALiBi adds a linear distance penalty to the logits; the RoPE closed form does not apply",
            "other": "no RoPE base θ in the config (relative or unknown position scheme); no prediction",
            "none": "the model has no attention maps",
        }
        return Prediction(PREDICTION_METHOD, None, None, T, None, False, reasons.get(pe, reasons["other"]))
    theta = facts.rope_theta
    theta_eff, t_scale, note = rope_geometry(facts)
    reason = f"RoPE with θ = {theta:g}; T = {T} tokens, the longest probe analysed"
    if facts.partial_rotary_factor not in (None, 1, 1.0):
        reason += (f"; only {facts.partial_rotary_factor:g} of each head's dimensions rotate, which the closed "
                   "form ignores")
    if facts.sliding_window and facts.n_sliding_layers != 0:
        k = facts.n_sliding_layers
        if k is None or k == facts.num_layers:
            reason += f"; sliding window of {facts.sliding_window} tokens: beyond it attention is exactly zero"
        else:
            reason += (f"; a sliding window of {facts.sliding_window} tokens on {k} of {facts.num_layers} layers "
                       "(beyond it those layers' attention is exactly zero); the others attend globally")
    z = math.sqrt(2.0) * T * t_scale / theta_eff
    t_train = facts.max_position_embeddings
    g_train = pade_gamma(theta_eff, t_train * t_scale) if t_train else None
    if z > 2:
        return Prediction(PREDICTION_METHOD, None, theta, T, _r(z, 6), False,
                          f"z = √2·T/θ = {z:.3g} > 2, outside the form's range (γ would be negative)",
                          theta_effective=theta_eff, T_trained=t_train, scaling_note=note)
    return Prediction(PREDICTION_METHOD, _r(pade_gamma(theta_eff, T * t_scale), 6), theta, T, _r(z, 6), True, reason,
                      theta_effective=theta_eff, T_trained=t_train,
                      gamma_trained=_r(g_train, 6) if g_train is not None and g_train >= 0 else None,
                      scaling_note=note, caveat=PRIOR_CAVEAT)


def validity_gate(pred: Prediction, gamma_obs: float | None) -> Prediction:
    """η = θ_eff_obs / θ_eff_Padé with θ_eff_obs = √2·T/(1 − γ_obs) and θ_eff_Padé = θ + T/√2; the regime."""
    if not pred.applies or gamma_obs is None or pred.T is None or pred.theta_effective is None:
        return pred
    T = float(pred.T)
    theta_pade = pred.theta_effective + T / math.sqrt(2.0)
    if gamma_obs >= 1.0:
        return dataclasses.replace(pred, theta_eff_pade=_r(theta_pade, 2), regime="phase_b",
                                   regime_text=_REGIME_TEXT["phase_b"])
    theta_obs = math.sqrt(2.0) * T / (1.0 - gamma_obs)
    eta = theta_obs / theta_pade
    if 0.85 <= eta <= 1.15:
        regime = "normal"
    elif eta < 0.5:
        regime = "compressed"
    elif eta > 1.5:
        regime = "over_pade"
    else:
        regime = "unknown"
    return dataclasses.replace(pred, theta_eff_obs=_r(theta_obs, 2), theta_eff_pade=_r(theta_pade, 2),
                               eta=_r(eta, 4), regime=regime, regime_text=_REGIME_TEXT[regime])


def _recency_end(curve: np.ndarray, d_min: int, d_max: int, s: Settings) -> int:
    """Last distance of the recency region: where the curve stops standing above the tail's power law.

    A provisional fit on [d_min, d_max] is extrapolated down to d = 1; the recency region runs from d = 1
    while the measured curve exceeds that extrapolation by more than 50%.
    """
    d = np.arange(len(curve))
    fit = fit_tail(d, curve, d_min, d_max, s.tail_bins)
    if fit is None:
        return 1
    end = 0
    for k in range(1, max(2, d_max // 2)):
        expected = math.exp(fit.intercept) * k ** (-fit.gamma)
        if not np.isfinite(curve[k]) or curve[k] <= 1.5 * expected:
            break
        end = k
    return max(1, end)


def window_of_layers(facts: ModelFacts | None, n_layers: int) -> dict[int, int]:
    """layer -> sliding window, for the layers that use one (beyond it their attention is exactly zero)."""
    if facts is None or not facts.sliding_window or facts.n_sliding_layers == 0:
        return {}
    layers = facts.sliding_layers if facts.sliding_layers is not None else tuple(range(n_layers))
    return {layer: int(facts.sliding_window) for layer in layers if layer < n_layers}


def _binned(sums: np.ndarray, pairs: np.ndarray, edges: np.ndarray) -> tuple[float | None, ...]:
    """Mean attention in log-spaced distance bins: sums [d] and pairs [d] -> one value per bin."""
    out: list[float | None] = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        p = pairs[lo:hi].sum()
        out.append(float(f"{sums[lo:hi].sum() / p:.4g}") if p > 0 else None)
    return tuple(out)


def analyze_distance(c: Captured, T: int, s: Settings, windows: dict[int, int] | None = None) -> Distance:
    """The U curve and γ. `windows` (layer -> sliding window) keeps those layers' fits inside the window."""
    windows = windows or {}
    d_max_all = c.dist_pairs.shape[0]
    pairs_lh = c.dist_pairs * c.n_layers * c.n_heads
    curve = mean_curve(c.dist_sums.sum((0, 1)), pairs_lh)
    unit_s, unit_p, null_s = np.array(c.unit_sums), np.array(c.unit_pairs), np.array(c.null_unit_sums)
    null_curve = mean_curve(null_s.sum(0), unit_p.sum(0))
    d_max = T // 2
    if windows and len(windows) == c.n_layers:  # every layer slides: nothing to fit past the window
        d_max = min(d_max, min(windows.values()) - 1)
    rec = _recency_end(curve, s.tail_d_min, d_max, s)
    d_min = max(s.tail_d_min, rec + 1)
    d = np.arange(d_max_all)
    fit = fit_tail(d, curve, d_min, d_max, s.tail_bins)
    null_fit = fit_tail(d, null_curve, d_min, d_max, s.tail_bins)
    gamma = null_gamma = None
    distinct: bool | None = None
    diff_ci: tuple[float, float] | None = None
    note = ""
    if fit is None:
        note = (f"The tail window [{d_min}, {d_max}] holds too few distances for a fit; "
                "give a longer probe (--probes) or raise --max-tokens.")
    else:
        boots = bootstrap_gammas(unit_s, unit_p, d_min, d_max, s.tail_bins, s.bootstrap_samples, s.seed)
        ci = percentile_ci(boots) if len(unit_s) >= 2 else None
        gamma = GammaFit(_r(fit.gamma), (_r(ci[0]), _r(ci[1])) if ci else None, _r(fit.r2), fit.n_points,
                         (d_min, d_max))
        if null_fit is not None:
            # same seed, same units: resample k of the null is paired with resample k of the measurement
            null_boots = bootstrap_gammas(null_s, unit_p, d_min, d_max, s.tail_bins, s.bootstrap_samples, s.seed)
            nci = percentile_ci(null_boots) if len(unit_s) >= 2 else None
            null_gamma = GammaFit(_r(null_fit.gamma), (_r(nci[0]), _r(nci[1])) if nci else None,
                                  _r(null_fit.r2), null_fit.n_points, (d_min, d_max))
            if ci and nci:
                distinct = ci[1] < nci[0] or nci[1] < ci[0]
            dci = percentile_ci(boots - null_boots) if len(unit_s) >= 2 else None
            if dci:
                diff_ci = (_r(dci[0]), _r(dci[1]))
    per_layer: list[float | None] = []
    for layer in range(c.n_layers):
        lc = mean_curve(c.dist_sums[layer].sum(0), c.dist_pairs * c.n_heads)
        lf = fit_tail(d, lc, d_min, min(d_max, windows.get(layer, d_max + 1) - 1), s.tail_bins)
        per_layer.append(_r(lf.gamma) if lf else None)
    per_head = []
    for layer in range(c.n_layers):
        row: list[float | None] = []
        for head in range(c.n_heads):
            hf = fit_tail(d, mean_curve(c.dist_sums[layer, head], c.dist_pairs), d_min,
                          min(d_max, windows.get(layer, d_max + 1) - 1), s.tail_bins)
            row.append(_r(hf.gamma) if hf else None)
        per_head.append(tuple(row))
    edges = np.unique(np.round(np.geomspace(1, max(2, d_max_all), s.curve_bins + 1)).astype(int))
    edges[-1] = d_max_all
    layer_curves = tuple(_binned(c.dist_sums[layer].sum(0), c.dist_pairs * c.n_heads, edges)
                         for layer in range(c.n_layers))
    head_curves = tuple(tuple(_binned(c.dist_sums[layer, head], c.dist_pairs, edges) for head in range(c.n_heads))
                        for layer in range(c.n_layers))
    n_show = min(d_max_all, max(T, 2))
    return Distance(
        d=tuple(range(n_show)),
        pairs_per_head=tuple(int(v) for v in c.dist_pairs[:n_show]),
        mean_attention=tuple(None if not np.isfinite(v) else float(f"{v:.5g}") for v in curve[:n_show]),
        null_mean_attention=tuple(None if not np.isfinite(v) else float(f"{v:.5g}") for v in null_curve[:n_show]),
        sink_share=_r(c.sink_sum.sum() / max(1, c.sink_rows * c.n_layers * c.n_heads)),
        self_share=_r(curve[0]) if np.isfinite(curve[0]) else 0.0,
        recency_end=int(rec),
        gamma=gamma, null_gamma=null_gamma, distinguishable_from_uniform=distinct, gamma_minus_null_ci95=diff_ci,
        gamma_per_layer=tuple(per_layer), gamma_per_head=tuple(per_head), note=note,
        bin_edges=tuple(int(e) for e in edges), curve_per_layer=layer_curves, curve_per_head=head_curves,
        sliding_windows={str(k): v for k, v in windows.items()},
    )


def _reach_or_none(d: int) -> int | None:
    return int(d) if d >= 0 else None


def analyze_horizon(c: Captured, facts: ModelFacts, heads: list[HeadResult], dist: Distance, pred: Prediction,
                    T: int, s: Settings) -> Horizon:
    """D_f overall, per layer and per head, and the closed-form horizon from the measured γ."""
    key = "{:g}".format
    overall: dict[str, int | None] = {}
    per_layer: dict[str, tuple[int | None, ...]] = {}
    per_head: dict[str, tuple[tuple[int | None, ...], ...]] = {}
    for f in s.horizon_fractions:
        overall[key(f)] = _reach_or_none(int(reach(c.dist_sums.sum((0, 1)), f)))
        per_layer[key(f)] = tuple(_reach_or_none(int(v)) for v in reach(c.dist_sums.sum(1), f))
        per_head[key(f)] = tuple(tuple(_reach_or_none(int(v)) for v in row) for row in reach(c.dist_sums, f))

    lf = s.horizon_list_fraction
    d_head = reach(c.dist_sums, lf)  # [L, H]
    # A head with nearly all its weight on key 0 has a reach measured on crumbs: keep it off the lists.
    listed = [HeadReach(h.layer, h.head, int(d_head[h.layer, h.head]), _r(1.0 - h.sink_mass))
              for h in heads if d_head[h.layer, h.head] >= 0 and h.sink_mass <= s.alert_sink_share]
    k = s.horizon_list_size
    longest = tuple(sorted(listed, key=lambda r: (-r.distance, r.layer, r.head))[:k])
    shortest = tuple(sorted(listed, key=lambda r: (r.distance, r.layer, r.head))[:k])
    n_left = len(heads) - len(listed)
    list_note = (f"{n_left} head(s) with more than {s.alert_sink_share:.0%} of their weight on token 0 are left off "
                 "these lists: their reach is measured on the little weight they put elsewhere."
                 if n_left else "")

    applies, reason = False, ""
    value = ratio = check = None
    ci: tuple[float | None, float | None] | None = None
    gamma = dist.gamma.value if dist.gamma else None
    if facts.position_encoding != "rope" or facts.rope_theta is None:
        reason = f"Not applicable: the form is RoPE geometry and this model has none ({pred.reason})."
    elif gamma is None:
        reason = "Not applicable: no γ could be measured, and the form needs the measured γ."
    elif gamma >= 1.0:
        reason = (f"Not applicable: the measured γ = {gamma:.3f} ≥ 1, a tail falling at least as fast as 1/d, "
                  "for which the form gives no positive horizon.")
    elif gamma <= 0.0:
        reason = (f"Not applicable: the measured γ = {gamma:.3f} ≤ 0, no decay with distance, for which the form "
                  "has no finite horizon inside the RoPE range.")
    else:
        theta_eff, t_scale, _ = rope_geometry(facts)
        applies = True
        value = _r(closed_form_horizon(theta_eff, gamma) / t_scale, 1)
        ratio = _r(value / T, 4)
        if dist.gamma and dist.gamma.ci95:
            lo, hi = closed_form_interval(theta_eff, dist.gamma.ci95)
            ci = (None if lo is None else _r(lo / t_scale, 1), None if hi is None else _r(hi / t_scale, 1))
        reason = (f"θ·√2·(1 − γ)/(1 + γ) with θ = {theta_eff:g} and the measured γ = {gamma:.3f}. It is a length "
                  "scale of the RoPE geometry, not a share of attention mass: compare it with T, not with D_f.")
        g_pade = pade_gamma(theta_eff, T * t_scale)
        if pred.gamma is not None and 0.0 < g_pade < 1.0:
            check = _r(closed_form_horizon(theta_eff, g_pade) / t_scale, 6)
    circularity = (f"Fed the predicted γ_Padé(θ, T) instead, the same formula returns T = {T} exactly, by "
                   "construction (the form's authors note this circularity): only the measured γ makes it "
                   "informative.")
    return Horizon(
        fractions=tuple(s.horizon_fractions), T=T, overall=overall, per_layer=per_layer, per_head=per_head,
        list_fraction=lf, longest=longest, shortest=shortest, list_note=list_note,
        closed_form_applies=applies, closed_form_reason=reason, closed_form=value, closed_form_ci95=ci,
        closed_form_ratio=ratio, predicted_check=check, circularity_note=circularity if check is not None else "",
    )


def _opt(x: float, nd: int = 4) -> float | None:
    return _r(x, nd) if np.isfinite(x) else None


def analyze_values(c: Captured, heads: list[HeadResult], sink_label: str, special_label: str,
                   s: Settings) -> SinkEvidence:
    """Per-head value-weighted shares and no-op scores, and per-layer massive activations."""
    v, act = c.values, c.activations
    rows: list[HeadValues] = []
    sink_heads = [(h.layer, h.head) for h in heads if h.sink_mass > s.alert_sink_share]
    noop: list[tuple[int, int]] = []
    applies = v is not None and not v.reason and v.rows > 0
    if applies:
        assert v is not None
        m = v.sums
        with np.errstate(invalid="ignore", divide="ignore"):
            out = m["out_sum"] / v.rows  # [L, H]
            med = np.median(out, axis=1, keepdims=True)
            noop_score = np.where(med > 0, out / np.where(med > 0, med, 1.0), np.nan)
            vshare = np.where(m["vshare_rows"] > 0, m["sink_vshare_sum"] / np.maximum(m["vshare_rows"], 1), np.nan)
            ratio = np.where(m["sink_ratio_n"] > 0, m["sink_ratio_sum"] / np.maximum(m["sink_ratio_n"], 1), np.nan)
            sp_ratio = np.where(m["special_ratio_n"] > 0,
                                m["special_ratio_sum"] / np.maximum(m["special_ratio_n"], 1), np.nan)
        has_special = v.special_rows > 0
        for h in heads:
            L, H = h.layer, h.head
            rows.append(HeadValues(
                layer=L, head=H, weight_share=h.sink_mass, value_share=_opt(vshare[L, H]),
                value_norm_ratio=_opt(ratio[L, H]), output_norm=_r(out[L, H], 5), noop_score=_opt(noop_score[L, H]),
                sink_output_norm=_r(m["sink_out_sum"][L, H] / v.rows, 5),
                rest_output_norm=_r(m["rest_out_sum"][L, H] / v.rows, 5),
                special_weight_share=_r(m["special_w_sum"][L, H] / v.special_rows) if has_special else None,
                special_value_share=_r(m["special_vshare_sum"][L, H] / v.special_rows) if has_special else None,
                special_norm_ratio=_opt(sp_ratio[L, H]) if has_special else None,
            ))
            if np.isfinite(noop_score[L, H]) and noop_score[L, H] < s.bar_noop:
                noop.append((L, H))
    by_pos = {(x.layer, x.head): x for x in rows}
    picked = [by_pos[p] for p in sink_heads if p in by_pos]
    vs = [x.value_share for x in picked if x.value_share is not None]
    nr = [x.value_norm_ratio for x in picked if x.value_norm_ratio is not None]
    listed = sorted(picked or rows, key=lambda x: (-x.weight_share, x.layer, x.head))[:s.sink_list_size]

    def mean_of(vals: list[float | None]) -> float | None:
        kept = [x for x in vals if x is not None]
        return _r(float(np.mean(kept))) if kept else None

    def median_of(vals: list[float | None]) -> float | None:
        kept = [x for x in vals if x is not None]
        return _r(float(np.median(kept))) if kept else None

    layers: list[LayerActivation] = []
    act_applies = act is not None and not act.reason and act.dims_sum is not None and bool(act.n_probes.any())
    peak_layer = peak_ratio = None
    if act_applies:
        assert act is not None and act.dims_sum is not None
        for L in range(c.n_layers):
            n = max(1.0, act.n_probes[L])
            sp, mp = act.sink_peak_sum[L] / n, act.median_peak_sum[L] / n
            top = tuple(int(d) for d in np.argsort(-act.dims_sum[L], kind="stable")[:3])
            layers.append(LayerActivation(L, _r(sp, 3), _r(mp, 4), _r(sp / mp, 2) if mp > 0 else None, top))
        ratios = [(x.ratio, x.layer) for x in layers if x.ratio is not None]
        if ratios:
            peak_ratio, peak_layer = max(ratios, key=lambda t: (t[0], -t[1]))
    sp_ratio_all = median_of([x.special_norm_ratio for x in rows])
    sp_weight_all = mean_of([x.special_weight_share for x in rows])
    special_note = ""
    if sp_ratio_all is not None and sp_weight_all is not None:
        special_note = ("the value norms there are well below an ordinary token's, which agrees with reading attention "
                        "to them as a no-op (Clark et al. 2019)" if sp_ratio_all < 0.5 else
                        "the value norms there are close to an ordinary token's, so these numbers do not support "
                        "reading attention to them as a no-op (Clark et al. 2019 suggested it for BERT's [SEP])")
        if sp_weight_all < 0.05:
            special_note += f"; this model puts little weight there anyway ({sp_weight_all:.1%} on average)"
    return SinkEvidence(
        applies=applies, reason="" if applies else (v.reason if v is not None and v.reason else
                                                     "value norms were not captured"),
        sink_label=sink_label, special_label=special_label if applies and v is not None and v.special_rows else "",
        heads=tuple(rows), sink_heads=tuple(sink_heads),
        sink_heads_weight=mean_of([x.weight_share for x in picked]),
        sink_heads_value_share=mean_of(list(vs)),
        sink_heads_norm_ratio=median_of(list(nr)),
        noop_heads=tuple(noop), listed=tuple(listed),
        all_heads_weight=mean_of([x.weight_share for x in rows]),
        all_heads_value_share=mean_of([x.value_share for x in rows]),
        all_heads_norm_ratio=median_of([x.value_norm_ratio for x in rows]),
        special_weight=sp_weight_all,
        special_value_share=mean_of([x.special_value_share for x in rows]),
        special_norm_ratio=sp_ratio_all, special_note=special_note,
        activations_applies=act_applies,
        activations_reason="" if act_applies else (act.reason if act is not None and act.reason else
                                                    "hidden states were not captured"),
        activations=tuple(layers), peak_layer=peak_layer, peak_ratio=peak_ratio,
    )


def build_rollout(c: Captured, facts: ModelFacts, s: Settings) -> Rollout:
    assert c.rollout is not None and c.rollout_rows is not None and c.raw_rows is not None
    assert c.second_rows is not None and c.second_raw_rows is not None
    tokens = c.display_tokens_full
    if facts.is_causal:
        label = f"last token ({tokens[c.readout_index]})"
        second = f"position {c.second_index} ({tokens[c.second_index]})" if c.second_index is not None else ""
    else:
        label = f"first token ({tokens[0]})"
        second = "mean over all positions"
    rows = c.rollout_rows
    share = rows[:, 0]
    half = np.nonzero(share >= 0.5)[0]

    def table(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
        return tuple(tuple(_r(v, 4) for v in row) for row in m)

    return Rollout(
        method={"residual": s.rollout_residual, "head_fusion": s.rollout_head_fusion,
                "discard_ratio": s.rollout_discard_ratio, "renormalise_rows": True,
                "reference": "Abnar & Zuidema 2020"},
        probe=c.display_probe,
        tokens=tokens,
        readout_index=c.readout_index,
        readout_label=label,
        matrix=table(c.rollout),
        rows_per_layer=table(rows),
        raw_rows_per_layer=table(c.raw_rows),
        first_token_share_per_layer=tuple(_r(v) for v in share),
        effective_sources_per_layer=tuple(_r(effective_sources(r), 3) for r in rows),
        first_token_half_layer=int(half[0]) if half.size else None,
        second_label=second,
        second_rows_per_layer=table(c.second_rows) if second else (),
        second_raw_rows_per_layer=table(c.second_raw_rows) if second else (),
        first_token_share_by_probe={k: _r(v) for k, v in c.rollout_first_share.items()},
    )


def _paired_note(dist: Distance) -> str:
    dci = dist.gamma_minus_null_ci95
    if dci is None:
        return ""
    verdict = "excludes 0, so the measured decay is steeper than uniform attention's" if dci[0] > 0 else (
        "excludes 0, so the measured decay is shallower than uniform attention's" if dci[1] < 0 else
        "includes 0 as well: the decay is not distinguishable from uniform")
    return f" The paired bootstrap of γ − γ_uniform, [{dci[0]:.3f}, {dci[1]:.3f}], {verdict}."


def _sink_value_sentence(ev: SinkEvidence) -> str:
    """What the sink heads move from token 0, in the model's own numbers (empty when not measured)."""
    if not ev.applies or ev.sink_heads_norm_ratio is None:
        return ""
    text = (f" What they move from there is small: after the output projection, the value vector at token 0 is "
            f"{ev.sink_heads_norm_ratio:.2f}× the size of an ordinary token's (median over these heads)")
    if ev.sink_heads_value_share is not None and ev.sink_heads_weight is not None:
        text += (f"; weighted by those sizes, token 0's share is {ev.sink_heads_value_share:.0%} against "
                 f"{ev.sink_heads_weight:.0%} of the raw weight")
    return text + ". This shows how little the sink adds to these heads' output, not what the model decided."


def find_alerts(heads: list[HeadResult], facts: ModelFacts, dist: Distance, pred: Prediction,
                roll: Rollout, probes: list[TokenizedProbe], s: Settings,
                evidence: SinkEvidence | None = None) -> list[Alert]:
    alerts: list[Alert] = []
    first = roll.tokens[0] if roll.tokens else facts.first_token_str  # token 0 of the probe shown
    sinks = [(h.layer, h.head) for h in heads if h.sink_mass > s.alert_sink_share]
    n_sink_family = sum(h.family == "sink" for h in heads)
    if sinks:
        alerts.append(make_alert(
            AlertKind.SINK_HEADS,
            f"{len(sinks)} of {len(heads)} heads put more than {s.alert_sink_share:.0%} of their attention on "
            f"token 0 ('{first}'): {heads_str(sinks)}. (The sink family uses a lower bar, a mean of "
            f"{s.bar_sink:.0%}; {n_sink_family} heads clear it.) This is where softmax parks weight it has to put "
            "somewhere; it does not make token 0 important." + (_sink_value_sentence(evidence) if evidence else ""),
            sinks, evidence="sink-evidence" if evidence and evidence.applies else None))
    if evidence and evidence.noop_heads:
        alerts.append(make_alert(
            AlertKind.NOOP_HEADS,
            f"{len(evidence.noop_heads)} heads write an output whose mean norm is below {s.bar_noop:.0%} of their "
            f"layer's median head: {heads_str(list(evidence.noop_heads))}. They are close to switched off on these "
            "probes, whatever their attention map looks like.", list(evidence.noop_heads)))
    if evidence and evidence.peak_ratio is not None and evidence.peak_ratio >= s.massive_ratio:
        big = [a for a in evidence.activations if a.ratio is not None and a.ratio >= s.massive_ratio]
        peak = evidence.activations[evidence.peak_layer or 0]
        alerts.append(make_alert(
            AlertKind.MASSIVE_ACTIVATIONS,
            f"In {len(big)} of {len(evidence.activations)} layers the largest hidden-state value at token 0 is at "
            f"least {s.massive_ratio:g}× the median token's largest; the peak is {evidence.peak_ratio:.0f}× after "
            f"layer {evidence.peak_layer} (dimensions {', '.join(map(str, peak.top_dims))}). Sun et al. 2024 tie such "
            "massive activations to the attention sink: they give the first token a key every query matches and a "
            "value vector near zero."))
    if facts.is_causal and not facts.bos_added:
        alerts.append(make_alert(
            AlertKind.SINK_ON_FIRST_WORD,
            f"The tokenizer adds no BOS token, so the first-token sink lands on the first real token of each "
            f"probe ('{first}' in the probe shown). Weight there is the sink, not interest in that word."))
    if not facts.is_causal and facts.first_token_special:
        alerts.append(make_alert(
            AlertKind.SINK_ON_SPECIAL,
            f"Position 0 is the special token '{first}'. Weight on it (and on [SEP]-like tokens, counted in the "
            "delimiter band) is a special-token band, not attention to a word."))
    if dist.distinguishable_from_uniform is False:
        dci = dist.gamma_minus_null_ci95
        separated = dci is not None and (dci[0] > 0 or dci[1] < 0)
        alerts.append(make_alert(
            AlertKind.NULL_INTERVALS_OVERLAP if separated else AlertKind.DECAY_LIKE_UNIFORM,
            "The 95% interval of the measured γ overlaps that of perfectly uniform attention under the same "
            "probes and window." + _paired_note(dist)))
    g = dist.gamma
    if g is not None and g.ci95 is not None and pred.applies and pred.gamma is not None:
        if not (g.ci95[0] <= pred.gamma <= g.ci95[1]):
            alerts.append(make_alert(
                AlertKind.PREDICTION_OUTSIDE_CI,
                f"Predicted γ = {pred.gamma:.3f} lies outside the measured 95% interval "
                f"[{g.ci95[0]:.3f}, {g.ci95[1]:.3f}] (measured γ = {g.value:.3f})."))
    if g is not None and g.r2 < 0.8:
        alerts.append(make_alert(
            AlertKind.POOR_TAIL_FIT,
            f"R² of the tail fit is {g.r2:.2f}: the tail is not a clean power law on "
            f"[{g.fit_range[0]}, {g.fit_range[1]}]."))
    if facts.is_causal and roll.first_token_share_per_layer and roll.first_token_share_per_layer[-1] > 0.5:
        alerts.append(make_alert(
            AlertKind.ROLLOUT_ON_FIRST_TOKEN,
            f"After the last layer, {roll.first_token_share_per_layer[-1]:.0%} of the rollout of the "
            f"{roll.readout_label} sits on token 0. That is the sink carried through the layers, not a "
            "statement that the first token drives the output."))
    cut = [p for p in probes if p.truncated]
    if cut:
        alerts.append(make_alert(
            AlertKind.PROBES_TRUNCATED,
            "; ".join(f"'{p.name}' cut from {p.n_tokens_original} to {p.n_tokens} tokens" for p in cut) + "."))
    return alerts


def build_gallery(heads: list[HeadResult], c: Captured) -> list[GalleryItem]:
    """For each family present, its highest-scoring head, on the probe where the pattern shows."""
    items = []
    for fam in FAMILIES:
        members = [h for h in heads if h.family == fam]
        if not members:
            continue
        best = max(members, key=lambda h: (h.scores[fam] or 0.0, -h.layer, -h.head))
        if fam == "induction" and c.induction_maps is not None:
            amap, probe, tokens = c.induction_maps[best.layer, best.head], "induction_random", c.induction_tokens
        else:
            assert c.thumbnails is not None
            amap, probe, tokens = c.thumbnails[best.layer, best.head], c.display_probe, c.display_tokens
        items.append(GalleryItem(
            family=fam, layer=best.layer, head=best.head, score=float(best.scores[fam] or 0.0), probe=probe,
            tokens=tuple(tokens), map=tuple(tuple(_r(v, 3) for v in row) for row in amap)))
    return items


def analyze(c: Captured, facts: ModelFacts, probes: list[TokenizedProbe], notices: list[str],
            environment: Environment, s: Settings) -> Report:
    """Everything the renderers need, as plain data."""
    has_induction = any(p.period is not None for p in probes)
    heads = score_heads(c, facts, has_induction, s)
    T = max(p.n_tokens for p in probes)
    dist = analyze_distance(c, T, s, window_of_layers(facts, c.n_layers))
    pred = validity_gate(predict_gamma(facts, T), dist.gamma.value if dist.gamma else None)
    horizon = analyze_horizon(c, facts, heads, dist, pred, T, s)
    roll = build_rollout(c, facts, s)
    first = roll.tokens[0] if roll.tokens else facts.first_token_str
    special = sorted({t for p in probes for t, sp in zip(p.tokens[1:], p.is_special[1:]) if sp})
    evidence = analyze_values(c, heads, f"token 0 ({first})", ", ".join(special), s)
    alerts = find_alerts(heads, facts, dist, pred, roll, probes, s, evidence)
    counts = {fam: 0 for fam in (*FAMILIES, "mixed")}
    for h in heads:
        counts[h.family] += 1
    assert c.thumbnails is not None
    thumbs = Thumbnails(
        probe=c.display_probe, tokens=c.display_tokens,
        maps=tuple(tuple(tuple(tuple(_r(v, 3) for v in row) for row in hmap) for hmap in lmap)
                   for lmap in c.thumbnails),
    )
    model = ModelInfo(
        id=facts.model_id, source=facts.source, architecture=facts.architecture, model_type=facts.model_type,
        num_layers=c.n_layers, num_heads=facts.num_heads, num_kv_heads=facts.num_kv_heads,
        is_causal=facts.is_causal, position_encoding=facts.position_encoding, rope_theta=facts.rope_theta,
        partial_rotary_factor=facts.partial_rotary_factor,
        max_position_embeddings=facts.max_position_embeddings, bos_added=facts.bos_added,
        first_token=facts.first_token_str, first_token_special=facts.first_token_special, dtype=facts.dtype,
        attn_implementation=facts.attn_implementation, device=facts.device,
    )
    return Report(
        schema_version=SCHEMA_VERSION,
        model=model,
        probes=tuple(ProbeInfo(p.name, p.category, p.n_tokens, p.n_tokens_original, p.truncated) for p in probes),
        notices=tuple(notices),
        settings={**asdict(s), "probe_set": PROBE_SET_VERSION},
        heads=tuple(heads),
        family_counts=counts,
        distance=dist,
        prediction=pred,
        horizon=horizon,
        sink_evidence=evidence,
        rollout=roll,
        alerts=tuple(alerts),
        thumbnails=thumbs,
        gallery=tuple(build_gallery(heads, c)),
        environment=environment,
    )
