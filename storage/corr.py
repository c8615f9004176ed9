"""Correlation rows, their series ids, engine checkpoints and dirty markers.

Rows live in two tables with the same columns (`corr_view` and the readers here read both),
and the steps of the cycle in progress in a third, one row per step (`storage.corr_pending`):

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
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from storage import corr_pending as pending
from storage.db import rollbacks

CORR_COLUMNS = ("value", "n", "ci_lo", "ci_hi", "beta", "ewma")
_COLS = "ts, value, n, ci_lo, ci_hi, beta, ewma"
SLICES = 32  # series-id slices compacted in rotation; bounds how many updates a row stays recent
BULK_TS = 8  # a write spanning this many observations goes straight to ``corr``

# The distinct ts of ``corr_recent``, newest first, by one index seek each (a loose index
# scan: the table is keyed by ts, so a seek per distinct ts beats scanning its rows).
_RECENT_TS = (
    "WITH RECURSIVE rts(t) AS (SELECT max(ts) FROM corr_recent UNION ALL "
    "SELECT (SELECT max(ts) FROM corr_recent WHERE ts < rts.t) FROM rts WHERE rts.t IS NOT NULL) "
)


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
        f"SELECT series_id, {_COLS} FROM corr_recent WHERE {where} ORDER BY series_id, ts",
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


def delete_series_rows(db: sqlite_utils.Database, ids: Sequence[int], since: int | None = None) -> None:
    """Delete the rows of these series (only those at or after ``since`` if given)."""
    lo = -(2**62) if since is None else since
    args = [(i, lo) for i in ids]
    pending.expand(db)
    db.conn.executemany("DELETE FROM corr WHERE series_id = ? AND ts >= ?", args)
    tiers = _tiers(db)
    ts, listed = tiers.recent, tiers.listed
    if ts:
        db.conn.executemany(f"DELETE FROM corr_recent WHERE ts IN ({listed}) AND series_id = ? AND ts >= ?", args)


# ---- reading ------------------------------------------------------------------------------


def _ints(xs: Sequence[int]) -> str:
    return ",".join(str(int(x)) for x in xs)


def recent_ts(db: sqlite_utils.Database) -> list[int]:
    """The distinct ts of ``corr_recent``, newest first (a few dozen)."""
    return _tiers(db).recent


@dataclass(frozen=True)
class _Tiers:
    recent: list[int]  # distinct ts of corr_recent, newest first
    listed: str  # the same as an SQL list
    pending: list[pending.Step]


def _tiers(db: sqlite_utils.Database) -> _Tiers:
    """What every read of a series needs besides ``corr``: the ts of ``corr_recent`` (finding
    them costs a seek per ts) and the decoded pending steps. Cached on the connection until it
    or another connection writes (``total_changes``, ``PRAGMA data_version``) or it rolls a
    transaction back (`storage.db.rollbacks`)."""
    conn = db.conn
    key = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes, rollbacks(db))
    cached = getattr(db, "_corr_tiers", None)
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    ts = [int(t) for (t,) in conn.execute(_RECENT_TS + "SELECT t FROM rts WHERE t IS NOT NULL")]
    tiers = _Tiers(ts, _ints(ts), pending.load(conn))
    setattr(db, "_corr_tiers", (key, tiers))  # noqa: B010 — sqlite_utils.Database has no slot for it
    return tiers


def _rows(
    db: sqlite_utils.Database,
    series_id: int,
    *,
    lo: int | None = None,
    hi: int | None = None,
    newest_first: bool = False,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """Rows of one series, lo <= ts <= hi, ordered by ts: ``corr``'s, then the newer recent and
    pending ones."""
    cond, params = "", []
    if lo is not None:
        cond += " AND ts >= ?"
        params.append(lo)
    if hi is not None:
        cond += " AND ts <= ?"
        params.append(hi)
    order = " ORDER BY ts" + (" DESC" if newest_first else "")
    tiers = _tiers(db)
    newer = [r for r in pending.rows_of(tiers.pending, series_id)
             if (lo is None or r[0] >= lo) and (hi is None or r[0] <= hi)]
    if newest_first:
        newer.reverse()
    # Each table is asked for no more than the limit still needs, newest tier first.
    def lim() -> str:
        return "" if limit is None else f" LIMIT {max(int(limit) - len(newer), 0)}"

    every, listed = tiers.recent, tiers.listed
    if any((lo is None or t >= lo) and (hi is None or t <= hi) for t in every) and (
        limit is None or not newest_first or len(newer) < limit
    ):
        # The whole list and the bounds as parameters: one statement text per cache refresh,
        # so SQLite's statement cache prepares it once (a list cut to the bounds would not).
        recent = db.conn.execute(
            f"SELECT {_COLS} FROM corr_recent WHERE ts IN ({listed}) AND series_id = ?{cond}{order}"
            + (lim() if newest_first else ""), [series_id, *params]
        ).fetchall()
        newer = newer + recent if newest_first else recent + newer
    old_sql = f"SELECT {_COLS} FROM corr WHERE series_id = ?{cond}{order}"
    if newest_first:
        if limit is not None and len(newer) >= limit:
            return newer[:limit]
        return newer + db.conn.execute(old_sql + lim(), [series_id, *params]).fetchall()
    rows = db.conn.execute(old_sql + ("" if limit is None else f" LIMIT {int(limit)}"), [series_id, *params]).fetchall()
    return (rows + newer)[:limit] if limit is not None else rows + newer


def latest_row(
    db: sqlite_utils.Database, series_id: int, at_or_before: int | None = None
) -> tuple[int, dict[str, float | None]] | None:
    rows = _rows(db, series_id, hi=at_or_before, newest_first=True, limit=1)
    if not rows:
        return None
    row = rows[0]
    return int(row[0]), dict(zip(CORR_COLUMNS, row[1:], strict=True))


def read_series(db: sqlite_utils.Database, series_id: int, since: int | None = None) -> pd.DataFrame:
    rows = _rows(db, series_id, lo=since)
    df = pd.DataFrame(rows, columns=["ts", *CORR_COLUMNS]).set_index("ts")
    return df.astype({c: "float64" for c in CORR_COLUMNS if c != "n"})


def series_tail(
    db: sqlite_utils.Database, series_id: int, after_ts: int | None, context: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ts, value) of the rows after ``after_ts`` (all rows when None) plus the ``context`` rows
    before them, oldest first; NULL values come back as NaN.

    The alert layer calls this for every series each cycle, so it reads the series' recent rows
    once and ``corr`` once (recent rows are newer than the series' rows in ``corr``).
    """
    tiers = _tiers(db)
    every, listed = tiers.recent, tiers.listed
    recent: list[tuple[Any, ...]] = []
    if every:
        recent = db.conn.execute(
            f"SELECT ts, value FROM corr_recent WHERE ts IN ({listed}) AND series_id = ? ORDER BY ts", [series_id]
        ).fetchall()
    recent += [r[:2] for r in pending.rows_of(tiers.pending, series_id)]
    if after_ts is None:
        need = context + 1 - len(recent)
        old = db.conn.execute(
            "SELECT ts, value FROM corr WHERE series_id = ? ORDER BY ts DESC LIMIT ?", [series_id, need]
        ).fetchall()[::-1] if need > 0 else []
        rows = (old + recent)[-(context + 1) :]
    else:
        before = [r for r in recent if r[0] <= after_ts]
        need = max(context - len(before), 0)
        if before:  # every row in corr is older than these: none of them is new
            old = db.conn.execute(
                "SELECT ts, value FROM corr WHERE series_id = ? AND ts <= ? ORDER BY ts DESC LIMIT ?",
                [series_id, after_ts, need],
            ).fetchall()[::-1] if need else []
        else:
            old = sorted(db.conn.execute(
                "SELECT ts, value FROM corr WHERE series_id = ? AND ts > ? UNION ALL "
                "SELECT * FROM (SELECT ts, value FROM corr WHERE series_id = ? AND ts <= ? ORDER BY ts DESC LIMIT ?)",
                [series_id, after_ts, series_id, after_ts, need],
            ).fetchall())
        rows = old + recent
        first_new = next((i for i, r in enumerate(rows) if r[0] > after_ts), len(rows))
        rows = rows[max(first_new - context, 0) :]
    ts = np.array([r[0] for r in rows], dtype=np.int64)
    val = np.array([np.nan if r[1] is None else r[1] for r in rows], dtype=np.float64)
    return ts, val


def rank_at(db: sqlite_utils.Database, series_id: int, ts: int, value: float) -> tuple[int, int, int | None]:
    """(values <= ``value``, values, ts of the first value) among the series' non-NULL values
    up to ``ts``, counted in SQLite: what a percentile needs without reading the rows out."""
    cond = "series_id = ? AND ts <= ? AND value IS NOT NULL"
    tiers = _tiers(db)
    every, listed = tiers.recent, tiers.listed
    recent = f"SELECT value, ts FROM corr_recent WHERE ts IN ({listed}) AND {cond}" if every else None
    src = f"SELECT value, ts FROM corr WHERE {cond}" + (f" UNION ALL {recent}" if recent else "")
    params = [series_id, ts] * (2 if recent else 1)
    le, n, first = db.conn.execute(
        f"SELECT coalesce(sum(value <= ?), 0), count(*), min(ts) FROM ({src})", [value, *params]
    ).fetchone()
    le, n = int(le), int(n)
    for r in pending.rows_of(tiers.pending, series_id):
        t, v = r[0], r[1]
        if t <= ts and v is not None:
            le, n = le + (v <= value), n + 1
            first = t if first is None else min(int(first), t)
    return le, n, None if first is None else int(first)


def latest_ts(db: sqlite_utils.Database) -> int | None:
    """The newest observation with a stored row, any series."""
    row = db.execute("SELECT max(t) FROM (SELECT max(ts) AS t FROM corr UNION ALL SELECT max(ts) FROM corr_recent)")
    got = row.fetchone()[0]
    return max((int(t) for t in (got, pending.latest_ts(_tiers(db).pending)) if t is not None), default=None)


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
    return int(db.execute(sql, params).fetchone()[0]) + pending.count(_tiers(db).pending, ids)


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
