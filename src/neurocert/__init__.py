"""neurocert: neuron explanations with certified faithfulness and bootstrap stability."""

from __future__ import annotations

from .bootstrap import bootstrap_explain
from .bounds import faithfulness_bound, required_samples
from .exceptions import (
    AssetError,
    EmptyCategoryWarning,
    Float16OverflowWarning,
    LowFrequencyAccuracyWarning,
    NeurocertError,
    NeurocertWarning,
    NoBoundWarning,
    OptionalDependencyError,
    OutOfGridWarning,
    SchemaError,
    SkippedImageWarning,
    UndefinedSimilarityWarning,
    ValidationError,
)
from .explanation import ExplanationResult
from .extract import Activations, Projection, extract_activations
from .identify import IdentificationResult, LayerSummary, identify
from .metrics import (
    Metric,
    MetricOptions,
    available_metrics,
    get_metric,
    register_metric,
    unregister_metric,
)
from .similarity import similarity

__version__ = "0.1.0"

__all__ = [
    "Activations",
    "AssetError",
    "EmptyCategoryWarning",
    "ExplanationResult",
    "Float16OverflowWarning",
    "IdentificationResult",
    "LayerSummary",
    "LowFrequencyAccuracyWarning",
    "Metric",
    "MetricOptions",
    "NeurocertError",
    "NeurocertWarning",
    "NoBoundWarning",
    "OptionalDependencyError",
    "OutOfGridWarning",
    "Projection",
    "SchemaError",
    "SkippedImageWarning",
    "UndefinedSimilarityWarning",
    "ValidationError",
    "__version__",
    "available_metrics",
    "bootstrap_explain",
    "extract_activations",
    "faithfulness_bound",
    "get_metric",
    "identify",
    "register_metric",
    "required_samples",
    "similarity",
    "unregister_metric",
]
