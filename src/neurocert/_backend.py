"""``backend=`` of the public computations: in memory, by neuron blocks, or on Dask.

``similarity``, ``identify`` and ``bootstrap_explain`` take ``backend`` and
``client``; anything but the in-memory default is forwarded to
:mod:`neurocert.distributed`, which scores neuron blocks with the same
functions and gives bitwise-identical results for the same seed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from .exceptions import ValidationError

BACKENDS = ("memory", "blocks", "dask")


def wants_blocks(backend: str, client: Any) -> bool:
    """Whether the call goes to :mod:`neurocert.distributed` (validates both options)."""
    if backend not in BACKENDS:
        raise ValidationError(f"`backend` must be one of {BACKENDS}; got {backend!r}")
    if client is not None and backend != "dask":
        raise ValidationError("`client` is only used with backend='dask'")
    return backend != "memory"


def reject_options(backend: str, **options: Any) -> None:
    """Raise for options the block backends do not support (given as name=value)."""
    used = sorted(k for k, v in options.items() if v not in (None, False))
    if used:
        raise ValidationError(f"{', '.join(used)} cannot be used with backend={backend!r}; "
                              "run in memory (backend='memory') for them")


@contextlib.contextmanager
def dask_client(backend: str, client: Any) -> Iterator[Any]:
    """The client to use: None for "blocks", the given one, or a LocalCluster for the call."""
    if backend != "dask":
        yield None
        return
    if client is not None:
        yield client
        return
    from .distributed import start_local_cluster

    own = start_local_cluster(dashboard_address=None)
    try:
        yield own
    finally:
        cluster = getattr(own, "cluster", None)
        own.close()
        if cluster is not None:
            cluster.close()
