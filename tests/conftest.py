"""Shared fixtures: the repo's real test data, temporary databases, configs."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # real market data and recorded API responses (PROVENANCE.md)
DEMO_DATA = REPO / "service" / "demo_data"  # the demo's bundled real data, shared with the tests


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return TEST_DATA


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "corrbot.db"
