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

from . import _backend
from . import engine as _engine
from ._intervals import kl_mean_quantiles
from ._progress import progress
from ._validation import check_int, check_n_folds, check_names, check_probability
from .exceptions import NoBoundWarning, ValidationError
from .explanation import ExplanationResult, prediction_sets, split_conformal_sets
from .identify import identify
from .resample import as_seed_sequence, fold_weights, replicate_weights
from .similarity import Prepared, prepare

__all__ = ["bootstrap_explain", "prune_candidates", "replicate_explanations"]

MODES = ("bootstrap", "split", "both")
ADAPTIVE_ROUND = 100
BATCH_BYTES = 256 * 2**20
ADAPTIVE_MIN = 200


def prune_candidates(p: Prepared, sim: np.ndarray, epsilon: float,
                     supports: list[Any] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Concepts that can win a bootstrap replicate, per neuron, and each pair's replicate range.

    A multinomial bootstrap replicate is an i.i.d. sample of size ``n`` from the
    empirical distribution. For a fixed set of samples its replicate weight is
    ``Binomial(n, count / n)``. For each pair neurocert bounds the replicate
    similarity by the metric's monotone formula at binomial quantiles:

    * count metrics: the replicate counts ``tp``, ``active`` and ``present`` (for
      ``top_frac``, the replicate cut-off rank lies between ``r_lo`` and ``r_hi``,
      whose replicate weights are binomial, so ``tp`` is sandwiched by the counts on
      the top ``r_lo`` and top ``r_hi`` samples);
    * AUROC: ``min(n_pos, n_neg)`` of the replicate is at least its binomial lower
      quantile, and given the counts the replicate AUROC is a two-sample U-statistic
      with mean equal to the full-data AUROC (Bernoulli-KL quantiles, Lemma 4).

    Half of ``epsilon`` goes to the per-neuron events (the cut-off band, the active
    weight; with ``top_frac`` that weight is at least ``k`` by the cut-off rule), half to
    the four one-sided events of each concept (Bonferroni), so
    with probability >= 1 - epsilon per replicate and neuron all ranges hold and
    the replicate's winner ``c`` has ``hi_c >= max_k lo_k``: concepts failing that are
    pruned. Concepts undefined on the full data are undefined in every replicate
    and are dropped. No pruning (every defined concept kept) for grouped samples,
    sample weights, user metrics and metrics other than built-in count metrics and
    AUROC.

    Returns
    -------
    candidates : list of int arrays (one per neuron, sorted)
    ranges : ndarray (n_neurons, n_concepts, 2) of replicate ``[lo, hi]`` (NaN if none)
    """
    from scipy import stats as st

    from .metrics import _COUNT_SPECS
    from .sufficient import _binary_concepts, _column_sums

    n_neurons, n_concepts = sim.shape
    defined = ~np.isnan(sim)
    ranges = np.full(sim.shape + (2,), np.nan)
    m = p.metric
    usable = (epsilon > 0 and not p.design.grouped and p.sample_weight is None and m.builtin
              and (m.statistics == "count" or m.name == "auroc"))
    keep = defined.copy()
    if usable:
        n = p.n_samples
        z = _binary_concepts(p.concepts, np.float32)
        present = _column_sums(z, None)
        if m.name == "auroc":
            e = epsilon / (4 * n_concepts)
            p_lo = st.binom.ppf(e, n, present / n)
            p_hi = st.binom.ppf(1 - e, n, present / n)
            m_lo = np.minimum(p_lo, n - p_hi)
            level = np.log(1 / e)
            lo, hi = kl_mean_quantiles(np.nan_to_num(sim, nan=0.5),
                                        np.broadcast_to(m_lo, sim.shape), np.asarray(level))
            lo = np.where(m_lo[None, :] > 0, lo, -np.inf)
            hi = np.where(m_lo[None, :] > 0, hi, np.inf)
        else:
            formula = m.formula
            is_defined = _COUNT_SPECS[m.name][1]
            # half of epsilon for the per-neuron events (cut-off band and active weight),
            # half for the 4 per-concept/pair events of each concept (Bonferroni)
            neuron_events = 3 if p.top_frac is not None else 2
            e_neuron = epsilon / (2 * neuron_events)
            e = epsilon / (2 * 4 * n_concepts)
            c_lo = st.binom.ppf(e, n, present / n)[None, :]
            c_hi = st.binom.ppf(1 - e, n, present / n)[None, :]
            if supports is None:
                supports = [_engine.CountSupport(p, j) for j in range(n_neurons)]
            if p.top_frac is not None:
                from .binarize import top_frac_target

                k = top_frac_target(p.top_frac, float(n))
                r_lo, r_hi = _cutoff_band(n, k, e_neuron)
                t_lo = np.empty(sim.shape)
                t_hi = np.empty(sim.shape)
                a_hi_n = np.empty(n_neurons)
                for j, sup in enumerate(supports):
                    while sup._length < min(n, r_hi) and sup.extend():
                        pass
                    end = int(sup.tie_end[min(r_hi, sup._length) - 1]) + 1
                    rows = np.asarray(z[sup.index[:end]].todense() if hasattr(z, "todense")
                                      else z[sup.index[:end]], dtype=np.float64)
                    t_lo[j] = rows[:r_lo].sum(axis=0)
                    t_hi[j] = rows.sum(axis=0)
                    a_hi_n[j] = end
                tp_lo = st.binom.ppf(e, n, t_lo / n)
                tp_hi = st.binom.ppf(1 - e, n, t_hi / n)
                # the replicate's active weight is at least k by the cut-off rule
                a_lo = np.full((n_neurons, 1), float(k))
                a_hi = st.binom.ppf(1 - e_neuron, n, a_hi_n / n)[:, None]
            else:
                from .sufficient import count_stats

                cs = count_stats(p.activations, p.concepts, sample_weight=None, design=p.design,
                                 threshold=p.threshold)
                tp_lo = st.binom.ppf(e, n, cs.tp / n)
                tp_hi = st.binom.ppf(1 - e, n, cs.tp / n)
                a_lo = st.binom.ppf(e_neuron, n, cs.active / n)[:, None]
                a_hi = st.binom.ppf(1 - e_neuron, n, cs.active / n)[:, None]
            from .bounds import _corner_limits

            nn = float(n)
            with np.errstate(divide="ignore", invalid="ignore"):
                lo, hi = _corner_limits(formula, p.options, tp_lo, tp_hi, a_lo, a_hi, c_lo, c_hi,
                                        nn, nn)
                sure = (is_defined(tp_lo, a_lo, c_lo, nn, p.options)
                        & is_defined(tp_hi, a_hi, c_hi, nn, p.options))
            lo = np.where(sure & ~np.isnan(lo), lo, -np.inf)
            hi = np.where(np.isnan(hi), np.inf, hi)
        lo = np.where(defined, lo, -np.inf)
        hi = np.where(defined, hi, -np.inf)
        ranges = np.stack([lo, hi], axis=-1)
        keep &= hi >= lo.max(axis=1, keepdims=True)
    return [np.flatnonzero(keep[j]) for j in range(n_neurons)], ranges


def _cutoff_band(n: int, k: float, e: float) -> tuple[int, int]:
    """Ranks ``[r_lo, r_hi]``: a replicate's cut-off rank exceeds ``r_lo`` and is at most
    ``r_hi`` except with probability ``2 e`` (the top-``r`` weight is Binomial(n, r/n))."""
    from scipy import stats as st

    kk = int(math.ceil(k))
    lo, hi = 0, kk  # largest r with P(Bin(n, r/n) >= k) <= e
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if st.binom.sf(kk - 1, n, mid / n) <= e:
            lo = mid
        else:
            hi = mid
    r_lo = lo
    lo, hi = kk - 1, n  # smallest r with P(Bin(n, r/n) <= k - 1) <= e
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if st.binom.cdf(kk - 1, n, mid / n) <= e:
            hi = mid
        else:
            lo = mid
    return r_lo, hi


ENGINES = ("auto", "numpy", "numba")


def _check_engine(engine: str) -> str:
    """Resolve ``engine`` to "numpy" or "numba" (``"auto"``: numba when importable)."""
    if engine not in ENGINES:
        raise ValidationError(f"`engine` must be one of {ENGINES}; got {engine!r}")
    if engine == "auto":
        return "numba" if _engine.numba_available() else "numpy"
    if engine == "numba" and not _engine.numba_available():
        from ._optional import require

        require("numba", "engine='numba'")  # raises OptionalDependencyError with the extra
    return engine


def _engine_for(p: Prepared, engine: str = "numpy"):
    """Replicate engine and its per-neuron supports; ``engine`` "numpy" or "numba"."""
    m = p.metric
    if m.builtin and m.statistics == "count":
        run = _engine.count_engine_numba if engine == "numba" else _engine.count_engine
        return run, _engine.CountSupports(_engine.CountSupport(p, j) for j in range(p.n_neurons))
    if m.builtin and m.name == "auroc":
        run = _engine.rank_engine_numba if engine == "numba" else _engine.rank_engine
        return run, _engine.RankSupports.build(p)
    return _engine.generic_engine, None


def _blackbox_engine(method: Callable[[np.ndarray], Any], n_neurons: int, n_concepts: int):
    def run(p, w, candidates, tracked, supports):
        b = w.shape[0]
        winner = np.empty((b, n_neurons), np.int64)
        ones = np.zeros((n_neurons, n_concepts + 1), np.int64)
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
            ones[np.arange(n_neurons), np.where(out < 0, n_concepts, out)] += 1
        n_tied = (winner >= 0).astype(np.int64)
        return _engine.Votes(winner, n_tied, {1: ones},
                             np.full((b, n_neurons, tracked.shape[1]), np.nan))
    return run


def _unit_weights(p: Prepared, seed, reps, scheme: str) -> np.ndarray:
    if p.groups is None:
        return replicate_weights(seed, reps, p.n_samples, scheme=scheme)
    codes, n_groups = p.groups
    return replicate_weights(seed, reps, n_groups, scheme=scheme)[:, codes]


def replicate_explanations(p: Prepared, weights: np.ndarray, *,
                           candidates: list[np.ndarray] | None = None,
                           tracked: np.ndarray | None = None,
                           method: Callable[[np.ndarray], Any] | None = None,
                           engine: tuple[Any, Any] | None = None) -> _engine.Votes:
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
        run, supports = engine if engine is not None else _engine_for(p)
    return run(p, weights, candidates, tracked, supports)


def _data_hash(p: Prepared) -> str:
    """Content hash of the probing data (activations, concepts, weights, groups)."""
    import hashlib

    import scipy.sparse as sparse

    from .results import array_sha256

    h = hashlib.sha256(array_sha256(np.asarray(p.activations)).encode())
    c = p.concepts
    parts = [c.data, c.indices, c.indptr] if sparse.issparse(c) else [np.asarray(c)]
    if p.sample_weight is not None:
        parts.append(p.sample_weight)
    if p.groups is not None:
        parts.append(p.groups[0])
    for a in parts:
        h.update(array_sha256(np.ascontiguousarray(a)).encode())
    return h.hexdigest()


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
                      prune_epsilon: float = 1e-4, guard: bool = False, adaptive: bool = False,
                      adaptive_tol: float = 0.01, top_k: int = 5,
                      method: Callable[[np.ndarray], Any] | None = None,
                      batch_size: int | None = None, checkpoint: str | os.PathLike | None = None,
                      progress_bar: bool = False, truth: str = "concept",
                      wpmi_lambda: float = 1.0, engine: str = "auto",
                      backend: str = "memory", client: Any = None) -> ExplanationResult:
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
    scheme : {"multinomial", "poisson", "predictive"}
        Bootstrap weights. ``"predictive"`` resamples ``n/2`` draws, which roughly
        doubles the spread of the replicate explanations to match that of an
        independent probing set's explanation (a calibration heuristic; its
        coverage is measured in ``tests/test_coverage.py``, not proven).
    guard : bool
        Widen each bootstrap set by the confidence limits
        (:meth:`ExplanationResult.guarded`): add every concept whose upper limit
        (the certified set's, at ``delta``) reaches the chosen concept's
        similarity. Where concepts are rare (about one positive each) the plain
        set misses a fresh probing set's explanation (coverage 0.6-0.75 at
        ``1 - alpha = 0.9-0.95``); the guarded set reached nominal coverage in every
        simulated cell with at most two near-tied concepts, with larger sets.
    prune : bool
        Skip concepts that cannot win a replicate (see :func:`prune_candidates`);
        the share of replicates whose winner was pruned is at most ``prune_epsilon``
        (multinomial scheme only).
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
    batch_size : int, optional
        Replicates per chunk; default: about 256 MB of working arrays (8 bytes per
        replicate and sample for count metrics, 64 for AUROC). Results do not depend on it.
    checkpoint : path, optional
        ``.npz`` file updated after every chunk; an interrupted run (Ctrl-C) keeps
        what it computed there and the same call resumes from it.
    progress_bar : bool
    engine : {"auto", "numpy", "numba"}
        Replicate kernels. ``"numba"`` (the ``neurocert[numba]`` extra) runs the AUROC
        rank sums and the count metrics' cut-offs and intersection counts (IoU,
        precision, recall, F1, accuracy) in compiled code over the positives of each
        candidate concept only; ``"auto"`` uses it when numba is installed. Results are identical either way (exact
        integer arithmetic); ``timings["engine_numba"]`` records which ran (1.0: numba).
    backend : {"memory", "blocks", "dask"}
        ``"memory"`` (default) computes here; ``"blocks"`` streams neuron blocks
        out of core (``activations`` may be a Zarr directory or ``.npy`` path);
        ``"dask"`` runs the blocks on a Dask cluster. Results are identical for the
        same seed (:mod:`neurocert.distributed`, ``docs/distributed.md``). ``adaptive``,
        ``method`` and ``checkpoint`` need the in-memory backend.
    client : distributed.Client or str, optional
        With ``backend="dask"``: the client or a scheduler address; default: a
        ``LocalCluster`` started for this call.

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
    if not isinstance(guard, (bool, np.bool_)):
        raise ValidationError(f"`guard` must be True or False; got {guard!r}")
    if guard and mode == "split":
        raise ValidationError("guard widens bootstrap sets; mode='split' has none (its split set "
                              "covers the fold-size explanation by itself)")
    if _backend.wants_blocks(backend, client):
        _backend.reject_options(backend, adaptive=adaptive, method=method, checkpoint=checkpoint)
        from . import distributed

        with _backend.dask_client(backend, client) as cl:
            res = distributed.bootstrap_explain(
                activations, concepts, metric=metric, n_boot=n_boot, alpha=alpha, rng=rng,
                threshold=threshold, top_frac=top_frac, groups=groups,
                sample_weight=sample_weight, concept_names=concept_names,
                neuron_names=neuron_names, mode=mode, n_folds=n_folds, delta=delta,
                scheme=scheme, prune=prune, prune_epsilon=prune_epsilon, top_k=top_k,
                batch_size=batch_size, truth=truth, wpmi_lambda=wpmi_lambda, client=cl,
                progress=progress_bar)
        return res.guarded() if guard else res
    t0 = time.perf_counter()
    n_boot = check_int(n_boot, "n_boot", 1)
    alpha = check_probability(alpha, "alpha")
    delta = check_probability(delta, "delta")
    top_k = check_int(top_k, "top_k", 1)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    if mode not in MODES:
        raise ValidationError(f"`mode` must be one of {MODES}; got {mode!r}")
    if scheme not in ("multinomial", "poisson", "predictive"):
        raise ValidationError(
            f"`scheme` must be 'multinomial', 'poisson' or 'predictive'; got {scheme!r}")
    prune_epsilon = check_probability(prune_epsilon, "prune_epsilon", low_open=False)
    if not (isinstance(adaptive_tol, (int, float)) and 0 < adaptive_tol <= 1):
        raise ValidationError(f"`adaptive_tol` must lie in (0, 1]; got {adaptive_tol!r}")
    if method is not None and not callable(method):
        raise ValidationError("`method` must be callable: weights (n_samples,) -> concept per neuron")
    engine = _check_engine(engine)
    p = prepare(activations, concepts, metric=metric, sample_weight=sample_weight,
                groups=groups, threshold=threshold, top_frac=top_frac, truth=truth,
                wpmi_lambda=wpmi_lambda)
    if p.n_concepts < 2:
        raise ValidationError(
            f"a concept set of size {p.n_concepts} has nothing to choose between; "
            "bootstrap_explain needs at least 2 concepts")
    if mode in ("split", "both"):
        n_folds = check_n_folds(n_folds, alpha,
                                p.groups[1] if p.groups is not None else p.n_samples)
    cnames = check_names(concept_names, p.n_concepts, "concept")
    nnames = check_names(neuron_names, p.n_neurons, "neuron")
    seed = as_seed_sequence(rng)
    if batch_size is None:
        # bytes per (replicate, sample) at peak: float32 weights plus compact integer
        # copies (the numpy AUROC engine works on fixed replicate chunks per neuron); the numba
        # kernels run B = 1000 at n = 50,000 in one batch (set-up paid once)
        per = 8 if engine == "numpy" or p.metric.statistics not in ("rank", "count") else 4
        batch_size = int(max(1, min(n_boot, BATCH_BYTES // (per * p.n_samples))))
        if adaptive:
            batch_size = min(batch_size, ADAPTIVE_ROUND)

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
    engine_fn, supports = _engine_for(p, engine)
    if prune and method is None and scheme == "multinomial":
        candidates, _ = prune_candidates(p, sim, prune_epsilon, supports)
    else:
        candidates = [np.arange(p.n_concepts)] * p.n_neurons
    params = {"metric": p.metric.name, "n_boot": n_boot, "alpha": alpha, "delta": delta,
              "mode": mode, "n_folds": n_folds if mode != "bootstrap" else None,
              "scheme": scheme, "prune": bool(prune and method is None),
              "prune_epsilon": prune_epsilon, "adaptive": adaptive, "adaptive_tol": adaptive_tol,
              "threshold": p.threshold, "top_frac": p.top_frac, "truth": truth,
              "wpmi_lambda": float(wpmi_lambda), "grouped": p.design.grouped,
              "weighted": p.sample_weight is not None, "black_box": method is not None,
              "seed_entropy": str(seed.entropy), "seed_spawn_key": list(seed.spawn_key),
              "top_k": top_k}

    n_neurons, n_concepts = p.n_neurons, p.n_concepts
    winners = np.empty((0, n_neurons), np.int64)
    ties = np.empty((0, n_neurons), np.int64)
    track = np.empty((0, n_neurons, tracked.shape[1]))
    counts: dict = {}
    done = 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    run_boot = mode in ("bootstrap", "both")
    if ckpt is not None and run_boot:
        key_params = {k: v for k, v in params.items() if k != "seed_entropy" or rng is not None}
        key = _params_key({**key_params, "data": _data_hash(p)})
        state = _load_checkpoint(ckpt, key)
        if state is not None:
            winners, ties, track = state["winners"], state["ties"], state["track"]
            counts = {int(k[len("counts_"):]): v for k, v in state.items()
                      if k.startswith("counts_")}
            done = int(state["done"])
            if rng is None:  # resume the stored stream
                seed = np.random.SeedSequence(int(str(state["seed_entropy"])))
                params["seed_entropy"] = str(seed.entropy)
    previous_sets = None
    previous_prob = None
    t_boot = time.perf_counter()
    target = n_boot if run_boot else 0
    # chunk boundaries: every `batch_size`, and (adaptive) every round, so where the run
    # stops never depends on `batch_size`
    cuts = set(range(done, target, batch_size)) | {target}
    if adaptive:
        cuts |= set(range(ADAPTIVE_ROUND, target, ADAPTIVE_ROUND))
    cuts_sorted = sorted(c for c in cuts if c >= done)
    chunks = list(zip(cuts_sorted[:-1], cuts_sorted[1:]))
    try:
        for b0, b1 in progress(chunks, total=len(chunks), desc="bootstrap", enabled=progress_bar):
            w = _unit_weights(p, seed, range(b0, b1), scheme)
            v = replicate_explanations(p, w, candidates=candidates, tracked=tracked, method=method,
                                       engine=(engine_fn, supports))
            winners = np.concatenate([winners, v.winner])
            ties = np.concatenate([ties, v.n_tied])
            track = np.concatenate([track, v.tracked])
            counts = _engine.merge_counts(counts, v.counts)
            done = b1
            if ckpt is not None:
                _save_checkpoint(ckpt, key, {
                    "winners": winners, "ties": ties, "track": track, "done": np.array(done),
                    "seed_entropy": np.array(str(seed.entropy)),
                    **{f"counts_{t}": c for t, c in counts.items()}})
            if adaptive and done >= ADAPTIVE_MIN and done % ADAPTIVE_ROUND == 0:
                prob = _engine.total_votes(counts) / done
                sets = prediction_sets(prob, sim, alpha)
                if (previous_sets is not None and previous_prob is not None
                        and all(np.array_equal(a, b) for a, b in zip(sets, previous_sets))
                        and np.max(np.abs(prob - previous_prob)) < adaptive_tol):
                    break
                previous_sets, previous_prob = sets, prob
            if done >= target:
                break
    except KeyboardInterrupt:
        if ckpt is not None:
            warnings.warn(f"interrupted after {done} replicates; they are kept in {ckpt} and the "
                          "same call resumes from there", stacklevel=2)
        raise
    votes = (_engine.total_votes(counts) if counts
             else np.zeros((n_neurons, n_concepts + 1)))
    t_split = time.perf_counter()
    split_sets = fold_winners = None
    if mode in ("split", "both"):
        fold_w = _fold_weights(p, seed, n_folds)
        fv = replicate_explanations(p, fold_w, tracked=tracked, method=method,
                                    engine=(engine_fn, supports))
        fold_winners = fv.winner
        split_sets = split_conformal_sets(fold_winners, n_concepts, alpha, sim)
    timings = {"identify_s": t_boot - t0, "bootstrap_s": t_split - t_boot,
               "split_s": time.perf_counter() - t_split, "total_s": time.perf_counter() - t0,
               "engine_numba": float(engine == "numba")}
    res = ExplanationResult.build(
        identification=ident, votes=votes, winners=winners, ties=ties, tracked=track,
        alpha=alpha, mode=mode, split_sets=split_sets, fold_winners=fold_winners,
        parameters=params, timings=timings,
        n_candidates=np.array([len(c) for c in candidates], np.int64))
    return res.guarded() if guard else res


def _fold_weights(p: Prepared, seed: np.random.SeedSequence, n_folds: int) -> np.ndarray:
    """0/1 weights of ``n_folds`` disjoint folds of (near-)equal size; groups kept whole."""
    if p.groups is None:
        return fold_weights(seed, n_folds, p.n_samples)
    return fold_weights(seed, n_folds, p.n_samples, p.groups[0], p.groups[1])
