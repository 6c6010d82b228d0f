"""Stage 3: run the probes and reduce each layer's attention to statistics as soon as it is produced.

No L x H x n x n tensor is ever kept: a forward hook on every attention module checks the layer's map,
folds it into running sums (family scores, distance sums, rollout), keeps the small display-probe
thumbnails, and lets the map go.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from reporter.distance import by_distance, pair_counts, uniform_map
from reporter.errors import CaptureCheckError, UnsupportedModelError
from reporter.load import LoadedModel, ModelFacts
from reporter.probes import TokenizedProbe, display_probe_name
from reporter.rollout import fuse_heads, rollout_step
from reporter.scores import FAMILIES, SCORERS, MapContext, row_entropy
from reporter.settings import Settings
from reporter.values import ActivationSums, OVCircuit, ValueSums, activation_stats, find_ov, value_stats

log = logging.getLogger(__name__)

# Row sums of a softmax computed in fp32 then cast down drift by about the dtype's resolution.
_ROW_SUM_TOL = {"float32": 1.0, "float16": 5.0, "bfloat16": 20.0}


@dataclass
class Captured:
    """Raw reductions over all probes: plain numpy arrays, consumed by the analysis stage."""

    n_layers: int
    n_heads: int
    family_sums: np.ndarray  # [L, H, F] sum over counted rows of each family's row value
    family_rows: np.ndarray  # [L, H, F] number of counted rows
    entropy_sum: np.ndarray  # [L, H] sum of row entropy (nats) over rows i >= 1
    entropy_rows: np.ndarray  # [L, H]
    dist_sums: np.ndarray  # [L, H, D] sum of weight at distance d (key 0 excluded)
    dist_pairs: np.ndarray  # [D] valid pairs at distance d per (layer, head)
    sink_sum: np.ndarray  # [L, H] sum of A[i, 0] over rows i >= 1
    sink_rows: int
    unit_sums: list[np.ndarray] = field(default_factory=list)  # per (probe, block): [D] summed over L, H
    unit_pairs: list[np.ndarray] = field(default_factory=list)  # per (probe, block): [D] pairs x L x H
    null_unit_sums: list[np.ndarray] = field(default_factory=list)  # same, for uniform attention
    thumbnails: np.ndarray | None = None  # [L, H, m, m] display probe (fp32)
    display_probe: str = ""
    display_tokens: tuple[str, ...] = ()  # cut to thumbnail_max_tokens
    display_tokens_full: tuple[str, ...] = ()
    rollout: np.ndarray | None = None  # [m, m] display probe rollout after the last layer
    rollout_rows: np.ndarray | None = None  # [L, n] primary readout of rollout after each layer
    raw_rows: np.ndarray | None = None  # [L, n] same readout of the head-fused raw map of that layer
    second_rows: np.ndarray | None = None  # [L, n] secondary readout (decoder position / encoder mean)
    second_raw_rows: np.ndarray | None = None  # [L, n]
    readout_index: int = 0
    second_index: int | None = None  # None: the mean over positions (encoders)
    induction_maps: np.ndarray | None = None  # [L, H, n, n] the repeated random-token probe, for the gallery
    induction_tokens: tuple[str, ...] = ()
    rollout_first_share: dict[str, float] = field(default_factory=dict)  # probe -> final readout on token 0
    values: ValueSums | None = None  # value-vector norms after W_O (None: not captured)
    activations: ActivationSums | None = None  # massive activations at token 0 per layer
    n_maps_checked: int = 0
    forward_seconds: float = 0.0
    reduce_seconds: float = 0.0


# Architectures that predate transformers' output recorder: (module name suffix, index of the weights).
_LEGACY_ATTENTION: dict[str, tuple[str, int]] = {
    "bloom": (".self_attention", 1),
}


def attended_model(model: Any) -> Any:
    """The part whose self-attention we read: the encoder of an encoder-decoder, else the model."""
    if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
        return model.get_encoder()
    return model


def attention_modules(model: Any) -> list[tuple[str, Any, int]]:
    """The modules whose forward returns a layer's attention weights, in layer order, with the index
    of the weights in their output tuple. Uses transformers' own record of where attentions live."""
    return _recorded_modules(model, "attentions")


def layer_modules(model: Any) -> list[tuple[str, Any, int]]:
    """The transformer blocks whose output is a layer's hidden states, in layer order ([] if unknown)."""
    return _recorded_modules(model, "hidden_states")


def _recorded_modules(model: Any, what: str) -> list[tuple[str, Any, int]]:
    model = attended_model(model)
    rec = getattr(model, "_can_record_outputs", None) or {}
    spec = rec.get(what)
    if spec is None and what != "attentions":
        return []
    if spec is None:
        legacy = _LEGACY_ATTENTION.get(getattr(model.config, "model_type", ""))
        if legacy is None:
            return []
        suffix, index = legacy
        return [(name, mod, index) for name, mod in model.named_modules() if name.endswith(suffix)]
    if isinstance(spec, type):
        cls, index, layer_name = spec, (1 if what == "attentions" else 0), None
    else:
        cls, index, layer_name = spec.target_class, spec.index, spec.layer_name
    found = []
    for name, mod in model.named_modules():
        if isinstance(mod, cls) and (layer_name is None or name.endswith(layer_name)):
            found.append((name, mod, index))
    return found


class _Reducer:
    """Holds the running sums for one run and folds one layer's map at a time into them."""

    def __init__(self, n_layers: int, n_heads: int, d_max: int, is_causal: bool, dtype: str,
                 settings: Settings, display_probe: str, sink_applies: bool = True) -> None:
        self.s = settings
        self.is_causal = is_causal
        self.sink_applies = sink_applies
        self.ropts = settings.rollout_options()
        self.tol = settings.row_sum_tolerance * _ROW_SUM_TOL.get(dtype, 1.0)
        f = len(FAMILIES)
        self.c = Captured(
            n_layers=n_layers, n_heads=n_heads,
            family_sums=np.zeros((n_layers, n_heads, f)), family_rows=np.zeros((n_layers, n_heads, f)),
            entropy_sum=np.zeros((n_layers, n_heads)), entropy_rows=np.zeros((n_layers, n_heads)),
            dist_sums=np.zeros((n_layers, n_heads, d_max)), dist_pairs=np.zeros(d_max),
            sink_sum=np.zeros((n_layers, n_heads)), sink_rows=0, display_probe=display_probe,
        )
        self.probe: TokenizedProbe | None = None
        self.ctx: MapContext | None = None
        self.block_sums: np.ndarray | None = None
        self.rollout: np.ndarray | None = None
        self.fused: np.ndarray | None = None  # [query, key] the current layer's head-fused map, filled by blocks
        self.display = False
        self.special = np.zeros(0, dtype=bool)  # [key] special tokens past position 0 ([SEP])
        self.grams: dict[int, Any] = {}  # layer -> [heads, dh, dh] Gram matrices of W_O

    def start_probe(self, probe: TokenizedProbe) -> None:
        n = probe.n_tokens
        self.probe = probe
        start = _prefix_len(probe) if probe.period is not None else 0
        self.ctx = MapContext(self.is_causal, np.array(probe.is_delimiter, dtype=bool), self.s,
                              probe.period, start, self.sink_applies)
        n_blocks = -(-n // self.s.query_block)
        self.block_sums = np.zeros((n_blocks, self.c.dist_pairs.shape[0]))
        self.rollout = np.eye(n)
        special = np.array(probe.is_special or [False] * n, dtype=bool)
        special[0] = False
        self.special = special
        self.display = probe.name == self.c.display_probe and self.c.thumbnails is None
        if self.display:
            m = min(n, self.s.thumbnail_max_tokens)
            self.c.display_tokens = probe.tokens[:m]
            self.c.thumbnails = np.zeros((self.c.n_layers, self.c.n_heads, m, m), dtype=np.float32)
            self.c.display_tokens_full = probe.tokens
            self.c.rollout_rows = np.zeros((self.c.n_layers, n))
            self.c.raw_rows = np.zeros((self.c.n_layers, n))
            self.c.second_rows = np.zeros((self.c.n_layers, n))
            self.c.second_raw_rows = np.zeros((self.c.n_layers, n))
            self.c.readout_index = (n - 1) if self.is_causal else 0
            pos = self.s.rollout_position
            self.c.second_index = (min(max(pos, 0), n - 1) if pos is not None else None) if self.is_causal else None

    def check(self, a: np.ndarray, layer: int, row0: int = 0) -> None:
        """Finite, rows sum to 1, causal maps lower-triangular; else an error naming layer and head.

        `a` is a block of query rows [heads, rows, key] starting at query `row0`.
        """
        name = self.probe.name if self.probe else "?"
        sums = a.sum(-1)  # [heads, rows]; a row holding NaN or inf has a sum that is not finite
        if not np.isfinite(sums).all():
            h = int(np.nonzero(~np.isfinite(sums).all(-1))[0][0])
            raise CaptureCheckError(
                f"attention map of layer {layer}, head {h} on probe '{name}' holds NaN or inf (check: finite)",
                "this is usually an fp16 overflow; rerun with --dtype float32")
        err = np.abs(sums - 1.0)
        if err.max() > self.tol:
            h = int(np.unravel_index(err.argmax(), err.shape)[0])
            raise CaptureCheckError(
                f"attention rows of layer {layer}, head {h} on probe '{name}' sum to {1 + err.max():.4f}, "
                f"not 1 (check: rows sum to 1 within {self.tol:g})",
                "the model's attention is not a softmax over keys; attn-report cannot read it")
        if self.is_causal:
            m = a.shape[1]
            # the future of rows row0 .. row0+m-1: above the diagonal of their square block, and every key after it
            upper = np.triu(a[:, :, row0:row0 + m], 1).max(axis=(1, 2))  # [heads]
            if row0 + m < a.shape[-1]:
                upper = np.maximum(upper, a[:, :, row0 + m:].max(axis=(1, 2)))
            if upper.max() > self.s.causal_tolerance:
                h = int(upper.argmax())
                raise CaptureCheckError(
                    f"attention map of layer {layer}, head {h} on probe '{name}' puts {upper.max():.3g} on "
                    "future tokens (check: causal maps are lower-triangular)",
                    "the model may not be causal; report this model type to attn-report")

    def fold(self, attn_t: Any, layer: int) -> None:
        """Reduce one layer's map [1, heads, query, key] into the running sums, then drop it.

        The map is read a block of `fold_rows` query rows at a time, converted to fp32 block by block,
        so the reduction's temporaries scale with the block, not with the n x n map.
        """
        t0 = time.perf_counter()
        full = attn_t.detach()[0]  # [heads, query, key] torch, the model's dtype and device
        assert self.ctx is not None and self.probe is not None and self.block_sums is not None
        c, n, b = self.c, int(full.shape[-1]), self.s.fold_rows
        if self.fused is None or self.fused.shape[0] != n:
            self.fused = np.empty((n, n))
        for r0 in range(0, n, b):
            a = full[:, r0:r0 + b].float().cpu().numpy()  # [heads, rows, key] fp32
            self._fold_rows(a, layer, r0)
        fused = self.fused  # [query, key], every row filled by the blocks
        self._rollout_step(fused, layer)
        if self.display:
            assert c.raw_rows is not None and c.second_raw_rows is not None
            fused_rows = fused / fused.sum(-1, keepdims=True)
            c.raw_rows[layer] = fused_rows[c.readout_index]
            c.second_raw_rows[layer] = (fused_rows.mean(0) if c.second_index is None
                                        else fused_rows[c.second_index])
        c.n_maps_checked += int(full.shape[0])
        c.reduce_seconds += time.perf_counter() - t0

    def _fold_rows(self, a: np.ndarray, layer: int, r0: int) -> None:
        """Fold query rows r0 .. r0 + rows of one layer's map: a [heads, rows, key] fp32, keys complete."""
        assert self.ctx is not None and self.probe is not None and self.fused is not None
        self.check(a, layer, r0)
        # every sum below accumulates in float64, so the result does not depend on the block size
        c, m, n = self.c, a.shape[1], a.shape[-1]
        ent = row_entropy(a)  # [heads, rows]
        ctx = replace(self.ctx, row0=r0, entropy=ent)
        for f, fam in enumerate(FAMILIES):
            vals = SCORERS[fam](a, ctx)  # [heads, counted rows of this block]
            c.family_sums[layer, :, f] += vals.sum(-1, dtype=np.float64)
            c.family_rows[layer, :, f] += vals.shape[-1]
        k1 = 1 if r0 == 0 else 0  # rows i >= 1
        c.entropy_sum[layer] += ent[:, k1:].sum(-1)
        c.entropy_rows[layer] += m - k1
        c.sink_sum[layer] += a[:, k1:, 0].sum(-1, dtype=np.float64)
        by_d = by_distance(a, self.is_causal, r0)  # [heads, rows, d]
        c.dist_sums[layer, :, :n] += by_d.sum(1, dtype=np.float64)
        self._add_blocks(by_d.sum(0, dtype=np.float64), r0)
        self.fused[r0:r0 + m] = fuse_heads(a, self.ropts.head_fusion)  # [rows, key]
        if self.probe.period is not None:
            if c.induction_maps is None or c.induction_maps.shape[-1] != n:
                c.induction_maps = np.zeros((c.n_layers, c.n_heads, n, n), dtype=np.float32)
                c.induction_tokens = self.probe.tokens
            c.induction_maps[layer, :, r0:r0 + m] = a
        if self.display and c.thumbnails is not None and r0 < c.thumbnails.shape[-1]:
            t = c.thumbnails.shape[-1]
            c.thumbnails[layer, :, r0:min(r0 + m, t)] = a[:, :t - r0, :t]

    def fold_values(self, attn_t: Any, layer: int, values_t: Any, ov: OVCircuit) -> None:
        """What the head moves from each key: value norms after W_O, folded into c.values."""
        t0 = time.perf_counter()
        assert self.c.values is not None
        if layer not in self.grams:
            self.grams[layer] = ov.gram()
        st = value_stats(attn_t.detach()[0], values_t.detach()[0], self.grams[layer], ov.n_kv_heads, self.special)
        self.c.values.add(layer, st, self.special, first_layer=layer == 0)
        self.c.reduce_seconds += time.perf_counter() - t0

    def fold_activation(self, hidden_t: Any, layer: int) -> None:
        """The layer's output hidden states: largest |h| at token 0 against the other tokens'."""
        t0 = time.perf_counter()
        assert self.c.activations is not None
        self.c.activations.add(layer, *activation_stats(hidden_t.detach()[0]))
        self.c.reduce_seconds += time.perf_counter() - t0

    def _add_blocks(self, per_row: np.ndarray, r0: int) -> None:
        """per_row: [rows, d] summed over heads, for queries r0 ..; add into the (probe, query block) units."""
        assert self.block_sums is not None
        m, b = per_row.shape[0], self.s.query_block
        for k in range(r0 // b, -(-(r0 + m) // b)):
            lo, hi = max(k * b, r0) - r0, min((k + 1) * b, r0 + m) - r0
            self.block_sums[k, :per_row.shape[1]] += per_row[lo:hi].sum(0)

    def _rollout_step(self, fused: np.ndarray, layer: int) -> None:
        """Abnar & Zuidema 2020, streamed: R <- norm(a*A + (1-a)*I) @ R after every layer."""
        assert self.rollout is not None
        self.rollout = rollout_step(self.rollout, fused, self.ropts, causal=self.is_causal)
        c = self.c
        if self.display and c.rollout_rows is not None and c.second_rows is not None:
            c.rollout_rows[layer] = self.rollout[c.readout_index]
            c.second_rows[layer] = (self.rollout.mean(0) if c.second_index is None
                                    else self.rollout[c.second_index])

    def end_probe(self) -> None:
        """Close the probe's bootstrap units and its uniform-attention twin (the null baseline)."""
        assert self.probe is not None and self.block_sums is not None and self.rollout is not None
        n, b, d_max = self.probe.n_tokens, self.s.query_block, self.c.dist_pairs.shape[0]
        pairs = pair_counts(n, self.is_causal)  # [query, d]
        null = by_distance(uniform_map(n, self.is_causal), self.is_causal)[0]  # [query, d]
        lh = self.c.n_layers * self.c.n_heads
        self.c.dist_pairs[:n] += pairs.sum(0)
        for k in range(self.block_sums.shape[0]):
            rows = slice(k * b, (k + 1) * b)
            p = np.zeros(d_max)
            p[:n] = pairs[rows].sum(0) * lh
            ns = np.zeros(d_max)
            ns[:n] = null[rows].sum(0) * lh
            self.c.unit_sums.append(self.block_sums[k].copy())
            self.c.unit_pairs.append(p)
            self.c.null_unit_sums.append(ns)
        self.c.sink_rows += n - 1
        readout = (n - 1) if self.is_causal else 0
        self.c.rollout_first_share[self.probe.name] = float(self.rollout[readout, 0])
        if self.display:
            m = len(self.c.display_tokens)
            self.c.rollout = self.rollout[:m, :m].copy()
            self.display = False


def _value_sources(model: Any, mods: list[tuple[str, Any, int]], facts: ModelFacts) -> list[OVCircuit]:
    """One OV circuit per attention layer, or [] when any layer's layout is unknown."""
    root = attended_model(model)
    found = [find_ov(name, mod, root, facts.num_heads, facts.num_kv_heads) for name, mod, _ in mods]
    return [ov for ov in found if ov is not None] if all(found) else []


def _no_values_reason(facts: ModelFacts) -> str:
    return (f"attn-report does not know where this architecture ({facts.architecture}) keeps its value and "
            "output projections, so value-weighted attention is not available")


def sink_applies(facts: ModelFacts) -> bool:
    """A first-token sink is scored unless token 0 is an encoder's special token ([CLS])."""
    return facts.is_causal or not facts.first_token_special


def _prefix_len(probe: TokenizedProbe) -> int:
    """Tokens before the first random block of the induction probe (BOS or [CLS], if any)."""
    assert probe.period is not None
    ids, p = probe.input_ids, probe.period
    for s in range(len(ids) - 2 * p + 1):
        if ids[s:s + p] == ids[s + p:s + 2 * p]:
            return s
    return 0


def return_freed_blocks() -> None:
    """Make glibc hand freed blocks of 1 MiB and more back to the system at once (Linux, glibc only).

    glibc raises its mmap threshold each time a large mmapped block is freed, so later blocks of the
    fold's size come from the heap and stay resident after they are freed: about 170 MiB of a 600 MiB
    peak for SmolLM2 at n = 2048 (bench/capture_memory.py --breakdown). A fixed threshold keeps them
    mmapped. Elsewhere this does nothing.
    """
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD = 1 MiB
    except (OSError, AttributeError):
        pass


def _no_cache_kwargs(model: Any) -> dict[str, Any]:
    """{"use_cache": False} where the forward takes it: one pass per probe needs no KV cache, which would
    otherwise grow with n beside the map."""
    import inspect

    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in params else {}


def capture(loaded: LoadedModel, probes: list[TokenizedProbe], settings: Settings) -> Captured:
    """Run every probe through the model, one at a time, reducing attention layer by layer."""
    import torch

    facts = loaded.facts
    mods = attention_modules(loaded.model)
    if not mods:
        raise UnsupportedModelError(f"this architecture ({facts.architecture}) exposes no attention maps",
                                    "attn-report needs a model whose attention modules return their weights")
    n_layers = len(mods)
    d_max = max(p.n_tokens for p in probes)
    red = _Reducer(n_layers, facts.num_heads, d_max, facts.is_causal, facts.dtype, settings,
                   display_probe_name(probes), sink_applies=sink_applies(facts))
    seen: list[int] = []

    def make_hook(layer: int, index: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            weights = output[index] if isinstance(output, tuple) and len(output) > index else None
            if weights is None:
                raise UnsupportedModelError(
                    f"layer {layer} returned no attention weights",
                    "the model must run with eager attention; its attention module may not support it")
            red.fold(weights, layer)
            if values:
                red.fold_values(weights, layer, pending.pop(layer), values[layer])
            seen.append(layer)
        return hook

    values = _value_sources(loaded.model, mods, facts)
    red.c.values = ValueSums(n_layers, facts.num_heads, reason="" if values else _no_values_reason(facts))
    blocks = layer_modules(loaded.model)
    red.c.activations = ActivationSums(n_layers, reason="" if len(blocks) == n_layers else (
        f"this architecture ({facts.architecture}) does not expose its layers' hidden states to attn-report"))
    pending: dict[int, Any] = {}  # layer -> value vectors of the current forward pass

    def make_value_hook(layer: int, ov: OVCircuit) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            out = output[0] if isinstance(output, tuple) else output
            pending[layer] = out[..., ov.value_slice] if ov.value_slice is not None else out
        return hook

    def make_block_hook(layer: int, index: int) -> Any:
        def hook(module: Any, args: Any, output: Any) -> None:
            out = output[index] if isinstance(output, tuple) else output
            red.fold_activation(out, layer)
        return hook

    handles = [m.register_forward_hook(make_hook(i, idx)) for i, (_, m, idx) in enumerate(mods)]
    for i, ov in enumerate(values):
        handles.append(ov.value_module.register_forward_hook(make_value_hook(i, ov)))
    if not red.c.activations.reason:
        handles += [m.register_forward_hook(make_block_hook(i, idx)) for i, (_, m, idx) in enumerate(blocks)]
    run = attended_model(loaded.model)
    extra = _no_cache_kwargs(run)
    return_freed_blocks()
    try:
        for probe in probes:
            red.start_probe(probe)
            seen.clear()
            ids = torch.tensor([probe.input_ids], device=facts.device)
            t0 = time.perf_counter()
            with torch.inference_mode():
                run(input_ids=ids, attention_mask=torch.ones_like(ids), **extra)
            red.c.forward_seconds += time.perf_counter() - t0
            if len(seen) != n_layers:
                raise UnsupportedModelError(
                    f"captured attention from {len(seen)} of {n_layers} layers on probe '{probe.name}'",
                    "this architecture routes attention in a way attn-report does not support yet")
            red.end_probe()
            log.info("probe %s (%d tokens) done", probe.name, probe.n_tokens)
    finally:
        for h in handles:
            h.remove()
    red.c.forward_seconds -= red.c.reduce_seconds  # hooks ran inside the forward pass
    return red.c
