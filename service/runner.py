"""`corrbot run`: the long-running service — feed polling on a schedule, plus the bot.

One asyncio loop runs everything, and one APScheduler ``AsyncIOScheduler`` runs the jobs in
both modes. With a Telegram token the bot's Application is started with long polling and
pushes go to the alert chats; without a token pushes go to a console notifier, so the
service is usable (and testable) without Telegram.

Jobs: crypto every ``schedule.crypto_poll_minutes``; equities every
``schedule.equity_poll_minutes`` while the NYSE is open, plus one run
``close_delay_minutes`` after each close (half days included); the outbox delivery every
``schedule.delivery_seconds``. After a poll that stored new bars: update correlations →
evaluate the alert rules (`service.evaluate`) → deliver. A failing cycle is logged and
pushed once; recovery is pushed too.

Stopping (SIGTERM/SIGINT, in any state): no new jobs; the jobs in flight are cancelled and
return quietly (no CancelledError traceback from APScheduler); one delivery round of at most
``FINAL_DELIVERY_SECONDS``; the bot stops within ``BOT_STOP_SECONDS`` even if Telegram does
not answer; the DB is closed. Blocking calls run in `DaemonExecutor` threads, which are
abandoned rather than joined, so a feed stuck on a dead socket cannot hold the exit.
Under systemd the service speaks the notify protocol (`service.sdnotify`); one instance per
database is enforced by `service.instance.InstanceLock`.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import signal
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import sqlite_utils
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot import app as bot_app
from bot.delivery import ConsoleDelivery, Delivery
from bot.notify import ConsoleNotifier, Notifier, TelegramNotifier
from core.calendar import is_open, session_close
from core.config import Config
from core.errors import ConfigError, CorrbotError
from feeds.base import FeedResult
from service.api import ServiceApi
from service.digest import queue_digest
from service.evaluate import evaluate
from service.executor import DaemonExecutor
from service.instance import InstanceLock
from service.lifecycle import BOT_STOP_SECONDS, Service, Work
from service.pipeline import UpdateReport, update_correlations
from service.sync import poll_crypto, poll_equities
from storage.db import explain, open_db
from storage.push_chats import PushChats

log = logging.getLogger("corrbot.runner")
CONSOLE_CHAT = "console"  # the outbox destination when there is no Telegram token

NOT_JSON_RECHECK_SECONDS = 5.0  # a Bot API answering non-JSON is asked again this soon before we stop
CRYPTO_JOB, EQUITY_JOB, DELIVERY_JOB, DIGEST_JOB = "poll crypto", "poll equities", "deliver", "digest"


def _describe(results: list[FeedResult]) -> str:
    errors = sum(1 for r in results if r.error)
    return f"{len(results)} results, {errors} errors"


class PollCycle:
    """One feeds → correlations cycle; serialised so a slow cycle is never run twice."""

    def __init__(
        self, db: sqlite_utils.Database, cfg: Config, notifier: Notifier, chats: Callable[[], list[str]],
        deliver: Callable[[], Awaitable[object]] | None = None,
        progress: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.db, self.cfg, self.notifier, self.chats, self.deliver = db, cfg, notifier, chats, deliver
        self.progress = progress  # called after every finished cycle, failed ones too
        self.lock = asyncio.Lock()  # the cycle and the digest share one connection: one at a time
        self.failing = False
        self.cycles = 0

    async def __call__(self, *, equities: bool = True, wait: bool = False) -> str:
        """One cycle. /poll (``wait`` False) answers at once when one is running; the scheduled
        jobs wait for it, so an equities slot (the one after the close) is never skipped."""
        if self.lock.locked() and not wait:
            return "a poll cycle is already running"
        async with self.lock:
            summary = await self._cycle(equities)
        if self.progress is not None:
            await self.progress()
        return summary

    async def _cycle(self, equities: bool) -> str:
        t0 = time.monotonic()
        try:
            crypto = await poll_crypto(self.db, self.cfg)
            equity = await poll_equities(self.db, self.cfg) if equities else []
            corr: UpdateReport = await asyncio.to_thread(update_correlations, self.db, self.cfg)
            alerts = await asyncio.to_thread(
                evaluate, self.db, self.cfg, self.chats(), now=time.time())
            if self.deliver is not None:
                await self.deliver()
        except Exception as exc:
            if isinstance(exc, sqlite3.Error):  # disk full, I/O error, locked: one line says what to do
                why = str(explain(exc, self.cfg.storage.path, busy_timeout=self.cfg.storage.busy_timeout_seconds))
                log.error("poll cycle failed: %s", why)
            else:
                why = f"{type(exc).__name__}: {exc}"
                log.exception("poll cycle failed")
            if not self.failing:
                self.failing = True
                await self._push(f"corrbot: poll cycle failed: {why}")
            return f"poll cycle failed: {why}"
        self.cycles += 1
        summary = (
            f"poll cycle {self.cycles} done in {time.monotonic() - t0:.1f}s: "
            f"crypto {_describe(crypto)}, equities {_describe(equity)}, "
            f"correlations {corr.summary()[:200]}; {alerts.summary()}"
        )
        log.info("%s", summary)
        if self.failing:
            self.failing = False
            await self._push("corrbot: poll cycle recovered")
        return summary

    async def _push(self, text: str) -> None:
        try:
            await self.notifier.push(html.escape(text[:500]))
        except Exception:
            log.exception("push failed")


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not the main thread (tests) or no signal support: stop_event only.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


def _jobs(scheduler: AsyncIOScheduler) -> list[tuple[str, float | None]]:
    return [(j.name, j.next_run_time.timestamp() if j.next_run_time else None) for j in scheduler.get_jobs()]


def equities_due(now: float, cfg: Config) -> bool:
    """Poll Yahoo now? While the NYSE is open, and in the slot ``close_delay_minutes`` after a
    close (so the session's final bar is fetched once it is settled)."""
    if is_open(int(now)):
        return True
    sched = cfg.schedule
    close = session_close(int(now) - sched.close_delay_minutes * 60)
    slot = sched.equity_poll_minutes * 60
    return close is not None and 0 <= now - (close + sched.close_delay_minutes * 60) < slot


def _schedule(scheduler: AsyncIOScheduler, cycle: PollCycle, cfg: Config,
              deliver: Callable[[], Awaitable[object]] | None, work: Work) -> None:
    sched = cfg.schedule
    opts = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 300}

    async def crypto() -> None:  # coroutine functions, so APScheduler awaits them on our loop
        await work.run(cycle(equities=False, wait=True))

    async def equities() -> None:
        if equities_due(time.time(), cfg):
            await work.run(cycle(wait=True))

    scheduler.add_job(crypto, "interval", minutes=sched.crypto_poll_minutes, id=CRYPTO_JOB, name=CRYPTO_JOB,
                      next_run_time=datetime.now(UTC), **opts)
    scheduler.add_job(equities, "interval", minutes=sched.equity_poll_minutes, id=EQUITY_JOB, name=EQUITY_JOB,
                      next_run_time=datetime.now(UTC), **opts)
    if sched.digest_time:
        hour, minute = (int(x) for x in sched.digest_time.split(":"))

        async def digest_and_deliver() -> None:
            async with cycle.lock:  # never inside a cycle's transaction on the same connection
                await asyncio.to_thread(queue_digest, cycle.db, cfg, cycle.chats())
            if deliver is not None:
                await deliver()

        async def digest() -> None:
            await work.run(digest_and_deliver())

        scheduler.add_job(digest, "cron", hour=hour, minute=minute, timezone=ZoneInfo(sched.timezone),
                          id=DIGEST_JOB, name=DIGEST_JOB, **opts)
    if deliver is not None:
        # Retries and backlog: a round every few seconds. Rounds are serialised with the poll
        # cycle's own round (Delivery.round), so no row is ever being sent twice at once.
        async def delivery() -> None:
            await work.run(deliver())

        scheduler.add_job(delivery, "interval", seconds=sched.delivery_seconds, id=DELIVERY_JOB,
                          name=DELIVERY_JOB, **opts)


async def run(cfg: Config, *, stop_event: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop_event`` is set)."""
    stop = stop_event or asyncio.Event()
    _install_signals(stop)
    if stop.is_set():  # a signal came while we were still importing: nothing started, nothing to stop
        return
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())
    token = cfg.telegram_token()
    lock = InstanceLock(cfg.storage.path)
    lock.acquire()
    svc = Service(cfg, stop)
    try:
        svc.db = open_db(cfg.storage.path, busy_timeout=cfg.storage.busy_timeout_seconds)
        if token:
            await _run_bot(svc, token, svc.db)
        else:
            await _run_console(svc, svc.db)
    finally:
        if svc.db is not None:
            svc.db.conn.close()
        lock.release()
        log.info("corrbot stopped")


async def _run_console(svc: Service, db: sqlite_utils.Database) -> None:
    log.info("no Telegram token (CORRBOT_TELEGRAM_TOKEN / telegram.token_file): console mode")
    console = ConsoleDelivery(svc.cfg.storage.path)
    svc.deliver = console.round
    cycle = PollCycle(db, svc.cfg, ConsoleNotifier(), lambda: [CONSOLE_CHAT], console.round, svc.progress)
    _schedule(svc.scheduler, cycle, svc.cfg, console.round, svc.work)
    try:
        svc.scheduler.start()
        svc.started("polling (console mode)")
        await svc.stop.wait()
    finally:
        await svc.wind_down()
        console.close()


async def _run_bot(svc: Service, token: str, db: sqlite_utils.Database) -> None:
    cfg = svc.cfg
    chats = PushChats(cfg.storage.path)
    holder: list[PollCycle] = []

    async def poll_now() -> str:
        done = await svc.work.run(holder[0]())
        return done if done is not None else "corrbot is shutting down"

    api = ServiceApi(cfg, poll=poll_now, jobs=lambda: _jobs(svc.scheduler))
    app = bot_app.build_application(cfg, token, api)
    notifier = TelegramNotifier(app.bot, chats, cfg.telegram.alert_chat_ids, cfg.telegram.alert_thread_id)
    delivery = Delivery(app.bot, cfg.storage.path, chats, thread_id=cfg.telegram.alert_thread_id)

    def destinations() -> list[str]:
        return [key for key, _ in chats.active_all()]

    holder.append(PollCycle(db, cfg, notifier, destinations, delivery.round, svc.progress))
    try:
        started = await svc.until_stopped(_start_bot(app))
        if started is not None:
            svc.deliver = delivery.round
            _schedule(svc.scheduler, holder[0], cfg, delivery.round, svc.work)
            svc.scheduler.start()
            log.info("crypto polled every %d min, equities every %d min in NYSE hours",
                     cfg.schedule.crypto_poll_minutes, cfg.schedule.equity_poll_minutes)
            svc.started("polling")
            watch = asyncio.create_task(_watch_token(app, svc, cfg.telegram.token_check_seconds))
            try:
                await svc.stop.wait()
            finally:
                watch.cancel()
    finally:
        await svc.wind_down()
        try:
            await asyncio.wait_for(bot_app.stop(app), BOT_STOP_SECONDS)  # copes with a half-started app
        except TimeoutError:
            log.warning("Telegram did not answer within %.0fs while stopping; leaving anyway", BOT_STOP_SECONDS)
        delivery.close()
        chats.close()
    if svc.fatal is not None:
        raise svc.fatal


async def _start_bot(app: Application) -> bool:  # type: ignore[type-arg]
    await bot_app.start(app)
    return True


async def _watch_token(app: Application, svc: Service, every: float) -> None:  # type: ignore[type-arg]
    """PTB's polling gives up for good on a revoked token and the process would go on answering
    nobody. A getMe every ``every`` seconds notices; the service then stops with one clear line
    and a non-zero exit, so systemd (or an operator) sees it. So does a Bot API that answers
    with something that is not JSON twice in a row (a captive portal, a misrouted proxy): PTB
    would retry it for ever. Network trouble is not our business here: polling and delivery
    already retry it."""
    recheck = False
    while True:
        await asyncio.sleep(min(every, NOT_JSON_RECHECK_SECONDS) if recheck else every)
        try:
            await app.bot.get_me()
            recheck = False
        except InvalidToken:
            svc.fatal = ConfigError(
                "the Bot API rejected the token while running (revoked or changed?): set the new token "
                "from @BotFather in CORRBOT_TELEGRAM_TOKEN or the token file and restart", "telegram")
            log.error("%s", svc.fatal)
            svc.stop.set()
            return
        except TelegramError as exc:
            if not bot_app.not_the_bot_api(exc):
                continue
            if recheck:  # twice in a row: not a blip. Stop (exit 1) so systemd restarts us and says so
                svc.fatal = CorrbotError(bot_app.NOT_THE_BOT_API.format(host=bot_app.host_of(app.bot.base_url)))
                log.error("%s", svc.fatal)
                svc.stop.set()
                return
            recheck = True


def main_run(cfg: Config, stop_event: asyncio.Event | None = None) -> None:
    """Blocking entry point for `corrbot run`; ``stop_event`` may already be set by a signal
    that arrived while the CLI was starting."""
    asyncio.run(run(cfg, stop_event=stop_event))
