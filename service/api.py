"""The service side of `bot.api.BotApi`: chat commands answered from storage and monitors.

Queries are blocking SQLite calls, so they run in worker threads (`storage.readers`).
The poll callback and the scheduler's job list are handed in by the runner.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from core.config import Config
from core.errors import UserInputError
from core.models import (
    AlertsView,
    BacktestSummary,
    ChartData,
    CorrView,
    Divergence,
    Heatmap,
    History,
    HistoryChartData,
    LeadLag,
    MuteView,
    Ranking,
    RuleView,
    StatusReport,
)
from core.rules import CorrLevelRule
from service import alert_queries as aq
from service import analysis
from service import queries as q
from storage import alerts as alert_store
from storage import push_chats
from storage.readers import QueryRunner

PollFn = Callable[[], Awaitable[str]]
JobsFn = Callable[[], list[tuple[str, float | None]]]


class ServiceApi:
    def __init__(self, cfg: Config, *, poll: PollFn | None = None, jobs: JobsFn | None = None) -> None:
        self.cfg = cfg
        self.db = QueryRunner(cfg.storage.path)
        self._poll, self._jobs = poll, jobs

    async def corr(self, a: str | None, b: str | None, *, window: int | None, timeframe: str) -> CorrView:
        return await self.db.call(q.corr_view, self.cfg, a, b, window=window, timeframe=timeframe)

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

    async def heatmap(self, *, window: int | None, timeframe: str) -> Heatmap:
        return await self.db.call(analysis.heatmap, self.cfg, window=window, timeframe=timeframe)

    async def leadlag(self, a: str | None, b: str | None, *, period_days: int | None, period_label: str) -> LeadLag:
        return await self.db.call(analysis.leadlag, self.cfg, a, b, period_days=period_days,
                                  period_label=period_label)

    async def history_chart(self, a: str | None) -> HistoryChartData:
        return await self.db.call(analysis.history_chart, self.cfg, a)

    async def status(self) -> StatusReport:
        report = await self.db.call(q.status, self.cfg)
        alerts = await self.db.call(aq.alert_status, self.cfg)
        return StatusReport(report.feeds, report.freshness, report.db_bytes, report.version, alerts)

    async def alerts(self, n: int) -> AlertsView:
        return await self.db.call(aq.alerts, self.cfg, n)

    async def rules(self) -> list[RuleView]:
        return await self.db.call(aq.rules, self.cfg)

    async def mute(self, seconds: int, target: str | None, by: str | None) -> MuteView:
        return await self.db.call(aq.mute, self.cfg, seconds, target, by)

    async def mute_episode(self, episode_id: int, seconds: int, by: str | None) -> MuteView:
        return await self.db.call(aq.mute_episode, self.cfg, episode_id, seconds, by)

    async def mutes(self) -> list[MuteView]:
        return await self.db.call(aq.mutes, self.cfg)

    async def unmute(self, ids: list[int] | None) -> int:
        return await self.db.call(aq.unmute, self.cfg, ids)

    async def subscribe(self, chat_id: int) -> bool:
        return await self.db.call(push_chats.subscribe, chat_id)

    async def unsubscribe(self, chat_id: int) -> bool:
        return await self.db.call(push_chats.unsubscribe, chat_id)

    async def set_rule(self, rule: str, key: str, value: str, by: str | None) -> RuleView:
        return await self.db.call(aq.set_rule, self.cfg, rule, key, value, by)

    async def reset_rule(self, rule: str) -> RuleView:
        return await self.db.call(aq.reset_rule, self.cfg, rule)

    async def backtest(self, rule: str | None, period_days: int | None, label: str) -> BacktestSummary:
        return await self.db.call(aq.backtest_summary, self.cfg, rule, period_days, label)

    async def episode_chart(self, episode_id: int) -> ChartData:
        ep = await self.db.call(alert_store.get_episode, episode_id)
        if ep is None or ep.a is None or ep.b is None:
            raise UserInputError("no chart for that alert")
        spans = ((ep.rule, ep.fired_ts, ep.resolved_ts),)
        data = await self.db.call(q.chart_data, self.cfg, ep.a, ep.b, window=ep.window,
                                  timeframe=ep.timeframe or "1d", period_days=365, spans=spans)
        rule = next((r for r in self.cfg.rules if r.name == ep.rule), None)
        if isinstance(rule, CorrLevelRule):  # draw the rule's own thresholds, not the generic levels
            fire = rule.above if rule.above is not None else rule.below
            clear = rule.clear_below if rule.above is not None else rule.clear_above
            levels = tuple(v for v in (fire, clear) if v is not None)
            data = replace(data, levels=levels)
        return data

    async def poll(self) -> str | None:
        return None if self._poll is None else await self._poll()

    def jobs(self) -> list[tuple[str, float | None]]:
        return [] if self._jobs is None else self._jobs()

    def close(self) -> None:
        self.db.close()
