"""Content fingerprints for the activation cache: model weights, inputs, projections."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..exceptions import ValidationError
from ..results import array_sha256, file_sha256

__all__ = ["inputs_sha256", "json_sha256", "state_dict_sha256"]


def _update_tensor(h: Any, tensor: Any) -> None:
    import torch  # only called with torch tensors

    t = tensor.detach()
    h.update(f"dtype={t.dtype};shape={tuple(int(s) for s in t.shape)};".encode())
    if t.numel() == 0:
        return
    flat = t.reshape(-1)
    # Stream ~16 MiB at a time; viewed as bytes, so bfloat16 etc. need no numpy dtype.
    step = max(1, (16 << 20) // max(1, t.element_size()))
    for start in range(0, flat.numel(), step):
        chunk = flat[start:start + step].cpu().contiguous()
        h.update(chunk.view(torch.uint8).numpy())


def state_dict_sha256(model: Any) -> str:
    """SHA-256 of a module's architecture and every state_dict tensor, in sorted-name order.

    Parameters
    ----------
    model : torch.nn.Module
        The network.

    Returns
    -------
    str
        64 hex digits. It changes when any parameter or persistent buffer
        changes (value, dtype or shape), when a tensor is renamed, and when
        ``repr(model)`` changes (for example a ReLU swapped for a GELU, which
        has no weights). It does not depend on the device.

    Notes
    -----
    The hash covers ``type(model)``'s qualified name, ``repr(model)`` and,
    for each ``state_dict`` entry sorted by name, the name, dtype, shape and
    the tensor's bytes in C order.
    """
    h = hashlib.sha256()
    cls = type(model)
    h.update(f"class={cls.__module__}.{cls.__qualname__};".encode())
    h.update(f"repr={model!r};".encode())
    state = model.state_dict()
    for name in sorted(state):
        value = state[name]
        h.update(f"name={name};".encode())
        if hasattr(value, "detach"):
            _update_tensor(h, value)
        else:  # extra state objects: hash their repr
            h.update(f"extra={value!r};".encode())
    return h.hexdigest()


def _item_digest(item: Any, where: str) -> bytes:
    if isinstance(item, str):
        return b"s" + hashlib.sha256(item.encode("utf-8")).digest()
    if isinstance(item, (bytes, bytearray)):
        return b"b" + hashlib.sha256(bytes(item)).digest()
    if isinstance(item, os.PathLike):
        return b"p" + bytes.fromhex(file_sha256(item))
    if isinstance(item, (bool, int, float, np.number)):
        return b"n" + hashlib.sha256(repr(item).encode()).digest()
    if isinstance(item, Mapping):
        h = hashlib.sha256(b"m")
        for key in sorted(item, key=str):
            h.update(str(key).encode() + b"\0" + _item_digest(item[key], f"{where}[{key!r}]"))
        return h.digest()
    if isinstance(item, (tuple, list)):
        h = hashlib.sha256(b"l")
        for i, sub in enumerate(item):
            h.update(_item_digest(sub, f"{where}[{i}]"))
        return h.digest()
    if hasattr(item, "detach") and hasattr(item, "cpu"):
        t = item.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        return b"a" + bytes.fromhex(array_sha256(t.numpy()))
    if isinstance(item, np.ndarray) or hasattr(item, "__array_interface__") or hasattr(item, "__array__"):
        arr = np.asarray(item)  # PIL images support this
        if arr.dtype.hasobject:
            raise ValidationError(f"cannot fingerprint {where} (object array) for the cache; pass cache_key=")
        return b"a" + bytes.fromhex(array_sha256(arr))
    raise ValidationError(
        f"cannot fingerprint {where} of type {type(item).__name__} for the activation cache; "
        "pass inputs as arrays, tensors, str, bytes or paths, or give hash_inputs=False with a "
        "cache_key that identifies the inputs"
    )


def inputs_sha256(inputs: Any) -> str:
    """SHA-256 of the probing inputs' content.

    Arrays and tensors hash their dtype, shape and bytes; mappings hash their
    sorted keys and values; sequences hash each item (strings as UTF-8,
    ``os.PathLike`` items by the file's bytes, array-likes such as PIL images
    by their pixels).

    Raises
    ------
    ValidationError
        For items with no content fingerprint.
    """
    if isinstance(inputs, np.ndarray) or (hasattr(inputs, "detach") and hasattr(inputs, "cpu")):
        return _item_digest(inputs, "inputs").hex()
    if isinstance(inputs, Mapping):
        return _item_digest(dict(inputs), "inputs").hex()
    h = hashlib.sha256(f"seq;n={len(inputs)};".encode())
    for i in range(len(inputs)):
        h.update(_item_digest(inputs[i], f"inputs[{i}]"))
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    """SHA-256 of a JSON-serialisable object with sorted keys."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(text.encode()).hexdigest()
