"""Opening the SQLite database: WAL mode, pragmas, and the schema with its migrations.

Tables (browsable with Datasette as is; `corr_view` joins the ids back to names):

- ``meta``        key/value, holds ``schema_version``
- ``bars``        OHLCV per asset × timeframe × ts (UTC epoch seconds; 1d bars at 00:00 UTC
                  of their date — the NYSE session date for equities, the UTC day for crypto)
- ``series``      one row per pair × timeframe × window (an integer id keeps ``corr`` small)
- ``corr``        per series × observation ts: value, n, ci_lo, ci_hi, beta, ewma; keyed
                  (series_id, ts) so one series' history is contiguous
- ``corr_recent`` the same columns keyed (ts, series_id): the last bars' rows, appended cheaply
                  and moved into ``corr`` a slice of series at a time (see `storage.corr`)
- ``corr_pending`` the steps of the poll cycle in progress, one row each: the step's series
                  ids and numbers as two blobs, expanded into ``corr_recent`` once the cycle's
                  alerts are out (`storage.corr_pending`; not in ``corr_view`` until then)
- ``corr_progress`` per timeframe: rows stored through which observation, for which pairs and
                  windows, and the rotating checkpoint / compaction cursors
- ``pair_state``  engine checkpoint per pair × timeframe (last ts, return buffers, EWMA sums);
                  saved in rotation, so one may be older than the pair's rows (replay is exact)
- ``dirty``       per asset × timeframe, the earliest bar ts changed since the last compute
                  (``seq`` bumps on every change, so a compute only clears what it saw)
- ``feed_status`` last success / last error per source × asset, for /status
- ``push_chats``  alert destinations: configured chat id (or one added by /subscribe) ->
                  current id, enabled or not (and why); survives migrations, kicks, restarts
- ``alert_state`` per rule × key (a pair "A/B", or a source for `stale`): the lifecycle state
                  and the last evaluated bar (the rule's cursor)
- ``episodes``    one row per firing episode: when it fired and resolved, with the values
- ``outbox``      messages to deliver, per chat in id order; written in the same transaction
                  as the state change that caused them; ``message_id`` once sent
- ``outbox_episodes`` which episodes a (possibly grouped) message is about
- ``mutes``       silences from /mute: rule and/or target (asset or pair), until when
- ``rule_overrides`` /set RULE KEY VALUE, applied over the config's rule
- ``series_fingerprint`` per pair × timeframe, a hash of every definition its stored
                  correlations depend on (basket members and weights, windows, λ, alignment):
                  a different hash on update recomputes that pair (storage/fingerprints.py)
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from core.errors import ConfigError, CorrbotError, StorageError

SCHEMA_VERSION = 6


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


def _v2(db: sqlite_utils.Database) -> None:
    # IF NOT EXISTS: corrbot 0.1 created this table outside the migrations.
    db.execute(
        "CREATE TABLE IF NOT EXISTS push_chats (configured TEXT PRIMARY KEY, "
        "chat_id TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1, "
        "reason TEXT, updated_at TEXT)"
    )


def _v3(db: sqlite_utils.Database) -> None:
    db.executescript(
        """
        ALTER TABLE push_chats ADD COLUMN origin TEXT NOT NULL DEFAULT 'config';
        CREATE TABLE alert_state (
            rule TEXT NOT NULL, key TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'ok',          -- ok | pending | firing
            pending INTEGER NOT NULL DEFAULT 0,         -- consecutive bars the condition held
            last_ts INTEGER,                            -- last evaluated bar (cursor)
            episode_id INTEGER REFERENCES episodes(id), -- the open episode while firing
            last_notice_ts INTEGER,                     -- bar ts of the fire or last reminder
            resolved_ts INTEGER,                        -- bar ts of the last resolve (cooldown)
            PRIMARY KEY (rule, key)
        );
        CREATE TABLE episodes (
            id INTEGER PRIMARY KEY, rule TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
            a TEXT, b TEXT, timeframe TEXT, window INTEGER, severity TEXT NOT NULL,
            fired_ts INTEGER NOT NULL, fire_value REAL, fire_detail TEXT,
            resolved_ts INTEGER, resolve_value REAL,
            withheld INTEGER NOT NULL DEFAULT 0          -- fire message held back by a mute
        );
        CREATE INDEX episodes_by_rule ON episodes (rule, key, fired_ts);
        CREATE TABLE outbox (
            id INTEGER PRIMARY KEY, chat TEXT NOT NULL,  -- push_chats.configured
            kind TEXT NOT NULL,                          -- fire | resolve | reminder | episode | notice | digest
            text TEXT NOT NULL,                          -- Telegram HTML
            reply_to INTEGER REFERENCES outbox(id),      -- reply to the message this row sent
            buttons TEXT,                                -- JSON [[label, callback_data], ...]
            silent INTEGER NOT NULL DEFAULT 0,           -- disable_notification (severity info)
            status TEXT NOT NULL DEFAULT 'pending',      -- pending | sent | failed
            attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0,
            message_id INTEGER, created_at TEXT NOT NULL, sent_at TEXT, error TEXT
        );
        CREATE INDEX outbox_pending ON outbox (status, chat, id);
        CREATE TABLE outbox_episodes (
            outbox_id INTEGER NOT NULL REFERENCES outbox(id),
            episode_id INTEGER NOT NULL REFERENCES episodes(id),
            PRIMARY KEY (outbox_id, episode_id)
        ) WITHOUT ROWID;
        CREATE INDEX outbox_episodes_by_episode ON outbox_episodes (episode_id);
        CREATE TABLE mutes (
            id INTEGER PRIMARY KEY, rule TEXT, target TEXT, until_ts REAL NOT NULL,
            created_by TEXT, created_at TEXT NOT NULL, lifted INTEGER NOT NULL DEFAULT 0
        );
        CREATE TABLE rule_overrides (
            rule TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,
            set_by TEXT, set_at TEXT NOT NULL, PRIMARY KEY (rule, key)
        );
        """
    )


def _v4(db: sqlite_utils.Database) -> None:
    db.execute(
        "CREATE TABLE series_fingerprint (a TEXT NOT NULL, b TEXT NOT NULL, timeframe TEXT NOT NULL, "
        "fingerprint TEXT NOT NULL, PRIMARY KEY (a, b, timeframe))"
    )


def _v5_corr_recent(db: sqlite_utils.Database) -> None:
    # Issue 10 (storage layout for 10,000 pairs). Existing rows stay in ``corr``; the view
    # now reads both tables. corr_progress starts empty: the first update then takes each
    # pair's stored rows as its progress (the slow path of a changed layout).
    db.executescript(
        """
        CREATE TABLE corr_recent (
            ts INTEGER NOT NULL, series_id INTEGER NOT NULL REFERENCES series(id),
            value REAL, n INTEGER NOT NULL, ci_lo REAL, ci_hi REAL, beta REAL, ewma REAL,
            PRIMARY KEY (ts, series_id)
        ) WITHOUT ROWID;
        CREATE TABLE corr_progress (
            timeframe TEXT PRIMARY KEY, stepped_to INTEGER, layout TEXT NOT NULL,
            checkpoint_cursor INTEGER NOT NULL DEFAULT 0, compact_cursor INTEGER NOT NULL DEFAULT 0
        );
        DROP VIEW IF EXISTS corr_view;
        CREATE VIEW corr_view AS
            SELECT s.a, s.b, s.timeframe, s.window,
                   CASE WHEN s.timeframe = '1d' THEN date(c.ts, 'unixepoch')
                        ELSE datetime(c.ts, 'unixepoch') END AS asof,
                   c.value, c.n, c.ci_lo, c.ci_hi, c.beta, c.ewma
            FROM (SELECT series_id, ts, value, n, ci_lo, ci_hi, beta, ewma FROM corr
                  UNION ALL
                  SELECT series_id, ts, value, n, ci_lo, ci_hi, beta, ewma FROM corr_recent) c
            JOIN series s ON s.id = c.series_id;
        """
    )


def _v6_corr_pending(db: sqlite_utils.Database) -> None:
    # Issue 10: a new bar's rows as one row per engine step (storage/corr_pending.py). Empty
    # at creation; nothing else changes.
    db.execute("CREATE TABLE corr_pending (id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, "
               "ids BLOB NOT NULL, data BLOB NOT NULL)")


# Index i migrates a database from version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1, _v2, _v3, _v4, _v5_corr_recent, _v6_corr_pending,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


# Every table the current schema has: a corrbot database at SCHEMA_VERSION lacking one was
# edited outside corrbot; a file with tables but none of ours belongs to another program.
TABLES = frozenset({
    "meta", "bars", "series", "corr", "pair_state", "dirty", "feed_status", "push_chats",
    "alert_state", "episodes", "outbox", "outbox_episodes", "mutes", "rule_overrides",
    "series_fingerprint",
    "corr_recent", "corr_progress", "corr_pending",
})
DEFAULT_BUSY_TIMEOUT = 30.0


def schema_version(db: sqlite_utils.Database) -> int:
    if "meta" not in db.table_names():
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if not row:
        return 0
    try:
        return int(row[0])
    except (TypeError, ValueError):
        where = getattr(db, "conn_path", "")
        raise StorageError(
            f"database {where} is damaged: meta.schema_version is {row[0]!r}, not a number "
            "— restore the file from a backup"
        ) from None


def explain(exc: sqlite3.Error, path: str | Path, *, busy_timeout: float | None = None,
            key: str = "storage.path") -> CorrbotError:
    """One line for an SQLite failure on the database at ``path``: what is wrong, what to do.

    A file that is not a database is a config mistake (``key`` names where the path came
    from, exit status 2); everything else is a runtime failure (`StorageError`, exit 1).
    """
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    text = str(exc)
    if code in (5, 6) or "database is locked" in text:  # SQLITE_BUSY, SQLITE_LOCKED
        waited = f" for more than {busy_timeout:g}s" if busy_timeout is not None else ""
        return StorageError(
            f"database {path} is busy (locked by another process){waited} — stop the other "
            "program writing to it (another corrbot?) and retry"
        )
    if code == 13 or "database or disk is full" in text:  # SQLITE_FULL
        return StorageError(
            f"database {path}: the disk is full (database or disk is full) — free space on "
            f"{Path(path).parent} and retry; nothing was written"
        )
    if code == 8:  # SQLITE_READONLY
        return StorageError(
            f"database {path} is read-only ({text}) — make the file and its directory "
            "writable by this user"
        )
    if code == 14:  # SQLITE_CANTOPEN
        return StorageError(
            f"cannot open database {path} ({text}) — check that the file and its directory "
            "exist and are readable and writable by this user"
        )
    if code == 26:  # SQLITE_NOTADB
        return ConfigError(
            f"{path} is not an SQLite database ({text}) — point it at the corrbot database or a new file",
            key,
        )
    if code == 11:  # SQLITE_CORRUPT
        return StorageError(f"database {path} is damaged ({text}) — restore it from a backup")
    if code == 10:  # SQLITE_IOERR
        return StorageError(f"database {path}: I/O error ({text}) — check the disk")
    return StorageError(f"database {path}: {text}")


def _mkdirs_private(d: Path, key: str) -> None:
    """Create ``d`` and any missing parents, each new one 0700 (whatever the umask)."""
    missing: list[Path] = []
    probe = d
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{d} cannot be created: {probe} is a file, not a directory", key)
    try:
        for m in reversed(missing):
            m.mkdir(mode=0o700)
            m.chmod(0o700)
    except OSError as exc:
        raise StorageError(f"cannot create directory {d} ({exc.strerror})") from None


def _precheck(p: Path, key: str) -> bool:
    """Refuse a path that cannot be a database file; True if the file exists."""
    if not p.exists():
        if p.parent.exists() and not p.parent.is_dir():
            raise ConfigError(f"{p} cannot be created: {p.parent} is a file, not a directory", key)
        return False
    if not p.is_file():
        raise ConfigError(f"{p} is not a regular file", key)
    # Never open() the file here to sniff its header: closing any descriptor of a database
    # drops this process's POSIX locks on it, including those of another open connection
    # (corruption). SQLite itself reports a non-database file: SQLITE_NOTADB, see `explain`.
    return True


def open_db(path: str | Path, *, readonly: bool = False,
            busy_timeout: float = DEFAULT_BUSY_TIMEOUT, key: str = "storage.path") -> sqlite_utils.Database:
    """Open (creating and migrating if needed) the corrbot database at ``path``.

    Refuses, touching nothing, a path that is not an SQLite file, another program's SQLite
    file, and a corrbot database that is damaged (``meta.schema_version`` not a number, a
    table missing). New directories are created 0700 and a new database file 0600 (SQLite
    gives its -wal and -shm files the database file's mode). ``key`` names where the path
    came from in messages (``storage.path``, ``--db``).
    """
    memory = str(path) == ":memory:"
    p = Path(path)
    if readonly and not memory and not p.exists():
        raise StorageError(f"database {p} does not exist yet (run `corrbot backfill` or `import`)")
    if not memory:
        existed = _precheck(p, key)
        if not readonly and not existed:
            _mkdirs_private(p.parent, key)
            try:  # O_EXCL: a file someone else just created is theirs, left as it is
                os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                pass
            except OSError as exc:
                raise StorageError(f"cannot create database {p} ({exc.strerror})") from None
    try:
        conn = sqlite3.connect(p, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        db = sqlite_utils.Database(conn)
        db.conn_path = p  # type: ignore[attr-defined]
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        tables = {t for t in db.table_names() if not t.startswith("sqlite_")}
        if tables and "meta" not in tables and not tables <= TABLES:
            raise ConfigError(
                f"{p} is another application's SQLite database (tables "
                f"{', '.join(sorted(tables)[:5])}{', …' if len(tables) > 5 else ''}; no corrbot meta table) "
                "— point it at the corrbot database or a new file", key,
            )
        if not readonly:
            db.enable_wal()
        db.execute("PRAGMA synchronous = NORMAL")  # safe with WAL: durable at checkpoint
        db.execute("PRAGMA foreign_keys = ON")
        version = schema_version(db)
        if version == SCHEMA_VERSION:
            lost = sorted(TABLES - set(db.table_names()))
            if lost:
                raise StorageError(
                    f"database {p} is damaged: table {', '.join(lost)} is missing (schema version "
                    f"{version}) — it was changed outside corrbot; restore it from a backup"
                )
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"database {p} has schema version {version}, newer than this corrbot "
                f"({SCHEMA_VERSION}): upgrade corrbot"
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
    except sqlite3.Error as exc:
        raise explain(exc, p, busy_timeout=busy_timeout, key=key) from None
    return db


class transaction:
    """``with transaction(db):`` — BEGIN IMMEDIATE … COMMIT, ROLLBACK on any exception.

    The connection runs in autocommit mode (isolation_level=None) so that we, not the
    sqlite3 module, decide where transactions start and end. Nested use is flattened.
    """

    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
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
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self._rollback()  # e.g. SQLITE_BUSY/FULL at commit leaves the transaction open
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        # SQLite may already have rolled back (SQLITE_FULL, SQLITE_IOERR, …): then ROLLBACK
        # fails with "cannot rollback - no transaction is active", which must not replace
        # the error that got us here.
        if self.conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
        # Read caches keyed on total_changes (storage.corr) must not outlive rows rolled back.
        setattr(self.db, "rollbacks", rollbacks(self.db) + 1)  # noqa: B010 — no slot on sqlite_utils.Database


def rollbacks(db: sqlite_utils.Database) -> int:
    """How many transactions of this connection were rolled back: part of every read cache's key."""
    return int(getattr(db, "rollbacks", 0))
