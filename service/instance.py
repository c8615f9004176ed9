"""One `corrbot run` per database: an exclusive ``flock`` on ``<db>.lock`` beside the DB.

Held for the whole life of the process and released by the kernel however it ends (kill -9
included), so a stale lock file never blocks a restart. The holder's pid is written into
the file only to name it in the refusal.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from core.errors import CorrbotError


class InstanceLock:
    def __init__(self, db_path: Path) -> None:
        self.path = db_path.with_name(db_path.name + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise CorrbotError(
                f"another corrbot run (pid {holder}) is already using {self.path.with_suffix('')}; "
                "refusing to start a second one"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None
