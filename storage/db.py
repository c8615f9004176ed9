"""Opening the SQLite database: WAL mode, pragmas, and the schema with its migrations.

Tables (browsable with Datasette as is; `corr_view` joins the ids back to names):

- ``meta``        key/value, holds ``schema_version``
- ``bars``        OHLCV per asset × timeframe × ts (UTC epoch seconds; 1d bars at 00:00 UTC
                  of their date — the NYSE session date for equities, the UTC day for crypto)
- ``series``      one row per pair × timeframe × window (an integer id keeps ``corr`` small)
- ``corr``        per series × observation ts: value, n, ci_lo, ci_hi, beta, ewma
- ``pair_state``  engine checkpoint per pair × timeframe (last ts, return buffers, EWMA sums)
- ``dirty``       per asset × timeframe, the earliest bar ts changed since the last compute
                  (``seq`` bumps on every change, so a compute only clears what it saw)
- ``feed_status`` last success / last error per source × asset, for /status
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from core.errors import StorageError

SCHEMA_VERSION = 1


def _v1(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        CREATE TABLE IF NOT EXISTS bars (
            asset TEXT NOT NULL, timeframe TEXT NOT NULL, ts INTEGER NOT NULL,
            open REAL, high REAL, low REAL, close REAL NOT NULL, volume REAL,
            source TEXT,
            PRIMARY KEY (asset, timeframe, ts)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS series (
            id INTEGER PRIMARY KEY, a TEXT NOT NULL, b TEXT NOT NULL,
            timeframe TEXT NOT NULL, window INTEGER NOT NULL,
            UNIQUE (a, b, timeframe, window)
        );
        CREATE TABLE IF NOT EXISTS corr (
            series_id INTEGER NOT NULL REFERENCES series(id), ts INTEGER NOT NULL,
            value REAL, n INTEGER NOT NULL, ci_lo REAL, ci_hi REAL, beta REAL, ewma REAL,
            PRIMARY KEY (series_id, ts)
        ) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS pair_state (
            a TEXT NOT NULL, b TEXT NOT NULL, timeframe TEXT NOT NULL,
            last_ts INTEGER NOT NULL, n_returns INTEGER NOT NULL,
            wmax INTEGER NOT NULL, lam REAL NOT NULL, state BLOB NOT NULL,
            PRIMARY KEY (a, b, timeframe)
        );
        CREATE TABLE IF NOT EXISTS dirty (
            asset TEXT NOT NULL, timeframe TEXT NOT NULL, since_ts INTEGER NOT NULL,
            seq INTEGER NOT NULL DEFAULT 1,
            PRIMARY KEY (asset, timeframe)
        );
        CREATE TABLE IF NOT EXISTS feed_status (
            source TEXT NOT NULL, asset TEXT NOT NULL,
            last_ok_at TEXT, last_bar_ts INTEGER, last_error_at TEXT, last_error TEXT,
            PRIMARY KEY (source, asset)
        );
        CREATE VIEW IF NOT EXISTS corr_view AS
            SELECT s.a, s.b, s.timeframe, s.window,
                   CASE WHEN s.timeframe = '1d' THEN date(c.ts, 'unixepoch')
                        ELSE datetime(c.ts, 'unixepoch') END AS asof,
                   c.value, c.n, c.ci_lo, c.ci_hi, c.beta, c.ewma
            FROM corr c JOIN series s ON s.id = c.series_id;
        CREATE VIEW IF NOT EXISTS bars_view AS
            SELECT asset, timeframe, datetime(ts, 'unixepoch') AS time_utc,
                   open, high, low, close, volume, source FROM bars;
        """
    )


# Index i migrates a database from version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1]
assert len(MIGRATIONS) == SCHEMA_VERSION


def schema_version(db: sqlite_utils.Database) -> int:
    if "meta" not in db.table_names():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def open_db(path: str | Path, *, readonly: bool = False) -> sqlite_utils.Database:
    """Open (creating and migrating if needed) the corrbot database at ``path``."""
    p = Path(path)
    if readonly and not p.exists():
        raise StorageError(f"database {p} does not exist yet (run `corrbot backfill` or `import`)")
    if not readonly:
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(p, timeout=30.0, isolation_level=None, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.execute("PRAGMA busy_timeout = 30000")
        if not readonly:
            db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: durable at checkpoint
        db.execute("PRAGMA foreign_keys = ON")
        version = schema_version(db)
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"cannot open database {p}: {exc}") from None
    if version > SCHEMA_VERSION:
        raise StorageError(
            f"database {p} has schema version {version}, newer than this corrbot ({SCHEMA_VERSION}): upgrade corrbot"
        )
    if version < SCHEMA_VERSION and not readonly:
        with transaction(db):
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            for step in MIGRATIONS[version:]:
                step(db)
            db.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                [str(SCHEMA_VERSION)],
            )
    return db


class transaction:
    """``with transaction(db):`` — BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception.

    The connection runs in autocommit mode (isolation_level=None) so that we, not the
    sqlite3 module, decide where transactions start and end. Nested use is flattened.
    """

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.conn: sqlite3.Connection = db.conn
        self.outer = False

    def __enter__(self) -> sqlite3.Connection:
        if not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
            self.outer = True
        return self.conn

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.outer:
            return
        if exc_type is None:
            self.conn.execute("COMMIT")
        else:
            self.conn.execute("ROLLBACK")
