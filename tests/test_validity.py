"""Statistical validity of the certificates (docs/theory.md, sections 2.1-2.5), by simulation.

The grid is fixed here, before running: every rate-bounded metric x n in {1e3, 1e4, 1e5}
x concept frequency in {0.5, 0.1, 0.01, 0.001} x (fixed threshold at neuron frequency
{0.005, 0.05}, or top_frac in {0.005, 0.05}; AUROC needs neither), R = 2000 probing sets
per cell, delta = 0.05, one seed. A cell fails when the one-sided binomial test of its
violations against delta gives p < 1e-3.

* validity: no cell fails;
* power: with every interval shrunk to half its radius, at least one cell per metric fails;
* tightness: precision, recall and IoU at a fixed threshold with expected denominator
  count >= 30 have q95(|error|) / median(radius) >= 0.6 (excluding degenerate binomials
  with less than one expected outcome on the minority side, see ``_tightness_cells``);
* grouped data: counting samples violates (>= 3 delta, significant), counting groups holds;
* certified sets under near ties contain the population-best concept (AUROC).

The fast paths of :mod:`neurocert.validity` are checked against the public
:func:`neurocert.identify` on the same data (to 1e-12). The full table is written to
``$NEUROCERT_ARTIFACTS/validity_table.csv`` (default ``/tmp/neurocert-artifacts``).
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from scipy import stats

import neurocert
from neurocert import validity as v
from neurocert.simulate import GaussianNeuron

METRICS = ("accuracy", "precision", "recall", "iou", "f1", "balanced_accuracy", "wpmi", "auroc")
NS = (1_000, 10_000, 100_000)
CONCEPT_FREQS = (0.5, 0.1, 0.01, 0.001)
NEURON_FREQS = (0.005, 0.05)
TOP_FRACS = (None, 0.005, 0.05)
REPS = 2000
DELTA = 0.05
SEPARATION = 2.0
SEED = 20240611
P_MIN = 1e-3
TIGHTNESS = 0.6
TIGHT_MIN_COUNT = 30
N_COUNT_CELLS = len(NS) * len(CONCEPT_FREQS) * (len(NEURON_FREQS) + 2)  # per count metric
N_RANK_CELLS = len(NS) * len(CONCEPT_FREQS)


def _report(request, title: str, lines: list[str]) -> None:
    """Print a summary to the terminal even when pytest captures output."""
    text = "\n".join(["", f"---- {title} ----", *lines])
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            print(text, flush=True)
    else:  # pragma: no cover
        print(text)


def _cell(r: dict) -> str:
    return (f"{r['metric']} n={r['n']} concept_freq={r['concept_freq']} "
            f"{r['binarization']}"
            + (f" neuron_freq={r['neuron_freq']}" if r["binarization"] == "threshold" else "")
            + (f" top_frac={r['top_frac']}" if r["binarization"] == "top_frac" else "")
            + f": {r['violations']}/{r['reps']} violations (rate {r['violation_rate']:.4f}, "
              f"p={r['p_value']:.3g}, undefined {r['undefined_share']:.3f})")


@pytest.fixture(scope="session")
def grid(request, artifacts_dir):
    t0 = time.perf_counter()
    rows = v.violation_grid(metrics=METRICS, ns=NS, concept_freqs=CONCEPT_FREQS,
                            neuron_freqs=NEURON_FREQS, top_fracs=TOP_FRACS, reps=REPS,
                            delta=DELTA, separation=SEPARATION, rng=SEED,
                            radius_scale=(1.0, 0.5))
    elapsed = time.perf_counter() - t0
    path = v.write_table(rows, artifacts_dir / "validity_table.csv")
    lines = [f"{len(rows)} rows in {elapsed:.1f} s -> {path}", "radius scale 1 (validity):",
             v.summarize(rows, scale=1.0), "radius scale 0.5 (power):",
             v.summarize(rows, scale=0.5)]
    for m in ("precision", "recall", "iou"):
        keep, degenerate = _tightness_cells(rows, m)
        ratios = [r["ratio"] for r in keep]
        if ratios:
            lines.append(f"tightness {m}: q95|err|/median r min {min(ratios):.3f} "
                         f"median {float(np.median(ratios)):.3f} over {len(ratios)} cells "
                         f"({len(degenerate)} degenerate cells excluded)")
    (artifacts_dir / "validity_summary.txt").write_text("\n".join(lines) + "\n")
    _report(request, "validity grid", lines)
    return rows


def _rows(grid, *, metric=None, scale=1.0):
    return [r for r in grid if r["radius_scale"] == scale and (metric is None or r["metric"] == metric)]


# ---------------------------------------------------------------------------
# the grid


@pytest.mark.slow
def test_grid_is_complete(grid, artifacts_dir):
    for scale in (1.0, 0.5):
        for m in METRICS:
            rows = _rows(grid, metric=m, scale=scale)
            assert len(rows) == (N_RANK_CELLS if m == "auroc" else N_COUNT_CELLS), m
            assert all(r["reps"] == REPS for r in rows)
            assert all(np.isfinite(r["population"]) for r in rows)
    keys = {(r["metric"], r["n"], r["concept_freq"], repr(r["neuron_freq"]), repr(r["top_frac"]),
             r["radius_scale"]) for r in grid}
    assert len(keys) == len(grid)
    assert (artifacts_dir / "validity_table.csv").exists()


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_violation_rate_at_most_delta(grid, metric):
    failing = [r for r in _rows(grid, metric=metric) if not r["p_value"] >= P_MIN]
    assert not failing, "violation rate significantly above delta:\n" + "\n".join(
        _cell(r) for r in failing)


@pytest.mark.slow
@pytest.mark.parametrize("metric", METRICS)
def test_power_half_radius_fails_somewhere(grid, metric):
    rows = _rows(grid, metric=metric, scale=0.5)
    failing = [r for r in rows if r["p_value"] < P_MIN]
    worst = max(rows, key=lambda r: r["violation_rate"])
    assert failing, f"halved intervals never fail for {metric}; worst cell: {_cell(worst)}"


def _tightness_cells(grid, metric):
    """Fixed-threshold cells with expected denominator count >= 30, split into the cells
    the criterion applies to and the degenerate ones: fewer than one expected sample on
    the minority side of the binomial (e.g. precision 0.9992 with 50 active samples: the
    count is almost always 50/50, so q95|error| ~ 1 - precision ~ 1e-3 while every valid
    interval at 50/50 must reach down to ~0.94)."""
    rows = [r for r in _rows(grid, metric=metric) if r["binarization"] == "threshold"
            and r["expected_denominator"] >= TIGHT_MIN_COUNT]
    p = np.array([r["population"] for r in rows])
    minority = np.array([r["expected_denominator"] for r in rows]) * np.minimum(p, 1 - p)
    keep = [r for r, m in zip(rows, minority) if m >= 1.0]
    degenerate = [r for r, m in zip(rows, minority) if m < 1.0]
    return keep, degenerate


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["precision", "recall", "iou"])
def test_tightness_fixed_threshold(request, grid, metric):
    rows, degenerate = _tightness_cells(grid, metric)
    assert len(rows) >= 10
    ratios = [r["ratio"] for r in rows]
    _report(request, f"tightness {metric}", [
        f"{len(rows)} cells: q95|err|/median r min {min(ratios):.3f} median "
        f"{float(np.median(ratios)):.3f}"] + [
        f"excluded (< 1 expected minority outcome): {_cell(r)} ratio {r['ratio']:.3f} "
        f"population {r['population']:.5f}" for r in degenerate])
    loose = [r for r in rows if not r["ratio"] >= TIGHTNESS]
    assert not loose, "\n".join(
        f"{_cell(r)} ratio={r['ratio']:.3f} (q95 {r['q95_abs_error']:.4g}, median r "
        f"{r['median_r']:.4g}, expected count {r['expected_denominator']:.1f})" for r in loose)


# ---------------------------------------------------------------------------
# fast paths against the public path (same data)


def _identify(a, z, metric, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = neurocert.identify(a, z, metric=metric, delta=DELTA, **kw)
    return np.array([res.similarity[0, 0], res.lower[0, 0], res.upper[0, 0]])


@pytest.mark.parametrize("concept_freq", [0.5, 0.1, 0.01])
@pytest.mark.parametrize("neuron_freq", NEURON_FREQS)
def test_fixed_threshold_fast_path_matches_identify(concept_freq, neuron_freq):
    g = GaussianNeuron(concept_freq=concept_freq, separation=SEPARATION)
    tau = g.threshold_for(neuron_freq)
    n = 1000
    for r in range(4):
        a, z = g.sample(n, rng=[SEED, r])
        y, c = a[:, 0] > tau, z[:, 0] >= 0.5
        stats = v.fixed_threshold_stats([np.sum(y & c)], [y.sum()], [c.sum()], n)
        for metric in v.COUNT_METRICS:
            est, lo, hi = v.limits(stats, metric, delta=DELTA)
            np.testing.assert_allclose(np.array([est[0], lo[0], hi[0]]),
                                       _identify(a, z, metric, threshold=tau),
                                       rtol=0, atol=1e-12, equal_nan=True, err_msg=metric)


@pytest.mark.parametrize("concept_freq", [0.5, 0.1, 0.01])
def test_top_frac_and_auroc_fast_path_matches_identify(concept_freq):
    g = GaussianNeuron(concept_freq=concept_freq, separation=SEPARATION)
    n, reps, fracs = 1000, 5, (0.005, 0.05)
    a, z = g.sample_many(n, reps, rng=SEED, dtype=np.float64)
    emb = v.embed_labels(a, z)
    assert np.max(np.abs(emb - a)) <= np.max(np.spacing(np.abs(a)))
    stats = v.top_frac_rank_stats(emb, top_fracs=fracs, delta=DELTA)
    for q in fracs:
        for metric in v.COUNT_METRICS:
            est, lo, hi = v.limits(stats[q], metric, delta=DELTA)
            for r in range(reps):
                np.testing.assert_allclose(
                    np.array([est[r], lo[r], hi[r]]),
                    _identify(emb[:, [r]], z[:, [r]], metric, top_frac=q),
                    rtol=0, atol=1e-12, equal_nan=True, err_msg=f"{metric} top_frac={q}")
    est, lo, hi = v.limits(stats["auroc"], "auroc", delta=DELTA)
    for r in range(reps):
        np.testing.assert_allclose(np.array([est[r], lo[r], hi[r]]),
                                   _identify(emb[:, [r]], z[:, [r]], "auroc"),
                                   rtol=0, atol=1e-12, equal_nan=True)


def test_fast_path_handles_tied_activations():
    rng = np.random.default_rng(SEED)
    a = np.round(rng.normal(size=(300, 6)), 1)  # many ties, also at the cut-offs
    z = (rng.random((300, 6)) < 0.3).astype(float)
    emb = v.embed_labels(a, z)
    stats = v.top_frac_rank_stats(emb, top_fracs=(0.05, 0.2), delta=DELTA)
    for q in (0.05, 0.2):
        est, lo, hi = v.limits(stats[q], "iou", delta=DELTA)
        for r in range(6):
            np.testing.assert_allclose(np.array([est[r], lo[r], hi[r]]),
                                       _identify(emb[:, [r]], z[:, [r]], "iou", top_frac=q),
                                       rtol=0, atol=1e-12)
    est, lo, hi = v.limits(stats["auroc"], "auroc", delta=DELTA)
    for r in range(6):
        np.testing.assert_allclose(np.array([est[r], lo[r], hi[r]]),
                                   _identify(emb[:, [r]], z[:, [r]], "auroc"), rtol=0, atol=1e-12)


def _manual_violations(limits_rows, pop):
    lo, hi = limits_rows[:, 1], limits_rows[:, 2]
    return int(np.sum((pop < lo) | (pop > hi)))


def test_grid_row_equals_public_path():
    """A small grid's rows, recomputed end to end with identify on the same draws."""
    n, cf, reps, seed = 1000, 0.1, 6, 7
    rows = v.violation_grid(metrics=["iou", "auroc"], ns=[n], concept_freqs=[cf],
                            neuron_freqs=[0.05], top_fracs=(None, 0.05), reps=reps,
                            delta=DELTA, rng=seed, workers=1)
    g = GaussianNeuron(concept_freq=cf, separation=SEPARATION)
    root = v._root_seed(seed)
    by = {(r["metric"], r["binarization"]): r for r in rows}
    # fixed threshold: rebuild data with the drawn cell counts
    tau = g.threshold_for(0.05)
    cnt = g.sample_counts(n, reps, threshold=tau,
                          rng=v._child(root, 1, n, v._code(cf), v._code(0.05)))
    res = []
    for r in range(reps):
        tp, f, c = cnt["tp"][r], cnt["active"][r], cnt["present"][r]
        a = np.r_[np.ones(f), np.zeros(n - f)][:, None]
        zz = np.r_[np.ones(tp), np.zeros(f - tp), np.ones(c - tp), np.zeros(n - f - c + tp)]
        res.append(_identify(a, zz[:, None], "iou", threshold=0.5))
    res = np.array(res)
    row = by[("iou", "threshold")]
    assert row["violations"] == _manual_violations(res, row["population"])
    assert row["median_r"] == pytest.approx(np.median(0.5 * (res[:, 2] - res[:, 1])), abs=1e-12)
    # top_frac and AUROC: the same probing sets
    a, z = g.sample_many(n, reps, rng=v._child(root, 2, n, v._code(cf), v._code(SEPARATION), 0),
                         dtype=np.float64)
    emb = v.embed_labels(a, z)
    for metric, kw, key in (("iou", {"top_frac": 0.05}, ("iou", "top_frac")),
                            ("auroc", {}, ("auroc", "rank"))):
        res = np.array([_identify(emb[:, [r]], z[:, [r]], metric, **kw) for r in range(reps)])
        row = by[key]
        assert row["violations"] == _manual_violations(res, row["population"])
        assert row["median_r"] == pytest.approx(np.median(0.5 * (res[:, 2] - res[:, 1])),
                                                abs=1e-12)
        assert row["q95_abs_error"] == pytest.approx(
            np.quantile(np.abs(res[:, 0] - row["population"]), 0.95), abs=1e-12)


def test_grid_seeding_is_per_cell_and_thread_independent():
    kw = dict(metrics=["precision", "auroc"], ns=[1000], neuron_freqs=[0.05],
              top_fracs=(None, 0.05), reps=300, delta=DELTA, rng=3, chunk_bytes=2e6)
    one = v.violation_grid(concept_freqs=[0.1], workers=1, **kw)
    two = v.violation_grid(concept_freqs=[0.5, 0.1], workers=2, **kw)
    def strip(rows):
        return [{k: (None if isinstance(x, float) and math.isnan(x) else x)
                 for k, x in r.items() if k != "seconds"} for r in rows]

    assert strip(one) == strip([r for r in two if r["concept_freq"] == 0.1])


def test_radius_scale_shrinks_around_estimate():
    rows = v.violation_grid(metrics=["recall"], ns=[10_000], concept_freqs=[0.1],
                            neuron_freqs=[0.05], top_fracs=(None,), reps=500, rng=1,
                            radius_scale=(1.0, 0.5))
    full, half = rows
    assert half["median_r"] == pytest.approx(0.5 * full["median_r"], rel=1e-12)
    assert half["violations"] >= full["violations"]


# ---------------------------------------------------------------------------
# grouped samples


@pytest.mark.slow
@pytest.mark.parametrize("metric", ["precision", "iou"])
def test_grouped_counting_samples_fails_counting_groups_holds(request, metric):
    out = v.grouped_violation(metric=metric, n_groups=200, group_size=25, concept_freq=0.1,
                              neuron_freq=0.1, reps=1000, delta=DELTA, rng=SEED)
    s, g = out["samples"], out["groups"]
    _report(request, f"grouped ({metric}, 200 groups x 25, {out['seconds']:.1f} s)", [
        f"counting samples: {s['violations']}/{out['reps']} = {s['violation_rate']:.3f} "
        f"(p={s['p_value']:.3g}, median r {s['median_r']:.4f})",
        f"counting groups:  {g['violations']}/{out['reps']} = {g['violation_rate']:.3f} "
        f"(p={g['p_value']:.3g}, median r {g['median_r']:.4f})"])
    assert s["violation_rate"] >= 3 * DELTA and s["p_value"] < P_MIN, s
    assert g["p_value"] >= P_MIN, g


# ---------------------------------------------------------------------------
# certified sets under near ties


@pytest.mark.slow
def test_certified_set_coverage(request, artifacts_dir):
    rows = v.certified_set_coverage(ns=(1000, 10_000), m_tieds=(1, 2, 5, 20),
                                    concept_freqs=(0.1, 0.01), reps=1000, delta=DELTA,
                                    rng=SEED, verify_reps=3)
    v.write_table(rows, artifacts_dir / "certified_set_coverage.csv")
    lines = [f"{'n':>6} {'m_tied':>6} {'p':>5} {'C':>3} {'coverage':>8} {'p-value':>8} "
             f"{'set size':>8} {'cert viol':>9} {'best chosen':>11}"]
    for r in rows:
        lines.append(f"{r['n']:>6} {r['m_tied']:>6} {r['concept_freq']:>5g} "
                     f"{r['n_concepts']:>3} {r['coverage']:>8.4f} {r['p_value']:>8.3g} "
                     f"{r['mean_set_size']:>8.2f} {r['cert_violation_rate']:>9.4f} "
                     f"{r['best_chosen']:>11.3f}")
    _report(request, "certified-set coverage (AUROC, near ties)", lines)
    assert len(rows) == 16
    bad = [r for r in rows if not (r["p_value"] >= P_MIN and r["cert_p_value"] >= P_MIN)]
    assert not bad, bad


# ---------------------------------------------------------------------------
# planning form (faithfulness_bound): the IoU corner that the grouped box bound once had


def test_planning_radius_iou_small_counts():
    n, cf, nf, reps = 100, 0.01, 0.002, 20_000
    r = neurocert.faithfulness_bound("iou", n=n, concept_freq=cf, neuron_freq=nf, delta=DELTA)
    g = GaussianNeuron(concept_freq=cf, separation=SEPARATION)
    tau = g.threshold_for(nf)
    cnt = g.sample_counts(n, reps, threshold=tau, rng=SEED)
    est, _, _ = v.limits(v.fixed_threshold_stats(cnt["tp"], cnt["active"], cnt["present"], n),
                         "iou", delta=DELTA)
    err = np.abs(est - g.population("iou", threshold=tau))
    k = int(np.sum(err[~np.isnan(err)] > r))  # undefined estimates count as covered
    p = stats.binomtest(k, reps, DELTA, alternative="greater").pvalue
    assert p >= P_MIN, f"radius {r:.4f}: {k}/{reps} = {k / reps:.4f} exceed it (p={p:.3g})"
