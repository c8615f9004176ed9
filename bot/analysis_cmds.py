"""/heatmap, /leadlag and /history (table, then its picture): parse, ask the `BotApi`, reply.

Pictures are rendered in a worker thread (the renderers keep no global state) and sent with
a short caption; bad arguments get the command's usage line, like every other command.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from telegram import Update
from telegram.constants import ChatAction
from telegram.error import Forbidden, TelegramError

from bot import analysis_replies as ar
from bot import replies
from bot.args import Args, parse_args
from bot.format import esc
from bot.handlers import Ctx, Handlers
from bot.notify import send_png
from core.errors import CorrbotError

log = logging.getLogger(__name__)


class AnalysisCommands:
    def __init__(self, h: Handlers) -> None:
        self.h = h

    async def _photo(self, update: Update, context: Ctx, render: Callable[[], bytes], caption: str) -> None:
        chat, msg = update.effective_chat, update.effective_message
        if chat is None:
            return
        with contextlib.suppress(TelegramError):  # only a courtesy
            await context.bot.send_chat_action(chat.id, ChatAction.UPLOAD_PHOTO)
        png = await asyncio.to_thread(render)
        thread = msg.message_thread_id if msg is not None and msg.is_topic_message else None
        try:
            await send_png(context.bot, chat.id, png, caption, thread_id=thread)
        except Forbidden as exc:
            log.warning("cannot answer in chat %s: %s", chat.id, exc.message)

    def _args(self, command: str, context: Ctx) -> Args:
        return parse_args(self.h.cfg, command, context.args or [])

    async def heatmap(self, update: Update, context: Ctx) -> None:
        try:
            a = self._args("heatmap", context)
            h = await self.h.api.heatmap(window=a.window, timeframe=a.timeframe)
        except CorrbotError as exc:
            await self.h.reply(update, context, esc(exc, 300))
            return
        if not any(c.value is not None for c in h.cells):
            await self.h.reply(update, context, f"No correlations stored yet for {esc(h.timeframe)} w{h.window}.")
            return
        from bot.charts_extra import render_heatmap  # matplotlib (~27 MB) only once a chart is drawn

        await self._photo(update, context, lambda: render_heatmap(h), ar.heatmap_caption(h))

    async def leadlag(self, update: Update, context: Ctx) -> None:
        async def work(a: Args) -> str:
            names = [*a.assets, None, None]
            ll = await self.h.api.leadlag(names[0], names[1], period_days=a.period_days, period_label=a.period_label)
            return ar.leadlag_reply(ll)

        await self.h._answer(update, context, "leadlag", work)

    async def history(self, update: Update, context: Ctx) -> None:
        try:
            a = self._args("history", context)
            data = await self.h.api.history_chart(a.assets[0] if a.assets else None)
        except CorrbotError as exc:
            await self.h.reply(update, context, esc(exc, 300))
            return
        await self.h.reply(update, context, replies.history_reply(data.history))
        if data.history.rows:
            from bot.charts_extra import render_history  # matplotlib only once a chart is drawn

            await self._photo(update, context, lambda: render_history(data), ar.history_caption(data.a, data.groups))
