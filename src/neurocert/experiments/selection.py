"""Faithfulness under selection: realised loss against the regret bound and the 2r guarantee.

Model. One binary neuron ``y ~ Bernoulli(neuron_freq)`` and ``|C|`` concepts, each of
frequency ``concept_freq``, independent given ``y``, with exactly known recall
``r_c = P(y = 1 | z_c = 1)`` (:class:`neurocert.coverage.RecallTieModel`). With equal
concept frequencies every count metric orders the concepts like recall; the metric is
**IoU** (NetDissect's), whose population value ``p_fc / (p_f + p_c - p_fc)`` is exact.
The concept set is fixed before any data:

* a *near* block: concept 0 (the population best ``c*``, recall ``best_recall``) and
  up to four close competitors at recall ``best_recall - near_gaps`` (the first
  ``|C|`` of them when ``|C| <= 5``);
* ``|C| - 5`` distractors with recalls evenly spaced over ``distractor_recalls``
  (the lower end, ``recall = neuron_freq``, is a concept independent of the neuron).

So adding concepts adds candidates that can win by chance at small ``n`` and makes
every simultaneous bound pay ``log |C|``.

Per cell ``(n, |C|)``, ``reps`` independent probing sets are drawn through the exact law
of their counts (:meth:`RecallTieModel.sample_counts`), and per set:

* ``c_hat``: ``identify``'s explanation (argmax, lowest index among ties, "none" when
  every similarity is undefined or at the metric's minimum);
* the realised loss ``sim(c*) - sim(c_hat)`` (population values; a "none" explanation
  counts as the worst loss ``sim(c*) - 0``);
* the computable regret bound ``max_c U_c - L_{c_hat}`` (``identify(...).regret_bound``:
  the library's simultaneous limits over the ``|C|`` concepts at ``delta``, computed
  here on the counts with the same functions and checked against ``identify`` in
  ``tests/test_experiment_modules.py``); undefined for "none", counted as a failure;
* the certified set ``{c : U_c >= max_j L_j}`` and whether it contains ``c*``.

The planning guarantee is ``2 r`` with ``r = faithfulness_bound("iou", n=n, delta=delta,
n_concepts=|C|, concept_freq, neuron_freq)`` (uniform over the ``|C|`` concepts, so
``sim(c*) - sim(c_hat) <= 2 r`` with probability ``>= 1 - delta``).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as _st

from .._progress import progress as _progress
from ..bounds import confidence_limits, faithfulness_bound
from ..coverage import RecallTieModel
from ..exceptions import NoBoundWarning, ValidationError
from ..identify import certified_sets, rank_concepts
from ..metrics import MetricOptions, get_metric
from ..sufficient import CountStats, Design
from ._base import Table, caption, child_seed, pyplot, table_rows
from ._base import fmt as _g

NAME = "selection"
TITLE = "Faithfulness under selection: realised loss vs the regret bound and 2r"
FIGURE = ""

METRIC = "iou"
N_NEAR = 5

PARAMS: dict[str, dict[str, Any]] = {
    "default": {"ns": [300, 1000, 3000, 10000, 30000, 100000], "n_concepts": [5, 50, 500],
                "reps": 1000, "delta": 0.05, "neuron_freq": 0.05, "concept_freq": 0.05,
                "best_recall": 0.6, "near_gaps": [0.02, 0.04, 0.08, 0.16],
                "distractor_recalls": [0.4, 0.05]},
    "quick": {"ns": [1000, 10000], "n_concepts": [5, 50], "reps": 400, "delta": 0.05,
              "neuron_freq": 0.05, "concept_freq": 0.05, "best_recall": 0.6,
              "near_gaps": [0.02, 0.04, 0.08, 0.16], "distractor_recalls": [0.4, 0.05]},
}

COLUMNS = ("n", "n_concepts", "reps", "delta", "metric", "sim_best", "gap_second",
           "share_best_chosen", "share_none", "loss_mean", "loss_q95", "loss_max",
           "regret_median", "regret_mean", "two_r", "share_loss_le_regret",
           "p_regret", "share_loss_le_two_r", "share_regret_le_two_r",
           "cert_size_mean", "cert_size_median", "share_cert_covers")


# ---------------------------------------------------------------------------
# parameters


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and math.isfinite(float(x)))


def _int_list(params: dict[str, Any], key: str, minimum: int) -> list[int]:
    v = params[key]
    if not isinstance(v, (list, tuple)) or not v:
        raise ValidationError(f"{NAME}: `{key}` must be a non-empty list of integers; got {v!r}")
    for x in v:
        if not _is_int(x) or x < minimum:
            raise ValidationError(f"{NAME}: every value of `{key}` must be an integer >= "
                                  f"{minimum}; got {x!r}")
    if len({int(x) for x in v}) != len(v):
        raise ValidationError(f"{NAME}: `{key}` has duplicates: {list(v)}")
    return [int(x) for x in v]


def _unit(params: dict[str, Any], key: str) -> float:
    v = params[key]
    if not _is_num(v) or not 0 < float(v) < 1:
        raise ValidationError(f"{NAME}: `{key}` must be a number in (0, 1); got {v!r}")
    return float(v)


def check(params: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` for bad parameters (before any work)."""
    need = ("ns", "n_concepts", "reps", "delta", "neuron_freq", "concept_freq", "best_recall",
            "near_gaps", "distractor_recalls")
    missing = [k for k in need if k not in params]
    if missing:
        raise ValidationError(f"{NAME}: missing parameter(s) {missing}")
    _int_list(params, "ns", 10)
    _int_list(params, "n_concepts", 2)
    if not _is_int(params["reps"]) or params["reps"] < 50:
        raise ValidationError(f"{NAME}: `reps` must be an integer >= 50; got {params['reps']!r}")
    _unit(params, "delta")
    pf, q, r = (_unit(params, k) for k in ("neuron_freq", "concept_freq", "best_recall"))
    if r * q > pf:
        raise ValidationError(f"{NAME}: best_recall * concept_freq ({r * q:g}) must be <= "
                              f"neuron_freq ({pf:g})")
    if q > 1 - pf:
        raise ValidationError(f"{NAME}: concept_freq must be <= 1 - neuron_freq")
    gaps = params["near_gaps"]
    if (not isinstance(gaps, (list, tuple)) or len(gaps) != N_NEAR - 1
            or not all(_is_num(g) for g in gaps)
            or not all(float(a) < float(b) for a, b in zip([0.0] + list(gaps), gaps))
            or float(gaps[-1]) >= r):
        raise ValidationError(f"{NAME}: `near_gaps` must be {N_NEAR - 1} increasing positive "
                              f"numbers below best_recall; got {gaps!r}")
    dr = params["distractor_recalls"]
    if (not isinstance(dr, (list, tuple)) or len(dr) != 2 or not all(_is_num(x) for x in dr)
            or not 0 <= float(dr[1]) <= float(dr[0]) < r - float(gaps[-1])):
        raise ValidationError(f"{NAME}: `distractor_recalls` must be [high, low] with "
                              f"0 <= low <= high < the lowest near recall; got {dr!r}")


# ---------------------------------------------------------------------------
# model and per-set quantities


def concept_model(params: dict[str, Any], n_concepts: int) -> RecallTieModel:
    """The fixed concept set of ``n_concepts`` concepts (module notes); concept 0 is ``c*``."""
    pf, q, r = (float(params[k]) for k in ("neuron_freq", "concept_freq", "best_recall"))
    near = [r] + [r - float(g) for g in params["near_gaps"]]
    recall = near[:n_concepts]
    if n_concepts > N_NEAR:
        hi, lo = (float(x) for x in params["distractor_recalls"])
        recall = recall + list(np.linspace(hi, lo, n_concepts - N_NEAR))
    rec = np.asarray(recall, float)
    return RecallTieModel(recall=rec, p_active=rec * q / pf, p_inactive=q * (1 - rec) / (1 - pf),
                          neuron_freq=pf, concept_freq=q, standard_error=float("nan"),
                          m_tied=1, n_design=0)


def set_quantities(tp: np.ndarray, f: np.ndarray, c: np.ndarray, n: int, delta: float,
                   metric: str = METRIC) -> dict[str, Any]:
    """Similarity, simultaneous limits, explanation, regret bound and certified sets of
    ``R`` probing sets given their counts ``tp (R, C)``, ``f (R,)``, ``c (R, C)``.

    The limits are :func:`neurocert.bounds.confidence_limits` on one
    per-(set, concept) :class:`CountStats` with ``n_simultaneous = C`` -- what
    :func:`neurocert.identify` computes for one neuron -- so ``regret`` equals
    ``identify(...).regret_bound`` set by set.
    """
    m = get_metric(metric)
    opts = MetricOptions()
    r, k = tp.shape
    st = CountStats(tp=tp.reshape(-1, 1).astype(np.float64),
                    active=np.repeat(np.asarray(f, np.float64), k),
                    present=c.reshape(-1).astype(np.float64),
                    design=Design(total=float(n), n_units=float(n)), per_neuron_concept=True)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", NoBoundWarning)
        est = m.finalize(st, opts)
        lo, hi = confidence_limits(st, m, delta=delta, n_simultaneous=k, options=opts,
                                   estimate=est)
    sim = np.asarray(est).reshape(r, k)
    lo = np.asarray(lo).reshape(r, k)
    hi = np.asarray(hi).reshape(r, k)
    order = rank_concepts(sim)
    with np.errstate(invalid="ignore"):
        none = ~np.any(sim > m.lower, axis=1)
    best = np.where(none, -1, order[:, 0]).astype(np.int64)
    rows = np.arange(r)
    regret = np.where(best >= 0, hi.max(axis=1) - lo[rows, np.maximum(best, 0)], np.nan)
    cert = certified_sets(lo, hi, order)
    return {"sim": sim, "lower": lo, "upper": hi, "best": best, "regret": regret,
            "certified": cert}


# ---------------------------------------------------------------------------
# run


def _cell(params: dict[str, Any], n: int, k: int, seed: np.random.SeedSequence) -> dict[str, Any]:
    model = concept_model(params, k)
    pop = model.population(METRIC)
    reps, delta = int(params["reps"]), float(params["delta"])
    gen = np.random.default_rng(seed)
    tp, f, c = model.sample_counts(gen, n, reps)
    q = set_quantities(tp, f, c, n, delta)
    best = q["best"]
    chosen = np.where(best >= 0, pop[np.maximum(best, 0)], get_metric(METRIC).lower)
    loss = pop[0] - chosen
    regret = q["regret"]
    ok = np.where(np.isnan(regret), False, loss <= regret + 1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        r = float(faithfulness_bound(METRIC, n=n, delta=delta, n_concepts=k,
                                     concept_freq=float(params["concept_freq"]),
                                     neuron_freq=float(params["neuron_freq"])))
    two_r = 2 * r
    sizes = np.array([len(s) for s in q["certified"]], float)
    covers = np.array([0 in s.tolist() for s in q["certified"]])
    n_ok = int(ok.sum())
    return {
        "n": n, "n_concepts": k, "reps": reps, "delta": delta, "metric": METRIC,
        "sim_best": float(pop[0]), "gap_second": float(pop[0] - pop[1]),
        "share_best_chosen": float(np.mean(best == 0)), "share_none": float(np.mean(best < 0)),
        "loss_mean": float(loss.mean()), "loss_q95": float(np.quantile(loss, 0.95)),
        "loss_max": float(loss.max()),
        "regret_median": float(np.nanmedian(regret)) if np.isfinite(regret).any() else math.nan,
        "regret_mean": float(np.nanmean(regret)) if np.isfinite(regret).any() else math.nan,
        "two_r": two_r, "share_loss_le_regret": n_ok / reps,
        # one-sided binomial p-value of H0: P(loss <= regret bound) >= 1 - delta
        "p_regret": float(_st.binom.cdf(n_ok, reps, 1 - delta)),
        "share_loss_le_two_r": float(np.mean(loss <= two_r + 1e-12)),
        "share_regret_le_two_r": float(np.mean(np.where(np.isnan(regret), False,
                                                        regret <= two_r + 1e-12))),
        "cert_size_mean": float(sizes.mean()), "cert_size_median": float(np.median(sizes)),
        "share_cert_covers": float(covers.mean()),
    }


def run(params: dict[str, Any], seed: np.random.SeedSequence, progress: bool) -> Table:
    """One row per ``(n, |C|)`` cell (columns :data:`COLUMNS`)."""
    check(params)
    ns = [int(x) for x in params["ns"]]
    ks = [int(x) for x in params["n_concepts"]]
    cells = [(i, n, j, k) for j, k in enumerate(ks) for i, n in enumerate(ns)]
    rows = []
    for i, n, j, k in _progress(cells, total=len(cells), desc=NAME, enabled=progress):
        rows.append(_cell(params, n, k, child_seed(seed, j, i)))
    return table_rows(rows)


# ---------------------------------------------------------------------------
# figure and reading


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _rows(table: Table, k: int) -> dict[str, np.ndarray]:
    sel = table["n_concepts"] == k
    order = np.argsort(table["n"][sel])
    return {key: np.asarray(v)[sel][order] for key, v in table.items()}


def plot(table: Table, params: dict[str, Any]) -> Any:
    """(a) loss and bounds against n, one colour per |C|; (b) certified-set size."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    ks = sorted({int(k) for k in table["n_concepts"]})
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1.6, 1]})
    ax = axes[0]
    styles = [("two_r", "-.", "2r planning guarantee"),
              ("regret_median", "--", "regret bound max U − L(ĉ) (median)"),
              ("loss_q95", "-", "realised loss sim(c*) − sim(ĉ), 95% quantile"),
              ("loss_mean", ":", "realised loss, mean")]
    for ci, k in enumerate(ks):
        r = _rows(table, k)
        col = _COLORS[ci % len(_COLORS)]
        for key, ls, _ in styles:
            ax.plot(r["n"].astype(float), r[key].astype(float), ls, color=col, lw=1.6,
                    marker="o" if key == "loss_q95" else None, ms=4)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, 2.2)
    ax.set_xlabel("probing-set size n")
    ax.set_ylabel("IoU difference (symlog scale)")
    ax.set_title("(a) loss of the selected concept vs its bounds")
    ax.grid(True, which="major", alpha=0.3)
    h1 = [Line2D([], [], color=_COLORS[ci % len(_COLORS)], lw=2, label=f"|C| = {k}")
          for ci, k in enumerate(ks)]
    h2 = [Line2D([], [], color="k", ls=ls, lw=1.4, label=lab) for _, ls, lab in styles]
    ax.legend(handles=h1 + h2, fontsize=8, loc="lower left", frameon=True)
    ax = axes[1]
    for ci, k in enumerate(ks):
        r = _rows(table, k)
        ax.plot(r["n"].astype(float), r["cert_size_mean"].astype(float), "o-",
                color=_COLORS[ci % len(_COLORS)], lw=1.6, ms=4, label=f"|C| = {k}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("probing-set size n")
    ax.set_ylabel("mean certified-set size")
    ax.set_title("(b) certified set {c : U_c ≥ max L}")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{TITLE}", fontsize=12)
    cap = (f"IoU; one binary neuron (frequency {params['neuron_freq']:g}), concepts of frequency "
           f"{params['concept_freq']:g} with exact population IoU; {params['reps']} probing sets "
           f"per cell; delta = {params['delta']:g}; bounds simultaneous over the |C| concepts.")
    return caption(fig, cap, bottom=0.01, room=0.05, top=0.95)



def _vacuous(table: Table) -> str:
    two_r = np.asarray(table["two_r"], float)
    bad = two_r >= 1
    if not bad.any():
        return "nowhere in this grid"
    ns = np.asarray(table["n"])[bad]
    return f"up to n = {int(ns.max())} (largest n with 2r >= 1 in some cell)"


def reading(table: Table, params: dict[str, Any]) -> str:
    """One paragraph with the main numbers from the table."""
    ks = sorted({int(k) for k in table["n_concepts"]})
    ns = sorted({int(n) for n in table["n"]})
    delta = float(params["delta"])
    lo_n = 1000 if 1000 in ns else ns[0]
    hi_n = ns[-1]
    parts = []
    for k in ks:
        r = _rows(table, k)
        i_lo = int(np.flatnonzero(r["n"] == lo_n)[0])
        i_hi = int(np.flatnonzero(r["n"] == hi_n)[0])
        parts.append(
            f"|C| = {k}: at n = {lo_n} the loss has mean {_g(r['loss_mean'][i_lo])} and 95% "
            f"quantile {_g(r['loss_q95'][i_lo])} against a median regret bound of "
            f"{_g(r['regret_median'][i_lo])} and 2r = {_g(r['two_r'][i_lo])} (certified set "
            f"{_g(r['cert_size_mean'][i_lo])} concepts on average); at n = {hi_n}: loss q95 "
            f"{_g(r['loss_q95'][i_hi])}, regret bound {_g(r['regret_median'][i_hi])}, "
            f"2r = {_g(r['two_r'][i_hi])}")
    share = np.asarray(table["share_loss_le_regret"], float)
    ratio = np.asarray(table["regret_median"], float) / np.asarray(table["two_r"], float)
    ratio = ratio[np.isfinite(ratio)]
    first = _rows(table, ks[0])
    return (
        "The selected concept's realised loss sim(c*) − sim(ĉ) stays far below both bounds. "
        + "; ".join(parts) + ". "
        f"The share of probing sets whose loss was within the computable regret bound was at "
        f"least {_g(share.min())} in every cell (required: ≥ {1 - delta:g}; the smallest one-sided "
        f"binomial p-value is {_g(np.min(table['p_regret']))}), and the certified set contained "
        f"c* in a share of at least {_g(np.min(table['share_cert_covers']))}. The planning "
        f"guarantee 2r is vacuous (at least 1, the range of IoU) {_vacuous(table)}. The data-dependent "
        f"regret bound is {_g(ratio.min() if ratio.size else math.nan)}–"
        f"{_g(ratio.max() if ratio.size else math.nan)} times the planning guarantee 2r, "
        f"because it uses the observed counts instead of worst-case frequencies. Adding "
        f"distractor concepts barely changes the loss (the near competitors decide it: the best "
        f"concept is {_g(first['gap_second'][0])} IoU ahead of the second) but widens both "
        f"bounds through the union bound over |C|.")
