"""NetDissect and CLIP-Dissect scoring over blocks of units, in this process or on Dask.

**NetDissect.** Units are independent given the segmentation: a unit's top-quantile
threshold needs all images of that unit only, and its tallies, IoU, certified limits and
replicate votes are its own. A task tallies a block of units (all images) against the
whole segmentation (:func:`neurocert.dissect.netdissect.netdissect_tally` with
``layer_units``, so the p-value threshold band ``delta / (2 m H_m)`` uses the layer's
``m``), certifies them and resamples the images with the replicate weights regenerated
from the seed; the driver concatenates the units.

**CLIP-Dissect.** ``log P(d|E)`` is per neuron, but soft-WPMI/WPMI's concept prior
``log P(d) = logsumexp_j log P(d|E_j) - log(n_neurons)`` pools all neurons: it is a
separate reduction. Every block returns, per weight vector (the full data, each bootstrap
replicate, each split fold), a (max, sum of exp) pair for each of its pieces of
:data:`~neurocert.dissect.clip_kernels.PIECE` neurons; the driver combines the pieces in
order into the prior (:func:`~neurocert.dissect.clip_kernels.combine_prior`, the function
the single-machine code uses) and sends it to every block, which then scores and votes.
Blocks are whole multiples of ``PIECE`` neurons, so the pieces, and therefore the
results, are bitwise those of the single-machine run.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._validation import (
    as_activations,
    check_int,
    check_n_folds,
    check_names,
    check_probability,
    to_numpy,
)
from ..exceptions import ValidationError
from ..resample import as_seed_sequence, fold_weights, replicate_weights
from . import _tasks
from ._runner import BlockRunner
from ._source import _npy_backed, as_ref

__all__ = ["clip_dissect", "clip_dissect_explain", "concept_scores", "netdissect",
           "netdissect_explain"]

#: default working memory of one CLIP-Dissect block (bytes); results never depend on it
MEMORY_PER_BLOCK = 256 * 2**20
#: default units per NetDissect block
NETDISSECT_BLOCK = 64


def _blocks(n: int, size: int) -> list[tuple[int, int]]:
    return [(j, min(n, j + size)) for j in range(0, n, size)]


def _check_block(neuron_block: Any) -> int | None:
    if neuron_block is None:
        return None
    if isinstance(neuron_block, bool) or not isinstance(neuron_block, (int, np.integer)) \
            or neuron_block < 1:
        raise ValidationError(f"`neuron_block` must be a positive integer; got {neuron_block!r}")
    return int(neuron_block)


# =========================================================================== NetDissect
class _Maps:
    """Where 4-D activation maps live: a ``.npy`` file (each task memory-maps its units)
    or memory (each task is sent its block)."""

    def __init__(self, activations: Any) -> None:
        self.path: str | None = None
        if isinstance(activations, (str, os.PathLike)):
            p = Path(activations)
            if p.suffix != ".npy" or not p.is_file():
                raise ValidationError(
                    f"`activations` as a path must be an existing .npy file; got {str(p)!r}")
            self.path = str(p)
            self.data = np.load(self.path, mmap_mode="r")
        elif isinstance(activations, np.memmap) and _npy_backed(activations):
            self.path = str(activations.filename)
            self.data = activations
        else:
            self.data = activations if isinstance(activations, np.ndarray) \
                else to_numpy(activations, "activations")

    def block(self, runner: BlockRunner, j0: int, j1: int) -> Any:
        if self.path is not None:
            return (self.path, j0, j1)
        return runner.put(np.ascontiguousarray(self.data[:, j0:j1]))


def _open_maps(src: Any) -> np.ndarray:
    if isinstance(src, tuple):
        path, j0, j1 = src
        return np.load(path, mmap_mode="r")[:, j0:j1]
    return src


def _netdissect_task(src: Any, j0: int, j1: int, thresholds: Any, segmentation: Any,
                     cfg: dict[str, Any]):
    """Tally, certify (and resample) units ``j0:j1``; returns ((ident, explain), warnings)."""
    from ..dissect.netdissect import (
        _explain_part,
        _identify_part,
        _replicate_batch,
        netdissect_tally,
    )

    def go():
        t = netdissect_tally(_open_maps(src), segmentation, quantile=cfg["quantile"],
                             thresholds=thresholds, n_bins=cfg["n_bins"], delta=cfg["delta"],
                             batch_size=cfg["image_batch"], layer_units=cfg["layer_units"])
        ident = _identify_part(t, cfg["delta"], cfg["top_k"])
        ex = cfg.get("explain")
        if ex is None:
            return ident, None, t.timings.get("tally_s", 0.0)
        batch = ex["batch_size"] or _replicate_batch(t, ex["n_boot"])
        part = _explain_part(t, ident.top, seed=ex["seed"], n_boot=ex["n_boot"],
                             batch_size=batch, threshold=ex["threshold"], scheme=ex["scheme"],
                             mode=ex["mode"], n_folds=ex["n_folds"])
        return ident, part, t.timings.get("tally_s", 0.0)

    return _tasks._run(go, j0, j1)


def _netdissect_run(activations: Any, segmentation: Any, *, quantile: float,
                    thresholds: Any, n_bins: int, delta: float, top_k: int, unit_names: Any,
                    image_batch: int | None, explain: dict | None, client: Any,
                    neuron_block: int | None, progress: bool):
    """Validate, map the unit blocks, return (identification parts, explain parts, names,
    n_images, timings)."""
    from ..dissect.netdissect import _check_identify_options
    from ..dissect.netdissect_tally import _check_inputs

    maps = _Maps(activations)
    acts, seg = _check_inputs(maps.data, segmentation)
    n_images, n_units = acts.shape[:2]
    delta = _check_identify_options(delta, top_k)
    names = check_names(unit_names, n_units, "unit")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or (
            n_bins != 0 and n_bins < 64):
        raise ValidationError(f"`n_bins` must be 0 or an integer >= 64; got {n_bins!r}")
    if image_batch is not None:
        image_batch = check_int(image_batch, "batch_size", 1)
    thr = None
    if thresholds is None:
        check_probability(quantile, "quantile")
    else:
        thr = to_numpy(thresholds, "thresholds").reshape(-1)
        if thr.shape != (n_units,):
            raise ValidationError(
                f"`thresholds` has {thr.size} entries but `activations` has {n_units} units")
    size = min(n_units, _check_block(neuron_block) or NETDISSECT_BLOCK)
    blocks = _blocks(n_units, size)
    cfg = {"quantile": quantile, "n_bins": int(n_bins), "delta": delta,
           "image_batch": image_batch, "layer_units": n_units, "top_k": int(top_k),
           "explain": explain}
    with BlockRunner(client, progress=progress) as runner:
        shared_seg = runner.share(seg)
        out = runner.map(_netdissect_task, blocks,
                         lambda j0, j1: (maps.block(runner, j0, j1), j0, j1,
                                         None if thr is None else thr[j0:j1]),
                         shared_seg, cfg, desc="netdissect")
    from .api import _emit

    _emit([w for _, w in out])
    idents = [v[0] for v, _ in out]
    parts = [v[1] for v, _ in out]
    timings = {"tally_s": float(sum(v[2] for v, _ in out)), "n_blocks": float(len(blocks))}
    return idents, parts, names, n_images, delta, timings


def netdissect(activations: Any, segmentation: Any, *, quantile: float = 0.005,
               delta: float = 0.05, thresholds: Any = None, top_k: int = 5,
               unit_names: Any = None, detector_iou: float | None = None,
               batch_size: int | None = None, client: Any = None,
               neuron_block: int | None = None, progress: bool = False):
    """:func:`neurocert.dissect.netdissect.netdissect` over blocks of units.

    Parameters
    ----------
    activations : array-like (n_images, n_units, h, w), ``.npy`` path or memmap of one
        A ``.npy`` file (path or ``np.load(..., mmap_mode="r")``) is memory-mapped by each
        task, which reads its units only; other inputs are sent block by block.
    segmentation : SegmentationSet
        Sent once to every worker (it must pickle; each task reads all its images).
    quantile, delta, thresholds, top_k, unit_names, detector_iou, batch_size
        As in :func:`~neurocert.dissect.netdissect.netdissect` (``batch_size``: images
        per tally chunk).
    client : None, distributed.Client or str
        None: blocks one after another in this process; else one Dask task per block.
    neuron_block : int, optional
        Units per block (default 64); any size, results do not depend on it.
    progress : bool

    Returns
    -------
    NetDissectResult
        Equal field by field to the single-machine result (bitwise), p-values included.
    """
    from ..dissect.netdissect import DETECTOR_IOU, _assemble_identification

    t0 = time.perf_counter()
    idents, _, names, _, delta, timings = _netdissect_run(
        activations, segmentation, quantile=quantile, thresholds=thresholds, n_bins=0,
        delta=delta, top_k=top_k, unit_names=unit_names, image_batch=batch_size,
        explain=None, client=client, neuron_block=neuron_block, progress=progress)
    timings["total_s"] = time.perf_counter() - t0
    return _assemble_identification(
        idents, delta=delta, top_k=int(top_k), names=names,
        detector_iou=DETECTOR_IOU if detector_iou is None else detector_iou, timings=timings)


def netdissect_explain(activations: Any, segmentation: Any, *, n_boot: int = 1000,
                       alpha: float = 0.05, rng: Any = None, threshold: str = "recomputed",
                       quantile: float = 0.005, n_bins: int = 128, delta: float = 0.05,
                       scheme: str = "multinomial", mode: str = "bootstrap",
                       n_folds: int | None = None, top_k: int = 5, unit_names: Any = None,
                       batch_size: int | None = None, client: Any = None,
                       neuron_block: int | None = None, progress: bool = False):
    """:func:`neurocert.dissect.netdissect.netdissect_explain` over blocks of units.

    Replicate ``b``'s image weights are a pure function of ``(seed, b)``: every block
    regenerates the same resamples, so each unit's votes are those of the single-machine
    run. ``rng=None`` draws one seed here for all blocks (recorded in ``parameters``).

    Parameters
    ----------
    activations, segmentation, client, neuron_block, progress
        As in :func:`netdissect` (activation maps, not a tally).
    n_boot, alpha, rng, threshold, quantile, n_bins, delta, scheme, mode, n_folds, top_k,
    unit_names, batch_size
        As in :func:`~neurocert.dissect.netdissect.netdissect_explain` (``batch_size``:
        replicates per chunk).

    Returns
    -------
    ExplanationResult
        Equal field by field to the single-machine result for the same ``rng``.
    """
    from ..dissect.netdissect import (
        _assemble_explanation,
        _assemble_identification,
        _check_explain_options,
    )

    t0 = time.perf_counter()
    n_boot, alpha = _check_explain_options(n_boot, alpha, scheme, threshold, mode)
    if segmentation is None:
        raise ValidationError("`segmentation` is required with activation maps")
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    n_labels = len(getattr(segmentation, "labels", ()))
    if 0 < n_labels < 2:
        raise ValidationError(
            f"a concept set of size {n_labels} has nothing to choose between; "
            "netdissect_explain needs at least 2 concepts")
    if mode in ("split", "both"):
        n_folds = check_n_folds(n_folds, alpha, len(segmentation), "images")
    seed = as_seed_sequence(rng)
    n_bins = n_bins if threshold == "recomputed" else 0
    explain = {"seed": seed, "n_boot": n_boot, "batch_size": batch_size,
               "threshold": threshold, "scheme": scheme, "mode": mode, "n_folds": n_folds}
    idents, parts, names, _, delta, timings = _netdissect_run(
        activations, segmentation, quantile=quantile, thresholds=None, n_bins=n_bins,
        delta=delta, top_k=top_k, unit_names=unit_names, image_batch=None, explain=explain,
        client=client, neuron_block=neuron_block, progress=progress)
    from ..dissect.netdissect import DETECTOR_IOU

    ident = _assemble_identification(idents, delta=delta, top_k=int(top_k), names=names,
                                     detector_iou=DETECTOR_IOU, timings=dict(timings))
    timings["total_s"] = time.perf_counter() - t0
    return _assemble_explanation(ident, parts, seed=seed, n_boot=n_boot, alpha=alpha,
                                 threshold=threshold, scheme=scheme, mode=mode,
                                 n_folds=n_folds, n_bins=n_bins, top_k=int(top_k),
                                 timings=timings)


# =========================================================================== CLIP-Dissect
def _clip_weights(job: dict[str, Any], resolved: Any, n: int) -> list[tuple[Any, str]]:
    """The weight vectors of a job with the label its total is checked under."""
    sw = resolved.sample_weight
    if job["weights"] == "data":
        return [(sw, "the probing set")]
    if job["weights"] == "boot":
        b0, b1 = job["range"]
        w = replicate_weights(job["seed"], range(b0, b1), n, scheme=job["scheme"])
        return [(w[i] if sw is None else w[i] * sw, f"bootstrap replicate {b0 + i}")
                for i in range(b1 - b0)]
    folds = fold_weights(job["seed"], job["n_folds"], n)
    k = folds.shape[0]
    return [(folds[f] if sw is None else folds[f] * sw, f"fold {f} of {k} (split mode)")
            for f in range(k)]


def _clip_task(src: Any, j0: int, j1: int, tracked: Any, resolved: Any, job: dict[str, Any],
               priors: Any):
    """One CLIP-Dissect job on neurons ``j0:j1`` (a whole number of pieces from a piece
    boundary); returns (value, warnings)."""
    from ..dissect import clip_kernels as _k
    from ..dissect.clip import _check_total, _chunk_votes, _label

    def go():
        act = as_activations(_tasks._activations(src, j0, j1))
        s = resolved.setup(act)
        opts = resolved.opts
        pmi = opts.function in _k.PMI_FUNCTIONS
        if job["kind"] == "data":
            return s.log_given(s.sample_weight) if pmi else s.scores(s.sample_weight)
        weights = _clip_weights(job, resolved, act.shape[0])
        if job["kind"] == "prior":
            tops, sums = [], []
            for w, what in weights:
                _check_total(opts, float(w.sum()), what)
                tp, sm = _k.prior_parts(s.log_given(w))
                tops.append(tp)
                sums.append(sm)
            return np.stack(tops), np.stack(sums)
        n_c = resolved.concepts.n_concepts
        rep = np.empty((len(weights), j1 - j0, n_c))
        for i, (w, what) in enumerate(weights):
            _check_total(opts, float(w.sum()), what)
            rep[i] = s.scores(w, prior=None if priors is None else priors[i])
        if job["kind"] == "folds":
            return np.stack([_label(r) for r in rep])
        return _chunk_votes(rep, tracked)

    return _tasks._run(go, j0, j1)


class _Clip:
    """Validated CLIP-Dissect inputs and the block layout (one runner for all rounds)."""

    def __init__(self, activations: Any, concepts: Any, options: dict[str, Any],
                 neuron_block: Any, memory_per_block: int, rows_per_neuron: int) -> None:
        from ..dissect import clip_kernels as _k
        from ..dissect.clip import _check_function, _resolve
        from ..dissect.clip_sources import as_concept_matrix

        _check_function(options["function"], options["dtype"])
        self.acts = as_ref(activations, "activations")
        n, n_neurons = self.acts.shape
        if n == 0 or n_neurons == 0:
            raise ValidationError(f"`activations` has an empty axis (shape {self.acts.shape})")
        kind = options.pop("kind")
        cm = as_concept_matrix(concepts, kind)
        self.resolved = _resolve(n, cm, **options)
        self.n_samples, self.n_neurons = n, n_neurons
        self.pmi = self.resolved.opts.function in _k.PMI_FUNCTIONS
        size = _check_block(neuron_block)
        piece = _k.PIECE
        if size is None:
            per = 8 * (n + rows_per_neuron * cm.n_concepts) * piece
            size = piece * max(1, memory_per_block // max(1, per))
        elif size < n_neurons and size % piece:
            raise ValidationError(
                f"CLIP-Dissect blocks must be whole multiples of {piece} neurons (the pieces "
                f"of the concept prior and of the cosines); got `neuron_block`={size}")
        self.size = min(size, n_neurons)
        self.blocks = _blocks(n_neurons, self.size)
        self.n_pieces = math.ceil(n_neurons / piece)

    def open(self, client: Any, progress: bool) -> BlockRunner:
        self.runner = BlockRunner(client, progress=progress)
        self.shared = self.runner.share(self.resolved)
        if self.acts.kind == "memory":
            data = self.acts.data
            self.sources = {(j0, j1): self.runner.put(np.ascontiguousarray(data[:, j0:j1]))
                            for j0, j1 in self.blocks}
        else:
            self.sources = {b: self.acts for b in self.blocks}
        return self.runner

    def run(self, job: dict[str, Any], *, priors: Any = None, tracked: Any = None,
            desc: str = "clip") -> list[Any]:
        shared_priors = None if priors is None else self.runner.share(priors)
        out = self.runner.map(
            _clip_task, self.blocks,
            lambda j0, j1: (self.sources[(j0, j1)], j0, j1,
                            None if tracked is None else tracked[j0:j1]),
            self.shared, job, shared_priors, desc=desc)
        from .api import _emit

        _emit([w for _, w in out])
        return [v for v, _ in out]

    def priors(self, job: dict[str, Any]) -> np.ndarray | None:
        """``log P(d)`` of every weight vector of ``job`` (None without a prior): the
        cross-neuron reduction, pieces combined in order."""
        from ..dissect import clip_kernels as _k

        if not self.pmi:
            return None
        parts = self.run(dict(job, kind="prior"), desc="prior")
        tops = np.concatenate([p[0] for p in parts], axis=1)
        sums = np.concatenate([p[1] for p in parts], axis=1)
        return np.stack([_k.combine_prior(tops[i], sums[i], self.n_neurons)
                         for i in range(tops.shape[0])])

    def similarity(self) -> np.ndarray:
        from ..dissect import clip_kernels as _k

        parts = self.run({"kind": "data", "weights": "data"}, desc="scores")
        values = np.concatenate(parts)
        return _k._pmi(values, self.resolved.opts.lam) if self.pmi else values


def concept_scores(activations: Any, concepts: Any, *, kind: str | None = None,
                   function: str = "soft_wpmi", top_k: int | None = None,
                   a: float | None = None, lam: float | None = None, min_prob: float = 1e-7,
                   p_start: float = 0.998, p_end: float = 0.97, power: float = 3.0,
                   top_fraction: float = 0.05, scale_p: float = 0.5, min_norm: float = 1e-3,
                   sample_weight: Any = None, dtype: str = "float32", client: Any = None,
                   neuron_block: int | None = None, memory_per_block: int = MEMORY_PER_BLOCK,
                   progress: bool = False) -> np.ndarray:
    """:func:`neurocert.dissect.clip.concept_scores` over blocks of neurons.

    Parameters
    ----------
    activations : path, zarr.Array, memmap or array (n_samples, n_neurons)
        Read one block of neurons at a time (see :func:`neurocert.distributed.similarity`).
    concepts, kind, function, top_k, a, lam, min_prob, p_start, p_end, power, top_fraction,
    scale_p, min_norm, sample_weight, dtype
        As in :func:`~neurocert.dissect.clip.concept_scores`; P is held by every worker.
    client : None, distributed.Client or str
    neuron_block : int, optional
        Neurons per block: a multiple of 64 (the prior's and cosines' pieces) unless it
        covers the layer. Default: as many pieces as fit ``memory_per_block``.
    memory_per_block : int
    progress : bool

    Returns
    -------
    ndarray (n_neurons, n_concepts)
        Bitwise equal to the single-machine scores; the soft-WPMI/WPMI prior pools every
        neuron of the layer (a separate reduction), as in memory.
    """
    from ..dissect.clip import _options, _warn_undefined

    job = _Clip(activations, concepts,
                _options(kind, function, top_k, a, lam, min_prob, p_start, p_end, power,
                              top_fraction, scale_p, min_norm, sample_weight, dtype),
                neuron_block, memory_per_block, 4)
    with job.open(client, progress):
        values = job.similarity()
    _warn_undefined(values, function)
    return values


def clip_dissect(activations: Any, concepts: Any, *, kind: str | None = None,
                 function: str = "soft_wpmi", top_k: int | None = None, a: float | None = None,
                 lam: float | None = None, min_prob: float = 1e-7, p_start: float = 0.998,
                 p_end: float = 0.97, power: float = 3.0, top_fraction: float = 0.05,
                 scale_p: float = 0.5, min_norm: float = 1e-3, sample_weight: Any = None,
                 dtype: str = "float32", neuron_names: Any = None, top: int = 5,
                 client: Any = None, neuron_block: int | None = None,
                 memory_per_block: int = MEMORY_PER_BLOCK, progress: bool = False):
    """:func:`neurocert.dissect.clip.clip_dissect` over blocks of neurons.

    Parameters are those of :func:`concept_scores` plus ``neuron_names`` and ``top``.

    Returns
    -------
    IdentificationResult
        Equal field by field to the single-machine result.
    """
    from ..dissect.clip import (
        _identification,
        _no_bound_warning,
        _options,
        _warn_undefined,
    )

    t0 = time.perf_counter()
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top < 1:
        raise ValidationError(f"`top` must be a positive integer; got {top!r}")
    job = _Clip(activations, concepts,
                _options(kind, function, top_k, a, lam, min_prob, p_start, p_end, power,
                              top_fraction, scale_p, min_norm, sample_weight, dtype),
                neuron_block, memory_per_block, 4)
    names = check_names(neuron_names, job.n_neurons, "neuron")
    with job.open(client, progress):
        sim = job.similarity()
    _warn_undefined(sim, function)
    _no_bound_warning(function)
    return _identification(job.resolved, sim, names, int(top), t0)


def clip_dissect_explain(activations: Any, concepts: Any, *, kind: str | None = None,
                         function: str = "soft_wpmi", top_k: int | None = None,
                         a: float | None = None, lam: float | None = None,
                         min_prob: float = 1e-7, p_start: float = 0.998, p_end: float = 0.97,
                         power: float = 3.0, top_fraction: float = 0.05, scale_p: float = 0.5,
                         min_norm: float = 1e-3, sample_weight: Any = None,
                         dtype: str = "float32", neuron_names: Any = None,
                         n_boot: int = 1000, alpha: float = 0.05, rng: Any = None,
                         scheme: str = "multinomial", mode: str = "bootstrap",
                         n_folds: int | None = None, top: int = 5,
                         batch_size: int | None = None, client: Any = None,
                         neuron_block: int | None = None,
                         memory_per_block: int = MEMORY_PER_BLOCK, progress: bool = False):
    """:func:`neurocert.dissect.clip.clip_dissect_explain` over blocks of neurons.

    Replicates are processed in rounds of ``batch_size``. In each round (soft-WPMI/WPMI)
    every block first returns the per-piece prior terms of each replicate, the driver
    combines them into each replicate's ``log P(d)`` (the cross-neuron reduction), and
    every block then scores and votes with it; other functions need one pass. Each
    replicate's ``log P(d|E)`` is therefore computed twice on the cluster (once for the
    prior, once for the votes) instead of being held between the passes.

    Parameters
    ----------
    activations, concepts, ..., top, batch_size
        As in :func:`~neurocert.dissect.clip.clip_dissect_explain` (``batch_size``:
        replicates per round; default from ``memory_per_block``).
    client, neuron_block, memory_per_block, progress
        As in :func:`concept_scores`.

    Returns
    -------
    ExplanationResult
        Equal field by field to the single-machine result for the same ``rng``.
    """
    from ..dissect.clip import (
        _check_explain_options,
        _check_total,
        _explain_parameters,
        _identification,
        _no_bound_warning,
        _options,
        _warn_undefined,
    )
    from ..engine import total_votes
    from ..explanation import ExplanationResult, split_conformal_sets

    t0 = time.perf_counter()
    n_boot, alpha, top, batch_size = _check_explain_options(n_boot, alpha, scheme, mode, top,
                                                            batch_size)
    job = _Clip(activations, concepts,
                _options(kind, function, top_k, a, lam, min_prob, p_start, p_end, power,
                              top_fraction, scale_p, min_norm, sample_weight, dtype),
                neuron_block, memory_per_block, 4)
    n, n_neurons = job.n_samples, job.n_neurons
    n_concepts = job.resolved.concepts.n_concepts
    names = check_names(neuron_names, n_neurons, "neuron")
    if scheme == "predictive" and job.resolved.sample_weight is None:
        _check_total(job.resolved.opts, float(max(1, n // 2)), "a predictive (n/2) replicate")
    if mode != "bootstrap":
        n_folds = check_n_folds(n_folds, alpha, n, "samples")
    seed = as_seed_sequence(rng)
    if batch_size is None:
        per = 8 * n_concepts * max(job.size, 2 * job.n_pieces)
        batch_size = int(max(1, min(n_boot, memory_per_block // max(1, per))))
    if mode == "split":
        n_boot = 0
    with job.open(client, progress):
        sim = job.similarity()
        _warn_undefined(sim, function)
        ident = _identification(job.resolved, sim, names, int(top), t0)
        tracked = ident.top
        t_boot = time.perf_counter()
        winners, ties, track = [], [], []
        counts: dict = {}
        for b0 in range(0, n_boot, batch_size):
            rnd = {"weights": "boot", "seed": seed, "range": (b0, min(n_boot, b0 + batch_size)),
                   "scheme": scheme}
            priors = job.priors(rnd)
            parts = job.run(dict(rnd, kind="votes"), priors=priors, tracked=tracked,
                            desc="bootstrap")
            winners.append(np.concatenate([p[0] for p in parts], axis=1))
            ties.append(np.concatenate([p[1] for p in parts], axis=1))
            track.append(np.concatenate([p[2] for p in parts], axis=1))
            for (j0, j1), p in zip(job.blocks, parts):
                for t, v in p[3].items():
                    if t not in counts:
                        counts[t] = np.zeros((n_neurons, n_concepts + 1), np.int64)
                    counts[t][j0:j1] += v
        t_split = time.perf_counter()
        split_sets = fold_winners = None
        if mode != "bootstrap":
            rnd = {"weights": "folds", "seed": seed, "n_folds": n_folds}
            priors = job.priors(rnd)
            fold_winners = np.concatenate(job.run(dict(rnd, kind="folds"), priors=priors,
                                                  desc="folds"), axis=1)
            split_sets = split_conformal_sets(fold_winners, n_concepts, alpha, sim)
    votes = total_votes(counts) if counts else np.zeros((n_neurons, n_concepts + 1))
    empty = np.empty((0, n_neurons), np.int64)
    params = _explain_parameters(ident, n_boot=n_boot, alpha=alpha, scheme=scheme, mode=mode,
                                 n_folds=n_folds, seed=seed, top=top)
    _no_bound_warning(function)
    timings = {"identify_s": t_boot - t0, "bootstrap_s": t_split - t_boot,
               "split_s": time.perf_counter() - t_split, "total_s": time.perf_counter() - t0,
               "n_blocks": float(len(job.blocks))}
    return ExplanationResult.build(
        identification=ident, votes=votes,
        winners=np.concatenate(winners) if winners else empty,
        ties=np.concatenate(ties) if ties else empty.copy(),
        tracked=(np.concatenate(track) if track
                 else np.empty((0, n_neurons, tracked.shape[1]))),
        alpha=alpha, mode=mode, split_sets=split_sets, fold_winners=fold_winners,
        parameters=params, timings=timings,
        n_candidates=np.full(n_neurons, n_concepts, np.int64))
