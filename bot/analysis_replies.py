"""Text for /leadlag, the /heatmap and /history captions, percentiles and FOMC notes (pure).

Numbers arrive computed (`service.analysis`, `service.queries`); here they are only rounded.
"""

from __future__ import annotations

from bot.format import esc, iso_ts, plain, signed, table
from core.fomc import Decision, describe
from core.models import Heatmap, LeadLag, Standing


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def percentile_text(percentile: float, since: str) -> str:
    """'84th percentile since 2019-02-14' (rounded to a whole percentile, at least the 1st)."""
    return f"{ordinal(max(1, round(percentile)))} percentile since {since}"


def standing_line(s: Standing | None) -> str | None:
    if s is None:
        return None
    return f"    {percentile_text(s.percentile, s.since)} ({s.n} values)"


def fomc_note(decision: Decision, offset: int) -> str:
    return f"🏛 {describe(decision, offset)}"


def heatmap_caption(h: Heatmap) -> str:
    valued = [c for c in h.cells if c.value is not None]
    top = max(valued, key=lambda c: c.value or 0.0, default=None)
    lines = [f"<b>Crypto × equities</b> · {esc(h.timeframe)} w{h.window} · as of {iso_ts(h.asof, h.timeframe)}"]
    if top is not None:
        lines.append(f"highest: {esc(top.a)}/{esc(top.b)} {signed(top.value)}")
    return "\n".join(lines)


def heatmap_table(h: Heatmap) -> str:
    """The matrix as a monospace table (the CLI's form, and /heatmap's fallback text)."""
    rows = [(a, *(signed(h.value(a, b)) for b in h.cols)) for a in h.rows]
    head = f"crypto × equities · {h.timeframe} w{h.window} · as of {iso_ts(h.asof, h.timeframe)}"
    caps = "  ".join(f"{b}={c or '-'}" for b, c in zip(h.cols, h.caps, strict=True))
    return head + "\n" + table(("", *h.cols), rows, (False, *([True] * len(h.cols)))) + f"\ncap: {esc(caps, 600)}"


def leadlag_reply(ll: LeadLag) -> str:
    unit = "sessions" if ll.timeframe == "1d" else "hours"
    rows = []
    for r in ll.rows:
        ci = f"{signed(r.ci95[0])} … {signed(r.ci95[1])}" if r.ci95 else "—"
        star = " *" if r.ci95 and (r.ci95[0] > 0 or r.ci95[1] < 0) else ""
        rows.append((f"{r.lag:+d}" if r.lag else "0", signed(r.r), ci + star, str(r.n)))
    best = max((r for r in ll.rows if r.lag != 0 and r.r is not None), key=lambda r: abs(r.r or 0.0), default=None)
    lines = [
        f"<b>{esc(ll.a)} vs {esc(ll.b)}</b> lead-lag · {esc(ll.timeframe)} returns · {esc(ll.period_label)} "
        f"({iso_ts(ll.start, ll.timeframe)} → {iso_ts(ll.end, ll.timeframe)}, n={ll.n})",
        f"lag k: {esc(ll.a)} at t vs {esc(ll.b)} at t+k {unit} (k &gt; 0: {esc(ll.a)} leads)",
        table(("k", "ρ", "95% CI", "n"), rows, (True, True, False, True)),
    ]
    if best is not None:
        sig = best.ci95 is not None and (best.ci95[0] > 0 or best.ci95[1] < 0)
        who = f"{esc(ll.a)} leads" if best.lag > 0 else f"{esc(ll.a)} follows"
        lines.append(f"strongest off-zero lag: k={best.lag:+d} ({who}) ρ {signed(best.r)}"
                     + ("" if sig else " — inside its CI of 0: no clear lead"))
    if ll.dimson_parts is not None:
        b0, b1 = ll.dimson_parts
        lines.append(f"β {plain(ll.beta)} · Dimson β <b>{plain(ll.dimson_beta)}</b> "
                     f"(same {unit[:-1]} {plain(b0)} + previous {plain(b1)})")
    else:
        lines.append(f"β {plain(ll.beta)} · Dimson β —")
    lines.append("* CI excludes 0")
    return "\n".join(lines)


def history_caption(a: str, groups: dict[str, list[str]]) -> str:
    parts = [f"{esc(g)}: {esc(', '.join(m), 200)}" for g, m in groups.items() if len(m) > 1]
    return "\n".join([f"<b>{esc(a)}</b> correlation per year", *parts])
