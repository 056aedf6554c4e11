"""Neuron binarization: fixed thresholds and weighted top-fraction cut-offs.

The top-fraction rule (``top_frac = q``) is defined so that integer sample
weights are exactly equivalent to repeating samples: with ``W`` the total
weight, the target active weight is ``k = ceil(q * W)`` and the cut-off ``t``
is the largest activation value whose cumulative weight, counted from the top,
reaches ``k``; a sample is active when its activation is ``>= t``. Ties at the
cut-off are all active, so the active weight can exceed ``k`` when activations
are tied.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["binarize", "top_frac_cutoffs", "top_frac_target", "top_weight_cutoffs"]

_REL_TOL = 1e-12


def top_frac_target(top_frac: float, total_weight: float) -> float:
    """Target active weight ``k = max(1, ceil(q W))`` with a tolerance for float round-off."""
    k = math.ceil(top_frac * total_weight - _REL_TOL * max(1.0, total_weight))
    return float(max(1, k))


def top_frac_cutoffs(activations: np.ndarray, top_frac: float,
                     sample_weight: np.ndarray | None = None) -> np.ndarray:
    """Per-neuron cut-offs of the weighted top-``top_frac`` rule.

    Parameters
    ----------
    activations : ndarray of shape (n_samples, n_neurons)
    top_frac : float in (0, 1)
    sample_weight : ndarray of shape (n_samples,), optional

    Returns
    -------
    ndarray of shape (n_neurons,)
        Cut-off ``t_j``; neuron ``j`` is active on samples with activation ``>= t_j``.
    """
    total = float(activations.shape[0]) if sample_weight is None else float(sample_weight.sum())
    return top_weight_cutoffs(activations, [top_frac_target(top_frac, total)], sample_weight)[0]


def top_weight_cutoffs(activations: np.ndarray, ks, sample_weight: np.ndarray | None = None
                       ) -> list[np.ndarray]:
    """Cut-offs of the top-``k``-weight sets for several ``k`` at once (one sort or partition).

    For each ``k`` the cut-off is the largest activation whose cumulative weight, counted
    from the top, reaches ``k``; ``k <= 0`` gives ``+inf`` (no sample active) and ``k`` at
    least the total weight gives ``-inf`` (every sample active).
    """
    a = np.asarray(activations)
    n, n_neurons = a.shape
    w = sample_weight
    total = float(n) if w is None else float(w.sum())
    out: list[np.ndarray | None] = [None] * len(ks)
    inner = []
    for i, k in enumerate(ks):
        if k <= 0:
            out[i] = np.full(n_neurons, np.inf)
        elif k >= total:
            out[i] = np.full(n_neurons, -np.inf)
        else:
            inner.append(i)
    if inner:
        at = np.ascontiguousarray(a.T)  # rows contiguous: partition/sort along axis 1
        cols = np.arange(n_neurons)
        if w is None:
            kth = sorted({n - int(math.ceil(ks[i] - _REL_TOL * max(1.0, ks[i]))) for i in inner})
            part = np.partition(at, kth, axis=1)
            for i in inner:
                k = int(math.ceil(ks[i] - _REL_TOL * max(1.0, ks[i])))
                out[i] = np.asarray(part[:, n - k], dtype=np.float64)
        else:
            order = np.argsort(-at, axis=1, kind="stable")
            cw = np.cumsum(w[order], axis=1)
            for i in inner:
                k = ks[i]
                first = np.argmax(cw >= k - _REL_TOL * max(1.0, k), axis=1)
                out[i] = at[cols, order[cols, first]].astype(np.float64)
    return out  # type: ignore[return-value]


def binarize(activations: np.ndarray, *, threshold: float | None = None,
             cutoffs: np.ndarray | None = None) -> np.ndarray:
    """Binary activity matrix (float32 0/1) of shape (n_samples, n_neurons).

    Exactly one of ``threshold`` (active where ``a > threshold``) and ``cutoffs``
    (per-neuron, active where ``a >= cutoff``) may be given; with neither the
    activations must already be 0/1.
    """
    if threshold is not None:
        a = np.asarray(activations)
        t = threshold
        if a.dtype == np.float32:
            # NumPy compares with the threshold rounded to float32; use the float32 value
            # t32 for which `a > t32` is exactly `a > threshold` in real arithmetic
            t32 = np.float32(threshold)
            if float(t32) > threshold:
                t32 = np.nextafter(t32, np.float32(-np.inf))
            t = t32
        return (a > t).astype(np.float32)
    if cutoffs is not None:
        return (activations >= cutoffs[None, :]).astype(np.float32)
    return np.asarray(activations, dtype=np.float32)


def is_binary(a: np.ndarray) -> bool:
    """True when every entry is 0 or 1."""
    return bool(np.all((a == 0) | (a == 1)))
