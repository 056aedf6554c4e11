"""broden-lite: determinism, reuse, exact masks, and the real assets."""

from __future__ import annotations

import importlib.util
import json
import time

import numpy as np
import pytest
from conftest import require_asset
from test_data_idx import write_fashion

from neurocert.data import broden_lite as bl
from neurocert.data.broden import BrodenDataset
from neurocert.data.idx import fashion_mnist_available
from neurocert.data.segmentation import check_segmentation_set
from neurocert.exceptions import ValidationError


def _need_images():
    require_asset(importlib.util.find_spec("skimage") is not None
                  and importlib.util.find_spec("PIL") is not None,
                  "scikit-image and Pillow (pip install 'neurocert[images]')")


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    root = tmp_path_factory.mktemp("fashion")
    write_fashion(root, n_per_class=3)
    return root


def _gen(root, fashion, **kw):
    args = {"n_images": 8, "seed": 1, "image_size": 64, "mask_size": 32, "image_format": "png",
            "fashion_root": fashion} | kw
    return bl.generate(root, **args)


def test_deterministic_prefix_stable_and_reused(tmp_path, fashion):
    _need_images()
    a = _gen(tmp_path / "a", fashion, n_images=6)
    b = _gen(tmp_path / "b", fashion, n_images=10)
    again = _gen(tmp_path / "a", fashion, n_images=6)
    assert again == a
    assert a.name != b.name
    da, db = BrodenDataset(a), BrodenDataset(b)
    assert len(da) == 6 and len(db) == 10
    for i in range(6):  # image i depends on (seed, i) only
        np.testing.assert_array_equal(da.image(i), db.image(i))
        np.testing.assert_array_equal(da.label_maps(i), db.label_maps(i))
        np.testing.assert_array_equal(da.image_labels(i), db.image_labels(i))
    mtime = (a / "manifest.json").stat().st_mtime_ns
    assert _gen(tmp_path / "a", fashion, n_images=6) == a
    assert (a / "manifest.json").stat().st_mtime_ns == mtime
    c = BrodenDataset(_gen(tmp_path / "a", fashion, n_images=6, seed=2))
    assert any(not np.array_equal(da.image(i), c.image(i)) for i in range(6))


def test_set_is_a_valid_segmentation_set_with_counts(tmp_path, fashion):
    _need_images()
    path = _gen(tmp_path, fashion, n_images=40)
    ds = BrodenDataset(path)
    names, cats = bl.concept_names()
    assert list(ds.labels) == names and ds.label_category.tolist() == cats
    assert ds.categories == bl.CATEGORIES and ds.mask_shape == (32, 32)
    check_segmentation_set(ds)
    manifest = json.loads((path / "manifest.json").read_text())
    counts = np.zeros(len(names), int)
    for i in range(len(ds)):
        maps = ds.label_maps(i)
        present = np.zeros(len(names), bool)
        present[maps[maps >= 0]] = True
        present[ds.image_labels(i)] = True
        counts += present
        assert ds.annotated(i)[0]  # every image has an object
        # the scene is annotated exactly when there is one scene label
        assert ds.annotated(i)[3] == (ds.image_labels(i).size == 1)
    assert manifest["image_counts"] == counts.tolist()


def test_masks_are_exact(tmp_path, fashion):
    """Where a mask says 'colour c' on an untextured pixel, the pixel has colour c.

    The fixture's items are flat white rectangles, so an untextured item pixel
    is its tint exactly (up to the tint's jitter), like a colour fill.
    """
    _need_images()
    ds = BrodenDataset(_gen(tmp_path, fashion, n_images=30, image_size=96, mask_size=48))
    names, _ = bl.concept_names()
    proto = np.array(list(bl.COLORS.values()), float)
    col0 = names.index("black")
    pick = ((np.arange(48) + 0.5) * 96 / 48).astype(int)
    fill_ok = fill_n = obj_ok = obj_n = 0
    for i in range(len(ds)):
        layers = dict(zip([c for c, a in zip(ds.categories, ds.annotated(i)) if a and c != "scene"],
                          ds.label_maps(i), strict=True))
        col = layers.get("color")
        if col is None:
            continue
        tex = layers.get("texture", np.full(col.shape, -1))
        obj = layers["object"]
        px = ds.image(i)[np.ix_(pick, pick)].astype(float)
        nearest = np.argmin(((px[:, :, None, :] - proto) ** 2).sum(-1), axis=-1) + col0
        fill = (col >= 0) & (tex < 0) & (obj < 0)
        fill_ok += (nearest[fill] == col[fill]).sum()
        fill_n += fill.sum()
        item = (col >= 0) & (tex < 0) & (obj >= 0)
        obj_ok += (nearest[item] == col[item]).sum()
        obj_n += item.sum()
    assert fill_n > 1000 and fill_ok == fill_n
    assert obj_n > 1000 and obj_ok >= 0.9 * obj_n


def test_bad_arguments(tmp_path, fashion):
    with pytest.raises(ValidationError, match="n_images"):
        bl.generate(tmp_path, n_images=0, fashion_root=fashion)
    with pytest.raises(ValidationError, match="mask_size"):
        bl.generate(tmp_path, image_size=32, mask_size=64, fashion_root=fashion)
    with pytest.raises(ValidationError, match="dataset-fashion-mnist"):
        bl.generate(tmp_path, fashion_root=tmp_path / "none")


def test_real_assets_broden_lite(tmp_path):
    _need_images()
    require_asset(fashion_mnist_available(), "Debian package dataset-fashion-mnist")
    t = time.perf_counter()
    ds = bl.load(tmp_path, n_images=120, seed=0)
    seconds = time.perf_counter() - t
    assert len(ds) == 120 and ds.image(0).shape == (224, 224, 3) and ds.mask_shape == (112, 112)
    check_segmentation_set(ds, images=range(0, 120, 7))
    counts = json.loads(next(tmp_path.glob("broden_lite-*/manifest.json")).read_text())["image_counts"]
    counts = np.array(counts)
    assert (counts[:10] > 0).sum() >= 8  # most object classes occur in 120 images
    assert counts.max() > 4 * max(counts[counts > 0].min(), 1)  # frequencies vary
    assert seconds < 60
