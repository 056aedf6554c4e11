"""Every file neurocert writes, and the readers for the files it reads.

This module owns the on-disk formats of the project:

* **Atomic writes.** :func:`atomic_path`, :func:`atomic_write_bytes` and
  :func:`atomic_dir` write to a temporary sibling and rename it onto the target
  only when writing succeeded, so a crash never leaves a half-written file or
  results directory under the target name.
* **Manifests.** :func:`make_manifest` records what produced a result (schema
  version, kind, library/Python/numpy/scipy versions, parameters, seed, input
  hashes, timings); :func:`file_sha256` and :func:`array_sha256` give the input
  hashes.
* **Saved results.** :func:`save_tables` writes a result as a *directory*
  holding ``manifest.json`` and one Parquet file per table (optionally a CSV
  copy of each); :func:`load_tables` reads it back and checks the schema
  version, kind and required columns, raising :class:`~neurocert.exceptions.SchemaError`
  with a one-line message when the directory is not a valid result.
* **Input readers.** :func:`read_array_file` reads ``.npy`` (memory-mapped),
  ``.npz``, ``.parquet`` and ``.csv`` arrays; :func:`read_names_file` reads
  neuron/concept names; :func:`write_table` writes one tidy table.

pandas and pyarrow are optional and are imported only when a function needs
them.

Results directory layout (``schema_version`` 1)::

    result/
        manifest.json        # the manifest plus a "tables" entry, written last
        <table>.parquet      # one per table
        <table>.csv          # only with save_tables(..., csv=True)

``manifest.json`` is written with Python's ``json`` module and
``allow_nan=True``: a float parameter that is NaN or infinite is stored as the
bare tokens ``NaN``, ``Infinity`` or ``-Infinity`` (accepted by Python's
``json`` and by most JSON readers in permissive mode) rather than being
silently turned into ``null``.
"""

from __future__ import annotations

import contextlib
import csv as _csv
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from ._optional import require
from .exceptions import NeurocertError, SchemaError, ValidationError

__all__ = [
    "SCHEMA_VERSION",
    "array_sha256",
    "atomic_dir",
    "atomic_path",
    "atomic_write_bytes",
    "file_sha256",
    "load_tables",
    "make_manifest",
    "read_array_file",
    "read_names_file",
    "save_tables",
    "write_table",
]

#: Version of the results-directory format written by :func:`save_tables`.
SCHEMA_VERSION: int = 1

_MANIFEST = "manifest.json"
_LIST_DTYPE = "list<int64>"
_ARRAY_SUFFIXES = (".npy", ".npz", ".parquet", ".csv")
_TABLE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_HASH_CHUNK = 1 << 20
_RESERVED_MANIFEST_KEYS = frozenset({
    "schema_version", "kind", "neurocert_version", "created", "python_version",
    "numpy_version", "scipy_version", "parameters", "seed", "input_hashes",
    "timings", "tables",
})


# --------------------------------------------------------------------------- #
# Atomic writes
# --------------------------------------------------------------------------- #

def _fsync_file(path: Path) -> None:
    """Flush a written file to stable storage."""
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry (best effort; a no-op where unsupported)."""
    if os.name == "nt":
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and directory below ``root`` (inclusive)."""
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync_file(Path(dirpath) / name)
        _fsync_dir(Path(dirpath))


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree; missing paths are ignored."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _sibling(target: Path, tag: str) -> Path:
    """A unique hidden sibling of ``target``; the target's suffix is kept last."""
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.{tag}{target.suffix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; rename it onto ``path`` on success only.

    The temporary path is a hidden sibling of ``path`` (same directory, so the
    final :func:`os.replace` is atomic) and keeps ``path``'s suffix, so writers
    that infer the format from the extension work. It does not exist when
    yielded: the body must create it. On normal exit the file is fsync'ed and
    atomically replaces ``path``; if the body raises, the temporary file is
    removed and ``path`` is left untouched. Missing parent directories are
    created.

    Parameters
    ----------
    path : str or os.PathLike
        Final destination.

    Yields
    ------
    pathlib.Path
        Where to write.

    Raises
    ------
    NeurocertError
        If the body exited normally without creating the temporary file.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        yield tmp
        if not tmp.exists():
            raise NeurocertError(
                f"atomic_path({str(target)!r}): nothing was written to the temporary path {str(tmp)!r}"
            )
        _fsync_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise
    _fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`).

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    data : bytes
        Content.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    target = Path(path)
    with atomic_path(target) as tmp:
        tmp.write_bytes(bytes(data))
    return target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``path`` on success only.

    The temporary directory is a hidden sibling of ``path``. On normal exit
    every file in it is fsync'ed and it is renamed to ``path``; if ``path``
    already exists it is first renamed aside, then the new directory is renamed
    into place and the old one is deleted. If the body raises, the temporary
    directory is deleted and ``path`` is untouched. If the final rename fails,
    the old directory is moved back.

    A hard crash (power loss, ``SIGKILL``) can leave a hidden
    ``.<name>.<id>.tmp`` directory behind, and a crash in the instant between
    the two renames leaves the previous result under ``.<name>.<id>.old``;
    neither is ever visible under ``path`` in a half-written state.

    Parameters
    ----------
    path : str or os.PathLike
        Final directory. Missing parents are created. Whatever is at ``path``
        (file or directory) is replaced, so callers must check it is theirs.

    Yields
    ------
    pathlib.Path
        The temporary directory to populate.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    tmp.mkdir()  # default permissions (umask), unlike tempfile.mkdtemp's 0o700
    try:
        yield tmp
        _fsync_tree(tmp)
    except BaseException:
        _remove(tmp)
        raise
    if os.path.lexists(target):
        old = _sibling(target, "old")
        try:
            os.rename(target, old)
        except BaseException:
            _remove(tmp)
            raise
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(old, target)
            _remove(tmp)
            raise
        _fsync_dir(target.parent)
        _remove(old)
    else:
        try:
            os.rename(tmp, target)
        except BaseException:
            _remove(tmp)
            raise
    _fsync_dir(target.parent)


# --------------------------------------------------------------------------- #
# Hashes
# --------------------------------------------------------------------------- #

def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Parameters
    ----------
    path : str or os.PathLike
        File to hash.

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    ValidationError
        If ``path`` is not an existing file.
    """
    p = Path(path)
    if not p.is_file():
        raise ValidationError(f"cannot hash {str(p)!r}: no such file")
    h = hashlib.sha256()
    with p.open("rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def array_sha256(a: np.ndarray) -> str:
    """Hex SHA-256 of an array's dtype, shape and C-order bytes.

    The dtype is normalised to native byte order first, so equal values hash
    equally whatever the byte order; ``float32`` and ``float64`` arrays with
    equal values hash differently. Memory-mapped and non-contiguous arrays are
    hashed in chunks without a full copy.

    Parameters
    ----------
    a : numpy.ndarray
        Array to hash; object arrays are rejected (their bytes are pointers).

    Returns
    -------
    str
        64 lowercase hex digits.

    Raises
    ------
    ValidationError
        If ``a`` has object dtype or a structured dtype.
    """
    a = np.asarray(a)
    if a.dtype.hasobject or a.dtype.names is not None:
        raise ValidationError(
            f"array_sha256 needs a plain numeric, bool or fixed-width string array; got dtype {a.dtype}"
        )
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    h = hashlib.sha256()
    h.update(f"dtype={a.dtype.str};shape={tuple(int(s) for s in a.shape)};".encode())
    if a.size == 0:
        return h.hexdigest()
    if a.flags.c_contiguous:
        flat = a.reshape(-1)
        step = max(1, _HASH_CHUNK // max(1, a.itemsize))
        for start in range(0, flat.size, step):
            h.update(flat[start:start + step].view(np.uint8))
    else:
        if a.ndim == 0:  # pragma: no cover - 0-d arrays are always contiguous
            a = np.ascontiguousarray(a)
        row_bytes = max(1, a.itemsize * (a.size // a.shape[0]))
        step = max(1, _HASH_CHUNK // row_bytes)
        for start in range(0, a.shape[0], step):
            h.update(np.ascontiguousarray(a[start:start + step]).reshape(-1).view(np.uint8))
    return h.hexdigest()


# --------------------------------------------------------------------------- #
# Manifests
# --------------------------------------------------------------------------- #

def _jsonable(obj: Any, where: str) -> Any:
    """Convert ``obj`` to plain JSON types; floats (NaN/inf included) are kept as-is."""
    if obj is None or isinstance(obj, (bool, str)):
        return str(obj) if isinstance(obj, str) else obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind == "c":
            raise ValidationError(f"manifest value {where} is a complex array; not JSON-serialisable")
        if obj.dtype.hasobject:
            return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj.tolist())]
        return obj.tolist()
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if isinstance(k, str):
                key = str(k)
            elif isinstance(k, (int, np.integer)) and not isinstance(k, (bool, np.bool_)):
                key = str(int(k))
            else:
                raise ValidationError(
                    f"manifest key {k!r} in {where} must be a str or int; got {type(k).__name__}"
                )
            out[key] = _jsonable(v, f"{where}[{key!r}]")
        return out
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, (set, frozenset)):
        items = [_jsonable(v, f"{where}{{}}") for v in obj]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    raise ValidationError(
        f"manifest value {where} has type {type(obj).__name__}, which cannot be stored in JSON"
    )


def _neurocert_version() -> str:
    try:
        import neurocert

        version = getattr(neurocert, "__version__", None)
        if isinstance(version, str) and version:
            return version
    except Exception:  # pragma: no cover - package import broken mid-development
        pass
    try:
        from importlib.metadata import PackageNotFoundError, version as _meta_version

        try:
            return _meta_version("neurocert")
        except PackageNotFoundError:
            return "unknown"
    except Exception:  # pragma: no cover
        return "unknown"


def make_manifest(
    kind: str,
    *,
    parameters: dict[str, Any],
    seed: int | None,
    input_hashes: dict[str, str] | None = None,
    timings: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the provenance record stored in every results directory.

    Parameters
    ----------
    kind : str
        What the result is, e.g. ``"identification"``; checked by
        :func:`load_tables`.
    parameters : dict
        Parameters of the run. numpy scalars and arrays, tuples, sets and paths
        are converted to JSON types. Floats are stored as-is: NaN and
        infinities are kept (written as ``NaN``/``Infinity`` tokens), never
        replaced by ``null``.
    seed : int or None
        Random seed, or None when the run was not seeded.
    input_hashes : dict of str to str, optional
        SHA-256 of each input, from :func:`file_sha256` or :func:`array_sha256`.
    timings : dict of str to float, optional
        Wall-clock seconds per stage.
    extra : dict, optional
        More top-level entries; they may not reuse a reserved key
        (``schema_version``, ``kind``, ``parameters``, ``tables``, ...).

    Returns
    -------
    dict
        JSON-serialisable manifest with keys ``schema_version``, ``kind``,
        ``neurocert_version``, ``created`` (UTC ISO 8601), ``python_version``,
        ``numpy_version``, ``scipy_version``, ``parameters``, ``seed``,
        ``input_hashes``, ``timings`` and those of ``extra``.

    Raises
    ------
    ValidationError
        If an argument has the wrong type, a value cannot be stored in JSON,
        or ``extra`` reuses a reserved key.
    """
    import scipy

    if not isinstance(kind, str) or not kind:
        raise ValidationError(f"`kind` must be a non-empty str; got {kind!r}")
    if not isinstance(parameters, Mapping):
        raise ValidationError(f"`parameters` must be a dict; got {type(parameters).__name__}")
    if seed is not None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise ValidationError(f"`seed` must be an int or None; got {seed!r}")
        seed = int(seed)
    hashes: dict[str, str] = {}
    for k, v in (input_hashes or {}).items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise ValidationError(
                f"`input_hashes` must map str to str; got {k!r}: {v!r}"
            )
        hashes[str(k)] = str(v)
    times: dict[str, float] = {}
    for k, v in (timings or {}).items():
        if not isinstance(k, str) or isinstance(v, (bool, np.bool_)) or not isinstance(
            v, (int, float, np.integer, np.floating)
        ):
            raise ValidationError(f"`timings` must map str to seconds; got {k!r}: {v!r}")
        times[str(k)] = float(v)
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "neurocert_version": _neurocert_version(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python_version": platform.python_version(),
        "numpy_version": np.__version__,
        "scipy_version": scipy.__version__,
        "parameters": _jsonable(dict(parameters), "parameters"),
        "seed": seed,
        "input_hashes": hashes,
        "timings": times,
    }
    if extra:
        clash = sorted(set(extra) & _RESERVED_MANIFEST_KEYS)
        if clash:
            raise ValidationError(f"`extra` may not set reserved manifest key(s) {clash}")
        manifest.update(_jsonable(dict(extra), "extra"))
    return manifest


# --------------------------------------------------------------------------- #
# Tables: numpy columns <-> Arrow
# --------------------------------------------------------------------------- #

def _is_int_list(v: Any) -> bool:
    return isinstance(v, (np.ndarray, list, tuple))


def _as_column(values: Any, where: str) -> np.ndarray:
    """Coerce one column to a 1-D numpy array (object array for per-row int lists)."""
    if isinstance(values, (list, tuple)) and any(_is_int_list(v) for v in values):
        col = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            col[i] = v
        return col
    col = np.asarray(values)
    if col.ndim != 1:
        raise ValidationError(f"{where} must be 1-D; got shape {col.shape}")
    return col


def _column_dtype(col: np.ndarray, where: str) -> str:
    """The logical dtype recorded in the manifest: numpy name, 'str', 'object' or list<int64>."""
    kind = col.dtype.kind
    if kind in "biuf":
        return col.dtype.name
    if kind == "U":
        return "str"
    if kind == "O":
        if len(col) == 0:
            return "object"
        n_list = sum(_is_int_list(v) for v in col)
        if n_list == len(col):
            return _LIST_DTYPE
        if n_list == 0 and all(v is None or isinstance(v, str) for v in col):
            return "object"
        raise ValidationError(
            f"{where} is an object column mixing types; it must hold only str (or None) "
            "or only 1-D integer arrays"
        )
    raise ValidationError(
        f"{where} has dtype {col.dtype}; supported are numeric, bool, str and per-row integer arrays"
    )


def _list_to_arrow(col: np.ndarray, where: str, pa: Any) -> Any:
    parts: list[np.ndarray] = []
    offsets = np.zeros(len(col) + 1, dtype=np.int64)
    for i, v in enumerate(col):
        a = np.asarray(v)
        if a.size == 0:
            a = np.zeros(0, dtype=np.int64)
        if a.ndim != 1 or a.dtype.kind not in "iu":
            raise ValidationError(
                f"{where} row {i} must be a 1-D integer array; got dtype {a.dtype}, shape {a.shape}"
            )
        if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
            raise ValidationError(f"{where} row {i} has a value above the int64 range")
        parts.append(a.astype(np.int64, copy=False))
        offsets[i + 1] = offsets[i] + a.size
    flat = pa.array(np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64), type=pa.int64())
    if offsets[-1] <= np.iinfo(np.int32).max:
        return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32), type=pa.int32()), flat)
    return pa.LargeListArray.from_arrays(pa.array(offsets, type=pa.int64()), flat)


def _to_arrow_table(columns: Mapping[str, Any], where: str) -> tuple[Any, dict[str, str], int]:
    """Validate columns and build a pyarrow Table; return it, the dtypes and the row count."""
    pa = require("pyarrow", "saving result tables")
    if not isinstance(columns, Mapping):
        raise ValidationError(f"{where} must be a dict of column name -> 1-D array")
    arrays: list[Any] = []
    names: list[str] = []
    dtypes: dict[str, str] = {}
    n_rows: int | None = None
    first = ""
    for name, values in columns.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"{where}: column names must be non-empty str; got {name!r}")
        cwhere = f"{where} column {name!r}"
        col = _as_column(values, cwhere)
        if n_rows is None:
            n_rows, first = len(col), name
        elif len(col) != n_rows:
            raise ValidationError(
                f"{where}: column {name!r} has {len(col)} rows but column {first!r} has {n_rows}"
            )
        dtype = _column_dtype(col, cwhere)
        if dtype == _LIST_DTYPE:
            arr = _list_to_arrow(col, cwhere, pa)
        elif dtype in ("str", "object"):
            arr = pa.array(col.tolist(), type=pa.string())
        else:
            if not col.dtype.isnative:
                col = col.astype(col.dtype.newbyteorder("="))
            arr = pa.array(np.ascontiguousarray(col))
        arrays.append(arr)
        names.append(name)
        dtypes[name] = dtype
    table = pa.table(arrays, names=names) if names else pa.table({})
    return table, dtypes, int(n_rows or 0)


def _from_arrow_column(chunked: Any, dtype: str | None, pa: Any) -> np.ndarray:
    """Convert one Arrow column back to numpy following the recorded logical dtype."""
    arr = chunked.combine_chunks() if hasattr(chunked, "combine_chunks") else chunked
    t = arr.type
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        values = np.array(arr.values.to_numpy(zero_copy_only=False), dtype=np.int64)
        offsets = np.asarray(arr.offsets.to_numpy(zero_copy_only=False), dtype=np.int64)
        out = np.empty(len(arr), dtype=object)
        for i in range(len(arr)):
            out[i] = values[offsets[i]:offsets[i + 1]]
        return out
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        items = arr.to_pylist()
        if dtype == "str" and None not in items:
            return np.array(items, dtype=str) if items else np.zeros(0, dtype="<U1")
        out = np.empty(len(items), dtype=object)
        out[:] = items
        return out
    col = np.array(arr.to_numpy(zero_copy_only=False))
    if dtype is not None and dtype not in ("str", "object", _LIST_DTYPE):
        with contextlib.suppress(TypeError):
            col = col.astype(np.dtype(dtype), copy=False)
    return col


def _check_table_name(name: Any) -> str:
    if not isinstance(name, str) or not _TABLE_NAME_RE.match(name) or name == "manifest":
        raise ValidationError(
            f"table name {name!r} is not allowed; use letters, digits, '_', '-', '.' "
            "(not starting with '.' or '-', and not 'manifest')"
        )
    return name


def _write_csv(df_columns: Mapping[str, np.ndarray], dtypes: Mapping[str, str], path: Path) -> None:
    """Write columns as CSV with pandas; per-row integer lists become space-separated ints."""
    pd = require("pandas", "writing CSV tables")
    data: dict[str, Any] = {}
    for name, col in df_columns.items():
        if dtypes[name] == _LIST_DTYPE:
            data[name] = [" ".join(str(int(x)) for x in np.asarray(v).ravel()) for v in col]
        elif dtypes[name] == "object":  # missing strings are empty cells, not "nan"
            data[name] = ["" if v is None else v for v in col]
        else:
            data[name] = col
    pd.DataFrame(data).to_csv(path, index=False, na_rep="nan")


def save_tables(
    path: str | os.PathLike[str],
    tables: Mapping[str, Mapping[str, Any]],
    manifest: Mapping[str, Any],
    *,
    csv: bool = False,
) -> Path:
    """Save named tables and a manifest as a results directory, atomically.

    Parameters
    ----------
    path : str or os.PathLike
        Results directory. If it exists it must be a previous neurocert result
        (it contains ``manifest.json``) or an empty directory; it is replaced
        atomically (see :func:`atomic_dir`).
    tables : dict of str to dict of str to array
        ``{table_name: {column_name: 1-D array}}``; all columns of a table have
        the same length. Columns may be numeric, bool, str (``<U`` or object
        arrays of str/None) or hold one 1-D integer array per row (an object
        array or a list of int arrays; stored as Parquet ``list<int64>``).
        Table names use letters, digits, ``_``, ``-`` and ``.``.
    manifest : dict
        Usually from :func:`make_manifest`. Its ``schema_version``, if present,
        must equal :data:`SCHEMA_VERSION`; a ``"tables"`` entry is replaced by
        the description of ``tables`` (column names, dtypes, row count, file).
    csv : bool, default False
        Also write ``<table>.csv`` next to each Parquet file (per-row integer
        lists become space-separated integers; NaN is written ``nan``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValidationError
        If a table or column is malformed, or ``path`` holds something that is
        not a neurocert result.
    OptionalDependencyError
        If pyarrow (or pandas, with ``csv=True``) is not installed.
    """
    target = Path(path)
    if not isinstance(tables, Mapping):
        raise ValidationError(f"`tables` must be a dict of table name -> columns; got {type(tables).__name__}")
    if not isinstance(manifest, Mapping):
        raise ValidationError(f"`manifest` must be a dict; got {type(manifest).__name__}")
    version = manifest.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ValidationError(
            f"`manifest` has schema_version {version!r}; save_tables writes schema_version {SCHEMA_VERSION}"
        )
    if os.path.lexists(target):
        if not target.is_dir() or target.is_symlink():
            raise ValidationError(f"refusing to replace {str(target)!r}: it exists and is not a directory")
        if not (target / _MANIFEST).is_file() and any(target.iterdir()):
            raise ValidationError(
                f"refusing to replace {str(target)!r}: it is a non-empty directory that is not "
                "a neurocert results directory (no manifest.json)"
            )
    pq = require("pyarrow.parquet", "save_tables()")

    prepared: list[tuple[str, Any, dict[str, str], int, dict[str, np.ndarray]]] = []
    for name, columns in tables.items():
        _check_table_name(name)
        table, dtypes, n_rows = _to_arrow_table(columns, f"table {name!r}")
        cols = {c: _as_column(v, c) for c, v in columns.items()} if csv else {}
        prepared.append((name, table, dtypes, n_rows, cols))

    out = _jsonable(dict(manifest), "manifest")
    out["schema_version"] = SCHEMA_VERSION
    out["tables"] = {
        name: {
            "file": f"{name}.parquet",
            "csv": f"{name}.csv" if csv else None,
            "n_rows": n_rows,
            "columns": list(dtypes),
            "dtypes": dtypes,
        }
        for name, _table, dtypes, n_rows, _cols in prepared
    }
    text = json.dumps(out, indent=2, allow_nan=True, sort_keys=False) + "\n"

    with atomic_dir(target) as tmp:
        for name, table, dtypes, _n_rows, cols in prepared:
            pq.write_table(table, tmp / f"{name}.parquet")
            if csv:
                _write_csv(cols, dtypes, tmp / f"{name}.csv")
        # The manifest goes last: a directory without it never loads as a result.
        (tmp / _MANIFEST).write_text(text, encoding="utf-8")
    return target


def _interrupted_hint(target: Path) -> str:
    try:
        olds = sorted(target.parent.glob(f".{target.name}.*.old"))
    except OSError:  # pragma: no cover
        olds = []
    if olds:
        return f"; an interrupted save left the previous result at {str(olds[-1])!r}"
    return ""


def load_tables(
    path: str | os.PathLike[str],
    *,
    kind: str | None = None,
    required: Mapping[str, list[str]] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Load a results directory written by :func:`save_tables`.

    Parameters
    ----------
    path : str or os.PathLike
        Results directory.
    kind : str, optional
        Expected ``manifest["kind"]``; checked when given.
    required : dict of str to list of str, optional
        ``{table_name: [column, ...]}`` that must be present.

    Returns
    -------
    tables : dict of str to dict of str to numpy.ndarray
        Columns in file order. Numeric and bool columns keep their dtype
        (NaN and infinities included); str columns come back as ``<U`` arrays
        if they were saved so, else as object arrays of str (None for missing);
        per-row integer lists come back as object arrays of ``int64`` arrays.
    manifest : dict
        The stored manifest, including its ``"tables"`` description.

    Raises
    ------
    SchemaError
        With a one-line message if ``path`` is not a results directory, the
        manifest is unreadable, the schema version or kind differ, a required
        table or column is missing, or a Parquet file is missing, unreadable,
        truncated or disagrees with the manifest.
    """
    target = Path(path)
    mpath = target / _MANIFEST
    if not mpath.is_file():
        raise SchemaError(
            f"{str(target)!r} is not a neurocert results directory (no manifest.json)"
            + (_interrupted_hint(target) if not target.exists() else "")
        )
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SchemaError(f"{str(mpath)!r} is not valid JSON ({exc})") from exc
    if not isinstance(manifest, dict):
        raise SchemaError(f"{str(mpath)!r} does not hold a JSON object")
    version = manifest.get("schema_version")
    if type(version) is not int:
        raise SchemaError(f"{str(target)!r} has no integer schema_version in manifest.json (got {version!r})")
    if version != SCHEMA_VERSION:
        hint = "; upgrade neurocert to read it" if version > SCHEMA_VERSION else ""
        raise SchemaError(
            f"{str(target)!r} has schema_version {version}; this neurocert reads "
            f"schema_version {SCHEMA_VERSION}{hint}"
        )
    if kind is not None and manifest.get("kind") != kind:
        raise SchemaError(
            f"{str(target)!r} holds a {manifest.get('kind')!r} result, expected {kind!r}"
        )
    described = manifest.get("tables", {})
    if not isinstance(described, dict) or not all(isinstance(v, dict) for v in described.values()):
        raise SchemaError(f"{str(mpath)!r} has a malformed 'tables' entry")

    for tname, cols in (required or {}).items():
        if tname not in described:
            have = ", ".join(repr(t) for t in described) or "none"
            raise SchemaError(
                f"{str(target)!r} has no table {tname!r} (tables: {have})"
            )
        listed = described[tname].get("columns", [])
        missing = [c for c in cols if c not in listed]
        if missing:
            raise SchemaError(
                f"{str(target)!r}: table {tname!r} lacks required column(s) "
                + ", ".join(repr(c) for c in missing)
            )

    pa = require("pyarrow", "load_tables()")
    pq = require("pyarrow.parquet", "load_tables()")
    tables: dict[str, dict[str, np.ndarray]] = {}
    for tname, desc in described.items():
        fname = desc.get("file", f"{tname}.parquet")
        if not isinstance(fname, str) or Path(fname).name != fname:
            raise SchemaError(f"{str(mpath)!r}: table {tname!r} has a bad file name {fname!r}")
        fpath = target / fname
        if not fpath.is_file():
            raise SchemaError(f"{str(target)!r}: table {tname!r} is missing its file {fname!r}")
        try:
            table = pq.read_table(fpath)
        except (pa.ArrowException, OSError, ValueError) as exc:
            msg = " ".join(str(exc).split())
            raise SchemaError(
                f"{str(fpath)!r} is unreadable or truncated ({type(exc).__name__}: {msg})"
            ) from exc
        listed = desc.get("columns", table.column_names)
        if list(table.column_names) != list(listed):
            raise SchemaError(
                f"{str(fpath)!r} has columns {table.column_names} but manifest.json lists {listed}"
            )
        n_rows = desc.get("n_rows")
        if n_rows is not None and table.num_rows != n_rows:
            raise SchemaError(
                f"{str(fpath)!r} has {table.num_rows} rows but manifest.json says {n_rows}"
            )
        dtypes = desc.get("dtypes", {}) if isinstance(desc.get("dtypes"), dict) else {}
        tables[tname] = {
            c: _from_arrow_column(table.column(c), dtypes.get(c), pa) for c in table.column_names
        }
    return tables, manifest


# --------------------------------------------------------------------------- #
# Single tables and input files
# --------------------------------------------------------------------------- #

def write_table(
    path: str | os.PathLike[str],
    columns: Mapping[str, Any],
    *,
    format: str | None = None,
) -> Path:
    """Write one tidy table atomically as Parquet or CSV.

    Parameters
    ----------
    path : str or os.PathLike
        Destination file.
    columns : dict of str to 1-D array
        Equal-length columns (same rules as a table of :func:`save_tables`).
    format : {"parquet", "csv"}, optional
        Defaults to the extension of ``path`` (``.parquet``/``.pq`` or ``.csv``).

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValidationError
        If the format is unknown or cannot be inferred, or a column is malformed.
    OptionalDependencyError
        If pyarrow (Parquet) or pandas (CSV) is not installed.
    """
    target = Path(path)
    if format is None:
        suffix = target.suffix.lower()
        format = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(suffix)
        if format is None:
            raise ValidationError(
                f"cannot infer the table format of {str(target)!r} from its extension; "
                "use .parquet or .csv, or pass format='parquet'|'csv'"
            )
    if format not in ("parquet", "csv"):
        raise ValidationError(f"`format` must be 'parquet' or 'csv'; got {format!r}")
    table, dtypes, _n = _to_arrow_table(columns, "table")
    if format == "parquet":
        pq = require("pyarrow.parquet", "write_table(format='parquet')")
        with atomic_path(target) as tmp:
            pq.write_table(table, tmp)
    else:
        cols = {c: _as_column(v, c) for c, v in columns.items()}
        with atomic_path(target) as tmp:
            _write_csv(cols, dtypes, tmp)
    return target


def _existing_file(path: str | os.PathLike[str], what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise ValidationError(f"{what} file {str(p)!r} does not exist")
    if not p.is_file():
        raise ValidationError(f"{what} path {str(p)!r} is not a file")
    return p


def _float_or_nan(s: str) -> float:
    s = s.strip()
    return math.nan if s == "" else float(s)


def _is_float(s: str) -> bool:
    try:
        _float_or_nan(s)
    except ValueError:
        return False
    return True


def _read_csv_array(p: Path) -> np.ndarray:
    with p.open("r", encoding="utf-8-sig", newline="") as fh:
        first = ""
        for line in fh:
            if line.strip():
                first = line
                break
    if not first:
        raise ValidationError(f"CSV file {str(p)!r} is empty")
    fields = next(_csv.reader([first]))
    skip = 0 if all(_is_float(f) for f in fields) else 1
    kwargs: dict[str, Any] = {"delimiter": ",", "skiprows": skip, "ndmin": 2,
                              "dtype": np.float64, "encoding": "utf-8-sig"}
    try:
        return np.loadtxt(p, **kwargs)
    except ValueError:
        pass
    try:  # retry allowing empty cells (read as NaN)
        return np.loadtxt(p, converters=_float_or_nan, **kwargs)
    except ValueError as exc:
        raise ValidationError(
            f"CSV file {str(p)!r} is not a numeric table (a header row is allowed): {exc}"
        ) from exc


def _read_parquet_array(p: Path) -> np.ndarray:
    pa = require("pyarrow", "reading .parquet arrays")
    pq = require("pyarrow.parquet", "reading .parquet arrays")
    try:
        table = pq.read_table(p)
    except (pa.ArrowException, OSError, ValueError) as exc:
        msg = " ".join(str(exc).split())
        raise ValidationError(f"cannot read Parquet file {str(p)!r}: {msg}") from exc
    bad = [
        f"{name!r} ({field.type})"
        for name, field in zip(table.column_names, table.schema, strict=True)
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type)
                or pa.types.is_boolean(field.type))
    ]
    if bad:
        raise ValidationError(
            f"Parquet file {str(p)!r} has non-numeric column(s) {', '.join(bad)}; "
            "every column must be numeric to read it as an array"
        )
    if table.num_columns == 0:
        raise ValidationError(f"Parquet file {str(p)!r} has no columns")
    all_f32 = all(pa.types.is_float32(f.type) for f in table.schema)
    out = np.empty((table.num_rows, table.num_columns), dtype=np.float32 if all_f32 else np.float64)
    for j in range(table.num_columns):
        col = table.column(j).to_numpy()
        if col.dtype.kind == "O":  # booleans with nulls
            col = np.array([math.nan if v is None else float(v) for v in col], dtype=np.float64)
        out[:, j] = col
    return out


def read_array_file(path: str | os.PathLike[str], *, key: str | None = None) -> np.ndarray:
    """Read an array from ``.npy``, ``.npz``, ``.parquet`` or ``.csv``.

    Parameters
    ----------
    path : str or os.PathLike
        Input file; the format is chosen by extension (case-insensitive).
    key : str, optional
        Array name inside an ``.npz`` holding several arrays; only valid for
        ``.npz``.

    Returns
    -------
    numpy.ndarray
        ``.npy``: a read-only :class:`numpy.memmap` (``mmap_mode="r"``), any
        shape and dtype. ``.npz``: the selected array. ``.parquet``: a 2-D
        float array with one column per Parquet column, in file order
        (float32 when every column is float32, else float64; bools become
        0/1, integer nulls NaN). ``.csv``: a 2-D float64 array; a header row
        is skipped when present and empty cells become NaN.

    Raises
    ------
    ValidationError
        If the file is missing, the extension is unsupported (the message lists
        the supported ones), ``key`` is missing or unknown for a multi-array
        ``.npz`` (the message lists the keys), or a Parquet/CSV column is not
        numeric (the message names it).
    OptionalDependencyError
        For ``.parquet`` when pyarrow is not installed.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in _ARRAY_SUFFIXES:
        raise ValidationError(
            f"unsupported array file extension {p.suffix or '(none)'!r} for {str(p)!r}; "
            f"supported: {', '.join(_ARRAY_SUFFIXES)}"
        )
    p = _existing_file(p, "array")
    if key is not None and suffix != ".npz":
        raise ValidationError(f"`key` is only used for .npz files; {str(p)!r} is {suffix}")
    if suffix == ".npy":
        try:
            return np.load(p, mmap_mode="r", allow_pickle=False)
        except ValueError as exc:
            raise ValidationError(f"cannot read .npy file {str(p)!r}: {exc}") from exc
    if suffix == ".npz":
        try:
            with np.load(p, allow_pickle=False) as npz:
                keys = list(npz.files)
                if not keys:
                    raise ValidationError(f".npz file {str(p)!r} contains no arrays")
                if key is None:
                    if len(keys) > 1:
                        raise ValidationError(
                            f".npz file {str(p)!r} holds {len(keys)} arrays; pass key= one of {keys}"
                        )
                    key = keys[0]
                if key not in keys:
                    raise ValidationError(f".npz file {str(p)!r} has no array {key!r}; keys: {keys}")
                return npz[key]
        except ValidationError:
            raise
        except (ValueError, OSError) as exc:
            raise ValidationError(f"cannot read .npz file {str(p)!r}: {exc}") from exc
    if suffix == ".parquet":
        return _read_parquet_array(p)
    return _read_csv_array(p)


def read_names_file(path: str | os.PathLike[str]) -> list[str]:
    """Read names (of neurons or concepts), one per row.

    Parameters
    ----------
    path : str or os.PathLike
        ``.parquet``: exactly one column of str or integers (any column name).
        ``.csv``: exactly one column; the first row is a header and is
        skipped. Any other extension (``.txt``, ...): one name per line,
        surrounding whitespace stripped. Blank lines/rows are ignored.

    Returns
    -------
    list of str
        Names in file order (duplicates are kept; callers validate them).

    Raises
    ------
    ValidationError
        If the file is missing or a CSV/Parquet file has more than one column,
        non-string values or missing values.
    """
    p = _existing_file(path, "names")
    suffix = p.suffix.lower()
    if suffix == ".parquet":
        pa = require("pyarrow", "reading names from .parquet")
        pq = require("pyarrow.parquet", "reading names from .parquet")
        try:
            table = pq.read_table(p)
        except (pa.ArrowException, OSError, ValueError) as exc:
            msg = " ".join(str(exc).split())
            raise ValidationError(f"cannot read Parquet file {str(p)!r}: {msg}") from exc
        if table.num_columns != 1:
            raise ValidationError(
                f"names file {str(p)!r} must have exactly one column; it has "
                f"{table.num_columns}: {table.column_names}"
            )
        t = table.schema[0].type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)):
            raise ValidationError(
                f"names file {str(p)!r}: column {table.column_names[0]!r} has type {t}; expected strings"
            )
        values = table.column(0).to_pylist()
        if any(v is None for v in values):
            raise ValidationError(f"names file {str(p)!r} has missing (null) names")
        return [str(v) for v in values]
    with p.open("r", encoding="utf-8-sig", newline="") as fh:
        text = fh.read()
    if suffix == ".csv":
        rows = [r for r in _csv.reader(text.splitlines()) if any(f.strip() for f in r)]
        for i, r in enumerate(rows):
            if len(r) != 1:
                raise ValidationError(
                    f"names file {str(p)!r} must have one column; row {i + 1} has {len(r)} fields"
                )
        return [r[0].strip() for r in rows[1:]]
    return [line.strip() for line in text.splitlines() if line.strip()]
