"""Chunked on-disk arrays for probing sets larger than memory.

Activations ``(n_samples, n_neurons)`` and concepts ``(n_samples, n_concepts)`` can be
kept on disk as

* a **Zarr v3 array** (a directory with ``zarr.json``; needs ``pip install
  'neurocert[dask]'``), chunked over samples *and* neurons so that a block of
  neurons is read without touching the others — the layout of choice for
  :mod:`neurocert.distributed` and for a cluster (a shared filesystem or object
  store that every worker can open);
* a plain **.npy** file, opened as a read-only memory map (no extra dependency;
  reading a block of neurons touches every row's pages).

:func:`convert` writes a Zarr array from ``.npy``, ``.npz`` or Parquet files, reading
the source in sample chunks (bounded memory: a compressed ``.npz`` member is
streamed from the zip file, Parquet by record batches). :func:`read_columns`
reads a block of neurons in sample chunks into one preallocated array.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from neurocert import storage
>>> d = tempfile.mkdtemp()
>>> x = np.arange(12, dtype=np.float32).reshape(4, 3)
>>> np.save(os.path.join(d, "a.npy"), x)
>>> z = storage.convert(os.path.join(d, "a.npy"), os.path.join(d, "a.zarr"))  # doctest: +SKIP
>>> storage.read_columns(storage.open_array(os.path.join(d, "a.npy")), 1, 3).tolist()
[[1.0, 2.0], [4.0, 5.0], [7.0, 8.0], [10.0, 11.0]]
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ._optional import require
from .exceptions import ValidationError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "SAMPLE_CHUNK",
    "convert",
    "default_chunks",
    "is_zarr_path",
    "iter_source_chunks",
    "open_array",
    "read_columns",
    "write_array",
]

#: samples per read when streaming (does not affect any result)
SAMPLE_CHUNK = 16384
#: target size of one stored chunk (about 4 MiB: small enough to read many at once
#: within a tight memory limit, large enough for fast compression)
DEFAULT_CHUNK_BYTES = 4 * 2**20
_NEURON_CHUNK = 64


def is_zarr_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a Zarr v3 array or group directory (has ``zarr.json``)."""
    p = Path(path)
    return p.is_dir() and (p / "zarr.json").is_file()


def default_chunks(shape: tuple[int, int], itemsize: int,
                   chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> tuple[int, int]:
    """Chunk shape ``(samples, neurons)`` of about ``chunk_bytes`` with 64 neurons a chunk.

    64 neurons per chunk matches the canonical neuron block of
    :mod:`neurocert.distributed`, so a block reads whole chunks.
    """
    n, k = shape
    cols = max(1, min(k, _NEURON_CHUNK))
    rows = max(1, min(n, chunk_bytes // max(1, cols * itemsize)))
    return int(rows), int(cols)


def open_array(source: Any, *, name: str = "array") -> Any:
    """Open an on-disk 2-D array without reading it.

    Parameters
    ----------
    source : path or array
        A Zarr array directory, a ``.npy`` file (opened as a read-only memmap), or an
        array already open (returned unchanged).
    name : str
        Used in error messages.

    Returns
    -------
    zarr.Array or numpy.memmap or the array given
    """
    if not isinstance(source, (str, os.PathLike)):
        return source
    p = Path(source)
    if is_zarr_path(p):
        zarr = require("zarr", "reading a Zarr store")
        try:
            return zarr.open_array(str(p), mode="r")
        except Exception as exc:  # a group, or a broken store
            raise ValidationError(f"`{name}`: {str(p)!r} is not a Zarr array ({exc})") from exc
    if p.suffix.lower() == ".npy":
        if not p.is_file():
            raise ValidationError(f"`{name}`: file {str(p)!r} does not exist")
        return np.load(p, mmap_mode="r")
    if not p.exists():
        raise ValidationError(f"`{name}`: {str(p)!r} does not exist")
    raise ValidationError(
        f"`{name}`: {str(p)!r} is neither a Zarr array directory nor a .npy file; convert it "
        "with `neurocert convert` (from .npy, .npz or .parquet)")


def read_columns(array: Any, j0: int, j1: int, *, dtype: Any = None,
                 sample_chunk: int = SAMPLE_CHUNK) -> np.ndarray:
    """Columns ``j0:j1`` of a 2-D array as one C-contiguous numpy array.

    Reads ``sample_chunk`` rows at a time into a preallocated output, so the extra
    memory is one chunk whatever the number of samples.

    Parameters
    ----------
    array : numpy array, memmap or zarr.Array (n_samples, n_columns)
    j0, j1 : int
        Column range.
    dtype : numpy dtype, optional
        Output dtype (default: the array's).
    sample_chunk : int
        Rows per read (does not change the result).

    Returns
    -------
    ndarray (n_samples, j1 - j0)
    """
    n = array.shape[0]
    out = np.empty((n, j1 - j0), dtype=np.dtype(array.dtype if dtype is None else dtype))
    for s0 in range(0, n, sample_chunk):
        s1 = min(n, s0 + sample_chunk)
        out[s0:s1] = np.asarray(array[s0:s1, j0:j1])
    return out


def write_array(path: str | os.PathLike[str], chunks_iter: Iterator[np.ndarray],
                shape: tuple[int, ...], dtype: Any, *, chunks: tuple[int, ...] | None = None,
                attributes: dict[str, Any] | None = None, overwrite: bool = False) -> Any:
    """Write a Zarr v3 array from an iterator of consecutive row blocks.

    Parameters
    ----------
    path : path
        Array directory to create.
    chunks_iter : iterator of ndarray
        Row blocks in order; their row counts add up to ``shape[0]``.
    shape, dtype : the array's
    chunks : tuple of int, optional
        Stored chunk shape; default :func:`default_chunks`.
    attributes : dict, optional
        JSON-serialisable attributes (e.g. column names).
    overwrite : bool
        Replace an existing array at ``path``.

    Returns
    -------
    zarr.Array

    Notes
    -----
    Written atomically (:func:`neurocert.results.atomic_dir`): the array is built in
    a hidden sibling directory and renamed into place only once every row is
    written, so an interrupted or failed write leaves ``path`` as it was (an
    existing array stays intact; no half-written store appears).
    """
    from .results import atomic_dir

    zarr = require("zarr", "writing a Zarr store")
    p = Path(path)
    if p.exists() and not overwrite:
        raise ValidationError(f"{str(p)!r} already exists; pass overwrite=True (--overwrite)")
    dtype = np.dtype(dtype)
    if chunks is None:
        chunks = (default_chunks((shape[0], shape[1]), dtype.itemsize)
                  if len(shape) == 2 else tuple(shape))
    with atomic_dir(p) as tmp:
        z = zarr.create_array(store=str(tmp), shape=tuple(int(s) for s in shape),
                              chunks=tuple(int(c) for c in chunks), dtype=dtype, overwrite=True)
        row = 0
        for block in chunks_iter:
            block = np.asarray(block, dtype=dtype)
            if block.ndim == 1 and len(shape) == 2:
                block = block.reshape(-1, 1)
            z[row:row + block.shape[0]] = block
            row += block.shape[0]
        if row != shape[0]:
            raise ValidationError(f"wrote {row} rows to {str(p)!r} but the source has {shape[0]}")
        if attributes:
            z.attrs.update(attributes)
    return zarr.open_array(store=str(p), mode="r+")


# --------------------------------------------------------------------------- #
# sources


def _npz_member(path: Path, key: str | None) -> tuple[zipfile.ZipFile, str]:
    zf = zipfile.ZipFile(path)
    names = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
    if key is None:
        if len(names) != 1:
            zf.close()
            raise ValidationError(
                f"{str(path)!r} holds {len(names)} arrays ({', '.join(names)}); choose one "
                "with `key` (--key)")
        key = names[0]
    if key not in names:
        zf.close()
        raise ValidationError(f"{str(path)!r} has no array {key!r}; it has: {', '.join(names)}")
    return zf, key + ".npy"


def _npz_chunks(path: Path, key: str | None,
                sample_chunk: int) -> tuple[tuple[int, ...], np.dtype, Iterator[np.ndarray]]:
    """Stream an ``.npz`` member (compressed or not) in row blocks."""
    zf, member = _npz_member(path, key)
    fh = zf.open(member)
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    if fortran and len(shape) > 1:
        fh.close()
        zf.close()
        raise ValidationError(f"{str(path)!r}[{member}] is Fortran-ordered; save it in C order "
                              "(np.ascontiguousarray) to stream it")
    if dtype.hasobject:
        fh.close()
        zf.close()
        raise ValidationError(f"{str(path)!r}[{member}] holds Python objects, not numbers")
    row_items = int(np.prod(shape[1:])) if len(shape) > 1 else 1

    def gen() -> Iterator[np.ndarray]:
        try:
            left = shape[0] if shape else 1
            while left > 0:
                rows = min(sample_chunk, left)
                nbytes = rows * row_items * dtype.itemsize
                buf = fh.read(nbytes)
                if len(buf) != nbytes:
                    raise ValidationError(f"{str(path)!r}[{member}] is truncated")
                yield np.frombuffer(buf, dtype=dtype).reshape((rows,) + tuple(shape[1:]))
                left -= rows
        finally:
            fh.close()
            zf.close()

    return tuple(shape), dtype, gen()


def _parquet_chunks(path: Path, sample_chunk: int
                    ) -> tuple[tuple[int, int], np.dtype, list[str], Iterator[np.ndarray]]:
    pq = require("pyarrow.parquet", "reading Parquet")
    pa = require("pyarrow", "reading Parquet")
    f = pq.ParquetFile(path)
    schema = f.schema_arrow
    names = list(schema.names)
    for field in schema:
        t = field.type
        if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_boolean(t)):
            raise ValidationError(f"Parquet column {field.name!r} of {str(path)!r} is not "
                                  f"numeric ({t})")
    all32 = all(pa.types.is_float32(field.type) for field in schema)
    dtype = np.dtype(np.float32 if all32 else np.float64)
    n = f.metadata.num_rows

    def gen() -> Iterator[np.ndarray]:
        for batch in f.iter_batches(batch_size=sample_chunk):
            cols = [np.asarray(batch.column(i).to_numpy(zero_copy_only=False), dtype=dtype)
                    for i in range(batch.num_columns)]
            yield np.stack(cols, axis=1)

    return (n, len(names)), dtype, names, gen()


def iter_source_chunks(source: str | os.PathLike[str], *, key: str | None = None,
                       sample_chunk: int = SAMPLE_CHUNK
                       ) -> tuple[tuple[int, ...], np.dtype, dict[str, Any], Iterator[np.ndarray]]:
    """Shape, dtype, attributes and a row-block iterator of an array file.

    Supports ``.npy`` (memory-mapped), ``.npz`` (streamed from the zip file) and
    ``.parquet`` (record batches; one column per neuron, names kept as the
    ``"columns"`` attribute).
    """
    p = Path(source)
    suffix = p.suffix.lower()
    if not p.exists():
        raise ValidationError(f"source {str(p)!r} does not exist")
    if suffix == ".npy":
        a = np.load(p, mmap_mode="r")
        if a.dtype.hasobject:
            raise ValidationError(f"{str(p)!r} holds Python objects, not numbers")
        if key is not None:
            raise ValidationError(f"`key` is only used for .npz files; {str(p)!r} is .npy")

        def gen() -> Iterator[np.ndarray]:
            for s0 in range(0, a.shape[0], sample_chunk):
                yield np.asarray(a[s0:s0 + sample_chunk])

        return tuple(a.shape), a.dtype, {}, gen()
    if suffix == ".npz":
        shape, dtype, it = _npz_chunks(p, key, sample_chunk)
        return shape, dtype, {}, it
    if suffix == ".parquet":
        if key is not None:
            raise ValidationError(f"`key` is only used for .npz files; {str(p)!r} is .parquet")
        shape, dtype, names, it = _parquet_chunks(p, sample_chunk)
        return shape, dtype, {"columns": names}, it
    raise ValidationError(f"unsupported source {str(p)!r}; supported: .npy, .npz, .parquet")


def convert(source: str | os.PathLike[str], dest: str | os.PathLike[str], *,
            key: str | None = None, dtype: Any = None, chunks: tuple[int, int] | None = None,
            overwrite: bool = False, sample_chunk: int = SAMPLE_CHUNK) -> Any:
    """Convert a ``.npy``, ``.npz`` or Parquet array to a chunked Zarr v3 array.

    Parameters
    ----------
    source : path
        ``.npy``, ``.npz`` (with ``key`` when it holds several arrays) or ``.parquet``
        (one numeric column per neuron or concept).
    dest : path
        Zarr array directory to create.
    key : str, optional
        Array name inside an ``.npz``.
    dtype : numpy dtype, optional
        Stored dtype (default: the source's; e.g. ``float32`` halves float64 activations).
    chunks : (int, int), optional
        Stored chunk shape ``(samples, columns)``; default about 4 MiB with 64 columns.
    overwrite : bool
    sample_chunk : int
        Rows read at a time (memory bound of the conversion).

    Returns
    -------
    zarr.Array
        The new array, opened read-write.
    """
    shape, src_dtype, attrs, it = iter_source_chunks(source, key=key, sample_chunk=sample_chunk)
    if len(shape) not in (1, 2):
        raise ValidationError(f"source {str(source)!r} must be 1-D or 2-D; got shape {shape}")
    out_dtype = np.dtype(src_dtype if dtype is None else dtype)
    if out_dtype.kind not in "biuf":
        raise ValidationError(f"dtype must be numeric; got {out_dtype}")
    return write_array(dest, it, shape, out_dtype, chunks=chunks, attributes=attrs,
                       overwrite=overwrite)
