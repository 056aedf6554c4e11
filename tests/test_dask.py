"""The Dask backend against the single-machine results (one LocalCluster, 2 worker processes).

Every public computation run on the cluster must equal the in-memory public
function for the same seed (bitwise, via results_equal / array_equal); a worker
SIGKILLed mid-run must not change the result.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import warnings

import numpy as np
import pytest

import neurocert
from neurocert import distributed, storage
from neurocert._compare import results_equal

pytest.importorskip("distributed")
pytest.importorskip("zarr")


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    rng = np.random.default_rng(11)
    n, n_neurons, n_concepts = 1200, 96, 8
    z = (rng.random((n, n_concepts)) < rng.uniform(0.05, 0.3, n_concepts)).astype(np.float32)
    a = (z[:, rng.integers(0, n_concepts, n_neurons)] * rng.uniform(0.5, 2.0, n_neurons)
         + rng.normal(size=(n, n_neurons))).astype(np.float32)
    root = tmp_path_factory.mktemp("dask-store")
    storage.write_array(root / "a.zarr", iter([a]), a.shape, np.float32, chunks=(300, 16))
    storage.write_array(root / "z.zarr", iter([z]), z.shape, np.float32)
    return a, z, root


def test_similarity_every_metric(client, layer):
    a, z, root = layer
    for metric in neurocert.available_metrics():
        m = neurocert.get_metric(metric)
        kw = {"top_frac": 0.05} if m.binarized_neuron else {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            on_dask = distributed.similarity(str(root / "a.zarr"), str(root / "z.zarr"),
                                             metric=metric, client=client,
                                             neuron_block=64 if m.statistics == "moment" else 24,
                                             **kw)
            ref = neurocert.similarity(a, z, metric=metric, **kw)
        if m.statistics == "moment":  # canonical sub-blocks: equal to rounding in memory
            serial = distributed.similarity(a, z, metric=metric, neuron_block=128, **kw)
            assert np.array_equal(on_dask, serial), metric
            np.testing.assert_allclose(on_dask, ref, rtol=1e-12, atol=1e-12)
        else:
            assert np.array_equal(on_dask, ref, equal_nan=True), metric


@pytest.mark.parametrize("metric,kw", [("iou", {"top_frac": 0.05}), ("auroc", {})])
def test_identify(client, layer, metric, kw):
    a, z, root = layer
    ref = neurocert.identify(a, z, metric=metric, **kw)
    got = distributed.identify(root / "a.zarr", z, metric=metric, client=client,
                               neuron_block=16, **kw)
    assert results_equal(ref, got)
    level = 0.5 if metric == "auroc" else 0.05
    assert np.array_equal(ref.p_values(level), got.p_values(level))


def test_bootstrap_explain_any_layout(client, layer):
    a, z, root = layer
    ref = neurocert.bootstrap_explain(a, z, metric="iou", top_frac=0.05, n_boot=40, rng=3,
                                      mode="both")
    for nb in (8, 40):
        got = distributed.bootstrap_explain(root / "a.zarr", z, metric="iou", top_frac=0.05,
                                            n_boot=40, rng=3, mode="both", client=client,
                                            neuron_block=nb)
        assert results_equal(ref, got), nb
    # in-memory activations are scattered block by block
    got = distributed.bootstrap_explain(a[:, :30], z, metric="auroc", n_boot=25, rng=4,
                                        client=client, neuron_block=8)
    assert results_equal(neurocert.bootstrap_explain(a[:, :30], z, metric="auroc", n_boot=25,
                                                     rng=4), got)


def _chunk_sums(chunk, s0, s1):
    return chunk.astype(np.float64).sum(axis=0)


def test_reduce_samples_and_address(client, layer):
    a, _, root = layer
    serial = distributed.reduce_samples(_chunk_sums, root / "a.zarr", sample_chunk=100)
    got = distributed.reduce_samples(_chunk_sums, root / "a.zarr", sample_chunk=100,
                                     client=client.scheduler.address)  # connect by address
    assert np.array_equal(serial, got)
    ref = np.zeros(a.shape[1])
    for s0 in range(0, a.shape[0], 100):
        ref = ref + a[s0:s0 + 100].astype(np.float64).sum(axis=0)
    assert np.array_equal(got, ref)


def _slow_block(block, j0, j1, delay):
    time.sleep(delay)
    return np.column_stack([np.full(j1 - j0, os.getpid()), np.arange(j0, j1)])


def test_worker_killed_mid_run(client, layer):
    """SIGKILL one worker while blocks run: Dask recomputes its blocks, none lost or doubled."""
    a, z, root = layer
    pids = list(client.run(os.getpid).values())
    killed = {}

    def kill_when_running():
        deadline = time.time() + 30
        while time.time() < deadline:
            processing = client.processing()
            if sum(len(v) for v in processing.values()) >= 2:
                break
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(pids[0], signal.SIGKILL)
        killed["t"] = time.perf_counter()

    killer = threading.Thread(target=kill_when_running)
    start = time.perf_counter()
    killer.start()
    out = distributed.map_neuron_blocks(_slow_block, root / "a.zarr", 0.4, client=client,
                                        neuron_block=4, progress=True)
    end = time.perf_counter()
    killer.join()
    assert "t" in killed and start < killed["t"] < end, "the kill did not happen mid-run"
    assert np.array_equal(out[:, 1], np.arange(a.shape[1]))  # every neuron once, in order
    client.wait_for_workers(2, timeout=60)
    assert pids[0] not in client.run(os.getpid).values()  # the nanny replaced the worker
    # a real computation on the recovered cluster still equals the single-machine run
    got = distributed.similarity(root / "a.zarr", z, metric="iou", top_frac=0.05,
                                 client=client, neuron_block=32)
    assert np.array_equal(neurocert.similarity(a, z, metric="iou", top_frac=0.05), got)


def test_public_functions_forward_to_dask(client, layer):
    """backend="dask" on the public functions equals the in-memory call (same seed)."""
    a, z, root = layer
    kw = dict(metric="iou", top_frac=0.02)
    assert np.array_equal(neurocert.similarity(a, z, backend="dask", client=client, **kw),
                          neurocert.similarity(a, z, **kw), equal_nan=True)
    got = neurocert.identify(str(root / "a.zarr"), z, backend="dask", client=client, **kw)
    want = neurocert.identify(a, z, **kw)
    assert np.array_equal(got.lower, want.lower) and np.array_equal(got.best, want.best)
    e_got = neurocert.bootstrap_explain(a, z, n_boot=30, rng=5, backend="dask", client=client,
                                        **kw)
    e_want = neurocert.bootstrap_explain(a, z, n_boot=30, rng=5, **kw)
    assert np.array_equal(e_got.probabilities, e_want.probabilities)
    assert [s.tolist() for s in e_got.prediction_sets] == \
        [s.tolist() for s in e_want.prediction_sets]


def test_dashboard_link_and_progress_bar(capsys):
    """With progress on, the dashboard link is printed and the dashboard answers on loopback."""
    import urllib.request

    pytest.importorskip("bokeh")
    c = distributed.start_local_cluster(1, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address="127.0.0.1:0")
    try:
        link = c.dashboard_link
        assert link.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(link, timeout=30) as r:  # loopback only
            assert r.status == 200 and b"Dask" in r.read()
        rng = np.random.default_rng(0)
        a = rng.normal(size=(200, 9))
        z = (rng.random((200, 3)) < 0.3).astype(float)
        res = distributed.identify(a, z, metric="auroc", client=c, progress=True, neuron_block=4)
        err = capsys.readouterr().err
        assert f"Dask dashboard: {link}" in err
        assert "identify:" in err and "/3 [" in err  # a bar over the three neuron blocks
        assert results_equal(res, neurocert.identify(a, z, metric="auroc"))
    finally:
        c.close()
        c.cluster.close()
