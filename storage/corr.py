"""Correlation rows, their series ids, engine checkpoints and dirty markers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pandas as pd
import sqlite_utils

CORR_COLUMNS = ("value", "n", "ci_lo", "ci_hi", "beta", "ewma")


def series_ids(
    db: sqlite_utils.Database, keys: Iterable[tuple[str, str, str, int]]
) -> dict[tuple[str, str, str, int], int]:
    """Ids for (a, b, timeframe, window), creating missing series rows."""
    keys = list(keys)
    db.conn.executemany("INSERT OR IGNORE INTO series (a, b, timeframe, window) VALUES (?, ?, ?, ?)", keys)
    rows = db.execute("SELECT a, b, timeframe, window, id FROM series").fetchall()
    have = {(a, b, tf, int(w)): int(i) for a, b, tf, w, i in rows}
    return {k: have[k] for k in keys}


def find_series(db: sqlite_utils.Database, a: str, b: str, timeframe: str, window: int) -> int | None:
    row = db.execute(
        "SELECT id FROM series WHERE a = ? AND b = ? AND timeframe = ? AND window = ?",
        [a, b, timeframe, window],
    ).fetchone()
    return None if row is None else int(row[0])


def write_rows(db: sqlite_utils.Database, rows: Sequence[tuple[object, ...]]) -> None:
    """Upsert (series_id, ts, value, n, ci_lo, ci_hi, beta, ewma) rows; NaN is stored as NULL."""
    db.conn.executemany(
        "INSERT OR REPLACE INTO corr (series_id, ts, value, n, ci_lo, ci_hi, beta, ewma) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


def delete_series_rows(db: sqlite_utils.Database, ids: Sequence[int]) -> None:
    db.conn.executemany("DELETE FROM corr WHERE series_id = ?", [(i,) for i in ids])


def latest_row(
    db: sqlite_utils.Database, series_id: int, at_or_before: int | None = None
) -> tuple[int, dict[str, float | None]] | None:
    sql = "SELECT ts, value, n, ci_lo, ci_hi, beta, ewma FROM corr WHERE series_id = ?"
    params: list[object] = [series_id]
    if at_or_before is not None:
        sql += " AND ts <= ?"
        params.append(at_or_before)
    row = db.execute(sql + " ORDER BY ts DESC LIMIT 1", params).fetchone()
    if row is None:
        return None
    return int(row[0]), dict(zip(CORR_COLUMNS, row[1:], strict=True))


def read_series(db: sqlite_utils.Database, series_id: int, since: int | None = None) -> pd.DataFrame:
    sql = "SELECT ts, value, n, ci_lo, ci_hi, beta, ewma FROM corr WHERE series_id = ?"
    params: list[object] = [series_id]
    if since is not None:
        sql += " AND ts >= ?"
        params.append(since)
    rows = db.execute(sql + " ORDER BY ts", params).fetchall()
    df = pd.DataFrame(rows, columns=["ts", *CORR_COLUMNS]).set_index("ts")
    return df.astype({c: "float64" for c in CORR_COLUMNS if c != "n"})


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
