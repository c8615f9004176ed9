"""Chat-command arguments: tokens in, validated names/window/timeframe/period out.

Every failure is a `UsageError` (a `UserInputError`) whose message is one line: the usage
of the command, or what was wrong with a value; unknown assets raise the config's
`UnknownAssetError` with suggestions. Tokens are classified by shape, so order is free
after the assets: ``/corr btc psct 90`` and ``/corr btc psct w90`` both work.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from core.config import Config
from core.errors import UserInputError


@dataclass(frozen=True)
class Spec:
    command: str
    syntax: str
    example: str
    summary: str
    max_assets: int = 0
    window: bool = False
    timeframe: bool = False
    period: bool = False
    admin: bool = False


# The one list of chat commands: the menu (setMyCommands), /help and the README test use it.
SPECS: dict[str, Spec] = {
    s.command: s
    for s in (
        Spec("corr", "/corr [A] [B] [WINDOW]", "/corr btc psct 90",
             "correlation for each window, CI, beta, EWMA, 1-week change",
             max_assets=2, window=True, timeframe=True),
        Spec("rank", "/rank [A] [WINDOW]", "/rank eth 30",
             "all counterparts ranked by correlation", max_assets=1, window=True, timeframe=True),
        Spec("history", "/history [A]", "/history sol",
             "correlation per year: table and small- vs large-cap bars", max_assets=1),
        Spec("chart", "/chart [A] [B] [WINDOW] [PERIOD]", "/chart btc iwm 30 1y",
             "rolling correlation over both prices (PERIOD 90d, 6m, 1y, 2y, all)",
             max_assets=2, window=True, timeframe=True, period=True),
        Spec("diverge", "/diverge [A] [B]", "/diverge btc smallcap_tech",
             "beta-adjusted residual of the last few bars", max_assets=2, timeframe=True),
        Spec("heatmap", "/heatmap [TIMEFRAME] [WINDOW]", "/heatmap 1d 90",
             "every crypto × equity correlation as one colour matrix (small caps first)",
             window=True, timeframe=True),
        Spec("leadlag", "/leadlag [A] [B] [PERIOD]", "/leadlag btc iwm 2y",
             "correlation at lags −5…+5 sessions with 95% CI; plain vs Dimson beta (PERIOD 90d … all)",
             max_assets=2, period=True),
        Spec("alerts", "/alerts [N]", "/alerts 5", "alerts firing now and the last N episodes"),
        Spec("rules", "/rules", "/rules", "each alert rule: thresholds, pairs, state"),
        Spec("mute", "/mute DURATION [RULE|ASSET|A/B]", "/mute 2h btc_diverges",
             "silence alerts for a while (/mute alone lists mutes)"),
        Spec("unmute", "/unmute ID|all", "/unmute 3", "lift a mute"),
        Spec("subscribe", "/subscribe", "/subscribe", "push alerts to this chat (admins, in groups)"),
        Spec("unsubscribe", "/unsubscribe", "/unsubscribe", "stop alert pushes to this chat"),
        Spec("set", "/set RULE KEY VALUE", "/set btc_smallcap_coupling above 0.65",
             "change a rule setting, or /set RULE reset (admins only)", admin=True),
        Spec("backtest", "/backtest [RULE] [PERIOD]", "/backtest btc_diverges 1y",
             "how often each rule would have fired (PERIOD 90d, 6m, 1y, all)"),
        Spec("status", "/status", "/status", "feeds, data freshness, alerts, jobs, uptime, version"),
        Spec("poll", "/poll", "/poll", "poll the feeds now (admins only)", admin=True),
        Spec("help", "/help", "/help", "this list"),
        Spec("start", "/start", "/start", "introduction and this list"),
    )
}

MAX_TOKENS = 6
MAX_TOKEN_LEN = 40
_WINDOW = re.compile(r"^w?(\d{1,6})$", re.IGNORECASE)
_PERIOD = re.compile(r"^(\d{1,4})([dwmy])$", re.IGNORECASE)
_UNIT_DAYS = {"d": 1, "w": 7, "m": 30, "y": 365}
MIN_PERIOD_DAYS = 7
MAX_PERIOD_DAYS = 36500


class UsageError(UserInputError):
    pass


@dataclass(frozen=True)
class Args:
    assets: tuple[str, ...] = ()
    window: int | None = None
    timeframe: str = "1d"
    period_days: int | None = 365
    period_label: str = "1y"


def usage(command: str) -> str:
    spec = SPECS[command]
    return f"usage: {spec.syntax} — e.g. {spec.example}"


def parse_args(cfg: Config, command: str, tokens: Sequence[str]) -> Args:
    """Validate ``tokens`` for ``command``; raises UsageError / UnknownAssetError."""
    spec = SPECS[command]
    if len(tokens) > MAX_TOKENS or any(len(t) > MAX_TOKEN_LEN for t in tokens):
        raise UsageError(usage(command))
    names: list[str] = []
    window: int | None = None
    timeframe: str | None = None
    period: tuple[int | None, str] | None = None
    for tok in tokens:
        low = tok.lower()
        if spec.timeframe and low in ("1d", "1h"):
            if timeframe is not None:
                raise UsageError(usage(command))
            timeframe = low
        elif spec.window and _WINDOW.match(tok):
            if window is not None:
                raise UsageError(usage(command))
            window = int(_WINDOW.match(tok).group(1))  # type: ignore[union-attr]
        elif spec.period and (low == "all" or _PERIOD.match(tok)):
            if period is not None:
                raise UsageError(usage(command))
            period = _period(command, low)
        else:
            names.append(tok)
    if len(names) > spec.max_assets:
        raise UsageError(usage(command))
    tf = timeframe or "1d"
    if tf not in cfg.correlation.timeframes:
        allowed = ", ".join(cfg.correlation.timeframes)
        raise UsageError(f"timeframe {tf} is not configured (one of {allowed})")
    if window is not None and window not in cfg.windows_for(tf):
        allowed = ", ".join(str(w) for w in cfg.windows_for(tf))
        raise UsageError(f"window {window} is not configured for {tf} (one of {allowed})")
    resolved = tuple(cfg.resolve(n) for n in names)
    days, label = period if period is not None else (365, "1y")
    return Args(resolved, window, tf, days, label)


def parse_period(command: str, token: str) -> tuple[int | None, str] | None:
    """``1y`` -> (365, "1y"), ``all`` -> (None, "all"); None if ``token`` is not a period."""
    low = token.lower()
    if low == "all" or _PERIOD.match(low):
        return _period(command, low)
    return None


def _period(command: str, low: str) -> tuple[int | None, str]:
    if low == "all":
        return None, "all"
    m = _PERIOD.match(low)
    assert m is not None
    days = int(m.group(1)) * _UNIT_DAYS[m.group(2)]
    if not MIN_PERIOD_DAYS <= days <= MAX_PERIOD_DAYS:
        raise UsageError(f"period must be between 7d and 100y, or all — {usage(command)}")
    return days, low
