"""Plain-text rendering for the terminal: watch list, readings, rank and history tables."""

from __future__ import annotations

from typing import Any

from core.config import Config
from core.models import CorrReading, History, Ranking, iso


def fmt(v: float | None, width: int = 6) -> str:
    return f"{v:+.{max(width - 3, 1)}f}" if v is not None else "—".rjust(width)


def watch_list(cfg: Config) -> str:
    lines = [f"storage: {cfg.storage.path}", "assets:"]
    for a in cfg.assets:
        src = (
            f"{a.exchange} {a.symbol}"
            + (f" (fallback {', '.join(a.fallback_exchanges)})" if a.fallback_exchanges else "")
            if a.kind == "crypto"
            else f"yahoo {a.ticker}"
        )
        lines.append(f"  {a.key:<14} {a.kind:<7} {src}")
    for b in cfg.baskets:
        total = sum(b.members.values())
        members = ", ".join(f"{m.upper()} {w / total:.0%}" for m, w in b.members.items())
        lines.append(f"  {b.key:<14} basket  {members}")
    c = cfg.correlation
    lines.append(
        f"timeframes: {', '.join(c.timeframes)}; windows: "
        + "; ".join(f"{tf} {cfg.windows_for(tf)}" for tf in c.timeframes)
        + f"; EWMA λ {c.ewma_lambda}"
    )
    lines.append(f"pairs ({len(cfg.pair_list)}):")
    by_a: dict[str, list[str]] = {}
    for ca, cb in cfg.pair_list:
        by_a.setdefault(ca, []).append(cb)
    lines += [f"  {ca:<14} × {', '.join(bs)}" for ca, bs in by_a.items()]
    lines.append(f"defaults: {cfg.default_crypto} vs {cfg.default_benchmark}, window {cfg.default_window()}")
    return "\n".join(lines)


def reading_lines(r: CorrReading) -> list[str]:
    if r.value is None:
        return [r.missing()]
    ci = f"[{r.ci95[0]:+.2f}, {r.ci95[1]:+.2f}]" if r.ci95 else ""
    chg = f"  1w {r.change_1w:+.2f}" if r.change_1w is not None else ""
    beta = f"  β {r.beta:.2f}" if r.beta is not None else ""
    ewma = f"  EWMA {r.ewma:+.2f}" if r.ewma is not None else ""
    return [f"{r.label}: {r.value:+.3f} 95% CI {ci}  n={r.n}{chg}{beta}{ewma}  as of {r.asof_iso()}"]


def rank_table(rk: Ranking) -> str:
    head = f"{rk.a} — {rk.timeframe} correlation, window {rk.window}, as of {iso(rk.asof, rk.timeframe) or 'n/a'}"
    lines = [head, f"{'#':>2}  {'vs':<14} {'corr':>7}  {'n':>4}"]
    for i, row in enumerate(rk.rows, 1):
        lines.append(f"{i:>2}  {row.b:<14} {fmt(row.value, 7)}  {row.n:>4}")
    return "\n".join(lines)


def history_table(h: History) -> str:
    """Years down, counterparts across (the layout of JPMorgan's table)."""
    cols = list(dict.fromkeys(r.b for r in h.rows))
    periods = sorted({r.period for r in h.rows})
    val = {(r.period, r.b): r.value for r in h.rows}
    width = max(7, *(len(c) + 1 for c in cols)) if cols else 7
    lines = [f"{h.a} — correlation of daily returns by {h.by}", "year " + "".join(c.rjust(width) for c in cols)]
    for p in periods:
        lines.append(f"{p:<5}" + "".join(fmt(val.get((p, c)), 6).rjust(width) for c in cols))
    return "\n".join(lines)


def backtest_table(episodes: list[Any], per_year: dict[tuple[str, str], dict[int, int]]) -> str:
    """The episodes, then a per-rule, per-pair count per year."""
    if not episodes:
        return "no alerts would have fired"
    lines = [f"{len(episodes)} alert episodes", ""]
    lines.append(f"{'rule':<22} {'pair':<22} {'fired':<10} {'resolved':<10} {'value':>7}")
    for e in episodes:
        fired = iso(e.fired_ts, e.timeframe) or ""
        resolved = iso(e.resolved_ts, e.timeframe) or "firing"
        lines.append(f"{e.rule:<22} {e.a + '/' + e.b:<22} {fired:<10} {resolved:<10} {e.value:>+7.2f}")
    years = sorted({y for row in per_year.values() for y in row})
    lines += ["", f"{'rule':<22} {'pair':<22} " + " ".join(f"{y:>5}" for y in years) + "  total"]
    for (rule, pair), row in sorted(per_year.items()):
        cells = " ".join(f"{row.get(y, 0):>5}" for y in years)
        lines.append(f"{rule:<22} {pair:<22} {cells}  {sum(row.values()):>5}")
    return "\n".join(lines)
