"""The exact numpy AUROC engine: every path (gather, sparse product, split float32 GEMM)
gives the numerators and votes of a slow reference written from the definitions, bit for
bit, for any chunking and thread count; ``rank_stats``' sparse product is exact too."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from neurocert import engine as _engine
from neurocert import sufficient
from neurocert.bootstrap import _engine_for
from neurocert.resample import as_seed_sequence, replicate_weights
from neurocert.similarity import prepare

PATHS = ("gather", "sparse", "dense")


def _data(seed=0, n=300, n_neurons=5, n_concepts=12):
    """Tied activations (rounded, a constant neuron, ReLU zeros), 0/1 concepts of varied
    prevalence, one concept that never occurs and one that always does."""
    rng = np.random.default_rng(seed)
    z = (rng.random((n, n_concepts)) < rng.uniform(0.01, 0.5, n_concepts)).astype(float)
    z[:, -1] = 0.0
    z[:, -2] = 1.0
    a = np.round(rng.normal(size=(n, n_neurons)) + 0.8 * z[:, :n_neurons], 1)
    a[:, 1] = 0.0
    a[:, 2] = np.maximum(a[:, 2], 0.0)
    a[:, 3] = rng.normal(size=n)
    return a, z


def _reference_num(a: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_i w_i R_i z_ic`` (B, N, C) from the definition
    ``2 R_i = 2 sum_{a_j < a_i} w_j + sum_{a_j = a_i} w_j``, in exact integers."""
    wi = w.astype(np.int64)
    zi = (z >= 0.5).astype(np.int64)
    out = np.empty((w.shape[0], a.shape[1], z.shape[1]))
    for j in range(a.shape[1]):
        less = (a[None, :, j] < a[:, None, j]).astype(np.int64)  # [i, k]: a_k < a_i
        equal = (a[None, :, j] == a[:, None, j]).astype(np.int64)
        two_r = 2 * wi @ less.T + wi @ equal.T  # (B, n)
        out[:, j] = (wi * two_r) @ zi * 0.5
    return out


def _reference_auroc(num: np.ndarray, z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The AUROC ratio of :func:`engine._auroc_votes` on the reference numerators."""
    zi = (z >= 0.5).astype(np.float64)
    pos_w = (w.astype(np.float64) @ zi)[:, None, :]
    totals = w.sum(axis=1, dtype=np.float64)[:, None, None]
    den = pos_w * (totals - pos_w)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (num - 0.5 * pos_w * pos_w) / den
    return np.where(den > 0, auc, np.nan)


def _force(monkeypatch, path: str) -> None:
    monkeypatch.setattr(_engine._ExactRankSums, "_plan",
                        lambda self, cols: path if (path != "dense" or self.z is not None)
                        else "sparse")


def _votes_equal(u, v) -> bool:
    return (np.array_equal(u.winner, v.winner) and np.array_equal(u.n_tied, v.n_tied)
            and u.counts.keys() == v.counts.keys()
            and all(np.array_equal(u.counts[t], v.counts[t]) for t in u.counts)
            and np.array_equal(u.tracked, v.tracked, equal_nan=True))


def _run(a, z, w, candidates=None):
    p = prepare(a, z, metric="auroc")
    _, supports = _engine_for(p, "numpy")
    if candidates is None:
        candidates = [np.arange(p.n_concepts)] * p.n_neurons
    tracked = np.tile(np.arange(p.n_concepts), (p.n_neurons, 1))
    return _engine.rank_engine(p, w, candidates, tracked, supports)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("scheme", ["multinomial", "poisson"])
def test_each_path_matches_reference(monkeypatch, path, scheme):
    a, z = _data()
    w = replicate_weights(as_seed_sequence(3), range(9), a.shape[0], scheme=scheme)
    _force(monkeypatch, path)
    v = _run(a, z, w)
    ref = _reference_auroc(_reference_num(a, z, w), z, w)
    np.testing.assert_array_equal(v.tracked, ref)
    lower = 0.0  # AUROC's minimum
    for j in range(a.shape[1]):
        win, n_tied, _ = _engine.argmax_votes(ref[:, j], np.arange(z.shape[1]), lower,
                                              z.shape[1])
        assert np.array_equal(v.winner[:, j], win)
        assert np.array_equal(v.n_tied[:, j], n_tied)


@pytest.mark.parametrize("sparse_concepts", [False, True])
def test_paths_chunks_and_threads_identical(monkeypatch, sparse_concepts):
    a, z = _data(seed=1, n=400, n_neurons=6, n_concepts=30)
    zz = sp.csr_matrix(z) if sparse_concepts else z
    w = replicate_weights(as_seed_sequence(5), range(37), a.shape[0])
    rng = np.random.default_rng(2)
    cand = [np.sort(rng.choice(30, size=k, replace=False)) for k in (1, 2, 5, 12, 29, 30)]
    results = []
    for path in PATHS:
        for chunk, csr_chunk, entries, threads in ((128, 16, 1 << 21, 1), (5, 3, 7, 3)):
            monkeypatch.setattr(_engine, "RANK_CHUNK", chunk)
            monkeypatch.setattr(_engine, "RANK_CSR_CHUNK", csr_chunk)
            monkeypatch.setattr(_engine, "RANK_GATHER_ENTRIES", entries)
            monkeypatch.setattr(_engine, "_cpu_threads", lambda t=threads: t)
            _force(monkeypatch, path)
            results.append(_run(a, zz, w, cand))
    assert all(_votes_equal(results[0], r) for r in results[1:])


def test_dense_path_wide_weights_split_exactly(monkeypatch):
    """Large integer weights: ``Q = w 2R`` above 2**31 (int64) needs a 16-bit split and
    sample blocks of 256 (three GEMM blocks here)."""
    a, z = _data(seed=4, n=600)
    rng = np.random.default_rng(4)
    w = rng.integers(0, 4, (6, a.shape[0])).astype(np.float64)
    w[:, :3] = [40_000.0, 150.0, 255.0]  # Q up to 2 * 40,000 * W > 2**31
    p = prepare(a, z, metric="auroc")
    ex = _engine._ExactRankSums(p, w, w.sum(axis=1, dtype=np.float64),
                                _engine._binary_concepts(p), None)
    assert ex.z is not None and ex.qtype == np.int64 and 256 <= ex.block < a.shape[0]
    _force(monkeypatch, "dense")
    v = _run(a, z, w)
    np.testing.assert_array_equal(v.tracked, _reference_auroc(_reference_num(a, z, w), z, w))


def test_plan_prefers_sparse_work_for_few_positives():
    """The cost model: few positives gather; a sparse set of many columns takes the
    sparse product; a dense concept matrix with many columns takes the GEMM."""
    rng = np.random.default_rng(0)
    n = 5000
    a = rng.normal(size=(n, 1))
    z = (rng.random((n, 400)) < 0.02).astype(float)
    z[:, 200:] = rng.random((n, 200)) < 0.5
    p = prepare(a, z, metric="auroc")
    w = replicate_weights(as_seed_sequence(0), range(2), n)
    ex = _engine._ExactRankSums(p, w, w.sum(axis=1, dtype=np.float64),
                                _engine._binary_concepts(p), None)
    assert ex._plan(np.arange(3)) == "gather"
    assert ex._plan(np.arange(200)) == "sparse"
    assert ex._plan(np.arange(400)) == "dense"


@pytest.mark.parametrize("weights", ["none", "integer"])
def test_rank_stats_sparse_product_matches_definition(weights):
    a, z = _data(seed=6, n=250, n_neurons=4)
    rng = np.random.default_rng(6)
    w = None if weights == "none" else rng.integers(0, 4, a.shape[0]).astype(np.float64)
    total = float(a.shape[0]) if w is None else float(w.sum())
    st = sufficient.rank_stats(a, sp.csr_matrix(z) if weights == "integer" else z,
                               sample_weight=w,
                               design=sufficient.Design(total=total, n_units=total))
    wr = np.ones((1, a.shape[0])) if w is None else w[None, :]
    ref = _reference_num(a, z, wr)[0] - 0.5 * total * (wr @ (z >= 0.5))[0][None, :]
    np.testing.assert_array_equal(st.num, ref)
