"""Benchmark of ``neurocert.similarity``: all-pairs speed, agreement and peak memory.

Usage::

    python benchmarks/bench_similarity.py            # full size (512 x 1000 x 10,000)
    python benchmarks/bench_similarity.py --quick    # smoke run (64 x 100 x 2,000), < 20 s
    python benchmarks/bench_similarity.py --out results.json --profile

What is measured (see benchmarks/README.md for the targets):

1. AUROC for all neuron x concept pairs, median of 5 timed calls (after 1 untimed
   warm-up call), against a per-pair ``sklearn.metrics.roc_auc_score`` loop timed on
   a random subset of pairs and extrapolated linearly to all pairs.
2. Count metrics (iou, precision, recall, accuracy with ``threshold=0.5``; iou with
   ``top_frac=0.005``), same protocol, against per-pair scikit-learn functions
   (subset, extrapolated) and a per-neuron numpy loop vectorised over concepts
   (subset of neurons, extrapolated).
3. Peak extra memory of one call, in a fresh subprocess per case, divided by the
   input size (activations + concepts bytes); measured with tracemalloc (numpy
   buffers are traced) and cross-checked with the RSS high-water mark.

The default JSON goes to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import pstats
import subprocess
import sys
import time
import tracemalloc
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm  # noqa: E402

import neurocert  # noqa: E402

HERE = Path(__file__).resolve().parent

SIZES = {
    "full": dict(n_samples=10_000, n_neurons=512, n_concepts=1_000, pair_subset=256,
                 loop_neurons=64, baseline_repeats=3),
    "quick": dict(n_samples=2_000, n_neurons=64, n_concepts=100, pair_subset=100,
                  loop_neurons=64, baseline_repeats=1),
}
REPEATS = 5
TARGETS = {
    "auroc_seconds": 1.0,
    "auroc_speedup_vs_sklearn": 1000.0,
    "count_seconds": 0.5,
    "memory_over_input": 2.0,
}
COUNT_CASES: list[tuple[str, dict[str, float]]] = [
    ("iou", {"threshold": 0.5}),
    ("precision", {"threshold": 0.5}),
    ("recall", {"threshold": 0.5}),
    ("accuracy", {"threshold": 0.5}),
    ("iou", {"top_frac": 0.005}),
]
SEED = 0


def case_label(metric: str, kw: dict[str, float]) -> str:
    if not kw:
        return metric
    (k, v), = kw.items()
    return f"{metric} {'thr' if k == 'threshold' else k}={v:g}"


def run_similarity(a, c, metric, kw):
    with warnings.catch_warnings():
        # accuracy with rare concepts warns (LowFrequencyAccuracyWarning) by design
        warnings.simplefilter("ignore")
        return neurocert.similarity(a, c, metric=metric, **kw)


def time_neurocert(a, c, metric, kw) -> tuple[dict[str, Any], np.ndarray]:
    """Median of REPEATS calls with the default BLAS threads, and with BLAS limited to 1."""
    times, vals = cm.time_repeated(lambda: run_similarity(a, c, metric, kw), REPEATS)
    res = {"neurocert_times_s": times, "neurocert_median_s": cm.median(times)}
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return res, vals
    with threadpool_limits(1, user_api="blas"):
        t1, _ = cm.time_repeated(lambda: run_similarity(a, c, metric, kw), REPEATS)
    res["neurocert_blas1_times_s"] = t1
    res["neurocert_blas1_median_s"] = cm.median(t1)
    return res, vals


def _blas1(case) -> str:
    t = case.get("neurocert_blas1_median_s")
    return "" if t is None else f"  [1 BLAS thread: {cm.fmt_s(t)}]"


# ---------------------------------------------------------------------------
# baselines


def _count_formula(metric: str, tp, f, c, s):
    """Count metric from tp, active mass f, concept mass c and total s (concept = truth)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "iou":
            return tp / (f + c - tp)
        if metric == "precision":
            return tp / f
        if metric == "recall":
            return tp / c
        if metric == "accuracy":
            return (s - f - c + 2 * tp) / s
    raise ValueError(metric)


def _neuron_active(col: np.ndarray, kw: dict[str, float]) -> np.ndarray:
    """Binarized neuron as neurocert defines it (threshold: a > t; top_frac: a >= k-th largest)."""
    if "threshold" in kw:
        return col > kw["threshold"]
    n = col.shape[0]
    k = max(1, math.ceil(kw["top_frac"] * n - 1e-12 * max(1.0, n)))
    t = np.partition(col, n - k)[n - k]
    return col >= t


def sklearn_auroc_subset(a, c, pairs, repeats):
    from sklearn.metrics import roc_auc_score

    cb = c >= 0.5

    def loop():
        return np.array([roc_auc_score(cb[:, k], a[:, j]) for j, k in pairs])

    times, vals = cm.time_repeated(loop, repeats, warmup=0)
    return times, vals


def sklearn_count_subset(a, c, pairs, metric, kw, repeats):
    """Per-pair sklearn calls; the binarized neurons are precomputed (untimed).

    ``zero_division=0`` never triggers here (every neuron fires, every concept occurs).
    """
    from sklearn.metrics import accuracy_score, jaccard_score, precision_score, recall_score

    fn = {
        "iou": lambda y, p: jaccard_score(y, p, zero_division=0),
        "precision": lambda y, p: precision_score(y, p, zero_division=0),
        "recall": lambda y, p: recall_score(y, p, zero_division=0),
        "accuracy": accuracy_score,
    }[metric]
    cb = c >= 0.5
    active = {j: _neuron_active(a[:, j], kw) for j in {j for j, _ in pairs}}

    def loop():
        return np.array([fn(cb[:, k], active[j]) for j, k in pairs], dtype=float)

    times, vals = cm.time_repeated(loop, repeats, warmup=0)
    return times, vals


def numpy_loop(a, c, neurons, metric, kw, repeats):
    """Loop over neurons; each is vectorised over all concepts with count_nonzero.

    Returns (setup seconds, per-neuron loop seconds (median), values for ``neurons``).
    The one-time setup (boolean concepts, their counts, a contiguous transposed copy of
    the activations) is timed separately so that only the loop is extrapolated.
    """
    n = a.shape[0]
    t0 = time.perf_counter()
    cb = c >= 0.5
    present = np.count_nonzero(cb, axis=0)
    at = np.ascontiguousarray(a.T)
    setup = time.perf_counter() - t0

    def loop():
        out = np.empty((len(neurons), cb.shape[1]))
        for i, j in enumerate(neurons):
            active = _neuron_active(at[j], kw)
            tp = np.count_nonzero(active[:, None] & cb, axis=0)
            out[i] = _count_formula(metric, tp, np.count_nonzero(active), present, n)
        return out

    times, vals = cm.time_repeated(loop, repeats, warmup=0)
    return setup, times, vals


# ---------------------------------------------------------------------------
# memory (subprocess worker)


def _measure_one(a, c, metric, kw) -> dict[str, Any]:
    gc.collect()
    # (1) RSS high-water mark: peak after the call minus the peak before it.
    # Preferred: VmHWM reset to the current RSS (clear_refs); fallback ru_maxrss.
    reset = cm.reset_peak_rss()
    rss_now = cm.current_rss_bytes()
    use_hwm = reset and cm.hwm_rss_bytes() is not None
    peak_fn = cm.hwm_rss_bytes if use_hwm else cm.maxrss_bytes
    max0 = peak_fn()
    out = run_similarity(a, c, metric, kw)
    max1 = peak_fn()
    out_bytes = out.nbytes
    del out
    gc.collect()

    # (2) tracemalloc: peak of traced allocations (numpy buffers included) during the call
    tracemalloc.start()
    base, _ = tracemalloc.get_traced_memory()
    out = run_similarity(a, c, metric, kw)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    return {
        "input_bytes": a.nbytes + c.nbytes,
        "output_bytes": out_bytes,
        "tracemalloc_peak_extra": peak - base,
        "rss_peak_extra": max1 - max0,
        "rss_method": "VmHWM after clear_refs reset" if use_hwm else "ru_maxrss",
        "rss_baseline_peak": max0,
        "rss_baseline_current": rss_now,
    }


def memory_worker(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Runs in a fresh interpreter: peak extra memory of one similarity call per case."""
    cases = spec["cases"]
    # warm-up on tiny data: lazy imports, BLAS buffers and thread start-up are not counted
    a0, c0, _ = cm.make_data(200, 4, 5, seed=1)
    for metric, kw in cases:
        run_similarity(a0, c0, metric, kw)
    del a0, c0
    a, c, _ = cm.make_data(spec["n_samples"], spec["n_neurons"], spec["n_concepts"], seed=SEED)
    out = []
    for metric, kw in cases:
        res = _measure_one(a, c, metric, kw)
        res["shared_process"] = len(cases) > 1
        out.append(res)
    return out


def measure_memory(sz: dict[str, int], cases: list[tuple[str, dict[str, float]]],
                   per_process: bool = True, parallel: int = 2) -> list[dict[str, Any]]:
    """Fresh interpreter per case (``parallel`` at a time; each measures only itself), or
    with ``per_process=False`` one interpreter measuring the cases one after the other
    (quick mode: saves start-up time; tracemalloc figures are unaffected, the RSS
    cross-check of later cases may be lower because freed heap memory is reused)."""
    groups = [[cs] for cs in cases] if per_process else [list(cases)]
    results: list[list[dict[str, Any]] | None] = [None] * len(groups)
    running: list[tuple[int, subprocess.Popen]] = []
    todo = list(enumerate(groups))

    def finish(i: int, proc: subprocess.Popen) -> None:
        out, err = proc.communicate()
        if proc.returncode != 0:
            results[i] = [{"error": (err.strip().splitlines() or ["failed"])[-1]}] * len(groups[i])
        else:
            results[i] = json.loads(out.strip().splitlines()[-1])

    while todo or running:
        while todo and len(running) < parallel:
            i, grp = todo.pop(0)
            spec = json.dumps({"cases": grp, **{k: sz[k] for k in
                                                ("n_samples", "n_neurons", "n_concepts")}})
            proc = subprocess.Popen([sys.executable, __file__, "--_memory-worker", spec],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            running.append((i, proc))
        i, proc = running.pop(0)
        finish(i, proc)
    return [r for grp in results for r in grp]  # type: ignore[union-attr]


# ---------------------------------------------------------------------------
# profiling


def profile_call(a, c, metric, kw, top: int = 15) -> str:
    pr = cProfile.Profile()
    pr.enable()
    run_similarity(a, c, metric, kw)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(top)
    return s.getvalue()


# ---------------------------------------------------------------------------
# main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 64 neurons x 100 concepts x 2,000 samples")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/out/bench_similarity[_quick].json)")
    ap.add_argument("--profile", action="store_true",
                    help="print a cProfile (by own time) of one call per case")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--_memory-worker", dest="memory_worker", default=None,
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_worker is not None:
        print(json.dumps(memory_worker(json.loads(args.memory_worker))))
        return 0

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    mode = "quick" if args.quick else "full"
    sz = SIZES[mode]
    out_path = args.out or HERE / "out" / f"bench_similarity{'_quick' if args.quick else ''}.json"
    t_start = time.perf_counter()

    env = cm.environment()
    cm.print_environment(env)
    n, N, C = sz["n_samples"], sz["n_neurons"], sz["n_concepts"]
    n_pairs = N * C
    print(f"\nMode {mode}: {N} neurons x {C} concepts x {n:,} samples = {n_pairs:,} pairs; "
          f"neurocert timings = median of {REPEATS} calls after 1 warm-up call")
    if mode == "quick":
        print("(quick mode: targets are defined at full size; shown for information only)")

    a, c, prev = cm.make_data(n, N, C, seed=SEED)
    input_bytes = a.nbytes + c.nbytes
    print(f"Inputs: activations float32 ReLU(N(0,1)) ({(a == 0).mean():.0%} zeros), "
          f"concepts float32 0/1, prevalence U(0.01, 0.2) "
          f"(observed {c.mean(0).min():.3f}..{c.mean(0).max():.3f}); "
          f"input size {cm.fmt_bytes(input_bytes)}")

    rng = np.random.default_rng(SEED + 1)
    flat = rng.choice(n_pairs, size=min(sz["pair_subset"], n_pairs), replace=False)
    pairs = [(int(p // C), int(p % C)) for p in flat]
    loop_neurons = sorted(rng.choice(N, size=min(sz["loop_neurons"], N), replace=False).tolist())
    reps_b = sz["baseline_repeats"]
    full = mode == "full"

    results: dict[str, Any] = {"mode": mode, "sizes": sz, "repeats": REPEATS,
                               "targets": TARGETS, "environment": env,
                               "input_bytes": input_bytes, "cases": []}

    # ---- 1. AUROC ---------------------------------------------------------
    print("\n[1] AUROC, all pairs")
    tres, vals = time_neurocert(a, c, "auroc", {})
    times, t_nc = tres["neurocert_times_s"], tres["neurocert_median_s"]
    sk_times, sk_vals = sklearn_auroc_subset(a, c, pairs, reps_b)
    sk_per_pair = cm.median(sk_times) / len(pairs)
    sk_est = sk_per_pair * n_pairs
    nc_sub = np.array([vals[j, k] for j, k in pairs])
    diff = float(np.max(np.abs(nc_sub - sk_vals)))
    case = {
        "metric": "auroc", "kw": {}, "label": "auroc", **tres,
        "baselines": {
            "sklearn_roc_auc_score_per_pair": {
                "pairs_timed": len(pairs), "repeats": reps_b, "times_s": sk_times,
                "per_pair_s": sk_per_pair, "extrapolated_all_pairs_s": sk_est,
                "speedup": sk_est / t_nc, "max_abs_diff": diff},
        },
        "target_seconds": TARGETS["auroc_seconds"],
        "target_speedup": TARGETS["auroc_speedup_vs_sklearn"],
        "meets_time": t_nc <= TARGETS["auroc_seconds"] if full else None,
        "meets_speedup": sk_est / t_nc >= TARGETS["auroc_speedup_vs_sklearn"] if full else None,
    }
    results["cases"].append(case)
    print(f"  neurocert: median {cm.fmt_s(t_nc)}  (runs: "
          f"{', '.join(f'{t:.3f}' for t in times)} s){_blas1(case)}")
    print(f"  sklearn roc_auc_score per pair: {cm.fmt_s(sk_per_pair)}/pair on {len(pairs)} "
          f"random pairs (median of {reps_b}), EXTRAPOLATED to {n_pairs:,} pairs: "
          f"{cm.fmt_s(sk_est)} -> speedup {sk_est / t_nc:,.0f}x")
    print(f"  agreement on those pairs: max |neurocert - sklearn| = {diff:.2e}")
    del vals

    # ---- 2. count metrics --------------------------------------------------
    print("\n[2] Count metrics, all pairs")
    for metric, kw in COUNT_CASES:
        label = case_label(metric, kw)
        tres, vals = time_neurocert(a, c, metric, kw)
        times, t_nc = tres["neurocert_times_s"], tres["neurocert_median_s"]
        sk_times, sk_vals = sklearn_count_subset(a, c, pairs, metric, kw, reps_b)
        sk_per_pair = cm.median(sk_times) / len(pairs)
        sk_est = sk_per_pair * n_pairs
        sk_diff = float(np.nanmax(np.abs(np.array([vals[j, k] for j, k in pairs]) - sk_vals)))
        setup, np_times, np_vals = numpy_loop(a, c, loop_neurons, metric, kw, reps_b)
        np_est = setup + cm.median(np_times) * N / len(loop_neurons)
        np_diff = float(np.nanmax(np.abs(vals[loop_neurons] - np_vals)))
        case = {
            "metric": metric, "kw": kw, "label": label, **tres,
            "baselines": {
                "sklearn_per_pair": {
                    "pairs_timed": len(pairs), "repeats": reps_b, "times_s": sk_times,
                    "per_pair_s": sk_per_pair, "extrapolated_all_pairs_s": sk_est,
                    "speedup": sk_est / t_nc, "max_abs_diff": sk_diff},
                "numpy_loop_per_neuron": {
                    "neurons_timed": len(loop_neurons), "repeats": reps_b,
                    "setup_s": setup, "loop_times_s": np_times,
                    "extrapolated_all_neurons_s": np_est, "extrapolated": len(loop_neurons) < N,
                    "speedup": np_est / t_nc, "max_abs_diff": np_diff},
            },
            "target_seconds": TARGETS["count_seconds"],
            "meets_time": t_nc <= TARGETS["count_seconds"] if full else None,
        }
        results["cases"].append(case)
        ext = "EXTRAPOLATED " if len(loop_neurons) < N else ""
        print(f"  {label:<22} neurocert median {cm.fmt_s(t_nc)}{_blas1(case)}")
        print(f"  {'':<22} sklearn {cm.fmt_s(sk_per_pair)}/pair -> {cm.fmt_s(sk_est)} "
              f"({sk_est / t_nc:,.0f}x) | numpy loop {ext}{cm.fmt_s(np_est)} "
              f"({np_est / t_nc:,.1f}x) | max diff: sklearn {sk_diff:.1e}, loop {np_diff:.1e}")
        del vals
    print(f"  sklearn: {len(pairs)} random pairs, median of {reps_b}, binarized neurons "
          f"precomputed, extrapolated to {n_pairs:,} pairs; numpy loop: "
          f"{len(loop_neurons)} of {N} neurons, median of {reps_b}, "
          f"{'extrapolated to all neurons (+ one-time setup)' if ext else 'all neurons'}")

    # ---- 3. memory --------------------------------------------------------
    if not args.no_memory:
        print("\n[3] Peak extra memory of one call ("
              + ("fresh subprocess per case)" if full else
                 "quick mode: one subprocess, cases in turn)"))
        print("  primary: tracemalloc peak during the call (numpy buffers are traced); "
              "cross-check: RSS high-water after call - after inputs allocated (VmHWM reset via "
              "/proc/self/clear_refs; ru_maxrss as fallback)")
        mems = measure_memory(sz, [(cs["metric"], cs["kw"]) for cs in results["cases"]],
                              per_process=full, parallel=max(1, min(2, os.cpu_count() or 1)))
        for case, mem in zip(results["cases"], mems):
            case["memory"] = mem
            if "error" in mem:
                print(f"  {case['label']:<22} ERROR {mem['error']}")
                continue
            r_tm = mem["tracemalloc_peak_extra"] / mem["input_bytes"]
            r_rss = mem["rss_peak_extra"] / mem["input_bytes"]
            mem["tracemalloc_over_input"] = r_tm
            mem["rss_over_input"] = r_rss
            case["meets_memory"] = r_tm <= TARGETS["memory_over_input"] if full else None
            print(f"  {case['label']:<22} tracemalloc {cm.fmt_bytes(mem['tracemalloc_peak_extra'])}"
                  f" = {r_tm:.2f}x input | RSS {cm.fmt_bytes(mem['rss_peak_extra'])}"
                  f" = {r_rss:.2f}x input")

    # ---- summary ----------------------------------------------------------
    def yn(v):
        return "-" if v is None else ("yes" if v else "NO")

    print("\nSummary "
          f"({mode}; {N}x{C} pairs, n={n:,}; input {cm.fmt_bytes(input_bytes)}; "
          "targets: auroc <= 1 s and >= 1000x sklearn; count <= 0.5 s; memory <= 2x input)")
    hdr = (f"  {'case':<22} {'median':>9} {'1 BLAS thr':>10} {'target':>7} {'met':>4} {'vs sklearn':>11} "
           f"{'vs np loop':>11} {'max diff':>9} {'mem/input':>10} {'met':>4}")
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    for case in results["cases"]:
        b = case["baselines"]
        sk = next(v for k, v in b.items() if k.startswith("sklearn"))
        npl = b.get("numpy_loop_per_neuron")
        mem = case.get("memory", {})
        met_t = case.get("meets_time")
        if "meets_speedup" in case and case["meets_speedup"] is not None:
            met_t = met_t and case["meets_speedup"]
        mem_r = mem.get("tracemalloc_over_input")
        diffs = [sk["max_abs_diff"]] + ([npl["max_abs_diff"]] if npl else [])
        npl_s = f"{npl['speedup']:,.1f}x" if npl else "-"
        mem_s = f"{mem_r:.2f}x" if mem_r is not None else "-"
        t1 = case.get("neurocert_blas1_median_s")
        print(f"  {case['label']:<22} {cm.fmt_s(case['neurocert_median_s']):>9} "
              f"{(cm.fmt_s(t1) if t1 is not None else '-'):>10} "
              f"{case['target_seconds']:>5g} s {yn(met_t):>4} "
              f"{sk['speedup']:>10,.0f}x "
              f"{npl_s:>11} "
              f"{max(diffs):>9.1e} "
              f"{mem_s:>10} "
              f"{yn(case.get('meets_memory')):>4}")
    print("  (median = default BLAS threads, used for target/ratios; sklearn and numpy-loop "
          "times are extrapolated from subsets, see above)")

    if args.profile:
        print("\n[profile] cProfile of one call per case, sorted by own time")
        for metric, kw in [("auroc", {})] + COUNT_CASES:
            print(f"\n--- {case_label(metric, kw)} ---")
            print(profile_call(a, c, metric, kw))

    results["wall_s"] = time.perf_counter() - t_start
    try:
        results["loadavg_end_1_5_15"] = list(os.getloadavg())
        print(f"\nLoad average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"(on {os.cpu_count()} CPUs; > CPUs means other processes competed)")
    except OSError:
        pass
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nWrote {out_path}  (total wall {results['wall_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
