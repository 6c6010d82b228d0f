"""Bench (c): how long each protocol needs for a given 95% CI half-width of γ, side by side in one run.

- ours: the tool's capture on the bundled probes (natural text, longest cut to --max-tokens) and its
  distance analysis: every query row of every probe enters the U curve, and the CI is the bootstrap
  over (probe, query block) units that the report prints. Timed: capture + analyze_distance.
- per-distance: the protocol of public attention-vs-distance scripts. For each distance d on a log grid
  inside the same fit window [d_min, d_max], K prompts of random tokens, one forward pass each
  (`output_attentions=True`): the prompt is a first token (BOS where the tokenizer adds one, else a
  random token, so the key read is never token 0) and d + 1 random tokens; A_k(d) is the last query's
  weight on the key d back, averaged over layers and heads. γ = −slope of log mean_k A_k(d) on log d;
  95% CI from 1000 bootstrap resamples of the prompts at each d. Timed: the forward passes and reads
  up to K, plus that bootstrap.

K doubles until the per-distance half-width is at most ours, then the smallest K reaching it is found
from the prompts already run; if the time budget runs out first, the last row extrapolates K and time
with half-width ∝ 1/√K (marked as extrapolated). The two protocols
estimate different things (natural text, all rows vs random tokens, last row); the bench compares
what each costs for a given precision, and prints both γ.

Run: .venv/bin/python bench/gamma_protocols.py [--model smollm2-135m] [--budget 600] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from typing import Any

import numpy as np

from reporter.settings import SEED

GOAL_RATIO = 10.0
N_BOOT = 1000


def ours(loaded: Any, max_tokens: int, settings: Any) -> dict[str, Any]:
    from reporter.analyze import analyze_distance, window_of_layers
    from reporter.capture import capture
    from reporter.probes import bundled_probes, tokenize_probes

    probes, _ = tokenize_probes(bundled_probes(), loaded.tokenizer, max_tokens=max_tokens, include_induction=True,
                                seed=settings.seed)
    t0 = time.perf_counter()
    c = capture(loaded, probes, settings)
    t_capture = time.perf_counter() - t0
    T = max(p.n_tokens for p in probes)
    dist = analyze_distance(c, T, settings, window_of_layers(loaded.facts, c.n_layers))
    seconds = time.perf_counter() - t0
    if dist.gamma is None or dist.gamma.ci95 is None:
        raise SystemExit(f"the tool measured no γ with a CI on the bundled probes: {dist.note}")
    lo, hi = dist.gamma.ci95
    return {"gamma": dist.gamma.value, "ci": (lo, hi), "half": (hi - lo) / 2, "seconds": seconds,
            "capture_s": t_capture, "fit_range": dist.gamma.fit_range, "T": T, "n_probes": len(probes),
            "n_units": len(c.unit_sums)}


def log_grid(d_min: int, d_max: int, n_points: int) -> list[int]:
    return sorted({int(round(x)) for x in np.geomspace(d_min, d_max, n_points)})


def fit_gamma(d: np.ndarray, a: np.ndarray) -> float:
    """−slope of log a on log d (the grid is already log-spaced, so no binning)."""
    slope, _ = np.polyfit(np.log(d), np.log(a), 1)
    return float(-slope)


def bootstrap_half_width(samples: np.ndarray, d: np.ndarray, seed: int) -> tuple[float, tuple[float, float], float]:
    """samples [K, distances]: γ of the means, and the 95% percentile CI over resampled prompts per distance."""
    k, g = samples.shape
    rng = np.random.default_rng(seed)
    gammas = np.empty(N_BOOT)
    cols = np.arange(g)[None, :]
    for b in range(N_BOOT):
        idx = rng.integers(0, k, (k, g))  # prompts at different d are independent draws: resample each column
        gammas[b] = fit_gamma(d, samples[idx, cols].mean(0))
    lo, hi = np.percentile(gammas, [2.5, 97.5])
    return fit_gamma(d, samples.mean(0)), (float(lo), float(hi)), float(hi - lo) / 2


class PerDistance:
    """Random-token prompts, one forward pass per (distance, prompt), read as public scripts do."""

    def __init__(self, loaded: Any, grid: list[int], seed: int) -> None:
        import torch

        self.torch = torch
        self.model = loaded.model
        self.grid = grid
        tok = loaded.tokenizer
        special = set(getattr(tok, "all_special_ids", []) or [])
        vocab = int(getattr(tok, "vocab_size", 0) or len(tok))
        self.lo, self.vocab, self.special = min(1000, vocab // 4), vocab, special
        bos = getattr(tok, "bos_token_id", None)
        self.bos = bos if loaded.facts.bos_added else None
        self.rng = np.random.default_rng(seed)
        self.rows: list[np.ndarray] = []  # one [distances] row per prompt index k
        self.seconds: list[float] = []  # time of row k (all its forward passes)

    def _random(self, n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            t = int(self.rng.integers(self.lo, self.vocab))
            if t not in self.special:
                out.append(t)
        return out

    def add_prompts(self, k_total: int) -> None:
        torch = self.torch
        while len(self.rows) < k_total:
            t0 = time.perf_counter()
            row = np.empty(len(self.grid))
            for j, d in enumerate(self.grid):
                first = [self.bos] if self.bos is not None else self._random(1)
                ids = torch.tensor([first + self._random(d + 1)])
                with torch.inference_mode():
                    out = self.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
                last = ids.shape[1] - 1
                row[j] = float(torch.stack([a[0, :, last, last - d].float() for a in out.attentions]).mean())
            self.rows.append(row)
            self.seconds.append(time.perf_counter() - t0)


def main(model: str, max_tokens: int, budget: float, n_grid: int, k_start: int) -> None:
    import torch

    from reporter.cli import _quiet_libraries
    from reporter.load import load_model
    from reporter.settings import DEFAULT_SETTINGS

    _quiet_libraries()
    torch.manual_seed(SEED)
    loaded = load_model(model)
    o = ours(loaded, max_tokens, DEFAULT_SETTINGS)
    d_min, d_max = o["fit_range"]
    grid = log_grid(d_min, d_max, n_grid)
    print(f"γ protocols, {model} (load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    print(f"ours: {o['n_probes']} bundled probes (T = {o['T']}), {o['n_units']} bootstrap units, fit window "
          f"[{d_min}, {d_max}]: γ = {o['gamma']:.3f}, 95% CI [{o['ci'][0]:.3f}, {o['ci'][1]:.3f}], "
          f"half-width {o['half']:.4f}, {o['seconds']:.1f} s (capture {o['capture_s']:.1f} s)")
    print(f"per-distance: {len(grid)} distances {grid}, prompts of d + 2 tokens, one forward pass each")
    print(f"{'K':>5} {'passes':>6} {'γ':>7} {'95% CI':>17} {'half-width':>10} {'seconds':>8} {'vs ours':>8}")
    pd = PerDistance(loaded, grid, SEED)
    d = np.array(grid, dtype=np.float64)
    k, spent, last = k_start, 0.0, None
    while True:
        pd.add_prompts(k)
        t0 = time.perf_counter()
        g, ci, half = bootstrap_half_width(np.array(pd.rows), d, SEED)
        spent = sum(pd.seconds) + time.perf_counter() - t0
        last = (k, g, ci, half, spent)
        print(f"{k:>5} {k * len(grid):>6} {g:>7.3f} [{ci[0]:>7.3f}, {ci[1]:>7.3f}] {half:>10.4f} {spent:>8.1f} "
              f"{spent / o['seconds']:>7.1f}x", flush=True)
        if half <= o["half"]:
            break
        per_k = sum(pd.seconds) / k
        if spent + per_k * k > budget:  # doubling again would overrun the budget
            break
        k *= 2
    k, g, ci, half, spent = last
    if half <= o["half"]:
        # the doubling overshoots: the smallest K' <= K that already reaches our half-width, from the
        # prompts already run (no new forward passes; only its own bootstrap is charged)
        for k2 in range(max(2, k // 2 + 1), k + 1):
            t0 = time.perf_counter()
            g, ci, half = bootstrap_half_width(np.array(pd.rows[:k2]), d, SEED)
            if half <= o["half"]:
                spent = sum(pd.seconds[:k2]) + time.perf_counter() - t0
                print(f"{k2:>5} {k2 * len(grid):>6} {g:>7.3f} [{ci[0]:>7.3f}, {ci[1]:>7.3f}] {half:>10.4f} "
                      f"{spent:>8.1f} {spent / o['seconds']:>7.1f}x  <- smallest K reaching our half-width")
                break
        t_theirs, label = spent, "measured"
    else:
        k_need = math.ceil(k * (half / o["half"]) ** 2)
        t_theirs, label = spent * k_need / k, f"extrapolated (half-width ∝ 1/√K, K ≈ {k_need})"
        print(f"{k_need:>5} {k_need * len(grid):>6} {'':>7} {'':>17} {o['half']:>10.4f} {t_theirs:>8.1f} "
              f"{t_theirs / o['seconds']:>7.1f}x  <- {label}")
    ratio = t_theirs / o["seconds"]
    verdict = "met" if ratio >= GOAL_RATIO else "missed"
    print(f"same half-width ({o['half']:.4f}): ours {o['seconds']:.1f} s, per-distance {t_theirs:.1f} s ({label}); "
          f"ours takes 1/{ratio:.1f} of the time: goal <= 1/{GOAL_RATIO:.0f} {verdict}")


if __name__ == "__main__":
    from reporter.pipeline import DEFAULT_MAX_TOKENS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="longest probe of our protocol")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds the per-distance protocol may use")
    ap.add_argument("--grid", type=int, default=12, help="distances on the log grid")
    ap.add_argument("--quick", action="store_true", help="--max-tokens 512 --budget 120 --grid 8")
    args = ap.parse_args()
    if args.quick:
        args.max_tokens, args.budget, args.grid = 512, 120.0, 8
    main(args.model, args.max_tokens, args.budget, args.grid, k_start=4)
