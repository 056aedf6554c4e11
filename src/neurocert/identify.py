"""Neuron identification with certified faithfulness.

``identify`` picks each neuron's concept (the argmax of the empirical similarity),
and certifies it: simultaneous confidence limits over all concepts, the
certified set ``S = {c : upper_c >= max_j lower_j}`` that contains the
population-best concept with probability >= 1 - delta, and the regret bound
``sim(c*) - sim(c_hat) <= max_c upper_c - lower_{c_hat}``.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _backend
from ._compare import results_equal
from ._optional import require
from ._validation import check_names, check_probability
from .bounds import confidence_limits
from .exceptions import NoBoundWarning, ValidationError
from .metrics import get_metric
from .similarity import (
    compute_stats,
    prepare,
    warn_low_frequency_accuracy,
    warn_undefined,
)

__all__ = ["IdentificationResult", "LayerSummary", "identify", "rank_concepts"]

MULTIPLICITY = ("none", "fwer", "fdr")
#: share of delta spent on the threshold event of a data-dependent ``top_frac`` cut-off
THRESHOLD_SHARE = 0.5


def rank_concepts(values: np.ndarray) -> np.ndarray:
    """Concept indices of each row sorted by value, descending; NaN last; ties by index.

    This is the library's one tie-breaking rule: among exactly equal similarities
    the lowest concept index wins, and NaN never wins.
    """
    filled = np.where(np.isnan(values), -np.inf, values)
    # stable sort on the negated values keeps index order among ties; NaN (-inf) last
    order = np.argsort(-filled, axis=1, kind="stable")
    nan_rows = np.isnan(np.take_along_axis(values, order, axis=1))
    # put NaN after genuine -inf values
    return np.take_along_axis(order, np.argsort(nan_rows, axis=1, kind="stable"), axis=1)


def _explanation(values: np.ndarray, order: np.ndarray, lower: float) -> np.ndarray:
    """Chosen concept per neuron: the first of ``order``; -1 ("none") when every value is
    NaN or at most the metric's minimum (the same rule as a bootstrap replicate)."""
    with np.errstate(invalid="ignore"):
        none = ~np.any(values > lower, axis=1)
    return np.where(none, -1, order[:, 0])


@dataclass(frozen=True)
class LayerSummary:
    """How many neurons have a certified label, with the multiplicity choice stated.

    A neuron is certified when the lower confidence limit of its chosen concept
    exceeds ``level`` (at the multiplicity-adjusted delta).
    """

    level: float
    multiplicity: str
    delta: float
    n_neurons: int
    n_certified: int
    certified: np.ndarray = field(repr=False)
    p_values: np.ndarray = field(repr=False)
    guarantee: str = ""

    def __str__(self) -> str:
        return (f"{self.n_certified} of {self.n_neurons} neurons have a certified label "
                f"(lower limit > {self.level:g}, delta={self.delta:g}, "
                f"multiplicity={self.multiplicity}): {self.guarantee}")


@dataclass(frozen=True, eq=False)
class IdentificationResult:
    """Result of :func:`identify`.

    Attributes
    ----------
    metric : str
    delta : float
        Failure probability of the simultaneous limits (per neuron).
    similarity, lower, upper, null : ndarray (n_neurons, n_concepts)
        Empirical similarity, simultaneous confidence limits (over the concepts
        of each neuron) and chance-level baseline.
    best : ndarray (n_neurons,) int
        Chosen concept (argmax; lowest index among ties); -1 ("none") when every
        similarity is undefined or at the metric's minimum (e.g. IoU 0 everywhere).
    top : ndarray (n_neurons, top_k) int
        Concepts ranked by similarity (the chosen one first).
    certified_sets : tuple of ndarray
        Per neuron, the concepts that may still be the population-best
        (ordered by similarity).
    regret_bound : ndarray (n_neurons,)
        ``max_c upper_c - lower_{best}``: bound on ``sim(c*) - sim(best)``.
    neuron_names, concept_names : list of str
    n_samples : int
    n_units : float
        Independent units that the bounds count (groups when grouped).
    parameters : dict
        Every parameter of the run (threshold, top_frac, truth, ...).
    timings : dict
    """

    metric: str
    delta: float
    similarity: np.ndarray = field(repr=False)
    lower: np.ndarray = field(repr=False)
    upper: np.ndarray = field(repr=False)
    null: np.ndarray = field(repr=False)
    best: np.ndarray = field(repr=False)
    top: np.ndarray = field(repr=False)
    certified_sets: tuple[np.ndarray, ...] = field(repr=False)
    regret_bound: np.ndarray = field(repr=False)
    neuron_names: list[str] = field(repr=False)
    concept_names: list[str] = field(repr=False)
    n_samples: int = 0
    n_units: float = 0.0
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ views
    @property
    def n_neurons(self) -> int:
        return self.similarity.shape[0]

    @property
    def n_concepts(self) -> int:
        return self.similarity.shape[1]

    def _pick(self, arr: np.ndarray) -> np.ndarray:
        rows = np.arange(self.n_neurons)
        out = arr[rows, np.maximum(self.best, 0)].astype(float)
        return np.where(self.best >= 0, out, np.nan)

    @property
    def best_similarity(self) -> np.ndarray:
        """Similarity of the chosen concept, (n_neurons,)."""
        return self._pick(self.similarity)

    @property
    def best_lower(self) -> np.ndarray:
        """Certified lower limit of the chosen concept's population similarity."""
        return self._pick(self.lower)

    @property
    def best_upper(self) -> np.ndarray:
        return self._pick(self.upper)

    @property
    def labels(self) -> list[str]:
        """Name of the chosen concept per neuron ("" when all similarities are undefined)."""
        return [self.concept_names[b] if b >= 0 else "" for b in self.best]

    def __repr__(self) -> str:
        return (f"IdentificationResult(metric={self.metric!r}, n_neurons={self.n_neurons}, "
                f"n_concepts={self.n_concepts}, n_samples={self.n_samples}, "
                f"delta={self.delta:g}, median certified-set size="
                f"{np.median([len(s) for s in self.certified_sets]):g})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdentificationResult):
            return NotImplemented
        return results_equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    # ---------------------------------------------------------- certification
    def p_values(self, level: float) -> np.ndarray:
        """Per-neuron p-value of ``H0: sim(chosen concept) <= level``, selection-adjusted.

        ``p_j = inf{d : lower_d(chosen) > level}``, where ``lower_d`` is the limit that
        holds simultaneously over all concepts at failure probability ``d``; valid
        because that limit holds for every concept at once. Computed by bisection
        in log-space. With ``top_frac`` the threshold band is recomputed at
        ``delta / (2 m H_m)`` (``m`` neurons, ``H_m`` the harmonic number), which is
        then the smallest attainable p-value, so Holm and Benjamini-Yekutieli can
        reach every neuron. Needs the inputs: available on results of
        :func:`identify` in this session, not on loaded results.
        """
        prepared = self.__dict__.get("_prepared")
        if prepared is None:
            raise ValidationError(
                "p-values need the probing data; they are available on results of identify() "
                "in this session, not on loaded results")
        stats = self.__dict__["_stats"]
        if prepared.top_frac is not None:
            m = self.n_neurons
            harmonic = float(np.sum(1.0 / np.arange(1, m + 1)))
            stats = compute_stats(prepared, threshold_delta=self.delta / (2 * m * harmonic))
        return _p_values(stats, self, float(level))

    def summary(self, level: float | None = None, *, multiplicity: str = "none") -> LayerSummary:
        """Layer summary: how many neurons have a certified label.

        Parameters
        ----------
        level : float, optional
            Certify when the chosen concept's lower limit exceeds ``level``
            (default: the chance baseline of that neuron's chosen concept is not
            used; the default level is 0 for bounded metrics).
        multiplicity : {"none", "fwer", "fdr"}
            ``"none"``: each neuron at ``delta`` (expected false certifications
            <= delta x n_neurons); ``"fwer"``: Holm over neurons (P(any false) <=
            delta); ``"fdr"``: Benjamini-Yekutieli over neurons (expected share of
            false certifications <= delta under any dependence).
        """
        if multiplicity not in MULTIPLICITY:
            raise ValidationError(f"`multiplicity` must be one of {MULTIPLICITY}; got {multiplicity!r}")
        lvl = 0.0 if level is None else float(level)
        m = self.n_neurons
        d = self.delta
        if multiplicity == "none":
            cert = (self.best >= 0) & (self.best_lower > lvl)
            pv = np.full(m, np.nan)
            guarantee = (f"each certification is wrong with probability <= {d:g}; expected false "
                         f"certifications <= {d * m:.3g}")
        else:
            pv = self.p_values(lvl)
            order = np.argsort(pv, kind="stable")
            ranked = pv[order]
            i = np.arange(1, m + 1)
            if multiplicity == "fwer":
                ok = ranked <= d / (m - i + 1)
                k = m if ok.all() else int(np.argmin(ok))
                guarantee = f"P(any false certification) <= {d:g} (Holm)"
            else:
                c_m = float(np.sum(1.0 / i))
                ok = ranked <= d * i / (m * c_m)
                k = int(np.max(np.nonzero(ok)[0]) + 1) if ok.any() else 0
                guarantee = (f"expected share of false certifications <= {d:g} "
                             "(Benjamini-Yekutieli, any dependence)")
            cert = np.zeros(m, dtype=bool)
            cert[order[:k]] = True
        return LayerSummary(level=lvl, multiplicity=multiplicity, delta=d, n_neurons=m,
                            n_certified=int(cert.sum()), certified=cert, p_values=pv,
                            guarantee=guarantee)

    # ----------------------------------------------------------------- tables
    def to_frame(self):
        """One row per neuron: label, similarity with limits, null, certified set, regret.

        Requires pandas (``pip install 'neurocert[io]'``).
        """
        pd = require("pandas", "IdentificationResult.to_frame()")
        cols = self._neuron_columns()
        cols["certified_set"] = [", ".join(self.concept_names[i] for i in s)
                                 for s in self.certified_sets]
        for r in range(1, self.top.shape[1]):
            cols[f"runner_up_{r}"] = [self.concept_names[i] if i >= 0 else ""
                                      for i in self.top[:, r]]
        return pd.DataFrame(cols)

    def _neuron_columns(self) -> dict[str, Any]:
        return {
            "neuron": np.array(self.neuron_names, dtype=object),
            "concept": np.array(self.labels, dtype=object),
            "concept_index": self.best.astype(np.int64),
            "similarity": self.best_similarity,
            "lower": self.best_lower,
            "upper": self.best_upper,
            "null": self._pick(self.null),
            "certified_set_size": np.array([len(s) for s in self.certified_sets], np.int64),
            "regret_bound": self.regret_bound,
        }

    def save(self, path: str | Path, *, csv: bool = False) -> Path:
        """Save to a results directory (Parquet tables + JSON manifest), atomically."""
        from . import results

        n, c = self.similarity.shape
        neurons = self._neuron_columns()
        neurons["certified_set"] = np.array([np.asarray(s, np.int64) for s in self.certified_sets]
                                            + [None], dtype=object)[:-1]
        neurons["top"] = np.array([row.astype(np.int64) for row in self.top] + [None],
                                  dtype=object)[:-1]
        pairs = {
            "neuron_index": np.repeat(np.arange(n, dtype=np.int64), c),
            "concept_index": np.tile(np.arange(c, dtype=np.int64), n),
            "similarity": self.similarity.reshape(-1),
            "lower": self.lower.reshape(-1),
            "upper": self.upper.reshape(-1),
            "null": self.null.reshape(-1),
        }
        concepts = {"concept": np.array(self.concept_names, dtype=object)}
        params = {k: v for k, v in self.parameters.items() if k != "input_hashes"}
        manifest = results.make_manifest(
            "identification",
            parameters={**params, "metric": self.metric, "delta": self.delta,
                        "n_samples": self.n_samples, "n_units": self.n_units},
            seed=self.parameters.get("seed"), input_hashes=self.parameters.get("input_hashes"),
            timings=self.timings)
        return results.save_tables(path, {"neurons": neurons, "pairs": pairs,
                                          "concepts": concepts}, manifest, csv=csv)

    @classmethod
    def load(cls, path: str | Path) -> IdentificationResult:
        """Load a result written by :meth:`save`; unknown schemas raise ``SchemaError``."""
        from . import results

        tables, manifest = results.load_tables(path, kind="identification", required={
            "neurons": ["neuron", "concept_index", "certified_set", "top", "regret_bound"],
            "pairs": ["neuron_index", "concept_index", "similarity", "lower", "upper", "null"],
            "concepts": ["concept"]})
        nt, pt = tables["neurons"], tables["pairs"]
        n = len(nt["neuron"])
        c = len(tables["concepts"]["concept"])

        def grid(name):
            out = np.full((n, c), np.nan)
            out[pt["neuron_index"], pt["concept_index"]] = pt[name]
            return out

        params = dict(manifest["parameters"])
        if manifest.get("input_hashes"):
            params["input_hashes"] = dict(manifest["input_hashes"])
        metric = params.pop("metric")
        delta = params.pop("delta")
        n_samples = params.pop("n_samples")
        n_units = params.pop("n_units")
        return cls(metric=metric, delta=delta, similarity=grid("similarity"),
                   lower=grid("lower"), upper=grid("upper"), null=grid("null"),
                   best=np.asarray(nt["concept_index"], np.int64),
                   top=np.stack([np.asarray(t, np.int64) for t in nt["top"]]) if n else
                   np.zeros((0, 0), np.int64),
                   certified_sets=tuple(np.asarray(s, np.int64) for s in nt["certified_set"]),
                   regret_bound=np.asarray(nt["regret_bound"], float),
                   neuron_names=[str(x) for x in nt["neuron"]],
                   concept_names=[str(x) for x in tables["concepts"]["concept"]],
                   n_samples=int(n_samples), n_units=float(n_units), parameters=params,
                   timings=dict(manifest.get("timings") or {}))


def certified_sets(lower: np.ndarray, upper: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, ...]:
    """``S_j = {c : upper[j, c] >= max_k lower[j, k]}``, listed in ``order`` (by similarity)."""
    best_lower = np.max(lower, axis=1, keepdims=True)
    member = upper >= best_lower
    in_order = np.take_along_axis(member, order, axis=1)
    return tuple(order[j][in_order[j]] for j in range(lower.shape[0]))


def _p_values(stats, result: IdentificationResult, level: float, iterations: int = 60) -> np.ndarray:
    metric = get_metric(result.metric)
    from .metrics import MetricOptions

    options = MetricOptions(truth=result.parameters.get("truth", "concept"),
                            wpmi_lambda=result.parameters.get("wpmi_lambda", 1.0))
    if not hasattr(stats, "diagonal"):  # no finite-sample bound: nothing is certified
        warnings.warn(f"metric {metric.name!r} has no confidence bound; its p-values are 1 and "
                      "no label is certified", NoBoundWarning, stacklevel=3)
        return np.ones(result.n_neurons)
    best = np.maximum(result.best, 0)
    diag = stats.diagonal(best)
    est = metric.finalize(diag, options)
    n_sim = result.n_concepts

    def lower_at(d):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo, _ = confidence_limits(diag, metric, delta=d[:, None], n_simultaneous=n_sim,
                                      options=options, estimate=est)
        return lo[:, 0]

    return bisect_p_values(lower_at, result.best, level, iterations)


def bisect_p_values(lower_at: Any, best: np.ndarray, level: float,
                    iterations: int = 60) -> np.ndarray:
    """``p_j = inf{d : lower_at(d)_j > level}`` per neuron, by bisection in log10(d).

    ``lower_at(d)`` gives each neuron's lower limit of its chosen concept at failure
    probabilities ``d (n_neurons,)`` (simultaneous over the concepts); neurons with
    ``best < 0`` ("none") get 1.
    """
    m = best.shape[0]
    lo_log = np.full(m, -300.0)
    hi_log = np.zeros(m)
    ok_at_one = lower_at(np.full(m, 1 - 1e-12)) > level
    for _ in range(iterations):
        mid = 0.5 * (lo_log + hi_log)
        ok = lower_at(10.0 ** mid) > level
        hi_log = np.where(ok, mid, hi_log)
        lo_log = np.where(ok, lo_log, mid)
    p = np.where(ok_at_one, 10.0 ** hi_log, 1.0)
    return np.where(best >= 0, np.minimum(p, 1.0), 1.0)


def identify(activations: Any, concepts: Any, *, metric: str, delta: float = 0.05,
             concept_names: Any = None, neuron_names: Any = None, top_k: int = 5,
             sample_weight: Any = None, groups: Any = None, threshold: float | None = None,
             top_frac: float | None = None, truth: str = "concept",
             wpmi_lambda: float = 1.0, backend: str = "memory",
             client: Any = None) -> IdentificationResult:
    """Identify each neuron's concept and certify its faithfulness.

    Parameters
    ----------
    activations : array-like (n_samples, n_neurons)
    concepts : array-like or scipy.sparse (n_samples, n_concepts), values in [0, 1]
    metric : str
        See :func:`neurocert.similarity`.
    delta : float in (0, 1)
        Failure probability: per neuron, with probability >= 1 - delta every
        concept's population similarity lies within ``[lower, upper]``.
    concept_names, neuron_names : sequence of str, optional
    top_k : int
        Number of ranked concepts kept per neuron.
    sample_weight, groups, threshold, top_frac, truth, wpmi_lambda
        As in :func:`neurocert.similarity`.
    backend : {"memory", "blocks", "dask"}
        ``"memory"`` (default) computes here; ``"blocks"`` streams neuron blocks
        out of core (``activations`` may be a Zarr directory or ``.npy`` path);
        ``"dask"`` runs the blocks on a Dask cluster. Results are identical
        (:mod:`neurocert.distributed`, ``docs/distributed.md``).
    client : distributed.Client or str, optional
        With ``backend="dask"``: the client or a scheduler address; default: a
        ``LocalCluster`` started for this call.

    Returns
    -------
    IdentificationResult

    Notes
    -----
    The chosen concept is ``argmax_c sim_hat``; among exact ties the lowest
    concept index wins and undefined (NaN) similarities never win. Because the
    data choose the concept, its certificate uses the limits that hold
    simultaneously over all concepts (Bonferroni; proofs in ``docs/theory.md``).

    Examples
    --------
    >>> import numpy as np, neurocert
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((2000, 3)) < 0.2).astype(float)
    >>> a = 2.0 * z[:, [1]] + rng.normal(size=(2000, 1))
    >>> res = neurocert.identify(a, z, metric="auroc", concept_names=["x", "y", "w"])
    >>> res.labels
    ['y']
    """
    if _backend.wants_blocks(backend, client):
        from . import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.identify(
                activations, concepts, metric=metric, delta=delta, concept_names=concept_names,
                neuron_names=neuron_names, top_k=top_k, sample_weight=sample_weight,
                groups=groups, threshold=threshold, top_frac=top_frac, truth=truth,
                wpmi_lambda=wpmi_lambda, client=cl)
    t0 = time.perf_counter()
    delta = check_probability(delta, "delta")
    if not (isinstance(top_k, (int, np.integer)) and top_k >= 1):
        raise ValidationError(f"`top_k` must be a positive integer; got {top_k!r}")
    p = prepare(activations, concepts, metric=metric, sample_weight=sample_weight, groups=groups,
                threshold=threshold, top_frac=top_frac, truth=truth, wpmi_lambda=wpmi_lambda)
    cnames = check_names(concept_names, p.n_concepts, "concept")
    nnames = check_names(neuron_names, p.n_neurons, "neuron")
    warn_low_frequency_accuracy(p)
    stats = compute_stats(p, threshold_delta=delta * THRESHOLD_SHARE)
    t1 = time.perf_counter()
    sim = p.metric.finalize(stats, p.options)
    warn_undefined(sim, p.metric)
    null = p.metric.null(stats, p.options) if p.metric.null is not None else np.full(sim.shape, np.nan)
    lower, upper = confidence_limits(stats, p.metric, delta=delta, n_simultaneous=p.n_concepts,
                                     options=p.options, estimate=sim)
    t2 = time.perf_counter()
    order = rank_concepts(sim)
    best = _explanation(sim, order, p.metric.lower)
    if np.isnan(lower).all():
        sets = tuple(np.array([], np.int64) for _ in range(p.n_neurons))
        regret = np.full(p.n_neurons, np.nan)
    else:
        sets = certified_sets(lower, upper, order)
        rows = np.arange(p.n_neurons)
        regret = np.max(upper, axis=1) - lower[rows, np.maximum(best, 0)]
        regret = np.where(best >= 0, regret, np.nan)
    params = {"threshold": p.threshold, "top_frac": p.top_frac, "truth": truth,
              "wpmi_lambda": float(wpmi_lambda), "top_k": int(top_k),
              "grouped": p.design.grouped, "weighted": p.sample_weight is not None}
    result = IdentificationResult(
        metric=p.metric.name, delta=delta, similarity=sim, lower=lower, upper=upper, null=null,
        best=best.astype(np.int64), top=order[:, :min(top_k, p.n_concepts)].astype(np.int64),
        certified_sets=sets, regret_bound=regret, neuron_names=nnames, concept_names=cnames,
        n_samples=p.n_samples, n_units=float(p.design.n_units), parameters=params,
        timings={"statistics_s": t1 - t0, "bounds_s": t2 - t1,
                 "total_s": time.perf_counter() - t0})
    object.__setattr__(result, "_stats", stats)
    object.__setattr__(result, "_prepared", p)
    return result
