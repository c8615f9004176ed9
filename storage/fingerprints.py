"""Definition fingerprints of the stored correlation series, one per pair × timeframe.

The pipeline compares them with the fingerprints of the current config on every update; a
pair whose fingerprint changed (or has none yet) is recomputed from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlite_utils


def load_fingerprints(db: sqlite_utils.Database, timeframe: str) -> dict[tuple[str, str], str]:
    rows = db.execute(
        "SELECT a, b, fingerprint FROM series_fingerprint WHERE timeframe = ?", [timeframe]
    ).fetchall()
    return {(a, b): str(f) for a, b, f in rows}


def save_fingerprints(db: sqlite_utils.Database, timeframe: str,
                      fingerprints: Mapping[tuple[str, str], str]) -> None:
    db.conn.executemany(
        "INSERT OR REPLACE INTO series_fingerprint (a, b, timeframe, fingerprint) VALUES (?, ?, ?, ?)",
        [(a, b, timeframe, f) for (a, b), f in fingerprints.items()],
    )
