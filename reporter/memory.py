"""Before loading: how much memory a run needs (weights + attention workspace) and whether it fits."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reporter.errors import ModelLoadError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Peak memory of capturing one layer, in units of that layer's fp32 map [heads, n, n]: the model's own
# map and eager-attention temporaries plus the reduction's (which folds blocks of query rows).
# bench/capture_memory.py --breakdown measures 3.0 maps for SmolLM2-135M at n = 2048; 5 leaves a margin
# for architectures whose attention keeps more temporaries.
WORKSPACE_MAPS = 5
# Architectures whose MLP is two matrices (up, down); the others here are gated (gate, up, down).
_PLAIN_MLP_TYPES = {
    "gpt2", "bert", "roberta", "distilbert", "opt", "gpt_neo", "gpt_neox", "gptj", "bloom", "xlm-roberta",
    "electra", "albert", "camembert", "biogpt", "xglm", "falcon", "mpt", "starcoder2", "phi",
}


@dataclass(frozen=True)
class Footprint:
    """What a run needs in bytes, and where the parameter count came from."""

    n_params: int
    params_source: str  # "safetensors headers" or "config"
    dtype: str
    weights: int  # parameters x bytes per parameter at the run's dtype
    n_tokens: int  # the longest input the estimate assumes
    workspace: int  # capturing one layer at n_tokens, plus a KV cache (kept by models that ignore use_cache)

    @property
    def total(self) -> int:
        return self.weights + self.workspace


def safetensors_params(folder: Path) -> int | None:
    """Parameters in the folder's *.safetensors files, read from their headers (no weights are read).

    `lm_head.*` is left out: attn-report loads the base model, which has no language-model head.
    """
    index = folder / "model.safetensors.index.json"
    try:
        if index.is_file():  # sharded: only the shards the index names (a repo may also ship a consolidated copy)
            files = [folder / f for f in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
        elif (folder / "model.safetensors").is_file():
            files = [folder / "model.safetensors"]
        else:
            files = sorted(folder.glob("*.safetensors"))
        if not files:
            return None
        total = 0
        for f in files:
            with open(f, "rb") as fh:
                (size,) = struct.unpack("<Q", fh.read(8))
                if size > f.stat().st_size - 8:  # a corrupt file: its header cannot be longer than the file
                    return None
                header = json.loads(fh.read(size))
            for name, info in header.items():
                if name == "__metadata__" or name.startswith("lm_head."):
                    continue
                count = 1
                for dim in info["shape"]:
                    count *= int(dim)
                total += count
    except (OSError, ValueError, KeyError, TypeError, AttributeError, OverflowError, struct.error):
        return None  # unreadable here; the config gives an estimate, and loading reports a broken file
    return total


def _get(cfg: Any, *names: str, default: int = 0) -> int:
    for name in names:
        v = getattr(cfg, name, None)
        if v:
            return int(v)
    return default


def config_params(cfg: Any) -> int:
    """Parameters of the base model estimated from its config: embeddings, attention and MLP matrices
    (biases and norms, well under 1% of a real model, are left out)."""
    h = _get(cfg, "hidden_size", "n_embd", "d_model")
    n_layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    n_heads = _get(cfg, "num_attention_heads", "n_head", "num_heads", default=1)
    n_kv = _get(cfg, "num_key_value_heads", default=n_heads)
    head_dim = _get(cfg, "head_dim", default=h // max(n_heads, 1))
    inter = _get(cfg, "intermediate_size", "n_inner", "ffn_dim", "d_ff", default=4 * h)
    n_experts = _get(cfg, "num_local_experts", "num_experts", "n_routed_experts", default=1)
    vocab = _get(cfg, "vocab_size")
    attn = h * n_heads * head_dim * 2 + h * n_kv * head_dim * 2  # q, o and k, v
    mlp = (2 if getattr(cfg, "model_type", "") in _PLAIN_MLP_TYPES else 3) * h * inter * n_experts
    positions = _get(cfg, "max_position_embeddings", "n_positions") * h if getattr(
        cfg, "model_type", "") in {"gpt2", "bert", "roberta", "opt", "gpt_neo", "xlm-roberta", "electra"} else 0
    return vocab * h + positions + n_layers * (attn + mlp)


def estimate_footprint(folder: Path | None, cfg: Any, dtype: str, n_tokens: int) -> Footprint:
    """Weights at `dtype` plus the attention workspace of one layer at `n_tokens` (and the KV cache)."""
    n = safetensors_params(folder) if folder is not None and folder.is_dir() else None
    source = "safetensors headers"
    if n is None:
        n, source = config_params(cfg), "config"
    size = DTYPE_BYTES[dtype]
    n_heads = _get(cfg, "num_attention_heads", "n_head", "num_heads", default=1)
    n_layers = _get(cfg, "num_hidden_layers", "n_layer", "num_layers")
    n_kv = _get(cfg, "num_key_value_heads", default=n_heads)
    head_dim = _get(cfg, "head_dim", default=_get(cfg, "hidden_size", "n_embd", "d_model") // max(n_heads, 1))
    maps = WORKSPACE_MAPS * n_heads * n_tokens * n_tokens * 4  # statistics are fp32 whatever the dtype
    kv_cache = 2 * n_layers * n_tokens * n_kv * head_dim * size
    return Footprint(n, source, dtype, n * size, n_tokens, maps + kv_cache)


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # cgroup v2 writes "max" for no limit


def host_available() -> int | None:
    """Bytes this process can still use on the host: MemAvailable, lowered to the cgroup's room if the
    process runs under a memory limit (containers report the host's memory in /proc/meminfo)."""
    avail: int | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < (1 << 60):
            room = max(0, limit - usage)
            avail = room if avail is None else min(avail, room)
    return avail


def accelerator_free() -> dict[str, int]:
    """Free bytes on each visible CUDA device ({} without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return {}
    return {f"cuda:{i}": int(torch.cuda.mem_get_info(i)[0]) for i in range(torch.cuda.device_count())}


def _rooms(device: str, device_map: str | None, fp: Footprint) -> list[tuple[int, int, str]]:
    """(bytes needed, bytes available, where) for each memory the run draws on; unknown ones are left out.

    The reduction always runs in host memory (maps are copied to numpy), so off the CPU the host must
    still hold the workspace while the device holds weights and workspace.
    """
    host = host_available()
    if device_map is not None:
        gpus = accelerator_free()
        if host is None and not gpus:
            return []
        out = [(fp.total, sum(gpus.values()) + (host or 0), " + ".join([*gpus, "cpu memory"]))]
        return out + ([(fp.workspace, host, "cpu memory")] if gpus and host is not None else [])
    if device == "cpu":
        return [(fp.total, host, "cpu memory")] if host is not None else []
    out = [(fp.workspace, host, "cpu memory")] if host is not None else []
    if device.startswith("cuda"):
        free = accelerator_free()
        key = device if ":" in device else "cuda:0"
        if key in free:
            out.insert(0, (fp.total, free[key], device))
    return out  # mps and others report no free memory: only the host is checked


def human_bytes(n: float) -> str:
    """1.2 GB, 340 MB, 50 kB (decimal units, as disks and `free -h --si` count)."""
    if n >= 1e9:
        return f"{n / 1e9:.1f} GB"
    return f"{n / 1e6:.0f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def check_fit(fp: Footprint, device: str, device_map: str | None) -> None:
    """Raise a one-line ModelLoadError, with the estimate and what to do, when the run cannot fit."""
    short = [(need, room, where) for need, room, where in _rooms(device, device_map, fp) if need > room]
    if not short:
        return
    need, room, where = short[0]
    hints = []
    if fp.dtype == "float32" and need == fp.total:
        hints.append("--dtype bfloat16 halves the weights")
    if fp.workspace > fp.weights / 4 or need == fp.workspace:
        hints.append(f"a lower --max-tokens shrinks the attention workspace (it grows with n², n = {fp.n_tokens})")
    if device_map is None and need == fp.total and accelerator_free():
        hints.append("--device-map auto spreads the model over the GPUs and cpu memory")
    if not hints:
        hints.append("run on a machine with more memory")
    n_params = f"{fp.n_params / 1e6:,.0f} M" if fp.n_params >= 1e6 else f"{fp.n_params:,}"
    capture = f"{human_bytes(fp.workspace)} to capture attention at {fp.n_tokens} tokens"
    what = (f"{human_bytes(fp.total)} ({n_params} parameters = {human_bytes(fp.weights)} at {fp.dtype}, plus "
            f"{capture})" if need == fp.total else capture)
    raise ModelLoadError(f"the model does not fit: the run needs about {what}, but {human_bytes(room)} is free "
                         f"on {where}",
                         "; ".join(hints))
