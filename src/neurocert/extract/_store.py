"""Where extracted rows go: memory, or a resumable on-disk cache entry.

A cache entry is a directory ``<root>/<name>/`` holding ``values.npy`` (and
``groups.npy``, ``positions.npy`` for token rows) and ``meta.json``. While it
is being written it lives in ``<root>/<name>.partial/``: each ``.npy`` file
there starts with a fixed-size header reserve followed by raw rows appended
batch by batch, and ``progress.json`` (replaced atomically after the rows of
a batch are flushed and fsync'ed) records how many samples and rows are
complete. Bytes past the recorded rows (a batch interrupted half-way) are
truncated when the extraction resumes. On completion the real ``.npy``
headers are written into the reserve and the directory is renamed to its
final name, so a complete entry appears atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import NeurocertError, ValidationError
from ..results import atomic_path

__all__ = ["DiskEntry", "MemoryEntry", "entry_lock", "load_entry"]

FORMAT = "neurocert-activations/1"
_HEADER = 256  # bytes reserved for each .npy header (a multiple of 64)
_FILES = ("values", "groups", "positions")


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A version-1.0 ``.npy`` header padded to exactly ``_HEADER`` bytes."""
    descr, dims = np.dtype(dtype).str, tuple(int(s) for s in shape)
    text = f"{{'descr': {descr!r}, 'fortran_order': False, 'shape': {dims!r}, }}"
    magic = b"\x93NUMPY\x01\x00"
    room = _HEADER - len(magic) - 2
    if len(text) + 1 > room:  # pragma: no cover - needs dozens of dimensions
        raise NeurocertError(f"array shape {shape} too long for the cache's .npy header reserve")
    body = text + " " * (room - len(text) - 1) + "\n"
    return magic + struct.pack("<H", room) + body.encode("latin1")


def _fsync(fh: Any) -> None:
    fh.flush()
    with contextlib.suppress(OSError):
        os.fsync(fh.fileno())


@contextlib.contextmanager
def entry_lock(root: Path, name: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``<root>/.locks/<name>.lock`` (POSIX; released if the process dies)."""
    root.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    (root / ".locks").mkdir(exist_ok=True)
    path = root / ".locks" / f"{name}.lock"
    with open(path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise NeurocertError(
                f"another process is writing the activation cache entry {str(root / name)!r}; "
                "wait for it or use another cache_dir"
            ) from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def load_entry(path: Path) -> dict[str, Any]:
    """Open a complete cache entry read-only: arrays are memory-mapped."""
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise NeurocertError(f"cache entry {str(path)!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    out: dict[str, Any] = {"meta": meta}
    for name in _FILES:
        f = path / f"{name}.npy"
        out[name] = np.lib.format.open_memmap(f, mode="r") if f.exists() else None
    return out


class MemoryEntry:
    """Rows kept in memory: fixed-shape rows in one preallocated array, token rows in chunks."""

    def __init__(self, n_samples: int, dtype: np.dtype, tokens: bool) -> None:
        self.n_samples = n_samples
        self.dtype = dtype
        self.tokens = tokens
        self.samples_done = 0
        self._values: np.ndarray | None = None
        self._chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def append(self, values: np.ndarray, groups: np.ndarray | None, positions: np.ndarray | None,
               stop: int) -> None:
        if self.tokens:
            self._chunks.append((values, groups, positions))
        else:
            if self._values is None:
                self._values = np.empty((self.n_samples,) + values.shape[1:], dtype=self.dtype)
            elif self._values.shape[1:] != values.shape[1:]:
                raise _shape_error(self._values.shape[1:], values.shape[1:], self.samples_done)
            self._values[self.samples_done:stop] = values
        self.samples_done = stop

    def finish(self) -> dict[str, Any]:
        if not self.tokens:
            return {"values": self._values, "groups": None, "positions": None, "meta": {}}
        vals, grps, poss = zip(*self._chunks) if self._chunks else ((), (), ())
        return {"values": np.concatenate(vals) if vals else np.empty((0, 0), self.dtype),
                "groups": np.concatenate(grps) if grps else np.empty(0, np.int64),
                "positions": np.concatenate(poss) if poss else np.empty(0, np.int64),
                "meta": {}}


def _shape_error(expected: tuple[int, ...], got: tuple[int, ...], at: int) -> ValidationError:
    return ValidationError(
        f"the layer's per-sample shape changed from {expected} to {got} at sample {at}; with "
        "pooling='none' every batch must give the same shape (for variable-length sequences "
        "use pooling='tokens' or a pooled mode)"
    )


class DiskEntry:
    """A resumable cache entry being written in ``<root>/<name>.partial/``."""

    def __init__(self, root: Path, name: str, key: str, n_samples: int, dtype: np.dtype,
                 tokens: bool, meta: dict[str, Any]) -> None:
        self.final = root / name
        self.partial = root / f"{name}.partial"
        self.key = key
        self.n_samples = n_samples
        self.dtype = np.dtype(dtype)
        self.tokens = tokens
        self.meta = meta
        self.samples_done = 0
        self.rows_done = 0
        self.row_shape: tuple[int, ...] | None = None
        self._files: dict[str, Any] = {}
        self._open()

    # -- set-up ----------------------------------------------------------- #
    def _progress_path(self) -> Path:
        return self.partial / "progress.json"

    def _open(self) -> None:
        state = None
        progress = self._progress_path()
        if progress.exists():
            try:
                state = json.loads(progress.read_text())
            except (OSError, ValueError):
                state = None
            if state is not None and (state.get("key") != self.key or state.get("format") != FORMAT):
                state = None
        if state is None:
            shutil.rmtree(self.partial, ignore_errors=True)
            self.partial.mkdir(parents=True)
        else:
            self.samples_done = int(state["samples_done"])
            self.rows_done = int(state["rows_done"])
            self.row_shape = tuple(state["row_shape"]) if state["row_shape"] is not None else None
        names = _FILES if self.tokens else ("values",)
        dtypes = {"values": self.dtype, "groups": np.dtype(np.int64), "positions": np.dtype(np.int64)}
        for name in names:
            path = self.partial / f"{name}.npy"
            if not path.exists() or state is None:
                with open(path, "wb") as fh:
                    fh.write(b"\0" * _HEADER)
            fh = open(path, "r+b")  # noqa: SIM115 - closed in close()
            per_row = 1
            if name == "values":
                per_row = int(np.prod(self.row_shape)) if self.row_shape is not None else 0
            keep = _HEADER + self.rows_done * per_row * dtypes[name].itemsize
            fh.truncate(keep)  # drop a batch written after the last progress record
            fh.seek(keep)
            self._files[name] = fh
        self._dtypes = dtypes

    # -- writing ---------------------------------------------------------- #
    def append(self, values: np.ndarray, groups: np.ndarray | None, positions: np.ndarray | None,
               stop: int) -> None:
        if self.row_shape is None:
            self.row_shape = tuple(int(s) for s in values.shape[1:])
        elif tuple(values.shape[1:]) != self.row_shape:
            raise _shape_error(self.row_shape, tuple(values.shape[1:]), self.samples_done)
        self._files["values"].write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        if self.tokens:
            self._files["groups"].write(np.ascontiguousarray(groups, dtype=np.int64).tobytes())
            self._files["positions"].write(np.ascontiguousarray(positions, dtype=np.int64).tobytes())
        for fh in self._files.values():
            _fsync(fh)
        self.samples_done = stop
        self.rows_done += int(values.shape[0])
        state = {"format": FORMAT, "key": self.key, "samples_done": self.samples_done,
                 "rows_done": self.rows_done, "row_shape": list(self.row_shape),
                 "n_samples": self.n_samples}
        with atomic_path(self._progress_path()) as tmp:
            tmp.write_text(json.dumps(state))

    def close(self) -> None:
        for fh in self._files.values():
            with contextlib.suppress(OSError):
                fh.close()
        self._files = {}

    def finish(self) -> dict[str, Any]:
        """Write the headers, rename the entry to its final name and open it memory-mapped."""
        if self.samples_done != self.n_samples:  # pragma: no cover - guarded by the caller
            raise NeurocertError(f"cache entry incomplete: {self.samples_done} of {self.n_samples} samples")
        row_shape = self.row_shape if self.row_shape is not None else (0,)
        shapes = {"values": (self.rows_done,) + tuple(row_shape),
                  "groups": (self.rows_done,), "positions": (self.rows_done,)}
        for name, fh in self._files.items():
            fh.seek(0)
            fh.write(_npy_header(self._dtypes[name], shapes[name]))
            _fsync(fh)
        self.close()
        meta = dict(self.meta, format=FORMAT, key=self.key, n_samples=self.n_samples,
                    n_rows=self.rows_done, dtype=self.dtype.name)
        with atomic_path(self.partial / "meta.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=repr))
        (self.partial / "progress.json").unlink(missing_ok=True)
        if self.final.exists():  # written meanwhile by someone else: theirs wins
            shutil.rmtree(self.partial, ignore_errors=True)
        else:
            os.replace(self.partial, self.final)
            with contextlib.suppress(OSError):
                fd = os.open(self.final.parent, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        return load_entry(self.final)
