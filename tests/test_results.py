"""Tests of neurocert.results: atomic writes, manifests, results directories, readers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from neurocert import results as R
from neurocert.exceptions import NeurocertError, SchemaError, ValidationError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #

def _manifest(kind: str = "identification", **params: object) -> dict:
    return R.make_manifest(kind, parameters=dict(params), seed=0)


def _sets() -> list[np.ndarray]:
    return [np.array([3, 1, 4]), np.array([], dtype=np.int64), np.array([7], dtype=np.int32),
            np.array([2**40, -5], dtype=np.int64)]


def _all_dtype_table() -> dict[str, np.ndarray]:
    return {
        "f64": np.array([1.5, np.nan, np.inf, -np.inf]),
        "f32": np.array([0.1, np.nan, -np.inf, 3.0], dtype=np.float32),
        "i64": np.array([0, -1, 2**62, -(2**62)], dtype=np.int64),
        "i32": np.array([1, 2, 3, -4], dtype=np.int32),
        "u8": np.array([0, 1, 255, 7], dtype=np.uint8),
        "b": np.array([True, False, False, True]),
        "s": np.array(["alpha", "", "ünïcode", "a,b \"q\""]),
        "o": np.array(["x", None, "z", "w"], dtype=object),
        "sets": _sets(),  # a plain Python list of int arrays
    }


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def _assert_table_equal(got: dict[str, np.ndarray], want: dict[str, object]) -> None:
    assert list(got) == list(want)
    for name, w in want.items():
        g = got[name]
        if name == "sets":
            assert g.dtype == object and len(g) == len(w)
            for gi, wi in zip(g, w, strict=True):
                assert isinstance(gi, np.ndarray) and gi.dtype == np.int64
                np.testing.assert_array_equal(gi, np.asarray(wi, dtype=np.int64))
            continue
        w = np.asarray(w)
        assert g.dtype == w.dtype, name
        if w.dtype.kind == "f":
            np.testing.assert_array_equal(g, w)  # treats NaN == NaN, checks inf signs
            assert np.array_equal(np.signbit(g), np.signbit(w))
        else:
            assert g.tolist() == w.tolist(), name


# --------------------------------------------------------------------------- #
# round trips
# --------------------------------------------------------------------------- #

def test_round_trip_every_dtype(tmp_path: Path) -> None:
    table = _all_dtype_table()
    other = {"neuron": np.arange(3), "score": np.array([0.5, np.nan, 1.0])}
    out = R.save_tables(tmp_path / "res", {"main": table, "other": other}, _manifest())
    assert out == tmp_path / "res"
    assert sorted(p.name for p in out.iterdir()) == ["main.parquet", "manifest.json", "other.parquet"]

    tables, manifest = R.load_tables(out, kind="identification",
                                     required={"main": ["f64", "sets"], "other": ["score"]})
    _assert_table_equal(tables["main"], table)
    _assert_table_equal(tables["other"], other)
    desc = manifest["tables"]["main"]
    assert desc["n_rows"] == 4
    assert desc["columns"] == list(table)
    assert desc["dtypes"] == {"f64": "float64", "f32": "float32", "i64": "int64", "i32": "int32",
                              "u8": "uint8", "b": "bool", "s": "str", "o": "object",
                              "sets": "list<int64>"}
    # the per-row lists are stored as a real Arrow list<int64> column
    schema = pq.read_schema(out / "main.parquet")
    assert schema.field("sets").type.value_type == pa.int64()
    assert pa.types.is_list(schema.field("sets").type)


def test_object_array_of_int_arrays_round_trips(tmp_path: Path) -> None:
    col = np.empty(3, dtype=object)
    col[0], col[1], col[2] = np.array([1, 2]), np.array([1, 2]), np.array([], dtype=np.int64)
    R.save_tables(tmp_path / "r", {"t": {"sets": col}}, _manifest())
    tables, _ = R.load_tables(tmp_path / "r")
    got = tables["t"]["sets"]
    assert got.dtype == object and got.shape == (3,)
    assert [g.tolist() for g in got] == [[1, 2], [1, 2], []]
    assert all(g.dtype == np.int64 for g in got)


def test_empty_table_and_no_tables(tmp_path: Path) -> None:
    R.save_tables(tmp_path / "e", {"t": {"x": np.zeros(0), "s": np.array([], dtype=str)}}, _manifest())
    tables, manifest = R.load_tables(tmp_path / "e")
    assert tables["t"]["x"].shape == (0,) and tables["t"]["x"].dtype == np.float64
    assert manifest["tables"]["t"]["n_rows"] == 0
    R.save_tables(tmp_path / "none", {}, _manifest())
    assert R.load_tables(tmp_path / "none")[0] == {}


@settings(max_examples=25, deadline=None)
@given(hnp.arrays(np.float64, st.integers(0, 30),
                  elements=st.floats(allow_nan=True, allow_infinity=True)))
def test_float_round_trip_property(tmp_path_factory: pytest.TempPathFactory, a: np.ndarray) -> None:
    d = tmp_path_factory.mktemp("prop") / "r"
    R.save_tables(d, {"t": {"a": a}}, _manifest())
    got = R.load_tables(d)[0]["t"]["a"]
    assert got.tobytes() == a.tobytes() or np.array_equal(got, a, equal_nan=True)


def test_csv_copy_written(tmp_path: Path) -> None:
    R.save_tables(tmp_path / "r", {"t": {"x": np.array([1.0, np.nan]), "sets": [np.array([1, 2]), np.array([3])],
                                         "o": np.array(["a", None], dtype=object)}},
                  _manifest(), csv=True)
    lines = (tmp_path / "r" / "t.csv").read_text().splitlines()
    assert lines == ["x,sets,o", "1.0,1 2,a", "nan,3,"]


def test_overwrite_replaces_previous_result(tmp_path: Path) -> None:
    d = tmp_path / "r"
    R.save_tables(d, {"t": {"x": np.arange(3)}}, _manifest(), csv=True)
    R.save_tables(d, {"u": {"y": np.arange(2)}}, _manifest())
    tables, _ = R.load_tables(d)
    assert list(tables) == ["u"]
    assert not (d / "t.parquet").exists() and not (d / "t.csv").exists()
    assert _leftovers(tmp_path) == []


def test_manifest_is_json_with_nan_and_numpy_values(tmp_path: Path) -> None:
    m = R.make_manifest(
        "identification",
        parameters={"alpha": np.float32(0.05), "thr": float("nan"), "hi": float("inf"),
                    "shape": (2, 3), "k": np.int64(4), "flag": np.bool_(True),
                    "grid": np.array([0.1, 0.2]), "path": Path("/x/y"), 3: "int key"},
        seed=np.int64(12),
        input_hashes={"activations": "ab" * 32},
        timings={"fit": 1.25},
        extra={"n_neurons": np.int32(5)},
    )
    for key in ("schema_version", "kind", "neurocert_version", "created", "python_version",
                "numpy_version", "scipy_version", "parameters", "seed", "input_hashes", "timings"):
        assert key in m
    assert m["schema_version"] == R.SCHEMA_VERSION == 1
    assert m["created"].endswith("+00:00")
    assert m["seed"] == 12 and type(m["seed"]) is int
    assert m["n_neurons"] == 5
    p = m["parameters"]
    assert p["shape"] == [2, 3] and p["k"] == 4 and type(p["k"]) is int and p["flag"] is True
    assert p["grid"] == [0.1, 0.2] and p["path"] == "/x/y" and p["3"] == "int key"
    assert np.isnan(p["thr"]) and p["hi"] == float("inf")  # not turned into None

    R.save_tables(tmp_path / "r", {}, m)
    raw = (tmp_path / "r" / "manifest.json").read_text()
    assert "NaN" in raw and "Infinity" in raw
    loaded = R.load_tables(tmp_path / "r")[1]
    assert np.isnan(loaded["parameters"]["thr"]) and loaded["parameters"]["hi"] == float("inf")
    assert loaded["input_hashes"] == {"activations": "ab" * 32}
    assert loaded["timings"] == {"fit": 1.25}


@pytest.mark.parametrize("kwargs, match", [
    ({"seed": True}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"extra": {"kind": "x"}}, "reserved"),
    ({"parameters": {"z": 1j}}, "complex"),
    ({"parameters": {"f": object()}}, "object"),
    ({"timings": {"fit": "slow"}}, "timings"),
])
def test_make_manifest_rejects_bad_input(kwargs: dict, match: str) -> None:
    base = {"parameters": {}, "seed": None}
    base.update(kwargs)
    with pytest.raises(ValidationError, match=match):
        R.make_manifest("identification", **base)


def test_neurocert_version_recorded() -> None:
    v = _manifest()["neurocert_version"]
    assert isinstance(v, str) and v


# --------------------------------------------------------------------------- #
# schema errors
# --------------------------------------------------------------------------- #

def test_schema_version_mismatch(tmp_path: Path) -> None:
    d = R.save_tables(tmp_path / "r", {"t": {"x": np.arange(2)}}, _manifest())
    m = json.loads((d / "manifest.json").read_text())
    m["schema_version"] = 7
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaError, match="has schema_version 7; this neurocert reads schema_version 1") as ei:
        R.load_tables(d)
    assert isinstance(ei.value, ValueError) and "\n" not in str(ei.value)

    m["schema_version"] = True  # bool is not a schema version even though True == 1
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SchemaError, match="schema_version"):
        R.load_tables(d)


def test_save_rejects_foreign_schema_version(tmp_path: Path) -> None:
    m = _manifest()
    m["schema_version"] = 2
    with pytest.raises(ValidationError, match="schema_version 2"):
        R.save_tables(tmp_path / "r", {}, m)
    assert not (tmp_path / "r").exists()


def test_kind_mismatch(tmp_path: Path) -> None:
    d = R.save_tables(tmp_path / "r", {}, _manifest("stability"))
    with pytest.raises(SchemaError, match="'stability' result, expected 'identification'"):
        R.load_tables(d, kind="identification")
    assert R.load_tables(d, kind="stability")[1]["kind"] == "stability"


def test_missing_required_column_and_table(tmp_path: Path) -> None:
    d = R.save_tables(tmp_path / "r", {"scores": {"neuron": np.arange(2), "iou": np.ones(2)}}, _manifest())
    with pytest.raises(SchemaError, match=r"table 'scores' lacks required column\(s\) 'lower', 'upper'"):
        R.load_tables(d, required={"scores": ["neuron", "lower", "upper"]})
    with pytest.raises(SchemaError, match=r"no table 'sets' \(tables: 'scores'\)"):
        R.load_tables(d, required={"sets": ["neuron"]})


def test_missing_column_in_parquet_not_matching_manifest(tmp_path: Path) -> None:
    d = R.save_tables(tmp_path / "r", {"t": {"a": np.arange(2), "b": np.arange(2)}}, _manifest())
    pq.write_table(pa.table({"a": np.arange(2)}), d / "t.parquet")
    with pytest.raises(SchemaError, match="manifest.json lists"):
        R.load_tables(d)


@pytest.mark.parametrize("make", ["absent", "empty_dir", "bad_json", "not_object"])
def test_not_a_results_directory(tmp_path: Path, make: str) -> None:
    d = tmp_path / "r"
    if make != "absent":
        d.mkdir()
    if make == "bad_json":
        (d / "manifest.json").write_text("{not json")
    if make == "not_object":
        (d / "manifest.json").write_text("[1, 2]")
    with pytest.raises(SchemaError) as ei:
        R.load_tables(d)
    msg = str(ei.value)
    assert "\n" not in msg
    if make in ("absent", "empty_dir"):
        assert "is not a neurocert results directory (no manifest.json)" in msg
    else:
        assert "manifest.json" in msg


@pytest.mark.parametrize("damage", ["truncate", "garbage", "delete"])
def test_damaged_parquet(tmp_path: Path, damage: str) -> None:
    d = R.save_tables(tmp_path / "r", {"t": {"x": np.arange(1000.0)}}, _manifest())
    f = d / "t.parquet"
    if damage == "truncate":
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    elif damage == "garbage":
        f.write_bytes(b"PAR1" + b"\x00" * 50)
    else:
        f.unlink()
    with pytest.raises(SchemaError, match="t.parquet") as ei:
        R.load_tables(d)
    assert "\n" not in str(ei.value)


# --------------------------------------------------------------------------- #
# validation on save
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("table, match", [
    ({"a": np.arange(3), "b": np.arange(4)}, "has 4 rows but column 'a' has 3"),
    ({"a": np.zeros((2, 2))}, "must be 1-D"),
    ({"a": np.array([1 + 2j])}, "dtype complex"),
    ({"a": np.array(["x", 1], dtype=object)}, "mixing types"),
    ({"a": [np.array([1.5]), np.array([1])]}, "row 0 must be a 1-D integer array"),
])
def test_save_rejects_bad_columns(tmp_path: Path, table: dict, match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        R.save_tables(tmp_path / "r", {"t": table}, _manifest())
    assert not (tmp_path / "r").exists()
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("name", ["manifest", "../evil", ".hidden", "a/b", ""])
def test_save_rejects_bad_table_names(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValidationError, match="table name"):
        R.save_tables(tmp_path / "r", {name: {"x": np.arange(2)}}, _manifest())


def test_save_refuses_to_replace_foreign_directory(tmp_path: Path) -> None:
    d = tmp_path / "mydata"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(ValidationError, match="not a neurocert results directory"):
        R.save_tables(d, {}, _manifest())
    assert (d / "precious.txt").read_text() == "keep me"
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValidationError, match="not a directory"):
        R.save_tables(f, {}, _manifest())
    assert f.read_text() == "x"
    empty = tmp_path / "empty"
    empty.mkdir()
    R.save_tables(empty, {}, _manifest())  # an empty directory may be filled
    assert (empty / "manifest.json").is_file()


# --------------------------------------------------------------------------- #
# atomicity
# --------------------------------------------------------------------------- #

def test_atomic_path_success_and_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), R.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target and tmp.suffix == ".bin"
        tmp.write_bytes(b"half-writ")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]

    with R.atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not visible before the block ends
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_requires_a_write(tmp_path: Path) -> None:
    with pytest.raises(NeurocertError, match="nothing was written"), R.atomic_path(tmp_path / "x"):
        pass
    assert not (tmp_path / "x").exists()


def test_atomic_write_bytes_creates_parents(tmp_path: Path) -> None:
    p = R.atomic_write_bytes(tmp_path / "a" / "b" / "f.txt", b"hello")
    assert p.read_bytes() == b"hello"
    R.atomic_write_bytes(p, b"bye")
    assert p.read_bytes() == b"bye"
    assert _leftovers(p.parent) == []


def test_atomic_dir_failure_keeps_old(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("old")
    with pytest.raises(KeyError), R.atomic_dir(d) as tmp:
        (tmp / "f").write_text("new")
        raise KeyError("crash")
    assert (d / "f").read_text() == "old"
    assert _leftovers(tmp_path) == []
    with R.atomic_dir(d) as tmp:
        (tmp / "g").write_text("new")
    assert sorted(p.name for p in d.iterdir()) == ["g"]
    assert _leftovers(tmp_path) == []


def test_atomic_dir_rename_failure_restores_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "f").write_text("old")
    real_rename = os.rename

    def flaky(src: object, dst: object) -> None:
        if Path(dst) == d and ".tmp" in Path(src).name:
            raise OSError("disk vanished")
        real_rename(src, dst)

    monkeypatch.setattr(R.os, "rename", flaky)
    with pytest.raises(OSError, match="disk vanished"), R.atomic_dir(d) as tmp:
        (tmp / "f").write_text("new")
    assert (d / "f").read_text() == "old"
    assert _leftovers(tmp_path) == []


def _partial_writer(monkeypatch: pytest.MonkeyPatch, fail_on: int) -> list[str]:
    """Make pq.write_table write half a file then crash on call number ``fail_on``."""
    real = pq.write_table
    calls: list[str] = []

    def writer(table: object, where: object, *args: object, **kwargs: object) -> None:
        calls.append(str(where))
        if len(calls) == fail_on:
            real(table, where, *args, **kwargs)
            data = Path(where).read_bytes()
            Path(where).write_bytes(data[: len(data) // 2])
            raise OSError("simulated crash mid-write")
        real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", writer)
    return calls


def test_crash_mid_save_first_time_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _partial_writer(monkeypatch, fail_on=2)
    d = tmp_path / "r"
    with pytest.raises(OSError, match="simulated crash"):
        R.save_tables(d, {"a": {"x": np.arange(10)}, "b": {"y": np.arange(10)}}, _manifest())
    assert len(calls) == 2
    assert not d.exists()
    assert _leftovers(tmp_path) == []
    with pytest.raises(SchemaError, match="no manifest.json"):
        R.load_tables(d)


def test_crash_mid_save_keeps_previous_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    d = tmp_path / "r"
    R.save_tables(d, {"a": {"x": np.arange(5.0)}}, _manifest(run=1))
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    _partial_writer(monkeypatch, fail_on=1)
    with pytest.raises(OSError, match="simulated crash"):
        R.save_tables(d, {"a": {"x": np.arange(99.0)}}, _manifest(run=2))
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    tables, manifest = R.load_tables(d)
    np.testing.assert_array_equal(tables["a"]["x"], np.arange(5.0))
    assert manifest["parameters"] == {"run": 1}
    assert _leftovers(tmp_path) == []


def test_crash_before_manifest_is_not_a_valid_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Even if the temporary directory survived a hard crash, it has no manifest
    # until every table is written, so it never loads as a result.
    seen: dict[str, list[str]] = {}
    real = pq.write_table

    def writer(table: object, where: object, *args: object, **kwargs: object) -> None:
        real(table, where, *args, **kwargs)
        seen["files"] = sorted(p.name for p in Path(where).parent.iterdir())
        with pytest.raises(SchemaError, match="no manifest.json"):
            R.load_tables(Path(where).parent)

    monkeypatch.setattr(pq, "write_table", writer)
    R.save_tables(tmp_path / "r", {"a": {"x": np.arange(3)}}, _manifest())
    assert seen["files"] == ["a.parquet"]


def test_write_table_crash_keeps_previous_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "t.parquet"
    R.write_table(f, {"a": np.arange(3.0)})
    before = f.read_bytes()
    _partial_writer(monkeypatch, fail_on=1)
    with pytest.raises(OSError, match="simulated crash"):
        R.write_table(f, {"a": np.arange(50.0)})
    assert f.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


# --------------------------------------------------------------------------- #
# hashes
# --------------------------------------------------------------------------- #

def test_file_sha256(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert R.file_sha256(f) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    with pytest.raises(ValidationError, match="no such file"):
        R.file_sha256(tmp_path / "missing")


def test_array_sha256() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    h = R.array_sha256(a)
    assert len(h) == 64 and h == R.array_sha256(a.copy())
    assert R.array_sha256(np.asfortranarray(a)) == h  # layout does not matter
    assert R.array_sha256(a.astype(">f8")) == h  # byte order does not matter
    assert R.array_sha256(a.T.copy().T) == h
    assert R.array_sha256(a.reshape(4, 3)) != h  # shape does
    assert R.array_sha256(a.astype(np.float32)) != h  # dtype does
    b = a.copy()
    b[2, 3] = np.nextafter(b[2, 3], np.inf)
    assert R.array_sha256(b) != h  # content does
    assert R.array_sha256(a[:, ::2]) == R.array_sha256(np.ascontiguousarray(a[:, ::2]))
    with pytest.raises(ValidationError, match="object"):
        R.array_sha256(np.array([None, 1], dtype=object))


def test_array_sha256_memmap(tmp_path: Path) -> None:
    a = np.random.default_rng(0).random((50, 7))
    np.save(tmp_path / "a.npy", a)
    assert R.array_sha256(np.load(tmp_path / "a.npy", mmap_mode="r")) == R.array_sha256(a)


# --------------------------------------------------------------------------- #
# readers and write_table
# --------------------------------------------------------------------------- #

def test_read_npy_is_memmap(tmp_path: Path) -> None:
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    np.save(tmp_path / "a.npy", a)
    got = R.read_array_file(tmp_path / "a.npy")
    assert isinstance(got, np.memmap)
    assert got.dtype == np.float32 and not got.flags.writeable
    np.testing.assert_array_equal(got, a)
    with pytest.raises(ValidationError, match="only used for .npz"):
        R.read_array_file(tmp_path / "a.npy", key="x")


def test_read_npz(tmp_path: Path) -> None:
    a, b = np.arange(6.0).reshape(2, 3), np.ones((3, 1))
    np.savez(tmp_path / "one.npz", only=a)
    np.testing.assert_array_equal(R.read_array_file(tmp_path / "one.npz"), a)
    np.savez(tmp_path / "two.npz", acts=a, other=b)
    with pytest.raises(ValidationError, match=r"holds 2 arrays; pass key= one of \['acts', 'other'\]"):
        R.read_array_file(tmp_path / "two.npz")
    np.testing.assert_array_equal(R.read_array_file(tmp_path / "two.npz", key="other"), b)
    with pytest.raises(ValidationError, match=r"no array 'nope'; keys: \['acts', 'other'\]"):
        R.read_array_file(tmp_path / "two.npz", key="nope")


def test_read_parquet_array(tmp_path: Path) -> None:
    f = tmp_path / "a.parquet"
    R.write_table(f, {"z": np.array([1.0, np.nan]), "a": np.array([3, 4]), "m": np.array([True, False])})
    got = R.read_array_file(f)
    assert got.dtype == np.float64 and got.shape == (2, 3)
    np.testing.assert_array_equal(got, np.array([[1.0, 3, 1], [np.nan, 4, 0]]))  # file column order
    R.write_table(f, {"x": np.ones(2, dtype=np.float32)})
    assert R.read_array_file(f).dtype == np.float32
    R.write_table(f, {"x": np.ones(2), "label": np.array(["a", "b"])})
    with pytest.raises(ValidationError, match="non-numeric column.*'label'"):
        R.read_array_file(f)


def test_read_csv_array(tmp_path: Path) -> None:
    f = tmp_path / "a.csv"
    f.write_text("n1,n2\n1,2.5\n3,-inf\n")
    np.testing.assert_array_equal(R.read_array_file(f), np.array([[1, 2.5], [3, -np.inf]]))
    f.write_text("1,2\n3,4\n")  # no header: first row is data
    np.testing.assert_array_equal(R.read_array_file(f), np.array([[1.0, 2], [3, 4]]))
    f.write_text("x\n1\n2\n")  # single column stays 2-D
    assert R.read_array_file(f).shape == (2, 1)
    f.write_text("a,b\n1,\n,4\n")  # empty cells are NaN
    np.testing.assert_array_equal(R.read_array_file(f), np.array([[1, np.nan], [np.nan, 4]]))
    f.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(ValidationError, match="not a numeric table.*oops"):
        R.read_array_file(f)


def test_write_table_csv_round_trip(tmp_path: Path) -> None:
    cols = {"a": np.array([0.1, np.nan, np.inf, 1e-300]), "b": np.array([1, 2, 3, 4])}
    R.write_table(tmp_path / "t.csv", cols)
    got = R.read_array_file(tmp_path / "t.csv")
    np.testing.assert_array_equal(got, np.column_stack([cols["a"], cols["b"]]))
    R.write_table(tmp_path / "t.dat", cols, format="csv")
    assert (tmp_path / "t.dat").read_text().splitlines()[0] == "a,b"
    with pytest.raises(ValidationError, match="cannot infer the table format"):
        R.write_table(tmp_path / "t.xlsx", cols)
    with pytest.raises(ValidationError, match="'parquet' or 'csv'"):
        R.write_table(tmp_path / "t.csv", cols, format="xlsx")


def test_read_array_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"does not exist"):
        R.read_array_file(tmp_path / "nope.npy")
    (tmp_path / "a.h5").write_bytes(b"")
    with pytest.raises(ValidationError, match=r"supported: \.npy, \.npz, \.parquet, \.csv"):
        R.read_array_file(tmp_path / "a.h5")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(ValidationError, match="cannot read Parquet"):
        R.read_array_file(tmp_path / "bad.parquet")


def test_read_names_file(tmp_path: Path) -> None:
    t = tmp_path / "names.txt"
    t.write_text("dog\n\n  cat \r\nhot dog\n\n")
    assert R.read_names_file(t) == ["dog", "cat", "hot dog"]
    c = tmp_path / "names.csv"
    c.write_text("concept\ndog\n\"a, b\"\n\n")
    assert R.read_names_file(c) == ["dog", "a, b"]
    c.write_text("a,b\n1,2\n")
    with pytest.raises(ValidationError, match="one column"):
        R.read_names_file(c)
    p = tmp_path / "names.parquet"
    R.write_table(p, {"name": np.array(["x", "y"])})
    assert R.read_names_file(p) == ["x", "y"]
    R.write_table(p, {"name": np.array(["x", "y"]), "k": np.arange(2)})
    with pytest.raises(ValidationError, match="exactly one column"):
        R.read_names_file(p)
    R.write_table(p, {"v": np.array([0.5, 1.5])})
    with pytest.raises(ValidationError, match="expected strings"):
        R.read_names_file(p)
    with pytest.raises(ValidationError, match="does not exist"):
        R.read_names_file(tmp_path / "missing.txt")


def test_import_does_not_load_optional_dependencies() -> None:
    code = ("import sys, neurocert.results; "
            "bad = [m for m in ('pandas', 'pyarrow') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
