"""Compute cost of BE: wall time and peak memory against B and |C|.

Data: :func:`neurocert.simulate.planted_layer` -- ``n_samples`` samples, ``n_neurons``
neurons each planted on one concept (separation ``separation``), ``n_concepts``
independent concepts of frequency ``concept_freq`` (one layer at the largest ``|C|``;
smaller concept sets are its first columns). Metrics: IoU with the data-dependent
``top_frac`` binarization (NetDissect's) and AUROC.

For each cell :func:`neurocert.bootstrap_explain` (multinomial scheme, default pruning,
``mode="bootstrap"``) runs twice on the same inputs and seed:

* **time** -- untraced, wall clock (``time.perf_counter``) of the whole call (the
  fastest of ``timing_repeats`` calls, after one untimed warm-up call of the whole
  experiment), with the library's own split into ``identify`` (similarity and certified
  bounds) and the replicates (``be_identify_s``, ``be_bootstrap_s``), and the process
  CPU time of the same call (``be_cpu_s``: all threads, so BLAS threads add up; about
  ``threads x wall`` on an idle machine, more when spin-waiting BLAS threads compete with
  other programs);
* **memory** -- once under :mod:`tracemalloc`, started just before the call: the peak
  traced allocation during the call (numpy reports its data buffers to tracemalloc,
  so this is the peak of numpy arrays plus Python objects allocated by the call; the
  inputs, allocated before, are not counted).

The straightforward loop -- for each replicate, ``neurocert.similarity(...,
sample_weight=w_b)`` on the full data and an argmax (lowest index among ties) -- runs on
the first ``loop_reps`` replicate weight vectors of the same stream
(:func:`neurocert.resample.replicate_weights`), after one untimed warm-up call; its
fastest replicate time times ``B``
is the extrapolated loop time (wall and CPU). ``loop_agreement`` (deterministic) is the share of those
(replicate, neuron) pairs where the loop's winner equals BE's, a fidelity check.

Timing and memory columns end in ``_s`` / ``_mib`` and are machine-dependent; every
other column is a deterministic function of the parameters and the seed.
"""

from __future__ import annotations

import math
import time
import tracemalloc
import warnings
from typing import Any

import numpy as np

from .._progress import progress as _progress
from ..bootstrap import BATCH_BYTES, bootstrap_explain
from ..exceptions import NoBoundWarning, UndefinedSimilarityWarning, ValidationError
from ..identify import rank_concepts
from ..resample import as_seed_sequence, replicate_weights
from ..similarity import similarity
from ..simulate import planted_layer
from ._base import Table, caption, child_seed, pyplot, table_rows
from ._base import fmt as _g

NAME = "cost"
TITLE = "Compute cost of BE: wall time and peak memory vs B and |C|"
FIGURE = ""

METRICS = ("iou", "auroc")
MIB = 2.0**20

PARAMS: dict[str, dict[str, Any]] = {
    "default": {"n_samples": 10000, "n_neurons": 10, "concept_freq": 0.05, "separation": 1.0,
                "top_frac": 0.05, "metrics": ["iou", "auroc"],
                "n_boots": [50, 100, 200, 400, 800], "n_concepts_at": 100,
                "n_concepts": [30, 100, 300, 1000, 2000], "n_boot_at": 100, "loop_reps": 3,
                "timing_repeats": 2},
    "quick": {"n_samples": 2000, "n_neurons": 4, "concept_freq": 0.05, "separation": 1.0,
              "top_frac": 0.05, "metrics": ["iou", "auroc"], "n_boots": [20, 60],
              "n_concepts_at": 30, "n_concepts": [10, 60], "n_boot_at": 30, "loop_reps": 2,
              "timing_repeats": 3},
}

COLUMNS = ("sweep", "metric", "binarization", "n_samples", "n_neurons", "n_concepts", "n_boot",
           "loop_reps", "mean_candidates", "loop_agreement", "be_total_s", "be_identify_s",
           "be_bootstrap_s", "be_cpu_s", "be_peak_mib", "loop_per_replicate_s",
           "loop_extrapolated_s", "loop_per_replicate_cpu_s", "loop_extrapolated_cpu_s",
           "loop_peak_mib")

#: suffixes of the machine-dependent columns (excluded from determinism checks)
TIMING_SUFFIXES = ("_s", "_mib")


# ---------------------------------------------------------------------------
# parameters


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and math.isfinite(float(x)))


def check(params: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` for bad parameters (before any work)."""
    need = ("n_samples", "n_neurons", "concept_freq", "separation", "top_frac", "metrics",
            "n_boots", "n_concepts_at", "n_concepts", "n_boot_at", "loop_reps", "timing_repeats")
    missing = [k for k in need if k not in params]
    if missing:
        raise ValidationError(f"{NAME}: missing parameter(s) {missing}")
    for key, lo in (("n_samples", 100), ("n_neurons", 1), ("n_concepts_at", 2),
                    ("n_boot_at", 1), ("loop_reps", 1), ("timing_repeats", 1)):
        if not _is_int(params[key]) or params[key] < lo:
            raise ValidationError(f"{NAME}: `{key}` must be an integer >= {lo}; "
                                  f"got {params[key]!r}")
    for key, lo in (("n_boots", 1), ("n_concepts", 2)):
        v = params[key]
        if (not isinstance(v, (list, tuple)) or not v
                or not all(_is_int(x) and x >= lo for x in v) or len(set(v)) != len(v)):
            raise ValidationError(f"{NAME}: `{key}` must be a non-empty list of distinct "
                                  f"integers >= {lo}; got {v!r}")
    if params["loop_reps"] > min(min(params["n_boots"]), params["n_boot_at"]):
        raise ValidationError(f"{NAME}: `loop_reps` must not exceed the smallest B")
    for key in ("concept_freq", "top_frac"):
        if not _is_num(params[key]) or not 0 < float(params[key]) < 1:
            raise ValidationError(f"{NAME}: `{key}` must be a number in (0, 1); "
                                  f"got {params[key]!r}")
    if not _is_num(params["separation"]):
        raise ValidationError(f"{NAME}: `separation` must be a finite number; "
                              f"got {params['separation']!r}")
    mets = params["metrics"]
    if (not isinstance(mets, (list, tuple)) or not mets or any(m not in METRICS for m in mets)
            or len(set(mets)) != len(mets)):
        raise ValidationError(f"{NAME}: `metrics` must be a non-empty list of distinct values "
                              f"from {list(METRICS)}; got {mets!r}")


# ---------------------------------------------------------------------------
# measurements


def _kwargs(metric: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"top_frac": float(params["top_frac"])} if metric == "iou" else {}


def _be(a: np.ndarray, z: np.ndarray, metric: str, b: int, kw: dict[str, Any],
        seed: np.random.SeedSequence, traced: bool) -> tuple[Any, tuple[float, float], float]:
    """One ``bootstrap_explain`` call: (result, (wall, CPU) seconds, tracemalloc peak in MiB
    or NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        warnings.simplefilter("ignore", NoBoundWarning)
        if traced:
            tracemalloc.start()
            tracemalloc.reset_peak()
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            res = bootstrap_explain(a, z, metric=metric, n_boot=b, rng=seed, **kw)
            wall = (time.perf_counter() - t0, time.process_time() - c0)
            peak = tracemalloc.get_traced_memory()[1] / MIB if traced else math.nan
        finally:
            if traced:
                tracemalloc.stop()
    return res, wall, peak


def _loop(a: np.ndarray, z: np.ndarray, metric: str, kw: dict[str, Any],
          seed: np.random.SeedSequence, reps: int) -> tuple[np.ndarray, float, float, float]:
    """The straightforward loop on the first ``reps`` replicates: winners, fastest wall and CPU
    seconds per replicate (the minimum damps other load), MiB of one replicate."""
    w = replicate_weights(as_seed_sequence(seed), range(reps), a.shape[0])
    winners = np.empty((reps, a.shape[1]), np.int64)
    peak = 0.0
    times, cpus = [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        similarity(a, z, metric=metric, sample_weight=w[0], **kw)  # warm-up, untimed
        for b in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            s = similarity(a, z, metric=metric, sample_weight=w[b], **kw)
            winners[b] = rank_concepts(s)[:, 0]
            times.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        tracemalloc.start()  # memory of one replicate, measured apart from the timing
        try:
            s = similarity(a, z, metric=metric, sample_weight=w[0], **kw)
            rank_concepts(s)
            peak = tracemalloc.get_traced_memory()[1] / MIB
        finally:
            tracemalloc.stop()
    return winners, min(times), min(cpus), peak


def _cell(layer, metric: str, k: int, b: int, params: dict[str, Any],
          seed: np.random.SeedSequence) -> dict[str, Any]:
    a = layer.activations
    z = np.ascontiguousarray(layer.concepts[:, :k])
    kw = _kwargs(metric, params)
    walls = []
    for _ in range(int(params["timing_repeats"])):
        res, wall, _ = _be(a, z, metric, b, kw, seed, traced=False)
        walls.append((wall, res))
    (wall, cpu), res = min(walls, key=lambda t: t[0][0])
    _, _, peak = _be(a, z, metric, b, kw, seed, traced=True)
    reps = int(params["loop_reps"])
    loop_w, per_rep, per_rep_cpu, loop_peak = _loop(a, z, metric, kw, seed, reps)
    agree = float(np.mean(loop_w == res.winners[:reps]))
    return {"metric": metric,
            "binarization": f"top_frac={float(params['top_frac']):g}" if metric == "iou"
            else "none (ranks)",
            "n_samples": int(a.shape[0]), "n_neurons": int(a.shape[1]), "n_concepts": k,
            "n_boot": b, "loop_reps": reps,
            "mean_candidates": float(np.mean(res.n_candidates)), "loop_agreement": agree,
            "be_total_s": wall, "be_identify_s": float(res.timings["identify_s"]),
            "be_bootstrap_s": float(res.timings["bootstrap_s"]), "be_cpu_s": cpu,
            "be_peak_mib": peak, "loop_per_replicate_s": per_rep,
            "loop_extrapolated_s": per_rep * b, "loop_per_replicate_cpu_s": per_rep_cpu,
            "loop_extrapolated_cpu_s": per_rep_cpu * b, "loop_peak_mib": loop_peak}


def run(params: dict[str, Any], seed: np.random.SeedSequence, progress: bool) -> Table:
    """One row per (sweep, metric, B or |C|) (columns :data:`COLUMNS`)."""
    check(params)
    ks = [int(k) for k in params["n_concepts"]]
    k_max = max(ks + [int(params["n_concepts_at"])])
    gen_seed = child_seed(seed, 0)
    layer = planted_layer(int(params["n_samples"]), int(params["n_neurons"]), k_max,
                          concept_freq=float(params["concept_freq"]),
                          separation=float(params["separation"]), rng=gen_seed)
    jobs = [("n_boot", m, int(params["n_concepts_at"]), int(b))
            for m in params["metrics"] for b in params["n_boots"]]
    jobs += [("n_concepts", m, int(k), int(params["n_boot_at"]))
             for m in params["metrics"] for k in ks]
    be_seed = child_seed(seed, 1)  # the same replicate stream in every cell
    for m in params["metrics"]:  # untimed warm-up (imports, caches) of every code path
        small = slice(0, min(200, layer.activations.shape[0]))
        _be(layer.activations[small], np.ascontiguousarray(layer.concepts[small, :2]), m, 2,
            _kwargs(m, params), be_seed, traced=False)
    cache: dict[tuple[str, int, int], dict[str, Any]] = {}
    rows = []
    for sweep, m, k, b in _progress(jobs, total=len(jobs), desc=NAME, enabled=progress):
        key = (m, k, b)
        if key not in cache:
            cache[key] = _cell(layer, m, k, b, params, be_seed)
        rows.append({"sweep": sweep, **cache[key]})
    out = table_rows(rows)
    return {c: out[c] for c in COLUMNS}


# ---------------------------------------------------------------------------
# figure and reading


_M_COLORS = {"iou": "#2ca02c", "auroc": "#d62728"}


def _series(table: Table, sweep: str, metric: str, x: str, y: str):
    sel = (table["sweep"] == sweep) & (table["metric"] == metric)
    o = np.argsort(table[x][sel])
    return table[x][sel][o].astype(float), table[y][sel][o].astype(float)


def _label(table: Table, metric: str) -> str:
    b = table["binarization"][table["metric"] == metric][0]
    return f"{metric} ({b})" if metric == "iou" else metric


def _log_ticks(ax, table: Table, sweep: str, x: str) -> None:
    """Log-log axes with the swept values as plain x tick labels."""
    ax.set_xscale("log")
    ax.set_yscale("log")
    vals = sorted({int(v) for v in table[x][table["sweep"] == sweep]})
    ax.set_xticks(vals)
    ax.set_xticklabels([str(v) for v in vals])
    from matplotlib.ticker import NullLocator

    ax.xaxis.set_minor_locator(NullLocator())


def plot(table: Table, params: dict[str, Any]) -> Any:
    """Time (top) and peak memory (bottom) against B (left) and |C| (right), log-log."""
    plt = pyplot()
    mets = [m for m in METRICS if m in set(table["metric"])]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9.5))
    for col, (sweep, x, xlab) in enumerate(
            (("n_boot", "n_boot", f"bootstrap replicates B (|C| = {params['n_concepts_at']})"),
             ("n_concepts", "n_concepts", f"concepts |C| (B = {params['n_boot_at']})"))):
        ax = axes[0, col]
        for m in mets:
            c = _M_COLORS[m]
            xs, y = _series(table, sweep, m, x, "be_total_s")
            ax.plot(xs, y, "o-", color=c, lw=1.8, label=f"BE, wall, {_label(table, m)}")
            xs, y = _series(table, sweep, m, x, "be_cpu_s")
            ax.plot(xs, y, "x:", color=c, lw=1.2, label=f"BE, CPU time, {m}")
            xs, y = _series(table, sweep, m, x, "loop_extrapolated_s")
            ax.plot(xs, y, "s--", color=c, lw=1.2, mfc="white",
                    label=f"similarity loop, wall (extrapolated), {m}")
        _log_ticks(ax, table, sweep, x)
        ax.set_xlabel(xlab)
        ax.set_ylabel("time [s] (wall, or process CPU)")
        ax.set_title(f"({'ab'[col]}) time vs {'B' if col == 0 else '|C|'}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
        ax = axes[1, col]
        for m in mets:
            c = _M_COLORS[m]
            xs, y = _series(table, sweep, m, x, "be_peak_mib")
            ax.plot(xs, y, "o-", color=c, lw=1.8, label=f"BE, {_label(table, m)}")
            xs, y = _series(table, sweep, m, x, "loop_peak_mib")
            ax.plot(xs, y, "s--", color=c, lw=1.2, mfc="white",
                    label=f"one similarity() call, {m}")
        _log_ticks(ax, table, sweep, x)
        ax.set_xlabel(xlab)
        ax.set_ylabel("peak traced memory [MiB] (tracemalloc)")
        ax.set_title(f"({'cd'[col]}) peak memory vs {'B' if col == 0 else '|C|'}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7.5, loc="upper left")
    fig.suptitle(TITLE, fontsize=12)
    cap = (f"planted_layer: n = {params['n_samples']} samples, {params['n_neurons']} neurons, "
           f"concept frequency {params['concept_freq']:g}; bootstrap_explain (multinomial, "
           f"pruning on); loop = neurocert.similarity per replicate + argmax, timed on "
           f"{params['loop_reps']} replicates and scaled to B. Machine-dependent numbers.")
    return caption(fig, cap, bottom=0.01, room=0.04, top=0.96)



def _slope(x: np.ndarray, y: np.ndarray) -> float:
    ok = (x > 0) & (y > 0)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def reading(table: Table, params: dict[str, Any]) -> str:
    """One paragraph with the main numbers from the table."""
    mets = [m for m in METRICS if m in set(table["metric"])]
    parts = []
    for m in mets:
        xb, tb = _series(table, "n_boot", m, "n_boot", "be_total_s")
        _, cb = _series(table, "n_boot", m, "n_boot", "be_cpu_s")
        _, mb = _series(table, "n_boot", m, "n_boot", "be_peak_mib")
        xc, tc = _series(table, "n_concepts", m, "n_concepts", "be_total_s")
        _, cc = _series(table, "n_concepts", m, "n_concepts", "be_cpu_s")
        _, mc = _series(table, "n_concepts", m, "n_concepts", "be_peak_mib")
        _, lc = _series(table, "n_concepts", m, "n_concepts", "loop_extrapolated_s")
        _, lb = _series(table, "n_boot", m, "n_boot", "loop_extrapolated_s")
        _, cand = _series(table, "n_concepts", m, "n_concepts", "mean_candidates")
        ratio = np.concatenate([lb / tb, lc / tc])
        ratio = ratio[np.isfinite(ratio)]
        parts.append(
            f"{_label(table, m)}: B = {int(xb[0])} → {int(xb[-1])} takes {_g(tb[0])} → "
            f"{_g(tb[-1])} s wall (log-log slope {_g(_slope(xb, tb))}; {_g(cb[0])} → {_g(cb[-1])} s "
            f"CPU) with peak memory {_g(mb[0])} → {_g(mb[-1])} MiB; "
            f"|C| = {int(xc[0])} → {int(xc[-1])} takes {_g(tc[0])} → {_g(tc[-1])} s wall "
            f"(slope {_g(_slope(xc, tc))}; {_g(cc[0])} → {_g(cc[-1])} s CPU; {_g(cand[0])} → "
            f"{_g(cand[-1])} candidate concepts per neuron after pruning) and {_g(mc[0])} → "
            f"{_g(mc[-1])} MiB; the straightforward loop would need "
            f"{_g(ratio.min() if ratio.size else math.nan)}–"
            f"{_g(ratio.max() if ratio.size else math.nan)} times BE's wall time")
    agree = float(np.min(table["loop_agreement"]))
    mem = []
    for m in mets:
        xb, mb = _series(table, "n_boot", m, "n_boot", "be_peak_mib")
        per = (mb[-1] - mb[0]) / (xb[-1] - xb[0]) * MIB / float(table["n_samples"][0]) \
            if xb[-1] > xb[0] else math.nan
        mem.append(f"{_g(per)} bytes per replicate and sample for {m}")
    return (
        f"Cost of bootstrap_explain on a planted layer of {int(table['n_samples'][0])} samples "
        f"and {int(table['n_neurons'][0])} neurons (wall clock and process CPU time, the "
        f"fastest of {int(params['timing_repeats'])} call(s); peak memory = tracemalloc peak of "
        f"the allocations made during the call, numpy buffers included, inputs excluded). "
        + "; ".join(parts) + ". "
        f"The loop's replicate winners agree with BE's in a share {_g(agree)} of the checked "
        f"(replicate, neuron) pairs. BE never copies the data per replicate: it works on weight "
        f"vectors and sufficient statistics, but a chunk of replicates is processed at once, so "
        f"peak memory grows with B (from the B sweep: {', '.join(mem)}) until the chunk limit "
        f"({_g(BATCH_BYTES / MIB)} MiB of float32 weights, i.e. 4 bytes per replicate and "
        f"sample) applies; the AUROC engine's float64 temporaries make its peak many times the "
        f"weights. Timings vary between runs and machines and are inflated by other load.")
