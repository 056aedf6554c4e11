"""What the three concept sets cover: a simulation on planted near-ties (issue "Stability").

``bootstrap_explain`` returns three sets per neuron, each with its own target
(``neurocert.explanation.COVERAGE_TARGETS``):

* **bootstrap set** -- the explanation an independent probing set of the same
  size ``n`` would give, *nominally* at ``1 - alpha``;
* **split set** -- the explanation of an independent probing set of fold size
  ``floor(n / K)``, ``>= 1 - alpha`` in finite samples (full conformal over ``K``
  disjoint folds);
* **certified set** -- the population-best concept ``c*``, ``>= 1 - delta``.

This module measures those coverages on a grid of cells (probing-set size,
concept frequency, number of near-tied concepts, ``alpha``) with many
independent probing sets per cell, one neuron per set, and the conditional
coverage given one probing set. It uses numpy and scipy only, and every
decision rule is the library's own (see "Fidelity" below); a later
``experiments`` command can call :func:`coverage_grid` and
:func:`conditional_coverage` as they are.

Generator (:class:`RecallTieModel`)
-----------------------------------
A binary neuron ``y ~ Bernoulli(p_f)`` and concepts ``z_c`` independent given
``y`` with ``P(z_c = 1 | y = 1) = a_c`` and ``P(z_c = 1 | y = 0) = b_c``,
chosen so that every concept has frequency exactly ``q`` and recall
``P(y = 1 | z_c = 1) = a_c p_f / q = r_c`` exactly:
``a_c = r_c q / p_f`` and ``b_c = q (1 - r_c) / (1 - p_f)``. Recall is the
metric whose near-ties can be set exactly: given the concept counts,
``TP_c ~ Bin(C_c, r_c)``, so its standard error at ``n`` is
``SE = sqrt(r (1 - r) / (n q))`` (at the best recall ``r``). As in
:func:`neurocert.simulate.near_tie_concepts`, concept ``c < m`` has recall
``r - gap_se * SE * c / m`` (all ``m`` within one SE of the best, concept 0 the
unique population best ``c*``), and ``n_worse`` further concepts are evenly
spaced from ``r - (gap_se + clear_gap_se) * SE`` down to 0, clipped at 0 (with
rare concepts at small ``n`` a gap of 8 SE does not fit in ``[0, 1]``; those
concepts then have recall 0, the metric's minimum, which the table reports).

Fidelity
--------
Per probing set the sets are exactly those of
``bootstrap_explain(..., mode="both", n_boot=n_boot, alpha=alpha, delta=delta,
scheme=scheme)`` with the default ``n_folds = ceil(2 / alpha) - 1`` and pruning at
``prune_epsilon = 1e-4`` (multinomial scheme only, as in the library), except
for the random streams: replicate weights have the library's law
(``Multinomial(n, 1/n)``, or ``floor(n/2)`` draws for ``"predictive"``) but are
drawn only where they matter (:func:`lumped_bootstrap_statistics`), and folds
are fixed index blocks of sizes ``ceil/floor(n / K)`` (the samples are i.i.d.,
so any fixed partition has the law of the library's random one). Decisions are
the library's own: similarity and limits through
:func:`neurocert.bounds.confidence_limits`, certified sets through
:func:`neurocert.identify.certified_sets`, candidates through
:func:`neurocert.bootstrap.prune_candidates`, replicate and fold winners and
tie-split votes through :func:`neurocert.engine.argmax_votes`, sets through
:func:`neurocert.explanation.prediction_sets` and
:func:`~neurocert.explanation.split_conformal_sets`.
``tests/test_coverage.py`` checks set-for-set equality with ``bootstrap_explain``
and ``identify`` under the same weights.

Targets: the explanation of a fresh probing set is ``identify(...).best`` (the
library's rule, :func:`explain_identify`); the table also records coverage of
the engine's replicate rule (:func:`explain_engine`, ``-1`` when every similarity
is undefined or at the metric's minimum) and of the plain argmax
(:func:`explain_argmax`, ``-1`` only when every concept is undefined), and how
often identify's rule and the engine's differ (0 since identify adopted the
replicate rule).
"""

from __future__ import annotations

import csv
import math
import multiprocessing
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats as _st

from .bootstrap import prune_candidates
from .bounds import confidence_limits
from .engine import argmax_votes, total_votes
from .exceptions import NoBoundWarning, ValidationError
from .explanation import (
    chosen_similarity,
    guarded_sets,
    prediction_sets,
    split_conformal_sets,
)
from .identify import certified_sets, rank_concepts
from .metrics import MetricOptions, _COUNT_SPECS, get_metric
from .similarity import prepare
from .sufficient import CountStats, Design

try:  # identify's own rule for its chosen concept (``none`` at the metric's minimum)
    from .identify import _explanation as _identify_rule
except ImportError:  # pragma: no cover - older rule: -1 only when every concept is undefined
    _identify_rule = None

__all__ = [
    "CONDITIONAL_COLUMNS",
    "COVERAGE_COLUMNS",
    "RecallTieModel",
    "SetAnalysis",
    "analyse_sets",
    "artifacts_dir",
    "binomial_shortfall_pvalue",
    "certified_sets_of",
    "conditional_coverage",
    "coverage_grid",
    "default_n_folds",
    "explain_argmax",
    "explain_engine",
    "explain_identify",
    "fold_statistics",
    "guarded_sets_of",
    "lumped_bootstrap_statistics",
    "recall_tie_model",
    "weighted_statistics",
    "write_csv",
]

SUPPORTED_METRICS = ("recall",)
NONE = -1
QUANTILES = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 1.0)


def default_n_folds(alpha: float) -> int:
    """Default number of folds of split mode, ``ceil(2 / alpha) - 1`` (as ``bootstrap_explain``)."""
    return math.ceil(2 / alpha - 1e-12) - 1


def artifacts_dir() -> Path:
    """``$NEUROCERT_ARTIFACTS`` (default ``/tmp/neurocert-artifacts``), created if missing."""
    path = Path(os.environ.get("NEUROCERT_ARTIFACTS") or "/tmp/neurocert-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def binomial_shortfall_pvalue(covered: int, trials: int, nominal: float) -> float:
    """One-sided p-value of ``H0: coverage >= nominal`` given ``covered`` of ``trials``."""
    if trials <= 0:
        return float("nan")
    return float(_st.binom.cdf(covered, trials, nominal))


# ---------------------------------------------------------------------------
# generator


@dataclass(frozen=True)
class RecallTieModel:
    """Binary neuron and concepts with exactly known recall (see module notes).

    Attributes
    ----------
    recall : ndarray (n_concepts,)
        Exact population recall ``P(y=1 | z_c=1)``; concept 0 is the unique best.
    p_active, p_inactive : ndarray (n_concepts,)
        ``a_c = P(z_c=1 | y=1)`` and ``b_c = P(z_c=1 | y=0)``.
    neuron_freq, concept_freq : float
        ``p_f`` and the common concept frequency ``q``.
    standard_error : float
        ``sqrt(r (1 - r) / (n q))`` at the best recall ``r`` and the design ``n``.
    m_tied : int
        Concepts within ``gap_se`` standard errors of the best (the best included).
    """

    recall: np.ndarray
    p_active: np.ndarray
    p_inactive: np.ndarray
    neuron_freq: float
    concept_freq: float
    standard_error: float
    m_tied: int
    n_design: int

    @property
    def n_concepts(self) -> int:
        return int(self.recall.size)

    @property
    def best(self) -> int:
        """Population-best concept ``c*`` (unique by construction)."""
        return 0

    def population(self, metric: str = "recall") -> np.ndarray:
        """Exact population similarity of every concept for a count metric."""
        m = get_metric(metric)
        p_fc = self.p_active * self.neuron_freq
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(m.formula(p_fc, self.neuron_freq, self.concept_freq, 1.0,
                                        MetricOptions()), float)

    def sample(self, gen: np.random.Generator, n: int, reps: int) -> tuple[np.ndarray, np.ndarray]:
        """``reps`` probing sets of size ``n``: ``y (reps, n)`` and ``z (reps, n, C)``, bool."""
        y = np.empty((reps, n), bool)
        z = np.empty((reps, n, self.n_concepts), bool)
        for i in range(reps):  # one set at a time: float64 temporaries stay small
            y[i] = gen.random(n) < self.neuron_freq
            prob = np.where(y[i][:, None], self.p_active, self.p_inactive)
            z[i] = gen.random((n, self.n_concepts)) < prob
        return y, z

    def sample_counts(self, gen: np.random.Generator, n: int,
                      reps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact law of the counts ``(tp (reps, C), f (reps,), c (reps, C))`` of ``reps`` sets.

        ``F ~ Bin(n, p_f)``; given ``F``, ``TP_c ~ Bin(F, a_c)`` and
        ``C_c - TP_c ~ Bin(n - F, b_c)``, independently over concepts.
        """
        f = gen.binomial(n, self.neuron_freq, size=reps)
        tp = gen.binomial(f[:, None], self.p_active[None, :])
        neg = gen.binomial((n - f)[:, None], self.p_inactive[None, :])
        return tp.astype(np.float64), f.astype(np.float64), (tp + neg).astype(np.float64)


def recall_tie_model(n: int, *, concept_freq: float, m_tied: int, n_worse: int = 5,
                     neuron_freq: float = 0.2, best_recall: float = 0.6, gap_se: float = 1.0,
                     clear_gap_se: float = 8.0) -> RecallTieModel:
    """Near-tie design for recall at probing-set size ``n`` (see module notes).

    Parameters
    ----------
    n : int
        Probing-set size that defines the standard error.
    concept_freq : float in (0, 1)
        Common concept frequency ``q``.
    m_tied : int >= 1
        Concepts within ``gap_se * SE`` of the best (the best included).
    n_worse : int >= 0
        Clearly worse concepts.
    neuron_freq : float
        ``p_f``; needs ``best_recall * q <= p_f`` (so that ``a_c <= 1``).
    best_recall : float in (0, 1)
    gap_se, clear_gap_se : float
        Width of the tie band and extra margin to the worse concepts, in SE.
    """
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValidationError(f"`n` must be a positive integer; got {n!r}")
    if not (isinstance(m_tied, (int, np.integer)) and m_tied >= 1):
        raise ValidationError(f"`m_tied` must be a positive integer; got {m_tied!r}")
    if not (isinstance(n_worse, (int, np.integer)) and n_worse >= 0):
        raise ValidationError(f"`n_worse` must be a non-negative integer; got {n_worse!r}")
    q, pf, r = float(concept_freq), float(neuron_freq), float(best_recall)
    for name, v in (("concept_freq", q), ("neuron_freq", pf), ("best_recall", r)):
        if not 0 < v < 1:
            raise ValidationError(f"`{name}` must lie in (0, 1); got {v!r}")
    if r * q > pf:
        raise ValidationError(f"best_recall * concept_freq ({r * q:g}) must be <= neuron_freq "
                              f"({pf:g}) so that P(z=1 | y=1) <= 1")
    if q > 1 - pf:  # b_c = q (1 - r_c) / (1 - p_f) <= 1 for every r_c >= 0
        raise ValidationError("concept_freq must be <= 1 - neuron_freq")
    if gap_se < 0 or clear_gap_se <= 0:
        raise ValidationError("need gap_se >= 0 and clear_gap_se > 0")
    se = math.sqrt(r * (1 - r) / (n * q))
    tied = [max(0.0, r - gap_se * se * c / m_tied) for c in range(m_tied)]
    worse: list[float] = []
    if n_worse:
        top = max(0.0, r - (gap_se + clear_gap_se) * se)
        worse = list(np.linspace(top, 0.0, n_worse)) if n_worse > 1 else [top]
    recall = np.array(tied + worse, float)
    if m_tied > 1 and recall[1] >= recall[0]:  # pragma: no cover - gap_se > 0 and se > 0
        raise ValidationError("the best concept is not unique; increase gap_se")
    a = recall * q / pf
    b = q * (1 - recall) / (1 - pf)
    return RecallTieModel(recall=recall, p_active=a, p_inactive=b, neuron_freq=pf,
                          concept_freq=q, standard_error=se, m_tied=int(m_tied),
                          n_design=int(n))


# ---------------------------------------------------------------------------
# statistics and decision rules (the library's)


def _similarity(metric_name: str, tp, f, c, s, options: MetricOptions) -> np.ndarray:
    """Count-metric similarity with NaN where undefined (the engine's expression)."""
    metric = get_metric(metric_name)
    with np.errstate(divide="ignore", invalid="ignore"):
        val = metric.formula(tp, f, c, s, options)
    defined = _COUNT_SPECS[metric.name][1](tp, f, c, s, options)
    return np.where(defined, val, np.nan)


def explain_identify(sim: np.ndarray, lower: float) -> np.ndarray:
    """``identify(...).best`` of each row of similarities ``sim (R, C)``, by identify's own rule.

    (Argmax, lowest index among ties; ``-1`` when no concept is defined, and, in the
    current library, also when every similarity is at most the metric's minimum.)
    """
    order = rank_concepts(sim)
    if _identify_rule is not None:
        return np.asarray(_identify_rule(sim, order, lower), np.int64)
    return np.where(np.all(np.isnan(sim), axis=1), NONE, order[:, 0]).astype(np.int64)


def explain_argmax(sim: np.ndarray) -> np.ndarray:
    """Plain argmax rule (docs/theory.md §1): ``-1`` only when every concept is undefined."""
    best = rank_concepts(sim)[:, 0]
    return np.where(np.all(np.isnan(sim), axis=1), NONE, best).astype(np.int64)


def _votes(counts) -> np.ndarray:
    """Vote totals from ``argmax_votes``' third output (tie-count dict, or votes)."""
    return total_votes(counts) if isinstance(counts, dict) else np.asarray(counts, float)


def explain_engine(sim: np.ndarray, lower: float) -> np.ndarray:
    """Replicate/fold winner of :mod:`neurocert.engine` of each row (-1 also at the minimum)."""
    c = sim.shape[1]
    return argmax_votes(sim, np.arange(c), lower, c)[0]


def _diagonal_limits(metric_name: str, tp: np.ndarray, f: np.ndarray, c: np.ndarray, n: int,
                     delta: float, options: MetricOptions) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """Similarity and simultaneous limits of ``R`` probing sets at once, shape (R, C).

    Each (set, concept) pair is one row of a per-neuron-concept :class:`CountStats`
    (the form ``identify`` uses for p-values), with the Bonferroni width of ``C``
    concepts, so the limits are those ``identify`` prints for each set.
    """
    metric = get_metric(metric_name)
    r, k = tp.shape
    stats = CountStats(tp=tp.reshape(-1, 1).astype(np.float64),
                       active=np.repeat(f.astype(np.float64), k),
                       present=c.reshape(-1).astype(np.float64),
                       design=Design(total=float(n), n_units=float(n)),
                       per_neuron_concept=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        est = metric.finalize(stats, options)
    lo, hi = confidence_limits(stats, metric, delta=delta, n_simultaneous=k, options=options,
                               estimate=est)
    return est.reshape(r, k), np.asarray(lo).reshape(r, k), np.asarray(hi).reshape(r, k)


def certified_sets_of(metric_name: str, tp: np.ndarray, f: np.ndarray, c: np.ndarray, n: int,
                      delta: float, options: MetricOptions | None = None) -> tuple[np.ndarray, ...]:
    """Certified sets (``identify(...).certified_sets``) of ``R`` probing sets from their counts."""
    options = options or MetricOptions()
    sim, lo, hi = _diagonal_limits(metric_name, tp, f, c, n, delta, options)
    return certified_sets(lo, hi, rank_concepts(sim))


def candidates_of(y: np.ndarray, z: np.ndarray, sim: np.ndarray, metric: str,
                  epsilon: float) -> np.ndarray:
    """Candidates of one probing set by :func:`neurocert.bootstrap.prune_candidates` itself."""
    p = prepare(y[:, None].astype(np.float32), z.astype(np.float32), metric=metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        cands, _ = prune_candidates(p, sim[None, :], epsilon)
    return np.asarray(cands[0], np.int64)


def _patterns(y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct rows ``(y, z)``: pattern matrix ``(U, 2C + 1)`` = ``[y z, z, y]``, row ids, counts."""
    n, k = z.shape
    if k > 62:
        raise ValidationError("at most 62 concepts per probing set in the coverage simulation")
    bits = np.left_shift(np.int64(1), np.arange(k, dtype=np.int64))
    key = (z.astype(np.int64) @ bits) | (y.astype(np.int64) << k)
    uniq, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    zu = ((uniq[:, None] >> np.arange(k, dtype=np.int64)) & 1).astype(bool)
    yu = ((uniq >> k) & 1).astype(bool)
    x = np.concatenate([zu & yu[:, None], zu, yu[:, None]], axis=1)
    return x, inv.reshape(-1), cnt


#: largest number of distinct rows for which replicate weights are drawn as one multinomial
MULTINOMIAL_MAX = 128


SCHEME_DRAWS = {"multinomial": lambda n: n, "predictive": lambda n: max(1, n // 2)}


def lumped_bootstrap_statistics(gen: np.random.Generator, y: np.ndarray, z: np.ndarray,
                                n_boot: int, patterns: tuple | None = None,
                                scheme: str = "multinomial"
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Counts ``(tp (B, C), f (B,), c (B, C), total)`` of ``n_boot`` bootstrap replicates.

    ``scheme="multinomial"``: ``Multinomial(n, 1/n)`` weights (the ordinary
    bootstrap); ``"predictive"``: ``Multinomial(floor(n/2), 1/n)`` (as
    :func:`neurocert.resample.replicate_weights`). Exact in law: replicate counts
    are sums of weights over samples, so only the weight of each *distinct row*
    ``(y, z)`` matters, which is ``Multinomial(draws, count_u / n)`` over the ``U``
    distinct rows. With few distinct rows that multinomial is drawn directly;
    otherwise the ``r`` samples where some concept is present receive
    ``K ~ Bin(draws, r/n)`` draws, spread uniformly over them, and the other
    ``draws - K`` fall on the active concept-free samples with probability
    ``(their number) / (n - r)``. Cost ``O(n_boot * min(U, r))``.
    """
    n, k = z.shape
    b = int(n_boot)
    total = SCHEME_DRAWS[scheme](n)
    x, inv, cnt = _patterns(y, z) if patterns is None else patterns
    u = cnt.size
    if u <= MULTINOMIAL_MAX:
        w = gen.multinomial(total, cnt / n, size=b)
    else:
        rel_u = x[:, k:2 * k].any(axis=1)
        rel_rows = np.flatnonzero(rel_u[inv])
        r = rel_rows.size  # > 0 here: at most 2 concept-free patterns
        u_rel = np.flatnonzero(rel_u)
        compact = np.full(u, -1, np.int64)
        compact[u_rel] = np.arange(u_rel.size)
        pid = compact[inv[rel_rows]]
        draws = gen.binomial(total, r / n, size=b)
        kmax = int(draws.max())
        idx = gen.integers(0, r, size=(b, kmax), dtype=np.int64)
        col = pid[idx]
        dummy = u_rel.size
        col[np.arange(kmax)[None, :] >= draws[:, None]] = dummy
        col += (np.arange(b, dtype=np.int64) * (dummy + 1))[:, None]
        w_rel = np.bincount(col.reshape(-1), minlength=b * (dummy + 1)).reshape(b, dummy + 1)
        w = np.zeros((b, u), np.int64)
        w[:, u_rel] = w_rel[:, :dummy]
        free = np.flatnonzero(~rel_u)  # concept-free patterns: y = 0 and/or y = 1
        rest = total - draws
        if free.size == 1:
            w[:, free[0]] = rest
        elif free.size == 2:
            active = free[x[free, 2 * k]]
            inactive = free[~x[free, 2 * k]]
            w_act = gen.binomial(rest, cnt[active[0]] / (n - r))
            w[:, active[0]] = w_act
            w[:, inactive[0]] = rest - w_act
    s = (w.astype(np.float32) @ x.astype(np.float32)).astype(np.float64)
    return s[:, :k], s[:, 2 * k], s[:, k:2 * k], float(total)


def weighted_statistics(y: np.ndarray, z: np.ndarray,
                        w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts ``(tp, f, c)`` under explicit weight rows ``w (B, n)`` (for checks)."""
    w64 = np.asarray(w, np.float64)
    zf = z.astype(np.float64)
    return w64 @ (zf * y[:, None]), w64 @ y.astype(np.float64), w64 @ zf


def fold_statistics(y: np.ndarray, z: np.ndarray, fold_counts: Iterable[int],
                    patterns: tuple | None = None) -> dict[int, tuple]:
    """Counts ``(tp (K, C), f (K,), c (K, C))`` of ``K`` disjoint folds, for each ``K``.

    The library's fold ``k`` holds the samples at positions ``p`` with ``p % K == k``
    of a random permutation (the first ``n % K`` folds one larger); for i.i.d.
    samples a fixed partition into consecutive index blocks of the same sizes has
    the same law.
    """
    n, k = z.shape
    x, inv, cnt = _patterns(y, z) if patterns is None else patterns
    u = cnt.size
    xf = x.astype(np.float32)
    out = {}
    for kf in fold_counts:
        base, extra = divmod(n, kf)
        sizes = np.full(kf, base)
        sizes[:extra] += 1
        fold = np.repeat(np.arange(kf, dtype=np.int64), sizes)
        w = np.bincount(fold * u + inv, minlength=kf * u).reshape(kf, u)
        s = (w.astype(np.float32) @ xf).astype(np.float64)
        out[kf] = (s[:, :k], s[:, 2 * k], s[:, k:2 * k])
    return out


@dataclass
class SetAnalysis:
    """What ``bootstrap_explain`` computes for ``R`` probing sets (one neuron each)."""

    sim: np.ndarray  # (R, C) full-data similarity
    prob: dict  # scheme -> (R, C + 1) selection probabilities (votes / B), last column "none"
    fold_winners: dict  # K -> (K, R) fold explanations
    certified: tuple  # R arrays (certified sets)
    upper: np.ndarray  # (R, C) upper confidence limits at delta (identify's)
    all_undefined: np.ndarray  # (R,) bool: no concept defined on the probing set
    n_candidates: np.ndarray  # (R,) candidates after pruning (multinomial scheme)


def analyse_sets(y: np.ndarray, z: np.ndarray, *, metric: str, n_boot: int,
                 fold_counts: Iterable[int], delta: float,
                 schemes: Sequence[str] = ("multinomial",),
                 gen: np.random.Generator | None = None,
                 boot_weights: dict | None = None, fold_weights: dict | None = None,
                 prune: bool = True, prune_epsilon: float = 1e-4,
                 options: MetricOptions | None = None) -> SetAnalysis:
    """Bootstrap votes, fold winners and certified sets of ``R`` sets ``y (R, n)``, ``z (R, n, C)``.

    Exactly ``bootstrap_explain``'s decisions: full-data similarity and certified
    set as ``identify``; candidates from ``prune_candidates`` (multinomial scheme
    only, as in the library); replicate and fold winners and tie-split votes from
    ``engine.argmax_votes``. With ``boot_weights`` (``{scheme: [(B, n) per set]}``)
    and ``fold_weights`` (``{K: [(K, n) 0/1 per set]}``) those weights are used, so
    the result can be compared with ``bootstrap_explain`` replicate for replicate;
    otherwise replicates come from :func:`lumped_bootstrap_statistics` (``gen``)
    and folds from :func:`fold_statistics`.
    """
    options = options or MetricOptions()
    lower = get_metric(metric).lower
    reps, n, k = z.shape
    tp = (z & y[..., None]).sum(axis=1).astype(np.float64)
    f = y.sum(axis=1).astype(np.float64)
    c = z.sum(axis=1).astype(np.float64)
    sim, lo, hi = _diagonal_limits(metric, tp, f, c, n, delta, options)
    cert = certified_sets(lo, hi, rank_concepts(sim))
    all_undef = np.all(np.isnan(sim), axis=1)
    fold_counts = list(fold_counts)
    prob = {sc: np.zeros((reps, k + 1)) for sc in schemes}
    folds = {kf: np.empty((kf, reps), np.int64) for kf in fold_counts}
    n_cand = np.zeros(reps, np.int64)
    for i in range(reps):
        need_patterns = boot_weights is None or fold_weights is None
        pats = _patterns(y[i], z[i]) if need_patterns else None
        for sc in schemes:
            if sc == "multinomial" and prune and prune_epsilon > 0:
                cand = candidates_of(y[i], z[i], sim[i], metric, prune_epsilon)
            else:
                cand = np.arange(k)
            if sc == "multinomial":
                n_cand[i] = cand.size
            if boot_weights is not None:
                w = boot_weights[sc][i]
                btp, bf, bc = weighted_statistics(y[i], z[i], w)
                total = w.sum(axis=1, dtype=np.float64)[:, None]
            else:
                btp, bf, bc, total = lumped_bootstrap_statistics(gen, y[i], z[i], n_boot, pats, sc)
            bsim = _similarity(metric, btp[:, cand], bf[:, None], bc[:, cand], total, options)
            _, _, counts = argmax_votes(bsim, cand, lower, k)
            prob[sc][i] = _votes(counts) / btp.shape[0]
        if fold_weights is not None:
            per_k = {kf: weighted_statistics(y[i], z[i], fold_weights[kf][i]) for kf in fold_counts}
            sizes = {kf: fold_weights[kf][i].sum(axis=1)[:, None] for kf in fold_counts}
        else:
            per_k = fold_statistics(y[i], z[i], fold_counts, pats)
            sizes = {kf: _fold_sizes(n, kf)[:, None] for kf in fold_counts}
        for kf, (ftp, ff, fc) in per_k.items():
            fsim = _similarity(metric, ftp, ff[:, None], fc, sizes[kf], options)
            folds[kf][:, i] = explain_engine(fsim, lower)
    return SetAnalysis(sim=sim, prob=prob, fold_winners=folds, certified=cert, upper=hi,
                       all_undefined=all_undef, n_candidates=n_cand)


def guarded_sets_of(res: SetAnalysis, metric: str, alpha: float,
                    scheme: str = "multinomial") -> tuple[np.ndarray, ...]:
    """``bootstrap_explain(..., guard=True)``'s sets from an analysis (:func:`guarded_sets`)."""
    lower = get_metric(metric).lower
    reference = chosen_similarity(res.sim, explain_identify(res.sim, lower), lower)
    return guarded_sets(res.prob[scheme], res.sim, alpha, res.upper, reference)


def _fold_sizes(n: int, kf: int) -> np.ndarray:
    base, extra = divmod(n, kf)
    sizes = np.full(kf, float(base))
    sizes[:extra] += 1
    return sizes


def _fresh_sims(model: RecallTieModel, gen, size: int, reps: int, metric: str,
                options: MetricOptions) -> np.ndarray:
    """Similarities of ``reps`` independent probing sets of ``size`` (exact law of the counts)."""
    tp, f, c = model.sample_counts(gen, size, reps)
    return _similarity(metric, tp, f[:, None], c, float(size), options)


def _member(target: np.ndarray, sets: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([int(t) in set(s.tolist()) for t, s in zip(target, sets)], bool)


def _simulate(model: RecallTieModel, gen: np.random.Generator, *, n: int, reps: int,
              n_boot: int, fold_counts: Sequence[int], delta: float, metric: str,
              schemes: Sequence[str], prune: bool, prune_epsilon: float,
              chunk: int) -> SetAnalysis:
    """``analyse_sets`` over ``reps`` probing sets drawn in chunks (bounded memory)."""
    parts = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        for r0 in range(0, reps, chunk):
            y, z = model.sample(gen, n, min(chunk, reps - r0))
            parts.append(analyse_sets(y, z, metric=metric, n_boot=n_boot,
                                      fold_counts=fold_counts, delta=delta, schemes=schemes,
                                      gen=gen, prune=prune, prune_epsilon=prune_epsilon))
    return SetAnalysis(
        sim=np.concatenate([p.sim for p in parts]),
        prob={sc: np.concatenate([p.prob[sc] for p in parts]) for sc in schemes},
        fold_winners={kf: np.concatenate([p.fold_winners[kf] for p in parts], axis=1)
                      for kf in fold_counts},
        certified=sum((p.certified for p in parts), ()),
        upper=np.concatenate([p.upper for p in parts]),
        all_undefined=np.concatenate([p.all_undefined for p in parts]),
        n_candidates=np.concatenate([p.n_candidates for p in parts]))


# ---------------------------------------------------------------------------
# grid


COVERAGE_COLUMNS = (
    "n", "concept_freq", "m", "alpha", "delta", "reps", "n_boot", "n_concepts", "n_folds",
    "fold_size", "standard_error", "recall_best", "recall_tied_min", "recall_worse_max",
    "nominal", "cov_bootstrap", "short_bootstrap", "p_bootstrap", "size_bootstrap",
    "cov_split", "short_split", "p_split", "size_split",
    "cov_certified", "nominal_certified", "short_certified", "p_certified", "size_certified",
    "cov_bootstrap_engine", "p_bootstrap_engine", "cov_split_engine", "p_split_engine",
    "cov_bootstrap_argmax", "cov_split_argmax",
    "cov_predictive", "short_predictive", "p_predictive", "size_predictive",
    "cov_guarded", "short_guarded", "p_guarded", "size_guarded",
    "cov_bootstrap_best", "cov_split_best", "cov_predictive_best", "cov_guarded_best",
    "share_all_undefined", "share_best_undefined", "share_target_none",
    "share_fold_target_none", "share_rules_differ", "share_fold_rules_differ",
    "mean_candidates", "seconds",
)


def _cell_seed(entropy: int, n: int, q: float, m: int, tag: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(entropy, spawn_key=(int(n), int(round(q * 1e9)), int(m), tag))


def _check_metric(metric: str) -> None:
    if metric not in SUPPORTED_METRICS:
        raise ValidationError(
            f"coverage simulation supports metric in {SUPPORTED_METRICS} (the generator sets "
            f"recall near-ties exactly); got {metric!r}")


def _check_schemes(schemes: Sequence[str]) -> tuple[str, ...]:
    out = tuple(schemes)
    if "multinomial" not in out or any(sc not in SCHEME_DRAWS for sc in out):
        raise ValidationError(f"`schemes` must include 'multinomial' and be among "
                              f"{tuple(SCHEME_DRAWS)}; got {schemes!r}")
    return out


def _targets(sim: np.ndarray, lower: float) -> dict[str, np.ndarray]:
    return {"identify": explain_identify(sim, lower), "engine": explain_engine(sim, lower),
            "argmax": explain_argmax(sim)}


def _run_cell(spec: dict[str, Any]) -> list[dict[str, Any]]:
    t0 = time.perf_counter()
    n, q, m, alphas = spec["n"], spec["concept_freq"], spec["m"], spec["alphas"]
    reps, n_boot, delta, metric = spec["reps"], spec["n_boot"], spec["delta"], spec["metric"]
    schemes = spec["schemes"]
    options = MetricOptions()
    lower = get_metric(metric).lower
    model = recall_tie_model(n, concept_freq=q, m_tied=m, **spec["model"])
    k = model.n_concepts
    gen = np.random.default_rng(_cell_seed(spec["entropy"], n, q, m, 0))
    fresh_gen = np.random.default_rng(_cell_seed(spec["entropy"], n, q, m, 1))
    fold_counts = sorted({default_n_folds(a) for a in alphas})
    res = _simulate(model, gen, n=n, reps=reps, n_boot=n_boot, fold_counts=fold_counts,
                    delta=delta, metric=metric, schemes=schemes, prune=spec["prune"],
                    prune_epsilon=spec["prune_epsilon"], chunk=spec["chunk"])
    # targets: one fresh independent probing set per probing set (exact law of its counts)
    full = _targets(_fresh_sims(model, fresh_gen, n, reps, metric, options), lower)
    small = {kf: _targets(_fresh_sims(model, fresh_gen, n // kf, reps, metric, options), lower)
             for kf in fold_counts}
    best = np.full(reps, model.best)
    cov_cert = _member(best, res.certified)
    rows = []
    for alpha in alphas:
        kf = default_n_folds(alpha)
        nominal = 1 - alpha
        bsets = prediction_sets(res.prob["multinomial"], res.sim, alpha)
        gsets = guarded_sets_of(res, metric, alpha)
        ssets = split_conformal_sets(res.fold_winners[kf], k, alpha, res.sim)
        row: dict[str, Any] = {
            "n": n, "concept_freq": q, "m": m, "alpha": alpha, "delta": delta, "reps": reps,
            "n_boot": n_boot, "n_concepts": k, "n_folds": kf, "fold_size": n // kf,
            "standard_error": model.standard_error, "recall_best": float(model.recall[0]),
            "recall_tied_min": float(model.recall[m - 1]),
            "recall_worse_max": float(model.recall[m]) if k > m else float("nan"),
            "nominal": nominal,
        }
        hits = {
            "bootstrap": _member(full["identify"], bsets),
            "guarded": _member(full["identify"], gsets),
            "bootstrap_engine": _member(full["engine"], bsets),
            "bootstrap_argmax": _member(full["argmax"], bsets),
            "split": _member(small[kf]["identify"], ssets),
            "split_engine": _member(small[kf]["engine"], ssets),
            "split_argmax": _member(small[kf]["argmax"], ssets),
        }
        if "predictive" in schemes:
            psets = prediction_sets(res.prob["predictive"], res.sim, alpha)
            hits["predictive"] = _member(full["identify"], psets)
            row["size_predictive"] = float(np.mean([len(s) for s in psets]))
            row["cov_predictive_best"] = float(_member(best, psets).mean())
        for key, hit in hits.items():
            row[f"cov_{key}"] = float(hit.mean())
            row[f"p_{key}"] = binomial_shortfall_pvalue(int(hit.sum()), reps, nominal)
        for key in ("bootstrap", "guarded", "split", "predictive"):
            if f"cov_{key}" in row:
                row[f"short_{key}"] = nominal - row[f"cov_{key}"]
        row["cov_certified"] = float(cov_cert.mean())
        row["nominal_certified"] = 1 - delta
        row["short_certified"] = (1 - delta) - row["cov_certified"]
        row["p_certified"] = binomial_shortfall_pvalue(int(cov_cert.sum()), reps, 1 - delta)
        row["cov_bootstrap_best"] = float(_member(best, bsets).mean())
        row["cov_split_best"] = float(_member(best, ssets).mean())
        row["size_bootstrap"] = float(np.mean([len(s) for s in bsets]))
        row["size_guarded"] = float(np.mean([len(s) for s in gsets]))
        row["cov_guarded_best"] = float(_member(best, gsets).mean())
        row["size_split"] = float(np.mean([len(s) for s in ssets]))
        row["size_certified"] = float(np.mean([len(s) for s in res.certified]))
        row["share_all_undefined"] = float(res.all_undefined.mean())
        row["share_best_undefined"] = float(np.isnan(res.sim[:, model.best]).mean())
        row["share_target_none"] = float((full["identify"] == NONE).mean())
        row["share_fold_target_none"] = float((small[kf]["identify"] == NONE).mean())
        row["share_rules_differ"] = float((full["identify"] != full["engine"]).mean())
        row["share_fold_rules_differ"] = float(
            (small[kf]["identify"] != small[kf]["engine"]).mean())
        row["mean_candidates"] = float(res.n_candidates.mean())
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
    return rows


def _model_kwargs(n_worse, neuron_freq, best_recall, gap_se, clear_gap_se) -> dict[str, Any]:
    return {"n_worse": n_worse, "neuron_freq": neuron_freq, "best_recall": best_recall,
            "gap_se": gap_se, "clear_gap_se": clear_gap_se}


def coverage_grid(*, ns: Sequence[int] = (1_000, 10_000),
                  concept_freqs: Sequence[float] = (0.1, 0.01, 0.001),
                  ms: Sequence[int] = (1, 2, 5, 20), alphas: Sequence[float] = (0.05, 0.1),
                  reps: int = 1000, n_boot: int = 200, metric: str = "recall", rng: Any = None,
                  delta: float = 0.05, schemes: Sequence[str] = ("multinomial",),
                  n_worse: int = 5, neuron_freq: float = 0.2, best_recall: float = 0.6,
                  gap_se: float = 1.0, clear_gap_se: float = 8.0, prune: bool = True,
                  prune_epsilon: float = 1e-4, n_jobs: int = 1,
                  chunk: int = 50) -> list[dict[str, Any]]:
    """Coverage of the bootstrap, split and certified sets on a grid of cells.

    One row per ``(n, concept_freq, m, alpha)`` (columns :data:`COVERAGE_COLUMNS`).
    Each ``(n, concept_freq, m)`` cell draws ``reps`` independent probing sets of
    size ``n`` from :func:`recall_tie_model` (one neuron each), shared by the
    alphas. Per set: the bootstrap set (``n_boot`` replicates), the split set
    (``K = ceil(2/alpha) - 1`` folds) and the certified set (``delta``), exactly as
    ``bootstrap_explain(mode="both")`` decides them; one fresh probing set of size
    ``n`` (target of the bootstrap set) and one of fold size ``floor(n/K)`` (target
    of the split set); the population-best concept (target of the certified set).

    Targets are ``identify(...).best`` of the fresh set (``cov_*``); ``cov_*_engine``
    and ``cov_*_argmax`` use the engine's replicate rule and the plain argmax rule
    (-1 only when every concept is undefined) instead, and ``share_*rules_differ``
    says how often identify's rule and the engine's differ. ``p_*`` is the one-sided
    binomial p-value of ``coverage >= nominal``; ``short_*`` is nominal minus observed.
    With ``"predictive"`` in ``schemes`` the bootstrap set of the half-sample
    scheme (no pruning, as in the library) is evaluated on the same probing sets.

    Cells are independent and seeded by ``(rng, n, concept_freq, m)``, so results do
    not depend on ``n_jobs`` or on which other cells are run.
    """
    _check_metric(metric)
    schemes = _check_schemes(schemes)
    if not (isinstance(reps, (int, np.integer)) and reps >= 1):
        raise ValidationError(f"`reps` must be a positive integer; got {reps!r}")
    if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
        raise ValidationError(f"`n_boot` must be a positive integer; got {n_boot!r}")
    for a in alphas:
        if not 0 < a < 1:
            raise ValidationError(f"alpha must lie in (0, 1); got {a!r}")
    entropy = _entropy(rng)
    model = _model_kwargs(n_worse, neuron_freq, best_recall, gap_se, clear_gap_se)
    specs = [{"n": int(n), "concept_freq": float(q), "m": int(m), "alphas": tuple(alphas),
              "reps": int(reps), "n_boot": int(n_boot), "delta": float(delta), "metric": metric,
              "entropy": entropy, "model": model, "prune": bool(prune), "schemes": schemes,
              "prune_epsilon": float(prune_epsilon), "chunk": int(chunk)}
             for n in ns for q in concept_freqs for m in ms]
    for s in specs:  # validate every design before spending time
        recall_tie_model(s["n"], concept_freq=s["concept_freq"], m_tied=s["m"], **model)
        for a in alphas:
            if default_n_folds(a) > s["n"]:
                raise ValidationError(f"n={s['n']} is smaller than the number of folds")
    results = _map(_run_cell, specs, n_jobs,
                   cost=lambda s: s["n"] * min(1.0, s["concept_freq"] * (s["m"] + n_worse)))
    rows = [row for cell in results for row in cell]
    order = {key: i for i, key in enumerate(
        (n, q, m, a) for n in ns for q in concept_freqs for m in ms for a in alphas)}
    rows.sort(key=lambda r: order[(r["n"], r["concept_freq"], r["m"], r["alpha"])])
    return rows


def _entropy(rng: Any) -> int:
    if isinstance(rng, np.random.SeedSequence):
        if not rng.spawn_key:
            return int(rng.entropy)
        # a spawned child: fold its key in, so sibling seeds give different streams
        return int(rng.generate_state(2, np.uint64)[0] >> np.uint64(1))
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, 2**63))
    if rng is None:
        return int(np.random.SeedSequence().entropy)
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool) and rng >= 0:
        return int(rng)
    raise ValidationError(f"`rng` must be None, a non-negative int, a SeedSequence or a "
                          f"Generator; got {rng!r}")


_BLAS_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
             "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")


def _map(func, specs: list[dict[str, Any]], n_jobs: int, cost) -> list[Any]:
    """``func`` over ``specs`` (results in order), in ``n_jobs`` processes, costliest first.

    Workers are spawned with single-threaded BLAS: the products here are small, and
    threaded BLAS in several processes (spin-waiting threads) costs ~2.5x the CPU.
    """
    if n_jobs is None or n_jobs <= 1 or len(specs) <= 1:
        return [func(s) for s in specs]
    order = sorted(range(len(specs)), key=lambda i: -cost(specs[i]))
    out: list[Any] = [None] * len(specs)
    saved = {k: os.environ.get(k) for k in _BLAS_ENV}
    try:
        os.environ.update({k: "1" for k in _BLAS_ENV})
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=int(n_jobs), mp_context=ctx) as ex:
            futures = {i: ex.submit(func, specs[i]) for i in order}
            for i, fut in futures.items():
                out[i] = fut.result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


# ---------------------------------------------------------------------------
# conditional coverage


CONDITIONAL_COLUMNS = (
    "n", "concept_freq", "m", "alpha", "mode", "target", "n_sets", "n_fresh", "nominal", "mean",
    "share_below_nominal", "mean_size",
) + tuple(f"q{int(round(100 * p)):02d}" for p in QUANTILES)


def _conditional_cell(spec: dict[str, Any]) -> list[dict[str, Any]]:
    n, q, m, alpha = spec["n"], spec["concept_freq"], spec["m"], spec["alpha"]
    n_sets, n_fresh, delta = spec["n_sets"], spec["n_fresh"], spec["delta"]
    metric, schemes = spec["metric"], spec["schemes"]
    options = MetricOptions()
    lower = get_metric(metric).lower
    model = recall_tie_model(n, concept_freq=q, m_tied=m, **spec["model"])
    k = model.n_concepts
    kf = default_n_folds(alpha)
    tag = 2 + int(round(alpha * 1e6))
    gen = np.random.default_rng(_cell_seed(spec["entropy"], n, q, m, tag))
    fresh_gen = np.random.default_rng(_cell_seed(spec["entropy"], n, q, m, tag + 1))
    res = _simulate(model, gen, n=n, reps=n_sets, n_boot=spec["n_boot"], fold_counts=[kf],
                    delta=delta, metric=metric, schemes=schemes, prune=spec["prune"],
                    prune_epsilon=spec["prune_epsilon"], chunk=spec["chunk"])
    # n_fresh independent fresh probing sets for each fixed set (its conditional coverage)
    total = n_sets * n_fresh
    full = explain_identify(_fresh_sims(model, fresh_gen, n, total, metric, options),
                            lower).reshape(n_sets, n_fresh)
    small = explain_identify(_fresh_sims(model, fresh_gen, n // kf, total, metric, options),
                             lower).reshape(n_sets, n_fresh)

    def cond(sets, target):
        return np.array([np.isin(t, s).mean() for s, t in zip(sets, target)])

    per_mode = {}
    for sc in schemes:
        sets = prediction_sets(res.prob[sc], res.sim, alpha)
        name = "bootstrap" if sc == "multinomial" else sc
        per_mode[name] = (cond(sets, full), sets, 1 - alpha, f"explanation at n={n}")
    gsets = guarded_sets_of(res, metric, alpha)
    per_mode["guarded"] = (cond(gsets, full), gsets, 1 - alpha, f"explanation at n={n}")
    ssets = split_conformal_sets(res.fold_winners[kf], k, alpha, res.sim)
    per_mode["split"] = (cond(ssets, small), ssets, 1 - alpha, f"explanation at n={n // kf}")
    per_mode["certified"] = (np.array([model.best in s.tolist() for s in res.certified], float),
                             res.certified, 1 - delta, "population best")
    rows = []
    for mode, (cov, sets, nominal, target) in per_mode.items():
        qs = np.quantile(cov, QUANTILES)
        row = {"n": n, "concept_freq": q, "m": m, "alpha": alpha, "mode": mode,
               "target": target, "n_sets": n_sets,
               "n_fresh": n_fresh if mode != "certified" else 0, "nominal": nominal,
               "mean": float(cov.mean()), "share_below_nominal": float((cov < nominal).mean()),
               "mean_size": float(np.mean([len(s) for s in sets]))}
        row.update({f"q{int(round(100 * p)):02d}": float(v) for p, v in zip(QUANTILES, qs)})
        row["values"] = cov
        rows.append(row)
    return rows


def conditional_coverage(*, cells: Sequence[tuple[int, float, int, float]], n_sets: int = 50,
                         n_fresh: int = 200, n_boot: int = 200, metric: str = "recall",
                         rng: Any = None, delta: float = 0.05,
                         schemes: Sequence[str] = ("multinomial",), n_worse: int = 5,
                         neuron_freq: float = 0.2, best_recall: float = 0.6, gap_se: float = 1.0,
                         clear_gap_se: float = 8.0, prune: bool = True,
                         prune_epsilon: float = 1e-4, n_jobs: int = 1,
                         chunk: int = 50) -> list[dict[str, Any]]:
    """Coverage conditional on the probing set, for ``cells = [(n, concept_freq, m, alpha), ...]``.

    Per cell, ``n_sets`` fixed probing sets each get their sets; ``n_fresh`` fresh
    probing sets (size ``n`` for the bootstrap set, fold size ``floor(n/K)`` for the
    split set) give each fixed set's conditional coverage ``P(explanation of a fresh
    set in the set | the probing set)`` (target: ``identify(...).best``). One row per
    (cell, mode) with the mean, the share of fixed sets below nominal and the
    quantiles (:data:`QUANTILES`); ``values`` holds the ``n_sets`` conditional
    coverages. For the certified set the target is fixed, so each value is 0 or 1.
    """
    _check_metric(metric)
    schemes = _check_schemes(schemes)
    entropy = _entropy(rng)
    model = _model_kwargs(n_worse, neuron_freq, best_recall, gap_se, clear_gap_se)
    specs = [{"n": int(n), "concept_freq": float(q), "m": int(m), "alpha": float(a),
              "n_sets": int(n_sets), "n_fresh": int(n_fresh), "n_boot": int(n_boot),
              "delta": float(delta), "metric": metric, "entropy": entropy, "model": model,
              "schemes": schemes, "prune": bool(prune), "prune_epsilon": float(prune_epsilon),
              "chunk": int(chunk)}
             for (n, q, m, a) in cells]
    results = _map(_conditional_cell, specs, n_jobs, cost=lambda s: s["n"])
    return [row for cell in results for row in cell]


# ---------------------------------------------------------------------------
# output


def write_csv(rows: Sequence[dict[str, Any]], path: str | os.PathLike,
              columns: Sequence[str] | None = None) -> Path:
    """Write ``rows`` (dicts) to a CSV file; array-valued entries are left out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if columns is None:
        columns = [k for k in rows[0] if not isinstance(rows[0][k], np.ndarray)] if rows else []
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()
                        if k in columns})
    return path
