"""Slow reference implementations written straight from the definitions.

Nothing here reuses neurocert code: every statistic is an explicit loop over
samples (or over positive/negative pairs for AUROC) in plain Python floats.
The definitions are those of ``docs/theory.md`` section 1:

* the concept is the truth and the active neuron the prediction
  (``truth="concept"``); ``truth="neuron"`` swaps the roles;
* count metrics use a binarized neuron (``a > threshold``, the weighted
  top-fraction rule, or 0/1 activations) and concepts binarized at 0.5;
* AUROC / average precision use the raw activation as score against the
  concept binarized at 0.5; ties get half credit;
* correlation, cosine and mad use raw activations and soft concept values;
* undefined values (an empty denominator, a constant input) are NaN.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

__all__ = [
    "COUNT_METRICS",
    "accuracy",
    "auroc",
    "average_precision",
    "balanced_accuracy",
    "binarize_neuron",
    "concept_present",
    "correlation",
    "cosine",
    "count_table",
    "f1",
    "iou",
    "mad",
    "precision",
    "recall",
    "reference_similarity",
    "top_frac_active",
    "wpmi",
]

NAN = float("nan")

COUNT_METRICS = ("accuracy", "precision", "recall", "iou", "f1", "balanced_accuracy", "wpmi")


# ---------------------------------------------------------------------------
# binarization


def concept_present(values) -> list[int]:
    """A concept is present on a sample when its (soft) value is >= 0.5."""
    return [1 if float(v) >= 0.5 else 0 for v in values]


def top_frac_active(a, q: float, w=None) -> list[int]:
    """The weighted top-fraction rule, by sorting and cumulative weights.

    ``k = max(1, ceil(q * W))`` with ``q`` read as the decimal number it prints
    as (so ``0.1 * 30`` is exactly 3); walk the samples from the largest
    activation down, accumulating weight; the cut-off ``t`` is the activation
    at which the cumulative weight first reaches ``k``; every sample with
    activation ``>= t`` is active (ties at the cut-off are all active).
    """
    a = [float(x) for x in a]
    n = len(a)
    w = [1.0] * n if w is None else [float(x) for x in w]
    total = 0.0
    for x in w:
        total += x
    k = math.ceil(Fraction(repr(float(q))) * Fraction(total))
    k = max(1, k)
    order = sorted(range(n), key=lambda i: -a[i])
    cum = 0.0
    cut = None
    for i in order:
        cum += w[i]
        if cum >= k:
            cut = a[i]
            break
    if cut is None:  # only reachable through float round-off of the weight sum
        cut = a[order[-1]]
    return [1 if x >= cut else 0 for x in a]


def binarize_neuron(a, *, threshold=None, top_frac=None, w=None) -> list[int]:
    """Binary activity of one neuron: ``a > threshold``, top fraction, or 0/1 values."""
    if threshold is not None:
        return [1 if float(x) > threshold else 0 for x in a]
    if top_frac is not None:
        return top_frac_active(a, top_frac, w)
    out = []
    for x in a:
        x = float(x)
        assert x in (0.0, 1.0), "activations must be 0/1 without threshold/top_frac"
        out.append(int(x))
    return out


# ---------------------------------------------------------------------------
# count metrics (from the weighted 2x2 table)


def count_table(y, z, w=None) -> tuple[float, float, float, float]:
    """Weighted (tp, fp, fn, tn) with ``y`` the neuron (prediction), ``z`` the concept."""
    n = len(y)
    w = [1.0] * n if w is None else [float(x) for x in w]
    tp = fp = fn = tn = 0.0
    for i in range(n):
        if y[i] and z[i]:
            tp += w[i]
        elif y[i] and not z[i]:
            fp += w[i]
        elif not y[i] and z[i]:
            fn += w[i]
        else:
            tn += w[i]
    return tp, fp, fn, tn


def _orient(y, z, truth):
    """Return (prediction, truth) label vectors for the requested direction."""
    if truth == "concept":
        return y, z
    if truth == "neuron":
        return z, y
    raise ValueError(truth)


def _ratio(num, den):
    return num / den if den > 0 else NAN


def accuracy(y, z, w=None, truth="concept"):
    """Weighted share of samples where the neuron's activity equals the concept."""
    tp, fp, fn, tn = count_table(y, z, w)
    return _ratio(tp + tn, tp + fp + fn + tn)


def precision(y, z, w=None, truth="concept"):
    """P(truth | prediction)."""
    pred, true = _orient(y, z, truth)
    tp, fp, fn, tn = count_table(pred, true, w)
    return _ratio(tp, tp + fp)


def recall(y, z, w=None, truth="concept"):
    """P(prediction | truth)."""
    pred, true = _orient(y, z, truth)
    tp, fp, fn, tn = count_table(pred, true, w)
    return _ratio(tp, tp + fn)


def iou(y, z, w=None, truth="concept"):
    """|active and present| / |active or present| (weighted)."""
    tp, fp, fn, tn = count_table(y, z, w)
    return _ratio(tp, tp + fp + fn)


def f1(y, z, w=None, truth="concept"):
    """Dice form of F1: 2 tp / (2 tp + fp + fn) (0 when tp = 0 and the union is not empty)."""
    tp, fp, fn, tn = count_table(y, z, w)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def balanced_accuracy(y, z, w=None, truth="concept"):
    """(TPR + TNR) / 2 with the `truth` side as ground truth."""
    pred, true = _orient(y, z, truth)
    tp, fp, fn, tn = count_table(pred, true, w)
    tpr = _ratio(tp, tp + fn)
    tnr = _ratio(tn, tn + fp)
    if math.isnan(tpr) or math.isnan(tnr):
        return NAN
    return 0.5 * (tpr + tnr)


def wpmi(y, z, w=None, truth="concept", lam=1.0):
    """log P(truth | prediction) - lambda log P(truth)."""
    pred, true = _orient(y, z, truth)
    tp, fp, fn, tn = count_table(pred, true, w)
    s = tp + fp + fn + tn
    if tp + fp <= 0 or tp + fn <= 0:
        return NAN
    p_true_given_pred = tp / (tp + fp)
    p_true = (tp + fn) / s
    first = math.log(p_true_given_pred) if p_true_given_pred > 0 else -math.inf
    return first - lam * math.log(p_true)


# ---------------------------------------------------------------------------
# score metrics


def auroc(a, z, w=None):
    """Weighted pairwise AUROC: sum over (positive i, negative j) of w_i w_j H(a_i - a_j),
    with H = 1 above, 1/2 on ties, 0 below, divided by (sum w_pos)(sum w_neg)."""
    a = [float(x) for x in a]
    n = len(a)
    w = [1.0] * n if w is None else [float(x) for x in w]
    pos = [i for i in range(n) if z[i]]
    neg = [i for i in range(n) if not z[i]]
    wp = sum(w[i] for i in pos)
    wn = sum(w[j] for j in neg)
    if wp <= 0 or wn <= 0:
        return NAN
    num = 0.0
    for i in pos:
        if w[i] == 0:
            continue
        for j in neg:
            if a[i] > a[j]:
                num += w[i] * w[j]
            elif a[i] == a[j]:
                num += 0.5 * w[i] * w[j]
    return num / (wp * wn)


def average_precision(a, z, w=None):
    """Step-wise AP: over distinct thresholds t (descending), sum of
    (R(t) - R(t_prev)) * P(t) with P, R the weighted precision and recall of ``a >= t``."""
    a = [float(x) for x in a]
    n = len(a)
    w = [1.0] * n if w is None else [float(x) for x in w]
    total_pos = sum(w[i] for i in range(n) if z[i])
    if total_pos <= 0:
        return NAN
    ap = 0.0
    prev_recall = 0.0
    for t in sorted(set(a), reverse=True):
        tp = 0.0
        sel = 0.0
        for i in range(n):
            if a[i] >= t:
                sel += w[i]
                if z[i]:
                    tp += w[i]
        rec = tp / total_pos
        prec = tp / sel if sel > 0 else 0.0
        ap += (rec - prev_recall) * prec
        prev_recall = rec
    return ap


def _positive_weight_values(x, w):
    return {float(x[i]) for i in range(len(x)) if w[i] > 0}


def correlation(a, c, w=None):
    """Weighted Pearson correlation of activation and soft concept (NaN if either is constant)."""
    a = [float(x) for x in a]
    c = [float(x) for x in c]
    n = len(a)
    w = [1.0] * n if w is None else [float(x) for x in w]
    if len(_positive_weight_values(a, w)) < 2 or len(_positive_weight_values(c, w)) < 2:
        return NAN
    sw = sum(w)
    ma = sum(w[i] * a[i] for i in range(n)) / sw
    mc = sum(w[i] * c[i] for i in range(n)) / sw
    cov = sum(w[i] * (a[i] - ma) * (c[i] - mc) for i in range(n))
    va = sum(w[i] * (a[i] - ma) ** 2 for i in range(n))
    vc = sum(w[i] * (c[i] - mc) ** 2 for i in range(n))
    return cov / math.sqrt(va * vc)


def cosine(a, c, w=None):
    """Weighted cosine similarity sum w a c / sqrt(sum w a^2 * sum w c^2)."""
    a = [float(x) for x in a]
    c = [float(x) for x in c]
    n = len(a)
    w = [1.0] * n if w is None else [float(x) for x in w]
    num = sum(w[i] * a[i] * c[i] for i in range(n))
    den = math.sqrt(sum(w[i] * a[i] ** 2 for i in range(n)) * sum(w[i] * c[i] ** 2 for i in range(n)))
    return num / den if den > 0 else NAN


def mad(a, c, w=None):
    """Weighted mean activation where the concept is present minus where it is absent,
    with soft membership weights c (present) and 1 - c (absent)."""
    a = [float(x) for x in a]
    c = [float(x) for x in c]
    n = len(a)
    w = [1.0] * n if w is None else [float(x) for x in w]
    w_in = sum(w[i] * c[i] for i in range(n))
    w_out = sum(w[i] * (1.0 - c[i]) for i in range(n))
    if w_in <= 0 or w_out <= 0:
        return NAN
    m_in = sum(w[i] * c[i] * a[i] for i in range(n)) / w_in
    m_out = sum(w[i] * (1.0 - c[i]) * a[i] for i in range(n)) / w_out
    return m_in - m_out


_COUNT = {
    "accuracy": accuracy,
    "precision": precision,
    "recall": recall,
    "iou": iou,
    "f1": f1,
    "balanced_accuracy": balanced_accuracy,
}


def reference_similarity(activations, concepts, metric, *, sample_weight=None, threshold=None,
                         top_frac=None, truth="concept", wpmi_lambda=1.0) -> np.ndarray:
    """All-pairs similarity matrix (n_neurons, n_concepts) by explicit loops.

    ``concepts`` may be dense or scipy.sparse (densified here).
    """
    A = np.asarray(activations, dtype=np.float64)
    C = concepts.toarray() if hasattr(concepts, "toarray") else np.asarray(concepts)
    C = np.asarray(C, dtype=np.float64)
    n, k = A.shape
    m = C.shape[1]
    w = None if sample_weight is None else [float(x) for x in np.asarray(sample_weight)]
    out = np.full((k, m), np.nan)
    for j in range(k):
        a = A[:, j].tolist()
        y = None
        if metric in COUNT_METRICS:
            y = binarize_neuron(a, threshold=threshold, top_frac=top_frac, w=w)
        for ci in range(m):
            soft = C[:, ci].tolist()
            z = concept_present(soft)
            if metric in _COUNT:
                v = _COUNT[metric](y, z, w, truth)
            elif metric == "wpmi":
                v = wpmi(y, z, w, truth, wpmi_lambda)
            elif metric == "auroc":
                v = auroc(a, z, w)
            elif metric == "average_precision":
                v = average_precision(a, z, w)
            elif metric == "correlation":
                v = correlation(a, soft, w)
            elif metric == "cosine":
                v = cosine(a, soft, w)
            elif metric == "mad":
                v = mad(a, soft, w)
            else:
                raise KeyError(metric)
            out[j, ci] = v
    return out
