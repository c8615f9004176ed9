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
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import sqlite_utils

from core.errors import StorageError

SCHEMA_VERSION = 3


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


# Index i migrates a database from version i to i + 1. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3]
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
