"""Forward hooks on dotted module paths, removed whatever happens."""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from ..exceptions import ValidationError

__all__ = ["capture", "normalize_path", "resolve_modules"]

_INDEX = re.compile(r"\[(\d+)\]")


def normalize_path(path: str) -> str:
    """``"encoder.layer[3].intermediate"`` -> ``"encoder.layer.3.intermediate"``."""
    if not isinstance(path, str):
        raise ValidationError(f"each entry of `layers` must be a str (a dotted module path); got {type(path).__name__}")
    return _INDEX.sub(r".\1", path.strip()).strip(".")


def resolve_modules(model: Any, layers: Sequence[str]) -> dict[str, Any]:
    """Map each dotted path to its submodule, with close-match suggestions on a miss.

    Parameters
    ----------
    model : torch.nn.Module
        The network.
    layers : sequence of str
        Dotted paths as listed by ``model.named_modules()`` (``"layer4"``,
        ``"_blocks.10"``, ``"encoder.layer.3.intermediate"``); ``[i]`` is
        accepted for ``.i``.

    Returns
    -------
    dict
        Normalised path -> module, in the order given.

    Raises
    ------
    ValidationError
        For a path that names no submodule; the message lists the closest
        valid names (difflib) and how to list them all.
    """
    names: list[str] | None = None
    out: dict[str, Any] = {}
    for raw in layers:
        path = normalize_path(raw)
        try:
            module = model.get_submodule(path)
        except AttributeError:
            if names is None:
                names = [n for n, _ in model.named_modules() if n]
            close = difflib.get_close_matches(path, names, n=5, cutoff=0.5)
            if not close:  # a prefix match is more helpful than nothing
                head = path.split(".")[0]
                close = [n for n in names if n.startswith(head)][:5] or names[:5]
            raise ValidationError(
                f"layer {raw!r} is not a submodule of {type(model).__name__}; closest valid names: "
                f"{', '.join(repr(c) for c in close)} ({len(names)} names in all; list them with "
                f"[name for name, _ in model.named_modules()])"
            ) from None
        if path in out:
            raise ValidationError(f"layer {raw!r} is given twice in `layers`")
        out[path] = module
    return out


@contextlib.contextmanager
def capture(modules: dict[str, Any]) -> Iterator[dict[str, list[Any]]]:
    """Register forward hooks that record each module's output; remove them on exit.

    Yields a dict path -> list of outputs recorded since the last ``clear()``
    of that list. A module output that is a tuple or list is recorded as its
    first element (Hugging Face layers return tuples). The hooks are removed in
    ``finally``, so they are gone even when the forward pass raises (including
    ``KeyboardInterrupt``).
    """
    store: dict[str, list[Any]] = {path: [] for path in modules}
    handles = []
    try:
        for path, module in modules.items():
            def hook(_module, _inputs, output, _path=path):
                store[_path].append(output)
            handles.append(module.register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


def first_tensor(output: Any, path: str) -> Any:
    """The tensor a hook recorded: the output itself or the first element of a tuple/list/dict."""
    seen = output
    while isinstance(seen, (tuple, list)) and seen:
        seen = seen[0]
    if isinstance(seen, dict) and seen:
        seen = next(iter(seen.values()))
    if not (hasattr(seen, "detach") and hasattr(seen, "shape")):
        raise ValidationError(
            f"layer {path!r} returned {type(output).__name__}, not a tensor (nor a tuple whose first "
            f"element is a tensor); hook a submodule that outputs a tensor"
        )
    return seen
