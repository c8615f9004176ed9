"""Sending: replies and pushes with Telegram's errors handled by kind, and the notifiers.

- `RetryAfter` (429): the Application's AIORateLimiter waits what Telegram asks and retries.
- network errors, timeouts, 5xx: retried here with exponential backoff, then raised.
- `BadRequest`: our formatting is wrong; logged with the payload and sent once more as
  plain text so the user still gets an answer — never retried as is.
- `Forbidden` (bot removed from a chat): pushes to that chat are disabled (persisted).
- `ChatMigrated` (group became a supergroup): the stored chat id is updated and resent.

Push destinations live in the ``push_chats`` table of the corrbot database (created here),
keyed by the id from the config so a migration or a kick survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
import sys
import threading
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, TextIO

from telegram import Bot, LinkPreviewOptions, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError

from bot.format import CAPTION_LIMIT, caption, split_message, strip_html

log = logging.getLogger(__name__)

ChatId = int | str
ATTEMPTS = 4
BACKOFF_SECONDS = 0.5
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


async def _retrying(
    what: str, attempts: int, backoff: float, call: Callable[[], Awaitable[Message]]
) -> Message:
    """Run ``call()``, retrying network errors (not BadRequest) with exponential backoff."""
    for attempt in range(attempts):
        try:
            return await call()
        except (BadRequest, Forbidden, ChatMigrated):
            raise
        except NetworkError as exc:  # includes TimedOut and HTTP 5xx
            if attempt == attempts - 1:
                raise
            delay = backoff * 2**attempt
            log.warning("%s failed (%s); retry %d in %.1fs", what, exc, attempt + 1, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


async def send_html(
    bot: Bot,
    chat_id: ChatId,
    text: str,
    *,
    thread_id: int | None = None,
    attempts: int = ATTEMPTS,
    backoff: float = BACKOFF_SECONDS,
) -> list[Message]:
    """Send ``text`` (Telegram HTML) split under 4096; see the module doc for errors."""
    sent = []
    for chunk in split_message(text):

        async def html_call(chunk: str = chunk) -> Message:
            return await bot.send_message(
                chat_id, chunk, parse_mode=ParseMode.HTML, message_thread_id=thread_id,
                link_preview_options=_NO_PREVIEW,
            )

        async def plain_call(chunk: str = chunk) -> Message:
            return await bot.send_message(
                chat_id, strip_html(chunk)[:4096], message_thread_id=thread_id,
                link_preview_options=_NO_PREVIEW,
            )

        try:
            sent.append(await _retrying("sendMessage", attempts, backoff, html_call))
        except BadRequest as exc:
            log.error("Telegram rejected our message (%s); payload: %r", exc, chunk)
            sent.append(await _retrying("sendMessage", attempts, backoff, plain_call))
    return sent


async def send_png(
    bot: Bot,
    chat_id: ChatId,
    png: bytes,
    caption_html: str,
    *,
    thread_id: int | None = None,
    attempts: int = ATTEMPTS,
    backoff: float = BACKOFF_SECONDS,
) -> Message:
    cap = caption(caption_html, CAPTION_LIMIT)

    async def call() -> Message:
        return await bot.send_photo(
            chat_id, png, caption=cap, parse_mode=ParseMode.HTML, message_thread_id=thread_id
        )

    async def plain_call() -> Message:
        return await bot.send_photo(
            chat_id, png, caption=strip_html(cap)[:CAPTION_LIMIT], message_thread_id=thread_id
        )

    try:
        return await _retrying("sendPhoto", attempts, backoff, call)
    except BadRequest as exc:
        log.error("Telegram rejected our photo (%s); caption: %r", exc, cap)
        return await _retrying("sendPhoto", attempts, backoff, plain_call)


class Notifier(Protocol):
    async def push(self, text_html: str) -> int:
        """Deliver a push; returns how many destinations got it."""
        ...


class ConsoleNotifier:
    """Without a token: pushes are printed (plain text) so the service is still usable."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    async def push(self, text_html: str) -> int:
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        print(f"[{stamp}] {strip_html(text_html)}", file=self.stream or sys.stdout, flush=True)
        return 1


def _chat(value: str) -> ChatId:
    return int(value) if re.fullmatch(r"-?\d+", value) else value


class PushChats:
    """The ``push_chats`` table: configured id -> current id, enabled or not (and why)."""

    def __init__(self, db_path: Path | str) -> None:
        self._conn = sqlite3.connect(
            str(db_path), timeout=30.0, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS push_chats (configured TEXT PRIMARY KEY, "
                "chat_id TEXT NOT NULL, enabled INTEGER NOT NULL DEFAULT 1, "
                "reason TEXT, updated_at TEXT)"
            )

    def seed(self, configured: list[int | str]) -> None:
        with self._lock:
            for c in configured:
                self._conn.execute(
                    "INSERT OR IGNORE INTO push_chats (configured, chat_id, updated_at) "
                    "VALUES (?, ?, ?)", [str(c), str(c), _now()],
                )

    def active(self, configured: list[int | str]) -> list[tuple[str, ChatId]]:
        keys = [str(c) for c in configured]
        with self._lock:
            rows = self._conn.execute(
                "SELECT configured, chat_id FROM push_chats WHERE enabled = 1"
            ).fetchall()
        current = {k: v for k, v in rows}
        return [(k, _chat(current[k])) for k in keys if k in current]

    def all(self) -> list[tuple[str, str, bool, str | None]]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT configured, chat_id, enabled, reason FROM push_chats ORDER BY configured"
            ).fetchall()
        return [(a, b, bool(c), d) for a, b, c, d in rows]

    def disable(self, configured: str, reason: str) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE push_chats SET enabled = 0, reason = ?, updated_at = ? "
                "WHERE configured = ?", [reason[:200], _now(), configured],
            )

    def migrate(self, configured: str, new_id: ChatId) -> None:
        with self._lock:
            self._conn.execute(
                "UPDATE push_chats SET chat_id = ?, updated_at = ? WHERE configured = ?",
                [str(new_id), _now(), configured],
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class TelegramNotifier:
    """Pushes to ``telegram.alert_chat_ids`` (optionally into forum topic alert_thread_id)."""

    def __init__(
        self,
        bot: Bot,
        chats: PushChats,
        configured: list[int | str],
        thread_id: int | None = None,
        *,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.bot, self.chats, self.configured = bot, chats, list(configured)
        self.thread_id, self.backoff = thread_id, backoff
        chats.seed(self.configured)

    async def push(self, text_html: str) -> int:
        delivered = 0
        targets = await asyncio.to_thread(self.chats.active, self.configured)
        for key, chat_id in targets:
            for _ in range(2):  # a second pass only after a ChatMigrated
                try:
                    await send_html(
                        self.bot, chat_id, text_html, thread_id=self.thread_id,
                        backoff=self.backoff,
                    )
                    delivered += 1
                except ChatMigrated as exc:
                    log.warning("chat %s migrated to %s; updating", chat_id, exc.new_chat_id)
                    chat_id = exc.new_chat_id
                    await asyncio.to_thread(self.chats.migrate, key, chat_id)
                    continue
                except Forbidden as exc:
                    log.warning("pushes to chat %s disabled: %s", chat_id, exc.message)
                    await asyncio.to_thread(self.chats.disable, key, exc.message)
                except NetworkError as exc:  # BadRequest too: already logged with payload
                    log.error("push to chat %s failed: %s", chat_id, exc)
                break
        return delivered
