"""Feed health: the last success and last error per source × asset, shown by /status."""

from __future__ import annotations

import sqlite_utils

from core.clock import now_iso
from core.models import FeedStatus


def record_ok(db: sqlite_utils.Database, source: str, asset: str, last_bar_ts: int | None) -> None:
    db.execute(
        "INSERT INTO feed_status (source, asset, last_ok_at, last_bar_ts) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (source, asset) DO UPDATE SET last_ok_at = excluded.last_ok_at, "
        "last_bar_ts = coalesce(excluded.last_bar_ts, last_bar_ts)",
        [source, asset, now_iso(), last_bar_ts],
    )


def record_error(db: sqlite_utils.Database, source: str, asset: str, message: str) -> None:
    db.execute(
        "INSERT INTO feed_status (source, asset, last_error_at, last_error) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (source, asset) DO UPDATE SET last_error_at = excluded.last_error_at, "
        "last_error = excluded.last_error",
        [source, asset, now_iso(), message[:500]],
    )


def all_status(db: sqlite_utils.Database) -> list[FeedStatus]:
    rows = db.execute(
        "SELECT source, asset, last_ok_at, last_bar_ts, last_error_at, last_error "
        "FROM feed_status ORDER BY source, asset"
    ).fetchall()
    return [FeedStatus(*r) for r in rows]
