"""Bars: idempotent upserts and reads of OHLCV rows.

A bar batch is a DataFrame indexed by ``ts`` (int64 UTC epoch seconds) with a ``close``
column and optional ``open/high/low/volume``. `upsert_bars` writes only rows that are new or
whose values changed, inside one transaction, and records the earliest changed ts in
``dirty`` so the correlation pipeline knows whether it can append or must recompute.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from itertools import chain

import numpy as np
import pandas as pd
import sqlite_utils

from storage.db import transaction

COLUMNS = ("open", "high", "low", "close", "volume")
# Two float64 reads of the same stored REAL are identical, so "unchanged" can be exact;
# the tolerance only absorbs float32 round-trips in some CSV exports.
_REL_TOL = 1e-12
_SLICE = 200_000  # rows per read/compare/write slice: bounds memory on multi-million-row imports
# Rows per INSERT statement. One statement of many VALUES rows keeps SQLite's cursor on the
# B-tree and pays the per-statement cost (reset, cursor open, the sqlite3 module's per-row
# loop) once per block instead of once per bar: about twice the speed of a per-row
# executemany. 32 rows is 195 bound parameters, far below any SQLITE_MAX_VARIABLE_NUMBER
# (999 in old builds); larger blocks measured no faster.
_BLOCK = 32
_UPSERT = (
    "INSERT INTO bars (asset, timeframe, source, ts, open, high, low, close, volume) VALUES {} "
    "ON CONFLICT (asset, timeframe, ts) DO UPDATE SET "
    "open = excluded.open, high = excluded.high, low = excluded.low, "
    "close = excluded.close, volume = excluded.volume, source = excluded.source"
)


def _upsert_sql(rows: int) -> str:
    """The upsert of ``rows`` bars: ?1-?3 are asset, timeframe and source (bound once per
    statement), then ts and the five values of each bar."""
    one = "(?1, ?2, ?3, " + ", ".join("?" for _ in range(6)) + ")"
    return _UPSERT.format(", ".join([one] * rows))


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int


def _normalise(bars: pd.DataFrame) -> pd.DataFrame:
    df = bars.copy()
    for col in COLUMNS:
        if col not in df.columns:
            df[col] = np.nan
    df = df.loc[:, list(COLUMNS)].astype("float64")
    df.index = pd.Index(np.asarray(bars.index, dtype="int64"), name="ts")
    return df


def _mark_dirty(conn: sqlite3.Connection, asset: str, timeframe: str, since: int) -> None:
    """Tell the pipeline the series changed from ``since`` on (``seq`` bumps on every change)."""
    conn.execute(
        "INSERT INTO dirty (asset, timeframe, since_ts) VALUES (?, ?, ?) "
        "ON CONFLICT (asset, timeframe) DO UPDATE SET "
        "since_ts = min(since_ts, excluded.since_ts), seq = seq + 1",
        [asset, timeframe, since],
    )


def upsert_bars(db: sqlite_utils.Database, asset: str, timeframe: str, bars: pd.DataFrame, source: str,
                *, slice_rows: int = _SLICE) -> UpsertResult:
    """Insert new bars and update changed ones for ``asset``/``timeframe``; one transaction.

    Works through the batch in slices of ``slice_rows`` rows (read what is stored there, compare,
    write), so peak memory does not grow with the batch: a 2-million-row import stays one
    transaction without holding a Python tuple per stored and per new row at once.
    """
    if bars.empty:
        return UpsertResult(0, 0, 0)
    if not bars.index.is_unique:
        raise ValueError("duplicate timestamps in bar batch")
    if not bars.index.is_monotonic_increasing:
        bars = bars.sort_index()
    n_new = n_upd = 0
    first: int | None = None
    with transaction(db) as conn:
        for lo_i in range(0, len(bars), slice_rows):
            df = _normalise(bars.iloc[lo_i : lo_i + slice_rows])
            new, upd, write_first = _upsert_slice(conn, asset, timeframe, df, source)
            n_new += new
            n_upd += upd
            if write_first is not None and first is None:
                first = write_first
        if first is not None:
            _mark_dirty(conn, asset, timeframe, first)
    return UpsertResult(n_new, n_upd, len(bars) - n_new - n_upd)


def _upsert_slice(conn: sqlite3.Connection, asset: str, timeframe: str, df: pd.DataFrame,
                  source: str) -> tuple[int, int, int | None]:
    """One sorted slice: (inserted, updated, first written ts or None)."""
    lo, hi = int(df.index[0]), int(df.index[-1])
    rows = conn.execute(
        "SELECT ts, open, high, low, close, volume FROM bars "
        "WHERE asset = ? AND timeframe = ? AND ts BETWEEN ? AND ?",
        [asset, timeframe, lo, hi],
    ).fetchall()
    # One float64 array straight from the tuples (a NULL becomes NaN; ts < 2**53 is exact): a
    # DataFrame built from a list of tuples costs several times more on a re-import.
    stored = np.array(rows, dtype=np.float64).reshape(-1, 1 + len(COLUMNS))
    idx = df.index.to_numpy(np.int64)
    old_ts = stored[:, 0].astype(np.int64)
    pos = np.minimum(np.searchsorted(idx, old_ts), len(idx) - 1)
    hit = idx[pos] == old_ts  # stored bars the batch has (the others it lacks are left alone)
    is_new = np.ones(len(df), dtype=bool)
    is_new[pos[hit]] = False
    same = np.isclose(df.to_numpy()[pos[hit]], stored[hit, 1:], rtol=_REL_TOL, atol=0.0, equal_nan=True)
    changed_mask = np.zeros(len(df), dtype=bool)
    changed_mask[pos[hit]] = ~same.all(axis=1)
    write = df.loc[is_new | changed_mask]
    if len(write):
        _write_rows(conn, asset, timeframe, source, write)
    first = int(write.index[0]) if len(write) else None
    return int(is_new.sum()), int(changed_mask.sum()), first


def _write_rows(conn: sqlite3.Connection, asset: str, timeframe: str, source: str,
                df: pd.DataFrame) -> None:
    """Upsert the rows of ``df`` (normalised, sorted), ``_BLOCK`` bars per statement."""
    n = len(df)
    # SQLite stores a bound NaN as NULL, so columnar lists bind directly: no per-value
    # Python checks on the import hot path. One flat list of the slice's values (pointers to
    # the column lists' floats: 8 bytes a value), cut into one parameter list per statement.
    values = list(chain.from_iterable(zip(df.index.tolist(), *(df[c].to_numpy().tolist() for c in COLUMNS),
                                          strict=True)))
    head = [asset, timeframe, source]
    per = 6 * _BLOCK
    full = n // _BLOCK
    if full:
        conn.executemany(_upsert_sql(_BLOCK), (head + values[i : i + per] for i in range(0, full * per, per)))
    if n % _BLOCK:
        conn.execute(_upsert_sql(n % _BLOCK), head + values[full * per :])


def read_bars(
    db: sqlite_utils.Database,
    asset: str,
    timeframe: str,
    since: int | None = None,
    until: int | None = None,
) -> pd.DataFrame:
    """Bars for one asset/timeframe, ts-indexed and sorted, optionally within [since, until]."""
    sql = "SELECT ts, open, high, low, close, volume FROM bars WHERE asset = ? AND timeframe = ?"
    params: list[object] = [asset, timeframe]
    if since is not None:
        sql += " AND ts >= ?"
        params.append(since)
    if until is not None:
        sql += " AND ts <= ?"
        params.append(until)
    rows = db.execute(sql + " ORDER BY ts", params).fetchall()
    df = pd.DataFrame(rows, columns=["ts", *COLUMNS]).set_index("ts")
    df.index = df.index.astype("int64")
    return df.astype("float64")


def last_bar_ts(db: sqlite_utils.Database, asset: str, timeframe: str, *, first: bool = False) -> int | None:
    """The newest stored bar's ts (the oldest with ``first``), None if there is none."""
    agg = "min" if first else "max"
    row = db.execute(f"SELECT {agg}(ts) FROM bars WHERE asset = ? AND timeframe = ?", [asset, timeframe]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def bar_counts(db: sqlite_utils.Database) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(asset, timeframe) -> (count, first ts, last ts)."""
    rows = db.execute(
        "SELECT asset, timeframe, count(*), min(ts), max(ts) FROM bars GROUP BY asset, timeframe"
    ).fetchall()
    return {(a, tf): (int(n), int(lo), int(hi)) for a, tf, n, lo, hi in rows}


def read_closes(
    db: sqlite_utils.Database, asset: str, timeframe: str, since: int, until: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(ts, close) arrays of the stored bars in [since, until], fetched in slices so that a
    whole stored history costs 16 bytes a bar, not a Python tuple per row."""
    cur = db.execute(
        "SELECT ts, close FROM bars WHERE asset = ? AND timeframe = ? AND ts BETWEEN ? AND ? "
        "ORDER BY ts", [asset, timeframe, since, until])
    parts: list[np.ndarray] = []
    while batch := cur.fetchmany(_SLICE):
        parts.append(np.array(batch, dtype="float64"))
    if not parts:
        return np.empty(0, dtype="int64"), np.empty(0, dtype="float64")
    arr = np.concatenate(parts)
    return arr[:, 0].astype("int64"), arr[:, 1]


def neighbour(db: sqlite_utils.Database, asset: str, timeframe: str, ts: int,
              *, before: bool) -> tuple[int, float] | None:
    """The stored bar just before (or after) ``ts``: (ts, close), or None."""
    op, order = ("<", "DESC") if before else (">", "ASC")
    row = db.execute(
        f"SELECT ts, close FROM bars WHERE asset = ? AND timeframe = ? AND ts {op} ? "
        f"ORDER BY ts {order} LIMIT 1", [asset, timeframe, ts]).fetchone()
    return None if row is None else (int(row[0]), float(row[1]))


def scale_bars_at(db: sqlite_utils.Database, asset: str, timeframe: str,
                  items: list[tuple[int, float]]) -> None:
    """Multiply the stored prices of single bars: (ts, factor) each (see `rescale_bars`)."""
    if not items:
        return
    with transaction(db) as conn:
        conn.executemany(
            "UPDATE bars SET open = open * ?1, high = high * ?1, low = low * ?1, close = close * ?1 "
            "WHERE asset = ?2 AND timeframe = ?3 AND ts = ?4",
            [(k, asset, timeframe, t) for t, k in items])
        _mark_dirty(conn, asset, timeframe, min(t for t, _ in items))


def rescale_bars(db: sqlite_utils.Database, asset: str, timeframe: str, factor: float, *,
                 before: int | None = None, after: int | None = None) -> int:
    """Multiply the stored prices (not volume) of the series by ``factor`` — those with ts
    < ``before`` and/or > ``after`` — and mark it dirty from the first one: a vendor
    re-adjustment taken for the whole history, so there is no jump where old meets new."""
    where = "asset = ? AND timeframe = ?"
    params: list[object] = [asset, timeframe]
    if before is not None:
        where += " AND ts < ?"
        params.append(before)
    if after is not None:
        where += " AND ts > ?"
        params.append(after)
    with transaction(db) as conn:
        first = conn.execute(f"SELECT min(ts) FROM bars WHERE {where}", params).fetchone()[0]
        if first is None:
            return 0
        cur = conn.execute(
            "UPDATE bars SET open = open * ?, high = high * ?, low = low * ?, close = close * ? "
            f"WHERE {where}", [factor] * 4 + params)
        _mark_dirty(conn, asset, timeframe, int(first))
    return int(cur.rowcount)


def newest_bars(db: sqlite_utils.Database, asset: str) -> dict[str, int]:
    """timeframe -> ts of the asset's newest bar, by a few index seeks (``bar_counts`` scans
    every bar: too slow for a reply that only needs the newest)."""
    rows = db.execute(
        "WITH RECURSIVE t(tf) AS (SELECT min(timeframe) FROM bars WHERE asset = :a UNION ALL "
        "SELECT (SELECT min(timeframe) FROM bars WHERE asset = :a AND timeframe > t.tf) FROM t "
        "WHERE t.tf IS NOT NULL) "
        "SELECT tf, (SELECT max(ts) FROM bars WHERE asset = :a AND timeframe = t.tf) FROM t WHERE tf IS NOT NULL",
        {"a": asset},
    ).fetchall()
    return {str(tf): int(ts) for tf, ts in rows}
