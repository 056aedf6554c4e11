"""Batched activation extraction from any PyTorch module with hooks, pooling, projections and a cache."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._optional import require
from .._progress import progress
from .._validation import to_numpy
from ..exceptions import Float16OverflowWarning, ValidationError
from ..results import array_sha256
from ._fingerprint import inputs_sha256, json_sha256, state_dict_sha256
from ._hooks import capture, first_tensor, normalize_path, resolve_modules
from ._store import FORMAT, DiskEntry, MemoryEntry, entry_lock, load_entry

__all__ = ["Activations", "Float16OverflowWarning", "Projection", "extract_activations"]

POOLINGS = ("mean", "max", "cls", "tokens", "spatial", "none")
_DTYPES = {"float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}


# --------------------------------------------------------------------------- #
# Public result and projection types
# --------------------------------------------------------------------------- #

@dataclass(frozen=True, eq=False, repr=False)
class Activations:
    """Activations of one layer over a probing set.

    Attributes
    ----------
    layer : str
        Dotted module path (normalised: ``"a[3]"`` becomes ``"a.3"``).
    pooling : str
        How the layer output was reduced; see :func:`extract_activations`.
    values : numpy.ndarray
        ``(n_samples, n_neurons)`` for pooled modes; ``(n_samples, n_neurons,
        height, width)`` for ``"spatial"``; ``(n_tokens, n_neurons)`` for
        ``"tokens"``; the raw per-sample output shape for ``"none"``. A
        read-only ``numpy.memmap`` when it comes from the disk cache.
    n_samples : int
        Number of probing samples (sequences for text).
    groups : numpy.ndarray or None
        ``(n_tokens,)`` int64 sample index of each token row (``"tokens"``
        only): the sequence is the group, so pass it as ``groups=`` to the
        statistics that count independent units.
    positions : numpy.ndarray or None
        ``(n_tokens,)`` int64 position of each token row within its
        (padded) input sequence (``"tokens"`` only), to align token labels.
    projection : str or None
        SHA-256 of the projection applied, if any.
    cache_path : str or None
        Cache entry directory the arrays are mapped from.
    """

    layer: str
    pooling: str
    values: np.ndarray
    n_samples: int
    groups: np.ndarray | None = None
    positions: np.ndarray | None = None
    projection: str | None = None
    cache_path: str | None = None

    @property
    def n_neurons(self) -> int:
        """Number of neurons (channels, features or projected directions): ``values.shape[1]``."""
        return int(self.values.shape[1]) if self.values.ndim > 1 else 1

    @property
    def from_cache(self) -> bool:
        """Whether the arrays are memory-mapped from the disk cache."""
        return self.cache_path is not None

    def __repr__(self) -> str:
        parts = [f"layer={self.layer!r}", f"pooling={self.pooling!r}",
                 f"values={self.values.dtype}{tuple(self.values.shape)}", f"n_samples={self.n_samples}"]
        if self.groups is not None:
            parts.append(f"groups=int64({self.groups.shape[0]},)")
        if self.projection is not None:
            parts.append(f"projection={self.projection[:12]}")
        if self.cache_path is not None:
            parts.append(f"cache_path={self.cache_path!r}")
        return f"Activations({', '.join(parts)})"


@dataclass(frozen=True, eq=False)
class Projection:
    """A linear read-out of a layer: ``f = x @ weight + bias``, optionally ReLU'd.

    Turns a layer's features into any set of neuron-like directions: a sparse
    autoencoder's encoder (``relu=True``; fold a decoder bias ``b_dec`` into
    ``bias = b_enc - b_dec @ weight``), linear probe or TCAV concept vectors
    (columns of ``weight``).

    Parameters
    ----------
    weight : array_like, shape (d, k)
        ``d`` = the layer's feature size (channels of a conv map, hidden size of
        a transformer), ``k`` = number of directions (the new neurons).
    bias : array_like, shape (k,), optional
    relu : bool, default False
        Apply ``max(f, 0)`` (SAE encoders).
    name : str, default ""
        Label shown in reports; not part of the cache key.

    Notes
    -----
    The projection acts on the feature axis of every position (each pixel of a
    conv map, each token) before pooling, so a max-pooled SAE feature is the
    maximum of the feature over positions.
    """

    weight: np.ndarray
    bias: np.ndarray | None = None
    relu: bool = False
    name: str = ""
    fingerprint: str = field(init=False)

    def __post_init__(self) -> None:
        w = np.array(to_numpy(self.weight, "projection.weight"), dtype=np.float32)
        if w.ndim != 2 or 0 in w.shape:
            raise ValidationError(f"`projection.weight` must be a non-empty (d, k) matrix; got shape {w.shape}")
        if not np.isfinite(w).all():
            raise ValidationError("`projection.weight` contains a non-finite value")
        b = None
        if self.bias is not None:
            b = np.array(to_numpy(self.bias, "projection.bias"), dtype=np.float32).reshape(-1)
            if b.shape != (w.shape[1],):
                raise ValidationError(
                    f"`projection.bias` has shape {b.shape} but `projection.weight` has {w.shape[1]} columns")
            if not np.isfinite(b).all():
                raise ValidationError("`projection.bias` contains a non-finite value")
        w.setflags(write=False)
        if b is not None:
            b.setflags(write=False)
        object.__setattr__(self, "weight", w)
        object.__setattr__(self, "bias", b)
        object.__setattr__(self, "relu", bool(self.relu))
        digest = json_sha256({"w": array_sha256(w), "b": None if b is None else array_sha256(b),
                              "relu": self.relu})
        object.__setattr__(self, "fingerprint", digest)

    @property
    def n_directions(self) -> int:
        """Number of output directions ``k``."""
        return int(self.weight.shape[1])


def _as_projection(p: Any, where: str) -> Projection | None:
    if p is None or isinstance(p, Projection):
        return p
    try:
        return Projection(p)
    except ValidationError as exc:
        raise ValidationError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- #
# Validation helpers
# --------------------------------------------------------------------------- #

def _check_dtype(dtype: Any) -> np.dtype:
    try:
        key = np.dtype(dtype).name
    except TypeError:
        key = str(dtype)
    if key not in _DTYPES:
        raise ValidationError(f"`dtype` must be 'float16' or 'float32' (the storage type); got {dtype!r}")
    return _DTYPES[key]


def _model_device(torch: Any, model: Any) -> Any:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _check_device(torch: Any, device: Any, model: Any) -> Any:
    if device is None:
        return _model_device(torch, model)
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValidationError(f"`device` {device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...): {exc}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValidationError(f"`device` is {device!r} but torch.cuda.is_available() is False "
                                  f"(torch {torch.__version__}); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValidationError(f"`device` is {device!r} but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def _n_inputs(inputs: Any) -> int:
    if isinstance(inputs, Mapping):
        if not inputs:
            raise ValidationError("`inputs` is an empty mapping")
        lengths = {k: len(v) for k, v in inputs.items()}
        if len(set(lengths.values())) != 1:
            raise ValidationError(f"the arrays in `inputs` have different lengths (axis 0): {lengths}")
        return next(iter(lengths.values()))
    if isinstance(inputs, (str, bytes)) or not hasattr(inputs, "__len__") or not hasattr(inputs, "__getitem__"):
        raise ValidationError(
            "`inputs` must be a tensor, a numpy array, a mapping of equal-length arrays, or a sequence "
            f"(with __len__ and __getitem__); got {type(inputs).__name__}")
    return len(inputs)


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "detach") and hasattr(x, "shape"))


# --------------------------------------------------------------------------- #
# Batches
# --------------------------------------------------------------------------- #

def _to_tensor(torch: Any, x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if not x.flags.writeable or not x.flags.c_contiguous:
            x = np.array(x)  # memmaps and views: torch wants writable contiguous memory
        return torch.from_numpy(x)
    return x


def _default_collate(torch: Any, items: list[Any]) -> Any:
    first = items[0]
    if isinstance(first, Mapping):
        return {k: _default_collate(torch, [it[k] for it in items]) for k in first}
    if isinstance(first, (tuple, list)) and not isinstance(first, str):
        return tuple(_default_collate(torch, list(col)) for col in zip(*items))
    if isinstance(first, (str, bytes)):
        raise ValidationError(
            "`inputs` items are strings: give collate= that turns a list of them into model inputs, "
            "e.g. collate=lambda texts: tokenizer(texts, padding=True, return_tensors='pt')")
    try:
        return torch.stack([_to_tensor(torch, np.asarray(it) if not isinstance(it, torch.Tensor) else it)
                            for it in items])
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValidationError(
            f"could not stack `inputs` items of type {type(first).__name__} into a batch ({exc}); "
            "give preprocess= (per item) or collate= (per list of items)") from None


def _make_batch(torch: Any, inputs: Any, start: int, stop: int, preprocess: Callable | None,
                collate: Callable | None) -> Any:
    if _is_array(inputs):
        batch = _to_tensor(torch, inputs[start:stop])
        return preprocess(batch) if preprocess is not None else batch
    if isinstance(inputs, Mapping):
        batch = {k: _to_tensor(torch, v[start:stop]) for k, v in inputs.items()}
        return preprocess(batch) if preprocess is not None else batch
    items = [inputs[i] for i in range(start, stop)]
    if preprocess is not None:
        items = [preprocess(it) for it in items]
    return collate(items) if collate is not None else _default_collate(torch, items)


def _to_device(torch: Any, x: Any, device: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device)
    if isinstance(x, Mapping):
        return type(x)({k: _to_device(torch, v, device) for k, v in x.items()}) if isinstance(x, dict) \
            else {k: _to_device(torch, v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(_to_device(torch, v, device) for v in x)
    if hasattr(x, "to") and hasattr(x, "keys"):  # transformers BatchEncoding
        return x.to(device)
    return x


def _call(model: Any, batch: Any) -> Any:
    if isinstance(batch, Mapping) or (hasattr(batch, "keys") and hasattr(batch, "__getitem__")
                                      and not hasattr(batch, "shape")):
        return model(**batch)
    if isinstance(batch, tuple):
        return model(*batch)
    return model(batch)


def _batch_size_of(torch: Any, batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    if hasattr(batch, "keys"):
        for k in batch:
            n = _batch_size_of(torch, batch[k])
            if n is not None:
                return n
    if isinstance(batch, (tuple, list)):
        for v in batch:
            n = _batch_size_of(torch, v)
            if n is not None:
                return n
    return None


def _batch_mask(torch: Any, batch: Any, mask_key: str | None) -> Any:
    if mask_key is None or isinstance(batch, torch.Tensor) or not hasattr(batch, "keys"):
        return None
    if mask_key not in batch:
        return None
    return batch[mask_key]


# --------------------------------------------------------------------------- #
# Reduction of one layer's batch output
# --------------------------------------------------------------------------- #

def _project(torch: Any, x: Any, proj: Projection, feature_axis: int, path: str) -> Any:
    d = int(x.shape[feature_axis])
    if d != proj.weight.shape[0]:
        raise ValidationError(
            f"projection for layer {path!r} has {proj.weight.shape[0]} rows but the layer has {d} features "
            f"(axis {feature_axis} of its output shape {tuple(x.shape)})")
    w = torch.as_tensor(np.array(proj.weight), device=x.device)
    moved = x.movedim(feature_axis, -1)
    out = moved @ w
    if proj.bias is not None:
        out = out + torch.as_tensor(np.array(proj.bias), device=x.device)
    if proj.relu:
        out = torch.relu(out)
    return out.movedim(-1, feature_axis)


def _reduce(torch: Any, out: Any, pooling: str, mask: Any, proj: Projection | None, path: str,
            n_batch: int, start: int) -> dict[str, Any]:
    """Layer output -> rows to store (torch tensors on the model's device, float32)."""
    x = out.detach()
    if x.ndim == 0 or int(x.shape[0]) != n_batch:
        raise ValidationError(
            f"layer {path!r} output has shape {tuple(x.shape)}, whose first axis is not the batch "
            f"({n_batch} samples); hook a module whose output is batch-first")
    x = x.float()
    shape = tuple(int(s) for s in x.shape)
    tokenwise = x.ndim == 3
    if pooling == "spatial" and x.ndim != 4:
        raise ValidationError(
            f"pooling='spatial' needs a conv feature map (batch, channels, height, width) but layer {path!r} "
            f"outputs shape {shape} with no spatial axes; use pooling='mean' or 'max', or hook a conv layer")
    if pooling in ("cls", "tokens") and not tokenwise:
        raise ValidationError(
            f"pooling={pooling!r} needs a token sequence (batch, tokens, features) but layer {path!r} "
            f"outputs shape {shape}")
    if proj is not None:
        feature_axis = -1 if (tokenwise or x.ndim == 2) else 1
        if x.ndim == 1:
            raise ValidationError(f"cannot project layer {path!r}: its output {shape} has no feature axis")
        x = _project(torch, x, proj, feature_axis, path)
    if pooling in ("spatial", "none") or x.ndim <= 2:
        return {"values": x}
    if not tokenwise:  # (batch, channels, *spatial): pool over the spatial axes
        dims = tuple(range(2, x.ndim))
        return {"values": x.mean(dim=dims) if pooling == "mean" else x.amax(dim=dims)}
    # token sequences (batch, tokens, features)
    n_tok = shape[1]
    if mask is None:
        real = torch.ones((n_batch, n_tok), dtype=torch.bool, device=x.device)
    else:
        mask = mask.to(x.device)
        if tuple(mask.shape) != (n_batch, n_tok):
            raise ValidationError(
                f"the attention mask has shape {tuple(mask.shape)} but layer {path!r} outputs {n_tok} tokens "
                f"per sequence (shape {shape}); the mask must be (batch, tokens)")
        real = mask.bool()
    counts = real.sum(dim=1)
    if bool((counts == 0).any()):
        bad = int(torch.nonzero(counts == 0)[0, 0]) + start
        raise ValidationError(f"sample {bad} has no real token (its attention mask is all zero)")
    if pooling == "tokens":
        b_idx, t_idx = torch.nonzero(real, as_tuple=True)
        return {"values": x[b_idx, t_idx], "groups": b_idx + start, "positions": t_idx}
    if pooling == "cls":
        first = real.int().argmax(dim=1)  # first real token (index 0 with right padding)
        return {"values": x[torch.arange(n_batch, device=x.device), first]}
    m = real.unsqueeze(-1)
    if pooling == "mean":
        return {"values": (x * m).sum(dim=1) / counts.unsqueeze(-1).to(x.dtype)}
    return {"values": x.masked_fill(~m, float("-inf")).amax(dim=1)}


# --------------------------------------------------------------------------- #
# Main entry point
# --------------------------------------------------------------------------- #

def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)[:60] or "model"


def extract_activations(
    model: Any,
    inputs: Any,
    *,
    layers: str | Sequence[str],
    pooling: str | Mapping[str, str] = "mean",
    projection: Any = None,
    batch_size: int = 64,
    device: Any = None,
    dtype: Any = "float32",
    preprocess: Callable[[Any], Any] | None = None,
    collate: Callable[[list[Any]], Any] | None = None,
    mask_key: str | None = "attention_mask",
    cache_dir: str | Path | None = None,
    cache_key: Any = None,
    hash_inputs: bool = True,
    progress_bar: bool = True,
) -> dict[str, Activations]:
    """Run ``model`` over ``inputs`` in batches and record the outputs of chosen layers.

    Parameters
    ----------
    model : torch.nn.Module
        Any network. It is put in eval mode for the call (each submodule's
        training flag is restored afterwards) and run under ``torch.no_grad``.
    inputs : tensor, numpy array, mapping of arrays, or sequence
        The probing set, ``n_samples`` long. Arrays and tensors are sliced
        along axis 0; a mapping of equal-length arrays (e.g. a tokenizer's
        output for the whole set) is sliced per key and passed as keyword
        arguments; any other sequence (file paths, PIL images, strings) is
        indexed item by item.
    layers : str or sequence of str
        Dotted module paths as in ``model.named_modules()``: ``"layer4"``,
        ``"_blocks.10"``, ``"encoder.layer.3.intermediate"`` (``[3]`` is
        accepted for ``.3``). All are recorded in one forward pass. A module
        output that is a tuple is read as its first element.
    pooling : {"mean", "max", "cls", "tokens", "spatial", "none"} or mapping, default "mean"
        How each layer's output becomes rows, per layer when a mapping
        ``{layer: pooling}``:

        - ``"mean"`` / ``"max"``: one row per sample. Conv maps
          ``(batch, channels, h, w)`` are pooled over space per channel;
          token sequences ``(batch, tokens, features)`` over the real tokens
          (attention mask); ``(batch, features)`` outputs are kept as they are.
        - ``"cls"``: the first real token of each sequence (BERT's CLS).
        - ``"tokens"``: one row per real token, with ``groups`` (the sample
          index: the sequence is the independent unit) and ``positions``.
        - ``"spatial"``: conv maps kept as ``(n_samples, channels, h, w)``
          for pixel-level IoU; an error for a layer with no spatial axes.
        - ``"none"``: the raw per-sample output (same shape in every batch).
    projection : array (d, k), Projection, or mapping {layer: ...}, optional
        Directions to read instead of the layer's own units (SAE features,
        probe or TCAV vectors); applied on the feature axis at every position
        before pooling. One projection applies to every layer.
    batch_size : int, default 64
    device : str or torch.device, optional
        Where the forward pass runs; default: where the model's parameters
        are. A model on another device is moved there for the call and moved
        back afterwards.
    dtype : {"float32", "float16"}, default "float32"
        Storage type of the values (computation stays in the model's dtype;
        pooling in float32). Finite values beyond float16's range raise a
        :class:`Float16OverflowWarning`.
    preprocess : callable, optional
        For array / mapping inputs: applied to each batch. For other
        sequences: applied to each item before collation. Give it a
        ``neurocert_key`` string attribute (or pass ``cache_key``) to use the
        cache.
    collate : callable, optional
        For sequence inputs: turns a list of (preprocessed) items into model
        input (a tensor, a tuple of positional arguments, or a mapping of
        keyword arguments such as a tokenizer's output). Default: stack.
    mask_key : str or None, default "attention_mask"
        Key of the batch mapping holding the (batch, tokens) mask of real
        tokens; padded tokens are excluded from token pooling and rows.
    cache_dir : str or Path, optional
        Cache activations on disk, one entry per layer, keyed by content: the
        model (architecture repr and the bytes of every state_dict tensor),
        layer, pooling, projection, dtype, the inputs' content, and the
        preprocessing/collation identity (``neurocert_key`` attributes or
        ``cache_key``). A hit is returned memory-mapped without running the
        model. An interrupted extraction (exception, Ctrl-C, killed process)
        resumes from the last completed batch.
    cache_key : str or JSON-serialisable mapping, optional
        Identity and parameters of anything the cache cannot see (the
        preprocessing, a tokenizer, the data source). Required with
        ``cache_dir`` when ``preprocess``/``collate`` has no ``neurocert_key``.
    hash_inputs : bool, default True
        Fingerprint the inputs' content for the cache key. Set False only
        when ``cache_key`` identifies the inputs (e.g. unhashable items).
    progress_bar : bool, default True
        Show a progress bar over batches.

    Returns
    -------
    dict of str to Activations
        Keyed by the layer strings as given, in the order given.

    Raises
    ------
    ValidationError
        Unknown layer (with the closest valid names), a hook that never fires
        or fires several times per forward pass, a pooling that does not fit
        the layer's output shape, bad dtype or device.
    OptionalDependencyError
        If torch is not installed.

    Notes
    -----
    For token sequences with mask ``m`` (1 for real tokens), mean pooling is
    ``sum_t m_t x_t / sum_t m_t`` and max pooling ``max_{t: m_t = 1} x_t``.
    With a projection ``(W, b, relu)`` each position's feature vector ``x``
    becomes ``relu?(x W + b)`` before pooling.

    Examples
    --------
    >>> import torch
    >>> from neurocert.extract import extract_activations
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
    >>> acts = extract_activations(net, torch.rand(10, 3, 8, 8), layers=["1"],
    ...                            pooling="max", progress_bar=False)
    >>> acts["1"].values.shape
    (10, 4)
    """
    torch = require("torch", "extract_activations()")
    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ValidationError("`layers` is empty; name at least one module path")
    paths = [normalize_path(p) for p in layers]
    if isinstance(pooling, Mapping):
        norm_pool = {normalize_path(k): v for k, v in pooling.items()}
        unknown = set(norm_pool) - set(paths)
        if unknown:
            raise ValidationError(f"`pooling` names layers not in `layers`: {sorted(unknown)}")
        poolings = {p: norm_pool.get(p, "mean") for p in paths}
    else:
        poolings = {p: pooling for p in paths}
    for p, mode in poolings.items():
        if mode not in POOLINGS:
            raise ValidationError(f"`pooling` for layer {p!r} must be one of {POOLINGS}; got {mode!r}")
    if isinstance(projection, Mapping):
        norm_proj = {normalize_path(k): v for k, v in projection.items()}
        unknown = set(norm_proj) - set(paths)
        if unknown:
            raise ValidationError(f"`projection` names layers not in `layers`: {sorted(unknown)}")
        projections = {p: _as_projection(norm_proj.get(p), f"projection[{p!r}]") for p in paths}
    else:
        shared = _as_projection(projection, "projection")
        projections = {p: shared for p in paths}
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValidationError(f"`batch_size` must be a positive integer; got {batch_size!r}")
    batch_size = int(batch_size)
    store_dtype = _check_dtype(dtype)
    if not isinstance(model, torch.nn.Module):
        raise ValidationError(f"`model` must be a torch.nn.Module; got {type(model).__name__}")
    modules = resolve_modules(model, paths)
    n = _n_inputs(inputs)
    if n == 0:
        raise ValidationError("`inputs` is empty (0 samples)")
    dev = _check_device(torch, device, model)

    # ---- cache look-up ---------------------------------------------------- #
    entries: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    root = Path(cache_dir) if cache_dir is not None else None
    names: dict[str, str] = {}
    keys: dict[str, str] = {}
    metas: dict[str, dict[str, Any]] = {}
    if root is not None:
        ident = {}
        for what, fn in (("preprocess", preprocess), ("collate", collate)):
            if fn is None:
                continue
            key = getattr(fn, "neurocert_key", None)
            if key is None and cache_key is None:
                raise ValidationError(
                    f"caching with a `{what}` callable needs its identity: give it a `neurocert_key` string "
                    f"attribute or pass cache_key= (e.g. {{'resize': 224, 'normalise': '(x-127)/128'}})")
            ident[what] = key if key is not None else getattr(fn, "__qualname__", type(fn).__name__)
        if cache_key is not None:
            ident["user"] = cache_key
        if not hash_inputs and cache_key is None:
            raise ValidationError("hash_inputs=False needs a cache_key that identifies the inputs")
        base = {
            "format": FORMAT,
            "model": state_dict_sha256(model),
            "inputs": inputs_sha256(inputs) if hash_inputs else None,
            "n_samples": n,
            "ident": ident,
            "dtype": store_dtype.name,
            "mask_key": mask_key,
        }
        for p in paths:
            proj = projections[p]
            spec = dict(base, layer=p, pooling=poolings[p],
                        projection=None if proj is None else proj.fingerprint)
            keys[p] = json_sha256(spec)
            names[p] = f"{_safe(p)}-{poolings[p]}-{keys[p][:20]}"
            metas[p] = dict(spec, model_class=type(model).__qualname__,
                            projection_name=None if proj is None else proj.name)
            final = root / names[p]
            if (final / "meta.json").exists():
                results[p] = load_entry(final)
                results[p]["path"] = final
    todo = [p for p in paths if p not in results]

    if todo:
        _run(torch, model, inputs, n, todo, modules, poolings, projections, batch_size, dev, store_dtype,
             preprocess, collate, mask_key, root, names, keys, metas, results, progress_bar, entries)

    out: dict[str, Activations] = {}
    for raw, p in zip(layers, paths):
        r = results[p]
        proj = projections[p]
        out[raw] = Activations(
            layer=p, pooling=poolings[p], values=r["values"], n_samples=n,
            groups=r.get("groups"), positions=r.get("positions"),
            projection=None if proj is None else proj.fingerprint,
            cache_path=str(r["path"]) if r.get("path") is not None else None,
        )
    return out


def _run(torch, model, inputs, n, todo, modules, poolings, projections, batch_size, dev, store_dtype,
         preprocess, collate, mask_key, root, names, keys, metas, results, progress_bar, entries) -> None:
    from contextlib import ExitStack

    torch_dtype = torch.float16 if store_dtype == np.float16 else torch.float32
    hooked = {p: modules[p] for p in todo}
    with ExitStack() as stack:
        for p in todo:
            tokens = poolings[p] == "tokens"
            if root is None:
                entries[p] = MemoryEntry(n, store_dtype, tokens)
            else:
                stack.enter_context(entry_lock(root, names[p]))
                entry = DiskEntry(root, names[p], keys[p], n, store_dtype, tokens, metas[p])
                stack.callback(entry.close)
                entries[p] = entry
        start = min(entries[p].samples_done for p in todo)
        batches = [(s, min(s + batch_size, n)) for s in range(start, n, batch_size)]

        orig_device = _model_device(torch, model)
        flags = [(m, m.training) for m in model.modules()]
        moved = orig_device != dev
        overflow = False
        try:
            if moved:
                model.to(dev)
            model.eval()
            with capture(hooked) as store, torch.no_grad():
                desc = f"extract {len(todo)} layer{'s' if len(todo) > 1 else ''}"
                for s, e in progress(batches, total=len(batches), desc=desc, enabled=progress_bar):
                    batch = _make_batch(torch, inputs, s, e, preprocess, collate)
                    mask = _batch_mask(torch, batch, mask_key)
                    batch = _to_device(torch, batch, dev)
                    for lst in store.values():
                        lst.clear()
                    _call(model, batch)
                    for p in todo:
                        fired = len(store[p])
                        if fired == 0:
                            raise ValidationError(
                                f"the hook on layer {p!r} ({type(modules[p]).__name__}) never fired: "
                                "model.forward did not call this module for this input")
                        if fired > 1:
                            raise ValidationError(
                                f"the hook on layer {p!r} ({type(modules[p]).__name__}) fired {fired} times in one "
                                "forward pass (the module is reused); hook a module that runs once per pass")
                        entry = entries[p]
                        if entry.samples_done >= e:
                            continue
                        rows = _reduce(torch, first_tensor(store[p][0], p), poolings[p], mask,
                                       projections[p], p, e - s, s)
                        vals = rows["values"]
                        stored = vals.to(torch_dtype)
                        if torch_dtype == torch.float16 and not overflow:
                            overflow = bool((torch.isinf(stored) & torch.isfinite(vals)).any())
                        v = stored.cpu().numpy()
                        g = rows["groups"].cpu().numpy().astype(np.int64) if "groups" in rows else None
                        q = rows["positions"].cpu().numpy().astype(np.int64) if "positions" in rows else None
                        skip = entry.samples_done - s  # samples this entry already has (resume)
                        if skip > 0:
                            if g is None:
                                v = v[skip:]
                            else:
                                keep = g >= entry.samples_done
                                v, g, q = v[keep], g[keep], q[keep]
                        entry.append(v, g, q, e)
                    for lst in store.values():
                        lst.clear()
        finally:
            for m, flag in flags:
                m.training = flag
            if moved:
                model.to(orig_device)
        if overflow:
            warnings.warn("some finite activations exceed the float16 range (±65504) and were stored as "
                          "±inf; use dtype='float32'", Float16OverflowWarning, stacklevel=3)
        for p in todo:
            results[p] = entries[p].finish()
            if root is not None:
                results[p]["path"] = root / names[p]
