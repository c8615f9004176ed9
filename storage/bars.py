"""Bars: idempotent upserts and reads of OHLCV rows.

A bar batch is a DataFrame indexed by ``ts`` (int64 UTC epoch seconds) with a ``close``
column and optional ``open/high/low/volume``. `upsert_bars` writes only rows that are new or
whose values changed, inside one transaction, and records the earliest changed ts in
``dirty`` so the correlation pipeline knows whether it can append or must recompute.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat

import numpy as np
import pandas as pd
import sqlite_utils

from storage.db import transaction

COLUMNS = ("open", "high", "low", "close", "volume")
# Two float64 reads of the same stored REAL are identical, so "unchanged" can be exact;
# the tolerance only absorbs float32 round-trips in some CSV exports.
_REL_TOL = 1e-12


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


def upsert_bars(db: sqlite_utils.Database, asset: str, timeframe: str, bars: pd.DataFrame, source: str) -> UpsertResult:
    """Insert new bars and update changed ones for ``asset``/``timeframe``; one transaction."""
    if bars.empty:
        return UpsertResult(0, 0, 0)
    df = _normalise(bars)
    if not df.index.is_unique:
        raise ValueError("duplicate timestamps in bar batch")
    lo, hi = int(df.index.min()), int(df.index.max())
    with transaction(db) as conn:
        existing = pd.DataFrame(
            conn.execute(
                "SELECT ts, open, high, low, close, volume FROM bars "
                "WHERE asset = ? AND timeframe = ? AND ts BETWEEN ? AND ?",
                [asset, timeframe, lo, hi],
            ).fetchall(),
            columns=["ts", *COLUMNS],
        )
        existing = existing.set_index("ts").astype("float64")
        is_new = ~df.index.isin(existing.index)
        old = existing.reindex(df.index[~is_new])
        new_vals = df.loc[~is_new]
        same = np.isclose(new_vals.to_numpy(), old.to_numpy(), rtol=_REL_TOL, atol=0.0, equal_nan=True)
        changed_mask = np.zeros(len(df), dtype=bool)
        changed_mask[~is_new] = ~same.all(axis=1)
        write = df.loc[is_new | changed_mask]
        if len(write):
            # SQLite stores a bound NaN as NULL, so columnar lists bind directly: no per-value
            # Python checks on the import hot path.
            n = len(write)
            cols = [write[c].to_numpy().tolist() for c in COLUMNS]
            rows = list(
                zip(repeat(asset, n), repeat(timeframe, n), write.index.tolist(), *cols, repeat(source, n), strict=True)
            )
            conn.executemany(
                "INSERT INTO bars (asset, timeframe, ts, open, high, low, close, volume, source) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (asset, timeframe, ts) DO UPDATE SET "
                "open = excluded.open, high = excluded.high, low = excluded.low, "
                "close = excluded.close, volume = excluded.volume, source = excluded.source",
                rows,
            )
            first = int(write.index.min())
            conn.execute(
                "INSERT INTO dirty (asset, timeframe, since_ts) VALUES (?, ?, ?) "
                "ON CONFLICT (asset, timeframe) DO UPDATE SET "
                "since_ts = min(since_ts, excluded.since_ts), seq = seq + 1",
                [asset, timeframe, first],
            )
    n_new = int(is_new.sum())
    n_upd = int(changed_mask.sum())
    return UpsertResult(n_new, n_upd, len(df) - n_new - n_upd)


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


def last_bar_ts(db: sqlite_utils.Database, asset: str, timeframe: str) -> int | None:
    row = db.execute("SELECT max(ts) FROM bars WHERE asset = ? AND timeframe = ?", [asset, timeframe]).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def bar_counts(db: sqlite_utils.Database) -> dict[tuple[str, str], tuple[int, int, int]]:
    """(asset, timeframe) -> (count, first ts, last ts)."""
    rows = db.execute(
        "SELECT asset, timeframe, count(*), min(ts), max(ts) FROM bars GROUP BY asset, timeframe"
    ).fetchall()
    return {(a, tf): (int(n), int(lo), int(hi)) for a, tf, n, lo, hi in rows}


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
