"""Activations from any PyTorch model: hooks, pooling, projections, a resumable disk cache.

``extract_activations(model, inputs, layers=[...])`` records the outputs of
modules named by dotted paths in one batched, ``no_grad``, eval-mode pass and
returns one :class:`Activations` per layer: pooled per-channel values or
spatial maps for conv layers, pooled per-sequence values or per-token rows
(with the sequence as the group) for transformers, and any linear read-out
(SAE features, probe or TCAV directions) through a :class:`Projection`.

:mod:`neurocert.extract.models` loads the real pretrained networks that
install offline from PyPI (EfficientNet-Lite0, MiniLM), checksum-verified.

torch is imported only when a function needs it, so importing this package
works without torch.
"""

from __future__ import annotations

from ._core import Activations, Float16OverflowWarning, Projection, extract_activations
from ._fingerprint import inputs_sha256, state_dict_sha256
from ._hooks import resolve_modules

__all__ = [
    "Activations",
    "Float16OverflowWarning",
    "Projection",
    "extract_activations",
    "inputs_sha256",
    "resolve_modules",
    "state_dict_sha256",
]
