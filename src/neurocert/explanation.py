"""Results of :func:`neurocert.bootstrap_explain`: probabilities, sets, stability scores."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._compare import results_equal
from ._optional import require
from .identify import IdentificationResult

__all__ = ["NONE", "ExplanationResult", "guarded_sets", "prediction_sets", "split_conformal_sets"]

#: index used for the "none" outcome (no concept above the metric's minimum)
NONE = -1

COVERAGE_TARGETS = {
    "bootstrap": "explanation of an independent probing set of the same size (nominal, "
                 "not guaranteed)",
    "split": "explanation of an independent probing set of fold size n/K (finite-sample "
             ">= 1 - alpha)",
    "certified": "population-best concept (>= 1 - delta)",
    "guarded": "explanation of an independent probing set of the same size (nominal; the "
               "bootstrap set widened by the confidence limits, measured to reach 1 - alpha "
               "where at most two concepts are near-tied, rare concepts included; not proven)",
}


def _outcome_order(prob: np.ndarray, sim: np.ndarray) -> np.ndarray:
    """Outcomes (concepts then "none") ordered by probability, then similarity, then index."""
    n, c1 = prob.shape
    s = np.concatenate([np.where(np.isnan(sim), -np.inf, sim), np.full((n, 1), -np.inf)], axis=1)
    idx = np.broadcast_to(np.arange(c1), (n, c1))
    # lexsort: last key is primary
    return np.stack([np.lexsort((idx[j], -s[j], -prob[j])) for j in range(n)])


def prediction_sets(prob: np.ndarray, sim: np.ndarray, alpha: float) -> tuple[np.ndarray, ...]:
    """Smallest set of outcomes whose cumulative probability reaches ``1 - alpha``.

    Parameters
    ----------
    prob : ndarray (n_neurons, n_concepts + 1)
        Selection probabilities; the last column is "none".
    sim : ndarray (n_neurons, n_concepts)
        Full-data similarity (tie-breaker among equal probabilities).
    alpha : float

    Returns
    -------
    tuple of int arrays, ordered by probability; ``-1`` denotes "none".
    Ties in probability are broken by similarity (higher first), then index.
    """
    n, c1 = prob.shape
    order = _outcome_order(prob, sim)
    sorted_p = np.take_along_axis(prob, order, axis=1)
    cum = np.cumsum(sorted_p, axis=1)
    need = 1 - alpha - 1e-12
    size = np.minimum(np.argmax(cum >= need, axis=1) + 1, c1)
    size = np.where(cum[:, -1] >= need, size, c1)
    out = []
    for j in range(n):
        members = order[j, :size[j]]
        out.append(np.where(members == c1 - 1, NONE, members).astype(np.int64))
    return tuple(out)


def chosen_similarity(sim: np.ndarray, best: np.ndarray, lower: float) -> np.ndarray:
    """The similarity of each neuron's chosen concept; ``lower`` where the choice is "none"."""
    rows = np.arange(sim.shape[0])
    return np.where(best >= 0, sim[rows, np.maximum(best, 0)], lower)


def guarded_sets(prob: np.ndarray, sim: np.ndarray, alpha: float, upper: np.ndarray,
                 reference: np.ndarray) -> tuple[np.ndarray, ...]:
    """Bootstrap sets widened by the confidence limits (the "evidence guard").

    The set of :func:`prediction_sets` plus every concept whose upper confidence
    limit reaches ``reference`` (the chosen concept's similarity, or the metric's
    minimum when the choice is "none"): concepts the probing set cannot show to be
    worse than its own explanation. A resample never shows a co-occurrence that
    the probing set lacks, so the plain bootstrap set misses rare concepts that a
    fresh probing set may pick; their limits are wide and keep them in. The added
    concepts are members of the certified set (``upper >= max lower``) because
    ``reference >= max lower``. NaN limits (no bound) add nothing.

    Parameters
    ----------
    prob : ndarray (n_neurons, n_concepts + 1)
        Selection probabilities; the last column is "none".
    sim, upper : ndarray (n_neurons, n_concepts)
        Full-data similarity and upper confidence limits.
    alpha : float
    reference : ndarray (n_neurons,)

    Returns
    -------
    tuple of int arrays, ordered as in :func:`prediction_sets`; ``-1`` denotes "none".
    """
    n, c = sim.shape
    member = np.zeros((n, c + 1), bool)
    for j, s in enumerate(prediction_sets(prob, sim, alpha)):
        member[j, np.where(s < 0, c, s)] = True
    with np.errstate(invalid="ignore"):
        member[:, :c] |= np.asarray(upper) >= np.asarray(reference, float)[:, None]
    order = _outcome_order(prob, sim)
    in_order = np.take_along_axis(member, order, axis=1)
    out = []
    for j in range(n):
        members = order[j][in_order[j]]
        out.append(np.where(members == c, NONE, members).astype(np.int64))
    return tuple(out)


def split_conformal_sets(fold_winners: np.ndarray, n_concepts: int, alpha: float,
                         sim: np.ndarray) -> tuple[np.ndarray, ...]:
    """Full-conformal sets from ``K`` exchangeable fold explanations (augmented-count score).

    For a candidate outcome ``c`` the augmented multiset adds ``c`` to the ``K`` fold
    explanations; an explanation's nonconformity is minus its count in that multiset.
    The conformal p-value is ``p(c) = (1 + S(n_c + 1)) / (K + 1)`` with
    ``S(v) = sum_e n_e 1[n_e <= v]`` over outcomes ``e`` with ``n_e`` fold counts, and
    the set is ``{c : p(c) > alpha}``. If a fresh probing set of fold size is
    exchangeable with the folds, its explanation is in the set with probability
    ``>= 1 - alpha``.

    Parameters
    ----------
    fold_winners : ndarray (K, n_neurons) int, ``-1`` = none
    """
    k, n = fold_winners.shape
    counts = np.zeros((n, n_concepts + 1))
    cols = np.where(fold_winners < 0, n_concepts, fold_winners)
    np.add.at(counts, (np.broadcast_to(np.arange(n), (k, n)), cols), 1)
    out = []
    prob = counts / k
    order = _outcome_order(prob, sim)
    for j in range(n):
        cnt = counts[j]
        v = cnt + 1
        srt = np.sort(cnt)
        csum = np.concatenate([[0.0], np.cumsum(srt)])
        s_v = csum[np.searchsorted(srt, v, side="right")]
        pval = (1 + s_v) / (k + 1)
        keep = pval > alpha
        members = order[j][keep[order[j]]]
        out.append(np.where(members == n_concepts, NONE, members).astype(np.int64))
    return tuple(out)


def _entropy(prob: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return -np.sum(np.where(prob > 0, prob * np.log(prob), 0.0), axis=1)


@dataclass(frozen=True, eq=False)
class ExplanationResult:
    """Result of :func:`neurocert.bootstrap_explain`.

    Attributes
    ----------
    identification : IdentificationResult
        Full-data identification with certificates (``certified_sets``).
    probabilities : ndarray (n_neurons, n_concepts)
        Selection probability of each concept across replicates.
    none_probability : ndarray (n_neurons,)
        Share of replicates with no concept above the metric's minimum.
    standard_error : ndarray (n_neurons, n_concepts)
        Monte-Carlo standard error ``sqrt(p (1 - p) / n_boot)``.
    prediction_sets : tuple of int arrays
        Sets of the requested mode (``-1`` = none), ordered by probability.
    split_sets : tuple of int arrays or None
    certified_sets : tuple of int arrays
    mode_frequency, agreement, entropy : ndarray (n_neurons,)
        ``max p``, ``sum p^2`` (probability that two independent replicates agree)
        and the entropy of the outcome distribution (with "none").
    set_size : ndarray (n_neurons,)
    self_in_set : ndarray (n_neurons,) bool
        Whether the full-data explanation lies in its own prediction set.
    interval_concepts : ndarray (n_neurons, top_k) int
    intervals : ndarray (n_neurons, top_k, 2)
        Percentile bootstrap intervals (level ``1 - alpha``) of the similarity of the
        top concepts: descriptive, **not** selection-adjusted.
    winners, ties : ndarray (n_boot, n_neurons)
        Each replicate's winner (lowest index among ties) and number of tied winners.
    n_boot : int
    alpha : float
    mode : str
    coverage_target : str
    parameters, timings : dict
    """

    identification: IdentificationResult
    probabilities: np.ndarray = field(repr=False)
    none_probability: np.ndarray = field(repr=False)
    standard_error: np.ndarray = field(repr=False)
    prediction_sets: tuple[np.ndarray, ...] = field(repr=False)
    split_sets: tuple[np.ndarray, ...] | None = field(repr=False)
    mode_frequency: np.ndarray = field(repr=False)
    agreement: np.ndarray = field(repr=False)
    entropy: np.ndarray = field(repr=False)
    set_size: np.ndarray = field(repr=False)
    self_in_set: np.ndarray = field(repr=False)
    interval_concepts: np.ndarray = field(repr=False)
    intervals: np.ndarray = field(repr=False)
    winners: np.ndarray = field(repr=False)
    ties: np.ndarray = field(repr=False)
    fold_winners: np.ndarray | None = field(repr=False)
    n_candidates: np.ndarray = field(repr=False)
    n_boot: int = 0
    alpha: float = 0.05
    mode: str = "bootstrap"
    coverage_target: str = ""
    parameters: dict[str, Any] = field(default_factory=dict, repr=False)
    timings: dict[str, float] = field(default_factory=dict, repr=False)

    # ----------------------------------------------------------------- build
    @classmethod
    def build(cls, *, identification: IdentificationResult, votes: np.ndarray,
              winners: np.ndarray, ties: np.ndarray, tracked: np.ndarray, alpha: float,
              mode: str, split_sets, fold_winners, parameters: dict[str, Any],
              timings: dict[str, float], n_candidates: np.ndarray) -> ExplanationResult:
        sim = identification.similarity
        b = winners.shape[0]
        n, c = sim.shape
        if b:
            prob_all = votes / b
        elif fold_winners is not None:
            prob_all = np.zeros((n, c + 1))
            cols = np.where(fold_winners < 0, c, fold_winners)
            np.add.at(prob_all, (np.broadcast_to(np.arange(n), fold_winners.shape), cols), 1)
            prob_all /= fold_winners.shape[0]
        else:
            prob_all = np.zeros((n, c + 1))
        if mode == "split":
            sets = split_sets
            target = COVERAGE_TARGETS["split"]
        else:
            sets = prediction_sets(prob_all, sim, alpha)
            target = COVERAGE_TARGETS["bootstrap"]
        eff_b = b if b else (fold_winners.shape[0] if fold_winners is not None else 1)
        prob = prob_all[:, :c]
        se = np.sqrt(prob * (1 - prob) / max(eff_b, 1))
        best = identification.best
        self_in = np.array([(best[j] if best[j] >= 0 else -1) in sets[j] for j in range(n)])
        if b and tracked.shape[2]:
            quantile = np.nanquantile if np.isnan(tracked).any() else np.quantile
            with np.errstate(all="ignore"), _quiet_nan():
                lo = quantile(tracked, alpha / 2, axis=0)
                hi = quantile(tracked, 1 - alpha / 2, axis=0)
            intervals = np.stack([lo, hi], axis=-1)
        else:
            intervals = np.full(identification.top.shape + (2,), np.nan)
        return cls(identification=identification, probabilities=prob,
                   none_probability=prob_all[:, c], standard_error=se, prediction_sets=sets,
                   split_sets=split_sets, mode_frequency=prob_all.max(axis=1),
                   agreement=np.sum(prob_all**2, axis=1), entropy=_entropy(prob_all),
                   set_size=np.array([len(s) for s in sets], np.int64), self_in_set=self_in,
                   interval_concepts=identification.top.copy(), intervals=intervals,
                   winners=winners, ties=ties, fold_winners=fold_winners,
                   n_candidates=n_candidates, n_boot=b, alpha=alpha, mode=mode,
                   coverage_target=target, parameters=parameters, timings=timings)

    def guarded(self) -> ExplanationResult:
        """This result with its bootstrap sets widened by the confidence limits.

        Adds to each prediction set every concept whose upper confidence limit
        (``identification.upper``: the certified set's, at ``delta``) reaches the
        chosen concept's similarity (:func:`guarded_sets`). Nothing is recomputed
        from the data, so it also works on loaded results. The plain bootstrap set
        under-covers a fresh probing set's explanation where concepts are rare
        (about one positive per concept); the guarded set reached ``1 - alpha`` in
        every cell with at most two near-tied concepts of the coverage simulation
        (``tests/test_coverage.py``, docs/theory.md §6.5), at the price of larger
        sets. A measured property, not a theorem.

        Raises
        ------
        ValidationError
            In split mode (the split set has its own finite-sample guarantee).
        """
        from dataclasses import replace

        from .exceptions import NoBoundWarning, ValidationError
        from .metrics import get_metric

        if self.mode == "split":
            raise ValidationError("guard widens bootstrap sets; mode='split' has none (its split "
                                  "set covers the fold-size explanation by itself)")
        if self.parameters.get("guard"):
            return self
        ident = self.identification
        if np.isnan(ident.upper).all():
            import warnings

            warnings.warn(f"metric {ident.metric!r} has no confidence limits; the guard adds "
                          "nothing", NoBoundWarning, stacklevel=2)
        n = ident.similarity.shape[0]
        reference = chosen_similarity(ident.similarity, ident.best, get_metric(ident.metric).lower)
        prob_all = np.concatenate([self.probabilities, self.none_probability[:, None]], axis=1)
        sets = guarded_sets(prob_all, ident.similarity, self.alpha, ident.upper, reference)
        self_in = np.array([int(ident.best[j]) in sets[j] for j in range(n)])
        return replace(self, prediction_sets=sets,
                       set_size=np.array([len(s) for s in sets], np.int64), self_in_set=self_in,
                       coverage_target=COVERAGE_TARGETS["guarded"],
                       parameters={**self.parameters, "guard": True})

    # ----------------------------------------------------------------- views
    @property
    def certified_sets(self) -> tuple[np.ndarray, ...]:
        return self.identification.certified_sets

    @property
    def concept_names(self) -> list[str]:
        return self.identification.concept_names

    @property
    def neuron_names(self) -> list[str]:
        return self.identification.neuron_names

    def _names(self, members: np.ndarray) -> list[str]:
        return ["(none)" if i < 0 else self.concept_names[i] for i in members]

    def __repr__(self) -> str:
        return (f"ExplanationResult(metric={self.identification.metric!r}, mode={self.mode!r}, "
                f"n_neurons={len(self.set_size)}, n_boot={self.n_boot}, alpha={self.alpha:g}, "
                f"median set size={np.median(self.set_size):g}, "
                f"median mode frequency={np.median(self.mode_frequency):.3g})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ExplanationResult):
            return NotImplemented
        return results_equal(self, other)

    __hash__ = None  # type: ignore[assignment]

    def _repr_html_(self) -> str:
        """Notebook view: the first neurons with label, limits and sets (names escaped)."""
        from .report._html import explanation_html

        return explanation_html(self)

    # ----------------------------------------------------------------- tables
    def _neuron_columns(self) -> dict[str, Any]:
        ident = self.identification
        cols = ident._neuron_columns()
        cols.update({
            "mode_frequency": self.mode_frequency,
            "agreement": self.agreement,
            "entropy": self.entropy,
            "set_size": self.set_size,
            "self_in_set": self.self_in_set,
            "none_probability": self.none_probability,
        })
        return cols

    def to_frame(self):
        """One row per neuron: label, certificate, prediction set with probabilities, scores."""
        pd = require("pandas", "ExplanationResult.to_frame()")
        cols = self._neuron_columns()
        cols["prediction_set"] = [
            ", ".join(f"{name} ({self._prob(j, i):.2f})"
                      for name, i in zip(self._names(s), s))
            for j, s in enumerate(self.prediction_sets)]
        cols["certified_set"] = [", ".join(self._names(s)) for s in self.certified_sets]
        if self.split_sets is not None and self.mode == "both":
            cols["split_set"] = [", ".join(self._names(s)) for s in self.split_sets]
        return pd.DataFrame(cols)

    def _prob(self, j: int, i: int) -> float:
        return float(self.none_probability[j] if i < 0 else self.probabilities[j, i])

    def save(self, path: str | Path, *, csv: bool = False) -> Path:
        """Save to a results directory (Parquet tables + JSON manifest), atomically."""
        from . import results

        ident = self.identification
        n, c = ident.similarity.shape
        neurons = self._neuron_columns()

        def obj(seq):
            return np.array([np.asarray(s, np.int64) for s in seq] + [None], dtype=object)[:-1]

        neurons["prediction_set"] = obj(self.prediction_sets)
        neurons["certified_set"] = obj(ident.certified_sets)
        neurons["top"] = obj(ident.top)
        neurons["n_candidates"] = self.n_candidates
        if self.split_sets is not None:
            neurons["split_set"] = obj(self.split_sets)
        k = self.interval_concepts.shape[1]
        pairs = {
            "neuron_index": np.repeat(np.arange(n, dtype=np.int64), c),
            "concept_index": np.tile(np.arange(c, dtype=np.int64), n),
            "similarity": ident.similarity.reshape(-1),
            "lower": ident.lower.reshape(-1),
            "upper": ident.upper.reshape(-1),
            "null": ident.null.reshape(-1),
            "probability": self.probabilities.reshape(-1),
        }
        intervals = {
            "neuron_index": np.repeat(np.arange(n, dtype=np.int64), k),
            "rank": np.tile(np.arange(k, dtype=np.int64), n),
            "concept_index": self.interval_concepts.reshape(-1).astype(np.int64),
            "low": self.intervals[..., 0].reshape(-1),
            "high": self.intervals[..., 1].reshape(-1),
        }
        b = self.winners.shape[0]
        replicates = {
            "replicate": np.repeat(np.arange(b, dtype=np.int64), n),
            "neuron_index": np.tile(np.arange(n, dtype=np.int64), b),
            "winner": self.winners.reshape(-1),
            "n_tied": self.ties.reshape(-1),
        }
        tables = {"neurons": neurons, "pairs": pairs, "intervals": intervals,
                  "replicates": replicates,
                  "concepts": {"concept": np.array(ident.concept_names, dtype=object)}}
        if self.fold_winners is not None:
            kf = self.fold_winners.shape[0]
            tables["folds"] = {"fold": np.repeat(np.arange(kf, dtype=np.int64), n),
                               "neuron_index": np.tile(np.arange(n, dtype=np.int64), kf),
                               "winner": self.fold_winners.reshape(-1)}
        own = {k: v for k, v in self.parameters.items() if k != "input_hashes"}
        ident_params = {k: v for k, v in ident.parameters.items() if k != "input_hashes"}
        manifest = results.make_manifest(
            "explanation",
            parameters={**own, "identification": {
                **ident_params, "metric": ident.metric, "delta": ident.delta,
                "n_samples": ident.n_samples, "n_units": ident.n_units},
                "result_alpha": self.alpha, "result_mode": self.mode,
                "n_boot_done": self.n_boot, "coverage_target": self.coverage_target},
            seed=None, input_hashes=self.parameters.get("input_hashes"),
            timings=self.timings,
            extra={"seed_entropy": self.parameters.get("seed_entropy")})
        return results.save_tables(path, tables, manifest, csv=csv)

    @classmethod
    def load(cls, path: str | Path) -> ExplanationResult:
        """Load a result written by :meth:`save`."""
        from . import results

        tables, manifest = results.load_tables(path, kind="explanation", required={
            "neurons": ["neuron", "concept_index", "prediction_set", "certified_set", "top",
                        "regret_bound", "mode_frequency", "agreement", "entropy", "set_size",
                        "self_in_set", "none_probability", "n_candidates"],
            "pairs": ["neuron_index", "concept_index", "similarity", "lower", "upper", "null",
                      "probability"],
            "intervals": ["neuron_index", "rank", "concept_index", "low", "high"],
            "replicates": ["replicate", "neuron_index", "winner", "n_tied"],
            "concepts": ["concept"]})
        nt, pt = tables["neurons"], tables["pairs"]
        n = len(nt["neuron"])
        c = len(tables["concepts"]["concept"])
        params = dict(manifest["parameters"])
        if manifest.get("input_hashes"):
            params["input_hashes"] = dict(manifest["input_hashes"])
        ip = dict(params.pop("identification"))

        def grid(name):
            out = np.full((n, c), np.nan)
            out[pt["neuron_index"], pt["concept_index"]] = pt[name]
            return out

        def sets(col):
            return tuple(np.asarray(s, np.int64) for s in nt[col])

        ident = IdentificationResult(
            metric=ip.pop("metric"), delta=ip.pop("delta"), similarity=grid("similarity"),
            lower=grid("lower"), upper=grid("upper"), null=grid("null"),
            best=np.asarray(nt["concept_index"], np.int64),
            top=np.stack([np.asarray(t, np.int64) for t in nt["top"]]),
            certified_sets=sets("certified_set"),
            regret_bound=np.asarray(nt["regret_bound"], float),
            neuron_names=[str(x) for x in nt["neuron"]],
            concept_names=[str(x) for x in tables["concepts"]["concept"]],
            n_samples=int(ip.pop("n_samples")), n_units=float(ip.pop("n_units")), parameters=ip)
        it = tables["intervals"]
        k = int(it["rank"].max()) + 1 if len(it["rank"]) else 0
        rt = tables["replicates"]
        b = int(params.pop("n_boot_done"))
        prob = grid("probability")
        alpha = float(params.pop("result_alpha"))
        mode = params.pop("result_mode")
        target = params.pop("coverage_target")
        fold_winners = None
        if "folds" in tables:
            ft = tables["folds"]
            kf = int(ft["fold"].max()) + 1
            fold_winners = np.asarray(ft["winner"], np.int64).reshape(kf, n)
        eff_b = b if b else (fold_winners.shape[0] if fold_winners is not None else 1)
        return cls(
            identification=ident, probabilities=prob,
            none_probability=np.asarray(nt["none_probability"], float),
            standard_error=np.sqrt(prob * (1 - prob) / max(eff_b, 1)),
            prediction_sets=sets("prediction_set"),
            split_sets=sets("split_set") if "split_set" in nt else None,
            mode_frequency=np.asarray(nt["mode_frequency"], float),
            agreement=np.asarray(nt["agreement"], float),
            entropy=np.asarray(nt["entropy"], float),
            set_size=np.asarray(nt["set_size"], np.int64),
            self_in_set=np.asarray(nt["self_in_set"], bool),
            interval_concepts=np.asarray(it["concept_index"], np.int64).reshape(n, k),
            intervals=np.stack([np.asarray(it["low"], float).reshape(n, k),
                                np.asarray(it["high"], float).reshape(n, k)], axis=-1),
            winners=np.asarray(rt["winner"], np.int64).reshape(b, n),
            ties=np.asarray(rt["n_tied"], np.int64).reshape(b, n),
            fold_winners=fold_winners, n_candidates=np.asarray(nt["n_candidates"], np.int64),
            n_boot=b, alpha=alpha, mode=mode, coverage_target=target, parameters=params,
            timings=dict(manifest.get("timings") or {}))


class _quiet_nan:
    """Silence numpy's all-NaN-slice warnings (intervals of always-undefined concepts)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)
        return self

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
