"""Command handlers: parse the arguments, ask the `BotApi`, format, send. Nothing more.

Every user error becomes a one-line reply; anything unexpected goes to the Application's
error handler (bot/app.py), which answers the user and tells the admins.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.constants import ChatAction
from telegram.error import ChatMigrated, Forbidden, TelegramError
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot import replies
from bot.access import ADMIN_ONLY, REFUSAL, Access
from bot.api import BotApi
from bot.args import Args, parse_args
from bot.format import esc
from bot.notify import send_html, send_png
from core.config import Config
from core.errors import CorrbotError

log = logging.getLogger(__name__)
Ctx = ContextTypes.DEFAULT_TYPE


def _two(a: Args) -> tuple[str | None, str | None]:
    names: list[str | None] = [*a.assets, None, None]
    return names[0], names[1]


def _command(update: Update) -> str:
    """The command as Telegram marked it (the bot_command entity, e.g. ``corr@mybot``), read the
    way CommandHandler reads it; not the first word, which may run on (``/help@mybot!``)."""
    msg = update.effective_message
    if msg is None or not msg.text or not msg.entities or msg.entities[0].offset != 0:
        return ""
    return msg.text[1 : msg.entities[0].length]


def _addressed_elsewhere(update: Update, bot_username: str) -> bool:
    """``/corr@otherbot`` in a group is not for us: stay silent."""
    parts = _command(update).split("@")
    return len(parts) > 1 and parts[1].lower() != bot_username.lower()


class Handlers:
    def __init__(self, cfg: Config, api: BotApi, access: Access) -> None:
        self.cfg, self.api, self.access = cfg, api, access
        self.started = time.monotonic()

    # ---- plumbing ------------------------------------------------------------------------

    async def reply(self, update: Update, context: Ctx, text: str) -> None:
        chat = update.effective_chat
        if chat is None:
            return
        msg = update.effective_message
        thread = msg.message_thread_id if msg is not None and msg.is_topic_message else None
        try:
            await send_html(context.bot, chat.id, text, thread_id=thread)
        except ChatMigrated as exc:
            await send_html(context.bot, exc.new_chat_id, text)
        except Forbidden as exc:
            log.warning("cannot answer in chat %s: %s", chat.id, exc.message)

    async def gate(self, update: Update, context: Ctx) -> None:
        """Group -1: refuse strangers once per command, before any handler sees the update."""
        if _addressed_elsewhere(update, context.bot.username):
            raise ApplicationHandlerStop
        if not self.access.allowed(update):
            self.access.log_refusal(update, "not allowed")
            await self.reply(update, context, REFUSAL)
            raise ApplicationHandlerStop

    async def _answer(
        self, update: Update, context: Ctx, command: str, work: Callable[[Args], Awaitable[str]]
    ) -> None:
        try:
            args = parse_args(self.cfg, command, context.args or [])
            text = await work(args)
        except CorrbotError as exc:  # UsageError and every other user-facing error
            text = esc(exc, 300)
        await self.reply(update, context, text)

    # ---- commands ------------------------------------------------------------------------

    async def corr(self, update: Update, context: Ctx) -> None:
        async def work(a: Args) -> str:
            first, second = _two(a)
            view = await self.api.corr(first, second, window=a.window, timeframe=a.timeframe)
            return replies.corr_reply(view.readings, view.freshness)

        await self._answer(update, context, "corr", work)

    async def rank(self, update: Update, context: Ctx) -> None:
        async def work(a: Args) -> str:
            first = a.assets[0] if a.assets else None
            r = await self.api.rank(first, window=a.window, timeframe=a.timeframe)
            return replies.rank_reply(r)

        await self._answer(update, context, "rank", work)

    async def diverge(self, update: Update, context: Ctx) -> None:
        async def work(a: Args) -> str:
            first, second = _two(a)
            d = await self.api.divergence(first, second, timeframe=a.timeframe)
            return replies.diverge_reply(d)

        await self._answer(update, context, "diverge", work)

    async def chart(self, update: Update, context: Ctx) -> None:
        chat = update.effective_chat
        assert chat is not None
        try:
            a = parse_args(self.cfg, "chart", context.args or [])
            first, second = _two(a)
            data = await self.api.chart(
                first, second, window=a.window, timeframe=a.timeframe, period_days=a.period_days
            )
        except CorrbotError as exc:
            await self.reply(update, context, esc(exc, 300))
            return
        if data.corr.empty or data.price_a.empty:
            await self.reply(update, context, f"No data to chart for {esc(data.a)}/{esc(data.b)}.")
            return
        with contextlib.suppress(TelegramError):  # only a courtesy
            await context.bot.send_chat_action(chat.id, ChatAction.UPLOAD_PHOTO)
        from bot.charts import render_chart  # matplotlib (~27 MB) only once a chart is drawn

        png = await asyncio.to_thread(render_chart, data)
        values = data.corr["value"].dropna()
        last = float(values.iloc[-1]) if len(values) else None
        cap = replies.chart_caption(data.a, data.b, data.timeframe, data.window,
                                    a.period_label, last, data.asof or None, data.levels)
        msg = update.effective_message
        thread = msg.message_thread_id if msg is not None and msg.is_topic_message else None
        try:
            await send_png(context.bot, chat.id, png, cap, thread_id=thread)
        except Forbidden as exc:
            log.warning("cannot answer in chat %s: %s", chat.id, exc.message)

    async def status(self, update: Update, context: Ctx) -> None:
        admin = self.access.is_admin(update)

        async def work(_: Args) -> str:
            report = await self.api.status()
            return replies.status_reply(
                report, admin=admin, uptime_s=time.monotonic() - self.started, jobs=self.api.jobs()
            )

        await self._answer(update, context, "status", work)

    async def poll_now(self, update: Update, context: Ctx) -> None:
        if not self.access.is_admin(update):
            self.access.log_refusal(update, "admin only")
            await self.reply(update, context, ADMIN_ONLY)
            return

        async def work(_: Args) -> str:
            done = await self.api.poll()
            return "Polling is not scheduled in this process." if done is None else esc(done, 1000)

        await self._answer(update, context, "poll", work)

    async def help(self, update: Update, context: Ctx) -> None:
        await self.reply(update, context, replies.help_reply(self.cfg))

    async def start(self, update: Update, context: Ctx) -> None:
        # /start may carry a deep-link payload; it is ignored, never echoed.
        await self.reply(update, context, replies.help_reply(self.cfg, intro=True))

    async def unknown(self, update: Update, context: Ctx) -> None:
        # In a group, "/foo" may be another bot's command: answer only "/foo@us" there.
        chat = update.effective_chat
        if chat is not None and chat.type != "private" and "@" not in _command(update):
            return
        await self.reply(update, context, "Unknown command — see /help")
