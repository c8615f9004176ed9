"""The clock: one place that says what time it is, so tests can pass their own."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], float]  # UTC epoch seconds


def now_ts() -> float:
    return time.time()


def now_iso() -> str:
    """Now in UTC, ISO 8601 to the second (what status tables store)."""
    return datetime.now(UTC).isoformat(timespec="seconds")
