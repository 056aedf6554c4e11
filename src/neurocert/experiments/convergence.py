"""Convergence of the similarity metrics with the probing-set size (the paper's Figure 2).

Model: :class:`neurocert.simulate.GaussianNeuron` -- ``z ~ Bernoulli(concept_freq)``,
``a = separation * z + N(0, 1)`` -- with the neuron binarized at the fixed threshold
whose population activation frequency is ``neuron_freq`` (by default equal to the
concept frequency: the neuron fires as often as its concept). For every probing-set
size ``n`` on a log grid, ``reps`` independent probing sets are drawn *exactly* and
cheaply:

* count metrics (accuracy, IoU, recall, precision): the four cell counts of a probing
  set are one multinomial draw (:meth:`GaussianNeuron.sample_counts`);
* AUROC: the number of positives is binomial; given it, the Mann-Whitney count is
  computed from sorted positive and negative activations, or -- when one class is small
  -- from the sorted small class and a multinomial draw of how many samples of the
  other class fall between consecutive small-class values (exact, ``O(small class)``).

The estimates are the library's (:func:`neurocert.validity.limits` on the sufficient
statistics, the same code :func:`neurocert.identify` runs). The statistic plotted is the
95% quantile of ``|sim_hat - sim|`` over the repetitions whose estimate is defined; the
share of undefined estimates (no positives, no active samples, ...) is in the table.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from scipy import special

from .._progress import progress as _progress
from ..exceptions import LowFrequencyAccuracyWarning, ValidationError
from ..simulate import GaussianNeuron
from ..sufficient import Design, RankStats
from ..validity import fixed_threshold_stats, limits
from ._base import Table, child_seed, pyplot, table_rows

NAME = "convergence"
TITLE = "Convergence of the similarity metrics with probing-set size"
FIGURE = "Figure 2"

METRICS = ("accuracy", "auroc", "iou", "recall", "precision")
_LOW_FREQUENCY_ACCURACY = 0.05  # as neurocert.similarity.LOW_FREQUENCY_ACCURACY

_DEFAULT_NS = [100, 215, 464, 1000, 2154, 4642, 10000, 21544, 46416, 100000]

PARAMS: dict[str, dict[str, Any]] = {
    "default": {"ns": _DEFAULT_NS, "concept_freqs": [0.5, 0.001],
                "neuron_freqs": [0.5, 0.001], "separation": 2.0, "reps": 2000,
                "metrics": list(METRICS), "quantile": 0.95},
    "quick": {"ns": [1000, 4000, 16000], "concept_freqs": [0.5, 0.001],
              "neuron_freqs": [0.5, 0.001], "separation": 2.0, "reps": 2000,
              "metrics": list(METRICS), "quantile": 0.95},
}

_COLORS = {"accuracy": "#1f77b4", "auroc": "#d62728", "iou": "#2ca02c",
           "recall": "#9467bd", "precision": "#ff7f0e"}
_MARKERS = {"accuracy": "o", "auroc": "s", "iou": "^", "recall": "v", "precision": "D"}


# ---------------------------------------------------------------------------
# parameters


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _freq(x: Any, where: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) \
            or not (0.0 < float(x) < 1.0):
        raise ValidationError(f"{NAME}: {where} must be a number in (0, 1); got {x!r}")
    return float(x)


def check_sim(params: dict[str, Any], name: str = NAME) -> None:
    """Validate the simulation parameters shared by ``convergence`` and ``theory``."""
    need = ("ns", "concept_freqs", "neuron_freqs", "separation", "reps", "metrics", "quantile")
    missing = [k for k in need if k not in params]
    if missing:
        raise ValidationError(f"{name}: missing parameter(s) {missing}")
    ns = params["ns"]
    if not isinstance(ns, (list, tuple)) or not ns:
        raise ValidationError(f"{name}: `ns` must be a non-empty list of integers >= 1; got {ns!r}")
    for n in ns:
        if not _is_int(n) or n < 1:
            raise ValidationError(f"{name}: every n in `ns` must be an integer >= 1; got {n!r}")
    if len({int(n) for n in ns}) != len(ns):
        raise ValidationError(f"{name}: `ns` has duplicates: {list(ns)}")
    cfs, nfs = params["concept_freqs"], params["neuron_freqs"]
    if not isinstance(cfs, (list, tuple)) or not cfs:
        raise ValidationError(f"{name}: `concept_freqs` must be a non-empty list; got {cfs!r}")
    if not isinstance(nfs, (list, tuple)) or len(nfs) != len(cfs):
        raise ValidationError(
            f"{name}: `neuron_freqs` must be a list with one neuron frequency per concept "
            f"frequency ({len(cfs)}); got {nfs!r}")
    for c in cfs:
        _freq(c, "every concept frequency")
    for f in nfs:
        _freq(f, "every neuron frequency")
    if len({float(c) for c in cfs}) != len(cfs):
        raise ValidationError(f"{name}: `concept_freqs` has duplicates: {list(cfs)}")
    sep = params["separation"]
    if isinstance(sep, bool) or not isinstance(sep, (int, float)) or not math.isfinite(sep):
        raise ValidationError(f"{name}: `separation` must be a finite number; got {sep!r}")
    reps = params["reps"]
    if not _is_int(reps) or reps < 20:
        raise ValidationError(f"{name}: `reps` must be an integer >= 20; got {reps!r}")
    mets = params["metrics"]
    if not isinstance(mets, (list, tuple)) or not mets:
        raise ValidationError(f"{name}: `metrics` must be a non-empty list; got {mets!r}")
    bad = [m for m in mets if m not in METRICS]
    if bad:
        raise ValidationError(f"{name}: unknown metric(s) {bad}; known: {list(METRICS)}")
    q = params["quantile"]
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
        raise ValidationError(f"{name}: `quantile` must lie in (0, 1); got {q!r}")


def check(params: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` for bad parameters (before any work)."""
    check_sim(params, NAME)


def warn_accuracy(params: dict[str, Any]) -> None:
    """:class:`LowFrequencyAccuracyWarning` when accuracy meets a concept rarer than 5%."""
    if "accuracy" not in params["metrics"]:
        return
    rare = [float(c) for c in params["concept_freqs"]
            if min(float(c), 1 - float(c)) < _LOW_FREQUENCY_ACCURACY]
    if rare:
        warnings.warn(
            f"accuracy with concept frequency {', '.join(f'{c:g}' for c in rare)} (below "
            f"{_LOW_FREQUENCY_ACCURACY}): a neuron that never fires scores 1 - p_c, so "
            "accuracy's small error at rare concepts says little about the neuron; prefer "
            "iou, f1 or auroc", LowFrequencyAccuracyWarning, stacklevel=3)


# ---------------------------------------------------------------------------
# exact fast sampling


def _code(x: float) -> int:
    return int(round(float(x) * 1e9))


def auroc_stats(g: GaussianNeuron, n: int, reps: int, rng: np.random.SeedSequence) -> RankStats:
    """:class:`RankStats` of ``reps`` exact probing sets of size ``n`` (one row per set).

    ``U`` (pairs with the positive above the negative) is exact: the number of positives
    is ``Binomial(n, concept_freq)``; positives are ``N(separation, 1)`` and negatives
    ``N(0, 1)``. When one class holds fewer than ``n / 8`` samples, its sorted values are
    drawn and the other class is spread over the gaps between them by one multinomial
    draw (the gap probabilities are differences of that class's normal CDF); otherwise
    both classes are drawn, sorted and merged with :func:`numpy.searchsorted`.
    """
    gen = np.random.default_rng(rng)
    d = g.separation
    m_pos = gen.binomial(n, g.concept_freq, size=reps).astype(np.int64)
    u = np.zeros(reps, dtype=np.float64)
    for r in range(reps):
        mp = int(m_pos[r])
        mn = n - mp
        if mp == 0 or mn == 0:
            continue
        if 8 * min(mp, mn) < n:
            if mp <= mn:  # sorted positives; negatives below each: multinomial over gaps
                s = np.sort(gen.standard_normal(mp) + d)
                cdf = special.ndtr(s)
                k = gen.multinomial(mn, np.diff(np.concatenate(([0.0], cdf, [1.0]))))
                u[r] = float(np.cumsum(k[:-1]).sum())
            else:  # sorted negatives; positives below each
                s = np.sort(gen.standard_normal(mn))
                cdf = special.ndtr(s - d)
                k = gen.multinomial(mp, np.diff(np.concatenate(([0.0], cdf, [1.0]))))
                u[r] = float(mp) * mn - float(np.cumsum(k[:-1]).sum())
        else:
            pos = np.sort(gen.standard_normal(mp) + d)
            neg = np.sort(gen.standard_normal(mn))
            u[r] = float(np.searchsorted(neg, pos).sum())
    present = m_pos.astype(np.float64)
    # centred rank sum of the positives: sum (midrank - n/2) = U - m (n - m) / 2
    num = u - 0.5 * present * (n - present)
    return RankStats(num=num[:, None], present=present,
                     design=Design(total=float(n), n_units=float(n)), per_neuron_concept=True)


def simulate(params: dict[str, Any], seed: np.random.SeedSequence, *, progress: bool,
             desc: str, intervals: bool = False, delta: float = 0.05
             ) -> Iterator[dict[str, Any]]:
    """Yield one record per (concept frequency, n, metric) cell.

    Each record has the cell, the population value, the estimates of all repetitions
    and, with ``intervals``, the library's certificate limits at ``delta``
    (``n_simultaneous=1``). Draws are keyed by ``(kind, n, concept_freq)`` under ``seed``,
    so a cell's draws do not depend on the rest of the grid.
    """
    sep = float(params["separation"])
    reps = int(params["reps"])
    metrics = list(params["metrics"])
    count_metrics = [m for m in metrics if m != "auroc"]
    cells = [(float(cf), float(nf), int(n))
             for cf, nf in zip(params["concept_freqs"], params["neuron_freqs"], strict=True)
             for n in params["ns"]]
    for cf, nf, n in _progress(cells, total=len(cells), desc=desc, enabled=progress):
        g = GaussianNeuron(concept_freq=cf, separation=sep)
        tau = g.threshold_for(nf)
        stats_by_metric: dict[str, Any] = {}
        if count_metrics:
            cnt = g.sample_counts(n, reps, threshold=tau,
                                  rng=child_seed(seed, 1, n, _code(cf), _code(nf)))
            st = fixed_threshold_stats(cnt["tp"], cnt["active"], cnt["present"], n)
            for m in count_metrics:
                stats_by_metric[m] = st
        if "auroc" in metrics:
            stats_by_metric["auroc"] = auroc_stats(g, n, reps, child_seed(seed, 2, n, _code(cf)))
        for m in metrics:
            est, lo, hi = limits(stats_by_metric[m], m, delta=delta)
            pop = g.population(m) if m == "auroc" else g.population(m, threshold=tau)
            rec = {"metric": m, "concept_freq": cf, "neuron_freq": nf, "threshold": tau,
                   "n": n, "population": pop, "estimate": est}
            if intervals:
                rec["lower"], rec["upper"] = lo, hi
            yield rec


def summarise_errors(est: np.ndarray, pop: float, quantile: float) -> dict[str, Any]:
    """Undefined share and error quantiles over the defined repetitions."""
    defined = ~np.isnan(est)
    nd = int(defined.sum())
    err = np.abs(est[defined] - pop)
    return {"reps": int(est.size), "n_defined": nd, "undefined_share": 1.0 - nd / est.size,
            "q_abs_error": float(np.quantile(err, quantile)) if nd else float("nan"),
            "median_abs_error": float(np.median(err)) if nd else float("nan")}


# ---------------------------------------------------------------------------
# the contract


def run(params: dict[str, Any], seed: np.random.SeedSequence, progress: bool) -> Table:
    """The quantile of ``|sim_hat - sim|`` per (metric, concept frequency, n)."""
    check(params)
    warn_accuracy(params)
    q = float(params["quantile"])
    rows = []
    for rec in simulate(params, seed, progress=progress, desc=NAME):
        s = summarise_errors(rec["estimate"], rec["population"], q)
        rows.append({"metric": rec["metric"], "concept_freq": rec["concept_freq"],
                     "neuron_freq": rec["neuron_freq"], "threshold": rec["threshold"],
                     "separation": float(params["separation"]), "n": rec["n"],
                     "population": rec["population"], "reps": s["reps"],
                     "n_defined": s["n_defined"], "undefined_share": s["undefined_share"],
                     "q95_abs_error": s["q_abs_error"],
                     "median_abs_error": s["median_abs_error"]})
    return _sorted(table_rows(rows))


def _sorted(t: Table) -> Table:
    metric_order = {m: i for i, m in enumerate(METRICS)}
    key = np.lexsort((t["n"], -t["concept_freq"], [metric_order[m] for m in t["metric"]]))
    return {k: v[key] for k, v in t.items()}


def slope(t: Table, metric: str, concept_freq: float, column: str = "q95_abs_error") -> float:
    """Least-squares slope of log(column) against log(n) for one metric and frequency."""
    sel = (t["metric"] == metric) & np.isclose(t["concept_freq"], concept_freq)
    x = np.log(t["n"][sel].astype(float))
    y = t[column][sel].astype(float)
    ok = np.isfinite(y) & (y > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(x[ok], np.log(y[ok]), 1)[0])


def value(t: Table, metric: str, concept_freq: float, n: int,
          column: str = "q95_abs_error") -> float:
    """One cell of the table (NaN when absent)."""
    sel = (t["metric"] == metric) & np.isclose(t["concept_freq"], concept_freq) & (t["n"] == n)
    return float(t[column][sel][0]) if sel.any() else float("nan")


def _caption(params: dict[str, Any]) -> str:
    pairs = ", ".join(f"concept {c:g} / neuron {f:g}"
                      for c, f in zip(params["concept_freqs"], params["neuron_freqs"], strict=True))
    return (f"GaussianNeuron: a = {float(params['separation']):g}·z + N(0,1); fixed threshold with "
            f"P(active) = neuron frequency ({pairs}); {params['reps']} exact probing sets per "
            f"cell; {params['quantile']:g}-quantile of |sim_hat - sim| over the sets whose "
            "estimate is defined (open markers: some sets undefined). Dashed: slope -1/2.")


def plot(table: Table, params: dict[str, Any]) -> Any:
    """One panel per concept frequency: error quantile against n (log-log)."""
    plt = pyplot()
    cfs = [float(c) for c in params["concept_freqs"]]
    nfs = [float(f) for f in params["neuron_freqs"]]
    fig, axes = plt.subplots(1, len(cfs), figsize=(5.6 * len(cfs), 4.9), squeeze=False,
                             sharey=True)
    for ax, cf, nf in zip(axes[0], cfs, nfs, strict=True):
        for m in params["metrics"]:
            sel = (table["metric"] == m) & np.isclose(table["concept_freq"], cf)
            n = table["n"][sel].astype(float)
            y = table["q95_abs_error"][sel].astype(float)
            und = table["undefined_share"][sel].astype(float)
            ok = np.isfinite(y) & (y > 0)
            ax.plot(n[ok], y[ok], "-", color=_COLORS[m], lw=1.4, label=m)
            full = ok & (und == 0)
            part = ok & (und > 0)
            ax.plot(n[full], y[full], _MARKERS[m], color=_COLORS[m], ms=5)
            ax.plot(n[part], y[part], _MARKERS[m], color=_COLORS[m], ms=5, mfc="white")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"concept frequency {cf:g} (neuron frequency {nf:g})")
        ax.set_xlabel("probing-set size n")
        ax.grid(True, which="major", alpha=0.3)
    ns = np.array(sorted(float(x) for x in params["ns"]))
    for ax, cf in zip(axes[0], cfs, strict=True):  # reference slope above the panel's data
        first = table["q95_abs_error"][np.isclose(table["concept_freq"], cf)
                                       & (table["n"] == ns[0])].astype(float)
        first = first[np.isfinite(first) & (first > 0)]
        if first.size:
            ax.plot(ns, 1.6 * first.max() * np.sqrt(ns[0] / ns), "k--", lw=1, alpha=0.6,
                    label="∝ n^(-1/2)")
    axes[0][0].set_ylabel(f"{params['quantile']:g} quantile of |sim_hat − sim|")
    axes[0][0].legend(loc="lower left", fontsize=8, frameon=True)
    fig.suptitle(f"{FIGURE}: {TITLE}", fontsize=12)
    fig.text(0.5, 0.01, "\n".join(textwrap.wrap(_caption(params), 150)), ha="center",
             va="bottom", fontsize=7.5)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.2, top=0.84, wspace=0.06)
    return fig


def _fmt(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.3g}"


def reading(table: Table, params: dict[str, Any]) -> str:
    """One paragraph with the main numbers from the table."""
    cfs = [float(c) for c in params["concept_freqs"]]
    nfs = [float(f) for f in params["neuron_freqs"]]
    ns = sorted(int(n) for n in params["ns"])
    lo_n = 1000 if 1000 in ns else ns[0]
    hi_n = 100000 if 100000 in ns else ns[-1]
    mets = list(params["metrics"])
    parts = []
    for cf, nf in zip(cfs, nfs, strict=True):
        cells = ", ".join(f"{m} {_fmt(value(table, m, cf, lo_n))} → {_fmt(value(table, m, cf, hi_n))}"
                          for m in mets)
        slopes = ", ".join(f"{m} {_fmt(slope(table, m, cf))}" for m in mets)
        und = table["undefined_share"][np.isclose(table["concept_freq"], cf)
                                       & (table["n"] == lo_n)]
        parts.append(f"At concept frequency {cf:g} (neuron frequency {nf:g}) the 95% error "
                     f"quantile from n = {lo_n:,} to n = {hi_n:,} is {cells}; log-log slopes "
                     f"{slopes}" + (f"; at n = {lo_n:,} up to {und.max():.0%} of the probing sets "
                                     "give an undefined estimate (quantiles are over the "
                                     "defined ones)" if und.size and und.max() > 0 else ""))
    text = ". ".join(parts) + "."
    if len(cfs) >= 2:
        rare, common = min(cfs), max(cfs, key=lambda c: min(c, 1 - c))
        ratios = []
        for m in mets:
            a, b = value(table, m, rare, hi_n), value(table, m, common, hi_n)
            if math.isfinite(a) and math.isfinite(b) and b > 0:
                ratios.append(f"{m} ×{a / b:.1f}")
        if ratios:
            text += (f" At n = {hi_n:,} the error at concept frequency {rare:g} relative to "
                     f"{common:g} is " + ", ".join(ratios) + ": the frequency-sensitive metrics "
                     "(AUROC, IoU, recall, precision) degrade sharply for the rare concept, "
                     "while every metric converges at about the 1/√n rate once its "
                     "denominator count is large.")
    for cf in cfs:
        errs = {m: value(table, m, cf, hi_n) for m in mets}
        errs = {m: e for m, e in errs.items() if math.isfinite(e)}
        if errs:
            best = min(errs, key=errs.get)
            text += (f" Smallest error at concept frequency {cf:g}, n = {hi_n:,}: {best} "
                     f"({_fmt(errs[best])}).")
    if "accuracy" in mets:
        rare = [c for c in cfs if min(c, 1 - c) < _LOW_FREQUENCY_ACCURACY]
        text += (" Accuracy's small error at a rare concept"
                 + (f" ({', '.join(f'{c:g}' for c in rare)})" if rare else "")
                 + " is partly an artefact: a neuron that never fires already scores "
                 "1 − p_c, so accuracy is close to 1 − p_c whatever the neuron does and "
                 "hardly depends on the few concept samples that matter (neurocert warns with "
                 "LowFrequencyAccuracyWarning when accuracy meets a concept frequency below "
                 f"{_LOW_FREQUENCY_ACCURACY:g}).")
    return text
