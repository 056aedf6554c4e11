"""Simulation engine that checks the certificates of :mod:`neurocert.bounds` by violation rates.

Every function here draws many independent probing sets from a planted model with a
known population similarity (:mod:`neurocert.simulate`), computes the library's
confidence limits for each, and counts how often the population value falls outside.
A valid bound at failure probability ``delta`` violates at most a ``delta`` share of
the time, which :func:`scipy.stats.binomtest` checks one-sidedly.

* :func:`violation_grid` -- every rate-bounded metric over a grid of probing-set sizes,
  concept frequencies and binarizations (fixed threshold or ``top_frac``), with a power
  check (shrunken intervals must fail) and tightness ratios.
* :func:`grouped_violation` -- data constant within groups: bounds that count samples
  fail, bounds that count groups hold (through the public :func:`neurocert.identify`).
* :func:`certified_set_coverage` -- near-tied concepts (AUROC): how often the certified
  set contains the population-best concept, and how often the chosen concept's
  certificate is violated.

Fast paths (all vectorised over repetitions, and checked against
:func:`neurocert.identify` on the same data in ``tests/test_validity.py``):

* fixed threshold: the cell counts of a probing set are drawn exactly
  (:meth:`GaussianNeuron.sample_counts`) and all repetitions form one
  :class:`~neurocert.sufficient.CountStats` with ``per_neuron_concept=True``;
* ``top_frac`` and AUROC: real probing sets (:meth:`GaussianNeuron.sample_many`, in
  chunks of bounded memory). The concept label is embedded in the lowest mantissa bit
  of each float64 activation (:func:`embed_labels`, a change of at most one unit in the
  last place), so one value sort per probing set yields the concept counts among the
  top ``k``, ``k_lo`` and ``k_hi`` activations (ties at a cut-off are all active, as in
  :mod:`neurocert.binarize`) and the rank sum of the positives for AUROC. Probing
  sets are the embedded activations themselves, so the library sees exactly the same
  data; positive and negative activations can never tie.

Only numpy and scipy are needed.
"""

from __future__ import annotations

import csv
import math
import os
import sys
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as _st

from .binarize import top_frac_target
from .bounds import confidence_limits, threshold_band
from .exceptions import ValidationError
from .identify import THRESHOLD_SHARE, identify, rank_concepts
from .metrics import MetricOptions, get_metric
from .simulate import GaussianNeuron, near_tie_concepts, planted_layer
from .sufficient import CountStats, Design, RankStats, weighted_midranks

__all__ = [
    "COUNT_METRICS",
    "RATE_METRICS",
    "certified_set_coverage",
    "embed_labels",
    "fixed_threshold_stats",
    "grouped_violation",
    "limits",
    "summarize",
    "top_frac_rank_stats",
    "violation_grid",
    "write_table",
]

COUNT_METRICS: tuple[str, ...] = ("accuracy", "precision", "recall", "iou", "f1",
                                  "balanced_accuracy", "wpmi")
"""Count metrics with a certificate (conditional engine, or box engine with ``top_frac``)."""

RATE_METRICS: tuple[str, ...] = COUNT_METRICS + ("auroc",)
"""Every metric :func:`violation_grid` can check."""

_BYTES_PER_CELL = 32  # peak bytes per (sample, repetition) of one chunk: sample_many + copies
_DEFAULT_CHUNK_BYTES = 100e6


# ---------------------------------------------------------------------------
# seeding: every block of draws has its own SeedSequence, keyed by the cell


def _root_seed(rng: Any) -> np.random.SeedSequence:
    if isinstance(rng, np.random.SeedSequence):
        return rng
    if isinstance(rng, np.random.Generator):
        return np.random.SeedSequence(int(rng.integers(0, 2**63 - 1)))
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.SeedSequence(None if rng is None else int(rng))
    raise ValidationError(f"`rng` must be None, an int, a Generator or a SeedSequence; got {rng!r}")


def _child(root: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A seed that depends only on the root and the key (not on the order of cells)."""
    return np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + tuple(key))


def _code(x: float | None) -> int:
    return -1 if x is None else int(round(float(x) * 1e9))


# ---------------------------------------------------------------------------
# statistics of many probing sets at once


def fixed_threshold_stats(tp, active, present, n: int) -> CountStats:
    """One :class:`CountStats` for ``R`` probing sets of ``n`` samples each.

    ``tp``, ``active``, ``present`` are the per-set counts, shape ``(R,)``; the result has
    ``tp`` of shape ``(R, 1)`` and ``per_neuron_concept=True``, so every repetition is one
    (neuron, concept) pair of a single-concept problem.
    """
    return CountStats(tp=np.asarray(tp, np.float64).reshape(-1, 1),
                      active=np.asarray(active, np.float64).reshape(-1),
                      present=np.asarray(present, np.float64).reshape(-1),
                      design=Design(total=float(n), n_units=float(n)),
                      per_neuron_concept=True)


def embed_labels(activations: np.ndarray, concepts: np.ndarray, *, out: np.ndarray | None = None
                 ) -> np.ndarray:
    """Float64 activations whose lowest mantissa bit is the binarized concept (``>= 0.5``).

    The value moves by at most one unit in the last place; a positive and a negative
    sample can then never tie. Returns ``out`` (a new array when ``None``; may be the
    input when it is float64).
    """
    a = np.asarray(activations)
    if out is None:
        out = np.array(a, dtype=np.float64, copy=True)
    elif out is not a:
        out[...] = a
    bits = out.view(np.int64)
    np.bitwise_and(bits, ~np.int64(1), out=bits)
    np.bitwise_or(bits, np.asarray(concepts) >= 0.5, out=bits)
    return out


def _low_bits(sorted_rows: np.ndarray) -> np.ndarray:
    """Embedded labels (uint8 0/1) of a C-contiguous float64 array."""
    if sys.byteorder == "little":
        return sorted_rows.view(np.uint8)[..., ::8] & np.uint8(1)
    return (sorted_rows.view(np.int64) & 1).astype(np.uint8)  # pragma: no cover


def _sorted_set_stats(embedded: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    """Counts of probing sets given as columns of label-embedded activations ``(n, R)``.

    Returns ``present`` and ``pos_rank_sum`` (sum of 0-based ascending positions of the
    positives) per set, and per top count ``k``: ``active[k]`` (samples ``>=`` the k-th
    largest value; ties extend the set) and ``tp[k]`` (positives among them).
    """
    n, reps = embedded.shape
    s = np.array(embedded.T, dtype=np.float64, order="C")  # always a copy: sorted in place
    s.sort(axis=1)
    z = _low_bits(s)
    present = z.sum(axis=1, dtype=np.int64)
    pos_rank_sum = z.astype(np.float64) @ np.arange(n, dtype=np.float64)
    kmax = max([0] + [int(k) for k in ks])
    kmax = min(kmax, n)
    cz = np.cumsum(z[:, n - kmax:][:, ::-1], axis=1, dtype=np.int64) if kmax else None
    active: dict[int, np.ndarray] = {}
    tp: dict[int, np.ndarray] = {}
    for k in ks:
        k = int(min(max(k, 0), n))
        if k == 0:
            active[k] = np.zeros(reps, np.int64)
            tp[k] = np.zeros(reps, np.int64)
            continue
        a_k = np.full(reps, k, np.int64)
        t_k = cz[:, k - 1].copy()
        if k < n:
            tied = np.flatnonzero(s[:, n - k] == s[:, n - k - 1])
            for r in tied:  # cut-off value shared with the next sample: all ties are active
                start = int(np.searchsorted(s[r], s[r, n - k], side="left"))
                a_k[r] = n - start
                t_k[r] = int(z[r, start:].sum())
        active[k] = a_k
        tp[k] = t_k
    return {"present": present, "pos_rank_sum": pos_rank_sum, "active": active, "tp": tp}


def _band(n: int, q: float, delta: float) -> tuple[Design, int, int, int]:
    k = top_frac_target(q, float(n))
    design = Design(total=float(n), n_units=float(n), top_frac=q, active_target=k)
    td = delta * THRESHOLD_SHARE
    k_lo, k_hi = threshold_band(design, td)
    design = Design(total=float(n), n_units=float(n), top_frac=q, active_target=k,
                    threshold_delta=td, active_lo=k_lo, active_hi=k_hi)
    return design, int(k), int(k_lo), int(k_hi)


def top_frac_rank_stats(embedded: np.ndarray, *, top_fracs: Iterable[float], delta: float,
                        rank: bool = True) -> dict[Any, Any]:
    """Statistics of the probing sets in the columns of ``embedded`` (see :func:`embed_labels`).

    Returns ``{q: CountStats}`` for every ``top_frac`` ``q`` -- counts on the top
    ``k = ceil(q n)`` set and on the band sets ``k_lo``/``k_hi`` of
    :func:`neurocert.bounds.threshold_band` at ``delta * THRESHOLD_SHARE``, exactly as
    :func:`neurocert.identify` computes them -- and, with ``rank``, ``"auroc"``: the
    :class:`RankStats` of AUROC. All with ``per_neuron_concept=True`` (one row per set).
    """
    n, _ = embedded.shape
    bands = {q: _band(n, q, delta) for q in top_fracs}
    ks = sorted({k for _, *kk in bands.values() for k in kk})
    st = _sorted_set_stats(embedded, ks)
    return _assemble(st, n, bands, rank)


def _assemble(st: dict[str, Any], n: int, bands: dict[float, tuple], rank: bool) -> dict[Any, Any]:
    present = st["present"].astype(np.float64)
    out: dict[Any, Any] = {}
    for q, (design, k, k_lo, k_hi) in bands.items():
        out[q] = CountStats(tp=st["tp"][min(k, n)].astype(np.float64)[:, None],
                            active=st["active"][min(k, n)].astype(np.float64),
                            present=present, design=design, per_neuron_concept=True,
                            tp_lo=st["tp"][min(max(k_lo, 0), n)].astype(np.float64)[:, None],
                            tp_hi=st["tp"][min(max(k_hi, 0), n)].astype(np.float64)[:, None])
    if rank:
        # sum over positives of (midrank - n/2), midrank = 0-based position + 1/2 (no
        # positive/negative ties; ties within a class do not change the positives' sum)
        num = st["pos_rank_sum"] + 0.5 * present - 0.5 * n * present
        out["auroc"] = RankStats(num=num[:, None], present=present,
                                 design=Design(total=float(n), n_units=float(n)),
                                 per_neuron_concept=True)
    return out


def limits(stats, metric: str, *, delta: float, n_simultaneous: int = 1,
           options: MetricOptions | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(estimate, lower, upper)`` of every row of ``stats`` (flattened), via the library."""
    m = get_metric(metric)
    options = MetricOptions() if options is None else options
    est = m.finalize(stats, options)
    lo, hi = confidence_limits(stats, m, delta=delta, n_simultaneous=n_simultaneous,
                               options=options, estimate=est)
    return est.reshape(-1), np.asarray(lo, float).reshape(-1), np.asarray(hi, float).reshape(-1)


# ---------------------------------------------------------------------------
# one cell's summary


def _binom_p(k: int, reps: int, delta: float) -> float:
    return float(_st.binomtest(int(k), int(reps), float(delta), alternative="greater").pvalue)


def _expected_denominator(metric: str, n: int, p_fc: float, p_f: float, p_c: float) -> float:
    if metric in ("precision", "wpmi"):
        return n * p_f
    if metric in ("recall", "balanced_accuracy"):
        return n * p_c
    if metric in ("iou", "f1"):
        return n * (p_f + p_c - p_fc)
    if metric == "auroc":
        return n * min(p_c, 1.0 - p_c)
    return float(n)  # accuracy


def _summarise(est, lo, hi, pop: float, scale: float, delta: float) -> dict[str, Any]:
    reps = est.size
    defined = ~np.isnan(est)
    with np.errstate(invalid="ignore", over="ignore"):
        if scale == 1.0:
            low, upp = lo, hi
        else:
            low = np.where(defined, est - scale * (est - lo), lo)
            upp = np.where(defined, est + scale * (hi - est), hi)
        viol = defined & ((pop < low) | (pop > upp))
        k = int(viol.sum())
        nd = int(defined.sum())
        if nd:
            r = 0.5 * (upp[defined] - low[defined])
            med_r = float(np.median(r))
            q95 = float(np.quantile(np.abs(est[defined] - pop), 0.95))
        else:
            med_r = q95 = float("nan")
    if nd and math.isfinite(med_r) and med_r > 0:
        ratio = q95 / med_r
    elif nd and med_r == math.inf:
        ratio = 0.0
    else:
        ratio = float("nan")
    return {"reps": reps, "n_defined": nd, "undefined_share": 1.0 - nd / reps,
            "violations": k, "violation_rate": k / reps, "p_value": _binom_p(k, reps, delta),
            "median_r": med_r, "q95_abs_error": q95, "ratio": ratio}


def _scales(radius_scale) -> list[float]:
    vals = [float(radius_scale)] if np.ndim(radius_scale) == 0 else [float(s) for s in radius_scale]
    if not vals or any(not (s > 0 and math.isfinite(s)) for s in vals):
        raise ValidationError(f"`radius_scale` must be positive; got {radius_scale!r}")
    return vals


# ---------------------------------------------------------------------------
# the grid


def violation_grid(*, metrics: Sequence[str], ns: Sequence[int], concept_freqs: Sequence[float],
                   neuron_freqs: Sequence[float] = (0.005, 0.05),
                   top_fracs: Sequence[float | None] = (None, 0.005, 0.05),
                   reps: int = 2000, delta: float = 0.05, separation: float = 2.0,
                   rng: Any = None, radius_scale: float | Sequence[float] = 1.0,
                   workers: int | None = None,
                   chunk_bytes: float = _DEFAULT_CHUNK_BYTES) -> list[dict[str, Any]]:
    """Violation rates of the certificates over a grid of cells.

    One row per cell ``(metric, n, concept_freq, neuron_freq or top_frac)`` and per
    radius scale. Cells: for each ``None`` in ``top_fracs`` the fixed thresholds
    ``GaussianNeuron.threshold_for(neuron_freq)`` for every ``neuron_freq``; for each
    number ``q`` the data-dependent ``top_frac=q`` rule (estimand at the population
    quantile); AUROC has no threshold, so one cell per ``(n, concept_freq)``.

    Parameters
    ----------
    metrics : sequence of str
        Subset of :data:`RATE_METRICS`.
    ns, concept_freqs : sequences
        Probing-set sizes and concept frequencies (``GaussianNeuron(concept_freq,
        separation)``).
    reps : int
        Independent probing sets per cell (the same draws serve every metric of a
        binarization, so cells of one ``(n, concept_freq, binarization)`` are dependent).
    delta : float
        Failure probability of the certificates (one concept, ``n_simultaneous=1``).
    rng : None, int, Generator or SeedSequence
        Root seed; each block of draws gets a child seed keyed by its cell, so a cell's
        draws do not depend on which other cells are in the grid.
    radius_scale : float or sequence of floats
        Shrink the interval around the estimate: ``[s_hat - s (s_hat - L), s_hat + s (U - s_hat)]``.
        ``0.5`` is a power check: a sharp bound must then fail. A sequence gives one row
        per scale from the same draws.
    workers : int, optional
        Threads for the ``top_frac``/AUROC draws (numpy releases the GIL); the result does
        not depend on it. Default ``min(2, os.cpu_count())``.
    chunk_bytes : float
        Peak memory of one chunk of simulated probing sets (per thread).

    Returns
    -------
    list of dict
        Keys: ``metric, binarization, n, concept_freq, neuron_freq, top_frac, threshold,
        radius_scale, delta, separation, population, reps, n_defined, undefined_share,
        violations, violation_rate, p_value`` (one-sided binomial test of the violations
        against ``delta``; an undefined estimate has the vacuous interval and never
        violates), ``median_r`` (median of ``(U - L) / 2`` over defined repetitions),
        ``q95_abs_error`` (95% quantile of ``|s_hat - s|``), ``ratio``
        (``q95_abs_error / median_r``), ``expected_denominator`` (expected count the
        metric divides by: active samples for precision and WPMI, concept samples for
        recall and balanced accuracy, the union for IoU and F1, ``n`` for accuracy,
        ``n min(p, 1 - p)`` for AUROC) and ``seconds`` (the cell's share of the draws
        plus its own bound computation).
    """
    metrics = [get_metric(m).name for m in metrics]
    bad = [m for m in metrics if m not in RATE_METRICS]
    if bad:
        raise ValidationError(f"violation_grid checks {list(RATE_METRICS)}; got {bad}")
    if not (isinstance(reps, (int, np.integer)) and reps >= 1):
        raise ValidationError(f"`reps` must be a positive integer; got {reps!r}")
    if not 0 < delta < 1:
        raise ValidationError(f"`delta` must lie in (0, 1); got {delta!r}")
    scales = _scales(radius_scale)
    root = _root_seed(rng)
    workers = min(2, os.cpu_count() or 1) if workers is None else max(1, int(workers))
    count_metrics = [m for m in metrics if m != "auroc"]
    fracs = [float(q) for q in top_fracs if q is not None]
    fixed = any(q is None for q in top_fracs)
    rows: list[dict[str, Any]] = []
    sep = float(separation)

    def emit(metric, est, lo, hi, pop, base, share, t_own):
        for s in scales:
            row = dict(base)
            row.update(metric=metric, radius_scale=s, population=pop, delta=delta,
                       separation=sep)
            row.update(_summarise(est, lo, hi, pop, s, delta))
            row["seconds"] = share + t_own
            rows.append(row)

    for n in ns:
        n = int(n)
        for cf in concept_freqs:
            cf = float(cf)
            g = GaussianNeuron(concept_freq=cf, separation=sep)
            # --- fixed thresholds: exact multinomial cell counts
            if fixed and count_metrics:
                for nf in neuron_freqs:
                    nf = float(nf)
                    t0 = time.perf_counter()
                    tau = g.threshold_for(nf)
                    m = g.masses(tau)
                    cnt = g.sample_counts(n, int(reps), threshold=tau,
                                          rng=_child(root, 1, n, _code(cf), _code(nf)))
                    stats = fixed_threshold_stats(cnt["tp"], cnt["active"], cnt["present"], n)
                    share = (time.perf_counter() - t0) / len(count_metrics)
                    for metric in count_metrics:
                        t1 = time.perf_counter()
                        est, lo, hi = limits(stats, metric, delta=delta)
                        pop = g.population(metric, threshold=tau)
                        base = {"binarization": "threshold", "n": n, "concept_freq": cf,
                                "neuron_freq": nf, "top_frac": float("nan"), "threshold": tau,
                                "expected_denominator": _expected_denominator(
                                    metric, n, m["p_fc"], m["p_f"], m["p_c"])}
                        emit(metric, est, lo, hi, pop, base, share, time.perf_counter() - t1)
            # --- top_frac and AUROC: real probing sets, one sort each
            want_rank = "auroc" in metrics
            q_cells = fracs if count_metrics else []
            if not q_cells and not want_rank:
                continue
            t0 = time.perf_counter()
            bands = {q: _band(n, q, delta) for q in q_cells}
            ks = sorted({k for _, *kk in bands.values() for k in kk})
            st = _simulate_sets(g, n, int(reps), ks, root, cf, workers, chunk_bytes)
            stats = _assemble(st, n, bands, want_rank)
            n_cells = len(q_cells) * len(count_metrics) + (1 if want_rank else 0)
            share = (time.perf_counter() - t0) / n_cells
            for q in q_cells:
                tau_q = g.threshold_for(q)
                m = g.masses(tau_q)
                for metric in count_metrics:
                    t1 = time.perf_counter()
                    est, lo, hi = limits(stats[q], metric, delta=delta)
                    pop = g.population(metric, top_frac=q)
                    base = {"binarization": "top_frac", "n": n, "concept_freq": cf,
                            "neuron_freq": float("nan"), "top_frac": q, "threshold": tau_q,
                            "expected_denominator": _expected_denominator(
                                metric, n, m["p_fc"], m["p_f"], m["p_c"])}
                    emit(metric, est, lo, hi, pop, base, share, time.perf_counter() - t1)
            if want_rank:
                t1 = time.perf_counter()
                est, lo, hi = limits(stats["auroc"], "auroc", delta=delta)
                pop = g.population("auroc")
                base = {"binarization": "rank", "n": n, "concept_freq": cf,
                        "neuron_freq": float("nan"), "top_frac": float("nan"),
                        "threshold": float("nan"),
                        "expected_denominator": _expected_denominator("auroc", n, 0, 0, cf)}
                emit("auroc", est, lo, hi, pop, base, share, time.perf_counter() - t1)
    return rows


def _simulate_sets(g: GaussianNeuron, n: int, reps: int, ks: Sequence[int],
                   root: np.random.SeedSequence, cf: float, workers: int,
                   chunk_bytes: float) -> dict[str, Any]:
    """Draw ``reps`` probing sets in chunks (threads), return their concatenated counts."""
    chunk = int(max(1, min(reps, chunk_bytes // (_BYTES_PER_CELL * n))))
    starts = list(range(0, reps, chunk))

    def run(i: int) -> dict[str, Any]:
        c = min(chunk, reps - starts[i])
        a, z = g.sample_many(n, c, rng=_child(root, 2, n, _code(cf), _code(g.separation), i),
                             dtype=np.float64)
        embed_labels(a, z, out=a)
        del z
        return _sorted_set_stats(a, ks)

    if workers > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=workers) as ex:
            parts = list(ex.map(run, range(len(starts))))
    else:
        parts = [run(i) for i in range(len(starts))]
    return {
        "present": np.concatenate([p["present"] for p in parts]),
        "pos_rank_sum": np.concatenate([p["pos_rank_sum"] for p in parts]),
        "active": {k: np.concatenate([p["active"][k] for p in parts]) for k in parts[0]["active"]},
        "tp": {k: np.concatenate([p["tp"][k] for p in parts]) for k in parts[0]["tp"]},
    }


# ---------------------------------------------------------------------------
# grouped samples


def grouped_violation(*, metric: str = "iou", n_groups: int = 200, group_size: int = 25,
                      concept_freq: float = 0.1, neuron_freq: float | None = 0.1,
                      top_frac: float | None = None, reps: int = 2000, delta: float = 0.05,
                      separation: float = 2.0, rng: Any = None) -> dict[str, Any]:
    """Violation rates with data constant within groups, counting samples vs groups.

    Each probing set is :func:`neurocert.simulate.planted_layer` with one neuron, one
    concept and ``groups=n_groups`` (every group is one draw repeated ``group_size``
    times, so only the groups are independent). The population similarity (a ratio of
    expectations) is that of the underlying :class:`GaussianNeuron`. For every set,
    :func:`neurocert.identify` is called twice: without ``groups`` (the bound treats all
    samples as independent) and with ``groups=`` (the bound counts groups).

    Binarization: the fixed threshold ``threshold_for(neuron_freq)``, or ``top_frac``
    when given (then ``neuron_freq`` is ignored).

    Returns
    -------
    dict
        Cell description, ``population``, and for ``"samples"`` and ``"groups"``: the
        number of violations, violation rate, one-sided binomial p-value against
        ``delta``, and median half-width; ``undefined`` counts sets with an undefined
        estimate (vacuous interval, no violation).
    """
    if not (isinstance(reps, (int, np.integer)) and reps >= 1):
        raise ValidationError(f"`reps` must be a positive integer; got {reps!r}")
    root = _root_seed(rng)
    g = GaussianNeuron(concept_freq=concept_freq, separation=separation)
    kw: dict[str, Any]
    if top_frac is not None:
        kw = {"top_frac": float(top_frac)}
        pop = g.population(metric, top_frac=top_frac)
    elif metric == "auroc":
        kw = {}
        pop = g.population(metric)
    else:
        tau = g.threshold_for(neuron_freq)
        kw = {"threshold": tau}
        pop = g.population(metric, threshold=tau)
    n = int(n_groups) * int(group_size)
    t0 = time.perf_counter()
    viol = {"samples": 0, "groups": 0}
    radii: dict[str, list[float]] = {"samples": [], "groups": []}
    undefined = 0
    for r in range(int(reps)):
        layer = planted_layer(n, 1, 1, concept_freq=concept_freq, separation=separation,
                              groups=int(n_groups), rng=_child(root, 3, r))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for key, groups in (("samples", None), ("groups", layer.groups)):
                res = identify(layer.activations, layer.concepts, metric=metric, delta=delta,
                               groups=groups, **kw)
                lo, hi = float(res.lower[0, 0]), float(res.upper[0, 0])
                if np.isnan(res.similarity[0, 0]):
                    undefined += key == "samples"
                    continue
                viol[key] += int(pop < lo or pop > hi)
                radii[key].append(0.5 * (hi - lo))
    out: dict[str, Any] = {"metric": metric, "n_groups": int(n_groups),
                           "group_size": int(group_size), "n_samples": n,
                           "concept_freq": float(concept_freq),
                           "neuron_freq": None if top_frac is not None else neuron_freq,
                           "top_frac": top_frac, "delta": delta, "reps": int(reps),
                           "population": pop, "undefined": undefined}
    for key in ("samples", "groups"):
        k = viol[key]
        out[key] = {"violations": k, "violation_rate": k / reps,
                    "p_value": _binom_p(k, reps, delta),
                    "median_r": float(np.median(radii[key])) if radii[key] else float("nan")}
    out["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------
# certified-set coverage under near ties (AUROC)


def certified_set_coverage(*, ns: Sequence[int] = (1000, 10000),
                           m_tieds: Sequence[int] = (1, 2, 5, 20),
                           concept_freqs: Sequence[float] = (0.1, 0.01), reps: int = 1000,
                           delta: float = 0.05, n_other: int = 4, gap_se: float = 1.0,
                           best_auroc: float = 0.8, clear_gap_se: float = 8.0,
                           rng: Any = None, verify_reps: int = 0,
                           chunk_bytes: float = _DEFAULT_CHUNK_BYTES) -> list[dict[str, Any]]:
    """Coverage of the certified set and of the chosen concept's certificate (AUROC).

    For each cell ``(n, m_tied, concept_freq)`` the model of
    :func:`neurocert.simulate.near_tie_concepts` is solved once: one ``N(0, 1)`` neuron,
    ``m_tied + n_other`` probit concepts of prevalence ``concept_freq``, concept 0 the
    population best (AUROC ``best_auroc``), the ``m_tied`` leading concepts within
    ``gap_se`` standard errors of it and ``n_other`` clearly worse ones. Then ``reps``
    probing sets are drawn from it: ``a ~ N(0, 1)`` and ``z_c = 1[e_c < alpha_c + beta_c a]``
    with ``e_c ~ N(0, 1)`` (float32 latent noise), i.e. ``P(z_c = 1 | a) = Phi(alpha_c +
    beta_c a)``, the law of ``near_tie_concepts`` up to float32 rounding (~1e-7).

    The library's limits are computed for all sets at once (one :class:`RankStats` with
    one row per (set, concept) and ``n_simultaneous`` = the number of concepts, which is
    what :func:`neurocert.identify` does for one neuron); the chosen concept is the
    library's argmax (:func:`neurocert.identify.rank_concepts`) and the certified set
    ``{c : upper_c >= max_j lower_j}``. ``verify_reps`` sets per cell are recomputed with
    :func:`neurocert.identify` and must agree to 1e-12 (``AssertionError`` otherwise).

    ``clear_gap_se`` is capped per cell so that the clearly-worse concepts stay at or
    above AUROC 0.5 (a small ``n p`` cannot fit 8 standard errors below 0.8).

    Returns
    -------
    list of dict
        Per cell: ``coverage`` (share of sets whose certified set contains concept 0),
        ``misses``, ``miss_rate``, ``p_value`` (one-sided binomial test of the misses
        against ``delta``), ``mean_set_size``, ``cert_violations`` /
        ``cert_violation_rate`` / ``cert_p_value`` (the chosen concept's lower limit above
        its population AUROC), ``best_chosen`` (share of sets choosing concept 0),
        ``undefined`` (sets where every AUROC is undefined) and ``seconds``.
    """
    if not (isinstance(reps, (int, np.integer)) and reps >= 1):
        raise ValidationError(f"`reps` must be a positive integer; got {reps!r}")
    root = _root_seed(rng)
    metric = get_metric("auroc")
    options = MetricOptions()
    rows = []
    for n in ns:
        n = int(n)
        midrank = np.arange(n, dtype=np.float64) + 0.5 - 0.5 * n  # of sorted distinct values
        for cf in concept_freqs:
            cf = float(cf)
            se = math.sqrt(best_auroc * (1 - best_auroc) / (n * cf * (1 - cf)))
            for m_tied in m_tieds:
                t0 = time.perf_counter()
                n_concepts = int(m_tied) + int(n_other)
                clear = min(float(clear_gap_se), max(0.5, (best_auroc - 0.5) / se - gap_se))
                model = near_tie_concepts(n, n_concepts=n_concepts, m_tied=int(m_tied),
                                          concept_freq=cf, gap_se=gap_se, best_auroc=best_auroc,
                                          clear_gap_se=clear,
                                          rng=_child(root, 4, n, _code(cf), int(m_tied)))
                pop = model.population_sim
                alpha = model.intercepts.astype(np.float32)
                beta = model.slopes.astype(np.float32)
                chunk = int(max(1, min(reps, chunk_bytes // (14 * n * n_concepts))))
                misses = cert_viol = chosen_best = undefined = 0
                size_sum = 0
                for ci, s0 in enumerate(range(0, reps, chunk)):
                    c = min(chunk, reps - s0)
                    gen = np.random.default_rng(_child(root, 5, n, _code(cf), int(m_tied), ci))
                    a = gen.standard_normal((c, n))
                    a.sort(axis=1)  # samples are i.i.d.: their order is immaterial
                    e = gen.standard_normal((c, n, n_concepts), dtype=np.float32)
                    e -= beta * a.astype(np.float32)[:, :, None]
                    z = (e < alpha).astype(np.float64)                  # (c, n, C)
                    del e
                    if np.all(a[:, 1:] > a[:, :-1]):
                        num = np.matmul(midrank, z)                     # (c, C)
                    else:  # pragma: no cover - ties have probability ~1e-8
                        ranks = weighted_midranks(a.T, None).T - 0.5 * n
                        num = np.matmul(ranks[:, None, :], z)[:, 0, :]
                    present = z.sum(axis=1)                              # (c, C)
                    st = RankStats(num=num.reshape(-1, 1), present=present.reshape(-1),
                                   design=Design(total=float(n), n_units=float(n)),
                                   per_neuron_concept=True)
                    est = metric.finalize(st, options)
                    lo, hi = confidence_limits(st, metric, delta=delta,
                                               n_simultaneous=n_concepts, options=options,
                                               estimate=est)
                    est = est.reshape(c, n_concepts)
                    lo = np.asarray(lo).reshape(c, n_concepts)
                    hi = np.asarray(hi).reshape(c, n_concepts)
                    all_nan = np.all(np.isnan(est), axis=1)
                    best = np.where(all_nan, -1, rank_concepts(est)[:, 0])
                    member = hi >= lo.max(axis=1, keepdims=True)
                    misses += int((~member[:, 0]).sum())
                    size_sum += int(member.sum())
                    bi = np.maximum(best, 0)
                    bl = lo[np.arange(c), bi]
                    cert_viol += int(((best >= 0) & (bl > pop[bi])).sum())
                    chosen_best += int((best == 0).sum())
                    undefined += int(all_nan.sum())
                    if ci == 0 and verify_reps:
                        _verify_coverage(a, z, est, lo, hi, best, member, delta,
                                         min(int(verify_reps), c))
                rows.append({
                    "n": n, "m_tied": int(m_tied), "concept_freq": cf,
                    "n_concepts": n_concepts, "gap_se": gap_se, "clear_gap_se": clear,
                    "best_auroc": float(pop[0]), "reps": int(reps), "delta": delta,
                    "coverage": 1.0 - misses / reps, "misses": misses,
                    "miss_rate": misses / reps, "p_value": _binom_p(misses, reps, delta),
                    "mean_set_size": size_sum / reps, "cert_violations": cert_viol,
                    "cert_violation_rate": cert_viol / reps,
                    "cert_p_value": _binom_p(cert_viol, reps, delta),
                    "best_chosen": chosen_best / reps, "undefined": undefined,
                    "seconds": time.perf_counter() - t0})
    return rows


def _verify_coverage(a, z, est, lo, hi, best, member, delta, k) -> None:
    for r in range(k):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = identify(a[r][:, None], z[r], metric="auroc", delta=delta)
        np.testing.assert_allclose(res.similarity[0], est[r], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.lower[0], lo[r], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.upper[0], hi[r], rtol=0, atol=1e-12)
        assert int(res.best[0]) == int(best[r]), (res.best[0], best[r])
        assert set(res.certified_sets[0].tolist()) == set(np.flatnonzero(member[r]).tolist())


# ---------------------------------------------------------------------------
# reporting


def write_table(rows: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Write rows (dicts with the same keys) as CSV; creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    for r in rows:
        keys.extend(k for k in r if k not in keys)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow(r)
    os.replace(tmp, path)
    return path


def _cell_name(r: dict[str, Any]) -> str:
    if r["binarization"] == "threshold":
        b = f"neuron_freq={r['neuron_freq']:g}"
    elif r["binarization"] == "top_frac":
        b = f"top_frac={r['top_frac']:g}"
    else:
        b = "rank"
    return f"n={r['n']:g} concept_freq={r['concept_freq']:g} {b}"


def summarize(rows: Sequence[dict[str, Any]], *, scale: float = 1.0) -> str:
    """Compact per-metric summary of :func:`violation_grid` rows at one radius scale."""
    lines = [f"{'metric':<18} {'cells':>5} {'worst rate':>10} {'min p':>8}  worst cell"]
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r["radius_scale"] == scale:
            by.setdefault(r["metric"], []).append(r)
    for metric, rs in by.items():
        worst = max(rs, key=lambda r: (r["violation_rate"], -r["p_value"]))
        min_p = min(r["p_value"] for r in rs)
        lines.append(f"{metric:<18} {len(rs):>5} {worst['violation_rate']:>10.4f} "
                     f"{min_p:>8.2g}  {_cell_name(worst)}")
    return "\n".join(lines)

