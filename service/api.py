"""The service side of `bot.api.BotApi`: chat commands answered from storage and monitors.

Queries are blocking SQLite calls, so they run in worker threads (`storage.readers`).
The poll callback and the scheduler's job list are handed in by the runner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from core.config import Config
from core.models import ChartData, CorrReading, Divergence, Freshness, History, Ranking, StatusReport
from service import queries as q
from storage.readers import QueryRunner

PollFn = Callable[[], Awaitable[str]]
JobsFn = Callable[[], list[tuple[str, float | None]]]


class ServiceApi:
    def __init__(self, cfg: Config, *, poll: PollFn | None = None, jobs: JobsFn | None = None) -> None:
        self.cfg = cfg
        self.db = QueryRunner(cfg.storage.path)
        self._poll, self._jobs = poll, jobs

    async def corr(self, a: str | None, b: str | None, *, window: int | None, timeframe: str) -> list[CorrReading]:
        return await self.db.call(q.corr_readings, self.cfg, a, b, window=window, timeframe=timeframe)

    async def freshness(self, names: list[str]) -> list[Freshness]:
        return await self.db.call(q.freshness, self.cfg, names)

    async def rank(self, a: str | None, *, window: int | None, timeframe: str) -> Ranking:
        return await self.db.call(q.rank, self.cfg, a, window=window, timeframe=timeframe)

    async def history(self, a: str | None) -> History:
        return await self.db.call(q.history, self.cfg, a)

    async def divergence(self, a: str | None, b: str | None, *, timeframe: str) -> Divergence:
        return await self.db.call(q.divergence, self.cfg, a, b, timeframe=timeframe)

    async def chart(
        self, a: str | None, b: str | None, *, window: int | None, timeframe: str, period_days: int | None
    ) -> ChartData:
        return await self.db.call(
            q.chart_data, self.cfg, a, b, window=window, timeframe=timeframe, period_days=period_days
        )

    async def status(self) -> StatusReport:
        return await self.db.call(q.status, self.cfg)

    async def poll(self) -> str | None:
        return None if self._poll is None else await self._poll()

    def jobs(self) -> list[tuple[str, float | None]]:
        return [] if self._jobs is None else self._jobs()

    def close(self) -> None:
        self.db.close()
