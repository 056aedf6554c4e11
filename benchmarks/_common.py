"""Shared helpers for the neurocert benchmarks: environment, timing, data, memory.

Not part of the package; imported by the scripts in this folder.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


# ---------------------------------------------------------------------------
# environment


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _blas_info() -> list[dict[str, Any]]:
    """BLAS/OpenMP libraries loaded by numpy/scipy (threadpoolctl), else numpy's config."""
    # make sure the BLAS behind numpy and scipy is loaded before asking
    import scipy.linalg  # noqa: F401

    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        threadpool_info = None
    if threadpool_info is not None:
        keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer",
                "architecture", "filepath")
        return [{k: v for k, v in d.items() if k in keep} for d in threadpool_info()]
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return [{"user_api": "blas", "internal_api": blas.get("name"),
                 "version": blas.get("version"), "source": "numpy.show_config"}]
    except Exception:  # pragma: no cover - old numpy
        return [{"user_api": "blas", "internal_api": "unknown"}]


def _git_state() -> dict[str, Any] | None:
    """Commit of the checkout and whether the package sources differ from it."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "src"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return {"commit": head, "src_modified": bool(dirty)}


def environment() -> dict[str, Any]:
    import scipy

    env: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "blas": _blas_info(),
        "thread_env": {k: os.environ[k] for k in
                       ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
                       if k in os.environ},
    }
    try:
        import sklearn
        env["sklearn"] = sklearn.__version__
    except ImportError:
        env["sklearn"] = None
    try:
        import neurocert
        env["neurocert"] = neurocert.__version__
    except ImportError:
        env["neurocert"] = None
    env["git"] = _git_state()
    try:
        env["loadavg_1_5_15"] = list(os.getloadavg())
    except OSError:
        pass
    return env


def print_environment(env: dict[str, Any]) -> None:
    print("Environment")
    print(f"  date        {env['date']}")
    print(f"  python      {env['python']}   {env['platform']}")
    print(f"  cpu         {env['cpu_model']}   os.cpu_count()={env['cpu_count']}"
          f"   affinity={env['cpu_affinity']}")
    print(f"  numpy {env['numpy']}   scipy {env['scipy']}   scikit-learn {env['sklearn']}"
          f"   neurocert {env['neurocert']}")
    for b in env["blas"]:
        print(f"  {b.get('user_api')}: {b.get('internal_api')} {b.get('version')}"
              f"  threads={b.get('num_threads')}  arch={b.get('architecture')}"
              f"  layer={b.get('threading_layer')}")
    if env.get("git"):
        g = env["git"]
        print(f"  neurocert   commit {g['commit']}"
              f"{' + uncommitted or untracked files under src/' if g['src_modified'] else ''}")
    if env.get("thread_env"):
        print(f"  thread env  {env['thread_env']}")
    if "loadavg_1_5_15" in env:
        la = env["loadavg_1_5_15"]
        print(f"  load avg    {la[0]:.2f} {la[1]:.2f} {la[2]:.2f} (at start)")


# ---------------------------------------------------------------------------
# timing


def time_repeated(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[list[float], Any]:
    """Wall times (perf_counter) of ``repeats`` calls after ``warmup`` untimed calls.

    As in ``timeit``, the cyclic garbage collector is off while timing (one full
    collection before the batch; arrays are still freed by reference counting).
    """
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            out = None
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
    finally:
        if enabled:
            gc.enable()
    return times, out


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


# ---------------------------------------------------------------------------
# data


def make_data(n_samples: int, n_neurons: int, n_concepts: int, seed: int = 0,
              chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Synthetic probing set.

    activations: float32 ReLU(N(0, 1)) of shape (n_samples, n_neurons) (about half are
    tied at 0); concepts: float32 0/1 Bernoulli with per-concept prevalence
    ~ U(0.01, 0.2), shape (n_samples, n_concepts); also returns the prevalences.

    Filled in row chunks so that the process's peak RSS stays close to the size of
    the two arrays (the memory benchmark subtracts the peak after allocation).
    """
    rng = np.random.default_rng(seed)
    prev = rng.uniform(0.01, 0.2, size=n_concepts).astype(np.float32)
    a = np.empty((n_samples, n_neurons), dtype=np.float32)
    c = np.empty((n_samples, n_concepts), dtype=np.float32)
    for s0 in range(0, n_samples, chunk):
        s1 = min(n_samples, s0 + chunk)
        blk = rng.standard_normal((s1 - s0, n_neurons), dtype=np.float32)
        np.maximum(blk, 0.0, out=blk)
        a[s0:s1] = blk
        u = rng.random((s1 - s0, n_concepts), dtype=np.float32)
        np.less(u, prev[None, :], out=c[s0:s1], casting="unsafe")
    return a, c, prev


# ---------------------------------------------------------------------------
# memory


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def current_rss_bytes() -> int | None:
    """Resident set size now (VmRSS), Linux only."""
    return _proc_status("VmRSS")


def hwm_rss_bytes() -> int | None:
    """RSS high-water mark of this process's address space (VmHWM), Linux only.

    Unlike ``ru_maxrss`` it is reset by :func:`reset_peak_rss`, and it does not
    inherit the parent's peak: ``ru_maxrss`` of a child started by fork/vfork + exec
    starts at the parent's RSS, which hides the child's own peak.
    """
    return _proc_status("VmHWM")


def maxrss_bytes() -> int:
    """``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (kB on Linux, bytes on macOS)."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r if sys.platform == "darwin" else r * 1024)


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def fmt_bytes(b: float | None) -> str:
    if b is None:
        return "n/a"
    return f"{b / 2**20:.1f} MiB"


def fmt_s(t: float) -> str:
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    if t >= 1e-3:
        return f"{t * 1e3:.1f} ms"
    return f"{t * 1e6:.0f} us"
