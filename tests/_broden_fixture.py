"""A hand-made Broden folder with hand-computed expectations.

Four 8x8 images with 4x4 segmentation masks, written file by file with
Pillow (not with :class:`neurocert.data.broden.BrodenWriter`):

* label numbers 1 red, 2 blue (color), 5 person (object), 300 wheel (G channel
  = 1; ``object(1);part(2)``, so its primary category is part), 7 street,
  8 kitchen (scene, image-level);
* ``material`` is a category without labels;
* image 0 has color and object masks (two pixel categories) and scene 7;
  image 1 object and part masks; image 2 a color mask and scenes 8 and 7;
  image 3 has no annotation at all.

The expected IoUs are worked out by hand below from the definition
``IoU(c) = sum_i |U_i & M_i(c)| / sum_{i: cat(c) annotated on i} |U_i | M_i(c)|``
with ``M_i(c)`` all pixels for an image-level label.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

# masks in Broden label numbers (0 = unlabelled)
COLOR0 = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]])
OBJECT0 = np.array([[0, 0, 0, 0], [5, 5, 0, 0], [5, 5, 0, 0], [0, 0, 0, 0]])
OBJECT1 = np.array([[5, 5, 5, 5], [5, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
PART1 = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [300, 300, 0, 0], [300, 300, 0, 0]])
COLOR2 = np.array([[2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 2], [1, 1, 0, 0]])

# the fixed unit mask per image (at mask resolution)
UNIT = np.zeros((4, 4, 4), bool)
UNIT[0, :2, :2] = True   # top-left 2x2
UNIT[1, :, 0] = True     # left column
UNIT[2, 0, :] = True     # top row
UNIT[3, 3, 2:] = True    # image 3 is unannotated: must never count

# concept order = label.csv order
LABELS = ("red", "blue", "person", "wheel", "street", "kitchen")
NUMBERS = (1, 2, 5, 300, 7, 8)
CATEGORIES = ("color", "object", "part", "material", "scene")
PRIMARY = ("color", "color", "object", "part", "scene", "scene")

# worked by hand (see the module docstring):
# red:    img0 I=4 U=4;  img2 I=0 U=4+2          -> 4/10
# blue:   img0 I=0 U=8;  img2 I=4 U=4+12-4       -> 4/20
# person: img0 I=2 U=6;  img1 I=2 U=4+5-2        -> 4/13
# wheel:  img1 I=2 U=6                            -> 2/6
# street: img0 I=4 U=16; img2 I=4 U=16            -> 8/32
# kitchen: img0 I=0 U=4; img2 I=4 U=16            -> 4/20
IOU = {
    "red": Fraction(4, 10), "blue": Fraction(4, 20), "person": Fraction(4, 13),
    "wheel": Fraction(2, 6), "street": Fraction(8, 32), "kitchen": Fraction(4, 20),
}


def _write_mask(path: Path, numbers: np.ndarray) -> None:
    from PIL import Image

    rgb = np.zeros(numbers.shape + (3,), np.uint8)
    rgb[..., 0] = numbers % 256
    rgb[..., 1] = numbers // 256
    Image.fromarray(rgb, "RGB").save(path)


def make_broden_fixture(root: Path) -> dict:
    """Write the fixture under ``root`` and return the expectations."""
    from PIL import Image

    root = Path(root)
    img_dir = root / "images" / "fix"
    img_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)]
    for i, im in enumerate(images):
        Image.fromarray(im, "RGB").save(img_dir / f"im{i}.png")
    _write_mask(img_dir / "im0_color.png", COLOR0)
    _write_mask(img_dir / "im0_object.png", OBJECT0)
    _write_mask(img_dir / "im1_object.png", OBJECT1)
    _write_mask(img_dir / "im1_part.png", PART1)
    _write_mask(img_dir / "im2_color.png", COLOR2)

    (root / "index.csv").write_text(
        "image,split,ih,iw,sh,sw,color,object,part,material,scene\n"
        "fix/im0.png,train,8,8,4,4,fix/im0_color.png,fix/im0_object.png,,,7\n"
        "fix/im1.png,train,8,8,4,4,,fix/im1_object.png,fix/im1_part.png,,\n"
        "fix/im2.png,val,8,8,4,4,fix/im2_color.png,,,,8;7\n"
        "fix/im3.png,val,8,8,4,4,,,,,\n")
    (root / "category.csv").write_text(
        "name,first,last,count,frequency\n"
        "color,1,2,2,2\nobject,5,5,1,2\npart,300,300,1,1\nmaterial,0,0,0,0\nscene,7,8,2,2\n")
    (root / "label.csv").write_text(
        "number,name,category,frequency,coverage,syns\n"
        "0,-,,0,0,\n"
        "1,red,color(2),2,0.375,\n"
        "2,blue,color(2),2,1.0,\n"
        "5,person,object(2),2,0.5625,\n"
        '300,wheel,"object(1);part(2)",1,0.25,\n'
        "7,street,scene(2),2,2.0,\n"
        "8,kitchen,scene(1),1,1.0,\n")
    (root / "c_color.csv").write_text("code,number,name,frequency,coverage\n1,1,red,2,0.375\n2,2,blue,2,1.0\n")
    (root / "c_material.csv").write_text("code,number,name,frequency,coverage\n")

    lut = {n: k for k, n in enumerate(NUMBERS)}
    lut[0] = -1
    to_idx = np.vectorize(lut.__getitem__)
    maps = [np.stack([to_idx(COLOR0), to_idx(OBJECT0)]), np.stack([to_idx(OBJECT1), to_idx(PART1)]),
            to_idx(COLOR2)[None], np.zeros((0, 4, 4), int)]
    image_labels = [[LABELS.index("street")], [], sorted([LABELS.index("street"), LABELS.index("kitchen")]), []]
    annotated = np.array([
        [1, 1, 0, 0, 1],
        [0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1],
        [0, 0, 0, 0, 0],
    ], bool)
    return {
        "images": images,
        "labels": LABELS,
        "numbers": NUMBERS,
        "categories": CATEGORIES,
        "primary": PRIMARY,
        "empty_categories": ("material",),
        "maps": maps,
        "image_labels": image_labels,
        "annotated": annotated,
        "splits": ("train", "train", "val", "val"),
        "unit": UNIT,
        "iou": IOU,
    }
