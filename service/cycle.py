"""One poll cycle of `corrbot run`: feeds → correlations → alert rules → delivery.

Cycles are serialised (one connection, one transaction at a time). A failing cycle is logged
with its traceback once, then summarised by the log policy (`service.logsetup`), and pushed
to the alert chats once; its recovery is logged and pushed too. Feed outages are tracked per
source (`service.health`). ``cfg`` is read afresh by every cycle, so a reload (SIGHUP) takes
effect from the next one.
"""

from __future__ import annotations

import asyncio
import html
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable

import sqlite_utils

from bot.notify import Notifier
from core.config import Config
from feeds.base import FeedResult
from service.evaluate import evaluate
from service.health import SourceHealth
from service.heap import trim_heap
from service.metrics import Metrics
from service.pipeline import UpdateReport, compact_recent, update_correlations
from service.sync import poll_crypto, poll_equities
from storage.db import explain

log = logging.getLogger("corrbot.runner")


def _describe(results: list[FeedResult]) -> str:
    errors = sum(1 for r in results if r.error)
    return f"{len(results)} results, {errors} errors"


class PollCycle:
    """One feeds → correlations cycle; serialised so a slow cycle is never run twice."""

    def __init__(
        self, db: sqlite_utils.Database, cfg: Config, notifier: Notifier, chats: Callable[[], list[str]],
        deliver: Callable[[], Awaitable[object]] | None = None,
        progress: Callable[[], Awaitable[None]] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.db, self.cfg, self.notifier, self.chats, self.deliver = db, cfg, notifier, chats, deliver
        self.progress = progress  # called after every finished cycle, failed ones too
        self.metrics = metrics
        self.health = SourceHealth()
        self.lock = asyncio.Lock()  # the cycle, the digest and a reload: one at a time
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
        cfg = self.cfg
        try:
            crypto = await poll_crypto(self.db, cfg)
            equity = await poll_equities(self.db, cfg) if equities else []
            self.health.observe(crypto + equity)
            if self.metrics is not None:
                self.metrics.feeds(crypto + equity)
            corr: UpdateReport = await asyncio.to_thread(update_correlations, self.db, cfg, compact=False)
            t_eval = time.monotonic()
            alerts = await asyncio.to_thread(evaluate, self.db, cfg, self.chats(), now=time.time())
            if self.metrics is not None:
                self.metrics.evaluation(fired=alerts.fired, resolved=alerts.resolved,
                                        seconds=time.monotonic() - t_eval)
            if self.deliver is not None:
                await self.deliver()
            await asyncio.to_thread(compact_recent, self.db, cfg)  # storage upkeep, after the alerts
            trim_heap()  # the cycle's freed frames back to the OS: RSS stays flat (bench_soak.py)
        except Exception as exc:
            if self.metrics is not None:
                self.metrics.cycle(ok=False, seconds=time.monotonic() - t0, now=time.time())
            what = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, sqlite3.Error):  # disk full, I/O error, locked: one line says what to do
                what = str(explain(exc, self.cfg.storage.path, busy_timeout=self.cfg.storage.busy_timeout_seconds))
            if not self.failing:
                if isinstance(exc, sqlite3.Error):
                    log.error("poll cycle failed: %s", what)
                else:
                    log.exception("poll cycle failed")
                self.failing = True
                await self._push(f"corrbot: poll cycle failed: {what}")
            else:  # the traceback was logged when it began; the log policy summarises repeats
                log.warning("poll cycle failed again: %s", what)
            return f"poll cycle failed: {what}"
        self.cycles += 1
        if self.metrics is not None:
            self.metrics.cycle(ok=True, seconds=time.monotonic() - t0, now=time.time())
        summary = (
            f"poll cycle {self.cycles} done in {time.monotonic() - t0:.1f}s: "
            f"crypto {_describe(crypto)}, equities {_describe(equity)}, "
            f"correlations {corr.summary()[:200]}; {alerts.summary()}"
        )
        log.info("%s", summary)
        if self.failing:
            self.failing = False
            log.info("poll cycle recovered")
            await self._push("corrbot: poll cycle recovered")
        return summary

    async def _push(self, text: str) -> None:
        try:
            await self.notifier.push(html.escape(text[:500]))
        except Exception:
            log.exception("push failed")
