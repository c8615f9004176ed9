"""Correlation rows, their series ids, engine checkpoints and dirty markers.

Rows live in two tables with the same columns (`corr_view` and the readers, `storage.corr_read`
and `storage.corr_tails`, re-exported here, read both), and the steps of the cycle in progress in a third, one row per
step (`storage.corr_pending`):

- ``corr``        keyed (series_id, ts): each series' history is contiguous, so a chart of one
                  series over years reads a few pages.
- ``corr_recent`` keyed (ts, series_id): one bar's rows for every series are contiguous, so
                  appending a bar touches ~rows/80 pages instead of one page per series (the
                  cost that dominated storing a bar at 10,000 pairs: every page also goes to
                  the WAL whole).

`compact` moves a slice of the series ids from ``corr_recent`` to ``corr``; the service moves
one slice per poll cycle (`service.pipeline.compact_recent`), so a row stays recent for at most
`SLICES` cycles and each move appends many rows per series at once. A (series_id, ts) is in one
table only, and a series' recent rows are newer than its rows in ``corr`` (see `write_rows`), so
readers take ``corr`` then ``corr_recent`` without merging. The same holds one level up: a
series' pending rows are newer than its rows in both tables (`write_steps`; every writer that
deletes or moves rows first expands the pending steps into ``corr_recent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import itemgetter

import numpy as np
import sqlite_utils

from storage import corr_pending as pending
from storage.corr_read import COLS, tiers
from storage.corr_read import CORR_COLUMNS as CORR_COLUMNS  # the readers, where callers have always found them
from storage.corr_read import latest_row as latest_row
from storage.corr_read import rank_at as rank_at
from storage.corr_read import read_series as read_series
from storage.corr_read import recent_ts as recent_ts
from storage.corr_tails import series_tail as series_tail
from storage.corr_tails import series_tails as series_tails

SLICES = 32  # series-id slices compacted in rotation; bounds how many updates a row stays recent
BULK_TS = 8  # a write spanning this many observations goes straight to ``corr``

def series_ids(
    db: sqlite_utils.Database, keys: Iterable[tuple[str, str, str, int]]
) -> dict[tuple[str, str, str, int], int]:
    """Ids for (a, b, timeframe, window), creating missing series rows."""
    keys = list(keys)
    db.conn.executemany("INSERT OR IGNORE INTO series (a, b, timeframe, window) VALUES (?, ?, ?, ?)", keys)
    rows = db.execute("SELECT a, b, timeframe, window, id FROM series").fetchall()
    have = {(a, b, tf, int(w)): int(i) for a, b, tf, w, i in rows}
    return {k: have[k] for k in keys}


def timeframe_series(db: sqlite_utils.Database, timeframe: str) -> np.ndarray:
    """Every series id of a timeframe, ascending."""
    rows = db.execute("SELECT id FROM series WHERE timeframe = ? ORDER BY id", [timeframe]).fetchall()
    return np.array([r[0] for r in rows], dtype=np.int64)


def find_series(db: sqlite_utils.Database, a: str, b: str, timeframe: str, window: int) -> int | None:
    row = db.execute(
        "SELECT id FROM series WHERE a = ? AND b = ? AND timeframe = ? AND window = ?",
        [a, b, timeframe, window],
    ).fetchone()
    return None if row is None else int(row[0])


# ---- writing ------------------------------------------------------------------------------


def write_rows(db: sqlite_utils.Database, rows: Sequence[tuple[object, ...]]) -> None:
    """Store (series_id, ts, value, n, ci_lo, ci_hi, beta, ewma) rows; NaN is stored as NULL.

    The rows must be newer than every stored row of their series (the pipeline deletes what
    it replaces first): a few observations (one bar) are appended to ``corr_recent``; a long
    run (a build, a backfill) goes to ``corr`` sorted by series, which is the cheap order
    there, after moving every recent row there too — so a series' recent rows are always
    newer than its rows in ``corr``, which lets reads take the tables one after the other.
    """
    if not rows:
        return
    pending.expand(db)  # what is pending is older than these rows
    if len({r[1] for r in rows}) >= BULK_TS:
        compact_all(db)
        pending.insert_rows(db.conn, "corr", sorted(rows, key=itemgetter(0, 1)))
    else:
        pending.insert_rows(db.conn, "corr_recent", sorted(rows, key=itemgetter(1, 0)))


def write_steps(db: sqlite_utils.Database, steps: Sequence[tuple[int, np.ndarray, np.ndarray]]) -> None:
    """Store engine steps (ts, series ids ascending, numbers (len(ids), 6) in ``CORR_COLUMNS``
    order with NaN for NULL). Same precondition as `write_rows`. A few steps (the new bars of
    a poll) are stored one pending row each (`storage.corr_pending`); a long run (a build, a
    backfill) goes through `write_rows` to ``corr``."""
    if len(steps) >= BULK_TS:
        write_rows(db, [r for ts, ids, data in steps for r in step_to_rows(ts, ids, data)])
        return
    for ts, ids, data in steps:
        pending.write(db, ts, ids, data)


def step_to_rows(ts: int, ids: np.ndarray, data: np.ndarray) -> list[tuple[object, ...]]:
    """One step's arrays as `write_rows` rows (NaN stays NaN: SQLite stores it as NULL)."""
    return pending.step_rows(pending.Step(ts, ids, data))


def compact(db: sqlite_utils.Database, lo: int, hi: int) -> int:
    """Move the recent rows of series ids lo..hi (inclusive) into ``corr``, after expanding
    the pending steps into ``corr_recent``; rows moved into ``corr``."""
    pending.expand(db)
    ts = recent_ts(db)
    if not ts:
        return 0
    where = f"ts IN ({_ints(ts)}) AND series_id BETWEEN ? AND ?"
    db.execute(
        "INSERT OR REPLACE INTO corr (series_id, ts, value, n, ci_lo, ci_hi, beta, ewma) "
        f"SELECT series_id, {COLS} FROM corr_recent WHERE {where} ORDER BY series_id, ts",
        [lo, hi],
    )
    return int(db.execute(f"DELETE FROM corr_recent WHERE {where}", [lo, hi]).rowcount)


def compact_slice(db: sqlite_utils.Database, ids: np.ndarray, cursor: int) -> int:
    """`compact` slice ``cursor % SLICES`` of the sorted series ``ids``; rows moved."""
    parts = [p for p in np.array_split(np.sort(ids), SLICES) if p.size]
    if not parts:
        return 0
    part = parts[cursor % len(parts)]
    return compact(db, int(part[0]), int(part[-1]))


def compact_all(db: sqlite_utils.Database) -> int:
    """Move every recent row into ``corr`` (tests, maintenance)."""
    return compact(db, -(2**62), 2**62)


def _ints(xs: Sequence[int]) -> str:
    return ",".join(str(int(x)) for x in xs)


def delete_series_rows(db: sqlite_utils.Database, ids: Sequence[int], since: int | None = None) -> None:
    """Delete the rows of these series (only those at or after ``since`` if given)."""
    lo = -(2**62) if since is None else since
    args = [(i, lo) for i in ids]
    pending.expand(db)
    db.conn.executemany("DELETE FROM corr WHERE series_id = ? AND ts >= ?", args)
    ts = recent_ts(db)
    if ts:
        db.conn.executemany(f"DELETE FROM corr_recent WHERE ts IN ({_ints(ts)}) AND series_id = ? AND ts >= ?", args)


# ---- reading (storage.corr_read; these two count every tier) ---------------------------


def latest_ts(db: sqlite_utils.Database) -> int | None:
    """The newest observation with a stored row, any series."""
    row = db.execute("SELECT max(t) FROM (SELECT max(ts) AS t FROM corr UNION ALL SELECT max(ts) FROM corr_recent)")
    got = row.fetchone()[0]
    return max((int(t) for t in (got, pending.latest_ts(tiers(db).steps)) if t is not None), default=None)


def count_rows(db: sqlite_utils.Database, timeframe: str | None = None) -> int:
    """Stored rows (of one timeframe's series if given)."""
    if timeframe is None:
        sql, params = "SELECT (SELECT count(*) FROM corr) + (SELECT count(*) FROM corr_recent)", []
    else:
        sql = (
            "SELECT count(*) FROM (SELECT series_id FROM corr UNION ALL SELECT series_id FROM corr_recent) c "
            "JOIN series s ON s.id = c.series_id WHERE s.timeframe = ?"
        )
        params = [timeframe]
    ids = None if timeframe is None else timeframe_series(db, timeframe)
    return int(db.execute(sql, params).fetchone()[0]) + pending.count(tiers(db).steps, ids)


# ---- checkpoints --------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    last_ts: int
    n_returns: int
    wmax: int
    lam: float
    state: bytes


def load_checkpoints(db: sqlite_utils.Database, timeframe: str) -> dict[tuple[str, str], Checkpoint]:
    rows = db.execute(
        "SELECT a, b, last_ts, n_returns, wmax, lam, state FROM pair_state WHERE timeframe = ?",
        [timeframe],
    ).fetchall()
    return {(a, b): Checkpoint(int(t), int(n), int(w), float(lam), bytes(s)) for a, b, t, n, w, lam, s in rows}


def save_checkpoints(db: sqlite_utils.Database, timeframe: str, items: Sequence[tuple[str, str, Checkpoint]]) -> None:
    db.conn.executemany(
        "INSERT OR REPLACE INTO pair_state (a, b, timeframe, last_ts, n_returns, wmax, lam, state) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [(a, b, timeframe, c.last_ts, c.n_returns, c.wmax, c.lam, c.state) for a, b, c in items],
    )


@dataclass(frozen=True)
class Progress:
    """Per timeframe: every pair of the ``layout`` (a fingerprint of pairs and windows) has
    its rows stored through observation ``stepped_to``; the two rotating cursors."""

    stepped_to: int | None
    layout: str
    checkpoint_cursor: int
    compact_cursor: int


def load_progress(db: sqlite_utils.Database, timeframe: str) -> Progress:
    row = db.execute(
        "SELECT stepped_to, layout, checkpoint_cursor, compact_cursor FROM corr_progress WHERE timeframe = ?",
        [timeframe],
    ).fetchone()
    if row is None:
        return Progress(None, "", 0, 0)
    return Progress(None if row[0] is None else int(row[0]), str(row[1]), int(row[2]), int(row[3]))


def save_progress(db: sqlite_utils.Database, timeframe: str, p: Progress) -> None:
    db.execute(
        "INSERT OR REPLACE INTO corr_progress (timeframe, stepped_to, layout, checkpoint_cursor, compact_cursor) "
        "VALUES (?, ?, ?, ?, ?)",
        [timeframe, p.stepped_to, p.layout, p.checkpoint_cursor, p.compact_cursor],
    )


# ---- dirty markers ------------------------------------------------------------------------


def read_dirty(db: sqlite_utils.Database) -> list[tuple[str, str, int, int]]:
    """(asset, bar timeframe, since_ts, seq) for every asset with changed bars."""
    return [
        (a, tf, int(s), int(q))
        for a, tf, s, q in db.execute("SELECT asset, timeframe, since_ts, seq FROM dirty").fetchall()
    ]


def clear_dirty(db: sqlite_utils.Database, seen: Sequence[tuple[str, str, int, int]]) -> None:
    """Clear the markers we processed, unless they changed since we read them."""
    db.conn.executemany(
        "DELETE FROM dirty WHERE asset = ? AND timeframe = ? AND seq = ?",
        [(a, tf, q) for a, tf, _, q in seen],
    )
