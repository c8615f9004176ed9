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
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlite_utils
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from telegram.error import InvalidToken, TelegramError
from telegram.ext import Application

from bot import app as bot_app
from bot.access import Access
from bot.delivery import ConsoleDelivery, Delivery, DeliveryReport
from bot.notify import ConsoleNotifier, TelegramNotifier
from core.calendar import is_open, session_close
from core.config import Config
from core.errors import ConfigError, CorrbotError
from service.api import ServiceApi
from service.cycle import PollCycle
from service.digest import queue_digest
from service.executor import DaemonExecutor
from service.instance import InstanceLock
from service.lifecycle import BOT_STOP_SECONDS, Service, Work
from service.metrics import Metrics
from service.reload import Reloader
from service.signals import early_hup
from storage.db import open_db
from storage.push_chats import PushChats

log = logging.getLogger("corrbot.runner")
CONSOLE_CHAT = "console"  # the outbox destination when there is no Telegram token

NOT_JSON_RECHECK_SECONDS = 5.0  # a Bot API answering non-JSON is asked again this soon before we stop
CRYPTO_JOB, EQUITY_JOB, DELIVERY_JOB, DIGEST_JOB = "poll crypto", "poll equities", "deliver", "digest"


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


def _schedule(scheduler: AsyncIOScheduler, cycle: PollCycle,
              deliver: Callable[[], Awaitable[object]] | None, work: Work, *, poll_now: bool = True) -> None:
    """The jobs, from ``cycle.cfg``; the closures read ``cycle.cfg`` when they run, so a reload
    reaches them. ``poll_now``: first polls at once (start-up) rather than one interval on."""
    sched = cycle.cfg.schedule
    opts = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 300}
    first = {"next_run_time": datetime.now(UTC)} if poll_now else {}

    async def crypto() -> None:  # coroutine functions, so APScheduler awaits them on our loop
        await work.run(cycle(equities=False, wait=True))

    async def equities() -> None:
        if equities_due(time.time(), cycle.cfg):
            await work.run(cycle(wait=True))

    scheduler.add_job(crypto, "interval", minutes=sched.crypto_poll_minutes, id=CRYPTO_JOB, name=CRYPTO_JOB,
                      **first, **opts)
    scheduler.add_job(equities, "interval", minutes=sched.equity_poll_minutes, id=EQUITY_JOB, name=EQUITY_JOB,
                      **first, **opts)
    if sched.digest_time:
        hour, minute = (int(x) for x in sched.digest_time.split(":"))

        async def digest_and_deliver() -> None:
            async with cycle.lock:  # never inside a cycle's transaction on the same connection
                await asyncio.to_thread(queue_digest, cycle.db, cycle.cfg, cycle.chats())
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


def _metered(deliver: Callable[[], Awaitable[DeliveryReport]],
             metrics: Metrics | None) -> Callable[[], Awaitable[DeliveryReport]]:
    if metrics is None:
        return deliver

    async def round_() -> DeliveryReport:
        rep = await deliver()
        metrics.delivery(sent=rep.sent, retried=rep.retried, failed=rep.failed, pending=rep.pending)
        return rep

    return round_


def _watch_reload(svc: Service, cycle: PollCycle, path: Path | None,
                  swap: Callable[[Config], None] = lambda _cfg: None) -> None:
    """SIGHUP re-reads ``path`` (`service.reload`); ``swap`` hands the new config to whatever
    else holds one (the bot's handlers and API). A HUP that came during start-up is honoured now."""
    if path is None:
        return

    async def apply(new: Config) -> None:
        async with cycle.lock:  # between cycles: no cycle runs on two configs
            old, svc.cfg, cycle.cfg = svc.cfg, new, new
            swap(new)
            if new.schedule != old.schedule:
                svc.scheduler.remove_all_jobs()
                _schedule(svc.scheduler, cycle, svc.deliver, svc.work, poll_now=False)

    reloader = Reloader(path, lambda: svc.cfg, apply, svc.sd)

    def on_hup() -> None:
        task = asyncio.ensure_future(svc.work.run(reloader()))
        svc.background.add(task)
        task.add_done_callback(svc.background.discard)

    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    if early_hup():
        on_hup()


async def run(cfg: Config, *, stop_event: asyncio.Event | None = None, config_path: Path | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop_event`` is set); SIGHUP re-reads ``config_path``."""
    stop = stop_event or asyncio.Event()
    _install_signals(stop)
    if stop.is_set():  # a signal came while we were still importing: nothing started, nothing to stop
        return
    asyncio.get_running_loop().set_default_executor(DaemonExecutor())
    token = cfg.telegram_token()
    lock = InstanceLock(cfg.storage.path)
    lock.acquire()
    svc = Service(cfg, stop)
    metrics = Metrics() if cfg.metrics.listen else None
    try:
        svc.db = open_db(cfg.storage.path, busy_timeout=cfg.storage.busy_timeout_seconds)
        if metrics is not None and cfg.metrics.listen:
            metrics.serve(cfg.metrics.listen)
            log.info("metrics on http://%s/metrics", cfg.metrics.listen)
        if token:
            await _run_bot(svc, token, svc.db, config_path, metrics)
        else:
            await _run_console(svc, svc.db, config_path, metrics)
    finally:
        if metrics is not None:
            metrics.close()
        if svc.db is not None:
            svc.db.conn.close()
        lock.release()
        log.info("corrbot stopped")


async def _run_console(svc: Service, db: sqlite_utils.Database, config_path: Path | None,
                       metrics: Metrics | None) -> None:
    log.info("no Telegram token (CORRBOT_TELEGRAM_TOKEN / telegram.token_file): console mode")
    console = ConsoleDelivery(svc.cfg.storage.path)
    svc.deliver = deliver = _metered(console.round, metrics)
    cycle = PollCycle(db, svc.cfg, ConsoleNotifier(), lambda: [CONSOLE_CHAT], deliver, svc.progress, metrics)
    _schedule(svc.scheduler, cycle, deliver, svc.work)
    try:
        svc.scheduler.start()
        svc.started("polling (console mode)")
        _watch_reload(svc, cycle, config_path)
        await svc.stop.wait()
    finally:
        await svc.wind_down()
        console.close()


async def _run_bot(svc: Service, token: str, db: sqlite_utils.Database, config_path: Path | None,
                   metrics: Metrics | None) -> None:
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
    deliver = _metered(delivery.round, metrics)

    def destinations() -> list[str]:
        return [key for key, _ in chats.active_all()]

    def swap(new: Config) -> None:  # what the bot holds: the API's config, the handlers', who may ask
        handlers = app.bot_data["handlers"]
        api.cfg = handlers.cfg = new
        handlers.access = Access(new.telegram)

    holder.append(PollCycle(db, cfg, notifier, destinations, deliver, svc.progress, metrics))
    try:
        started = await svc.until_stopped(_start_bot(app))
        if started is not None:
            svc.deliver = deliver
            _schedule(svc.scheduler, holder[0], deliver, svc.work)
            svc.scheduler.start()
            log.info("crypto polled every %d min, equities every %d min in NYSE hours",
                     cfg.schedule.crypto_poll_minutes, cfg.schedule.equity_poll_minutes)
            svc.started("polling")
            _watch_reload(svc, holder[0], config_path, swap)
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


def main_run(cfg: Config, stop_event: asyncio.Event | None = None, config_path: Path | None = None) -> None:
    """Blocking entry point for `corrbot run`; ``stop_event`` may already be set by a signal
    that arrived while the CLI was starting."""
    asyncio.run(run(cfg, stop_event=stop_event, config_path=config_path))
