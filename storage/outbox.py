"""The ``outbox`` table: alert messages waiting for delivery, strictly in id order per chat.

Producers (the alert layer) call `enqueue` inside the transaction that changes the alert
state, so a message exists if and only if its cause was committed. `bot.delivery` reads
`due` rows and reports back with `mark_sent` / `mark_retry` / `mark_failed` / `fail_chat`.

Order: a chat's rows go out in id order and its oldest pending row (the head) gates the
rest — while the head waits for its ``next_try``, nothing else of that chat is due, so a
resolve can never overtake its fire. Other chats are independent.

Times: ``next_try`` is UTC epoch seconds (0 = now); ``created_at``/``sent_at`` are ISO text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from core.clock import now_ts
from storage.db import transaction

KINDS = ("fire", "resolve", "reminder", "episode", "notice", "digest")
CALLBACK_DATA_MAX = 64  # Telegram: callback_data is 1-64 bytes
_NAMES = ("id", "chat", "kind", "text", "reply_to", "buttons", "silent", "status", "attempts",
          "next_try", "message_id", "created_at", "sent_at", "error")
_COLUMNS = ", ".join(_NAMES)

Button = tuple[str, str]  # (label, callback_data)


@dataclass(frozen=True)
class OutboxRow:
    id: int
    chat: str  # push_chats.configured
    kind: str
    text: str  # Telegram HTML, any length
    reply_to: int | None  # outbox id of the message to reply to
    buttons: tuple[Button, ...]  # one row of inline buttons; () for none
    silent: bool
    status: str  # pending | sent | failed
    attempts: int
    next_try: float
    message_id: int | None
    created_at: str
    sent_at: str | None
    error: str | None


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _row(r: Any) -> OutboxRow:
    return OutboxRow(
        id=int(r[0]), chat=str(r[1]), kind=str(r[2]), text=str(r[3]),
        reply_to=None if r[4] is None else int(r[4]),
        buttons=tuple((str(b[0]), str(b[1])) for b in json.loads(r[5])) if r[5] else (),
        silent=bool(r[6]), status=str(r[7]), attempts=int(r[8]), next_try=float(r[9]),
        message_id=None if r[10] is None else int(r[10]),
        created_at=str(r[11]), sent_at=None if r[12] is None else str(r[12]),
        error=None if r[13] is None else str(r[13]),
    )


def _buttons_json(buttons: Iterable[Sequence[str]] | None) -> str | None:
    """Validate here so a bad button fails the producer's transaction, not a send hours later."""
    pairs = [tuple(b) for b in buttons or ()]
    for b in pairs:
        if len(b) != 2 or not all(isinstance(x, str) and x for x in b):
            raise ValueError(f"a button is (label, callback_data), both non-empty text: {b!r}")
        if len(b[1].encode()) > CALLBACK_DATA_MAX:
            raise ValueError(f"callback_data over {CALLBACK_DATA_MAX} bytes: {b[1]!r}")
    return json.dumps([list(b) for b in pairs], ensure_ascii=False) if pairs else None


def enqueue(
    db: sqlite_utils.Database,
    chat: str | int,
    kind: str,
    text: str,
    *,
    reply_to: int | None = None,
    buttons: Iterable[Sequence[str]] | None = None,
    silent: bool = False,
    episodes: Iterable[int] = (),
    now: float | None = None,
) -> int:
    """Queue one message for ``chat`` (a ``push_chats.configured`` key); returns its id.

    Joins the caller's open transaction if there is one (so the message commits or rolls
    back with the alert state change), otherwise runs in its own. Due at once: a new row
    never waits, though it stays behind any older pending row of the same chat.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown outbox kind {kind!r} (one of {', '.join(KINDS)})")
    if not text.strip():
        raise ValueError("outbox text is empty")
    markup = _buttons_json(buttons)
    created = _iso(now_ts() if now is None else now)
    with transaction(db) as conn:
        if reply_to is not None:
            target = conn.execute("SELECT chat FROM outbox WHERE id = ?", [reply_to]).fetchone()
            if target is None or target[0] != str(chat):
                raise ValueError(f"reply_to {reply_to} is not an outbox row of chat {chat}")
        cur = conn.execute(
            "INSERT INTO outbox (chat, kind, text, reply_to, buttons, silent, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [str(chat), kind, text, reply_to, markup, int(silent), created],
        )
        oid = int(cur.lastrowid or 0)
        conn.executemany(
            "INSERT OR IGNORE INTO outbox_episodes (outbox_id, episode_id) VALUES (?, ?)",
            [(oid, int(e)) for e in episodes],
        )
    return oid


def due(db: sqlite_utils.Database, now: float) -> list[OutboxRow]:
    """Pending rows, per chat in id order, of the chats whose oldest pending row is due.

    Chats come oldest head first, so a long backlog in one chat does not starve the others.
    """
    rows = db.execute(
        "WITH heads AS (SELECT chat, MIN(id) AS head FROM outbox WHERE status = 'pending' GROUP BY chat) "
        f"SELECT {', '.join('o.' + c for c in _NAMES)} FROM outbox o "
        "JOIN heads h ON h.chat = o.chat JOIN outbox hr ON hr.id = h.head "
        "WHERE o.status = 'pending' AND hr.next_try <= ? ORDER BY h.head, o.id",
        [now],
    ).fetchall()
    return [_row(r) for r in rows]


def next_due(db: sqlite_utils.Database) -> float | None:
    """When the earliest waiting chat head becomes due (None: nothing pending)."""
    row = db.execute(
        "SELECT MIN(o.next_try) FROM outbox o JOIN (SELECT MIN(id) AS head FROM outbox "
        "WHERE status = 'pending' GROUP BY chat) h ON h.head = o.id"
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def mark_sent(db: sqlite_utils.Database, id: int, message_id: int | None, now: float) -> None:
    """Telegram accepted the row; ``message_id`` is its (first) message, None on the console."""
    db.execute(
        "UPDATE outbox SET status = 'sent', message_id = ?, sent_at = ?, error = NULL WHERE id = ?",
        [message_id, _iso(now), id],
    )


def mark_retry(db: sqlite_utils.Database, id: int, next_try: float, error: str, *, count: bool = True) -> None:
    """Keep the row pending until ``next_try``. ``count=False`` for waits Telegram imposed
    (429), which say nothing about the row and must not grow its backoff."""
    db.execute(
        "UPDATE outbox SET attempts = attempts + ?, next_try = ?, error = ? WHERE id = ? AND status = 'pending'",
        [int(count), next_try, error[:500], id],
    )


def mark_failed(db: sqlite_utils.Database, id: int, error: str) -> None:
    db.execute(
        "UPDATE outbox SET status = 'failed', attempts = attempts + 1, error = ? WHERE id = ? AND status = 'pending'",
        [error[:500], id],
    )


def fail_chat(db: sqlite_utils.Database, chat: str | int, error: str) -> int:
    """Fail every pending row of ``chat`` (kicked, disabled); returns how many."""
    cur = db.execute(
        "UPDATE outbox SET status = 'failed', error = ? WHERE chat = ? AND status = 'pending'",
        [error[:500], str(chat)],
    )
    return int(cur.rowcount)


def message_id_of(db: sqlite_utils.Database, outbox_id: int) -> int | None:
    """The Telegram message id a sent row got (None if not sent, failed, or console)."""
    row = db.execute(
        "SELECT message_id FROM outbox WHERE id = ? AND status = 'sent'", [outbox_id]
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def get(db: sqlite_utils.Database, outbox_id: int) -> OutboxRow | None:
    row = db.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ?", [outbox_id]).fetchone()
    return None if row is None else _row(row)


def backlog(db: sqlite_utils.Database) -> dict[str, int]:
    """Pending rows per chat (for /status)."""
    rows = db.execute(
        "SELECT chat, COUNT(*) FROM outbox WHERE status = 'pending' GROUP BY chat ORDER BY chat"
    ).fetchall()
    return {str(c): int(n) for c, n in rows}


def failed_rows(db: sqlite_utils.Database, limit: int = 20) -> list[OutboxRow]:
    """The most recent failed rows, newest first (for /status)."""
    rows = db.execute(
        f"SELECT {_COLUMNS} FROM outbox WHERE status = 'failed' ORDER BY id DESC LIMIT ?", [limit]
    ).fetchall()
    return [_row(r) for r in rows]
