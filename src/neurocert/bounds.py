"""Faithfulness bounds: certificates from observed counts and the planning form.

Certificates (``confidence_limits``) hold simultaneously over the concepts of a
neuron with probability >= 1 - delta, so they remain valid for the concept the
data selected. Three engines (proofs in ``docs/theory.md``):

* **conditional** (ungrouped samples, fixed threshold or 0/1 neuron): given the
  denominator count, the numerator of a ratio metric is binomial; exact
  Clopper-Pearson limits, Bonferroni over concepts.
* **box** (``top_frac`` and/or ``groups``): per-coordinate limits on the masses
  ``fc, f, c, s`` (exact binomial for samples, Bernoulli-KL Chernoff for groups),
  widened by the threshold slack of a data-dependent cut-off, then mapped through
  the metric's monotone formula.
* **AUROC**: Hoeffding's reduction of the two-sample U-statistic to a mean of
  ``min(n_pos, n_neg)`` i.i.d. [0, 1] kernels, then the Bernoulli-KL interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import stats as _st

from ._intervals import bernstein_radius, clopper_pearson, kl_interval, kl_mean_quantiles
from ._validation import check_probability
from .exceptions import NoBoundWarning, ValidationError

if TYPE_CHECKING:  # pragma: no cover
    from .metrics import Metric, MetricOptions
    from .sufficient import CountStats, RankStats

__all__ = [
    "auroc_bound",
    "confidence_limits",
    "count_metric_bound",
    "faithfulness_bound",
    "required_samples",
]


class NoBound(Exception):
    """Raised inside a bound function when no proven bound applies (reason in message)."""


# ---------------------------------------------------------------------------
# certificate engines


def threshold_band(design, threshold_delta: float) -> tuple[float, float]:
    """Weights ``[k_lo, k_hi]`` that hold the population top-``q`` set's weight ``N(tau_q)``
    with probability >= 1 - threshold_delta.

    Ungrouped: ``N(tau_q) ~ Binomial(W, q)`` (integer weights = repeated samples), so the
    band is its ``threshold_delta / 2`` and ``1 - threshold_delta / 2`` quantiles. Grouped
    (equal group weights): Chernoff quantiles of the mean of the per-group fractions.
    """
    q = design.top_frac
    if design.grouped:
        x_lo, x_hi = kl_mean_quantiles(q, design.n_units, math.log(2.0 / threshold_delta),
                                       iterations=100)
        return float(x_lo) * design.total, float(x_hi) * design.total
    w = round(design.total)
    k_lo = float(_st.binom.ppf(threshold_delta / 2, w, q))
    k_hi = float(_st.binom.ppf(1 - threshold_delta / 2, w, q))
    return k_lo, k_hi


def count_metric_bound(formula: Callable[..., np.ndarray], conditional: Callable[..., Any],
                       events: int) -> Callable[..., tuple[np.ndarray, np.ndarray]]:
    """Bound function of a built-in count metric (conditional or box engine).

    With ``top_frac`` the population top-``q`` set lies, with probability >= 1 -
    ``threshold_delta``, between the empirical top-``k_lo`` and top-``k_hi`` sets, so
    its counts are sandwiched by ``tp_lo``/``tp_hi`` and its size by ``[k_lo, k_hi]``;
    the remaining ``delta - threshold_delta`` is split over the concepts.
    """

    def bound(stats: CountStats, delta, n_simultaneous: int, options: MetricOptions):
        d = stats.design
        delta = np.asarray(delta, float)
        tp, f, c = stats.pair_arrays()
        tp_lo = tp_hi = tp
        f_lo = f_hi = f
        if d.top_frac is not None:
            if d.threshold_delta is None or stats.tp_lo is None:
                raise NoBound("top_frac statistics were computed without a threshold band")
            if d.grouped and not d.equal_groups:
                raise NoBound("top_frac bounds with groups need groups of equal total weight")
            tp_lo, tp_hi = stats.tp_lo, stats.tp_hi
            f_lo = np.full(f.shape, d.active_lo)
            f_hi = np.full(f.shape, d.active_hi)
            delta = delta - d.threshold_delta
        vacuous = delta <= 0
        delta = np.where(vacuous, 1.0, delta)
        if d.grouped:
            lo, hi = _box_bound(formula, stats, delta, n_simultaneous, options,
                                tp_lo, tp_hi, f_lo, f_hi)
        else:
            de = delta / (n_simultaneous * events)
            lo = _distinct_call(conditional, tp_lo, f_hi, c, d.total, de, options)[0]
            hi = _distinct_call(conditional, tp_hi, f_lo, c, d.total, de, options)[1]
        return np.where(vacuous, -np.inf, lo), np.where(vacuous, np.inf, hi)

    return bound


#: below this many pairs the exact limits are computed directly
_DISTINCT_MIN = 4096
_KEY_BITS = 21


def _distinct_call(conditional, tp, f, c, total, de, options) -> tuple[np.ndarray, np.ndarray]:
    """``conditional(tp, f, c, total, de, options)`` evaluated once per distinct count triple.

    The conditional limits are elementwise functions of ``(tp, f, c, de)``; integer
    counts repeat a lot (512 neurons x 1,000 concepts hold ~20,000 distinct pairs), so
    the inverse incomplete beta runs on the distinct ones and is scattered back: the
    same values, computed ~25x faster. Non-integer or large counts and varying ``de``
    are evaluated directly.
    """
    arrays = np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (tp, f, c, de)))
    if arrays[0].size < _DISTINCT_MIN:
        return conditional(*arrays[:3], total, arrays[3], options)
    shape = arrays[0].shape
    flat = [x.ravel() for x in arrays]
    if not (flat[3] == flat[3][0]).all():
        return conditional(*arrays[:3], total, arrays[3], options)
    limit = float(2**_KEY_BITS)
    for x in flat[:3]:
        if not ((x >= 0) & (x < limit) & (x == np.floor(x))).all():
            return conditional(*arrays[:3], total, arrays[3], options)
    key = flat[0].astype(np.int64)
    for x in flat[1:3]:
        key = (key << _KEY_BITS) | x.astype(np.int64)
    _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    if first.size > key.size // 2:
        return conditional(*arrays[:3], total, arrays[3], options)
    lo, hi = conditional(flat[0][first], flat[1][first], flat[2][first], total, flat[3][first],
                         options)
    return (np.asarray(lo)[inverse].reshape(shape), np.asarray(hi)[inverse].reshape(shape))


def _box_bound(formula, stats: CountStats, delta, n_simultaneous: int, options,
               tp_lo, tp_hi, f_lo_count, f_hi_count):
    """Grouped samples: Bernoulli-KL limits on each mass (per-group fractions in [0, 1])."""
    d = stats.design
    m = d.n_units
    scale = m * d.group_size

    def interval(x, de):
        return kl_interval(np.asarray(x, float) / scale, m, de)

    known_f = d.top_frac is not None
    known_s = d.equal_groups
    neuron_events = (0 if known_f else 1) + (0 if known_s else 1)
    de = delta / (neuron_events + 2 * n_simultaneous)
    _, _, c_obs = stats.pair_arrays()
    fc_lo, _ = interval(tp_lo, de)
    _, fc_hi = interval(tp_hi, de)
    c_lo, c_hi = interval(c_obs, de)
    if known_s:
        s_lo = s_hi = d.total / scale
    else:
        s_lo, s_hi = interval(d.total, de)
    if known_f:
        f_lo = f_hi = d.top_frac * s_lo
    else:
        f_lo, f_hi = interval(f_lo_count, de)
    return _corner_limits(formula, options, fc_lo, fc_hi, f_lo, f_hi, c_lo, c_hi, s_lo, s_hi)


def _corner_limits(formula, options, fc_lo, fc_hi, f_lo, f_hi, c_lo, c_hi, s_lo, s_hi):
    """Limits of a monotone count formula over the *feasible* part of a box of masses.

    The formula is non-decreasing in ``fc`` and ``s`` and non-increasing in ``f`` and
    ``c`` only where its denominators are positive, i.e. on feasible masses
    (``fc <= min(f, c)``, ``s > max(f, c)``). The upper corner therefore raises ``f``
    and ``c`` to at least ``fc_hi`` and ``s`` to at least the union; the lower corner
    is used only when ``s_lo`` exceeds ``f_hi`` and ``c_hi`` (otherwise NaN, which the
    caller turns into the vacuous limit).
    """
    fc_hi = np.minimum(fc_hi, np.minimum(f_hi, c_hi))
    fc_lo = np.minimum(fc_lo, fc_hi)
    f_u = np.maximum(f_lo, fc_hi)
    c_u = np.maximum(c_lo, fc_hi)
    s_u = np.maximum(s_hi, f_u + c_u - fc_hi)
    hi = formula(fc_hi, f_u, c_u, s_u, options)
    hi = np.where(s_u > np.maximum(f_u, c_u), hi, np.nan)
    # monotone on the path to the lower corner while s > f, s > c and fc <= min(f, c)
    # (the last holds since fc_lo <= fc_hi <= min(f_hi, c_hi)); the union may exceed s there
    lo = formula(fc_lo, f_hi, c_hi, s_lo, options)
    lo = np.where(s_lo > np.maximum(f_hi, c_hi), lo, np.nan)
    return lo, hi


def auroc_bound(stats: RankStats, delta, n_simultaneous: int, options):
    """Simultaneous AUROC limits: Hoeffding's U-statistic reduction + Bernoulli-KL."""
    d = stats.design
    if d.grouped:
        raise NoBound("no proven AUROC bound for grouped samples (pixels/tokens) yet")
    p = stats.concept_row()
    n_eff = np.minimum(p, d.total - p)
    from .metrics import _auroc_finalize  # local: metrics imports this module

    est = _auroc_finalize(stats, options)
    return kl_interval(np.nan_to_num(est, nan=0.5), n_eff,
                       np.asarray(delta, float) / n_simultaneous)


def confidence_limits(stats, metric: Metric, *, delta, n_simultaneous: int,
                      options: MetricOptions,
                      estimate: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper confidence limits of the population similarity for every pair.

    Valid simultaneously over ``n_simultaneous`` concepts of each neuron with
    probability >= 1 - delta. Undefined estimates get the vacuous interval (the
    metric's range). Metrics without a proven bound give NaN and a
    :class:`~neurocert.exceptions.NoBoundWarning`.
    """
    if estimate is None:
        estimate = metric.finalize(stats, options)
    if metric.bound is None:
        warnings.warn(f"metric {metric.name!r} has no rate function; confidence limits are NaN",
                      NoBoundWarning, stacklevel=3)
        nan = np.full(estimate.shape, np.nan)
        return nan, nan.copy()
    try:
        with np.errstate(divide="ignore", invalid="ignore"):
            lo, hi = metric.bound(stats, delta, n_simultaneous, options)
    except NoBound as exc:
        warnings.warn(f"metric {metric.name!r}: {exc}; confidence limits are NaN",
                      NoBoundWarning, stacklevel=3)
        nan = np.full(estimate.shape, np.nan)
        return nan, nan.copy()
    lo = np.broadcast_to(lo, estimate.shape)
    hi = np.broadcast_to(hi, estimate.shape)
    undefined = np.isnan(estimate)
    lo = np.where(np.isnan(lo) | undefined, metric.lower, lo)
    hi = np.where(np.isnan(hi) | undefined, metric.upper, hi)
    return np.clip(lo, metric.lower, metric.upper), np.clip(hi, metric.lower, metric.upper)


# ---------------------------------------------------------------------------
# planning form


def _as_freq(x, name):
    if x is None:
        return None
    a = np.asarray(x, dtype=float)
    if not np.all((a > 0) & (a < 1)):
        raise ValidationError(f"`{name}` must lie in (0, 1); got {x!r}")
    return a


def _planning_count(metric, n, delta, n_concepts, cf, nf, top_frac, options, cells):
    """Valid planning radius for a count metric (see docs/theory.md, 'planning form')."""
    n_events = 2 * n_concepts + 1
    de = delta / n_events
    c = cf
    rho_c = bernstein_radius(n, c * (1 - c), de)
    c_lo, c_hi = np.maximum(c - rho_c, 0), np.minimum(c + rho_c, 1)
    if top_frac is not None:
        q = top_frac
        f = np.full(np.shape(c), q)
        k = max(1, math.ceil(q * n - 1e-12 * n))
        q_lo, q_hi = clopper_pearson(k, n, de)
        slack_up, slack_dn = float(q - q_lo), float(q_hi - q)
        f_lo, f_hi = f, f + 1.0 / n + (k / n - q)
    else:
        f = nf
        rho_f = bernstein_radius(n, f * (1 - f), de)
        f_lo, f_hi = np.maximum(f - rho_f, 0), np.minimum(f + rho_f, 1)
        slack_up = slack_dn = 0.0
    f, c = np.broadcast_arrays(f, c)
    top = np.minimum(f, c)
    r = np.zeros(np.shape(top))
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(cells):
            a = top * i / cells
            b = top * (i + 1) / cells
            p_worst = np.clip(np.where(b < 0.5, b, np.where(a > 0.5, a, 0.5)), 0, 1)
            lo_ext = np.maximum(a - slack_dn, 0)
            hi_ext = b + slack_up
            v = np.maximum(p_worst * (1 - p_worst),
                           np.minimum(hi_ext, 0.5) * (1 - np.minimum(hi_ext, 0.5)))
            rho = bernstein_radius(n, v, de)
            fc_lo = np.maximum(lo_ext - rho, 0)
            fc_hi = np.minimum(hi_ext + rho, np.minimum(f_hi, c_hi))
            g_lo, g_hi = _corner_limits(metric.formula, options, fc_lo, fc_hi, f_lo, f_hi,
                                        c_lo, c_hi, 1.0, 1.0)
            g_lo = np.where(np.isnan(g_lo), -np.inf, g_lo)
            g_hi = np.where(np.isnan(g_hi), np.inf, g_hi)
            sim_a = metric.formula(a, f, c, 1.0, options)
            sim_b = metric.formula(b, f, c, 1.0, options)
            cell = np.maximum(g_hi - sim_a, sim_b - g_lo)
            cell = np.where(np.isnan(cell), np.inf, cell)
            r = np.maximum(r, cell)
    return r


def faithfulness_bound(metric: str, *, n: int, delta: float = 0.05, n_concepts: int = 1,
                       concept_freq=None, neuron_freq=None, top_frac: float | None = None,
                       truth: str = "concept", cells: int = 64) -> np.ndarray | float:
    """Planning-form radius ``r``: ``|sim_hat - sim| <= r`` for all ``n_concepts`` concepts
    simultaneously with probability >= 1 - delta.

    Parameters
    ----------
    metric : str
        A built-in metric with a rate function: accuracy, precision, recall, iou,
        f1, balanced_accuracy, wpmi or auroc.
    n : int
        Probing-set size (independent samples).
    delta : float
        Failure probability.
    n_concepts : int
        Number of concepts the statement is uniform over (Bonferroni).
    concept_freq, neuron_freq : float or array
        Assumed population frequencies ``P(concept)`` and ``P(neuron active)``.
        ``neuron_freq`` is replaced by ``top_frac`` when the neuron is binarized by a
        data-dependent top fraction.
    top_frac : float, optional
        Data-dependent binarization level; the estimand is the similarity at the
        population quantile, and the bound includes the threshold slack.
    truth : {"concept", "neuron"}
    cells : int
        Grid resolution for the unknown joint frequency (the supremum over each
        cell is taken rigorously, so any value is valid; more cells are tighter).

    Returns
    -------
    float or ndarray
        Radius (may be ``inf``). Arrays broadcast ``concept_freq`` and ``neuron_freq``.

    Notes
    -----
    The observed counts are random, so delta is split by Bonferroni: for count
    metrics, one event per concept for the joint count, one per concept for the
    concept count, and one per neuron for the neuron count (or the threshold
    event of ``top_frac``); accuracy with a fixed threshold uses Hoeffding over ``n``;
    AUROC splits each concept's share equally between the event that
    ``min(n_pos, n_neg)`` falls below its lower binomial quantile and the deviation
    event. Proofs are in ``docs/theory.md``.
    """
    from .metrics import MetricOptions, get_metric

    m = get_metric(metric)
    options = MetricOptions(truth=truth)
    delta = check_probability(delta, "delta")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValidationError(f"`n` must be a positive integer; got {n!r}")
    if not (isinstance(n_concepts, (int, np.integer)) and n_concepts >= 1):
        raise ValidationError(f"`n_concepts` must be a positive integer; got {n_concepts!r}")
    if top_frac is not None:
        top_frac = check_probability(top_frac, "top_frac")
    cf = _as_freq(concept_freq, "concept_freq")
    nf = _as_freq(neuron_freq, "neuron_freq")
    if m.name == "auroc":
        if cf is None:
            raise ValidationError("auroc's planning bound needs `concept_freq`")
        de = delta / n_concepts / 2
        m1 = _st.binom.ppf(de / 2, n, cf)
        m0 = _st.binom.ppf(de / 2, n, 1 - cf)
        m_low = np.minimum(m1, m0)
        with np.errstate(divide="ignore"):
            r = np.where(m_low > 0, np.sqrt(np.log(2 / de) / (2 * np.maximum(m_low, 1))), np.inf)
        return r if np.ndim(r) else float(r)
    if m.statistics != "count" or m.formula is None or not m.builtin:
        warnings.warn(f"metric {m.name!r} has no planning-form rate function; returning NaN",
                      NoBoundWarning, stacklevel=2)
        shape = np.broadcast_shapes(np.shape(cf) if cf is not None else (),
                                    np.shape(nf) if nf is not None else ())
        return np.full(shape, np.nan) if shape else float("nan")
    if m.name == "accuracy" and top_frac is None:
        r = math.sqrt(math.log(2 * n_concepts / delta) / (2 * n))
        shape = np.broadcast_shapes(np.shape(cf) if cf is not None else (),
                                    np.shape(nf) if nf is not None else ())
        return np.full(shape, r) if shape else r
    if cf is None:
        raise ValidationError(f"{m.name}'s planning bound needs `concept_freq`")
    if top_frac is None and nf is None:
        raise ValidationError(f"{m.name}'s planning bound needs `neuron_freq` or `top_frac`")
    r = _planning_count(m, n, delta, n_concepts, cf, nf, top_frac, options, cells)
    r = np.minimum(r, m.upper - m.lower) if np.isfinite(m.upper - m.lower) else r
    return r if np.ndim(r) else float(r)


def required_samples(metric: str, epsilon: float, *, delta: float = 0.05,
                     concept_freq=None, neuron_freq=None, n_concepts: int = 1,
                     top_frac: float | None = None, target: str = "estimation",
                     truth: str = "concept", max_n: int = 10**10) -> int:
    """Smallest ``n`` whose planning bound is at most ``epsilon``.

    Parameters
    ----------
    metric : str
        A metric with a planning bound (see :func:`faithfulness_bound`).
    epsilon : float
        Target radius.
    delta, concept_freq, neuron_freq, n_concepts, top_frac, truth
        As in :func:`faithfulness_bound`.
    target : {"estimation", "regret"}
        ``"estimation"`` bounds ``|sim_hat - sim|`` (uniform over ``n_concepts``);
        ``"regret"`` bounds ``sim(c*) - sim(c_hat) <= 2 r``.
    max_n : int
        Largest ``n`` searched.

    Returns
    -------
    int
        The smallest ``n`` with ``bound(n) <= epsilon < bound(n - 1)``.

    Examples
    --------
    >>> import neurocert
    >>> n = neurocert.required_samples("recall", 0.1, concept_freq=0.01, neuron_freq=0.05)
    >>> neurocert.faithfulness_bound("recall", n=n, concept_freq=0.01, neuron_freq=0.05) <= 0.1
    True

    Raises
    ------
    ValidationError
        If no ``n <= max_n`` reaches ``epsilon``.
    """
    if target not in ("estimation", "regret"):
        raise ValidationError(f"`target` must be 'estimation' or 'regret'; got {target!r}")
    if not (isinstance(epsilon, (int, float)) and epsilon > 0):
        raise ValidationError(f"`epsilon` must be a positive number; got {epsilon!r}")
    for name, v in (("concept_freq", concept_freq), ("neuron_freq", neuron_freq)):
        if v is not None and np.ndim(v) != 0:
            raise ValidationError(f"`{name}` must be a scalar for required_samples")
    factor = 2.0 if target == "regret" else 1.0

    def radius(n: int) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoBoundWarning)
            r = faithfulness_bound(metric, n=int(n), delta=delta, n_concepts=n_concepts,
                                   concept_freq=concept_freq, neuron_freq=neuron_freq,
                                   top_frac=top_frac, truth=truth)
        r = float(r)
        if math.isnan(r):
            raise ValidationError(f"metric {metric!r} has no planning-form bound")
        return factor * r

    if radius(1) <= epsilon:
        return 1
    lo, hi = 1, 2
    while radius(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > max_n:
            raise ValidationError(
                f"no n <= {max_n} reaches epsilon={epsilon} for {metric!r}")
    while hi - lo > 1:  # invariant: radius(lo) > epsilon >= radius(hi)
        mid = (lo + hi) // 2
        if radius(mid) <= epsilon:
            hi = mid
        else:
            lo = mid
    return hi
