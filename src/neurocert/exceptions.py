"""Exception and warning classes used throughout neurocert.

Every domain error subclasses both :class:`NeurocertError` and the matching
builtin (``ValueError``, ``TypeError``), so callers may catch either.
Every warning subclasses :class:`NeurocertWarning`.
"""

from __future__ import annotations

__all__ = [
    "AssetError",
    "EmptyCategoryWarning",
    "Float16OverflowWarning",
    "LowFrequencyAccuracyWarning",
    "NeurocertError",
    "NeurocertWarning",
    "NoBoundWarning",
    "OptionalDependencyError",
    "OutOfGridWarning",
    "SchemaError",
    "SkippedImageWarning",
    "UndefinedSimilarityWarning",
    "ValidationError",
]


class NeurocertError(Exception):
    """Base class of every error raised by neurocert."""


class ValidationError(NeurocertError, ValueError):
    """An input failed validation; the message names the input and the constraint."""


class SchemaError(NeurocertError, ValueError):
    """A results file has an unknown schema version or lacks required columns."""


class OptionalDependencyError(NeurocertError, ImportError):
    """A feature needs an optional dependency that is not installed."""


class NeurocertWarning(UserWarning):
    """Base class of every warning emitted by neurocert."""


class UndefinedSimilarityWarning(NeurocertWarning):
    """Some similarities are undefined (for example a concept absent from the probing set).

    Undefined values are returned as NaN, never as 0, and never win an argmax.
    """


class NoBoundWarning(NeurocertWarning):
    """No proven confidence bound exists for this metric or data layout; limits are NaN."""


class LowFrequencyAccuracyWarning(NeurocertWarning):
    """Accuracy is used with a rare concept; a neuron that never fires scores ``1 - p_c``."""


class Float16OverflowWarning(NeurocertWarning):
    """Finite activations exceeded the float16 range (±65504) and were stored as ±inf."""


class AssetError(NeurocertError, RuntimeError):
    """A pretrained model's files are missing, altered, or from an unexpected package version."""


class EmptyCategoryWarning(NeurocertWarning):
    """A Broden category has no label whose primary category it is."""


class SkippedImageWarning(NeurocertWarning):
    """Some images could not be read and were left out (see ``ProbingSet.skipped``)."""


class OutOfGridWarning(NeurocertWarning):
    """Some replicate thresholds fell outside the candidate grid (clamped to its edge)."""
