"""Weighted sufficient statistics for all neuron x concept pairs at once.

Every built-in metric is a *finalize* step over one of these statistics, so the
full-data score, bootstrap replicates (weights), chunked and distributed runs all
share one kernel. Count and moment statistics are sums over samples and merge by
addition; rank statistics (AUROC, average precision) need all samples of a neuron
at once and merge across neuron blocks only.

Exactness: 0/1 counts are accumulated with float32 GEMMs over fixed sample blocks
whose partial sums stay below 2**24 (exact), then summed in float64 in block order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

import numpy as np
import scipy.sparse as sp

from .binarize import binarize, top_frac_target, top_weight_cutoffs

__all__ = [
    "APStats",
    "CountStats",
    "Design",
    "MomentStats",
    "RankStats",
    "ap_stats",
    "count_stats",
    "design_info",
    "moment_stats",
    "rank_stats",
    "weighted_midranks",
]

SAMPLE_BLOCK = 1 << 15
#: below this share of active entries, counts use a sparse product
SPARSE_ACTIVE = 0.02
NEURON_BLOCK = 512
_F32_EXACT = float(1 << 24)
_F64_EXACT = float(1 << 53)


@dataclass(frozen=True)
class Design:
    """How the probing set was sampled; bounds count independent units from this.

    Attributes
    ----------
    total : float
        Total sample weight ``W`` (the number of samples when unweighted).
    n_units : float
        Number of independent units: ``W`` when ungrouped, else the number of
        groups with positive weight.
    grouped : bool
    group_size : float
        Largest total weight of one group (1 when ungrouped).
    equal_groups : bool
        Whether every group has the same total weight.
    top_frac : float or None
        Data-dependent binarization level ``q``, if used.
    active_target : float or None
        Target active weight ``k = ceil(q W)`` of the top-fraction rule.
    """

    total: float
    n_units: float
    grouped: bool = False
    group_size: float = 1.0
    equal_groups: bool = True
    top_frac: float | None = None
    active_target: float | None = None
    threshold_delta: float | None = None
    active_lo: float | None = None
    active_hi: float | None = None


@dataclass(frozen=True)
class CountStats:
    """Weighted 2x2 counts of a binarized neuron against a binarized concept.

    ``tp[j, c]`` is the weight of samples where neuron ``j`` is active and concept
    ``c`` present; ``active[j]`` and ``present[c]`` are the margins and
    ``design.total`` the total weight. ``fp = active - tp``, ``fn = present - tp``,
    ``tn = total - active - present + tp``.

    With ``top_frac`` and a ``threshold_delta``, ``tp_lo``/``tp_hi`` are the counts
    on the top ``design.active_lo`` / ``design.active_hi`` weight: with probability
    >= 1 - threshold_delta the population top-``q`` set is sandwiched between them.
    """

    tp: np.ndarray
    active: np.ndarray
    present: np.ndarray
    design: Design
    cutoffs: np.ndarray | None = field(default=None, repr=False)
    per_neuron_concept: bool = False
    tp_lo: np.ndarray | None = field(default=None, repr=False)
    tp_hi: np.ndarray | None = field(default=None, repr=False)

    @property
    def total(self) -> float:
        return self.design.total

    def merge(self, other: CountStats) -> CountStats:
        """Sum of two statistics over disjoint sample chunks (same binarization)."""
        d = replace(self.design, total=self.total + other.total,
                    n_units=self.design.n_units + other.design.n_units)
        return CountStats(self.tp + other.tp, self.active + other.active,
                          self.present + other.present, d, self.cutoffs)

    def pair_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(tp, f, c)`` broadcastable to the pair grid."""
        c = self.present[:, None] if self.per_neuron_concept else self.present[None, :]
        return self.tp, self.active[:, None], c

    def diagonal(self, concept: np.ndarray) -> CountStats:
        """Statistics of one concept per neuron (``concept[j]`` for neuron ``j``), shape (N, 1)."""
        rows = np.arange(self.tp.shape[0])

        def pick(x):
            return None if x is None else x[rows, concept][:, None]

        return CountStats(pick(self.tp), self.active, self.present[concept], self.design,
                          self.cutoffs, per_neuron_concept=True, tp_lo=pick(self.tp_lo),
                          tp_hi=pick(self.tp_hi))


@dataclass(frozen=True)
class RankStats:
    """Centred weighted rank sums for AUROC.

    ``num[j, c] = sum_i w_i (R_ij - W/2) z_ic`` with weighted midranks ``R``;
    ``AUROC = 0.5 + num / (P (W - P))`` with ``P = present[c]``.
    """

    num: np.ndarray
    present: np.ndarray
    design: Design
    per_neuron_concept: bool = False

    @property
    def total(self) -> float:
        return self.design.total

    def concept_row(self) -> np.ndarray:
        """Concept weights broadcastable to the pair grid."""
        return self.present[:, None] if self.per_neuron_concept else self.present[None, :]

    def diagonal(self, concept: np.ndarray) -> RankStats:
        """Statistics of one concept per neuron, shape (N, 1)."""
        rows = np.arange(self.num.shape[0])
        return RankStats(self.num[rows, concept][:, None], self.present[concept], self.design,
                         per_neuron_concept=True)


@dataclass(frozen=True)
class APStats:
    """Average precision per pair (not mergeable over samples) and positive weights."""

    ap: np.ndarray
    present: np.ndarray
    design: Design

    @property
    def total(self) -> float:
        return self.design.total


@dataclass(frozen=True)
class MomentStats:
    """Weighted moments of shifted activations ``x = a - shift`` and soft concepts ``c``.

    ``sw = sum w``, ``sx = sum w x``, ``sxx = sum w x^2`` (per neuron),
    ``sc = sum w c``, ``scc = sum w c^2`` (per concept), ``sxc = sum w x c`` (per pair).
    """

    sxc: np.ndarray
    sx: np.ndarray
    sxx: np.ndarray
    sc: np.ndarray
    scc: np.ndarray
    shift: np.ndarray
    design: Design
    #: per neuron / concept: (min, max) over samples with positive weight, for exact
    #: detection of constant inputs
    x_range: np.ndarray | None = field(default=None, repr=False)
    c_range: np.ndarray | None = field(default=None, repr=False)

    @property
    def constant_neuron(self) -> np.ndarray:
        r = self.x_range
        return np.zeros(self.sx.shape, bool) if r is None else r[0] == r[1]

    @property
    def constant_concept(self) -> np.ndarray:
        r = self.c_range
        return np.zeros(self.sc.shape, bool) if r is None else r[0] == r[1]

    @property
    def total(self) -> float:
        return self.design.total

    def merge(self, other: MomentStats) -> MomentStats:
        if not np.array_equal(self.shift, other.shift):
            raise ValueError("cannot merge moment statistics with different shifts")
        d = replace(self.design, total=self.total + other.total,
                    n_units=self.design.n_units + other.design.n_units)
        def rng(a, b):
            if a is None or b is None:
                return None
            return np.stack([np.minimum(a[0], b[0]), np.maximum(a[1], b[1])])

        return MomentStats(self.sxc + other.sxc, self.sx + other.sx, self.sxx + other.sxx,
                           self.sc + other.sc, self.scc + other.scc, self.shift, d,
                           rng(self.x_range, other.x_range), rng(self.c_range, other.c_range))


# ---------------------------------------------------------------------------
# helpers


def design_info(n_samples: int, sample_weight: np.ndarray | None,
                groups: tuple[np.ndarray, int] | None) -> Design:
    """Total weight and independent-unit count of a probing set."""
    total = float(n_samples) if sample_weight is None else float(sample_weight.sum())
    if groups is None:
        return Design(total=total, n_units=total)
    codes, n_groups = groups
    gw = np.bincount(codes, weights=sample_weight, minlength=n_groups)
    pos = gw[gw > 0]
    return Design(total=total, n_units=float(pos.size), grouped=True,
                  group_size=float(pos.max()),
                  equal_groups=bool(np.all(pos == pos[0])))


def _binary_concepts(concepts, dtype=np.float32):
    """Concepts binarized at 0.5 (present where value >= 0.5)."""
    if sp.issparse(concepts):
        z = (concepts >= 0.5).astype(dtype)
        z = sp.csr_matrix(z)
        z.eliminate_zeros()
        return z
    return (np.asarray(concepts) >= 0.5).astype(dtype)


def _column_sums(z, w) -> np.ndarray:
    if w is None:
        return np.asarray(z.sum(axis=0), dtype=np.float64).reshape(-1)
    if sp.issparse(z):
        return np.asarray(z.T @ w, dtype=np.float64).reshape(-1)
    return np.asarray(w @ z.astype(np.float64, copy=False), dtype=np.float64).reshape(-1)


def _xtz(x: np.ndarray, z) -> np.ndarray:
    """x.T @ z for dense x (n, k) and dense or sparse z (n, c) -> (k, c)."""
    if sp.issparse(z):
        return np.asarray((z.T @ x).T)
    return x.T @ z


def _distinct_columns(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the distinct columns of ``c`` and, per column, its distinct column."""
    import hashlib

    ct = np.ascontiguousarray(c.T)
    first: dict[bytes, int] = {}
    unique: list[int] = []
    inverse = np.empty(ct.shape[0], np.int64)
    for i, row in enumerate(ct):
        key = hashlib.blake2b(row.tobytes(), digest_size=16).digest()
        if key not in first:
            first[key] = len(unique)
            unique.append(i)
        inverse[i] = first[key]
    return np.asarray(unique, np.int64), inverse


def _integer_valued(w: np.ndarray | None) -> bool:
    """Integer weights small enough that float32 products and partial sums stay exact."""
    return w is None or bool(np.all(w == np.round(w)) and (w.size == 0 or w.max() < _F32_EXACT))


def _sample_blocks(n: int, w: np.ndarray | None, exact_f32: bool) -> list[tuple[int, int]]:
    size = SAMPLE_BLOCK
    if exact_f32 and w is not None and w.size:
        wmax = float(w.max())
        if wmax > 0:
            size = int(max(1, min(SAMPLE_BLOCK, _F32_EXACT // wmax)))
    return [(s, min(n, s + size)) for s in range(0, n, size)]


# ---------------------------------------------------------------------------
# kernels


def count_stats(activations: np.ndarray, concepts, *, sample_weight: np.ndarray | None,
                design: Design, threshold: float | None = None,
                top_frac: float | None = None,
                threshold_delta: float | None = None) -> CountStats:
    """All-pairs weighted counts of a binarized neuron and a concept binarized at 0.5.

    Parameters
    ----------
    activations : ndarray (n_samples, n_neurons)
    concepts : ndarray or sparse (n_samples, n_concepts), values in [0, 1]
    sample_weight : ndarray (n_samples,) or None
    design : Design
    threshold, top_frac : binarization (see :mod:`neurocert.binarize`)
    threshold_delta : float, optional
        With ``top_frac``: also count on the sandwich sets of the threshold event
        (failure probability ``threshold_delta``), for the bounds.
    """
    from .bounds import threshold_band  # local: bounds imports this module

    n, n_neurons = activations.shape
    w = sample_weight
    cut_sets: list[np.ndarray | None] = [None]
    if top_frac is not None:
        k = top_frac_target(top_frac, design.total)
        design = replace(design, top_frac=top_frac, active_target=k)
        ks = [k]
        if threshold_delta is not None:
            k_lo, k_hi = threshold_band(design, threshold_delta)
            design = replace(design, threshold_delta=threshold_delta, active_lo=k_lo,
                             active_hi=k_hi)
            ks += [k_lo, k_hi]
        cut_sets = top_weight_cutoffs(activations, ks, w)
    exact_f32 = _integer_valued(w)
    dtype = np.float32 if exact_f32 else np.float64
    z = _binary_concepts(concepts, dtype)
    present = _column_sums(z, w)
    tps = [np.zeros((n_neurons, present.size), dtype=np.float64) for _ in cut_sets]
    active = np.zeros(n_neurons, dtype=np.float64)
    blocks = _sample_blocks(n, w, exact_f32)
    for j0 in range(0, n_neurons, NEURON_BLOCK):
        j1 = min(n_neurons, j0 + NEURON_BLOCK)
        for i, cutoffs in enumerate(cut_sets):
            cut = None if cutoffs is None else cutoffs[j0:j1]
            for s0, s1 in blocks:
                m = binarize(np.asarray(activations[s0:s1, j0:j1]), threshold=threshold,
                             cutoffs=cut).astype(dtype, copy=False)
                if w is not None:
                    m = m * w[s0:s1, None].astype(dtype)
                if i == 0:
                    active[j0:j1] += m.sum(axis=0, dtype=np.float64)
                if np.count_nonzero(m) < SPARSE_ACTIVE * m.size:
                    # few active samples (e.g. top 0.5%): a sparse product is exact and fast
                    # exact: dtype is float32 only when partial sums stay below 2**24
                    ms = sp.csc_matrix(m)
                    prod = ms.T @ z[s0:s1]
                    tps[i][j0:j1] += prod.toarray() if sp.issparse(prod) else np.asarray(prod)
                else:
                    tps[i][j0:j1] += _xtz(m, z[s0:s1])
    tp_lo, tp_hi = (tps[1], tps[2]) if len(tps) == 3 else (None, None)
    return CountStats(tp=tps[0], active=active, present=present, design=design,
                      cutoffs=cut_sets[0], tp_lo=tp_lo, tp_hi=tp_hi)


def weighted_midranks(a: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """Weighted midranks per column: ``R_i = sum_{a_j < a_i} w_j + 0.5 sum_{a_j = a_i} w_j``.

    Parameters
    ----------
    a : ndarray (n_samples, k)
    w : ndarray (n_samples,) or None (all ones)

    Returns
    -------
    ndarray (n_samples, k), float64
    """
    at = np.ascontiguousarray(np.asarray(a).T)  # (k, n): rows are contiguous
    k, n = at.shape
    order = np.argsort(at, axis=1)
    rows = np.arange(k)[:, None]
    s = at[rows, order]
    ws = np.ones((k, n)) if w is None else w[order]
    cw = np.cumsum(ws, axis=1)
    before = cw - ws
    cols = np.arange(n)
    new = np.ones((k, n), dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    start = np.maximum.accumulate(np.where(new, cols, 0), axis=1)
    is_end = np.ones((k, n), dtype=bool)
    is_end[:, :-1] = new[:, 1:]
    end = np.minimum.accumulate(np.where(is_end, cols, n - 1)[:, ::-1], axis=1)[:, ::-1]
    r_sorted = 0.5 * (before[rows, start] + cw[rows, end])
    r = np.empty((k, n))
    r[rows, order] = r_sorted
    return r.T


RANK_NEURON_BLOCK = 64


def _exact_split_product(q: np.ndarray, z, qmax: float) -> np.ndarray:
    """``q.T @ z`` exactly, for non-negative integer ``q`` (n, k) and 0/1 ``z`` (n, c).

    Splits ``q = hi * 2**s + lo`` and runs two float32 products over sample blocks whose
    column sums stay below 2**24 (exact), summing the blocks in float64 in block order:
    about twice as fast as one float64 product and bitwise reproducible.
    """
    n = q.shape[0]
    limit = float(1 << 24)
    block = int(max(1, min(n, limit / np.sqrt(max(qmax, 1.0)))))
    shift = float(2 ** int(np.ceil(np.log2(max(qmax, 1.0) / 2 ** 0) / 2)))
    while block * shift >= limit or block * (qmax / shift) >= limit:
        block = max(1, block // 2)
    out = np.zeros((q.shape[1], z.shape[1]))
    for s0 in range(0, n, block):
        s1 = min(n, s0 + block)
        qb = q[s0:s1]
        hi = np.floor(qb / shift)
        lo = (qb - hi * shift).astype(np.float32)
        zb = z[s0:s1]
        out += _xtz(hi.astype(np.float32), zb).astype(np.float64) * shift
        out += _xtz(lo, zb).astype(np.float64)
    return out


def _cpu_threads() -> int:
    """CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def rank_stats(activations: np.ndarray, concepts, *, sample_weight: np.ndarray | None,
               design: Design) -> RankStats:
    """Centred weighted rank sums for all-pairs AUROC (concepts binarized at 0.5).

    ``num = sum_i w_i R_i z_i - (W / 2) P``. With integer weights ``2 w_i R_i`` is an
    integer and the product is exact: a float64 sparse product over the positives of
    each concept when ``2 W**2 < 2**53`` (every partial sum an integer below ``2**53``;
    no BLAS threads, about ``nnz(Z)`` work per neuron), else two float32 passes over
    sample blocks; with real weights a float64 product. Neurons are processed in blocks
    of ``RANK_NEURON_BLOCK`` (bounded memory), with the sparse product on one thread per
    CPU (exact integer sums: the same result for any thread count).
    """
    n_neurons = activations.shape[1]
    w = sample_weight
    exact = _integer_valued(w)
    z = _binary_concepts(concepts, np.float32 if exact else np.float64)
    present = _column_sums(z, w)
    total = design.total
    num = np.empty((n_neurons, present.size), dtype=np.float64)
    wmax = 1.0 if w is None else float(w.max())
    # every partial sum of q = 2 w R over samples is an integer of at most 2 W**2: exact
    # in float64 below 2**53, so the sparse product over the positives is exact too
    zt = (sp.csr_matrix(z.T, dtype=np.float64) if exact and 2.0 * total * total < _F64_EXACT
          else None)
    def block(a: np.ndarray, j0: int) -> None:
        r = weighted_midranks(a, w)
        if w is not None:
            r *= w[:, None]
        if zt is not None:
            q = 2.0 * r  # integers: twice a half-integer midrank times an integer weight
            raw = 0.5 * np.asarray(zt @ np.ascontiguousarray(q)).T
        elif exact:
            q = 2.0 * r
            raw = 0.5 * _exact_split_product(q, z, 2.0 * total * wmax)
        else:
            raw = _xtz(r, z)
        num[j0:j0 + a.shape[1]] = raw - 0.5 * total * present[None, :]

    starts = range(0, n_neurons, RANK_NEURON_BLOCK)
    threads = _cpu_threads() if zt is not None else 1  # exact integer sums: any order
    if threads == 1 or len(starts) < 2:
        for j0 in starts:
            block(np.asarray(activations[:, j0:j0 + RANK_NEURON_BLOCK]), j0)
    else:
        from concurrent.futures import ThreadPoolExecutor

        # the blocks are read here, in order (the activations may not be thread-safe), and
        # computed on the pool (numpy and scipy release the GIL), at most `threads` at once
        with ThreadPoolExecutor(threads) as pool:
            pending: list = []
            for j0 in starts:
                if len(pending) >= threads:
                    pending.pop(0).result()
                a = np.asarray(activations[:, j0:j0 + RANK_NEURON_BLOCK])
                pending.append(pool.submit(block, a, j0))
            for f in pending:
                f.result()
    return RankStats(num=num, present=present, design=design)


def ap_stats(activations: np.ndarray, concepts, *, sample_weight: np.ndarray | None,
             design: Design, concept_block: int = 256) -> APStats:
    """Average precision (scikit-learn's step-wise definition) for all pairs."""
    n, n_neurons = activations.shape
    w = np.ones(n) if sample_weight is None else sample_weight
    z = _binary_concepts(concepts, np.float64)
    present = _column_sums(z, sample_weight)
    n_concepts = present.size
    ap = np.empty((n_neurons, n_concepts), dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        for j in range(n_neurons):
            a = np.asarray(activations[:, j])
            order = np.argsort(-a, kind="stable")
            s = a[order]
            ws = w[order]
            is_end = np.ones(n, dtype=bool)
            is_end[:-1] = s[1:] != s[:-1]
            ends = np.flatnonzero(is_end)
            n_at = np.cumsum(ws)[ends]
            for c0 in range(0, n_concepts, concept_block):
                c1 = min(n_concepts, c0 + concept_block)
                zc = z[order, c0:c1]
                zc = zc.toarray() if sp.issparse(zc) else np.asarray(zc)
                tp_at = np.cumsum(zc * ws[:, None], axis=0)[ends]
                dtp = np.diff(tp_at, axis=0, prepend=0.0)
                prec = np.where(n_at[:, None] > 0, tp_at / np.where(n_at > 0, n_at, 1.0)[:, None],
                                0.0)
                ap[j, c0:c1] = (dtp * prec).sum(axis=0) / present[c0:c1]
    return APStats(ap=ap, present=present, design=design)


#: Neurons per block of the moment statistics: float sums over samples are formed on
#: C-contiguous blocks of this many neurons aligned to the neuron index, so the rounding
#: of every neuron's sums is the same however a caller splits the layer (chunked,
#: out-of-core and distributed runs give bitwise-identical results).
MOMENT_BLOCK = 64


def moment_stats(activations: np.ndarray, concepts, *, sample_weight: np.ndarray | None,
                 design: Design) -> MomentStats:
    """Weighted first and second moments of activations and soft concepts.

    Computed on C-contiguous blocks of :data:`MOMENT_BLOCK` neurons; a caller
    that splits the neurons at multiples of it gets bitwise-identical sums.
    """
    n, n_neurons = activations.shape
    w = sample_weight
    sw = design.total
    c = concepts.astype(np.float64) if sp.issparse(concepts) else np.asarray(concepts, np.float64)
    if not sp.issparse(c):
        # identical concept columns must give identical (exactly tied) similarities, but a
        # BLAS product may round columns differently by position: compute each distinct
        # column once
        unique, inverse = _distinct_columns(c)
        c_unique = c[:, unique]
    rows = slice(None) if w is None else (w > 0)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("sxc", "sx", "sxx", "shift", "rng")}
    for j in range(0, n_neurons, MOMENT_BLOCK) if n_neurons else ():
        a = np.ascontiguousarray(activations[:, j:j + MOMENT_BLOCK], dtype=np.float64)
        shift = a.mean(axis=0) if w is None else (w @ a) / sw
        x = a - shift
        wx = x if w is None else x * w[:, None]
        parts["sxc"].append(_xtz(wx, c) if sp.issparse(c) else _xtz(wx, c_unique)[:, inverse])
        parts["sx"].append(wx.sum(axis=0))
        parts["sxx"].append((wx * x).sum(axis=0))
        parts["shift"].append(shift)
        parts["rng"].append(np.stack([a[rows].min(axis=0), a[rows].max(axis=0)]))
    if n_neurons:
        sxc, sx, sxx, shift = (np.concatenate(parts[k], axis=0)
                               for k in ("sxc", "sx", "sxx", "shift"))
        x_range = np.concatenate(parts["rng"], axis=1)
    else:
        sxc = np.zeros((0, c.shape[1]))
        sx = sxx = shift = np.zeros(0)
        x_range = np.zeros((2, 0))
    sc = _column_sums(c, w)
    c2 = c.multiply(c) if sp.issparse(c) else c * c
    scc = _column_sums(c2, w)
    cr = c[np.flatnonzero(w > 0)] if (w is not None) else c
    if sp.issparse(cr):
        cmin = np.asarray(cr.min(axis=0).todense()).reshape(-1)
        cmax = np.asarray(cr.max(axis=0).todense()).reshape(-1)
    else:
        cmin, cmax = cr.min(axis=0), cr.max(axis=0)
    return MomentStats(sxc=sxc, sx=sx, sxx=sxx, sc=sc, scc=scc, shift=shift, design=design,
                       x_range=x_range, c_range=np.stack([cmin, cmax]))
