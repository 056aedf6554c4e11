"""Bound engines, the planning form, certified sets and layer summaries.

Statistical checks state their repetitions; each uses a one-sided binomial test
at 1e-3 against delta, so a correct bound fails with probability < 1e-3.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy import stats

import neurocert
from neurocert._intervals import bernstein_radius, clopper_pearson, kl_interval
from neurocert.bounds import threshold_band
from neurocert.identify import certified_sets, rank_concepts
from neurocert.simulate import GaussianNeuron
from neurocert.sufficient import Design

ALPHA_TEST = 1e-3


def _not_too_many(violations: int, reps: int, delta: float) -> bool:
    return stats.binomtest(int(violations), reps, delta, alternative="greater").pvalue >= ALPHA_TEST


# ---------------------------------------------------------------- intervals


@pytest.mark.parametrize("m", [1, 2, 7, 50, 333])
def test_clopper_pearson_matches_scipy(m):
    for k in range(0, m + 1, max(1, m // 11)):
        ci = stats.binomtest(k, m).proportion_ci(confidence_level=0.95, method="exact")
        lo, hi = clopper_pearson(k, m, 0.05)
        assert lo == pytest.approx(ci.low, abs=1e-12)
        assert hi == pytest.approx(ci.high, abs=1e-12)


def test_clopper_pearson_empty_denominator_is_vacuous():
    lo, hi = clopper_pearson(np.array([0.0]), np.array([0.0]), 0.05)
    assert (lo[0], hi[0]) == (0.0, 1.0)


def test_kl_interval_solves_the_chernoff_equation():
    mean = np.array([0.01, 0.2, 0.5, 0.93])
    m = np.array([50.0, 400.0, 30.0, 1000.0])
    delta = 0.05
    lo, hi = kl_interval(mean, m, delta)
    level = np.log(2 / delta) / m

    def kl(p, q):
        return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))

    inner = lo > 0
    assert np.allclose(kl(mean[inner], lo[inner]), level[inner], rtol=1e-9)
    assert np.allclose(kl(mean, hi), level, rtol=1e-9)
    assert np.all(lo <= mean) and np.all(mean <= hi)


def test_kl_interval_is_narrower_than_hoeffding_near_the_edges():
    lo, hi = kl_interval(0.98, 200, 0.05)
    hoeffding = math.sqrt(math.log(2 / 0.05) / (2 * 200))
    assert (hi - lo) < hoeffding  # full width below Hoeffding's half width


def test_kl_interval_coverage_for_bounded_non_bernoulli_variables():
    # 4000 repetitions of means of m = 40 Beta(0.5, 4) variables (mean 1/9)
    rng = np.random.default_rng(1)
    reps, m, delta = 4000, 40, 0.1
    x = rng.beta(0.5, 4.0, size=(reps, m)).mean(axis=1)
    lo, hi = kl_interval(x, m, delta)
    mu = 0.5 / 4.5
    assert _not_too_many(np.sum((mu < lo) | (mu > hi)), reps, delta)


def test_bernstein_radius_is_valid_and_below_hoeffding_for_small_variance():
    r_small = bernstein_radius(10_000, 0.001, 0.05)
    assert r_small < math.sqrt(math.log(40) / 20_000)
    rng = np.random.default_rng(2)
    reps, m, p, delta = 5000, 2000, 0.01, 0.05
    x = rng.binomial(m, p, size=reps) / m
    r = bernstein_radius(m, p * (1 - p), delta)
    assert _not_too_many(np.sum(np.abs(x - p) > r), reps, delta)


# ---------------------------------------------------------------- threshold band


@pytest.mark.parametrize("n,q", [(1000, 0.005), (10_000, 0.05), (100_000, 0.005)])
def test_threshold_band_quantiles_are_exact(n, q):
    d = Design(total=float(n), n_units=float(n), top_frac=q)
    k_lo, k_hi = threshold_band(d, 0.02)
    assert stats.binom.cdf(k_lo - 1, n, q) <= 0.01
    assert stats.binom.sf(k_hi, n, q) <= 0.01
    # and they are the tightest such integers
    assert stats.binom.cdf(k_lo, n, q) > 0.01
    assert stats.binom.sf(k_hi - 1, n, q) > 0.01


def test_threshold_band_grouped_covers_the_active_share():
    # 3000 repetitions of 200 groups of 50 pixels whose active fraction has mean q
    rng = np.random.default_rng(3)
    reps, g, s, q, dth = 3000, 200, 50, 0.05, 0.05
    d = Design(total=float(g * s), n_units=float(g), grouped=True, group_size=float(s),
               top_frac=q)
    k_lo, k_hi = threshold_band(d, dth)
    # worst case for concentration: a group is either all active or all inactive
    active = rng.binomial(g, q, size=reps) * s
    assert _not_too_many(np.sum((active < k_lo) | (active > k_hi)), reps, dth)


# ---------------------------------------------------------------- certified sets


def test_certified_set_and_regret_by_hand():
    sim = np.array([[0.50, 0.45, 0.20, np.nan]])
    lower = np.array([[0.40, 0.30, 0.10, 0.0]])
    upper = np.array([[0.60, 0.55, 0.39, 1.0]])
    order = rank_concepts(sim)
    assert order.tolist() == [[0, 1, 2, 3]]
    (s,) = certified_sets(lower, upper, order)
    # max lower = 0.40: concepts with upper >= 0.40 are 0, 1 and the undefined 3
    assert s.tolist() == [0, 1, 3]


def test_rank_concepts_ties_and_nan():
    v = np.array([[0.2, 0.7, 0.7, np.nan, -np.inf], [np.nan, np.nan, np.nan, np.nan, np.nan]])
    order = rank_concepts(v)
    assert order[0].tolist() == [1, 2, 0, 4, 3]
    r = neurocert.identify(np.array([[1.0], [0.0], [1.0], [0.0]]),
                           np.array([[1, 1, 0], [0, 0, 1], [1, 1, 0], [0, 0, 1]]),
                           metric="iou")
    assert r.best.tolist() == [0]  # concepts 0 and 1 tie exactly: lowest index wins


def test_identify_limits_contain_estimate_and_regret_formula():
    rng = np.random.default_rng(4)
    n, c = 4000, 12
    z = (rng.random((n, c)) < 0.1).astype(float)
    a = 1.5 * z[:, :6] + rng.normal(size=(n, 6))
    r = neurocert.identify(a, z, metric="recall", threshold=1.0)
    assert np.all(r.lower <= r.similarity + 1e-15) and np.all(r.similarity <= r.upper + 1e-15)
    rows = np.arange(6)
    np.testing.assert_allclose(r.regret_bound, r.upper.max(axis=1) - r.lower[rows, r.best])
    assert r.labels == [str(i) for i in range(6)]
    for j, s in enumerate(r.certified_sets):
        assert r.best[j] in s
        assert np.all(r.upper[j, s] >= r.lower[j].max())


def test_more_concepts_widen_the_simultaneous_limits():
    rng = np.random.default_rng(5)
    z = (rng.random((3000, 40)) < 0.2).astype(float)
    a = 1.0 * z[:, [0]] + rng.normal(size=(3000, 1))
    few = neurocert.identify(a, z[:, :2], metric="auroc")
    many = neurocert.identify(a, z, metric="auroc")
    assert many.lower[0, 0] < few.lower[0, 0]
    assert many.upper[0, 0] > few.upper[0, 0]


# ---------------------------------------------------------------- p-values and summaries


def _holm(p, d):
    m = len(p)
    order = np.argsort(p, kind="stable")
    out = np.zeros(m, bool)
    for rank, j in enumerate(order):
        if p[j] <= d / (m - rank):
            out[j] = True
        else:
            break
    return out


def _by(p, d):
    m = len(p)
    cm = sum(1 / i for i in range(1, m + 1))
    order = np.argsort(p, kind="stable")
    k = 0
    for rank, j in enumerate(order, start=1):
        if p[j] <= d * rank / (m * cm):
            k = rank
    out = np.zeros(m, bool)
    out[order[:k]] = True
    return out


@pytest.mark.parametrize("kw", [{"threshold": 1.0}, {"top_frac": 0.05}])
def test_summary_multiplicity_matches_reference_procedures(kw):
    rng = np.random.default_rng(6)
    n, c, neurons = 3000, 10, 30
    z = (rng.random((n, c)) < 0.15).astype(float)
    sep = np.linspace(0.0, 2.0, neurons)
    a = sep * z[:, np.arange(neurons) % c] + rng.normal(size=(n, neurons))
    r = neurocert.identify(a, z, metric="iou", **kw)
    level = 0.12
    p = r.p_values(level)
    assert np.all((p > 0) & (p <= 1))
    # consistency: p <= delta exactly when the lower limit at delta clears the level
    clear = r.best_lower > level
    near = np.abs(p - r.delta) < 1e-4 * r.delta
    if "threshold" in kw:
        assert np.array_equal((p <= r.delta)[~near], clear[~near])
    none = r.summary(level)
    assert np.array_equal(none.certified, clear)
    assert np.array_equal(r.summary(level, multiplicity="fwer").certified, _holm(p, r.delta))
    assert np.array_equal(r.summary(level, multiplicity="fdr").certified, _by(p, r.delta))
    assert 0 < r.summary(level, multiplicity="fwer").n_certified <= none.n_certified


@pytest.mark.slow
def test_selection_adjusted_p_values_are_valid_under_the_null():
    # 1000 probing sets; the neuron is independent of all 5 concepts, so the
    # population IoU of every concept is p_f p_c / (p_f + p_c - p_f p_c).
    rng = np.random.default_rng(7)
    reps, n, delta = 1000, 400, 0.1
    pf, pc = 0.3, 0.3
    level = pf * pc / (pf + pc - pf * pc)  # H0 holds with equality for every concept
    rejections = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(reps):
            a = (rng.random((n, 1)) < pf).astype(float)
            z = (rng.random((n, 5)) < pc).astype(float)
            r = neurocert.identify(a, z, metric="iou", delta=delta)
            rejections += int(r.p_values(level)[0] <= delta)
    assert _not_too_many(rejections, reps, delta)


def test_loaded_results_cannot_compute_p_values(tmp_path):
    a = np.array([[1.0], [0.0], [1.0], [0.0]])
    z = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    r = neurocert.identify(a, z, metric="iou")
    loaded = neurocert.IdentificationResult.load(r.save(tmp_path / "r"))
    assert loaded == r
    with pytest.raises(neurocert.ValidationError, match="p-values need the probing data"):
        loaded.p_values(0.1)
    with pytest.raises(neurocert.ValidationError, match="multiplicity"):
        r.summary(0.1, multiplicity="bonferroni")


# ---------------------------------------------------------------- grouped / unsupported


def test_grouped_top_frac_with_unequal_groups_has_no_bound():
    rng = np.random.default_rng(8)
    a = rng.normal(size=(300, 2))
    z = (rng.random((300, 3)) < 0.3).astype(float)
    groups = np.r_[np.repeat(np.arange(50), 5), np.repeat(np.arange(50, 75), 2)]
    with pytest.warns(neurocert.NoBoundWarning, match="equal total weight"):
        r = neurocert.identify(a, z, metric="iou", top_frac=0.1, groups=groups)
    assert np.isnan(r.lower).all() and np.isnan(r.upper).all()
    assert np.all(np.isnan(r.regret_bound))


def test_unbounded_metrics_warn_and_return_nan():
    rng = np.random.default_rng(9)
    a = rng.normal(size=(200, 2))
    z = (rng.random((200, 3)) < 0.3).astype(float)
    for metric in ("correlation", "cosine", "mad", "average_precision"):
        with pytest.warns(neurocert.NoBoundWarning):
            r = neurocert.identify(a, z, metric=metric)
        assert np.isnan(r.lower).all()
    with pytest.warns(neurocert.NoBoundWarning, match="grouped"):
        neurocert.identify(a, z, metric="auroc", groups=np.arange(200) // 4)


# ---------------------------------------------------------------- planning form


def test_planning_form_shapes_and_errors():
    r = neurocert.faithfulness_bound("iou", n=10_000, concept_freq=[0.5, 0.1, 0.01],
                                     neuron_freq=0.05)
    assert r.shape == (3,) and r[0] < r[1]  # rarer concepts: fewer positives
    acc = neurocert.faithfulness_bound("accuracy", n=10_000, n_concepts=1000)
    assert acc == pytest.approx(math.sqrt(math.log(2 * 1000 / 0.05) / 20_000))
    with pytest.raises(neurocert.ValidationError, match="concept_freq"):
        neurocert.faithfulness_bound("iou", n=100, neuron_freq=0.1)
    with pytest.raises(neurocert.ValidationError, match=r"\(0, 1\)"):
        neurocert.faithfulness_bound("iou", n=100, concept_freq=1.5, neuron_freq=0.1)
    with pytest.raises(neurocert.ValidationError, match="unknown metric"):
        neurocert.faithfulness_bound("nope", n=100)
    with pytest.warns(neurocert.NoBoundWarning):
        assert math.isnan(neurocert.faithfulness_bound("correlation", n=100, concept_freq=0.1))
    assert neurocert.faithfulness_bound("auroc", n=1000, concept_freq=0.001) == math.inf


@pytest.mark.parametrize("metric", ["precision", "recall", "iou", "f1", "balanced_accuracy",
                                    "accuracy"])
def test_planning_radius_is_valid_fixed_threshold(metric):
    # 20000 probing sets per setting drawn exactly from the 2x2 multinomial
    reps, delta = 20_000, 0.05
    rng = np.random.default_rng(10)
    for n, pc, pf in [(2000, 0.1, 0.05), (20_000, 0.01, 0.05), (5000, 0.5, 0.5)]:
        neuron = GaussianNeuron(concept_freq=pc, separation=2.0)
        t = neuron.threshold_for(pf)
        sim = neuron.population(metric, threshold=t)
        counts = neuron.sample_counts(n, reps, threshold=t, rng=rng)
        stats_ = neurocert.sufficient.CountStats(
            tp=counts["tp"][:, None].astype(float), active=counts["active"].astype(float),
            present=counts["present"].astype(float),
            design=Design(total=float(n), n_units=float(n)), per_neuron_concept=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = neurocert.get_metric(metric).finalize(stats_, neurocert.MetricOptions())[:, 0]
        r = neurocert.faithfulness_bound(metric, n=n, concept_freq=pc, neuron_freq=pf)
        if pc + pf >= 1:  # regression: the union of masses may exceed 1 at the lower corner
            assert r < 0.2, (metric, r)
        bad = np.sum(np.abs(est[~np.isnan(est)] - sim) > r)
        assert _not_too_many(bad, reps, delta), (metric, n, pc, bad / reps, r)


def test_planning_radius_is_valid_top_frac_and_auroc():
    # 1500 probing sets of n = 4000 samples
    reps, n, delta, q = 1500, 4000, 0.05, 0.05
    rng = np.random.default_rng(11)
    neuron = GaussianNeuron(concept_freq=0.1, separation=2.0)
    acts, conc = neuron.sample_many(n, reps, rng=rng, dtype=np.float64)
    k = int(neurocert.binarize.top_frac_target(q, n))
    order = np.argsort(-acts, axis=0)
    top = np.take_along_axis(conc, order, axis=0)[:k]
    tp = top.sum(axis=0)
    present = conc.sum(axis=0)
    est = {"precision": tp / k, "recall": tp / present, "iou": tp / (k + present - tp)}
    for metric, values in est.items():
        sim = neuron.population(metric, top_frac=q)
        r = neurocert.faithfulness_bound(metric, n=n, concept_freq=0.1, top_frac=q)
        assert _not_too_many(np.sum(np.abs(values - sim) > r), reps, delta), metric
    ranks = stats.rankdata(acts, axis=0)
    pos = conc.astype(bool)
    n1 = pos.sum(axis=0)
    auc = ((ranks * pos).sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * (n - n1))
    r = neurocert.faithfulness_bound("auroc", n=n, concept_freq=0.1)
    assert _not_too_many(np.sum(np.abs(auc - neuron.population("auroc")) > r), reps, delta)


@pytest.mark.parametrize("metric,kw", [
    ("iou", {"concept_freq": 0.1, "neuron_freq": 0.05}),
    ("recall", {"concept_freq": 0.01, "neuron_freq": 0.05}),
    ("precision", {"concept_freq": 0.1, "top_frac": 0.005}),
    ("auroc", {"concept_freq": 0.05}),
    ("accuracy", {"concept_freq": 0.5, "neuron_freq": 0.5}),
])
@pytest.mark.parametrize("target", ["estimation", "regret"])
def test_required_samples_is_the_smallest_n(metric, kw, target):
    eps = 0.1
    n = neurocert.required_samples(metric, eps, target=target, **kw)
    factor = 2 if target == "regret" else 1
    def bound(m):
        return factor * neurocert.faithfulness_bound(metric, n=m, **kw)
    assert bound(n) <= eps < bound(n - 1)


def test_required_samples_errors():
    with pytest.raises(neurocert.ValidationError, match="target"):
        neurocert.required_samples("iou", 0.1, concept_freq=0.1, neuron_freq=0.1, target="x")
    with pytest.raises(neurocert.ValidationError, match="epsilon"):
        neurocert.required_samples("iou", -1, concept_freq=0.1, neuron_freq=0.1)
    with pytest.raises(neurocert.ValidationError, match="no planning-form bound"):
        neurocert.required_samples("correlation", 0.1, concept_freq=0.1)


@pytest.mark.parametrize("metric", ["correlation", "cosine", "mad", "average_precision"])
def test_summary_of_metrics_without_bound_certifies_nothing(metric):
    """No bound: p-values are 1 with a NoBoundWarning, and fwer/fdr certify no neuron."""
    rng = np.random.default_rng(0)
    z = (rng.random((500, 3)) < 0.3).astype(float)
    a = 3 * z + rng.normal(size=(500, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", neurocert.NoBoundWarning)
        r = neurocert.identify(a, z, metric=metric)
    for mult in ("fwer", "fdr"):
        with pytest.warns(neurocert.NoBoundWarning):
            s = r.summary(0.1, multiplicity=mult)
        assert s.n_certified == 0 and np.all(s.p_values == 1)
