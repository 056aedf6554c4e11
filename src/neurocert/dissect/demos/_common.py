"""Helpers shared by the demonstrations: probing-set views, held-out splits, BE statistics.

Nothing here is specific to one model or modality; :mod:`.vision` (and the
language demo) build on it. Only numpy is imported at module level.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...exceptions import ValidationError

__all__ = [
    "ImageLevelSegmentation",
    "ImageSequence",
    "SubsetSegmentation",
    "be_statistics",
    "concept_presence",
    "format_set",
    "format_table",
    "halves",
    "heldout_coverage",
    "package_versions",
    "write_json",
]


class ImageSequence:
    """The images of a segmentation set as a sequence (``len`` and ``[i]`` -> uint8 HxWx3)."""

    def __init__(self, segmentation: Any, indices: Sequence[int] | None = None) -> None:
        self.segmentation = segmentation
        self.indices = (np.arange(len(segmentation)) if indices is None
                        else np.asarray(indices, np.int64))

    def __len__(self) -> int:
        return int(self.indices.size)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.segmentation.image(int(self.indices[i])))

    def __call__(self, i: int) -> np.ndarray:
        return self[i]


class SubsetSegmentation:
    """A :class:`~neurocert.data.segmentation.SegmentationSet` restricted to some images.

    Image ``i`` of the subset is image ``indices[i]`` of ``base``; names, categories
    and the mask shape are those of ``base``.
    """

    def __init__(self, base: Any, indices: Sequence[int]) -> None:
        self.base = base
        self.indices = np.asarray(indices, np.int64)
        if self.indices.ndim != 1 or self.indices.size == 0:
            raise ValidationError("`indices` must be a non-empty 1-D sequence of image indices")
        if self.indices.min() < 0 or self.indices.max() >= len(base):
            raise ValidationError(f"`indices` must lie in [0, {len(base)})")
        self.labels = base.labels
        self.categories = base.categories
        self.label_category = base.label_category
        self.mask_shape = base.mask_shape

    def __len__(self) -> int:
        return int(self.indices.size)

    def image(self, i: int) -> np.ndarray:
        return self.base.image(int(self.indices[i]))

    def label_maps(self, i: int) -> np.ndarray:
        return self.base.label_maps(int(self.indices[i]))

    def image_labels(self, i: int) -> np.ndarray:
        return self.base.image_labels(int(self.indices[i]))

    def annotated(self, i: int) -> np.ndarray:
        return self.base.annotated(int(self.indices[i]))


class ImageLevelSegmentation:
    """A :class:`~neurocert.data.segmentation.SegmentationSet` from image-level labels only.

    Every concept of a :class:`~neurocert.data.probing.ProbingSet` (an image folder
    with class sub-folders or a labels CSV) becomes an image-level concept that
    covers all pixels of the images that carry it, in one category ``"image"``
    annotated on every image (as Broden's scene labels). NetDissect's IoU then
    measures how much of a unit's active area falls on images with the concept.
    """

    def __init__(self, probing: Any, *, mask_shape: tuple[int, int] = (56, 56)) -> None:
        self.probing = probing
        self.labels = list(probing.concept_names)
        self.categories = ["image"]
        self.label_category = np.zeros(len(self.labels), np.int64)
        self.mask_shape = tuple(int(x) for x in mask_shape)
        self._concepts = np.asarray(probing.concepts, bool)
        self._empty = np.zeros((0, *self.mask_shape), np.int32)

    def __len__(self) -> int:
        return int(self._concepts.shape[0])

    def image(self, i: int) -> np.ndarray:
        return np.asarray(self.probing.samples[i])

    def label_maps(self, i: int) -> np.ndarray:
        return self._empty

    def image_labels(self, i: int) -> np.ndarray:
        return np.flatnonzero(self._concepts[i]).astype(np.int32)

    def annotated(self, i: int) -> np.ndarray:
        return np.ones(1, bool)


def concept_presence(segmentation: Any) -> np.ndarray:
    """Image-level ground truth: ``(n_images, n_concepts)`` 0/1, concept anywhere on the image.

    A concept is present on image ``i`` when some pixel of its label maps
    carries it or it is one of the image-level labels.
    """
    n, c = len(segmentation), len(segmentation.labels)
    out = np.zeros((n, c), np.float64)
    for i in range(n):
        maps = np.asarray(segmentation.label_maps(i))
        ids = np.unique(maps[maps >= 0]) if maps.size else np.zeros(0, np.int64)
        out[i, ids] = 1.0
        out[i, np.asarray(segmentation.image_labels(i), np.int64)] = 1.0
    return out


def halves(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint halves of ``range(n)`` (sorted), from ``SeedSequence(seed, spawn_key=(7_2,))``."""
    if n < 4:
        raise ValidationError(f"a held-out split needs at least 4 samples; got {n}")
    gen = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(72,)))
    perm = gen.permutation(n)
    return np.sort(perm[: n // 2]), np.sort(perm[n // 2:])


def be_statistics(expl: Any) -> dict[str, float]:
    """Summary of a BE result over its neurons.

    Returns
    -------
    dict
        ``mean_set_size`` (bootstrap set), ``mean_entropy`` (nats, with "none"),
        ``singleton_share``, ``distinct_labels`` (full-data labels over
        neurons), ``distinct_in_sets`` (concepts in any set), ``mean_mode_frequency``.
    """
    sets = expl.prediction_sets
    sizes = np.array([len(s) for s in sets], np.float64)
    best = np.asarray(expl.identification.best)
    in_sets = {int(c) for s in sets for c in np.asarray(s) if int(c) >= 0}
    return {
        "mean_set_size": float(sizes.mean()) if sizes.size else float("nan"),
        "mean_entropy": float(np.mean(expl.entropy)) if sizes.size else float("nan"),
        "singleton_share": float(np.mean(sizes == 1)) if sizes.size else float("nan"),
        "distinct_labels": int(np.unique(best[best >= 0]).size),
        "distinct_in_sets": len(in_sets),
        "mean_mode_frequency": float(np.mean(expl.mode_frequency)) if sizes.size else float("nan"),
    }


def _contains(sets: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
    return np.array([int(lab) in {int(x) for x in np.asarray(s)} for s, lab in zip(sets, labels)],
                    bool)


def heldout_coverage(first: Any, second: Any, *, level: float | None = None) -> dict[str, Any]:
    """How often one half's sets and certificates hold on the other half.

    ``first`` and ``second`` are :class:`~neurocert.ExplanationResult` objects of
    the same method on two disjoint halves of the probing set (same neurons and
    concepts). With ``a`` = ``first`` and ``b`` = ``second`` and ``lab_b`` the
    full-half label of ``b`` (-1 = "none"):

    * ``bootstrap_contains``: share of neurons with ``lab_b`` in ``a``'s bootstrap set;
    * ``split_contains``: the same for ``a``'s split-conformal set (NaN if not run);
    * ``interval_holds``: share of neurons whose ``b``-IoU of ``a``'s label lies in
      ``a``'s ``[lower, upper]`` (NaN without bounds);
    * ``certified_set_contains``: share with ``lab_b`` in ``a``'s certified set;
    * ``certified_replicates``: among neurons whose label is certified in ``a``
      (lower > ``level``), the share whose ``b``-similarity of that label also
      exceeds ``level`` (NaN when none is certified or ``level`` is None);
    * ``label_agreement``: share with the same full-half label.

    Each is returned for ``a -> b``; call it twice for both directions.
    """
    ia, ib = first.identification, second.identification
    if ia.n_neurons != ib.n_neurons or ia.n_concepts != ib.n_concepts:
        raise ValidationError("the two halves describe different neurons or concepts")
    lab_a, lab_b = np.asarray(ia.best), np.asarray(ib.best)
    rows = np.arange(ia.n_neurons)
    out: dict[str, Any] = {"n_neurons": int(ia.n_neurons),
                           "label_agreement": float(np.mean(lab_a == lab_b))}
    out["bootstrap_contains"] = float(np.mean(_contains(first.prediction_sets, lab_b))) \
        if first.n_boot else float("nan")
    out["split_contains"] = (float(np.mean(_contains(first.split_sets, lab_b)))
                             if first.split_sets is not None else float("nan"))
    lo, up = np.asarray(ia.lower, float), np.asarray(ia.upper, float)
    has_bound = np.isfinite(lo).any()
    if has_bound:
        la = np.maximum(lab_a, 0)
        sim_b = np.asarray(ib.similarity, float)[rows, la]
        ok = (lab_a >= 0) & np.isfinite(sim_b)
        inside = (sim_b >= lo[rows, la]) & (sim_b <= up[rows, la])
        out["interval_holds"] = float(np.mean(inside[ok])) if ok.any() else float("nan")
        out["interval_n"] = int(ok.sum())
        out["certified_set_contains"] = float(np.mean(_contains(ia.certified_sets, lab_b)))
        if level is not None:
            cert = (lab_a >= 0) & (lo[rows, la] > level)
            out["n_certified"] = int(cert.sum())
            out["certified_replicates"] = (float(np.mean(sim_b[cert] > level)) if cert.any()
                                           else float("nan"))
    else:
        out["interval_holds"] = out["certified_set_contains"] = float("nan")
        out["interval_n"] = 0
    return out


def format_set(names: Sequence[str], members: np.ndarray, prob: np.ndarray | None = None, *,
               none_prob: float | None = None, limit: int = 4) -> str:
    """``"red 0.71, blue 0.2"`` for a set (``-1`` is "(none)"); ``"-"`` when empty."""
    parts = []
    for c in np.asarray(members)[:limit]:
        c = int(c)
        name = "(none)" if c < 0 else str(names[c])
        if prob is not None:
            p = none_prob if c < 0 else prob[c]
            name = f"{name} {p:.2f}" if p is not None else name
        parts.append(name)
    if len(members) > limit:
        parts.append(f"+{len(members) - limit}")
    return ", ".join(parts) if parts else "-"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A plain-text table of ``rows`` (dicts) with the given columns."""
    cells = [[str(c) for c in columns]] + [[_cell(r.get(c, "")) for c in columns] for r in rows]
    width = [max(len(row[j]) for row in cells) for j in range(len(columns))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(row, width)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in width))
    return "\n".join(lines)


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else f"{v:.3g}"
    return str(v)


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    """Installed versions of the named distributions (None when not installed)."""
    import importlib.metadata as md

    out: dict[str, str | None] = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = md.version(n)
        except md.PackageNotFoundError:
            out[n] = None
    return out


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON atomically (NaN kept as the ``NaN`` token)."""
    from ...results import atomic_write_bytes

    text = json.dumps(obj, indent=1, default=_default, allow_nan=True)
    return atomic_write_bytes(path, text.encode("utf-8"))


def _default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
