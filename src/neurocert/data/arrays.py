"""Probing sets stored as NumPy arrays (``.npy`` / ``.npz``)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ValidationError
from .probing import ProbingSet

__all__ = ["load_arrays"]


def _load(path: Path, key: str | None, what: str, *, required: bool = True) -> np.ndarray | None:
    if not path.is_file():
        raise ValidationError(f"{what} file {str(path)!r} does not exist")
    try:
        obj = np.load(path, mmap_mode="r" if path.suffix == ".npy" else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValidationError(f"{what} file {str(path)!r} cannot be read as .npy/.npz: {exc}") from exc
    if isinstance(obj, np.ndarray):
        return obj
    with obj:
        if key is None:
            if len(obj.files) != 1:
                raise ValidationError(f"{path.name} holds {obj.files}; name the {what} array with a key")
            key = obj.files[0]
        if key not in obj.files:
            if not required:
                return None
            raise ValidationError(f"{path.name} has no array {key!r}; it holds {obj.files}")
        return obj[key]


def load_arrays(samples: str | os.PathLike[str], concepts: str | os.PathLike[str] | None = None, *,
                concept_names: Sequence[str] | str | os.PathLike[str] | None = None,
                samples_key: str | None = None, concepts_key: str = "concepts",
                names_key: str = "concept_names", groups_key: str = "groups") -> ProbingSet:
    """Load samples and sample-level concept labels from ``.npy`` / ``.npz`` files.

    Parameters
    ----------
    samples : path
        A ``.npy`` file (memory-mapped), or a ``.npz`` holding the samples
        (under ``samples_key``, default ``"samples"`` or its only array) and
        possibly ``concepts``, ``concept_names`` and ``groups``.
    concepts : path, optional
        ``.npy`` / ``.npz`` with the concept labels, when not in ``samples``:
        a 0/1 matrix ``(n_samples, n_concepts)`` or integer class labels
        ``(n_samples,)`` (made one-hot over ``0 .. max``).
    concept_names : sequence of str or path, optional
        Names, or a text file with one name per line.
    samples_key, concepts_key, names_key, groups_key : str
        Array names inside ``.npz`` files.

    Returns
    -------
    ProbingSet

    Raises
    ------
    ValidationError
        Missing files or keys, mismatched lengths, a non-0/1 matrix.
    """
    sp = Path(samples)
    bundle: dict[str, Any] = {}
    if sp.suffix == ".npz":
        with np.load(sp, allow_pickle=False) if sp.is_file() else _missing(sp) as z:
            key = samples_key or ("samples" if "samples" in z.files else None)
            if key is None:
                others = [f for f in z.files if f not in (concepts_key, names_key, groups_key)]
                if len(others) != 1:
                    raise ValidationError(f"{sp.name} holds {z.files}; pass `samples_key`")
                key = others[0]
            if key not in z.files:
                raise ValidationError(f"{sp.name} has no array {key!r}; it holds {z.files}")
            bundle = {k: z[k] for k in z.files}
            x = bundle[key]
    else:
        x = _load(sp, samples_key, "samples")
    if concepts is not None:
        c = _load(Path(concepts), concepts_key if Path(concepts).suffix == ".npz" else None, "concepts")
    elif concepts_key in bundle:
        c = bundle[concepts_key]
    else:
        raise ValidationError(f"no concept labels: pass `concepts=` or store {concepts_key!r} in {sp.name}")
    c = np.asarray(c)
    n = len(x)
    if c.shape[0] != n:
        raise ValidationError(f"`concepts` has {c.shape[0]} samples (axis 0) but `samples` has {n}")
    if c.ndim == 1:
        if not np.issubdtype(c.dtype, np.integer) or (c.size and c.min() < 0):
            raise ValidationError("1-D `concepts` must be non-negative integer class labels")
        k = int(c.max(initial=-1)) + 1
        c = np.eye(max(k, 1), dtype=bool)[c][:, :k]
    names: Any = concept_names
    if isinstance(names, (str, os.PathLike)):
        p = Path(names)
        if not p.is_file():
            raise ValidationError(f"concept-names file {str(p)!r} does not exist")
        names = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    elif names is None and names_key in bundle:
        names = [str(v) for v in bundle[names_key].tolist()]
    groups = bundle.get(groups_key)
    return ProbingSet(samples=x, concepts=c, concept_names=names, groups=groups)


def _missing(p: Path):
    raise ValidationError(f"samples file {str(p)!r} does not exist")
