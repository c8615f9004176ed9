"""Reply text for the alert commands (/alerts, /rules, /mute, /backtest…): formatting only."""

from __future__ import annotations

from collections.abc import Sequence

from bot.format import esc, fit, iso_ts, signed
from core.models import AlertStatus, AlertsView, BacktestSummary, EpisodeView, MuteView, RuleView

ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


def _when(ts: float) -> str:
    return iso_ts(int(ts), "1h")


def _episode(e: EpisodeView) -> str:
    tf = e.timeframe or "1d"
    span = f"{iso_ts(e.fired_ts, tf)} → {iso_ts(e.resolved_ts, tf) if e.resolved_ts else 'firing'}"
    value = f" · {signed(e.fire_value)}" if e.fire_value is not None and e.kind != "stale" else ""
    return f"{ICON.get(e.severity, '•')} <b>{esc(e.rule)}</b> {esc(e.key)} · {span}{value}"


def alerts_reply(v: AlertsView) -> str:
    lines = [f"<b>Firing now</b> ({len(v.firing)})"]
    lines += [_episode(e) for e in v.firing] or ["nothing is firing"]
    lines.append(f"<b>Last {len(v.recent)} episodes</b>")
    lines += [_episode(e) for e in v.recent] or ["no alert has fired yet"]
    return fit(lines)


def rules_reply(rules: Sequence[RuleView]) -> str:
    if not rules:
        return "No alert rules are configured ([[rules]] in the config)."
    lines = []
    for r in rules:
        state = f"🔔 {r.firing} firing" if r.firing else "quiet"
        where = "" if r.window is None else f" · {esc(r.timeframe)} w{r.window}"
        lines.append(f"{ICON.get(r.severity, '•')} <b>{esc(r.name)}</b> · {esc(r.kind)}{where} · {state}"
                     f" · {r.episodes} episode{'s' * (r.episodes != 1)}")
        lines.append("    " + esc(", ".join(f"{k} {v}" for k, v in r.settings.items()), 300))
        if r.pairs:
            lines.append("    pairs: " + esc(", ".join(r.pairs), 300))
        if r.overrides:
            lines.append("    set: " + esc(", ".join(f"{k}={v}" for k, v in r.overrides.items()), 300))
    return "\n".join(lines)


def _mute(m: MuteView) -> str:
    what = " ".join(x for x in (m.rule, m.target) if x) or "all alerts"
    return f"#{m.id} {esc(what)} until {_when(m.until_ts)}"


def muted_reply(m: MuteView) -> str:
    return f"🔕 Muted {_mute(m)}. /unmute {m.id} lifts it."


def mutes_reply(mutes: Sequence[MuteView]) -> str:
    if not mutes:
        return "No active mutes. usage: /mute DURATION [RULE|ASSET|A/B] — e.g. /mute 2h btc_diverges"
    return fit(["<b>Active mutes</b>", *(_mute(m) for m in mutes)])


def backtest_reply(s: BacktestSummary) -> str:
    since = iso_ts(s.start_ts) if s.start_ts is not None else "all history"
    span = f"{since} → {iso_ts(s.end_ts)}"
    lines = [f"<b>Backtest</b> · {esc(s.period_label)} ({span})"]
    if not s.rows:
        return lines[0] + "\nNo rules to replay."
    for rule, pair, n in s.rows:
        lines.append(f"{esc(rule)} {esc(pair)}: would have fired {n} time{'s' * (n != 1)}")
    return fit(lines)


def alert_status_lines(a: AlertStatus) -> list[str]:
    lines = [f"<b>Alerts</b>: {len(a.firing)} firing · outbox {a.backlog} waiting"
             + (f", ⚠ {a.failed} failed" if a.failed else "")
             + f" · last evaluated bar {_bar(a.last_eval_ts)}"]
    if a.backlog and a.next_try:
        lines.append(f"next delivery attempt {_when(a.next_try)}")
    lines += [f"⚠ undelivered: {esc(f, 200)}" for f in a.failures]
    lines += [_episode(e) for e in a.firing[:10]]
    if a.mutes:
        lines.append("mutes: " + "; ".join(_mute(m) for m in a.mutes[:5]))
    for rule, values in a.overrides.items():
        lines.append(f"/set {esc(rule)}: " + esc(", ".join(f"{k}={v}" for k, v in values.items()), 200))
    return lines


def _bar(ts: int | None) -> str:
    """A daily bar (00:00 UTC) as its date, an hourly one with its time."""
    return "—" if ts is None else iso_ts(ts, "1d" if ts % 86400 == 0 else "1h")
