"""Bench (a): peak memory and wall time of the tool's streaming capture against the naive path, side by side.

For each n and each path a fresh Python process loads the model, takes its resident memory as the
baseline, resets the kernel's high-water mark, runs one probe of n tokens and reports:

- tool:  `reporter.capture.capture` on the probe (each layer's map is reduced inside a forward hook,
         a block of query rows at a time, and dropped);
- naive: one forward pass with `output_attentions=True` (eager), every layer's map kept as the model
         returns it, then the same statistics from the kept maps (the checks, family scores, entropy, sink
         share, distance sums and bootstrap blocks, rollout; the scorer functions of reporter/scores.py,
         reporter/distance.py and reporter/rollout.py). The capture's value-weighted and activation
         statistics need more than the maps and are not redone, so the naive wall time is a lower
         bound. The maps are read layer by layer from the returned tuple, not stacked into one more
         L x H x n x n copy, so the naive peak is a lower bound of what stacking costs. Both paths run
         with the allocator option the capture sets (freed blocks >= 1 MiB go back to the system).

Columns: peak RSS of the whole process (ru_maxrss), RSS after loading the model and one 16-token
warm-up pass (every weight page resident), peak above that baseline during the run, and wall time of
the run (forward + statistics). Goal at n = 2048: tool peak <= 1.5 GB and naive/tool peak >= 4.
Wall times depend on what else the machine runs; the load average is printed with the table.

Run: .venv/bin/python bench/capture_memory.py [--sizes 512 1024 2048] [--model smollm2-135m]
     .venv/bin/python bench/capture_memory.py --breakdown 2048   # where the tool's peak goes, per fold step
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOAL_PEAK_MIB = 1.5e9 / 2**20  # 1.5 GB at n = 2048 (1431 MiB); every figure here is in MiB
GOAL_RATIO = 4.0


# --- memory readings (Linux) ---------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def rss_mb() -> float:
    return _status_kb("VmRSS") / 1024


def hwm_mb() -> float:
    """Peak RSS since the last reset_hwm() (VmHWM)."""
    return _status_kb("VmHWM") / 1024


def reset_hwm() -> None:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- the probe -----------------------------------------------------------------------------------------------

def long_probe(tokenizer: Any, n: int) -> Any:
    """A natural-text probe of exactly n tokens: the bundled probes joined and repeated, then cut."""
    from reporter.probes import Probe, bundled_probes, tokenize_probes

    text = "\n\n".join(p.text for p in bundled_probes())
    while len(tokenizer(text)["input_ids"]) < n:
        text = text + "\n\n" + text
    probes, _ = tokenize_probes([Probe("bench_long", "long", text)], tokenizer, max_tokens=n,
                                include_induction=False, seed=0)
    assert probes[0].n_tokens == n, probes[0].n_tokens
    return probes[0]


# --- the two paths -------------------------------------------------------------------------------------------

def run_tool(loaded: Any, probe: Any) -> dict[str, float]:
    from reporter.capture import capture
    from reporter.settings import DEFAULT_SETTINGS

    c = capture(loaded, [probe], DEFAULT_SETTINGS)
    return {"forward_s": c.forward_seconds, "stats_s": c.reduce_seconds,
            "check_sink": float(c.sink_sum.sum())}


def naive_statistics(maps: tuple[Any, ...], probe: Any, is_causal: bool) -> dict[str, Any]:
    """The capture's statistics computed from kept maps, with the same pure functions."""
    import dataclasses

    import numpy as np

    from reporter.distance import by_distance
    from reporter.rollout import fuse_heads, rollout_step
    from reporter.scores import FAMILIES, SCORERS, MapContext, row_entropy
    from reporter.settings import DEFAULT_SETTINGS as s

    n_layers, n_heads, n = len(maps), maps[0].shape[1], probe.n_tokens
    ctx = MapContext(is_causal, np.array(probe.is_delimiter, dtype=bool), s, None, 0, True)
    fam = np.zeros((n_layers, n_heads, len(FAMILIES)))
    ent = np.zeros((n_layers, n_heads))
    sink = np.zeros((n_layers, n_heads))
    dist = np.zeros((n_layers, n_heads, n))
    r = np.eye(n)
    blocks = np.zeros((-(-n // s.query_block), n))
    for layer, t in enumerate(maps):  # [1, heads, query, key] each, all of them alive
        a = t.detach()[0].float().cpu().numpy()  # [heads, query, key]
        # the capture's checks: finite, rows sum to 1, nothing above the diagonal
        if not np.isfinite(a).all() or np.abs(a.sum(-1) - 1).max() > 1e-3 or np.triu(a, k=1).max() > 1e-6:
            raise RuntimeError(f"layer {layer}: the map fails the capture's checks")
        row_ent = row_entropy(a)  # [heads, query], computed once as the capture does
        lctx = dataclasses.replace(ctx, entropy=row_ent)
        for f, name in enumerate(FAMILIES):
            fam[layer, :, f] = SCORERS[name](a, lctx).sum(-1)
        ent[layer] = row_ent[:, 1:].sum(-1)
        sink[layer] = a[:, 1:, 0].sum(-1)
        by_d = by_distance(a, is_causal)  # [heads, query, d]
        dist[layer] = by_d.sum(1)
        per_row = by_d.sum(0)
        for k in range(blocks.shape[0]):  # the bootstrap units: sums per block of query rows
            blocks[k] += per_row[k * s.query_block:(k + 1) * s.query_block].sum(0)
        del by_d, per_row
        r = rollout_step(r, fuse_heads(a, s.rollout_head_fusion), s.rollout_options())  # type: ignore[arg-type]
    return {"check_sink": float(sink.sum()), "rollout_last": float(r[-1, 0])}


def run_naive(loaded: Any, probe: Any) -> dict[str, float]:
    import torch

    ids = torch.tensor([probe.input_ids])
    t0 = time.perf_counter()
    with torch.inference_mode():
        out = loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    t1 = time.perf_counter()
    maps = out.attentions  # L x [1, H, n, n], every one kept
    stats = naive_statistics(maps, probe, loaded.facts.is_causal)
    t2 = time.perf_counter()
    return {"forward_s": t1 - t0, "stats_s": t2 - t1, "check_sink": stats["check_sink"]}


def warm_up(loaded: Any) -> None:
    """One short forward pass, so every weight page is resident before the baseline is read (safetensors
    are memory-mapped and fault in on first use) and one-off allocations are not charged to the run."""
    import gc

    import torch

    ids = torch.tensor([[1] * 16])
    with torch.inference_mode():
        loaded.model(input_ids=ids, attention_mask=torch.ones_like(ids))
    gc.collect()


def child(path: str, n: int, model: str) -> None:
    """One configuration in this (fresh) process; prints one JSON line."""
    from reporter.capture import return_freed_blocks
    from reporter.cli import _quiet_libraries
    from reporter.load import load_model

    _quiet_libraries()
    return_freed_blocks()  # the capture sets this allocator option itself; the naive path gets it too
    loaded = load_model(model)
    probe = long_probe(loaded.tokenizer, n)
    warm_up(loaded)
    base = rss_mb()
    peak_load = maxrss_mb()
    reset_hwm()
    t0 = time.perf_counter()
    res = run_tool(loaded, probe) if path == "tool" else run_naive(loaded, probe)
    wall = time.perf_counter() - t0
    print(json.dumps({"path": path, "n": n, "base_mb": base, "load_peak_mb": peak_load, "run_peak_mb": hwm_mb(),
                      "maxrss_mb": maxrss_mb(), "wall_s": wall, **res}))


# --- where the tool's peak goes ------------------------------------------------------------------------------

def breakdown(n: int, model: str) -> None:
    """Sample RSS at each step of one fold and inside the model's forward, to see what sets the tool's peak.

    Wraps the reducer's fold and the scorer/distance functions it calls (this process only, for the
    measurement); tracemalloc gives numpy's own peak inside each fold, the RSS high-water mark the total.
    """
    import tracemalloc

    import reporter.capture as cap
    from reporter.cli import _quiet_libraries
    from reporter.load import load_model

    _quiet_libraries()
    loaded = load_model(model)
    probe = long_probe(loaded.tokenizer, n)
    warm_up(loaded)
    base = rss_mb()
    base_heap = malloc_info_mb()
    steps: dict[str, float] = {}
    overall = [0.0]  # highest RSS seen, kept across the resets below

    def start() -> float:
        overall[0] = max(overall[0], hwm_mb())
        reset_hwm()
        return rss_mb()

    def stop(name: str, before: float) -> None:
        steps[name] = max(steps.get(name, 0.0), hwm_mb() - before)

    def wrap(mod: Any, name: str) -> None:
        fn = getattr(mod, name)

        def inner(*a: Any, **k: Any) -> Any:
            before = start()
            out = fn(*a, **k)
            stop(name, before)
            return out
        setattr(mod, name, inner)

    for name in ("by_distance", "row_entropy", "fuse_heads", "rollout_step"):
        wrap(cap, name)
    scorers = dict(cap.SCORERS)
    for fam, fn in scorers.items():
        def scored(a: Any, ctx: Any, _fn: Any = fn, _fam: str = fam) -> Any:
            before = start()
            out = _fn(a, ctx)
            stop("score_" + _fam, before)
            return out
        cap.SCORERS[fam] = scored  # type: ignore[index]
    fold = cap._Reducer.fold
    check = cap._Reducer.check
    at_fold: list[float] = []
    np_peaks: list[float] = []

    def timed_check(self: Any, *a: Any) -> None:
        before = start()
        check(self, *a)
        stop("check", before)

    heap: list[tuple[float, float, float]] = []

    def sampled_fold(self: Any, attn_t: Any, layer: int) -> None:
        at_fold.append(rss_mb() - base)  # the model's own live tensors when the hook fires
        heap.append(malloc_info_mb())
        tracemalloc.start()
        fold(self, attn_t, layer)
        np_peaks.append(tracemalloc.get_traced_memory()[1] / 2**20)
        tracemalloc.stop()

    cap._Reducer.fold = sampled_fold  # type: ignore[method-assign]
    cap._Reducer.check = timed_check  # type: ignore[method-assign]
    fold_values = getattr(cap._Reducer, "fold_values", None)  # value-weighted attention, where capture has it
    if fold_values is not None:
        def timed_values(self: Any, *a: Any) -> None:
            before = start()
            fold_values(self, *a)
            stop("fold_values", before)
        setattr(cap._Reducer, "fold_values", timed_values)  # noqa: B010 (the attribute may not exist)
    reset_hwm()
    cap.capture(loaded, [probe], _settings())
    total = max(overall[0], hwm_mb()) - base
    heads = loaded.facts.num_heads
    one_map = heads * n * n * 4 / 2**20
    print(f"n = {n}: one layer's map [{heads}, {n}, {n}] fp32 = {one_map:.0f} MiB; model loaded: {base:.0f} MiB RSS")
    print(f"peak above the loaded model during capture: {total:.0f} MiB ({total / one_map:.1f} maps)")
    print(f"RSS above the loaded model when the hook fires: max {max(at_fold):.0f} MiB; of it the map itself "
          f"{one_map:.0f} MiB")
    h0, h1 = base_heap, max(heap, key=lambda t: t[0] + t[1])
    print(f"  glibc heap when the hook fires (max over layers) vs after warm-up: in use {h1[0]:.0f} vs {h0[0]:.0f} MiB "
          f"freed but kept {h1[1]:.0f} vs {h0[1]:.0f} MiB, "
          f"mmapped blocks {h1[2]:.0f} vs {h0[2]:.0f} MiB")
    print(f"numpy peak inside one fold (tracemalloc): max {max(np_peaks):.0f} MiB ({max(np_peaks) / one_map:.1f} maps)")
    print("peak RSS growth inside each step of fold (MiB, above RSS at the step's start):")
    for name, mb in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<22} {mb:>7.0f}  ({mb / one_map:.1f} maps)")


def malloc_info_mb() -> tuple[float, float, float]:
    """glibc's heap: (bytes in use, freed but not returned to the system, large blocks mmapped), in MiB."""
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(f, ctypes.c_size_t) for f in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = MallInfo2
    m = libc.mallinfo2()
    return m.uordblks / 2**20, m.fordblks / 2**20, m.hblkhd / 2**20


def _settings() -> Any:
    from reporter.settings import DEFAULT_SETTINGS

    return DEFAULT_SETTINGS


# --- the table -----------------------------------------------------------------------------------------------

def measure(path: str, n: int, model: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, __file__, "--child", path, "--n", str(n), "--model", model]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if res.returncode != 0:
        raise SystemExit(f"{path} at n={n} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main(sizes: list[int], model: str) -> None:
    print(f"capture memory, {model}, one probe of n tokens, each configuration in a fresh process "
          f"(load average {os.getloadavg()[0]:.1f}, {os.cpu_count()} CPUs)")
    print(f"{'n':>5} {'path':<6} {'peak MiB':>8} {'loaded MiB':>10} {'above MiB':>9} {'fwd s':>6} {'stats s':>7} "
          f"{'wall s':>7}")
    rows: dict[int, dict[str, dict[str, Any]]] = {}
    for n in sizes:
        for path in ("tool", "naive"):
            r = measure(path, n, model)
            rows.setdefault(n, {})[path] = r
            above = r["run_peak_mb"] - r["base_mb"]
            print(f"{n:>5} {path:<6} {r['maxrss_mb']:>8.0f} {r['base_mb']:>10.0f} {above:>9.0f} {r['forward_s']:>6.1f}"
                  f" {r['stats_s']:>7.1f} {r['wall_s']:>7.1f}", flush=True)
        t, v = rows[n]["tool"], rows[n]["naive"]
        if abs(t["check_sink"] - v["check_sink"]) > 1e-3 * max(1.0, abs(v["check_sink"])):
            print(f"  warning: the two paths disagree on the sink sum ({t['check_sink']:.4f} vs {v['check_sink']:.4f})")
    print()
    print(f"{'n':>5} {'naive/tool peak':>15} {'naive/tool above':>16} {'naive/tool wall':>15}")
    for n, r in rows.items():
        t, v = r["tool"], r["naive"]
        above_t = max(t["run_peak_mb"] - t["base_mb"], 1.0)
        print(f"{n:>5} {v['maxrss_mb'] / t['maxrss_mb']:>15.2f} {(v['run_peak_mb'] - v['base_mb']) / above_t:>16.2f} "
              f"{v['wall_s'] / t['wall_s']:>15.2f}")
    if 2048 in rows:
        t, v = rows[2048]["tool"], rows[2048]["naive"]
        ratio = v["maxrss_mb"] / t["maxrss_mb"]
        ok_peak, ok_ratio = t["maxrss_mb"] <= GOAL_PEAK_MIB, ratio >= GOAL_RATIO
        print(f"goal at n=2048: tool peak {t['maxrss_mb']:.0f} MiB <= 1.5 GB ({GOAL_PEAK_MIB:.0f} MiB): "
              f"{'met' if ok_peak else 'missed'}; naive/tool peak {ratio:.2f} >= {GOAL_RATIO:.0f}: "
              f"{'met' if ok_ratio else 'missed'}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--child", choices=["tool", "naive"], help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--breakdown", type=int, metavar="N", help="explain the tool's peak at n = N")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.n, args.model)
    elif args.breakdown:
        breakdown(args.breakdown, args.model)
    else:
        main(args.sizes, args.model)
