"""Field-by-field equality of result dataclasses holding numpy arrays."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

import numpy as np


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return (a is not None and b is not None and np.shape(a) == np.shape(b)
                and np.array_equal(a, b, equal_nan=True))
    if isinstance(a, (tuple, list)) and a and isinstance(a[0], np.ndarray):
        return (isinstance(b, (tuple, list)) and len(a) == len(b)
                and all(_equal(x, y) for x, y in zip(a, b)))
    if hasattr(a, "__dataclass_fields__") and type(a) is type(b):
        return results_equal(a, b)
    return a == b


def results_equal(a: Any, b: Any, skip: tuple[str, ...] = ("timings",)) -> bool:
    """True when every field but ``skip`` is equal (NaN == NaN in arrays, floats and dicts)."""
    return all(_equal(getattr(a, f.name), getattr(b, f.name))
               for f in fields(a) if f.name not in skip)
