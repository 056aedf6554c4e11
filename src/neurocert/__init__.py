"""neurocert: neuron explanations with certified faithfulness and bootstrap stability."""

from __future__ import annotations

from .bootstrap import bootstrap_explain
from .bounds import faithfulness_bound, required_samples
from .exceptions import (
    LowFrequencyAccuracyWarning,
    NeurocertError,
    NeurocertWarning,
    NoBoundWarning,
    OptionalDependencyError,
    SchemaError,
    UndefinedSimilarityWarning,
    ValidationError,
)
from .explanation import ExplanationResult
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
    "ExplanationResult",
    "IdentificationResult",
    "LayerSummary",
    "LowFrequencyAccuracyWarning",
    "Metric",
    "MetricOptions",
    "NeurocertError",
    "NeurocertWarning",
    "NoBoundWarning",
    "OptionalDependencyError",
    "SchemaError",
    "UndefinedSimilarityWarning",
    "ValidationError",
    "__version__",
    "available_metrics",
    "bootstrap_explain",
    "faithfulness_bound",
    "get_metric",
    "identify",
    "register_metric",
    "required_samples",
    "similarity",
    "unregister_metric",
]
