"""Reading the database from worker threads: one connection per thread (WAL lets readers run
side by side), so blocking SQLite reads never stall the event loop.

The readers are a pool of their own, a few threads (`reader_threads`), not asyncio's default
executor (up to cpu count + 4 threads, shared with chart rendering and the feeds). A chat
query is mostly SQLite, which runs without the GIL, and a little Python between statements,
which needs it: with 6 threads taking 20 /corr queries at once on 2 cores, each query cost
1.8–2.2 ms of CPU handing the GIL around, against 1.1 ms with 2 threads (bench/bench_bot.py).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from storage.db import open_db

T = TypeVar("T")


def reader_threads() -> int:
    """Two, or up to four on a machine with more cores: one slow query (a backtest, a chart
    over years) must not hold up a quick one, and more threads than cores only contend."""
    return max(2, min(4, os.cpu_count() or 2))


class QueryRunner:
    """Runs ``fn(db, *args)`` in a reader thread with that thread's own connection."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite_utils.Database] = []
        self._pool = ThreadPoolExecutor(threads or reader_threads(), thread_name_prefix="corrbot-reader")

    def _db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            db = open_db(self.path)
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, lambda: fn(self._db(), *args, **kwargs))

    def close(self) -> None:
        # A query still running finishes on its connection's thread; no new ones start.
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for db in self._conns:
                db.conn.close()
            self._conns.clear()
