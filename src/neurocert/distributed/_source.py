"""Picklable references to input arrays, read on whichever process runs a block."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from .._validation import to_numpy
from ..exceptions import ValidationError
from ..storage import SAMPLE_CHUNK, is_zarr_path, open_array, read_columns

__all__ = ["ArrayRef", "as_ref"]

#: per-process cache of whole arrays (concepts) loaded from disk, keyed by path
_LOADED: dict[tuple[str, str, float], Any] = {}
_LOADED_MAX = 2


@dataclass(frozen=True)
class ArrayRef:
    """Where a 2-D input lives: a Zarr directory, a ``.npy`` memmap, or memory.

    Only the path travels to a worker for on-disk arrays; ``data`` holds an
    in-memory array (numpy or scipy.sparse) or a Dask future of one.
    """

    kind: str  # "zarr" | "npy" | "memory"
    shape: tuple[int, int]
    dtype: str
    path: str | None = None
    data: Any = None
    #: columns per stored chunk (Zarr), 0 when not chunked
    chunk_cols: int = 0

    def open(self) -> Any:
        """The array itself (opened lazily for on-disk kinds)."""
        if self.kind == "memory":
            return self.data
        return open_array(self.path)

    def columns(self, j0: int, j1: int, *, sample_chunk: int = SAMPLE_CHUNK) -> np.ndarray:
        """Columns ``j0:j1`` as a C-contiguous array, read in sample chunks."""
        a = self.open()
        if sp.issparse(a):
            return np.ascontiguousarray(a[:, j0:j1].toarray())
        return read_columns(a, j0, j1, sample_chunk=sample_chunk)

    def load(self) -> Any:
        """The whole array in memory (cached per process for on-disk arrays)."""
        if self.kind == "memory":
            return self.data
        key = (self.kind, str(self.path), _mtime(self.path))
        if key not in _LOADED:
            if len(_LOADED) >= _LOADED_MAX:
                _LOADED.pop(next(iter(_LOADED)))
            _LOADED[key] = read_columns(self.open(), 0, self.shape[1])
        return _LOADED[key]


def _mtime(path: str | None) -> float:
    if path is None:
        return 0.0
    p = Path(path)
    target = p / "zarr.json" if p.is_dir() else p
    try:
        return target.stat().st_mtime
    except OSError:
        return 0.0


def _zarr_path(z: Any) -> str | None:
    """Local directory of a zarr.Array, or None if it is not on a local filesystem."""
    store = getattr(z, "store", None)
    root = getattr(store, "root", None)
    if root is None:
        return None
    path = Path(str(root))
    sub = getattr(z, "path", "") or ""
    return str(path / sub) if sub else str(path)


def as_ref(x: Any, name: str) -> ArrayRef:
    """Describe an input without reading it.

    Accepts a path (Zarr array directory or ``.npy``), a ``zarr.Array`` on a local
    store, a numpy memmap of a ``.npy`` file, a numpy array, a torch tensor or a
    scipy.sparse matrix.
    """
    if isinstance(x, (str, os.PathLike)):
        p = Path(x)
        a = open_array(p, name=name)
        kind = "zarr" if is_zarr_path(p) else "npy"
        return _checked(ArrayRef(kind, tuple(a.shape), str(a.dtype), str(p),
                                 chunk_cols=_chunk_cols(a)), name)
    mod = type(x).__module__
    if mod.startswith("zarr"):
        path = _zarr_path(x)
        if path is None or not is_zarr_path(path):
            return _checked(ArrayRef("memory", tuple(x.shape), str(x.dtype), None, x), name)
        return _checked(ArrayRef("zarr", tuple(x.shape), str(x.dtype), path,
                                 chunk_cols=_chunk_cols(x)), name)
    if sp.issparse(x):
        return _checked(ArrayRef("memory", tuple(x.shape), str(x.dtype), None,
                                 sp.csr_matrix(x)), name)
    if isinstance(x, np.memmap) and _npy_backed(x):
        return _checked(ArrayRef("npy", tuple(x.shape), str(x.dtype), str(x.filename)), name)
    a = to_numpy(x, name)
    return _checked(ArrayRef("memory", tuple(a.shape), str(a.dtype), None, a), name)


def _chunk_cols(a: Any) -> int:
    chunks = getattr(a, "chunks", None)
    return int(chunks[1]) if chunks is not None and len(chunks) == 2 else 0


def _npy_backed(x: np.memmap) -> bool:
    """A whole-file memmap of a C-ordered 2-D ``.npy`` (as ``np.load(mmap_mode=...)`` gives)."""
    fn = getattr(x, "filename", None)
    if fn is None or not str(fn).endswith(".npy") or not x.flags.c_contiguous:
        return False
    try:
        ref = np.load(fn, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return ref.shape == x.shape and ref.dtype == x.dtype and ref.offset == x.offset


def _checked(ref: ArrayRef, name: str) -> ArrayRef:
    if len(ref.shape) != 2:
        hint = " (reshape to (-1, 1) for a single column)" if len(ref.shape) == 1 else ""
        raise ValidationError(f"`{name}` must be 2-D; got shape {ref.shape}{hint}")
    return ref
