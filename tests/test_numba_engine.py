"""The optional numba replicate kernels give exactly the numpy engine's results.

Skipped when numba is not installed (``pip install 'neurocert[numba]'``).
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest

import neurocert
from neurocert import engine as _engine
from neurocert._compare import results_equal
from neurocert.bootstrap import _engine_for, prune_candidates, replicate_explanations
from neurocert.exceptions import OptionalDependencyError, ValidationError
from neurocert.resample import as_seed_sequence, replicate_weights
from neurocert.similarity import prepare

numba = pytest.importorskip("numba")


def _data(seed=0, n=700, n_neurons=7, n_concepts=25):
    """Tied activations (rounded, a constant neuron, ReLU zeros) and sparse 0/1 concepts."""
    rng = np.random.default_rng(seed)
    z = (rng.random((n, n_concepts)) < rng.uniform(0.005, 0.3, n_concepts)).astype(float)
    a = np.round(rng.normal(size=(n, n_neurons)) + 0.8 * z[:, :n_neurons], 1)
    a[:, 1] = 0.0  # all tied
    a[:, 2] = np.maximum(a[:, 2], 0.0)  # half tied at 0
    a[:, 3] = rng.normal(size=n)  # no ties
    z[:, -1] = 0.0  # a concept that never occurs: AUROC undefined
    return a, z


def _votes_equal(u, v) -> bool:
    return (np.array_equal(u.winner, v.winner) and np.array_equal(u.n_tied, v.n_tied)
            and u.counts.keys() == v.counts.keys()
            and all(np.array_equal(u.counts[t], v.counts[t]) for t in u.counts)
            and np.array_equal(u.tracked, v.tracked, equal_nan=True))


def _weights(kind, b, n, seed=4):
    rng = np.random.default_rng(seed)
    if kind == "multinomial":
        return replicate_weights(as_seed_sequence(seed), range(b), n)
    if kind == "poisson":
        return replicate_weights(as_seed_sequence(seed), range(b), n, scheme="poisson")
    if kind == "folds":
        w = np.zeros((b, n), np.float32)
        w[rng.integers(0, b, n), np.arange(n)] = 1.0
        return w
    if kind == "large":  # weights above 255 and 65535: wider integer lanes
        w = rng.integers(0, 3, (b, n)).astype(np.float64)
        w[:, :5] = [300, 70_000, 0, 1, 256]
        return w
    raise AssertionError(kind)


@pytest.fixture(params=["blocked", "wide"])
def rank_kernel(request, monkeypatch):
    """Run the AUROC engine with its blocked kernel (lane chunks, rank blocks) or with its
    wide kernel (every lane at once, for neurons with few columns)."""
    from neurocert import _numba_kernels as nk

    monkeypatch.setattr(nk, "WIDE_BYTES", 0 if request.param == "blocked" else 1 << 40)
    return request.param


@pytest.mark.parametrize("kind", ["multinomial", "poisson", "folds", "large"])
@pytest.mark.parametrize("b", [1, 5, 16, 37, 70])
def test_rank_kernel_identical_to_numpy_engine(kind, b, rank_kernel):
    a, z = _data()
    p = prepare(a, z, metric="auroc")
    w = _weights(kind, b, p.n_samples)
    sim = neurocert.similarity(a, z, metric="auroc")
    _, supports = _engine_for(p, "numba")
    tracked = np.argsort(-np.nan_to_num(sim, nan=-1), axis=1, kind="stable")[:, :3]
    full = [np.arange(p.n_concepts)] * p.n_neurons
    pruned, _ = prune_candidates(p, sim, 0.01, supports)
    for cand in (full, pruned):
        ref = _engine.rank_engine(p, w, cand, tracked, supports)
        got = _engine.rank_engine_numba(p, w, cand, tracked, supports)
        assert _votes_equal(ref, got)


def test_rank_kernel_matches_library_similarity_per_replicate(rank_kernel):
    """Independent reference: neurocert.similarity with the replicate as sample weights."""
    a, z = _data(seed=3, n=400)
    p = prepare(a, z, metric="auroc")
    w = _weights("multinomial", 9, p.n_samples)
    _, supports = _engine_for(p, "numba")
    tracked = np.tile(np.arange(p.n_concepts), (p.n_neurons, 1))
    v = _engine.rank_engine_numba(p, w, [np.arange(p.n_concepts)] * p.n_neurons, tracked,
                                  supports)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(w.shape[0]):
            ref = neurocert.similarity(a, z, metric="auroc", sample_weight=w[b].astype(float))
            np.testing.assert_allclose(v.tracked[b], ref, rtol=0, atol=1e-12)
            # the numerators are exact; the library's all-pairs path may round differently
            # only in the last bits of the ratio, so compare winners where the gap is clear
            filled = np.where(np.isnan(ref), -np.inf, ref)
            top2 = np.sort(filled, axis=1)[:, -2:]
            clear = (top2[:, 1] - top2[:, 0] > 1e-9) & (top2[:, 1] > 0)
            assert np.array_equal(v.winner[b][clear], np.argmax(filled, axis=1)[clear])


def test_rank_kernel_falls_back_for_real_weights():
    a, z = _data(seed=5)
    p = prepare(a, z, metric="auroc")
    w = np.random.default_rng(1).gamma(1.0, size=(6, p.n_samples))
    _, supports = _engine_for(p, "numba")
    cand = [np.arange(p.n_concepts)] * p.n_neurons
    tracked = np.zeros((p.n_neurons, 1), np.int64)
    assert _votes_equal(_engine.rank_engine(p, w, cand, tracked, supports),
                        _engine.rank_engine_numba(p, w, cand, tracked, supports))


@pytest.mark.parametrize("kw", [{}, {"prune": False}, {"scheme": "poisson"},
                                {"mode": "both", "alpha": 0.2}])
def test_bootstrap_explain_identical_across_engines_batches_threads(kw):
    a, z = _data(seed=7, n=500)
    args = dict(metric="auroc", n_boot=40, rng=11, **kw)
    ref = neurocert.bootstrap_explain(a, z, engine="numpy", batch_size=4096, **args)
    assert ref.timings["engine_numba"] == 0.0
    previous = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            for bs in (1, 7, 4096):
                got = neurocert.bootstrap_explain(a, z, engine="numba", batch_size=bs, **args)
                assert got.timings["engine_numba"] == 1.0
                assert results_equal(ref, got)
                assert np.array_equal(ref.winners, got.winners)
                assert np.array_equal(ref.intervals, got.intervals, equal_nan=True)
    finally:
        numba.set_num_threads(previous)


def test_auto_engine_uses_numba_when_installed():
    a, z = _data(seed=8, n=300)
    res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=5, rng=1)
    assert res.timings["engine_numba"] == 1.0


def test_replicate_explanations_numba_matches_generic_engine():
    """The fast numba path and the library's own statistics give the same replicate winners."""
    a, z = _data(seed=9, n=300)
    p = prepare(a, z, metric="auroc")
    w = _weights("multinomial", 6, p.n_samples)
    fast = replicate_explanations(p, w, engine=_engine_for(p, "numba"))
    slow = replicate_explanations(p, w, engine=(_engine.generic_engine, None))
    assert np.array_equal(fast.winner, slow.winner)
    assert np.array_equal(fast.n_tied, slow.n_tied)


def test_engine_option_validated(monkeypatch):
    a, z = _data(seed=1, n=200)
    with pytest.raises(ValidationError, match="engine"):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=5, engine="fortran")
    monkeypatch.setattr(_engine, "numba_available", lambda: False)
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails
    with pytest.raises(OptionalDependencyError, match=r"neurocert\[numba\]"):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=5, engine="numba")
    res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=5, rng=1, engine="auto")
    assert res.timings["engine_numba"] == 0.0


# --------------------------------------------------------------------------- #
# count metrics (fixed threshold, top_frac recomputed per replicate)
# --------------------------------------------------------------------------- #

_COUNT_CASES = [
    ("iou", {"top_frac": 0.05}),
    ("iou", {"threshold": 0.4}),
    ("iou", {"top_frac": 0.002}),
    ("precision", {"top_frac": 0.1}),
    ("precision", {"top_frac": 0.1, "truth": "neuron"}),
    ("recall", {"threshold": 0.3}),
    ("recall", {"top_frac": 0.2, "truth": "neuron"}),
    ("f1", {"top_frac": 0.02}),
    ("accuracy", {"top_frac": 0.3}),
    ("balanced_accuracy", {"top_frac": 0.1}),  # no kernel formula: the numpy engine runs
]


@pytest.mark.parametrize("metric,kw", _COUNT_CASES,
                         ids=[f"{m}-{'-'.join(f'{k}={v}' for k, v in kw.items())}"
                              for m, kw in _COUNT_CASES])
@pytest.mark.parametrize("kind", ["multinomial", "folds", "large"])
def test_count_kernel_identical_to_numpy_engine(metric, kw, kind):
    a, z = _data(seed=2)
    p = prepare(a, z, metric=metric, **kw)
    sim = neurocert.similarity(a, z, metric=metric, **kw)
    tracked = np.argsort(-np.nan_to_num(sim, nan=-1), axis=1, kind="stable")[:, :3]
    full = [np.arange(p.n_concepts)] * p.n_neurons
    for b in (1, 5, 64, 70):
        w = _weights(kind, b, p.n_samples)
        for pruned in (False, True):
            run_np, sup_np = _engine_for(p, "numpy")
            run_nb, sup_nb = _engine_for(p, "numba")
            assert run_nb is _engine.count_engine_numba
            cand = prune_candidates(p, sim, 0.01, sup_np)[0] if pruned else full
            ref = run_np(p, w, cand, tracked, sup_np)
            got = run_nb(p, w, cand, tracked, sup_nb)
            assert _votes_equal(ref, got)


def test_count_kernel_extends_a_short_support():
    """Supports far shorter than the replicate cut-offs are extended, exactly."""
    a, z = _data(seed=4)
    p = prepare(a, z, metric="iou", top_frac=0.1)
    w = _weights("multinomial", 40, p.n_samples)
    sim = neurocert.similarity(a, z, metric="iou", top_frac=0.1)
    tracked = np.argsort(-np.nan_to_num(sim, nan=-1), axis=1, kind="stable")[:, :2]
    cand = [np.arange(p.n_concepts)] * p.n_neurons
    ref = _engine.count_engine(p, w, cand, tracked,
                               [_engine.CountSupport(p, j) for j in range(p.n_neurons)])
    short = _engine.CountSupports(_engine.CountSupport(p, j, margin=-10.0)
                                  for j in range(p.n_neurons))
    before = [s.index.size for s in short]
    got = _engine.count_engine_numba(p, w, cand, tracked, short)
    assert any(s.index.size > n0 for s, n0 in zip(short, before))
    assert _votes_equal(ref, got)


def test_count_kernel_matches_library_similarity_per_replicate():
    """Independent reference: neurocert.similarity with the replicate as sample weights."""
    a, z = _data(seed=6, n=500)
    kw = {"top_frac": 0.05}
    p = prepare(a, z, metric="iou", **kw)
    w = _weights("multinomial", 7, p.n_samples)
    _, supports = _engine_for(p, "numba")
    tracked = np.tile(np.arange(p.n_concepts), (p.n_neurons, 1))
    v = _engine.count_engine_numba(p, w, [np.arange(p.n_concepts)] * p.n_neurons, tracked,
                                   supports)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for b in range(w.shape[0]):
            ref = neurocert.similarity(a, z, metric="iou", sample_weight=w[b].astype(float), **kw)
            np.testing.assert_array_equal(v.tracked[b], ref)
            filled = np.where(np.isnan(ref), -np.inf, ref)
            best = filled.max(axis=1)
            n_best = (filled == best[:, None]).sum(axis=1)
            expect = np.where(best > 0, np.argmax(filled, axis=1), -1)
            assert np.array_equal(v.winner[b], expect)
            assert np.array_equal(v.n_tied[b], np.where(best > 0, n_best, 0))


@pytest.mark.parametrize("kw", [{"top_frac": 0.05}, {"threshold": 0.5, "prune": False},
                                {"top_frac": 0.1, "mode": "both", "alpha": 0.2}])
def test_bootstrap_explain_count_identical_across_engines_batches_threads(kw):
    a, z = _data(seed=7, n=500)
    args = dict(metric="iou", n_boot=40, rng=11, **kw)
    ref = neurocert.bootstrap_explain(a, z, engine="numpy", batch_size=4096, **args)
    previous = numba.get_num_threads()
    try:
        for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
            numba.set_num_threads(threads)
            for bs in (1, 7, 4096):
                got = neurocert.bootstrap_explain(a, z, engine="numba", batch_size=bs, **args)
                assert got.timings["engine_numba"] == 1.0
                assert results_equal(ref, got)
                assert np.array_equal(ref.winners, got.winners)
                assert np.array_equal(ref.ties, got.ties)
                assert np.array_equal(ref.intervals, got.intervals, equal_nan=True)
    finally:
        numba.set_num_threads(previous)


def test_radix_argsort_is_numpy_stable_argsort():
    from neurocert import _numba_kernels as nk

    rng = np.random.default_rng(0)
    cases = [rng.normal(size=3000), rng.normal(size=3000).astype(np.float32).astype(float),
             np.round(rng.normal(size=2000), 1), np.maximum(rng.normal(size=500), 0.0),
             np.array([0.0, -0.0, 1.0, -1.0, 0.0, -0.0, np.inf, -np.inf, 5e-324, -5e-324]),
             np.zeros(7), np.array([3.0]), np.array([2.0, 1.0])]
    for x in cases:
        assert np.array_equal(nk.argsort_stable(x), np.argsort(x, kind="stable"))
