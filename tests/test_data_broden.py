"""Broden reader and writer on a hand-made fixture with hand-computed IoU."""

from __future__ import annotations

import shutil
from fractions import Fraction

import numpy as np
import pytest

pytest.importorskip("PIL")

from _broden_fixture import _write_mask, make_broden_fixture

from neurocert.data.broden import (
    BrodenDataset,
    BrodenWriter,
    EmptyCategoryWarning,
    load_broden,
)
from neurocert.data.segmentation import (
    InMemorySegmentationSet,
    SegmentationSet,
    check_segmentation_set,
)
from neurocert.exceptions import ValidationError


@pytest.fixture()
def fixture(tmp_path):
    root = tmp_path / "broden"
    return root, make_broden_fixture(root)


def _open(root, **kw):
    with pytest.warns(EmptyCategoryWarning, match="material"):
        return load_broden(root, **kw)


def reference_iou(ds, units):
    """Dataset-level IoU per concept, straight from the definition, pixel by pixel.

    An image counts towards the union of concept c only when c's primary
    category is annotated on it; image-level labels cover every pixel.
    """
    out = {}
    for c, name in enumerate(ds.labels):
        cat = ds.label_category[c]
        inter = union = 0
        for i in range(len(ds)):
            if not ds.annotated(i)[cat]:
                continue
            maps, il = ds.label_maps(i), set(ds.image_labels(i).tolist())
            for y in range(ds.mask_shape[0]):
                for x in range(ds.mask_shape[1]):
                    has = c in il or any(maps[k, y, x] == c for k in range(maps.shape[0]))
                    u = bool(units[i][y, x])
                    inter += u and has
                    union += u or has
        out[name] = Fraction(inter, union) if union else None
    return out


def test_reader_matches_hand_made_fixture(fixture):
    root, exp = fixture
    ds = _open(root)
    assert isinstance(ds, SegmentationSet)
    assert ds.labels == exp["labels"]
    assert ds.label_numbers.tolist() == list(exp["numbers"])
    assert ds.categories == exp["categories"]
    assert [ds.categories[k] for k in ds.label_category] == list(exp["primary"])
    assert ds.empty_categories == exp["empty_categories"]
    assert ds.mask_shape == (4, 4)
    assert len(ds) == 4
    for i in range(4):
        np.testing.assert_array_equal(ds.image(i), exp["images"][i])
        maps = ds.label_maps(i)
        assert maps.dtype == np.int32
        np.testing.assert_array_equal(maps, exp["maps"][i])
        assert ds.image_labels(i).tolist() == exp["image_labels"][i]
        np.testing.assert_array_equal(ds.annotated(i), exp["annotated"][i])
    check_segmentation_set(ds)
    # label 300 lives in the G channel: R = 44, G = 1
    assert ds.label_maps(1)[1, 2, 0] == ds.labels.index("wheel")


def test_category_restricted_iou_by_hand(fixture):
    root, exp = fixture
    ds = _open(root)
    assert reference_iou(ds, exp["unit"]) == exp["iou"]


def test_iou_ignores_unannotated_images(fixture):
    """Sanity of the reference: counting every image would change the hand numbers."""
    root, exp = fixture
    ds = _open(root)
    units = exp["unit"].copy()
    units[3] = True  # image 3 is unannotated: no effect
    units[1, 3, 3] = True  # image 1 has no color annotation: no effect on red/blue
    got = reference_iou(ds, units)
    for name in ("red", "blue", "street", "kitchen"):
        assert got[name] == exp["iou"][name]
    assert got["person"] == Fraction(4, 14)


def test_split_filter(fixture):
    root, exp = fixture
    ds = _open(root, split="val")
    assert len(ds) == 2
    np.testing.assert_array_equal(ds.label_maps(0), exp["maps"][2])
    with pytest.warns(EmptyCategoryWarning), pytest.raises(ValidationError, match="no row with split"):
        load_broden(root, split="test")


def _corrupt(root, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(root, bad)
    edit(bad)
    return bad


def test_mask_size_mismatch(fixture, tmp_path):
    root, _ = fixture
    bad = _corrupt(root, tmp_path, lambda r: _write_mask(r / "images/fix/im1_part.png", np.zeros((5, 4), int)))
    ds = _open(bad)
    with pytest.raises(ValidationError, match=r"im1_part.png.*5x4.*sh x sw = 4x4"):
        ds.label_maps(1)


def test_image_size_mismatch(fixture, tmp_path):
    root, _ = fixture

    def edit(r):
        from PIL import Image
        Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(r / "images/fix/im2.png")
    ds = _open(_corrupt(root, tmp_path, edit))
    with pytest.raises(ValidationError, match=r"9x8.*ih x iw = 8x8"):
        ds.image(2)


def test_unknown_pixel_label(fixture, tmp_path):
    root, _ = fixture
    m = np.zeros((4, 4), int)
    m[0, 0] = 301
    ds = _open(_corrupt(root, tmp_path, lambda r: _write_mask(r / "images/fix/im0_object.png", m)))
    with pytest.raises(ValidationError, match=r"label id\(s\) \[301\]"):
        ds.label_maps(0)


def test_unknown_image_label(fixture, tmp_path):
    root, _ = fixture

    def edit(r):
        p = r / "index.csv"
        p.write_text(p.read_text().replace(",8;7\n", ",9;7\n"))
    with pytest.warns(EmptyCategoryWarning), pytest.raises(ValidationError, match="image-level label id 9"):
        load_broden(_corrupt(root, tmp_path, edit))


def test_missing_files(fixture, tmp_path):
    root, _ = fixture
    bad = _corrupt(root, tmp_path, lambda r: (r / "images/fix/im1_object.png").unlink())
    with pytest.warns(EmptyCategoryWarning), pytest.raises(ValidationError, match="1 file.*missing.*im1_object"):
        load_broden(bad)
    ds = _open(bad, check_files=False)
    with pytest.raises(ValidationError, match="does not exist"):
        ds.label_maps(1)
    (bad / "label.csv").unlink()
    with pytest.raises(ValidationError, match="label.csv.*does not exist"):
        load_broden(bad)
    with pytest.raises(ValidationError, match="does not exist"):
        load_broden(tmp_path / "nowhere")


@pytest.mark.parametrize(("old", "new", "msg"), [
    ("300,wheel,\"object(1);part(2)\"", "300,wheel,\"object(1);wheels(2)\"", "unknown category 'wheels'"),
    ("7,street,scene(2)", "7,street,", "has no category"),
    ("5,person", "x,person", "not an integer"),
])
def test_bad_label_csv(fixture, tmp_path, old, new, msg):
    root, _ = fixture

    def edit(r):
        p = r / "label.csv"
        p.write_text(p.read_text().replace(old, new))
    with pytest.raises(ValidationError, match=msg):
        load_broden(_corrupt(root, tmp_path, edit))


def test_bad_index_cells(fixture, tmp_path):
    root, _ = fixture

    def mixed(r):
        p = r / "index.csv"
        p.write_text(p.read_text().replace(",8;7\n", ",8;fix/im0_color.png\n"))
    with pytest.warns(EmptyCategoryWarning), pytest.raises(ValidationError, match="mixes"):
        load_broden(_corrupt(root, tmp_path, mixed))

    def sizes(r):
        p = r / "index.csv"
        p.write_text(p.read_text().replace("fix/im3.png,val,8,8,4,4", "fix/im3.png,val,8,8,2,2"))
    with pytest.warns(EmptyCategoryWarning), pytest.raises(ValidationError, match="different segmentation sizes"):
        load_broden(_corrupt(root, tmp_path / "s", sizes))

    def column(r):
        p = r / "category.csv"
        p.write_text(p.read_text().replace("part,300,300,1,1\n", ""))
    with pytest.raises(ValidationError, match=r"category column\(s\) \['part'\]"):
        load_broden(_corrupt(root, tmp_path / "c", column))

    def cfile(r):
        (r / "c_color.csv").write_text("code,number,name,frequency,coverage\n1,3,red,2,0.3\n")
    with pytest.raises(ValidationError, match="c_color.csv refers to label 3"):
        load_broden(_corrupt(root, tmp_path / "f", cfile))


def test_writer_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    labels = [f"l{k}" for k in range(7)]
    cats = ["object", "texture", "scene", "empty"]
    label_cat = [0, 0, 0, 1, 1, 2, 2]
    n = 5
    images = [rng.integers(0, 256, (12, 10, 3), dtype=np.uint8) for _ in range(n)]
    maps, il, ann = [], [], np.zeros((n, 4), bool)
    w = BrodenWriter(tmp_path / "w", labels=labels, categories=cats, label_category=label_cat,
                     mask_shape=(6, 5), image_format="png")
    for i in range(n):
        obj = rng.choice([-1, 0, 1, 2], size=(6, 5))
        tex = rng.choice([-1, 3, 4], size=(6, 5))
        pix = {"object": [obj], "texture": [tex]} if i % 2 == 0 else {"object": [obj]}
        scene = [5, 6] if i == 1 else ([6] if i == 2 else [])
        w.add(images[i], pixel_labels=pix, image_labels={"scene": scene} if scene else {})
        maps.append(np.stack(pix["object"] + pix.get("texture", [])))
        il.append(sorted(scene))
        ann[i] = [True, i % 2 == 0, bool(scene), False]
    w.close()
    with pytest.warns(EmptyCategoryWarning, match="empty"):
        ds = BrodenDataset(tmp_path / "w")
    assert ds.labels == tuple(labels) and ds.categories == tuple(cats)
    assert ds.label_category.tolist() == label_cat
    ref = InMemorySegmentationSet(images, maps, il, ann, labels, cats, np.array(label_cat))
    for i in range(n):
        np.testing.assert_array_equal(ds.image(i), ref.image(i))
        np.testing.assert_array_equal(ds.label_maps(i), ref.label_maps(i))
        np.testing.assert_array_equal(ds.image_labels(i), ref.image_labels(i))
        np.testing.assert_array_equal(ds.annotated(i), ref.annotated(i))


def test_writer_rejects_bad_layers(tmp_path):
    w = BrodenWriter(tmp_path / "w", labels=["a"], categories=["object"], label_category=[0], mask_shape=(2, 2))
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValidationError, match="shape"):
        w.add(img, pixel_labels={"object": [np.zeros((3, 2), int)]})
    with pytest.raises(ValidationError, match="unknown category"):
        w.add(img, image_labels={"scene": [0]})
    with pytest.raises(ValidationError, match=r"\[-1, 1\)"):
        w.add(img, pixel_labels={"object": [np.full((2, 2), 1)]})
