"""The ``push_chats`` table: where pushes go, following chat migrations and kicks.

Keyed by the id from the config (``telegram.alert_chat_ids``), so a group that became a
supergroup, or a chat that removed the bot, stays known across restarts.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import sqlite_utils

from core.clock import now_iso
from storage.db import open_db

ChatId = int | str


def _chat(value: str) -> ChatId:
    return int(value) if re.fullmatch(r"-?\d+", value) else value


class PushChats:
    """Thread-safe access (callers use ``asyncio.to_thread``) on a connection of its own."""

    def __init__(self, db_path: Path | str) -> None:
        self._db = open_db(db_path)
        self._lock = threading.Lock()

    def seed(self, configured: list[int | str]) -> None:
        with self._lock:
            self._db.conn.executemany(
                "INSERT OR IGNORE INTO push_chats (configured, chat_id, updated_at) VALUES (?, ?, ?)",
                [(str(c), str(c), now_iso()) for c in configured],
            )

    def active(self, configured: list[int | str]) -> list[tuple[str, ChatId]]:
        """(configured key, current chat id) of the enabled ones among ``configured``."""
        keys = [str(c) for c in configured]
        with self._lock:
            rows = self._db.execute("SELECT configured, chat_id FROM push_chats WHERE enabled = 1").fetchall()
        current = dict(rows)
        return [(k, _chat(current[k])) for k in keys if k in current]

    def active_all(self) -> list[tuple[str, ChatId]]:
        """Every enabled destination: configured alert chats and chats that /subscribe'd."""
        with self._lock:
            rows = self._db.execute(
                "SELECT configured, chat_id FROM push_chats WHERE enabled = 1 ORDER BY rowid"
            ).fetchall()
        return [(str(k), _chat(str(v))) for k, v in rows]

    def disable(self, configured: str, reason: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE push_chats SET enabled = 0, reason = ?, updated_at = ? WHERE configured = ?",
                [reason[:200], now_iso(), configured],
            )

    def migrate(self, configured: str, new_id: ChatId) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE push_chats SET chat_id = ?, updated_at = ? WHERE configured = ?",
                [str(new_id), now_iso(), configured],
            )

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()


def subscribe(db: sqlite_utils.Database, chat_id: ChatId) -> bool:
    """Pushes go to ``chat_id`` from now on; False if it was already getting them."""
    key = str(chat_id)
    row = db.execute("SELECT enabled FROM push_chats WHERE configured = ?", [key]).fetchone()
    if row is not None and row[0]:
        return False
    db.execute(
        "INSERT INTO push_chats (configured, chat_id, enabled, reason, updated_at, origin) "
        "VALUES (?, ?, 1, NULL, ?, 'subscribe') ON CONFLICT (configured) DO UPDATE SET enabled = 1, "
        "reason = NULL, updated_at = excluded.updated_at",
        [key, key, now_iso()],
    )
    return True


def unsubscribe(db: sqlite_utils.Database, chat_id: ChatId) -> bool:
    """No more pushes to ``chat_id`` (configured or subscribed); False if it got none."""
    cur = db.execute(
        "UPDATE push_chats SET enabled = 0, reason = 'unsubscribed', updated_at = ? "
        "WHERE (configured = ? OR chat_id = ?) AND enabled = 1",
        [now_iso(), str(chat_id), str(chat_id)],
    )
    return cur.rowcount > 0
