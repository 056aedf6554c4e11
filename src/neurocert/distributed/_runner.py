"""Run a function over neuron blocks: serially in this process, or on a Dask cluster."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Self

from .._optional import require
from .._progress import progress as _progress
from ..exceptions import ValidationError

__all__ = ["BlockRunner", "start_local_cluster"]


def start_local_cluster(n_workers: int = 2, *, threads_per_worker: int = 1,
                        processes: bool = True, host: str = "127.0.0.1",
                        dashboard_address: str | None = ":0", **kwargs: Any) -> Any:
    """A ``distributed.Client`` on a new ``LocalCluster`` of this machine.

    Parameters
    ----------
    n_workers : int
        Worker processes.
    threads_per_worker : int
        Keep 1: the numeric kernels use BLAS threads already.
    processes : bool
        Separate worker processes (a lost worker is restarted by its nanny).
    host : str
        Interface to listen on; loopback by default.
    dashboard_address : str or None
        ``":0"`` serves the dashboard on a free port (needs bokeh); None turns it off.
    **kwargs
        Passed to ``distributed.LocalCluster``.

    Returns
    -------
    distributed.Client
        Close it with ``client.close(); client.cluster.close()`` (or use it as a
        context manager together with its cluster).

    Notes
    -----
    Workers are spawned processes: a script that calls this needs an
    ``if __name__ == "__main__":`` guard.
    """
    distributed = require("distributed", "the Dask backend")
    if dashboard_address is not None:
        try:
            import bokeh  # noqa: F401
        except ImportError:
            dashboard_address = None
    cluster = distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                       processes=processes, host=host,
                                       dashboard_address=dashboard_address, **kwargs)
    return distributed.Client(cluster)


class BlockRunner:
    """Maps a block function over ``[(j0, j1), ...]`` and returns results in block order.

    ``client`` None runs serially in this process (out-of-core: one block in memory
    at a time); a ``distributed.Client`` or a scheduler address (``"tcp://host:8786"``)
    runs one task per block. Dask recomputes the blocks of a lost worker; results
    are collected by block index, so each block appears exactly once.
    """

    def __init__(self, client: Any = None, *, progress: bool = False) -> None:
        self.progress = progress
        self._own = False
        if client is None:
            self.client = None
            return
        distributed = require("distributed", "the Dask backend (client=...)")
        if isinstance(client, str):
            self.client = distributed.Client(client)
            self._own = True
        elif isinstance(client, distributed.Client):
            self.client = client
        else:
            raise ValidationError(
                "`client` must be None (run here), a distributed.Client or a scheduler address "
                f"like 'tcp://10.0.0.1:8786'; got {type(client).__name__}")

    @property
    def n_workers(self) -> int:
        if self.client is None:
            return 1
        return len(self.client.scheduler_info().get("workers", {}))

    def close(self) -> None:
        if self._own and self.client is not None:
            self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ data
    def share(self, data: Any) -> Any:
        """Make ``data`` available to every task (scattered to all workers under Dask)."""
        if self.client is None:
            return data
        return self.client.scatter(data, broadcast=True, hash=False)

    def put(self, data: Any) -> Any:
        """Hand ``data`` to one task (scattered to one worker under Dask)."""
        if self.client is None:
            return data
        return self.client.scatter(data, hash=False)

    # ------------------------------------------------------------------- map
    def map(self, fn: Callable[..., Any], blocks: Sequence[tuple[int, int]],
            block_args: Callable[[int, int], tuple[Any, ...]], *shared: Any,
            desc: str = "blocks") -> list[Any]:
        """``[fn(*block_args(j0, j1), *shared) for (j0, j1) in blocks]`` in block order."""
        if self.client is None:
            return [fn(*block_args(j0, j1), *shared)
                    for j0, j1 in _progress(blocks, total=len(blocks), desc=desc,
                                            enabled=self.progress)]
        distributed = require("distributed", "the Dask backend")
        token = uuid.uuid4().hex[:12]
        futures = {}
        for i, (j0, j1) in enumerate(blocks):
            fut = self.client.submit(fn, *block_args(j0, j1), *shared, pure=False,
                                     key=f"neurocert-{desc}-{token}-{i:06d}")
            futures[fut.key] = (i, fut)
        if self.progress:
            link = getattr(self.client, "dashboard_link", None)
            if link and self.client.scheduler_info().get("services", {}).get("dashboard"):
                sys.stderr.write(f"Dask dashboard: {link}\n")
        out: dict[int, Any] = {}
        try:
            done = distributed.as_completed([f for _, f in futures.values()])
            for fut in _progress(done, total=len(futures), desc=desc, enabled=self.progress):
                i, _ = futures[fut.key]
                if i in out:  # cannot happen: one future per block
                    raise RuntimeError(f"block {i} returned twice")
                out[i] = fut.result()
                fut.release()
        except BaseException:
            self.client.cancel([f for _, f in futures.values()])
            raise
        missing = sorted(set(range(len(blocks))) - set(out))
        if missing:
            raise RuntimeError(f"blocks {missing} returned no result")
        return [out[i] for i in range(len(blocks))]
