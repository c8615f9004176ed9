"""Reading the database from worker threads: one connection per thread (WAL lets readers run
side by side), so blocking SQLite reads never stall the event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import sqlite_utils

from storage.db import open_db

T = TypeVar("T")


class QueryRunner:
    """Runs ``fn(db, *args)`` in a worker thread with that thread's own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[sqlite_utils.Database] = []

    def _db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            db = open_db(self.path)
            self._local.db = db
            with self._lock:
                self._conns.append(db)
        return db

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(lambda: fn(self._db(), *args, **kwargs))

    def close(self) -> None:
        with self._lock:
            for db in self._conns:
                db.conn.close()
            self._conns.clear()
