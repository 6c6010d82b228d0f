"""Runs the stages in order (load → probes → capture → analyze) and times each one."""

from __future__ import annotations

import dataclasses
import logging
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reporter import __version__
from reporter.report import Environment, Report, RunStats
from reporter.settings import Settings

log = logging.getLogger(__name__)
DEFAULT_MAX_TOKENS = 1024


@dataclass(frozen=True)
class RunOptions:
    model: str
    probes_file: Path | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_tokens_given: bool = False  # the user asked for max_tokens (else it is our default)
    device: str = "cpu"
    device_map: str | None = None  # accelerate's placement ("auto"); then `device` stays cpu
    dtype: str = "float32"
    revision: str | None = None
    trust_remote_code: bool = False


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports kilobytes, macOS bytes)."""
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return ru / (1024 * 1024) if sys.platform == "darwin" else ru / 1024


def environment(seed: int) -> Environment:
    import numpy
    import torch
    import transformers

    from reporter.probes import PROBE_SET_VERSION

    return Environment(
        python=platform.python_version(), torch=torch.__version__, transformers=transformers.__version__,
        numpy=numpy.__version__, attn_report=__version__, platform=f"{platform.system()} {platform.machine()}",
        seed=seed, probe_set=PROBE_SET_VERSION,
    )


def _rollout_position_notices(pos: int | None, is_causal: bool, probes: list[Any]) -> list[str]:
    """Say so when --rollout-position cannot be followed as asked (the capture clamps it)."""
    from reporter.probes import display_probe_name

    if pos is None:
        return []
    if not is_causal:
        return [f"--rollout-position {pos} is for decoders; this encoder's second readout is the mean over "
                "positions, so it was not used."]
    name = display_probe_name(probes)
    n = next(p.n_tokens for p in probes if p.name == name)
    if pos >= n:
        return [f"--rollout-position {pos} is past the end of the probe shown ('{name}', {n} tokens); "
                f"the last position, {n - 1}, is followed instead."]
    return []


def run(opts: RunOptions, settings: Settings) -> Report:
    """The whole analysis for one model. Raises AttnReportError subclasses on bad input."""
    import torch

    from reporter.analyze import analyze
    from reporter.capture import capture
    from reporter.load import load_model
    from reporter.probes import bundled_probes, read_probe_file, tokenize_probes

    torch.manual_seed(settings.seed)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    # Read the user's probes before the slow model load, so a bad file fails fast.
    raw = read_probe_file(opts.probes_file) if opts.probes_file else bundled_probes()
    loaded = load_model(opts.model, device=opts.device, dtype=opts.dtype, revision=opts.revision,
                        trust_remote_code=opts.trust_remote_code, device_map=opts.device_map,
                        max_tokens=opts.max_tokens, texts=[p.text for p in raw])
    seconds["load"] = time.perf_counter() - t
    peaks = {"load": peak_rss_mb()}
    log.info("loaded %s (%d layers x %d heads)", loaded.facts.model_id, loaded.facts.num_layers,
             loaded.facts.num_heads)

    t = time.perf_counter()
    limit = opts.max_tokens
    notices: list[str] = []
    if loaded.facts.device_map is not None:
        notices.append(f"--device-map {loaded.facts.device_map}: accelerate placed the weights on "
                       f"{', '.join(loaded.facts.devices)}; inputs start on {loaded.facts.device}.")
    if loaded.facts.is_encoder_decoder:
        notices.append("Encoder-decoder model: the encoder's self-attention is analysed; decoder self-attention and "
                       "cross-attention are not.")
    pos_limit = loaded.facts.max_position_embeddings
    if pos_limit and limit > pos_limit:
        if opts.max_tokens_given:
            notices.append(f"--max-tokens {limit} is past the model's position limit; using {pos_limit}.")
        limit = pos_limit
    probes, more = tokenize_probes(raw, loaded.tokenizer, max_tokens=limit, include_induction=True,
                                   seed=settings.seed)
    notices += more
    notices += _rollout_position_notices(settings.rollout_position, loaded.facts.is_causal, probes)
    seconds["probes"] = time.perf_counter() - t
    peaks["probes"] = peak_rss_mb()

    captured = capture(loaded, probes, settings)
    seconds["forward"] = captured.forward_seconds
    seconds["capture_reduce"] = captured.reduce_seconds
    peaks["capture"] = peak_rss_mb()

    t = time.perf_counter()
    report = analyze(captured, loaded.facts, probes, notices, environment(settings.seed), settings)
    seconds["analyze"] = time.perf_counter() - t
    peaks["analyze"] = peak_rss_mb()
    return dataclasses.replace(report, run=RunStats({k: round(v, 2) for k, v in seconds.items()},
                                                    round(peak_rss_mb(), 1),
                                                    {k: round(v, 1) for k, v in peaks.items()}))
