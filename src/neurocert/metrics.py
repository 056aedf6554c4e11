"""Similarity metrics: a registry of finalize steps over sufficient statistics.

Conventions (see ``docs/theory.md``):

* By default the **concept is the truth and the active neuron the prediction**,
  as in ``sklearn.metrics.precision_score(y_true=concept, y_pred=neuron_active)``:
  precision = P(concept | neuron active), recall = P(neuron active | concept).
  ``truth="neuron"`` flips it (Neuron_Eval's direction).
* Count metrics use a binarized neuron and concepts binarized at 0.5.
* AUROC and average precision use the raw activation as the score for the
  binarized concept; ties get half credit (midranks), as in scikit-learn.
* Correlation, cosine and mean activation difference (``mad``) use raw
  activations and soft concept values.
* Undefined values (an empty denominator, a constant input) are NaN.

Every count metric is a function ``g(fc, f, c, s)`` of the joint mass ``fc``, the
neuron mass ``f``, the concept mass ``c`` and the total ``s``; it is homogeneous of
degree 0 and non-decreasing in ``fc`` and ``s``, non-increasing in ``f`` and ``c``.
The bound engines in :mod:`neurocert.bounds` rely on that monotonicity.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
import numpy as np

from ._intervals import clopper_pearson
from .exceptions import ValidationError
from .sufficient import APStats, CountStats, MomentStats, RankStats

__all__ = [
    "Metric",
    "MetricOptions",
    "available_metrics",
    "get_metric",
    "register_metric",
    "unregister_metric",
]

STATISTICS = ("count", "rank", "ap", "moment")


@dataclass(frozen=True)
class MetricOptions:
    """Options shared by the metrics.

    Attributes
    ----------
    truth : {"concept", "neuron"}
        Which side is the ground truth for precision/recall-type metrics.
    wpmi_lambda : float
        Weight ``lambda`` of ``log p(c)`` in WPMI.
    """

    truth: str = "concept"
    wpmi_lambda: float = 1.0

    def __post_init__(self) -> None:
        if self.truth not in ("concept", "neuron"):
            raise ValidationError(f"`truth` must be 'concept' or 'neuron'; got {self.truth!r}")
        if not (np.isfinite(self.wpmi_lambda) and self.wpmi_lambda >= 0):
            raise ValidationError(f"`wpmi_lambda` must be >= 0; got {self.wpmi_lambda!r}")


@dataclass(frozen=True)
class Metric:
    """A similarity metric: sufficient statistics, a finalize step, and optional bounds.

    Attributes
    ----------
    name : str
    statistics : {"count", "rank", "ap", "moment"}
        Which sufficient statistics it is computed from.
    lower, upper : float
        Range of the metric.
    finalize : callable(stats, options) -> ndarray (n_neurons, n_concepts)
        Returns NaN where the metric is undefined.
    null : callable(stats, options) -> ndarray or None
        Value a neuron independent of the concept would get (chance level).
    bound : callable(stats, delta, n_simultaneous, options) -> (lower, upper) or None
        Confidence limits valid simultaneously over ``n_simultaneous`` concepts
        with probability >= 1 - delta. ``None``: no proven bound (limits are NaN).
    formula : callable(fc, f, c, s, options) or None
        Count metrics only: the metric as a function of masses (see module notes).
    conditional : callable or None
        Count metrics only: exact bounds given the counts for a fixed threshold.
    conditional_events : int
        Number of interval events ``conditional`` uses per concept.
    builtin : bool
    description : str
    """

    name: str
    statistics: str
    lower: float
    upper: float
    finalize: Callable[..., np.ndarray]
    null: Callable[..., np.ndarray] | None = None
    bound: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None
    formula: Callable[..., np.ndarray] | None = field(default=None, repr=False)
    conditional: Callable[..., tuple[np.ndarray, np.ndarray]] | None = field(default=None,
                                                                              repr=False)
    conditional_events: int = 1
    builtin: bool = False
    description: str = ""

    @property
    def binarized_neuron(self) -> bool:
        """Whether the metric needs a binarized neuron (threshold, top_frac or 0/1)."""
        return self.statistics == "count"


_REGISTRY: dict[str, Metric] = {}


def available_metrics() -> list[str]:
    """Names of every registered metric, sorted."""
    return sorted(_REGISTRY)


def get_metric(metric: str | Metric) -> Metric:
    """Look up a metric by name; unknown names raise an error listing the known ones."""
    if isinstance(metric, Metric):
        return metric
    try:
        return _REGISTRY[metric]
    except (KeyError, TypeError):
        raise ValidationError(
            f"unknown metric {metric!r}; known metrics: {', '.join(available_metrics())}"
        ) from None


def register_metric(name: str, *, statistics: str, finalize: Callable[..., np.ndarray],
                    lower: float, upper: float,
                    null: Callable[..., np.ndarray] | None = None,
                    bound: Callable[..., tuple[np.ndarray, np.ndarray]] | None = None,
                    description: str = "", overwrite: bool = False) -> Metric:
    """Register a user metric built from existing sufficient statistics.

    Parameters
    ----------
    name : str
        Name used as ``metric=name`` everywhere.
    statistics : {"count", "moment"}
        The sufficient statistics ``finalize`` receives: :class:`~neurocert.sufficient.CountStats`
        (binarized neuron and concept) or :class:`~neurocert.sufficient.MomentStats`.
    finalize : callable(stats, options) -> ndarray (n_neurons, n_concepts)
        Must return NaN where the metric is undefined.
    lower, upper : float
        The metric's range; confidence limits are clipped to it.
    null : callable(stats, options), optional
        Chance-level value per pair.
    bound : callable(stats, delta, n_simultaneous, options) -> (lower, upper), optional
        Valid simultaneous confidence limits. Without it, limits are NaN and a
        :class:`~neurocert.exceptions.NoBoundWarning` is emitted.
    overwrite : bool
        Allow replacing a user metric of the same name (built-ins cannot be replaced).

    Returns
    -------
    Metric

    Examples
    --------
    >>> import numpy as np, neurocert
    >>> def dice(s, options):
    ...     den = s.active[:, None] + s.present[None, :]
    ...     with np.errstate(invalid="ignore", divide="ignore"):
    ...         return np.where(den > 0, 2 * s.tp / den, np.nan)
    >>> m = neurocert.register_metric("dice", statistics="count", finalize=dice,
    ...                               lower=0.0, upper=1.0, overwrite=True)
    """
    if not isinstance(name, str) or not name:
        raise ValidationError(f"metric `name` must be a non-empty string; got {name!r}")
    if statistics not in ("count", "moment"):
        raise ValidationError(f"`statistics` must be 'count' or 'moment'; got {statistics!r}")
    if not callable(finalize):
        raise ValidationError("`finalize` must be callable")
    if not lower < upper:
        raise ValidationError(f"need lower < upper; got {lower!r}, {upper!r}")
    existing = _REGISTRY.get(name)
    if existing is not None and (existing.builtin or not overwrite):
        what = "a built-in metric" if existing.builtin else "already registered (pass overwrite=True)"
        raise ValidationError(f"metric {name!r} is {what}")
    m = Metric(name=name, statistics=statistics, lower=float(lower), upper=float(upper),
               finalize=finalize, null=null, bound=bound, description=description)
    _REGISTRY[name] = m
    return m


def unregister_metric(name: str) -> None:
    """Remove a user metric."""
    m = get_metric(name)
    if m.builtin:
        raise ValidationError(f"metric {name!r} is built in and cannot be removed")
    del _REGISTRY[name]


# ---------------------------------------------------------------------------
# count metrics as functions of masses


def _div(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.true_divide(a, b)


def _oriented(f, c, options: MetricOptions):
    return (f, c) if options.truth == "concept" else (c, f)


def _precision(fc, f, c, s, o):
    f, c = _oriented(f, c, o)
    return _div(fc, f)


def _recall(fc, f, c, s, o):
    f, c = _oriented(f, c, o)
    return _div(fc, c)


def _iou(fc, f, c, s, o):
    return _div(fc, f + c - fc)


def _f1(fc, f, c, s, o):
    return _div(2 * fc, f + c)


def _accuracy(fc, f, c, s, o):
    return _div(s - f - c + 2 * fc, s)


def _balanced(fc, f, c, s, o):
    f, c = _oriented(f, c, o)
    return 0.5 * (_div(fc, c) + _div(s - f - c + fc, s - c))


def _wpmi(fc, f, c, s, o):
    f, c = _oriented(f, c, o)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(_div(fc, f)) - o.wpmi_lambda * np.log(_div(c, s))


def _defined_precision(tp, f, c, s, o):
    f, c = _oriented(f, c, o)
    return f > 0


def _defined_recall(tp, f, c, s, o):
    f, c = _oriented(f, c, o)
    return c > 0


def _defined_union(tp, f, c, s, o):
    return (f + c - tp) > 0


def _defined_always(tp, f, c, s, o):
    return np.ones(np.broadcast_shapes(np.shape(tp), np.shape(f), np.shape(c)), dtype=bool)


def _defined_balanced(tp, f, c, s, o):
    f, c = _oriented(f, c, o)
    return (c > 0) & (c < s)


def _defined_wpmi(tp, f, c, s, o):
    return (f > 0) & (c > 0)


# exact conditional bounds for a fixed threshold, from counts (tp, f, c, W);
# `de` is the two-sided failure probability of each interval event.


def _cond_precision(tp, f, c, w, de, o):
    f, c = _oriented(f, c, o)
    return clopper_pearson(tp, f, de)


def _cond_recall(tp, f, c, w, de, o):
    f, c = _oriented(f, c, o)
    return clopper_pearson(tp, c, de)


def _cond_iou(tp, f, c, w, de, o):
    return clopper_pearson(tp, f + c - tp, de)


def _cond_f1(tp, f, c, w, de, o):
    lo, hi = clopper_pearson(tp, f + c - tp, de)
    return 2 * lo / (1 + lo), 2 * hi / (1 + hi)


def _cond_accuracy(tp, f, c, w, de, o):
    return clopper_pearson(w - f - c + 2 * tp, w, de)


def _cond_balanced(tp, f, c, w, de, o):
    f, c = _oriented(f, c, o)
    lo1, hi1 = clopper_pearson(tp, c, de)
    lo0, hi0 = clopper_pearson(w - f - c + tp, w - c, de)
    return 0.5 * (lo1 + lo0), 0.5 * (hi1 + hi0)


def _cond_wpmi(tp, f, c, w, de, o):
    f, c = _oriented(f, c, o)
    plo, phi = clopper_pearson(tp, f, de)
    clo, chi = clopper_pearson(c, w, de)
    with np.errstate(divide="ignore"):
        return (np.log(plo) - o.wpmi_lambda * np.log(chi),
                np.log(phi) - o.wpmi_lambda * np.log(clo))


def _count_finalize(formula, defined):
    def finalize(stats: CountStats, options: MetricOptions) -> np.ndarray:
        tp, f, c = stats.pair_arrays()
        s = stats.total
        val = formula(tp, f, c, s, options)
        ok = defined(tp, f, c, s, options)
        return np.where(ok, val, np.nan)
    return finalize


def _count_null(formula, defined):
    def null(stats: CountStats, options: MetricOptions) -> np.ndarray:
        _, f, c = stats.pair_arrays()
        s = stats.total
        fc0 = f * c / s
        val = formula(fc0, f, c, s, options)
        ok = defined(fc0, f, c, s, options)
        return np.where(ok, val, np.nan)
    return null


# ---------------------------------------------------------------------------
# rank, AP and moment metrics


def _auroc_finalize(stats: RankStats, options: MetricOptions) -> np.ndarray:
    p = stats.concept_row()
    den = p * (stats.total - p)
    ok = den > 0
    return np.where(ok, 0.5 + _div(stats.num, np.where(ok, den, 1.0)), np.nan)


def _auroc_null(stats: RankStats, options: MetricOptions) -> np.ndarray:
    p = stats.concept_row()
    ok = (p > 0) & (p < stats.total)
    return np.broadcast_to(np.where(ok, 0.5, np.nan), stats.num.shape).copy()


def _ap_finalize(stats: APStats, options: MetricOptions) -> np.ndarray:
    return np.where(stats.present[None, :] > 0, stats.ap, np.nan)


def _ap_null(stats: APStats, options: MetricOptions) -> np.ndarray:
    p = stats.present[None, :]
    return np.broadcast_to(np.where(p > 0, p / stats.total, np.nan), stats.ap.shape).copy()


def _moments(stats: MomentStats):
    sw = stats.total
    mx = stats.sx / sw
    mc = stats.sc / sw
    vx = np.maximum(stats.sxx / sw - mx**2, 0.0)
    vc = np.maximum(stats.scc / sw - mc**2, 0.0)
    cov = stats.sxc / sw - mx[:, None] * mc[None, :]
    return cov, vx, vc


def _correlation(stats: MomentStats, options: MetricOptions) -> np.ndarray:
    cov, vx, vc = _moments(stats)
    ok = ((~stats.constant_neuron & (vx > 0))[:, None]
          & (~stats.constant_concept & (vc > 0))[None, :])
    den = np.sqrt(vx[:, None] * vc[None, :])
    return np.where(ok, np.clip(_div(cov, np.where(ok, den, 1.0)), -1, 1), np.nan)


def _raw_moments(stats: MomentStats):
    s = stats.shift
    sac = stats.sxc + s[:, None] * stats.sc[None, :]
    saa = stats.sxx + 2 * s * stats.sx + s**2 * stats.total
    sa = stats.sx + s * stats.total
    return sac, saa, sa


def _cosine(stats: MomentStats, options: MetricOptions) -> np.ndarray:
    sac, saa, _ = _raw_moments(stats)
    den = np.sqrt(np.maximum(saa, 0)[:, None] * stats.scc[None, :])
    ok = den > 0
    return np.where(ok, np.clip(_div(sac, np.where(ok, den, 1.0)), -1, 1), np.nan)


def _cosine_null(stats: MomentStats, options: MetricOptions) -> np.ndarray:
    _, saa, sa = _raw_moments(stats)
    num = sa[:, None] * stats.sc[None, :] / stats.total
    den = np.sqrt(np.maximum(saa, 0)[:, None] * stats.scc[None, :])
    ok = den > 0
    return np.where(ok, _div(num, np.where(ok, den, 1.0)), np.nan)


def _mad(stats: MomentStats, options: MetricOptions) -> np.ndarray:
    c = stats.sc[None, :]
    rest = stats.total - c
    ok = (c > 0) & (rest > 0)
    inside = _div(stats.sxc, np.where(ok, c, 1.0))
    outside = _div(stats.sx[:, None] - stats.sxc, np.where(ok, rest, 1.0))
    return np.where(ok, inside - outside, np.nan)


def _zero_null(stats: MomentStats, options: MetricOptions) -> np.ndarray:
    return np.where(np.isnan(_correlation(stats, options)), np.nan, 0.0)


def _mad_null(stats: MomentStats, options: MetricOptions) -> np.ndarray:
    c = stats.sc[None, :]
    ok = (c > 0) & (stats.total - c > 0)
    return np.broadcast_to(np.where(ok, 0.0, np.nan), stats.sxc.shape).copy()


# ---------------------------------------------------------------------------
# built-in registry


def _builtin(metric: Metric) -> None:
    _REGISTRY[metric.name] = metric


_COUNT_SPECS = {
    "accuracy": (_accuracy, _defined_always, _cond_accuracy, 1, 0.0, 1.0,
                 "P(neuron active == concept present)"),
    "precision": (_precision, _defined_precision, _cond_precision, 1, 0.0, 1.0,
                  "P(concept | neuron active) (truth='concept')"),
    "recall": (_recall, _defined_recall, _cond_recall, 1, 0.0, 1.0,
               "P(neuron active | concept) (truth='concept')"),
    "iou": (_iou, _defined_union, _cond_iou, 1, 0.0, 1.0,
            "P(active and concept) / P(active or concept)"),
    "f1": (_f1, _defined_union, _cond_f1, 1, 0.0, 1.0, "Dice / F1 = 2 IoU / (1 + IoU)"),
    "balanced_accuracy": (_balanced, _defined_balanced, _cond_balanced, 2, 0.0, 1.0,
                          "(TPR + TNR) / 2 with the concept as truth"),
    "wpmi": (_wpmi, _defined_wpmi, _cond_wpmi, 2, -np.inf, np.inf,
             "log P(concept | active) - lambda log P(concept)"),
}


def _install_builtins() -> None:
    from . import bounds  # bounds does not import this module at top level

    for name, (formula, defined, cond, events, lo, hi, desc) in _COUNT_SPECS.items():
        _builtin(Metric(
            name=name, statistics="count", lower=lo, upper=hi,
            finalize=_count_finalize(formula, defined), null=_count_null(formula, defined),
            bound=bounds.count_metric_bound(formula, cond, events), formula=formula,
            conditional=cond,
            conditional_events=events, builtin=True, description=desc))
    _builtin(Metric(name="auroc", statistics="rank", lower=0.0, upper=1.0,
                    finalize=_auroc_finalize, null=_auroc_null, bound=bounds.auroc_bound,
                    builtin=True,
                    description="P(score_pos > score_neg) + P(tie)/2, activation as score"))
    _builtin(Metric(name="average_precision", statistics="ap", lower=0.0, upper=1.0,
                    finalize=_ap_finalize, null=_ap_null, builtin=True,
                    description="step-wise average precision (scikit-learn)"))
    _builtin(Metric(name="correlation", statistics="moment", lower=-1.0, upper=1.0,
                    finalize=_correlation, null=_zero_null, builtin=True,
                    description="Pearson correlation of activation and soft concept"))
    _builtin(Metric(name="cosine", statistics="moment", lower=-1.0, upper=1.0,
                    finalize=_cosine, null=_cosine_null, builtin=True,
                    description="cosine similarity of activation and soft concept"))
    _builtin(Metric(name="mad", statistics="moment", lower=-np.inf, upper=np.inf,
                    finalize=_mad, null=_mad_null, builtin=True,
                    description="mean activation where concept present minus where absent"))


_install_builtins()
