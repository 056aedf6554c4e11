"""Run code under a hard memory limit and measure its peak anonymous memory (Linux).

``RLIMIT_DATA`` bounds a process's private writable memory (heap, anonymous maps,
thread stacks) but not read-only file maps, so memory-mapped or Zarr-read
activations do not count against it while every array the computation allocates
does; ``RLIMIT_AS`` would count the mapped files and fail at open. The peak of
``RssAnon`` (resident anonymous memory) is sampled by a background thread.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any, Self

__all__ = ["AnonPeak", "memory_status", "run_with_data_limit"]


def memory_status() -> dict[str, int]:
    """``VmData``, ``VmRSS``, ``VmHWM``, ``RssAnon``, ``RssFile`` of this process, in bytes."""
    out: dict[str, int] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("VmData", "VmRSS", "VmHWM", "RssAnon", "RssFile", "VmPeak"):
                    out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


class AnonPeak:
    """Context manager sampling ``RssAnon`` every ``interval`` seconds; ``.peak`` in bytes."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        v = memory_status().get("RssAnon", 0)
        self.peak = max(self.peak, v)
        self.samples += 1

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> Self:
        self._sample()
        old = threading.stack_size()
        threading.stack_size(256 * 1024)  # the sampler's own stack counts against the limit
        try:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        finally:
            threading.stack_size(old)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def run_with_data_limit(args: list[str], limit_bytes: int, *, env: dict[str, str] | None = None,
                        timeout: float | None = None, **kwargs: Any
                        ) -> subprocess.CompletedProcess:
    """Run ``[sys.executable, *args]`` with ``RLIMIT_DATA = limit_bytes`` from its first instruction.

    One BLAS thread and at most two malloc arenas keep the fixed virtual overhead
    (per-thread buffers and arenas count against ``RLIMIT_DATA``) small.
    """
    import resource

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_DATA, (int(limit_bytes), int(limit_bytes)))

    child_env = dict(os.environ if env is None else env)
    child_env.update({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                      "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2"})
    return subprocess.run([sys.executable, *args], preexec_fn=limit, env=child_env,
                          timeout=timeout, capture_output=True, text=True, check=False,
                          **kwargs)
