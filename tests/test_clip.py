"""CLIP-Dissect similarity functions, weighted top-k and BE (neurocert.dissect.clip).

Every fast kernel is compared with slow code written here straight from the
definitions (explicit loops over neurons, concepts, rank slots and samples in Python
floats); the weighted top-k with ``np.repeat`` materialisation, bit for bit.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from neurocert.dissect import clip
from neurocert.dissect import clip_kernels as ck
from neurocert.exceptions import (
    NoBoundWarning,
    UndefinedSimilarityWarning,
    ValidationError,
)
from neurocert.explanation import ExplanationResult
from neurocert.resample import as_seed_sequence, replicate_weights


# --------------------------------------------------------------------------- references
def ref_slots(a_col, k, w=None):
    """Sample in each of the k top slots: descending activation, ties by lower index,
    a sample of weight w taking w consecutive slots."""
    n = len(a_col)
    order = sorted(range(n), key=lambda i: (-float(a_col[i]), i))
    out = []
    for i in order:
        copies = 1 if w is None else int(w[i])
        for _ in range(copies):
            if len(out) == k:
                return out
            out.append(i)
    if len(out) < k:
        raise ValueError("not enough weight")
    return out


def ref_pmi(act, q, *, k, lam, min_prob, soft, p_start=0.998, p_end=0.97, w=None):
    """soft-WPMI (``soft``) or WPMI from the definitions, with q = P(d|x)."""
    _n, n_neurons = act.shape
    c = q.shape[1]
    log_given = [[0.0] * c for _ in range(n_neurons)]
    for j in range(n_neurons):
        s = ref_slots(act[:, j], k, w)
        for d in range(c):
            total = 0.0
            for r, i in enumerate(s):
                qq = float(q[i, d])
                if soft:
                    p = p_start - r / k * (p_start - p_end)
                    total += math.log(1 + p * (qq - 1) + min_prob)
                else:
                    total += math.log(qq + min_prob)
            log_given[j][d] = total
    out = np.empty((n_neurons, c))
    for d in range(c):
        m = max(log_given[j][d] for j in range(n_neurons))
        prior = m + math.log(sum(math.exp(log_given[j][d] - m) for j in range(n_neurons))) \
            - math.log(n_neurons)
        for j in range(n_neurons):
            out[j, d] = log_given[j][d] - lam * prior
    return out


def ref_rank_reorder(act, raw, *, power=3.0, top_fraction=0.05, scale_p=0.5, w=None):
    n, n_neurons = act.shape
    total = n if w is None else int(sum(w))
    t = int(total * top_fraction)
    c = raw.shape[1]
    out = np.empty((n_neurons, c))
    for j in range(n_neurons):
        s = ref_slots(act[:, j], t, w)
        target = [float(act[i, j]) for i in s]            # descending
        ascending = target[::-1]
        base = sum(abs(x - y) ** power for x in target for y in target) / t**2
        for d in range(c):
            vals = [float(raw[i, d]) for i in s]
            by_value = sorted(range(t), key=lambda r: (vals[r], r))
            rank = [0] * t
            for position, r in enumerate(by_value):
                rank[r] = position
            err = sum(abs(target[r] - ascending[rank[r]]) ** power for r in range(t)) / t
            avg = sum(vals) / t
            out[j, d] = -(err / base) / avg**scale_p
    return out


def ref_cos(act, raw, *, cubed=False, min_norm=1e-3, w=None):
    n, n_neurons = act.shape
    c = raw.shape[1]
    w = [1.0] * n if w is None else [float(x) for x in w]
    tw = sum(w)
    out = np.empty((n_neurons, c))
    for j in range(n_neurons):
        x = [float(act[i, j]) for i in range(n)]
        if cubed:
            mx = sum(wi * xi for wi, xi in zip(w, x)) / tw
            x = [(xi - mx) ** 3 for xi in x]
        nx = math.sqrt(sum(wi * xi * xi for wi, xi in zip(w, x)))
        for d in range(c):
            y = [float(raw[i, d]) for i in range(n)]
            if cubed:
                my = sum(wi * yi for wi, yi in zip(w, y)) / tw
                y = [(yi - my) ** 3 for yi in y]
            ny = math.sqrt(sum(wi * yi * yi for wi, yi in zip(w, y)))
            if cubed:
                nx_, ny_ = max(nx, min_norm), max(ny, min_norm)
            else:
                nx_, ny_ = nx, ny
            out[j, d] = sum(wi * xi * yi for wi, xi, yi in zip(w, x, y)) / nx_ / ny_
    return out


def ref_softmax(cos, a):
    out = np.empty_like(cos, dtype=float)
    for i in range(cos.shape[0]):
        e = [math.exp(a * float(v)) for v in cos[i]]
        s = sum(e)
        out[i] = [v / s for v in e]
    return out


# --------------------------------------------------------------------------- data
def planted(n=60, n_neurons=4, n_concepts=5, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    z = (rng.random((n, n_concepts)) < 0.35).astype(float)
    mix = rng.normal(size=(n_concepts, n_neurons))
    act = z @ mix + 0.3 * rng.normal(size=(n, n_neurons))
    if ties:
        act = np.round(act)  # many exact ties, also at the top-k boundary
    cos = np.clip(0.2 + 0.1 * z + 0.05 * rng.normal(size=z.shape), -1, 1)
    return act, z, cos


KW = {"dtype": "float64"}


# --------------------------------------------------------------------------- ranking, slots
@pytest.mark.parametrize("ties", [False, True])
def test_top_order_matches_stable_sort(ties):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 5, size=(80, 7)).astype(float) if ties else rng.normal(size=(80, 7))
    full = np.argsort(-a, axis=0, kind="stable").T
    for m in (1, 3, 10, 40, 79, 80, 200):
        got = ck._top_order(a, m)
        np.testing.assert_array_equal(got, full[:, :min(m, 80)])


def test_slots_equal_reference_with_weights():
    act, _, _ = planted(ties=True)
    seed = as_seed_sequence(3)
    w_all = replicate_weights(seed, range(6), act.shape[0])
    for w in list(w_all) + [replicate_weights(seed, range(2), act.shape[0], scheme="poisson")[1]]:
        r = ck.Ranking(act)
        for k in (1, 7, 25):
            got = ck.slots(r, w, k)
            for j in range(act.shape[1]):
                assert got[j].tolist() == ref_slots(act[:, j], k, w)


# --------------------------------------------------------------------------- functions
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("kind", ["cosine", "probability"])
def test_soft_wpmi_and_wpmi_match_reference(ties, kind):
    act, z, cos = planted(ties=ties)
    values = cos if kind == "cosine" else z
    for function, k, a, lam in (("soft_wpmi", 12, 10.0, 1.0), ("wpmi", 7, 2.0, 0.6)):
        q = ref_softmax(values, a) if kind == "cosine" else values
        want = ref_pmi(act, q, k=k, lam=lam, min_prob=1e-7, soft=function == "soft_wpmi")
        got = clip.concept_scores(act, values, kind=kind, function=function, top_k=k, **KW)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
        # float32 log terms (CLIP-Dissect's precision) agree to float32 accuracy
        got32 = clip.concept_scores(act, values, kind=kind, function=function, top_k=k)
        np.testing.assert_allclose(got32, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("k", [1, 5, 13, 30])
@pytest.mark.parametrize(("p_start", "p_end", "min_prob"), [(0.998, 0.97, 1e-7),
                                                          (1.0, 0.5, 1e-7), (0.9, 0.9, 1e-3)])
def test_soft_wpmi_rank_groups_match_reference(k, p_start, p_end, min_prob):
    """Slots are multiplied in groups before one log; any k, any weights schedule."""
    act, z, _ = planted(n=40, n_neurons=3, ties=True)
    want = ref_pmi(act, z, k=k, lam=0.7, min_prob=min_prob, soft=True, p_start=p_start,
                   p_end=p_end)
    for dtype, tol in (("float64", 1e-10), ("float32", 1e-4)):
        got = clip.concept_scores(act, z, kind="probability", top_k=k, lam=0.7,
                                  min_prob=min_prob, p_start=p_start, p_end=p_end, dtype=dtype)
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    g = ck.group_size(ck.Options("soft_wpmi", p_start=p_start, min_prob=min_prob),
                      np.dtype(np.float32))
    assert (1 - p_start + min_prob) ** g > np.finfo(np.float32).tiny


def test_soft_wpmi_defaults_are_clip_dissects():
    act, _z, cos = planted(n=150, n_neurons=3)
    want = ref_pmi(act, ref_softmax(cos, 10.0), k=100, lam=1.0, min_prob=1e-7, soft=True)
    np.testing.assert_allclose(clip.concept_scores(act, cos, kind="cosine", **KW), want,
                               rtol=1e-10)
    want = ref_pmi(act, ref_softmax(cos, 2.0), k=28, lam=0.6, min_prob=1e-7, soft=False)
    np.testing.assert_allclose(
        clip.concept_scores(act, cos, kind="cosine", function="wpmi", **KW), want, rtol=1e-10)
    # rank weights: 0.998 falling by 0.028/k per rank (CLIP-Dissect's arange(k)/k)
    w = ck.rank_weights(ck.Options("soft_wpmi"), np.dtype(np.float64))
    assert w[0] == 0.998 and w.shape == (100,)
    np.testing.assert_allclose(np.diff(w), -0.028 / 100)
    assert abs(w[-1] - 0.97028) < 1e-12


@pytest.mark.parametrize("ties", [False, True])
def test_rank_reorder_matches_reference(ties):
    act, _, cos = planted(n=120, ties=ties)
    for frac, power, scale in ((0.1, 3.0, 0.5), (0.25, 2.0, 1.0)):
        want = ref_rank_reorder(act, cos, power=power, top_fraction=frac, scale_p=scale)
        got = clip.concept_scores(act, cos, kind="cosine", function="rank_reorder",
                                  top_fraction=frac, power=power, scale_p=scale)
        np.testing.assert_allclose(got, want, rtol=1e-10)


@pytest.mark.parametrize("function", ["cos", "cos_cubed"])
def test_cosines_match_reference_and_weights(function):
    act, _, cos = planted(n=50)
    want = ref_cos(act, cos, cubed=function == "cos_cubed")
    got = clip.concept_scores(act, cos, kind="cosine", function=function)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    w = np.arange(50) % 3
    want = ref_cos(act, cos, cubed=function == "cos_cubed", w=w)
    got = clip.concept_scores(act, cos, kind="cosine", function=function, sample_weight=w)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # non-integer weights are fine for the cosines
    clip.concept_scores(act, cos, kind="cosine", function=function, sample_weight=w + 0.5)


def test_labels_are_argmax_with_lowest_index_on_ties():
    act, z, _ = planted(n=80, n_concepts=3)
    zz = np.concatenate([z[:, [1]], z, z[:, [1]]], axis=1)  # concepts 0, 2 and 4 identical
    with pytest.warns(NoBoundWarning):
        res = clip.clip_dissect(act, clip.from_labels(zz), top_k=20, **KW)
    sim = res.similarity
    for j in range(act.shape[1]):
        best = max(range(zz.shape[1]), key=lambda c: (sim[j, c], -c))
        assert res.best[j] == best
        assert sim[j, 0] == sim[j, 2] == sim[j, 4]
    assert {int(b) for b in res.best} <= {0, 1, 3}
    # NaN never wins
    act2, _, cos = planted(n=60, n_concepts=3)
    cos2 = cos.copy()
    cos2[:, 0] = 0.0  # zero column: cosine undefined
    with pytest.warns(UndefinedSimilarityWarning):
        s = clip.concept_scores(act2, cos2, kind="cosine", function="cos")
    assert np.isnan(s[:, 0]).all()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = clip.clip_dissect(act2, cos2, kind="cosine", function="cos")
    assert (res.best != 0).all()


def test_errors_name_the_problem():
    act, z, cos = planted(n=30)
    with pytest.raises(ValidationError, match="`top_k`=31 exceeds the 30 samples"):
        clip.concept_scores(act, z, kind="probability", top_k=31)
    with pytest.raises(ValidationError, match="`top_k`=100 exceeds"):  # the default
        clip.concept_scores(act, z, kind="probability")
    with pytest.raises(ValidationError, match="exceeds the 12 samples"):
        clip.concept_scores(act, z, kind="probability", top_k=13,
                            sample_weight=np.r_[np.ones(12), np.zeros(18)])
    with pytest.raises(ValidationError, match="non-negative integers"):
        clip.concept_scores(act, z, kind="probability", top_k=5, sample_weight=np.full(30, 0.5))
    with pytest.raises(ValidationError, match="kind="):
        clip.concept_scores(act, z, top_k=5)
    with pytest.raises(ValidationError, match="`a`"):
        clip.concept_scores(act, z, kind="probability", top_k=5, a=3.0)
    with pytest.raises(ValidationError, match="`function` must be one of"):
        clip.concept_scores(act, z, kind="probability", function="iou")
    with pytest.raises(ValidationError, match="lie in \\[0, 1\\]"):
        clip.from_labels(z * 2)
    with pytest.raises(ValidationError, match="lie in \\[-1"):
        clip.from_precomputed(cos * 3)
    with pytest.raises(ValidationError, match="30 samples \\(axis 0\\) but `activations` has 29"):
        clip.concept_scores(act[:29], z, kind="probability", top_k=5)
    with pytest.raises(ValidationError, match="= 0 top samples"):
        clip.concept_scores(act, cos, kind="cosine", function="rank_reorder", top_fraction=0.01)
    with pytest.raises(ValidationError, match="`p_end`"):
        clip.concept_scores(act, z, kind="probability", top_k=5, p_start=0.9, p_end=0.95)
    with pytest.raises(ValidationError, match="exactly one"):
        clip.from_classifier(z, logits=z)
    with pytest.raises(ValidationError, match="predictive"):
        clip.clip_dissect_explain(act, z, kind="probability", top_k=20, n_boot=2,
                                  scheme="predictive")


def test_classifier_logits_are_a_softmax():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(20, 4)) * 3
    cm = clip.from_classifier(logits=logits, concept_names=list("abcd"))
    np.testing.assert_allclose(cm.values, ref_softmax(logits, 1.0), rtol=1e-12)
    assert cm.kind == "probability" and cm.source == "classifier"


def test_neuron_blocks_do_not_change_scores(monkeypatch):
    act, _z, cos = planted(n=90, n_neurons=9)
    for function, kw in (("soft_wpmi", {"top_k": 20}), ("wpmi", {"top_k": 9}),
                         ("rank_reorder", {"top_fraction": 0.2})):
        full = clip.concept_scores(act, cos, kind="cosine", function=function, **kw)
        monkeypatch.setattr(ck, "BLOCK_ELEMENTS", 1)
        small = clip.concept_scores(act, cos, kind="cosine", function=function, **kw)
        monkeypatch.undo()
        np.testing.assert_array_equal(full, small)


# --------------------------------------------------------------------------- weights == copies
@pytest.mark.filterwarnings("ignore::neurocert.exceptions.UndefinedSimilarityWarning")
@pytest.mark.parametrize("function", ["soft_wpmi", "wpmi", "rank_reorder", "cos", "cos_cubed"])
@pytest.mark.parametrize("kind", ["cosine", "probability"])
def test_weighted_equals_repeat_materialisation(function, kind):
    act, z, cos = planted(n=200, n_neurons=6, ties=True)
    values = cos if kind == "cosine" else z
    kw = {"top_k": 30} if function in ("soft_wpmi", "wpmi") else {}
    if function == "rank_reorder":
        kw = {"top_fraction": 0.1}
    seed = as_seed_sequence(11)
    weights = np.concatenate([replicate_weights(seed, range(4), 200),
                              replicate_weights(seed, range(4, 6), 200, scheme="poisson")])
    for w in weights:
        reps = w.astype(np.int64)
        weighted = clip.concept_scores(act, values, kind=kind, function=function,
                                       sample_weight=w, **kw)
        materialised = clip.concept_scores(np.repeat(act, reps, axis=0),
                                           np.repeat(values, reps, axis=0), kind=kind,
                                           function=function, **kw)
        if function in ("cos", "cos_cubed"):  # weighted sums: equal up to rounding
            np.testing.assert_allclose(weighted, materialised, rtol=1e-12, atol=1e-12)
        else:  # the same slots read the same values in the same order
            np.testing.assert_array_equal(weighted, materialised)
        np.testing.assert_array_equal(weighted.argmax(axis=1), materialised.argmax(axis=1))


# --------------------------------------------------------------------------- BE
def test_explain_recomputes_topk_and_prior_per_replicate():
    act, _z, cos = planted(n=150, n_neurons=5, ties=True)
    cm = clip.from_precomputed(cos, concept_names=list("vwxyz"))
    with pytest.warns(NoBoundWarning):
        res = clip.clip_dissect_explain(act, cm, top_k=25, n_boot=12, rng=5)
    assert isinstance(res, ExplanationResult)
    w = replicate_weights(as_seed_sequence(5), range(12), 150)
    rows = np.arange(5)[:, None]
    tracked = []
    for b in range(12):
        reps = w[b].astype(np.int64)
        sim = clip.concept_scores(np.repeat(act, reps, axis=0), np.repeat(cos, reps, axis=0),
                                  kind="cosine", top_k=25)
        np.testing.assert_array_equal(res.winners[b], np.argmax(sim, axis=1))
        tracked.append(sim[rows, res.identification.top])
    tracked = np.stack(tracked)
    np.testing.assert_allclose(res.intervals[..., 0], np.quantile(tracked, 0.025, axis=0))
    np.testing.assert_allclose(res.intervals[..., 1], np.quantile(tracked, 0.975, axis=0))
    # probabilities are vote shares
    counts = np.zeros((5, 5))
    for b in range(12):
        counts[np.arange(5), res.winners[b]] += 1
    np.testing.assert_allclose(res.probabilities, counts / 12)
    # no bound: NaN columns, empty certified sets, the reason recorded
    ident = res.identification
    assert np.isnan(ident.lower).all() and np.isnan(ident.upper).all()
    assert all(len(s) == 0 for s in res.certified_sets)
    assert "no finite-sample bound" in ident.parameters["bound_note"]


def test_explain_batch_size_and_determinism():
    act, z, _ = planted(n=120, n_neurons=4)
    kw = {"kind": "probability", "top_k": 15, "n_boot": 9, "rng": 2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        a = clip.clip_dissect_explain(act, z, batch_size=1, **kw)
        b = clip.clip_dissect_explain(act, z, batch_size=4, **kw)
        c = clip.clip_dissect_explain(act, z, **kw)
    # the identification's delta is NaN (no bound) and NaN != NaN under `==`: compare the
    # fields (see _compare.results_equal)
    from neurocert._compare import results_equal

    for other in (b, c):
        assert results_equal(a, other, skip=("timings", "identification"))
        assert results_equal(a.identification, other.identification,
                             skip=("timings", "delta"))
    assert math.isnan(a.identification.delta)


def test_explain_planted_concept_is_stable(tmp_path):
    rng = np.random.default_rng(7)
    n = 800
    z = (rng.random((n, 6)) < 0.2).astype(float)
    act = np.stack([3 * z[:, 2], 3 * z[:, 4], np.zeros(n)], axis=1) + rng.normal(size=(n, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        res = clip.clip_dissect_explain(act, clip.from_labels(z), top_k=40, n_boot=60, rng=1)
    assert res.identification.best[:2].tolist() == [2, 4]
    assert res.prediction_sets[0].tolist() == [2] and res.prediction_sets[1].tolist() == [4]
    assert res.mode_frequency[:2].min() > 0.95
    # the noise neuron is unstable
    assert res.set_size[2] > 1
    # tables and files like any ExplanationResult
    pytest.importorskip("pandas")
    frame = res.to_frame()
    assert frame["prediction_set"][0].startswith("2 (") and np.isnan(frame["lower"]).all()
    assert res.identification.summary().n_certified == 0
    pytest.importorskip("pyarrow")
    res.save(tmp_path / "be")
    back = ExplanationResult.load(tmp_path / "be")
    np.testing.assert_array_equal(back.probabilities, res.probabilities)
    assert back.identification.parameters["function"] == "soft_wpmi"


def test_layer_prior_depends_on_the_neurons_passed():
    """CLIP-Dissect's log P(d) pools the neurons passed together (documented)."""
    act, _z, cos = planted(n=100, n_neurons=6)
    all6 = clip.concept_scores(act, cos, kind="cosine", top_k=20, **KW)
    first3 = clip.concept_scores(act[:, :3], cos, kind="cosine", top_k=20, **KW)
    assert not np.allclose(all6[:3], first3)
    # lam = 0 removes the prior: then neurons are independent
    a = clip.concept_scores(act, cos, kind="cosine", top_k=20, lam=0.0, **KW)
    b = clip.concept_scores(act[:, :3], cos, kind="cosine", top_k=20, lam=0.0, **KW)
    np.testing.assert_array_equal(a[:3], b)


def test_bench_direct_loop_agrees():
    """The timing module's direct baseline (np.repeat + a loop over neurons with CLIP-Dissect's
    float32 terms) gives the BE replicates' labels."""
    from neurocert.dissect.clip_bench import run

    out = run(n_neurons=32, n_samples=300, n_concepts=20, n_boot=3, n_direct=3, seed=1)
    assert out["direct_label_agreement"] == 1.0
    assert out["explain_total_s"] > 0


def test_split_mode_folds_and_conformal_sets():
    from types import SimpleNamespace

    from neurocert.bootstrap import _fold_weights
    from neurocert.explanation import split_conformal_sets

    act, _z, cos = planted(n=400, n_neurons=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoBoundWarning)
        res = clip.clip_dissect_explain(act, cos, kind="cosine", top_k=8, mode="both",
                                        n_boot=6, rng=4, alpha=0.1)
        split = clip.clip_dissect_explain(act, cos, kind="cosine", top_k=8, mode="split",
                                          rng=4, alpha=0.1)
    k = math.ceil(2 / 0.1) - 1
    assert res.fold_winners.shape == (k, 5) and res.parameters["n_folds"] == k
    folds = _fold_weights(SimpleNamespace(groups=None, n_samples=400),
                          as_seed_sequence(4), k)
    for f in range(k):
        mask = folds[f] > 0  # a fold is the plain subset of its samples
        sim = clip.concept_scores(act[mask], cos[mask], kind="cosine", top_k=8)
        np.testing.assert_array_equal(res.fold_winners[f], sim.argmax(axis=1))
    want = split_conformal_sets(res.fold_winners, 5, 0.1, res.identification.similarity)
    for a, b, c in zip(res.split_sets, want, split.prediction_sets):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(c, b)
    assert split.mode == "split" and split.n_boot == 0 and res.n_boot == 6
    np.testing.assert_array_equal(split.fold_winners, res.fold_winners)
    with pytest.raises(ValidationError, match="fold 0 of 19"):
        clip.clip_dissect_explain(act, cos, kind="cosine", top_k=30, mode="split", rng=0,
                                  alpha=0.1)
    with pytest.raises(ValidationError, match="n_folds \\+ 1 >= 1/alpha"):
        clip.clip_dissect_explain(act, cos, kind="cosine", top_k=5, mode="split", n_folds=5)
