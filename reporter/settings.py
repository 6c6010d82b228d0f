"""Every threshold and default of the analyses, in one frozen object printed in the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from reporter.rollout import RolloutOptions

SEED = 20261203  # seeds the random-token probe and every bootstrap


@dataclass(frozen=True)
class Settings:
    # --- head families: a head gets a family when its score clears that family's bar ---
    bar_previous_token: float = 0.5  # mean weight on j = i-1 (Clark et al. 2019 used 0.5)
    bar_next_token: float = 0.5  # mean weight on j = i+1 (bidirectional models only)
    bar_local: float = 0.5  # mean weight within |i-j| <= local_window, beyond i-1 / i+1
    local_window: int = 3  # half-width w of the local band
    bar_sink: float = 0.5  # mean weight on key 0 from rows i >= 1
    bar_delimiter: float = 0.3  # excess weight on delimiters over their share of visible keys
    bar_broad: float = 0.8  # row entropy / ln(visible keys); 1 = perfectly uniform
    broad_min_keys: int = 8  # rows with fewer visible keys are too short for entropy to mean much
    bar_induction: float = 0.3  # mean weight on the token after the previous occurrence
    # --- alerts ---
    alert_sink_share: float = 0.8  # "head puts > 80% on token 0"
    # --- distance / gamma ---
    tail_d_min: int = 16  # first distance of the tail fit (past the recency region)
    tail_bins: int = 24  # log-spaced bins between d_min and d_max for the fit
    curve_bins: int = 32  # log-spaced bins for the per-layer and per-head curves in the JSON
    bootstrap_samples: int = 1000  # resamples of (probe, query block) units for the 95% CI
    query_block: int = 64  # query rows per bootstrap unit
    # --- horizon ---
    horizon_fractions: tuple[float, ...] = (0.5, 0.9)  # D_f: smallest d holding f of the non-sink mass
    horizon_list_fraction: float = 0.9  # the f of the per-head heatmap and the longest / shortest lists
    horizon_list_size: int = 5  # heads listed at each end
    # --- sink evidence (value norms, massive activations) ---
    bar_noop: float = 0.25  # a head whose mean output norm is below this share of its layer's median head
    sink_list_size: int = 15  # heads listed in the sink-evidence table
    massive_ratio: float = 100.0  # largest |h| at token 0 over the median token's: "massive" (Sun et al. 2024)
    # --- capture ---
    row_sum_tolerance: float = 1e-3  # |sum_j A[i, j] - 1| allowed
    causal_tolerance: float = 1e-6  # largest weight allowed above the diagonal in causal models
    thumbnail_max_tokens: int = 48  # display probe is cut to this many tokens for thumbnails
    fold_rows: int = 128  # query rows reduced at a time: bounds the capture's temporaries, not its results
    # --- rollout ---
    rollout_residual: float = 0.5  # A' = a*A + (1-a)*I, Abnar & Zuidema 2020
    rollout_head_fusion: str = "mean"  # mean | max | min over a layer's heads
    rollout_discard_ratio: float = 0.0  # share of each row's smallest weights dropped before mixing
    rollout_position: int | None = None  # extra decoder readout (token index); None = none
    seed: int = SEED

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def rollout_options(self) -> RolloutOptions:
        return RolloutOptions(self.rollout_residual, self.rollout_head_fusion,  # type: ignore[arg-type]
                              self.rollout_discard_ratio)


DEFAULT_SETTINGS = Settings()
