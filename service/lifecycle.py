"""How `corrbot run` stops: the running jobs' tasks (`Work`) and what the service set up (`Service`).

Stopping takes no new work, cancels what is in flight (each job returns quietly, so
APScheduler logs no CancelledError traceback), gives the outbox one round of at most
``FINAL_DELIVERY_SECONDS``, and tells systemd (STOPPING=1). ``service.runner`` wires it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC
from typing import TypeVar

import sqlite_utils
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from core.config import Config
from core.errors import CorrbotError
from service.sdnotify import Notifier as SdNotifier
from service.sdnotify import watchdog_seconds

T = TypeVar("T")
log = logging.getLogger("corrbot.runner")

FINAL_DELIVERY_SECONDS = 3.0  # the outbox gets one bounded round on the way out
CANCEL_SECONDS = 2.0  # cancelled jobs get this long to unwind (close sessions) before we move on
BOT_STOP_SECONDS = 3.0  # stopping long polling may call Telegram; it may not answer


class Work:
    """The tasks of running jobs (and /poll), so shutdown can cancel them and they end quietly."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[object]] = set()
        self.stopping = False

    async def run(self, coro: Awaitable[T]) -> T | None:
        """``await coro``; None if shutdown cancelled it (or had begun before it started)."""
        if self.stopping:
            if isinstance(coro, Coroutine):
                coro.close()  # never awaited: close it so Python does not warn
            return None
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            return await coro
        except asyncio.CancelledError:
            if not self.stopping:
                raise
            # Ours: returning normally keeps APScheduler from logging the cancel as a job error.
            return None
        finally:
            self.tasks.discard(task)

    async def cancel(self) -> None:
        self.stopping = True
        await asyncio.sleep(0)  # tasks the scheduler created a moment ago start and register
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=CANCEL_SECONDS)


def _status_line(db: sqlite_utils.Database) -> str:
    firing = db.execute("SELECT count(*) FROM alert_state WHERE status = 'firing'").fetchone()[0]
    outbox = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
    return f"polling; {firing} alert{'s' if firing != 1 else ''} firing; outbox {outbox}"


class Service:
    """What `run` sets up and tears down, in one place, so every exit path does the same."""

    def __init__(self, cfg: Config, stop: asyncio.Event) -> None:
        self.cfg, self.stop = cfg, stop
        self.sd = SdNotifier()
        self.work = Work()
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.deliver: Callable[[], Awaitable[object]] | None = None
        self.db: sqlite_utils.Database | None = None
        self.fatal: CorrbotError | None = None  # why the service stopped itself (exit non-zero)
        self.background: set[asyncio.Task[object]] = set()  # e.g. a reload: referenced till done

    async def progress(self) -> None:
        """After each finished poll cycle: systemd's watchdog is fed by progress, not by a timer,
        so a cycle that hangs for good gets the service restarted."""
        if self.db is not None:
            self.sd.send("WATCHDOG=1", f"STATUS={await asyncio.to_thread(_status_line, self.db)}")

    async def until_stopped(self, coro: Coroutine[object, object, T]) -> T | None:
        """``await coro`` unless a stop comes first (then cancel it and return None)."""
        task = asyncio.ensure_future(coro)
        waiter = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_SECONDS)
        return None

    def started(self, what: str) -> None:
        self.sd.ready(what)
        interval = self.cfg.schedule.crypto_poll_minutes * 60
        wd = watchdog_seconds()
        if wd is not None and wd < 2 * interval:
            log.warning("WatchdogSec=%.0fs is under two crypto poll intervals (%ds): expect restarts",
                        wd, 2 * interval)

    async def wind_down(self) -> None:
        """Stop taking work, cancel what is in flight, one bounded delivery round."""
        self.sd.stopping()
        log.info("corrbot stopping")
        if self.scheduler.running:
            self.scheduler.pause()
        await self.work.cancel()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)
        if self.deliver is not None:
            try:
                await asyncio.wait_for(self.deliver(), FINAL_DELIVERY_SECONDS)
            except TimeoutError:
                log.warning("final delivery round cut short after %.0fs", FINAL_DELIVERY_SECONDS)
            except Exception as exc:
                log.warning("final delivery round failed: %s", exc)
