"""broden-lite: a Broden-format probing set composited from real images that install offline.

Every image is a background plus one to four Fashion-MNIST items:

* **background** — a photo from scikit-image (category ``scene``, an
  image-level label covering every pixel), or one or two regions split by a
  random line, each a texture (scikit-image's real ``brick``, ``grass`` and
  ``gravel`` crops, or ``striped``, ``checkered`` and ``dotted`` patterns),
  optionally tinted with a colour, or a colour fill with gentle shading;
* **objects** — Fashion-MNIST items (Debian ``dataset-fashion-mnist``, the
  ``t10k`` split), scaled to 22-60 % of the image side at random positions,
  tinted with a colour and sometimes filled with a texture; later items
  occlude earlier ones. Photos often carry one or two texture or colour
  patches (rectangles or ellipses), so those concepts also occur small.

The pixel masks are exact by construction: an item's mask is its foreground
(intensity above :data:`FOREGROUND`) after scaling, minus what later items
cover; texture and colour layers hold the visible background regions and the
tints. Labels are sampled with unequal weights, so some concepts are common
and others rare. Category layers: ``object`` (10 classes), ``texture`` (6),
``color`` (Broden's 11 colour names) and ``scene`` (7 photos, image-level).

Image ``i`` is a pure function of ``(seed, i)`` (its generator is
``SeedSequence(seed, spawn_key=(i,))``), so a larger set extends a smaller
one. :func:`generate` writes into a folder named by a hash of its arguments
and inputs and reuses it when it is complete.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import OptionalDependencyError, ValidationError
from .broden import BrodenDataset, BrodenWriter
from .idx import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_DIR,
    FashionMNIST,
    load_fashion_mnist,
)

__all__ = ["COLORS", "PHOTOS", "TEXTURES", "concept_names", "generate", "load"]

#: Version of the generating process; part of the content key.
GENERATOR_VERSION = 2

#: Fashion-MNIST intensity (0-255 scale) above which a scaled item pixel is foreground.
FOREGROUND = 40

#: Broden's eleven colour names with the RGB prototypes used for tints and fills.
COLORS: dict[str, tuple[int, int, int]] = {
    "black": (22, 22, 22), "blue": (30, 70, 205), "brown": (125, 72, 30), "green": (40, 150, 50),
    "grey": (128, 128, 128), "orange": (245, 140, 20), "pink": (245, 150, 195),
    "purple": (120, 40, 155), "red": (210, 28, 28), "white": (240, 240, 240), "yellow": (240, 220, 40),
}
#: Texture concepts: real scikit-image textures, then generated patterns.
TEXTURES = ("brick", "grass", "gravel", "striped", "checkered", "dotted")
#: Scene concepts: scikit-image photos used as whole-image backgrounds (name -> loader).
PHOTOS = {
    "astronaut": "astronaut", "cat": "chelsea", "coffee": "coffee", "rocket": "rocket",
    "cameraman": "camera", "galaxy": "hubble_deep_field", "tissue": "immunohistochemistry",
}
CATEGORIES = ("object", "texture", "color", "scene")

# unequal sampling weights (Zipf-like), so concept frequencies vary
_OBJ_W = 1.0 / np.arange(1, 11) ** 1.1
_TEX_W = 1.0 / np.arange(1, 7) ** 0.9
_COL_W = 1.0 / np.arange(1, 12) ** 0.8
_PHOTO_W = 1.0 / np.arange(1, 8) ** 0.9
_OBJ_ORDER = (7, 0, 3, 1, 9, 4, 8, 2, 5, 6)  # most to least frequent class
_COL_ORDER = (8, 1, 3, 10, 9, 5, 4, 7, 6, 2, 0)  # red, blue, green, yellow, white, ... black


def concept_names() -> tuple[list[str], list[int]]:
    """Concept names and their category indices, in concept-index order."""
    names = [*FASHION_MNIST_CLASSES, *TEXTURES, *COLORS, *PHOTOS]
    cats = [0] * 10 + [1] * len(TEXTURES) + [2] * len(COLORS) + [3] * len(PHOTOS)
    return names, cats


_OFF_TEX, _OFF_COL, _OFF_SCN = 10, 10 + len(TEXTURES), 10 + len(TEXTURES) + len(COLORS)
_PROTO = np.array(list(COLORS.values()), np.float32)


def _skimage_data():
    try:
        from skimage import data
    except ImportError as exc:
        raise OptionalDependencyError(
            "broden-lite requires scikit-image (its bundled textures and photos); install it with: "
            "pip install 'neurocert[images]'") from exc
    return data


@dataclass
class _Sources:
    fashion: FashionMNIST
    by_class: list[np.ndarray]
    textures: list[np.ndarray]  # float32 (h, w) in [0, 1]
    photos: list[np.ndarray]  # uint8 (h, w, 3)


def _load_sources(fashion: FashionMNIST) -> _Sources:
    data = _skimage_data()
    tex = []
    for name in TEXTURES[:3]:
        a = getattr(data, name)().astype(np.float32)
        lo, hi = np.percentile(a, [1, 99])
        tex.append(np.clip((a - lo) / max(hi - lo, 1.0), 0, 1))
    photos = []
    for fn in PHOTOS.values():
        a = getattr(data, fn)()
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        photos.append(np.ascontiguousarray(a[..., :3], dtype=np.uint8))
    by_class = [np.flatnonzero(fashion.labels == k) for k in range(10)]
    empty = [FASHION_MNIST_CLASSES[k] for k in range(10) if by_class[k].size == 0]
    if empty:
        raise ValidationError(f"broden-lite: the Fashion-MNIST set has no image of class(es) {empty}")
    return _Sources(fashion, by_class, tex, photos)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 (h, w) or uint8 (h, w, 3) array to (height, width)."""
    from ._imageio import pil_image

    Image = pil_image("broden-lite")
    h, w = size
    if a.dtype == np.uint8:
        return np.asarray(Image.fromarray(a).resize((w, h), Image.BILINEAR))
    return np.asarray(Image.fromarray(a, "F").resize((w, h), Image.BILINEAR))


def _pattern(kind: str, rng: np.random.Generator, s: int) -> np.ndarray:
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    th = rng.uniform(0, np.pi)
    u = x * np.cos(th) + y * np.sin(th)
    v = -x * np.sin(th) + y * np.cos(th)
    p = rng.uniform(10, 30) * s / 224
    if kind == "striped":
        return (np.clip(3 * np.sin(2 * np.pi * u / p), -1, 1) * 0.5 + 0.5).astype(np.float32)
    if kind == "checkered":
        return ((np.floor(u / p) + np.floor(v / p)) % 2).astype(np.float32)
    du = u / p - np.round(u / p)
    dv = v / p - np.round(v / p)
    return (np.hypot(du, dv) < rng.uniform(0.22, 0.36)).astype(np.float32)  # dotted


def _texture(k: int, rng: np.random.Generator, src: _Sources, s: int) -> np.ndarray:
    if k >= 3:
        return _pattern(TEXTURES[k], rng, s)
    t = src.textures[k]
    c = int(rng.integers(80, min(288, t.shape[0]) + 1) * s / 224)
    c = min(max(c, 8), t.shape[0])
    y0, x0 = rng.integers(0, t.shape[0] - c + 1), rng.integers(0, t.shape[1] - c + 1)
    crop = np.rot90(t[y0:y0 + c, x0:x0 + c], int(rng.integers(4)))
    return np.clip(_resize(np.ascontiguousarray(crop), (s, s)), 0, 1)


def _tint(col: int, rng: np.random.Generator) -> np.ndarray:
    return np.clip(_PROTO[col] + rng.uniform(-12, 12, 3), 0, 255).astype(np.float32)


def _fill_region(reg: np.ndarray, kind: int, rng: np.random.Generator, src: _Sources, s: int,
                 img: np.ndarray, tex_lab: np.ndarray, col_lab: np.ndarray,
                 used: tuple[set[int], set[int]]) -> None:
    """Paint region ``reg`` with a texture (``kind`` 0; tinted or grey) or a colour fill (1)."""
    if kind == 0:
        k = int(rng.choice(len(TEXTURES), p=_TEX_W / _TEX_W.sum()))
        while k in used[0]:
            k = (k + 1) % len(TEXTURES)
        used[0].add(k)
        t = _texture(k, rng, src, s)
        if rng.random() < 0.6:
            col = _COL_ORDER[int(rng.choice(len(COLORS), p=_COL_W / _COL_W.sum()))]
            rgb = _tint(col, rng) * (0.3 + 0.7 * t)[..., None]
            col_lab[reg] = _OFF_COL + col
        else:
            rgb = np.repeat((255 * t)[..., None], 3, axis=2)
            col_lab[reg] = -1
        img[reg] = rgb[reg]
        tex_lab[reg] = _OFF_TEX + k
        return
    col = _COL_ORDER[int(rng.choice(len(COLORS), p=_COL_W / _COL_W.sum()))]
    while col in used[1]:
        col = (col + 1) % len(COLORS)
    used[1].add(col)
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    g = 1 + rng.uniform(-0.08, 0.08) * (xx - 0.5) + rng.uniform(-0.08, 0.08) * (yy - 0.5)
    img[reg] = (_tint(col, rng) * g[..., None])[reg]
    col_lab[reg] = _OFF_COL + col
    tex_lab[reg] = -1


def _render(i: int, seed: int, src: _Sources, s: int, m: int
            ) -> tuple[np.ndarray, dict[str, list[np.ndarray]], dict[str, list[int]]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,)))
    img = np.empty((s, s, 3), np.float32)
    tex_lab = np.full((s, s), -1, np.int16)
    col_lab = np.full((s, s), -1, np.int16)
    obj_lab = np.full((s, s), -1, np.int16)
    scene: list[int] = []
    mode = rng.choice(3, p=[0.35, 0.25, 0.4])
    if mode == 2:  # photo background
        k = int(rng.choice(len(PHOTOS), p=_PHOTO_W / _PHOTO_W.sum()))
        ph = src.photos[k]
        c = int(rng.uniform(0.45, 1.0) * min(ph.shape[:2]))
        y0, x0 = rng.integers(0, ph.shape[0] - c + 1), rng.integers(0, ph.shape[1] - c + 1)
        img[:] = _resize(np.ascontiguousarray(ph[y0:y0 + c, x0:x0 + c]), (s, s))
        scene.append(_OFF_SCN + k)
        used: tuple[set[int], set[int]] = (set(), set())
        for _ in range(int(rng.choice(3, p=[0.4, 0.4, 0.2]))):  # texture or colour patches on the photo
            ph_, pw_ = (int(v) for v in rng.uniform(0.25, 0.55, 2) * s)
            py, px = (int(v) for v in rng.integers(0, s - np.array([ph_, pw_]) + 1))
            reg = np.zeros((s, s), bool)
            if rng.random() < 0.5:
                reg[py:py + ph_, px:px + pw_] = True
            else:
                yy, xx = np.ogrid[0:s, 0:s]
                reg[((yy - py - ph_ / 2) / (ph_ / 2)) ** 2 + ((xx - px - pw_ / 2) / (pw_ / 2)) ** 2 <= 1] = True
            _fill_region(reg, int(rng.choice(2, p=[0.6, 0.4])), rng, src, s, img, tex_lab, col_lab, used)
    else:
        used = (set(), set())
        regions = [np.ones((s, s), bool)]
        if rng.random() < 0.4:  # two regions split by a random line
            yy, xx = np.mgrid[0:s, 0:s]
            phi = rng.uniform(0, 2 * np.pi)
            cy, cx = rng.uniform(0.3, 0.7, 2) * s
            half = (xx - cx) * np.cos(phi) + (yy - cy) * np.sin(phi) > 0
            regions = [half, ~half]
        for r, reg in enumerate(regions):
            kind = mode if r == 0 else int(rng.choice(2, p=[0.6, 0.4]))
            _fill_region(reg, kind, rng, src, s, img, tex_lab, col_lab, used)
    n_obj = int(rng.choice([1, 2, 3, 4], p=[0.3, 0.35, 0.2, 0.15]))
    for _ in range(n_obj):
        cls = _OBJ_ORDER[int(rng.choice(10, p=_OBJ_W / _OBJ_W.sum()))]
        pool = src.by_class[cls]
        item = src.fashion.images[pool[int(rng.integers(pool.size))]].astype(np.float32)
        size = int(rng.uniform(0.22, 0.6) * s)
        v = np.clip(_resize(item, (size, size)), 0, 255)
        if rng.random() < 0.5:
            v = v[:, ::-1]
        y0, x0 = (int(a) for a in rng.integers(0, s - size + 1, 2))
        fg = v > FOREGROUND
        col = _COL_ORDER[int(rng.choice(len(COLORS), p=_COL_W / _COL_W.sum()))]
        shade = v / 255
        if rng.random() < 0.2:  # a textured item
            k = int(rng.choice(len(TEXTURES), p=_TEX_W / _TEX_W.sum()))
            shade = 0.5 * shade + 0.5 * _texture(k, rng, src, size)
            tex_val = _OFF_TEX + k
        else:
            tex_val = -1
        rgb = _tint(col, rng) * (0.45 + 0.55 * shade)[..., None]
        win = (slice(y0, y0 + size), slice(x0, x0 + size))
        img[win][fg] = rgb[fg]
        obj_lab[win][fg] = cls
        col_lab[win][fg] = _OFF_COL + col
        tex_lab[win][fg] = tex_val
    img_u8 = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    pick = ((np.arange(m) + 0.5) * s / m).astype(np.intp)
    pixel: dict[str, list[np.ndarray]] = {}
    for name, lab in (("object", obj_lab), ("texture", tex_lab), ("color", col_lab)):
        small = lab[np.ix_(pick, pick)]
        if (small >= 0).any():
            pixel[name] = [small]
    return img_u8, pixel, ({"scene": scene} if scene else {})


def _content_key(params: dict, fashion_files: list[Path]) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(params, sort_keys=True).encode())
    for p in fashion_files:
        h.update(hashlib.sha256(p.read_bytes()).digest())
    try:
        import skimage
        h.update(str(skimage.__version__).encode())
    except ImportError:
        pass
    return h.hexdigest()


def generate(root: str | os.PathLike[str], *, n_images: int = 2000, seed: int = 0, image_size: int = 224,
             mask_size: int = 112, image_format: str = "jpg",
             fashion_root: str | os.PathLike[str] | None = None, progress: bool = False) -> Path:
    """Build (or reuse) a broden-lite probing set in the Broden format.

    Parameters
    ----------
    root : str or os.PathLike
        Parent folder; the set goes into ``root/broden_lite-<key>`` where
        ``key`` hashes the arguments, :data:`GENERATOR_VERSION`, the
        Fashion-MNIST files and the scikit-image version.
    n_images : int, default 2000
    seed : int, default 0
    image_size : int, default 224
        Images are ``image_size x image_size`` RGB.
    mask_size : int, default 112
        Segmentation masks are ``mask_size x mask_size`` (nearest-neighbour
        samples of the full-resolution labels at pixel centres).
    image_format : {"jpg", "png"}
        ``"png"`` keeps the pixels exact (JPEG at quality 95 is smaller).
    fashion_root : str or os.PathLike, optional
        Folder with the Fashion-MNIST IDX files; default the Debian package's.
    progress : bool, default False
        Show a progress bar.

    Returns
    -------
    pathlib.Path
        The Broden folder; open it with :class:`~neurocert.data.broden.BrodenDataset`
        (or call :func:`load`).

    Raises
    ------
    ValidationError
        Bad arguments, or Fashion-MNIST missing (naming the Debian package).
    OptionalDependencyError
        scikit-image or Pillow not installed.

    Notes
    -----
    ``manifest.json`` records the arguments, the key, the per-concept image
    counts and the wall time; it is written last and the folder appears
    atomically, so an interrupted run leaves nothing that looks complete.

    Examples
    --------
    >>> path = generate("/tmp/probe", n_images=2000)  # doctest: +SKIP
    >>> ds = BrodenDataset(path)  # doctest: +SKIP
    """
    for name, val, lo in (("n_images", n_images, 1), ("image_size", image_size, 16), ("mask_size", mask_size, 1)):
        if not isinstance(val, (int, np.integer)) or isinstance(val, bool) or val < lo:
            raise ValidationError(f"`{name}` must be an integer >= {lo}; got {val!r}")
    if mask_size > image_size:
        raise ValidationError(f"`mask_size` ({mask_size}) must not exceed `image_size` ({image_size})")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValidationError(f"`seed` must be a non-negative integer; got {seed!r}")
    if image_format not in ("jpg", "png"):
        raise ValidationError(f"`image_format` must be 'jpg' or 'png'; got {image_format!r}")
    froot = FASHION_MNIST_DIR if fashion_root is None else Path(fashion_root)
    fashion = load_fashion_mnist("test", root=froot)
    _skimage_data()
    params = {"generator": "broden-lite", "version": GENERATOR_VERSION, "n_images": int(n_images),
              "seed": int(seed), "image_size": int(image_size), "mask_size": int(mask_size),
              "image_format": image_format}
    files = [froot / "t10k-images-idx3-ubyte.gz", froot / "t10k-labels-idx1-ubyte.gz"]
    key = _content_key(params, files)
    target = Path(root) / f"broden_lite-{key[:16]}"
    if (target / "manifest.json").is_file():
        return target

    from .._progress import progress as _progress
    from ..results import atomic_dir

    start = time.perf_counter()
    names, cats = concept_names()
    src = _load_sources(fashion)
    counts = np.zeros(len(names), np.int64)
    with atomic_dir(target) as tmp:
        w = BrodenWriter(tmp, labels=names, categories=CATEGORIES, label_category=cats,
                         mask_shape=(mask_size, mask_size), source="broden_lite", image_format=image_format)
        for i in _progress(range(n_images), total=n_images, desc="broden-lite", enabled=progress):
            img, pixel, image_level = _render(i, int(seed), src, int(image_size), int(mask_size))
            w.add(img, pixel_labels=pixel, image_labels=image_level, split="train")
            present = np.zeros(len(names), bool)
            for layers in pixel.values():
                for lay in layers:
                    present[lay[lay >= 0]] = True
            for ids in image_level.values():
                present[ids] = True
            counts += present
        w.close()
        manifest = {**params, "key": key, "concepts": names,
                    "categories": [CATEGORIES[c] for c in cats],
                    "image_counts": counts.tolist(), "seconds": round(time.perf_counter() - start, 2),
                    "fashion_mnist": [str(p) for p in files]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return target


def load(root: str | os.PathLike[str], **kwargs) -> BrodenDataset:
    """:func:`generate` (or reuse) a broden-lite set and open it as a :class:`BrodenDataset`.

    Keyword arguments are those of :func:`generate`. A folder that :func:`generate`
    already returned (it holds ``manifest.json`` and ``index.csv``) opens as it is
    when no keyword arguments are given.
    """
    path = Path(root)
    if not kwargs and (path / "manifest.json").is_file() and (path / "index.csv").is_file():
        return BrodenDataset(path)
    return BrodenDataset(generate(root, **kwargs))
