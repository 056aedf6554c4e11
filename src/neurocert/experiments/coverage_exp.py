"""BE coverage: the bootstrap, split and certified sets against their nominal levels.

This experiment runs :func:`neurocert.coverage.coverage_grid` (exact recall near-tie
models, every decision rule the library's own; see that module's notes). Model: a
binary neuron of frequency ``neuron_freq`` and ``m + n_worse`` concepts of common
frequency ``q``; concept 0 is the population best ``c*`` (recall ``best_recall``), the
``m`` leading concepts lie within ``gap_se`` standard errors of it (``m = 1``: no
near-tie), the ``n_worse`` others are clearly worse. The metric is recall (the one whose
near-ties the generator sets exactly).

Per cell ``reps`` independent probing sets of size ``n`` (one neuron each) give, as
``bootstrap_explain(mode="both")`` would:

* the **bootstrap set** (``n_boot`` multinomial replicates) -- target: the explanation
  (``identify(...).best``) of a fresh independent probing set of size ``n``, nominal
  ``1 - alpha`` (not guaranteed);
* the **split set** (``K = ceil(2/alpha) - 1`` folds) -- target: the explanation of a
  fresh probing set of *fold size* ``floor(n/K)``, ``>= 1 - alpha`` in finite samples;
* the **certified set** (``delta``) -- target: ``c*``, ``>= 1 - delta``.

Each set's coverage of its own target is ``coverage``; its coverage of ``c*`` (the
other target) is ``coverage_best``. Two sweeps: ``alpha`` (every ``(q, m)`` at each
alpha, ``n_boot`` fixed) and ``n_boot`` (one ``q``, one alpha, B varied; independent
probing sets for each B). ``p_value`` is the one-sided binomial p-value of
``H0: coverage >= nominal``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._progress import progress as _progress
from ..coverage import coverage_grid, default_n_folds, recall_tie_model
from ..exceptions import ValidationError
from ._base import Table, caption, child_seed, pyplot, table_rows
from ._base import fmt as _g

NAME = "coverage"
TITLE = "BE coverage: bootstrap, split-conformal and certified sets"
FIGURE = ""

SETS = ("bootstrap", "split", "certified")

PARAMS: dict[str, dict[str, Any]] = {
    "default": {"n": 1000, "concept_freqs": [0.1, 0.01, 0.001], "ms": [1, 2, 5],
                "alphas": [0.05, 0.1, 0.2], "n_boot": 200, "reps": 600, "delta": 0.05,
                "b_concept_freq": 0.01, "b_alpha": 0.1, "n_boots": [50, 100, 200, 500],
                "n_worse": 5, "neuron_freq": 0.2, "best_recall": 0.6, "gap_se": 1.0},
    "quick": {"n": 1000, "concept_freqs": [0.01, 0.001], "ms": [1, 5],
              "alphas": [0.1, 0.2], "n_boot": 100, "reps": 150, "delta": 0.05,
              "b_concept_freq": 0.01, "b_alpha": 0.1, "n_boots": [50, 200],
              "n_worse": 5, "neuron_freq": 0.2, "best_recall": 0.6, "gap_se": 1.0},
}

COLUMNS = ("sweep", "n", "concept_freq", "m", "alpha", "n_boot", "reps", "delta", "set",
           "target", "nominal", "coverage", "coverage_best", "shortfall", "p_value", "size",
           "n_folds", "fold_size", "n_concepts", "share_best_undefined")

#: significance level at which a coverage is called below nominal (reading, tests)
LEVEL = 1e-3


# ---------------------------------------------------------------------------
# parameters


def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return (isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
            and math.isfinite(float(x)))


def _num_list(params: dict[str, Any], key: str, ok, what: str) -> list:
    v = params[key]
    if not isinstance(v, (list, tuple)) or not v or not all(ok(x) for x in v) \
            or len(set(v)) != len(v):
        raise ValidationError(f"{NAME}: `{key}` must be a non-empty list of distinct {what}; "
                              f"got {v!r}")
    return list(v)


def check(params: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` for bad parameters (before any work)."""
    need = ("n", "concept_freqs", "ms", "alphas", "n_boot", "reps", "delta", "b_concept_freq",
            "b_alpha", "n_boots", "n_worse", "neuron_freq", "best_recall", "gap_se")
    missing = [k for k in need if k not in params]
    if missing:
        raise ValidationError(f"{NAME}: missing parameter(s) {missing}")
    unit = lambda x: _is_num(x) and 0 < float(x) < 1
    n = params["n"]
    if not _is_int(n) or n < 20:
        raise ValidationError(f"{NAME}: `n` must be an integer >= 20; got {n!r}")
    qs = _num_list(params, "concept_freqs", unit, "numbers in (0, 1)")
    ms = _num_list(params, "ms", lambda x: _is_int(x) and x >= 1, "integers >= 1")
    alphas = _num_list(params, "alphas", unit, "numbers in (0, 1)")
    _num_list(params, "n_boots", lambda x: _is_int(x) and x >= 10, "integers >= 10")
    for key in ("n_boot", "reps"):
        if not _is_int(params[key]) or params[key] < 10:
            raise ValidationError(f"{NAME}: `{key}` must be an integer >= 10; "
                                  f"got {params[key]!r}")
    for key in ("delta", "b_concept_freq", "b_alpha", "neuron_freq", "best_recall"):
        if not unit(params[key]):
            raise ValidationError(f"{NAME}: `{key}` must be a number in (0, 1); "
                                  f"got {params[key]!r}")
    if not _is_int(params["n_worse"]) or params["n_worse"] < 0:
        raise ValidationError(f"{NAME}: `n_worse` must be an integer >= 0; "
                              f"got {params['n_worse']!r}")
    if not _is_num(params["gap_se"]) or params["gap_se"] <= 0:
        raise ValidationError(f"{NAME}: `gap_se` must be a positive number; "
                              f"got {params['gap_se']!r}")
    if params["n_worse"] + min(ms) < 2:
        raise ValidationError(f"{NAME}: every cell needs at least 2 concepts (m + n_worse)")
    for a in list(alphas) + [params["b_alpha"]]:
        if default_n_folds(float(a)) > n:
            raise ValidationError(f"{NAME}: n={n} is smaller than the {default_n_folds(a)} folds "
                                  f"of alpha={a}")
    model = _model_kwargs(params)
    for q in list(qs) + [params["b_concept_freq"]]:
        for m in ms:  # the library validates each design (frequencies, recall range)
            recall_tie_model(int(n), concept_freq=float(q), m_tied=int(m), **model)


def _model_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    return {"n_worse": int(params["n_worse"]), "neuron_freq": float(params["neuron_freq"]),
            "best_recall": float(params["best_recall"]), "gap_se": float(params["gap_se"])}


def _int_seed(seed: np.random.SeedSequence) -> int:
    """A non-negative int for ``coverage_grid(rng=...)`` (it keys its cells by the entropy
    of the seed only, so a child SeedSequence is turned into fresh entropy first)."""
    return int(seed.generate_state(1, np.uint64)[0])


# ---------------------------------------------------------------------------
# run


def _long_rows(row: dict[str, Any], sweep: str) -> list[dict[str, Any]]:
    n, kf = int(row["n"]), int(row["n_folds"])
    base = {"sweep": sweep, "n": n, "concept_freq": float(row["concept_freq"]),
            "m": int(row["m"]), "alpha": float(row["alpha"]), "n_boot": int(row["n_boot"]),
            "reps": int(row["reps"]), "delta": float(row["delta"])}
    tail = {"n_folds": kf, "fold_size": int(row["fold_size"]),
            "n_concepts": int(row["n_concepts"]),
            "share_best_undefined": float(row["share_best_undefined"])}
    nominal = float(row["nominal"])
    out = [
        {**base, "set": "bootstrap", "target": f"explanation of a fresh set of size {n}",
         "nominal": nominal, "coverage": row["cov_bootstrap"],
         "coverage_best": row["cov_bootstrap_best"], "shortfall": row["short_bootstrap"],
         "p_value": row["p_bootstrap"], "size": row["size_bootstrap"], **tail},
        {**base, "set": "split",
         "target": f"explanation of a fresh set of fold size {int(row['fold_size'])}",
         "nominal": nominal, "coverage": row["cov_split"], "coverage_best": row["cov_split_best"],
         "shortfall": row["short_split"], "p_value": row["p_split"], "size": row["size_split"],
         **tail},
        {**base, "set": "certified", "target": "population-best concept c*",
         "nominal": float(row["nominal_certified"]), "coverage": row["cov_certified"],
         "coverage_best": row["cov_certified"], "shortfall": row["short_certified"],
         "p_value": row["p_certified"], "size": row["size_certified"], **tail},
    ]
    for r in out:
        for k in ("coverage", "coverage_best", "shortfall", "p_value", "size"):
            r[k] = float(r[k])
    return out


def run(params: dict[str, Any], seed: np.random.SeedSequence, progress: bool) -> Table:
    """Long table: one row per (sweep, cell, alpha or B, set) (columns :data:`COLUMNS`)."""
    check(params)
    n = int(params["n"])
    qs = [float(q) for q in params["concept_freqs"]]
    ms = [int(m) for m in params["ms"]]
    alphas = [float(a) for a in params["alphas"]]
    boots = [int(b) for b in params["n_boots"]]
    common = {"reps": int(params["reps"]), "delta": float(params["delta"]),
              **_model_kwargs(params)}
    jobs = [("alpha", q, m, None) for q in qs for m in ms]
    jobs += [("n_boot", float(params["b_concept_freq"]), m, b) for b in boots for m in ms]
    alpha_seed = _int_seed(child_seed(seed, 0))
    rows: list[dict[str, Any]] = []
    for sweep, q, m, b in _progress(jobs, total=len(jobs), desc=NAME, enabled=progress):
        if sweep == "alpha":
            # cells of coverage_grid are seeded by (seed, n, q, m) alone: running them one
            # at a time gives the same numbers as one call with the whole grid
            out = coverage_grid(ns=[n], concept_freqs=[q], ms=[m], alphas=alphas,
                                n_boot=int(params["n_boot"]), rng=alpha_seed, **common)
        else:
            out = coverage_grid(ns=[n], concept_freqs=[q], ms=[m],
                                alphas=[float(params["b_alpha"])], n_boot=b,
                                rng=_int_seed(child_seed(seed, 1, boots.index(b))), **common)
        for row in out:
            rows.extend(_long_rows(row, sweep))
    return table_rows(rows)


# ---------------------------------------------------------------------------
# figure and reading


_M_COLORS = ("#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#8c564b")
_Q_STYLES = ("-", "--", ":", "-.")
_SET_STYLES = {"bootstrap": "-", "split": "--", "certified": ":"}
_SET_MARKERS = {"bootstrap": "o", "split": "s", "certified": "^"}


def _select(table: Table, **kw: Any) -> np.ndarray:
    sel = np.ones(len(table["set"]), bool)
    for k, v in kw.items():
        col = table[k]
        sel &= np.isclose(col.astype(float), float(v)) if isinstance(v, float) else (col == v)
    return sel


def plot(table: Table, params: dict[str, Any]) -> Any:
    """Coverage vs nominal per set (colour m, line style q), c* coverage, size, and vs B."""
    plt = pyplot()
    from matplotlib.lines import Line2D

    qs = [float(q) for q in params["concept_freqs"]]
    ms = [int(m) for m in params["ms"]]
    delta = float(params["delta"])
    bq, ba = float(params["b_concept_freq"]), float(params["b_alpha"])
    fig, axes = plt.subplots(2, 3, figsize=(17, 10))
    mcol = {m: _M_COLORS[i % len(_M_COLORS)] for i, m in enumerate(ms)}
    qsty = {q: _Q_STYLES[i % len(_Q_STYLES)] for i, q in enumerate(qs)}
    handles_mq = ([Line2D([], [], color=mcol[m], lw=2, label=f"m = {m} near-tied")
                   for m in ms]
                  + [Line2D([], [], color="gray", ls=qsty[q], lw=1.5, label=f"q = {q:g}")
                     for q in qs])
    for ax, name, what in ((axes[0, 0], "bootstrap", f"fresh explanation at n = {params['n']}"),
                           (axes[0, 1], "split", "fresh explanation at fold size n/K")):
        for q in qs:
            for m in ms:
                sel = _select(table, sweep="alpha", set=name, concept_freq=q, m=m)
                o = np.argsort(table["nominal"][sel])
                ax.plot(table["nominal"][sel][o], table["coverage"][sel][o], qsty[q],
                        color=mcol[m], marker="o", ms=4, lw=1.5)
        lo = min(0.3, float(np.min(table["coverage"])) - 0.03)
        ax.plot([lo, 1], [lo, 1], color="k", lw=0.8, alpha=0.6)
        ax.set_xlim(min(1 - max(params["alphas"]) - 0.03, 0.97), 1.0)
        ax.set_ylim(lo, 1.01)
        ax.set_xlabel("nominal coverage 1 − α")
        ax.set_ylabel("observed coverage")
        ax.set_title(f"({'a' if name == 'bootstrap' else 'b'}) {name} set → {what}", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(handles=handles_mq + [Line2D([], [], color="k", lw=0.8, label="y = x")],
                  fontsize=7.5, loc="lower right")
    # (c) coverage of c* at the middle alpha
    ax = axes[0, 2]
    a_mid = sorted(float(a) for a in params["alphas"])[len(params["alphas"]) // 2]
    cells = [(q, m) for q in qs for m in ms]
    width = 0.27
    x = np.arange(len(cells))
    for si, name in enumerate(SETS):
        vals = []
        for q, m in cells:
            sel = _select(table, sweep="alpha", set=name, concept_freq=q, m=m, alpha=a_mid)
            vals.append(float(table["coverage_best"][sel][0]) if sel.any() else np.nan)
        ax.bar(x + (si - 1) * width, vals, width, label=f"{name} set",
               color=("#4c72b0", "#dd8452", "#55a868")[si])
    ax.axhline(1 - a_mid, color="k", ls="--", lw=0.8, label=f"1 − α = {1 - a_mid:g}")
    ax.axhline(1 - delta, color="#55a868", ls=":", lw=1.2, label=f"1 − δ = {1 - delta:g}")
    ax.set_xticks(x)
    ax.set_xticklabels([f"q={q:g}\nm={m}" for q, m in cells], fontsize=7.5)
    ax.set_ylim(0, 1.3)
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_xlabel("cell (concept frequency q, near-tied m)")
    ax.set_ylabel("coverage of the population best c*")
    ax.set_title(f"(c) coverage of c* (α = {a_mid:g})", fontsize=10)
    ax.legend(fontsize=7.5, loc="upper center", ncol=3)
    # (d) set size vs nominal at b_concept_freq
    ax = axes[1, 0]
    qd = bq if bq in qs else qs[0]
    for name in SETS:
        for m in ms:
            sel = _select(table, sweep="alpha", set=name, concept_freq=qd, m=m)
            o = np.argsort(table["nominal"][sel])
            xs = 1 - table["alpha"][sel][o].astype(float)
            ax.plot(xs, table["size"][sel][o], _SET_STYLES[name], color=mcol[m],
                    marker=_SET_MARKERS[name], ms=4, lw=1.5)
    ax.set_xlabel("1 − α of the bootstrap and split sets (the certified set uses δ)")
    ax.set_ylabel("mean set size")
    ax.set_title(f"(d) set size (q = {qd:g})", fontsize=10)
    ax.grid(True, alpha=0.3)
    set_handles = [Line2D([], [], color="k", ls=_SET_STYLES[s], marker=_SET_MARKERS[s],
                          label=f"{s} set") for s in SETS]
    ax.legend(handles=[h for h in handles_mq if h.get_label().startswith("m")] + set_handles,
              fontsize=7.5, loc="upper left")
    # (e, f) coverage and size vs B
    for ax, key, ylab, tag in ((axes[1, 1], "coverage", "observed coverage of own target", "e"),
                               (axes[1, 2], "size", "mean set size", "f")):
        for name in SETS:
            for m in ms:
                sel = _select(table, sweep="n_boot", set=name, m=m)
                o = np.argsort(table["n_boot"][sel])
                ax.plot(table["n_boot"][sel][o].astype(float), table[key][sel][o],
                        _SET_STYLES[name], color=mcol[m], marker=_SET_MARKERS[name], ms=4, lw=1.5)
        if key == "coverage":
            ax.axhline(1 - ba, color="k", lw=0.8, alpha=0.7, label=f"1 − α = {1 - ba:g}")
            ax.axhline(1 - delta, color="k", ls=":", lw=0.8, alpha=0.7,
                       label=f"1 − δ = {1 - delta:g}")
        ax.set_xscale("log")
        bs = sorted({int(b) for b in table["n_boot"][table["sweep"] == "n_boot"]})
        ax.set_xticks(bs)
        ax.set_xticklabels([str(b) for b in bs])
        ax.minorticks_off()
        ax.set_xlabel("bootstrap replicates B")
        ax.set_ylabel(ylab)
        ax.set_title(f"({tag}) {key} vs B (q = {bq:g}, α = {ba:g})", fontsize=10)
        ax.grid(True, alpha=0.3)
        extra = ax.get_legend_handles_labels()[0]
        ax.legend(handles=[h for h in handles_mq if h.get_label().startswith("m")] + set_handles
                  + extra, fontsize=7.5, loc="center right" if key == "coverage" else "upper left")
    fig.suptitle(TITLE, fontsize=12)
    cap = (f"Recall near-tie models (neurocert.coverage): n = {params['n']}, m concepts within "
           f"{params['gap_se']:g} SE of the best plus {params['n_worse']} clearly worse, neuron "
           f"frequency {params['neuron_freq']:g}; {params['reps']} probing sets per cell; "
           f"B = {params['n_boot']} in (a)-(d); δ = {delta:g}. Targets: bootstrap set → fresh "
           f"explanation at n; split set → fresh explanation at n/K, K = ⌈2/α⌉ − 1; certified "
           f"set → c*.")
    return caption(fig, cap, bottom=0.005, room=0.035, top=0.96)



def reading(table: Table, params: dict[str, Any]) -> str:
    """One paragraph with the main numbers from the table."""
    n = int(params["n"])
    alphas = sorted(float(a) for a in params["alphas"])
    qs = [float(q) for q in params["concept_freqs"]]
    ms = [int(m) for m in params["ms"]]
    a_sweep = table["sweep"] == "alpha"

    def cov(name, q, m, a, key="coverage"):
        sel = _select(table, sweep="alpha", set=name, concept_freq=q, m=m, alpha=a)
        return float(table[key][sel][0])

    # where the bootstrap set under-covers significantly
    bsel = a_sweep & (table["set"] == "bootstrap")
    under = bsel & (table["p_value"].astype(float) < LEVEL)
    cells = sorted({(float(table["concept_freq"][i]), int(table["m"][i]))
                    for i in np.flatnonzero(under)}, key=lambda c: (-c[0], c[1]))
    a_rep = 0.1 if 0.1 in alphas else alphas[len(alphas) // 2]
    if cells:
        under_txt = ("The bootstrap set under-covers the fresh explanation (one-sided binomial "
                     f"p < {LEVEL:g}) in the cells " + ", ".join(
                         f"q = {q:g}, m = {m} ({_g(cov('bootstrap', q, m, a_rep))} at nominal "
                         f"{1 - a_rep:g})" for q, m in cells) + ".")
    else:
        under_txt = ("The bootstrap set never covers the fresh explanation significantly below "
                     f"nominal (p < {LEVEL:g}) in this grid.")
    m_hi, m_lo = max(ms), min(ms)
    q_lo = min(qs)
    lines = []
    for a in [x for x in alphas if x in (0.05, 0.1)] or alphas[:2]:
        per = "; ".join(
            f"q = {q:g}: bootstrap {_g(cov('bootstrap', q, m_lo, a))}/"
            f"{_g(cov('bootstrap', q, m_hi, a))}, split {_g(cov('split', q, m_lo, a))}/"
            f"{_g(cov('split', q, m_hi, a))}" for q in qs)
        lines.append(f"at α = {a:g} (m = {m_lo}/{m_hi}) {per}")
    cert_sel = table["set"] == "certified"
    ssel = table["set"] == "split"
    bs = table["sweep"] == "n_boot"
    boots = sorted({int(b) for b in table["n_boot"][bs]})
    b_line = ""
    if boots:
        ba = float(params["b_alpha"])
        parts = []
        for m in ms:
            vals = [float(table["coverage"][_select(table, sweep="n_boot", set="bootstrap", m=m,
                                                    n_boot=b)][0]) for b in boots]
            parts.append(f"m = {m}: " + " → ".join(_g(v) for v in vals))
        m_bad = [m for m in ms if float(table["p_value"][_select(
            table, sweep="n_boot", set="bootstrap", m=m, n_boot=boots[-1])][0]) < LEVEL]
        verdict = (f"at B = {boots[-1]} it is still significantly below nominal for m = "
                   + ", ".join(str(m) for m in m_bad)
                   + ": the shortfall is a bias of the bootstrap law of the argmax, not "
                   "Monte-Carlo error" if m_bad else
                   f"at B = {boots[-1]} no cell is significantly below nominal")
        b_line = (f" Against the number of replicates (q = {float(params['b_concept_freq']):g}, "
                  f"nominal {1 - ba:g}), the bootstrap set's coverage goes "
                  f"{'; '.join(parts)} for B = {' → '.join(str(b) for b in boots)}; {verdict}.")
    return (
        f"Coverage at n = {n} with {int(table['reps'][0])} probing sets per cell; "
        + "; ".join(lines) + ". " + under_txt
        + f" With rare concepts the bootstrap set also misses the population best: at "
        f"q = {q_lo:g} (n·q = {_g(n * q_lo)}) and m = {m_lo} it contains c* in only "
        f"{_g(cov('bootstrap', q_lo, m_lo, a_rep, 'coverage_best'))} of the sets. "
        f"The split set never falls significantly below 1 − α for the fold-size explanation "
        f"(lowest one-sided p-value {_g(np.min(table['p_value'][ssel]))}; lowest coverage "
        f"{_g(np.min(table['coverage'][ssel]))}, at nominal "
        f"{_g(table['nominal'][ssel][np.argmin(table['coverage'][ssel])])}), as its "
        f"finite-sample guarantee says, but with rare concepts that target is often \"none\" "
        f"(c* absent from the probing set, its recall undefined, in up to "
        f"{_g(np.max(table['share_best_undefined']))} of the sets at q = {q_lo:g}); the "
        f"certified set contains c* in a share of at least "
        f"{_g(np.min(table['coverage'][cert_sel]))} of the sets in every cell (nominal "
        f"{1 - float(params['delta']):g}), at the price of size "
        f"{_g(np.min(table['size'][cert_sel]))}–{_g(np.max(table['size'][cert_sel]))} against "
        f"{_g(np.min(table['size'][bsel]))}–{_g(np.max(table['size'][bsel]))} for the bootstrap "
        f"set." + b_line)
