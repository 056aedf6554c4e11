"""`neurocert experiments --quick` as a CI test: files, shapes that could fail, determinism,
resume and errors before work.

Setting of the convergence/theory checks (the modules' ``PARAMS["quick"]``):
GaussianNeuron ``a = 2 z + N(0, 1)``, the neuron binarized at the fixed threshold whose
activation frequency equals the concept frequency (neuron frequency 0.5 at concept
frequency 0.5, 0.001 at 0.001), 2000 exact probing sets per cell, n in {1000, 4000, 16000}.
"""

from __future__ import annotations

import shutil
import warnings

import numpy as np
import pandas as pd  # the test extra installs pandas and matplotlib: no skip here
import pytest
from scipy import stats

from neurocert.cli import main
from neurocert.exceptions import LowFrequencyAccuracyWarning, ValidationError
from neurocert.experiments import EXPERIMENTS, convergence, run_experiments, theory

MINE = ["convergence", "theory"]
FREQUENCY_SENSITIVE = ["auroc", "recall", "iou"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("experiments") / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = run_experiments(out, which=MINE, quick=True, seed=0, progress=False)
    return res, list(caught)


def _table(res, name: str):
    return pd.read_csv(res["out_dir"] / f"{name}.csv")


def _slope(df, metric: str, cf: float) -> float:
    sel = df[(df.metric == metric) & np.isclose(df.concept_freq, cf)].sort_values("n")
    return float(np.polyfit(np.log(sel.n), np.log(sel.q95_abs_error), 1)[0])


# ---------------------------------------------------------------------------
# the whole quick run (all six experiments)


@pytest.fixture(scope="module")
def all_six(tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_experiments(tmp_path_factory.mktemp("all") / "out", quick=True, seed=0,
                               progress=False)


def test_quick_run_of_all_six_experiments(all_six):
    """The CI run: every experiment, all files, the index shows every figure, <= 1 minute."""
    res = all_six
    assert list(res["experiments"]) == list(EXPERIMENTS)
    assert res["seconds"] <= 60, f"quick run took {res['seconds']:.1f} s (limit 60 s)"
    out = res["out_dir"]
    index = (out / "index.md").read_text()
    for name in EXPERIMENTS:
        for ext in ("csv", "png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
        assert f"]({name}.png)" in index
    assert (out / "manifest.json").exists()


# ---------------------------------------------------------------------------
# files, manifest, index


def test_files_manifest_and_index(quick_run):
    res, _ = quick_run
    out = res["out_dir"]
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "experiments" and manifest["seed"] == 0
    index = (out / "index.md").read_text()
    for name in MINE:
        for ext in ("csv", "png", "svg"):
            assert (out / f"{name}.{ext}").stat().st_size > 0
        entry = manifest["experiments"][name]
        assert entry["spawn_key"] == [EXPERIMENTS.index(name)]
        assert entry["params"] == (convergence if name == "convergence" else theory
                                   ).PARAMS["quick"]
        assert len(entry["params_hash"]) == 64 and entry["seconds"]["total"] > 0
        assert f"![{entry['title']}]({name}.png)" in index
        assert entry["reading"] in index and entry["figure"] in index
        assert entry["reading"].count("n/a") == 0
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (out / "theory.svg").read_bytes()[:2000]


def test_low_frequency_accuracy_warning(quick_run):
    _, caught = quick_run
    assert any(issubclass(w.category, LowFrequencyAccuracyWarning) for w in caught)
    p = dict(convergence.PARAMS["quick"], ns=[200], reps=50)
    with pytest.warns(LowFrequencyAccuracyWarning, match="1 - p_c"):
        convergence.run(p, np.random.SeedSequence(0), False)
    with warnings.catch_warnings():  # no warning without a rare concept
        warnings.simplefilter("error", LowFrequencyAccuracyWarning)
        convergence.run(dict(p, concept_freqs=[0.5], neuron_freqs=[0.5]),
                        np.random.SeedSequence(0), False)


# ---------------------------------------------------------------------------
# shapes that could fail


@pytest.mark.parametrize("metric", convergence.METRICS)
def test_slope_at_balanced_concept(quick_run, metric):
    """(a) log q95 against log n has slope in [-0.6, -0.4] at concept frequency 0.5."""
    s = _slope(_table(quick_run[0], "convergence"), metric, 0.5)
    assert -0.6 <= s <= -0.4, (metric, s)


@pytest.mark.parametrize("metric", FREQUENCY_SENSITIVE)
def test_rare_concept_error_is_five_times_larger(quick_run, metric):
    """(b) q95 at concept frequency 0.001 >= 5 x q95 at 0.5, at every n (neuron frequency
    = concept frequency: 0.001 and 0.5)."""
    df = _table(quick_run[0], "convergence")
    rare = df[(df.metric == metric) & np.isclose(df.concept_freq, 0.001)].set_index("n")
    common = df[(df.metric == metric) & np.isclose(df.concept_freq, 0.5)].set_index("n")
    assert list(rare.neuron_freq.unique()) == [0.001] and list(common.neuron_freq.unique()) == [0.5]
    ratio = rare.q95_abs_error / common.q95_abs_error
    assert len(ratio) == len(convergence.PARAMS["quick"]["ns"])
    assert (ratio >= 5).all(), ratio.to_dict()


def test_bound_above_simulated_quantile(quick_run):
    """(c) the planning bound >= the simulated q95 in every cell with a finite bound."""
    df = _table(quick_run[0], "theory")
    assert len(df) == 5 * 2 * len(theory.PARAMS["quick"]["ns"])
    finite = df[np.isfinite(df.bound)]
    assert len(finite) >= 0.8 * len(df)
    bad = finite[finite.bound < finite.q95_abs_error]
    assert bad.empty, bad[["metric", "concept_freq", "n", "q95_abs_error", "bound"]]
    assert (df.bound_finite == np.isfinite(df.bound)).all()
    # the certificate from observed counts is a sensible radius (not far below the error)
    ok = df.undefined_share == 0
    assert (df.median_half_width[ok] >= 0.5 * df.q95_abs_error[ok]).all()


def test_undefined_share_reported(quick_run):
    df = _table(quick_run[0], "convergence")
    rare = df[np.isclose(df.concept_freq, 0.001) & (df.n == 1000)]
    assert (rare.set_index("metric").undefined_share[["auroc", "recall"]] > 0.2).all()
    assert (df[np.isclose(df.concept_freq, 0.5)].undefined_share == 0).all()
    assert (df.n_defined == df.reps * (1 - df.undefined_share)).all()


@pytest.mark.parametrize("cf", [0.5, 0.01])
def test_fast_auroc_sampler_matches_real_probing_sets(cf):
    """The exact AUROC sampler (multinomial over gaps / sorted merge) has the law of the
    library's AUROC on real probing sets."""
    from neurocert.metrics import MetricOptions, get_metric
    from neurocert.simulate import GaussianNeuron
    from neurocert.validity import embed_labels, top_frac_rank_stats

    n, reps = 1500, 1500
    g = GaussianNeuron(concept_freq=cf, separation=1.0)
    m = get_metric("auroc")
    fast = m.finalize(convergence.auroc_stats(g, n, reps, np.random.SeedSequence(1)),
                      MetricOptions()).ravel()
    a, z = g.sample_many(n, reps, rng=2, dtype=np.float64)
    st = top_frac_rank_stats(embed_labels(a, z), top_fracs=[], delta=0.05)["auroc"]
    real = m.finalize(st, MetricOptions()).ravel()
    fast, real = fast[~np.isnan(fast)], real[~np.isnan(real)]
    assert stats.ks_2samp(fast, real).pvalue > 1e-3
    assert abs(fast.mean() - g.population("auroc")) < 4 * fast.std() / np.sqrt(fast.size)


# ---------------------------------------------------------------------------
# determinism and resume


def test_deterministic_tables(quick_run, all_six):
    """Same seed, same tables -- also when the other experiments run too (a seed depends on
    the experiment's index, not on which experiments are requested)."""
    res, _ = quick_run
    for name in MINE:
        a = (res["out_dir"] / f"{name}.csv").read_bytes()
        b = (all_six["out_dir"] / f"{name}.csv").read_bytes()
        assert a == b, name


def test_resume_recomputes_only_the_missing_experiment(quick_run, tmp_path, monkeypatch):
    res, _ = quick_run
    out = tmp_path / "resume"
    shutil.copytree(res["out_dir"], out)
    (out / "theory.png").unlink()
    calls = []
    for mod in (convergence, theory):
        original = mod.run

        def counted(params, seed, progress, _orig=original, _name=mod.NAME):
            calls.append(_name)
            return _orig(params, seed, progress)

        monkeypatch.setattr(mod, "run", counted)
    before = (out / "convergence.csv").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = run_experiments(out, which=MINE, quick=True, seed=0, progress=False)
    assert calls == ["theory"]
    assert again["experiments"]["convergence"]["status"] == "resumed"
    assert again["experiments"]["theory"]["status"] == "ran"
    assert (out / "theory.png").exists()
    assert (out / "convergence.csv").stat().st_mtime_ns == before
    assert (out / "theory.csv").read_bytes() == (res["out_dir"] / "theory.csv").read_bytes()
    # another seed or resume=False recomputes
    calls.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_experiments(out, which=["convergence"], quick=True, seed=0, progress=False,
                        resume=False)
    assert calls == ["convergence"]


# ---------------------------------------------------------------------------
# errors before any work


def test_unknown_experiment_name(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(ValidationError, match="known: convergence, theory, selection"):
        run_experiments(out, which=["convergence", "nope"], quick=True, progress=False)
    assert not out.exists()


@pytest.mark.parametrize("module,key,value", [
    (convergence, "ns", [0, 100]),
    (theory, "ns", [1000, -5]),
    (theory, "delta", 1.5),
    (convergence, "neuron_freqs", [0.5]),
    (convergence, "metrics", ["accuracy", "wpmi2"]),
])
def test_bad_parameter_errors_before_any_file(tmp_path, monkeypatch, module, key, value):
    calls = []
    monkeypatch.setitem(module.PARAMS, "quick", dict(module.PARAMS["quick"], **{key: value}))
    for mod in (convergence, theory):
        monkeypatch.setattr(mod, "run", lambda *a, _n=mod.NAME: calls.append(_n))
    out = tmp_path / "never"
    with pytest.raises(ValidationError, match=module.NAME):
        run_experiments(out, which=MINE, quick=True, progress=False)
    assert calls == [] and not out.exists()


def test_bad_seed(tmp_path):
    with pytest.raises(ValidationError, match="seed"):
        run_experiments(tmp_path / "never", which=MINE, quick=True, seed=-1, progress=False)
    assert not (tmp_path / "never").exists()


# ---------------------------------------------------------------------------
# command line


def test_cli_experiments(quick_run, tmp_path, capsys):
    out = tmp_path / "cli"
    shutil.copytree(quick_run[0]["out_dir"], out)
    code = main(["--no-progress", "experiments", "--quick", "--only", "convergence", "theory",
                 "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "resumed" in printed and f"index: {out / 'index.md'}" in printed


def test_cli_bad_name_is_one_line_error(tmp_path, capsys):
    out = tmp_path / "never"
    code = main(["experiments", "--only", "nope", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: unknown experiment")
    assert not out.exists()
