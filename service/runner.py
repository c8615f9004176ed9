"""`corrbot run`: the long-running service — feed polling on a schedule, plus the bot.

One asyncio loop runs everything, and one APScheduler ``AsyncIOScheduler`` runs the jobs in
both modes. With a Telegram token the bot's Application is started with long polling and
pushes go to the alert chats; without a token pushes go to a console notifier, so the
service is usable (and testable) without Telegram.

A poll cycle: `service.sync.poll_crypto` and `service.sync.poll_equities`, then
`service.pipeline.update_correlations` in a worker thread. A failing cycle is logged and
pushed once; recovery is pushed too. SIGTERM/SIGINT stop the service cleanly (polling
stopped, jobs cancelled, DB closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import logging
import signal
import time
from datetime import UTC, datetime

import sqlite_utils
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from bot import app as bot_app
from bot.notify import ConsoleNotifier, Notifier, TelegramNotifier
from core.config import Config
from feeds.base import FeedResult
from service.api import ServiceApi
from service.pipeline import UpdateReport, update_correlations
from service.sync import poll_crypto, poll_equities
from storage.db import open_db
from storage.push_chats import PushChats

log = logging.getLogger("corrbot.runner")

POLL_JOB = "poll"


def _describe(results: list[FeedResult]) -> str:
    errors = sum(1 for r in results if r.error)
    return f"{len(results)} results, {errors} errors"


class PollCycle:
    """One feeds → correlations cycle; serialised so a slow cycle is never run twice."""

    def __init__(self, db: sqlite_utils.Database, cfg: Config, notifier: Notifier) -> None:
        self.db, self.cfg, self.notifier = db, cfg, notifier
        self._lock = asyncio.Lock()
        self.failing = False
        self.cycles = 0

    async def __call__(self) -> str:
        if self._lock.locked():
            return "a poll cycle is already running"
        async with self._lock:
            t0 = time.monotonic()
            try:
                crypto = await poll_crypto(self.db, self.cfg)
                equity = await poll_equities(self.db, self.cfg)
                corr: UpdateReport = await asyncio.to_thread(update_correlations, self.db, self.cfg)
            except Exception as exc:
                log.exception("poll cycle failed")
                if not self.failing:
                    self.failing = True
                    await self._push(f"corrbot: poll cycle failed: {type(exc).__name__}: {exc}")
                return f"poll cycle failed: {type(exc).__name__}: {exc}"
            self.cycles += 1
            summary = (
                f"poll cycle {self.cycles} done in {time.monotonic() - t0:.1f}s: "
                f"crypto {_describe(crypto)}, equities {_describe(equity)}, "
                f"correlations {corr.summary()[:200]}"
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


def _schedule(scheduler: AsyncIOScheduler, cycle: PollCycle, interval: int) -> None:
    async def job() -> None:  # a coroutine function, so APScheduler awaits it on our loop
        await cycle()

    scheduler.add_job(job, "interval", seconds=interval, id=POLL_JOB, name=POLL_JOB,
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)


async def run(cfg: Config, *, stop_event: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop_event`` is set)."""
    stop = stop_event or asyncio.Event()
    _install_signals(stop)
    token = cfg.telegram_token()
    db = open_db(cfg.storage.path)
    interval = cfg.feeds.poll_minutes * 60
    scheduler = AsyncIOScheduler(timezone=UTC)
    try:
        if token:
            await _run_bot(cfg, token, db, stop, scheduler, interval)
        else:
            log.info("no Telegram token (CORRBOT_TELEGRAM_TOKEN / telegram.token_file): console mode")
            _schedule(scheduler, PollCycle(db, cfg, ConsoleNotifier()), interval)
            scheduler.start()
            await stop.wait()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        db.conn.close()
        log.info("corrbot stopped")


async def _run_bot(
    cfg: Config, token: str, db: sqlite_utils.Database, stop: asyncio.Event,
    scheduler: AsyncIOScheduler, interval: int,
) -> None:
    chats = PushChats(cfg.storage.path)
    holder: list[PollCycle] = []

    async def poll_now() -> str:
        return await holder[0]()

    api = ServiceApi(cfg, poll=poll_now, jobs=lambda: _jobs(scheduler))
    app = bot_app.build_application(cfg, token, api)
    notifier = TelegramNotifier(app.bot, chats, cfg.telegram.alert_chat_ids, cfg.telegram.alert_thread_id)
    holder.append(PollCycle(db, cfg, notifier))
    try:
        await bot_app.start(app)
        _schedule(scheduler, holder[0], interval)
        scheduler.start()
        log.info("feeds polled every %d min", cfg.feeds.poll_minutes)
        await stop.wait()
    finally:
        if scheduler.running:
            scheduler.shutdown(wait=False)
        await bot_app.stop(app)  # copes with a half-started app
        chats.close()


def main_run(cfg: Config) -> None:
    """Blocking entry point for `corrbot run`."""
    asyncio.run(run(cfg))
