"""`corrbot run`: the long-running service — feed polling on a schedule, plus the bot.

One asyncio loop runs everything. With a Telegram token the bot's Application is started
with long polling and its JobQueue (APScheduler underneath) runs the poll cycle; without a
token the same cycle runs on a plain APScheduler AsyncIOScheduler and pushes go to a
console notifier, so the service is usable (and testable) without Telegram.

A poll cycle: ``feeds.crypto.poll_crypto`` and ``feeds.equities.poll_equities`` (async),
then ``service.pipeline.update_correlations`` in a worker thread. They are imported
lazily so this module imports (and the bot answers from the existing database) before
those modules exist. A failing cycle is logged and pushed once; recovery is pushed too.
SIGTERM/SIGINT stop the service cleanly (polling stopped, jobs cancelled, DB closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import sqlite_utils

from bot.notify import ConsoleNotifier, Notifier, PushChats, TelegramNotifier
from core.config import Config
from storage.db import open_db

log = logging.getLogger("corrbot.runner")

POLL_JOB = "poll"


def _import(module: str, name: str) -> Callable[..., Any]:
    fn: Callable[..., Any] = getattr(importlib.import_module(module), name)
    return fn


class PollCycle:
    """One feeds → correlations cycle; serialised so a slow cycle is never run twice."""

    def __init__(self, db: sqlite_utils.Database, cfg: Config, notifier: Notifier) -> None:
        self.db, self.cfg, self.notifier = db, cfg, notifier
        self._lock = asyncio.Lock()
        self.failing = False
        self.cycles = 0

    async def __call__(self, *_: object) -> str:
        if self._lock.locked():
            return "a poll cycle is already running"
        async with self._lock:
            t0 = time.monotonic()
            try:
                crypto = await _call_async("feeds.crypto", "poll_crypto", self.db, self.cfg)
                equity = await _call_async("feeds.equities", "poll_equities", self.db, self.cfg)
                update = _import("service.pipeline", "update_correlations")
                corr = await asyncio.to_thread(update, self.db, self.cfg)
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
                f"correlations {_describe(corr)}"
            )
            log.info("%s", summary)
            if self.failing:
                self.failing = False
                await self._push("corrbot: poll cycle recovered")
            return summary

    async def _push(self, text: str) -> None:
        import html

        try:
            await self.notifier.push(html.escape(text[:500]))
        except Exception:
            log.exception("push failed")


async def _call_async(module: str, name: str, *args: Any) -> Any:
    result: Awaitable[Any] = _import(module, name)(*args)
    return await result


def _describe(result: Any) -> str:
    if isinstance(result, list | tuple):
        errors = sum(1 for r in result if getattr(r, "error", None))
        return f"{len(result)} results, {errors} errors"
    summary = getattr(result, "summary", None)
    if callable(summary):
        return str(summary())[:200]
    return "ok" if result is None else str(result)[:80]


def _install_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Not the main thread (tests) or no signal support: stop_event only.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def run(cfg: Config, *, stop_event: asyncio.Event | None = None) -> None:
    """Run until SIGTERM/SIGINT (or ``stop_event`` is set)."""
    stop = stop_event or asyncio.Event()
    _install_signals(stop)
    token = cfg.telegram_token()
    db = open_db(cfg.storage.path)
    interval = cfg.feeds.poll_minutes * 60
    try:
        if token:
            await _run_bot(cfg, token, db, stop, interval)
        else:
            await _run_console(cfg, db, stop, interval)
    finally:
        db.conn.close()
        log.info("corrbot stopped")


async def _run_console(
    cfg: Config, db: sqlite_utils.Database, stop: asyncio.Event, interval: int
) -> None:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

    log.info("no Telegram token (CORRBOT_TELEGRAM_TOKEN / telegram.token_file): console mode")
    cycle = PollCycle(db, cfg, ConsoleNotifier())
    scheduler = AsyncIOScheduler(timezone=UTC)
    async def job() -> None:  # a coroutine function, so APScheduler awaits it on our loop
        await cycle()

    scheduler.add_job(job, "interval", seconds=interval, id=POLL_JOB, name=POLL_JOB,
                      next_run_time=datetime.now(UTC), max_instances=1, coalesce=True)
    scheduler.start()
    try:
        await stop.wait()
    finally:
        scheduler.shutdown(wait=False)


async def _run_bot(
    cfg: Config, token: str, db: sqlite_utils.Database, stop: asyncio.Event, interval: int
) -> None:
    from bot import app as bot_app  # imports telegram: only when a token is set

    chats = PushChats(cfg.storage.path)
    holder: dict[str, PollCycle] = {}

    async def poll_now() -> str:
        return await holder["cycle"]()

    app = bot_app.build_application(cfg, token, poll=poll_now)
    notifier = TelegramNotifier(app.bot, chats, cfg.telegram.alert_chat_ids,
                                cfg.telegram.alert_thread_id)
    cycle = holder["cycle"] = PollCycle(db, cfg, notifier)

    async def job(_: object) -> None:
        await cycle()

    try:
        await bot_app.start(app)
        assert app.job_queue is not None
        app.job_queue.run_repeating(job, interval=interval, first=1, name=POLL_JOB,
                                    job_kwargs={"max_instances": 1, "coalesce": True})
        log.info("feeds polled every %d min", cfg.feeds.poll_minutes)
        await stop.wait()
    finally:
        await bot_app.stop(app)  # copes with a half-started app
        chats.close()


def main_run(cfg: Config) -> None:
    """Blocking entry point for `corrbot run`."""
    asyncio.run(run(cfg))
