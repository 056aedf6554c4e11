"""Benchmark of ``neurocert.bootstrap_explain``: replicate speed vs a per-replicate loop, memory.

Usage::

    python benchmarks/bench_bootstrap.py            # full size (512 x 1000 x 50,000, B = 1000)
    python benchmarks/bench_bootstrap.py --quick    # smoke run (64 x 100 x 5,000, B = 100), < 60 s
    python benchmarks/bench_bootstrap.py --out results.json --profile

What is measured (targets: benchmarks/README.md, "Bootstrap"):

1. IoU with a top-0.5% threshold recomputed per replicate: wall time of
   ``bootstrap_explain(A, Z, metric="iou", top_frac=0.005, n_boot=B, rng=0,
   mode="bootstrap")`` (median of ``--repeats`` calls), its ``timings`` dict, the
   replicate part alone (``replicate_explanations`` on the precomputed weight
   matrix with the pruned candidates) and the mean number of candidate concepts
   per neuron; against a straightforward loop (per replicate: draw the weights,
   ``neurocert.similarity(..., sample_weight=w)``, argmax) timed on a few replicates
   and **extrapolated** linearly to B. The loop's winners are checked against the
   engine's for the same replicates.
2. AUROC, the same protocol, with the numpy and/or the numba engine; every one of
   the B replicates runs unless ``--auroc-boot`` / ``--auroc-numba-boot`` ask for
   fewer (then the time is **extrapolated** linearly to B, and the output says so).
3. Peak memory of the IoU case with the activations memory-mapped from a ``.npy``
   file, in a fresh subprocess: ``VmHWM`` (RSS high-water mark of the child).

``--profile`` adds a step-by-step breakdown of the IoU replicate engine (an
instrumented copy of the per-neuron loop of ``engine.count_engine``, checked to
give the same winners), an affine fit in B and a cProfile of the numpy AUROC
engine on a neuron subset, and a cProfile of the identification phase. The default JSON goes to benchmarks/out/ (git-ignored).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as cm

import neurocert
from neurocert import engine as _engine
from neurocert.bootstrap import (
    _engine_for,
    _unit_weights,
    prune_candidates,
    replicate_explanations,
)
from neurocert.resample import as_seed_sequence, replicate_weights
from neurocert.similarity import prepare

HERE = Path(__file__).resolve().parent

SIZES = {
    "full": {"n_samples": 50_000, "n_neurons": 512, "n_concepts": 1_000, "n_planted": 400,
             "n_boot": 1000, "iou_loop_reps": 10, "auroc_loop_reps": 3,
             "profile_neurons_auroc": 64},
    "quick": {"n_samples": 5_000, "n_neurons": 64, "n_concepts": 100, "n_planted": 50,
              "n_boot": 100, "iou_loop_reps": 10, "auroc_loop_reps": 3,
              "profile_neurons_auroc": 64},
}
TOP_FRAC = 0.005
SEED = 0
PRUNE_EPSILON = 1e-4  # bootstrap_explain's default
TARGETS = {
    "iou_seconds": 15.0,
    "iou_speedup_vs_loop": 100.0,
    "auroc_seconds_numpy": 15 * 60.0,
    "auroc_seconds_numba": 90.0,
    "auroc_speedup_vs_loop": 20.0,
    "peak_memory_bytes": 2e9,
}


# ---------------------------------------------------------------------------
# data


def make_bootstrap_data(n_samples: int, n_neurons: int, n_concepts: int, n_planted: int,
                        seed: int = SEED, chunk: int = 4096
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activations float32 N(0, 1), neuron ``j < n_planted`` gets ``+2 z[:, j]``;
    concepts float32 0/1 with prevalence ~ U(0.005, 0.1). Filled in row chunks."""
    rng = np.random.default_rng(seed)
    prev = rng.uniform(0.005, 0.1, size=n_concepts).astype(np.float32)
    a = np.empty((n_samples, n_neurons), dtype=np.float32)
    z = np.empty((n_samples, n_concepts), dtype=np.float32)
    k = min(n_planted, n_neurons, n_concepts)
    for s0 in range(0, n_samples, chunk):
        s1 = min(n_samples, s0 + chunk)
        u = rng.random((s1 - s0, n_concepts), dtype=np.float32)
        np.less(u, prev[None, :], out=z[s0:s1], casting="unsafe")
        blk = rng.standard_normal((s1 - s0, n_neurons), dtype=np.float32)
        blk[:, :k] += 2.0 * z[s0:s1, :k]
        a[s0:s1] = blk
    return a, z, prev


# ---------------------------------------------------------------------------
# the library call, the replicate part, the loop baseline


def run_bootstrap(a, z, metric: str, kw: dict[str, Any], n_boot: int, engine: str = "auto"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return neurocert.bootstrap_explain(a, z, metric=metric, n_boot=n_boot, rng=SEED,
                                           mode="bootstrap", engine=engine, **kw)


def replicate_setup(a, z, metric: str, kw: dict[str, Any], res,
                    engine: str = "numpy") -> dict[str, Any]:
    """What ``bootstrap_explain`` hands to ``replicate_explanations``: the prepared bundle,
    the engine and its supports, the pruned candidates and the tracked concepts."""
    p = prepare(a, z, metric=metric, **kw)
    engine_fn, supports = _engine_for(p, engine)
    sim = res.identification.similarity
    t0 = time.perf_counter()
    candidates, _ = prune_candidates(p, sim, PRUNE_EPSILON, supports)
    t_prune = time.perf_counter() - t0
    n_cand = np.array([len(c) for c in candidates])
    if not np.array_equal(n_cand, res.n_candidates):
        raise RuntimeError("recomputed candidates differ from bootstrap_explain's")
    return {"p": p, "engine": (engine_fn, supports), "candidates": candidates,
            "tracked": res.identification.top, "prune_s": t_prune}


def weights(p, n_reps: int) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    w = _unit_weights(p, as_seed_sequence(SEED), range(n_reps), "multinomial")
    return w, time.perf_counter() - t0


def time_replicate_part(setup: dict[str, Any], w: np.ndarray, repeats: int):
    def call():
        return replicate_explanations(setup["p"], w, candidates=setup["candidates"],
                                      tracked=setup["tracked"], engine=setup["engine"])
    return cm.time_repeated(call, repeats, warmup=0)


def loop_winners(sim: np.ndarray, lower: float) -> np.ndarray:
    """Argmax per neuron as the library defines it: NaN never wins, lowest index among exact
    ties, -1 ("none") when nothing exceeds the metric's minimum."""
    filled = np.where(np.isnan(sim), -np.inf, sim)
    best = np.argmax(filled, axis=1)
    top = filled[np.arange(sim.shape[0]), best]
    return np.where(top > lower, best, -1)


def loop_baseline(a, z, metric: str, kw: dict[str, Any], n_reps: int):
    """Per replicate: draw the weights, recompute all pairs with neurocert.similarity, argmax."""
    lower = neurocert.get_metric(metric).lower
    seed = as_seed_sequence(SEED)
    n = a.shape[0]
    times, wins = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(n_reps):
            t0 = time.perf_counter()
            w = replicate_weights(seed, [b], n)[0]
            sim = neurocert.similarity(a, z, metric=metric, sample_weight=w, **kw)
            wins.append(loop_winners(sim, lower))
            times.append(time.perf_counter() - t0)
    return times, np.array(wins)


# ---------------------------------------------------------------------------
# profiling: instrumented copies of the engines' per-neuron loops


class Steps:
    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t[name] += time.perf_counter() - t0


def profile_count_engine(p, w, candidates, tracked, supports, neurons) -> tuple[dict, np.ndarray]:
    """``engine.count_engine`` step by step (same operations, same order)."""
    from neurocert.metrics import _COUNT_SPECS

    st = Steps()
    metric = p.metric
    with st("Z >= 0.5 -> float32 copy (_binary_concepts)"):
        zb = _engine._binary_concepts(p)
    with st("totals W.sum"):
        totals = w.sum(axis=1, dtype=np.float64)
    with st("W @ Z float32 GEMM (_concept_weights)"):
        cw = _engine._concept_weights(zb, w)
    is_defined = _COUNT_SPECS[metric.name][1]
    win = np.empty((w.shape[0], len(neurons)), np.int64)
    for i, j in enumerate(neurons):
        sup = supports[j]
        cand = candidates[j]
        with st("union1d(candidates, tracked)"):
            cols = np.union1d(cand, tracked[j])
        while True:
            with st("gather W[:, support]"):
                ws = w[:, sup.index]
            with st("per-replicate cut-off mask (cumsum, argmax)"):
                mask = sup.mask(ws, totals)
            if mask is not None or sup.top_frac is None:
                break
            with st("support extension"):
                sup.extend()
        with st("apply mask + active sum"):
            if mask is not None:
                ws = ws * mask
            active = ws.sum(axis=1, dtype=np.float64)
        with st("gather Z[support][:, cols] (_rows)"):
            zs = _engine._rows(zb, sup.index, cols).astype(np.float32, copy=False)
        with st("tp = W_S @ Z_S GEMM"):
            tp = ws @ zs if ws.dtype == np.float64 else ws.astype(np.float32, copy=False) @ zs
        with st("formula + defined + where"):
            f = active[:, None]
            c = cw[:, cols]
            s = totals[:, None]
            with np.errstate(divide="ignore", invalid="ignore"):
                val = metric.formula(tp, f, c, s, p.options)
            defined = is_defined(tp, f, c, s, p.options)
            sim = np.where(defined, val, np.nan)
        with st("argmax_votes"):
            pos = np.searchsorted(cols, cand)
            win[:, i], _, _ = _engine.argmax_votes(sim[:, pos], cand, metric.lower, p.n_concepts)
        with st("tracked values"):
            _ = sim[:, np.searchsorted(cols, tracked[j])]
    return dict(st.t), win


def print_steps(steps: dict[str, float], scale: float = 1.0, indent: str = "    ") -> None:
    total = sum(steps.values())
    for name, t in sorted(steps.items(), key=lambda kv: -kv[1]):
        print(f"{indent}{name:<52} {cm.fmt_s(t * scale):>9}  {100 * t / total:5.1f}%")
    print(f"{indent}{'sum':<52} {cm.fmt_s(total * scale):>9}")


def cprofile_identify(a, z, metric, kw, top: int = 22) -> str:
    """cProfile (cumulative) of bootstrap_explain with n_boot=1: identification + pruning."""
    pr = cProfile.Profile()
    pr.enable()
    run_bootstrap(a, z, metric, kw, 1)
    pr.disable()
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(top)
    lines = [ln for ln in s.getvalue().splitlines() if ln.strip()]
    start = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    return "\n".join(lines[start:])


# ---------------------------------------------------------------------------
# memory (subprocess worker)


def memory_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Fresh interpreter: activations memory-mapped, concepts loaded; one IoU bootstrap call."""
    import resource

    def rss():
        return cm.current_rss_bytes()

    metric, engine = spec.get("metric", "iou"), spec.get("engine", "auto")
    kw = {"top_frac": TOP_FRAC} if metric == "iou" else {}
    a0, z0, _ = make_bootstrap_data(300, 4, 5, 2, seed=1)
    run_bootstrap(a0, z0, metric, kw, 5, engine)  # lazy imports, BLAS start-up, numba load
    del a0, z0
    rss_import = rss()
    a = np.load(spec["a_path"], mmap_mode="r")
    z = np.load(spec["z_path"])
    rss_loaded = rss()
    t0 = time.perf_counter()
    res = run_bootstrap(a, z, metric, kw, spec["n_boot"], engine)
    wall = time.perf_counter() - t0
    status = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            k = line.split(":", 1)[0]
            if k in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                status[k] = int(line.split()[1]) * 1024
    return {
        "is_memmap": isinstance(a, np.memmap),
        "activations_bytes": int(a.nbytes), "concepts_bytes": int(z.nbytes),
        "rss_after_imports": rss_import, "rss_after_load": rss_loaded,
        "vmhwm": status.get("VmHWM"), "rss_end": status.get("VmRSS"),
        "rss_anon_end": status.get("RssAnon"), "rss_file_end": status.get("RssFile"),
        "ru_maxrss": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024,
        "wall_s": wall, "timings": res.timings,
    }


def measure_memory(a, z, n_boot: int, metric: str = "iou", engine: str = "auto"
                   ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="neurocert-bench-") as tmp:
        a_path, z_path = os.path.join(tmp, "A.npy"), os.path.join(tmp, "Z.npy")
        np.save(a_path, a)
        np.save(z_path, z)
        spec = json.dumps({"a_path": a_path, "z_path": z_path, "n_boot": n_boot,
                           "metric": metric, "engine": engine})
        proc = subprocess.run([sys.executable, __file__, "--_memory-worker", spec],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------
# main


def _numba_version() -> str | None:
    try:
        import numba
        return numba.__version__
    except ImportError:
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 64 neurons x 100 concepts x 5,000 samples, B = 100")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output (default benchmarks/out/bench_bootstrap[_quick].json)")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timed calls of the IoU bootstrap and of its replicate part (median)")
    ap.add_argument("--auroc-boot", type=int, default=None,
                    help="replicates of the numpy AUROC call, extrapolated linearly to B "
                         "when fewer (default: all B)")
    ap.add_argument("--profile", action="store_true",
                    help="step breakdown of the replicate engines + cProfile of identification")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocess")
    ap.add_argument("--no-auroc", action="store_true", help="skip the AUROC case")
    ap.add_argument("--no-iou", action="store_true", help="skip the IoU case (1)")
    ap.add_argument("--engine", choices=["both", "numpy", "numba"], default=None,
                    help="AUROC engines to time (default: both when numba is installed, "
                         "else numpy); the numba call runs all B replicates unless "
                         "--auroc-numba-boot says otherwise")
    ap.add_argument("--auroc-numba-boot", type=int, default=None,
                    help="replicates of the numba AUROC call (default B), extrapolated to B")
    ap.add_argument("--memory-cases", default="iou",
                    help="comma list of memory cases: iou, auroc (numba kernels when "
                         "installed, numpy with --engine numpy; default: iou)")
    ap.add_argument("--n", type=int, default=None, help="samples (overrides the mode's size)")
    ap.add_argument("--neurons", type=int, default=None, help="neurons (overrides)")
    ap.add_argument("--concepts", type=int, default=None, help="concepts (overrides)")
    ap.add_argument("--planted", type=int, default=None,
                    help="neurons with a planted concept (overrides; default 400/512 of "
                         "--neurons)")
    ap.add_argument("--boot", type=int, default=None, help="B replicates (overrides)")
    ap.add_argument("--iou-loop-reps", type=int, default=None,
                    help="replicates of the IoU loop baseline (default 10), extrapolated to B")
    ap.add_argument("--auroc-loop-reps", type=int, default=None,
                    help="replicates of the AUROC loop baseline (default 3), extrapolated")
    ap.add_argument("--_memory-worker", dest="memory_worker", default=None,
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.memory_worker is not None:
        print(json.dumps(memory_worker(json.loads(args.memory_worker)), default=float))
        return 0

    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(line_buffering=True)
    mode = "quick" if args.quick else "full"
    sz = dict(SIZES[mode])
    overrides = {"n_samples": args.n, "n_neurons": args.neurons, "n_concepts": args.concepts,
                 "n_boot": args.boot, "iou_loop_reps": args.iou_loop_reps,
                 "auroc_loop_reps": args.auroc_loop_reps}
    for k, v in overrides.items():
        if v is not None:
            sz[k] = v
    if args.neurons is not None and args.planted is None:
        sz["n_planted"] = round(args.neurons * 400 / 512)
    if args.planted is not None:
        sz["n_planted"] = args.planted
    shape_keys = ("n_samples", "n_neurons", "n_concepts", "n_planted", "n_boot")
    if any(sz[k] != SIZES[mode][k] for k in shape_keys):
        mode = "custom"
    full = all(sz[k] == SIZES["full"][k] for k in shape_keys)
    numba_ok = _numba_version() is not None
    engines = {"both": ["numpy", "numba"], "numpy": ["numpy"], "numba": ["numba"]}[
        args.engine or ("both" if numba_ok else "numpy")]
    if "numba" in engines and not numba_ok:
        ap.error("--engine numba needs numba installed (pip install 'neurocert[numba]')")
    out_path = args.out or HERE / "out" / f"bench_bootstrap{'_quick' if args.quick else ''}.json"
    t_start = time.perf_counter()

    env = cm.environment()
    env["numba"] = _numba_version()
    cm.print_environment(env)
    if env["numba"]:
        import numba
        env["numba_threads"] = numba.config.NUMBA_NUM_THREADS
        env["numba_threading_layer"] = numba.config.THREADING_LAYER
    threads = f" ({env['numba_threads']} threads)" if env["numba"] else ""
    print(f"  numba       {env['numba'] or 'not installed'}{threads}; AUROC engines timed: "
          f"{', '.join(engines)}")

    n, N, C, B = sz["n_samples"], sz["n_neurons"], sz["n_concepts"], sz["n_boot"]
    b_auroc = min(B, args.auroc_boot if args.auroc_boot is not None else B)
    b_numba = min(B, args.auroc_numba_boot if args.auroc_numba_boot is not None else B)
    print(f"\nMode {mode}: {N} neurons x {C} concepts x n = {n:,} samples, B = {B:,} replicates"
          f" (multinomial, rng=0, prune_epsilon={PRUNE_EPSILON:g})")
    if not full:
        print(f"({mode} size: targets are defined at full size; shown for information only)")
    a, z, _ = make_bootstrap_data(n, N, C, sz["n_planted"])
    print(f"Inputs: activations float32 N(0,1), neuron j < {sz['n_planted']} gets +2 z[:, j]; "
          f"concepts float32 0/1, prevalence U(0.005, 0.1) (observed "
          f"{z.mean(0).min():.4f}..{z.mean(0).max():.4f}); "
          f"{cm.fmt_bytes(a.nbytes)} + {cm.fmt_bytes(z.nbytes)}")

    results: dict[str, Any] = {"mode": mode, "sizes": sz, "targets": TARGETS, "engines": engines,
                               "environment": env, "repeats": args.repeats, "cases": {}}

    if not args.no_iou:
        iou_case(args, a, z, sz, results, full)
    if not args.no_auroc:
        auroc_case(args, a, z, sz, results, full, env, engines,
                   {"numpy": b_auroc, "numba": b_numba})
    if not args.no_memory:
        for metric in [m.strip() for m in args.memory_cases.split(",") if m.strip()]:
            memory_case(a, z, sz, results, full, metric,
                        "numba" if numba_ok and args.engine != "numpy" else "numpy")
    summary(results, mode, sz, env)
    results["wall_s"] = time.perf_counter() - t_start
    results["loadavg_end_1_5_15"] = list(os.getloadavg())
    print(f"\nLoad average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(on {os.cpu_count()} CPUs; > CPUs means other processes competed)")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2, default=float))
    print(f"\nWrote {out_path}  (total wall {results['wall_s']:.1f} s)")
    return 0


def iou_case(args, a, z, sz, results, full) -> None:
    n, N, C, B = sz["n_samples"], sz["n_neurons"], sz["n_concepts"], sz["n_boot"]
    kw_iou = {"top_frac": TOP_FRAC}
    print(f"\n[1] IoU, top_frac={TOP_FRAC:g} (cut-off recomputed per replicate)")
    times, res = cm.time_repeated(lambda: run_bootstrap(a, z, "iou", kw_iou, B),
                                  args.repeats, warmup=0)
    t_iou = cm.median(times)
    tim = res.timings
    n_cand = res.n_candidates
    print(f"  bootstrap_explain wall: median {cm.fmt_s(t_iou)} "
          f"(runs: {', '.join(cm.fmt_s(t) for t in times)})")
    print(f"  timings (last call): identify_s {tim['identify_s']:.2f}  bootstrap_s "
          f"{tim['bootstrap_s']:.2f}  total_s {tim['total_s']:.2f}  (wall - total_s = "
          f"{times[-1] - tim['total_s']:.2f} s: ExplanationResult.build)")
    print(f"  candidates per neuron after pruning: mean {n_cand.mean():.1f}, median "
          f"{np.median(n_cand):.0f}, min {n_cand.min()}, max {n_cand.max()} (of {C}); planted "
          f"neurons mean {n_cand[:sz['n_planted']].mean():.1f}, others "
          f"{n_cand[sz['n_planted']:].mean() if N > sz['n_planted'] else float('nan'):.1f}")
    used = "numba" if tim.get("engine_numba") else "numpy"
    setup = replicate_setup(a, z, "iou", kw_iou, res, engine=used)
    w, t_w = weights(setup["p"], B)
    rtimes, votes = time_replicate_part(setup, w, args.repeats)
    t_rep = cm.median(rtimes)
    same = bool(np.array_equal(votes.winner, res.winners))
    print(f"  engine used by the call: {used}")
    print(f"  replicate part alone ({used} engine, W {B}x{n:,} precomputed): median "
          f"{cm.fmt_s(t_rep)} (runs: {', '.join(cm.fmt_s(t) for t in rtimes)}) = "
          f"{cm.fmt_s(t_rep / B)}/replicate; winners identical to the call: {same}")
    rtimes1 = None
    try:
        from threadpoolctl import threadpool_limits
        with threadpool_limits(1, user_api="blas"):
            rtimes1, _ = time_replicate_part(setup, w, args.repeats)
        print(f"  replicate part with OpenBLAS limited to 1 thread (threadpoolctl): median "
              f"{cm.fmt_s(cm.median(rtimes1))} (runs: {', '.join(cm.fmt_s(t) for t in rtimes1)})")
    except ImportError:
        pass
    print(f"  drawing the weight matrix: {cm.fmt_s(t_w)}; prune_candidates: "
          f"{cm.fmt_s(setup['prune_s'])}")
    L = sz["iou_loop_reps"]
    ltimes, lwins = loop_baseline(a, z, "iou", kw_iou, L)
    loop_rep = cm.median(ltimes)
    loop_est = loop_rep * B
    agree = float(np.mean(lwins == res.winners[:L]))
    speed = loop_est / t_iou
    print(f"  loop baseline: median {cm.fmt_s(loop_rep)}/replicate over {L} replicates, "
          f"EXTRAPOLATED to B = {B}: {cm.fmt_s(loop_est)} -> speed-up {speed:,.1f}x "
          f"(replicate part alone: {loop_est / t_rep:,.1f}x)")
    print(f"  loop winners == engine winners on those replicates: {agree:.2%} of "
          f"{L}x{N} (neuron, replicate) pairs")
    results["cases"]["iou_top_frac"] = {
        "call_times_s": times, "call_median_s": t_iou, "timings": tim,
        "n_candidates_mean": float(n_cand.mean()), "n_candidates": n_cand.tolist(),
        "replicate_part_times_s": rtimes, "replicate_part_median_s": t_rep,
        "replicate_part_blas1_times_s": rtimes1,
        "replicate_part_blas1_median_s": cm.median(rtimes1) if rtimes1 else None,
        "replicate_part_same_winners": same, "weights_s": t_w, "prune_s": setup["prune_s"],
        "loop_reps": L, "loop_times_s": ltimes, "loop_per_rep_s": loop_rep,
        "loop_extrapolated_s": loop_est, "speedup_vs_loop": speed,
        "speedup_replicate_part_vs_loop": loop_est / t_rep, "loop_agreement": agree,
        "meets_time": t_iou <= TARGETS["iou_seconds"] if full else None,
        "meets_speedup": speed >= TARGETS["iou_speedup_vs_loop"] if full else None,
        "engine": used,
    }
    if used == "numba":
        np_setup = replicate_setup(a, z, "iou", kw_iou, res, engine="numpy")
        c0 = time.process_time()
        ntimes, nvotes = time_replicate_part(np_setup, w, 1)
        ncpu = time.process_time() - c0
        print(f"  replicate part, numpy count engine on the same W: {cm.fmt_s(ntimes[0])} (process "
              f"CPU {cm.fmt_s(ncpu)}); winners identical to numba: "
              f"{bool(np.array_equal(nvotes.winner, votes.winner))}")
        results["cases"]["iou_top_frac"].update(replicate_part_numpy_s=ntimes[0],
                                                replicate_part_numpy_cpu_s=ncpu)
        del np_setup, nvotes
    if args.profile:
        print("  [profile] replicate engine, step by step (instrumented copy of count_engine, "
              f"all {N} neurons, same W):")
        steps, pw = profile_count_engine(setup["p"], w, setup["candidates"], setup["tracked"],
                                         setup["engine"][1], range(N))
        print_steps(steps)
        print(f"    (winners identical to the engine: {np.array_equal(pw, votes.winner)})")
        results["cases"]["iou_top_frac"]["profile_steps_s"] = steps
        try:
            from threadpoolctl import threadpool_limits
            with threadpool_limits(1, user_api="blas"):
                steps1, _ = profile_count_engine(setup["p"], w, setup["candidates"],
                                                 setup["tracked"], setup["engine"][1], range(N))
            print("  [profile] the same, OpenBLAS limited to 1 thread:")
            print_steps(steps1)
            results["cases"]["iou_top_frac"]["profile_steps_blas1_s"] = steps1
        except ImportError:
            pass
        print("  [profile] identification + pruning (bootstrap_explain with n_boot=1), cumulative:")
        prof = cprofile_identify(a, z, "iou", kw_iou)
        print("\n".join("    " + ln for ln in prof.splitlines()))
    del w, votes, setup, res


def auroc_case(args, a, z, sz, results, full, env, engines, boots) -> None:
    N, C, B = sz["n_neurons"], sz["n_concepts"], sz["n_boot"]
    L = sz["auroc_loop_reps"]
    print(f"\n[2] AUROC, engines: {', '.join(engines)}")
    ltimes, lwins = loop_baseline(a, z, "auroc", {}, L)
    loop_rep = cm.median(ltimes)
    loop_est = loop_rep * B
    print(f"  loop baseline: median {cm.fmt_s(loop_rep)}/replicate over {L} replicates (runs: "
          f"{', '.join(cm.fmt_s(t) for t in ltimes)}), EXTRAPOLATED to B = {B}: "
          f"{cm.fmt_s(loop_est)}")
    cases = {}
    winners = {}
    for eng in engines:
        b_run = boots[eng]
        lab = f"{eng}, {b_run} replicates" + (f", EXTRAPOLATED linearly to B = {B}"
                                                if b_run < B else "")
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        res = run_bootstrap(a, z, "auroc", {}, b_run, eng)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        tim = res.timings
        est = tim["identify_s"] + tim["bootstrap_s"] * B / b_run + (wall - tim["total_s"])
        n_cand = res.n_candidates
        speed = loop_est / est
        ll = min(L, b_run)
        agree = float(np.mean(lwins[:ll] == res.winners[:ll]))
        winners[eng] = res.winners
        print(f"  [{lab}] bootstrap_explain wall {cm.fmt_s(wall)} (process CPU {cm.fmt_s(cpu)}; "
              f"engine used: {'numba' if tim.get('engine_numba') else 'numpy'}); identify_s {tim['identify_s']:.2f}  "
              f"bootstrap_s {tim['bootstrap_s']:.2f}  total_s {tim['total_s']:.2f}")
        if b_run < B:
            print(f"    EXTRAPOLATED to B = {B}: identify_s + bootstrap_s x {B / b_run:g} + build "
                  f"= {cm.fmt_s(est)} ({est / 60:.1f} min)")
        target = TARGETS["auroc_seconds_numba" if eng == "numba" else "auroc_seconds_numpy"]
        print(f"    B = {B}: {cm.fmt_s(est)} (target {cm.fmt_s(target)}) -> speed-up vs loop "
              f"{speed:,.2f}x (target {TARGETS['auroc_speedup_vs_loop']:g}x); candidates per "
              f"neuron: mean {n_cand.mean():.1f} of {C}; loop winners == engine winners on "
              f"{ll} x {N}: {agree:.2%}")
        cases[eng] = {
            "n_boot_run": b_run, "call_wall_s": wall, "call_cpu_s": cpu, "timings": tim,
            "estimated_B_s": est, "extrapolated": b_run < B,
            "n_candidates_mean": float(n_cand.mean()), "speedup_vs_loop": speed,
            "loop_agreement": agree,
            "meets_time": est <= target if full else None,
            "meets_speedup": speed >= TARGETS["auroc_speedup_vs_loop"] if full else None,
        }
        del res
    if len(winners) == 2:
        bb = min(w.shape[0] for w in winners.values())
        same = bool(np.array_equal(winners["numpy"][:bb], winners["numba"][:bb]))
        print(f"  numpy and numba winners identical on the first {bb} replicates: {same}")
        results["auroc_engines_identical"] = same
        r = cases["numpy"]["estimated_B_s"] / cases["numba"]["estimated_B_s"]
        print(f"  numba vs numpy at B = {B}: {r:.2f}x faster")
    results["cases"]["auroc"] = {
        "loop_reps": L, "loop_times_s": ltimes, "loop_per_rep_s": loop_rep,
        "loop_extrapolated_s": loop_est, "engines": cases, "numba": env["numba"],
    }
    if args.profile and "numpy" in engines:
        profile_auroc_numpy(a, z, sz, results, boots["numpy"])


def profile_auroc_numpy(a, z, sz, results, b_auroc) -> None:
    """The numpy AUROC engine itself: an affine fit in B and a cProfile, on a neuron subset.

    Runs ``bootstrap_explain(engine="numpy")`` on every ``N / k``-th neuron (k =
    ``profile_neurons_auroc``) at two replicate counts; the fitted fixed and
    per-replicate costs are scaled by ``N / k`` to the whole layer (the subset mixes
    planted and noise neurons in the layer's proportion).
    """
    N, B = sz["n_neurons"], sz["n_boot"]
    case = results["cases"]["auroc"]
    sub = list(range(0, N, max(1, N // sz["profile_neurons_auroc"])))[
        :sz["profile_neurons_auroc"]]
    scale = N / len(sub)
    a_sub = np.ascontiguousarray(a[:, sub])
    times = {}
    for bb in sorted({max(1, b_auroc // 2), b_auroc}):
        res = run_bootstrap(a_sub, z, "auroc", {}, bb, "numpy")
        times[bb] = res.timings["bootstrap_s"]
        print(f"  [profile] numpy engine on {len(sub)} of {N} neurons, B = {bb}: replicates "
              f"{cm.fmt_s(times[bb])}, identify {cm.fmt_s(res.timings['identify_s'])}")
    if len(times) == 2:
        (b1, t1), (b2, t2) = sorted(times.items())
        slope = (t2 - t1) / (b2 - b1) * scale
        fixed = max(0.0, t1 * scale - slope * b1)
        est_aff = fixed + slope * B
        print(f"  [profile] affine fit scaled x{scale:g} to all neurons: {cm.fmt_s(fixed)} fixed "
              f"+ {cm.fmt_s(slope)}/replicate -> B = {B}: {cm.fmt_s(est_aff)} (+ identify)")
        case["profile_affine"] = {"fixed_s": fixed, "per_rep_s": slope,
                                  "replicate_part_B_s": est_aff}
    pr = cProfile.Profile()
    pr.enable()
    run_bootstrap(a_sub, z, "auroc", {}, max(1, b_auroc // 2), "numpy")
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(18)
    lines = [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    first = next((i for i, ln in enumerate(lines) if "ncalls" in ln), 0)
    print(f"  [profile] cProfile (tottime; the engine's worker threads are not profiled, "
          f"their time shows as waits), {len(sub)} neurons, B = {max(1, b_auroc // 2)}:")
    print("\n".join("    " + ln for ln in lines[first:]))
    case["profile_times_s"] = {str(k): v for k, v in times.items()}
    print("  [profile] identification + pruning (bootstrap_explain with n_boot=1), "
          "cumulative:")
    prof = cprofile_identify(a, z, "auroc", {})
    print("\n".join("    " + ln for ln in prof.splitlines()))


def memory_case(a, z, sz, results, full, metric: str = "iou", engine: str = "auto") -> None:
    B = sz["n_boot"]
    lab = f"IoU top_frac={TOP_FRAC:g}" if metric == "iou" else f"AUROC ({engine})"
    print(f"\n[3] Peak memory, {lab}, B = {B}, activations memory-mapped "
          "(np.load(mmap_mode='r')) in a fresh subprocess")
    mem = measure_memory(a, z, B, metric, engine)
    results.setdefault("memory_cases", {})[metric] = mem
    if metric == "iou":
        results["memory"] = mem
    if "error" in mem:
        print(f"  ERROR {mem['error']}")
    else:
        mem["meets"] = mem["vmhwm"] <= TARGETS["peak_memory_bytes"] if full else None
        print(f"  child VmHWM (peak RSS, file-backed mmap pages included): "
              f"{cm.fmt_bytes(mem['vmhwm'])} ({mem['vmhwm'] / 1e9:.2f} GB)")
        print(f"  RSS after imports + warm-up {cm.fmt_bytes(mem['rss_after_imports'])}, after "
              f"loading (A mmap {cm.fmt_bytes(mem['activations_bytes'])}, Z in RAM "
              f"{cm.fmt_bytes(mem['concepts_bytes'])}) {cm.fmt_bytes(mem['rss_after_load'])}; "
              f"at end anon {cm.fmt_bytes(mem['rss_anon_end'])} + file "
              f"{cm.fmt_bytes(mem['rss_file_end'])}; ru_maxrss {cm.fmt_bytes(mem['ru_maxrss'])}")
        print(f"  child call wall {cm.fmt_s(mem['wall_s'])}")


def summary(results, mode, sz, env) -> None:
    n, N, C, B = sz["n_samples"], sz["n_neurons"], sz["n_concepts"], sz["n_boot"]

    def yn(v):
        return "-" if v is None else ("yes" if v else "NO")

    print(f"\nSummary ({mode}; {N} x {C}, n = {n:,}, B = {B}; load avg at start "
          f"{env.get('loadavg_1_5_15', [float('nan')])[0]:.2f}, now "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
    hdr = f"  {'case':<30} {'neurocert':>12} {'target':>10} {'met':>4} {'loop (extrap.)':>15} " \
          f"{'speed-up':>9} {'target':>7} {'met':>4}"
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    if "iou_top_frac" in results["cases"]:
        ci = results["cases"]["iou_top_frac"]
        print(f"  {'iou top_frac (median)':<30} {cm.fmt_s(ci['call_median_s']):>12} {'15 s':>10} "
              f"{yn(ci['meets_time']):>4} {cm.fmt_s(ci['loop_extrapolated_s']):>15} "
              f"{ci['speedup_vs_loop']:>8,.1f}x {'100x':>7} {yn(ci['meets_speedup']):>4}")
        print(f"  {'  replicate part alone':<30} {cm.fmt_s(ci['replicate_part_median_s']):>12} "
              f"{'':>10} {'':>4} {'':>15} {ci['speedup_replicate_part_vs_loop']:>8,.1f}x")
        if ci.get("replicate_part_blas1_median_s"):
            print(f"  {'  replicate part, 1 BLAS thr':<30} "
                  f"{cm.fmt_s(ci['replicate_part_blas1_median_s']):>12}")
    if "auroc" in results["cases"]:
        ca = results["cases"]["auroc"]
        for eng, ce in ca["engines"].items():
            lab = f"auroc {eng}{' (extrap.)' if ce['extrapolated'] else ''}"
            tgt = "90 s" if eng == "numba" else "15 min"
            print(f"  {lab:<30} {cm.fmt_s(ce['estimated_B_s']):>12} {tgt:>10} "
                  f"{yn(ce['meets_time']):>4} {cm.fmt_s(ca['loop_extrapolated_s']):>15} "
                  f"{ce['speedup_vs_loop']:>8,.2f}x {'20x':>7} {yn(ce['meets_speedup']):>4}")
    for metric, mm in results.get("memory_cases", {}).items():
        if "error" in mm:
            continue
        print(f"  {f'peak RSS, {metric}, A mmap':<30} {cm.fmt_bytes(mm['vmhwm']):>12} "
              f"{'2 GB':>10} {yn(mm['meets']):>4}")
    print("  (loop = per replicate: draw weights + neurocert.similarity(sample_weight=w) + argmax,"
          " timed on a few replicates and extrapolated to B)")


if __name__ == "__main__":
    sys.exit(main())
