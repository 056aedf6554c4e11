"""IDX reader and the Fashion-MNIST loader."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
from conftest import require_asset

from neurocert.data.idx import (
    FASHION_MNIST_CLASSES,
    fashion_mnist_available,
    load_fashion_mnist,
    read_idx,
)
from neurocert.exceptions import ValidationError

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(arr: np.ndarray, code: int | None = None) -> bytes:
    """The IDX encoding, written from the format description (big-endian)."""
    code = CODES[arr.dtype.type] if code is None else code
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", s) for s in arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path, arr, *, gz=None):
    data = idx_bytes(arr)
    if gz if gz is not None else str(path).endswith(".gz"):
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("dtype", list(CODES))
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip_every_dtype(tmp_path, dtype, suffix):
    rng = np.random.default_rng(0)
    arr = (rng.normal(size=(3, 4, 5)) * 50).astype(dtype)
    got = read_idx(write_idx(tmp_path / f"x-idx3{suffix}", arr))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)


def test_one_dimensional_labels(tmp_path):
    lab = np.array([9, 0, 3], np.uint8)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "l-idx1", lab)), lab)


def test_bad_magic(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValidationError, match="magic number 00010801"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValidationError, match="magic number"):
        read_idx(p)


def test_truncated_files(tmp_path):
    full = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    p = tmp_path / "t"
    p.write_bytes(full[:3])
    with pytest.raises(ValidationError, match="truncated: 3 bytes"):
        read_idx(p)
    p.write_bytes(full[:10])
    with pytest.raises(ValidationError, match="truncated inside its header"):
        read_idx(p)
    p.write_bytes(full[:-1])
    with pytest.raises(ValidationError, match="truncated: shape \\(2, 3, 3\\) of uint8 needs 18 data bytes, found 17"):
        read_idx(p)
    p.write_bytes(full + b"\x00")
    with pytest.raises(ValidationError, match="longer than its header"):
        read_idx(p)
    g = tmp_path / "t.gz"
    g.write_bytes(gzip.compress(full)[:-12])  # cut inside the gzip stream
    with pytest.raises(ValidationError, match="cannot be read"):
        read_idx(g)
    g.write_bytes(full)  # not gzip at all
    with pytest.raises(ValidationError, match="cannot be read"):
        read_idx(g)
    with pytest.raises(ValidationError, match="does not exist"):
        read_idx(tmp_path / "nope")


def write_fashion(root, n_per_class=2, split="t10k", seed=0):
    """A tiny Fashion-MNIST look-alike: each item a bright rectangle of random size."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10, dtype=np.uint8), n_per_class)
    images = np.zeros((labels.size, 28, 28), np.uint8)
    for i in range(labels.size):
        h, w = rng.integers(10, 25, 2)
        y, x = (28 - h) // 2, (28 - w) // 2
        images[i, y:y + h, x:x + w] = 255
    root.mkdir(parents=True, exist_ok=True)
    write_idx(root / f"{split}-images-idx3-ubyte.gz", images)
    write_idx(root / f"{split}-labels-idx1-ubyte.gz", labels)
    return images, labels


def test_fashion_loader_from_folder(tmp_path):
    images, labels = write_fashion(tmp_path)
    fm = load_fashion_mnist("test", root=tmp_path)
    np.testing.assert_array_equal(fm.images, images)
    np.testing.assert_array_equal(fm.labels, labels)
    assert fm.classes == FASHION_MNIST_CLASSES
    assert not fashion_mnist_available(tmp_path)  # no train split
    with pytest.raises(ValidationError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(ValidationError, match="`split`"):
        load_fashion_mnist("val", root=tmp_path)


def test_fashion_loader_rejects_mismatch(tmp_path):
    write_fashion(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(3, np.uint8))
    with pytest.raises(ValidationError, match="20 images but 3 labels"):
        load_fashion_mnist(root=tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.full(20, 10, np.uint8))
    with pytest.raises(ValidationError, match="label 10"):
        load_fashion_mnist(root=tmp_path)


def test_debian_fashion_mnist():
    require_asset(fashion_mnist_available(), "Debian package dataset-fashion-mnist")
    test = load_fashion_mnist("test")
    assert test.images.shape == (10000, 28, 28) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(test.labels), np.full(10, 1000))
    train = load_fashion_mnist("train")
    assert train.images.shape == (60000, 28, 28)
    np.testing.assert_array_equal(np.bincount(train.labels), np.full(10, 6000))
    # the items are bright on a dark background
    assert test.images[:, 0, 0].mean() < 5 and test.images[:, 14, 14].mean() > 60
