"""Streaming NetDissect tally: exact per-unit quantiles, bilinear upsampling, binned counts.

One pass over the images computes, per image ``g``, unit ``u`` and *candidate
threshold* ``t_{u,k}`` (a descending grid per unit), the counts NetDissect needs,
stored as increments between consecutive thresholds (bins), so any threshold of
the grid, and any image weighting, is a cumulative sum and a matrix product:

* low-resolution positions with ``t_k < a <= t_{k-1}`` (the threshold statistic);
* upsampled pixels with ``t_k < up <= t_{k-1}`` (active pixels);
* of those, the pixels that carry concept ``c`` (intersections), image-level
  concepts covering every pixel;
* the active pixels of images where ``c`` appears but its primary category is not
  marked annotated (so the category-restricted union of every image is at least
  its intersection; see ``docs/netdissect.md``).

The grid always contains the full-data threshold and the thresholds of the
certificate's threshold band, so those counts are exact; with ``n_bins > 0`` it
also holds ``n_bins`` quantiles between levels ``q/5`` and ``4q`` (the 0.1% and
2% quantiles at the default ``q = 0.005``) for the bootstrap with the threshold
recomputed per replicate (:mod:`neurocert.dissect.netdissect`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._progress import progress
from .._validation import check_probability, to_numpy
from ..data.segmentation import SegmentationSet, check_segmentation_set
from ..exceptions import ValidationError

__all__ = [
    "NetDissectTally",
    "bilinear_upsample",
    "netdissect_tally",
    "top_quantile_thresholds",
]

#: relative tolerance for ``floor(q N)`` against float round-off (as in ``binarize``)
_REL_TOL = 1e-12
#: bytes of upsampled maps per image chunk (default ``batch_size``)
CHUNK_BYTES = 64 * 2**20
#: the candidate grid spans quantile levels [q / LEVEL_LOW, q * LEVEL_HIGH]
LEVEL_LOW = 5.0
LEVEL_HIGH = 4.0
#: the threshold band's share of delta (as in ``neurocert.identify``)
THRESHOLD_SHARE = 0.5


# ---------------------------------------------------------------------------
# bilinear upsampling (torch.nn.functional.interpolate, mode="bilinear", align_corners=False)


def _axis_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices ``i0, i1`` and weights ``lam`` of one axis (half-pixel centres).

    Output ``j`` samples input position ``s = (j + 0.5) n_in / n_out - 0.5``, clamped
    below at 0; ``i0 = floor(s)``, ``i1 = min(i0 + 1, n_in - 1)``, ``lam = s - i0``.
    """
    scale = n_in / n_out
    s = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    lam = s - i0
    return i0, i1, lam


def bilinear_upsample(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of ``maps (..., h, w)`` to ``(..., H, W)``, half-pixel convention.

    Matches ``torch.nn.functional.interpolate(x, size, mode="bilinear",
    align_corners=False)`` (no antialiasing): output pixel ``(i, j)`` sits at input
    coordinates ``((i + 0.5) h / H - 0.5, (j + 0.5) w / W - 0.5)``, clamped to the
    input's edge. Each axis is interpolated as ``a + lam (b - a)`` in the input's
    floating dtype, so a value between equal neighbours is reproduced exactly.

    Parameters
    ----------
    maps : ndarray (..., h, w), float
    size : (H, W)

    Returns
    -------
    ndarray (..., H, W), same dtype as ``maps``.
    """
    x = np.asarray(maps)
    h, w = x.shape[-2:]
    big_h, big_w = int(size[0]), int(size[1])
    dt = x.dtype
    y0, y1, ly = _axis_weights(h, big_h)
    x0, x1, lx = _axis_weights(w, big_w)
    # columns first on the small array, then whole-row gathers (contiguous) on the large one
    a = np.take(x, x0, axis=-1)
    cols = np.take(x, x1, axis=-1)
    cols -= a
    cols *= lx.astype(dt)
    cols += a
    a = np.take(cols, y0, axis=-2)
    out = np.take(cols, y1, axis=-2)
    out -= a
    out *= ly.astype(dt)[:, None]
    out += a
    return out


# ---------------------------------------------------------------------------
# validation


def _check_inputs(activations: Any, segmentation: Any) -> tuple[Any, SegmentationSet]:
    if not isinstance(segmentation, SegmentationSet):
        raise ValidationError(
            "`segmentation` must implement neurocert.data.segmentation.SegmentationSet "
            f"(labels, categories, label_category, mask_shape, image(), label_maps(), "
            f"image_labels(), annotated()); got {type(segmentation).__name__}")
    acts = activations
    if not isinstance(acts, np.ndarray):
        acts = to_numpy(acts, "activations")
    if acts.ndim != 4:
        hint = (" (a layer with no spatial dimensions: pixel IoU needs spatial maps; use "
                "neurocert.identify on pooled activations instead)" if acts.ndim == 2 else "")
        raise ValidationError(
            "`activations` must be 4-D (n_images, n_units, height, width) for NetDissect; "
            f"got shape {acts.shape}{hint}")
    if acts.dtype.kind not in "biuf":
        raise ValidationError(f"`activations` must be numeric; got dtype {acts.dtype}")
    n, n_units, h, w = acts.shape
    if n == 0 or n_units == 0 or h == 0 or w == 0:
        raise ValidationError(f"`activations` has an empty axis: shape {acts.shape}")
    if len(segmentation) != n:
        raise ValidationError(
            f"`segmentation` has {len(segmentation)} images but `activations` has {n} "
            f"(axis 0); shapes must match image for image")
    if len(segmentation.labels) == 0:
        raise ValidationError("`segmentation` has no concepts (labels)")
    return acts, segmentation


def _work_dtype(acts: np.ndarray) -> np.dtype:
    return np.dtype(np.float64) if acts.dtype == np.float64 else np.dtype(np.float32)


def _load(acts: np.ndarray, s: int, e: int, dt: np.dtype) -> np.ndarray:
    x = np.asarray(acts[s:e]).astype(dt, copy=False)
    if not np.isfinite(x).all():
        pos = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValidationError(
            f"`activations` contains a non-finite value at position {(pos[0] + s,) + pos[1:]}")
    return x


# ---------------------------------------------------------------------------
# pass 1: exact top order statistics per unit


def _top_values(acts: np.ndarray, m: int, dt: np.dtype, batch: int,
                progress_bar: bool) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` largest low-resolution values of every unit, sorted descending, (U, m),
    and each unit's smallest value."""
    n, n_units = acts.shape[:2]
    buf = np.empty((n_units, 0), dt)
    low = np.full(n_units, np.inf, dt)
    starts = range(0, n, batch)
    for s in progress(starts, total=len(starts), desc="quantiles", enabled=progress_bar):
        x = _load(acts, s, min(n, s + batch), dt)
        low = np.minimum(low, x.min(axis=(0, 2, 3)))
        v = np.concatenate([buf, x.transpose(1, 0, 2, 3).reshape(n_units, -1)], axis=1)
        if v.shape[1] > m:
            v = np.partition(v, v.shape[1] - m, axis=1)[:, v.shape[1] - m:]
        buf = v
    return -np.sort(-buf, axis=1), low


def _order_stat(top: np.ndarray, j: np.ndarray | int, n_total: int) -> np.ndarray:
    """The ``j``-th largest value per unit (1-indexed); ``+inf`` for ``j <= 0``,
    ``-inf`` for ``j > n_total``."""
    j = np.broadcast_to(np.asarray(j, np.int64), (top.shape[0],))
    idx = np.clip(j - 1, 0, top.shape[1] - 1)
    v = top[np.arange(top.shape[0]), idx]
    v = np.where(j <= 0, np.inf, v)
    return np.where(j > n_total, -np.inf, v).astype(top.dtype)


def _count_floor(x: float) -> int:
    return math.floor(x + _REL_TOL * max(1.0, abs(x)))


def _count_ceil(x: float) -> int:
    return math.ceil(x - _REL_TOL * max(1.0, abs(x)))


def top_quantile_thresholds(activations: Any, quantile: float = 0.005, *,
                            batch_size: int | None = None) -> np.ndarray:
    """Exact per-unit NetDissect thresholds over all spatial positions of all images.

    The threshold of unit ``u`` is the inverted-CDF ``(1 - q)`` quantile of its
    ``N = n_images * h * w`` low-resolution values: with ``T = floor(q N)``, the
    ``(T + 1)``-th largest value, i.e. the smallest value ``t`` with at most ``q N``
    values strictly above it (``np.quantile(v, 1 - q, method="inverted_cdf")``).
    A pixel is active when its upsampled value is strictly greater.

    Parameters
    ----------
    activations : array-like (n_images, n_units, h, w)
        May be a ``np.memmap``; read in chunks of ``batch_size`` images.
    quantile : float in (0, 1)
    batch_size : int, optional

    Returns
    -------
    ndarray (n_units,)
    """
    if not isinstance(activations, np.ndarray):
        activations = to_numpy(activations, "activations")
    if activations.ndim != 4:
        raise ValidationError(
            f"`activations` must be 4-D (n_images, n_units, height, width); got shape "
            f"{activations.shape}")
    q = check_probability(quantile, "quantile")
    n, n_units, h, w = activations.shape
    dt = _work_dtype(activations)
    total = n * h * w
    t_count = _count_floor(q * total)
    batch = batch_size or max(1, CHUNK_BYTES // max(1, n_units * h * w * dt.itemsize))
    top, _ = _top_values(activations, min(total, t_count + 1), dt, batch, False)
    return _order_stat(top, t_count + 1, total)


# ---------------------------------------------------------------------------
# the tally


@dataclass(frozen=True, eq=False)
class NetDissectTally:
    """Per-image binned NetDissect counts of one layer (sufficient statistics).

    Attributes
    ----------
    quantile : float
        Top quantile ``q`` of the threshold rule (``None`` with fixed thresholds).
    thresholds : ndarray (n_units,)
        Full-data thresholds (active: upsampled value strictly greater).
    grid : ndarray (n_units, G)
        Candidate thresholds per unit, non-increasing (repeats make empty bins).
    threshold_bin : ndarray (n_units,) int
        Column of ``grid`` holding ``thresholds``.
    band : dict
        Certificate threshold bands: ``{name: (delta, inner_bin, outer_bin)}`` for
        ``"bound"`` and ``"p_value"`` (see ``docs/netdissect.md``).
    n_bins : int
        Number of quantile candidates in the grid (0: only the exact thresholds).
    lowres : scipy.sparse.csr_matrix (n_images, n_units * G)
        Low-resolution positions per bin: column ``u * G + k`` counts values in
        ``(grid[u, k], grid[u, k - 1]]``.
    units : tuple of scipy.sparse.csr_matrix (n_images, G * (1 + 2 C))
        Per unit, per bin ``k`` at columns ``k * (1 + 2 C) + j``: ``j = 0`` active
        pixels, ``j = 1 + c`` active pixels with concept ``c``, ``j = 1 + C + c``
        active pixels of images where ``c`` appears outside an annotated primary
        category.
    label_pixels : scipy.sparse.csr_matrix (n_images, n_concepts)
        Pixels carrying each concept (image-level concepts: every pixel).
    annotated : ndarray (n_images, n_categories) bool
    label_category : ndarray (n_concepts,) int
    labels, categories : list of str
    map_shape, mask_shape : (int, int)
    n_images : int
    delta : float or None
        The delta whose threshold band is on the grid.
    unit_min : ndarray (n_units,)
        Each unit's smallest low-resolution value (nothing lies below the grid when
        the grid reaches it).
    layer_units : int or None
        Units of the whole layer when this tally holds a block of them (the p-value
        threshold band is at ``delta / (2 m H_m)`` with ``m`` the layer's units);
        None: the units tallied (:attr:`n_layer_units`).
    """

    quantile: float | None
    thresholds: np.ndarray = field(repr=False)
    grid: np.ndarray = field(repr=False)
    threshold_bin: np.ndarray = field(repr=False)
    band: dict = field(repr=False)
    n_bins: int
    lowres: sp.csr_matrix = field(repr=False)
    units: tuple = field(repr=False)
    label_pixels: sp.csr_matrix = field(repr=False)
    annotated: np.ndarray = field(repr=False)
    label_category: np.ndarray = field(repr=False)
    labels: list = field(repr=False)
    categories: list = field(repr=False)
    map_shape: tuple = (0, 0)
    mask_shape: tuple = (0, 0)
    n_images: int = 0
    delta: float | None = None
    unit_min: np.ndarray | None = field(default=None, repr=False)
    timings: dict = field(default_factory=dict, repr=False)
    layer_units: int | None = None

    @property
    def n_units(self) -> int:
        return self.grid.shape[0]

    @property
    def n_layer_units(self) -> int:
        """Units of the layer (``m`` of the p-value band): ``layer_units`` or ``n_units``."""
        return self.n_units if self.layer_units is None else int(self.layer_units)

    @property
    def n_concepts(self) -> int:
        return len(self.labels)

    @property
    def pixels_per_image(self) -> int:
        return int(self.mask_shape[0] * self.mask_shape[1])

    @property
    def positions_per_image(self) -> int:
        return int(self.map_shape[0] * self.map_shape[1])

    @property
    def n_columns(self) -> int:
        """Columns per bin of the unit matrices: ``1 + 2 C``."""
        return 1 + 2 * self.n_concepts


def _image_labels(seg: SegmentationSet, i: int, n_labels: int, hw: int,
                  annotated: np.ndarray, label_category: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-level (pixel, concept) pairs (deduplicated over layers, excluding the
    image-level concepts), image-level concepts, per-concept pixel counts, and the
    concepts present outside an annotated primary category."""
    maps = seg.label_maps(i).reshape(-1, hw)
    il = np.unique(np.asarray(seg.image_labels(i), np.int64))
    lay, pix = np.nonzero(maps >= 0)
    keys = np.unique(maps[lay, pix].astype(np.int64) * hw + pix)
    conc, pix = np.divmod(keys, hw)
    if il.size:
        keep = ~np.isin(conc, il)
        conc, pix = conc[keep], pix[keep]
    counts = np.bincount(conc, minlength=n_labels).astype(np.int64)
    counts[il] = hw
    present = np.flatnonzero(counts)
    off = present[~annotated[label_category[present]]]
    return pix, conc, counts, off


def netdissect_tally(activations: Any, segmentation: SegmentationSet, *,
                     quantile: float = 0.005, thresholds: Any = None, n_bins: int = 0,
                     delta: float = 0.05, batch_size: int | None = None,
                     progress_bar: bool = False,
                     layer_units: int | None = None) -> NetDissectTally:
    """Tally a layer's activation maps against a segmentation set (one streaming pass).

    Parameters
    ----------
    activations : array-like (n_images, n_units, h, w)
        Activation maps before upsampling; may be a ``np.memmap`` (read in chunks of
        ``batch_size`` images, so memory is bounded) or a torch tensor.
    segmentation : SegmentationSet
        Pixel and image-level labels at ``mask_shape``, one entry per image.
    quantile : float in (0, 1)
        Top quantile ``q`` of the per-unit threshold (NetDissect's 0.005).
    thresholds : array-like (n_units,), optional
        Fixed per-unit thresholds instead of the quantile rule (the result is then
        conditional on them and has no threshold band).
    n_bins : int
        Candidate thresholds for the bootstrap with the threshold recomputed per
        replicate: 0 (none) or at least 64.
    delta : float in (0, 1)
        Failure probability of the certificates whose threshold band is tallied
        exactly (other deltas are rounded outward to the grid: still valid).
    batch_size : int, optional
        Images per chunk (default: about 64 MB of upsampled maps).
    progress_bar : bool
    layer_units : int, optional
        When ``activations`` holds a block of a layer's units (the block backends): the
        layer's number of units, which sets the p-value threshold band
        ``delta / (2 m H_m)`` so a block's tally equals the whole layer's on its units.

    Returns
    -------
    NetDissectTally

    Raises
    ------
    ValidationError
        Activations that are not 4-D (a layer with no spatial dimensions), a
        different number of images than ``segmentation``, non-finite values, or
        label maps that fail :func:`~neurocert.data.segmentation.check_segmentation_set`.
    """
    import time

    t0 = time.perf_counter()
    acts, seg = _check_inputs(activations, segmentation)
    delta = check_probability(delta, "delta")
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or (
            n_bins != 0 and n_bins < 64):
        raise ValidationError(f"`n_bins` must be 0 or an integer >= 64; got {n_bins!r}")
    n, n_units, h, w = acts.shape
    if layer_units is not None:
        if isinstance(layer_units, bool) or not isinstance(layer_units, (int, np.integer)) \
                or layer_units < n_units:
            raise ValidationError(
                f"`layer_units` must be an integer >= the {n_units} units given; "
                f"got {layer_units!r}")
        layer_units = int(layer_units)
    m_units = n_units if layer_units is None else layer_units
    big_h, big_w = (int(s) for s in seg.mask_shape)
    hw, big_hw = h * w, big_h * big_w
    dt = _work_dtype(acts)
    if batch_size is None:
        batch = max(1, CHUNK_BYTES // max(1, n_units * big_hw * dt.itemsize))
    else:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValidationError(f"`batch_size` must be a positive integer; got {batch_size!r}")
        batch = int(batch_size)
    total = n * hw
    labels = [str(s) for s in seg.labels]
    categories = [str(s) for s in seg.categories]
    n_labels, n_cat = len(labels), len(categories)
    label_category = np.asarray(seg.label_category, np.int64)

    # ---- thresholds: exact order statistics, the band and the candidate grid
    band: dict = {}
    unit_min = np.full(n_units, -np.inf)
    if thresholds is not None:
        q = None
        t_hat = to_numpy(thresholds, "thresholds").astype(dt).reshape(-1)
        if t_hat.shape != (n_units,):
            raise ValidationError(
                f"`thresholds` has {t_hat.size} entries but `activations` has {n_units} units")
        if np.isnan(t_hat).any():
            raise ValidationError("`thresholds` contains NaN")
        if n_bins:
            raise ValidationError("`n_bins` needs the quantile rule (thresholds=None)")
        cols = [t_hat]
    else:
        q = check_probability(quantile, "quantile")
        from ..bounds import threshold_band
        from ..sufficient import Design

        design = Design(total=float(total), n_units=float(n), grouped=True,
                        group_size=float(hw), equal_groups=True, top_frac=q)
        harmonic = float(np.sum(1.0 / np.arange(1, m_units + 1)))
        deltas = {"bound": delta * THRESHOLD_SHARE,
                  "p_value": delta / (2 * m_units * harmonic)}
        ranks = {}
        for name, d in deltas.items():
            k_lo, k_hi = threshold_band(design, d)
            ranks[name] = (_count_ceil(k_lo), _count_floor(k_hi) + 1)
        t_count = _count_floor(q * total)
        levels = (np.geomspace(q / LEVEL_LOW, min(q * LEVEL_HIGH, 1.0), n_bins)
                  if n_bins else np.zeros(0))
        grid_ranks = np.array([_count_floor(lv * total) + 1 for lv in levels], np.int64)
        need = max([t_count + 1, *[r for pair in ranks.values() for r in pair],
                    *grid_ranks.tolist()])
        top, unit_min = _top_values(acts, min(total, max(1, need)), dt, max(batch, 1),
                                    progress_bar)
        t_hat = _order_stat(top, t_count + 1, total)
        cols = [t_hat]
        for name in deltas:
            r_in, r_out = ranks[name]
            cols += [_order_stat(top, r_in, total), _order_stat(top, r_out, total)]
        cols += [_order_stat(top, r, total) for r in grid_ranks]
    raw = np.stack(cols, axis=1)
    grid = -np.sort(-raw, axis=1)
    n_grid = grid.shape[1]

    def column_of(values):
        return np.argmax(grid == values[:, None], axis=1).astype(np.int64)

    threshold_bin = column_of(t_hat)
    if q is not None:
        for i, (name, d) in enumerate(deltas.items()):
            band[name] = (d, column_of(raw[:, 1 + 2 * i]), column_of(raw[:, 2 + 2 * i]))
    grid_asc = grid[:, ::-1].copy()
    t_min = grid[:, -1]

    # ---- pass 2: per-image binned counts
    n_cols = 1 + 2 * n_labels
    unit_parts: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in
                                                                        range(n_units)]
    low_parts = []
    lp_rows, lp_cols, lp_data = [], [], []
    annotated = np.zeros((n, n_cat), bool)
    starts = range(0, n, batch)
    for s in progress(starts, total=len(starts), desc="tally", enabled=progress_bar):
        e = min(n, s + batch)
        c = e - s
        check_segmentation_set(seg, images=range(s, e))
        x = _load(acts, s, e, dt)
        # low-resolution bins (threshold statistic)
        flat = x.reshape(c, n_units, hw)
        g_l, u_l, _ = np.nonzero(flat > t_min[None, :, None])
        vals = flat[g_l, u_l, _]
        k_l = _bins(u_l, vals, grid_asc, by_unit_sorted=False)
        keep = k_l < n_grid
        key = (g_l[keep] * n_units + u_l[keep]) * n_grid + k_l[keep]
        low = np.bincount(key, minlength=c * n_units * n_grid).reshape(c, n_units * n_grid)
        low_parts.append(sp.csr_matrix(low.astype(np.int32)))
        # labels of the chunk
        m_rows, m_cols = [], []
        il_pairs, off_pairs = [], []
        for gi in range(c):
            i = s + gi
            ann = np.asarray(seg.annotated(i), bool)
            annotated[i] = ann
            pix, conc, counts, off = _image_labels(seg, i, n_labels, big_hw, ann,
                                                   label_category)
            m_rows.append(gi * big_hw + pix)
            m_cols.append(conc)
            nz = np.flatnonzero(counts)
            lp_rows.append(np.full(nz.size, i, np.int64))
            lp_cols.append(nz)
            lp_data.append(counts[nz])
            il = np.unique(np.asarray(seg.image_labels(i), np.int64))
            il_pairs.append(np.stack([np.full(il.size, gi), il]))
            off_pairs.append(np.stack([np.full(off.size, gi), off]))
        rows = np.concatenate(m_rows)
        mstack = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, np.concatenate(m_cols))),
                               shape=(c * big_hw, n_labels))
        il_pairs = np.concatenate(il_pairs, axis=1)
        off_pairs = np.concatenate(off_pairs, axis=1)
        # maps that can exceed the lowest candidate (bilinear values never exceed the max)
        mx = flat.max(axis=2)
        u_sel, g_sel = np.nonzero((mx > t_min[None, :]).T)  # ordered by unit, then image
        if u_sel.size == 0:
            continue
        up = bilinear_upsample(x[g_sel, u_sel], (big_h, big_w)).reshape(u_sel.size, big_hw)
        r_e, p_e = np.nonzero(up > t_min[u_sel][:, None])
        k_e = _bins(u_sel[r_e], up[r_e, p_e], grid_asc, by_unit_sorted=True)
        keep = k_e < n_grid
        r_e, p_e, k_e = r_e[keep], p_e[keep], k_e[keep]
        del up
        n_rows = u_sel.size * n_grid
        row_id = r_e * n_grid + k_e
        sbins = sp.csr_matrix((np.ones(row_id.size, np.float32),
                               (row_id, g_sel[r_e] * big_hw + p_e)),
                              shape=(n_rows, c * big_hw))
        active = np.bincount(row_id, minlength=n_rows)
        inter = (sbins @ mstack).tocoo()
        parts_r = [np.flatnonzero(active)]
        parts_col = [np.zeros(parts_r[0].size, np.int64)]
        parts_v = [active[parts_r[0]]]
        parts_r.append(inter.row.astype(np.int64))
        parts_col.append(1 + inter.col.astype(np.int64))
        parts_v.append(np.rint(inter.data).astype(np.int64))
        # image-level concepts (every active pixel) and off-category union terms
        act_rows = parts_r[0]
        act_img = g_sel[act_rows // n_grid]
        for pairs, offset in ((il_pairs, 1), (off_pairs, 1 + n_labels)):
            if pairs.shape[1] == 0:
                continue
            order = np.argsort(pairs[0], kind="stable")
            pg, pc = pairs[0][order], pairs[1][order]
            lo = np.searchsorted(pg, act_img, side="left")
            hi = np.searchsorted(pg, act_img, side="right")
            cnt = hi - lo
            if cnt.sum() == 0:
                continue
            rep = np.repeat(np.arange(act_rows.size), cnt)
            idx = np.repeat(lo - np.cumsum(np.r_[0, cnt[:-1]]), cnt) + np.arange(rep.size)
            parts_r.append(act_rows[rep])
            parts_col.append(offset + pc[idx])
            parts_v.append(parts_v[0][rep])
        rr = np.concatenate(parts_r)
        cc = np.concatenate(parts_col)
        vv = np.concatenate(parts_v)
        order = np.lexsort((cc, rr))
        rr, cc, vv = rr[order], cc[order], vv[order]
        map_idx = rr // n_grid
        unit_of = u_sel[map_idx]
        g_glob = s + g_sel[map_idx]
        col_key = (rr % n_grid) * n_cols + cc
        bounds = np.searchsorted(unit_of, np.arange(n_units + 1))
        for u in range(n_units):
            a, b = bounds[u], bounds[u + 1]
            if b > a:
                unit_parts[u].append((g_glob[a:b], col_key[a:b], vv[a:b]))
    units = []
    for u in range(n_units):
        if unit_parts[u]:
            g_all = np.concatenate([p[0] for p in unit_parts[u]])
            k_all = np.concatenate([p[1] for p in unit_parts[u]])
            v_all = np.concatenate([p[2] for p in unit_parts[u]])
        else:
            g_all = k_all = v_all = np.zeros(0, np.int64)
        units.append(sp.csr_matrix((v_all.astype(np.float32), (g_all, k_all.astype(np.int64))),
                                   shape=(n, n_grid * n_cols)))
        unit_parts[u] = []
    label_pixels = sp.csr_matrix(
        (np.concatenate(lp_data).astype(np.float64),
         (np.concatenate(lp_rows), np.concatenate(lp_cols))), shape=(n, n_labels))
    return NetDissectTally(
        quantile=q, thresholds=t_hat, grid=grid, threshold_bin=threshold_bin, band=band,
        n_bins=int(n_bins), lowres=sp.vstack(low_parts, format="csr"), units=tuple(units),
        label_pixels=label_pixels, annotated=annotated, label_category=label_category,
        labels=labels, categories=categories, map_shape=(h, w), mask_shape=(big_h, big_w),
        n_images=n, delta=delta if q is not None else None, unit_min=unit_min,
        timings={"tally_s": time.perf_counter() - t0}, layer_units=layer_units)


def _bins(unit: np.ndarray, values: np.ndarray, grid_asc: np.ndarray, *,
          by_unit_sorted: bool) -> np.ndarray:
    """Bin ``k = #{j : grid[u, j] >= v}`` of each value (``G``: below the grid)."""
    n_grid = grid_asc.shape[1]
    out = np.empty(values.size, np.int64)
    if by_unit_sorted:
        order = None
        u_sorted = unit
        v_sorted = values
    else:
        order = np.argsort(unit, kind="stable")
        u_sorted = unit[order]
        v_sorted = values[order]
    bounds = np.searchsorted(u_sorted, np.arange(grid_asc.shape[0] + 1))
    res = np.empty(values.size, np.int64)
    for u in np.flatnonzero(np.diff(bounds)):
        a, b = bounds[u], bounds[u + 1]
        res[a:b] = n_grid - np.searchsorted(grid_asc[u], v_sorted[a:b], side="left")
    if order is None:
        return res
    out[order] = res
    return out
