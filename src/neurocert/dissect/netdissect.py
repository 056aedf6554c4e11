"""Network Dissection with certificates and bootstrap explanations (BE).

NetDissect labels a convolutional unit by the concept whose pixel masks best
match the unit's top-quantile activation region: per unit a threshold at the
top ``q = 0.005`` quantile of all its low-resolution activations, maps upsampled
(bilinear) to the mask resolution, and the dataset-level IoU
``sum_g I_gc / sum_g U_gc`` with NetDissect's category-restricted union (an image
adds its active pixels to concept ``c``'s union only where ``c``'s primary
category is annotated). ``IoU >= 0.04`` makes a unit a "detector".

neurocert adds, with the *image* as the independent unit:

* :func:`netdissect` — the labels and, for every unit, limits on the population
  IoU of all concepts valid simultaneously (probability ``>= 1 - delta``),
  accounting for the data-dependent threshold; certified sets, regret bounds and
  the share of certified detectors (``result.summary(0.04, multiplicity=...)``);
* :func:`netdissect_explain` — BE: the label's distribution over bootstrap
  resamples of the images with the threshold recomputed in every replicate (or
  frozen), prediction sets and stability scores.

Both work from one streaming tally (:func:`netdissect_tally`); see
``docs/netdissect.md`` for the algorithm, the bound and the binned bootstrap.

Examples
--------
>>> import numpy as np
>>> from neurocert.data.segmentation import InMemorySegmentationSet
>>> from neurocert.dissect.netdissect import netdissect
>>> rng = np.random.default_rng(0)
>>> maps = [np.where(rng.random((1, 8, 8)) < 0.3, 0, -1) for _ in range(40)]
>>> seg = InMemorySegmentationSet(
...     images=[np.zeros((8, 8, 3), np.uint8)] * 40, label_maps_=maps,
...     image_labels_=[np.zeros(0, np.int32)] * 40, annotated_=np.ones((40, 1), bool),
...     labels=["spot"], categories=["object"], label_category=[0])
>>> acts = np.stack([(m[0] >= 0).astype(np.float32) + 0.01 * rng.random((8, 8))
...                  for m in maps])[:, None]
>>> res = netdissect(acts, seg, quantile=0.2)
>>> res.labels
['spot']
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from .. import _backend
from .._intervals import kl_interval
from .._progress import progress
from .._validation import check_int, check_n_folds, check_names, check_probability
from ..bounds import _corner_limits
from ..engine import _add_counts, argmax_votes, total_votes
from ..exceptions import OutOfGridWarning, ValidationError
from ..explanation import ExplanationResult, split_conformal_sets
from ..identify import (
    IdentificationResult,
    _explanation,
    bisect_p_values,
    certified_sets,
    rank_concepts,
)
from ..metrics import MetricOptions, get_metric
from ..resample import SCHEMES, as_seed_sequence, fold_weights, replicate_weights
from .netdissect_tally import (
    THRESHOLD_SHARE,
    NetDissectTally,
    bilinear_upsample,
    netdissect_tally,
    top_quantile_thresholds,
)

__all__ = [
    "DETECTOR_IOU",
    "NetDissectResult",
    "NetDissectTally",
    "OutOfGridWarning",
    "bilinear_upsample",
    "netdissect",
    "netdissect_explain",
    "netdissect_identify",
    "netdissect_replicates",
    "netdissect_tally",
    "top_quantile_thresholds",
]

#: NetDissect's detector level: a unit whose best IoU reaches it is "interpretable"
DETECTOR_IOU = 0.04
THRESHOLDS = ("recomputed", "frozen")
MODES = ("bootstrap", "split", "both")
#: bytes of float64 working arrays per replicate chunk
BATCH_BYTES = 128 * 2**20


# ---------------------------------------------------------------------------
# counts at a bin, under image weights


def _unit_slots(t: NetDissectTally, u: int, k_lo: int, k_hi: int) -> sp.csr_matrix:
    """Unit ``u``'s matrix with bins ``<= k_lo`` merged into slot 0 and bins
    ``k_lo + 1 .. k_hi`` in slots ``1 ..``; later bins dropped. (n, slots * cols)."""
    r = t.units[u]
    nc = t.n_columns
    k, col = np.divmod(r.indices.astype(np.int64), nc)
    keep = k <= k_hi
    slot = np.maximum(k - k_lo, 0)
    rows = np.repeat(np.arange(r.shape[0]), np.diff(r.indptr))
    n_slots = k_hi - k_lo + 1
    return sp.csr_matrix((r.data[keep].astype(np.float64),
                          (rows[keep], slot[keep] * nc + col[keep])),
                         shape=(r.shape[0], n_slots * nc))


def _unit_counts(t: NetDissectTally, u: int, w: np.ndarray, w_cat: np.ndarray,
                 bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted intersections and union active pixels of unit ``u`` at ``bins``.

    Parameters
    ----------
    w : ndarray (B, n) float64
        Image weights.
    w_cat : ndarray (B * n_categories, n) float64
        ``w`` times each category's annotated indicator.
    bins : ndarray (B, m) int
        Grid columns at which to evaluate each replicate (cumulative counts).

    Returns
    -------
    inter, union_active : ndarray (B, m, C)
    """
    b, _m = bins.shape
    c = t.n_concepts
    nc = t.n_columns
    k_lo, k_hi = int(bins.min()), int(bins.max())
    mat = _unit_slots(t, u, k_lo, k_hi)
    n_slots = k_hi - k_lo + 1
    y = np.asarray((mat.T @ w.T).T).reshape(b, n_slots, nc).cumsum(axis=1)
    act = mat[:, 0::nc]
    n_cat = len(t.categories)
    yc = np.asarray((act.T @ w_cat.T).T).reshape(b, n_cat, n_slots).cumsum(axis=2)
    rows = np.arange(b)[:, None]
    pos = bins - k_lo
    inter = y[rows, pos, 1:1 + c]                          # (B, m, C)
    extra = y[rows, pos, 1 + c:]
    cat_act = yc[rows, :, pos]                             # (B, m, n_cat)
    union_active = cat_act[:, :, t.label_category] + extra
    return inter, union_active


def _category_weights(t: NetDissectTally, w: np.ndarray) -> np.ndarray:
    ann = t.annotated.astype(np.float64)
    return (w[:, None, :] * ann.T[None, :, :]).reshape(-1, w.shape[1])


def _iou(inter: np.ndarray, union_active: np.ndarray, label: np.ndarray) -> np.ndarray:
    union = union_active + label - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), np.nan)


def _replicate_bins(t: NetDissectTally, w: np.ndarray, threshold: str
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per replicate and unit: grid column ``K`` at or above the replicate threshold,
    interpolation weight ``theta`` towards ``K + 1``, and an out-of-grid flag."""
    b = w.shape[0]
    n_units, n_grid = t.grid.shape
    if threshold == "frozen":
        k = np.broadcast_to(t.threshold_bin, (b, n_units)).copy()
        return k, np.zeros((b, n_units)), np.zeros((b, n_units), bool)
    counts = np.asarray((t.lowres.T @ w.T).T).reshape(b, n_units, n_grid).cumsum(axis=2)
    total = w.sum(axis=1) * t.positions_per_image
    target = t.quantile * total
    target = target + 1e-12 * np.maximum(1.0, target)
    ok = counts <= target[:, None, None]
    k = ok.sum(axis=2) - 1
    above = k < 0
    floor = t.unit_min if t.unit_min is not None else np.full(n_units, -np.inf)
    below = (k == n_grid - 1) & (t.grid[:, -1] > floor)[None, :]
    k = np.maximum(k, 0)
    nxt = np.minimum(k + 1, n_grid - 1)
    c_k = np.take_along_axis(counts, k[..., None], axis=2)[..., 0]
    c_n = np.take_along_axis(counts, nxt[..., None], axis=2)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = np.where((c_n > c_k) & ~above, (target[:, None] - c_k) / (c_n - c_k), 0.0)
    theta = np.clip(theta, 0.0, 1.0)
    return k, theta, above | below


def netdissect_replicates(t: NetDissectTally, weights: np.ndarray, *,
                          threshold: str = "recomputed", units: Any = None
                          ) -> tuple[np.ndarray, np.ndarray]:
    """IoU of every (unit, concept) under each row of image ``weights``.

    Parameters
    ----------
    t : NetDissectTally
    weights : ndarray (B, n_images)
        Image weights (integer weights = repeated images).
    threshold : {"recomputed", "frozen"}
        ``"recomputed"``: each row's threshold is the weighted top-``q`` quantile,
        located on the candidate grid from the low-resolution bin counts, and the
        counts are interpolated linearly (in the low-resolution count) between the
        two grid thresholds around it (needs ``t.n_bins > 0``). ``"frozen"``: the
        full-data threshold, exact.
    units : array of int, optional
        Subset of units (default all).

    Returns
    -------
    iou : ndarray (B, n_units, n_concepts)
        NaN where the union is empty.
    out_of_grid : ndarray (B, n_units) bool
        Replicates whose threshold fell outside the grid (clamped: approximate).
    """
    if threshold not in THRESHOLDS:
        raise ValidationError(f"`threshold` must be one of {THRESHOLDS}; got {threshold!r}")
    if threshold == "recomputed" and (t.quantile is None or t.n_bins == 0):
        raise ValidationError(
            "threshold='recomputed' needs a tally with candidate bins: call "
            "netdissect_tally(..., n_bins=128) with the quantile rule, or use "
            "threshold='frozen'")
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 2 or w.shape[1] != t.n_images:
        raise ValidationError(
            f"`weights` must have shape (n_replicates, {t.n_images}); got {w.shape}")
    units = np.arange(t.n_units) if units is None else np.asarray(units, np.int64)
    k, theta, oog = _replicate_bins(t, w, threshold)
    w_cat = _category_weights(t, w)
    label = np.asarray((t.label_pixels.T @ w.T).T)          # (B, C)
    out = np.empty((w.shape[0], units.size, t.n_concepts))
    n_grid = t.grid.shape[1]
    for i, u in enumerate(units):
        ku = k[:, u]
        bins = np.stack([ku, np.minimum(ku + 1, n_grid - 1)], axis=1)
        inter, ua = _unit_counts(t, int(u), w, w_cat, bins)
        th = theta[:, u][:, None]
        inter = (1 - th) * inter[:, 0] + th * inter[:, 1]
        ua = (1 - th) * ua[:, 0] + th * ua[:, 1]
        out[:, i] = _iou(inter, ua, label)
    return out, oog[:, units]


# ---------------------------------------------------------------------------
# identification with certificates


def _sums_at(t: NetDissectTally, bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Full-data intersections and union active pixels at one grid column per unit, (U, C).

    Column ``-1`` means "nothing active" (zero counts); column ``G`` (past the grid)
    means unknown, returned as every pixel (the largest possible counts).
    """
    w = np.ones((1, t.n_images))
    w_cat = _category_weights(t, w)
    n_grid = t.grid.shape[1]
    full = float(t.n_images * t.pixels_per_image)
    inter = np.empty((t.n_units, t.n_concepts))
    ua = np.empty((t.n_units, t.n_concepts))
    for u in range(t.n_units):
        k = int(bins[u])
        if k < 0:
            inter[u], ua[u] = 0.0, 0.0
        elif k >= n_grid:
            inter[u], ua[u] = full, full
        else:
            i_u, a_u = _unit_counts(t, u, w, w_cat, np.array([[k]]))
            inter[u], ua[u] = i_u[0, 0], a_u[0, 0]
    return inter, ua


def _band_delta(t: NetDissectTally, name: str, delta: float) -> float:
    if name == "bound":
        return delta * THRESHOLD_SHARE
    m = t.n_layer_units
    harmonic = float(np.sum(1.0 / np.arange(1, m + 1)))
    return delta / (2 * m * harmonic)


def _band_sums(t: NetDissectTally, name: str, delta: float
               ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Threshold-band sums for a certificate at ``delta``: (band delta, I_in, UA_in,
    I_out, UA_out). Band thresholds not on the grid are rounded outward (still valid)."""
    if t.quantile is None:  # fixed thresholds: no band; conditional on them
        inter, ua = _sums_at(t, t.threshold_bin)
        return 0.0, inter, ua, inter, ua
    d_band = _band_delta(t, name, delta)
    stored, b_in, b_out = t.band[name]
    if not math.isclose(d_band, stored, rel_tol=1e-12):
        b_in, b_out = _band_bins(t, d_band)
    i_in, a_in = _sums_at(t, b_in)
    i_out, a_out = _sums_at(t, b_out)
    return d_band, i_in, a_in, i_out, a_out


def _band_bins(t: NetDissectTally, d_band: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid columns bracketing the band at another delta, rounded outward: the inner
    column's threshold is at least the band's inner threshold (-1: none is), the outer
    column's at most the outer one (``G``: none is)."""
    from ..bounds import threshold_band
    from ..sufficient import Design
    from .netdissect_tally import _count_ceil, _count_floor

    total = t.n_images * t.positions_per_image
    design = Design(total=float(total), n_units=float(t.n_images), grouped=True,
                    group_size=float(t.positions_per_image), equal_groups=True,
                    top_frac=t.quantile)
    k_lo, k_hi = threshold_band(design, d_band)
    r_in, r_out = _count_ceil(k_lo), _count_floor(k_hi) + 1
    above = np.asarray(t.lowres.sum(axis=0)).reshape(t.n_units, -1).cumsum(axis=1)
    n_grid = above.shape[1]
    # a threshold with at most r_in - 1 values above it is >= the r_in-th largest value
    inner = (above <= r_in - 1).sum(axis=1) - 1
    # a threshold with at least r_out values above it is below the r_out-th largest value
    enough = above >= r_out
    outer = np.where(enough.any(axis=1), np.argmax(enough, axis=1), n_grid)
    if r_out > total:
        outer = np.full(t.n_units, n_grid)
    return inner.astype(np.int64), outer.astype(np.int64)


def _limits(t: Any, i_in, a_in, i_out, a_out, label, delta_rest, n_sim
            ) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous IoU limits from the box of Bernoulli-KL intervals (docs/theory.md 2.3).

    ``t`` needs only ``n_images`` and ``pixels_per_image`` (a tally or a :class:`_Scale`).
    """
    n = t.n_images
    scale = float(n * t.pixels_per_image)
    de = np.asarray(delta_rest, float) / (3 * n_sim)
    vac = de <= 0
    de = np.where(vac, 1.0, de)
    fc_lo = kl_interval(i_in / scale, n, de)[0]
    fc_hi = kl_interval(i_out / scale, n, de)[1]
    f_lo = kl_interval(a_in / scale, n, de)[0]
    f_hi = kl_interval(a_out / scale, n, de)[1]
    c_lo, c_hi = kl_interval(label / scale, n, de)
    # IoU does not depend on the total mass; 2 exceeds every mass fraction so the
    # feasibility guard of the generic corner routine always passes
    formula = get_metric("iou").formula
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = _corner_limits(formula, MetricOptions(), fc_lo, fc_hi, f_lo, f_hi,
                                c_lo, c_hi, 2.0, 2.0)
    lo = np.where(np.isnan(lo) | vac, 0.0, lo)
    hi = np.where(np.isnan(hi) | vac, 1.0, hi)
    return np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)


@dataclass(frozen=True, eq=False)
class NetDissectResult(IdentificationResult):
    """An :class:`~neurocert.identify.IdentificationResult` from NetDissect.

    ``metric`` is ``"iou"``; ``similarity`` the dataset-level category-restricted
    IoU; ``lower``/``upper`` its certified limits (images as the independent unit,
    threshold band included); ``parameters`` hold the quantile, thresholds,
    categories and each concept's primary category. :meth:`summary` supports
    every multiplicity choice (p-values from the tally). Saving writes a plain
    identification result.
    """

    def p_values(self, level: float) -> np.ndarray:
        """Per-unit selection-adjusted p-values of ``H0: IoU(chosen concept) <= level``.

        The threshold band is fixed at ``delta / (2 m H_m)`` (tallied exactly), the
        rest of ``d`` goes to the concept events; bisection in log space.
        """
        pv = self.__dict__.get("_pv")
        if pv is None:
            raise ValidationError(
                "p-values need the tally; they are available on results of netdissect() "
                "in this session, not on loaded results")
        scale, d_band, i_in, a_in, i_out, a_out, label = pv
        best = np.maximum(self.best, 0)
        rows = np.arange(self.n_neurons)
        args = (i_in[rows, best], a_in[rows, best], i_out[rows, best], a_out[rows, best],
                label[best])
        n_sim = self.n_concepts
        lvl = float(level)

        def lower_at(d):
            return _limits(scale, *args, d - d_band, n_sim)[0]

        return bisect_p_values(lower_at, np.asarray(self.best), lvl)

    @property
    def categories(self) -> list[str]:
        return list(self.parameters.get("categories", []))

    @property
    def label_category(self) -> np.ndarray:
        return np.asarray(self.parameters.get("label_category", []), np.int64)

    @property
    def category_best(self) -> np.ndarray:
        """Best concept per unit within each primary category, (n_units, n_categories);
        ``-1`` where no concept of the category has IoU above 0."""
        lc = self.label_category
        out = np.full((self.n_neurons, len(self.categories)), -1, np.int64)
        for k in range(len(self.categories)):
            members = np.flatnonzero(lc == k)
            if members.size == 0:
                continue
            sim = self.similarity[:, members]
            order = rank_concepts(sim)
            out[:, k] = np.where(_explanation(sim, order, 0.0) >= 0,
                                 members[order[:, 0]], -1)
        return out

    @property
    def detectors(self) -> np.ndarray:
        """Units whose chosen concept's IoU reaches ``detector_iou`` (NetDissect's rule)."""
        level = float(self.parameters.get("detector_iou", DETECTOR_IOU))
        with np.errstate(invalid="ignore"):
            return (self.best >= 0) & (self.best_similarity >= level)

    def detector_summary(self, *, multiplicity: str = "none"):
        """:meth:`summary` at the detector level: units with a certified IoU > 0.04."""
        return self.summary(float(self.parameters.get("detector_iou", DETECTOR_IOU)),
                            multiplicity=multiplicity)


@dataclass(frozen=True)
class _Scale:
    """What :func:`_limits` needs of a tally (kept by results instead of the tally)."""

    n_images: int
    pixels_per_image: int


@dataclass(frozen=True, eq=False)
class _IdentPart:
    """Per-unit identification arrays of one block of units (all units in memory)."""

    similarity: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    null: np.ndarray
    best: np.ndarray
    top: np.ndarray
    certified_sets: tuple
    regret_bound: np.ndarray
    thresholds: np.ndarray
    band_bound: float
    band_p: float
    pv_sums: tuple  # (i_in, a_in, i_out, a_out), each (units, C)
    label: np.ndarray
    meta: dict


def _identify_part(t: NetDissectTally, delta: float, top_k: int) -> _IdentPart:
    """Everything of :func:`netdissect_identify` that is per unit (no names, no timing)."""
    inter, ua = _sums_at(t, t.threshold_bin)
    label = np.asarray(t.label_pixels.sum(axis=0), np.float64).reshape(-1)
    sim = _iou(inter, ua, label[None, :])
    scale = float(t.n_images * t.pixels_per_image)
    f, c = ua / scale, label[None, :] / scale
    with np.errstate(divide="ignore", invalid="ignore"):
        null = np.where(f + c - f * c > 0, f * c / (f + c - f * c), np.nan)
    d_band, i_in, a_in, i_out, a_out = _band_sums(t, "bound", delta)
    lower, upper = _limits(t, i_in, a_in, i_out, a_out, label[None, :], delta - d_band,
                           t.n_concepts)
    undefined = np.isnan(sim)
    lower = np.where(undefined, 0.0, lower)
    upper = np.where(undefined, 1.0, upper)
    order = rank_concepts(sim)
    best = _explanation(sim, order, 0.0)
    sets = certified_sets(lower, upper, order)
    rows = np.arange(t.n_units)
    regret = np.where(best >= 0, upper.max(axis=1) - lower[rows, np.maximum(best, 0)], np.nan)
    pv = _band_sums(t, "p_value", delta)
    meta = {"quantile": t.quantile, "categories": list(t.categories),
            "label_category": [int(x) for x in t.label_category],
            "map_shape": list(t.map_shape), "mask_shape": list(t.mask_shape),
            "labels": list(t.labels), "n_images": int(t.n_images),
            "pixels_per_image": int(t.pixels_per_image)}
    return _IdentPart(
        similarity=sim, lower=lower, upper=upper, null=null, best=best.astype(np.int64),
        top=order[:, :min(top_k, t.n_concepts)].astype(np.int64), certified_sets=sets,
        regret_bound=regret, thresholds=np.asarray(t.thresholds), band_bound=d_band,
        band_p=pv[0], pv_sums=tuple(pv[1:]), label=label, meta=meta)


def _assemble_identification(parts: list[_IdentPart], *, delta: float, top_k: int,
                             names: list[str], detector_iou: float,
                             timings: dict[str, float]) -> NetDissectResult:
    """One :class:`NetDissectResult` from the parts of consecutive blocks of units."""
    def cat(name: str) -> np.ndarray:
        return np.concatenate([getattr(p, name) for p in parts])

    meta = parts[0].meta
    d_band = parts[0].band_bound
    params = {
        "method": "netdissect", "quantile": meta["quantile"],
        "thresholds": [float(x) for x in cat("thresholds")],
        "detector_iou": float(detector_iou), "categories": list(meta["categories"]),
        "label_category": list(meta["label_category"]), "map_shape": list(meta["map_shape"]),
        "mask_shape": list(meta["mask_shape"]), "grouped": True, "independent_unit": "image",
        "top_k": int(top_k), "threshold_band_delta": d_band,
        "conditional_on_threshold": meta["quantile"] is None,
    }
    res = NetDissectResult(
        metric="iou", delta=delta, similarity=cat("similarity"), lower=cat("lower"),
        upper=cat("upper"), null=cat("null"), best=cat("best"), top=cat("top"),
        certified_sets=tuple(x for p in parts for x in p.certified_sets),
        regret_bound=cat("regret_bound"), neuron_names=names,
        concept_names=list(meta["labels"]), n_samples=meta["n_images"],
        n_units=float(meta["n_images"]), parameters=params, timings=timings)
    sums = tuple(np.concatenate([p.pv_sums[i] for p in parts]) for i in range(4))
    object.__setattr__(res, "_pv", (_Scale(meta["n_images"], meta["pixels_per_image"]),
                                    parts[0].band_p, *sums, parts[0].label))
    return res


def _check_identify_options(delta: Any, top_k: Any) -> float:
    delta = check_probability(delta, "delta")
    if not (isinstance(top_k, (int, np.integer)) and not isinstance(top_k, bool)
            and top_k >= 1):
        raise ValidationError(f"`top_k` must be a positive integer; got {top_k!r}")
    return delta


def netdissect_identify(t: NetDissectTally, *, delta: float | None = None, top_k: int = 5,
                        unit_names: Any = None, detector_iou: float = DETECTOR_IOU
                        ) -> NetDissectResult:
    """Labels and certificates from a tally (see :func:`netdissect`)."""
    t0 = time.perf_counter()
    if delta is None:
        delta = t.delta if t.delta is not None else 0.05
    delta = _check_identify_options(delta, top_k)
    names = check_names(unit_names, t.n_units, "unit")
    part = _identify_part(t, delta, int(top_k))
    return _assemble_identification(
        [part], delta=delta, top_k=int(top_k), names=names, detector_iou=detector_iou,
        timings={**t.timings, "identify_s": time.perf_counter() - t0})


def netdissect(activations: Any, segmentation: Any, *, quantile: float = 0.005,
               delta: float = 0.05, thresholds: Any = None, top_k: int = 5,
               unit_names: Any = None, detector_iou: float = DETECTOR_IOU,
               batch_size: int | None = None, progress_bar: bool = False,
               backend: str = "memory", client: Any = None) -> NetDissectResult:
    """Network Dissection of one layer, with certified IoU limits.

    Parameters
    ----------
    activations : array-like (n_images, n_units, h, w)
        Activation maps (``np.memmap`` streamed in chunks of ``batch_size`` images).
    segmentation : SegmentationSet
        Pixel masks at ``mask_shape`` and image-level labels, one entry per image.
    quantile : float
        Top quantile of the per-unit threshold (exact, over all low-resolution
        positions of all images; see :func:`top_quantile_thresholds`).
    delta : float
        Per unit, the limits hold for all concepts simultaneously with probability
        ``>= 1 - delta`` (half of it for the threshold band).
    thresholds : array-like (n_units,), optional
        Fixed thresholds instead of the quantile rule (limits conditional on them).
    top_k, unit_names
        Ranked concepts kept per unit; unit names.
    detector_iou : float
        NetDissect's detector level (0.04).
    batch_size : int, optional
    progress_bar : bool
    backend : {"memory", "blocks", "dask"}
        ``"blocks"``/``"dask"``: tally and certify blocks of units one after another in
        this process, or as Dask tasks (:func:`neurocert.distributed.netdissect`); the
        result is equal field by field.
    client : distributed.Client or str, optional
        With ``backend="dask"``: the client or a scheduler address; default: a
        LocalCluster for this call.

    Returns
    -------
    NetDissectResult
        ``labels``, ``similarity`` (IoU), ``lower``/``upper``, ``certified_sets``,
        ``regret_bound``, ``category_best``, ``detectors``; ``summary(0.04,
        multiplicity="fwer")`` counts certified detectors.

    Notes
    -----
    ``IoU_c = sum_g I_gc / sum_g (A_g 1[c annotated on g] + L_gc - I_gc)`` with ``I``
    the active pixels carrying ``c``, ``A`` the active pixels and ``L`` the pixels
    carrying ``c``. The bound treats images as i.i.d.; details in
    ``docs/netdissect.md``.
    """
    if _backend.wants_blocks(backend, client):
        from .. import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.netdissect(
                activations, segmentation, quantile=quantile, delta=delta,
                thresholds=thresholds, top_k=top_k, unit_names=unit_names,
                detector_iou=detector_iou, batch_size=batch_size, client=cl,
                progress=progress_bar)
    t = netdissect_tally(activations, segmentation, quantile=quantile, thresholds=thresholds,
                         delta=delta, batch_size=batch_size, progress_bar=progress_bar)
    return netdissect_identify(t, delta=delta, top_k=top_k, unit_names=unit_names,
                               detector_iou=detector_iou)


# ---------------------------------------------------------------------------
# bootstrap explanations


def _votes(t: NetDissectTally, w: np.ndarray, threshold: str, tracked: np.ndarray,
           counts: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    b = w.shape[0]
    iou, oog = netdissect_replicates(t, w, threshold=threshold)
    winners = np.empty((b, t.n_units), np.int64)
    ties = np.empty((b, t.n_units), np.int64)
    cand = np.arange(t.n_concepts)
    for u in range(t.n_units):
        win, nt, part = argmax_votes(iou[:, u], cand, 0.0, t.n_concepts)
        winners[:, u], ties[:, u] = win, nt
        _add_counts(counts, u, part, (t.n_units, t.n_concepts + 1))
    track = np.take_along_axis(iou, np.broadcast_to(tracked[None], (b,) + tracked.shape), axis=2)
    return winners, ties, track, int(oog.sum())


@dataclass(frozen=True, eq=False)
class _ExplainPart:
    """Per-unit bootstrap and split outputs of one block of units."""

    votes: np.ndarray          # (units, C + 1)
    winners: np.ndarray        # (B, units)
    ties: np.ndarray           # (B, units)
    tracked: np.ndarray        # (B, units, top)
    out_of_grid: int
    fold_winners: np.ndarray | None  # (K, units)


def _replicate_batch(t: NetDissectTally, n_boot: int) -> int:
    """Default replicates per chunk (about BATCH_BYTES of working arrays; never changes results)."""
    per = 8 * (t.n_images * (1 + len(t.categories)) + 4 * t.n_layer_units * t.n_concepts
               + t.lowres.shape[1] * t.n_layer_units // max(1, t.n_units))
    return int(max(1, min(n_boot, BATCH_BYTES // max(per, 1))))


def _explain_part(t: NetDissectTally, tracked: np.ndarray, *, seed: np.random.SeedSequence,
                  n_boot: int, batch_size: int, threshold: str, scheme: str, mode: str,
                  n_folds: int | None, progress_bar: bool = False) -> _ExplainPart:
    """Replicate votes of the units of ``t`` (every block regenerates the same weights)."""
    n = t.n_images
    counts: dict = {}
    winners, ties, track = [], [], []
    out_of_grid = 0
    run_boot = mode in ("bootstrap", "both")
    chunks = [(b0, min(n_boot, b0 + batch_size)) for b0 in range(0, n_boot, batch_size)] \
        if run_boot else []
    for b0, b1 in progress(chunks, total=len(chunks), desc="bootstrap", enabled=progress_bar):
        w = replicate_weights(seed, range(b0, b1), n, scheme=scheme, dtype=np.float64)
        win, tie, tr, oog = _votes(t, w, threshold, tracked, counts)
        winners.append(win)
        ties.append(tie)
        track.append(tr)
        out_of_grid += oog
    empty = np.empty((0, t.n_units), np.int64)
    fold_winners = None
    if mode in ("split", "both"):
        folds = fold_weights(seed, n_folds, n).astype(np.float64)
        fold_winners, _, _, _ = _votes(t, folds, threshold, tracked, {})
    return _ExplainPart(
        votes=total_votes(counts) if counts else np.zeros((t.n_units, t.n_concepts + 1)),
        winners=np.concatenate(winners) if winners else empty,
        ties=np.concatenate(ties) if ties else empty.copy(),
        tracked=(np.concatenate(track) if track else
                 np.empty((0, t.n_units, tracked.shape[1]))),
        out_of_grid=out_of_grid, fold_winners=fold_winners)


def _check_explain_options(n_boot: Any, alpha: Any, scheme: Any, threshold: Any,
                           mode: Any) -> tuple[int, float]:
    n_boot = check_int(n_boot, "n_boot", 1)
    if scheme not in SCHEMES:
        raise ValidationError(f"`scheme` must be one of {SCHEMES}; got {scheme!r}")
    alpha = check_probability(alpha, "alpha")
    if threshold not in THRESHOLDS:
        raise ValidationError(f"`threshold` must be one of {THRESHOLDS}; got {threshold!r}")
    if mode not in MODES:
        raise ValidationError(f"`mode` must be one of {MODES}; got {mode!r}")
    return n_boot, alpha


def _assemble_explanation(ident: NetDissectResult, parts: list[_ExplainPart], *,
                          seed: np.random.SeedSequence, n_boot: int, alpha: float,
                          threshold: str, scheme: str, mode: str, n_folds: int | None,
                          n_bins: int, top_k: int, timings: dict[str, float],
                          stacklevel: int = 3) -> ExplanationResult:
    """One :class:`ExplanationResult` from the parts of consecutive blocks of units."""
    n_units, n_concepts = ident.similarity.shape
    out_of_grid = int(sum(p.out_of_grid for p in parts))
    if out_of_grid:
        warnings.warn(
            f"{out_of_grid} of {n_boot * n_units} (replicate, unit) thresholds fell outside "
            "the candidate grid and were clamped to its edge; their counts are approximate "
            "(widen the grid: more images or a larger quantile)", OutOfGridWarning,
            stacklevel=stacklevel)
    split_sets = fold_winners = None
    if mode in ("split", "both"):
        fold_winners = np.concatenate([p.fold_winners for p in parts], axis=1)
        split_sets = split_conformal_sets(fold_winners, n_concepts, alpha, ident.similarity)
    params = {
        "method": "netdissect", "metric": "iou", "n_boot": n_boot, "alpha": alpha,
        "delta": ident.delta, "mode": mode, "n_folds": n_folds if mode != "bootstrap" else None,
        "scheme": scheme, "threshold_mode": threshold,
        "quantile": ident.parameters["quantile"], "n_bins": int(n_bins), "grouped": True,
        "independent_unit": "image", "out_of_grid": out_of_grid, "prune": False,
        "black_box": False, "seed_entropy": str(seed.entropy),
        "seed_spawn_key": list(seed.spawn_key), "top_k": int(top_k),
    }
    return ExplanationResult.build(
        identification=ident, votes=np.concatenate([p.votes for p in parts]),
        winners=np.concatenate([p.winners for p in parts], axis=1),
        ties=np.concatenate([p.ties for p in parts], axis=1),
        tracked=np.concatenate([p.tracked for p in parts], axis=1),
        alpha=alpha, mode=mode, split_sets=split_sets, fold_winners=fold_winners,
        parameters=params, timings=timings,
        n_candidates=np.full(n_units, n_concepts, np.int64))


def netdissect_explain(activations: Any, segmentation: Any = None, *, n_boot: int = 1000,
                       alpha: float = 0.05, rng: Any = None, threshold: str = "recomputed",
                       quantile: float = 0.005, n_bins: int = 128, delta: float = 0.05,
                       scheme: str = "multinomial", mode: str = "bootstrap",
                       n_folds: int | None = None, top_k: int = 5, unit_names: Any = None,
                       batch_size: int | None = None, progress_bar: bool = False,
                       backend: str = "memory", client: Any = None) -> ExplanationResult:
    """BE for NetDissect: label distributions over bootstrap resamples of the images.

    Parameters
    ----------
    activations : array-like (n_images, n_units, h, w) or NetDissectTally
        Activation maps, or a tally from :func:`netdissect_tally` (then
        ``segmentation``, ``quantile``, ``n_bins`` are taken from it).
    segmentation : SegmentationSet
    n_boot : int
        Replicates.
    alpha : float
        Miscoverage of the prediction sets.
    rng : None, int, SeedSequence or Generator
        Replicate ``b``'s image weights are
        ``neurocert.resample.replicate_weights(seed, [b], n_images)``: one weight
        vector shared by all units, the same for any chunking.
    threshold : {"recomputed", "frozen"}
        ``"recomputed"`` (default): each replicate's threshold is its own top-``q``
        quantile, as a new probing set would have, from binned statistics (see
        :func:`netdissect_replicates`); ``"frozen"``: the full-data threshold in
        every replicate (exact; the stability is then conditional on it).
    quantile, n_bins, delta
        As in :func:`netdissect_tally` / :func:`netdissect`.
    scheme : {"multinomial", "poisson", "predictive"}
    mode : {"bootstrap", "split", "both"}
        As in :func:`neurocert.bootstrap_explain`; split folds are disjoint image sets.
    n_folds, top_k, unit_names, batch_size, progress_bar
        ``batch_size`` is the number of replicates per chunk (results do not depend
        on it).
    backend : {"memory", "blocks", "dask"}
        ``"blocks"``/``"dask"``: blocks of units tallied and resampled one after another
        in this process, or as Dask tasks (:func:`neurocert.distributed.netdissect_explain`;
        activation maps only, not a tally); the result is equal field by field.
    client : distributed.Client or str, optional
        With ``backend="dask"``: the client or a scheduler address; default: a
        LocalCluster for this call.

    Returns
    -------
    ExplanationResult
        Its ``identification`` is the :class:`NetDissectResult` of the same tally.
    """
    if _backend.wants_blocks(backend, client):
        if isinstance(activations, NetDissectTally):
            raise ValidationError(
                f"backend={backend!r} tallies blocks of units itself: pass the activation "
                "maps and the segmentation, not a NetDissectTally (or use backend='memory')")
        from .. import distributed

        with _backend.dask_client(backend, client) as cl:
            return distributed.netdissect_explain(
                activations, segmentation, n_boot=n_boot, alpha=alpha, rng=rng,
                threshold=threshold, quantile=quantile, n_bins=n_bins, delta=delta,
                scheme=scheme, mode=mode, n_folds=n_folds, top_k=top_k,
                unit_names=unit_names, batch_size=batch_size, client=cl,
                progress=progress_bar)
    t0 = time.perf_counter()
    n_boot, alpha = _check_explain_options(n_boot, alpha, scheme, threshold, mode)
    if isinstance(activations, NetDissectTally):
        t = activations
    else:
        if segmentation is None:
            raise ValidationError("`segmentation` is required with activation maps")
        t = netdissect_tally(activations, segmentation, quantile=quantile,
                             n_bins=n_bins if threshold == "recomputed" else 0, delta=delta,
                             progress_bar=progress_bar)
    if t.n_concepts < 2:
        raise ValidationError(
            f"a concept set of size {t.n_concepts} has nothing to choose between; "
            "netdissect_explain needs at least 2 concepts")
    ident = netdissect_identify(t, delta=delta, top_k=top_k, unit_names=unit_names)
    seed = as_seed_sequence(rng)
    if batch_size is None:
        batch_size = _replicate_batch(t, n_boot)
    else:
        batch_size = check_int(batch_size, "batch_size", 1)
    if mode in ("split", "both"):
        n_folds = check_n_folds(n_folds, alpha, t.n_images, "images")
    t1 = time.perf_counter()
    part = _explain_part(t, ident.top, seed=seed, n_boot=n_boot, batch_size=batch_size,
                         threshold=threshold, scheme=scheme, mode=mode, n_folds=n_folds,
                         progress_bar=progress_bar)
    t2 = time.perf_counter()
    timings = {**ident.timings, "bootstrap_s": t2 - t1, "total_s": time.perf_counter() - t0}
    return _assemble_explanation(ident, [part], seed=seed, n_boot=n_boot, alpha=alpha,
                                 threshold=threshold, scheme=scheme, mode=mode,
                                 n_folds=n_folds, n_bins=t.n_bins, top_k=top_k,
                                 timings=timings)
