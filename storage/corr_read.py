"""Reading correlation rows across the three tiers (``corr``, ``corr_recent``, ``corr_pending``;
see `storage.corr` for the layout and the invariants its writers keep).

Two facts make the reads cheap without a second copy of anything:

- A series' rows are older in ``corr`` than in ``corr_recent``, and older there than pending
  (kept by every writer in `storage.corr`). So the newest row at or before a time can be
  *proved* by one statement on the live tables, without any cache: a row of the series at the
  newest recent ts <= the bound, with no pending step at or before the bound, is the answer;
  and when the series' newest row in ``corr`` is already at or after the bound, its rows in the
  other tiers are all later, so ``corr`` alone answers. `latest_row` tries that first.
- Everything else uses `tiers`: the distinct ts of ``corr_recent`` with the lowest and highest
  series id stored at each (read from the table, so exact whatever wrote it), and the decoded
  pending steps, cached per connection until anything writes (``PRAGMA data_version``,
  ``total_changes``, rollbacks). A series is looked up only at the recent ts whose id range
  holds it and that are newer than its rows in ``corr`` when that is known. The alert
  layer's reads (`series_tail`, `series_tails`) are in `storage.corr_tails`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from storage import corr_pending as pending
from storage.db import rollbacks

CORR_COLUMNS = ("value", "n", "ci_lo", "ci_hi", "beta", "ewma")
COLS = "ts, value, n, ci_lo, ci_hi, beta, ewma"
FAR = 2**62

# The distinct ts of ``corr_recent``, newest first, by one index seek each (a loose index
# scan: the table is keyed by ts), with the series id range stored at each (two more seeks).
_RECENT_TS = (
    "WITH RECURSIVE rts(t) AS (SELECT max(ts) FROM corr_recent UNION ALL "
    "SELECT (SELECT max(ts) FROM corr_recent WHERE ts < rts.t) FROM rts WHERE rts.t IS NOT NULL) "
    "SELECT t, (SELECT min(series_id) FROM corr_recent WHERE ts = t), "
    "(SELECT max(series_id) FROM corr_recent WHERE ts = t) FROM rts WHERE t IS NOT NULL"
)
# The newest row at or before ?2 of series ?1, proved from the live tables alone (see the
# module docstring), each by one statement that costs about what the single ``corr`` seek did
# before the recent tier: the series' row at the newest recent ts <= ?2 when no pending step
# is at or before ?2 (most series: every step has a row for each); its newest ``corr`` row
# <= ?2 when its rows in ``corr`` reach ?2 (a slice compacted since). No row means "ask `tiers`".
_AT_NEWEST = (
    f"SELECT {COLS} FROM corr_recent WHERE series_id = ?1 "
    "AND ts = (SELECT max(ts) FROM corr_recent WHERE ts <= ?2) "
    "AND NOT EXISTS (SELECT 1 FROM corr_pending WHERE ts <= ?2)"
)
_AT_NEWEST_ANY = (  # the same without a bound: max(ts) and the pending check go to a table's end
    f"SELECT {COLS} FROM corr_recent WHERE series_id = ?1 "
    "AND ts = (SELECT max(ts) FROM corr_recent) AND NOT EXISTS (SELECT 1 FROM corr_pending)"
)
_CORR_REACHES = (
    f"SELECT {COLS} FROM corr WHERE series_id = ?1 AND ts <= ?2 "
    "AND (SELECT max(ts) FROM corr WHERE series_id = ?1) >= ?2 ORDER BY ts DESC LIMIT 1"
)


@dataclass(frozen=True)
class Tiers:
    recent: list[int]  # distinct ts of corr_recent, newest first
    id_lo: list[int]  # lowest series id stored at each of them
    id_hi: list[int]  # highest
    steps: list[pending.Step]  # pending, oldest first
    pending_ids: list[list[int]]  # each step's ids as a list (bisect beats numpy on one id)

    def at(self, series_id: int, lo: int = -FAR, hi: int = FAR) -> list[int]:
        """The recent ts in [lo, hi] that can hold a row of the series, newest first."""
        return [t for t, a, b in zip(self.recent, self.id_lo, self.id_hi, strict=True)
                if a <= series_id <= b and lo <= t <= hi]

    def pending_rows(self, series_id: int) -> list[pending.Row]:
        """The series' pending rows, oldest first."""
        out = []
        for st, ids in zip(self.steps, self.pending_ids, strict=True):
            i = bisect_left(ids, series_id)
            if i < len(ids) and ids[i] == series_id:
                out.append(st.row(i))
        if len(out) > 1:
            out.sort(key=lambda r: r[0])
        return out


def tiers(db: sqlite_utils.Database) -> Tiers:
    """The recent ts and pending steps as they are now, cached on the connection until it or
    another connection writes (``total_changes``, ``PRAGMA data_version``) or it rolls a
    transaction back (`storage.db.rollbacks`)."""
    conn = db.conn
    key = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes, rollbacks(db))
    cached = getattr(db, "_corr_tiers", None)
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    got = conn.execute(_RECENT_TS).fetchall()
    steps = pending.load(conn)
    fresh = Tiers([int(r[0]) for r in got], [int(r[1]) for r in got], [int(r[2]) for r in got],
                  steps, [st.ids.tolist() for st in steps])
    setattr(db, "_corr_tiers", (key, fresh))  # noqa: B010 — sqlite_utils.Database has no slot for it
    return fresh


def _hint(db: sqlite_utils.Database) -> Tiers | None:
    """The last `tiers` of this connection, unchecked: only to choose which read to try."""
    cached = getattr(db, "_corr_tiers", None)
    return None if cached is None else cached[1]  # type: ignore[no-any-return]


def recent_ts(db: sqlite_utils.Database) -> list[int]:
    """The distinct ts of ``corr_recent``, newest first (a few dozen)."""
    return tiers(db).recent


def marks(n: int) -> str:
    return ",".join("?" * n)


def recent_rows(db: sqlite_utils.Database, cols: str, series_id: int, at: list[int]) -> list[Any]:
    """Rows of the series at the recent ts ``at``, ascending; the ts are bound as parameters,
    so a statement text is prepared once per list length."""
    if not at:
        return []
    return db.conn.execute(
        f"SELECT {cols} FROM corr_recent WHERE ts IN ({marks(len(at))}) AND series_id = ? ORDER BY ts",
        [*at, series_id],
    ).fetchall()


def _row(row: Sequence[Any]) -> tuple[int, dict[str, float | None]]:
    return int(row[0]), dict(zip(CORR_COLUMNS, row[1:], strict=True))


def latest_row(
    db: sqlite_utils.Database, series_id: int, at_or_before: int | None = None
) -> tuple[int, dict[str, float | None]] | None:
    """The series' newest row at or before ``at_or_before`` (any when None)."""
    hi = FAR if at_or_before is None else int(at_or_before)
    hint = _hint(db)
    if hint is None or not any(st.ts <= hi for st in hint.steps):  # else a pending row is likely the answer
        if at_or_before is None:
            got = db.conn.execute(_AT_NEWEST_ANY, [series_id]).fetchone()
        else:
            got = db.conn.execute(_AT_NEWEST, [series_id, hi]).fetchone()
            got = got or db.conn.execute(_CORR_REACHES, [series_id, hi]).fetchone()
        if got is not None:
            return _row(got)
    t = tiers(db)
    best: tuple[pending.Step, int] | None = None  # the newest pending row <= hi
    for st, ids in zip(t.steps, t.pending_ids, strict=True):
        if st.ts <= hi and (best is None or st.ts > best[0].ts):
            i = bisect_left(ids, series_id)
            if i < len(ids) and ids[i] == series_id:
                best = (st, i)
    if best is not None:
        return _row(best[0].row(best[1]))
    newest = f"SELECT {COLS} FROM corr WHERE series_id = ? AND ts <= ? ORDER BY ts DESC LIMIT 1"
    params: list[Any] = [series_id, hi]
    if at := t.at(series_id, hi=hi):
        # The recent tier first: a recent row of the series is newer than its rows in corr.
        newest = (f"SELECT * FROM (SELECT {COLS} FROM corr_recent WHERE ts IN ({marks(len(at))}) "
                  f"AND series_id = ? ORDER BY ts DESC LIMIT 1) UNION ALL SELECT * FROM ({newest}) "
                  "ORDER BY ts DESC LIMIT 1")
        params = [*at, series_id, *params]
    got = db.conn.execute(newest, params).fetchone()
    return None if got is None else _row(got)


def _rows(db: sqlite_utils.Database, series_id: int, lo: int | None = None) -> list[Any]:
    """Rows of one series from ``lo`` on, oldest first: ``corr``'s and the newer recent ones in
    one statement (one snapshot: a slice compacted meanwhile by another connection is read
    once, from one table or the other), then the pending ones."""
    t = tiers(db)
    low = -FAR if lo is None else lo
    at = t.at(series_id, lo=low)
    at.reverse()
    sql = f"SELECT {COLS} FROM corr WHERE series_id = ? AND ts >= ?"
    params: list[Any] = [series_id, low]
    if at:
        sql += f" UNION ALL SELECT {COLS} FROM corr_recent WHERE ts IN ({marks(len(at))}) AND series_id = ?"
        params += [*at, series_id]
    rows = db.conn.execute(sql + " ORDER BY ts", params).fetchall()  # two ordered arms: merged
    new = t.pending_rows(series_id)
    if lo is not None:
        new = [r for r in new if r[0] >= lo]
    return rows + new


def read_series(db: sqlite_utils.Database, series_id: int, since: int | None = None) -> pd.DataFrame:
    """The series' rows from ``since`` on: index ``ts`` (int64), ``n`` int64, the rest float64
    with NaN for NULL. Built from one float array, not row by row (most of a chart's read)."""
    rows = _rows(db, series_id, since)
    a = np.array(rows, dtype=np.float64).reshape(-1, 7)  # ts, n < 2**53: exact; NULL -> NaN
    cols: dict[str, np.ndarray] = {c: a[:, i + 1] for i, c in enumerate(CORR_COLUMNS)}
    cols["n"] = cols["n"].astype(np.int64)  # NOT NULL
    return pd.DataFrame(cols, index=pd.Index(a[:, 0].astype(np.int64), name="ts"))


def rank_at(db: sqlite_utils.Database, series_id: int, ts: int, value: float) -> tuple[int, int, int | None]:
    """(values <= ``value``, values, ts of the first value) among the series' non-NULL values
    up to ``ts``, counted in SQLite: what a percentile needs without reading the rows out.

    One statement, so one snapshot: a slice compacted by another connection meanwhile is
    counted once. Each tier is aggregated in its own subquery and the first value's ts is one
    index seek: /corr runs this per window, and over a series' ~1,600 daily rows aggregating
    a UNION ALL of the tiers with min(ts) in the same pass cost ~35% more."""
    cond = "series_id = ? AND ts <= ? AND value IS NOT NULL"
    t = tiers(db)
    at = t.at(series_id, hi=ts)
    count = "SELECT coalesce(sum(value <= ?), 0) AS le, count(*) AS n{} FROM {} WHERE {}"
    sql = (f"SELECT c.le, c.n, (SELECT ts FROM corr WHERE {cond} ORDER BY ts LIMIT 1), r.le, r.n, r.first "
           f"FROM ({count.format('', 'corr', cond)}) c, ")
    params: list[Any] = [series_id, ts, value, series_id, ts]
    if at:
        sql += f"({count.format(', min(ts) AS first', 'corr_recent', f'ts IN ({marks(len(at))}) AND {cond}')}) r"
        params += [value, *at, series_id, ts]
    else:
        sql += "(SELECT 0 AS le, 0 AS n, NULL AS first) r"
    le, n, first, rle, rn, rfirst = db.conn.execute(sql, params).fetchone()
    le, n = int(le) + int(rle), int(n) + int(rn)
    firsts = [int(f) for f in (first, rfirst) if f is not None]
    for r in t.pending_rows(series_id):
        pt, v = r[0], r[1]
        if pt <= ts and v is not None:
            le, n = le + (v <= value), n + 1
            firsts.append(int(pt))
    return le, n, min(firsts, default=None)
