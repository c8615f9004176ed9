"""Alert messages as they read on a phone: fire, resolved, reminder, episode, mute ended.

Pure formatting of `core.models.AlertEvent` (numbers arrive computed; percentages are 100 ×
the log-return sums, so "expected" and "residual" add up on screen). One rule's events of
one evaluation are grouped into one message.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from bot.analysis_replies import fomc_note, percentile_text
from bot.format import duration, esc, iso_ts, signed, table
from core.calendar import sessions_between
from core.fomc import decisions
from core.models import AlertEvent, EpisodeView, Ranking
from core.rules import CorrJumpRule, CorrLevelRule, CorrZscoreRule, DivergenceRule, StaleRule

ICON = {"critical": "🔴", "warning": "🟠", "info": "🔵"}


def _pair(e: AlertEvent) -> str:
    return f"<b>{esc(e.a)} / {esc(e.b)}</b>" if e.a else f"<b>{esc(e.key)}</b>"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f}%"


def _bars(e: AlertEvent, n: int) -> str:
    unit = "session" if e.rule.timeframe == "1d" else "hour"
    return f"{n} {unit}{'s' * (n != 1)}"


def what(e: AlertEvent, value: float | None, detail: dict[str, float], *, resolving: bool = False) -> str:
    """The measured value and the threshold it crossed (on a resolve: the clearing one)."""
    r = e.rule
    if isinstance(r, CorrLevelRule):
        if r.above is not None:
            clear = r.clear_below if r.clear_below is not None else r.above - 0.1
            if resolving:
                return f"ρ <b>{signed(value)}</b>, back under {signed(clear)}"
            return f"ρ <b>{signed(value)}</b> crossed above {signed(r.above)} (clears under {signed(clear)})"
        clear = r.clear_above if r.clear_above is not None else (r.below or 0.0) + 0.1
        if resolving:
            return f"ρ <b>{signed(value)}</b>, back over {signed(clear)}"
        return f"ρ <b>{signed(value)}</b> fell below {signed(r.below)}: decoupling (clears over {signed(clear)})"
    if isinstance(r, CorrJumpRule):
        limit = r.clear_delta if resolving and r.clear_delta is not None else r.delta / 2 if resolving else r.delta
        return (f"ρ {signed(detail.get('rho'))}, <b>{signed(value)}</b> in {_bars(e, r.lookback)} "
                f"(from {signed(detail.get('rho_before'))}; {'now inside' if resolving else 'beyond'} ±{limit:.2f})")
    if isinstance(r, CorrZscoreRule):
        limit = r.clear_z if r.clear_z is not None else r.z / 2
        tail = f"back inside ±{limit:.1f}" if resolving else f"beyond ±{r.z:.1f}"
        return (f"ρ {signed(detail.get('rho'))} is <b>z {signed(value, 1)}</b> against its {r.history}-bar "
                f"mean {signed(detail.get('mean_rho'))}, {tail}")
    if isinstance(r, DivergenceRule):
        if value is None:
            return "divergence"
        limit = r.clear_z if r.clear_z is not None else r.z / 2
        tail = f", back inside ±{limit:.1f}" if resolving else ""
        return (f"{esc(e.a)} {_pct(detail.get('R_c'))} vs {esc(e.b)} {_pct(detail.get('R_e'))} over "
                f"{_bars(e, r.horizon)}; expected {_pct(detail.get('expected'))} (β {detail.get('beta', 0):.2f}); "
                f"residual <b>{_pct(detail.get('residual'))}</b>, z {value:+.1f}{tail}")
    if isinstance(r, StaleRule):
        if resolving:
            return "polling again"
        return f"no successful poll for <b>{duration(value or 0)}</b> (limit {duration(r.after)})"
    return f"value {signed(value)}"


def context(detail: dict[str, float]) -> str:
    """' · 84th percentile since 2019' from the fire's stored context (service.analysis)."""
    if "pctile" not in detail or "pctile_since" not in detail:
        return ""
    return f" · ρ at its {percentile_text(detail['pctile'], str(int(detail['pctile_since'])))}"


def fomc_lines(events: Sequence[AlertEvent], fire: bool = False) -> list[str]:
    """One line per FOMC decision near these fires ("2 sessions after the FOMC decision of …")."""
    seen: dict[tuple[int, int], str] = {}
    for e in events:
        d = e.fire_detail if fire else e.detail
        if "fomc_ts" in d and "fomc_sessions" in d:
            ts, k = int(d["fomc_ts"]), int(d["fomc_sessions"])
            day = datetime.fromtimestamp(ts, UTC).date()
            match = next((x for x in decisions() if x.day == day), None)
            if match is not None:
                seen[(ts, k)] = fomc_note(match, k)
    return list(seen.values())


def lasted(e: AlertEvent) -> str:
    """How long an episode lasted: NYSE sessions for daily rules, time otherwise."""
    if e.resolved_ts is None:
        return "—"
    if e.a and e.rule.timeframe == "1d":
        n = sessions_between(e.fired_ts, e.resolved_ts)
        return f"{n} session{'s' * (n != 1)}"
    return duration(e.resolved_ts - e.fired_ts)


def _asof(e: AlertEvent, ts: int | None) -> str:
    return iso_ts(ts, e.rule.timeframe if e.a else "1h")


def _head(icon: str, label: str, events: Sequence[AlertEvent]) -> str:
    e0 = events[0]
    where = f" · {esc(e0.rule.timeframe)} w{e0.window}" if e0.window else ""
    pairs = len({e.key for e in events})
    many = f" · {pairs} pairs" if pairs > 1 else ""
    if len(events) > pairs:
        many += f" · {len(events)} episodes"
    return f"{icon} <b>{esc(e0.rule.name)}</b> · {e0.rule.severity}{label}{many}{where}"


def fire_text(events: Sequence[AlertEvent]) -> str:
    lines = [_head(ICON.get(events[0].rule.severity, "🔴"), "", events)]
    lines += [f"{_pair(e)}: {what(e, e.value, e.detail)}{context(e.detail)}" for e in events]
    lines += fomc_lines(events)
    lines.append(f"as of {_asof(events[0], events[0].fired_ts)}")
    return "\n".join(lines)


def unmuted_text(events: Sequence[AlertEvent]) -> str:
    lines = [_head("🔔", " · mute ended, still firing", events)]
    lines += [f"{_pair(e)} since {_asof(e, e.fired_ts)}: {what(e, e.fire_value, e.fire_detail)}"
              f"{context(e.fire_detail)}" for e in events]
    lines += fomc_lines(events, fire=True)
    return "\n".join(lines)


def resolve_text(e: AlertEvent) -> str:
    return "\n".join([
        f"✅ <b>resolved</b> · {esc(e.rule.name)}",
        f"{_pair(e)}: {what(e, e.value, e.detail, resolving=True)}",
        f"lasted {lasted(e)} ({_asof(e, e.fired_ts)} → {_asof(e, e.resolved_ts)})",
    ])


def episode_text(events: Sequence[AlertEvent]) -> str:
    lines = [_head("⚪", " · fired and resolved while catching up", events)]
    for e in events:
        lines.append(f"{_pair(e)}: fired {_asof(e, e.fired_ts)}: {what(e, e.fire_value, e.fire_detail)}"
                     f"{context(e.fire_detail)}; resolved {_asof(e, e.resolved_ts)} after {lasted(e)}")
    lines += fomc_lines(events, fire=True)
    return "\n".join(lines)


def reminder_text(events: Sequence[AlertEvent]) -> str:
    lines = [_head("🔁", " · still firing", events)]
    lines += [f"{_pair(e)} since {_asof(e, e.fired_ts)}: {what(e, e.value, e.detail)}" for e in events]
    return "\n".join(lines)


def buttons(episode_id: int) -> list[list[str]]:
    """Chart, Mute 1h, Mute 24h: ``callback_data`` is a short key to the stored episode."""
    return [["📈 Chart", f"c:{episode_id}"], ["🔕 1h", f"m:{episode_id}:1h"], ["🔕 24h", f"m:{episode_id}:24h"]]


def digest_text(ranking: Ranking, changes: dict[str, float | None], firing: Sequence[EpisodeView]) -> str:
    """The daily digest: the ranking with 1-week changes, then what is firing."""
    head = (f"☀️ <b>corrbot digest</b> · {esc(ranking.a)} · {esc(ranking.timeframe)} w{ranking.window}"
            f" · as of {iso_ts(ranking.asof, ranking.timeframe)}")
    rows = [(r.b, signed(r.value), signed(changes.get(r.b))) for r in ranking.rows[:8]]
    lines = [head, table(("vs", "ρ", "1w Δ"), rows, (False, True, True))]
    lines.append(f"<b>Firing</b> ({len(firing)})" if firing else "No alert is firing.")
    lines += [f"{ICON.get(e.severity, '•')} {esc(e.rule)} {esc(e.key)} since {iso_ts(e.fired_ts, e.timeframe or '1d')}"
              for e in firing[:10]]
    return "\n".join(lines)
