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
  holds it and that are newer than its rows in ``corr`` when that is known; `series_tails`
  reads the recent and pending rows of many series in one pass (the alert layer).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd
import sqlite_utils

from storage import corr_pending as pending
from storage.db import rollbacks

CORR_COLUMNS = ("value", "n", "ci_lo", "ci_hi", "beta", "ewma")
COLS = "ts, value, n, ci_lo, ci_hi, beta, ewma"
_FAR = 2**62

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
_AT_NEWEST_ANY = (  # the same without a bound: two seeks to the ends of the tables, no reads
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

    def at(self, series_id: int, lo: int = -_FAR, hi: int = _FAR) -> list[int]:
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


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _recent(db: sqlite_utils.Database, cols: str, series_id: int, at: list[int], tail: str = "") -> list[Any]:
    """Rows of the series at the recent ts ``at`` (ascending unless ``tail`` orders them);
    bound as parameters so a statement text is prepared once per list length."""
    if not at:
        return []
    return db.conn.execute(
        f"SELECT {cols} FROM corr_recent WHERE ts IN ({_marks(len(at))}) AND series_id = ?"
        + (tail or " ORDER BY ts"), [*at, series_id]
    ).fetchall()


def _row(row: Sequence[Any]) -> tuple[int, dict[str, float | None]]:
    return int(row[0]), dict(zip(CORR_COLUMNS, row[1:], strict=True))


def latest_row(
    db: sqlite_utils.Database, series_id: int, at_or_before: int | None = None
) -> tuple[int, dict[str, float | None]] | None:
    """The series' newest row at or before ``at_or_before`` (any when None)."""
    hi = _FAR if at_or_before is None else int(at_or_before)
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
        newest = (f"SELECT * FROM (SELECT {COLS} FROM corr_recent WHERE ts IN ({_marks(len(at))}) "
                  f"AND series_id = ? ORDER BY ts DESC LIMIT 1) UNION ALL SELECT * FROM ({newest}) "
                  "ORDER BY ts DESC LIMIT 1")
        params = [*at, series_id, *params]
    got = db.conn.execute(newest, params).fetchone()
    return None if got is None else _row(got)


def _rows(db: sqlite_utils.Database, series_id: int, lo: int | None = None) -> list[Any]:
    """Rows of one series from ``lo`` on, oldest first: ``corr``'s, then the newer recent ones
    (asked only at recent ts after the last ``corr`` row), then the pending ones."""
    old = db.conn.execute(
        f"SELECT {COLS} FROM corr WHERE series_id = ?" + (" AND ts >= ?" if lo is not None else "") + " ORDER BY ts",
        [series_id] if lo is None else [series_id, lo],
    ).fetchall()
    t = tiers(db)
    after = old[-1][0] + 1 if old else (-_FAR if lo is None else lo)
    at = t.at(series_id, lo=after)
    at.reverse()
    new = t.pending_rows(series_id)
    if lo is not None:
        new = [r for r in new if r[0] >= lo]
    return old + _recent(db, COLS, series_id, at) + new


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
    up to ``ts``, counted in SQLite: what a percentile needs without reading the rows out."""
    cond = "series_id = ? AND ts <= ? AND value IS NOT NULL"
    t = tiers(db)
    at = t.at(series_id, hi=ts)
    src = f"SELECT value, ts FROM corr WHERE {cond}"
    params: list[Any] = [series_id, ts]
    if at:
        src += f" UNION ALL SELECT value, ts FROM corr_recent WHERE ts IN ({_marks(len(at))}) AND {cond}"
        params += [*at, series_id, ts]
    le, n, first = db.conn.execute(
        f"SELECT coalesce(sum(value <= ?), 0), count(*), min(ts) FROM ({src})", [value, *params]
    ).fetchone()
    le, n = int(le), int(n)
    for r in t.pending_rows(series_id):
        pt, v = r[0], r[1]
        if pt <= ts and v is not None:
            le, n = le + (v <= value), n + 1
            first = pt if first is None else min(int(first), pt)
    return le, n, None if first is None else int(first)


def _tail(old: list[Any], newer_ts: np.ndarray, newer_val: np.ndarray, after_ts: int | None,
          context: int) -> tuple[np.ndarray, np.ndarray]:
    """`series_tail`'s answer from the ``corr`` rows ``old`` ((ts, value), ascending) and the
    newer rows of the other tiers as arrays."""
    if old:
        ts = np.concatenate([np.fromiter(map(itemgetter(0), old), dtype=np.int64, count=len(old)), newer_ts])
        val = np.concatenate([np.array([r[1] for r in old], dtype=np.float64), newer_val])  # NULL -> NaN
    else:
        ts, val = newer_ts.copy(), newer_val.copy()
    if after_ts is None:
        lo = max(ts.size - context - 1, 0)
    else:
        lo = max(int(np.searchsorted(ts, after_ts, side="right")) - context, 0)
    val[np.isnan(val)] = np.nan  # one NaN for NULL, whichever tier (a step's NaN may carry a sign)
    return ts[lo:], val[lo:]


def _old(db: sqlite_utils.Database, series_id: int, after_ts: int | None, context: int,
         newer: np.ndarray) -> list[Any]:
    """The ``corr`` rows `series_tail` needs besides the series' ``newer`` rows (their ts,
    ascending, from the other tiers, all newer than its rows in ``corr``): often none."""
    conn = db.conn
    if after_ts is None:
        need = context + 1 - newer.size
        return conn.execute(
            "SELECT ts, value FROM corr WHERE series_id = ? ORDER BY ts DESC LIMIT ?", [series_id, need]
        ).fetchall()[::-1] if need > 0 else []
    before = int(np.searchsorted(newer, after_ts, side="right"))
    need = max(context - before, 0)
    if before:  # every row in corr is older than these: none of them is new
        return conn.execute(
            "SELECT ts, value FROM corr WHERE series_id = ? AND ts <= ? ORDER BY ts DESC LIMIT ?",
            [series_id, after_ts, need],
        ).fetchall()[::-1] if need else []
    return sorted(conn.execute(
        "SELECT ts, value FROM corr WHERE series_id = ? AND ts > ? UNION ALL "
        "SELECT * FROM (SELECT ts, value FROM corr WHERE series_id = ? AND ts <= ? ORDER BY ts DESC LIMIT ?)",
        [series_id, after_ts, series_id, after_ts, need],
    ).fetchall())


def series_tail(
    db: sqlite_utils.Database, series_id: int, after_ts: int | None, context: int
) -> tuple[np.ndarray, np.ndarray]:
    """(ts, value) of the rows after ``after_ts`` (all rows when None) plus the ``context`` rows
    before them, oldest first; NULL values come back as NaN.

    The recent tier is asked only at the ts after the series' last row in ``corr`` (one seek
    finds it), then ``corr`` for the context those rows do not cover; the alert layer reads
    many series at once with `series_tails`.
    """
    t = tiers(db)
    last = db.conn.execute("SELECT max(ts) FROM corr WHERE series_id = ?", [series_id]).fetchone()[0]
    at = t.at(series_id, lo=-_FAR if last is None else last + 1)
    at.reverse()
    newer = _recent(db, "ts, value", series_id, at) + [r[:2] for r in t.pending_rows(series_id)]
    n = np.array(newer, dtype=np.float64).reshape(-1, 2)
    nts = n[:, 0].astype(np.int64)
    return _tail(_old(db, series_id, after_ts, context, nts), nts, n[:, 1], after_ts, context)


def _ranges(starts: np.ndarray, lens: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(start, start + len)`` for each pair, without a loop."""
    total = int(lens.sum())
    if total == 0:
        return np.empty(0, dtype=np.int64)
    return np.repeat(starts - (np.cumsum(lens) - lens), lens) + np.arange(total)


def _newer(
    db: sqlite_utils.Database, t: Tiers, ids: np.ndarray, recent: list[int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(series id, ts, value) of the rows of ``ids`` (ascending) at the recent ts ``recent`` and
    pending, sorted by series then ts: the recent tier in one statement, the steps from the cache."""
    sid, ts, val = [np.empty(0, np.int64)], [np.empty(0, np.int64)], [np.empty(0, np.float64)]
    if recent:
        got = db.conn.execute(
            f"SELECT series_id, ts, value FROM corr_recent WHERE ts IN ({_marks(len(recent))}) "
            "AND series_id BETWEEN ? AND ?", [*recent, int(ids[0]), int(ids[-1])]
        ).fetchall()
        if got:
            rs = np.fromiter(map(itemgetter(0), got), dtype=np.int64, count=len(got))
            keep = np.isin(rs, ids)
            sid.append(rs[keep])
            ts.append(np.fromiter(map(itemgetter(1), got), dtype=np.int64, count=len(got))[keep])
            val.append(np.array([r[2] for r in got], dtype=np.float64)[keep])  # NULL -> NaN
    for st in t.steps:
        pos = np.minimum(np.searchsorted(st.ids, ids), st.ids.size - 1)
        hit = st.ids[pos] == ids
        sid.append(ids[hit])
        ts.append(np.full(int(hit.sum()), st.ts, dtype=np.int64))
        val.append(st.data[pos[hit], 0])
    s_all, t_all, v_all = np.concatenate(sid), np.concatenate(ts), np.concatenate(val)
    order = np.lexsort((t_all, s_all))
    return s_all[order], t_all[order], v_all[order]


def series_tails(
    db: sqlite_utils.Database, wanted: Sequence[tuple[int, int | None]], context: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """`series_tail` of each (series_id, after_ts), equal to it, for many series at once: the
    recent and pending rows of all of them in one pass, then ``corr`` per series only for the
    context those rows do not cover (none for a rule without context once a cursor is set),
    assembled as two arrays that each answer is a slice of."""
    if not wanted:
        return []
    t = tiers(db)
    ids = np.unique(np.array([s for s, _ in wanted], dtype=np.int64))
    recent = t.recent
    if context == 0 and all(a is not None for _, a in wanted):
        # A level rule after its cursors needs only the rows after them, and one recent row at
        # or before a cursor proves ``corr`` has none after it: so the recent ts after the
        # earliest cursor and the newest one at or before it. `_old` stays exact for a series
        # without a row there (it asks ``corr`` for the rows after the cursor; the recent rows
        # not read are older than the cursor, so not wanted).
        low = min(a for _, a in wanted if a is not None)
        recent = [ts for ts in recent if ts > low] + [ts for ts in recent if ts <= low][:1]
    nsid, nts, nval = _newer(db, t, ids, recent)
    first, stop = np.searchsorted(nsid, ids).tolist(), np.searchsorted(nsid, ids, side="right").tolist()
    span = dict(zip(ids.tolist(), zip(first, stop, strict=True), strict=True))
    lens_old, lens_new, firsts = [], [], []
    flat: list[Any] = []
    for s, after_ts in wanted:
        a, b = span[s]
        old = _old(db, s, after_ts, context, nts[a:b])
        flat += old
        lens_old.append(len(old))
        lens_new.append(b - a)
        firsts.append(a)
    n_old, n_new, at_new = (np.array(x, dtype=np.int64) for x in (lens_old, lens_new, firsts))
    # Entry i is rows [starts[i], ends[i]) of tss/vals: its corr rows, then its newer rows.
    ends = np.cumsum(n_old + n_new)
    starts = ends - (n_old + n_new)
    tss, vals = np.empty(int(ends[-1]), np.int64), np.empty(int(ends[-1]), np.float64)
    if flat:
        where = _ranges(starts, n_old)
        tss[where] = np.fromiter(map(itemgetter(0), flat), dtype=np.int64, count=len(flat))
        vals[where] = np.array([r[1] for r in flat], dtype=np.float64)  # NULL -> NaN
    where, src = _ranges(starts + n_old, n_new), _ranges(at_new, n_new)
    tss[where], vals[where] = nts[src], nval[src]
    vals[np.isnan(vals)] = np.nan  # one NaN for NULL, whichever tier (a step's NaN may carry a sign)
    # What `_tail` keeps: the rows after the cursor and ``context`` before (the last row when None).
    after = np.array([_FAR if a is None else a for _, a in wanted], dtype=np.int64)
    upto = np.concatenate([[0], np.cumsum(tss <= np.repeat(after, n_old + n_new))])
    through = upto[ends] - upto[starts]  # rows at or before the cursor, per entry
    none = np.array([a is None for _, a in wanted])
    keep_from = np.where(none, np.maximum(ends - starts - context - 1, 0), np.maximum(through - context, 0)) + starts
    return [(tss[a:b], vals[a:b]) for a, b in zip(keep_from.tolist(), ends.tolist(), strict=True)]
