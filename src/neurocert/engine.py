"""Replicate engines: the explanation (argmax concept) of every neuron under many weight vectors.

Each engine takes a weight matrix ``W`` of shape ``(n_replicates, n_samples)`` and
returns a :class:`Votes` record: per replicate and neuron the winning concept
(lowest index among exact ties, ``-1`` for "none") and the number of tied
winners, and the similarity of a few tracked concepts (for descriptive intervals).
Engines never materialize resampled data; they use weighted sufficient
statistics:

* **count** metrics: per neuron, only the samples that can be active matter (the
  active set of a fixed threshold, or the top region of the sorted activations
  for ``top_frac``, whose cut-off is recomputed per replicate from cumulative
  weights), so ``tp = (W_S * mask) @ Z_S[:, candidates]`` is a small product;
  concept and total weights ``W @ Z`` are shared by all neurons.
* **rank** metrics (AUROC): weighted midranks per replicate from cumulative
  weights in each neuron's fixed sort order, then the sums ``sum_i w_i R_i z_ic``
  over the positives of the candidate concepts (integer weights: exact integer
  arithmetic, by the cheapest of a gather at the positives, a scipy sparse product
  or a split float32 GEMM, neurons on one thread per CPU; real weights: a float64
  product).
* **generic**: the library's own statistics under ``sample_weight = W[b]``.

With numba installed (``engine="numba"``, the default ``"auto"``),
:func:`count_engine_numba` and :func:`rank_engine_numba` run the per-neuron work in
compiled kernels (:mod:`neurocert._numba_kernels`) on a thread pool: per replicate
the ``top_frac`` cut-off, the intersection weights over the positives of the
candidate concepts (IoU, precision, recall, F1, accuracy) or the rank sums over the
positives (AUROC), the formula and the argmax, all in exact integer arithmetic, so
their results equal the numpy engines' bit for bit (other metrics and real sample
weights run the numpy engines).

All count arithmetic is on small integers in float32 (exact below 2**24) or
float64, so results are bitwise identical for any chunking of replicates or
neurons.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .metrics import Metric
from .similarity import Prepared, compute_stats

__all__ = [
    "CountSupports",
    "RankSupports",
    "Votes",
    "argmax_votes",
    "count_engine",
    "count_engine_numba",
    "generic_engine",
    "numba_available",
    "rank_engine",
    "rank_engine_numba",
]


@dataclass(frozen=True)
class Votes:
    """Replicate explanations.

    Attributes
    ----------
    winner : ndarray (n_replicates, n_neurons) int64
        Lowest-index winning concept; -1 when every concept is NaN or at the
        metric's minimum ("none").
    n_tied : ndarray (n_replicates, n_neurons) int64
        Number of exactly tied winners (the vote is split equally among them).
    counts : dict int -> ndarray (n_neurons, n_concepts + 1) int64
        ``counts[t][j, c]``: replicates in which concept ``c`` was one of ``t`` tied
        winners of neuron ``j`` (last column: "none", with ``t = 1``). Integer
        counts keep the vote totals exact for any chunking.
    tracked : ndarray (n_replicates, n_neurons, n_tracked) float64
        Replicate similarity of the tracked concepts (NaN if undefined).
    """

    winner: np.ndarray
    n_tied: np.ndarray
    counts: dict
    tracked: np.ndarray

    @property
    def votes(self) -> np.ndarray:
        """Summed votes ``sum_t counts[t] / t``, (n_neurons, n_concepts + 1)."""
        return total_votes(self.counts)


def total_votes(counts: dict) -> np.ndarray:
    """``sum_t counts[t] / t`` in ascending ``t`` (a fixed order: bitwise reproducible)."""
    keys = sorted(counts)
    out = np.zeros(counts[keys[0]].shape) if keys else np.zeros((0, 0))
    for t in keys:
        out = out + counts[t] / t
    return out


def merge_counts(a: dict, b: dict) -> dict:
    """Sum two tie-count dictionaries."""
    out = {t: v.copy() for t, v in a.items()}
    for t, v in b.items():
        out[t] = out[t] + v if t in out else v.copy()
    return out


def _add_counts(total: dict, j: int, part: dict, shape: tuple[int, int]) -> None:
    for t, v in part.items():
        if t not in total:
            total[t] = np.zeros(shape, np.int64)
        total[t][j] += v


def argmax_votes(sim: np.ndarray, cand: np.ndarray, lower: float,
                 n_concepts: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Winners of replicate similarities ``sim (B, K)`` over candidate concepts ``cand (K,)``.

    NaN never wins; if every value is NaN or at most the metric's minimum the
    outcome is "none" (-1). Exact ties split the vote.

    Returns
    -------
    winner (B,), n_tied (B,), counts {t: (n_concepts + 1,) int64}
    """
    b = sim.shape[0]
    if sim.shape[1] == 0:
        counts = {1: np.zeros(n_concepts + 1, np.int64)}
        counts[1][-1] = b
        return np.full(b, -1, np.int64), np.zeros(b, np.int64), counts
    filled = np.where(np.isnan(sim), -np.inf, sim)
    top = filled.max(axis=1)
    none = ~(top > lower)
    is_max = filled == top[:, None]
    is_max[none] = False
    n_tied = is_max.sum(axis=1)
    # candidates are sorted, so the first maximum is the lowest concept index among ties
    if np.all(np.diff(cand) > 0):
        winner = np.where(none, -1, cand[np.argmax(filled, axis=1)])
    else:
        idx = np.where(is_max, cand[None, :], np.iinfo(np.int64).max)
        winner = np.where(none, -1, idx.min(axis=1))
    single = n_tied == 1
    first = np.bincount(winner[single], minlength=n_concepts + 1).astype(np.int64)
    first[-1] = int(none.sum())
    counts = {1: first}
    for t in np.unique(n_tied[n_tied > 1]):
        rows = n_tied == t
        sub = is_max[rows]
        counts[int(t)] = np.bincount(np.broadcast_to(cand, sub.shape)[sub],
                                     minlength=n_concepts + 1).astype(np.int64)
    return winner.astype(np.int64), np.where(none, 0, n_tied).astype(np.int64), counts


#: count metrics whose formula is 0/0 (NaN) exactly where they are undefined: an empty
#: denominator forces a zero numerator (tp <= active, present, union)
NAN_PROPAGATING = frozenset({"accuracy", "precision", "recall", "iou", "f1"})


def _outputs(b: int, n_neurons: int, n_concepts: int, n_tracked: int):
    """Empty per-replicate outputs of an engine: winner, n_tied, counts, track."""
    return (np.empty((b, n_neurons), np.int64), np.empty((b, n_neurons), np.int64), {},
            np.empty((b, n_neurons, n_tracked)))


def _binary_concepts(p: Prepared):
    c = p.concepts
    if sp.issparse(c):
        z = sp.csr_matrix((c >= 0.5).astype(np.float32))
        z.eliminate_zeros()
        return z
    return (np.asarray(c) >= 0.5).astype(np.float32)


def _concept_weights(z, w: np.ndarray) -> np.ndarray:
    """``W @ Z`` (B, C) in float64 (exact for integer weights)."""
    if sp.issparse(z):
        return np.asarray((z.T @ w.T).T, dtype=np.float64)
    return (w @ z).astype(np.float64)


def _rows(z, idx: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``z[idx][:, cols]`` without copying all columns of the selected rows."""
    if sp.issparse(z):
        return z[idx][:, cols].toarray()
    return np.asarray(z)[np.ix_(idx, cols)]


class CountSupport:
    """Per-neuron support of a count metric: which samples can be active, in which order.

    For a fixed threshold (or 0/1 activations) the support is the active set. For
    ``top_frac`` it is the top of the descending sort, long enough that every
    replicate's cut-off falls inside it; if a replicate needs more, the support
    of that neuron is extended (exactly, never approximately).
    """

    def __init__(self, p: Prepared, neuron: int, margin: float = 6.0) -> None:
        a = np.asarray(p.activations[:, neuron], dtype=np.float64)
        self.n = a.size
        self.top_frac = p.top_frac
        if p.top_frac is None:
            active = a > p.threshold if p.threshold is not None else a == 1
            self.index = np.flatnonzero(active)
            return
        self._a = a
        k = p.top_frac * self.n
        self._sorted_upto = 0
        self._set_length(int(min(self.n, max(1.0, np.ceil(k + margin * np.sqrt(k + 1) + 32)))))

    def _sort_top(self, length: int) -> None:
        """Sort (descending, stable) at least the top ``length`` activations (plus one)."""
        want = min(self.n, length + 1)
        if want <= self._sorted_upto:
            return
        if 4 * want >= self.n:
            self.order = np.argsort(-self._a, kind="stable")
            self._sorted_upto = self.n
        else:
            size = min(self.n, 2 * want)
            top = np.argpartition(-self._a, size - 1)[:size]
            # stable descending order by (value, index), as a full stable sort would give
            top = top[np.lexsort((top, -self._a[top]))]
            self.order = top
            self._sorted_upto = size
        self.sorted = self._a[self.order]

    def _set_length(self, length: int) -> None:
        while True:
            self._sort_top(length)
            s = self.sorted
            # never cut a tie group
            while length < self._sorted_upto and length < self.n and s[length] == s[length - 1]:
                length += 1
            if length < self._sorted_upto or self._sorted_upto == self.n:
                break
            self._sort_top(2 * length)
        self._length = length
        self.index = self.order[:length]
        vals = s[:length]
        is_end = np.ones(length, dtype=bool)
        is_end[:-1] = vals[1:] != vals[:-1]
        pos = np.arange(length)
        self.tie_end = np.minimum.accumulate(np.where(is_end, pos, length - 1)[::-1])[::-1]

    def extend(self) -> bool:
        """Double the support; False when it already covers every sample."""
        if self._length >= self.n:
            return False
        self._set_length(min(self.n, 2 * self._length))
        return True

    def mask(self, ws: np.ndarray, totals: np.ndarray) -> np.ndarray | None:
        """Active mask over the support for each replicate, or None if the support is too short."""
        if self.top_frac is None:
            return None
        k = np.maximum(1.0, np.ceil(self.top_frac * totals - 1e-12 * np.maximum(1.0, totals)))
        # float32 cumulative sums of integer weights are exact below 2**24
        exact32 = ws.dtype == np.float32 and totals.max() < 2**24
        cw = np.cumsum(ws, axis=1, dtype=np.float32 if exact32 else np.float64)
        reached = cw[:, -1] >= k - 1e-9 * np.maximum(1.0, k)
        if not reached.all() and self._length < self.n:
            return None
        first = np.argmax(cw >= (k - 1e-9 * np.maximum(1.0, k))[:, None], axis=1)
        first = np.where(reached, first, self._length - 1)
        end = self.tie_end[first]
        return np.arange(self._length)[None, :] <= end[:, None]


def count_engine(p: Prepared, w: np.ndarray, candidates: list[np.ndarray],
                 tracked: np.ndarray, supports: list[CountSupport]) -> Votes:
    """Replicate explanations of a count metric (fixed threshold or ``top_frac``)."""
    metric: Metric = p.metric
    z = _binary_concepts(p)
    base = p.sample_weight
    if base is not None:
        w = w.astype(np.float64) * base[None, :]  # float64: base weights may be large or real
    totals = w.sum(axis=1, dtype=np.float64)
    cw = _concept_weights(z, w)
    b, n_neurons = w.shape[0], p.n_neurons
    winner, n_tied, counts, track = _outputs(b, n_neurons, p.n_concepts, tracked.shape[1])
    shape = (n_neurons, p.n_concepts + 1)
    from .metrics import _COUNT_SPECS  # defined-ness rules of the built-ins

    is_defined = _COUNT_SPECS[metric.name][1]
    for j in range(n_neurons):
        sup = supports[j]
        cand = candidates[j]
        cols = np.union1d(cand, tracked[j])
        while True:
            ws = w[:, sup.index]
            mask = sup.mask(ws, totals)
            if mask is not None or sup.top_frac is None:
                break
            sup.extend()
        if mask is not None:
            ws = ws * mask
        active = ws.sum(axis=1, dtype=np.float64)
        zs = _rows(z, sup.index, cols).astype(np.float32, copy=False)
        tp = ws @ zs if ws.dtype == np.float64 else ws.astype(np.float32, copy=False) @ zs
        f = active[:, None]
        c = cw[:, cols]
        s = totals[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            val = metric.formula(tp, f, c, s, p.options)
        if metric.name in NAN_PROPAGATING:
            sim = val  # undefined exactly where the formula gives 0/0
        else:
            sim = np.where(is_defined(tp, f, c, s, p.options), val, np.nan)
        if cols.size == cand.size:  # no extra tracked columns: cols is cand
            cand_sim = sim
        else:
            cand_sim = sim[:, np.searchsorted(cols, cand)]
        winner[:, j], n_tied[:, j], part = argmax_votes(cand_sim, cand, metric.lower,
                                                        p.n_concepts)
        _add_counts(counts, j, part, shape)
        track[:, j] = sim[:, np.searchsorted(cols, tracked[j])]
    return Votes(winner, n_tied, counts, track)


def _stable_argsort(a: np.ndarray) -> np.ndarray:
    """``np.argsort(a, kind="stable")``; with numba installed a radix sort (same order)."""
    if numba_available() and a.size > 1 and not np.isnan(a).any():
        from . import _numba_kernels as nk

        return nk.argsort_stable(np.ascontiguousarray(a, dtype=np.float64))
    return np.argsort(a, kind="stable")


class RankSupport:
    """Per-neuron fixed sort order and tie structure for weighted midranks.

    ``order``: ascending stable sort order; ``start[p]`` / ``end[p]``: first / last
    sorted position of the tie group of sorted position ``p`` (int32 when ``n`` allows:
    512 neurons x 50,000 samples keep three such arrays each).
    """

    def __init__(self, p: Prepared, neuron: int) -> None:
        a = np.asarray(p.activations[:, neuron], dtype=np.float64)
        n = a.size
        itype = np.int32 if n < 2**31 else np.int64
        self.order = _stable_argsort(a).astype(itype)
        s = a[self.order]
        new = np.ones(n, dtype=bool)
        new[1:] = s[1:] != s[:-1]
        pos = np.arange(n, dtype=itype)
        self.start = np.maximum.accumulate(np.where(new, pos, 0))
        is_end = np.ones(n, dtype=bool)
        is_end[:-1] = new[1:]
        self.end = np.minimum.accumulate(np.where(is_end, pos, n - 1)[::-1])[::-1].copy()
        #: no two samples share an activation: midranks need no tie gathers
        self.untied = bool(new.all())
        #: sorted positions inside a tie group of two or more samples
        self.tied = np.flatnonzero(self.start != self.end)


#: float64 sums of integers are exact below this bound
_F64_EXACT = float(2**53)
_F32_EXACT = float(2**24)


def _integer_weights(w: np.ndarray) -> bool:
    """Non-negative integer weights (every bootstrap scheme draws them)."""
    return bool(w.size == 0 or (w.min() >= 0 and np.array_equal(w, np.floor(w))))


def _rank_concept_weights(z, wf: np.ndarray, exact_int: bool, totals: np.ndarray) -> np.ndarray:
    """``W @ Z`` (B, C) in float64: a float32 product when every sum is an exact integer
    below ``2**24`` (the same values as the float64 product, about twice as fast)."""
    if exact_int and (totals.size == 0 or totals.max() < _F32_EXACT):
        return _concept_weights(z, wf.astype(np.float32))
    return _concept_weights(z, wf)


def _auroc_votes(num: np.ndarray, pw: np.ndarray, totals: np.ndarray, cols: np.ndarray,
                 cand: np.ndarray, tracked_j: np.ndarray, metric: Metric, n_concepts: int):
    """AUROC from ``num = sum_i w_i R_i z_i`` (B, len(cols)); winners and tracked values."""
    pos_w = pw[:, cols]
    den = pos_w * (totals[:, None] - pos_w)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (num - 0.5 * pos_w * pos_w) / den
    sim = np.where(den > 0, auc, np.nan)
    idx = np.searchsorted(cols, cand)
    winner, n_tied, part = argmax_votes(sim[:, idx], cand, metric.lower, n_concepts)
    return winner, n_tied, part, sim[:, np.searchsorted(cols, tracked_j)]


#: replicates per pass of the numpy AUROC engine (bounds its working arrays)
RANK_CHUNK = 128
#: entries (replicates x positives) gathered per pass by the sparse path of the exact
#: numpy AUROC engine (bounds its working arrays: 8 bytes each)
RANK_GATHER_ENTRIES = 1 << 21
#: replicates per pass of the sparse-product path of the exact numpy AUROC engine (its
#: ``(n, chunk)`` float64 block stays in cache)
RANK_CSR_CHUNK = 16
#: estimated cost per replicate of the exact numpy AUROC engine's paths beyond the sorted
#: cumulative weights, as (per sample, per positive of the columns) in nanoseconds on the
#: reference 2-core machine, single-threaded ("dense": per sample and GEMM column): gather
#: at the positives, scipy sparse product, two float32 GEMMs
RANK_COST = {"gather": (0.2, 5.5), "sparse": (2.3, 0.6), "dense": (4.9, 0.042)}


class _ExactRankSums:
    """Exact AUROC numerators ``sum_i w_i R_i z_ic`` under integer weights (numpy, scipy).

    Per neuron and chunk of replicates: the compact weights in the neuron's sort order,
    their cumulative sums ``cum`` (int32 or int64, with a leading 0) and twice the
    weighted midranks ``2R = cum[start] + cum[end + 1]`` (``start`` / ``end``: the
    sorted position's tie group; ``2 cum - w`` outside ties). Then one of three paths,
    chosen per neuron by estimated cost (:data:`RANK_COST`; all form the same integers,
    so the choice never changes a result):

    * **gather** (few positives): ``w_i 2R_i`` at the distinct sorted positions of the
      positives of the neuron's columns only (found once per neuron from the concepts'
      CSC structure), summed per column with ``np.add.reduceat``.
    * **sparse**: ``Q = w * 2R`` at every sorted position, then a scipy sparse product
      with the columns' 0/1 positives at their sorted positions (``sum_c nnz(c)``
      multiply-adds per replicate; the pure-noise neurons of a sparse concept set).
    * **dense** (dense concept matrices): ``Q`` put back in sample order, split
      ``Q = hi 2**s + lo`` and multiplied by the float32 0/1 concept matrix over sample
      blocks whose column sums stay below ``2**24`` (every float32 partial sum is an
      exact integer, whatever the BLAS order), the blocks added in float64.

    Sums are float64 of integers below ``2**53`` (checked by the caller: ``2 W**2 <
    2**53``), hence exact in any order. No per-neuron copy of the concept matrix in the
    neuron's sort order is made; work arrays are reused per thread.
    """

    def __init__(self, p: Prepared, w: np.ndarray, totals: np.ndarray, z,
                 cache: dict[str, Any] | None) -> None:
        b, n = w.shape
        wmax = float(w.max()) if w.size else 0.0
        tmax = float(totals.max()) if b else 0.0
        self.w = w.astype(_weight_dtype(wmax))
        self.b, self.n = b, n
        self.itype = np.int32 if 2.0 * tmax < 2**31 else np.int64
        qmax = 2.0 * wmax * tmax  # Q_i = w_i (2 R_i) <= max(w) * 2 W
        self.qtype = np.int32 if qmax < 2**31 else np.int64
        (self.indptr, self.indices), _ = _concept_structure(p, cache)
        self.nnz = np.diff(self.indptr)
        self.z = None if sp.issparse(z) else z
        # dense path: Q = hi 2**s + lo with both parts and every block sum below 2**24
        self.shift = max(1, int(np.ceil(np.log2(qmax + 1.0) / 2.0)))
        part_max = max(float(2**self.shift - 1), np.floor(qmax / 2**self.shift))
        self.block = int(min(n, _F32_EXACT // max(part_max, 1.0))) if n else 0
        if self.block < 256 and self.block < n:
            self.z = None  # blocks too short for an efficient GEMM: sparse path only
        self._local = threading.local()  # work arrays, one set per thread

    def _plan(self, cols: np.ndarray) -> str:
        """The cheapest path for a neuron's columns (estimated cost per replicate)."""
        m = float(self.nnz[cols].sum())
        cost = {path: self.n * RANK_COST[path][0] + m * RANK_COST[path][1]
                for path in ("gather", "sparse")}
        if self.z is not None:
            k = cols.size if 2 * cols.size < self.z.shape[1] else self.z.shape[1]
            cost["dense"] = self.n * (RANK_COST["dense"][0] + RANK_COST["dense"][1] * k)
        return min(cost, key=cost.get)

    def _buffer(self, name: str, shape: tuple[int, int], dtype) -> np.ndarray:
        """A work array reused by every neuron of the call (fresh pages are costly)."""
        buffers = getattr(self._local, "buffers", None)
        if buffers is None:
            buffers = self._local.buffers = {}
        size = int(np.prod(shape))
        buf = buffers.get(name)
        if buf is None or buf.size < size or buf.dtype != dtype:
            buf = buffers[name] = np.empty(size, dtype)
        return buf[:size].reshape(shape)

    def cost(self, cols: np.ndarray) -> float:
        """Estimated cost of a neuron's columns (for ordering work across threads)."""
        return float(self.nnz[cols].sum()) + self.n

    def sums(self, sup: RankSupport, cols: np.ndarray) -> np.ndarray:
        """``num (B, len(cols))``: ``sum_i w_i R_i z_ic`` for each replicate and column."""
        num = np.empty((self.b, cols.size))
        if self.b == 0 or cols.size == 0:
            return num
        {"gather": self._gather, "sparse": self._sparse, "dense": self._dense}[
            self._plan(cols)](sup, cols, num)
        return num

    def _chunks(self, sup: RankSupport, sorted_weights: bool = False,
                chunk: int | None = None):
        """Per chunk of replicates: rows ``r0:r1``, their compact weights (in sample order,
        or in sort order with ``sorted_weights``) and ``cum (r1 - r0, n + 1)``: the weight
        of the first ``k`` samples in sort order (``cum[:, 0] = 0``)."""
        bc = min(chunk or RANK_CHUNK, self.b)
        ws = self._buffer("ws", (bc, self.n), self.w.dtype)
        cum = self._buffer("cum", (bc, self.n + 1), self.itype)
        cum[:, 0] = 0
        for r0 in range(0, self.b, bc):
            r1 = min(self.b, r0 + bc)
            wc = self.w[r0:r1]
            np.take(wc, sup.order, axis=1, out=ws[:r1 - r0], mode="clip")
            np.cumsum(ws[:r1 - r0], axis=1, dtype=self.itype, out=cum[:r1 - r0, 1:])
            yield r0, r1, ws[:r1 - r0] if sorted_weights else wc, cum[:r1 - r0]

    def _gather(self, sup: RankSupport, cols: np.ndarray, num: np.ndarray) -> None:
        lo, hi = self.indptr[cols], self.indptr[cols + 1]
        counts = hi - lo
        keep = np.flatnonzero(counts)
        num[:, counts == 0] = 0.0  # no positives: an empty sum
        if keep.size == 0:
            return
        rank = np.empty(self.n, sup.order.dtype)
        rank[sup.order] = np.arange(self.n, dtype=rank.dtype)
        # (column, sorted position) of every positive, ordered by column then position;
        # the distinct positions u ascending (the gathers stream through the rows)
        pos = rank[np.concatenate([self.indices[a:e] for a, e in zip(lo[keep], hi[keep])])]
        col = np.repeat(np.arange(keep.size), counts[keep])
        pos = pos[np.lexsort((pos, col))]
        u, inv = np.unique(pos, return_inverse=True)
        seg = np.zeros(keep.size, np.int64)
        np.cumsum(counts[keep][:-1], out=seg[1:])
        first = sup.start[u]  # 2R = cum[start] + cum[end + 1]
        last = sup.end[u] + 1
        overlap = u.size < pos.size  # a sample positive for two columns
        bc = max(1, min(RANK_CHUNK, self.b, RANK_GATHER_ENTRIES // pos.size))
        for r0, r1, ws, cum in self._chunks(sup, sorted_weights=True, chunk=bc):
            m = r1 - r0
            t = np.take(cum, first, axis=1, out=self._buffer("g_t", (m, u.size), self.itype),
                        mode="clip")
            t += np.take(cum, last, axis=1, out=self._buffer("g_t2", (m, u.size), self.itype),
                         mode="clip")
            wu = np.take(ws, u, axis=1, out=self._buffer("g_w", (m, u.size), ws.dtype),
                         mode="clip")
            q = np.multiply(wu, t, out=self._buffer("g_q", (m, u.size), np.float64),
                            dtype=np.float64)  # w 2R at the distinct positions
            if overlap:
                q = np.take(q, inv, axis=1, out=self._buffer("g_p", (m, pos.size), np.float64),
                            mode="clip")
            # exact: integers below 2**53, whatever the order of the additions
            num[r0:r1, keep] = np.add.reduceat(q, seg, axis=1) * 0.5

    def _sparse(self, sup: RankSupport, cols: np.ndarray, num: np.ndarray) -> None:
        lo, hi = self.indptr[cols], self.indptr[cols + 1]
        rank = np.empty(self.n, sup.order.dtype)
        rank[sup.order] = np.arange(self.n, dtype=rank.dtype)
        # the columns' positives at their sorted positions, a (K, n) 0/1 CSR matrix
        ptr = np.zeros(cols.size + 1, np.int64)
        np.cumsum(hi - lo, out=ptr[1:])
        pos = rank[np.concatenate([self.indices[a:e] for a, e in zip(lo, hi)])]
        zs = sp.csr_matrix((np.ones(pos.size), pos, ptr), shape=(cols.size, self.n))
        bc = min(RANK_CSR_CHUNK, self.b)
        t = self._buffer("s_tr", (bc, self.n), self.itype)
        q = self._buffer("s_q", (bc, self.n), np.float64)
        tied = sup.tied
        t_first, t_last = sup.start[tied], sup.end[tied] + 1
        for r0, r1, ws, cum in self._chunks(sup, sorted_weights=True, chunk=bc):
            m = r1 - r0
            tm = np.add(cum[:, :-1], cum[:, 1:], out=t[:m])  # 2R outside tie groups
            if tied.size:
                tm[:, tied] = np.take(cum, t_first, axis=1) + np.take(cum, t_last, axis=1)
            qq = np.multiply(ws, tm, out=q[:m], dtype=np.float64)  # w 2R, sort order
            qtm = self._buffer("s_qt", (self.n, m), np.float64)
            qtm[:] = qq.T
            # exact: integers below 2**53, whatever the order of the additions
            num[r0:r1] = np.asarray(zs @ qtm).T * 0.5

    def _dense(self, sup: RankSupport, cols: np.ndarray, num: np.ndarray) -> None:
        z = self.z
        full = 2 * cols.size >= z.shape[1]
        zk = z if full else np.take(z, cols, axis=1)
        bc, n = min(RANK_CHUNK, self.b), self.n
        rank = np.empty(n, np.intp)
        rank[sup.order] = np.arange(n)
        tr = self._buffer("tr", (bc, n), self.itype)
        tro = self._buffer("tro", (bc, n), self.itype)
        same = self.qtype == self.itype
        q = tro if same else self._buffer("q", (bc, n), self.qtype)
        qi = tr if same else self._buffer("qi", (bc, n), self.qtype)
        hl = self._buffer("hl", (2 * bc, n), np.float32)
        acc = np.empty((2 * bc, zk.shape[1]))  # the hi and the lo sums, float64
        prod = np.empty((2 * bc, zk.shape[1]), np.float32)
        tied = sup.tied
        t_first, t_last = sup.start[tied], sup.end[tied] + 1
        scale = float(2**self.shift)
        mask = (1 << self.shift) - 1
        for r0, r1, wc, cum in self._chunks(sup):
            m = r1 - r0
            t = tr[:m]
            np.add(cum[:, :-1], cum[:, 1:], out=t)  # 2R outside tie groups: 2 cum - w
            if tied.size:
                t[:, tied] = np.take(cum, t_first, axis=1) + np.take(cum, t_last, axis=1)
            to = np.take(t, rank, axis=1, out=tro[:m], mode="clip")  # back to sample order
            qq = np.multiply(to, wc, out=q[:m])  # Q = w * 2R
            h = hl[:2 * m]
            np.copyto(h[:m], np.right_shift(qq, self.shift, out=qi[:m]), casting="unsafe")
            np.copyto(h[m:], np.bitwise_and(qq, mask, out=qi[:m]), casting="unsafe")
            a = acc[:2 * m]
            a[:] = 0.0
            pr = prod[:2 * m]
            for s0 in range(0, n, self.block):
                s1 = min(n, s0 + self.block)
                np.matmul(h[:, s0:s1], zk[s0:s1], out=pr)  # exact: sums below 2**24
                a += pr  # exact: integers below 2**53
            res = a[:m] * scale + a[m:]
            if full and cols.size < z.shape[1]:
                res = res[:, cols]
            num[r0:r1] = res * 0.5


def _cpu_threads() -> int:
    """CPUs this process may run on (the numpy AUROC engine's thread count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _map_threads(fn, items, threads: int) -> list:
    """``[fn(x) for x in items]`` on ``threads`` Python threads (numpy and scipy release
    the GIL in the heavy steps); on Ctrl-C the items not started yet are dropped."""
    items = list(items)
    threads = max(1, min(threads, len(items)))
    if threads == 1:
        return [fn(x) for x in items]
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(threads)
    try:
        return list(pool.map(fn, items))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _float_rank_sums(wsmall: np.ndarray, z, sup: RankSupport, cols: np.ndarray) -> np.ndarray:
    """``num (B, len(cols))``: ``sum_i w_i R_i z_ic`` in float64 for real weights."""
    b = wsmall.shape[0]
    zs = _rows(z, sup.order, cols).astype(np.float64)
    num = np.empty((b, cols.size))
    for r0 in range(0, b, RANK_CHUNK):
        ws = wsmall[r0:r0 + RANK_CHUNK][:, sup.order]
        cum = np.cumsum(ws, axis=1)
        before = cum - ws
        r_sorted = 0.5 * (before[:, sup.start] + cum[:, sup.end])
        num[r0:r0 + RANK_CHUNK] = (r_sorted * ws) @ zs
    return num


def rank_engine(p: Prepared, w: np.ndarray, candidates: list[np.ndarray],
                tracked: np.ndarray, supports: list[RankSupport]) -> Votes:
    """Replicate explanations of AUROC from weighted midranks (numpy).

    With integer weights (every bootstrap scheme) and ``2 W**2 < 2**53``, twice the
    midranks are integers and the numerators ``num = sum_i w_i R_i z_ic`` are formed
    exactly by :class:`_ExactRankSums` (integer cumulative weights; per neuron either
    sums over the positives of its columns or an exactly split float32 product with
    the concept matrix). Otherwise float64 ``(W * R) @ Z`` on the neuron's concept
    rows. Replicates are processed in chunks of ``RANK_CHUNK`` per neuron.
    """
    metric = p.metric
    z = _binary_concepts(p)
    base = p.sample_weight
    b, n_neurons = w.shape[0], p.n_neurons
    wf = w if base is None else w.astype(np.float64) * base[None, :]
    totals = wf.sum(axis=1, dtype=np.float64)
    exact_int = (base is None and _integer_weights(w)
                 and (b == 0 or 2.0 * float(totals.max()) ** 2 < _F64_EXACT))
    pw = _rank_concept_weights(z, wf, exact_int, totals)
    if exact_int:
        exact = _ExactRankSums(p, w, totals, z, getattr(supports, "cache", None))
    else:
        wsmall = np.asarray(wf, dtype=np.float64)
    winner, n_tied, counts, track = _outputs(b, n_neurons, p.n_concepts, tracked.shape[1])
    shape = (n_neurons, p.n_concepts + 1)
    cols_of = [np.union1d(candidates[j], tracked[j]) for j in range(n_neurons)]

    def one(j: int) -> dict:
        num = (exact.sums(supports[j], cols_of[j]) if exact_int
               else _float_rank_sums(wsmall, z, supports[j], cols_of[j]))
        winner[:, j], n_tied[:, j], part, track[:, j] = _auroc_votes(
            num, pw, totals, cols_of[j], candidates[j], tracked[j], metric, p.n_concepts)
        return part

    if exact_int:  # integer sums: any thread count gives the same results
        order = sorted(range(n_neurons), key=lambda j: -exact.cost(cols_of[j]))
        parts = dict(zip(order, _map_threads(one, order, _cpu_threads())))
    else:
        parts = {j: one(j) for j in range(n_neurons)}
    for j in range(n_neurons):
        _add_counts(counts, j, parts[j], shape)
    return Votes(winner, n_tied, counts, track)


def numba_available() -> bool:
    """Whether the optional numba kernels can be used (numba importable)."""
    import importlib.util

    return importlib.util.find_spec("numba") is not None


def _weight_dtype(wmax: float):
    for dt in (np.uint8, np.uint16, np.uint32):
        if wmax <= np.iinfo(dt).max:
            return dt
    return np.float64


class RankSupports(list):
    """The per-neuron :class:`RankSupport` list, with a cache shared by its batches."""

    def __init__(self, items) -> None:
        super().__init__(items)
        self.cache: dict[str, Any] = {}

    @classmethod
    def build(cls, p: Prepared) -> RankSupports:
        """Supports of every neuron; with numba, sorted on its threads (GIL released)."""
        if not numba_available():
            return cls(RankSupport(p, j) for j in range(p.n_neurons))
        return cls(_run_neurons(lambda j: RankSupport(p, j), range(p.n_neurons)))


def _concept_structure(p: Prepared, cache: dict[str, Any] | None):
    """Binarized concepts as CSC and CSR ``(indptr, indices)`` pairs, cached per support list."""
    if cache is not None and "structure" in cache:
        return cache["structure"]
    c = p.concepts
    zb = (c >= 0.5) if sp.issparse(c) else (np.asarray(c) >= 0.5)
    out = []
    for fmt in (sp.csc_matrix, sp.csr_matrix):
        m = fmt(zb)
        m.eliminate_zeros()
        m.sort_indices()
        out.append((m.indptr.astype(np.int64), m.indices.astype(np.int32)))
    if cache is not None:
        cache["structure"] = tuple(out)
    return tuple(out)


def _packed_weights(nk, w: np.ndarray) -> np.ndarray:
    """Weights ``(B, n)`` packed as ``(n, B_pad)`` small unsigned integers (``B_pad``: a
    multiple of the kernels' lane chunk ``RB``, padding lanes 0)."""
    b = w.shape[0]
    b_pad = -(-b // nk.RB) * nk.RB
    wt = np.zeros((w.shape[1], b_pad), _weight_dtype(float(w.max()) if w.size else 0.0))
    wt[:, :b] = w.T  # exact: non-negative integers that fit the type
    return wt


def _run_neurons(fn, order) -> list:
    """``[fn(j) for j in order]``, on as many Python threads as numba uses (the kernels
    release the GIL); each neuron's work is independent, so results do not depend on
    the thread count. ``order``: most expensive first, for balance."""
    import numba

    return _map_threads(fn, order, int(numba.get_num_threads()))


def _tie_counts(winner_j: np.ndarray, n_tied_j: np.ndarray, ev_t: np.ndarray, ev_c: np.ndarray,
                ev_n: np.ndarray, n_concepts: int) -> dict:
    """Vote counts of one neuron from a kernel's winners and tie events (as ``argmax_votes``)."""
    first = np.bincount(winner_j[n_tied_j == 1], minlength=n_concepts + 1).astype(np.int64)
    first[-1] = int(np.count_nonzero(winner_j < 0))
    counts = {1: first}
    if ev_n.any():
        t_all = np.concatenate([ev_t[ch, :k] for ch, k in enumerate(ev_n)])
        c_all = np.concatenate([ev_c[ch, :k] for ch, k in enumerate(ev_n)])
        for t in np.unique(t_all):
            counts[int(t)] = np.bincount(c_all[t_all == t], minlength=n_concepts + 1).astype(
                np.int64)
    return counts


def _kernel_columns(cand: np.ndarray, tracked_j: np.ndarray):
    """Sorted columns (candidates and tracked), the candidate flags, the tracked positions."""
    cols = np.union1d(cand, tracked_j).astype(np.int64)
    is_cand = np.zeros(cols.size, np.bool_)
    is_cand[np.searchsorted(cols, cand)] = True
    return cols, is_cand, np.searchsorted(cols, tracked_j).astype(np.int64)


def _event_buffers(nk, b: int, n_cand: int):
    """Per-chunk tie-event buffers large enough for every candidate of every lane."""
    n_chunks = -(-b // nk.RB)
    cap = nk.RB * max(1, n_cand)
    return (np.empty((n_chunks, cap), np.int32), np.empty((n_chunks, cap), np.int32),
            np.zeros(n_chunks, np.int64))


def rank_engine_numba(p: Prepared, w: np.ndarray, candidates: list[np.ndarray],
                      tracked: np.ndarray, supports: list[RankSupport]) -> Votes:
    """:func:`rank_engine` with rank sums, AUROC and argmax in numba kernels.

    Identical results: with integer weights every sum is an integer below ``2**53``
    (checked: ``2 W**2 < 2**53``), so its value does not depend on the order of
    additions, and the AUROC ratio is the same float64 operations. Otherwise (real or
    base sample weights) it runs :func:`rank_engine`.
    """
    b = w.shape[0]
    totals = w.sum(axis=1, dtype=np.float64)
    if (p.sample_weight is not None or b == 0 or not _integer_weights(w)
            or 2.0 * float(totals.max()) ** 2 >= _F64_EXACT or float(w.max()) >= 2**32):
        return rank_engine(p, w, candidates, tracked, supports)
    from . import _numba_kernels as nk

    metric = p.metric
    (indptr, indices), (rowptr, concept_of) = _concept_structure(
        p, getattr(supports, "cache", None))
    n, n_neurons = p.n_samples, p.n_neurons
    winner, n_tied, counts, track = _outputs(b, n_neurons, p.n_concepts, tracked.shape[1])
    shape = (n_neurons, p.n_concepts + 1)
    wt = _packed_weights(nk, w)
    pw = np.empty((wt.shape[1], p.n_concepts))
    nk.concept_sums(wt, rowptr, concept_of, p.n_concepts, pw)
    # Q_i = w_i (2 R_i) <= max(w) * 2 W: int32 lanes when that fits
    qmax = 2.0 * float(w.max()) * float(totals.max())
    qproto = np.empty(0, np.int32 if qmax < 2**31 else np.int64)
    lower = float(metric.lower)
    cols_of = [_kernel_columns(candidates[j], tracked[j]) for j in range(n_neurons)]
    nnz = np.diff(indptr)
    local = threading.local()  # one (n, B_pad) buffer of sorted weights per thread

    def one(j: int) -> dict:
        sup = supports[j]
        cols, is_cand, trk = cols_of[j]
        ev_t, ev_c, ev_n = _event_buffers(nk, b, candidates[j].size)
        if cols.size * wt.shape[1] * 8 <= nk.WIDE_BYTES:  # few columns: all lanes at once
            lookup = np.full(p.n_concepts, -1, np.int32)
            lookup[cols] = np.arange(cols.size, dtype=np.int32)
            nk.rank_votes_wide(wt, b, sup.order, sup.end, rowptr, concept_of, lookup, pw,
                               totals, cols, is_cand, trk, lower, j, winner, n_tied, track,
                               ev_t, ev_c, ev_n)
            return _tie_counts(winner[:, j], n_tied[:, j], ev_t, ev_c, ev_n, p.n_concepts)
        rank = np.empty(n, sup.order.dtype)
        rank[sup.order] = np.arange(n, dtype=rank.dtype)
        bptr, ranks = nk.bucket_positives(indptr, indices, cols, rank, n, nk.BLOCK)
        need = np.zeros(n, np.bool_)
        need[ranks] = True
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = np.empty_like(wt)
        nk.gather_rows(wt, sup.order, ws)
        nk.rank_votes(ws, b, sup.end, need, bptr, ranks, nk.BLOCK, qproto, pw, totals, cols,
                      is_cand, trk, lower, j, winner, n_tied, track, ev_t, ev_c, ev_n)
        return _tie_counts(winner[:, j], n_tied[:, j], ev_t, ev_c, ev_n, p.n_concepts)

    cost = [int(nnz[c].sum()) + n // 4 for c, _, _ in cols_of]
    order = sorted(range(n_neurons), key=lambda j: -cost[j])
    for j, part in zip(order, _run_neurons(one, order)):
        _add_counts(counts, j, part, shape)
    return Votes(winner, n_tied, counts, track)


def _count_code(p: Prepared) -> int | None:
    """Formula code of the numba count kernel, or None when it has no such formula."""
    m = p.metric
    if not m.builtin or m.statistics != "count":
        return None
    if m.name in ("iou", "f1", "accuracy"):
        return {"iou": 0, "f1": 3, "accuracy": 4}[m.name]
    if m.name in ("precision", "recall"):
        # precision = fc / f, recall = fc / c with the concept as truth; swapped otherwise
        by_f = (m.name == "precision") == (p.options.truth == "concept")
        return 1 if by_f else 2
    return None


class CountSupports(list):
    """The per-neuron :class:`CountSupport` list, with a cache shared by its batches."""

    def __init__(self, items) -> None:
        super().__init__(items)
        self.cache: dict[str, Any] = {}


def count_engine_numba(p: Prepared, w: np.ndarray, candidates: list[np.ndarray],
                       tracked: np.ndarray, supports: list[CountSupport]) -> Votes:
    """:func:`count_engine` with the cut-offs, counts, formula and argmax in a numba kernel.

    Identical results: with integer weights whose replicate totals are below ``2**24``
    the numpy engine's float32 products and cumulative sums are exact integers, and
    the kernel forms the same integers and the same float64 formula. Other metrics
    (balanced accuracy, WPMI, user metrics), real or base sample weights and larger
    totals run :func:`count_engine`.
    """
    b = w.shape[0]
    code = _count_code(p)
    totals = w.sum(axis=1, dtype=np.float64)
    if (code is None or p.sample_weight is not None or b == 0 or not _integer_weights(w)
            or float(totals.max()) >= _F32_EXACT):
        return count_engine(p, w, candidates, tracked, supports)
    from . import _numba_kernels as nk

    _, (rowptr, concept_of) = _concept_structure(p, getattr(supports, "cache", None))
    n_neurons = p.n_neurons
    winner, n_tied, counts, track = _outputs(b, n_neurons, p.n_concepts, tracked.shape[1])
    shape = (n_neurons, p.n_concepts + 1)
    wt = _packed_weights(nk, w)
    cw = np.empty((wt.shape[1], p.n_concepts))
    nk.concept_sums(wt, rowptr, concept_of, p.n_concepts, cw)
    top = p.top_frac is not None
    if top:  # the cut-off rule of CountSupport.mask
        k = np.maximum(1.0, np.ceil(p.top_frac * totals - 1e-12 * np.maximum(1.0, totals)))
        thr = k - 1e-9 * np.maximum(1.0, k)
    else:
        thr = np.zeros(b)
    no_ties = np.zeros(0, np.int64)
    lower = float(p.metric.lower)
    cols_of = [_kernel_columns(candidates[j], tracked[j]) for j in range(n_neurons)]

    def one(j: int) -> dict:
        sup = supports[j]
        cols, is_cand, trk = cols_of[j]
        ev_t, ev_c, ev_n = _event_buffers(nk, b, candidates[j].size)
        while True:
            ev_n[:] = 0
            index = sup.index.astype(np.int64, copy=False)
            short = nk.count_votes(wt, b, index, sup.tie_end if top else no_ties,
                                   index.size >= sup.n, top, thr, totals, cw, rowptr,
                                   concept_of, cols, is_cand, trk, code, lower, j, winner,
                                   n_tied, track, ev_t, ev_c, ev_n)
            if not short or not sup.extend():
                break
        return _tie_counts(winner[:, j], n_tied[:, j], ev_t, ev_c, ev_n, p.n_concepts)

    cost = [(cols_of[j][0].size + 16) * len(supports[j].index) for j in range(n_neurons)]
    order = sorted(range(n_neurons), key=lambda j: -cost[j])
    for j, part in zip(order, _run_neurons(one, order)):
        _add_counts(counts, j, part, shape)
    return Votes(winner, n_tied, counts, track)


def generic_engine(p: Prepared, w: np.ndarray, candidates: list[np.ndarray],
                   tracked: np.ndarray, supports: Any = None) -> Votes:
    """Replicate explanations through the library's own statistics, one replicate at a time."""
    metric = p.metric
    b, n_neurons = w.shape[0], p.n_neurons
    winner, n_tied, counts, track = _outputs(b, n_neurons, p.n_concepts, tracked.shape[1])
    shape = (n_neurons, p.n_concepts + 1)
    rows = np.arange(n_neurons)[:, None]
    for i in range(b):
        wi = w[i].astype(np.float64)
        if p.sample_weight is not None:
            wi = wi * p.sample_weight
        sim = metric.finalize(compute_stats(p, sample_weight=wi), p.options)
        for j in range(n_neurons):
            cand = candidates[j]
            wn, nt, part = argmax_votes(sim[j, cand][None, :], cand, metric.lower, p.n_concepts)
            winner[i, j], n_tied[i, j] = wn[0], nt[0]
            _add_counts(counts, j, part, shape)
        track[i] = sim[rows, tracked]
    return Votes(winner, n_tied, counts, track)
