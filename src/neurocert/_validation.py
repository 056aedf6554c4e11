"""The one validation layer: every public function checks its inputs here, once.

Kernels never re-validate. Messages name the parameter, the constraint and what
was received.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from .exceptions import ValidationError

__all__ = [
    "as_activations",
    "as_concepts",
    "check_binarization",
    "check_groups",
    "check_int",
    "check_n_folds",
    "check_names",
    "check_probability",
    "check_sample_weight",
    "to_numpy",
]


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Convert array-likes (numpy, memmap, lists, torch tensors) to a numpy array.

    Torch tensors are recognised by duck typing (``detach``/``cpu``/``numpy``),
    so torch is never imported here.
    """
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
        t = x.detach().cpu()
        if str(getattr(t, "dtype", "")) == "torch.bfloat16":
            t = t.float()
        return t.numpy()
    if sp.issparse(x):
        raise ValidationError(f"`{name}` must be a dense array; got a scipy.sparse matrix")
    try:
        return np.asarray(x)
    except Exception as exc:  # pragma: no cover - exotic inputs
        raise ValidationError(f"`{name}` could not be converted to an array: {exc}") from exc


def _first_bad(mask: np.ndarray) -> tuple[int, ...]:
    idx = np.argwhere(mask)[0]
    return tuple(int(i) for i in idx)


def _check_finite(a: np.ndarray, name: str) -> None:
    # np.isfinite over a memmap streams it once; cheap relative to any metric.
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        pos = _first_bad(~np.isfinite(a))
        raise ValidationError(
            f"`{name}` contains a non-finite value ({a[pos]!r}) at position {pos}"
        )


def as_activations(x: Any, name: str = "activations") -> np.ndarray:
    """Validate activations of shape ``(n_samples, n_neurons)``.

    Floating arrays keep float32/float64 (float16 is upcast to float32); integer
    and boolean arrays become float64. Memmaps are not copied when already float.
    """
    a = to_numpy(x, name)
    if a.ndim != 2:
        hint = " (use x.reshape(-1, 1) for a single neuron)" if a.ndim == 1 else ""
        raise ValidationError(
            f"`{name}` must be 2-D (n_samples, n_neurons); got shape {a.shape}{hint}"
        )
    if a.shape[0] == 0:
        raise ValidationError(f"`{name}` has no samples (shape {a.shape}); the probing set is empty")
    if a.shape[1] == 0:
        raise ValidationError(f"`{name}` has no neurons (shape {a.shape})")
    if a.dtype.kind in "biu":
        a = a.astype(np.float64)
    elif a.dtype == np.float16:
        a = a.astype(np.float32)
    elif a.dtype.kind != "f":
        raise ValidationError(f"`{name}` must be numeric; got dtype {a.dtype}")
    _check_finite(a, name)
    return a


def as_concepts(x: Any, n_samples: int, name: str = "concepts") -> np.ndarray | sp.csr_matrix:
    """Validate concepts of shape ``(n_samples, n_concepts)`` with values in [0, 1].

    Dense inputs become float64 arrays (float32 kept); scipy.sparse inputs become CSR.
    """
    if sp.issparse(x):
        c = sp.csr_matrix(x)
        if c.dtype.kind in "biu":
            c = c.astype(np.float64)
        data = c.data
        shape = c.shape
    else:
        c = to_numpy(x, name)
        if c.ndim != 2:
            hint = " (use c.reshape(-1, 1) for a single concept)" if c.ndim == 1 else ""
            raise ValidationError(
                f"`{name}` must be 2-D (n_samples, n_concepts); got shape {c.shape}{hint}"
            )
        if c.dtype.kind in "biu":
            c = c.astype(np.float64)
        elif c.dtype == np.float16:
            c = c.astype(np.float32)
        elif c.dtype.kind != "f":
            raise ValidationError(f"`{name}` must be numeric; got dtype {c.dtype}")
        data = c
        shape = c.shape
    if shape[0] != n_samples:
        raise ValidationError(
            f"`{name}` has {shape[0]} samples (axis 0) but `activations` has {n_samples}; "
            f"shapes {tuple(shape)} and ({n_samples}, ...)"
        )
    if shape[1] == 0:
        raise ValidationError(f"`{name}` has no concepts (shape {tuple(shape)})")
    if sp.issparse(c):
        def position(mask):
            k = int(np.flatnonzero(mask)[0])
            row = int(np.searchsorted(c.indptr, k, side="right") - 1)
            return (row, int(c.indices[k]))

        if data.size and not np.isfinite(data).all():
            bad = ~np.isfinite(data)
            raise ValidationError(
                f"`{name}` contains a non-finite value ({data[bad][0]!r}) at position "
                f"{position(bad)}")
        bad = (data < 0) | (data > 1)
        if bad.any():
            raise ValidationError(
                f"`{name}` values must lie in [0, 1]; found {data[bad][0]!r} at position "
                f"{position(bad)}")
        return c
    _check_finite(data, name)
    bad = (data < 0) | (data > 1)
    if bad.any():
        pos = _first_bad(bad)
        raise ValidationError(
            f"`{name}` values must lie in [0, 1]; found {data[pos]!r} at position {pos}"
        )
    return data


def check_sample_weight(w: Any, n_samples: int) -> np.ndarray | None:
    """Validate non-negative, finite sample weights of shape ``(n_samples,)``."""
    if w is None:
        return None
    w = to_numpy(w, "sample_weight")
    if w.ndim != 1:
        raise ValidationError(f"`sample_weight` must be 1-D; got shape {w.shape}")
    if w.shape[0] != n_samples:
        raise ValidationError(
            f"`sample_weight` has {w.shape[0]} entries but `activations` has {n_samples} samples"
        )
    if w.dtype.kind not in "biuf":
        raise ValidationError(f"`sample_weight` must be numeric; got dtype {w.dtype}")
    w = w.astype(np.float64)
    _check_finite(w, "sample_weight")
    if (w < 0).any():
        pos = _first_bad(w < 0)
        raise ValidationError(f"`sample_weight` must be >= 0; found {w[pos]!r} at position {pos}")
    if not (w > 0).any():
        raise ValidationError("`sample_weight` is zero everywhere; the probing set is empty")
    return w


def check_groups(groups: Any, n_samples: int) -> tuple[np.ndarray, int] | None:
    """Validate group labels of shape ``(n_samples,)``; return (codes, n_groups)."""
    if groups is None:
        return None
    g = to_numpy(groups, "groups")
    if g.ndim != 1:
        raise ValidationError(f"`groups` must be 1-D; got shape {g.shape}")
    if g.shape[0] != n_samples:
        raise ValidationError(
            f"`groups` has {g.shape[0]} entries but `activations` has {n_samples} samples"
        )
    if g.dtype.kind == "f" and not np.isfinite(g).all():
        raise ValidationError("`groups` contains NaN or inf")
    _, codes = np.unique(g, return_inverse=True)
    codes = codes.astype(np.int64).reshape(-1)
    return codes, int(codes.max()) + 1


def check_probability(value: Any, name: str, *, low_open: bool = True,
                      high_open: bool = True) -> float:
    """Check a scalar in (0, 1) (or with closed ends); return it as float."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValidationError(f"`{name}` must be a number in (0, 1); got {value!r}") from None
    lo_ok = v > 0 if low_open else v >= 0
    hi_ok = v < 1 if high_open else v <= 1
    if not (np.isfinite(v) and lo_ok and hi_ok):
        lb = "(" if low_open else "["
        rb = ")" if high_open else "]"
        raise ValidationError(f"`{name}` must lie in {lb}0, 1{rb}; got {value!r}")
    return v


def check_binarization(threshold: Any, top_frac: Any) -> tuple[float | None, float | None]:
    """Validate the neuron binarization options (at most one of them)."""
    if threshold is not None and top_frac is not None:
        raise ValidationError("give at most one of `threshold` and `top_frac`")
    if threshold is not None:
        try:
            threshold = float(threshold)
        except (TypeError, ValueError):
            raise ValidationError(f"`threshold` must be a number; got {threshold!r}") from None
        if not np.isfinite(threshold):
            raise ValidationError(f"`threshold` must be finite; got {threshold!r}")
    if top_frac is not None:
        top_frac = check_probability(top_frac, "top_frac")
    return threshold, top_frac


def check_names(names: Sequence[Any] | None, count: int, what: str) -> list[str]:
    """Validate optional names; default to ``"<what>_<i>"``-free integer strings."""
    if names is None:
        return [str(i) for i in range(count)]
    names = [str(n) for n in names]
    if len(names) != count:
        raise ValidationError(f"`{what}_names` has {len(names)} entries but there are {count} {what}s")
    return names


def check_int(value: Any, name: str, minimum: int) -> int:
    """``value`` as an int, or :class:`ValidationError` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValidationError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    return int(value)


def check_n_folds(n_folds: Any, alpha: float, n_units: int, units: str = "independent units") -> int:
    """Folds of split mode: default ``ceil(2/alpha) - 1``; needs ``n_folds + 1 >= 1/alpha``.

    The default leaves room for one stray fold (with ``n_folds + 1 = 1/alpha`` a single
    fold that disagrees puts every unseen concept in the set). ``n_units`` is the number
    of independent units that are split (samples, groups, images).
    """
    n_folds = (math.ceil(2 / alpha - 1e-12) - 1 if n_folds is None
               else check_int(n_folds, "n_folds", 2))
    if n_folds + 1 < 1 / alpha - 1e-12:
        raise ValidationError(
            f"split mode needs n_folds + 1 >= 1/alpha = {1 / alpha:g}; got n_folds={n_folds}")
    if n_folds > n_units:
        raise ValidationError(f"`n_folds`={n_folds} exceeds the {n_units} {units}")
    return n_folds

