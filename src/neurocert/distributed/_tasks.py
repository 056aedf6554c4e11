"""Work done for one neuron block (runs in this process or on a Dask worker).

Each task reads its block of activations with all samples, calls the library's own
public function on it, and returns the block's result without the attached probing
data. Moment metrics (correlation, cosine, mad) use floating-point products whose
rounding can depend on how many neurons share one BLAS call, so their blocks are
always computed in canonical sub-blocks of :data:`CANONICAL_BLOCK` neurons aligned
to the global neuron index: the result then does not depend on the driver's block
size or on the number of workers.
"""

from __future__ import annotations

import itertools
import time
import warnings
from dataclasses import replace
from typing import Any

import numpy as np

from ..exceptions import UndefinedSimilarityWarning, ValidationError
from ._source import ArrayRef

__all__ = ["CANONICAL_BLOCK", "bootstrap_block", "identify_block", "map_block",
           "reduce_chunk", "similarity_block"]

CANONICAL_BLOCK = 64


def _activations(acts: Any, j0: int, j1: int) -> np.ndarray:
    if isinstance(acts, ArrayRef):
        return acts.columns(j0, j1)
    return acts


def _concepts(concepts: Any) -> Any:
    return concepts.load() if isinstance(concepts, ArrayRef) else concepts


def _sub_blocks(j0: int, j1: int, metric: Any, compute: int) -> list[tuple[int, int]]:
    """Pieces computed one at a time: canonical 64-neuron pieces for moment metrics,
    else pieces of ``compute`` neurons (a read block may hold several)."""
    step = CANONICAL_BLOCK if metric.statistics == "moment" else max(1, compute)
    first = j0 if metric.statistics != "moment" else j0 - j0 % step
    cuts = [j0] + [c for c in range(first + step, j1, step)] + [j1]
    return list(itertools.pairwise(cuts))


def _run(fn, j0: int, j1: int):
    """Call ``fn`` recording warnings; name the neuron range in validation errors."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            value = fn()
        except ValidationError as exc:
            raise ValidationError(f"in neurons {j0}:{j1}: {exc}") from exc
    caught = [(w.category, str(w.message)) for w in rec
              if not issubclass(w.category, UndefinedSimilarityWarning)]
    return value, caught


def similarity_block(acts: Any, j0: int, j1: int, concepts: Any, kwargs: dict[str, Any],
                     compute: int):
    """``neurocert.similarity`` of neurons ``j0:j1``; returns (values, warnings)."""
    from ..similarity import similarity

    a = _activations(acts, j0, j1)
    c = _concepts(concepts)
    metric = kwargs["metric"]

    def go():
        return np.concatenate([similarity(a[:, s0 - j0:s1 - j0], c, **kwargs)
                               for s0, s1 in _sub_blocks(j0, j1, metric, compute)])

    return _run(go, j0, j1)


def _pvalue_stats(res: Any, n_neurons_total: int) -> Any:
    """Statistics :meth:`IdentificationResult.p_values` would use, for the whole layer."""
    from ..similarity import compute_stats

    p = res.__dict__.get("_prepared")
    if p is None or p.metric.statistics not in ("count", "rank"):
        return None
    if p.top_frac is not None:
        m = n_neurons_total
        harmonic = float(np.sum(1.0 / np.arange(1, m + 1)))
        return compute_stats(p, threshold_delta=res.delta / (2 * m * harmonic))
    return res.__dict__["_stats"]


def identify_block(acts: Any, j0: int, j1: int, neuron_names: list[str], concepts: Any,
                   kwargs: dict[str, Any], n_neurons_total: int, compute: int):
    """``neurocert.identify`` of neurons ``j0:j1``; returns ((result, p-value stats), warnings)."""
    from ..identify import identify
    from ._merge import concat_stats, merge_identifications, strip_identification

    a = _activations(acts, j0, j1)
    c = _concepts(concepts)
    metric = kwargs["metric"]

    def go():
        parts, stats = [], []
        for s0, s1 in _sub_blocks(j0, j1, metric, compute):
            res = identify(a[:, s0 - j0:s1 - j0], c, neuron_names=neuron_names[s0 - j0:s1 - j0],
                           **kwargs)
            stats.append(_pvalue_stats(res, n_neurons_total))
            parts.append(strip_identification(res))
        if len(parts) == 1:
            return parts[0], stats[0]
        merged = merge_identifications(parts)
        return (strip_identification(merged),
                None if stats[0] is None else concat_stats(stats))

    return _run(go, j0, j1)


def bootstrap_block(acts: Any, j0: int, j1: int, neuron_names: list[str], concepts: Any,
                    kwargs: dict[str, Any], n_neurons_total: int, compute: int):
    """``neurocert.bootstrap_explain`` of neurons ``j0:j1`` (same seed for every block).

    Returns ((result, p-value stats), warnings).
    """
    from ..bootstrap import bootstrap_explain
    from ._merge import (
        concat_stats,
        merge_explanations,
        merge_identifications,
        strip_identification,
    )

    a = _activations(acts, j0, j1)
    c = _concepts(concepts)
    metric = kwargs["metric"]

    def go():
        parts, stats = [], []
        for s0, s1 in _sub_blocks(j0, j1, metric, compute):
            t0 = time.perf_counter()
            res = bootstrap_explain(a[:, s0 - j0:s1 - j0], c,
                                    neuron_names=neuron_names[s0 - j0:s1 - j0], **kwargs)
            stats.append(_pvalue_stats(res.identification, n_neurons_total))
            timings = dict(res.timings, block_s=time.perf_counter() - t0)
            parts.append(replace(res, identification=strip_identification(res.identification),
                                 timings=timings))
        if len(parts) == 1:
            return parts[0], stats[0]
        ident = merge_identifications([p.identification for p in parts])
        merged = merge_explanations(parts, strip_identification(ident),
                                    timings={"block_s": sum(p.timings["block_s"] for p in parts)})
        return merged, (None if stats[0] is None else concat_stats(stats))

    return _run(go, j0, j1)


def map_block(acts: Any, j0: int, j1: int, fn: Any, args: tuple, kwargs: dict[str, Any]):
    """A user's block function on neurons ``j0:j1``."""
    return fn(_activations(acts, j0, j1), j0, j1, *args, **kwargs)


def reduce_chunk(source: Any, s0: int, s1: int, offset: int, fn: Any, args: tuple,
                 kwargs: dict[str, Any]):
    """A user's partial reduction over samples ``s0:s1`` (all columns).

    ``source`` is an :class:`ArrayRef` (rows ``s0 - offset : s1 - offset`` are read) or
    the rows themselves (``offset == s0``).
    """
    arr = source.open() if isinstance(source, ArrayRef) else source
    chunk = arr[s0 - offset:s1 - offset]
    chunk = chunk.toarray() if hasattr(chunk, "toarray") else np.asarray(chunk)
    return fn(chunk, s0, s1, *args, **kwargs)
