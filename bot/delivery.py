"""Delivering the outbox: due rows to Telegram, strictly in id order per chat, chats in parallel.

What each Telegram error does to the row being sent (`storage.outbox` keeps the state):

- `RetryAfter` (429): stays pending until now + retry_after; the chat stops for this round.
  Nothing sleeps here — the next round that finds it due sends it.
- `NetworkError`, `TimedOut`, 5xx, anything unknown: stays pending with exponential backoff
  (base·2^attempts, capped); never dropped, however long Telegram is away.
- `BadRequest`: our payload is wrong. Logged once with the payload, resent once as plain
  text without parse_mode; rejected again -> failed (/status shows it), the chat goes on.
- `Forbidden` (kicked/blocked): the chat is disabled in ``push_chats`` and all its pending
  rows fail; later rows for it fail without a send, across restarts.
- `ChatMigrated`: ``push_chats`` follows the new id and the message is resent at once.

Delivery is at least once, keyed by the outbox id: a row is marked sent right after Telegram
accepts it, so a crash (kill -9) or a cancel while a request is in flight can repeat at most
that one message per chat being served. A text over 4096 is sent as several messages and
marked sent after the last; a failure between them resends the earlier ones on the retry —
rare (a long digest during an outage) and a duplicate is better than a half message.

The ``bot`` should have a rate limiter that does not retry 429 itself (``AIORateLimiter()``
with the default max_retries=0), else that waiting happens inside `run_once`; and an HTTP
pool of at least ``concurrency`` connections, else requests queue for one (and may time out,
which is retried, not lost).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import warnings
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TextIO, TypeVar

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, LinkPreviewOptions, Message, ReplyParameters
from telegram.constants import ParseMode
from telegram.error import BadRequest, ChatMigrated, Forbidden, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from bot.format import split_message, strip_html
from core.clock import Clock, now_ts
from storage import outbox
from storage.db import open_db
from storage.outbox import OutboxRow
from storage.push_chats import ChatId, PushChats

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]

CONCURRENCY = 16  # chats served at once; Telegram's 30 msg/s is the real limit anyway
BACKOFF_BASE = 2.0
BACKOFF_MAX = 300.0
_NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0  # rows Telegram accepted this round
    retried: int = 0  # rows left pending for a later round (429, network, 5xx)
    failed: int = 0  # rows given up on (rejected twice, chat kicked or disabled)
    pending: int = 0  # rows pending in all chats after the round


@dataclass
class _Tally:
    sent: int = 0
    retried: int = 0
    failed: int = 0


@dataclass
class _Chat:
    key: str  # push_chats.configured (= outbox.chat)
    chat_id: ChatId  # where it is now; follows a migration


def _retry_seconds(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the int will become a timedelta
        warnings.simplefilter("ignore", PTBDeprecationWarning)
        wait = exc.retry_after
    return wait.total_seconds() if isinstance(wait, timedelta) else float(wait)


class _Rounds:
    """The outbox connection (SQL in a worker thread, one statement at a time) and rounds."""

    def __init__(self, db_path: Path | str, clock: Clock, sleep: Sleep) -> None:
        self._db = open_db(db_path)
        self._lock = threading.Lock()  # one connection shared by the worker threads
        self.clock, self.sleep = clock, sleep
        self._round = asyncio.Lock()  # one round at a time: two at once would send a row twice
        # Sends that outlived a cancelled round (see `Delivery._deliver`); a round waits for
        # them to record their outcome before it picks rows, so none is picked while in flight.
        self._inflight: set[asyncio.Task[bool]] = set()

    async def _sql(self, fn: Callable[Concatenate[Any, P], T], *args: P.args, **kwargs: P.kwargs) -> T:
        def locked() -> T:
            with self._lock:
                return fn(self._db, *args, **kwargs)

        return await asyncio.to_thread(locked)

    async def run_once(self) -> DeliveryReport:
        raise NotImplementedError

    async def round(self) -> DeliveryReport:
        """`run_once`, serialised: the retry job and the poll cycle (/poll too) may both ask."""
        async with self._round:
            if self._inflight:
                await asyncio.wait(set(self._inflight))
            return await self.run_once()

    def close(self) -> None:
        with self._lock:
            self._db.conn.close()


class Delivery(_Rounds):
    """Sends due outbox rows with the real PTB ``bot`` to the chats in ``push_chats``."""

    def __init__(
        self,
        bot: Bot,
        db_path: Path | str,
        chats: PushChats,
        thread_id: int | None = None,
        *,
        clock: Clock = now_ts,
        sleep: Sleep = asyncio.sleep,
        backoff_base: float = BACKOFF_BASE,
        backoff_max: float = BACKOFF_MAX,
        concurrency: int = CONCURRENCY,
    ) -> None:
        super().__init__(db_path, clock, sleep)
        self.bot, self.chats, self.thread_id = bot, chats, thread_id
        self.backoff_base, self.backoff_max, self.concurrency = backoff_base, backoff_max, concurrency

    def backoff(self, attempts: int) -> float:
        """The wait after a failed try when ``attempts`` tries had failed before it."""
        return min(self.backoff_max, self.backoff_base * 2.0 ** min(attempts, 32))

    async def run_once(self) -> DeliveryReport:
        rows = await self._sql(outbox.due, self.clock())
        by_chat: dict[str, list[OutboxRow]] = {}
        for row in rows:
            by_chat.setdefault(row.chat, []).append(row)
        queue = deque(by_chat.items())
        tally = _Tally()

        async def worker() -> None:
            while queue:
                chat, chat_rows = queue.popleft()
                await self._serve(chat, chat_rows, tally)

        # Workers catch every Exception per row, so a sibling is only cancelled on shutdown.
        async with asyncio.TaskGroup() as group:
            for _ in range(min(self.concurrency, len(queue))):
                group.create_task(worker())
        pending = sum((await self._sql(outbox.backlog)).values())
        return DeliveryReport(tally.sent, tally.retried, tally.failed, pending)

    async def _serve(self, key: str, rows: list[OutboxRow], tally: _Tally) -> None:
        active = await asyncio.to_thread(self.chats.active, [key])
        if not active:
            failed = await self._sql(outbox.fail_chat, key, "chat disabled")
            tally.failed += failed  # not `+= await`: that reads the tally before the await
            log.warning("chat %s is disabled or unknown: its queued messages failed", key)
            return
        chat = _Chat(key, active[0][1])
        for row in rows:
            if not await self._deliver(row, chat, tally):
                return

    async def _deliver(self, row: OutboxRow, chat: _Chat, tally: _Tally) -> bool:
        """Send one row and record the outcome; False when the chat must wait for a later round.

        Shielded: a stop (SIGTERM) that cancels the round while Telegram may already have taken
        the message would leave the row pending, and the stop's final round would send it again.
        The send finishes (within PTB's HTTP timeouts) and records what happened; the final
        round, itself bounded, waits for it. Only kill -9 at that moment can still duplicate it.
        """
        task = asyncio.ensure_future(self._deliver_now(row, chat, tally))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(task)

    async def _deliver_now(self, row: OutboxRow, chat: _Chat, tally: _Tally) -> bool:
        try:
            message_id = await self._send(row, chat)
        except RetryAfter as exc:
            wait = _retry_seconds(exc)
            log.warning("outbox %d to chat %s: flood control, due again in %gs", row.id, chat.key, wait)
            await self._sql(outbox.mark_retry, row.id, self.clock() + wait, f"429: retry after {wait:g}s", count=False)
            tally.retried += 1
            return False
        except Forbidden as exc:
            log.warning("chat %s disabled, its queued messages failed: %s", chat.key, exc.message)
            await asyncio.to_thread(self.chats.disable, chat.key, exc.message)
            failed = await self._sql(outbox.fail_chat, chat.key, exc.message)
            tally.failed += failed
            return False
        except BadRequest as exc:  # the plain-text resend was rejected as well
            log.error("outbox %d to chat %s failed: %s", row.id, chat.key, exc.message)
            await self._sql(outbox.mark_failed, row.id, f"bad request: {exc.message}")
            tally.failed += 1
            return True
        except Exception as exc:  # network, timeout, 5xx — or a surprise: keep the row, back off
            wait = self.backoff(row.attempts)
            unknown = not isinstance(exc, TelegramError)
            log.log(logging.ERROR if unknown else logging.WARNING, "outbox %d to chat %s: %s; retry in %gs",
                    row.id, chat.key, exc, wait, exc_info=unknown)
            await self._sql(outbox.mark_retry, row.id, self.clock() + wait, f"{type(exc).__name__}: {exc}")
            tally.retried += 1
            return False
        await self._sql(outbox.mark_sent, row.id, message_id, self.clock())
        tally.sent += 1
        return True

    async def _send(self, row: OutboxRow, chat: _Chat) -> int:
        """All chunks of ``row``; the message id of the first. Raises what Telegram raised."""
        reply = None if row.reply_to is None else await self._sql(outbox.message_id_of, row.reply_to)
        first: int | None = None
        plain = keep_buttons = False
        for chunk in split_message(row.text):
            if not plain:
                try:
                    msg = await self._post(row, chat, chunk, html=True, lead=first is None, reply=reply)
                except BadRequest as exc:
                    log.error("Telegram rejected outbox %d (%s); payload: %r, buttons: %r",
                              row.id, exc.message, chunk, row.buttons)
                    plain = True
                    # a rejected button would sink the resend too; a parse error would not
                    keep_buttons = not any(w in exc.message.lower() for w in ("button", "markup"))
            if plain:
                text = strip_html(chunk)
                if not text.strip():
                    continue
                msg = await self._post(row, chat, text, html=False, lead=first is None, reply=reply,
                                       buttons=keep_buttons)
            if first is None:
                first = msg.message_id
        if first is None:
            raise BadRequest("message text is empty once the HTML is stripped")
        return first

    async def _post(
        self, row: OutboxRow, chat: _Chat, text: str, *, html: bool, lead: bool, reply: int | None,
        buttons: bool = True,
    ) -> Message:
        """One sendMessage; reply and buttons only on the lead chunk. Follows a migration."""
        markup = None
        if lead and buttons and row.buttons:
            markup = InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data)
                                            for label, data in row.buttons]])
        reply_parameters = None
        if lead and reply is not None:
            reply_parameters = ReplyParameters(reply, allow_sending_without_reply=True)
        for hop in range(3):  # a chat migrates once; the bound only guards against a loop
            try:
                return await self.bot.send_message(
                    chat.chat_id, text, parse_mode=ParseMode.HTML if html else None,
                    message_thread_id=self.thread_id, link_preview_options=_NO_PREVIEW,
                    disable_notification=row.silent, reply_parameters=reply_parameters,
                    reply_markup=markup,
                )
            except ChatMigrated as exc:
                if hop == 2:
                    raise
                log.warning("chat %s migrated to %s; following", chat.chat_id, exc.new_chat_id)
                chat.chat_id = exc.new_chat_id
                await asyncio.to_thread(self.chats.migrate, chat.key, exc.new_chat_id)
        raise AssertionError("unreachable")


class ConsoleDelivery(_Rounds):
    """Without a token: each due row is printed as plain text (``[time] chat: text``) and marked
    sent, so the outbox drains and the service is still usable."""

    def __init__(self, db_path: Path | str, stream: TextIO | None = None, *, clock: Clock = now_ts,
                 sleep: Sleep = asyncio.sleep) -> None:
        super().__init__(db_path, clock, sleep)
        self.stream = stream

    async def run_once(self) -> DeliveryReport:
        sent = 0
        for row in await self._sql(outbox.due, self.clock()):
            now = self.clock()
            stamp = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
            print(f"[{stamp}] {row.chat}: {strip_html(row.text)}", file=self.stream or sys.stdout, flush=True)
            await self._sql(outbox.mark_sent, row.id, None, now)
            sent += 1
        pending = sum((await self._sql(outbox.backlog)).values())
        return DeliveryReport(sent=sent, pending=pending)
