"""The contract between analysis and rendering: frozen, typed, plain data. The JSON is this, serialised.

No HTML, no tensors, no numpy here: renderers read only these objects, and `to_json` writes them.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any

SCHEMA_VERSION = "1.1"  # 1.1: horizon, sink_evidence, baseline


@dataclass(frozen=True)
class ModelInfo:
    id: str
    source: str
    architecture: str
    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    is_causal: bool
    position_encoding: str  # rope | absolute | alibi | none | other
    rope_theta: float | None
    partial_rotary_factor: float | None
    max_position_embeddings: int | None
    bos_added: bool
    first_token: str  # BOS or [CLS] when the tokenizer adds one; "" when token 0 is each probe's first word
    first_token_special: bool
    dtype: str
    attn_implementation: str
    device: str


@dataclass(frozen=True)
class ProbeInfo:
    name: str
    category: str
    num_tokens: int
    num_tokens_original: int
    truncated: bool


@dataclass(frozen=True)
class HeadResult:
    layer: int  # 0-based
    head: int  # 0-based
    kv_group: int  # which key/value head this query head reads (grouped-query attention)
    family: str
    scores: dict[str, float | None]  # family -> mean row value in [0, 1]; None = does not apply
    top2: tuple[tuple[str, float], ...]
    entropy: float  # mean row entropy in nats (rows i >= 1)
    sink_mass: float  # mean weight on token 0 (rows i >= 1)


@dataclass(frozen=True)
class GammaFit:
    value: float
    ci95: tuple[float, float] | None
    r2: float
    n_points: int
    fit_range: tuple[int, int]


@dataclass(frozen=True)
class Distance:
    d: tuple[int, ...]
    pairs_per_head: tuple[int, ...]  # (query, key) pairs behind each distance, per layer and head
    mean_attention: tuple[float | None, ...]  # None where no (query, key) pair exists
    null_mean_attention: tuple[float | None, ...]  # the same statistic for uniform attention
    sink_share: float  # mean weight on token 0, kept out of the curve
    self_share: float  # mean weight at d = 0
    recency_end: int  # last distance of the recency region (where the curve first flattens)
    gamma: GammaFit | None
    null_gamma: GammaFit | None  # γ of perfectly uniform attention under the same probes and window
    distinguishable_from_uniform: bool | None  # the two 95% intervals do not overlap
    gamma_minus_null_ci95: tuple[float, float] | None  # paired bootstrap of γ − γ_null (same resamples)
    gamma_per_layer: tuple[float | None, ...]
    gamma_per_head: tuple[tuple[float | None, ...], ...]  # [layer][head], point estimates
    note: str
    bin_edges: tuple[int, ...] = ()  # log-spaced distance bins [edge_k, edge_k+1) for the curves below
    curve_per_layer: tuple[tuple[float | None, ...], ...] = ()  # [layer][bin] mean attention
    curve_per_head: tuple[tuple[tuple[float | None, ...], ...], ...] = ()  # [layer][head][bin]
    sliding_windows: dict[str, int] = field(default_factory=dict)  # layer -> window; fits stay inside it


@dataclass(frozen=True)
class Prediction:
    method: str
    gamma: float | None
    theta: float | None
    T: int | None  # the context length the prediction is evaluated at: the longest analysed probe
    z: float | None
    applies: bool
    reason: str
    theta_effective: float | None = None  # θ after RoPE scaling (yarn/ntk/llama3 multiply θ by the factor)
    T_trained: int | None = None  # the trained context (max_position_embeddings)
    gamma_trained: float | None = None  # the closed form at T_trained
    scaling_note: str = ""
    # validity gate: how the measured γ compares with the geometry
    theta_eff_obs: float | None = None  # √2·T / (1 − γ_obs)
    theta_eff_pade: float | None = None  # θ + T/√2
    eta: float | None = None  # theta_eff_obs / theta_eff_pade
    regime: str = "not_applicable"  # normal | compressed | over_pade | phase_b | unknown | not_applicable
    regime_text: str = ""
    caveat: str = ""


@dataclass(frozen=True)
class HeadReach:
    layer: int
    head: int
    distance: int  # D_f of this head, f = Horizon.list_fraction
    nonsink_share: float  # share of the head's weight that is not on key 0: the mass D_f is taken of


@dataclass(frozen=True)
class Horizon:
    """How far back attention carries weight: D_f measured, and the closed form fed the measured γ."""

    fractions: tuple[float, ...]  # the f of each D_f, e.g. (0.5, 0.9)
    T: int  # longest probe analysed; no distance reaches T
    overall: dict[str, int | None]  # f -> D_f over all layers and heads
    per_layer: dict[str, tuple[int | None, ...]]  # f -> [layer]
    per_head: dict[str, tuple[tuple[int | None, ...], ...]]  # f -> [layer][head]
    list_fraction: float  # the f used for the heatmap and the longest / shortest lists
    longest: tuple[HeadReach, ...]
    shortest: tuple[HeadReach, ...]
    list_note: str  # which heads the lists leave out and why
    closed_form_applies: bool
    closed_form_reason: str  # why it applies or not, in a sentence
    closed_form: float | None  # θ·√2·(1 − γ_obs)/(1 + γ_obs), in tokens
    closed_form_ci95: tuple[float | None, float | None] | None  # from γ's interval; None end = open
    closed_form_ratio: float | None  # closed_form / T
    predicted_check: float | None  # the same form fed γ_Padé(θ, T): T by construction
    circularity_note: str


@dataclass(frozen=True)
class HeadValues:
    """What one head moves, not just where it looks (norm-based analysis, Kobayashi et al. 2020).

    f_j = W_O,h · v_j is key j's value vector after the head's slice of the output projection; the head
    writes y_i = Σ_j α_ij f_j. Means are over query rows i ≥ 1 of all probes.
    """

    layer: int
    head: int
    weight_share: float  # mean α_i0: attention weight on key 0 (= HeadResult.sink_mass)
    value_share: float | None  # mean α_i0‖f_0‖ / Σ_j α_ij‖f_j‖: key 0's share once weights are scaled by ‖f_j‖
    value_norm_ratio: float | None  # ‖f_0‖ / median ‖f_j‖ over ordinary keys j ≥ 1, mean over probes
    output_norm: float  # mean ‖y_i‖
    noop_score: float | None  # output_norm / the layer's median head: near 0 = close to switched off
    sink_output_norm: float  # mean ‖α_i0 f_0‖, the part of y_i that comes from key 0
    rest_output_norm: float  # mean ‖Σ_{j≥1} α_ij f_j‖, the part that comes from every other key
    special_weight_share: float | None  # the same for special keys past 0 ([SEP]); None = none in the probes
    special_value_share: float | None
    special_norm_ratio: float | None


@dataclass(frozen=True)
class LayerActivation:
    """Massive activations (Sun et al. 2024) in one layer's output hidden states."""

    layer: int
    sink_peak: float  # largest |h| at token 0, mean over probes
    median_peak: float  # median over tokens j ≥ 1 of their largest |h|, mean over probes
    ratio: float | None  # sink_peak / median_peak
    top_dims: tuple[int, ...]  # hidden dimensions with the largest |h| at token 0


@dataclass(frozen=True)
class SinkEvidence:
    """The model's own numbers on the sink: how much the heads parked on key 0 actually move from there."""

    applies: bool  # value norms were captured
    reason: str  # why not, when they were not
    sink_label: str  # e.g. "token 0 (<|im_start|>)"
    special_label: str  # e.g. "[SEP]"; "" when no special key past position 0 occurs
    heads: tuple[HeadValues, ...]  # every head, layer-major; () when not applicable
    sink_heads: tuple[tuple[int, int], ...]  # weight on key 0 above the alert share
    sink_heads_weight: float | None  # mean weight share of the sink heads
    sink_heads_value_share: float | None  # mean value-weighted share of the sink heads
    sink_heads_norm_ratio: float | None  # median value-norm ratio at key 0 of the sink heads
    noop_heads: tuple[tuple[int, int], ...]  # no-op score below the bar
    listed: tuple[HeadValues, ...]  # the sink heads by weight on key 0, or the top heads when there are none
    all_heads_weight: float | None  # mean over every head of the weight on key 0
    all_heads_value_share: float | None  # ... and of its value-weighted share
    all_heads_norm_ratio: float | None  # median over every head of the value-norm ratio at key 0
    special_weight: float | None  # the same three for the special keys past 0; None = none in the probes
    special_value_share: float | None
    special_norm_ratio: float | None
    special_note: str  # what the special-token numbers say, in a sentence ("" when there are none)
    activations_applies: bool
    activations_reason: str
    activations: tuple[LayerActivation, ...]
    peak_layer: int | None  # layer with the largest activation ratio
    peak_ratio: float | None


@dataclass(frozen=True)
class Rollout:
    method: dict[str, Any]
    probe: str
    tokens: tuple[str, ...]  # every token of the probe: the axis of the readout vectors
    readout_index: int
    readout_label: str
    matrix: tuple[tuple[float, ...], ...]  # [query, key] after the last layer, first tokens only
    rows_per_layer: tuple[tuple[float, ...], ...]  # [layer, key] readout row after each layer
    raw_rows_per_layer: tuple[tuple[float, ...], ...]  # [layer, key] same row of that layer's fused raw map
    first_token_share_per_layer: tuple[float, ...]
    effective_sources_per_layer: tuple[float, ...]  # exp(entropy) of the readout after each layer
    first_token_half_layer: int | None  # first layer after which token 0 holds >= half the readout
    second_label: str  # "" when there is no second readout
    second_rows_per_layer: tuple[tuple[float, ...], ...]
    second_raw_rows_per_layer: tuple[tuple[float, ...], ...]
    first_token_share_by_probe: dict[str, float]


@dataclass(frozen=True)
class Alert:
    code: str
    severity: str  # info | warning
    title: str
    message: str
    heads: tuple[tuple[int, int], ...]
    evidence: str = ""  # id of the report section that shows the evidence


@dataclass(frozen=True)
class Thumbnails:
    probe: str
    tokens: tuple[str, ...]
    maps: tuple[tuple[tuple[tuple[float, ...], ...], ...], ...]  # [layer][head][query][key]


@dataclass(frozen=True)
class GalleryItem:
    """The clearest head of one family, drawn large with its tokens on the axes."""

    family: str
    layer: int
    head: int
    score: float
    probe: str
    tokens: tuple[str, ...]
    map: tuple[tuple[float, ...], ...]  # [query, key]


@dataclass(frozen=True)
class Environment:
    python: str
    torch: str
    transformers: str
    numpy: str
    attn_report: str
    platform: str
    seed: int
    probe_set: str


@dataclass(frozen=True)
class RunStats:
    """The only volatile part of the report: wall times and memory of this run."""

    seconds: dict[str, float]
    peak_rss_mb: float
    # the process's peak RSS once each stage has finished (a high-water mark: a stage that raised it
    # shows a larger number than the stage before)
    peak_rss_mb_by_stage: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Report:
    schema_version: str
    model: ModelInfo
    probes: tuple[ProbeInfo, ...]
    notices: tuple[str, ...]
    settings: dict[str, Any]
    heads: tuple[HeadResult, ...]
    family_counts: dict[str, int]
    distance: Distance
    prediction: Prediction
    horizon: Horizon
    sink_evidence: SinkEvidence
    rollout: Rollout
    alerts: tuple[Alert, ...]
    thumbnails: Thumbnails
    gallery: tuple[GalleryItem, ...]
    environment: Environment
    run: RunStats = field(default_factory=lambda: RunStats({}, 0.0))
    baseline: BaselineDiff | None = None  # --baseline: what changed since an earlier report

    def head(self, layer: int, head: int) -> HeadResult:
        return self.heads[layer * self.model.num_heads + head]


@dataclass(frozen=True)
class FamilyChange:
    """One head whose family differs from the baseline's; scores are that family's mean row value."""

    layer: int
    head: int
    old: str
    new: str
    old_score: float | None  # baseline's score of the old family (None: mixed, or does not apply)
    old_score_now: float | None  # this run's score of the old family
    new_score_before: float | None  # baseline's score of the new family
    new_score: float | None  # this run's score of the new family


@dataclass(frozen=True)
class FamilyCountDelta:
    family: str
    old: int
    new: int
    delta: int  # new - old


@dataclass(frozen=True)
class GammaDrift:
    """Measured γ then and now, with intervals; and the config's prediction and regime then and now."""

    old: float | None  # None = not measured in that run
    old_ci95: tuple[float, float] | None
    new: float | None
    new_ci95: tuple[float, float] | None
    difference: float | None  # new - old
    intervals_overlap: bool | None  # None when either interval is missing
    old_predicted: float | None
    new_predicted: float | None
    old_regime: str
    new_regime: str
    note: str


@dataclass(frozen=True)
class AlertChange:
    code: str
    status: str  # new | resolved | still
    severity: str
    title: str
    old_message: str  # "" for a new alert
    new_message: str  # "" for a resolved alert


@dataclass(frozen=True)
class RunDifference:
    """Something about the two runs, not the model, that can move the numbers."""

    what: str  # e.g. "transformers version", "setting bar_sink", "probes"
    old: str
    new: str


@dataclass(frozen=True)
class BaselineDiff:
    """This report compared with an earlier one (--baseline). No path or time: same inputs, same bytes."""

    generator: str  # the baseline's generator, e.g. "attn-report 0.1.0"
    schema_version: str
    model_id: str
    same_model: bool  # same model id and the same layers x heads
    shape: tuple[int, int]  # the baseline's (layers, heads)
    heads_comparable: bool  # same layers x heads: heads can be matched one to one
    warnings: tuple[str, ...]
    n_heads_compared: int
    family_changes: tuple[FamilyChange, ...]
    family_counts: tuple[FamilyCountDelta, ...]
    gamma: GammaDrift
    alerts: tuple[AlertChange, ...]  # new, then resolved, then still present; by code within each
    differences: tuple[RunDifference, ...]


def _clean(obj: Any) -> Any:
    """NaN/inf -> None (JSON has no NaN), tuples -> lists."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def to_dict(report: Report) -> dict[str, Any]:
    return _clean(asdict(report))  # type: ignore[no-any-return]


def to_json(report: Report) -> str:
    """Deterministic JSON: same report, same bytes."""
    from reporter import __version__

    doc = {"generator": f"attn-report {__version__}", **to_dict(report)}
    # Compact: the thumbnails alone are L x H x n x n numbers; `jq .` pretty-prints for reading.
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n"
