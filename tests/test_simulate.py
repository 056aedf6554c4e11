"""Tests of neurocert.simulate: closed forms against Monte Carlo, samplers, validation.

Statistical checks use fixed seeds and tolerances of 5 standard errors (or
p-values > 1e-3), so a correct implementation fails with probability < 1e-3.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from neurocert.exceptions import ValidationError
from neurocert.simulate import (
    POPULATION_METRICS,
    GaussianNeuron,
    NearTieConcepts,
    PlantedLayer,
    near_tie_concepts,
    planted_layer,
    probit_concept_auroc,
)

N_MC = 2_000_000
NEURON = GaussianNeuron(concept_freq=0.1, separation=2.0)


@pytest.fixture(scope="module")
def big_sample() -> tuple[np.ndarray, np.ndarray]:
    a, z = NEURON.sample(N_MC, rng=20240611)
    return a[:, 0], z[:, 0]


def _plugin(a: np.ndarray, z: np.ndarray, tau: float) -> dict[str, float]:
    """Plug-in masses at a fixed threshold."""
    y = a > tau
    zb = z > 0.5
    n = a.size
    return {"p_fc": np.count_nonzero(y & zb) / n, "p_f": np.count_nonzero(y) / n,
            "p_c": np.count_nonzero(zb) / n, "n": n}


# ---------------------------------------------------------------------------
# GaussianNeuron: closed forms


@pytest.mark.parametrize("neuron_freq", [0.02, 0.1, 0.3])
def test_masses_match_monte_carlo(big_sample, neuron_freq):
    a, z = big_sample
    tau = NEURON.threshold_for(neuron_freq)
    m = NEURON.masses(tau)
    hat = _plugin(a, z, tau)
    assert m["p_f"] == pytest.approx(neuron_freq, abs=1e-12)
    for key in ("p_fc", "p_f", "p_c"):
        p = m[key]
        se = math.sqrt(p * (1 - p) / N_MC)
        assert abs(hat[key] - p) < 5 * se, (key, hat[key], p, se)


def _metric_se(metric: str, m: dict[str, float], value: float, n: int) -> float:
    """Approximate standard error of the plug-in metric (binomial / delta method)."""
    fc, f, c = m["p_fc"], m["p_f"], m["p_c"]
    if metric == "accuracy":
        return math.sqrt(value * (1 - value) / n)
    if metric == "precision":
        return math.sqrt(value * (1 - value) / (n * f))
    if metric == "recall":
        return math.sqrt(value * (1 - value) / (n * c))
    if metric == "iou":  # tp | union count is binomial
        return math.sqrt(value * (1 - value) / (n * (f + c - fc)))
    if metric == "f1":  # f1 = 2 J / (1 + J)
        j = fc / (f + c - fc)
        return 2 / (1 + j) ** 2 * math.sqrt(j * (1 - j) / (n * (f + c - fc)))
    if metric == "balanced_accuracy":
        r = fc / c
        s = (1 - f - c + fc) / (1 - c)
        return 0.5 * math.sqrt(r * (1 - r) / (n * c) + s * (1 - s) / (n * (1 - c)))
    if metric == "wpmi":  # sd(X - Y) <= sd(X) + sd(Y)
        prec = fc / f
        return math.sqrt((1 - prec) / (n * f * prec)) + math.sqrt((1 - c) / (n * c))
    raise AssertionError(metric)


def _plugin_metric(metric: str, h: dict[str, float]) -> float:
    fc, f, c = h["p_fc"], h["p_f"], h["p_c"]
    return {
        "accuracy": 1 - f - c + 2 * fc,
        "precision": fc / f,
        "recall": fc / c,
        "iou": fc / (f + c - fc),
        "f1": 2 * fc / (f + c),
        "balanced_accuracy": 0.5 * (fc / c + (1 - f - c + fc) / (1 - c)),
        "wpmi": math.log(fc / f) - math.log(c),
    }[metric]


@pytest.mark.parametrize("metric", sorted(set(POPULATION_METRICS) - {"auroc"}))
@pytest.mark.parametrize("neuron_freq", [0.05, 0.2])
def test_population_metrics_match_plugin(big_sample, metric, neuron_freq):
    a, z = big_sample
    tau = NEURON.threshold_for(neuron_freq)
    pop = NEURON.population(metric, threshold=tau)
    assert NEURON.population(metric, neuron_freq=neuron_freq) == pop
    assert NEURON.population(metric, top_frac=neuron_freq) == pop
    hat = _plugin_metric(metric, _plugin(a, z, tau))
    se = _metric_se(metric, NEURON.masses(tau), pop, N_MC)
    assert abs(hat - pop) < 5 * se, (metric, hat, pop, se)


def test_population_formulas_by_hand():
    g = GaussianNeuron(concept_freq=0.25, separation=1.0)
    tau = 0.3
    pfc = 0.25 * stats.norm.sf(tau - 1.0)
    pf = 0.75 * stats.norm.sf(tau) + pfc
    pc = 0.25
    assert g.population("precision", threshold=tau) == pytest.approx(pfc / pf, rel=1e-12)
    assert g.population("recall", threshold=tau) == pytest.approx(pfc / pc, rel=1e-12)
    assert g.population("iou", threshold=tau) == pytest.approx(pfc / (pf + pc - pfc), rel=1e-12)
    assert g.population("wpmi", threshold=tau, wpmi_lambda=0.5) == pytest.approx(
        math.log(pfc / pf) - 0.5 * math.log(pc), rel=1e-12)


@pytest.mark.parametrize("sep", [-1.0, 0.0, 0.7, 2.5])
def test_auroc_closed_form_matches_sklearn(sep):
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    g = GaussianNeuron(concept_freq=0.2, separation=sep)
    a, z = g.sample(200_000, rng=7)
    pop = g.population("auroc")
    assert pop == pytest.approx(stats.norm.cdf(sep / math.sqrt(2)), abs=1e-15)
    hat = roc_auc_score(z[:, 0], a[:, 0])
    n_pos = int(z.sum())
    se = math.sqrt(max(pop * (1 - pop), 1e-4) / min(n_pos, z.size - n_pos))  # Hanley-McNeil bound
    assert abs(hat - pop) < 5 * se


@pytest.mark.parametrize("sep", [-3.0, 0.0, 0.5, 2.0, 6.0])
@pytest.mark.parametrize("q", [1e-4, 0.01, 0.1, 0.5, 0.9, 0.999])
def test_threshold_for_hits_frequency(sep, q):
    g = GaussianNeuron(concept_freq=0.15, separation=sep)
    tau = g.threshold_for(q)
    direct = 0.85 * stats.norm.sf(tau) + 0.15 * stats.norm.sf(tau - sep)
    assert abs(direct - q) < 1e-12
    assert abs(g.masses(tau)["p_f"] - q) < 1e-12


def test_population_input_errors():
    with pytest.raises(ValidationError, match="metric"):
        NEURON.population("nope", threshold=0.0)
    with pytest.raises(ValidationError, match="exactly one"):
        NEURON.population("iou")
    with pytest.raises(ValidationError, match="exactly one"):
        NEURON.population("iou", threshold=0.0, top_frac=0.1)
    with pytest.raises(ValidationError, match="top_frac"):
        NEURON.population("iou", top_frac=1.5)
    with pytest.raises(ValidationError, match="neuron_freq"):
        NEURON.threshold_for(0.0)
    # auroc needs no threshold
    assert 0.5 < NEURON.population("auroc") < 1


@pytest.mark.parametrize("kwargs, word", [
    ({"concept_freq": 0.0, "separation": 1.0}, "concept_freq"),
    ({"concept_freq": 1.0, "separation": 1.0}, "concept_freq"),
    ({"concept_freq": 0.1, "separation": float("nan")}, "separation"),
    ({"concept_freq": "x", "separation": 1.0}, "concept_freq"),
])
def test_gaussian_neuron_validation(kwargs, word):
    with pytest.raises(ValidationError, match=word):
        GaussianNeuron(**kwargs)


# ---------------------------------------------------------------------------
# GaussianNeuron: samplers


def test_sample_shapes_and_values():
    a, z = NEURON.sample(1000, rng=1)
    assert a.shape == (1000, 1) and z.shape == (1000, 1)
    assert a.dtype == np.float64 and z.dtype == np.float64
    assert set(np.unique(z)) <= {0.0, 1.0}
    with pytest.raises(ValidationError, match="`n`"):
        NEURON.sample(0, rng=1)


def test_sample_many_shapes_dtype_and_distribution():
    a, z = NEURON.sample_many(20_000, 50, rng=3)
    assert a.shape == z.shape == (20_000, 50)
    assert a.dtype == z.dtype == np.float32
    a64, z64 = NEURON.sample_many(10, 4, rng=3, dtype=np.float64)
    assert a64.dtype == np.float64
    assert set(np.unique(z)) <= {0.0, 1.0}
    n = z.size
    p = NEURON.concept_freq
    assert abs(z.mean() - p) < 5 * math.sqrt(p * (1 - p) / n)
    resid = a - NEURON.separation * z
    assert abs(resid.mean()) < 5 / math.sqrt(n)
    assert abs(resid.var() - 1) < 5 * math.sqrt(2 / n)
    # columns are independent probing sets: column means are not identical
    assert np.unique(z.mean(axis=0)).size > 1
    with pytest.raises(ValidationError, match="dtype"):
        NEURON.sample_many(10, 2, rng=0, dtype=np.int32)


def test_sample_counts_agree_with_sample():
    tau = NEURON.threshold_for(0.1)
    n, reps = 500, 4000
    counts = NEURON.sample_counts(n, reps, threshold=tau, rng=11)
    assert set(counts) == {"tp", "active", "present"}
    for v in counts.values():
        assert v.shape == (reps,) and v.dtype.kind == "i"
    tp, act, pres = counts["tp"], counts["active"], counts["present"]
    assert np.all(tp <= act) and np.all(tp <= pres) and np.all(act + pres - tp <= n)

    def cells(tp_, act_, pres_, total):
        return np.array([tp_, act_ - tp_, pres_ - tp_, total - act_ - pres_ + tp_])

    pooled_counts = cells(tp.sum(), act.sum(), pres.sum(), n * reps)
    a, z = NEURON.sample(n * reps, rng=12)
    y, zb = a[:, 0] > tau, z[:, 0] > 0.5
    pooled_sample = cells(np.sum(y & zb), np.sum(y), np.sum(zb), n * reps)
    # two-sample chi-square (homogeneity of the 4 cells)
    res = stats.chi2_contingency(np.vstack([pooled_counts, pooled_sample]))
    assert res.pvalue > 1e-3
    # goodness of fit of the multinomial to the closed-form cell masses
    m = NEURON.masses(tau)
    probs = np.array([m["p_fc"], m["p_f"] - m["p_fc"], m["p_c"] - m["p_fc"],
                      1 - m["p_f"] - m["p_c"] + m["p_fc"]])
    assert stats.chisquare(pooled_counts, probs * n * reps).pvalue > 1e-3
    # per-repetition spread is binomial(n, p_fc), not pooled
    p = m["p_fc"]
    assert tp.var(ddof=1) == pytest.approx(n * p * (1 - p), rel=5 * math.sqrt(2 / reps))


def test_sample_counts_match_sample_many_per_column():
    tau = NEURON.threshold_for(0.2)
    n, reps = 2000, 400
    a, z = NEURON.sample_many(n, reps, rng=5, dtype=np.float64)
    y = a > tau
    active_many = y.sum(axis=0)
    counts = NEURON.sample_counts(n, reps, threshold=tau, rng=6)
    # same binomial(n, p_f) law per column: two-sample Kolmogorov-Smirnov on counts
    assert stats.ks_2samp(active_many, counts["active"]).pvalue > 1e-3


def test_sample_counts_large_n_is_fast_and_valid():
    counts = NEURON.sample_counts(100_000, 10_000, threshold=1.5, rng=0)
    assert counts["tp"].shape == (10_000,)
    with pytest.raises(ValidationError, match="threshold"):
        NEURON.sample_counts(10, 2, threshold=float("inf"), rng=0)
    with pytest.raises(ValidationError, match="reps"):
        NEURON.sample_counts(10, 0, threshold=0.0, rng=0)


# ---------------------------------------------------------------------------
# reproducibility


def test_reproducibility_same_seed_identical_different_seed_differs():
    a1, z1 = NEURON.sample(500, rng=42)
    a2, z2 = NEURON.sample(500, rng=42)
    a3, _ = NEURON.sample(500, rng=43)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(z1, z2)
    assert not np.array_equal(a1, a3)

    m1 = NEURON.sample_many(100, 5, rng=np.random.SeedSequence(9))
    m2 = NEURON.sample_many(100, 5, rng=np.random.SeedSequence(9))
    np.testing.assert_array_equal(m1[0], m2[0])
    np.testing.assert_array_equal(m1[1], m2[1])

    c1 = NEURON.sample_counts(1000, 20, threshold=1.0, rng=np.random.default_rng(4))
    c2 = NEURON.sample_counts(1000, 20, threshold=1.0, rng=np.random.default_rng(4))
    c3 = NEURON.sample_counts(1000, 20, threshold=1.0, rng=5)
    for k in c1:
        np.testing.assert_array_equal(c1[k], c2[k])
    assert not np.array_equal(c1["tp"], c3["tp"])

    l1 = planted_layer(60, 4, 3, groups=6, rng=8)
    l2 = planted_layer(60, 4, 3, groups=6, rng=8)
    l3 = planted_layer(60, 4, 3, groups=6, rng=9)
    np.testing.assert_array_equal(l1.activations, l2.activations)
    np.testing.assert_array_equal(l1.concepts, l2.concepts)
    assert not np.array_equal(l1.activations, l3.activations)

    t1 = near_tie_concepts(300, n_concepts=3, m_tied=2, concept_freq=0.3, rng=1)
    t2 = near_tie_concepts(300, n_concepts=3, m_tied=2, concept_freq=0.3, rng=1)
    t3 = near_tie_concepts(300, n_concepts=3, m_tied=2, concept_freq=0.3, rng=2)
    np.testing.assert_array_equal(t1.concepts, t2.concepts)
    np.testing.assert_array_equal(t1.activations, t2.activations)
    assert not np.array_equal(t1.activations, t3.activations)


def test_generator_is_consumed_not_copied():
    gen = np.random.default_rng(0)
    a1, _ = NEURON.sample(10, rng=gen)
    a2, _ = NEURON.sample(10, rng=gen)
    assert not np.array_equal(a1, a2)


# ---------------------------------------------------------------------------
# planted_layer


def test_planted_layer_shapes_and_planting():
    layer = planted_layer(4000, 7, 3, concept_freq=[0.1, 0.2, 0.3],
                          separation=np.linspace(1, 3, 7), n_planted=5, rng=0)
    assert isinstance(layer, PlantedLayer)
    assert layer.activations.shape == (4000, 7)
    assert layer.concepts.shape == (4000, 3)
    assert layer.groups is None
    np.testing.assert_array_equal(layer.planted, [0, 1, 2, 0, 1, -1, -1])
    assert layer.planted.dtype == np.int64
    np.testing.assert_allclose(layer.concept_freq, [0.1, 0.2, 0.3])
    np.testing.assert_allclose(layer.separation[:5], np.linspace(1, 3, 7)[:5])
    np.testing.assert_array_equal(layer.separation[5:], 0.0)
    assert set(np.unique(layer.concepts)) <= {0.0, 1.0}
    # each planted neuron is shifted by its separation where its concept is present
    for j in range(5):
        k = layer.planted[j]
        zk = layer.concepts[:, k] > 0.5
        resid = layer.activations[:, j] - layer.separation[j] * zk
        assert abs(resid.mean()) < 5 / math.sqrt(4000)
        diff = layer.activations[zk, j].mean() - layer.activations[~zk, j].mean()
        assert abs(diff - layer.separation[j]) < 5 * math.sqrt(1 / zk.sum() + 1 / (~zk).sum())
    # unplanted neurons are pure noise
    for j in (5, 6):
        for k in range(3):
            r = np.corrcoef(layer.activations[:, j], layer.concepts[:, k])[0, 1]
            assert abs(r) < 5 / math.sqrt(4000)
    g = layer.neuron(1)
    assert g == GaussianNeuron(concept_freq=0.2, separation=layer.separation[1])
    assert layer.neuron(6) is None


def test_planted_layer_defaults_all_planted():
    layer = planted_layer(100, 5, 2, rng=1)
    np.testing.assert_array_equal(layer.planted, [0, 1, 0, 1, 0])
    np.testing.assert_array_equal(layer.separation, 2.0)
    np.testing.assert_array_equal(layer.concept_freq, [0.1, 0.1])


def test_planted_layer_groups_are_constant():
    layer = planted_layer(120, 3, 4, concept_freq=0.4, groups=8, rng=2)
    assert layer.groups is not None
    np.testing.assert_array_equal(layer.groups, np.repeat(np.arange(8), 15))
    for g in range(8):
        rows = layer.groups == g
        assert np.all(layer.activations[rows] == layer.activations[rows][0])
        assert np.all(layer.concepts[rows] == layer.concepts[rows][0])
    # different groups are different draws
    assert np.unique(layer.activations[:, 0]).size == 8
    # groups equal to n_samples: every group is one sample
    single = planted_layer(10, 2, 2, groups=10, rng=3)
    np.testing.assert_array_equal(single.groups, np.arange(10))


@pytest.mark.parametrize("kwargs, word", [
    ({"n_samples": 0}, "n_samples"),
    ({"n_samples": 10.0}, "n_samples"),
    ({"n_neurons": 0}, "n_neurons"),
    ({"n_concepts": True}, "n_concepts"),
    ({"concept_freq": 0.0}, "concept_freq"),
    ({"concept_freq": [0.1, 0.2]}, r"concept_freq.*shape \(3,\)"),
    ({"concept_freq": [0.1, 1.2, 0.3]}, "concept_freq"),
    ({"separation": [1.0, 2.0]}, r"separation.*shape \(4,\)"),
    ({"separation": np.inf}, "separation"),
    ({"n_planted": 5}, "n_planted"),
    ({"n_planted": -1}, "n_planted"),
    ({"groups": 7}, "divisible by `groups`"),
    ({"groups": 0}, "groups"),
])
def test_planted_layer_validation(kwargs, word):
    args = {"n_samples": 30, "n_neurons": 4, "n_concepts": 3}
    args.update(kwargs)
    n_samples, n_neurons, n_concepts = (args.pop(k) for k in ("n_samples", "n_neurons",
                                                              "n_concepts"))
    with pytest.raises(ValidationError, match=word):
        planted_layer(n_samples, n_neurons, n_concepts, rng=0, **args)


def test_planted_layer_error_message_names_value():
    with pytest.raises(ValidationError) as info:
        planted_layer(30, 2, 2, groups=7, rng=0)
    msg = str(info.value)
    assert "30" in msg and "7" in msg


# ---------------------------------------------------------------------------
# near_tie_concepts


def _nested_auroc(beta: float, p: float) -> float:
    """AUROC by the definition: int f+(x) F-(x) dx with nested quadrature."""
    alpha = special.ndtri(p) * math.hypot(1, beta)

    c0 = 1 / math.sqrt(2 * math.pi)

    def g0(y):
        return c0 * math.exp(-0.5 * y * y) * special.ndtr(-(alpha + beta * y))

    def outer(x):
        inner, _ = integrate.quad(g0, -12, x, epsabs=1e-14, epsrel=1e-12, limit=200)
        return c0 * math.exp(-0.5 * x * x) * special.ndtr(alpha + beta * x) * inner

    val, _ = integrate.quad(outer, -12, 12, epsabs=1e-14, epsrel=1e-12, limit=200)
    return val / (p * (1 - p))


def test_probit_auroc_exact():
    # p = 1/2: closed form 1/2 + (2/pi) arcsin(beta / sqrt(2 (1 + beta^2)))
    for beta in (-2.0, 0.3, 1.0, 4.0):
        exact = 0.5 + 2 / math.pi * math.asin(beta / math.sqrt(2 * (1 + beta * beta)))
        assert probit_concept_auroc(beta, 0.5) == pytest.approx(exact, abs=1e-12)
    assert probit_concept_auroc(0.0, 0.1) == pytest.approx(0.5, abs=1e-13)
    # general p: against the definition by nested quadrature
    assert probit_concept_auroc(0.8, 0.1) == pytest.approx(_nested_auroc(0.8, 0.1), abs=1e-9)
    with pytest.raises(ValidationError, match="concept_freq"):
        probit_concept_auroc(1.0, 1.0)


def test_near_tie_structure():
    n, p, m, gap = 10_000, 0.1, 3, 1.0
    res = near_tie_concepts(n, n_concepts=8, m_tied=m, concept_freq=p, gap_se=gap, rng=0)
    assert isinstance(res, NearTieConcepts)
    a, z, pop = res  # unpacks as a 3-tuple
    assert a.shape == (n, 1) and z.shape == (n, 8) and pop.shape == (8,)
    assert a.dtype == z.dtype == np.float64
    assert set(np.unique(z)) <= {0.0, 1.0}
    se = math.sqrt(0.8 * 0.2 / (n * p * (1 - p)))
    assert res.standard_error == pytest.approx(se)
    assert int(np.argmax(pop)) == 0
    assert pop[0] == pytest.approx(0.8, abs=1e-9)
    assert np.all(pop[0] - pop[:m] <= gap * se + 1e-9)
    assert np.all(np.diff(pop[:m]) < 0)  # distinct, best first
    assert np.all(pop[0] - pop[m:] >= (gap + 8.0) * se - 1e-9)
    # population_sim is the probit AUROC at the returned slopes; prevalence from intercepts
    for b, v in zip(res.slopes, pop):
        assert probit_concept_auroc(b, p) == pytest.approx(v, abs=1e-12)
    np.testing.assert_allclose(special.ndtr(res.intercepts / np.hypot(1, res.slopes)), p,
                               atol=1e-12)
    assert np.all(np.abs(z.mean(axis=0) - p) < 5 * math.sqrt(p * (1 - p) / n))


def test_near_tie_population_sim_by_monte_carlo():
    roc_auc_score = pytest.importorskip("sklearn.metrics").roc_auc_score
    p = 0.2
    res = near_tie_concepts(2000, n_concepts=3, m_tied=2, concept_freq=p, rng=1)
    # a large fresh sample from the same construction (slopes, intercepts)
    big = 1_000_000
    gen = np.random.default_rng(123)
    a = gen.standard_normal(big)
    for c in range(3):
        zc = gen.random(big) < special.ndtr(res.intercepts[c] + res.slopes[c] * a)
        assert abs(zc.mean() - p) < 5 * math.sqrt(p * (1 - p) / big)
        hat = roc_auc_score(zc, a)
        A = res.population_sim[c]
        se = math.sqrt(A * (1 - A) / min(zc.sum(), big - zc.sum()))  # Hanley-McNeil bound
        assert abs(hat - A) < 5 * se, (c, hat, A, se)  # 5 SE ~ 2.5e-3 here


def test_near_tie_single_and_all_tied():
    res = near_tie_concepts(500, n_concepts=2, m_tied=2, concept_freq=0.5, gap_se=0.5,
                            best_auroc=0.7, rng=0)
    assert res.population_sim[0] == pytest.approx(0.7, abs=1e-9)
    assert res.population_sim[0] - res.population_sim[1] <= 0.5 * res.standard_error + 1e-9
    one = near_tie_concepts(500, n_concepts=1, m_tied=1, concept_freq=0.3, rng=0)
    assert one.concepts.shape == (500, 1)


@pytest.mark.parametrize("kwargs, word", [
    ({"m_tied": 5}, "m_tied"),
    ({"m_tied": 0}, "m_tied"),
    ({"concept_freq": 0.0}, "concept_freq"),
    ({"gap_se": -1.0}, "gap_se"),
    ({"best_auroc": 0.5}, "best_auroc"),
    ({"clear_gap_se": 0.0}, "clear_gap_se"),
    ({"n_samples": 1}, "n_samples"),
    ({"n_samples": 20, "gap_se": 30.0}, "unreachable"),
])
def test_near_tie_validation(kwargs, word):
    args = {"n_samples": 1000, "n_concepts": 4, "m_tied": 2, "concept_freq": 0.1}
    args.update(kwargs)
    n = args.pop("n_samples")
    with pytest.raises(ValidationError, match=word):
        near_tie_concepts(n, rng=0, **args)
