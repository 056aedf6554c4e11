"""The paper's synthetic evidence, regenerated as figures and tables by one call.

>>> from neurocert.experiments import run_experiments      # doctest: +SKIP
>>> out = run_experiments("neurocert-out/experiments", quick=True)  # doctest: +SKIP
>>> out["index"]                                            # doctest: +SKIP
PosixPath('neurocert-out/experiments/index.md')

The same from the shell: ``neurocert experiments [--quick] [--only NAME ...]``.

Experiments, in order (:data:`EXPERIMENTS`): ``convergence`` (the paper's Figure 2),
``theory`` (Figure 3), ``selection``, ``stability``, ``coverage`` and ``cost``. Each is a
module following the contract of :mod:`neurocert.experiments._base`; modules are imported
lazily, so a missing one gives a clear error only when it is requested.
"""

from __future__ import annotations

from ._runner import EXPERIMENTS, load_experiment, run_experiments

__all__ = ["EXPERIMENTS", "load_experiment", "run_experiments"]
