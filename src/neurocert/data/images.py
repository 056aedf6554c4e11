"""Image folders: one sub-folder per class, or a flat folder with a labels CSV.

Unreadable images (corrupt, truncated, not an image) are left out with one
:class:`SkippedImageWarning` and listed in :attr:`ProbingSet.skipped`; with
``strict=True`` the first one raises :class:`ValidationError`. Pillow is
imported only when images are read (``pip install 'neurocert[images]'``).
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .._progress import progress as _progress
from ..exceptions import SkippedImageWarning, ValidationError
from ._imageio import pil_image
from .probing import ProbingSet, multi_hot

__all__ = ["IMAGE_EXTENSIONS", "SkippedImageWarning", "load_image_folder"]

#: File name endings read as images (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_FILE_COLS = ("image", "file", "filename", "path")
_LABEL_COLS = ("label", "labels", "concepts")


def _size(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(size)
    if len(hw) != 2 or any(not isinstance(v, (int, np.integer)) or v < 1 for v in hw):
        raise ValidationError(f"`size` must be a positive int or (height, width); got {size!r}")
    return int(hw[0]), int(hw[1])


def _decode(path: Path, size: tuple[int, int] | None) -> np.ndarray:
    Image = pil_image("load_image_folder")
    with Image.open(path) as im:
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
        if size is not None and im.size != (size[1], size[0]):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        return np.asarray(im, dtype=np.uint8).copy()


def _is_image(p: Path, extensions: Sequence[str]) -> bool:
    return p.is_file() and p.suffix.lower() in extensions and not p.name.startswith(".")


def _from_csv(root: Path, labels_csv: Path) -> tuple[list[Path], list[list[str]]]:
    if not labels_csv.is_file():
        raise ValidationError(f"labels CSV {str(labels_csv)!r} does not exist")
    with open(labels_csv, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        fcol = next((c for c in _FILE_COLS if c in fields), None)
        lcol = next((c for c in _LABEL_COLS if c in fields), None)
        if fcol is None or lcol is None:
            raise ValidationError(
                f"labels CSV {labels_csv.name} needs a file column (one of {list(_FILE_COLS)}) and a "
                f"label column (one of {list(_LABEL_COLS)}); its header is {fields}")
        paths, labels = [], []
        for k, row in enumerate(reader, start=2):
            if not row[fcol]:
                raise ValidationError(f"labels CSV {labels_csv.name}, line {k}: empty file name")
            paths.append(root / row[fcol])
            labels.append([t.strip() for t in (row[lcol] or "").split(";") if t.strip()])
    return paths, labels


def load_image_folder(root: str | os.PathLike[str], *, labels_csv: str | os.PathLike[str] | None = None,
                      size: int | Sequence[int] | None = None, strict: bool = False,
                      extensions: Sequence[str] = IMAGE_EXTENSIONS, progress: bool = False) -> ProbingSet:
    """Read a folder of images with image-level concept labels.

    Parameters
    ----------
    root : str or os.PathLike
        Either ``root/<class>/<image>`` (one sub-folder per class; nested
        folders below a class folder belong to that class), or any layout
        when ``labels_csv`` is given.
    labels_csv : str or os.PathLike, optional
        A CSV with a header, a file column (``image``, ``file``, ``filename``
        or ``path``; relative to ``root``) and a label column (``label``,
        ``labels`` or ``concepts``) holding ``;``-separated concept names.
    size : int or (int, int), optional
        Resize every image to ``(height, width)`` (bilinear); then
        ``samples`` is one ``uint8`` array ``(n, height, width, 3)``.
        Without it ``samples`` is that array when all sizes agree, else a
        list of ``(h, w, 3)`` arrays.
    strict : bool, default False
        Raise on the first unreadable image instead of skipping it.
    extensions : sequence of str
        Endings of the files read in the class-per-folder layout.
    progress : bool, default False

    Returns
    -------
    ProbingSet
        ``concepts`` is one-hot (class folders) or multi-hot (CSV), columns
        in sorted name order; ``ids`` are the paths relative to ``root``;
        ``skipped`` lists ``(path, reason)`` of the images left out.

    Raises
    ------
    ValidationError
        Missing folder or CSV, no images, bad CSV header, or (``strict``)
        an unreadable image.

    Warns
    -----
    SkippedImageWarning
        Once, with the count and the first names, when images were skipped.

    Examples
    --------
    >>> ps = load_image_folder("probe/", size=224)  # doctest: +SKIP
    >>> ps.samples.shape, ps.concept_names  # doctest: +SKIP
    ((600, 224, 224, 3), ('bag', 'coat', ...))
    """
    base = Path(root)
    if not base.is_dir():
        raise ValidationError(f"image folder {str(base)!r} does not exist")
    hw = _size(size)
    ext = tuple(e.lower() for e in extensions)
    if labels_csv is not None:
        paths, labels = _from_csv(base, Path(labels_csv))
    else:
        classes = sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not classes:
            raise ValidationError(
                f"image folder {str(base)!r} has no class sub-folders; pass `labels_csv` for a flat folder")
        paths, labels = [], []
        for c in classes:
            files = sorted(p for p in (base / c).rglob("*") if _is_image(p, ext))
            paths.extend(files)
            labels.extend([[c]] * len(files))
    if not paths:
        raise ValidationError(f"image folder {str(base)!r} holds no images with endings {list(ext)}")
    pil_image("load_image_folder")

    images, kept, skipped = [], [], []
    for k, p in enumerate(_progress(paths, total=len(paths), desc="images", enabled=progress)):
        rel = os.path.relpath(p, base)
        try:
            images.append(_decode(p, hw))
        except (OSError, ValueError, SyntaxError) as exc:  # PIL raises all three on bad files
            reason = f"{type(exc).__name__}: {exc}"
            if strict:
                raise ValidationError(f"image {rel!r} cannot be read ({reason}); strict=True") from exc
            skipped.append((rel, reason))
            continue
        kept.append(k)
    if skipped:
        warnings.warn(
            f"{len(skipped)} of {len(paths)} images could not be read and were skipped "
            f"(e.g. {[s for s, _ in skipped[:3]]}); see `.skipped`", SkippedImageWarning, stacklevel=2)
    if not kept:
        raise ValidationError(f"none of the {len(paths)} images under {str(base)!r} could be read")
    # class folders stay concepts even when all their images were skipped
    names: Sequence[str] | None = sorted({lab[0] for lab in labels}) if labels_csv is None else None
    concepts, names = multi_hot([labels[k] for k in kept], concept_names=names, what="image labels")
    samples: object = images
    if len({im.shape for im in images}) == 1:
        samples = np.stack(images)
    return ProbingSet(samples=samples, concepts=concepts, concept_names=names,
                      ids=tuple(os.path.relpath(paths[k], base) for k in kept),
                      skipped=tuple(skipped))
