"""Sending: replies and pushes with Telegram's errors handled by kind, and the notifiers.

- `RetryAfter` (429): the Application's AIORateLimiter waits what Telegram asks and retries.
- network errors, timeouts, 5xx: retried here with exponential backoff, then raised.
- `BadRequest`: our formatting is wrong; logged with the payload and sent once more as
  plain text so the user still gets an answer — never retried as is.
- `Forbidden` (bot removed from a chat): pushes to that chat are disabled (persisted).
- `ChatMigrated` (group became a supergroup): the stored chat id is updated and resent.

Push destinations live in the ``push_chats`` table (`storage.push_chats`), keyed by the id
from the config so a migration or a kick survives restarts.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol, TextIO

from telegram import Bot, LinkPreviewOptions, Message
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, NetworkError

from bot.format import CAPTION_LIMIT, caption, split_message, strip_html
from core.retry import retry_async
from storage.push_chats import ChatId, PushChats

log = logging.getLogger(__name__)

ATTEMPTS = 4
BACKOFF_SECONDS = 0.5
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


async def _retrying(
    what: str, attempts: int, backoff: float, call: Callable[[], Awaitable[Message]]
) -> Message:
    """Run ``call()``, retrying network errors (not BadRequest) with exponential backoff."""
    return await retry_async(
        call, retries=attempts - 1, backoff=backoff, retry_on=(NetworkError,),
        give_up_on=(BadRequest, Forbidden, ChatMigrated), what=what,
    )


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
