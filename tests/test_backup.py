"""`corrbot backup PATH` while another process keeps writing to the database.

The writer is a real subprocess committing one row per transaction; the backup is the real
CLI. The copy must pass ``PRAGMA integrity_check``, hold every row committed before the
backup began, and be one self-contained file; an existing PATH is refused (exit 2) unless
``--force``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path

from service_harness import REPO, closed_url, env, until
from test_service_stop import write_config

from storage.db import open_db

WRITER = textwrap.dedent("""
    import sqlite3, sys
    db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE IF NOT EXISTS scratch (n INTEGER PRIMARY KEY, blob BLOB)")
    n = 0
    while True:
        n += 1
        db.execute("INSERT INTO scratch VALUES (?, randomblob(2000))", [n])
""")


async def corrbot(cfg: Path, *args: str) -> tuple[int, list[str]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "--config", str(cfg), *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env(False))
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode().strip().splitlines()


def rows(path: Path) -> int:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'scratch'").fetchone() is None:
            return 0  # the writer has not created its table yet (a slow start under load)
        return int(db.execute("SELECT count(*) FROM scratch").fetchone()[0])


async def test_backup_while_another_process_writes(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, closed_url())
    db_path = tmp_path / "corrbot.db"
    open_db(db_path).conn.close()  # the schema, as `corrbot run` would create it
    writer = await asyncio.create_subprocess_exec(sys.executable, "-c", WRITER, str(db_path))
    copy = tmp_path / "backups" / "corrbot-copy.db"
    copy.parent.mkdir()
    try:
        await until(lambda: db_path.with_name("corrbot.db-wal").exists() and rows(db_path) >= 500)
        before = rows(db_path)
        code, out = await corrbot(cfg, "backup", str(copy))
        assert code == 0 and len(out) == 1, out
        assert out[0].startswith(f"backed up {db_path} to {copy}:") and "integrity ok" in out[0]
        assert rows(db_path) > before  # the writer kept going
    finally:
        writer.kill()
        await writer.wait()
    with sqlite3.connect(copy) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        n, top = db.execute("SELECT count(*), max(n) FROM scratch").fetchone()
        assert n >= before and n == top  # a snapshot: every row up to some moment, no gaps
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert sorted(p.name for p in copy.parent.iterdir()) == ["corrbot-copy.db"]  # no -wal, no temp file

    code, out = await corrbot(cfg, "backup", str(copy))
    assert code == 2 and len(out) == 1 and "exists" in out[0] and "--force" in out[0], out
    code, out = await corrbot(cfg, "backup", "--force", str(copy))
    assert code == 0 and len(out) == 1, out
