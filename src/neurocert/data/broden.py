"""The Broden on-disk format: a lazy reader (a :class:`SegmentationSet`) and a writer.

A Broden folder holds::

    index.csv      image,split,ih,iw,sh,sw,<one column per category>
    category.csv   name,first,last,count,frequency
    label.csv      number,name,category,frequency,coverage,syns
    c_<cat>.csv    code,number,name,frequency,coverage      (optional)
    images/...     the images and the segmentation PNGs named in index.csv

Paths in ``index.csv`` are relative to ``images/``. A category cell of an
``index.csv`` row is empty (the category is not annotated on that image), a
``;``-separated list of integers (image-level labels: they cover every pixel,
as Broden's scene and texture labels do) or a ``;``-separated list of PNG file
names (pixel labels, ``label = R + 256 * G``, ``0`` = unlabelled). A label's
``category`` field in ``label.csv`` reads like ``material(36);object(3)``;
its primary category, the one NetDissect restricts the IoU denominator to, is
the one with the largest count (the first listed on ties).

Label numbers map to concept indices ``0 .. n_labels - 1`` in the order of
``label.csv`` (number ``0``, the unlabelled pixel, is ``-1``).
"""

from __future__ import annotations

import csv
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..exceptions import EmptyCategoryWarning, ValidationError
from ._imageio import read_label_png, read_rgb, write_label_png, write_rgb

__all__ = ["BrodenDataset", "BrodenWriter", "EmptyCategoryWarning", "load_broden"]

_FIXED = ("image", "split", "ih", "iw", "sh", "sw")
_CAT_FIELD = re.compile(r"^\s*([^()]+?)\s*(?:\((\d+)\))?\s*$")


def _read_csv(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise ValidationError(f"Broden file {str(path)!r} does not exist")
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        missing = [c for c in required if c not in fields]
        if missing:
            raise ValidationError(
                f"{path.name} lacks the column(s) {missing}; its header is {fields}")
        return list(reader)


def _parse_category_field(text: str, where: str) -> list[tuple[str, int]]:
    out = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        m = _CAT_FIELD.match(part)
        if not m:
            raise ValidationError(f"{where}: cannot parse category entry {part!r} (expected 'name(count)')")
        out.append((m.group(1), int(m.group(2) or 0)))
    return out


def _int_field(row: Mapping[str, str], key: str, where: str) -> int:
    try:
        v = int(row[key])
    except (TypeError, ValueError):
        raise ValidationError(f"{where}: column {key!r} must be an integer; got {row[key]!r}") from None
    if v <= 0:
        raise ValidationError(f"{where}: column {key!r} must be positive; got {v}")
    return v


class BrodenDataset:
    """A Broden-format probing set on disk, read lazily.

    Implements :class:`~neurocert.data.segmentation.SegmentationSet`: the CSV
    files are parsed (and every referenced file checked to exist) when the
    object is made; images and masks are decoded when asked for.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``index.csv``, ``label.csv`` and ``images/``.
    split : str, optional
        Keep only the ``index.csv`` rows whose ``split`` column equals this.
    check_files : bool, default True
        Check at construction that every image and mask file exists.

    Attributes
    ----------
    labels : tuple of str
        Concept names, in ``label.csv`` order (number 0 excluded).
    label_numbers : ndarray
        ``int64`` ``(n_labels,)``: the Broden number of each concept.
    categories : tuple of str
        Category names (``category.csv`` order, else ``index.csv`` order).
    label_category : ndarray
        ``int64`` ``(n_labels,)``: each concept's primary category.
    empty_categories : tuple of str
        Categories that are the primary category of no label (allowed;
        reported with an :class:`EmptyCategoryWarning`).
    mask_shape : tuple of int
        The segmentation resolution ``(sh, sw)``, shared by all rows.
    image_shapes : ndarray
        ``int64`` ``(n_images, 2)``: ``(ih, iw)`` per row.

    Raises
    ------
    ValidationError
        Missing files or columns, unparsable cells, a label whose category is
        unknown, image-level label ids not in ``label.csv``, rows with
        different segmentation sizes.

    Notes
    -----
    :meth:`label_maps` raises :class:`ValidationError` for a mask whose size
    is not the row's ``sh x sw`` or that holds a label id absent from
    ``label.csv``; :meth:`image` for an image whose size is not ``ih x iw``.

    Examples
    --------
    >>> ds = BrodenDataset("broden1_224")  # doctest: +SKIP
    >>> ds.label_maps(0).shape  # doctest: +SKIP
    (2, 112, 112)
    """

    def __init__(self, root: str | os.PathLike[str], *, split: str | None = None,
                 check_files: bool = True) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValidationError(f"Broden folder {str(self.root)!r} does not exist")
        index_path = self.root / "index.csv"
        rows = _read_csv(index_path, _FIXED)
        with open(index_path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh))
        index_cats = [c for c in header if c not in _FIXED]

        # categories
        cat_path = self.root / "category.csv"
        if cat_path.is_file():
            cats = [r["name"] for r in _read_csv(cat_path, ("name",))]
            unknown = [c for c in index_cats if c not in cats]
            if unknown:
                raise ValidationError(
                    f"index.csv has category column(s) {unknown} that category.csv does not list ({cats})")
        else:
            cats = list(index_cats)
        if len(set(cats)) != len(cats):
            raise ValidationError(f"category names repeat: {cats}")
        self.categories: tuple[str, ...] = tuple(cats)
        cat_index = {c: k for k, c in enumerate(cats)}

        # labels
        names, numbers, primary = [], [], []
        for r in _read_csv(self.root / "label.csv", ("number", "name", "category")):
            try:
                num = int(r["number"])
            except ValueError:
                raise ValidationError(f"label.csv: label number {r['number']!r} is not an integer") from None
            if num == 0:
                continue
            if num < 0 or num >= 65536:
                raise ValidationError(f"label.csv: label number {num} is outside [1, 65536)")
            where = f"label.csv (label {num}, {r['name']!r})"
            entries = _parse_category_field(r["category"] or "", where)
            if not entries:
                raise ValidationError(f"{where} has no category")
            bad = [c for c, _ in entries if c not in cat_index]
            if bad:
                raise ValidationError(f"{where}: unknown category {bad[0]!r}; categories are {list(cats)}")
            best = max(range(len(entries)), key=lambda j: (entries[j][1], -j))
            names.append(r["name"])
            numbers.append(num)
            primary.append(cat_index[entries[best][0]])
        if len(set(numbers)) != len(numbers):
            raise ValidationError("label.csv: a label number repeats")
        self.labels: tuple[str, ...] = tuple(names)
        self.label_numbers = np.asarray(numbers, dtype=np.int64)
        self.label_category = np.asarray(primary, dtype=np.int64)
        lut_size = int(self.label_numbers.max(initial=0)) + 1
        self._lut = np.full(max(lut_size, 1), -2, dtype=np.int32)
        self._lut[0] = -1
        self._lut[self.label_numbers] = np.arange(len(numbers), dtype=np.int32)

        for cfile in sorted(self.root.glob("c_*.csv")):
            for r in _read_csv(cfile, ("number",)):
                try:
                    num = int(r["number"])
                except ValueError:
                    raise ValidationError(f"{cfile.name}: number {r['number']!r} is not an integer") from None
                if self._concept_of(num) == -2:
                    raise ValidationError(f"{cfile.name} refers to label {num}, which label.csv does not define")

        counts = np.bincount(self.label_category, minlength=len(cats))
        self.empty_categories: tuple[str, ...] = tuple(c for c, n in zip(cats, counts, strict=True) if n == 0)
        if self.empty_categories:
            warnings.warn(
                f"Broden categories without labels (no label has them as primary category): "
                f"{list(self.empty_categories)}", EmptyCategoryWarning, stacklevel=2)

        # rows
        if split is not None:
            rows = [r for r in rows if r["split"] == split]
            if not rows:
                raise ValidationError(f"index.csv has no row with split {split!r}")
        if not rows:
            raise ValidationError("index.csv has no rows")
        n = len(rows)
        self._paths: list[str] = []
        self.image_shapes = np.zeros((n, 2), dtype=np.int64)
        mask_shapes = np.zeros((n, 2), dtype=np.int64)
        self._masks: list[list[tuple[str, str]]] = []
        self._image_labels: list[np.ndarray] = []
        self._annotated = np.zeros((n, len(cats)), dtype=bool)
        for i, r in enumerate(rows):
            where = f"index.csv row {i + 1} ({r['image']!r})"
            if not r["image"]:
                raise ValidationError(f"{where}: empty image path")
            self._paths.append(r["image"])
            self.image_shapes[i] = (_int_field(r, "ih", where), _int_field(r, "iw", where))
            mask_shapes[i] = (_int_field(r, "sh", where), _int_field(r, "sw", where))
            masks: list[tuple[str, str]] = []
            ints: list[int] = []
            for c in index_cats:
                items = [t.strip() for t in (r[c] or "").split(";") if t.strip()]
                if not items:
                    continue
                self._annotated[i, cat_index[c]] = True
                is_int = [t.isdigit() for t in items]
                if all(is_int):
                    ints.extend(int(t) for t in items)
                elif not any(is_int):
                    masks.extend((c, t) for t in items)
                else:
                    raise ValidationError(
                        f"{where}, category {c!r}: cell {r[c]!r} mixes label numbers and file names")
            idx = np.array([self._concept_of(v) for v in ints], dtype=np.int32)
            if (idx == -2).any():
                raise ValidationError(
                    f"{where}: image-level label id {ints[int(np.argmax(idx == -2))]} is not in label.csv")
            self._image_labels.append(np.unique(idx[idx >= 0]).astype(np.int32))
            self._masks.append(masks)
        shapes = np.unique(mask_shapes, axis=0)
        if len(shapes) > 1:
            raise ValidationError(
                f"index.csv rows have different segmentation sizes sh x sw: {[tuple(s) for s in shapes[:5]]}; "
                "a SegmentationSet needs one mask shape (read one split, or resize the masks)")
        self.mask_shape: tuple[int, int] = (int(shapes[0][0]), int(shapes[0][1]))

        if check_files:
            missing = [p for i in range(n) for p in (self._paths[i], *(f for _, f in self._masks[i]))
                       if not (self.root / "images" / p).is_file()]
            if missing:
                raise ValidationError(
                    f"{len(missing)} file(s) named in index.csv are missing under "
                    f"{str(self.root / 'images')!r}, e.g. {missing[:3]}")

    def _concept_of(self, number: int) -> int:
        if 0 <= number < len(self._lut):
            return int(self._lut[number])
        return -2

    def __len__(self) -> int:
        return len(self._paths)

    def __repr__(self) -> str:
        return (f"BrodenDataset({str(self.root)!r}, images={len(self)}, labels={len(self.labels)}, "
                f"categories={list(self.categories)}, mask_shape={self.mask_shape})")

    def image_path(self, i: int) -> Path:
        """The file of image ``i``."""
        return self.root / "images" / self._paths[i]

    def image(self, i: int) -> np.ndarray:
        """Image ``i`` as ``uint8`` ``(ih, iw, 3)`` RGB."""
        path = self.image_path(i)
        try:
            img = read_rgb(path, feature="BrodenDataset.image")
        except (OSError, ValueError) as exc:
            raise ValidationError(f"image {i} ({str(path)!r}) cannot be read: {exc}") from exc
        if img.shape[:2] != tuple(self.image_shapes[i]):
            raise ValidationError(
                f"image {i} ({str(path)!r}) is {img.shape[0]}x{img.shape[1]} but index.csv says "
                f"ih x iw = {self.image_shapes[i][0]}x{self.image_shapes[i][1]}")
        return img

    def label_maps(self, i: int) -> np.ndarray:
        """Pixel labels of image ``i``: ``int32`` ``(L_i, sh, sw)``, ``-1`` unlabelled."""
        masks = self._masks[i]
        out = np.empty((len(masks), *self.mask_shape), dtype=np.int32)
        for k, (cat, name) in enumerate(masks):
            path = self.root / "images" / name
            if not path.is_file():
                raise ValidationError(f"image {i}: segmentation mask {str(path)!r} ({cat}) does not exist")
            num = read_label_png(path, feature="BrodenDataset.label_maps")
            if num.shape != self.mask_shape:
                raise ValidationError(
                    f"image {i}: segmentation mask {str(path)!r} ({cat}) is {num.shape[0]}x{num.shape[1]} "
                    f"but index.csv says sh x sw = {self.mask_shape[0]}x{self.mask_shape[1]}")
            bad = num >= len(self._lut)
            mapped = self._lut[np.where(bad, 0, num)]
            bad |= mapped == -2
            if bad.any():
                ids = np.unique(num[bad])
                raise ValidationError(
                    f"image {i}: segmentation mask {str(path)!r} ({cat}) holds label id(s) "
                    f"{ids[:10].tolist()} that label.csv does not define")
            out[k] = mapped
        return out

    def image_labels(self, i: int) -> np.ndarray:
        """Image-level concept indices of image ``i`` (``int32``, sorted)."""
        return self._image_labels[i]

    def annotated(self, i: int) -> np.ndarray:
        """``bool`` ``(n_categories,)``: the categories annotated on image ``i``."""
        return self._annotated[i]

    def concept_index(self, name: str) -> int:
        """The concept index of a label name."""
        try:
            return self.labels.index(name)
        except ValueError:
            raise ValidationError(f"no Broden label named {name!r}") from None


def load_broden(root: str | os.PathLike[str], *, split: str | None = None,
                check_files: bool = True) -> BrodenDataset:
    """Open a Broden-format folder as a lazy :class:`SegmentationSet` (see :class:`BrodenDataset`)."""
    return BrodenDataset(root, split=split, check_files=check_files)


class BrodenWriter:
    """Write a probing set in the Broden format, one image at a time.

    Parameters
    ----------
    root : str or os.PathLike
        Output folder (created); ``images/<source>/`` receives the files.
    labels : sequence of str
        Concept names; concept ``k`` gets Broden number ``k + 1``.
    categories : sequence of str
        Category names.
    label_category : sequence of int
        The primary category of each concept.
    mask_shape : tuple of int
        The segmentation resolution ``(sh, sw)``.
    source : str, default "images"
        Sub-folder of ``images/`` for the files.
    image_format : {"jpg", "png"}
        Image file format (masks are always PNG).

    Notes
    -----
    :meth:`close` writes ``index.csv``, ``label.csv`` (with per-category
    image counts, the primary category first), ``category.csv`` and
    ``c_<category>.csv``. A label's ``frequency`` is the number of images it
    appears on and its ``coverage`` the sum over images of the fraction of
    pixels it covers (1 for an image-level label).
    """

    def __init__(self, root: str | os.PathLike[str], *, labels: Sequence[str], categories: Sequence[str],
                 label_category: Sequence[int], mask_shape: tuple[int, int], source: str = "images",
                 image_format: str = "jpg") -> None:
        self.root = Path(root)
        self.labels = list(labels)
        self.categories = list(categories)
        self.label_category = np.asarray(label_category, dtype=np.int64)
        if self.label_category.shape != (len(self.labels),):
            raise ValidationError(f"`label_category` must have one entry per label ({len(self.labels)})")
        if len(self.labels) and (self.label_category.min() < 0 or self.label_category.max() >= len(self.categories)):
            raise ValidationError(f"`label_category` values must lie in [0, {len(self.categories)})")
        if image_format not in ("jpg", "png"):
            raise ValidationError(f"`image_format` must be 'jpg' or 'png'; got {image_format!r}")
        self.mask_shape = (int(mask_shape[0]), int(mask_shape[1]))
        self.source = source
        self.image_format = image_format
        (self.root / "images" / source).mkdir(parents=True, exist_ok=True)
        n_l, n_c = len(self.labels), len(self.categories)
        self._rows: list[list[str]] = []
        self._freq = np.zeros(n_l, np.int64)
        self._cover = np.zeros(n_l, np.float64)
        self._cat_count = np.zeros((n_l, n_c), np.int64)
        self._cat_freq = np.zeros(n_c, np.int64)

    def add(self, image: np.ndarray, *, pixel_labels: Mapping[str, Sequence[np.ndarray]] | None = None,
            image_labels: Mapping[str, Sequence[int]] | None = None, split: str = "train",
            name: str | None = None) -> None:
        """Add one image.

        Parameters
        ----------
        image : ndarray
            ``uint8`` ``(h, w, 3)``.
        pixel_labels : mapping of str to sequence of ndarray, optional
            Per category, label layers of shape ``mask_shape`` holding concept
            indices (``-1`` unlabelled); each layer becomes one PNG.
        image_labels : mapping of str to sequence of int, optional
            Per category, image-level concept indices.
        split : str, default "train"
        name : str, optional
            File stem; default the running number.
        """
        n_l = len(self.labels)
        pixel_labels = dict(pixel_labels or {})
        image_labels = dict(image_labels or {})
        for c in (*pixel_labels, *image_labels):
            if c not in self.categories:
                raise ValidationError(f"unknown category {c!r}; categories are {self.categories}")
        both = set(pixel_labels) & set(image_labels)
        if both:
            raise ValidationError(f"category {min(both)!r} has both pixel and image-level labels")
        i = len(self._rows)
        stem = f"{i:06d}" if name is None else name
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise ValidationError(f"`image` must be uint8 (h, w, 3); got {img.dtype} {img.shape}")
        rel_img = f"{self.source}/{stem}.{self.image_format}"
        write_rgb(self.root / "images" / rel_img, img)
        cells = {c: "" for c in self.categories}
        seen = np.zeros(n_l, bool)
        cover = np.zeros(n_l, np.float64)
        cat_seen = np.zeros((n_l, len(self.categories)), bool)
        n_pix = self.mask_shape[0] * self.mask_shape[1]
        for c, layers in pixel_labels.items():
            k = self.categories.index(c)
            names = []
            for j, lay in enumerate(layers):
                lay = np.asarray(lay)
                if lay.shape != self.mask_shape:
                    raise ValidationError(
                        f"pixel labels for {c!r} have shape {lay.shape}; expected {self.mask_shape}")
                if lay.size and (lay.min() < -1 or lay.max() >= n_l):
                    raise ValidationError(f"pixel labels for {c!r} must lie in [-1, {n_l})")
                cnt = np.bincount(lay.ravel() + 1, minlength=n_l + 1)[1:]
                present = cnt > 0
                seen |= present
                cat_seen[present, k] = True
                cover += cnt / n_pix
                rel = f"{self.source}/{stem}_{c}_{j}.png"
                write_label_png(self.root / "images" / rel, lay.astype(np.int64) + 1)
                names.append(rel)
            cells[c] = ";".join(names)
        for c, ids in image_labels.items():
            k = self.categories.index(c)
            ids = np.unique(np.asarray(ids, dtype=np.int64))
            if ids.size and (ids.min() < 0 or ids.max() >= n_l):
                raise ValidationError(f"image-level labels for {c!r} must lie in [0, {n_l})")
            seen[ids] = True
            cat_seen[ids, k] = True
            cover[ids] += 1.0
            cells[c] = ";".join(str(int(v) + 1) for v in ids)
        self._freq += seen
        self._cover += np.minimum(cover, 1.0) * seen
        self._cat_count += cat_seen
        self._cat_freq += np.array([cells[c] != "" for c in self.categories])
        self._rows.append([rel_img, split, str(img.shape[0]), str(img.shape[1]),
                           str(self.mask_shape[0]), str(self.mask_shape[1]),
                           *(cells[c] for c in self.categories)])

    def close(self) -> Path:
        """Write the CSV files; return the root folder."""
        with open(self.root / "index.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([*_FIXED, *self.categories])
            w.writerows(self._rows)
        with open(self.root / "label.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["number", "name", "category", "frequency", "coverage", "syns"])
            w.writerow([0, "-", "", 0, 0, ""])
            for k, name in enumerate(self.labels):
                p = int(self.label_category[k])
                others = [j for j in np.argsort(-self._cat_count[k], kind="stable")
                          if j != p and self._cat_count[k, j] > 0]
                if others and self._cat_count[k, others[0]] > self._cat_count[k, p]:
                    raise ValidationError(
                        f"label {name!r} appears on more images in category {self.categories[others[0]]!r} "
                        f"than in its primary category {self.categories[p]!r}")
                field = ";".join(f"{self.categories[j]}({self._cat_count[k, j]})" for j in (p, *others))
                w.writerow([k + 1, name, field, int(self._freq[k]), f"{self._cover[k]:.4f}", ""])
        with open(self.root / "category.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["name", "first", "last", "count", "frequency"])
            for j, c in enumerate(self.categories):
                nums = np.flatnonzero(self.label_category == j) + 1
                w.writerow([c, int(nums.min(initial=0)) if nums.size else 0, int(nums.max(initial=0)),
                            nums.size, int(self._cat_freq[j])])
        for j, c in enumerate(self.categories):
            with open(self.root / f"c_{c}.csv", "w", newline="", encoding="utf-8") as fh:
                w = csv.writer(fh)
                w.writerow(["code", "number", "name", "frequency", "coverage"])
                members = [k for k in range(len(self.labels))
                           if self.label_category[k] == j or self._cat_count[k, j] > 0]
                for code, k in enumerate(members, start=1):
                    w.writerow([code, k + 1, self.labels[k], int(self._cat_count[k, j]),
                                f"{self._cover[k]:.4f}"])
        return self.root
