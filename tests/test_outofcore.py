"""Out-of-core storage and the serial neuron-block driver (neurocert.storage, .distributed).

Every block-driver result is compared with the in-memory public function on the
whole array; storage round trips are compared with the source arrays.
"""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp

import neurocert
from neurocert import distributed, storage
from neurocert._compare import results_equal
from neurocert.exceptions import ValidationError

zarr = pytest.importorskip("zarr")


def _layer(n=1500, n_neurons=70, n_concepts=9, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.random((n, n_concepts)) < rng.uniform(0.05, 0.3, n_concepts)).astype(np.float32)
    target = rng.integers(0, n_concepts, n_neurons)
    a = (z[:, target] * rng.uniform(0.5, 2.0, n_neurons)
         + rng.normal(size=(n, n_neurons))).astype(np.float32)
    a[:, 3] = np.round(a[:, 3])  # ties
    return a, z


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    a, z = _layer()
    root = tmp_path_factory.mktemp("store")
    np.save(root / "a.npy", a)
    np.save(root / "z.npy", z)
    storage.convert(root / "a.npy", root / "a.zarr", chunks=(400, 16))
    storage.convert(root / "z.npy", root / "z.zarr")
    return a, z, root


# --------------------------------------------------------------------------- storage


def test_convert_npy_npz_parquet_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1003, 7))
    np.save(tmp_path / "x.npy", x)
    np.savez_compressed(tmp_path / "x.npz", acts=x, other=x[:, :2])
    z1 = storage.convert(tmp_path / "x.npy", tmp_path / "a.zarr", sample_chunk=100)
    z2 = storage.convert(tmp_path / "x.npz", tmp_path / "b.zarr", key="acts", dtype=np.float32,
                         chunks=(64, 3), sample_chunk=77)
    assert np.array_equal(z1[:], x) and z1.dtype == np.float64
    assert np.array_equal(z2[:], x.astype(np.float32)) and tuple(z2.chunks) == (64, 3)
    with pytest.raises(ValidationError, match="holds 2 arrays"):
        storage.convert(tmp_path / "x.npz", tmp_path / "c.zarr")
    with pytest.raises(ValidationError, match="already exists"):
        storage.convert(tmp_path / "x.npy", tmp_path / "a.zarr")
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    pd.DataFrame(x.astype(np.float32), columns=[f"n{i}" for i in range(7)]).to_parquet(
        tmp_path / "x.parquet", row_group_size=300)
    z3 = storage.convert(tmp_path / "x.parquet", tmp_path / "p.zarr", sample_chunk=128)
    assert np.array_equal(z3[:], x.astype(np.float32))
    assert z3.attrs["columns"] == [f"n{i}" for i in range(7)]


def test_write_array_is_atomic(tmp_path):
    """A failed write leaves the path as it was: no half-written store, the old array intact."""
    path = tmp_path / "a.zarr"
    old = np.arange(12, dtype=np.float32).reshape(6, 2)
    storage.write_array(path, iter([old]), old.shape, np.float32)

    def failing():
        yield np.zeros((3, 2))
        raise RuntimeError("source broke")

    with pytest.raises(RuntimeError, match="source broke"):
        storage.write_array(path, failing(), (6, 2), np.float32, overwrite=True)
    with pytest.raises(ValidationError, match="wrote 3 rows"):
        storage.write_array(path, iter([np.zeros((3, 2))]), (6, 2), np.float32, overwrite=True)
    np.testing.assert_array_equal(storage.read_columns(storage.open_array(path), 0, 2), old)
    with pytest.raises(RuntimeError):
        storage.write_array(tmp_path / "new.zarr", failing(), (6, 2), np.float32)
    assert not (tmp_path / "new.zarr").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zarr"]  # no temporary left
    new = storage.write_array(path, iter([old + 1]), old.shape, np.float32, overwrite=True)
    np.testing.assert_array_equal(new[:], old + 1)


def test_read_columns_and_open(layer):
    a, _, root = layer
    for src in (root / "a.zarr", root / "a.npy"):
        arr = storage.open_array(src)
        assert np.array_equal(storage.read_columns(arr, 5, 37, sample_chunk=333), a[:, 5:37])
    with pytest.raises(ValidationError, match="neither a Zarr array"):
        storage.open_array(root)
    with pytest.raises(ValidationError, match="does not exist"):
        storage.open_array(root / "missing.npy")


def test_cli_convert(tmp_path, capsys):
    from neurocert import cli

    x = np.arange(40, dtype=np.float64).reshape(10, 4)
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["convert", str(tmp_path / "x.npy"), str(tmp_path / "x.zarr"),
                     "--dtype", "float32", "--chunks", "3,2"]) == 0
    assert "wrote 10 x 4 float32" in capsys.readouterr().out
    z = storage.open_array(tmp_path / "x.zarr")
    assert np.array_equal(z[:], x.astype(np.float32)) and tuple(z.chunks) == (3, 2)
    assert cli.main(["convert", str(tmp_path / "x.npy"), str(tmp_path / "x.zarr")]) == 1
    assert "already exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- block driver

EXACT = [m for m in neurocert.available_metrics()
         if neurocert.get_metric(m).statistics != "moment"]
MOMENT = [m for m in neurocert.available_metrics()
          if neurocert.get_metric(m).statistics == "moment"]


def _binarization(metric):
    return {"top_frac": 0.05} if neurocert.get_metric(metric).binarized_neuron else {}


@pytest.mark.parametrize("metric", EXACT)
def test_similarity_blocks_equal_in_memory(layer, metric):
    a, z, root = layer
    kw = _binarization(metric)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = neurocert.similarity(a, z, metric=metric, **kw)
        for src, nb in ((root / "a.zarr", 16), (str(root / "a.npy"), 23), (a, 70)):
            got = distributed.similarity(src, root / "z.zarr", metric=metric,
                                         neuron_block=nb, **kw)
            assert np.array_equal(got, ref, equal_nan=True), (metric, src, nb)


@pytest.mark.parametrize("metric", MOMENT)
def test_moment_metrics_independent_of_blocks(layer, metric):
    a, z, root = layer
    ref = neurocert.similarity(a, z, metric=metric)
    b64 = distributed.similarity(root / "a.zarr", z, metric=metric, neuron_block=64)
    b128 = distributed.similarity(a, z, metric=metric, neuron_block=128)
    assert np.array_equal(b64, b128)  # canonical 64-neuron sub-blocks
    np.testing.assert_allclose(b64, ref, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValidationError, match="multiple of 64"):
        distributed.similarity(a, z, metric=metric, neuron_block=10)


@pytest.mark.parametrize("metric,kw", [("iou", {"top_frac": 0.05}),
                                       ("f1", {"threshold": 1.0}),
                                       ("auroc", {})])
def test_identify_blocks_equal_in_memory(layer, metric, kw):
    a, z, root = layer
    names = [f"c{i}" for i in range(z.shape[1])]
    ref = neurocert.identify(a, z, metric=metric, concept_names=names, top_k=3, **kw)
    got = distributed.identify(root / "a.zarr", z, metric=metric, concept_names=names,
                               top_k=3, neuron_block=16, **kw)
    assert results_equal(ref, got)
    assert got.neuron_names == [str(i) for i in range(a.shape[1])]
    level = 0.5 if metric == "auroc" else 0.05
    assert np.array_equal(ref.p_values(level), got.p_values(level))
    for mult in ("fwer", "fdr"):
        assert np.array_equal(ref.summary(level, multiplicity=mult).certified,
                              got.summary(level, multiplicity=mult).certified)


@pytest.mark.parametrize("metric,kw", [
    ("iou", {"top_frac": 0.05}),
    ("auroc", {"mode": "both", "n_folds": 39}),
    ("precision", {"threshold": 1.0, "groups": np.arange(1500) // 3}),
    ("f1", {"threshold": 1.0, "sample_weight": np.tile([1.0, 2.0, 0.5], 500),
            "prune": False}),
])
def test_bootstrap_blocks_equal_in_memory(layer, metric, kw):
    a, z, _ = layer
    a = a[:, :40]
    ref = neurocert.bootstrap_explain(a, z, metric=metric, n_boot=30, rng=5, **kw)
    got = distributed.bootstrap_explain(a, z, metric=metric, n_boot=30, rng=5,
                                        neuron_block=7, batch_size=11, **kw)
    assert results_equal(ref, got)
    assert got.winners.shape == (30, 40)


def test_bootstrap_rng_none_draws_one_seed(layer):
    a, z, _ = layer
    got = distributed.bootstrap_explain(a[:, :12], z, metric="iou", top_frac=0.05, n_boot=10,
                                        neuron_block=4)
    seed = int(got.parameters["seed_entropy"])
    ref = neurocert.bootstrap_explain(a[:, :12], z, metric="iou", top_frac=0.05, n_boot=10,
                                      rng=np.random.SeedSequence(seed))
    assert results_equal(ref, got)


def test_validation_errors_name_the_problem(layer):
    a, z, _ = layer
    with pytest.raises(ValidationError, match="999 samples"):
        distributed.similarity(a, z[:999], metric="auroc")
    with pytest.raises(ValidationError, match="neuron_block"):
        distributed.similarity(a, z, metric="auroc", neuron_block=0)
    bad = a.copy()
    bad[7, 50] = np.nan
    with pytest.raises(ValidationError, match="in neurons 48:64"):
        distributed.similarity(bad, z, metric="auroc", neuron_block=16)
    with pytest.raises(ValidationError, match="client"):
        distributed.similarity(a, z, metric="auroc", client=3)


def test_warnings_once_for_the_whole_layer(layer):
    a, z, _ = layer
    z2 = np.column_stack([z, np.zeros(len(z))])  # a concept that never occurs
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        distributed.similarity(a, z2, metric="auroc", neuron_block=8)
    undefined = [w for w in rec if issubclass(w.category, neurocert.UndefinedSimilarityWarning)]
    assert len(undefined) == 1 and f"{a.shape[1]} of {a.shape[1] * 10}" in str(undefined[0].message)


def test_sparse_concepts(layer):
    a, z, _ = layer
    ref = neurocert.similarity(a, z, metric="iou", top_frac=0.1)
    got = distributed.similarity(a, sp.csr_matrix(z), metric="iou", top_frac=0.1,
                                 neuron_block=9)
    assert np.array_equal(ref, got, equal_nan=True)


def _row_sums(chunk, s0, s1):
    return chunk.astype(np.float64).sum(axis=0)


def _block_means(block, j0, j1, scale):
    return block.mean(axis=0) * scale + j0 * 0


def test_reduce_samples_fold_in_chunk_order(layer):
    a, _, root = layer
    got = distributed.reduce_samples(_row_sums, root / "a.zarr", sample_chunk=128)
    ref = np.zeros(a.shape[1])
    for s0 in range(0, a.shape[0], 128):  # left fold in chunk order, written out
        ref = ref + a[s0:s0 + 128].astype(np.float64).sum(axis=0)
    assert np.array_equal(got, ref)
    assert np.array_equal(distributed.reduce_samples(_row_sums, a, sample_chunk=128), ref)


def test_map_neuron_blocks(layer):
    a, _, root = layer
    got = distributed.map_neuron_blocks(_block_means, root / "a.zarr", 2.0, neuron_block=16)
    want = np.concatenate([np.ascontiguousarray(a[:, j:j + 16]).mean(axis=0) * 2.0
                           for j in range(0, 70, 16)])
    assert np.array_equal(got, want)
    with pytest.raises(ValidationError, match="must return 16 rows"):
        distributed.map_neuron_blocks(lambda b, j0, j1: b[:, :1].T[:, :0].T[:0], a,
                                      neuron_block=16)


# --------------------------------------------------------------------------- memory limit


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_DATA and /proc")
def test_bounded_memory_under_rlimit_data(tmp_path):
    """The block driver finishes under RLIMIT_DATA with activations 3x the headroom.

    The limit is the interpreter's data size after its imports (measured in a probe
    child) plus 48 MiB; the activations (n x 1,024 float32) are more than 3x the
    headroom. Rows of the first neurons must equal the in-memory run.
    """
    from neurocert.distributed._limits import run_with_data_limit

    storage.write_array(tmp_path / "tiny.zarr", iter([np.ones((4, 2))]), (4, 2), np.float64)
    probe_code = (  # the interpreter, the imports and zarr's codec threads, as in the child
        "import json, sys, zarr, numpy as np, neurocert.distributed, neurocert.distributed._oocrun;"
        "zarr.config.set({'threading.max_workers': 1});"
        "np.asarray(zarr.open_array(sys.argv[1])[:]);"
        "from neurocert.distributed._limits import memory_status;"
        "print(json.dumps(memory_status()))")
    probe = run_with_data_limit(["-c", probe_code, str(tmp_path / "tiny.zarr")], 2**34)
    assert probe.returncode == 0, probe.stderr
    base = json.loads(probe.stdout)["VmData"]
    headroom = 48 * 2**20
    n, k, c = 40_000, 1024, 8
    assert n * k * 4 >= 3 * headroom
    rng = np.random.default_rng(3)
    z = (rng.random((n, c)) < 0.1).astype(np.float32)

    def rows():
        g = np.random.default_rng(4)
        for s0 in range(0, n, 4096):
            s1 = min(n, s0 + 4096)
            yield g.standard_normal((s1 - s0, k), dtype=np.float32) + z[s0:s1, :1]

    storage.write_array(tmp_path / "a.zarr", rows(), (n, k), np.float32)
    storage.write_array(tmp_path / "z.zarr", iter([z]), z.shape, np.float32)
    out = tmp_path / "out.npz"
    proc = run_with_data_limit(
        ["-m", "neurocert.distributed._oocrun", str(tmp_path / "a.zarr"),
         str(tmp_path / "z.zarr"), str(out), "--memory-per-block", str(16 * 2**20),
         "--skip", "auroc,bootstrap", "--top-frac", "0.01"], base + headroom, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    mem = json.loads(proc.stdout.strip().splitlines()[-1])
    assert mem["peak_rss_anon"] < base + headroom
    got = np.load(out)
    a = storage.read_columns(storage.open_array(tmp_path / "a.zarr"), 0, 64)
    ref = neurocert.identify(a, z, metric="iou", top_frac=0.01)
    assert np.array_equal(got["iou"][:64], ref.similarity, equal_nan=True)
    assert np.array_equal(got["iou_lower"][:64], ref.lower)


def test_backend_option_of_public_functions(tmp_path):
    """backend="blocks" streams neuron blocks and equals the in-memory call; bad options fail."""
    rng = np.random.default_rng(3)
    z = (rng.random((800, 5)) < 0.2).astype(np.float32)
    a = (z[:, rng.integers(0, 5, 130)] + rng.normal(size=(800, 130))).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    for metric, kw in (("auroc", {}), ("iou", {"top_frac": 0.05}), ("correlation", {})):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", neurocert.NoBoundWarning)
            got = neurocert.identify(str(tmp_path / "a.npy"), z, metric=metric,
                                     backend="blocks", **kw)
            want = neurocert.identify(a, z, metric=metric, **kw)
        assert np.array_equal(got.similarity, want.similarity, equal_nan=True)
        assert np.array_equal(got.lower, want.lower, equal_nan=True)
    e1 = neurocert.bootstrap_explain(a, z, metric="iou", top_frac=0.05, n_boot=20, rng=1,
                                     backend="blocks")
    e0 = neurocert.bootstrap_explain(a, z, metric="iou", top_frac=0.05, n_boot=20, rng=1)
    assert np.array_equal(e1.probabilities, e0.probabilities)
    with pytest.raises(neurocert.ValidationError, match="backend"):
        neurocert.similarity(a, z, metric="auroc", backend="spark")
    with pytest.raises(neurocert.ValidationError, match="client"):
        neurocert.similarity(a, z, metric="auroc", client="tcp://127.0.0.1:1")
    with pytest.raises(neurocert.ValidationError, match="adaptive"):
        neurocert.bootstrap_explain(a, z, metric="auroc", backend="blocks", adaptive=True)


def test_cli_backend_blocks_reads_a_zarr_store(tmp_path, capsys):
    from neurocert.cli import main

    rng = np.random.default_rng(4)
    z = (rng.random((600, 4)) < 0.3).astype(np.float32)
    a = (z[:, [0, 1, 2, 3, 0, 1]] + rng.normal(size=(600, 6))).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "z.npy", z)
    assert main(["convert", str(tmp_path / "a.npy"), str(tmp_path / "a.zarr")]) == 0
    out_mem, out_blk = tmp_path / "mem.parquet", tmp_path / "blk.parquet"
    assert main(["similarity", str(tmp_path / "a.npy"), str(tmp_path / "z.npy"),
                 "--metric", "auroc", "--out", str(out_mem)]) == 0
    assert main(["similarity", str(tmp_path / "a.zarr"), str(tmp_path / "z.npy"),
                 "--metric", "auroc", "--backend", "blocks", "--out", str(out_blk)]) == 0
    pd = pytest.importorskip("pandas")
    assert pd.read_parquet(out_mem).equals(pd.read_parquet(out_blk))
    capsys.readouterr()
    assert main(["similarity", str(tmp_path / "a.zarr"), str(tmp_path / "z.npy"),
                 "--metric", "auroc", "--out", str(tmp_path / "x.parquet")]) == 1
    assert "--backend blocks" in capsys.readouterr().err
    assert main(["similarity", str(tmp_path / "a.npy"), str(tmp_path / "z.npy"),
                 "--metric", "auroc", "--scheduler", "tcp://127.0.0.1:1",
                 "--out", str(tmp_path / "y.parquet")]) == 1
    assert "--scheduler needs --backend dask" in capsys.readouterr().err


@pytest.mark.parametrize("kw, match", [({"n_boot": 0}, "n_boot"), ({"batch_size": "8"}, "batch_size"),
                                       ({"mode": "x"}, "mode"), ({"scheme": "x"}, "scheme"),
                                       ({"alpha": 1.5}, "alpha")])
def test_block_bootstrap_checks_options_before_reading(tmp_path, kw, match):
    a = np.zeros((50, 3), np.float32)
    z = np.zeros((50, 2), np.float32)
    with pytest.raises(neurocert.ValidationError, match=match):
        distributed.bootstrap_explain(a, z, metric="auroc", **kw)
