"""The guarded bootstrap set (``bootstrap_explain(..., guard=True)``, docs/theory.md §6.5).

Checked against reference code written from the definition: the plain BE set
(smallest set by probability reaching ``1 - alpha``) plus every concept whose upper
confidence limit reaches the chosen concept's similarity (the metric's minimum
when the choice is "none"), listed by probability, then similarity, then index.
Its coverage is measured in ``tests/test_coverage.py``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import neurocert
from neurocert import ValidationError
from neurocert.exceptions import NoBoundWarning, UndefinedSimilarityWarning
from neurocert.explanation import COVERAGE_TARGETS, NONE, guarded_sets, prediction_sets
from neurocert.metrics import get_metric


def ref_guarded(prob, sim, alpha, upper, reference):
    """One neuron at a time, straight from the definition."""
    n, c = sim.shape
    out = []
    for j in range(n):
        outcomes = list(range(c)) + [NONE]
        p = {o: prob[j, c if o == NONE else o] for o in outcomes}
        s = {o: (-np.inf if o == NONE or np.isnan(sim[j, o]) else sim[j, o]) for o in outcomes}
        ranked = sorted(outcomes, key=lambda o: (-p[o], -s[o], c if o == NONE else o))
        members, total = [], 0.0
        for o in ranked:
            if total >= 1 - alpha - 1e-12:
                break
            members.append(o)
            total += p[o]
        keep = set(members) | {o for o in range(c)
                               if not np.isnan(upper[j, o]) and upper[j, o] >= reference[j]}
        out.append([o for o in ranked if o in keep])
    return out


def test_hand_computed_case():
    # one neuron, 4 concepts: the bootstrap set is {1} (prob 0.96 >= 0.95);
    # concept 3 has upper 0.55 >= the chosen similarity 0.5 and joins; concept 2
    # (upper 0.49) does not; concept 0 has no limit (NaN) and does not.
    prob = np.array([[0.0, 0.96, 0.02, 0.0, 0.02]])
    sim = np.array([[0.1, 0.5, 0.3, 0.2]])
    upper = np.array([[np.nan, 0.7, 0.49, 0.55]])
    got = guarded_sets(prob, sim, 0.05, upper, np.array([0.5]))
    assert got[0].tolist() == [1, 3]
    assert prediction_sets(prob, sim, 0.05)[0].tolist() == [1]
    # reference at the minimum ("none" chosen): every concept with a limit joins,
    # ordered by probability, then similarity; "none" (prob 0.02) is not in the base set
    got = guarded_sets(prob, sim, 0.05, upper, np.array([0.0]))
    assert got[0].tolist() == [1, 2, 3]


@pytest.mark.parametrize("seed", range(5))
def test_guarded_sets_match_reference(seed):
    rng = np.random.default_rng(seed)
    n, c = 40, 6
    votes = rng.multinomial(50, rng.dirichlet(np.full(c + 1, 0.3)), size=n)
    prob = votes / 50
    sim = np.round(rng.random((n, c)), 1)
    sim[rng.random((n, c)) < 0.1] = np.nan
    upper = np.where(np.isnan(sim), 1.0, np.minimum(sim + rng.random((n, c)) * 0.3, 1.0))
    upper[rng.random((n, c)) < 0.05] = np.nan
    reference = np.nanmax(np.where(np.isnan(sim), -np.inf, sim), axis=1)
    for alpha in (0.05, 0.1, 0.3):
        got = guarded_sets(prob, sim, alpha, upper, reference)
        want = ref_guarded(prob, sim, alpha, upper, reference)
        assert [g.tolist() for g in got] == want
        base = prediction_sets(prob, sim, alpha)
        assert all(set(b.tolist()) <= set(g.tolist()) for b, g in zip(base, got))


def _data(seed=0, n=600, rare=True):
    rng = np.random.default_rng(seed)
    z = (rng.random((n, 6)) < 0.1).astype(float)
    if rare:
        z[:, 4] = 0.0
        z[rng.choice(n, 2, replace=False), 4] = 1.0  # a concept seen twice
    a = z[:, [0, 1]] @ np.array([[2.0, 0.0], [1.8, 1.0]]).T + rng.normal(size=(n, 2))
    return a, z


@pytest.mark.parametrize("metric", ["recall", "auroc", "iou"])
def test_bootstrap_explain_guard_matches_reference(metric):
    a, z = _data()
    kw = {"metric": metric, "n_boot": 100, "alpha": 0.1, "rng": 3, "mode": "both"}
    if metric != "auroc":
        kw["top_frac"] = 0.1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        plain = neurocert.bootstrap_explain(a, z, **kw)
        guarded = neurocert.bootstrap_explain(a, z, guard=True, **kw)
    ident = plain.identification
    lower = get_metric(metric).lower
    rows = np.arange(ident.n_neurons)
    reference = np.where(ident.best >= 0, ident.similarity[rows, np.maximum(ident.best, 0)], lower)
    prob = np.c_[plain.probabilities, plain.none_probability]
    want = ref_guarded(prob, ident.similarity, 0.1, ident.upper, reference)
    assert [g.tolist() for g in guarded.prediction_sets] == want
    assert guarded.set_size.tolist() == [len(w) for w in want]
    assert guarded.self_in_set.tolist() == [int(b) in w for b, w in zip(ident.best, want)]
    # everything else is the plain result's
    np.testing.assert_array_equal(guarded.probabilities, plain.probabilities)
    np.testing.assert_array_equal(guarded.winners, plain.winners)
    assert [s.tolist() for s in guarded.split_sets] == [s.tolist() for s in plain.split_sets]
    assert guarded.parameters["guard"] is True and "guard" not in plain.parameters
    assert guarded.coverage_target == COVERAGE_TARGETS["guarded"]
    assert plain.guarded() == guarded
    assert guarded.guarded() is guarded
    # every added concept is in the certified set
    for g, b, cert in zip(guarded.prediction_sets, plain.prediction_sets, plain.certified_sets):
        assert set(g.tolist()) - set(b.tolist()) <= set(cert.tolist())


def test_rare_concept_joins_the_guarded_set():
    """A concept seen twice, both with the neuron active, ties at recall 1 with no evidence."""
    rng = np.random.default_rng(1)
    n = 2000
    y = (rng.random(n) < 0.3).astype(float)
    z = np.zeros((n, 3))
    z[:, 0] = (rng.random(n) < np.where(y > 0, 0.4, 0.05))  # common, recall ~0.77
    z[:, 1] = (rng.random(n) < 0.1)  # unrelated, recall ~0.3
    z[np.flatnonzero(y == 0)[:1], 2] = 1.0  # rare: one sample, neuron inactive (recall 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        res = neurocert.bootstrap_explain(y[:, None], z, metric="recall", n_boot=200, rng=0,
                                          alpha=0.05, guard=True)
        plain = neurocert.bootstrap_explain(y[:, None], z, metric="recall", n_boot=200, rng=0,
                                            alpha=0.05)
    assert plain.prediction_sets[0].tolist() == [0]
    # recall 0 from a single sample: its upper limit is near 1, above 0.77
    assert res.identification.upper[0, 2] > res.identification.similarity[0, 0]
    assert res.prediction_sets[0].tolist() == [0, 2]


def test_guard_on_loaded_results(tmp_path):
    a, z = _data(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=50, rng=1)
    loaded = neurocert.ExplanationResult.load(res.save(tmp_path / "r"))
    assert loaded.guarded() == res.guarded()
    g = res.guarded()
    assert neurocert.ExplanationResult.load(g.save(tmp_path / "g")) == g


def test_guard_bad_input():
    a, z = _data(3)
    with pytest.raises(ValidationError, match="guard"):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=10, guard=True, mode="split",
                                    alpha=0.2)
    with pytest.raises(ValidationError, match="guard"):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=10, guard="yes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        split = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=10, mode="split",
                                            alpha=0.2, rng=0)
    with pytest.raises(ValidationError, match="split"):
        split.guarded()


def test_guard_without_bounds_adds_nothing_and_warns():
    a, z = _data(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        warnings.simplefilter("ignore", NoBoundWarning)
        res = neurocert.bootstrap_explain(a, z, metric="correlation", n_boot=50, rng=0)
    with pytest.warns(NoBoundWarning, match="guard adds nothing"):
        g = res.guarded()
    assert [s.tolist() for s in g.prediction_sets] == [s.tolist() for s in res.prediction_sets]


def test_cli_explain_guard(tmp_path, capsys):
    from neurocert.cli import main

    a, z = _data(5)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "z.npy", z)
    args = ["--seed", "1", "--no-progress", "explain", str(tmp_path / "a.npy"),
            str(tmp_path / "z.npy"), "--metric", "auroc", "--n-boot", "50", "--mode", "bootstrap"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        assert main(args + ["--out", str(tmp_path / "plain")]) == 0
        assert main(args + ["--guard", "--out", str(tmp_path / "g")]) == 0
    out = capsys.readouterr().out
    assert COVERAGE_TARGETS["guarded"] in out
    plain = neurocert.ExplanationResult.load(tmp_path / "plain")
    g = neurocert.ExplanationResult.load(tmp_path / "g")
    want = plain.guarded()
    assert [s.tolist() for s in g.prediction_sets] == [s.tolist() for s in want.prediction_sets]


def test_guard_on_the_block_backend_equals_memory():
    a, z = _data(6)
    kw = {"metric": "auroc", "n_boot": 60, "rng": 2, "alpha": 0.1, "guard": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        mem = neurocert.bootstrap_explain(a, z, **kw)
        blk = neurocert.bootstrap_explain(a, z, backend="blocks", **kw)
    assert blk.parameters["guard"] is True
    assert [s.tolist() for s in blk.prediction_sets] == [s.tolist() for s in mem.prediction_sets]
    assert blk.coverage_target == mem.coverage_target == COVERAGE_TARGETS["guarded"]
