"""The alert commands and the alert buttons: parse, ask the `BotApi`, format, reply.

Buttons carry ``c:<episode>`` (chart) or ``m:<episode>:<1h|24h>`` (mute); the episode is
stored, so a button still works after a restart. Only allowed users may press them, and
every callback query is answered (Telegram shows a spinner until it is).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable

from telegram import Update
from telegram.error import TelegramError

from bot import alert_replies
from bot.access import ADMIN_ONLY, REFUSAL
from bot.args import UsageError, parse_period, usage
from bot.format import esc
from bot.handlers import Ctx, Handlers
from bot.notify import send_png
from bot.replies import chart_caption
from core.errors import CorrbotError
from core.rules import parse_duration

log = logging.getLogger(__name__)
# Exactly what we put on buttons: ASCII digits (\d takes any script's), a mute's duration,
# nothing after it (``$`` would allow a trailing newline).
_BUTTON = re.compile(r"c:([0-9]{1,12})|m:([0-9]{1,12}):(1h|24h)")


def _who(update: Update) -> str | None:
    return str(update.effective_user.id) if update.effective_user else None


class AlertCommands:
    """Handlers for /alerts /rules /mute /unmute /subscribe /unsubscribe /set /backtest."""

    def __init__(self, h: Handlers) -> None:
        self.h = h

    async def _run(self, update: Update, context: Ctx, work: Callable[[], Awaitable[str]]) -> None:
        try:
            text = await work()
        except CorrbotError as exc:
            text = esc(exc, 300)
        await self.h.reply(update, context, text)

    async def alerts(self, update: Update, context: Ctx) -> None:
        async def work() -> str:
            args = context.args or []
            if len(args) > 1 or (args and not re.fullmatch(r"\d{1,2}", args[0])) or (args and int(args[0]) < 1):
                raise UsageError(usage("alerts"))
            return alert_replies.alerts_reply(await self.h.api.alerts(int(args[0]) if args else 10))

        await self._run(update, context, work)

    async def rules(self, update: Update, context: Ctx) -> None:
        async def work() -> str:
            if context.args:
                raise UsageError(usage("rules"))
            return alert_replies.rules_reply(await self.h.api.rules())

        await self._run(update, context, work)

    async def mute(self, update: Update, context: Ctx) -> None:
        async def work() -> str:
            args = context.args or []
            if not args:
                return alert_replies.mutes_reply(await self.h.api.mutes())
            if len(args) > 2 or any(len(a) > 40 for a in args):
                raise UsageError(usage("mute"))
            try:
                seconds = parse_duration(args[0])
            except ValueError:
                raise UsageError(usage("mute")) from None
            m = await self.h.api.mute(seconds, args[1] if len(args) > 1 else None, _who(update))
            return alert_replies.muted_reply(m)

        await self._run(update, context, work)

    async def unmute(self, update: Update, context: Ctx) -> None:
        async def work() -> str:
            args = context.args or []
            if len(args) != 1 or not (args[0].lower() == "all" or re.fullmatch(r"#?\d{1,9}", args[0])):
                raise UsageError(usage("unmute"))
            ids = None if args[0].lower() == "all" else [int(args[0].lstrip("#"))]
            n = await self.h.api.unmute(ids)
            return f"🔔 Lifted {n} mute{'s' * (n != 1)}." if n else "No such active mute (see /mute)."

        await self._run(update, context, work)

    def _may_change_pushes(self, update: Update) -> bool:
        chat = update.effective_chat
        return chat is not None and (chat.type == "private" or self.h.access.is_admin(update))

    async def subscribe(self, update: Update, context: Ctx) -> None:
        await self._pushes(update, context, "subscribe")

    async def unsubscribe(self, update: Update, context: Ctx) -> None:
        await self._pushes(update, context, "unsubscribe")

    async def _pushes(self, update: Update, context: Ctx, command: str) -> None:
        async def work() -> str:
            chat = update.effective_chat
            if context.args or chat is None:
                raise UsageError(usage(command))
            if not self._may_change_pushes(update):
                return ADMIN_ONLY
            if command == "subscribe":
                new = await self.h.api.subscribe(chat.id)
                return "🔔 This chat will get alert pushes." if new else "This chat already gets alert pushes."
            gone = await self.h.api.unsubscribe(chat.id)
            return "🔕 No more alert pushes to this chat." if gone else "This chat gets no alert pushes."

        await self._run(update, context, work)

    async def set(self, update: Update, context: Ctx) -> None:
        if not self.h.access.is_admin(update):
            self.h.access.log_refusal(update, "admin only")
            await self.h.reply(update, context, ADMIN_ONLY)
            return

        async def work() -> str:
            args = context.args or []
            if any(len(a) > 40 for a in args):
                raise UsageError(usage("set"))
            if len(args) == 2 and args[1].lower() == "reset":
                r = await self.h.api.reset_rule(args[0])
                return f"{esc(r.name)} is back to its configured settings.\n" + alert_replies.rules_reply([r])
            if len(args) != 3:
                raise UsageError(usage("set"))
            r = await self.h.api.set_rule(args[0], args[1].lower(), args[2], _who(update))
            return f"✔ {esc(r.name)}: {esc(args[1].lower())} = {esc(args[2])}\n" + alert_replies.rules_reply([r])

        await self._run(update, context, work)

    async def backtest(self, update: Update, context: Ctx) -> None:
        async def work() -> str:
            args = context.args or []
            rule: str | None = None
            period: tuple[int | None, str] = (365, "1y")
            if len(args) > 2 or any(len(a) > 40 for a in args):
                raise UsageError(usage("backtest"))
            for tok in args:
                p = parse_period("backtest", tok)
                if p is not None:
                    period = p
                elif rule is None:
                    rule = tok
                else:
                    raise UsageError(usage("backtest"))
            return alert_replies.backtest_reply(await self.h.api.backtest(rule, period[0], period[1]))

        await self._run(update, context, work)

    # ---- buttons ----------------------------------------------------------------------------

    async def button(self, update: Update, context: Ctx) -> None:
        query = update.callback_query
        if query is None:
            return
        if not self.h.access.allowed(update):
            self.h.access.log_refusal(update, "button, not allowed")
            await _answer(query.answer(REFUSAL, show_alert=True))
            return
        m = _BUTTON.fullmatch(query.data or "")
        if m is None:
            await _answer(query.answer("That button is not ours."))
            return
        eid = int(m.group(1) or m.group(2))
        try:
            if m.group(2):
                seconds = 3600 if m.group(3) == "1h" else 86400
                mute = await self.h.api.mute_episode(eid, seconds, _who(update))
                what = " ".join(x for x in (mute.rule, mute.target) if x)
                await _answer(query.answer(f"Muted {what} for {m.group(3)}"[:200]))
                return
            # A query is answered once (a second answer is refused): the data first, so that a
            # missing alert gets its reason rather than "Drawing…" and then nothing.
            data = await self.h.api.episode_chart(eid)
        except CorrbotError as exc:
            await _answer(query.answer(str(exc)[:200]))
            return
        chat = update.effective_chat
        if chat is None or data.corr.empty:
            await _answer(query.answer("No data to chart for that alert."))
            return
        await _answer(query.answer("Drawing the chart…"))
        from bot.charts import render_chart  # matplotlib (~27 MB) only once a chart is drawn

        png = await asyncio.to_thread(render_chart, data)
        values = data.corr["value"].dropna()
        cap = chart_caption(data.a, data.b, data.timeframe, data.window, "1y",
                            float(values.iloc[-1]) if len(values) else None, data.asof or None, data.levels)
        await send_png(context.bot, chat.id, png, cap)


async def _answer(call: Awaitable[bool]) -> None:
    try:
        await call
    except TelegramError as exc:  # an expired query (over 15 min) cannot be answered: log, go on
        log.warning("could not answer a button press: %s", exc)
