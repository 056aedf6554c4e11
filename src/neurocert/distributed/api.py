"""Block-parallel, out-of-core versions of the public computations."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .._validation import (
    check_binarization,
    check_groups,
    check_int,
    check_names,
    check_probability,
    check_sample_weight,
)
from ..bootstrap import MODES
from ..exceptions import ValidationError
from ..metrics import Metric, get_metric
from ..resample import SCHEMES, as_seed_sequence
from ..similarity import warn_undefined
from ..storage import SAMPLE_CHUNK
from . import _tasks
from ._merge import concat_stats, merge_explanations, merge_identifications
from ._runner import BlockRunner
from ._source import ArrayRef, as_ref

__all__ = ["MEMORY_PER_BLOCK", "bootstrap_explain", "identify", "map_neuron_blocks",
           "neuron_blocks", "reduce_samples", "similarity"]

#: default working memory of one block (bytes); results never depend on it
MEMORY_PER_BLOCK = 256 * 2**20
#: rough working bytes per (sample, neuron) of each kind of statistic
_BYTES_PER_ENTRY = {"count": 24, "rank": 112, "ap": 48, "moment": 48}


def neuron_blocks(n_neurons: int, size: int) -> list[tuple[int, int]]:
    """Consecutive ``(j0, j1)`` ranges of ``size`` neurons (the last may be shorter)."""
    return [(j, min(n_neurons, j + size)) for j in range(0, n_neurons, size)]


def _block_size(neuron_block: int | None, n_samples: int, n_neurons: int, metric: Metric,
                memory_per_block: int, extra_per_sample: float = 0.0) -> int:
    if neuron_block is not None:
        if isinstance(neuron_block, bool) or not isinstance(neuron_block, (int, np.integer)) \
                or neuron_block < 1:
            raise ValidationError(f"`neuron_block` must be a positive integer; got {neuron_block!r}")
        size = int(neuron_block)
    else:
        per = _BYTES_PER_ENTRY.get(metric.statistics, 48) * n_samples
        room = max(0.0, memory_per_block - extra_per_sample * n_samples)
        size = max(1, int(room // max(1, per)))
        if size >= _tasks.CANONICAL_BLOCK:
            size -= size % _tasks.CANONICAL_BLOCK
    if metric.statistics == "moment" and size < n_neurons and size % _tasks.CANONICAL_BLOCK:
        if neuron_block is not None:
            raise ValidationError(
                f"metric {metric.name!r} needs `neuron_block` to be a multiple of "
                f"{_tasks.CANONICAL_BLOCK} (its canonical sub-block); got {neuron_block}")
        size = _tasks.CANONICAL_BLOCK
    return min(size, n_neurons)


def _read_size(compute: int, ref: ArrayRef, memory_per_block: int) -> int:
    """Neurons read at once: whole stored chunks when they fit the budget (a read block
    is then split into compute blocks), so a narrow compute block does not decompress
    the same chunk many times."""
    n, n_neurons = ref.shape
    width = ref.chunk_cols or (_tasks.CANONICAL_BLOCK if ref.kind == "npy" else 0)
    if width <= compute or n_neurons <= compute:
        return compute
    itemsize = np.dtype(ref.dtype).itemsize
    if n * width * itemsize > memory_per_block // 2:
        return compute
    size = width * max(1, compute // width)
    return min(max(size, width), n_neurons)


class _Inputs:
    """Validated references to the inputs and the common keyword arguments."""

    def __init__(self, activations: Any, concepts: Any, *, metric: Any, sample_weight: Any,
                 groups: Any, threshold: Any, top_frac: Any, truth: str,
                 wpmi_lambda: float) -> None:
        self.acts = as_ref(activations, "activations")
        self.concepts = as_ref(concepts, "concepts")
        n = self.acts.shape[0]
        if self.concepts.shape[0] != n:
            raise ValidationError(
                f"`concepts` has {self.concepts.shape[0]} samples (axis 0) but `activations` "
                f"has {n}; shapes {self.concepts.shape} and {self.acts.shape}")
        if self.acts.shape[1] == 0:
            raise ValidationError(f"`activations` has no neurons (shape {self.acts.shape})")
        self.metric = get_metric(metric)
        threshold, top_frac = check_binarization(threshold, top_frac)
        check_sample_weight(sample_weight, n)
        check_groups(groups, n)
        if truth not in ("concept", "neuron"):
            raise ValidationError(f"`truth` must be 'concept' or 'neuron'; got {truth!r}")
        self.kwargs: dict[str, Any] = {
            "metric": self.metric, "sample_weight": sample_weight, "groups": groups,
            "threshold": threshold, "top_frac": top_frac, "truth": truth,
            "wpmi_lambda": float(wpmi_lambda)}

    @property
    def n_samples(self) -> int:
        return self.acts.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.acts.shape[1]

    def block_source(self, runner: BlockRunner) -> Callable[[int, int], Any]:
        """Per block: a reference to read (on-disk) or the block itself (in memory)."""
        acts = self.acts
        if acts.kind != "memory":
            return lambda j0, j1: acts
        data = acts.data

        def block(j0: int, j1: int) -> Any:
            piece = data[:, j0:j1]
            piece = piece.toarray() if hasattr(piece, "toarray") else np.asarray(piece)
            return runner.put(np.ascontiguousarray(piece))

        return block

    def shared_concepts(self, runner: BlockRunner) -> Any:
        c = self.concepts
        if c.kind == "memory":
            return runner.share(c.data)
        if runner.client is None:
            return c.columns(0, c.shape[1])  # read once here, released after the call
        return c  # each worker reads the store once (cached per process)


def _emit(caught: list[list[tuple[type, str]]]) -> None:
    seen: set[tuple[type, str]] = set()
    for block in caught:
        for cat, msg in block:
            if (cat, msg) not in seen:
                seen.add((cat, msg))
                warnings.warn(msg, cat, stacklevel=3)


def similarity(activations: Any, concepts: Any, *, metric: str | Metric,
               sample_weight: Any = None, groups: Any = None, threshold: float | None = None,
               top_frac: float | None = None, truth: str = "concept", wpmi_lambda: float = 1.0,
               client: Any = None, neuron_block: int | None = None,
               memory_per_block: int = MEMORY_PER_BLOCK, progress: bool = False) -> np.ndarray:
    """:func:`neurocert.similarity` over neuron blocks, out of core or on a Dask cluster.

    Parameters
    ----------
    activations : path, zarr.Array, memmap or array (n_samples, n_neurons)
        A Zarr array directory or ``.npy`` path is read one neuron block at a time
        (never whole); on a cluster every worker must be able to open the path.
    concepts : path, zarr.Array, array or scipy.sparse (n_samples, n_concepts)
        Held in memory by every block (read once per worker process).
    metric, sample_weight, groups, threshold, top_frac, truth, wpmi_lambda
        As in :func:`neurocert.similarity`.
    client : None, distributed.Client or str
        None: run block after block in this process. A client or a scheduler address
        (``"tcp://host:8786"``): one Dask task per block.
    neuron_block : int, optional
        Neurons per block. Default: as many as fit ``memory_per_block``.
    memory_per_block : int
        Working-memory target of one block in bytes (default 256 MiB).
    progress : bool
        Progress bar over blocks (and the Dask dashboard link when there is one).

    Returns
    -------
    ndarray (n_neurons, n_concepts)
        Bitwise equal to :func:`neurocert.similarity` on the whole array for every
        count, rank and average-precision metric, for any block size and any number
        of workers; moment metrics (correlation, cosine, mad) are bitwise independent
        of the block size and workers and equal the in-memory result to rounding.

    Examples
    --------
    >>> import numpy as np
    >>> from neurocert import distributed
    >>> rng = np.random.default_rng(0)
    >>> z = (rng.random((500, 3)) < 0.3).astype(float)
    >>> a = z[:, [0, 1, 2, 0]] + rng.normal(size=(500, 4))
    >>> s = distributed.similarity(a, z, metric="auroc", neuron_block=2)
    >>> s.argmax(axis=1).tolist()
    [0, 1, 2, 0]
    """
    inp = _Inputs(activations, concepts, metric=metric, sample_weight=sample_weight,
                  groups=groups, threshold=threshold, top_frac=top_frac, truth=truth,
                  wpmi_lambda=wpmi_lambda)
    size = _block_size(neuron_block, inp.n_samples, inp.n_neurons, inp.metric, memory_per_block)
    blocks = neuron_blocks(inp.n_neurons, _read_size(size, inp.acts, memory_per_block))
    with BlockRunner(client, progress=progress) as runner:
        source = inp.block_source(runner)
        out = runner.map(_tasks.similarity_block, blocks,
                         lambda j0, j1: (source(j0, j1), j0, j1),
                         inp.shared_concepts(runner), inp.kwargs, size, desc="similarity")
    _emit([w for _, w in out])
    values = np.concatenate([v for v, _ in out])
    warn_undefined(values, inp.metric, stacklevel=2)
    return values


def identify(activations: Any, concepts: Any, *, metric: str | Metric, delta: float = 0.05,
             concept_names: Any = None, neuron_names: Any = None, top_k: int = 5,
             sample_weight: Any = None, groups: Any = None, threshold: float | None = None,
             top_frac: float | None = None, truth: str = "concept", wpmi_lambda: float = 1.0,
             client: Any = None, neuron_block: int | None = None,
             memory_per_block: int = MEMORY_PER_BLOCK, progress: bool = False):
    """:func:`neurocert.identify` over neuron blocks, out of core or on a Dask cluster.

    Every quantity of :func:`neurocert.identify` is per neuron (the limits are
    simultaneous over the concepts of one neuron), so the blocks are independent.
    The returned result equals the single-machine one field by field (see
    :func:`similarity` for moment metrics) and its :meth:`summary` with
    ``multiplicity="fwer"``/``"fdr"`` (the only cross-neuron step) runs on the
    merged p-values.

    Parameters
    ----------
    activations, concepts, client, neuron_block, memory_per_block, progress
        As in :func:`similarity`.
    metric, delta, concept_names, neuron_names, top_k, sample_weight, groups, threshold,
    top_frac, truth, wpmi_lambda
        As in :func:`neurocert.identify`.

    Returns
    -------
    IdentificationResult
    """
    t0 = time.perf_counter()
    inp = _Inputs(activations, concepts, metric=metric, sample_weight=sample_weight,
                  groups=groups, threshold=threshold, top_frac=top_frac, truth=truth,
                  wpmi_lambda=wpmi_lambda)
    delta = check_probability(delta, "delta")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValidationError(f"`top_k` must be a positive integer; got {top_k!r}")
    cnames = check_names(concept_names, inp.concepts.shape[1], "concept")
    nnames = check_names(neuron_names, inp.n_neurons, "neuron")
    kwargs = dict(inp.kwargs, delta=delta, top_k=int(top_k), concept_names=cnames)
    size = _block_size(neuron_block, inp.n_samples, inp.n_neurons, inp.metric, memory_per_block)
    blocks = neuron_blocks(inp.n_neurons, _read_size(size, inp.acts, memory_per_block))
    with BlockRunner(client, progress=progress) as runner:
        source = inp.block_source(runner)
        out = runner.map(_tasks.identify_block, blocks,
                         lambda j0, j1: (source(j0, j1), j0, j1, nnames[j0:j1]),
                         inp.shared_concepts(runner), kwargs, inp.n_neurons, size,
                         desc="identify")
    _emit([w for _, w in out])
    parts = [r for (r, _), _w in out]
    stats = [s for (_, s), _w in out]
    result = merge_identifications(
        parts, pvalue_stats=None if stats[0] is None else concat_stats(stats),
        timings={"total_s": time.perf_counter() - t0, "n_blocks": float(len(blocks)),
                 "blocks_s": float(sum(p.timings.get("total_s", 0.0) for p in parts))})
    warn_undefined(result.similarity, inp.metric, stacklevel=2)
    return result


def bootstrap_explain(activations: Any, concepts: Any, *, metric: str | Metric,
                      n_boot: int = 1000, alpha: float = 0.05, rng: Any = None,
                      threshold: float | None = None, top_frac: float | None = None,
                      groups: Any = None, sample_weight: Any = None, concept_names: Any = None,
                      neuron_names: Any = None, mode: str = "bootstrap",
                      n_folds: int | None = None, delta: float = 0.05,
                      scheme: str = "multinomial", prune: bool = True,
                      prune_epsilon: float = 1e-4, top_k: int = 5,
                      batch_size: int | None = None, truth: str = "concept",
                      wpmi_lambda: float = 1.0, client: Any = None,
                      neuron_block: int | None = None,
                      memory_per_block: int = MEMORY_PER_BLOCK, progress: bool = False):
    """:func:`neurocert.bootstrap_explain` over neuron blocks, out of core or on Dask.

    Replicate ``b``'s weights are a pure function of ``(seed, b, sample block)``
    (:func:`neurocert.resample.replicate_weights`), so every block regenerates the
    same resamples from the seed instead of receiving them, and each neuron's
    replicate explanations are those of the single-machine run. The result is
    equal to :func:`neurocert.bootstrap_explain` with the same ``rng`` field by
    field (see :func:`similarity` for moment metrics), for any block size and any
    number of workers.

    Parameters
    ----------
    activations, concepts, client, neuron_block, memory_per_block, progress
        As in :func:`similarity`.
    metric, n_boot, alpha, rng, threshold, top_frac, groups, sample_weight,
    concept_names, neuron_names, mode, n_folds, delta, scheme, prune, prune_epsilon,
    top_k, batch_size, truth, wpmi_lambda
        As in :func:`neurocert.bootstrap_explain`. ``rng=None`` draws one seed here
        (recorded in ``parameters``) for all blocks.

    Returns
    -------
    ExplanationResult

    Notes
    -----
    Not available here: ``adaptive=True`` (its stopping rule looks at every neuron
    after each round), the black-box ``method=`` (one call covers all neurons) and
    ``checkpoint=`` (a lost block is recomputed by Dask instead).
    """
    t0 = time.perf_counter()
    # the checks of neurocert.bootstrap_explain, here before any block is read
    n_boot = check_int(n_boot, "n_boot", 1)
    alpha = check_probability(alpha, "alpha")
    check_probability(delta, "delta")
    top_k = check_int(top_k, "top_k", 1)
    if batch_size is not None:
        batch_size = check_int(batch_size, "batch_size", 1)
    if mode not in MODES:
        raise ValidationError(f"`mode` must be one of {MODES}; got {mode!r}")
    if scheme not in SCHEMES:
        raise ValidationError(f"`scheme` must be one of {SCHEMES}; got {scheme!r}")
    inp = _Inputs(activations, concepts, metric=metric, sample_weight=sample_weight,
                  groups=groups, threshold=threshold, top_frac=top_frac, truth=truth,
                  wpmi_lambda=wpmi_lambda)
    if inp.concepts.shape[1] < 2:
        raise ValidationError(
            f"a concept set of size {inp.concepts.shape[1]} has nothing to choose between; "
            "bootstrap_explain needs at least 2 concepts")
    cnames = check_names(concept_names, inp.concepts.shape[1], "concept")
    nnames = check_names(neuron_names, inp.n_neurons, "neuron")
    seed = as_seed_sequence(rng)
    n = inp.n_samples
    if batch_size is None and isinstance(n_boot, (int, np.integer)) and n_boot >= 1:
        # the weight matrix (batch, n) must fit the block's budget; never changes results
        per = 64 if inp.metric.statistics == "rank" else 8
        batch_size = int(max(1, min(n_boot, (memory_per_block // 4) // (per * n))))
    kwargs = dict(inp.kwargs, n_boot=n_boot, alpha=alpha, rng=seed, concept_names=cnames,
                  mode=mode, n_folds=n_folds, delta=delta, scheme=scheme, prune=prune,
                  prune_epsilon=prune_epsilon, top_k=top_k, batch_size=batch_size)
    weights_bytes = (64 if inp.metric.statistics == "rank" else 8) * (batch_size or 1)
    size = _block_size(neuron_block, n, inp.n_neurons, inp.metric, memory_per_block,
                       extra_per_sample=weights_bytes)
    blocks = neuron_blocks(inp.n_neurons, _read_size(size, inp.acts, memory_per_block))
    with BlockRunner(client, progress=progress) as runner:
        source = inp.block_source(runner)
        out = runner.map(_tasks.bootstrap_block, blocks,
                         lambda j0, j1: (source(j0, j1), j0, j1, nnames[j0:j1]),
                         inp.shared_concepts(runner), kwargs, inp.n_neurons, size,
                         desc="bootstrap")
    _emit([w for _, w in out])
    parts = [r for (r, _), _w in out]
    stats = [s for (_, s), _w in out]
    ident = merge_identifications(
        [p.identification for p in parts],
        pvalue_stats=None if stats[0] is None else concat_stats(stats))
    blocks_s = float(sum(p.timings.get("block_s", p.timings.get("total_s", 0.0))
                         for p in parts))
    return merge_explanations(parts, ident, timings={
        "total_s": time.perf_counter() - t0, "n_blocks": float(len(blocks)),
        "blocks_s": blocks_s})


def map_neuron_blocks(fn: Callable[..., Any], activations: Any, *args: Any, client: Any = None,
                      neuron_block: int = _tasks.CANONICAL_BLOCK, progress: bool = False,
                      **kwargs: Any) -> np.ndarray:
    """Apply ``fn(block, j0, j1, *args, **kwargs)`` to every neuron block, concatenated.

    The building block for other per-neuron scores (e.g. NetDissect or CLIP-Dissect
    scoring): ``block`` is ``activations[:, j0:j1]`` with all samples and ``fn``
    returns an array whose first axis has ``j1 - j0`` rows. Cross-neuron
    quantities (a concept prior, a global normaliser) are computed first with
    :func:`reduce_samples` and passed in ``args``.

    Parameters
    ----------
    fn : callable
        Module-level (picklable) when ``client`` is given.
    activations : path, zarr.Array, memmap or array (n_samples, n_neurons)
    *args, **kwargs
        Passed to ``fn`` (shared by all blocks).
    client, progress
        As in :func:`similarity`.
    neuron_block : int
        Neurons per block.

    Returns
    -------
    ndarray, concatenated over blocks along axis 0
    """
    acts = as_ref(activations, "activations")
    if isinstance(neuron_block, bool) or not isinstance(neuron_block, (int, np.integer)) \
            or neuron_block < 1:
        raise ValidationError(f"`neuron_block` must be a positive integer; got {neuron_block!r}")
    blocks = neuron_blocks(acts.shape[1], int(neuron_block))
    with BlockRunner(client, progress=progress) as runner:
        if acts.kind == "memory":
            data = acts.data

            def source(j0: int, j1: int) -> Any:
                return runner.put(np.ascontiguousarray(data[:, j0:j1]))
        else:
            def source(j0: int, j1: int) -> Any:
                return acts
        out = runner.map(_tasks.map_block, blocks, lambda j0, j1: (source(j0, j1), j0, j1),
                         fn, args, kwargs, desc="blocks")
    for (j0, j1), part in zip(blocks, out):
        if np.shape(part)[:1] != (j1 - j0,):
            raise ValidationError(
                f"`fn` must return {j1 - j0} rows for neurons {j0}:{j1}; got shape "
                f"{np.shape(part)}")
    return np.concatenate(out)


def reduce_samples(fn: Callable[..., Any], source: Any, *args: Any, client: Any = None,
                   sample_chunk: int = SAMPLE_CHUNK, progress: bool = False,
                   **kwargs: Any) -> Any:
    """Sum of ``fn(chunk, s0, s1, *args, **kwargs)`` over fixed sample chunks, in order.

    The separate reduction for the few cross-neuron (or concept-only) quantities,
    e.g. CLIP-Dissect's concept prior ``p(c) = mean_i softmax(sims_i / T)_c``:
    ``reduce_samples(lambda c, s0, s1: softmax(c / T, axis=1).sum(0), concept_store)
    / n_samples``. Partial results are added left to right in chunk order, so the
    float result depends only on ``sample_chunk``, never on the number of workers.

    Parameters
    ----------
    fn : callable
        ``chunk (s1 - s0, n_columns) -> partial`` (array or number); module-level
        when ``client`` is given.
    source : path, zarr.Array, memmap, array or scipy.sparse (n_samples, n_columns)
    client, progress
        As in :func:`similarity`.
    sample_chunk : int
        Rows per chunk: part of the definition of the float result (keep it fixed
        to reproduce a number).

    Returns
    -------
    The sum of the partial results.
    """
    if isinstance(sample_chunk, bool) or not isinstance(sample_chunk, (int, np.integer)) \
            or sample_chunk < 1:
        raise ValidationError(f"`sample_chunk` must be a positive integer; got {sample_chunk!r}")
    ref = as_ref(source, "source")
    chunks = neuron_blocks(ref.shape[0], int(sample_chunk))
    with BlockRunner(client, progress=progress) as runner:
        if ref.kind == "memory":
            data = ref.data

            def piece(s0: int, s1: int) -> tuple[Any, ...]:
                return (runner.put(data[s0:s1]), s0, s1, s0)
        else:
            def piece(s0: int, s1: int) -> tuple[Any, ...]:
                return (ref, s0, s1, 0)
        parts = runner.map(_tasks.reduce_chunk, chunks, piece, fn, args, kwargs, desc="reduce")
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total
