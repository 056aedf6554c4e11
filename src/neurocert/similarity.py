"""Public all-pairs similarity and the shared preparation used by identify/bootstrap."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from . import _backend
from ._validation import (
    as_activations,
    as_concepts,
    check_binarization,
    check_groups,
    check_sample_weight,
)
from .binarize import is_binary
from .exceptions import LowFrequencyAccuracyWarning, UndefinedSimilarityWarning, ValidationError
from .metrics import Metric, MetricOptions, get_metric
from .sufficient import Design, ap_stats, count_stats, design_info, moment_stats, rank_stats

__all__ = ["Prepared", "compute_stats", "prepare", "similarity"]

LOW_FREQUENCY_ACCURACY = 0.05


@dataclass(frozen=True)
class Prepared:
    """Validated inputs of one probing set; build statistics with :func:`compute_stats`."""

    activations: np.ndarray
    concepts: Any
    metric: Metric
    options: MetricOptions
    sample_weight: np.ndarray | None
    groups: tuple[np.ndarray, int] | None
    threshold: float | None
    top_frac: float | None
    design: Design

    @property
    def n_samples(self) -> int:
        return self.activations.shape[0]

    @property
    def n_neurons(self) -> int:
        return self.activations.shape[1]

    @property
    def n_concepts(self) -> int:
        return self.concepts.shape[1]


def prepare(activations: Any, concepts: Any, *, metric: str | Metric,
            sample_weight: Any = None, groups: Any = None, threshold: Any = None,
            top_frac: Any = None, truth: str = "concept", wpmi_lambda: float = 1.0) -> Prepared:
    """Validate every input once and return a :class:`Prepared` bundle."""
    m = get_metric(metric)
    options = MetricOptions(truth=truth, wpmi_lambda=float(wpmi_lambda))
    a = as_activations(activations)
    c = as_concepts(concepts, a.shape[0])
    w = check_sample_weight(sample_weight, a.shape[0])
    g = check_groups(groups, a.shape[0])
    threshold, top_frac = check_binarization(threshold, top_frac)
    if m.binarized_neuron:
        if threshold is None and top_frac is None and not is_binary(a):
            raise ValidationError(
                f"metric {m.name!r} needs a binarized neuron: pass `threshold=` or `top_frac=`, "
                "or give 0/1 activations")
    elif threshold is not None or top_frac is not None:
        raise ValidationError(
            f"metric {m.name!r} uses raw activations; `threshold`/`top_frac` do not apply")
    design = design_info(a.shape[0], w, g)
    return Prepared(a, c, m, options, w, g, threshold, top_frac, design)


def compute_stats(p: Prepared, sample_weight: np.ndarray | None = None, *,
                  threshold_delta: float | None = None):
    """Sufficient statistics of ``p`` (optionally under other sample weights).

    ``threshold_delta``: with ``top_frac``, also compute the threshold-band counts
    the bounds need (see :func:`neurocert.bounds.threshold_band`).
    """
    w = p.sample_weight if sample_weight is None else sample_weight
    design = p.design if sample_weight is None else design_info(p.n_samples, w, p.groups)
    kind = p.metric.statistics
    if kind == "count":
        return count_stats(p.activations, p.concepts, sample_weight=w, design=design,
                           threshold=p.threshold, top_frac=p.top_frac,
                           threshold_delta=threshold_delta)
    if kind == "rank":
        return rank_stats(p.activations, p.concepts, sample_weight=w, design=design)
    if kind == "ap":
        return ap_stats(p.activations, p.concepts, sample_weight=w, design=design)
    return moment_stats(p.activations, p.concepts, sample_weight=w, design=design)


def warn_undefined(values: np.ndarray, metric: Metric, stacklevel: int = 3) -> None:
    """Emit one :class:`UndefinedSimilarityWarning` when some values are NaN."""
    bad = int(np.isnan(values).sum())
    if bad:
        warnings.warn(
            f"{bad} of {values.size} {metric.name} similarities are undefined (e.g. a concept "
            "absent from or present in every sample, a neuron that never or always fires, a "
            "constant input); they are NaN and never win an argmax",
            UndefinedSimilarityWarning, stacklevel=stacklevel)


def warn_low_frequency_accuracy(p: Prepared, stacklevel: int = 3) -> None:
    """Warn when accuracy is used with concepts rarer than 5% (or commoner than 95%)."""
    if p.metric.name != "accuracy":
        return
    c = p.concepts
    if sp.issparse(c):
        present = np.asarray((c >= 0.5).sum(axis=0)).reshape(-1) if p.sample_weight is None \
            else np.asarray((c >= 0.5).T @ p.sample_weight).reshape(-1)
    else:
        z = np.asarray(c) >= 0.5
        present = z.sum(axis=0) if p.sample_weight is None else p.sample_weight @ z
    freq = present / p.design.total
    rare = int(np.sum(np.minimum(freq, 1 - freq) < LOW_FREQUENCY_ACCURACY))
    if rare:
        warnings.warn(
            f"accuracy with {rare} concept(s) of frequency below {LOW_FREQUENCY_ACCURACY} "
            "(or above 1 - it): a neuron that never fires scores 1 - p_c, so accuracy favours "
            "rare concepts regardless of the neuron; prefer iou, f1 or auroc",
            LowFrequencyAccuracyWarning, stacklevel=stacklevel)


def similarity(activations: Any, concepts: Any, *, metric: str, sample_weight: Any = None,
               groups: Any = None, threshold: float | None = None,
               top_frac: float | None = None, truth: str = "concept",
               wpmi_lambda: float = 1.0, backend: str = "memory",
               client: Any = None) -> np.ndarray:
    """Similarity of every neuron with every concept.

    Parameters
    ----------
    activations : array-like of shape (n_samples, n_neurons)
        Numpy arrays, memmaps and torch tensors are accepted.
    concepts : array-like or scipy.sparse of shape (n_samples, n_concepts)
        Values in [0, 1] (binary or soft). Binarized at 0.5 except for
        correlation, cosine and mad, which use the soft values.
    metric : str
        One of :func:`neurocert.available_metrics`.
    sample_weight : array-like of shape (n_samples,), optional
        Non-negative weights; integer weights equal repeating samples.
    groups : array-like of shape (n_samples,), optional
        Independent unit of each sample (an image for pixels, a document for
        tokens). Similarities sum over all samples; bounds count groups.
    threshold : float, optional
        Count metrics: the neuron is active where ``activation > threshold``.
    top_frac : float in (0, 1), optional
        Count metrics: the neuron is active on its top ``top_frac`` (weighted) samples,
        per neuron (NetDissect uses 0.005). See :mod:`neurocert.binarize`.
    truth : {"concept", "neuron"}
        ``"concept"``: precision = P(concept | active), recall = P(active | concept).
    wpmi_lambda : float
        Weight of ``log p(c)`` in WPMI.
    backend : {"memory", "blocks", "dask"}
        ``"memory"`` (default) computes here; ``"blocks"`` streams neuron blocks
        out of core (``activations`` may be a Zarr directory or ``.npy`` path);
        ``"dask"`` runs the blocks on a Dask cluster. Results are identical
        (:mod:`neurocert.distributed`, ``docs/distributed.md``).
    client : distributed.Client or str, optional
        With ``backend="dask"``: the client or a scheduler address; default: a
        ``LocalCluster`` started for this call.

    Returns
    -------
    ndarray of shape (n_neurons, n_concepts)
        NaN where undefined (with an :class:`~neurocert.exceptions.UndefinedSimilarityWarning`).

    Notes
    -----
    AUROC is computed as ``0.5 + sum_i w_i (R_i - W/2) z_i / (P (W - P))`` with weighted
    midranks ``R_i = sum_{a_j < a_i} w_j + sum_{a_j = a_i} w_j / 2``: one sort per neuron
    and one matrix product. Count metrics come from ``tp = (m * w)^T z`` (one float32
    matrix product, exact below 2**24 per block).

    Examples
    --------
    >>> import numpy as np, neurocert
    >>> a = np.array([[0.1], [0.9], [0.8], [0.2]])
    >>> c = np.array([[0, 1], [1, 0], [1, 0], [0, 1]])
    >>> neurocert.similarity(a, c, metric="auroc")
    array([[1., 0.]])
    """
    if _backend.wants_blocks(backend, client):
        from . import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.similarity(
                activations, concepts, metric=metric, sample_weight=sample_weight, groups=groups,
                threshold=threshold, top_frac=top_frac, truth=truth, wpmi_lambda=wpmi_lambda,
                client=cl)
    p = prepare(activations, concepts, metric=metric, sample_weight=sample_weight, groups=groups,
                threshold=threshold, top_frac=top_frac, truth=truth, wpmi_lambda=wpmi_lambda)
    warn_low_frequency_accuracy(p)
    values = p.metric.finalize(compute_stats(p), p.options)
    warn_undefined(values, p.metric)
    return values
