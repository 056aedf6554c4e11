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
