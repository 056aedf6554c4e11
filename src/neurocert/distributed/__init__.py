"""Out-of-core and Dask-distributed runs of the public computations, by neuron blocks.

Neurons are independent in every per-neuron statistic: a *neuron block* (all
samples of a few neurons) is read from a chunked store (:mod:`neurocert.storage`),
scored by the library's own function, and the blocks are concatenated in neuron
order. Statistics that need all samples of a neuron (ranks, top-fraction
cut-offs) are computed inside its block; bootstrap replicates are regenerated in
each block from the seed (a pure function of seed, replicate and sample block), so
results are identical to the single-machine run for the same seed whatever the
block size or number of workers. The few quantities that span neurons are a
separate, ordered reduction over samples (:func:`reduce_samples`) or, for
CLIP-Dissect's concept prior, over pieces of neurons (:mod:`.dissect`). NetDissect and
CLIP-Dissect scoring run here too (:func:`netdissect`, :func:`netdissect_explain`,
:func:`concept_scores`, :func:`clip_dissect`, :func:`clip_dissect_explain`).

``client=None`` runs the blocks one after another in this process (bounded
memory: one block at a time); a ``distributed.Client`` or a scheduler address
runs one Dask task per block. See ``docs/distributed.md``.
"""

from __future__ import annotations

from ._merge import BlockIdentificationResult
from ._runner import BlockRunner, start_local_cluster
from ._tasks import CANONICAL_BLOCK
from .api import (
    MEMORY_PER_BLOCK,
    bootstrap_explain,
    identify,
    map_neuron_blocks,
    neuron_blocks,
    reduce_samples,
    similarity,
)
from .dissect import (
    clip_dissect,
    clip_dissect_explain,
    concept_scores,
    netdissect,
    netdissect_explain,
)

__all__ = [
    "CANONICAL_BLOCK",
    "MEMORY_PER_BLOCK",
    "BlockIdentificationResult",
    "BlockRunner",
    "bootstrap_explain",
    "clip_dissect",
    "clip_dissect_explain",
    "concept_scores",
    "identify",
    "map_neuron_blocks",
    "netdissect",
    "netdissect_explain",
    "neuron_blocks",
    "reduce_samples",
    "similarity",
    "start_local_cluster",
]
