"""`corrbot backup PATH`: a consistent copy of the live database, safe while the service runs.

SQLite's online backup API copies the pages inside one read transaction, so writers (the
service, an import) carry on and the copy is a snapshot of one moment. The copy is written
beside PATH under a temporary name, checked (``PRAGMA quick_check``), switched to rollback
journaling so it is one self-contained file, and only then renamed onto PATH — an
interrupted backup never leaves a half-written PATH behind.
"""

from __future__ import annotations

import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from core.errors import StorageError, UserInputError


@dataclass(frozen=True)
class BackupReport:
    source: Path
    path: Path
    size: int  # bytes
    seconds: float

    def summary(self) -> str:
        return (f"backed up {self.source} to {self.path}: {self.size / 1e6:.1f} MB, "
                f"integrity ok, {self.seconds:.1f}s")


def backup(source: Path, path: Path, *, force: bool = False) -> BackupReport:
    if not source.is_file():
        raise StorageError(f"database {source} does not exist")
    if path.exists() and not force:
        raise UserInputError(f"{path} exists; not overwriting it (use --force)")
    if path.is_dir():
        raise UserInputError(f"{path} is a directory; give a file name")
    t0 = time.monotonic()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Not mode=ro: a read-only connection may leave a -shm behind that it created (as root,
        # say, while the service is stopped), which the service's own user then cannot write.
        # A read-write connection that only reads removes its -wal/-shm when it is the last.
        src = sqlite3.connect(source, timeout=30.0)
        dst = sqlite3.connect(tmp, isolation_level=None)
        try:
            src.backup(dst)  # all pages in one step: one read transaction, one snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # no -wal beside the copy
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
            src.close()
        if check != "ok":
            raise StorageError(f"the copy of {source} failed its integrity check: {check}")
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot back up {source} to {path}: {exc}") from None
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return BackupReport(source, path, path.stat().st_size, time.monotonic() - t0)
