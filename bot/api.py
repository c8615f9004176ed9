"""What the bot asks of the service: a typed protocol, implemented by ``service.api``.

The bot only parses and formats. Every number it shows comes through this interface (the
service answers from storage and monitors), so bot/ never imports the layer above it and
tests can hand the real implementation in, as the runner does.
"""

from __future__ import annotations

from typing import Protocol

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


class BotApi(Protocol):
    async def corr(self, a: str | None, b: str | None, *, window: int | None, timeframe: str) -> CorrView: ...

    async def rank(self, a: str | None, *, window: int | None, timeframe: str) -> Ranking: ...

    async def history(self, a: str | None) -> History: ...

    async def divergence(self, a: str | None, b: str | None, *, timeframe: str) -> Divergence: ...

    async def chart(
        self, a: str | None, b: str | None, *, window: int | None, timeframe: str, period_days: int | None
    ) -> ChartData: ...

    async def status(self) -> StatusReport: ...

    # ---- analysis (issue 11) ------------------------------------------------------------------

    async def heatmap(self, *, window: int | None, timeframe: str) -> Heatmap: ...

    async def leadlag(
        self, a: str | None, b: str | None, *, period_days: int | None, period_label: str
    ) -> LeadLag: ...

    async def history_chart(self, a: str | None) -> HistoryChartData: ...

    # ---- the alert layer --------------------------------------------------------------------

    async def alerts(self, n: int) -> AlertsView: ...

    async def rules(self) -> list[RuleView]: ...

    async def mute(self, seconds: int, target: str | None, by: str | None) -> MuteView: ...

    async def mute_episode(self, episode_id: int, seconds: int, by: str | None) -> MuteView: ...

    async def mutes(self) -> list[MuteView]: ...

    async def unmute(self, ids: list[int] | None) -> int: ...

    async def subscribe(self, chat_id: int) -> bool: ...

    async def unsubscribe(self, chat_id: int) -> bool: ...

    async def set_rule(self, rule: str, key: str, value: str, by: str | None) -> RuleView: ...

    async def reset_rule(self, rule: str) -> RuleView: ...

    async def backtest(self, rule: str | None, period_days: int | None, label: str) -> BacktestSummary: ...

    async def episode_chart(self, episode_id: int) -> ChartData:
        """The /chart picture of the pair and window an alert was about, over the last year."""
        ...

    async def poll(self) -> str | None:
        """Run one whole poll cycle now and describe it; None if nothing polls in this process."""
        ...

    def jobs(self) -> list[tuple[str, float | None]]:
        """Scheduled jobs and their next run (UTC epoch seconds)."""
        ...

    def close(self) -> None: ...
