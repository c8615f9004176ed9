"""Shared fixtures: the real data folder, temporary databases, configs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_shared_data() -> Path:
    env = os.environ.get("CORRBOT_SHARED_DATA")
    if env:
        return Path(env)
    for parent in REPO.parents:
        cand = parent / "shared" / "data"
        if (cand / "PROVENANCE.md").exists():
            return cand
    raise RuntimeError(
        "cannot find shared/data (the real market data) beside the repo; set CORRBOT_SHARED_DATA"
    )


SHARED_DATA = _find_shared_data()
DEMO_DATA = REPO / "service" / "demo_data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED_DATA


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "corrbot.db"
