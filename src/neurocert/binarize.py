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

__all__ = ["binarize", "top_frac_cutoffs", "top_frac_target"]

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
    n, n_neurons = activations.shape
    if sample_weight is None:
        k = int(top_frac_target(top_frac, float(n)))
        # k-th largest = (n - k)-th smallest (0-based)
        part = np.partition(np.asarray(activations), n - k, axis=0)
        return np.array(part[n - k], dtype=np.float64)
    w = sample_weight
    k = top_frac_target(top_frac, float(w.sum()))
    order = np.argsort(-np.asarray(activations), axis=0, kind="stable")
    cw = np.cumsum(w[order], axis=0)
    first = np.argmax(cw >= k - _REL_TOL * max(1.0, k), axis=0)
    rows = order[first, np.arange(n_neurons)]
    return np.asarray(activations)[rows, np.arange(n_neurons)].astype(np.float64)


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
