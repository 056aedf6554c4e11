"""Planted models with known population similarities, for testing and calibration.

Three generators, each with its ground truth available in closed form (or by
one-dimensional quadrature to ~1e-12):

* :class:`GaussianNeuron` -- one neuron and one concept,
  ``z ~ Bernoulli(concept_freq)``, ``a = separation * z + N(0, 1)``. Gives the
  exact cell masses at any threshold, the population value of every count
  metric and of AUROC, and fast samplers (many probing sets at once, or the
  exact multinomial cell counts) for coverage / violation-rate tests.
* :func:`planted_layer` -- a layer of neurons, each responding to at most one
  of many independent concepts, optionally with samples in groups of identical
  copies (to show that bounds counting samples instead of groups fail).
* :func:`near_tie_concepts` -- one neuron and several concepts whose population
  AUROCs are within a chosen number of standard errors of the best, to test
  the stability of the argmax concept.

Conventions (as in :mod:`neurocert.metrics`): the concept is the truth and the
binarized neuron ``y = 1[a > threshold]`` the prediction. With
``p_fc = P(y=1, z=1)``, ``p_f = P(y=1)`` and ``p_c = P(z=1)``:

=====================  ==================================================
precision              ``p_fc / p_f``
recall                 ``p_fc / p_c``
iou                    ``p_fc / (p_f + p_c - p_fc)``
f1                     ``2 p_fc / (p_f + p_c)``
accuracy               ``1 - p_f - p_c + 2 p_fc``
balanced_accuracy      ``(p_fc/p_c + (1 - p_f - p_c + p_fc)/(1 - p_c)) / 2``
wpmi                   ``log(p_fc / p_f) - lambda * log(p_c)``
auroc                  ``P(a+ > a-)`` (continuous activations, no ties)
=====================  ==================================================

All randomness is explicit: every sampler takes ``rng`` (``None``, an int, a
:class:`numpy.random.Generator` or a :class:`numpy.random.SeedSequence`),
converted once with :func:`numpy.random.default_rng`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from collections.abc import Iterator
from typing import Any, Union

import numpy as np
from scipy import integrate, optimize, special

from .exceptions import ValidationError

__all__ = [
    "POPULATION_METRICS",
    "GaussianNeuron",
    "NearTieConcepts",
    "PlantedLayer",
    "RNGLike",
    "near_tie_concepts",
    "planted_layer",
    "probit_concept_auroc",
]

RNGLike = Union[None, int, np.random.Generator, np.random.SeedSequence]
"""Accepted ``rng`` arguments: ``None``, an int seed, a Generator or a SeedSequence."""

POPULATION_METRICS: tuple[str, ...] = (
    "accuracy",
    "auroc",
    "balanced_accuracy",
    "f1",
    "iou",
    "precision",
    "recall",
    "wpmi",
)
"""Metrics :meth:`GaussianNeuron.population` knows in closed form."""


# ---------------------------------------------------------------------------
# validation helpers (local: simulation parameters, not data)


def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValidationError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    v = int(value)
    if v < minimum:
        raise ValidationError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    return v


def _check_open_unit(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"`{name}` must be a number in (0, 1); got {value!r}") from None
    if not (math.isfinite(v) and 0.0 < v < 1.0):
        raise ValidationError(f"`{name}` must lie in the open interval (0, 1); got {value!r}")
    return v


def _check_finite(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"`{name}` must be a finite number; got {value!r}") from None
    if not math.isfinite(v):
        raise ValidationError(f"`{name}` must be a finite number; got {value!r}")
    return v


def _broadcast_param(value: Any, name: str, length: int, what: str) -> np.ndarray:
    """A scalar or an array of shape ``(length,)`` as a float64 array ``(length,)``."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValidationError(
            f"`{name}` must be a number or an array of shape ({length},) (one per {what}); "
            f"got {value!r}"
        ) from None
    if arr.ndim == 0:
        return np.full(length, float(arr))
    if arr.shape != (length,):
        raise ValidationError(
            f"`{name}` must be a scalar or have shape ({length},) (one per {what}); "
            f"got shape {arr.shape}"
        )
    return arr.copy()


def _sf(x: Any) -> Any:
    """Standard normal survival function ``1 - Phi(x)``, accurate in the upper tail."""
    return special.ndtr(-np.asarray(x, dtype=np.float64))


# ---------------------------------------------------------------------------
# GaussianNeuron


@dataclass(frozen=True)
class GaussianNeuron:
    r"""One neuron and one planted concept with Gaussian activations.

    The model is

    .. math::

        z \sim \mathrm{Bernoulli}(\pi), \qquad a = d\,z + \varepsilon,
        \qquad \varepsilon \sim N(0, 1),

    with ``pi = concept_freq`` and ``d = separation``. The neuron is binarized
    at a fixed threshold ``tau``: ``y = 1[a > tau]``. Everything about the
    population is closed form:

    * ``P(a > tau) = (1 - pi) * Phibar(tau) + pi * Phibar(tau - d)``
    * ``p_fc = pi * Phibar(tau - d)``, ``p_c = pi``
    * ``AUROC = Phi(d / sqrt(2))``

    where ``Phibar = 1 - Phi`` is the standard normal survival function.

    Parameters
    ----------
    concept_freq : float
        ``pi = P(z = 1)``, in (0, 1).
    separation : float
        Mean shift ``d`` of the activation when the concept is present (any
        finite real; negative values make the neuron anti-selective).

    Examples
    --------
    >>> g = GaussianNeuron(concept_freq=0.1, separation=2.0)
    >>> tau = g.threshold_for(0.1)
    >>> round(g.population("iou", threshold=tau), 4)
    0.4409
    """

    concept_freq: float
    separation: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "concept_freq", _check_open_unit(self.concept_freq,
                                                                  "concept_freq"))
        object.__setattr__(self, "separation", _check_finite(self.separation, "separation"))

    # -- population ---------------------------------------------------------

    def survival(self, threshold: float) -> float:
        r"""Mixture survival function ``P(a > threshold)``.

        .. math:: S(\tau) = (1 - \pi)\,\bar\Phi(\tau) + \pi\,\bar\Phi(\tau - d)
        """
        t = float(threshold)
        pi, d = self.concept_freq, self.separation
        return float((1.0 - pi) * _sf(t) + pi * _sf(t - d))

    def threshold_for(self, neuron_freq: float) -> float:
        r"""The fixed threshold ``tau`` with ``P(a > tau) = neuron_freq``.

        Solved with :func:`scipy.optimize.brentq` on the mixture survival
        function :math:`S(\tau) - q`, bracketed by the two component quantiles
        (``S`` lies between ``Phibar(tau)`` and ``Phibar(tau - d)``). Since
        ``|S'| <= phi(0) < 0.4``, the tolerance ``xtol=1e-14`` makes
        ``|S(tau) - neuron_freq| < 1e-12``.

        Parameters
        ----------
        neuron_freq : float
            Target activation frequency ``q = P(a > tau)`` in (0, 1).

        Returns
        -------
        float
            The population ``(1 - q)``-quantile of the activation.
        """
        q = _check_open_unit(neuron_freq, "neuron_freq")
        d = self.separation
        base = -float(special.ndtri(q))  # Phibar^{-1}(q)
        lo = base + min(0.0, d) - 1.0
        hi = base + max(0.0, d) + 1.0

        def f(t: float) -> float:
            return self.survival(t) - q

        return float(optimize.brentq(f, lo, hi, xtol=1e-14, rtol=4 * np.finfo(float).eps,
                                     maxiter=500))

    def masses(self, threshold: float) -> dict[str, float]:
        r"""Closed-form cell masses at a fixed threshold.

        .. math::

            p_{fc} = \pi\,\bar\Phi(\tau - d), \qquad
            p_f = (1 - \pi)\,\bar\Phi(\tau) + \pi\,\bar\Phi(\tau - d), \qquad
            p_c = \pi .

        Parameters
        ----------
        threshold : float
            Fixed threshold ``tau``; the neuron is active when ``a > tau``.

        Returns
        -------
        dict
            ``{"p_fc": P(y=1, z=1), "p_f": P(y=1), "p_c": P(z=1)}`` as floats.
        """
        t = _check_finite(threshold, "threshold")
        pi, d = self.concept_freq, self.separation
        p_fc = float(pi * _sf(t - d))
        p_f = float((1.0 - pi) * _sf(t) + p_fc)
        return {"p_fc": p_fc, "p_f": p_f, "p_c": pi}

    def _resolve_threshold(self, threshold: float | None, neuron_freq: float | None,
                           top_frac: float | None) -> float:
        given = [(k, v) for k, v in (("threshold", threshold), ("neuron_freq", neuron_freq),
                                     ("top_frac", top_frac)) if v is not None]
        if len(given) != 1:
            names = ", ".join(k for k, _ in given) or "none"
            raise ValidationError(
                "give exactly one of `threshold`, `neuron_freq` and `top_frac` for a "
                f"thresholded metric; got {names}"
            )
        key, value = given[0]
        if key == "threshold":
            return _check_finite(value, "threshold")
        _check_open_unit(value, key)
        return self.threshold_for(value)

    def population(self, metric: str, *, threshold: float | None = None,
                   neuron_freq: float | None = None, top_frac: float | None = None,
                   wpmi_lambda: float = 1.0) -> float:
        """Population value of a similarity metric.

        Parameters
        ----------
        metric : str
            One of :data:`POPULATION_METRICS`: ``accuracy``, ``precision``,
            ``recall``, ``iou``, ``f1``, ``balanced_accuracy``, ``wpmi``,
            ``auroc`` (formulas in the module docstring).
        threshold : float, optional
            Fixed threshold ``tau`` (neuron active when ``a > tau``).
        neuron_freq : float, optional
            Use ``tau = threshold_for(neuron_freq)``.
        top_frac : float, optional
            Population version of ``top_frac=q`` binarization: the population
            ``(1 - q)``-quantile threshold, identical to ``neuron_freq=q``.
        wpmi_lambda : float
            Weight ``lambda`` of ``log p_c`` in WPMI.

        Exactly one of ``threshold``, ``neuron_freq`` and ``top_frac`` is
        required for the count metrics; all three are ignored for ``auroc``,
        whose value ``Phi(separation / sqrt(2))`` needs no threshold.

        Returns
        -------
        float
            The population value; NaN where the metric is undefined (an
            empty denominator, possible only when the threshold is so extreme
            that ``p_f`` underflows to 0).
        """
        if metric not in POPULATION_METRICS:
            raise ValidationError(
                f"`metric` must be one of {list(POPULATION_METRICS)}; got {metric!r}"
            )
        if metric == "auroc":
            return float(special.ndtr(self.separation / math.sqrt(2.0)))
        lam = _check_finite(wpmi_lambda, "wpmi_lambda")
        tau = self._resolve_threshold(threshold, neuron_freq, top_frac)
        m = self.masses(tau)
        fc, f, c = m["p_fc"], m["p_f"], m["p_c"]
        with np.errstate(divide="ignore", invalid="ignore"):
            fc_, f_, c_ = np.float64(fc), np.float64(f), np.float64(c)
            if metric == "accuracy":
                v = 1.0 - f_ - c_ + 2.0 * fc_
            elif metric == "precision":
                v = fc_ / f_
            elif metric == "recall":
                v = fc_ / c_
            elif metric == "iou":
                v = fc_ / (f_ + c_ - fc_)
            elif metric == "f1":
                v = 2.0 * fc_ / (f_ + c_)
            elif metric == "balanced_accuracy":
                v = 0.5 * (fc_ / c_ + (1.0 - f_ - c_ + fc_) / (1.0 - c_))
            else:  # wpmi
                v = np.log(fc_ / f_) - lam * np.log(c_)
        return float(v)

    # -- sampling -----------------------------------------------------------

    def sample(self, n: int, *, rng: RNGLike = None) -> tuple[np.ndarray, np.ndarray]:
        """Draw one probing set of ``n`` i.i.d. samples.

        Parameters
        ----------
        n : int
            Number of samples, ``>= 1``.
        rng : None, int, Generator or SeedSequence
            Source of randomness (``np.random.default_rng(rng)``). The concept
            column is drawn first, then the noise.

        Returns
        -------
        activations : ndarray of shape (n, 1), float64
            ``a = separation * z + N(0, 1)``.
        concepts : ndarray of shape (n, 1), float64
            ``z`` in {0, 1}.
        """
        n = _check_int(n, "n", 1)
        gen = np.random.default_rng(rng)
        z = (gen.random(n) < self.concept_freq).astype(np.float64)
        a = gen.standard_normal(n)
        a += self.separation * z
        return a.reshape(n, 1), z.reshape(n, 1)

    def sample_many(self, n: int, reps: int, *, rng: RNGLike = None,
                    dtype: Any = np.float32) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``reps`` independent probing sets of ``n`` samples, one per column.

        Meant for violation-rate tests of a vectorised statistic: column ``r``
        of both outputs is one probing set (so a "layer" of ``reps`` neurons and
        concepts whose pair ``(r, r)`` are the planted ones).

        Parameters
        ----------
        n : int
            Samples per probing set, ``>= 1``.
        reps : int
            Number of independent probing sets, ``>= 1``.
        rng : None, int, Generator or SeedSequence
            Source of randomness.
        dtype : {np.float32, np.float64}
            Floating dtype of both outputs.

        Returns
        -------
        activations : ndarray of shape (n, reps)
        concepts : ndarray of shape (n, reps)
            0/1 values.

        Notes
        -----
        Memory: each output holds ``n * reps * itemsize`` bytes (4 for float32,
        e.g. 400 MB per array at ``n = 1e5, reps = 1000``); the peak during
        generation is about ``2.5 * n * reps * itemsize`` bytes (the two outputs
        plus a boolean mask). For fixed thresholds and count metrics,
        :meth:`sample_counts` is far cheaper.
        """
        n = _check_int(n, "n", 1)
        reps = _check_int(reps, "reps", 1)
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ValidationError(f"`dtype` must be float32 or float64; got {dt}")
        gen = np.random.default_rng(rng)
        u = gen.random((n, reps), dtype=dt)
        present = u < dt.type(self.concept_freq)
        del u
        concepts = present.astype(dt)
        activations = gen.standard_normal((n, reps), dtype=dt)
        np.add(activations, dt.type(self.separation), out=activations, where=present)
        return activations, concepts

    def sample_counts(self, n: int, reps: int, *, threshold: float,
                      rng: RNGLike = None) -> dict[str, np.ndarray]:
        r"""Exact cell counts of ``reps`` probing sets of size ``n`` at a fixed threshold.

        The four cells ``(y, z)`` of one probing set follow
        ``Multinomial(n; p11, p10, p01, p00)`` with ``p11 = p_fc``,
        ``p10 = p_f - p_fc``, ``p01 = p_c - p_fc`` and
        ``p00 = 1 - p_f - p_c + p_fc``; this draws them directly, in
        ``O(reps)`` time and memory whatever ``n``.

        Parameters
        ----------
        n : int
            Samples per probing set, ``>= 1``.
        reps : int
            Number of independent probing sets, ``>= 1``.
        threshold : float
            Fixed threshold; the neuron is active when ``a > threshold``.
        rng : None, int, Generator or SeedSequence
            Source of randomness.

        Returns
        -------
        dict of int64 arrays, each of shape (reps,)
            ``tp`` (active and concept present), ``active`` (neuron active) and
            ``present`` (concept present).
        """
        n = _check_int(n, "n", 1)
        reps = _check_int(reps, "reps", 1)
        m = self.masses(threshold)
        p11 = m["p_fc"]
        p10 = max(m["p_f"] - p11, 0.0)
        p01 = max(m["p_c"] - p11, 0.0)
        p00 = max(1.0 - p11 - p10 - p01, 0.0)
        pvals = np.array([p11, p10, p01, p00])
        pvals /= pvals.sum()
        gen = np.random.default_rng(rng)
        cells = gen.multinomial(n, pvals, size=reps).astype(np.int64)
        tp = cells[:, 0]
        return {
            "tp": tp.copy(),
            "active": tp + cells[:, 1],
            "present": tp + cells[:, 2],
        }


# ---------------------------------------------------------------------------
# planted layer


@dataclass(frozen=True, eq=False)
class PlantedLayer:
    """A simulated layer with known neuron-concept pairs.

    Attributes
    ----------
    activations : ndarray of shape (n_samples, n_neurons), float64
    concepts : ndarray of shape (n_samples, n_concepts), float64
        0/1 values.
    planted : ndarray of shape (n_neurons,), int64
        Index of the concept neuron ``j`` responds to, ``-1`` for pure noise.
    concept_freq : ndarray of shape (n_concepts,), float64
        ``P(z_k = 1)``.
    separation : ndarray of shape (n_neurons,), float64
        Effective mean shift of each neuron (0 for unplanted neurons).
    groups : ndarray of shape (n_samples,), int64, or None
        Group label of each sample when the layer was drawn with ``groups``.
    """

    activations: np.ndarray
    concepts: np.ndarray
    planted: np.ndarray
    concept_freq: np.ndarray
    separation: np.ndarray
    groups: np.ndarray | None = None

    def neuron(self, j: int) -> GaussianNeuron | None:
        """The :class:`GaussianNeuron` model of neuron ``j`` with its planted concept.

        Returns ``None`` for an unplanted neuron.
        """
        k = int(self.planted[j])
        if k < 0:
            return None
        return GaussianNeuron(concept_freq=float(self.concept_freq[k]),
                              separation=float(self.separation[j]))


def planted_layer(n_samples: int, n_neurons: int, n_concepts: int, *,
                  concept_freq: float | np.ndarray = 0.1,
                  separation: float | np.ndarray = 2.0,
                  n_planted: int | None = None,
                  groups: int | None = None,
                  rng: RNGLike = None) -> PlantedLayer:
    r"""Simulate a layer where some neurons respond to one concept each.

    Concepts are independent Bernoulli columns,
    ``z[:, k] ~ Bernoulli(concept_freq[k])``. Neuron ``j`` is

    .. math::

        a_{ij} = d_j\, z_{i, k_j} + \varepsilon_{ij}, \qquad
        \varepsilon_{ij} \sim N(0, 1),

    for the first ``n_planted`` neurons, with planted concept
    ``k_j = j mod n_concepts``; the remaining neurons are pure noise
    (``planted[j] = -1``). Each planted neuron-concept pair is a
    :class:`GaussianNeuron` (see :meth:`PlantedLayer.neuron`).

    Parameters
    ----------
    n_samples, n_neurons, n_concepts : int
        Output sizes, each ``>= 1``.
    concept_freq : float or array of shape (n_concepts,)
        Concept prevalences, each in (0, 1).
    separation : float or array of shape (n_neurons,)
        Mean shift ``d_j`` of each neuron (ignored, and stored as 0, for
        unplanted neurons).
    n_planted : int, optional
        Number of planted neurons, ``0 <= n_planted <= n_neurons``; default all.
    groups : int, optional
        ``G``: arrange the samples in ``G`` contiguous groups of equal size
        ``n_samples / G`` (``n_samples`` must be divisible by ``G``). Within a
        group both the concepts and every neuron's noise are constant -- a
        group is one draw repeated -- so only ``G`` samples are independent.
        Used to show that bounds counting samples instead of groups fail.
    rng : None, int, Generator or SeedSequence
        Source of randomness. The concepts are drawn first, then the noise.

    Returns
    -------
    PlantedLayer
        With ``groups`` set to ``repeat(arange(G), n_samples // G)`` when
        ``groups`` is given, else ``None``.
    """
    n_samples = _check_int(n_samples, "n_samples", 1)
    n_neurons = _check_int(n_neurons, "n_neurons", 1)
    n_concepts = _check_int(n_concepts, "n_concepts", 1)
    freq = _broadcast_param(concept_freq, "concept_freq", n_concepts, "concept")
    if not np.all(np.isfinite(freq) & (freq > 0) & (freq < 1)):
        bad = freq[~(np.isfinite(freq) & (freq > 0) & (freq < 1))][0]
        raise ValidationError(
            f"`concept_freq` values must lie in the open interval (0, 1); got {bad!r}"
        )
    sep = _broadcast_param(separation, "separation", n_neurons, "neuron")
    if not np.all(np.isfinite(sep)):
        raise ValidationError(f"`separation` must be finite; got {sep[~np.isfinite(sep)][0]!r}")
    if n_planted is None:
        n_planted = n_neurons
    else:
        n_planted = _check_int(n_planted, "n_planted", 0)
        if n_planted > n_neurons:
            raise ValidationError(
                f"`n_planted` must be <= n_neurons ({n_neurons}); got {n_planted}"
            )
    if groups is None:
        n_draws, size = n_samples, 1
    else:
        n_groups = _check_int(groups, "groups", 1)
        if n_samples % n_groups != 0:
            raise ValidationError(
                f"`n_samples` ({n_samples}) must be divisible by `groups` ({n_groups}) so that "
                "all groups have equal size"
            )
        n_draws, size = n_groups, n_samples // n_groups

    planted = np.full(n_neurons, -1, dtype=np.int64)
    planted[:n_planted] = np.arange(n_planted, dtype=np.int64) % n_concepts
    sep = np.where(planted >= 0, sep, 0.0)

    gen = np.random.default_rng(rng)
    z = (gen.random((n_draws, n_concepts)) < freq).astype(np.float64)
    a = gen.standard_normal((n_draws, n_neurons))
    if n_planted:
        a[:, :n_planted] += sep[:n_planted] * z[:, planted[:n_planted]]
    group_labels = None
    if groups is not None:
        z = np.repeat(z, size, axis=0)
        a = np.repeat(a, size, axis=0)
        group_labels = np.repeat(np.arange(n_draws, dtype=np.int64), size)
    return PlantedLayer(activations=a, concepts=z, planted=planted, concept_freq=freq,
                        separation=sep, groups=group_labels)


# ---------------------------------------------------------------------------
# near-tie concepts (AUROC)

_SLOPE_MAX = 40.0


def probit_concept_auroc(slope: float, concept_freq: float) -> float:
    r"""Population AUROC of a shared ``N(0, 1)`` neuron for a probit concept.

    Model: ``a ~ N(0, 1)`` and ``P(z = 1 | a) = Phi(alpha + beta a)`` with
    ``beta = slope`` and the intercept
    ``alpha = Phi^{-1}(p) * sqrt(1 + beta^2)``, which makes the prevalence
    exactly ``P(z = 1) = Phi(alpha / sqrt(1 + beta^2)) = p = concept_freq``.

    By the rank form of the Mann-Whitney statistic (``a`` is continuous, so
    ``P(a+ > a-) = (E[Phi(a) | z = 1] - p / 2) / (1 - p)``),

    .. math::

        \mathrm{AUROC} = \frac{2 I - p^2}{2 p (1 - p)}, \qquad
        I = \int \phi(a)\,\Phi(a)\,\Phi(\alpha + \beta a)\,da ,

    a smooth one-dimensional integral evaluated with :func:`scipy.integrate.quad`
    (absolute error ~1e-14 on ``I``). Special cases: ``slope = 0`` gives 0.5;
    for ``p = 1/2``, ``AUROC = 1/2 + (2/pi) arcsin(beta / sqrt(2 (1 + beta^2)))``.

    Parameters
    ----------
    slope : float
        Probit slope ``beta`` (finite; negative gives AUROC < 0.5).
    concept_freq : float
        Prevalence ``p`` in (0, 1).

    Returns
    -------
    float
    """
    beta = _check_finite(slope, "slope")
    p = _check_open_unit(concept_freq, "concept_freq")
    return _probit_auroc(beta, p)


def _probit_auroc(beta: float, p: float) -> float:
    alpha = float(special.ndtri(p)) * math.hypot(1.0, beta)
    inv_sqrt_2pi = 1.0 / math.sqrt(2.0 * math.pi)

    def integrand(x: float) -> float:
        return (inv_sqrt_2pi * math.exp(-0.5 * x * x) * special.ndtr(x)
                * special.ndtr(alpha + beta * x))

    lim = 40.0
    points = None
    if beta != 0.0 and abs(alpha / beta) < lim:
        points = [-alpha / beta]  # where the link turns from ~0 to ~1
    val, _ = integrate.quad(integrand, -lim, lim, points=points, epsabs=1e-15,
                            epsrel=1e-13, limit=400)
    return (2.0 * val - p * p) / (2.0 * p * (1.0 - p))


@dataclass(frozen=True, eq=False)
class NearTieConcepts:
    """One neuron and several concepts whose AUROCs nearly tie for the best.

    Unpacks as ``activations, concepts, population_sim = near_tie_concepts(...)``.

    Attributes
    ----------
    activations : ndarray of shape (n_samples, 1), float64
    concepts : ndarray of shape (n_samples, n_concepts), float64
        0/1 values.
    population_sim : ndarray of shape (n_concepts,), float64
        Exact population AUROC of each concept (quadrature, error < 1e-10).
    slopes : ndarray of shape (n_concepts,)
        Probit slope ``beta_c`` of each concept.
    intercepts : ndarray of shape (n_concepts,)
        Probit intercept ``alpha_c = Phi^{-1}(p) sqrt(1 + beta_c^2)``.
    concept_freq : float
        Common prevalence ``p``.
    standard_error : float
        ``SE = sqrt(A (1 - A) / (n p (1 - p)))`` at the best AUROC ``A``.
    n_tied : int
        Number of leading concepts within ``gap_se * SE`` of the best.
    """

    activations: np.ndarray
    concepts: np.ndarray
    population_sim: np.ndarray
    slopes: np.ndarray
    intercepts: np.ndarray
    concept_freq: float
    standard_error: float
    n_tied: int

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.activations, self.concepts, self.population_sim))


def near_tie_concepts(n_samples: int, *, n_concepts: int, m_tied: int, concept_freq: float,
                      gap_se: float = 1.0, best_auroc: float = 0.8,
                      clear_gap_se: float = 8.0, rng: RNGLike = None) -> NearTieConcepts:
    r"""One neuron, many concepts, and a near tie for the best AUROC.

    Construction: one shared neuron ``a ~ N(0, 1)``; concept ``c`` is present
    independently (given ``a``) with probability ``Phi(alpha_c + beta_c a)``
    (a probit link). The intercept ``alpha_c = Phi^{-1}(p) sqrt(1 + beta_c^2)``
    holds every prevalence at exactly ``p = concept_freq``, and the population
    AUROC is the one-dimensional integral of :func:`probit_concept_auroc`,
    which increases with ``beta_c``. Slopes are solved with
    :func:`scipy.optimize.brentq` for target AUROCs:

    * ``SE = sqrt(A (1 - A) / (n p (1 - p)))`` with ``A = best_auroc``, an
      approximation of the standard error of an empirical AUROC at this ``n``;
    * tied concepts ``c = 0, ..., m_tied - 1``: target
      ``A - gap_se * SE * c / m_tied`` -- concept 0 is the best and every tied
      concept is within ``gap_se * SE`` of it;
    * the others: evenly spaced from ``A - (gap_se + clear_gap_se) * SE`` down to
      0.5 (all equal to the top value if that is already below 0.5), clearly
      worse.

    ``population_sim`` is the AUROC recomputed at the solved slope, so it is
    exact (quadrature error < 1e-10) whatever the root-finder tolerance.

    Parameters
    ----------
    n_samples : int
        Number of samples ``n``, ``>= 2``.
    n_concepts : int
        Number of concepts, ``>= m_tied``.
    m_tied : int
        Number of near-tied leading concepts, ``>= 1``.
    concept_freq : float
        Common prevalence ``p`` in (0, 1).
    gap_se : float
        Width of the tie band in standard errors, ``>= 0``.
    best_auroc : float
        Population AUROC ``A`` of concept 0, in (0.5, 0.999].
    clear_gap_se : float
        Extra margin, in standard errors, between the tie band and the best of
        the other concepts, ``> 0``.
    rng : None, int, Generator or SeedSequence
        Source of randomness (the neuron first, then the concepts).

    Returns
    -------
    NearTieConcepts
        Unpacks as ``(activations (n, 1), concepts (n, n_concepts),
        population_sim (n_concepts,))``; also carries the slopes, intercepts
        and standard error.
    """
    n = _check_int(n_samples, "n_samples", 2)
    n_concepts = _check_int(n_concepts, "n_concepts", 1)
    m_tied = _check_int(m_tied, "m_tied", 1)
    if m_tied > n_concepts:
        raise ValidationError(f"`m_tied` must be <= n_concepts ({n_concepts}); got {m_tied}")
    p = _check_open_unit(concept_freq, "concept_freq")
    gap = _check_finite(gap_se, "gap_se")
    if gap < 0:
        raise ValidationError(f"`gap_se` must be >= 0; got {gap_se!r}")
    best = _check_finite(best_auroc, "best_auroc")
    if not 0.5 < best <= 0.999:
        raise ValidationError(f"`best_auroc` must lie in (0.5, 0.999]; got {best_auroc!r}")
    clear = _check_finite(clear_gap_se, "clear_gap_se")
    if clear <= 0:
        raise ValidationError(f"`clear_gap_se` must be > 0; got {clear_gap_se!r}")

    se = math.sqrt(best * (1.0 - best) / (n * p * (1.0 - p)))
    targets = [best - gap * se * c / m_tied for c in range(m_tied)]
    n_worse = n_concepts - m_tied
    if n_worse:
        top = best - (gap + clear) * se
        bottom = min(0.5, top)
        targets += list(np.linspace(top, bottom, n_worse)) if n_worse > 1 else [top]
    lo_auc, hi_auc = _probit_auroc(-_SLOPE_MAX, p), _probit_auroc(_SLOPE_MAX, p)
    t_min = min(targets)
    if t_min <= lo_auc:
        raise ValidationError(
            f"the weakest target AUROC ({t_min:.4g}) is unreachable: `n_samples` ({n}) is too "
            f"small for gap_se={gap} and clear_gap_se={clear} (SE={se:.3g}); increase "
            "`n_samples` or reduce the gaps"
        )

    cache: dict[float, float] = {}

    def solve(target: float) -> float:
        if target not in cache:
            if target == 0.5:
                cache[target] = 0.0
            else:
                cache[target] = float(optimize.brentq(
                    lambda b: _probit_auroc(b, p) - target, -_SLOPE_MAX, _SLOPE_MAX,
                    xtol=1e-12, rtol=1e-12, maxiter=300))
        return cache[target]

    if max(targets) >= hi_auc:  # pragma: no cover - best_auroc <= 0.999 keeps this reachable
        raise ValidationError(f"`best_auroc` ({best}) is unreachable for concept_freq={p}")
    slopes = np.array([solve(float(t)) for t in targets])
    intercepts = float(special.ndtri(p)) * np.hypot(1.0, slopes)
    pop = np.array([_probit_auroc(float(b), p) for b in slopes])

    gen = np.random.default_rng(rng)
    a = gen.standard_normal(n)
    u = gen.random((n, n_concepts))
    z = (u < special.ndtr(intercepts[None, :] + slopes[None, :] * a[:, None])).astype(np.float64)
    return NearTieConcepts(activations=a.reshape(n, 1), concepts=z, population_sim=pop,
                           slopes=slopes, intercepts=intercepts, concept_freq=p,
                           standard_error=se, n_tied=m_tied)
