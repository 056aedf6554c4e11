"""Kernels of the CLIP-Dissect similarity functions, vectorised over neurons.

Everything here works on validated arrays (:mod:`neurocert.dissect.clip` validates):
``activations (n_samples, n_neurons)`` and concept values ``(n_samples, n_concepts)``.

Top-k sets with integer sample weights
--------------------------------------
A sample of weight ``w`` counts as ``w`` copies. Samples are ranked once per neuron by
descending activation, ties by lower sample index (:class:`Ranking`, built with
``argpartition`` and extended on demand); a weight vector then fills the ``k`` rank
*slots* in that order, each sample taking ``w`` consecutive slots (:func:`slots`, from
cumulative weights in sorted order). Every top-k function is computed from the slot
matrix ``S (n_neurons, k)`` of sample indices, so the weighted computation and the one
on ``np.repeat``-materialised data read the same values in the same order: their
results are bitwise equal.

Neuron pieces
-------------
The soft-WPMI/WPMI concept prior pools every neuron, and a cosine is one matrix product
over many neurons whose rounding can depend on how many share it. Both are computed in
*pieces* of :data:`PIECE` consecutive neurons aligned to neuron 0: the prior as a
per-piece (max, sum of exp) pair combined left to right over the pieces
(:func:`prior_parts`, :func:`combine_prior`), the cosines piece by piece. A block of
neurons that starts at a multiple of :data:`PIECE` therefore reproduces the whole
layer's pieces bit for bit, which is what :mod:`neurocert.distributed` relies on. With
at most :data:`PIECE` neurons there is one piece (the plain logsumexp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FUNCTIONS",
    "PIECE",
    "PMI_FUNCTIONS",
    "TOPK_FUNCTIONS",
    "Options",
    "Ranking",
    "apply_prior",
    "combine_prior",
    "log_given",
    "prior_parts",
    "rank_weights",
    "scores",
    "slots",
    "softmax",
]

#: similarity functions of CLIP-Dissect (``similarity.py``), by neurocert name
FUNCTIONS = ("soft_wpmi", "wpmi", "rank_reorder", "cos", "cos_cubed")
#: the functions that read only each neuron's top samples
TOPK_FUNCTIONS = ("soft_wpmi", "wpmi", "rank_reorder")
#: the functions with a concept prior pooled over the neurons
PMI_FUNCTIONS = ("soft_wpmi", "wpmi")
#: elements of one gathered (neurons, slots, concepts) block
BLOCK_ELEMENTS = 2**18
#: neurons per piece of the concept prior and of the cosines (aligned to neuron 0)
PIECE = 64


@dataclass(frozen=True)
class Options:
    """Resolved parameters of one similarity function (defaults are CLIP-Dissect's)."""

    function: str
    top_k: int = 100
    a: float = 10.0
    lam: float = 1.0
    min_prob: float = 1e-7
    p_start: float = 0.998
    p_end: float = 0.97
    power: float = 3.0
    top_fraction: float = 0.05
    scale_p: float = 0.5
    min_norm: float = 1e-3
    dtype: str = "float32"

    def n_top(self, total_weight: float) -> int:
        """Number of top slots per neuron for a probing set of total weight ``total_weight``."""
        if self.function == "rank_reorder":
            return int(total_weight * self.top_fraction)
        return self.top_k


def softmax(x: np.ndarray, a: float, dtype: np.dtype) -> np.ndarray:
    """Row-wise ``softmax(a x)`` over concepts (max-shifted), in ``dtype``."""
    z = a * np.asarray(x, dtype=np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z.astype(dtype, copy=False)


def rank_weights(opts: Options, dtype: np.dtype) -> np.ndarray:
    """soft-WPMI's weight of rank slot ``r``: ``p_start - (r / k) (p_start - p_end)``.

    This is CLIP-Dissect's schedule: the weights fall linearly from ``p_start`` by
    ``(p_start - p_end) / k`` per rank, so the last of ``k`` slots has
    ``p_end + (p_start - p_end) / k`` (0.97028 with the defaults), not ``p_end``.
    """
    k = opts.top_k
    r = np.arange(k, dtype=np.float64)
    return (opts.p_start - r / k * (opts.p_start - opts.p_end)).astype(dtype)


# --------------------------------------------------------------------------- ranking
def _top_order(a: np.ndarray, m: int) -> np.ndarray:
    """First ``m`` samples of every neuron in descending activation, ties by lower index.

    ``argpartition`` picks ``m`` candidates per neuron in linear time; a neuron whose
    ``m``-th value is tied with samples left out is sorted in full (stable), so the
    prefix is exactly that of the total order ``(-activation, index)``.
    """
    n, n_neurons = a.shape
    if m >= n:
        return np.ascontiguousarray(np.argsort(-a, axis=0, kind="stable").T)
    neg = -np.asarray(a)
    part = np.argpartition(neg, m - 1, axis=0)[:m]
    cols = np.arange(n_neurons)
    threshold = np.asarray(a)[part, cols].min(axis=0)
    ambiguous = np.flatnonzero((np.asarray(a) >= threshold).sum(axis=0) > m)
    for j in ambiguous:
        part[:, j] = np.argsort(neg[:, j], kind="stable")[:m]
    part.sort(axis=0)
    vals = neg[part, cols]
    order = np.take_along_axis(part, np.argsort(vals, axis=0, kind="stable"), axis=0)
    return np.ascontiguousarray(order.T)


class Ranking:
    """Each neuron's samples by descending activation (ties: lower sample index first).

    Only a prefix is kept; :meth:`prefix` extends it when a weight vector needs more
    samples to fill its top slots. The prefix of a longer ranking equals the shorter
    one, so results never depend on how far it was extended.
    """

    def __init__(self, activations: np.ndarray) -> None:
        self.activations = activations
        self.order = np.empty((activations.shape[1], 0), np.int64)

    @property
    def n_samples(self) -> int:
        return self.activations.shape[0]

    def prefix(self, m: int) -> np.ndarray:
        """``(n_neurons, min(m, n_samples))`` sample indices, best first."""
        m = min(int(m), self.n_samples)
        if m > self.order.shape[1]:
            self.order = _top_order(self.activations, m)
        return self.order[:, :m]


def slots(ranking: Ranking, weights: np.ndarray | None, k: int) -> np.ndarray:
    """Sample index in each of the ``k`` top rank slots of every neuron, ``(n_neurons, k)``.

    With integer ``weights`` a sample of weight ``w`` fills ``w`` consecutive slots
    (``w`` copies); weight-0 samples are skipped. Slot ``r`` belongs to the first ranked
    sample whose cumulative weight exceeds ``r``. The caller guarantees
    ``sum(weights) >= k``.
    """
    if weights is None:
        return np.ascontiguousarray(ranking.prefix(k))
    n = ranking.n_samples
    total = float(weights.sum())
    m = min(n, math.ceil(k * n / total * 1.25 + 4 * math.sqrt(k) + 16))
    while True:
        order = ranking.prefix(m)
        cum = np.cumsum(weights[order], axis=1, dtype=np.float64)
        if m >= n or bool((cum[:, -1] >= k).all()):
            break
        m = min(n, 2 * m)
    n_neurons, width = order.shape
    # one searchsorted over all neurons: row j's capped cumulative weights are shifted
    # by j (k + 1), which keeps the flattened array sorted
    offset = (k + 1) * np.arange(n_neurons, dtype=np.float64)[:, None]
    keys = (np.minimum(cum, k) + offset).ravel()
    queries = (np.arange(k, dtype=np.float64)[None, :] + offset).ravel()
    flat = np.searchsorted(keys, queries, side="right").reshape(n_neurons, k)
    pos = flat - width * np.arange(n_neurons)[:, None]
    return np.take_along_axis(order, pos, axis=1)


# --------------------------------------------------------------------------- functions
def group_size(opts: Options, dtype: np.dtype) -> int:
    """Rank slots whose soft-WPMI terms are multiplied before one log.

    Each term is at least ``1 - p_start + min_prob``; ``G`` such terms multiply to no
    less than ``1e3`` times the dtype's smallest normal number, so the product never
    underflows.
    """
    floor = 1.0 - opts.p_start + opts.min_prob
    if floor >= 1.0:
        return 16
    tiny = float(np.finfo(dtype).tiny) * 1e3
    return int(max(1, min(16, math.floor(math.log(tiny) / math.log(floor)))))


def _log_given(s: np.ndarray, table: np.ndarray, p_rank: np.ndarray | None,
               min_prob: float, group: int = 1) -> np.ndarray:
    """``sum_r term(table[s[j, r]], r)`` per neuron and concept, blocked over neurons.

    With ``p_rank`` (soft-WPMI) the term is ``log(1 + p_r (q - 1) + min_prob)``,
    evaluated as ``log(p_r) + log(q + e_r)`` with ``e_r = (1 - p_r + min_prob) / p_r``,
    the ``q + e_r`` of ``group`` consecutive slots multiplied before one log (a log costs
    several multiplications). Without it ``table`` already holds ``log(q + min_prob)``
    (WPMI). Blocks of a few neurons keep the gathered values in cache; each neuron's
    value does not depend on the blocking.
    """
    n_neurons, k = s.shape
    c = table.shape[1]
    dt = table.dtype
    out = np.empty((n_neurons, c), dt)
    step = max(1, BLOCK_ELEMENTS // max(1, k * c))
    if p_rank is not None:
        p64 = p_rank.astype(np.float64)
        shift = ((1.0 - p64 + min_prob) / p64).astype(dt)[None, :, None]
        log_p = dt.type(np.log(p64).sum())
        n_full = (k // group) * group
    for j0 in range(0, n_neurons, step):
        g = table[s[j0:j0 + step]]
        if p_rank is None:
            g.sum(axis=1, out=out[j0:j0 + step])
            continue
        g += shift
        b = g.shape[0]
        parts = np.multiply.reduce(g[:, :n_full].reshape(b, n_full // group, group, c),
                                   axis=2)
        if n_full < k:
            parts = np.concatenate(
                [parts, np.multiply.reduce(g[:, n_full:], axis=1, keepdims=True)], axis=1)
        np.log(parts, out=parts)
        parts.sum(axis=1, out=out[j0:j0 + step])
        out[j0:j0 + step] += log_p
    return out


def prior_parts(lg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per piece of :data:`PIECE` neurons (rows of ``lg`` from a piece boundary): the max
    over the piece's neurons and the sum of ``exp(lg - max)``, each ``(n_pieces, C)``."""
    lg = np.asarray(lg, dtype=np.float64)
    cuts = range(0, lg.shape[0], PIECE)
    tops, sums = [], []
    for p0 in cuts:
        piece = lg[p0:p0 + PIECE]
        top = piece.max(axis=0)
        tops.append(top)
        sums.append(np.exp(piece - top).sum(axis=0))
    return np.stack(tops), np.stack(sums)


def combine_prior(tops: np.ndarray, sums: np.ndarray, n_neurons: int) -> np.ndarray:
    """``log P(d) = logsumexp_neurons log P(d|E) - log(n_neurons)`` from the pieces of
    :func:`prior_parts` of all neurons, in piece order (a fixed order: bitwise reproducible)."""
    top = tops.max(axis=0)
    total = sums[0] * np.exp(tops[0] - top)
    for k in range(1, tops.shape[0]):
        total = total + sums[k] * np.exp(tops[k] - top)
    return top + np.log(total) - math.log(n_neurons)


def apply_prior(lg: np.ndarray, prior: np.ndarray, lam: float) -> np.ndarray:
    """``log P(d|E) - lam log P(d)`` (float64)."""
    return np.asarray(lg, dtype=np.float64) - lam * prior[None, :]


def _pmi(log_given: np.ndarray, lam: float) -> np.ndarray:
    """``log P(d|E) - lam log P(d)`` with ``log P(d) = logsumexp_neurons - log(n_neurons)``."""
    lg = log_given.astype(np.float64)
    tops, sums = prior_parts(lg)
    return apply_prior(lg, combine_prior(tops, sums, lg.shape[0]), lam)


def _rank_reorder(s: np.ndarray, activations: np.ndarray, raw: np.ndarray,
                  opts: Options) -> np.ndarray:
    n_neurons, t = s.shape
    c = raw.shape[1]
    out = np.empty((n_neurons, c))
    step = max(1, BLOCK_ELEMENTS // max(1, t * max(c, t)))
    for j0 in range(0, n_neurons, step):
        sj = s[j0:j0 + step]
        cols = np.arange(j0, j0 + sj.shape[0])[:, None]
        top = np.asarray(raw[sj], dtype=np.float64)            # (b, t, C)
        avg = top.mean(axis=1)                                  # (b, C)
        rank = np.argsort(np.argsort(top, axis=1, kind="stable"), axis=1, kind="stable")
        target = np.asarray(activations[sj, cols], dtype=np.float64)  # (b, t), descending
        ascending = target[:, ::-1]
        reorg = np.take_along_axis(np.broadcast_to(ascending[:, :, None], rank.shape), rank,
                                   axis=1)
        err = np.mean(np.abs(target[:, :, None] - reorg) ** opts.power, axis=1)
        # expectation of CLIP-Dissect's random-permutation baseline: mean over all
        # ordered pairs (i, i') of |x_i - x_i'|^p (a uniform permutation maps i to
        # every i' with probability 1/t)
        base = np.mean(np.abs(target[:, :, None] - target[:, None, :]) ** opts.power,
                       axis=(1, 2))
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            # a negative mean with a fractional exponent is NaN, as in CLIP-Dissect
            val = -(err / base[:, None]) / np.power(avg, opts.scale_p)
        out[j0:j0 + step] = np.where(np.isfinite(val), val, np.nan)
    return out


def _weighted_cos(activations: np.ndarray, raw: np.ndarray, weights: np.ndarray | None,
                  opts: Options) -> np.ndarray:
    """Cosines of every neuron with every concept, computed in pieces of :data:`PIECE`."""
    return np.concatenate([_weighted_cos_piece(activations[:, p0:p0 + PIECE], raw, weights, opts)
                           for p0 in range(0, activations.shape[1], PIECE)])


def _weighted_cos_piece(activations: np.ndarray, raw: np.ndarray, weights: np.ndarray | None,
                        opts: Options) -> np.ndarray:
    a = np.asarray(activations, dtype=np.float64)
    r = np.asarray(raw, dtype=np.float64)
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if opts.function == "cos_cubed":
        total = float(a.shape[0] if w is None else w.sum())
        mean_a = (a.sum(axis=0) if w is None else w @ a) / total
        mean_r = (r.sum(axis=0) if w is None else w @ r) / total
        a = (a - mean_a) ** 3
        r = (r - mean_r) ** 3
    wa = a if w is None else a * w[:, None]
    na = np.sqrt(np.einsum("ij,ij->j", wa, a))
    nr = np.sqrt((r * r).sum(axis=0) if w is None else w @ (r * r))
    if opts.function == "cos_cubed":
        na = np.maximum(na, opts.min_norm)
        nr = np.maximum(nr, opts.min_norm)
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = (wa.T @ r) / na[:, None] / nr[None, :]
    return np.where(np.isfinite(sim), sim, np.nan)


def log_given(opts: Options, ranking: Ranking, table: np.ndarray,
              weights: np.ndarray | None, p_rank: np.ndarray | None) -> np.ndarray:
    """soft-WPMI/WPMI ``log P(d|E)`` of every neuron, ``(n_neurons, n_concepts)`` in the
    table's dtype; per neuron (it does not depend on the other neurons)."""
    total = ranking.n_samples if weights is None else float(weights.sum())
    s = slots(ranking, weights, opts.n_top(total))
    soft = opts.function == "soft_wpmi"
    return _log_given(s, table, p_rank if soft else None, opts.min_prob,
                      group_size(opts, table.dtype) if soft else 1)


def scores(opts: Options, ranking: Ranking, table: np.ndarray, raw: np.ndarray,
           weights: np.ndarray | None, p_rank: np.ndarray | None, *,
           prior: np.ndarray | None = None) -> np.ndarray:
    """Similarity ``(n_neurons, n_concepts)`` under integer sample ``weights`` (None: all 1).

    ``table`` is ``softmax(a cos)`` (or the probabilities) for soft-WPMI, its
    ``log(. + min_prob)`` for WPMI; ``raw`` the concept values for the other functions.
    ``prior`` (soft-WPMI/WPMI): ``log P(d)`` computed elsewhere (over a whole layer of
    which these neurons are a block); default: pooled over the neurons given.
    """
    f = opts.function
    if f in ("cos", "cos_cubed"):
        return _weighted_cos(ranking.activations, raw, weights, opts)
    if f == "rank_reorder":
        total = ranking.n_samples if weights is None else float(weights.sum())
        s = slots(ranking, weights, opts.n_top(total))
        return _rank_reorder(s, ranking.activations, raw, opts)
    lg = log_given(opts, ranking, table, weights, p_rank)
    if prior is not None:
        return apply_prior(lg, prior, opts.lam)
    return _pmi(lg, opts.lam)
