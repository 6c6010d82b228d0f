"""What attention actually moves: value-vector norms after the output projection, and massive activations.

Attention weight alone says where a head looks, not how much it carries from there. Following the
norm-based analysis of Kobayashi et al. 2020 ("Attention is Not Only a Weight"), head h at query i
writes y_i = Σ_j α_ij · f_j with f_j = W_O,h · v_j (the value vector of key j after the head's slice of
the output projection). A head that parks its weight on a key whose f_j is near zero moves almost
nothing from there. Massive activations (Sun et al. 2024) are the huge hidden-state values at the
sink token that let a model build such near-zero values.

The functions here run inside the capture's forward hooks, one layer at a time, on torch tensors;
they return small numpy arrays and never keep a map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class OVCircuit:
    """Where one attention layer's value vectors come from, and its output projection."""

    value_module: Any  # the module whose forward output holds the values
    value_slice: slice | None  # the values' part of that output's last dim (fused q/k/v); None = all
    w_o: Any  # torch tensor [hidden, heads * head_dim]: y = W_O · concat(heads)
    n_heads: int
    n_kv_heads: int

    @property
    def head_dim(self) -> int:
        return int(self.w_o.shape[1]) // self.n_heads

    def gram(self) -> Any:
        """[heads, head_dim, head_dim] G_h = W_O,hᵀ W_O,h, so that ‖W_O,h x‖² = xᵀ G_h x."""
        import torch

        w = self.w_o.detach().float()
        dh = self.head_dim
        blocks = w.reshape(w.shape[0], self.n_heads, dh).permute(1, 0, 2)  # [heads, hidden, dh]
        return torch.bmm(blocks.transpose(1, 2), blocks)


def find_ov(name: str, attn: Any, model: Any, n_heads: int, n_kv_heads: int) -> OVCircuit | None:
    """The value source and output projection of the attention module `name`, or None if unknown.

    Known layouts: separate v_proj / o_proj (Llama, Mistral, Qwen2, Gemma, ...), v_proj / out_proj (BART),
    v / o (T5); BERT's
    self.value with the output dense layer one level up; GPT-2's fused c_attn / c_proj (Conv1D).
    """
    import torch

    def weight_of(linear: Any, conv1d: bool = False) -> Any:
        w = getattr(linear, "weight", None)
        if not isinstance(w, torch.Tensor) or w.dim() != 2:
            return None
        return w.t() if conv1d else w

    inner = getattr(attn, "SelfAttention", None)  # T5 wraps its attention in a layer module
    if inner is not None:
        attn = inner
    for v_name, o_name in (("v_proj", "o_proj"), ("v_proj", "out_proj"), ("v", "o")):
        if hasattr(attn, v_name) and hasattr(attn, o_name):
            w_o = weight_of(getattr(attn, o_name))
            if w_o is not None and w_o.shape[1] % n_heads == 0:
                return OVCircuit(getattr(attn, v_name), None, w_o, n_heads, n_kv_heads)
    if hasattr(attn, "value") and name.endswith(".self"):
        parent = model.get_submodule(name[: -len(".self")])
        dense = getattr(getattr(parent, "output", None), "dense", None)
        w_o = weight_of(dense) if dense is not None else None
        if w_o is not None and w_o.shape[1] % n_heads == 0:
            return OVCircuit(attn.value, None, w_o, n_heads, n_heads)
    if hasattr(attn, "c_attn") and hasattr(attn, "c_proj") and not getattr(attn, "is_cross_attention", False):
        w_o = weight_of(attn.c_proj, conv1d=True)
        if w_o is not None:
            width = int(w_o.shape[1])
            return OVCircuit(attn.c_attn, slice(2 * width, 3 * width), w_o, n_heads, n_heads)
    return None


def value_stats(attn: Any, values: Any, gram: Any, n_kv_heads: int, special: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head reductions of one layer on one probe, summed over query rows i ≥ 1.

    attn: [heads, query, key] attention weights (float32, rows sum to 1).
    values: [key, n_kv_heads * head_dim] value vectors as the value projection produced them.
    gram: [heads, head_dim, head_dim] from OVCircuit.gram().
    special: [key] bool, keys other than 0 that are special tokens ([SEP]); may be all False.

    Returns numpy arrays; `*_sum` are sums over rows i ≥ 1 (divide by n − 1 for the mean):
      fnorm [heads, key]      ‖W_O,h v_j‖, the size of what head h moves from key j per unit weight
      out_sum [heads]         Σ_i ‖y_i‖, the head's output norm (no output bias)
      sink_out_sum [heads]    Σ_i α_i0 ‖f_0‖, the norm of the part moved from key 0
      rest_out_sum [heads]    Σ_i ‖Σ_{j≥1} α_ij f_j‖, the norm of the part moved from every other key
      sink_vshare_sum [heads] Σ_i α_i0 ‖f_0‖ / Σ_j α_ij ‖f_j‖, value-weighted share of key 0 (Kobayashi)
      special_w_sum, special_vshare_sum [heads]  the same two shares for the special keys
      vshare_rows [heads]     rows where Σ_j α_ij ‖f_j‖ > 0 (the value-weighted share exists)
    """
    import torch

    a = attn.float()  # [H, n, n]
    n_heads, n = a.shape[0], a.shape[-1]
    v = values.float().reshape(n, n_kv_heads, -1).permute(1, 0, 2)  # [KV, n, dh]
    v = v.repeat_interleave(n_heads // n_kv_heads, dim=0)  # [H, n, dh]: head h reads KV group h // group
    g = gram.float()  # [H, dh, dh]
    vg = torch.bmm(v, g)  # [H, n, dh]
    fnorm = (vg * v).sum(-1).clamp_min(0).sqrt()  # [H, n]
    rows = a[:, 1:, :]  # [H, n-1, n] queries i >= 1
    z = torch.bmm(rows, v)  # [H, n-1, dh]: Σ_j α_ij v_j
    out = (torch.bmm(z, g) * z).sum(-1).clamp_min(0).sqrt()  # [H, n-1] ‖y_i‖
    z_rest = z - rows[:, :, :1] * v[:, :1, :]  # drop key 0's share
    rest = (torch.bmm(z_rest, g) * z_rest).sum(-1).clamp_min(0).sqrt()
    moved = torch.bmm(rows, fnorm.unsqueeze(-1)).squeeze(-1)  # [H, n-1] Σ_j α_ij ‖f_j‖
    sink_part = rows[:, :, 0] * fnorm[:, :1]  # [H, n-1] α_i0 ‖f_0‖
    ok = moved > 0
    safe = torch.where(ok, moved, torch.ones_like(moved))
    sp = torch.from_numpy(np.asarray(special, dtype=bool)).to(a.device)
    sp_w = rows[:, :, sp].sum(-1) if bool(sp.any()) else torch.zeros_like(moved)
    sp_part = torch.bmm(rows[:, :, sp], fnorm[:, sp].unsqueeze(-1)).squeeze(-1) if bool(sp.any()) \
        else torch.zeros_like(moved)

    def np_(t: Any) -> np.ndarray:
        return t.detach().cpu().double().numpy()

    return {
        "fnorm": np_(fnorm),
        "out_sum": np_(out.sum(-1)),
        "sink_out_sum": np_(sink_part.sum(-1)),
        "rest_out_sum": np_(rest.sum(-1)),
        "sink_vshare_sum": np_(torch.where(ok, sink_part / safe, torch.zeros_like(moved)).sum(-1)),
        "special_w_sum": np_(sp_w.sum(-1)),
        "special_vshare_sum": np_(torch.where(ok, sp_part / safe, torch.zeros_like(moved)).sum(-1)),
        "vshare_rows": np_(ok.sum(-1)),
    }


def norm_ratio(fnorm: np.ndarray, keys: np.ndarray, others: np.ndarray) -> np.ndarray:
    """[heads]: mean ‖f_j‖ over `keys` / median ‖f_j‖ over `others` (bool masks over keys); NaN if undefined."""
    if not keys.any() or not others.any():
        return np.full(fnorm.shape[0], np.nan)
    num = fnorm[:, keys].mean(-1)
    den = np.median(fnorm[:, others], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def activation_stats(hidden: Any) -> tuple[float, float, np.ndarray]:
    """Massive activations of one layer's output on one probe (Sun et al. 2024).

    hidden: [token, hidden] the layer's output hidden states.
    Returns (largest |h| at token 0, median over tokens j ≥ 1 of their largest |h|, |h_0| per dim).
    """
    h = hidden.detach().float().abs().cpu().double().numpy()
    peak = h.max(-1)  # [token]
    median_other = float(np.median(peak[1:])) if h.shape[0] > 1 else float("nan")
    return float(peak[0]), median_other, h[0]


# value_stats outputs summed per (layer, head) over probes, and the per-probe norm ratios
_STAT_KEYS = ("out_sum", "sink_out_sum", "rest_out_sum", "sink_vshare_sum", "vshare_rows", "special_w_sum",
              "special_vshare_sum")
_RATIO_KEYS = ("sink_ratio_sum", "sink_ratio_n", "special_ratio_sum", "special_ratio_n")


@dataclass
class ValueSums:
    """Running sums of value_stats over probes, for every layer and head: plain numpy arrays."""

    n_layers: int
    n_heads: int
    reason: str = ""  # why value norms are not available ("" = they are)
    sums: dict[str, np.ndarray] = field(init=False)  # key -> [layer, head]
    rows: int = field(init=False, default=0)  # query rows i >= 1 over all probes (per layer and head)
    special_rows: int = field(init=False, default=0)  # the same, only probes holding special keys past 0

    def __post_init__(self) -> None:
        self.sums = {k: np.zeros((self.n_layers, self.n_heads)) for k in (*_STAT_KEYS, *_RATIO_KEYS)}

    def add(self, layer: int, st: dict[str, np.ndarray], special: np.ndarray, first_layer: bool) -> None:
        """Fold one layer's value_stats on one probe; `first_layer` counts the probe's rows once."""
        n = st["fnorm"].shape[-1]
        for k in _STAT_KEYS:
            self.sums[k][layer] += st[k]
        idx = np.arange(n)
        others = (idx >= 1) & ~special
        for name, keys in (("sink", idx == 0), ("special", special)):
            r = norm_ratio(st["fnorm"], keys, others)
            ok = np.isfinite(r)
            self.sums[f"{name}_ratio_sum"][layer] += np.where(ok, r, 0.0)
            self.sums[f"{name}_ratio_n"][layer] += ok
        if first_layer:
            self.rows += n - 1
            self.special_rows += (n - 1) if special.any() else 0


@dataclass
class ActivationSums:
    """Running sums of activation_stats over probes, per layer."""

    n_layers: int
    reason: str = ""  # why massive activations are not available ("" = they are)
    sink_peak_sum: np.ndarray = field(init=False)  # [layer] largest |h| at token 0
    median_peak_sum: np.ndarray = field(init=False)  # [layer] median over other tokens of their largest |h|
    dims_sum: np.ndarray | None = field(init=False, default=None)  # [layer, hidden] |h_0| per dimension
    n_probes: np.ndarray = field(init=False)  # [layer]

    def __post_init__(self) -> None:
        self.sink_peak_sum = np.zeros(self.n_layers)
        self.median_peak_sum = np.zeros(self.n_layers)
        self.n_probes = np.zeros(self.n_layers)

    def add(self, layer: int, sink_peak: float, median_peak: float, dims: np.ndarray) -> None:
        if self.dims_sum is None:
            self.dims_sum = np.zeros((self.n_layers, dims.shape[0]))
        if not np.isfinite(median_peak):
            return
        self.sink_peak_sum[layer] += sink_peak
        self.median_peak_sum[layer] += median_peak
        self.dims_sum[layer] += dims
        self.n_probes[layer] += 1
