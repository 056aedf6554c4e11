"""What the three concept sets cover (issue "Stability"; docs/theory.md §2.5, §6.3),
by simulation on planted recall near-ties (:mod:`neurocert.coverage`).

The grid is fixed here, before running: n in {1e3, 1e4}; concept frequency in
{0.1, 0.01, 0.001}; m in {1, 2, 5, 20} concepts within one standard error of
the best (plus 5 clearly worse ones); alpha in {0.05, 0.1}; 1,000 independent
probing sets per cell, one neuron per set, 200 bootstrap replicates; delta 0.05.

Asserted (one-sided binomial test of ``coverage >= nominal`` at level 1e-3):

* the split set covers the explanation (``identify(...).best``) of a fresh probing
  set of fold size ``floor(n/K)``, in every cell;
* the certified set covers the population-best concept, in every cell;
* the bootstrap set covers the explanation of a fresh probing set of size ``n``
  where ``m <= 2`` and ``n q >= 10``. Where ``n q = 1`` (n = 1e3, q = 0.001) it does
  not: a documented limitation, kept as a strict xfail so a change shows;
* the guarded bootstrap set (``guard=True``: widened by the confidence limits)
  covers it where ``m <= 2``, in every cell, rare concepts included.

Every cell is reported (coverage, shortfall, set sizes, undefined shares) in
``$NEUROCERT_ARTIFACTS/coverage_table.csv`` and on stdout (``pytest -s``); the
coverage conditional on the probing set goes to ``coverage_conditional.csv``.
The half-sample ``scheme="predictive"`` bootstrap set is measured on the same
probing sets (reported, not asserted).

Two library bugs found by this simulation (both fixed in the library since; the
regression tests below keep them fixed): ``bootstrap_explain`` raised
``ValueError`` when no concept was defined on the probing set (pruning left no
candidate), and ``identify(...).best`` picked a concept at the metric's minimum
(recall 0) where every replicate and fold said "none", so a probing set's own
explanation could miss its own prediction set and the split set covered
identify's explanation of a fresh fold-size set at only 0.43-0.87 with rare
concepts.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings

import numpy as np
import pytest

import neurocert
from neurocert import coverage as cov
from neurocert.bootstrap import _fold_weights, bootstrap_explain, replicate_explanations
from neurocert.exceptions import NoBoundWarning, UndefinedSimilarityWarning, ValidationError
from neurocert.explanation import prediction_sets, split_conformal_sets
from neurocert.resample import as_seed_sequence, replicate_weights
from neurocert.similarity import prepare

# ---------------------------------------------------------------------------
# the grid (fixed before running)

NS = (1_000, 10_000)
CONCEPT_FREQS = (0.1, 0.01, 0.001)
MS = (1, 2, 5, 20)
ALPHAS = (0.05, 0.1)
REPS = 1_000
N_BOOT = 200
DELTA = 0.05
LEVEL = 1e-3  # one-sided binomial test
SEED = 20251125
SCHEMES = ("multinomial", "predictive")
CONDITIONAL_CELLS = (  # (n, concept_freq, m, alpha)
    (1_000, 0.1, 1, 0.05),
    (1_000, 0.1, 5, 0.1),
    (10_000, 0.01, 20, 0.05),
    (1_000, 0.001, 2, 0.1),
)
N_SETS, N_FRESH = 50, 200
N_JOBS = max(1, min(2, os.cpu_count() or 1))


@contextlib.contextmanager
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedSimilarityWarning)
        warnings.simplefilter("ignore", NoBoundWarning)
        yield


def _dense(model, n, reps, seed):
    return model.sample(np.random.default_rng(seed), n, reps)


def _counts(y, z):
    tp = (z & y[..., None]).sum(axis=1).astype(float)
    return tp, y.sum(axis=1).astype(float), z.sum(axis=1).astype(float)


# ---------------------------------------------------------------------------
# generator


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("q", CONCEPT_FREQS)
@pytest.mark.parametrize("m", MS)
def test_model_design_is_exact(n, q, m):
    model = cov.recall_tie_model(n, concept_freq=q, m_tied=m)
    pf = model.neuron_freq
    freq = model.p_active * pf + model.p_inactive * (1 - pf)
    np.testing.assert_allclose(freq, q, rtol=1e-12)
    np.testing.assert_allclose(model.p_active * pf / freq, model.recall, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(model.population("recall"), model.recall, rtol=1e-12, atol=1e-15)
    assert np.all((model.p_active >= 0) & (model.p_active <= 1))
    assert np.all((model.p_inactive >= 0) & (model.p_inactive <= 1))
    se = math.sqrt(0.6 * 0.4 / (n * q))
    assert model.standard_error == pytest.approx(se)
    r = model.recall
    assert model.n_concepts == m + 5
    assert np.argmax(r) == 0 and np.sum(r == r[0]) == 1  # unique population best c* = 0
    assert np.all(r[0] - r[:m] < se)  # m concepts within one SE of the best
    worse = r[m:]
    assert np.all((r[0] - worse >= 9 * se - 1e-12) | (worse == 0))  # clearly worse, or at 0


def test_model_and_grid_validation():
    with pytest.raises(ValidationError):
        cov.recall_tie_model(1000, concept_freq=0.5, m_tied=1, neuron_freq=0.2)
    with pytest.raises(ValidationError):
        cov.recall_tie_model(1000, concept_freq=0.1, m_tied=0)
    with pytest.raises(ValidationError):
        cov.coverage_grid(ns=[100], concept_freqs=[0.1], ms=[1], metric="auroc", reps=1)
    with pytest.raises(ValidationError):
        cov.coverage_grid(ns=[100], concept_freqs=[0.1], ms=[1], schemes=("poisson",), reps=1)


def test_samplers_agree_with_population():
    model = cov.recall_tie_model(1000, concept_freq=0.05, m_tied=3, n_worse=2)
    gen = np.random.default_rng(1)
    y, z = model.sample(gen, 20_000, 10)
    y, z = y.reshape(-1), z.reshape(-1, model.n_concepts)
    n = y.size
    q = model.concept_freq
    c = z.sum(axis=0)
    tp = (z & y[:, None]).sum(axis=0)
    assert np.all(np.abs(c / n - q) < 5 * math.sqrt(q * (1 - q) / n))
    r = model.recall
    assert np.all(np.abs(tp / c - r) < 5 * np.sqrt(r * (1 - r) / c) + 1e-12)
    tp2, f2, c2 = model.sample_counts(gen, 20_000, 2_000)
    assert abs(f2.mean() / 20_000 - model.neuron_freq) < 5 * math.sqrt(0.16 / (20_000 * 2000))
    rec = tp2.sum(axis=0) / c2.sum(axis=0)
    assert np.all(np.abs(rec - r) < 5 * np.sqrt(r * (1 - r) / c2.sum(axis=0)) + 1e-12)


# ---------------------------------------------------------------------------
# the fast path has the library's semantics


@pytest.mark.parametrize("scheme", ["multinomial", "predictive"])
@pytest.mark.parametrize("threshold", [0, 10**9])
def test_lumped_bootstrap_has_the_library_law(monkeypatch, threshold, scheme):
    """Both branches (one multinomial over distinct rows; uniform draws) vs replicate_weights."""
    monkeypatch.setattr(cov, "MULTINOMIAL_MAX", threshold)
    model = cov.recall_tie_model(300, concept_freq=0.1, m_tied=2, n_worse=1)
    y, z = _dense(model, 300, 1, 5)
    y, z = y[0], z[0]
    b = 4000
    tp, f, c, total = cov.lumped_bootstrap_statistics(np.random.default_rng(6), y, z, b,
                                                      scheme=scheme)
    w = replicate_weights(7, range(b), y.size, scheme=scheme)
    assert total == w[0].sum()
    tp_ref, f_ref, c_ref = cov.weighted_statistics(y, z, w)
    for ours, ref in ((tp, tp_ref), (f[:, None], f_ref[:, None]), (c, c_ref)):
        assert np.all(ours == np.round(ours))
        mean_ref, sd_ref = ref.mean(axis=0), ref.std(axis=0)
        assert np.all(np.abs(ours.mean(axis=0) - mean_ref) < 5 * sd_ref * math.sqrt(2 / b) + 1e-9)
        sd = ours.std(axis=0)
        assert np.all(np.where(sd_ref > 0, np.abs(sd / np.where(sd_ref > 0, sd_ref, 1) - 1) < 0.08,
                               sd == 0))
    # dependence between concepts (shared samples) is kept
    cc = np.corrcoef(np.c_[tp[:, :2], c[:, :2]].T)
    cc_ref = np.corrcoef(np.c_[tp_ref[:, :2], c_ref[:, :2]].T)
    assert np.all(np.abs(cc - cc_ref) < 0.1)


def test_fold_statistics_are_block_folds():
    model = cov.recall_tie_model(1000, concept_freq=0.1, m_tied=2)
    y, z = _dense(model, 1003, 1, 8)
    y, z = y[0], z[0]
    got = cov.fold_statistics(y, z, [19, 39])
    for k in (19, 39):
        sizes = np.full(k, 1003 // k)
        sizes[:1003 % k] += 1
        fold = np.repeat(np.arange(k), sizes)
        w = (fold[None, :] == np.arange(k)[:, None]).astype(float)
        for a, b in zip(got[k], cov.weighted_statistics(y, z, w)):
            np.testing.assert_array_equal(a, b)
        assert sizes.max() - sizes.min() <= 1


@pytest.mark.parametrize("n,q,m", [(400, 0.1, 2), (400, 0.02, 5), (1000, 0.003, 1),
                                   (300, 0.001, 2)])
def test_sets_match_bootstrap_explain(n, q, m):
    """Same weights -> the same three sets, probabilities and candidates as bootstrap_explain."""
    model = cov.recall_tie_model(n, concept_freq=q, m_tied=m)
    y, z = _dense(model, n, 6, 11)
    b = 60
    for alpha in ALPHAS:
        k = cov.default_n_folds(alpha)
        boot_w = {sc: [] for sc in SCHEMES}
        fold_w = []
        for i in range(y.shape[0]):
            seed = as_seed_sequence(100 + i)
            p = prepare(y[i][:, None].astype(float), z[i].astype(float), metric="recall")
            for sc in SCHEMES:
                boot_w[sc].append(replicate_weights(seed, range(b), n, scheme=sc))
            fold_w.append(_fold_weights(p, seed, k))
        res = cov.analyse_sets(y, z, metric="recall", n_boot=b, fold_counts=[k], delta=DELTA,
                               schemes=SCHEMES, boot_weights=boot_w, fold_weights={k: fold_w})
        ssets = split_conformal_sets(res.fold_winners[k], model.n_concepts, alpha, res.sim)
        gsets = cov.guarded_sets_of(res, "recall", alpha)
        for sc in SCHEMES:
            bsets = prediction_sets(res.prob[sc], res.sim, alpha)
            for i in range(y.shape[0]):
                with _quiet():
                    ref = bootstrap_explain(y[i][:, None].astype(float), z[i].astype(float),
                                            metric="recall", n_boot=b, alpha=alpha, mode="both",
                                            rng=100 + i, delta=DELTA, scheme=sc)
                assert ref.fold_winners.shape[0] == k
                np.testing.assert_array_equal(bsets[i], ref.prediction_sets[0])
                np.testing.assert_array_equal(ssets[i], ref.split_sets[0])
                np.testing.assert_array_equal(res.certified[i], ref.certified_sets[0])
                if sc == "multinomial":
                    np.testing.assert_array_equal(gsets[i], ref.guarded().prediction_sets[0])
                np.testing.assert_array_equal(res.prob[sc][i, :-1], ref.probabilities[0])
                np.testing.assert_array_equal(res.prob[sc][i, -1], ref.none_probability[0])
                np.testing.assert_array_equal(res.sim[i], ref.identification.similarity[0])
                if sc == "multinomial":
                    assert res.n_candidates[i] == ref.n_candidates[0]


def test_explanation_rules_match_library():
    model = cov.recall_tie_model(200, concept_freq=0.01, m_tied=3)
    y, z = _dense(model, 200, 40, 4)
    tp, f, c = _counts(y, z)
    sim = cov._similarity("recall", tp, f[:, None], c, 200.0, neurocert.MetricOptions())
    ident = cov.explain_identify(sim, 0.0)
    eng = cov.explain_engine(sim, 0.0)
    plain = cov.explain_argmax(sim)
    certified = cov.certified_sets_of("recall", tp, f, c, 200, DELTA)
    for i in range(y.shape[0]):
        a, zz = y[i][:, None].astype(float), z[i].astype(float)
        with _quiet():
            res = neurocert.identify(a, zz, metric="recall", delta=DELTA)
        assert ident[i] == res.best[0]
        np.testing.assert_array_equal(certified[i], res.certified_sets[0])
        v = replicate_explanations(prepare(a, zz, metric="recall"), np.ones((1, 200), np.float32))
        assert eng[i] == v.winner[0, 0]
    # all-zero recalls occur here: identify follows the engine ("none"), not the plain argmax
    assert np.any(plain != eng)
    np.testing.assert_array_equal(ident, eng)


# ---------------------------------------------------------------------------
# regressions of the two bugs this simulation found


def test_bootstrap_explain_with_no_concept_defined():
    """Was: ValueError 'zero-size array to reduction operation maximum' with pruning."""
    rng = np.random.default_rng(0)
    y = (rng.random((500, 1)) < 0.2).astype(float)
    z = np.zeros((500, 4))
    for prune in (True, False):
        with _quiet():
            res = bootstrap_explain(y, z, metric="recall", n_boot=20, mode="both", rng=1,
                                    prune=prune)
        assert [s.tolist() for s in res.prediction_sets] == [[-1]]
        assert [s.tolist() for s in res.split_sets] == [[-1]]
        assert res.identification.best.tolist() == [-1]


def test_identify_and_engine_agree_at_the_minimum():
    """Was: identify picked a concept with recall 0 while every replicate said 'none'."""
    n = 400
    y = np.zeros((n, 1))
    y[:80] = 1.0
    z = np.zeros((n, 4))
    z[100:103, 2] = 1.0  # concept 2 present only where the neuron is inactive: recall 0
    z[200, 3] = 1.0
    with _quiet():
        res = bootstrap_explain(y, z, metric="recall", n_boot=50, mode="both", rng=2)
    assert res.identification.best[0] == -1
    assert bool(res.self_in_set[0])


# ---------------------------------------------------------------------------
# the grid


def _fmt(v, nd=3):
    return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.{nd}f}"


def _print_table(rows):
    head = ("n", "q", "m", "alpha", "boot", "split", "cert", "pred", "|boot|", "|split|",
            "|cert|", "|pred|", "guard", "|guard|", "undef0", "none_n", "none_n/K")
    print("\ncoverage: boot/pred vs the explanation at n, split vs the explanation at n/K "
          "(nominal 1-alpha), cert vs c* (nominal %.2f); reps=%d, n_boot=%d"
          % (1 - DELTA, rows[0]["reps"], rows[0]["n_boot"]))
    print(" ".join(f"{h:>8}" for h in head))
    for r in rows:
        out = [f"{r['n']:>8d}", f"{r['concept_freq']:>8g}", f"{r['m']:>8d}", f"{r['alpha']:>8g}"]
        out += [f"{_fmt(r[k]):>8}" for k in ("cov_bootstrap", "cov_split", "cov_certified",
                                             "cov_predictive")]
        out += [f"{_fmt(r[k], 2):>8}" for k in ("size_bootstrap", "size_split",
                                                "size_certified", "size_predictive")]
        out += [f"{_fmt(r['cov_guarded']):>8}", f"{_fmt(r['size_guarded'], 2):>8}"]
        out += [f"{_fmt(r[k]):>8}" for k in ("share_best_undefined", "share_target_none",
                                             "share_fold_target_none")]
        print(" ".join(out))


@pytest.fixture(scope="module")
def grid():
    t0 = time.perf_counter()
    rows = cov.coverage_grid(ns=NS, concept_freqs=CONCEPT_FREQS, ms=MS, alphas=ALPHAS,
                             reps=REPS, n_boot=N_BOOT, delta=DELTA, rng=SEED, n_jobs=N_JOBS,
                             schemes=SCHEMES)
    elapsed = time.perf_counter() - t0
    path = cov.write_csv(rows, cov.artifacts_dir() / "coverage_table.csv", cov.COVERAGE_COLUMNS)
    _print_table(rows)
    cell_s = sum(r["seconds"] for r in rows if r["alpha"] == ALPHAS[-1])
    print(f"coverage grid: {len(rows)} rows in {elapsed:.1f} s wall ({N_JOBS} processes; "
          f"{cell_s:.1f} s summed over cells) -> {path}")
    return rows


def _failing(rows, key, nominal_key="nominal"):
    return [(r["n"], r["concept_freq"], r["m"], r["alpha"], round(r[f"cov_{key}"], 3),
             r[nominal_key]) for r in rows if r[f"p_{key}"] < LEVEL]


def _rare(r):
    """Cells where a concept is present in about one sample of the probing set."""
    return r["n"] * r["concept_freq"] < 10


@pytest.mark.slow
def test_grid_is_complete(grid):
    assert len(grid) == len(NS) * len(CONCEPT_FREQS) * len(MS) * len(ALPHAS)
    assert {(r["n"], r["concept_freq"], r["m"], r["alpha"]) for r in grid} == {
        (n, q, m, a) for n in NS for q in CONCEPT_FREQS for m in MS for a in ALPHAS}
    assert all(r["reps"] == REPS and r["n_boot"] == N_BOOT for r in grid)
    path = cov.artifacts_dir() / "coverage_table.csv"
    assert path.exists() and len(path.read_text().splitlines()) == len(grid) + 1


@pytest.mark.slow
def test_split_set_covers_fold_size_explanation(grid):
    """Finite-sample guarantee (full conformal over the folds), every cell."""
    assert not _failing(grid, "split")
    assert not _failing(grid, "split_engine")


@pytest.mark.slow
def test_identify_follows_the_replicate_rule(grid):
    """identify's explanation of every fresh set is the engine's (regression of bug 2)."""
    assert all(r["share_rules_differ"] == 0 and r["share_fold_rules_differ"] == 0 for r in grid)


@pytest.mark.slow
def test_certified_set_covers_population_best(grid):
    assert not _failing(grid, "certified", "nominal_certified")


@pytest.mark.slow
def test_bootstrap_set_covers_same_size_explanation_without_ties(grid):
    """m <= 2 and each concept seen about 10 times or more: nominal coverage holds."""
    assert not _failing([r for r in grid if r["m"] <= 2 and not _rare(r)], "bootstrap")


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=(
    "LIMITATION, not a code bug (bootstrap.py notes, docs/theory.md §6.3): with n*q = 1 "
    "(n=1e3, q=0.001) a resample cannot show a neuron-and-concept co-occurrence that the "
    "probing set lacks, so the bootstrap set misses a fresh set's explanation (coverage about "
    "0.6-0.75 at m <= 2); the guarded set (guard=True) is the repair, asserted below"))
def test_bootstrap_set_covers_same_size_explanation_rare_concepts(grid):
    assert not _failing([r for r in grid if r["m"] <= 2 and _rare(r)], "bootstrap")


@pytest.mark.slow
def test_guarded_set_covers_same_size_explanation_without_ties(grid):
    """m <= 2, every cell (rare concepts included): the guarded set reaches nominal."""
    cells = [r for r in grid if r["m"] <= 2]
    assert any(_rare(r) for r in cells)
    assert not _failing(cells, "guarded")
    # it contains the plain bootstrap set, so it never covers less
    assert all(r["cov_guarded"] >= r["cov_bootstrap"] for r in grid)
    assert all(r["size_guarded"] >= r["size_bootstrap"] for r in grid)


@pytest.mark.slow
def test_report_other_cells(grid):
    """Report (no assertion) every cell where a nominal set falls short, with set sizes."""
    for key, size in (("bootstrap", "size_bootstrap"), ("guarded", "size_guarded"),
                      ("predictive", "size_predictive")):
        print(f"\n{key} set: cells below nominal (one-sided binomial p < {LEVEL:g})")
        for r in grid:
            if r[f"p_{key}"] < LEVEL:
                print(f"  n={r['n']:>5} q={r['concept_freq']:<6g} m={r['m']:>2} "
                      f"alpha={r['alpha']:<4g} cov={r[f'cov_{key}']:.3f} "
                      f"shortfall={r['nominal'] - r[f'cov_{key}']:+.3f} |set|={r[size]:.2f} "
                      f"|split|={r['size_split']:.2f} |cert|={r['size_certified']:.2f}")
    for mode in ("bootstrap", "guarded", "predictive", "split", "certified"):
        sizes = [r[f"size_{mode}"] for r in grid]
        print(f"mean {mode} set size over cells: {np.mean(sizes):.2f} "
              f"(min {np.min(sizes):.2f}, max {np.max(sizes):.2f})")


@pytest.mark.slow
def test_conditional_coverage():
    t0 = time.perf_counter()
    rows = cov.conditional_coverage(cells=CONDITIONAL_CELLS, n_sets=N_SETS, n_fresh=N_FRESH,
                                    n_boot=N_BOOT, delta=DELTA, rng=SEED + 1, n_jobs=N_JOBS,
                                    schemes=SCHEMES)
    path = cov.write_csv(rows, cov.artifacts_dir() / "coverage_conditional.csv",
                         cov.CONDITIONAL_COLUMNS)
    print(f"\nconditional coverage ({N_SETS} probing sets x {N_FRESH} fresh sets each; "
          f"{time.perf_counter() - t0:.1f} s) -> {path}")
    qcols = [c for c in cov.CONDITIONAL_COLUMNS if c.startswith("q")]
    print(f"{'n':>6} {'q':>6} {'m':>3} {'alpha':>5} {'mode':>10} {'nom':>5} {'mean':>5} "
          f"{'<nom':>5} {'|set|':>5} " + " ".join(f"{c:>5}" for c in qcols))
    for r in rows:
        print(f"{r['n']:>6} {r['concept_freq']:>6g} {r['m']:>3} {r['alpha']:>5g} {r['mode']:>10} "
              f"{r['nominal']:.3f} {r['mean']:.3f} {r['share_below_nominal']:.2f} "
              f"{r['mean_size']:5.2f} " + " ".join(f"{r[c]:.3f}" for c in qcols))
    assert len(rows) == (len(SCHEMES) + 3) * len(CONDITIONAL_CELLS)
    for r in rows:
        v = r["values"]
        assert v.shape == (N_SETS,) and np.all((v >= 0) & (v <= 1))
        if r["mode"] == "certified":
            assert set(np.unique(v)) <= {0.0, 1.0}
