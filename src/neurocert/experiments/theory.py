"""Theory against simulation of the generalization gap (the paper's Figure 3).

For each metric, concept frequency and probing-set size ``n`` (the model and exact
sampling of :mod:`neurocert.experiments.convergence`, with its own independent draws):

* the simulated gap quantile: the ``1 - delta`` quantile of ``|sim_hat - sim|`` over the
  probing sets whose estimate is defined;
* the theoretical planning bound ``neurocert.faithfulness_bound(metric, n=n, delta=delta,
  concept_freq=..., neuron_freq=...)`` -- a radius that holds with probability
  ``>= 1 - delta`` before seeing data (infinite where no finite radius is proven);
* the median half-width ``(U - L) / 2`` of the certificate computed from the observed
  counts (:func:`neurocert.bounds.confidence_limits`, one concept, over the defined
  estimates).

A valid planning bound lies above the simulated quantile in every cell; the certificate
half-width shows how much an analyst who sees the counts gains over the planning form.
"""

from __future__ import annotations

import math
import textwrap
import warnings
from typing import Any

import numpy as np

from ..bounds import faithfulness_bound
from ..exceptions import NoBoundWarning, ValidationError
from ._base import Table, pyplot, table_rows
from .convergence import (
    METRICS,
    _sorted,
    check_sim,
    simulate,
    summarise_errors,
    warn_accuracy,
)

NAME = "theory"
TITLE = "Theory vs simulation of the generalization gap"
FIGURE = "Figure 3"

_DEFAULT_NS = [100, 215, 464, 1000, 2154, 4642, 10000, 21544, 46416, 100000]

PARAMS: dict[str, dict[str, Any]] = {
    "default": {"ns": _DEFAULT_NS, "concept_freqs": [0.5, 0.001],
                "neuron_freqs": [0.5, 0.001], "separation": 2.0, "reps": 2000,
                "metrics": list(METRICS), "delta": 0.05},
    "quick": {"ns": [1000, 4000, 16000], "concept_freqs": [0.5, 0.001],
              "neuron_freqs": [0.5, 0.001], "separation": 2.0, "reps": 2000,
              "metrics": list(METRICS), "delta": 0.05},
}


def _sim_params(params: dict[str, Any]) -> dict[str, Any]:
    return {**{k: v for k, v in params.items() if k != "delta"},
            "quantile": 1.0 - float(params["delta"])}


def check(params: dict[str, Any]) -> None:
    """Raise :class:`ValidationError` for bad parameters (before any work)."""
    if "delta" not in params:
        raise ValidationError(f"{NAME}: missing parameter(s) ['delta']")
    d = params["delta"]
    if isinstance(d, bool) or not isinstance(d, (int, float)) or not 0 < d < 1:
        raise ValidationError(f"{NAME}: `delta` must lie in (0, 1); got {d!r}")
    check_sim(_sim_params(params), NAME)


def run(params: dict[str, Any], seed: np.random.SeedSequence, progress: bool) -> Table:
    """Simulated gap quantile, planning bound and median certificate half-width per cell."""
    check(params)
    warn_accuracy(params)
    delta = float(params["delta"])
    sp = _sim_params(params)
    rows = []
    for rec in simulate(sp, seed, progress=progress, desc=NAME, intervals=True, delta=delta):
        m, cf, nf, n = rec["metric"], rec["concept_freq"], rec["neuron_freq"], rec["n"]
        s = summarise_errors(rec["estimate"], rec["population"], sp["quantile"])
        defined = ~np.isnan(rec["estimate"])
        half = 0.5 * (rec["upper"][defined] - rec["lower"][defined])
        med_half = float(np.median(half)) if half.size else float("nan")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoBoundWarning)
            bound = float(faithfulness_bound(m, n=n, delta=delta, concept_freq=cf,
                                             neuron_freq=nf))
        q = s["q_abs_error"]
        rows.append({"metric": m, "concept_freq": cf, "neuron_freq": nf,
                     "threshold": rec["threshold"], "separation": float(params["separation"]),
                     "n": n, "delta": delta, "population": rec["population"],
                     "reps": s["reps"], "n_defined": s["n_defined"],
                     "undefined_share": s["undefined_share"], "q95_abs_error": q,
                     "bound": bound, "bound_finite": bool(math.isfinite(bound)),
                     "median_half_width": med_half,
                     "bound_over_q95": bound / q if math.isfinite(bound) and q > 0
                     else float("nan"),
                     "half_width_over_q95": med_half / q if q > 0 else float("nan")})
    return _sorted(table_rows(rows))


_STYLE = {"q95_abs_error": ("simulated gap quantile", "-", "o", "#1f77b4"),
          "bound": ("planning bound (faithfulness_bound)", "--", "s", "#d62728"),
          "median_half_width": ("median certificate half-width", ":", "^", "#2ca02c")}


def plot(table: Table, params: dict[str, Any]) -> Any:
    """Rows: concept frequencies; columns: metrics; three curves per panel (log-log)."""
    plt = pyplot()
    cfs = [float(c) for c in params["concept_freqs"]]
    nfs = [float(f) for f in params["neuron_freqs"]]
    mets = list(params["metrics"])
    fig, axes = plt.subplots(len(cfs), len(mets), figsize=(3.3 * len(mets), 3.0 * len(cfs) + 1.3),
                             squeeze=False, sharex=True)
    for i, (cf, nf) in enumerate(zip(cfs, nfs, strict=True)):
        for j, m in enumerate(mets):
            ax = axes[i][j]
            sel = (table["metric"] == m) & np.isclose(table["concept_freq"], cf)
            n = table["n"][sel].astype(float)
            for col, (label, ls, mk, color) in _STYLE.items():
                y = table[col][sel].astype(float)
                y = np.where(np.isfinite(y) & (y > 0), y, np.nan)  # infinite bound: missing
                ax.plot(n, y, linestyle=ls, marker=mk, color=color, ms=3.5, lw=1.3, label=label)
            missing = int(np.sum(~table["bound_finite"][sel].astype(bool)))
            if missing:
                ax.text(0.03, 0.03, f"bound infinite at {missing} of {int(sel.sum())} n",
                        transform=ax.transAxes, ha="left", va="bottom", fontsize=7,
                        color="#d62728")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{m}, concept {cf:g} / neuron {nf:g}", fontsize=9)
            if i == len(cfs) - 1:
                ax.set_xlabel("probing-set size n")
            if j == 0:
                ax.set_ylabel("error or radius")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=9,
               bbox_to_anchor=(0.5, 0.955), frameon=False)
    fig.suptitle(f"{FIGURE}: {TITLE}", fontsize=12, y=0.995)
    caption = (f"delta = {params['delta']:g}: simulated {1 - params['delta']:g}-quantile of "
               f"|sim_hat − sim| over {params['reps']} exact probing sets per cell (defined "
               "estimates only); planning bound = neurocert.faithfulness_bound (missing where "
               "infinite); certificate = confidence_limits from the observed counts, one "
               f"concept. GaussianNeuron a = {float(params['separation']):g}·z + N(0,1), fixed "
               "threshold at the stated neuron frequency.")
    fig.text(0.5, 0.005, "\n".join(textwrap.wrap(caption, 190)), ha="center", va="bottom",
             fontsize=7.5)
    # fixed margins: tight_layout costs seconds on ten log-scaled panels
    fig.subplots_adjust(left=0.055, right=0.99, bottom=0.16, top=0.85, wspace=0.32, hspace=0.3)
    return fig


def _fmt(x: float) -> str:
    return "∞" if x == math.inf else ("n/a" if not math.isfinite(x) else f"{x:.3g}")


def reading(table: Table, params: dict[str, Any]) -> str:
    """One paragraph with the main numbers from the table."""
    cfs = [float(c) for c in params["concept_freqs"]]
    ns = sorted(int(n) for n in params["ns"])
    hi_n = 100000 if 100000 in ns else ns[-1]
    mets = list(params["metrics"])
    finite = table["bound_finite"].astype(bool)
    q = table["q95_abs_error"].astype(float)
    b = table["bound"].astype(float)
    ok = finite & np.isfinite(q)
    held = int(np.sum(b[ok] >= q[ok]))
    informative = ok & (b < 1.0)  # every metric here lies in [0, 1]: a radius >= 1 is vacuous
    text = (f"The planning bound lies above the simulated {1 - params['delta']:g}-quantile of "
            f"the gap in {held} of {int(ok.sum())} cells with a finite bound; "
            f"{int((ok & ~informative).sum())} of these bounds are vacuous (≥ 1) and "
            f"{int((~finite).sum())} cells have an infinite bound (not drawn).")

    def cell(m: str, cf: float, n: int, col: str) -> float:
        sel = (table["metric"] == m) & np.isclose(table["concept_freq"], cf) & (table["n"] == n)
        return float(table[col][sel][0]) if sel.any() else float("nan")

    for cf in cfs:
        parts = []
        for m in mets:
            parts.append(f"{m} q95 {_fmt(cell(m, cf, hi_n, 'q95_abs_error'))}, bound "
                         f"{_fmt(cell(m, cf, hi_n, 'bound'))} (×{_fmt(cell(m, cf, hi_n, 'bound_over_q95'))}), "
                         f"certificate {_fmt(cell(m, cf, hi_n, 'median_half_width'))}")
        text += f" At concept frequency {cf:g} and n = {hi_n:,}: " + "; ".join(parts) + "."
    vacuous = []
    for cf in cfs:
        mv = [m for m in mets if cell(m, cf, hi_n, "bound") >= 1.0]
        if mv:
            vacuous.append(f"{', '.join(mv)} at concept frequency {cf:g}")
    if vacuous:
        text += (f" The planning bound is still vacuous (≥ 1 or infinite) at n = {hi_n:,} for "
                 + "; ".join(vacuous) + ".")
    sel = informative & (q > 0)
    if sel.any():
        r = b[sel] / q[sel]
        text += (f" Where the bound is informative (< 1) it is {np.min(r):.2g} to "
                 f"{np.max(r):.2g} times the simulated quantile (median {np.median(r):.2g}).")
    hw = table["median_half_width"].astype(float)
    both = np.isfinite(hw) & np.isfinite(q) & (q > 0)
    if both.any():
        tighter = int(np.sum(hw[both] < np.where(finite[both], b[both], np.inf)))
        text += (f" The median certificate from the observed counts is "
                 f"{np.min(hw[both] / q[both]):.2g} to {np.max(hw[both] / q[both]):.2g} times "
                 f"the simulated quantile and narrower than the planning bound in {tighter} of "
                 f"{int(both.sum())} cells: it uses the realised denominators instead of "
                 "worst-case ones.")
    return text
