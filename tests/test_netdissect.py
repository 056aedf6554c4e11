"""NetDissect: tally, IoU, certificates and BE against references written from the definitions."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from neurocert.data.segmentation import InMemorySegmentationSet
from neurocert.dissect.netdissect import (
    NetDissectResult,
    bilinear_upsample,
    netdissect,
    netdissect_explain,
    netdissect_identify,
    netdissect_replicates,
    netdissect_tally,
    top_quantile_thresholds,
)
from neurocert.exceptions import ValidationError
from neurocert.explanation import ExplanationResult
from neurocert.identify import IdentificationResult
from neurocert.resample import replicate_weights

# ---------------------------------------------------------------------------
# references and fixtures


def ref_bilinear(x: np.ndarray, big_h: int, big_w: int) -> np.ndarray:
    """Bilinear resize, half-pixel centres, clamped at the edge: one output pixel at a time."""
    h, w = x.shape
    out = np.empty((big_h, big_w))
    for i in range(big_h):
        sy = max((i + 0.5) * h / big_h - 0.5, 0.0)
        y0 = min(int(np.floor(sy)), h - 1)
        y1 = min(y0 + 1, h - 1)
        ly = sy - y0
        for j in range(big_w):
            sx = max((j + 0.5) * w / big_w - 0.5, 0.0)
            x0 = min(int(np.floor(sx)), w - 1)
            x1 = min(x0 + 1, w - 1)
            lx = sx - x0
            out[i, j] = ((1 - ly) * ((1 - lx) * x[y0, x0] + lx * x[y0, x1])
                         + ly * ((1 - lx) * x[y1, x0] + lx * x[y1, x1]))
    return out


def ref_netdissect(acts, seg, quantile=None, thresholds=None):
    """Dataset-level category-restricted IoU straight from the definition (slow loops)."""
    n, n_units = acts.shape[:2]
    big_h, big_w = seg.mask_shape
    n_c = len(seg.labels)
    if thresholds is None:
        thresholds = np.array([np.quantile(acts[:, u].ravel(), 1 - quantile,
                                           method="inverted_cdf") for u in range(n_units)])
    inter = np.zeros((n_units, n_c))
    union = np.zeros((n_units, n_c))
    for g in range(n):
        maps = seg.label_maps(g)
        il = set(seg.image_labels(g).tolist())
        ann = seg.annotated(g)
        masks = [(maps == c).any(axis=0) | (c in il) for c in range(n_c)]
        for u in range(n_units):
            act = ref_bilinear(acts[g, u].astype(np.float64), big_h, big_w) > thresholds[u]
            for c in range(n_c):
                lab = masks[c].sum()
                i_gc = (act & masks[c]).sum()
                counted = ann[seg.label_category[c]] or lab > 0
                inter[u, c] += i_gc
                union[u, c] += act.sum() * counted + lab - i_gc
    with np.errstate(invalid="ignore", divide="ignore"):
        return thresholds, np.where(union > 0, inter / union, np.nan)


def make_set(n=60, n_units=12, h=7, w=7, big_h=28, big_w=28, n_obj=8, n_tex=4, n_col=4,
             seed=0, noise=0.6):
    """Objects (pixel masks), colours (pixel masks, second layer), textures (image-level,
    category annotated only where given); each unit tuned to one concept plus noise."""
    rng = np.random.default_rng(seed)
    n_c = n_obj + n_tex + n_col
    labels = ([f"obj{i}" for i in range(n_obj)] + [f"tex{i}" for i in range(n_tex)]
              + [f"col{i}" for i in range(n_col)])
    lc = np.array([0] * n_obj + [1] * n_tex + [2] * n_col)
    maps, ils = [], []
    ann = np.zeros((n, 3), bool)
    for g in range(n):
        m = -np.ones((2, big_h, big_w), np.int32)
        for _ in range(rng.integers(1, 4)):
            c = rng.integers(0, n_obj)
            y, x = rng.integers(0, big_h - 4, 2)
            hh, ww = rng.integers(3, big_h // 2, 2)
            m[0, y:y + hh, x:x + ww] = c
        for _ in range(rng.integers(1, 3)):
            c = n_obj + n_tex + rng.integers(0, n_col)
            y, x = rng.integers(0, big_h - 4, 2)
            hh, ww = rng.integers(4, big_h // 2, 2)
            m[1, y:y + hh, x:x + ww] = c
        ann[g, 0] = ann[g, 2] = True
        if rng.random() < 0.6:
            ils.append(np.array([n_obj + rng.integers(0, n_tex)], np.int32))
            ann[g, 1] = True
        else:
            ils.append(np.zeros(0, np.int32))
        maps.append(m)
    seg = InMemorySegmentationSet(
        images=[np.zeros((2, 2, 3), np.uint8)] * n, label_maps_=maps, image_labels_=ils,
        annotated_=ann, labels=labels, categories=["object", "texture", "color"],
        label_category=lc)
    target = rng.integers(0, n_c, n_units)
    fy, fx = big_h // h, big_w // w
    acts = np.empty((n, n_units, h, w), np.float32)
    for g in range(n):
        masks = np.zeros((n_c, big_h, big_w), np.float32)
        for lay in range(2):
            for c in np.unique(maps[g][lay]):
                if c >= 0:
                    masks[c] += maps[g][lay] == c
        for c in ils[g]:
            masks[c] = 1
        pooled = masks.reshape(n_c, h, fy, w, fx).mean(axis=(2, 4))
        acts[g] = (pooled[target] * rng.uniform(0.5, 1.5, (n_units, 1, 1))
                   + noise * rng.random((n_units, h, w)))
    return acts, seg, target


def repeat_set(acts, seg, weights):
    """Materialise a replicate: image ``g`` repeated ``weights[g]`` times."""
    idx = np.repeat(np.arange(len(weights)), np.asarray(weights).astype(int))
    s = InMemorySegmentationSet(
        images=[seg.images[i] for i in idx], label_maps_=[seg.label_maps_[i] for i in idx],
        image_labels_=[seg.image_labels_[i] for i in idx], annotated_=seg.annotated_[idx],
        labels=seg.labels, categories=seg.categories, label_category=seg.label_category)
    return acts[idx], s


@pytest.fixture(scope="module")
def small():
    return make_set(n=100, n_units=16, seed=3)


@pytest.fixture(scope="module")
def small_tally(small):
    acts, seg, _ = small
    return netdissect_tally(acts, seg, quantile=0.005, n_bins=128)


def _hand_set():
    """Two images, 4x4 maps and masks (no resizing), hand-computed IoU (see test)."""
    a0 = np.arange(16, dtype=np.float32).reshape(4, 4) * 0.01
    a0[0, 0], a0[0, 1], a0[1, 0], a0[1, 1] = 9, 8, 7, 6
    a1 = np.arange(16, dtype=np.float32).reshape(4, 4) * 0.01 + 0.001
    a1[3, 3] = 8.5
    acts = np.stack([a0, a1])[:, None]
    m0 = -np.ones((1, 4, 4), np.int32)
    m0[0, 0, :] = 0          # concept a: the top row of image 0
    m0[0, 1, 0] = m0[0, 2, 0] = 2   # concept c: two pixels of image 0
    m1 = -np.ones((1, 4, 4), np.int32)
    m1[0, 0, 0] = m1[0, 0, 1] = 0   # concept a: two pixels of image 1
    seg = InMemorySegmentationSet(
        images=[np.zeros((4, 4, 3), np.uint8)] * 2, label_maps_=[m0, m1],
        image_labels_=[np.zeros(0, np.int32), np.array([1], np.int32)],
        annotated_=np.array([[True, False], [True, True]]),
        labels=["a", "b", "c"], categories=["object", "scene"], label_category=[0, 1, 0])
    return acts, seg


# ---------------------------------------------------------------------------
# hand-computed and reference IoU


def test_hand_computed_iou():
    # N = 32 positions, q = 1/8: at most 4 above the threshold; threshold = 5th largest = 6.
    # Active: image 0 {(0,0)=9, (0,1)=8, (1,0)=7}, image 1 {(3,3)=8.5}.
    # a: image 0 I=2, union 3+4-2=5; image 1 I=0, union 1+2=3        -> 2/8
    # b (image-level on image 1; its category "scene" not annotated on image 0):
    #    image 0 adds nothing (category restriction); image 1 I=1, union 1+16-1=16 -> 1/16
    # c: image 0 I=1 (pixel (1,0)), union 3+2-1=4; image 1 absent but "object"
    #    annotated: union += 1                                               -> 1/5
    acts, seg = _hand_set()
    res = netdissect(acts, seg, quantile=0.125)
    assert res.parameters["thresholds"] == [6.0]
    np.testing.assert_allclose(res.similarity, [[2 / 8, 1 / 16, 1 / 5]], rtol=0, atol=1e-15)
    assert res.labels == ["a"]
    assert res.category_best.tolist() == [[0, 1]]
    assert res.detectors.tolist() == [True]
    assert isinstance(res, IdentificationResult)


@pytest.mark.parametrize("shape,mask", [((4, 4), (8, 8)), ((3, 5), (7, 9)), ((5, 5), (5, 5))])
def test_iou_matches_reference(shape, mask):
    rng = np.random.default_rng(7)
    n, n_units = 9, 3
    maps = [np.where(rng.random((2,) + mask) < 0.3, rng.integers(0, 4, (2,) + mask), -1)
            .astype(np.int32) for _ in range(n)]
    il = [np.array([4], np.int32) if g % 3 == 0 else np.zeros(0, np.int32) for g in range(n)]
    ann = rng.random((n, 3)) < 0.6
    seg = InMemorySegmentationSet(
        images=[np.zeros((2, 2, 3), np.uint8)] * n, label_maps_=maps, image_labels_=il,
        annotated_=ann, labels=list("abcde"), categories=["x", "y", "z"],
        label_category=[0, 0, 1, 1, 2])
    acts = rng.normal(size=(n, n_units) + shape).astype(np.float32)
    for q in (0.05, 0.2):
        thr, ref = ref_netdissect(acts, seg, quantile=q)
        res = netdissect(acts, seg, quantile=q, batch_size=4)
        np.testing.assert_array_equal(res.parameters["thresholds"], thr)
        np.testing.assert_allclose(res.similarity, ref, rtol=1e-12, atol=0)
        assert np.all(res.lower <= np.nan_to_num(res.similarity, nan=1))
        assert np.all(np.nan_to_num(res.similarity, nan=0) <= res.upper)


def test_thresholds_are_inverted_cdf_quantiles():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(11, 4, 3, 5)).astype(np.float32)
    for q in (0.005, 0.01, 0.1, 0.5):
        ref = [np.quantile(acts[:, u].ravel(), 1 - q, method="inverted_cdf") for u in range(4)]
        for batch in (1, 4, None):
            np.testing.assert_array_equal(
                top_quantile_thresholds(acts, q, batch_size=batch), ref)


def test_bilinear_matches_reference_and_torch():
    rng = np.random.default_rng(1)
    cases = [((4, 4), (8, 8)), ((3, 5), (7, 9)), ((14, 14), (112, 112)), ((5, 6), (3, 4))]
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:  # pragma: no cover - torch is optional
        torch = None
    for (h, w), size in cases:
        x = rng.normal(size=(2, 3, h, w)).astype(np.float32)
        up = bilinear_upsample(x, size)
        assert up.shape == (2, 3) + size and up.dtype == np.float32
        ref = ref_bilinear(x[1, 2].astype(np.float64), *size)
        np.testing.assert_allclose(up[1, 2], ref, rtol=0, atol=1e-5)
        if torch is not None:
            tt = F.interpolate(torch.from_numpy(x), size=size, mode="bilinear",
                               align_corners=False).numpy()
            np.testing.assert_allclose(up, tt, rtol=0, atol=1e-5)
    # equal neighbours are reproduced exactly
    flat = np.full((1, 3, 3), 0.3, np.float32)
    assert np.all(bilinear_upsample(flat, (10, 10)) == np.float32(0.3))


def test_off_category_concept_counts_its_image_in_the_union():
    # concept "b" (primary category 1) appears on image 0 whose category 1 is not annotated
    acts, seg = _hand_set()
    m0 = seg.label_maps_[0].copy()
    m0[0, 3, 3] = 1
    seg2 = InMemorySegmentationSet(
        images=seg.images, label_maps_=[m0, seg.label_maps_[1]], image_labels_=seg.image_labels_,
        annotated_=seg.annotated_, labels=seg.labels, categories=seg.categories,
        label_category=seg.label_category)
    _, ref = ref_netdissect(acts, seg2, quantile=0.125)
    res = netdissect(acts, seg2, quantile=0.125)
    np.testing.assert_allclose(res.similarity, ref, rtol=1e-12)
    # image 0: I=0, union = 3 (active) + 1 - 0; image 1: 1/16 as before -> 1/20
    assert res.similarity[0, 1] == pytest.approx(1 / 20)


# ---------------------------------------------------------------------------
# certificates


def test_certificates_cover_population_iou():
    """Per unit, all concepts' limits hold simultaneously (delta = 0.1) against the IoU of
    a 15x larger probing set (a proxy of the population value)."""
    acts_big, seg_big, _ = make_set(n=1500, n_units=3, seed=11, h=4, w=4, big_h=16, big_w=16,
                                    n_obj=3, n_tex=1, n_col=2)
    big = netdissect(acts_big, seg_big, quantile=0.05)
    truth = big.similarity
    misses = 0
    reps = 20
    for r in range(reps):
        idx = np.random.default_rng(r).choice(1500, 100, replace=False)
        a, s = repeat_set(acts_big, seg_big, np.bincount(idx, minlength=1500))
        res = netdissect(a, s, quantile=0.05, delta=0.1)
        ok = (res.lower <= truth + 1e-3) & (truth - 1e-3 <= res.upper)
        misses += int((~ok.all(axis=1)).sum())
    # expected <= 0.1 * 60 = 6 unit-level failures; P(Binomial(60, 0.1) >= 14) < 1e-3
    assert misses <= 13
    # more images, narrower limits
    assert np.mean(big.upper - big.lower) < np.mean(res.upper - res.lower)


def test_summary_with_multiplicity():
    # certificates need n * q well above log(3 C / delta): here q = 0.1 with 1500 images
    acts, seg, _ = make_set(n=1500, n_units=6, seed=5, h=4, w=4, big_h=16, big_w=16,
                            n_obj=3, n_tex=1, n_col=2, noise=0.3)
    res = netdissect(acts, seg, quantile=0.1, delta=0.05)
    none = res.summary(0.04)
    fwer = res.detector_summary(multiplicity="fwer")
    fdr = res.summary(0.04, multiplicity="fdr")
    assert 0 < none.n_certified <= res.n_neurons
    assert fwer.n_certified <= none.n_certified
    pv = fwer.p_values
    assert np.all((pv > 0) & (pv <= 1))
    # Holm certifies a prefix of the sorted p-values; BY with the same p-values too
    order = np.argsort(pv, kind="stable")
    assert fwer.certified[order].tolist() == sorted(fwer.certified.tolist(), reverse=True)
    assert fdr.certified[order].tolist() == sorted(fdr.certified.tolist(), reverse=True)
    # a p-value below delta means the lower limit clears the level at that delta
    assert np.all(res.best_lower[pv < 0.05 / 2] > 0.04)


def test_other_delta_rounds_the_band_outward(small_tally):
    """A delta whose band is not on the grid gives limits no tighter than the exact band."""
    res_exact = netdissect_identify(small_tally, delta=0.05)
    res_other = netdissect_identify(small_tally, delta=0.0499)
    assert np.all(res_other.lower <= res_exact.lower + 1e-12)
    assert np.all(res_other.upper >= res_exact.upper - 1e-12)


def test_fixed_thresholds_are_conditional(small):
    acts, seg, _ = small
    thr = top_quantile_thresholds(acts, 0.005)
    res = netdissect(acts, seg, thresholds=thr)
    ref = netdissect(acts, seg, quantile=0.005)
    np.testing.assert_array_equal(res.similarity, ref.similarity)
    assert res.parameters["conditional_on_threshold"]
    assert np.all(res.lower >= ref.lower - 1e-12)  # no threshold band: narrower


def test_dead_unit_is_none():
    acts, seg, _ = make_set(n=30, n_units=3, seed=2)
    acts = acts.copy()
    acts[:, 1] = 0.0
    res = netdissect(acts, seg, quantile=0.005)
    assert res.best[1] == -1 and res.labels[1] == ""
    ex = netdissect_explain(acts, seg, n_boot=20, rng=0, quantile=0.005)
    assert ex.none_probability[1] == 1.0
    assert ex.prediction_sets[1].tolist() == [-1]


# ---------------------------------------------------------------------------
# binned bootstrap


def test_binned_replicates_match_materialised(small, small_tally):
    acts, seg, _ = small
    n_rep = 20
    w = replicate_weights(5, range(n_rep), acts.shape[0], dtype=np.float64)
    iou, oog = netdissect_replicates(small_tally, w)
    assert not oog.any()
    agree = 0
    for b in range(n_rep):
        a2, s2 = repeat_set(acts, seg, w[b])
        ref = netdissect(a2, s2, quantile=0.005)
        filled = np.where(np.isnan(iou[b]), -1.0, iou[b])
        lab = np.where(filled.max(axis=1) > 0, filled.argmax(axis=1), -1)
        agree += int((lab == ref.best).sum())
    assert agree / (n_rep * acts.shape[1]) >= 0.99


def test_frozen_threshold_equals_fixed_threshold_recount(small, small_tally):
    acts, seg, _ = small
    w = replicate_weights(9, range(4), acts.shape[0], dtype=np.float64)
    iou, _ = netdissect_replicates(small_tally, w, threshold="frozen")
    for b in range(4):
        a2, s2 = repeat_set(acts, seg, w[b])
        ref = netdissect(a2, s2, thresholds=small_tally.thresholds)
        np.testing.assert_allclose(iou[b], ref.similarity, rtol=1e-12, atol=0)


def test_unit_weights_reproduce_full_data(small_tally):
    res = netdissect_identify(small_tally)
    iou, _ = netdissect_replicates(small_tally, np.ones((1, small_tally.n_images)),
                                   threshold="frozen")
    np.testing.assert_array_equal(iou[0], res.similarity)


def test_explain_same_seed_and_chunking(small, small_tally):
    target = small[2]
    a = netdissect_explain(small_tally, n_boot=40, rng=3, batch_size=40)
    b = netdissect_explain(small_tally, n_boot=40, rng=3, batch_size=7)
    assert isinstance(a, ExplanationResult)
    assert a == b
    assert a.identification.labels == b.identification.labels
    c = netdissect_explain(small_tally, n_boot=40, rng=4)
    assert not np.array_equal(a.winners, c.winners)
    # planted units are stable: their own concept is the mode
    ident = a.identification
    good = ident.best == target
    assert good.mean() > 0.5
    in_set = [target[j] in a.prediction_sets[j] for j in np.flatnonzero(good)]
    assert np.mean(in_set) >= 0.8
    assert np.median(a.mode_frequency[good]) > 0.5
    np.testing.assert_allclose(a.probabilities.sum(axis=1) + a.none_probability, 1.0)


def test_explain_from_arrays_and_modes(small):
    acts, seg, _ = small
    ex = netdissect_explain(acts[:40], _subset(seg, 40), n_boot=30, rng=0, threshold="frozen",
                            mode="both", alpha=0.2)
    assert ex.split_sets is not None and len(ex.split_sets) == acts.shape[1]
    assert ex.parameters["threshold_mode"] == "frozen"
    with pytest.raises(ValidationError, match="recomputed"):
        tally = netdissect_tally(acts[:40], _subset(seg, 40))
        netdissect_explain(tally, n_boot=5)


def _subset(seg, k):
    return InMemorySegmentationSet(
        images=seg.images[:k], label_maps_=seg.label_maps_[:k], image_labels_=seg.image_labels_[:k],
        annotated_=seg.annotated_[:k], labels=seg.labels, categories=seg.categories,
        label_category=seg.label_category)


def test_tally_chunking_invariance(small):
    acts, seg, _ = small
    ts = [netdissect_tally(acts, seg, quantile=0.01, n_bins=64, batch_size=bs)
          for bs in (1, 7, None)]
    for t in ts[1:]:
        np.testing.assert_array_equal(t.grid, ts[0].grid)
        assert (t.lowres != ts[0].lowres).nnz == 0
        for u0, u1 in zip(ts[0].units, t.units):
            assert (u0 != u1).nnz == 0
    e0 = netdissect_explain(ts[0], n_boot=10, rng=1)
    e1 = netdissect_explain(ts[2], n_boot=10, rng=1)
    assert e0 == e1


def test_memmap_input(tmp_path, small):
    acts, seg, _ = small
    path = tmp_path / "acts.npy"
    np.save(path, acts)
    mm = np.load(path, mmap_mode="r")
    a = netdissect(mm, seg, batch_size=9)
    b = netdissect(acts, seg)
    np.testing.assert_array_equal(a.similarity, b.similarity)


def test_save_load_roundtrip(tmp_path, small_tally):
    pytest.importorskip("pyarrow")
    ex = netdissect_explain(small_tally, n_boot=10, rng=0)
    ex.save(tmp_path / "ex")
    back = ExplanationResult.load(tmp_path / "ex")
    np.testing.assert_array_equal(back.probabilities, ex.probabilities)
    assert back.identification.labels == ex.identification.labels
    res = ex.identification
    assert isinstance(res, NetDissectResult)
    res.save(tmp_path / "id")
    again = IdentificationResult.load(tmp_path / "id")
    np.testing.assert_array_equal(again.lower, res.lower)
    assert again.parameters["categories"] == res.categories


# ---------------------------------------------------------------------------
# bad input


class _BadSet:
    """A SegmentationSet whose second image carries an unknown label id."""

    def __init__(self, seg):
        self._s = seg
        self.labels, self.categories = seg.labels, seg.categories
        self.label_category, self.mask_shape = seg.label_category, seg.mask_shape

    def __len__(self):
        return len(self._s)

    def image(self, i):
        return self._s.image(i)

    def label_maps(self, i):
        m = self._s.label_maps(i).copy()
        if i == 1:
            m[0, 0, 0] = 999
        return m

    def image_labels(self, i):
        return self._s.image_labels(i)

    def annotated(self, i):
        return self._s.annotated(i)


def test_bad_input():
    acts, seg = _hand_set()
    with pytest.raises(ValidationError, match="no spatial dimensions"):
        netdissect(acts[:, :, 0, 0], seg)
    with pytest.raises(ValidationError, match="2 images but `activations` has 3"):
        netdissect(np.concatenate([acts, acts[:1]]), seg)
    with pytest.raises(ValidationError, match="image 1: pixel label 999"):
        netdissect(acts, _BadSet(seg))
    bad = acts.copy()
    bad[1, 0, 2, 2] = np.nan
    with pytest.raises(ValidationError, match="non-finite"):
        netdissect(bad, seg)
    with pytest.raises(ValidationError, match="n_bins"):
        netdissect_tally(acts, seg, n_bins=10)
    with pytest.raises(ValidationError, match="SegmentationSet"):
        netdissect(acts, object())
    with pytest.raises(ValidationError, match="threshold"):
        netdissect_explain(acts, seg, threshold="sometimes")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        netdissect(acts, seg, quantile=0.125)
