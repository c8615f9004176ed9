"""Reply text for each command, built from `service.queries` results (pure, no I/O).

Numbers are only rounded here: correlations, CIs and EWMA with a sign and two decimals,
beta with two decimals, the divergence residual as a percentage. Names come from the
config (a safe character set) but are escaped anyway; nothing user-typed reaches these
functions except through `esc`.
"""

from __future__ import annotations

from collections.abc import Sequence

from bot.alert_replies import alert_status_lines
from bot.analysis_replies import standing_line
from bot.args import SPECS
from bot.format import age, arrow, duration, esc, human_bytes, iso_ts, plain, signed, table
from core import models as q
from core.config import Config


def corr_reply(
    readings: Sequence[q.CorrReading], fresh: Sequence[q.Freshness], now: float | None = None
) -> str:
    if not readings:
        return "No correlation series for that pair yet."
    r0 = readings[0]
    lines = [f"<b>{esc(r0.a)} / {esc(r0.b)}</b> · {esc(r0.timeframe)}"]
    for r in readings:
        if r.value is None:
            lines.append(
                f"w{r.window}: {esc(r.a)}/{esc(r.b)} {esc(r.timeframe)} w{r.window}: "
                f"{r.n} of {r.window} returns"
            )
            continue
        ci = f"95% CI {signed(r.ci95[0])} … {signed(r.ci95[1])}" if r.ci95 else "95% CI —"
        lines.append(f"<b>w{r.window}: {signed(r.value)}</b>  ({ci}, n={r.n})")
        lines.append(
            f"    1w {arrow(r.change_1w)} {signed(r.change_1w)} · β {plain(r.beta)}"
            f" · EWMA {signed(r.ewma)}"
        )
        if (st := standing_line(r.standing)) is not None:
            lines.append(st)
    asof = next((r.asof_iso() for r in readings if r.asof is not None), None)
    lines.append(f"as of {esc(asof or '—')}")
    if fresh:
        parts = [f"{esc(f.asset)} {age(f.last_bar_ts, now)}" for f in fresh]
        lines.append("data: " + ", ".join(parts))
    return "\n".join(lines)


def rank_reply(r: q.Ranking) -> str:
    asof = iso_ts(r.asof, r.timeframe)
    head = f"<b>{esc(r.a)}</b> ranked · {esc(r.timeframe)} w{r.window} · as of {asof}"
    if not r.rows:
        return head + "\nNo counterparts configured."
    rows = [
        (str(i), row.b, signed(row.value), str(row.n)) for i, row in enumerate(r.rows, start=1)
    ]
    return head + "\n" + table(("#", "vs", "corr", "n"), rows, (True, False, True, True))


def history_reply(h: q.History, periods_per_table: int = 6) -> str:
    head = f"<b>{esc(h.a)}</b> correlation by {esc(h.by)}"
    if not h.rows:
        return head + "\nNo history yet."
    periods = sorted({r.period for r in h.rows})
    bs = list(dict.fromkeys(r.b for r in h.rows))
    cell = {(r.b, r.period): r.value for r in h.rows}
    parts = [head]
    for i in range(0, len(periods), periods_per_table):
        cols = periods[i : i + periods_per_table]
        rows = [(b, *(signed(cell.get((b, p))) for p in cols)) for b in bs]
        parts.append(table(("vs", *cols), rows, (False, *([True] * len(cols)))))
    return "\n".join(parts)


def diverge_reply(d: q.Divergence) -> str:
    unit = "session" if d.timeframe == "1d" else "hour"
    z = f"z {d.zscore:+.1f}" if d.zscore is not None else "z —"
    return "\n".join(
        [
            f"<b>{esc(d.a)} vs {esc(d.b)}</b> · {esc(d.timeframe)} · last {d.bars} {unit}s (β over {d.window})",
            f"{esc(d.a)} {d.r_a * 100:+.1f}% vs {esc(d.b)} {d.r_b * 100:+.1f}%; expected {d.expected * 100:+.1f}% "
            f"(β {plain(d.beta)}); residual <b>{d.residual * 100:+.1f}%</b>, {z} (ρ {signed(d.rho)})",
            f"as of {iso_ts(d.asof, d.timeframe)}",
        ]
    )


def chart_caption(
    a: str, b: str, timeframe: str, window: int, period: str, last: float | None, asof: str | None,
    levels: Sequence[float],
) -> str:
    lv = ", ".join(f"{x:g}" for x in levels) or "none"
    return "\n".join(
        [
            f"<b>{esc(a)} / {esc(b)}</b> · {esc(timeframe)} w{window} · {esc(period)}",
            f"now {signed(last)} · as of {esc(asof or '—')}",
            f"alert levels: {esc(lv)}",
        ]
    )


def status_reply(
    s: q.StatusReport,
    *,
    admin: bool,
    uptime_s: float,
    jobs: Sequence[tuple[str, float | None]],
    now: float | None = None,
) -> str:
    lines = [f"<b>corrbot</b> {esc(s.version)} · up {duration(uptime_s)}"]
    fresh = [(f.asset, f.timeframe, iso_ts(f.last_bar_ts, f.timeframe), age(f.last_bar_ts, now))
             for f in s.freshness]
    errors = [
        f for f in s.feeds
        if f.last_error_at and (not f.last_ok_at or f.last_error_at > f.last_ok_at)
    ]
    if not admin:
        stalest = min(s.freshness, key=lambda f: f.last_bar_ts or 0, default=None)
        if stalest is not None:
            lines.append(f"stalest data: {esc(stalest.asset)} {age(stalest.last_bar_ts, now)}")
        lines.append(f"feeds with errors: {len(errors)}")
        if s.alerts is not None:
            lines.append(f"alerts firing: {len(s.alerts.firing)} · active mutes: {len(s.alerts.mutes)}")
        return "\n".join(lines)
    lines.append("<b>Data</b> (last bar)")
    lines.append(table(("asset", "tf", "last bar", "age"), fresh, (False, False, False, True)))
    lines.append("<b>Feeds</b> (last successful poll)")
    feed_rows = [(f.source, f.asset, (f.last_ok_at or "never")[:16]) for f in s.feeds]
    lines.append(table(("source", "asset", "last ok"), feed_rows, (False, False, False))
                 if feed_rows else "no polls yet")
    for f in errors:
        lines.append(f"⚠ {esc(f.source)}/{esc(f.asset)} {esc((f.last_error_at or '')[:16])}: "
                     f"{esc(f.last_error or '', 200)}")
    if s.alerts is not None:
        lines.extend(alert_status_lines(s.alerts))
    if jobs:
        lines.append("<b>Jobs</b>")
        lines.extend(f"{esc(name)}: next {iso_ts(int(t), '1h') if t else '—'}" for name, t in jobs)
    else:
        lines.append("no scheduled jobs in this process")
    lines.append(f"DB {human_bytes(s.db_bytes)}")
    return "\n".join(lines)


def help_reply(cfg: Config, intro: bool = False) -> str:
    lines = []
    if intro:
        lines.append("<b>corrbot</b> watches how crypto moves with small-cap tech stocks.")
    lines.append("<b>Commands</b>")
    for s in SPECS.values():
        lines.append(f"{esc(s.syntax)} — {esc(s.summary, 200)}")
        if s.example != s.syntax:
            lines.append(f"    e.g. <code>{esc(s.example)}</code>")
    lines.append(f"Assets: {esc(', '.join(cfg.names), 2000)}")
    lines.append(
        f"Defaults: {esc(cfg.default_crypto)} vs {esc(cfg.default_benchmark)}, "
        f"window {cfg.default_window()}"
    )
    return "\n".join(lines)
