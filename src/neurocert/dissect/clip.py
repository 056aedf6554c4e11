"""CLIP-Dissect-style neuron labelling with bootstrap stability (BE).

A neuron's label is the concept that best matches its most activating probing samples,
judged through a concept-activation matrix ``P (n_samples, n_concepts)``
(:mod:`neurocert.dissect.clip_sources`: open_clip image–text cosines, or P supplied
directly: precomputed, ground-truth labels, a classifier's probabilities).

Similarity functions (``function=``; CLIP-Dissect's ``similarity.py`` and defaults):

* ``"soft_wpmi"`` (default): ``P(d|x) = softmax(a cos)`` over concepts for cosine P, P
  itself for probability P; with the neuron's top-``k`` samples ``x_0, ..., x_{k-1}``
  (descending activation) and rank weights ``p_r = p_start - (r/k)(p_start - p_end)``,
  ``log P(d|E) = sum_r log(1 + p_r (P(d|x_r) - 1) + min_prob)``;
  ``log P(d) = logsumexp_j log P(d|E_j) - log(n_neurons)`` over **all neurons passed
  together**; ``score = log P(d|E) - lam log P(d)``. Defaults ``top_k=100, a=10, lam=1,
  min_prob=1e-7, p_start=0.998, p_end=0.97``.
* ``"wpmi"``: ``log P(d|E) = sum_r log(P(d|x_r) + min_prob)``, same prior; defaults
  ``top_k=28, a=2, lam=0.6``.
* ``"rank_reorder"``: on the top ``int(n top_fraction)`` samples, the mean ``|.|^power``
  error between the activations and the activations re-ordered by the concept's ranks,
  over a permutation baseline, divided by ``mean(P top)^scale_p``, negated. Defaults
  ``power=3, top_fraction=0.05, scale_p=0.5``.
* ``"cos"``: cosine of the activation column and the P column over samples.
* ``"cos_cubed"``: cosine of the centred, cubed columns (norms clipped at ``min_norm``).

The label is the argmax over concepts (lowest index among exact ties; NaN never wins).
None of these has a finite-sample confidence bound: the bound columns of the results are
NaN (a :class:`~neurocert.exceptions.NoBoundWarning` says so), and
:func:`clip_dissect_explain` gives the stability of the label instead.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import __version__, _backend
from .._progress import progress
from .._validation import (
    as_activations,
    check_int,
    check_n_folds,
    check_names,
    check_probability,
    check_sample_weight,
)
from ..bootstrap import MODES
from ..engine import _add_counts, argmax_votes, merge_counts, total_votes
from ..exceptions import NoBoundWarning, UndefinedSimilarityWarning, ValidationError
from ..explanation import ExplanationResult, split_conformal_sets
from ..identify import IdentificationResult, rank_concepts
from ..resample import SCHEMES, as_seed_sequence, fold_weights, replicate_weights
from . import clip_kernels as _k
from .clip_sources import (
    KINDS,
    ConceptMatrix,
    as_concept_matrix,
    from_classifier,
    from_labels,
    from_open_clip,
    from_precomputed,
)

__all__ = [
    "BOUND_NOTE",
    "DEFAULTS",
    "FUNCTIONS",
    "KINDS",
    "ConceptMatrix",
    "clip_dissect",
    "clip_dissect_explain",
    "concept_scores",
    "from_classifier",
    "from_labels",
    "from_open_clip",
    "from_precomputed",
]

FUNCTIONS = _k.FUNCTIONS
#: per-function defaults of ``top_k``, ``a`` and ``lam`` (CLIP-Dissect's)
DEFAULTS: dict[str, dict[str, float]] = {
    "soft_wpmi": {"top_k": 100, "a": 10.0, "lam": 1.0},
    "wpmi": {"top_k": 28, "a": 2.0, "lam": 0.6},
}
#: why the bound columns are empty
BOUND_NOTE = (
    "no finite-sample bound: {function} is not a mean of bounded per-sample terms (its "
    "top-k set is chosen by the data, its concept prior pools all neurons of the layer, and "
    "soft-WPMI/WPMI are unbounded log-ratios), so no concentration inequality applies; "
    "lower/upper are NaN and bootstrap stability (clip_dissect_explain) is reported instead")
#: bytes of replicate scores (float64) held at once by clip_dissect_explain
BATCH_BYTES = 256 * 2**20


@dataclass(frozen=True)
class _Setup:
    opts: _k.Options
    ranking: _k.Ranking
    table: np.ndarray | None
    raw: np.ndarray
    p_rank: np.ndarray | None
    concepts: ConceptMatrix
    sample_weight: np.ndarray | None

    def scores(self, weights: np.ndarray | None, prior: np.ndarray | None = None) -> np.ndarray:
        return _k.scores(self.opts, self.ranking, self.table, self.raw, weights, self.p_rank,
                         prior=prior)

    def log_given(self, weights: np.ndarray | None) -> np.ndarray:
        """soft-WPMI/WPMI ``log P(d|E)`` (before the prior) of these neurons."""
        return _k.log_given(self.opts, self.ranking, self.table, weights, self.p_rank)

    def check_total(self, total: float, what: str) -> None:
        _check_total(self.opts, total, what)


def _check_total(opts: _k.Options, total: float, what: str) -> None:
    """A probing set (or replicate, or fold) of total weight ``total`` must fill the top slots."""
    if opts.function in ("cos", "cos_cubed"):
        return
    need = opts.n_top(total)
    if need < 1:
        raise ValidationError(
            f"rank_reorder keeps int({total:g} x top_fraction={opts.top_fraction:g}) "
            f"= 0 top samples of {what}; raise `top_fraction`")
    if need > total:
        raise ValidationError(
            f"`top_k`={need} exceeds the {total:g} samples of {what}; use top_k <= {int(total)}")


@dataclass(frozen=True)
class _Resolved:
    """Validated options and the concept tables, without the activations (shared by blocks)."""

    opts: _k.Options
    table: np.ndarray | None
    p_rank: np.ndarray | None
    concepts: ConceptMatrix
    sample_weight: np.ndarray | None

    def setup(self, act: np.ndarray) -> _Setup:
        """The :class:`_Setup` of validated activations ``act`` (all or a block of neurons)."""
        return _Setup(self.opts, _k.Ranking(act), self.table, self.concepts.values,
                      self.p_rank, self.concepts, self.sample_weight)


def _number(value: Any, name: str, *, low: float | None = None, low_open: bool = False,
            high: float | None = None) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"`{name}` must be a number; got {value!r}") from None
    if not math.isfinite(v) or (low is not None and (v <= low if low_open else v < low)) \
            or (high is not None and v > high):
        lo = "" if low is None else (f"> {low:g}" if low_open else f">= {low:g}")
        hi = "" if high is None else f"<= {high:g}"
        cond = " and ".join(x for x in (lo, hi) if x) or "finite"
        raise ValidationError(f"`{name}` must be {cond}; got {value!r}")
    return v


def _check_function(function: Any, dtype: Any) -> None:
    if function not in FUNCTIONS:
        raise ValidationError(f"`function` must be one of {FUNCTIONS}; got {function!r}")
    if dtype not in ("float32", "float64"):
        raise ValidationError(f"`dtype` must be 'float32' or 'float64'; got {dtype!r}")


def _resolve(n: int, cm: ConceptMatrix, *, function: str, top_k: int | None, a: float | None,
             lam: float | None, min_prob: float, p_start: float, p_end: float, power: float,
             top_fraction: float, scale_p: float, min_norm: float, sample_weight: Any,
             dtype: str) -> _Resolved:
    """Validate the options for ``n`` probing samples; precompute the concept tables."""
    _check_function(function, dtype)
    if cm.n_samples != n:
        raise ValidationError(
            f"`concepts` has {cm.n_samples} samples (axis 0) but `activations` has {n}")
    defaults = DEFAULTS.get(function, {})
    uses_a = function in DEFAULTS and cm.kind == "cosine"
    if a is not None and not uses_a:
        raise ValidationError(
            f"`a` (the softmax sharpness) applies to soft_wpmi/wpmi on cosine P only; "
            f"function={function!r} with {cm.kind} P does not use it")
    if (top_k is not None or lam is not None) and function not in DEFAULTS:
        raise ValidationError(f"`top_k` and `lam` apply to soft_wpmi and wpmi, not {function!r}")
    k = int(defaults.get("top_k", 1)) if top_k is None else top_k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValidationError(f"`top_k` must be a positive integer; got {top_k!r}")
    opts = _k.Options(
        function=function, top_k=int(k),
        a=_number(defaults.get("a", 10.0) if a is None else a, "a", low=0, low_open=True),
        lam=_number(defaults.get("lam", 1.0) if lam is None else lam, "lam", low=0),
        min_prob=_number(min_prob, "min_prob", low=0, low_open=True),
        p_start=_number(p_start, "p_start", low=0, high=1),
        p_end=_number(p_end, "p_end", low=0, high=1),
        power=_number(power, "power", low=0, low_open=True),
        top_fraction=check_probability(top_fraction, "top_fraction", high_open=False),
        scale_p=_number(scale_p, "scale_p"),
        min_norm=_number(min_norm, "min_norm", low=0, low_open=True), dtype=dtype)
    if opts.p_end > opts.p_start:
        raise ValidationError(
            f"`p_end` ({opts.p_end:g}) must not exceed `p_start` ({opts.p_start:g}): rank "
            "weights fall with rank")
    w = check_sample_weight(sample_weight, n)
    if w is not None and function in _k.TOPK_FUNCTIONS and not np.array_equal(w, np.round(w)):
        raise ValidationError(
            f"{function} counts a sample of weight w as w copies: `sample_weight` must hold "
            "non-negative integers")
    dt = np.dtype(dtype)
    table = p_rank = None
    if function in DEFAULTS:
        q = (_k.softmax(cm.values, opts.a, dt) if cm.kind == "cosine"
             else np.asarray(cm.values, dtype=dt))
        if function == "soft_wpmi":
            table = np.ascontiguousarray(q)
            p_rank = _k.rank_weights(opts, dt)
        else:
            table = np.log(q + dt.type(opts.min_prob))
    _check_total(opts, float(n if w is None else w.sum()), "the probing set")
    return _Resolved(opts, table, p_rank, cm, w)


def _setup(activations: Any, concepts: Any, *, kind: str | None, function: str,
           top_k: int | None, a: float | None, lam: float | None, min_prob: float,
           p_start: float, p_end: float, power: float, top_fraction: float, scale_p: float,
           min_norm: float, sample_weight: Any, dtype: str) -> _Setup:
    """Validate every input once; precompute the concept tables and the ranking."""
    _check_function(function, dtype)
    act = as_activations(activations)
    cm = as_concept_matrix(concepts, kind)
    return _resolve(act.shape[0], cm, function=function, top_k=top_k, a=a, lam=lam,
                    min_prob=min_prob, p_start=p_start, p_end=p_end, power=power,
                    top_fraction=top_fraction, scale_p=scale_p, min_norm=min_norm,
                    sample_weight=sample_weight, dtype=dtype).setup(act)


def _options(kind: Any, function: Any, top_k: Any, a: Any, lam: Any, min_prob: Any,
             p_start: Any, p_end: Any, power: Any, top_fraction: Any, scale_p: Any,
             min_norm: Any, sample_weight: Any, dtype: Any) -> dict[str, Any]:
    """The keyword options shared by every public function (for :func:`_setup`)."""
    return {"kind": kind, "function": function, "top_k": top_k, "a": a, "lam": lam,
            "min_prob": min_prob, "p_start": p_start, "p_end": p_end, "power": power,
            "top_fraction": top_fraction, "scale_p": scale_p, "min_norm": min_norm,
            "sample_weight": sample_weight, "dtype": dtype}


def _warn_undefined(values: np.ndarray, function: str) -> None:
    bad = int(np.isnan(values).sum())
    if bad:
        warnings.warn(
            f"{bad} of {values.size} {function} similarities are undefined (a constant column, "
            "a zero norm, a zero baseline or a non-positive mean concept value under a "
            "fractional scale_p); they are NaN and never win", UndefinedSimilarityWarning,
            stacklevel=3)


_SHARED_DOC = """
    activations : array-like (n_samples, n_neurons)
        One value per probing sample and neuron (pooled as the user chooses; CLIP-Dissect
        averages conv maps spatially). Numpy, memmaps and torch tensors are accepted.
    concepts : ConceptMatrix or array-like (n_samples, n_concepts)
        P; a plain array needs ``kind``.
    kind : {"cosine", "probability"}, optional
        What a plain-array P holds (see :mod:`neurocert.dissect.clip_sources`).
    function : {"soft_wpmi", "wpmi", "rank_reorder", "cos", "cos_cubed"}
    top_k, a, lam : optional
        soft_wpmi / wpmi: top samples, softmax sharpness (cosine P only) and prior
        weight; ``None`` takes the function's CLIP-Dissect default.
    min_prob, p_start, p_end : float
        soft-WPMI's floor inside the log and its rank weights.
    power, top_fraction, scale_p : float
        rank_reorder's error exponent, top share of samples and mean-P exponent.
    min_norm : float
        cos_cubed's norm floor.
    sample_weight : array-like (n_samples,), optional
        Non-negative weights (integers for the top-k functions: a weight-``w`` sample
        counts as ``w`` copies).
    dtype : {"float32", "float64"}
        Precision of the soft-WPMI/WPMI log terms (CLIP-Dissect: float32); the prior and
        the scores are float64.
    backend : {"memory", "blocks", "dask"}
        ``"blocks"``/``"dask"``: blocks of neurons one after another in this process, or
        as Dask tasks (:mod:`neurocert.distributed`, which also reads Zarr/``.npy``
        activations out of core); the concept prior is a separate reduction over all
        neurons. Results are equal to the in-memory call (bitwise).
    client : distributed.Client or str, optional
        With ``backend="dask"``: the client or a scheduler address; default: a
        LocalCluster for this call."""


def concept_scores(activations: Any, concepts: Any, *, kind: str | None = None,
                   function: str = "soft_wpmi", top_k: int | None = None,
                   a: float | None = None, lam: float | None = None, min_prob: float = 1e-7,
                   p_start: float = 0.998, p_end: float = 0.97, power: float = 3.0,
                   top_fraction: float = 0.05, scale_p: float = 0.5, min_norm: float = 1e-3,
                   sample_weight: Any = None, dtype: str = "float32", backend: str = "memory",
                   client: Any = None) -> np.ndarray:
    """Similarity of every neuron with every concept, ``(n_neurons, n_concepts)``.

    Parameters
    ----------
    {shared}

    Returns
    -------
    ndarray (n_neurons, n_concepts) float64
        NaN where undefined (with an UndefinedSimilarityWarning).

    Notes
    -----
    Top samples: descending activation, ties by lower sample index. soft-WPMI and WPMI
    depend on every neuron passed (the prior pools them), as in CLIP-Dissect.

    Examples
    --------
    >>> import numpy as np
    >>> from neurocert.dissect.clip import concept_scores, from_labels
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((500, 3)) < 0.3).astype(float)
    >>> act = z @ np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 0.0]]) + 0.1 * rng.random((500, 2))
    >>> concept_scores(act, from_labels(z), top_k=50).argmax(axis=1).tolist()
    [1, 0]
    """
    options = _options(kind, function, top_k, a, lam, min_prob, p_start, p_end, power,
                       top_fraction, scale_p, min_norm, sample_weight, dtype)
    if _backend.wants_blocks(backend, client):
        from .. import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.concept_scores(activations, concepts, client=cl, **options)
    s = _setup(activations, concepts, **options)
    values = s.scores(s.sample_weight)
    _warn_undefined(values, function)
    return values


concept_scores.__doc__ = concept_scores.__doc__.replace("{shared}", _SHARED_DOC.strip())


def _parameters(s: _Setup | _Resolved) -> dict[str, Any]:
    o = s.opts
    p: dict[str, Any] = {"function": o.function, "concept_kind": s.concepts.kind,
                         "concept_source": s.concepts.source,
                         "concept_parameters": dict(s.concepts.parameters),
                         "weighted": s.sample_weight is not None, "dtype": o.dtype,
                         "bound_note": BOUND_NOTE.format(function=o.function),
                         "neurocert_version": __version__}
    if o.function in DEFAULTS:
        p.update(top_k=o.top_k, lam=o.lam, min_prob=o.min_prob,
                 prior="logsumexp over the neurons passed together - log(n_neurons)")
        if s.concepts.kind == "cosine":
            p["a"] = o.a
        if o.function == "soft_wpmi":
            p.update(p_start=o.p_start, p_end=o.p_end)
    elif o.function == "rank_reorder":
        p.update(power=o.power, top_fraction=o.top_fraction, scale_p=o.scale_p,
                 baseline="expected |x - x_perm|^power over uniform permutations")
    elif o.function == "cos_cubed":
        p["min_norm"] = o.min_norm
    return p


def _identification(s: _Setup | _Resolved, sim: np.ndarray, neuron_names: Any, top: int,
                    t0: float) -> IdentificationResult:
    n_neurons, n_concepts = sim.shape
    order = rank_concepts(sim)
    best = np.where(np.isnan(sim).all(axis=1), -1, order[:, 0]).astype(np.int64)
    nan = np.full(sim.shape, np.nan)
    return IdentificationResult(
        metric=s.opts.function, delta=float("nan"), similarity=sim, lower=nan, upper=nan.copy(),
        null=nan.copy(), best=best, top=order[:, :min(top, n_concepts)].astype(np.int64),
        certified_sets=tuple(np.array([], np.int64) for _ in range(n_neurons)),
        regret_bound=np.full(n_neurons, np.nan),
        neuron_names=check_names(neuron_names, n_neurons, "neuron"),
        concept_names=list(s.concepts.concept_names), n_samples=s.concepts.n_samples,
        n_units=float(s.concepts.n_samples), parameters=_parameters(s),
        timings={"total_s": time.perf_counter() - t0})


def _no_bound_warning(function: str) -> None:
    warnings.warn(BOUND_NOTE.format(function=function), NoBoundWarning, stacklevel=3)


def clip_dissect(activations: Any, concepts: Any, *, kind: str | None = None,
                 function: str = "soft_wpmi", top_k: int | None = None, a: float | None = None,
                 lam: float | None = None, min_prob: float = 1e-7, p_start: float = 0.998,
                 p_end: float = 0.97, power: float = 3.0, top_fraction: float = 0.05,
                 scale_p: float = 0.5, min_norm: float = 1e-3, sample_weight: Any = None,
                 dtype: str = "float32", neuron_names: Sequence[str] | None = None,
                 top: int = 5, backend: str = "memory", client: Any = None
                 ) -> IdentificationResult:
    """Label every neuron with its best concept (CLIP-Dissect's identification).

    Parameters
    ----------
    {shared}
    neuron_names : sequence of str, optional
    top : int
        Ranked concepts kept per neuron.

    Returns
    -------
    IdentificationResult
        ``lower``, ``upper``, ``null`` and ``regret_bound`` are NaN and the certified sets
        empty: there is no finite-sample bound (``parameters["bound_note"]`` says why;
        a NoBoundWarning is emitted). ``metric`` is the function name.

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from neurocert.dissect.clip import clip_dissect, from_labels
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((500, 3)) < 0.3).astype(float)
    >>> act = z[:, [2, 0]] + 0.1 * rng.random((500, 2))
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     res = clip_dissect(act, from_labels(z, concept_names=["a", "b", "c"]), top_k=50)
    >>> res.labels
    ['c', 'a']
    """
    options = _options(kind, function, top_k, a, lam, min_prob, p_start, p_end, power,
                       top_fraction, scale_p, min_norm, sample_weight, dtype)
    if _backend.wants_blocks(backend, client):
        from .. import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.clip_dissect(activations, concepts, neuron_names=neuron_names,
                                            top=top, client=cl, **options)
    t0 = time.perf_counter()
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValidationError(f"`top` must be a positive integer; got {top!r}")
    s = _setup(activations, concepts, **options)
    sim = s.scores(s.sample_weight)
    _warn_undefined(sim, function)
    _no_bound_warning(function)
    return _identification(s, sim, neuron_names, int(top), t0)


clip_dissect.__doc__ = clip_dissect.__doc__.replace("{shared}", _SHARED_DOC.strip())


def clip_dissect_explain(activations: Any, concepts: Any, *, kind: str | None = None,
                         function: str = "soft_wpmi", top_k: int | None = None,
                         a: float | None = None, lam: float | None = None,
                         min_prob: float = 1e-7, p_start: float = 0.998, p_end: float = 0.97,
                         power: float = 3.0, top_fraction: float = 0.05, scale_p: float = 0.5,
                         min_norm: float = 1e-3, sample_weight: Any = None,
                         dtype: str = "float32", neuron_names: Sequence[str] | None = None,
                         n_boot: int = 1000, alpha: float = 0.05, rng: Any = None,
                         scheme: str = "multinomial", mode: str = "bootstrap",
                         n_folds: int | None = None, top: int = 5,
                         batch_size: int | None = None,
                         progress_bar: bool = False, backend: str = "memory",
                         client: Any = None) -> ExplanationResult:
    """Bootstrap ensemble and BE concept prediction sets of CLIP-Dissect-style labels.

    Each replicate resamples the probing samples once for all neurons (weights from
    :func:`neurocert.resample.replicate_weights`; a sample drawn ``w`` times counts as
    ``w`` copies) and recomputes everything that depends on the sample: each neuron's
    top-k set and rank slots, ``P(d|E)``, and the concept prior ``log P(d)`` pooled over
    the neurons. The replicate's label is the argmax; exact ties split the vote.

    Parameters
    ----------
    {shared}
    neuron_names : sequence of str, optional
    n_boot : int
        Bootstrap replicates.
    alpha : float in (0, 1)
        Miscoverage of the prediction sets (nominal; see :mod:`neurocert.bootstrap`).
    rng : None, int, SeedSequence or Generator
        Replicate ``b``'s weights are a pure function of (seed, b, sample block).
    scheme : {"multinomial", "poisson", "predictive"}
    mode : {"bootstrap", "split", "both"}
        Which prediction set: the bootstrap set, or the split-conformal set over
        ``n_folds`` disjoint folds (finite-sample coverage of the label of an independent
        probing set of fold size ``n / n_folds``; :func:`neurocert.bootstrap_explain`);
        ``"both"`` computes the two (the prediction sets are the bootstrap ones).
    n_folds : int, optional
        Folds of split mode, ``n_folds + 1 >= 1/alpha``; default ``ceil(2/alpha) - 1``.
        Each fold must hold at least ``top_k`` samples.
    top : int
        Concepts (by full-data score) with descriptive bootstrap intervals.
    batch_size : int, optional
        Replicates per chunk (default: about 256 MB of float64 replicate scores).
        Results do not depend on it.
    progress_bar : bool

    Returns
    -------
    ExplanationResult
        Its identification has NaN bounds and empty certified sets
        (no finite-sample bound exists: ``parameters["bound_note"]``).

    Examples
    --------
    >>> import warnings
    >>> import numpy as np
    >>> from neurocert.dissect.clip import clip_dissect_explain, from_labels
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((400, 3)) < 0.3).astype(float)
    >>> act = z[:, [1, 2, 0]] + 0.1 * rng.random((400, 3))
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")
    ...     res = clip_dissect_explain(act, from_labels(z), top_k=40, n_boot=50, rng=0)
    >>> [s.tolist() for s in res.prediction_sets]
    [[1], [2], [0]]
    """
    options = _options(kind, function, top_k, a, lam, min_prob, p_start, p_end, power,
                       top_fraction, scale_p, min_norm, sample_weight, dtype)
    if _backend.wants_blocks(backend, client):
        from .. import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.clip_dissect_explain(
                activations, concepts, neuron_names=neuron_names, n_boot=n_boot, alpha=alpha,
                rng=rng, scheme=scheme, mode=mode, n_folds=n_folds, top=top,
                batch_size=batch_size, client=cl, progress=progress_bar, **options)
    t0 = time.perf_counter()
    n_boot, alpha, top, batch_size = _check_explain_options(n_boot, alpha, scheme, mode, top,
                                                            batch_size)
    s = _setup(activations, concepts, **options)
    n = s.ranking.n_samples
    if scheme == "predictive" and s.sample_weight is None:
        s.check_total(float(max(1, n // 2)), "a predictive (n/2) replicate")
    if mode != "bootstrap":
        n_folds = check_n_folds(n_folds, alpha, n, "samples")
    seed = as_seed_sequence(rng)
    sim = s.scores(s.sample_weight)
    _warn_undefined(sim, function)
    ident = _identification(s, sim, neuron_names, int(top), t0)
    n_neurons, n_concepts = sim.shape
    tracked_idx = ident.top
    if batch_size is None:
        batch_size = int(max(1, min(n_boot, BATCH_BYTES // (8 * n_neurons * n_concepts))))
    t_boot = time.perf_counter()
    if mode == "split":
        n_boot = 0
    winners = np.empty((n_boot, n_neurons), np.int64)
    ties = np.empty((n_boot, n_neurons), np.int64)
    track = np.empty((n_boot, n_neurons, tracked_idx.shape[1]))
    counts: dict = {}
    chunks = [(b0, min(n_boot, b0 + batch_size)) for b0 in range(0, n_boot, batch_size)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        for b0, b1 in progress(chunks, total=len(chunks), desc="bootstrap",
                               enabled=progress_bar):
            w = replicate_weights(seed, range(b0, b1), n, scheme=scheme)
            rep = np.empty((b1 - b0, n_neurons, n_concepts))
            for i in range(b1 - b0):
                wi = w[i] if s.sample_weight is None else w[i] * s.sample_weight
                s.check_total(float(wi.sum()), f"bootstrap replicate {b0 + i}")
                rep[i] = s.scores(wi)
            winners[b0:b1], ties[b0:b1], track[b0:b1], part_counts = _chunk_votes(
                rep, tracked_idx)
            counts = merge_counts(counts, part_counts)
    votes = total_votes(counts) if counts else np.zeros((n_neurons, n_concepts + 1))
    t_split = time.perf_counter()
    split_sets = fold_winners = None
    if mode != "bootstrap":
        fold_winners = _fold_winners(s, seed, n_folds)
        split_sets = split_conformal_sets(fold_winners, n_concepts, alpha, sim)
    params = _explain_parameters(ident, n_boot=n_boot, alpha=alpha, scheme=scheme, mode=mode,
                                 n_folds=n_folds, seed=seed, top=top)
    _no_bound_warning(function)
    timings = {"identify_s": t_boot - t0, "bootstrap_s": t_split - t_boot,
               "split_s": time.perf_counter() - t_split, "total_s": time.perf_counter() - t0}
    return ExplanationResult.build(
        identification=ident, votes=votes, winners=winners, ties=ties, tracked=track,
        alpha=alpha, mode=mode, split_sets=split_sets, fold_winners=fold_winners,
        parameters=params, timings=timings,
        n_candidates=np.full(n_neurons, n_concepts, np.int64))


def _check_explain_options(n_boot: Any, alpha: Any, scheme: Any, mode: Any, top: Any,
                           batch_size: Any) -> tuple[int, float, int, int | None]:
    n_boot = check_int(n_boot, "n_boot", 1)
    alpha = check_probability(alpha, "alpha")
    if scheme not in SCHEMES:
        raise ValidationError(f"`scheme` must be one of {SCHEMES}; got {scheme!r}")
    if mode not in MODES:
        raise ValidationError(f"`mode` must be one of {MODES}; got {mode!r}")
    top = check_int(top, "top", 1)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    return n_boot, alpha, top, batch_size


def _chunk_votes(rep: np.ndarray, tracked_idx: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """Winners, tie counts, tracked scores and tie-count dict of replicate scores
    ``rep (B, n_neurons, n_concepts)``; per neuron."""
    b, n_neurons, n_concepts = rep.shape
    cand = np.arange(n_concepts)
    winners = np.empty((b, n_neurons), np.int64)
    ties = np.empty((b, n_neurons), np.int64)
    counts: dict = {}
    for j in range(n_neurons):
        win, tied, part = argmax_votes(rep[:, j, :], cand, -np.inf, n_concepts)
        winners[:, j] = win
        ties[:, j] = tied
        _add_counts(counts, j, part, (n_neurons, n_concepts + 1))
    return winners, ties, rep[:, np.arange(n_neurons)[:, None], tracked_idx], counts


def _fold_weight(s: _Setup | _Resolved, folds: np.ndarray, f: int) -> np.ndarray:
    """Fold ``f``'s sample weights (times ``sample_weight``), checked."""
    w = folds[f] if s.sample_weight is None else folds[f] * s.sample_weight
    _check_total(s.opts, float(w.sum()), f"fold {f} of {folds.shape[0]} (split mode)")
    return w


def _label(sim: np.ndarray) -> np.ndarray:
    order = rank_concepts(sim)
    return np.where(np.isnan(sim).all(axis=1), -1, order[:, 0])


def _explain_parameters(ident: IdentificationResult, *, n_boot: int, alpha: float, scheme: str,
                        mode: str, n_folds: int | None, seed: np.random.SeedSequence,
                        top: int) -> dict[str, Any]:
    """``parameters`` of a CLIP-Dissect explanation (in memory and on the block backends)."""
    return {**ident.parameters, "n_boot": int(n_boot), "alpha": alpha, "scheme": scheme,
            "mode": mode, "n_folds": n_folds if mode != "bootstrap" else None,
            "seed_entropy": str(seed.entropy), "seed_spawn_key": list(seed.spawn_key),
            "top": int(top), "one_resample_for_all_neurons": True}


def _fold_winners(s: _Setup, seed: np.random.SeedSequence, n_folds: int) -> np.ndarray:
    """Label of every neuron on each of ``n_folds`` disjoint folds, ``(n_folds, n_neurons)``.

    The folds are those of :func:`neurocert.bootstrap_explain` (same seed, same folds).
    """
    n = s.ranking.n_samples
    folds = fold_weights(seed, n_folds, n)
    out = np.empty((n_folds, s.ranking.activations.shape[1]), np.int64)
    for f in range(n_folds):
        w = _fold_weight(s, folds, f)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UndefinedSimilarityWarning)
            sim = s.scores(w)
        out[f] = _label(sim)
    return out


clip_dissect_explain.__doc__ = clip_dissect_explain.__doc__.replace("{shared}",
                                                                    _SHARED_DOC.strip())
