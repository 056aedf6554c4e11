"""Results people can audit: the tidy table, a results object for notebooks, the HTML report.

* :class:`LayerResults` gathers one or more methods' results on one layer
  (:class:`~neurocert.ExplanationResult` or :class:`~neurocert.IdentificationResult`),
  certifies the labels at a stated level and multiplicity, and holds the tidy
  table (one row per method, neuron and concept) with ``to_frame()``,
  ``save()``/``load()`` and a rich ``_repr_html_``.
* :func:`write_report` writes one self-contained HTML file (no CDN, no server):
  a layer summary and a sortable, filterable card per neuron, with optional
  top-activating samples from an exemplar provider (:class:`ImageExemplars`,
  :class:`TextExemplars`, or any callable returning :class:`ImageExemplar` /
  :class:`TextExemplar` objects).
* :func:`load_result` reads any saved result the report accepts.

Only numpy is imported here; pandas and pyarrow are imported by the methods
that need them, Pillow (for JPEG thumbnails) only if it is installed.
"""

from __future__ import annotations

from ._exemplars import (
    ImageExemplar,
    ImageExemplars,
    TextExemplar,
    TextExemplars,
    encode_png,
)
from ._html import explanation_html, layer_html, render_report, write_report
from ._layer import (
    NEURON_COLUMNS,
    NONE_NAME,
    PAIR_COLUMNS,
    VERDICTS,
    LayerResults,
    MethodSummary,
    load_result,
)

__all__ = [
    "NEURON_COLUMNS",
    "NONE_NAME",
    "PAIR_COLUMNS",
    "VERDICTS",
    "ImageExemplar",
    "ImageExemplars",
    "LayerResults",
    "MethodSummary",
    "TextExemplar",
    "TextExemplars",
    "encode_png",
    "explanation_html",
    "layer_html",
    "load_result",
    "render_report",
    "write_report",
]
