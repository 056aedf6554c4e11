"""Tests of the bootstrap stability layer: weights, engines, prediction sets, conformal sets.

Every check compares the library with independent reference code written from the
definitions (docstrings of ``neurocert.resample``, ``neurocert.engine``,
``neurocert.explanation`` and ``neurocert.bootstrap``):

* replicate weights: the documented two-stage multinomial stream, re-derived with
  plain numpy calls; distribution checks against Multinomial(n, 1/n) and Poisson(1);
* replicate explanations: a loop that *materializes* each resample with
  ``np.repeat`` and calls :func:`neurocert.similarity` on it, then applies the
  documented argmax rule (NaN never wins, "none" when every value is NaN or at the
  metric's minimum, exact ties split the vote);
* prediction sets / split-conformal sets: brute force from the definitions.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from fractions import Fraction
from itertools import combinations_with_replacement

import numpy as np
import pytest
import threadpoolctl
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import neurocert
import neurocert.bootstrap as nb
from neurocert import ValidationError
from neurocert.bootstrap import _fold_weights, _unit_weights, prune_candidates, replicate_explanations
from neurocert.explanation import COVERAGE_TARGETS, prediction_sets, split_conformal_sets
from neurocert.identify import identify
from neurocert.resample import WEIGHT_BLOCK, as_seed_sequence, replicate_weights
from neurocert.similarity import prepare
from neurocert.simulate import near_tie_concepts

_PROP = settings(deadline=None, derandomize=True, max_examples=150)

COUNT_METRICS = ("iou", "precision", "recall", "f1", "accuracy", "balanced_accuracy", "wpmi")


# --------------------------------------------------------------------------- #
# independent reference code
# --------------------------------------------------------------------------- #

def ref_weights(entropy: int, b: int, n: int, block: int, scheme: str = "multinomial") -> np.ndarray:
    """Replicate ``b`` straight from the definition in ``neurocert.resample``'s docstring."""
    starts = list(range(0, n, block))
    sizes = [min(block, n - s) for s in starts]
    w = np.zeros(n)
    if scheme == "poisson":
        for k, (s, size) in enumerate(zip(starts, sizes)):
            g = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(b, k)))
            w[s:s + size] = g.poisson(1.0, size)
        return w
    g = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(b,)))
    totals = g.multinomial(n, np.array(sizes) / n)
    for k, (s, size) in enumerate(zip(starts, sizes)):
        g = np.random.default_rng(np.random.SeedSequence(entropy, spawn_key=(b, k)))
        for u in g.integers(0, size, int(totals[k])):  # each draw picks one unit uniformly
            w[s + u] += 1
    return w


def ref_argmax(values, lower: float):
    """(winner, tied concepts) of one similarity row by the documented rule."""
    ok = [(c, float(v)) for c, v in enumerate(values) if not math.isnan(v)]
    if not ok:
        return -1, []
    top = max(v for _, v in ok)
    if not top > lower:
        return -1, []
    tied = [c for c, v in ok if v == top]
    return tied[0], tied


def ref_votes(sims: np.ndarray, lower: float):
    """Winners, tie counts and split votes of similarity replicates ``(B, N, C)``."""
    b, n, c = sims.shape
    winner = np.full((b, n), -1, np.int64)
    n_tied = np.zeros((b, n), np.int64)
    votes = np.zeros((n, c + 1))
    for i in range(b):
        for j in range(n):
            w, tied = ref_argmax(sims[i, j], lower)
            winner[i, j] = w
            n_tied[i, j] = len(tied)
            if not tied:
                votes[j, c] += 1.0
            for t in tied:
                votes[j, t] += 1.0 / len(tied)
    return winner, n_tied, votes


def materialized_sims(a, z, metric: str, kw: dict, weights: np.ndarray) -> np.ndarray:
    """Similarity on each resample built by literally repeating rows ``w_i`` times."""
    out = []
    rows = np.arange(a.shape[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for w in weights:
            idx = np.repeat(rows, np.asarray(w).astype(np.int64))
            out.append(neurocert.similarity(a[idx], z[idx], metric=metric, **kw))
    return np.array(out)


def blackbox_method(a, z, metric: str, kw: dict):
    """A user's black-box identification: weighted similarity, then the argmax rule."""
    lower = neurocert.get_metric(metric).lower

    def method(w):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            s = neurocert.similarity(a, z, metric=metric, sample_weight=w, **kw)
        return np.array([ref_argmax(row, lower)[0] for row in s])
    return method


def ref_outcome_order(prob_row, sim_row):
    """Outcomes by probability desc, then full-data similarity desc, then index (none last)."""
    c = len(sim_row)
    s = [(-math.inf if math.isnan(v) else float(v)) for v in sim_row] + [-math.inf]
    return sorted(range(c + 1), key=lambda e: (-prob_row[e], -s[e], e))


def ref_prediction_set(counts, total, sim_row, alpha: float):
    """Smallest probability-ordered prefix reaching ``1 - alpha`` (exact arithmetic)."""
    c = len(sim_row)
    prob = [Fraction(int(k), int(total)) for k in counts]
    order = ref_outcome_order(prob, sim_row)
    need = 1 - Fraction(alpha)
    out, cum = [], Fraction(0)
    for e in order:
        out.append(-1 if e == c else e)
        cum += prob[e]
        if cum >= need:
            break
    return out


def ref_split_set(fold_outcomes, n_concepts: int, alpha: float):
    """Full conformal from the definition: augmented multiset, score = -count, p-value."""
    k = len(fold_outcomes)
    keep = []
    for cand in list(range(n_concepts)) + [-1]:
        augmented = list(fold_outcomes) + [cand]
        cnt = Counter(augmented)
        score = [-cnt[x] for x in augmented]
        s_test = -cnt[cand]
        pval = sum(1 for s in score if s >= s_test) / (k + 1)
        if pval > alpha:
            keep.append(cand)
    return keep


def ref_quantile(values, q: float) -> float:
    """Linear-interpolation percentile (numpy's default), NaN ignored."""
    x = sorted(v for v in values if not math.isnan(v))
    if not x:
        return math.nan
    h = (len(x) - 1) * q
    lo = math.floor(h)
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


# --------------------------------------------------------------------------- #
# data
# --------------------------------------------------------------------------- #

def tied_data(n: int = 60, seed: int = 0):
    """Rounded activations (heavy ties), an all-zero concept and duplicated concepts."""
    rng = np.random.default_rng(seed)
    a = np.round(rng.normal(size=(n, 3)), 0)
    z = (rng.random((n, 4)) < 0.3).astype(float)
    a[:, 2] = np.round(2 * z[:, 1] + rng.normal(size=n))
    # column 0 never present (NaN for most metrics), 5 == 2, 6 == 4
    z = np.concatenate([np.zeros((n, 1)), z, z[:, [1, 3]]], axis=1)
    return a, z


def smooth_data(n: int = 300, seed: int = 1):
    rng = np.random.default_rng(seed)
    z = (rng.random((n, 8)) < 0.25).astype(float)
    a = rng.normal(size=(n, 4))
    a[:, 0] += 1.5 * z[:, 2]
    a[:, 1] += 0.6 * z[:, 3] + 0.5 * z[:, 5]
    a[:, 3] += 0.8 * z[:, 0]
    return a, z


# --------------------------------------------------------------------------- #
# 1. weights
# --------------------------------------------------------------------------- #

@pytest.mark.parametrize("scheme", ["multinomial", "poisson"])
@pytest.mark.parametrize("n,block", [(37, WEIGHT_BLOCK), (37, 10), (5000, WEIGHT_BLOCK)])
def test_weights_match_documented_definition(scheme, n, block):
    seed = np.random.SeedSequence(12345)
    reps = [0, 3, 7]
    w = replicate_weights(seed, reps, n, scheme=scheme, block=block)
    assert w.shape == (3, n) and w.dtype == np.float32
    for row, b in zip(w, reps):
        np.testing.assert_array_equal(row, ref_weights(12345, b, n, block, scheme))
    if scheme == "multinomial":
        assert np.all(w.sum(axis=1) == n)
    assert np.all(w >= 0) and np.all(w == np.round(w))


def test_weights_independent_of_requested_set_and_order():
    full = replicate_weights(7, range(12), 50)
    np.testing.assert_array_equal(replicate_weights(7, [9, 2, 5], 50), full[[9, 2, 5]])
    np.testing.assert_array_equal(replicate_weights(7, np.array([11]), 50), full[[11]])
    np.testing.assert_array_equal(replicate_weights(7, range(6, 12), 50), full[6:])
    # an int seed and SeedSequence(int) are the same stream; another seed is another stream
    np.testing.assert_array_equal(replicate_weights(np.random.SeedSequence(7), range(12), 50), full)
    assert not np.array_equal(replicate_weights(8, range(12), 50), full)
    # different replicates differ
    assert len({full[i].tobytes() for i in range(12)}) == 12


def test_default_block_is_fixed():
    assert WEIGHT_BLOCK == 4096
    n = 5000
    np.testing.assert_array_equal(replicate_weights(3, range(4), n),
                                  replicate_weights(3, range(4), n, block=4096))
    # another block is another (equally valid) stream
    assert not np.array_equal(replicate_weights(3, range(4), n),
                              replicate_weights(3, range(4), n, block=1000))


def _multinomial_chi2(w: np.ndarray, n: int) -> float:
    outcomes = [tuple(np.bincount(c, minlength=n)) for c in combinations_with_replacement(range(n), n)]
    probs = np.array([math.factorial(n) / np.prod([math.factorial(k) for k in o]) / n**n
                      for o in outcomes])
    assert abs(probs.sum() - 1) < 1e-12
    index = {o: i for i, o in enumerate(outcomes)}
    obs = np.zeros(len(outcomes))
    for row in w.astype(np.int64):
        obs[index[tuple(row)]] += 1
    return stats.chisquare(obs, probs * len(w)).pvalue


def test_multinomial_distribution_n5():
    w = replicate_weights(2024, range(20000), 5)
    assert _multinomial_chi2(w, 5) > 1e-3


def test_multinomial_distribution_across_blocks():
    # n=4 in blocks of 2 exercises the two-stage split; still Multinomial(4, 1/4)
    w = replicate_weights(99, range(6000), 4, block=2)
    assert np.all(w.sum(axis=1) == 4)
    assert _multinomial_chi2(w, 4) > 1e-3


def test_poisson_moments():
    # 100,000 Poisson(1) draws: SE(mean) = 0.0032, SE(var) = sqrt(3/1e5) = 0.0055; tolerance 0.025
    w = replicate_weights(5, range(50), 2000, scheme="poisson").astype(np.float64)
    assert abs(w.mean() - 1) < 0.025
    assert abs(w.var() - 1) < 0.025
    # across small blocks too (independent blocks, same law)
    w2 = replicate_weights(5, range(50), 2000, scheme="poisson", block=7).astype(np.float64)
    assert abs(w2.mean() - 1) < 0.025 and abs(w2.var() - 1) < 0.025
    assert not np.array_equal(w, w2)


def test_unknown_scheme_rejected():
    with pytest.raises(ValidationError, match="scheme"):
        replicate_weights(0, range(2), 10, scheme="bayesian")


def test_unit_weights_resample_groups():
    a, z = smooth_data(90)
    groups = np.repeat(np.arange(30), 3)[::-1]
    p = prepare(a, z, metric="auroc", groups=groups)
    seed = as_seed_sequence(4)
    w = _unit_weights(p, seed, range(5), "multinomial")
    codes, n_groups = p.groups
    wg = replicate_weights(seed, range(5), n_groups)
    np.testing.assert_array_equal(w, wg[:, codes])
    # every member of a group shares the group's weight; group weights sum to n_groups
    for g in range(n_groups):
        members = np.flatnonzero(codes == g)
        assert np.all(w[:, members] == w[:, members[:1]])
    assert np.all(wg.sum(axis=1) == n_groups)


def test_spawned_seed_sequences_give_independent_streams():
    c0, c1 = np.random.SeedSequence(5).spawn(2)
    assert not np.array_equal(replicate_weights(c0, range(3), 40),
                              replicate_weights(c1, range(3), 40))


# --------------------------------------------------------------------------- #
# 2. bitwise reproducibility across chunking and BLAS threads
# --------------------------------------------------------------------------- #

_REPRO = [
    ("auroc", {}),
    ("iou", {"threshold": 0.5}),
    ("iou", {"top_frac": 0.05}),
    ("recall", {"top_frac": 0.05}),
    ("correlation", {}),
    ("auroc", {"groups": True}),
    ("iou", {"top_frac": 0.05, "groups": True}),
]


def _same_result(r, ref):
    assert r == ref
    np.testing.assert_array_equal(r.probabilities, ref.probabilities)
    np.testing.assert_array_equal(r.none_probability, ref.none_probability)
    np.testing.assert_array_equal(r.winners, ref.winners)
    np.testing.assert_array_equal(r.ties, ref.ties)
    np.testing.assert_array_equal(r.intervals, ref.intervals)
    for s, t in zip(r.prediction_sets, ref.prediction_sets):
        np.testing.assert_array_equal(s, t)


@pytest.mark.parametrize("metric,kw", _REPRO, ids=[f"{m}-{'-'.join(k)}" for m, k in _REPRO])
def test_bitwise_reproducible_over_batches_and_threads(metric, kw):
    a, z = smooth_data(240)
    kw = dict(kw)
    if kw.pop("groups", False):
        kw["groups"] = np.arange(240) // 4
    results = []
    for threads in (1, 2):
        with threadpoolctl.threadpool_limits(limits=threads):
            for bs in (1, 7, 4096):
                results.append(neurocert.bootstrap_explain(
                    a, z, metric=metric, n_boot=30, rng=11, batch_size=bs, alpha=0.2, **kw))
    ref = results[0]
    assert ref.winners.shape == (30, 4)
    for r in results[1:]:
        _same_result(r, ref)


def test_bitwise_reproducible_with_three_way_ties():
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(200, 2)), 0)
    z = (rng.random((200, 4)) < 0.3).astype(float)
    z = np.concatenate([z, z[:, [1, 1]]], axis=1)  # concepts 1, 4, 5 identical
    r1 = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=300, rng=3, batch_size=1)
    r7 = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=300, rng=3, batch_size=7)
    np.testing.assert_array_equal(r1.winners, r7.winners)  # the replicates agree...
    np.testing.assert_array_equal(r1.probabilities, r7.probabilities)  # ...the sums do not


# --------------------------------------------------------------------------- #
# 3. engine equivalence on the same weight matrix
# --------------------------------------------------------------------------- #

_ENGINE_CASES = [("auroc", {}), ("average_precision", {})]
for _m in COUNT_METRICS:
    _ENGINE_CASES += [(_m, {"threshold": 0.5}), (_m, {"top_frac": 0.1})]


def _check_engines(a, z, metric, kw, w, *, exact_tracked=True):
    """Unpruned engine, black box and materialized loop agree; returns (prepared, ident, ref)."""
    p = prepare(a, z, metric=metric, **kw)
    with _quiet_ctx():
        ident = identify(a, z, metric=metric, **kw)
    lower = p.metric.lower
    full = replicate_explanations(p, w, tracked=ident.top)
    box = replicate_explanations(p, w, tracked=ident.top, method=blackbox_method(a, z, metric, kw))
    sims = materialized_sims(a, z, metric, kw, w)
    winner, n_tied, votes = ref_votes(sims, lower)
    np.testing.assert_array_equal(full.winner, winner)
    np.testing.assert_array_equal(full.n_tied, n_tied)
    # vote sums: same shares, summation order is the engine's own (bitwise chunking
    # invariance is checked on bootstrap_explain below)
    np.testing.assert_allclose(full.votes, votes, rtol=0, atol=1e-12)
    # the black box reports winners only (one whole vote each)
    np.testing.assert_array_equal(box.winner, winner)
    np.testing.assert_array_equal(box.n_tied, (winner >= 0).astype(np.int64))
    bv = np.zeros_like(votes)
    for j in range(p.n_neurons):
        for wj in winner[:, j]:
            bv[j, wj if wj >= 0 else p.n_concepts] += 1
    np.testing.assert_array_equal(box.votes, bv)
    assert np.isnan(box.tracked).all()
    # tracked similarities are the replicate similarities of the top concepts
    ref_tr = np.take_along_axis(sims, np.broadcast_to(ident.top[None], (len(w),) + ident.top.shape),
                                axis=2)
    if exact_tracked:
        np.testing.assert_array_equal(full.tracked, ref_tr)
    else:
        np.testing.assert_allclose(full.tracked, ref_tr, rtol=0, atol=1e-12)
    return p, ident, (winner, n_tied, votes, ref_tr)


def _check_pruned(a, z, metric, kw, w, *, exact_tracked=True):
    p, ident, (winner, n_tied, votes, ref_tr) = _check_engines(a, z, metric, kw, w,
                                                               exact_tracked=exact_tracked)
    cands, _ = prune_candidates(p, ident.similarity, 1e-4)
    fast = replicate_explanations(p, w, candidates=cands, tracked=ident.top)
    np.testing.assert_array_equal(fast.winner, winner)
    np.testing.assert_array_equal(fast.n_tied, n_tied)
    np.testing.assert_allclose(fast.votes, votes, rtol=0, atol=1e-12)
    if exact_tracked:
        np.testing.assert_array_equal(fast.tracked, ref_tr)
    return n_tied


class _quiet_ctx:
    def __enter__(self):
        self._c = warnings.catch_warnings()
        self._c.__enter__()
        warnings.simplefilter("ignore")

    def __exit__(self, *exc):
        return self._c.__exit__(*exc)




def _engine_params(cases):
    out = []
    for m, k in cases:
        marks = []
        out.append(pytest.param(m, k, marks=marks, id=f"{m}-{next(iter(k), '')}"))
    return out


@pytest.mark.parametrize("metric,kw", _ENGINE_CASES,
                         ids=[f"{m}-{next(iter(k), '')}" for m, k in _ENGINE_CASES])
def test_engines_agree_with_materialized_resample(metric, kw):
    a, z = tied_data()
    w = replicate_weights(1, range(30), a.shape[0])
    # AUROC: the engine's (num - P^2/2)/den and similarity's 0.5 + num'/den round differently
    _, _, (_, n_tied, _, _) = _check_engines(a, z, metric, kw, w,
                                             exact_tracked=(metric != "auroc"))
    assert (n_tied >= 2).any(), "the data should produce exact ties"


@pytest.mark.parametrize("metric,kw", _engine_params(_ENGINE_CASES))
def test_pruned_engine_agrees_with_materialized_resample(metric, kw):
    a, z = tied_data()
    w = replicate_weights(1, range(30), a.shape[0])
    _check_pruned(a, z, metric, kw, w, exact_tracked=(metric != "auroc"))


@pytest.mark.parametrize("metric,kw", [("auroc", {}), ("iou", {"top_frac": 0.1}),
                                       ("average_precision", {}), ("recall", {"threshold": 0.5})])
def test_engines_agree_under_poisson_weights(metric, kw):
    a, z = tied_data(seed=3)
    w = replicate_weights(2, range(20), a.shape[0], scheme="poisson")
    _check_engines(a, z, metric, kw, w, exact_tracked=(metric != "auroc"))


def test_engines_agree_correlation_without_duplicate_columns():
    a, z = tied_data()
    z = z[:, :5]  # drop the duplicated columns
    w = replicate_weights(1, range(30), a.shape[0])
    _check_engines(a, z, "correlation", {}, w, exact_tracked=False)


def test_engines_agree_correlation_with_duplicate_columns():
    a, z = tied_data()
    w = replicate_weights(1, range(30), a.shape[0])
    _check_engines(a, z, "correlation", {}, w, exact_tracked=False)


@pytest.mark.filterwarnings("ignore::neurocert.UndefinedSimilarityWarning")
def test_duplicate_concepts_split_votes_correlation():
    a, z = tied_data()
    res = neurocert.bootstrap_explain(a, z, metric="correlation", n_boot=40, rng=1)
    np.testing.assert_array_equal(res.probabilities[:, 2], res.probabilities[:, 5])
    np.testing.assert_array_equal(res.probabilities[:, 4], res.probabilities[:, 6])


# --------------------------------------------------------------------------- #
# 4. replicate rules
# --------------------------------------------------------------------------- #

def test_nan_never_wins_and_all_minimum_is_none():
    rng = np.random.default_rng(5)
    n = 200
    z = np.zeros((n, 4))
    z[:, 1] = rng.random(n) < 0.3
    z[:, 2] = rng.random(n) < 0.3
    z[:, 3] = 1.0  # present everywhere
    a = rng.normal(size=(n, 2))
    a[:, 0] = np.where((z[:, 1] + z[:, 2]) == 0, 3.0, -3.0)  # fires where concepts 1, 2 are not
    with _quiet_ctx():
        res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=50, rng=2, batch_size=13)
    # concept 0 (absent) and 3 (everywhere) have undefined AUROC: they never win
    assert np.all(res.probabilities[:, [0, 3]] == 0)
    assert np.all(np.isin(res.winners, [1, 2]))

    # IoU with concept 3 removed: neuron 0 never overlaps any concept -> IoU 0 = minimum
    z2 = z[:, :3]
    with _quiet_ctx():
        res = neurocert.bootstrap_explain(a, z2, metric="iou", threshold=0.0, n_boot=50, rng=2)
    assert np.all(res.winners[:, 0] == -1) and np.all(res.ties[:, 0] == 0)
    assert res.none_probability[0] == 1.0
    assert np.all(res.probabilities[0] == 0)
    np.testing.assert_array_equal(res.prediction_sets[0], [-1])
    assert res.none_probability[1] == 0.0
    assert res.probabilities[1].sum() == pytest.approx(1.0, abs=1e-12)


def test_self_in_set_uses_the_same_none_rule():
    rng = np.random.default_rng(5)
    n = 200
    z = (rng.random((n, 3)) < 0.3).astype(float)
    a = np.where(z.sum(axis=1, keepdims=True) == 0, 3.0, -3.0)
    res = neurocert.bootstrap_explain(a, z, metric="iou", threshold=0.0, n_boot=30, rng=2)
    assert res.none_probability[0] == 1.0
    assert res.self_in_set[0]


def test_exact_ties_split_the_vote():
    rng = np.random.default_rng(8)
    n = 300
    z = (rng.random((n, 4)) < 0.3).astype(float)
    a = 3.0 * z[:, [1]] + rng.normal(size=(n, 1))
    z = np.concatenate([z, z[:, [1]]], axis=1)  # concept 4 == concept 1
    res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=60, rng=4, alpha=0.1)
    assert res.probabilities[0, 1] == res.probabilities[0, 4] == 0.5
    assert np.all(res.winners[:, 0] == 1) and np.all(res.ties[:, 0] == 2)
    assert set(res.prediction_sets[0].tolist()) == {1, 4}
    # equal probability and equal full-data similarity: lower index first
    np.testing.assert_array_equal(res.prediction_sets[0], [1, 4])
    # with 1 - alpha <= 0.5 one of them suffices
    assert neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=60, rng=4,
                                       alpha=0.5).prediction_sets[0].tolist() == [1]


def test_tie_order_in_prediction_sets():
    prob = np.array([[0.3, 0.3, 0.3, 0.1, 0.0],
                     [0.25, 0.25, 0.25, 0.0, 0.25]])
    sim = np.array([[0.5, 0.7, 0.7, 0.9],
                    [np.nan, 0.1, 0.2, 0.3]])
    sets = prediction_sets(prob, sim, 0.05)
    # equal probability: higher similarity first (1, 2 tie at 0.7 -> lower index), then 0
    np.testing.assert_array_equal(sets[0], [1, 2, 0, 3])
    # NaN similarity sorts with "none" (-inf), concept before none by index
    np.testing.assert_array_equal(sets[1], [2, 1, 0, -1])
    np.testing.assert_array_equal(prediction_sets(prob, sim, 0.35)[0], [1, 2, 0])
    np.testing.assert_array_equal(prediction_sets(prob, sim, 0.65)[0], [1, 2])


# --------------------------------------------------------------------------- #
# 5. prediction sets
# --------------------------------------------------------------------------- #

def test_prediction_set_hand_examples():
    prob = np.array([[0.5, 0.3, 0.15, 0.05, 0.0]])
    sim = np.array([[0.1, 0.2, 0.3, 0.4]])
    assert prediction_sets(prob, sim, 0.1)[0].tolist() == [0, 1, 2]
    assert prediction_sets(prob, sim, 0.2)[0].tolist() == [0, 1]  # 0.8 reached exactly
    assert prediction_sets(prob, sim, 0.5)[0].tolist() == [0]
    assert prediction_sets(prob, sim, 0.01)[0].tolist() == [0, 1, 2, 3]
    # "none" is an outcome like any other and appears as -1
    prob = np.array([[0.2, 0.1, 0.0, 0.0, 0.7]])
    assert prediction_sets(prob, sim, 0.1)[0].tolist() == [-1, 0]
    assert prediction_sets(prob, sim, 0.3)[0].tolist() == [-1]
    assert prediction_sets(prob, sim, 0.05)[0].tolist() == [-1, 0, 1]


@st.composite
def _vote_tables(draw):
    n_out = draw(st.integers(2, 6))
    counts = draw(st.lists(st.integers(0, 5), min_size=n_out, max_size=n_out))
    if sum(counts) == 0:
        counts[0] = 1
    sim = draw(st.lists(st.sampled_from([np.nan, 0.1, 0.5, 0.5, 0.9]), min_size=n_out - 1,
                        max_size=n_out - 1))
    a1 = draw(st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]))
    a2 = draw(st.sampled_from([0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9]))
    return np.array(counts), np.array(sim, float), min(a1, a2), max(a1, a2)


@_PROP
@given(_vote_tables())
def test_prediction_sets_reference_and_monotone(table):
    counts, sim, a_small, a_large = table
    total = counts.sum()
    prob = (counts / total)[None, :]
    s_small = prediction_sets(prob, sim[None, :], a_small)[0].tolist()
    s_large = prediction_sets(prob, sim[None, :], a_large)[0].tolist()
    # sets grow (weakly) as alpha shrinks: the smaller set is a prefix of the larger one
    assert s_small[:len(s_large)] == s_large
    for alpha, got in ((a_small, s_small), (a_large, s_large)):
        # skip exact float boundary cases (library uses a 1e-12 tolerance)
        cum = np.cumsum(np.sort(prob[0])[::-1])
        if np.any(np.abs(cum - (1 - alpha)) < 1e-9):
            continue
        assert got == ref_prediction_set(counts, total, sim, alpha)


# --------------------------------------------------------------------------- #
# 6. split conformal
# --------------------------------------------------------------------------- #

@st.composite
def _fold_tables(draw):
    k = draw(st.integers(2, 30))
    c = draw(st.integers(1, 5))
    n = draw(st.integers(1, 3))
    fw = draw(st.lists(st.lists(st.integers(-1, c - 1), min_size=n, max_size=n),
                       min_size=k, max_size=k))
    alpha = draw(st.sampled_from([0.02, 0.05, 0.1, 0.2, 0.3, 0.5]))
    sim = draw(st.lists(st.lists(st.sampled_from([0.2, 0.5, 0.5, np.nan]), min_size=c, max_size=c),
                        min_size=n, max_size=n))
    return np.array(fw, np.int64), c, alpha, np.array(sim, float)


@_PROP
@given(_fold_tables())
def test_split_conformal_matches_brute_force(table):
    fw, c, alpha, sim = table
    k, n = fw.shape
    sets = split_conformal_sets(fw, c, alpha, sim)
    for j in range(n):
        ref = ref_split_set(fw[:, j].tolist(), c, alpha)
        assert sorted(sets[j].tolist()) == sorted(ref)
        # ordered by fold frequency, then similarity, then index
        cnt = Counter(fw[:, j].tolist())
        prob = [cnt[e] / k for e in range(c)] + [cnt[-1] / k]
        order = [(-1 if e == c else e) for e in ref_outcome_order(prob, sim[j])]
        assert sets[j].tolist() == [e for e in order if e in ref]


@pytest.mark.parametrize("alpha", [0.05, 0.1])
@pytest.mark.parametrize("k", [19, 39])
def test_split_conformal_coverage(alpha, k):
    rng = np.random.default_rng(int(1000 * alpha) + k)
    outcomes = np.array([0, 1, 2, 3, -1])
    probs = np.array([0.24, 0.23, 0.22, 0.21, 0.10])  # several near-equal outcomes
    reps = 4000
    draws = rng.choice(outcomes, size=(k + 1, reps), p=probs)
    folds, test = draws[:k], draws[k]
    sets = split_conformal_sets(folds, 4, alpha, np.zeros((reps, 4)))
    covered = sum(int(t in s) for t, s in zip(test, sets))
    assert stats.binomtest(covered, reps, 1 - alpha, alternative="less").pvalue > 1e-3


def test_split_mode_checks_folds_and_records_target():
    a, z = smooth_data(200)
    with pytest.raises(ValidationError, match=r"n_folds \+ 1 >= 1/alpha"):
        neurocert.bootstrap_explain(a, z, metric="auroc", mode="split", alpha=0.1, n_folds=5)
    with pytest.raises(ValidationError, match=r"n_folds \+ 1 >= 1/alpha"):
        neurocert.bootstrap_explain(a, z, metric="auroc", mode="both", alpha=0.05, n_folds=18)
    with pytest.raises(ValidationError, match="n_folds"):
        neurocert.bootstrap_explain(a[:10], z[:10], metric="auroc", mode="split", alpha=0.1)
    res = neurocert.bootstrap_explain(a, z, metric="auroc", mode="split", alpha=0.1, n_folds=9,
                                      rng=3)
    assert res.coverage_target == COVERAGE_TARGETS["split"]
    assert "finite-sample" in res.coverage_target
    assert res.n_boot == 0 and res.fold_winners.shape == (9, 4)
    assert res.parameters["n_folds"] == 9
    expect = split_conformal_sets(res.fold_winners, z.shape[1], 0.1, res.identification.similarity)
    for s, t in zip(res.prediction_sets, expect):
        np.testing.assert_array_equal(s, t)
    # default n_folds = ceil(2/alpha) - 1
    res = neurocert.bootstrap_explain(a, z, metric="auroc", mode="split", alpha=0.1, rng=3)
    assert res.fold_winners.shape[0] == 19
    # each fold winner is the argmax on that fold's samples
    p = prepare(a, z, metric="auroc")
    fw = _fold_weights(p, as_seed_sequence(3), 19)
    assert np.all(fw.sum(axis=0) == 1) and fw.sum(axis=1).max() - fw.sum(axis=1).min() <= 1
    for f in (0, 7):
        rows = fw[f] > 0
        with _quiet_ctx():
            s = neurocert.similarity(a[rows], z[rows], metric="auroc")
        assert [ref_argmax(r, 0.0)[0] for r in s] == res.fold_winners[f].tolist()
    both = neurocert.bootstrap_explain(a, z, metric="auroc", mode="both", alpha=0.1, rng=3,
                                       n_boot=20)
    assert both.coverage_target == COVERAGE_TARGETS["bootstrap"]
    for s, t in zip(both.split_sets, res.split_sets):
        np.testing.assert_array_equal(s, t)


def test_split_folds_keep_groups_whole():
    a, z = smooth_data(200)
    groups = np.arange(200) % 40
    p = prepare(a, z, metric="auroc", groups=groups)
    fw = _fold_weights(p, as_seed_sequence(1), 19)
    for g in range(40):
        members = np.flatnonzero(groups == g)
        assert len({int(np.argmax(fw[:, i])) for i in members}) == 1


# --------------------------------------------------------------------------- #
# 7. pruning
# --------------------------------------------------------------------------- #

def _pruning_share(a, z, metric, kw, eps, b=2000, seed=17):
    p = prepare(a, z, metric=metric, **kw)
    with _quiet_ctx():
        sim = neurocert.similarity(a, z, metric=metric, **kw)
    cands, _ = prune_candidates(p, sim, eps)
    missed = 0
    mean_cands = float(np.mean([len(c) for c in cands]))
    for b0 in range(0, b, 500):
        w = replicate_weights(seed, range(b0, b0 + 500), p.n_samples)
        pr = replicate_explanations(p, w, candidates=cands)
        un = replicate_explanations(p, w)
        for j in range(p.n_neurons):
            out = ~np.isin(un.winner[:, j], cands[j]) & (un.winner[:, j] >= 0)
            missed += int(out.sum())
            # wherever the unpruned winner was kept, the pruned engine agrees
            np.testing.assert_array_equal(pr.winner[~out, j], un.winner[~out, j])
    share = missed / (b * p.n_neurons)
    pval = stats.binomtest(missed, b * p.n_neurons, eps, alternative="greater").pvalue
    return share, mean_cands, pval


@pytest.fixture(scope="module")
def near_tie():
    a, z, _ = near_tie_concepts(2000, n_concepts=40, m_tied=20, concept_freq=0.2, rng=0)
    return np.asarray(a), np.asarray(z)


@pytest.mark.parametrize("eps", [1e-4, 0.05])
def test_pruning_auroc_near_tie(near_tie, eps):
    a, z = near_tie
    share, mean_cands, pval = _pruning_share(a, z, "auroc", {}, eps)
    assert pval > 1e-3, (share, mean_cands)
    assert mean_cands < z.shape[1]  # it prunes something (the clearly worse concepts)


@pytest.mark.parametrize("metric,kw", [("iou", {"threshold": 1.0}), ("f1", {"top_frac": 0.2}),
                                       ("recall", {"top_frac": 0.1})])
def test_pruning_count_metrics(near_tie, metric, kw):
    a, z = near_tie
    share, mean_cands, pval = _pruning_share(a, z, metric, kw, 0.05, b=1000)
    assert pval > 1e-3, (share, mean_cands)


@pytest.fixture(scope="module")
def near_tie_small():
    a, z, _ = near_tie_concepts(300, n_concepts=40, m_tied=20, concept_freq=0.2, rng=1)
    return np.asarray(a), np.asarray(z)


@pytest.mark.parametrize("metric,kw", [
    ("auroc", {}),
    pytest.param("iou", {"threshold": 1.0}),
    ("f1", {"top_frac": 0.2}),
    ("precision", {"threshold": 1.0}),
])
def test_pruning_small_n_default_epsilon(near_tie_small, metric, kw):
    # n=300, default prune_epsilon: observed share for IoU is ~0.8 (bug), 0 elsewhere
    a, z = near_tie_small
    share, mean_cands, pval = _pruning_share(a, z, metric, kw, 1e-4, b=1000)
    assert pval > 1e-3, (share, mean_cands)


# --------------------------------------------------------------------------- #
# 8. stability scores
# --------------------------------------------------------------------------- #

def test_stability_scores_from_definitions():
    rng = np.random.default_rng(21)
    n = 80
    z = (rng.random((n, 5)) < 0.3).astype(float)
    a = rng.normal(size=(n, 3))
    a[:, 0] += 2.0 * z[:, 1]
    z[0, 0] = 1.0
    a[:, 2] = -10.0
    a[0, 2] = 10.0  # neuron 2 fires on sample 0 only: "none" whenever sample 0 is not drawn
    b, alpha, kw = 80, 0.2, {"threshold": 0.5}
    res = neurocert.bootstrap_explain(a, z, metric="f1", n_boot=b, rng=6, alpha=alpha,
                                      batch_size=1000, **kw)
    w = replicate_weights(6, range(b), n)
    sims = materialized_sims(a, z, "f1", kw, w)
    winner, n_tied, votes = ref_votes(sims, 0.0)
    np.testing.assert_array_equal(res.winners, winner)
    np.testing.assert_array_equal(res.ties, n_tied)
    np.testing.assert_allclose(res.probabilities, votes[:, :-1] / b, rtol=0, atol=1e-12)
    np.testing.assert_allclose(res.none_probability, votes[:, -1] / b, rtol=0, atol=1e-12)
    assert 0.1 < res.none_probability[2] < 0.7
    full = np.concatenate([res.probabilities, res.none_probability[:, None]], axis=1)
    sim = res.identification.similarity
    for j in range(3):
        pj = full[j].tolist()
        assert res.mode_frequency[j] == pytest.approx(max(pj), abs=1e-12)
        assert res.agreement[j] == pytest.approx(sum(x * x for x in pj), abs=1e-12)
        assert res.entropy[j] == pytest.approx(-sum(x * math.log(x) for x in pj if x > 0), abs=1e-12)
        counts = [round(x * b) for x in pj]
        ref_set = ref_prediction_set(counts, b, sim[j], alpha)
        assert res.prediction_sets[j].tolist() == ref_set
        assert res.set_size[j] == len(ref_set)
        best = res.identification.best[j]
        assert res.self_in_set[j] == (best in ref_set)
        for c in range(z.shape[1]):
            p = pj[c]
            assert res.standard_error[j, c] == pytest.approx(math.sqrt(p * (1 - p) / b), abs=1e-12)
    # descriptive percentile intervals of the tracked (top-k) concepts
    top = res.interval_concepts
    np.testing.assert_array_equal(top, res.identification.top)
    for j in (0, 1):
        for r, c in enumerate(top[j]):
            vals = [sims[i, j, c] for i in range(b)]
            lo, hi = res.intervals[j, r]
            assert lo == pytest.approx(ref_quantile(vals, alpha / 2), abs=1e-12)
            assert hi == pytest.approx(ref_quantile(vals, 1 - alpha / 2), abs=1e-12)


# --------------------------------------------------------------------------- #
# 9. checkpoint / resume
# --------------------------------------------------------------------------- #

def _interrupting(monkeypatch, at_call: int):
    real = nb.replicate_explanations
    calls = {"n": 0}

    def fake(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)
    monkeypatch.setattr(nb, "replicate_explanations", fake)
    return real


def test_checkpoint_resume_is_bitwise(tmp_path, monkeypatch):
    a, z = smooth_data(150)
    kw = dict(metric="iou", top_frac=0.1, n_boot=50, rng=9, batch_size=10, alpha=0.2)
    ref = neurocert.bootstrap_explain(a, z, **kw)
    ck = tmp_path / "run.npz"
    real = _interrupting(monkeypatch, 3)
    with pytest.warns(UserWarning, match="interrupted after 20"):
        with pytest.raises(KeyboardInterrupt):
            neurocert.bootstrap_explain(a, z, checkpoint=ck, **kw)
    monkeypatch.setattr(nb, "replicate_explanations", real)
    with np.load(ck) as f:
        assert int(f["done"]) == 20
        np.testing.assert_array_equal(f["winners"], ref.winners[:20])
        np.testing.assert_array_equal(f["ties"], ref.ties[:20])
        assert f["track"].shape[0] == 20
    # resume: only the missing chunks are computed
    calls = []

    def counting(*args, **kwargs):
        calls.append(args[1].shape[0])
        return real(*args, **kwargs)
    monkeypatch.setattr(nb, "replicate_explanations", counting)
    resumed = neurocert.bootstrap_explain(a, z, checkpoint=ck, **kw)
    monkeypatch.setattr(nb, "replicate_explanations", real)
    assert sum(calls) == 30
    _same_result(resumed, ref)
    np.testing.assert_array_equal(resumed.standard_error, ref.standard_error)
    # a checkpoint written with other parameters is refused
    with pytest.raises(ValidationError, match="other parameters"):
        neurocert.bootstrap_explain(a, z, checkpoint=ck, **{**kw, "alpha": 0.1})
    with pytest.raises(ValidationError, match="other parameters"):
        neurocert.bootstrap_explain(a, z, checkpoint=ck, **{**kw, "rng": 10})
    with pytest.raises(ValidationError, match="other parameters"):
        neurocert.bootstrap_explain(a[:, :3], z, checkpoint=ck, **kw)


def test_checkpoint_resume_with_default_rng(tmp_path, monkeypatch):
    a, z = smooth_data(150)
    ck = tmp_path / "run.npz"
    real = _interrupting(monkeypatch, 2)
    with pytest.warns(UserWarning), pytest.raises(KeyboardInterrupt):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=30, batch_size=10, checkpoint=ck)
    monkeypatch.setattr(nb, "replicate_explanations", real)
    res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=30, batch_size=10, checkpoint=ck)
    assert res.n_boot == 30


def test_checkpoint_from_other_data_is_refused(tmp_path, monkeypatch):
    a, z = smooth_data(150)
    a2 = a[::-1].copy()
    ck = tmp_path / "run.npz"
    kw = dict(metric="auroc", n_boot=30, rng=1, batch_size=10)
    real = _interrupting(monkeypatch, 3)
    with pytest.warns(UserWarning), pytest.raises(KeyboardInterrupt):
        neurocert.bootstrap_explain(a, z, checkpoint=ck, **kw)
    monkeypatch.setattr(nb, "replicate_explanations", real)
    with pytest.raises(ValidationError):
        neurocert.bootstrap_explain(a2, z, checkpoint=ck, **kw)


# --------------------------------------------------------------------------- #
# 10. save / load
# --------------------------------------------------------------------------- #

def _saved_and_loaded(tmp_path, mode):
    pytest.importorskip("pyarrow")
    a, z = smooth_data(200)
    res = neurocert.bootstrap_explain(a, z, metric="iou", threshold=0.5, n_boot=25, rng=2,
                                      mode=mode, alpha=0.1, prune=False,
                                      concept_names=[f"c{i}" for i in range(8)])
    path = res.save(tmp_path / f"out-{mode}")
    return res, neurocert.ExplanationResult.load(path)


@pytest.mark.parametrize("mode", ["bootstrap", "split", "both"])
def test_save_load_round_trip_fields(tmp_path, mode):
    res, back = _saved_and_loaded(tmp_path, mode)
    assert back.identification == res.identification
    for f in dataclasses.fields(res):
        if f.name in ("identification", "parameters", "timings"):
            continue
        x, y = getattr(res, f.name), getattr(back, f.name)
        if isinstance(x, np.ndarray):
            assert x.shape == y.shape and np.array_equal(x, y, equal_nan=True), f.name
        elif isinstance(x, tuple):
            assert len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y)), f.name
        else:
            assert x == y, f.name
    assert back.alpha == 0.1 and back.mode == mode
    lost = {k: v for k, v in res.parameters.items() if back.parameters.get(k, "<missing>") != v}
    assert not lost, lost
    frame = res.to_frame()
    assert len(frame) == 4
    assert ("split_set" in frame.columns) == (mode == "both")
    assert list(frame["neuron"]) == res.neuron_names
    assert list(back.to_frame()["prediction_set"]) == list(frame["prediction_set"])


@pytest.mark.parametrize("mode", ["bootstrap", "split", "both"])
def test_save_load_round_trip(tmp_path, mode):
    res, back = _saved_and_loaded(tmp_path, mode)
    assert back == res


# --------------------------------------------------------------------------- #
# 11. bad input
# --------------------------------------------------------------------------- #

def test_bad_parameters_rejected():
    a, z = smooth_data(100)
    for alpha in (0, 1, -0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValidationError, match="alpha"):
            neurocert.bootstrap_explain(a, z, metric="auroc", alpha=alpha, n_boot=5)
    for n_boot in (0, -1, 2.5, True, None):
        with pytest.raises(ValidationError, match="n_boot"):
            neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=n_boot)
    with pytest.raises(ValidationError, match="mode"):
        neurocert.bootstrap_explain(a, z, metric="auroc", mode="jackknife", n_boot=5)
    with pytest.raises(ValidationError, match="scheme"):
        neurocert.bootstrap_explain(a, z, metric="auroc", scheme="bayesian", n_boot=5)
    with pytest.raises(ValidationError, match="batch_size"):
        neurocert.bootstrap_explain(a, z, metric="auroc", batch_size=0, n_boot=5)
    with pytest.raises(ValidationError, match="method"):
        neurocert.bootstrap_explain(a, z, metric="auroc", method=3, n_boot=5)
    with pytest.raises(ValidationError, match="at least 2 concepts"):
        neurocert.bootstrap_explain(a, z[:, :1], metric="auroc", n_boot=5)


def test_black_box_method_validated():
    a, z = smooth_data(100)
    with pytest.raises(ValidationError, match="one concept index per neuron"):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=3,
                                    method=lambda w: np.zeros(3, int))
    with pytest.raises(ValidationError, match="out of range"):
        neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=3,
                                    method=lambda w: np.full(4, 8))
    res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=5, rng=1,
                                      method=lambda w: np.array([1, -1, 2, 2]))
    assert res.probabilities[0, 1] == 1 and res.none_probability[1] == 1
    assert res.prediction_sets[1].tolist() == [-1]
    assert np.isnan(res.intervals).all()


def _never_active_check(res):
    assert np.all(res.winners[:, 0] == -1)
    assert res.none_probability[0] == 1.0
    assert res.prediction_sets[0].tolist() == [-1]
    assert res.identification.best[0] == -1
    assert bool(res.self_in_set[0])


def test_never_active_neuron_unpruned():
    a, z = smooth_data(120)
    a = a.copy()
    a[:, 0] = -5.0
    with pytest.warns(neurocert.UndefinedSimilarityWarning):
        res = neurocert.bootstrap_explain(a, z, metric="precision", threshold=0.0, n_boot=20,
                                          rng=1, prune=False)
    _never_active_check(res)
    assert res.none_probability[1] < 1.0


def test_never_active_neuron_default_pruning():
    a, z = smooth_data(120)
    a = a.copy()
    a[:, 0] = -5.0  # threshold above max -> precision NaN for every concept
    with pytest.warns(neurocert.UndefinedSimilarityWarning):
        res = neurocert.bootstrap_explain(a, z, metric="precision", threshold=0.0, n_boot=20,
                                          rng=1)
    _never_active_check(res)


def test_identical_activations_split_all_votes():
    rng = np.random.default_rng(4)
    n = 150
    z = (rng.random((n, 5)) < 0.4).astype(float)
    a = np.ones((n, 2))
    b = 40
    res = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=b, rng=3, batch_size=b)
    np.testing.assert_array_equal(res.identification.similarity, 0.5)
    w = replicate_weights(3, range(b), n)
    present = w @ z
    expect = np.zeros(5)
    for i in range(b):
        defined = (present[i] > 0) & (present[i] < n)
        expect[defined] += 1.0 / defined.sum()
    for j in range(2):
        np.testing.assert_allclose(res.probabilities[j], expect / b, rtol=0, atol=1e-12)
        assert np.all(res.ties[:, j] == ((present > 0) & (present < n)).sum(axis=1))
        assert np.all(res.winners[:, j] == 0)
    assert res.set_size[0] >= 4  # all concepts nearly equally likely


# --------------------------------------------------------------------------- #
# 12. adaptive
# --------------------------------------------------------------------------- #

def _clear_data():
    rng = np.random.default_rng(0)
    n = 300
    z = (rng.random((n, 5)) < 0.3).astype(float)
    a = 3 * z[:, [0, 1]] + rng.normal(size=(n, 2))
    return a, z


def test_adaptive_stops_early_with_clear_winner():
    a, z = _clear_data()
    full = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=1000, rng=0)
    ada = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=1000, rng=0, adaptive=True)
    assert 200 <= ada.n_boot < 1000 and ada.n_boot % 100 == 0
    assert ada.winners.shape[0] == ada.n_boot
    for s, t in zip(ada.prediction_sets, full.prediction_sets):
        np.testing.assert_array_equal(s, t)
    # the replicates it did run are the full run's first ones
    np.testing.assert_array_equal(ada.winners, full.winners[:ada.n_boot])
    # non-adaptive ignores the tolerance
    assert full.n_boot == 1000


def test_adaptive_stop_independent_of_batch_size():
    a, z = _clear_data()
    r50 = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=2000, rng=0, adaptive=True)
    r7 = neurocert.bootstrap_explain(a, z, metric="auroc", n_boot=2000, rng=0, adaptive=True,
                                     batch_size=7)
    assert r7.n_boot == r50.n_boot
