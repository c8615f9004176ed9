"""Building the python-telegram-bot Application: handlers, rate limiter, menu, error handler.

`build_application(cfg, token)` is the only entry point; `service.runner` starts it with
long polling. ``cfg.telegram.base_url`` points it at api.telegram.org, a self-hosted Bot
API server, or the tests' loopback server.
"""

from __future__ import annotations

import html
import logging
import time

from telegram import BotCommand, Update
from telegram.constants import FloodLimit
from telegram.error import BadRequest, InvalidToken, NetworkError, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    filters,
)
from telegram.request import BaseRequest

from bot import redact
from bot.access import Access
from bot.alert_cmds import AlertCommands
from bot.analysis_cmds import AnalysisCommands
from bot.api import BotApi
from bot.args import SPECS
from bot.format import first_line
from bot.handlers import Handlers
from bot.notify import send_html
from bot.transport import AiohttpRequest, proxy_in_environment
from core.config import Config
from core.errors import ConfigError, CorrbotError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.telegram.org/bot"
RATE_LIMIT_RETRIES = 3  # 429s retried after Telegram's retry_after, then raised
ADMIN_NOTICE_INTERVAL = 60.0  # at most one error notice per kind per minute


class ErrorReporter:
    """The Application's one error handler: log it, answer the user, tell the admins."""

    def __init__(self, admins: list[int]) -> None:
        self.admins = admins
        self.count = 0
        self._last_notice: dict[str, float] = {}

    async def __call__(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        err = context.error
        self.count += 1
        # Telegram unreachable (an outage, a timeout) is not our bug: one line, no traceback.
        offline = isinstance(err, NetworkError) and not isinstance(err, BadRequest)
        log.error("error while handling an update: %r", err, exc_info=None if offline else err)
        kind = type(err).__name__
        if isinstance(update, Update) and update.effective_chat is not None:
            try:
                await send_html(context.bot, update.effective_chat.id,
                                "Sorry — that failed on our side; the admins have been told.",
                                attempts=2)
            except Exception:  # the chat may be why we failed; the log has it
                log.warning("could not tell chat %s about the error", update.effective_chat.id)
        now = time.monotonic()
        if now - self._last_notice.get(kind, -1e9) < ADMIN_NOTICE_INTERVAL:
            return
        self._last_notice[kind] = now
        detail = html.escape(first_line(redact.redact(str(err))))  # redact, then cut
        text = f"⚠ corrbot error: {html.escape(kind)}: {detail}"
        for admin in self.admins:
            try:
                await send_html(context.bot, admin, text, attempts=2)
            except Exception:
                log.warning("could not notify admin %s", admin)


def bot_commands() -> list[BotCommand]:
    return [BotCommand(s.command, s.summary[:256]) for s in SPECS.values()]


def build_application(
    cfg: Config,
    token: str,
    api: BotApi,
    *,
    concurrent_updates: int = 64,
    overall_max_rate: float = FloodLimit.MESSAGES_PER_SECOND,
    requests: tuple[BaseRequest, BaseRequest] | None = None,
) -> Application:  # type: ignore[type-arg]
    """The Application for ``cfg`` (not started); ``api`` answers every command.

    ``overall_max_rate``: requests per second to all chats together, Telegram's flood limit
    (30/s); a loopback server in tests has none, so the chat fuzz raises it.
    ``requests``: the HTTP clients for the bot's calls and for the long poll; by default
    `bot.transport.AiohttpRequest`, or PTB's httpx one when a proxy is configured or set in
    the environment."""
    redact.install(token)
    tg = cfg.telegram
    handlers = Handlers(cfg, api, Access(tg))
    reporter = ErrorReporter(list(tg.admin_user_ids))

    async def post_shutdown(app: Application) -> None:  # type: ignore[type-arg]
        api.close()

    builder = (
        Application.builder()
        .token(token)
        .base_url(tg.base_url)
        .rate_limiter(AIORateLimiter(overall_max_rate=overall_max_rate, max_retries=RATE_LIMIT_RETRIES))
        .concurrent_updates(concurrent_updates)
        .post_shutdown(post_shutdown)
    )
    file_url = tg.base_file_url
    if file_url is None and tg.base_url != DEFAULT_BASE_URL and tg.base_url.endswith("/bot"):
        file_url = tg.base_url[: -len("bot")] + "file/bot"  # a self-hosted server's layout
    if file_url:
        builder = builder.base_file_url(file_url)
    if requests is None and not tg.proxy and not proxy_in_environment():
        # PTB's pool sizes: 256 connections for the bot's calls, one for the long poll.
        requests = AiohttpRequest(256), AiohttpRequest(1)
    if requests is not None:
        builder = builder.request(requests[0]).get_updates_request(requests[1])
    elif tg.proxy:  # httpx speaks HTTP and SOCKS5 proxies; aiohttp alone does not
        builder = builder.proxy(tg.proxy).get_updates_proxy(tg.proxy)
    app = builder.build()

    new_commands = filters.COMMAND & filters.UpdateType.MESSAGE
    app.add_handler(MessageHandler(new_commands, handlers.gate), group=-1)
    alerts = AlertCommands(handlers)
    analysis = AnalysisCommands(handlers)
    callbacks = {
        "corr": handlers.corr, "rank": handlers.rank,
        "chart": handlers.chart, "diverge": handlers.diverge, "status": handlers.status,
        "poll": handlers.poll_now, "help": handlers.help, "start": handlers.start,
        "alerts": alerts.alerts, "rules": alerts.rules, "mute": alerts.mute, "unmute": alerts.unmute,
        "subscribe": alerts.subscribe, "unsubscribe": alerts.unsubscribe, "set": alerts.set,
        "backtest": alerts.backtest,
        "heatmap": analysis.heatmap, "leadlag": analysis.leadlag, "history": analysis.history,
    }
    assert set(callbacks) == set(SPECS), "every command in SPECS needs a handler"
    for name, cb in callbacks.items():
        app.add_handler(CommandHandler(name, cb, filters=filters.UpdateType.MESSAGE))
    app.add_handler(MessageHandler(new_commands, handlers.unknown))
    app.add_handler(CallbackQueryHandler(alerts.button))
    app.add_error_handler(reporter)
    app.bot_data["handlers"] = handlers
    app.bot_data["errors"] = reporter
    return app


async def start(app: Application, *, poll_timeout: int = 10) -> None:  # type: ignore[type-arg]
    """Initialise, register the command menu, start handlers and long polling.

    A rejected token becomes a ConfigError and an unreachable API a CorrbotError, so
    `corrbot run` exits with one clear line (and systemd restarts it) instead of a traceback.
    """
    host = host_of(app.bot.base_url)
    logging.getLogger("telegram.request.BaseRequest").addFilter(_ONE_LINE_BAD_JSON)
    logging.getLogger("asyncio").addFilter(_ONE_LINE_LOST_POLLING_ERROR)
    try:
        await app.initialize()
        await app.bot.set_my_commands(bot_commands())
    except InvalidToken:
        raise ConfigError(
            f"the Bot API at {host} rejected the token (set CORRBOT_TELEGRAM_TOKEN or "
            "telegram.token_file to the token from @BotFather)", "telegram"
        ) from None
    except NetworkError as exc:
        raise CorrbotError(
            f"cannot reach the Telegram Bot API at {host}: {redact.redact(str(exc))}"
        ) from None
    except TelegramError as exc:  # e.g. a 400 from a proxy or self-hosted server: one line, redacted
        if not_the_bot_api(exc):
            raise CorrbotError(NOT_THE_BOT_API.format(host=host)) from None
        raise CorrbotError(
            f"the Telegram Bot API at {host} refused to start the bot: {first_line(redact.redact(str(exc)))}"
        ) from None
    await app.start()
    assert app.updater is not None
    logging.getLogger("telegram.ext").addFilter(_ONE_LINE_INVALID_TOKEN)
    try:
        await app.updater.start_polling(
            timeout=poll_timeout, allowed_updates=["message", "callback_query"], error_callback=_polling_error
        )
    except InvalidToken:  # revoked between getMe and the first getUpdates
        raise ConfigError(f"the Bot API at {host} rejected the token (revoked or changed?)", "telegram") from None
    log.info("bot @%s is polling %s", app.bot.username, host)


NOT_THE_BOT_API = (
    "the Telegram Bot API at {host} answers with something that is not the Bot API (HTTP 200, not JSON: "
    "a captive portal or a misrouted proxy?); check telegram.base_url and telegram.proxy"
)


def not_the_bot_api(exc: Exception) -> bool:
    """PTB's error for an answer that is not JSON (it has no class of its own)."""
    return type(exc) is TelegramError and exc.message == "Invalid server response"


class _OneLineBadJson(logging.Filter):
    """PTB logs a non-JSON answer (a whole HTML page) with a traceback, then raises; we say
    what it means ourselves (`start`, `service.runner`), so one short line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()  # already formatted (and redacted) by bot.redact's record factory
        if record.exc_info and msg.startswith("Can not load invalid JSON data"):
            record.msg, record.args = "the Bot API answer is not JSON: %s", (" ".join(msg.split())[32:150],)
            record.exc_info, record.exc_text = None, None
        return True


_ONE_LINE_BAD_JSON = _OneLineBadJson()


class _OneLineLostPollingError(logging.Filter):
    """Stopping while a getUpdates is answered badly can leave PTB's polling task with an
    exception nobody retrieves; asyncio then logs it with a traceback. It is a Telegram error we
    already report in one line: keep it one line here too."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, TelegramError):
            record.msg, record.args = "a Telegram request failed as the bot stopped: %s", (redact.redact(str(exc)),)
            record.exc_info, record.exc_text = None, None
        return True


_ONE_LINE_LOST_POLLING_ERROR = _OneLineLostPollingError()


class _OneLineInvalidToken(logging.Filter):
    """PTB's retry loop logs a rejected token with a full traceback before giving up; the
    service then stops with its own one-line error (service.runner), so one line is enough."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "Invalid token" in record.getMessage():
            record.exc_info, record.exc_text = None, None
        return True


_ONE_LINE_INVALID_TOKEN = _OneLineInvalidToken()


class _QuietLastAck(logging.Filter):
    """PTB's Updater.stop() makes one last getUpdates to mark updates read and, if Telegram is
    unreachable, logs that at ERROR with a three-deep traceback. On our way out that is
    expected (at worst an update is fetched again after restart): one warning line instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and "one more time" in record.getMessage():
            exc = record.exc_info[1]
            record.msg, record.args = "last getUpdates (marking updates read) failed: %s", (
                redact.redact(str(exc)),)
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


async def stop(app: Application) -> None:  # type: ignore[type-arg]
    """Stop polling, let running handlers finish, shut down (closes the DB connections)."""
    if app.updater is not None and app.updater.running:
        quiet = _QuietLastAck()
        updater_log = logging.getLogger("telegram.ext.Updater")
        updater_log.addFilter(quiet)
        try:
            await app.updater.stop()
        except InvalidToken:
            pass  # polling already gave up on a revoked token; the runner has said so in one line
        finally:
            updater_log.removeFilter(quiet)
    if app.running:
        await app.stop()
    await app.shutdown()
    # A start that failed inside initialize (a rejected token, an answer that is not JSON)
    # leaves the Application uninitialised, and its shutdown then skips the bot: close the
    # bot's HTTP sessions anyway (aiohttp reports an unclosed session at exit). Idempotent.
    await app.bot.shutdown()


def _polling_error(exc: Exception) -> None:
    # getUpdates failures are routine (network blips); the Updater retries with backoff.
    log.warning("getUpdates failed: %s", redact.redact(str(exc)))


def host_of(url: str) -> str:
    return url.split("/bot", 1)[0]  # never log the part after /bot: it is the token
