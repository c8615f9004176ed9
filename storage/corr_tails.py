"""The alert layer's reads of the correlation tiers: each series' rows after a cursor plus
the context before it (`series_tail`), and the same for all the series of a rule at once
(`series_tails`): the recent and pending rows of all of them in one pass, then ``corr`` per
series only for the context those rows do not cover. See `storage.corr_read` for the tiers.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
import sqlite_utils

from storage.corr_read import FAR, Tiers, recent_rows, tiers


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
         newer: int, before: int) -> list[Any]:
    """The ``corr`` rows `series_tail` needs besides the series' ``newer`` rows from the other
    tiers (all newer than its rows in ``corr``; ``before`` of them at or before ``after_ts``):
    often none."""
    conn = db.conn
    if after_ts is None:
        need = context + 1 - newer
        return conn.execute(
            "SELECT ts, value FROM corr WHERE series_id = ? ORDER BY ts DESC LIMIT ?", [series_id, need]
        ).fetchall()[::-1] if need > 0 else []
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
    at = t.at(series_id, lo=-FAR if last is None else last + 1)
    at.reverse()
    newer = recent_rows(db, "ts, value", series_id, at) + [r[:2] for r in t.pending_rows(series_id)]
    n = np.array(newer, dtype=np.float64).reshape(-1, 2)
    nts = n[:, 0].astype(np.int64)
    before = 0 if after_ts is None else int(np.searchsorted(nts, after_ts, side="right"))
    return _tail(_old(db, series_id, after_ts, context, nts.size, before), nts, n[:, 1], after_ts, context)


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
    for at in recent:  # one statement per ts: two columns a row instead of three
        got = db.conn.execute(
            "SELECT series_id, value FROM corr_recent WHERE ts = ? AND series_id BETWEEN ? AND ?",
            [at, int(ids[0]), int(ids[-1])],
        ).fetchall()
        if got:
            rs = np.fromiter(map(itemgetter(0), got), dtype=np.int64, count=len(got))
            keep = np.isin(rs, ids)
            sid.append(rs[keep])
            ts.append(np.full(int(keep.sum()), at, dtype=np.int64))
            val.append(np.array([r[1] for r in got], dtype=np.float64)[keep])  # NULL -> NaN
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
    stamps = nts.tolist()  # bisect on a list: a numpy call per series costs more than the search
    for s, after_ts in wanted:
        a, b = span[s]
        before = 0 if after_ts is None else bisect_right(stamps, after_ts, a, b) - a
        old = _old(db, s, after_ts, context, b - a, before)
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
    after = np.array([FAR if a is None else a for _, a in wanted], dtype=np.int64)
    upto = np.concatenate([[0], np.cumsum(tss <= np.repeat(after, n_old + n_new))])
    through = upto[ends] - upto[starts]  # rows at or before the cursor, per entry
    none = np.array([a is None for _, a in wanted])
    keep_from = np.where(none, np.maximum(ends - starts - context - 1, 0), np.maximum(through - context, 0)) + starts
    return [(tss[a:b], vals[a:b]) for a, b in zip(keep_from.tolist(), ends.tolist(), strict=True)]
