"""Make PyPI's torchvision importable beside the CPU build of torch, only where it fails.

PyPI's torchvision 0.28 wheel links a CUDA build of its C++ extension. Beside the
CPU torch 2.13 wheel that extension cannot load; torchvision tolerates that, but its
``_meta_registrations`` module then registers fake kernels for ``torchvision::nms``
and ``torchvision::qnms`` without their schemas, and ``import torchvision`` (hence
``import open_clip`` and ``import timm``) raises
``RuntimeError: operator torchvision::nms does not exist``.

:func:`ensure_torchvision_importable` tries the import first and changes nothing when it
works or when torchvision is absent. Only on that exact error it defines the two operator
schemas in a ``torchvision`` library fragment and imports again: the Python parts that
open_clip needs (``transforms``, ``ops.misc``) then work, while torchvision's C++ ops
(``nms``, ``roi_align``) still raise. Defining the schemas where torchvision's own
extension loaded would abort the process on its later registration ("registered
multiple times"), so they are never defined unconditionally.
"""

from __future__ import annotations

import sys
from typing import Any

from ._optional import require

__all__ = ["ensure_torchvision_importable"]

#: the error text of the failure this shim repairs
SIGNATURE = "torchvision::nms does not exist"
#: ops whose fake kernels torchvision registers at import time
_OPS = ("nms", "qnms")
#: the library fragment, kept alive for the life of the process (None until needed)
_STATE: dict[str, Any] = {"library": None}


def _drop_partial_import() -> None:
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]


def ensure_torchvision_importable() -> str:
    """Import torchvision, repairing the CPU-torch / CUDA-torchvision clash if it occurs.

    Call this before anything imports torchvision, timm or open_clip.

    Returns
    -------
    {"native", "absent", "shimmed"}
        ``"native"``: torchvision imported as is; ``"absent"``: it is not installed
        (callers that need it then fail with their own ImportError); ``"shimmed"``: the
        two schemas were defined (in this call or an earlier one) and the import works.

    Raises
    ------
    RuntimeError
        Any other error of ``import torchvision``, unchanged.
    OptionalDependencyError
        torch is not installed.
    """
    torch = require("torch", "the torchvision compatibility shim")
    try:
        import torchvision
    except ImportError:
        return "absent"
    except RuntimeError as exc:
        if SIGNATURE not in str(exc) or _STATE["library"] is not None:
            raise
    else:
        return "shimmed" if _STATE["library"] is not None else "native"
    _drop_partial_import()
    library = torch.library.Library("torchvision", "FRAGMENT")
    for op in _OPS:
        library.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _STATE["library"] = library
    import torchvision  # noqa: F401

    return "shimmed"
