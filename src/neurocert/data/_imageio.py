"""Image and label-PNG input/output through Pillow (imported lazily)."""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ..exceptions import OptionalDependencyError, ValidationError

#: The extra that provides Pillow (and scikit-image for broden-lite).
IMAGES_EXTRA = "images"


def pil_image(feature: str) -> ModuleType:
    """Return ``PIL.Image`` or raise :class:`OptionalDependencyError`."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise OptionalDependencyError(
            f"{feature} requires Pillow; install it with: pip install 'neurocert[{IMAGES_EXTRA}]'"
        ) from exc
    return Image


def read_rgb(path: str | os.PathLike[str], *, feature: str = "reading images") -> np.ndarray:
    """Decode an image file to ``uint8`` ``(h, w, 3)`` RGB.

    Raises ``OSError`` / ``ValueError`` (Pillow's errors) on unreadable files;
    callers turn them into skips or :class:`ValidationError`.
    """
    Image = pil_image(feature)
    with Image.open(path) as im:
        im.load()
        if im.mode != "RGB":
            im = im.convert("RGB")
        return np.asarray(im, dtype=np.uint8).copy()


def read_label_png(path: Path, *, feature: str = "reading segmentation masks") -> np.ndarray:
    """Decode a Broden label PNG: ``label = R + 256 * G`` (``int32`` ``(h, w)``).

    Grey-level (``L``, ``I``, ``I;16``) images are read as the label itself.
    """
    Image = pil_image(feature)
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            if mode in ("L", "I", "I;16", "I;16B", "I;16L"):
                return np.asarray(im).astype(np.int32)
            if mode not in ("RGB", "RGBA"):
                im = im.convert("RGB")
            a = np.asarray(im)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"segmentation mask {str(path)!r} cannot be read: {exc}") from exc
    return a[..., 0].astype(np.int32) + 256 * a[..., 1].astype(np.int32)


def write_label_png(path: Path, labels: np.ndarray) -> None:
    """Write non-negative integer labels ``< 65536`` as an RGB PNG (``R + 256 * G``)."""
    Image = pil_image("writing segmentation masks")
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() >= 65536):
        raise ValidationError(f"label numbers must lie in [0, 65536) for a PNG mask; got {lab.min()}..{lab.max()}")
    rgb = np.zeros(lab.shape + (3,), np.uint8)
    rgb[..., 0] = lab % 256
    rgb[..., 1] = lab // 256
    Image.fromarray(rgb, "RGB").save(path, format="PNG", compress_level=1)


def write_rgb(path: Path, image: np.ndarray, *, quality: int = 95) -> None:
    """Write an RGB ``uint8`` image; the format follows the suffix (JPEG or PNG)."""
    Image = pil_image("writing images")
    kw: dict[str, Any] = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg") else {"compress_level": 1}
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), "RGB").save(path, **kw)
