"""The newest bar's correlation rows, one SQLite row per stored step: ``corr_pending``.

A step of the engine at 10,000 pairs gives 20,000 rows at once. Inserting them one by one
costs SQLite ~3 µs a row (~60–90 ms per bar on a 2-core machine) however they are keyed, so
the pipeline stores a step as one row: the step's series ids (int64, ascending) and their
six numbers (float64, ``CORR_COLUMNS`` order, NaN = NULL) as two blobs — a few ms. It is then
committed and readable: every reader in `storage.corr` adds these rows to what it reads from
``corr`` and ``corr_recent``.

`expand` moves them into ``corr_recent`` as ordinary rows; the service does that after the
cycle's alerts are out (`service.pipeline.compact_recent`), off the path to the user, and every
writer that deletes or moves rows does it first. So normally this table holds the steps of the
cycle in progress, and ``corr_view`` (Datasette) shows a row once its cycle has ended.

Invariant (kept by `storage.corr`): a (series_id, ts) here is in no other table, and is newer
than the series' rows there.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np
import sqlite_utils

NCOLS = 6  # value, n, ci_lo, ci_hi, beta, ewma
# Rows per INSERT statement when rows are written out: one statement of many VALUES rows pays
# the per-statement cost once per block (as storage/bars.py does for bars); 32 × 8 = 256
# parameters, below SQLITE_MAX_VARIABLE_NUMBER of any build.
BLOCK = 32
ROW_COLUMNS = "series_id, ts, value, n, ci_lo, ci_hi, beta, ewma"
Row = tuple[int, float | None, int | None, float | None, float | None, float | None, float | None]


@dataclass(frozen=True)
class Step:
    ts: int
    ids: np.ndarray  # int64, ascending
    data: np.ndarray  # float64 (len(ids), NCOLS)

    def find(self, series_id: int) -> int | None:
        """Row index of ``series_id`` in this step, if it has one."""
        i = int(np.searchsorted(self.ids, series_id))
        return i if i < self.ids.size and int(self.ids[i]) == series_id else None

    def row(self, i: int) -> Row:
        """(ts, value, n, ci_lo, ci_hi, beta, ewma) as SQLite would return it (NULL = None)."""
        value, n, lo, hi, beta, ewma = [None if x != x else x for x in self.data[i].tolist()]
        return (self.ts, value, None if n is None else int(n), lo, hi, beta, ewma)


def write(db: sqlite_utils.Database, ts: int, ids: np.ndarray, data: np.ndarray) -> None:
    """Store one step's rows (``ids`` ascending, no (id, ts) already stored)."""
    if ids.size == 0:
        return
    db.conn.execute(
        "INSERT INTO corr_pending (ts, ids, data) VALUES (?, ?, ?)",
        [int(ts), np.ascontiguousarray(ids, dtype="<i8").tobytes(),
         np.ascontiguousarray(data, dtype="<f8").tobytes()],
    )


def load(conn: sqlite3.Connection) -> list[Step]:
    """Every stored step, oldest first (`storage.corr` caches this per connection)."""
    return [
        Step(int(ts), np.frombuffer(ids, dtype="<i8"), np.frombuffer(data, dtype="<f8").reshape(-1, NCOLS))
        for ts, ids, data in conn.execute("SELECT ts, ids, data FROM corr_pending ORDER BY id")
    ]


def rows_of(steps: list[Step], series_id: int) -> list[Row]:
    """The series' rows in ``steps``, (ts, value, n, ci_lo, ci_hi, beta, ewma), oldest first."""
    out: list[Row] = []
    for st in steps:
        i = st.find(series_id)
        if i is not None:
            out.append(st.row(i))
    return sorted(out, key=lambda r: r[0])


def count(steps: list[Step], ids: np.ndarray | None = None) -> int:
    """Rows in ``steps`` (of the series ``ids``, ascending, if given)."""
    return sum(st.ids.size if ids is None else int(np.isin(st.ids, ids, assume_unique=True).sum())
               for st in steps)


def latest_ts(steps: list[Step]) -> int | None:
    return max((st.ts for st in steps), default=None)


def insert_rows(conn: sqlite3.Connection, table: str, rows: Sequence[Sequence[object]]) -> None:
    """INSERT OR REPLACE ``rows`` of `ROW_COLUMNS` into ``corr`` or ``corr_recent``, `BLOCK`
    rows per statement, in the order given (SQLite stores a bound NaN as NULL)."""
    width = 8
    one = "(" + ", ".join("?" * width) + ")"
    flat = list(chain.from_iterable(rows))
    per = width * BLOCK
    full = len(rows) // BLOCK
    head = f"INSERT OR REPLACE INTO {table} ({ROW_COLUMNS}) VALUES "
    if full:
        conn.executemany(head + ", ".join([one] * BLOCK), (flat[i : i + per] for i in range(0, full * per, per)))
    if len(rows) % BLOCK:
        conn.execute(head + ", ".join([one] * (len(rows) % BLOCK)), flat[full * per :])


def step_rows(st: Step) -> list[tuple[object, ...]]:
    """One step as rows of `ROW_COLUMNS`, by series id."""
    d = st.data
    return list(zip(st.ids.tolist(), [st.ts] * st.ids.size, d[:, 0].tolist(), d[:, 1].astype(np.int64).tolist(),
                    *(d[:, c].tolist() for c in range(2, NCOLS)), strict=True))


def expand(db: sqlite_utils.Database) -> int:
    """Move every pending row into ``corr_recent`` (the caller holds the transaction); rows moved."""
    moved = 0
    steps = load(db.conn)
    for st in steps:
        insert_rows(db.conn, "corr_recent", step_rows(st))
        moved += st.ids.size
    if steps:
        db.conn.execute("DELETE FROM corr_pending")
    return moved
