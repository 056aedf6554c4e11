"""IDX files (the MNIST / Fashion-MNIST format) and the Debian Fashion-MNIST set.

An IDX file is a big-endian header followed by a dense array::

    magic   4 bytes: 0x00 0x00 <dtype code> <ndim>
    shape   ndim big-endian uint32
    data    prod(shape) items of the dtype, big-endian, row-major

The dtype codes are 0x08 ``uint8``, 0x09 ``int8``, 0x0B ``int16``,
0x0C ``int32``, 0x0D ``float32`` and 0x0E ``float64``. Files ending in ``.gz``
are decompressed transparently.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..exceptions import ValidationError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "FashionMNIST",
    "fashion_mnist_available",
    "load_fashion_mnist",
    "read_idx",
]

_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

#: Where Debian's ``dataset-fashion-mnist`` package installs the files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The ten Fashion-MNIST class names, in label order.
FASHION_MNIST_CLASSES = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)


def _read_bytes(path: Path) -> bytes:
    if not path.is_file():
        raise ValidationError(f"IDX file {str(path)!r} does not exist")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise ValidationError(f"IDX file {str(path)!r} cannot be read: {exc}") from exc


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a native-endian array.

    Parameters
    ----------
    path : str or os.PathLike
        The file; a name ending in ``.gz`` is gunzipped.

    Returns
    -------
    ndarray
        Shape from the header; ``uint8`` for image and label files.

    Raises
    ------
    ValidationError
        If the file is missing, is not gzip data although named ``.gz``, has a
        bad magic number (the first two bytes must be zero, the third a known
        dtype code), or is shorter or longer than its header announces.

    Examples
    --------
    >>> x = read_idx("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
    >>> x.shape
    (10000, 28, 28)
    """
    p = Path(path)
    raw = _read_bytes(p)
    if len(raw) < 4:
        raise ValidationError(f"IDX file {str(p)!r} is truncated: {len(raw)} bytes, no 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise ValidationError(
            f"IDX file {str(p)!r} has magic number {raw[:4].hex()}; expected 0000<dtype><ndim> with "
            f"dtype in {{{', '.join(f'{k:02x}' for k in _DTYPES)}}} (is it an IDX file?)")
    dtype, ndim = _DTYPES[raw[2]], raw[3]
    head = 4 + 4 * ndim
    if len(raw) < head:
        raise ValidationError(
            f"IDX file {str(p)!r} is truncated inside its header: {len(raw)} bytes, "
            f"the {ndim}-dimensional header needs {head}")
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    have = len(raw) - head
    if have != need:
        what = "truncated" if have < need else "longer than its header says"
        raise ValidationError(
            f"IDX file {str(p)!r} is {what}: shape {shape} of {dtype.name} needs {need} data bytes, "
            f"found {have}")
    arr = np.frombuffer(raw, dtype, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="), copy=True)


@dataclass(frozen=True, eq=False)
class FashionMNIST:
    """Fashion-MNIST images and labels.

    Attributes
    ----------
    images : ndarray
        ``uint8`` ``(n, 28, 28)``, white item on black.
    labels : ndarray
        ``uint8`` ``(n,)``, class indices into :attr:`classes`.
    classes : tuple of str
        The ten class names.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...] = FASHION_MNIST_CLASSES

    def __repr__(self) -> str:
        return f"FashionMNIST(n={len(self.labels)}, classes={len(self.classes)})"


def _fashion_files(root: Path, split: str) -> tuple[Path, Path]:
    prefix = {"train": "train", "test": "t10k"}[split]
    return (root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz")


def fashion_mnist_available(root: str | os.PathLike[str] | None = None) -> bool:
    """Whether the Fashion-MNIST files for both splits are under ``root``."""
    r = FASHION_MNIST_DIR if root is None else Path(root)
    return all(p.is_file() for s in ("train", "test") for p in _fashion_files(r, s))


def load_fashion_mnist(split: str = "test", *, root: str | os.PathLike[str] | None = None) -> FashionMNIST:
    """Load Fashion-MNIST from the Debian package's files.

    Parameters
    ----------
    split : {"test", "train"}
        ``"test"`` (10,000 images, 1,000 per class) or ``"train"`` (60,000).
    root : str or os.PathLike, optional
        Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``;
        default :data:`FASHION_MNIST_DIR`.

    Returns
    -------
    FashionMNIST

    Raises
    ------
    ValidationError
        If the files are missing (the message names the Debian package
        ``dataset-fashion-mnist``), malformed, or images and labels disagree.
    """
    if split not in ("train", "test"):
        raise ValidationError(f"`split` must be 'train' or 'test'; got {split!r}")
    r = FASHION_MNIST_DIR if root is None else Path(root)
    img_path, lab_path = _fashion_files(r, split)
    missing = [str(p) for p in (img_path, lab_path) if not p.is_file()]
    if missing:
        raise ValidationError(
            f"Fashion-MNIST files not found: {', '.join(missing)}. Install the Debian package "
            "dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or pass `root=` to a "
            "folder with the IDX files")
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3 or labels.ndim != 1 or images.dtype != np.uint8 or labels.dtype != np.uint8:
        raise ValidationError(
            f"Fashion-MNIST: expected uint8 images (n, 28, 28) and labels (n,); got {images.dtype} "
            f"{images.shape} and {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValidationError(
            f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels")
    if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
        raise ValidationError(f"Fashion-MNIST {split}: label {int(labels.max())} is not in [0, 10)")
    return FashionMNIST(images=images, labels=labels)
