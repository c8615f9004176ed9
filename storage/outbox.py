"""The outbox: messages waiting for delivery, per chat in id order (see storage/db.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlite_utils

from core.clock import now_iso
from storage.db import transaction


def enqueue(
    db: sqlite_utils.Database, chat: str, kind: str, text: str, *, reply_to: int | None = None,
    buttons: list[list[str]] | None = None, silent: bool = False, episodes: Sequence[int] = (),
) -> int:
    """Queue one message; joins the caller's transaction when there is one."""
    with transaction(db):
        cur = db.conn.execute(
            "INSERT INTO outbox (chat, kind, text, reply_to, buttons, silent, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [chat, kind, text, reply_to, json.dumps(buttons) if buttons else None, int(silent), now_iso()],
        )
        oid = int(cur.lastrowid or 0)
        db.conn.executemany(
            "INSERT OR IGNORE INTO outbox_episodes (outbox_id, episode_id) VALUES (?, ?)", [(oid, e) for e in episodes]
        )
    return oid
