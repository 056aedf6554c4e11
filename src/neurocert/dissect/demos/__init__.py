"""Real demonstrations on models and data that install offline.

* :mod:`.vision`: EfficientNet-Lite0 on broden-lite (NetDissect with
  certificates and BE; soft-WPMI on ground-truth and on classifier P).
* :mod:`.language`: MiniLM on WordNet glosses (written separately).

Each module has ``run(out_dir, *, seed, progress_bar, **options)`` returning an
object with ``.layers`` (dict of :class:`~neurocert.report.LayerResults`),
``.summary_rows`` (list of dicts) and ``.timings``; ``neurocert dissect`` runs
them. Modules are imported on use: torch is never imported here.
"""

__all__ = ["DEMOS"]

#: Demo name -> module under :mod:`neurocert.dissect.demos`.
DEMOS = {"vision": "vision", "language": "language"}
