"""Shared fixtures. Paths to ../shared are resolved from the repo root, as CI lays it out."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"{SHARED} is missing: the tests read the golden files and CRDs from ../shared")
    return SHARED
