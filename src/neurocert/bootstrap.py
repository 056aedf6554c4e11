"""Stability: bootstrap ensembles and BE (Bootstrap Explanation) concept prediction sets.

``bootstrap_explain`` reruns the identification on ``n_boot`` bootstrap
resamples of the probing set (weight vectors, never copies), estimates each
concept's selection probability, and returns prediction sets, stability
scores and descriptive intervals, next to the certified set of the core.

What each set covers (``docs/theory.md``, "Stability"):

* bootstrap set (``mode="bootstrap"``): the explanation an independent probing
  set of the same size would give, **nominally** at ``1 - alpha``; it can
  under-cover with multi-way near-ties and rare concepts;
* split set (``mode="split"``): the explanation of an independent probing set
  of fold size ``n / K``, with probability ``>= 1 - alpha`` in finite samples
  (full conformal over ``K`` disjoint folds);
* certified set: the population-best concept with probability ``>= 1 - delta``.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from . import engine as _engine
from ._progress import progress
from ._validation import check_names, check_probability
from .bounds import faithfulness_bound
from .exceptions import NoBoundWarning, ValidationError
from .explanation import ExplanationResult, prediction_sets, split_conformal_sets
from .identify import identify
from .resample import as_seed_sequence, replicate_weights
from .similarity import Prepared, prepare

__all__ = ["bootstrap_explain", "prune_candidates", "replicate_explanations"]

MODES = ("bootstrap", "split", "both")
ADAPTIVE_ROUND = 100
ADAPTIVE_MIN = 200
SPLIT_KEY = 2**31  # spawn key of the fold assignment (never a replicate index)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValidationError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    return int(value)


def prune_candidates(p: Prepared, sim: np.ndarray, epsilon: float) -> tuple[list[np.ndarray], np.ndarray]:
    """Concepts that can win a bootstrap replicate, per neuron.

    Rule: keep concept ``c`` of neuron ``j`` when ``sim_c + r_c >= max_k (sim_k - r_k)``,
    where ``r`` is the planning-form radius (:func:`neurocert.faithfulness_bound`)
    at failure probability ``epsilon``, uniform over all concepts, evaluated at the
    probing set's own frequencies. A bootstrap replicate is an i.i.d. sample from
    the empirical distribution, whose population similarity is ``sim``; so with
    probability >= 1 - epsilon per replicate every replicate similarity lies within
    ``r`` of ``sim`` and the replicate's winner is kept. Concepts whose similarity is
    undefined on the full data are undefined in every replicate and are dropped.
    Pruning is skipped (every defined concept kept) for grouped samples, sample
    weights and metrics without a planning bound.

    Returns
    -------
    candidates : list of int arrays (one per neuron, sorted)
    radius : ndarray (n_neurons, n_concepts) (NaN where not computed)
    """
    n_neurons, n_concepts = sim.shape
    defined = ~np.isnan(sim)
    radius = np.full(sim.shape, np.nan)
    usable = (epsilon > 0 and not p.design.grouped and p.sample_weight is None
              and p.metric.builtin and p.metric.bound is not None and p.metric.name != "wpmi"
              and (p.metric.statistics == "count" or p.metric.name == "auroc"))
    if usable:
        n = p.n_samples
        eps = 0.5 / n
        from .sufficient import _binary_concepts, _column_sums

        pc = _column_sums(_binary_concepts(p.concepts, np.float64), None) / n
        pc = np.clip(pc, eps, 1 - eps)
        kw: dict[str, Any] = {"concept_freq": pc[None, :]}
        if p.metric.statistics == "count":
            if p.top_frac is not None:
                kw["top_frac"] = p.top_frac
            else:
                from .binarize import binarize

                pf = binarize(np.asarray(p.activations), threshold=p.threshold).mean(axis=0)
                kw["neuron_freq"] = np.clip(pf, eps, 1 - eps)[:, None]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoBoundWarning)
            r = faithfulness_bound(p.metric.name, n=n, delta=epsilon, n_concepts=n_concepts,
                                   truth=p.options.truth, **kw)
        radius = np.broadcast_to(np.asarray(r, float), sim.shape).copy()
    keep = defined.copy()
    if usable:
        lo = np.where(defined, sim - radius, -np.inf)
        hi = np.where(defined, sim + radius, -np.inf)
        keep &= hi >= lo.max(axis=1, keepdims=True)
    cands = []
    for j in range(n_neurons):
        c = np.flatnonzero(keep[j])
        cands.append(c if c.size else np.flatnonzero(defined[j])[:1])
    return cands, radius


def _engine_for(p: Prepared):
    m = p.metric
    if m.builtin and m.statistics == "count":
        return _engine.count_engine, [_engine.CountSupport(p, j) for j in range(p.n_neurons)]
    if m.builtin and m.name == "auroc":
        return _engine.rank_engine, [_engine.RankSupport(p, j) for j in range(p.n_neurons)]
    return _engine.generic_engine, None


def _blackbox_engine(method: Callable[[np.ndarray], Any], n_neurons: int, n_concepts: int):
    def run(p, w, candidates, tracked, supports):
        b = w.shape[0]
        winner = np.empty((b, n_neurons), np.int64)
        votes = np.zeros((n_neurons, n_concepts + 1))
        for i in range(b):
            out = np.asarray(method(w[i].astype(np.float64)), dtype=np.int64).reshape(-1)
            if out.shape != (n_neurons,):
                raise ValidationError(
                    f"`method` must return one concept index per neuron ({n_neurons}); "
                    f"got shape {out.shape}")
            if np.any((out < -1) | (out >= n_concepts)):
                raise ValidationError("`method` returned a concept index out of range "
                                      f"[-1, {n_concepts - 1}]")
            winner[i] = out
            votes[np.arange(n_neurons), np.where(out < 0, n_concepts, out)] += 1
        n_tied = (winner >= 0).astype(np.int64)
        return _engine.Votes(winner, n_tied, votes, np.full((b, n_neurons, tracked.shape[1]),
                                                            np.nan))
    return run


def _unit_weights(p: Prepared, seed, reps, scheme: str) -> np.ndarray:
    if p.groups is None:
        return replicate_weights(seed, reps, p.n_samples, scheme=scheme)
    codes, n_groups = p.groups
    return replicate_weights(seed, reps, n_groups, scheme=scheme)[:, codes]


def replicate_explanations(p: Prepared, weights: np.ndarray, *, candidates: list[np.ndarray] | None = None,
                           tracked: np.ndarray | None = None,
                           method: Callable[[np.ndarray], Any] | None = None) -> _engine.Votes:
    """Explanations of every neuron under each row of ``weights`` (n_replicates, n_samples).

    The same weight matrix gives identical explanations through the fast engine,
    the unpruned engine (``candidates=None``), the black-box path (``method``)
    and a straightforward loop over :func:`neurocert.similarity` (tests check this).
    """
    if candidates is None:
        candidates = [np.arange(p.n_concepts)] * p.n_neurons
    if tracked is None:
        tracked = np.zeros((p.n_neurons, 0), np.int64)
    if method is not None:
        run = _blackbox_engine(method, p.n_neurons, p.n_concepts)
        supports = None
    else:
        run, supports = _engine_for(p)
    return run(p, weights, candidates, tracked, supports)


def _params_key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def _load_checkpoint(path: Path, key: str) -> dict[str, Any] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as f:
        if str(f["key"]) != key:
            raise ValidationError(
                f"checkpoint {path} was written by a run with other parameters; remove it or "
                "use another path")
        return {k: f[k] for k in f.files}


def _save_checkpoint(path: Path, key: str, state: dict[str, np.ndarray]) -> None:
    from .results import atomic_path

    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, key=np.array(key), **state)


def bootstrap_explain(activations: Any, concepts: Any, *, metric: str, n_boot: int = 1000,
                      alpha: float = 0.05, rng: Any = None, threshold: float | None = None,
                      top_frac: float | None = None, groups: Any = None,
                      sample_weight: Any = None, concept_names: Any = None,
                      neuron_names: Any = None, mode: str = "bootstrap",
                      n_folds: int | None = None, delta: float = 0.05,
                      scheme: str = "multinomial", prune: bool = True,
                      prune_epsilon: float = 1e-4, adaptive: bool = False,
                      adaptive_tol: float = 0.01, top_k: int = 5,
                      method: Callable[[np.ndarray], Any] | None = None,
                      batch_size: int = 50, checkpoint: str | os.PathLike | None = None,
                      progress_bar: bool = False, truth: str = "concept",
                      wpmi_lambda: float = 1.0) -> ExplanationResult:
    """Bootstrap ensemble and BE concept prediction sets for every neuron.

    Parameters
    ----------
    activations, concepts, metric, threshold, top_frac, groups, sample_weight, truth,
    wpmi_lambda, concept_names, neuron_names
        As in :func:`neurocert.identify`. With ``groups`` the groups are resampled.
    n_boot : int
        Number of bootstrap replicates (the maximum when ``adaptive``).
    alpha : float in (0, 1)
        Miscoverage of the prediction sets.
    rng : None, int, SeedSequence or Generator
        Seed; replicate ``b``'s weights are a pure function of (seed, b, unit block).
    mode : {"bootstrap", "split", "both"}
        Which prediction set to build (see module notes); "both" adds the split set.
    n_folds : int, optional
        Folds of split mode; needs ``n_folds + 1 >= 1/alpha``. The default
        ``ceil(2/alpha) - 1`` leaves room for one stray fold: with ``n_folds + 1 = 1/alpha``
        a single fold that disagrees puts every unseen concept in the set.
    delta : float
        Failure probability of the certified set shown beside.
    scheme : {"multinomial", "poisson"}
        Bootstrap weights.
    prune : bool
        Skip concepts that cannot win a replicate (see :func:`prune_candidates`);
        the share of replicates whose winner was pruned is at most ``prune_epsilon``.
    adaptive : bool
        Stop early, in rounds of 100 replicates (at least 200), once the prediction
        sets are unchanged between rounds and every probability moved by less than
        ``adaptive_tol``.
    top_k : int
        Concepts (by full-data similarity) with descriptive bootstrap intervals.
    method : callable, optional
        Black-box identification: ``method(weights) -> (n_neurons,)`` concept indices
        (-1 for none) for sample weights ``weights (n_samples,)``; wraps NetDissect,
        CLIP-Dissect or a user's own method. Tracked intervals are then NaN.
    batch_size : int
        Replicates per chunk (memory ~ batch_size x n_samples x 4 bytes).
    checkpoint : path, optional
        ``.npz`` file updated after every chunk; an interrupted run (Ctrl-C) keeps
        what it computed there and the same call resumes from it.
    progress_bar : bool

    Returns
    -------
    ExplanationResult

    Examples
    --------
    >>> import numpy as np, neurocert
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((1000, 4)) < 0.2).astype(float)
    >>> a = 2.0 * z[:, [2]] + rng.normal(size=(1000, 1))
    >>> res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=200, rng=1)
    >>> res.prediction_sets[0].tolist()
    [2]
    """
    t0 = time.perf_counter()
    n_boot = _check_int(n_boot, "n_boot", 1)
    alpha = check_probability(alpha, "alpha")
    delta = check_probability(delta, "delta")
    top_k = _check_int(top_k, "top_k", 1)
    batch_size = _check_int(batch_size, "batch_size", 1)
    if mode not in MODES:
        raise ValidationError(f"`mode` must be one of {MODES}; got {mode!r}")
    if scheme not in ("multinomial", "poisson"):
        raise ValidationError(f"`scheme` must be 'multinomial' or 'poisson'; got {scheme!r}")
    if method is not None and not callable(method):
        raise ValidationError("`method` must be callable: weights (n_samples,) -> concept per neuron")
    p = prepare(activations, concepts, metric=metric, sample_weight=sample_weight,
                groups=groups, threshold=threshold, top_frac=top_frac, truth=truth,
                wpmi_lambda=wpmi_lambda)
    if p.n_concepts < 2:
        raise ValidationError(
            f"a concept set of size {p.n_concepts} has nothing to choose between; "
            "bootstrap_explain needs at least 2 concepts")
    if mode in ("split", "both"):
        n_folds = (math.ceil(2 / alpha - 1e-12) - 1 if n_folds is None
                   else _check_int(n_folds, "n_folds", 2))
        if n_folds + 1 < 1 / alpha - 1e-12:
            raise ValidationError(
                f"split mode needs n_folds + 1 >= 1/alpha = {1 / alpha:g}; got n_folds={n_folds}")
        n_units = p.groups[1] if p.groups is not None else p.n_samples
        if n_folds > n_units:
            raise ValidationError(f"`n_folds`={n_folds} exceeds the {n_units} independent units")
    cnames = check_names(concept_names, p.n_concepts, "concept")
    nnames = check_names(neuron_names, p.n_neurons, "neuron")
    seed = as_seed_sequence(rng)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        ident = identify(p.activations, p.concepts, metric=p.metric, delta=delta,
                         concept_names=cnames, neuron_names=nnames, top_k=min(top_k, p.n_concepts),
                         sample_weight=p.sample_weight,
                         groups=None if p.groups is None else p.groups[0],
                         threshold=p.threshold, top_frac=p.top_frac, truth=truth,
                         wpmi_lambda=wpmi_lambda)
    sim = ident.similarity
    tracked = ident.top
    if prune and method is None:
        candidates, _ = prune_candidates(p, sim, prune_epsilon)
    else:
        candidates = [np.arange(p.n_concepts)] * p.n_neurons
    params = {"metric": p.metric.name, "n_boot": n_boot, "alpha": alpha, "delta": delta,
              "mode": mode, "n_folds": n_folds if mode != "bootstrap" else None,
              "scheme": scheme, "prune": bool(prune and method is None),
              "prune_epsilon": prune_epsilon, "adaptive": adaptive, "adaptive_tol": adaptive_tol,
              "threshold": p.threshold, "top_frac": p.top_frac, "truth": truth,
              "wpmi_lambda": float(wpmi_lambda), "grouped": p.design.grouped,
              "weighted": p.sample_weight is not None, "black_box": method is not None,
              "seed_entropy": str(seed.entropy), "top_k": top_k}

    n_neurons, n_concepts = p.n_neurons, p.n_concepts
    winners = np.empty((0, n_neurons), np.int64)
    ties = np.empty((0, n_neurons), np.int64)
    track = np.empty((0, n_neurons, tracked.shape[1]))
    votes = np.zeros((n_neurons, n_concepts + 1))
    done = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    key = _params_key({**params, "shape": [p.n_samples, n_neurons, n_concepts]})
    if ckpt is not None and mode != "split":
        state = _load_checkpoint(ckpt, key)
        if state is not None:
            winners, ties, track, votes = (state["winners"], state["ties"], state["track"],
                                           state["votes"])
            done = int(state["done"])
    run_boot = mode in ("bootstrap", "both")
    previous_sets = None
    previous_prob = None
    t_boot = time.perf_counter()
    target = n_boot if run_boot else 0
    chunks = range(done, target, batch_size)
    try:
        for b0 in progress(chunks, total=len(chunks), desc="bootstrap", enabled=progress_bar):
            b1 = min(target, b0 + batch_size)
            w = _unit_weights(p, seed, range(b0, b1), scheme)
            v = replicate_explanations(p, w, candidates=candidates, tracked=tracked, method=method)
            winners = np.concatenate([winners, v.winner])
            ties = np.concatenate([ties, v.n_tied])
            track = np.concatenate([track, v.tracked])
            votes = votes + v.votes
            done = b1
            if ckpt is not None:
                _save_checkpoint(ckpt, key, {"winners": winners, "ties": ties, "track": track,
                                             "votes": votes, "done": np.array(done)})
            if adaptive and done >= ADAPTIVE_MIN and done % ADAPTIVE_ROUND == 0:
                prob = votes / done
                sets = prediction_sets(prob, sim, alpha)
                if (previous_sets is not None and previous_prob is not None
                        and all(np.array_equal(a, b) for a, b in zip(sets, previous_sets))
                        and np.max(np.abs(prob - previous_prob)) < adaptive_tol):
                    break
                previous_sets, previous_prob = sets, prob
    except KeyboardInterrupt:
        if ckpt is not None:
            warnings.warn(f"interrupted after {done} replicates; they are kept in {ckpt} and the "
                          "same call resumes from there", stacklevel=2)
        raise
    t_split = time.perf_counter()
    split_sets = fold_winners = None
    if mode in ("split", "both"):
        fold_w = _fold_weights(p, seed, n_folds)
        fv = replicate_explanations(p, fold_w, tracked=tracked, method=method)
        fold_winners = fv.winner
        split_sets = split_conformal_sets(fold_winners, n_concepts, alpha, sim)
    timings = {"identify_s": t_boot - t0, "bootstrap_s": t_split - t_boot,
               "split_s": time.perf_counter() - t_split, "total_s": time.perf_counter() - t0}
    return ExplanationResult.build(
        identification=ident, votes=votes, winners=winners, ties=ties, tracked=track,
        alpha=alpha, mode=mode, split_sets=split_sets, fold_winners=fold_winners,
        parameters=params, timings=timings,
        n_candidates=np.array([len(c) for c in candidates], np.int64))


def _fold_weights(p: Prepared, seed: np.random.SeedSequence, n_folds: int) -> np.ndarray:
    """0/1 weights of ``n_folds`` disjoint folds of (near-)equal size; groups kept whole."""
    n_units = p.groups[1] if p.groups is not None else p.n_samples
    gen = np.random.Generator(np.random.PCG64(
        np.random.SeedSequence(seed.entropy, spawn_key=(SPLIT_KEY,))))
    perm = gen.permutation(n_units)
    fold_of_unit = np.empty(n_units, np.int64)
    fold_of_unit[perm] = np.arange(n_units) % n_folds
    fold = fold_of_unit if p.groups is None else fold_of_unit[p.groups[0]]
    w = np.zeros((n_folds, p.n_samples), np.float32)
    w[fold, np.arange(p.n_samples)] = 1.0
    return w
