"""The selection, stability, coverage and cost experiments (issue "Reproduce the paper's
experiments"): each module's QUICK run, its table, determinism, parameter checks, figure
and reading, and the substantive claims that could fail.

Substantive checks (fixed before running):

* selection: in every cell the realised loss sim(c*) - sim(c_hat) is within the
  computable regret bound in a share of probing sets not significantly below
  1 - delta (one-sided binomial test at 1e-3), and the counts-based regret bound and
  certified set equal ``identify``'s on materialised probing sets;
* coverage: in every quick cell the certified set covers c* at >= 1 - delta and the
  split set covers the fold-size explanation at >= 1 - alpha (one-sided binomial test
  at 1e-3);
* stability: for the planted concept the mean mode frequency does not fall by more than
  ``stability.MONOTONE_TOLERANCE`` (0.1) from one n to the next, and is higher at the
  largest n than at the smallest, at every concept frequency;
* cost: the straightforward similarity loop picks the same replicate winners as BE.

The hard time limit of the quick run lives in the runner's test; here each module's
quick time is printed (``pytest -s``).
"""

from __future__ import annotations

import copy
import math
import re
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from neurocert import identify
from neurocert.exceptions import ValidationError
from neurocert.experiments import cost, coverage_exp, selection, stability

MODULES = {"selection": selection, "stability": stability, "coverage": coverage_exp,
           "cost": cost}
SEED = 20240611
LEVEL = 1e-3
TIMING_SUFFIXES = ("_s", "_mib")

_cache: dict[str, tuple[dict, float]] = {}


def _run(name: str, seed: int = SEED):
    mod = MODULES[name]
    t0 = time.perf_counter()
    table = mod.run(copy.deepcopy(mod.PARAMS["quick"]), np.random.SeedSequence(seed), False)
    return table, time.perf_counter() - t0


def quick(name: str):
    if name not in _cache:
        table, elapsed = _run(name)
        print(f"\n{name}: quick run {elapsed:.1f} s, {len(next(iter(table.values())))} rows")
        _cache[name] = (table, elapsed)
    return _cache[name][0]


def _is_timing(col: str) -> bool:
    return col.endswith(TIMING_SUFFIXES)


# ---------------------------------------------------------------------------
# the contract


@pytest.mark.parametrize("name", list(MODULES))
def test_contract_attributes(name):
    mod = MODULES[name]
    assert isinstance(mod.NAME, str) and mod.NAME
    assert isinstance(mod.TITLE, str) and mod.TITLE
    assert isinstance(mod.FIGURE, str)
    assert set(mod.PARAMS) == {"default", "quick"}
    import json

    for size in ("default", "quick"):
        json.dumps(mod.PARAMS[size])  # JSON-serialisable
        mod.check(copy.deepcopy(mod.PARAMS[size]))


@pytest.mark.parametrize("name", list(MODULES))
def test_table_columns(name):
    mod = MODULES[name]
    table = quick(name)
    assert list(table) == list(mod.COLUMNS)
    lengths = {len(v) for v in table.values()}
    assert len(lengths) == 1 and lengths.pop() > 0
    for col, v in table.items():
        assert isinstance(v, np.ndarray) and v.ndim == 1, col


@pytest.mark.parametrize("name", list(MODULES))
def test_deterministic(name):
    first = quick(name)
    again, _ = _run(name)
    # another seed must change the results (checked where a rerun is cheap)
    other = _run(name, seed=SEED + 1)[0] if name in ("selection", "coverage") else None
    differs = False
    for col in first:
        if _is_timing(col):
            continue
        a, b = first[col], again[col]
        if a.dtype == object:
            assert list(a) == list(b), col
        else:
            np.testing.assert_array_equal(a, b, err_msg=col)
        if other is not None and a.dtype != object \
                and not np.array_equal(a, other[col], equal_nan=True):
            differs = True
    if other is not None:
        assert differs, "a different seed should change some result"


BAD_PARAMS = {
    "selection": [("reps", 3), ("ns", []), ("ns", [1000, 1000]), ("n_concepts", [1]),
                  ("delta", 1.5), ("concept_freq", 0.5), ("near_gaps", [0.1, 0.05, 0.2, 0.3]),
                  ("distractor_recalls", [0.6, 0.1]), ("ns", "1000")],
    "stability": [("ns", [5]), ("concept_freqs", [0.9]), ("n_sets", 1), ("n_boot", 0),
                  ("alpha", 0), ("competitor_recalls", [0.9]), ("planted_recall", 0.1),
                  ("ns", [1000.5])],
    "coverage": [("alphas", [0.001]), ("alphas", [1.2]), ("ms", [0]), ("concept_freqs", [0.9]),
                 ("reps", 2), ("n_boots", []), ("delta", -0.1), ("n", 10)],
    "cost": [("metrics", ["f1"]), ("n_boots", [0]), ("n_concepts", [1]), ("top_frac", 1.0),
             ("loop_reps", 100), ("n_samples", 10), ("timing_repeats", 0)],
}


@pytest.mark.parametrize("name", list(MODULES))
def test_check_rejects_bad_params(name):
    mod = MODULES[name]
    for key, value in BAD_PARAMS[name]:
        params = copy.deepcopy(mod.PARAMS["quick"])
        params[key] = value
        with pytest.raises(ValidationError):
            mod.check(params)
    params = copy.deepcopy(mod.PARAMS["quick"])
    params.pop(next(iter(params)))
    with pytest.raises(ValidationError, match="missing"):
        mod.check(params)
    bad = copy.deepcopy(mod.PARAMS["quick"])
    bad[BAD_PARAMS[name][0][0]] = BAD_PARAMS[name][0][1]
    t0 = time.perf_counter()
    with pytest.raises(ValidationError):  # run() checks before any work
        mod.run(bad, np.random.SeedSequence(1), False)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("name", list(MODULES))
def test_plot(name, tmp_path):
    from matplotlib.figure import Figure

    mod = MODULES[name]
    fig = mod.plot(quick(name), mod.PARAMS["quick"])
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert axes
    for ax in axes:
        assert ax.get_xlabel().strip(), ax.get_title()
        assert ax.get_ylabel().strip(), ax.get_title()
    assert any(ax.get_legend() is not None for ax in axes)
    assert fig._suptitle is not None and fig._suptitle.get_text()
    fig.savefig(tmp_path / f"{name}.png", dpi=60)
    import matplotlib.pyplot as plt

    plt.close(fig)


_NUM = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def _table_strings(table) -> set[str]:
    out = set()
    for v in table.values():
        if v.dtype == object:
            continue
        for x in np.asarray(v, float).ravel():
            if not math.isfinite(x):
                continue
            out.add(f"{x:.3g}")
            if float(x).is_integer():
                out.add(str(int(x)))
    return out


@pytest.mark.parametrize("name", list(MODULES))
def test_reading_uses_table_numbers(name):
    mod = MODULES[name]
    table = quick(name)
    text = mod.reading(table, mod.PARAMS["quick"])
    assert isinstance(text, str) and len(text) > 200
    assert "nan" not in text.lower().replace("nanmedian", "")
    tokens = set(_NUM.findall(text))
    hits = tokens & _table_strings(table)
    # numbers that are results (not parameters): at least a few per reading
    results = set()
    skip = {"n", "reps", "delta", "n_concepts", "concept_freq", "alpha", "n_boot", "n_sets",
            "m", "n_samples", "n_neurons", "loop_reps", "n_folds", "fold_size", "nominal",
            "expected_concept_count"}
    for col, v in table.items():
        if col in skip or v.dtype == object:
            continue
        for x in np.asarray(v, float).ravel():
            if math.isfinite(x):
                results.add(f"{x:.3g}")
    assert len(hits) >= 6, (hits, text)
    assert len(tokens & results) >= 4, (tokens & results, text)


# ---------------------------------------------------------------------------
# substantive checks


def test_selection_loss_within_regret_bound():
    t = quick("selection")
    delta = selection.PARAMS["quick"]["delta"]
    for i in range(len(t["n"])):
        cell = (int(t["n"][i]), int(t["n_concepts"][i]))
        assert t["p_regret"][i] >= LEVEL, (cell, t["share_loss_le_regret"][i])
        assert t["share_loss_le_regret"][i] >= 1 - delta - 0.05, cell
        assert t["share_cert_covers"][i] >= 1 - delta - 0.05, cell
        # the bounds are ordered as theory says: loss q95 <= median regret bound
        assert t["loss_q95"][i] <= t["regret_median"][i], cell
    print("\nselection: share(loss <= regret bound) per cell:",
          dict(zip(zip(t["n"].tolist(), t["n_concepts"].tolist()),
                   t["share_loss_le_regret"].tolist())))


def test_selection_bounds_equal_identify():
    """The counts-based limits, explanation, regret bound and certified sets are identify's."""
    params = selection.PARAMS["quick"]
    model = selection.concept_model(params, 8)
    gen = np.random.default_rng(3)
    n = 2000
    y, z = model.sample(gen, n, 6)
    tp = (z & y[..., None]).sum(axis=1).astype(float)
    f = y.sum(axis=1).astype(float)
    c = z.sum(axis=1).astype(float)
    q = selection.set_quantities(tp, f, c, n, params["delta"])
    for r in range(6):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = identify(y[r][:, None].astype(float), z[r].astype(float), metric="iou",
                           delta=params["delta"])
        np.testing.assert_allclose(res.similarity[0], q["sim"][r], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.lower[0], q["lower"][r], rtol=0, atol=1e-12)
        np.testing.assert_allclose(res.upper[0], q["upper"][r], rtol=0, atol=1e-12)
        assert int(res.best[0]) == int(q["best"][r])
        assert res.regret_bound[0] == pytest.approx(q["regret"][r], abs=1e-12)
        assert res.certified_sets[0].tolist() == q["certified"][r].tolist()
    # the population values are exact: concept 0 is the best, the order is the recall order
    pop = model.population("iou")
    assert np.all(np.diff(pop) <= 0) and pop[0] > pop[1]


def test_coverage_guarantees_hold_in_every_quick_cell():
    t = quick("coverage")
    for name in ("certified", "split"):
        sel = t["set"] == name
        assert sel.any()
        for i in np.flatnonzero(sel):
            cell = (t["sweep"][i], float(t["concept_freq"][i]), int(t["m"][i]),
                    float(t["alpha"][i]), int(t["n_boot"][i]))
            assert t["p_value"][i] >= LEVEL, (name, cell, t["coverage"][i], t["nominal"][i])
    cert = t["set"] == "certified"
    assert np.all(t["nominal"][cert] == pytest.approx(1 - coverage_exp.PARAMS["quick"]["delta"]))
    # the documented limitation is visible: the bootstrap set under-covers at m = 5
    boot = (t["set"] == "bootstrap") & (t["m"] == max(coverage_exp.PARAMS["quick"]["ms"]))
    assert np.any(t["p_value"][boot] < LEVEL)


def test_stability_mode_frequency_grows_with_n():
    t = quick("stability")
    assert stability.monotone_violations(t) == []
    for q in set(t["concept_freq"].tolist()):
        sel = t["concept_freq"] == q
        o = np.argsort(t["n"][sel])
        mf = t["mode_frequency"][sel][o]
        assert mf[-1] > mf[0], (q, mf)
        assert np.all((mf >= 0) & (mf <= 1))
        ag = t["agreement"][sel][o]
        assert np.all(ag <= mf + 1e-12)  # sum p^2 <= max p


def test_cost_loop_agrees_with_be():
    t = quick("cost")
    assert np.all(t["loop_agreement"] == 1.0)
    for col in t:
        if _is_timing(col):
            v = t[col].astype(float)
            assert np.all(np.isfinite(v) & (v >= 0)), col
    assert set(t["sweep"].tolist()) == {"n_boot", "n_concepts"}
