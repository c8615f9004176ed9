"""The shapes that cross layers: what the read side returns and what the CLI and bot format.

Plain frozen dataclasses, no behaviour beyond naming and JSON; ``service.queries`` fills
them from storage and monitors, ``bot/`` and ``service.textfmt`` only format them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from core.errors import NotEnoughDataError


def iso(ts: int | None, timeframe: str) -> str | None:
    if ts is None:
        return None
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.date().isoformat() if timeframe == "1d" else dt.isoformat()


@dataclass(frozen=True)
class FeedStatus:
    source: str
    asset: str
    last_ok_at: str | None
    last_bar_ts: int | None
    last_error_at: str | None
    last_error: str | None


@dataclass(frozen=True)
class Standing:
    """Where a correlation stands in its own stored history: ``percentile`` = 100 × the share
    of the ``n`` stored values from ``since`` (ISO date) to now, this one included, at or below it."""

    percentile: float
    since: str
    n: int


@dataclass(frozen=True)
class CorrReading:
    a: str
    b: str
    timeframe: str
    window: int
    value: float | None  # None while fewer returns than the window
    n: int  # returns in the window (or available so far while warming up)
    asof: int | None  # UTC epoch seconds of the observation (1d: 00:00 UTC of the session)
    ci95: tuple[float, float] | None
    beta: float | None  # of the crypto asset on the equity asset
    ewma: float | None
    change_1w: float | None  # value now minus the value 7 calendar days earlier
    standing: Standing | None = None  # where `value` stands in the series' own stored history

    def asof_iso(self) -> str | None:
        return iso(self.asof, self.timeframe)

    @property
    def label(self) -> str:
        return f"{self.a}/{self.b} {self.timeframe} w{self.window}"

    def missing(self) -> str:
        """'BTC/PSCT 1d w90: 61 of 90 returns' — for readings without a value."""
        return str(NotEnoughDataError(self.label, self.n, self.window))

    def as_json(self) -> dict[str, object]:
        return {
            "a": self.a,
            "b": self.b,
            "timeframe": self.timeframe,
            "window": self.window,
            "value": self.value,
            "n": self.n,
            "asof": self.asof_iso(),
            "ci95": list(self.ci95) if self.ci95 else None,
            "beta": self.beta,
            "ewma": self.ewma,
            "percentile": self.standing.percentile if self.standing else None,
            "percentile_since": self.standing.since if self.standing else None,
            "percentile_n": self.standing.n if self.standing else None,
        }


@dataclass(frozen=True)
class RankRow:
    b: str
    value: float | None
    n: int


@dataclass(frozen=True)
class Ranking:
    a: str
    timeframe: str
    window: int
    asof: int | None
    rows: list[RankRow]


@dataclass(frozen=True)
class HistoryRow:
    period: str
    b: str
    value: float | None
    n: int


@dataclass(frozen=True)
class History:
    a: str
    by: str
    rows: list[HistoryRow]


@dataclass(frozen=True)
class ChartData:
    """Everything /chart draws: one typed shape from the query to the renderer.

    ``corr`` has a UTC DatetimeIndex and columns value, ci_lo, ci_hi (NaN where undefined);
    ``price_a`` / ``price_b`` are the two assets' prices on the same UTC index, rebased to 100
    at the first row; ``levels`` are the alert levels drawn as given.
    """

    a: str
    b: str
    timeframe: str
    window: int
    corr: pd.DataFrame
    price_a: pd.Series
    price_b: pd.Series
    levels: tuple[float, ...]
    asof: str  # ISO date or timestamp of the last observation
    # Alert episodes to shade: (label, start, end or None while firing), UTC epoch seconds.
    spans: tuple[tuple[str, int, int | None], ...] = ()
    # FOMC decisions in the period, drawn as markers: UTC epoch seconds (00:00 of the date).
    fomc: tuple[int, ...] = ()


@dataclass(frozen=True)
class Divergence:
    """How far the crypto asset moved beyond what its beta to the equity side predicts, over the
    last ``bars`` returns; β, ρ and the residual sd come from the ``window`` returns before them.
    Returns are sums of log returns (so expected + residual = R_c on screen)."""

    a: str
    b: str
    timeframe: str
    window: int
    bars: int
    r_a: float  # Σ log returns of a over the last `bars`
    r_b: float
    expected: float  # β · r_b
    residual: float  # r_a − expected
    zscore: float | None  # residual / (sd of residuals in the window · √bars)
    beta: float
    rho: float
    asof: int


@dataclass(frozen=True)
class Freshness:
    asset: str
    timeframe: str
    last_bar_ts: int | None


@dataclass(frozen=True)
class CorrView:
    """What /corr shows: a reading per window, and how fresh the two assets' bars are."""

    readings: list[CorrReading]
    freshness: list[Freshness]


@dataclass(frozen=True)
class StatusReport:
    feeds: list[FeedStatus]
    freshness: list[Freshness]
    db_bytes: int
    version: str
    alerts: AlertStatus | None = None


@dataclass(frozen=True)
class AlertEvent:
    """One thing the alert layer says: a fire, a resolve, a reminder, an episode that opened and
    closed inside one catch-up, or a fire held back by a mute that has ended ("unmuted").

    ``rule`` is the effective rule (config + /set overrides); values are at the event's bar;
    ``detail`` holds what the message shows (β, returns, z…, see monitors.rules).
    """

    kind: str  # fire | resolve | reminder | episode | unmuted
    rule: Any  # core.rules.RuleConfig (Any here: models stays free of pydantic)
    key: str
    a: str | None
    b: str | None
    window: int | None
    episode_id: int | None
    fired_ts: int
    resolved_ts: int | None
    value: float | None  # the rule's measured value at the event bar
    fire_value: float | None
    detail: dict[str, float]
    fire_detail: dict[str, float]


@dataclass(frozen=True)
class EpisodeView:
    """An alert episode as /alerts lists it."""

    id: int
    rule: str
    kind: str
    key: str  # "A/B" or a source
    timeframe: str | None
    window: int | None
    severity: str
    fired_ts: int
    resolved_ts: int | None
    fire_value: float | None


@dataclass(frozen=True)
class AlertsView:
    firing: list[EpisodeView]
    recent: list[EpisodeView]


@dataclass(frozen=True)
class RuleView:
    name: str
    kind: str
    severity: str
    timeframe: str
    window: int | None
    pairs: list[str]
    settings: dict[str, str]  # kind-specific thresholds and lifecycle settings, as shown
    overrides: dict[str, str]  # what /set changed
    firing: int
    episodes: int


@dataclass(frozen=True)
class MuteView:
    id: int
    rule: str | None
    target: str | None
    until_ts: float
    by: str | None


@dataclass(frozen=True)
class BacktestSummary:
    period_label: str
    start_ts: int | None
    end_ts: int | None
    rows: list[tuple[str, str, int]]  # (rule, "A/B", episodes fired in the period)


@dataclass(frozen=True)
class AlertStatus:
    firing: list[EpisodeView]
    backlog: int  # outbox rows waiting
    failed: int  # outbox rows that could not be delivered
    last_eval_ts: int | None
    mutes: list[MuteView]
    next_try: float | None = None  # when the oldest waiting row is retried
    failures: list[str] = field(default_factory=list)  # "chat: error" of the latest failed rows
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)  # what /set changed, per rule


@dataclass(frozen=True)
class HeatCell:
    a: str  # crypto asset or basket (row)
    b: str  # equity asset or basket (column)
    value: float | None
    n: int


@dataclass(frozen=True)
class Heatmap:
    """The latest correlation of every crypto row with every equity column (columns small-cap
    first, large-cap last; ``caps`` gives each column's "small"/"large"/None)."""

    timeframe: str
    window: int
    rows: list[str]
    cols: list[str]
    caps: list[str | None]
    cells: list[HeatCell]  # row-major, len(rows) × len(cols); pairs not watched have value None, n 0
    asof: int | None

    def value(self, a: str, b: str) -> float | None:
        return next((c.value for c in self.cells if c.a == a and c.b == b), None)


@dataclass(frozen=True)
class LeadLagRow:
    lag: int  # > 0: the crypto return at t against the equity return at t + lag (crypto leads)
    r: float | None
    ci95: tuple[float, float] | None
    n: int


@dataclass(frozen=True)
class LeadLag:
    """Correlation of daily returns at lags −K … +K, and the plain vs Dimson beta, over a period."""

    a: str  # the crypto side
    b: str
    timeframe: str
    start: int  # first and last return timestamps used (UTC epoch s)
    end: int
    n: int  # aligned returns in the period
    rows: list[LeadLagRow]
    beta: float | None  # OLS slope of a on b, same bar
    dimson_beta: float | None  # slopes on b's same-bar and previous-bar returns, summed
    dimson_parts: tuple[float, float] | None  # (same bar, previous bar)
    period_label: str = "1y"

    def as_json(self) -> dict[str, object]:
        return {
            "a": self.a, "b": self.b, "timeframe": self.timeframe, "period": self.period_label,
            "start": iso(self.start, self.timeframe), "end": iso(self.end, self.timeframe), "n": self.n,
            "lags": [{"lag": r.lag, "r": r.r, "ci95": list(r.ci95) if r.ci95 else None, "n": r.n} for r in self.rows],
            "beta": self.beta, "dimson_beta": self.dimson_beta,
            "dimson_same_bar": self.dimson_parts[0] if self.dimson_parts else None,
            "dimson_prev_bar": self.dimson_parts[1] if self.dimson_parts else None,
        }


@dataclass(frozen=True)
class HistoryChartData:
    """/history's picture: per-year correlation of ``a`` with each counterpart, grouped
    (e.g. "small-cap" → [IWM, PSCT, …]); a group's bar is the mean of its members' values."""

    a: str
    history: History
    groups: dict[str, list[str]]
