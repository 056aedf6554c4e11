"""A probing set of images with pixel-level concept labels (the Broden model).

This is the interface between the readers and generators of probing data
(:mod:`neurocert.data.broden`, :mod:`neurocert.data.broden_lite`) and the
scorers that consume them (:mod:`neurocert.dissect.netdissect`). Everything a scorer
needs is reached through :class:`SegmentationSet`:

* ``labels`` / ``categories``: concept names and category names; concept ``k``
  belongs to the category ``label_category[k]`` (its primary category, the one
  NetDissect restricts the IoU denominator to);
* ``image(i)``: the RGB image, ``uint8`` of shape ``(h, w, 3)``;
* ``label_maps(i)``: pixel labels at the segmentation resolution ``mask_shape``,
  ``int32`` of shape ``(L_i, H, W)`` (one layer per annotated pixel category
  or per overlapping mask), value ``-1`` for an unlabelled pixel, otherwise a
  concept index in ``[0, n_labels)``;
* ``image_labels(i)``: concept indices that apply to every pixel of image ``i``
  (scene- or texture-style image-level labels), ``int32`` of shape ``(m_i,)``;
* ``annotated(i)``: ``bool`` of shape ``(n_categories,)``, the categories
  annotated on image ``i`` (in Broden, the non-empty category cells of its
  ``index.csv`` row). Only images whose category ``c`` is annotated count
  towards the IoU denominator of a concept in ``c``.

:class:`InMemorySegmentationSet` holds all of it in arrays (generators, tests);
readers of large on-disk sets implement the same methods lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

from ..exceptions import ValidationError

__all__ = ["InMemorySegmentationSet", "SegmentationSet", "check_segmentation_set"]


@runtime_checkable
class SegmentationSet(Protocol):
    """Images with pixel-level and image-level concept labels."""

    labels: Sequence[str]
    categories: Sequence[str]
    label_category: np.ndarray
    mask_shape: tuple[int, int]

    def __len__(self) -> int: ...

    def image(self, i: int) -> np.ndarray: ...

    def label_maps(self, i: int) -> np.ndarray: ...

    def image_labels(self, i: int) -> np.ndarray: ...

    def annotated(self, i: int) -> np.ndarray: ...


@dataclass(eq=False)
class InMemorySegmentationSet:
    """A :class:`SegmentationSet` held in memory.

    Parameters
    ----------
    images : sequence of ndarray
        ``uint8`` RGB images, each ``(h, w, 3)``.
    label_maps : sequence of ndarray
        Per image, ``int`` ``(L_i, H, W)`` with ``-1`` for unlabelled pixels.
    image_labels : sequence of ndarray
        Per image, the image-level concept indices.
    annotated : ndarray
        ``bool`` ``(n_images, n_categories)``.
    labels, categories : sequence of str
        Concept and category names.
    label_category : ndarray
        ``int`` ``(n_labels,)``: the primary category of each concept.
    """

    images: Sequence[np.ndarray]
    label_maps_: Sequence[np.ndarray]
    image_labels_: Sequence[np.ndarray]
    annotated_: np.ndarray
    labels: Sequence[str]
    categories: Sequence[str]
    label_category: np.ndarray
    mask_shape: tuple[int, int] = field(init=False)

    def __post_init__(self) -> None:
        self.label_category = np.asarray(self.label_category, dtype=np.int64)
        self.annotated_ = np.asarray(self.annotated_, dtype=bool)
        if not self.label_maps_:
            raise ValidationError("a segmentation set needs at least one image")
        self.mask_shape = tuple(int(s) for s in np.shape(self.label_maps_[0])[-2:])
        check_segmentation_set(self)

    def __len__(self) -> int:
        return len(self.images)

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.images[i])

    def label_maps(self, i: int) -> np.ndarray:
        return np.asarray(self.label_maps_[i], dtype=np.int32)

    def image_labels(self, i: int) -> np.ndarray:
        return np.asarray(self.image_labels_[i], dtype=np.int32).reshape(-1)

    def annotated(self, i: int) -> np.ndarray:
        return self.annotated_[i]


def check_segmentation_set(s: SegmentationSet, *, images: Sequence[int] | None = None) -> None:
    """Check the shapes and label ranges of ``s`` (all images, or those given).

    Raises
    ------
    ValidationError
        Naming the image and the problem: a mask of another shape than
        ``mask_shape``, a label index out of range, an ``annotated`` row of
        the wrong length, a concept whose category index is out of range.
    """
    n_labels, n_cat = len(s.labels), len(s.categories)
    lc = np.asarray(s.label_category)
    if lc.shape != (n_labels,):
        raise ValidationError(f"label_category has shape {lc.shape}; expected ({n_labels},)")
    if n_labels and (lc.min() < 0 or lc.max() >= n_cat):
        raise ValidationError(f"label_category values must lie in [0, {n_cat}) (the categories)")
    for i in range(len(s)) if images is None else images:
        maps = s.label_maps(i)
        if maps.ndim != 3 or tuple(maps.shape[1:]) != tuple(s.mask_shape):
            raise ValidationError(
                f"image {i}: label maps have shape {maps.shape}; expected (layers, "
                f"{s.mask_shape[0]}, {s.mask_shape[1]})")
        if maps.size and (maps.min() < -1 or maps.max() >= n_labels):
            raise ValidationError(
                f"image {i}: pixel label {int(maps.max()) if maps.max() >= n_labels else int(maps.min())}"
                f" is not a concept index in [0, {n_labels}) or -1 (unlabelled)")
        il = s.image_labels(i)
        if il.size and (il.min() < 0 or il.max() >= n_labels):
            raise ValidationError(f"image {i}: image-level label out of range [0, {n_labels})")
        ann = np.asarray(s.annotated(i))
        if ann.shape != (n_cat,):
            raise ValidationError(f"image {i}: annotated has shape {ann.shape}; expected ({n_cat},)")
