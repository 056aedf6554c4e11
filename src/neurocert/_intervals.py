"""Elementary confidence intervals used by the bound engines (vectorized)."""

from __future__ import annotations

import numpy as np
from scipy import special

__all__ = ["bernstein_radius", "clopper_pearson", "kl_interval", "kl_mean_quantiles"]


def clopper_pearson(k, m, delta) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided exact (Clopper-Pearson) interval for a binomial proportion.

    Parameters
    ----------
    k, m : array_like
        Successes and trials (real values allowed for weighted counts); broadcast.
    delta : array_like
        Two-sided failure probability (``delta / 2`` in each tail).

    Returns
    -------
    lo, hi : ndarray
        ``[0, 1]`` where ``m == 0``.
    """
    k, m, delta = np.broadcast_arrays(np.asarray(k, float), np.asarray(m, float),
                                      np.asarray(delta, float))
    k = np.clip(k, 0.0, m)
    lo = np.zeros(k.shape)
    hi = np.ones(k.shape)
    has_lo = (k > 0) & (m > 0)
    has_hi = (k < m) & (m > 0)
    if has_lo.any():
        lo[has_lo] = special.betaincinv(k[has_lo], m[has_lo] - k[has_lo] + 1, delta[has_lo] / 2)
    if has_hi.any():
        hi[has_hi] = special.betaincinv(k[has_hi] + 1, m[has_hi] - k[has_hi],
                                        1 - delta[has_hi] / 2)
    return lo, hi


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(p > 0, p * np.log(p / q), 0.0)
        b = np.where(p < 1, (1 - p) * np.log((1 - p) / (1 - q)), 0.0)
    return a + b


def kl_interval(mean, m, delta, *, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Chernoff (Bernoulli-KL) interval for the mean of ``m`` i.i.d. variables in [0, 1].

    Any [0, 1] variable with mean ``mu`` has a moment generating function
    dominated by Bernoulli(mu), so ``P(mean_hat >= mu + t) <= exp(-m kl(mu + t, mu))``;
    the interval inverts this at ``delta / 2`` per side. It is also valid for a
    two-sample U-statistic with ``m = min(n_pos, n_neg)`` (Hoeffding 1963, sec. 5).

    Returns ``[0, 1]`` where ``m == 0``.
    """
    mean, m, delta = np.broadcast_arrays(np.asarray(mean, float), np.asarray(m, float),
                                         np.asarray(delta, float))
    mean = np.clip(mean, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        level = np.where(m > 0, np.log(2.0 / delta) / np.where(m > 0, m, 1.0), np.inf)
    lo_a, lo_b = np.zeros(mean.shape), mean.copy()   # lower limit in [0, mean]
    hi_a, hi_b = mean.copy(), np.ones(mean.shape)    # upper limit in [mean, 1]
    for _ in range(iterations):
        mid = 0.5 * (lo_a + lo_b)
        inside = _kl(mean, mid) <= level
        lo_b = np.where(inside, mid, lo_b)
        lo_a = np.where(inside, lo_a, mid)
        mid = 0.5 * (hi_a + hi_b)
        inside = _kl(mean, mid) <= level
        hi_a = np.where(inside, mid, hi_a)
        hi_b = np.where(inside, hi_b, mid)
    lo = np.where(_kl(mean, np.zeros(mean.shape)) <= level, 0.0, lo_a)
    hi = np.where(_kl(mean, np.ones(mean.shape)) <= level, 1.0, hi_b)
    lo = np.where(m > 0, lo, 0.0)
    hi = np.where(m > 0, hi, 1.0)
    return lo, hi


def bernstein_radius(m, variance, delta) -> np.ndarray:
    """Two-sided deviation radius of a mean of ``m`` i.i.d. [0, 1] variables with known
    variance bound: the smaller of Hoeffding's and Bernstein's (both deterministic).

    ``P(|mean_hat - mu| > r) <= delta``. Infinite where ``m == 0``.
    """
    m, variance, delta = np.broadcast_arrays(np.asarray(m, float), np.asarray(variance, float),
                                             np.asarray(delta, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.log(2.0 / delta)
        hoeff = np.sqrt(log_term / (2.0 * m))
        bern = np.sqrt(2.0 * variance * log_term / m) + log_term / (3.0 * m)
    r = np.minimum(hoeff, bern)
    return np.where(m > 0, r, np.inf)


def kl_mean_quantiles(mean, m, level, *, iterations: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """Where the mean of ``m`` i.i.d. [0, 1] variables of known mean ``mean`` can fall.

    Returns ``[x_lo, x_hi]`` with ``m kl(x, mean) = level`` on each side of ``mean``
    (0 or 1 where the whole side is within ``level``): by the Chernoff bound
    ``P(mean_hat <= x_lo) <= exp(-level)`` and likewise above ``x_hi``. This inverts the
    divergence in its first argument; :func:`kl_interval` inverts the second.
    """
    mean, m, level = np.broadcast_arrays(np.asarray(mean, float), np.asarray(m, float),
                                         np.asarray(level, float))
    lv = np.where(m > 0, level / np.where(m > 0, m, 1.0), np.inf)
    lo_a, lo_b = np.zeros(mean.shape), mean.copy()
    hi_a, hi_b = mean.copy(), np.ones(mean.shape)
    for _ in range(iterations):
        mid = 0.5 * (lo_a + lo_b)
        out = _kl(mid, mean) > lv
        lo_a = np.where(out, mid, lo_a)
        lo_b = np.where(out, lo_b, mid)
        mid = 0.5 * (hi_a + hi_b)
        out = _kl(mid, mean) > lv
        hi_b = np.where(out, mid, hi_b)
        hi_a = np.where(out, hi_a, mid)
    return lo_a, hi_b
