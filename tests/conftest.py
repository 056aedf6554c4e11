"""Shared test helpers: optional assets and the artifacts folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def require_asset(available: bool, what: str) -> None:
    """Skip when an optional asset is missing, unless NEUROCERT_REQUIRE_ASSETS=1 (CI)."""
    if available:
        return
    if os.environ.get("NEUROCERT_REQUIRE_ASSETS") == "1":
        pytest.fail(f"required asset missing: {what} (NEUROCERT_REQUIRE_ASSETS=1)")
    pytest.skip(f"optional asset missing: {what}")


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    """Folder for tables and figures that CI keeps (NEUROCERT_ARTIFACTS)."""
    path = Path(os.environ.get("NEUROCERT_ARTIFACTS", "/tmp/neurocert-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def client():
    """A LocalCluster with 2 worker processes on 127.0.0.1, one per test module."""
    distributed = pytest.importorskip("neurocert.distributed")
    pytest.importorskip("distributed")
    c = distributed.start_local_cluster(2, threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=None)
    try:
        c.wait_for_workers(2, timeout=60)
        yield c
    finally:
        c.close()
        c.cluster.close()
