"""The contract every experiment module follows, and shared helpers.

An experiment is a module in :mod:`neurocert.experiments` exposing:

* ``NAME`` (str, e.g. ``"convergence"``), ``TITLE`` (str), ``FIGURE`` (str, e.g.
  ``"Figure 2"`` when it reproduces a paper figure, else ``""``);
* ``PARAMS``: ``{"default": {...}, "quick": {...}}`` -- JSON-serialisable parameters
  for the two run sizes (the default run of all experiments must take <= 10 minutes
  on 2 cores, the quick run <= 1 minute);
* ``run(params: dict, seed: numpy.random.SeedSequence, progress: bool) -> Table``:
  the computation; numpy/scipy only; deterministic for a seed; returns the tidy
  table behind the figure;
* ``plot(table: Table, params: dict) -> matplotlib.figure.Figure``: the figure
  (labelled axes, legend, title), built with ``neurocert.experiments._base.pyplot()``;
* ``reading(table: Table, params: dict) -> str``: one paragraph that says what the
  figure shows, with the main numbers taken from the table (never hard-coded);
* ``check(params: dict) -> None`` (optional): raise ``ValidationError`` for bad
  parameters before any work starts.

``Table`` is a dict of equal-length 1-D numpy columns (numbers or strings), written
as CSV by the runner.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._optional import require

Table = dict[str, np.ndarray]

__all__ = ["Table", "caption", "child_seed", "fmt", "pyplot", "table_rows"]


def pyplot() -> Any:
    """``matplotlib.pyplot`` with the non-interactive Agg backend (needs neurocert[plot])."""
    mpl = require("matplotlib", "neurocert experiments (figures)")
    mpl.use("Agg", force=True)
    return require("matplotlib.pyplot", "neurocert experiments (figures)")


def child_seed(seed: np.random.SeedSequence, *key: int) -> np.random.SeedSequence:
    """A seed for one cell of an experiment: a pure function of (seed, key)."""
    return np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + tuple(key))


def table_rows(rows: list[dict[str, Any]]) -> Table:
    """Turn a list of row dicts (same keys) into a column table."""
    if not rows:
        return {}
    keys = list(rows[0])
    out: Table = {}
    for k in keys:
        vals = [r[k] for r in rows]
        out[k] = np.asarray(vals, dtype=object if isinstance(vals[0], str) else None)
    return out


def fmt(x: Any) -> str:
    """A number for readings and captions: integers plainly, else 3 significant digits."""
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    return str(int(x)) if x.is_integer() and abs(x) < 1e6 else f"{x:.3g}"


def caption(fig: Any, text: str, *, bottom: float = 0.01, room: float = 0.04,
            top: float = 0.96) -> Any:
    """Put a caption under the axes and lay the figure out around it; returns ``fig``."""
    fig.text(0.5, bottom, text, ha="center", va="bottom", fontsize=8, wrap=True)
    fig.tight_layout(rect=(0, room, 1, top))
    return fig
