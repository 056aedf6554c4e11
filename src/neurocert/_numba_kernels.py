"""numba kernels of the replicate engines (optional extra ``neurocert[numba]``).

Imported lazily by :mod:`neurocert.engine` when numba is installed (this module
imports numba at the top). Every kernel works on non-negative integer weights in
exact integer arithmetic, so its outputs equal the numpy engines' bit for bit for
the same weights, whatever the thread count or chunking.

Layout. The weights of a batch of replicates are packed once, transposed, into
``wt (n_samples, B_pad)`` small unsigned integers, ``B_pad`` a multiple of ``RB``
(padding lanes 0). The per-neuron kernels are serial and release the GIL: the
engine runs neurons on a pool of threads (no barrier per neuron, so a busy machine
does not stall them). Inside a neuron the replicates are processed in lane chunks
of ``RB``; every per-sample step is a loop over the ``RB`` lanes, which LLVM
vectorizes.

* :func:`concept_sums`: ``W @ Z`` over the positives of each sample (CSR).
* :func:`count_votes` (count metrics, fixed threshold or ``top_frac``): one neuron;
  per replicate the cut-off from cumulative weights in the neuron's descending
  order (never inside a tie group), the active weight ``f`` and the intersection
  weights ``tp`` over the positives of the candidate concepts in the active part
  of the support, then the metric's formula, the argmax and the tie events.
* :func:`rank_votes` (AUROC): one neuron; with ``R`` the weighted midranks,
  ``Q_i = w_i (2 R_i)`` is an integer formed in sort order one block of ``block``
  ranks at a time and added over the positives of each candidate concept only
  (``sum_c nnz(c)`` additions per replicate), then the AUROC formula and the argmax.

Replicate outcomes follow :func:`neurocert.engine.argmax_votes`: NaN never wins, a
best value not above the metric's minimum is "none" (-1), exact ties are counted
and reported as events ``(t, concept)`` in per-chunk buffers.
"""

from __future__ import annotations

import numpy as np

from ._optional import require

numba = require("numba", "engine='numba'")
njit, prange = numba.njit, numba.prange

__all__ = ["BLOCK", "RB", "WIDE_BYTES", "argsort_stable", "bucket_positives", "concept_sums",
           "count_votes", "gather_rows", "rank_votes", "rank_votes_wide"]

#: replicates per lane chunk (one thread per chunk; the lane loops are vectorized)
RB = 64
#: ranks per cache block of the AUROC kernel (a block of Q is BLOCK x RB integers)
BLOCK = 512

#: largest accumulator (bytes) of :func:`rank_votes_wide` (all lanes of a neuron at once)
WIDE_BYTES = 256 * 1024

#: formula codes of :func:`count_votes` (``fc`` intersection, ``f`` active, ``c`` concept,
#: ``s`` total weight): 0 IoU ``fc / (f + c - fc)``, 1 ``fc / f``, 2 ``fc / c``,
#: 3 F1 ``2 fc / (f + c)``, 4 accuracy ``(s - f - c + 2 fc) / s``
COUNT_CODES = {"iou": 0, "f1": 3, "accuracy": 4}


@njit(cache=True, nogil=True)
def gather_rows(wt, order, out):  # pragma: no cover - compiled
    """``out[p] = wt[order[p]]`` (whole rows: the weights in a neuron's sort order)."""
    for p in range(order.size):
        src = wt[order[p]]
        dst = out[p]
        for b in range(src.size):
            dst[b] = src[b]


@njit(cache=True, parallel=True, nogil=True)
def concept_sums(wt, rowptr, concept_of, n_cols, out):  # pragma: no cover - compiled
    """``out[b, c] = sum_{i : z_ic = 1} wt[i, b]`` for 0/1 concepts in CSR form (exact).

    ``wt`` (n, B_pad) packed weights whose column sums are below ``2**31``;
    ``rowptr`` / ``concept_of``: the concepts present in each sample; ``out``
    (B_pad, n_cols) float64.
    """
    n = wt.shape[0]
    n_chunks = wt.shape[1] // RB
    for ch in prange(n_chunks):
        l0 = ch * RB
        acc = np.zeros((n_cols, RB), np.int32)
        for i in range(n):
            lo = rowptr[i]
            hi = rowptr[i + 1]
            if lo == hi:
                continue
            wrow = wt[i, l0:l0 + RB]
            for t in range(lo, hi):
                a = acc[concept_of[t]]
                for lane in range(RB):
                    a[lane] += wrow[lane]
        for c in range(n_cols):
            for lane in range(RB):
                out[l0 + lane, c] = acc[c, lane]


@njit(cache=True, nogil=True)
def bucket_positives(indptr, indices, cols, rank, n, block):  # pragma: no cover - compiled
    """Positives of concepts ``cols`` as ranks, grouped by concept, then rank block.

    Returns ``bptr`` ((K * n_blocks) + 1,) and ``ranks`` (int32): the positives of
    column ``ci`` in rank block ``k`` are ``ranks[bptr[ci * n_blocks + k]:...[+ 1]]``
    (in sample order within a block; sums over them are exact in any order).
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
    ranks = np.empty(bptr[-1], np.int32)
    for ci in range(k_cols):
        c = cols[ci]
        base = ci * n_blocks
        fill = bptr[base:base + n_blocks].copy()
        for t in range(indptr[c], indptr[c + 1]):
            r = rank[indices[t]]
            u = r // block
            ranks[fill[u]] = r
            fill[u] += 1
    return bptr, ranks


@njit(cache=True, nogil=True)
def _vote(simv, cols, is_cand, lower, b, j, winner, n_tied, ev_t, ev_c, ev_n, ch):  # pragma: no cover
    """Argmax of one replicate over the candidate columns (see module notes)."""
    best = -np.inf
    nt = 0
    win = -1
    for ci in range(cols.size):
        if not is_cand[ci]:
            continue
        x = simv[ci]
        if np.isnan(x):  # NaN never wins
            x = -np.inf
        if x > best:
            best = x
            nt = 1
            win = cols[ci]
        elif x == best:
            nt += 1
    if not best > lower:  # also when there is no candidate
        winner[b, j] = -1
        n_tied[b, j] = 0
        return
    winner[b, j] = win
    n_tied[b, j] = nt
    if nt > 1:
        k = ev_n[ch]
        for ci in range(cols.size):
            if is_cand[ci] and simv[ci] == best:
                ev_t[ch, k] = nt
                ev_c[ch, k] = cols[ci]
                k += 1
        ev_n[ch] = k


@njit(cache=True, nogil=True, error_model="numpy")
def count_votes(wt, n_rep, index, tie_end, complete, top, thr, totals, cw, rowptr, concept_of,
                cols, is_cand, trk, code, lower, j, winner, n_tied, track, ev_t, ev_c,
                ev_n):  # pragma: no cover - compiled
    """Replicate explanations of neuron ``j`` for a count metric; 1 if the support is short.

    ``index`` (L,): the support (samples that can be active) in descending activation
    order; ``tie_end[p]``: last support position of the tie group of ``p``; ``complete``:
    the support holds every sample. ``top``: the cut-off is recomputed per replicate
    (replicate ``b`` is active on the support prefix that ends with the tie group where
    the cumulative weight first reaches ``thr[b]``); otherwise the whole support is
    active. ``cw`` (B_pad, C) concept weights, ``totals`` (B,), ``cols`` (K,) sorted
    columns (candidates and tracked), ``is_cand`` (K,), ``trk`` positions of the tracked
    concepts in ``cols``, ``code`` the formula (``COUNT_CODES``). Fills column ``j`` of
    ``winner`` / ``n_tied`` / ``track`` for ``b < n_rep`` and the tie events; returns 1
    (and nothing valid) when some replicate's cut-off lies beyond an incomplete support.
    """
    n_sup = index.size
    k_cols = cols.size
    lookup = np.full(cw.shape[1], -1, np.int32)
    for ci in range(k_cols):
        lookup[cols[ci]] = ci
    pptr = np.zeros(n_sup + 1, np.int64)
    for p in range(n_sup):
        i = index[p]
        cnt = 0
        for t in range(rowptr[i], rowptr[i + 1]):
            if lookup[concept_of[t]] >= 0:
                cnt += 1
        pptr[p + 1] = pptr[p] + cnt
    pci = np.empty(pptr[n_sup], np.int32)
    for p in range(n_sup):
        i = index[p]
        k = pptr[p]
        for t in range(rowptr[i], rowptr[i + 1]):
            ci = lookup[concept_of[t]]
            if ci >= 0:
                pci[k] = ci
                k += 1
    # the support's weight rows, contiguous (cache-resident for every lane chunk)
    wsup = np.empty((n_sup, wt.shape[1]), wt.dtype)
    for p in range(n_sup):
        src = wt[index[p]]
        dst = wsup[p]
        for b in range(src.size):
            dst[b] = src[b]
    n_chunks = (n_rep + RB - 1) // RB
    for ch in range(n_chunks):
        l0 = ch * RB
        nl = min(RB, n_rep - l0)
        end = np.full(RB, -1, np.int64)
        if top:
            cum = np.zeros(RB, np.int64)
            left = nl
            p = 0
            while left > 0 and p < n_sup:
                wrow = wsup[p, l0:l0 + RB]
                for lane in range(RB):
                    cum[lane] += wrow[lane]
                for lane in range(nl):
                    if end[lane] < 0 and cum[lane] >= thr[l0 + lane]:
                        end[lane] = tie_end[p]
                        left -= 1
                p += 1
            if left > 0:
                if not complete:
                    return 1
                for lane in range(nl):
                    if end[lane] < 0:
                        end[lane] = tie_end[n_sup - 1]
        else:
            for lane in range(nl):
                end[lane] = n_sup - 1
        hi_end = -1
        lo_end = n_sup
        for lane in range(nl):
            hi_end = max(hi_end, end[lane])
            lo_end = min(lo_end, end[lane])
        acc = np.zeros((k_cols, RB), np.int32)
        f = np.zeros(RB, np.int64)
        wl = np.zeros(RB, np.int32)
        for p in range(hi_end + 1):
            wrow = wsup[p, l0:l0 + RB]
            if p <= lo_end:
                for lane in range(RB):
                    wl[lane] = wrow[lane]
            else:
                for lane in range(RB):
                    wl[lane] = wrow[lane] if p <= end[lane] else 0
            for lane in range(RB):
                f[lane] += wl[lane]
            for t in range(pptr[p], pptr[p + 1]):
                a = acc[pci[t]]
                for lane in range(RB):
                    a[lane] += wl[lane]
        simv = np.empty(k_cols)
        for lane in range(nl):
            b = l0 + lane
            s = totals[b]
            fa = np.float64(f[lane])
            for ci in range(k_cols):
                fc = np.float64(acc[ci, lane])
                c = cw[b, cols[ci]]
                if code == 0:
                    v = fc / (fa + c - fc)
                elif code == 1:
                    v = fc / fa
                elif code == 2:
                    v = fc / c
                elif code == 3:
                    v = (2.0 * fc) / (fa + c)
                else:
                    v = (s - fa - c + 2.0 * fc) / s
                simv[ci] = v
            for t in range(trk.size):
                track[b, j, t] = simv[trk[t]]
            _vote(simv, cols, is_cand, lower, b, j, winner, n_tied, ev_t, ev_c, ev_n, ch)
    return 0


@njit(cache=True, nogil=True, error_model="numpy")
def _auroc_vote(acc, col, b, totals, pw, cols, simv, trk, track, is_cand, lower, j, winner,
                n_tied, ev_t, ev_c, ev_n, ch):  # pragma: no cover - compiled
    """AUROC of replicate ``b`` from its doubled rank sums ``acc[:, col]``, then its vote."""
    tot = totals[b]
    for ci in range(cols.size):
        pos_w = pw[b, cols[ci]]
        den = pos_w * (tot - pos_w)
        if den > 0:
            num = np.float64(acc[ci, col]) * 0.5
            simv[ci] = (num - 0.5 * pos_w * pos_w) / den
        else:
            simv[ci] = np.nan
    for t in range(trk.size):
        track[b, j, t] = simv[trk[t]]
    _vote(simv, cols, is_cand, lower, b, j, winner, n_tied, ev_t, ev_c, ev_n, ch)


@njit(cache=True, nogil=True, error_model="numpy")
def rank_votes(ws, n_rep, gend, need, bptr, ranks, block, qproto, pw, totals, cols, is_cand,
               trk, lower, j, winner, n_tied, track, ev_t, ev_c, ev_n):  # pragma: no cover
    """Replicate AUROC explanations of neuron ``j`` from rank sums over the positives.

    ``ws`` (n, B_pad): packed weights in the neuron's ascending sort order;
    ``gend[p]``: last sorted position of the tie group of position ``p``; ``need[p]``:
    position ``p`` is a positive of some column (elsewhere only the cumulative weight
    is needed); ``bptr``/``ranks`` from :func:`bucket_positives` with the same
    ``block``; ``qproto``: an empty array whose integer type holds every ``Q``;
    ``pw`` (B_pad, C) concept weights; ``totals`` (B,). Sums are exact integers, so
    ``num = sum Q / 2`` and ``(num - pw**2 / 2) / (pw (W - pw))`` equal the numpy engine's.
    """
    n = ws.shape[0]
    k_cols = cols.size
    n_blocks = (n + block - 1) // block
    n_chunks = (n_rep + RB - 1) // RB
    for ch in range(n_chunks):
        l0 = ch * RB
        nl = min(RB, n_rep - l0)
        q = np.empty((block, RB), qproto.dtype)
        acc = np.zeros((k_cols, RB), np.int64)
        cum = np.zeros(RB, np.int32)  # weight of the positions before the current one
        tw = np.zeros(RB, np.int64)  # twice the midrank of the current tie group
        g = np.zeros(RB, np.int32)
        g_end = -1
        for kb in range(n_blocks):
            s0 = kb * block
            s1 = min(n, s0 + block)
            for pos in range(s0, s1):
                wrow = ws[pos, l0:l0 + RB]
                if pos > g_end:
                    if gend[pos] == pos:
                        # an untied sample: twice its midrank is 2 cum + w
                        g_end = pos
                        if need[pos]:
                            qr = q[pos - s0]
                            for lane in range(RB):
                                w = np.int32(wrow[lane])
                                qr[lane] = w * (2 * cum[lane] + w)
                        for lane in range(RB):
                            cum[lane] += wrow[lane]
                        continue
                    # a new tie group [pos, g_end]: twice its midrank is 2 cum + its weight
                    g_end = gend[pos]
                    g[:] = 0
                    for p2 in range(pos, g_end + 1):
                        w2 = ws[p2, l0:l0 + RB]
                        for lane in range(RB):
                            g[lane] += w2[lane]
                    for lane in range(RB):
                        tw[lane] = 2 * cum[lane] + g[lane]
                        cum[lane] += g[lane]
                if need[pos]:
                    qr = q[pos - s0]
                    for lane in range(RB):
                        qr[lane] = wrow[lane] * tw[lane]
            for ci in range(k_cols):
                u = ci * n_blocks + kb
                lo = bptr[u]
                hi = bptr[u + 1]
                if lo == hi:
                    continue
                a = acc[ci]
                t = lo
                while t + 3 < hi:  # four positives per pass over the accumulator row
                    q1 = q[ranks[t] - s0]
                    q2 = q[ranks[t + 1] - s0]
                    q3 = q[ranks[t + 2] - s0]
                    q4 = q[ranks[t + 3] - s0]
                    for lane in range(RB):
                        a[lane] += ((np.int64(q1[lane]) + np.int64(q2[lane]))
                                    + (np.int64(q3[lane]) + np.int64(q4[lane])))
                    t += 4
                while t < hi:
                    q1 = q[ranks[t] - s0]
                    for lane in range(RB):
                        a[lane] += q1[lane]
                    t += 1
        simv = np.empty(k_cols)
        for lane in range(nl):
            _auroc_vote(acc, lane, l0 + lane, totals, pw, cols, simv, trk, track, is_cand, lower,
                        j, winner, n_tied, ev_t, ev_c, ev_n, ch)


@njit(cache=True, nogil=True, error_model="numpy")
def rank_votes_wide(wt, n_rep, order, gend, rowptr, concept_of, lookup, pw, totals, cols,
                    is_cand, trk, lower, j, winner, n_tied, track, ev_t, ev_c,
                    ev_n):  # pragma: no cover - compiled
    """:func:`rank_votes` for a neuron with few columns: every lane in one pass.

    Positions are visited in ascending order, reading each sample's whole weight row
    ``wt[order[p]]`` (no sorted copy); at a positive of some column (``lookup``:
    concept -> column position or -1, concepts of a sample from the CSR ``rowptr`` /
    ``concept_of``) ``Q`` is added to that column's accumulator, ``(K, B_pad)``.
    """
    n = order.size
    b_pad = wt.shape[1]
    k_cols = cols.size
    acc = np.zeros((k_cols, b_pad), np.int64)
    cum = np.zeros(b_pad, np.int32)
    tw = np.zeros(b_pad, np.int64)
    g = np.zeros(b_pad, np.int32)
    q = np.zeros(b_pad, np.int64)
    g_end = -1
    for pos in range(n):
        i = order[pos]
        wrow = wt[i]
        hit = False
        for t in range(rowptr[i], rowptr[i + 1]):
            if lookup[concept_of[t]] >= 0:
                hit = True
                break
        if pos > g_end:
            if gend[pos] == pos:
                g_end = pos
                if hit:
                    for lane in range(b_pad):
                        w = np.int64(wrow[lane])
                        q[lane] = w * (2 * np.int64(cum[lane]) + w)
                for lane in range(b_pad):
                    cum[lane] += wrow[lane]
            else:
                g_end = gend[pos]
                g[:] = 0
                for p2 in range(pos, g_end + 1):
                    w2 = wt[order[p2]]
                    for lane in range(b_pad):
                        g[lane] += w2[lane]
                for lane in range(b_pad):
                    tw[lane] = 2 * np.int64(cum[lane]) + g[lane]
                    cum[lane] += g[lane]
                if hit:
                    for lane in range(b_pad):
                        q[lane] = wrow[lane] * tw[lane]
        elif hit:
            for lane in range(b_pad):
                q[lane] = wrow[lane] * tw[lane]
        if hit:
            for t in range(rowptr[i], rowptr[i + 1]):
                ci = lookup[concept_of[t]]
                if ci >= 0:
                    a = acc[ci]
                    for lane in range(b_pad):
                        a[lane] += q[lane]
    simv = np.empty(k_cols)
    for b in range(n_rep):
        _auroc_vote(acc, b, b, totals, pw, cols, simv, trk, track, is_cand, lower,
                    j, winner, n_tied, ev_t, ev_c, ev_n, b // RB)


@njit(cache=True, nogil=True)
def argsort_stable(a):  # pragma: no cover - compiled
    """``np.argsort(a, kind="stable")`` of finite float64 values (LSD radix sort, exact).

    Keys are the IEEE-754 bits mapped to unsigned order (``-0.0`` counted as ``+0.0``, so
    they tie as they compare); 11-bit digits, a pass is skipped when every key shares its
    digit (the low mantissa bits of float32 data). Returns int64 indices.
    """
    n = a.size
    keys = np.empty(n, np.uint64)
    bits = (a + 0.0).view(np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    for i in range(n):
        k = bits[i]
        keys[i] = ~k if k & sign else k | sign
    n_pass = 6
    radix = 2048
    hist = np.zeros((n_pass, radix), np.int64)
    for i in range(n):
        k = keys[i]
        for d in range(n_pass):
            hist[d, (k >> np.uint64(11 * d)) & np.uint64(radix - 1)] += 1
    order = np.arange(n)
    tmp = np.empty(n, np.int64)
    for d in range(n_pass):
        h = hist[d]
        trivial = False
        for v in range(radix):
            if h[v] == n:
                trivial = True
                break
            if h[v] != 0:
                break
        if trivial:
            continue
        start = np.empty(radix, np.int64)
        total = 0
        for v in range(radix):
            start[v] = total
            total += h[v]
        shift = np.uint64(11 * d)
        for i in range(n):
            idx = order[i]
            v = (keys[idx] >> shift) & np.uint64(radix - 1)
            tmp[start[v]] = idx
            start[v] += 1
        order, tmp = tmp, order
    return order
