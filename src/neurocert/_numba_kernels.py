"""numba kernels of the replicate engines (optional extra ``neurocert[numba]``).

Imported lazily by :mod:`neurocert.engine` when numba is installed (this module
imports numba at the top). Every kernel works on integer weights in exact
arithmetic (integers below ``2**53`` in float64), so its outputs equal the numpy
engine's bit for bit for the same weights, whatever the thread count or chunking.

AUROC (:func:`rank_sums`): for one neuron with a fixed ascending sort order,
replicate ``b`` has weighted midranks ``R_i = sum_{a_j < a_i} w_j + 0.5 sum_{a_j = a_i} w_j``
and the rank-sum statistic of a 0/1 concept ``c`` is ``num_c = sum_{i : z_ic = 1} w_i R_i``.
``Q_i = w_i (2 R_i)`` is an integer; the kernel forms ``Q`` in sort order one block of
``block`` ranks at a time (cache-resident) and adds it over the positives of each
candidate concept only (concepts are sparse): ``sum_c nnz(c)`` additions per replicate
instead of the ``n K`` multiply-adds of a dense product. ``RB`` replicates are processed
together, so each weight row and each ``Q`` row is read once for ``RB`` lanes.
"""

from __future__ import annotations

import numpy as np

from ._optional import require

numba = require("numba", "engine='numba'")
njit, prange = numba.njit, numba.prange

__all__ = ["BLOCK", "RB", "bucket_positives", "concept_sums", "rank_sums"]

#: replicates processed together (lanes of the inner loops, unrolled by hand below)
RB = 16  # the lanes below are unrolled for exactly 16
#: ranks per cache block of the AUROC kernel (a block of Q is BLOCK x RB float64)
BLOCK = 1024


@njit(cache=True, nogil=True)
def bucket_positives(indptr, indices, cols, rank, n, block):  # pragma: no cover - compiled
    """Positives of concepts ``cols`` as ranks, grouped by concept, then rank block.

    Returns ``bptr`` ((K * n_blocks) + 1,) and ``ranks`` (int32): the positives of
    column ``ci`` in rank block ``k`` are ``ranks[bptr[ci * n_blocks + k]:...[+ 1]]``.
    """
    k_cols = cols.size
    n_blocks = (n + block - 1) // block
    bptr = np.zeros(k_cols * n_blocks + 1, np.int64)
    for ci in range(k_cols):
        c = cols[ci]
        base = ci * n_blocks + 1
        for t in range(indptr[c], indptr[c + 1]):
            bptr[base + rank[indices[t]] // block] += 1
    for u in range(1, bptr.size):
        bptr[u] += bptr[u - 1]
    fill = bptr[:-1].copy()
    ranks = np.empty(bptr[-1], np.int32)
    for ci in range(k_cols):
        c = cols[ci]
        base = ci * n_blocks
        for t in range(indptr[c], indptr[c + 1]):
            r = rank[indices[t]]
            u = base + r // block
            ranks[fill[u]] = r
            fill[u] += 1
    return bptr, ranks


@njit(cache=True, parallel=True, nogil=True)
def concept_sums(wt, rowptr, concept_of, n_cols, out):  # pragma: no cover - compiled
    """``out[b, c] = sum_{i : z_ic = 1} wt[i, b]`` for 0/1 concepts in CSR form (exact).

    ``wt`` (n, B_pad) integer weights, ``B_pad`` a multiple of ``RB``; ``rowptr`` /
    ``concept_of``: the concepts present in each sample; ``out`` (B_pad, n_cols).
    Samples are read in order, once per ``RB`` replicates.
    """
    n = wt.shape[0]
    n_chunks = wt.shape[1] // RB
    for ch in prange(n_chunks):
        b0 = ch * RB
        acc = np.zeros((n_cols, RB))
        for i in range(n):
            lo = rowptr[i]
            hi = rowptr[i + 1]
            if lo == hi:
                continue
            w0 = np.float64(wt[i, b0 + 0]); w1 = np.float64(wt[i, b0 + 1])
            w2 = np.float64(wt[i, b0 + 2]); w3 = np.float64(wt[i, b0 + 3])
            w4 = np.float64(wt[i, b0 + 4]); w5 = np.float64(wt[i, b0 + 5])
            w6 = np.float64(wt[i, b0 + 6]); w7 = np.float64(wt[i, b0 + 7])
            w8 = np.float64(wt[i, b0 + 8]); w9 = np.float64(wt[i, b0 + 9])
            w10 = np.float64(wt[i, b0 + 10]); w11 = np.float64(wt[i, b0 + 11])
            w12 = np.float64(wt[i, b0 + 12]); w13 = np.float64(wt[i, b0 + 13])
            w14 = np.float64(wt[i, b0 + 14]); w15 = np.float64(wt[i, b0 + 15])
            for t in range(lo, hi):
                c = concept_of[t]
                acc[c, 0] += w0; acc[c, 1] += w1; acc[c, 2] += w2; acc[c, 3] += w3; acc[c, 4] += w4
                acc[c, 5] += w5; acc[c, 6] += w6; acc[c, 7] += w7; acc[c, 8] += w8; acc[c, 9] += w9
                acc[c, 10] += w10; acc[c, 11] += w11; acc[c, 12] += w12; acc[c, 13] += w13
                acc[c, 14] += w14; acc[c, 15] += w15
        for c in range(n_cols):
            out[b0 + 0, c] = acc[c, 0]; out[b0 + 1, c] = acc[c, 1]; out[b0 + 2, c] = acc[c, 2]
            out[b0 + 3, c] = acc[c, 3]; out[b0 + 4, c] = acc[c, 4]; out[b0 + 5, c] = acc[c, 5]
            out[b0 + 6, c] = acc[c, 6]; out[b0 + 7, c] = acc[c, 7]; out[b0 + 8, c] = acc[c, 8]
            out[b0 + 9, c] = acc[c, 9]; out[b0 + 10, c] = acc[c, 10]; out[b0 + 11, c] = acc[c, 11]
            out[b0 + 12, c] = acc[c, 12]; out[b0 + 13, c] = acc[c, 13]
            out[b0 + 14, c] = acc[c, 14]; out[b0 + 15, c] = acc[c, 15]


@njit(cache=True, parallel=True, nogil=True)
def rank_sums(ws, gend, need, bptr, ranks, k_cols, block, out):  # pragma: no cover - compiled
    """``out[b, ci] = sum over positives i of column ci of w_bi * 2 R_bi`` (exact).

    ``ws`` (n, B_pad): integer weights in the neuron's ascending sort order,
    ``B_pad`` a multiple of ``RB``; ``gend[p]``: last sorted position of the tie
    group of position ``p``; ``need[p]``: whether position ``p`` is a positive of some
    column (elsewhere only the cumulative weight is needed); ``bptr``/``ranks`` from
    ``bucket_positives``; ``out`` (B_pad, K) float64. Lanes are unrolled by hand:
    numba keeps them in registers but does not vectorize a lane loop.
    """
    n = ws.shape[0]
    n_chunks = ws.shape[1] // RB
    n_blocks = (n + block - 1) // block
    for ch in prange(n_chunks):
        b0 = ch * RB
        q = np.empty((block, RB))
        acc = np.zeros((k_cols, RB))
        c0 = 0.0; c1 = 0.0; c2 = 0.0; c3 = 0.0; c4 = 0.0; c5 = 0.0; c6 = 0.0; c7 = 0.0; c8 = 0.0
        c9 = 0.0; c10 = 0.0; c11 = 0.0; c12 = 0.0; c13 = 0.0; c14 = 0.0; c15 = 0.0
        t0 = 0.0; t1 = 0.0; t2 = 0.0; t3 = 0.0; t4 = 0.0; t5 = 0.0; t6 = 0.0; t7 = 0.0; t8 = 0.0
        t9 = 0.0; t10 = 0.0; t11 = 0.0; t12 = 0.0; t13 = 0.0; t14 = 0.0; t15 = 0.0
        g_end = -1
        for kb in range(n_blocks):
            s0 = kb * block
            s1 = min(n, s0 + block)
            for pos in range(s0, s1):
                if pos > g_end and gend[pos] == pos:
                    # an untied sample: twice its midrank is 2 cum + w
                    g_end = pos
                    w0 = np.float64(ws[pos, b0 + 0]); w1 = np.float64(ws[pos, b0 + 1])
                    w2 = np.float64(ws[pos, b0 + 2]); w3 = np.float64(ws[pos, b0 + 3])
                    w4 = np.float64(ws[pos, b0 + 4]); w5 = np.float64(ws[pos, b0 + 5])
                    w6 = np.float64(ws[pos, b0 + 6]); w7 = np.float64(ws[pos, b0 + 7])
                    w8 = np.float64(ws[pos, b0 + 8]); w9 = np.float64(ws[pos, b0 + 9])
                    w10 = np.float64(ws[pos, b0 + 10]); w11 = np.float64(ws[pos, b0 + 11])
                    w12 = np.float64(ws[pos, b0 + 12]); w13 = np.float64(ws[pos, b0 + 13])
                    w14 = np.float64(ws[pos, b0 + 14]); w15 = np.float64(ws[pos, b0 + 15])
                    if need[pos]:
                        row = pos - s0
                        q[row, 0] = w0 * (2.0 * c0 + w0); q[row, 1] = w1 * (2.0 * c1 + w1)
                        q[row, 2] = w2 * (2.0 * c2 + w2); q[row, 3] = w3 * (2.0 * c3 + w3)
                        q[row, 4] = w4 * (2.0 * c4 + w4); q[row, 5] = w5 * (2.0 * c5 + w5)
                        q[row, 6] = w6 * (2.0 * c6 + w6); q[row, 7] = w7 * (2.0 * c7 + w7)
                        q[row, 8] = w8 * (2.0 * c8 + w8); q[row, 9] = w9 * (2.0 * c9 + w9)
                        q[row, 10] = w10 * (2.0 * c10 + w10); q[row, 11] = w11 * (2.0 * c11 + w11)
                        q[row, 12] = w12 * (2.0 * c12 + w12); q[row, 13] = w13 * (2.0 * c13 + w13)
                        q[row, 14] = w14 * (2.0 * c14 + w14); q[row, 15] = w15 * (2.0 * c15 + w15)
                    c0 += w0; c1 += w1; c2 += w2; c3 += w3; c4 += w4; c5 += w5; c6 += w6; c7 += w7
                    c8 += w8; c9 += w9; c10 += w10; c11 += w11; c12 += w12; c13 += w13; c14 += w14
                    c15 += w15
                    continue
                if pos > g_end:
                    # a new tie group [pos, g_end]: twice its midrank is 2 cum + its weight
                    g_end = gend[pos]
                    g0 = 0.0; g1 = 0.0; g2 = 0.0; g3 = 0.0; g4 = 0.0; g5 = 0.0; g6 = 0.0; g7 = 0.0
                    g8 = 0.0; g9 = 0.0; g10 = 0.0; g11 = 0.0; g12 = 0.0; g13 = 0.0; g14 = 0.0
                    g15 = 0.0
                    for p2 in range(pos, g_end + 1):
                        g0 += ws[p2, b0 + 0]; g1 += ws[p2, b0 + 1]; g2 += ws[p2, b0 + 2]
                        g3 += ws[p2, b0 + 3]; g4 += ws[p2, b0 + 4]; g5 += ws[p2, b0 + 5]
                        g6 += ws[p2, b0 + 6]; g7 += ws[p2, b0 + 7]; g8 += ws[p2, b0 + 8]
                        g9 += ws[p2, b0 + 9]; g10 += ws[p2, b0 + 10]; g11 += ws[p2, b0 + 11]
                        g12 += ws[p2, b0 + 12]; g13 += ws[p2, b0 + 13]; g14 += ws[p2, b0 + 14]
                        g15 += ws[p2, b0 + 15]
                    t0 = 2.0 * c0 + g0; t1 = 2.0 * c1 + g1; t2 = 2.0 * c2 + g2; t3 = 2.0 * c3 + g3
                    t4 = 2.0 * c4 + g4; t5 = 2.0 * c5 + g5; t6 = 2.0 * c6 + g6; t7 = 2.0 * c7 + g7
                    t8 = 2.0 * c8 + g8; t9 = 2.0 * c9 + g9; t10 = 2.0 * c10 + g10
                    t11 = 2.0 * c11 + g11; t12 = 2.0 * c12 + g12; t13 = 2.0 * c13 + g13
                    t14 = 2.0 * c14 + g14; t15 = 2.0 * c15 + g15
                    c0 += g0; c1 += g1; c2 += g2; c3 += g3; c4 += g4; c5 += g5; c6 += g6; c7 += g7
                    c8 += g8; c9 += g9; c10 += g10; c11 += g11; c12 += g12; c13 += g13; c14 += g14
                    c15 += g15
                if need[pos]:
                    row = pos - s0
                    q[row, 0] = ws[pos, b0 + 0] * t0; q[row, 1] = ws[pos, b0 + 1] * t1
                    q[row, 2] = ws[pos, b0 + 2] * t2; q[row, 3] = ws[pos, b0 + 3] * t3
                    q[row, 4] = ws[pos, b0 + 4] * t4; q[row, 5] = ws[pos, b0 + 5] * t5
                    q[row, 6] = ws[pos, b0 + 6] * t6; q[row, 7] = ws[pos, b0 + 7] * t7
                    q[row, 8] = ws[pos, b0 + 8] * t8; q[row, 9] = ws[pos, b0 + 9] * t9
                    q[row, 10] = ws[pos, b0 + 10] * t10; q[row, 11] = ws[pos, b0 + 11] * t11
                    q[row, 12] = ws[pos, b0 + 12] * t12; q[row, 13] = ws[pos, b0 + 13] * t13
                    q[row, 14] = ws[pos, b0 + 14] * t14; q[row, 15] = ws[pos, b0 + 15] * t15
            for ci in range(k_cols):
                u = ci * n_blocks + kb
                lo = bptr[u]
                hi = bptr[u + 1]
                if lo == hi:
                    continue
                a0 = acc[ci, 0]; a1 = acc[ci, 1]; a2 = acc[ci, 2]; a3 = acc[ci, 3]; a4 = acc[ci, 4]
                a5 = acc[ci, 5]; a6 = acc[ci, 6]; a7 = acc[ci, 7]; a8 = acc[ci, 8]; a9 = acc[ci, 9]
                a10 = acc[ci, 10]; a11 = acc[ci, 11]; a12 = acc[ci, 12]; a13 = acc[ci, 13]
                a14 = acc[ci, 14]; a15 = acc[ci, 15]
                for t in range(lo, hi):
                    r = ranks[t] - s0
                    a0 += q[r, 0]; a1 += q[r, 1]; a2 += q[r, 2]; a3 += q[r, 3]; a4 += q[r, 4]
                    a5 += q[r, 5]; a6 += q[r, 6]; a7 += q[r, 7]; a8 += q[r, 8]; a9 += q[r, 9]
                    a10 += q[r, 10]; a11 += q[r, 11]; a12 += q[r, 12]; a13 += q[r, 13]
                    a14 += q[r, 14]; a15 += q[r, 15]
                acc[ci, 0] = a0; acc[ci, 1] = a1; acc[ci, 2] = a2; acc[ci, 3] = a3; acc[ci, 4] = a4
                acc[ci, 5] = a5; acc[ci, 6] = a6; acc[ci, 7] = a7; acc[ci, 8] = a8; acc[ci, 9] = a9
                acc[ci, 10] = a10; acc[ci, 11] = a11; acc[ci, 12] = a12; acc[ci, 13] = a13
                acc[ci, 14] = a14; acc[ci, 15] = a15
        for ci in range(k_cols):
            out[b0 + 0, ci] = acc[ci, 0]; out[b0 + 1, ci] = acc[ci, 1]
            out[b0 + 2, ci] = acc[ci, 2]; out[b0 + 3, ci] = acc[ci, 3]
            out[b0 + 4, ci] = acc[ci, 4]; out[b0 + 5, ci] = acc[ci, 5]
            out[b0 + 6, ci] = acc[ci, 6]; out[b0 + 7, ci] = acc[ci, 7]
            out[b0 + 8, ci] = acc[ci, 8]; out[b0 + 9, ci] = acc[ci, 9]
            out[b0 + 10, ci] = acc[ci, 10]; out[b0 + 11, ci] = acc[ci, 11]
            out[b0 + 12, ci] = acc[ci, 12]; out[b0 + 13, ci] = acc[ci, 13]
            out[b0 + 14, ci] = acc[ci, 14]; out[b0 + 15, ci] = acc[ci, 15]
