"""The /heatmap and /history pictures, rendered to PNG bytes in memory.

Same conventions as `bot.charts`: matplotlib's object API on an Agg canvas (no pyplot, no
global state, safe in a worker thread), sized for a phone (1080 px wide), fonts ≥ 12 pt.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from bot.charts import _esc, _to_png
from core.models import Heatmap, HistoryChartData

__all__ = ["GROUP_COLOURS", "HEAT_CMAP", "render_heatmap", "render_history"]

DPI = 150
HEAT_CMAP = "RdBu_r"  # diverging: blue for negative, white at 0, red for positive
_MUTED = "#555555"
_MISSING = "#DDDDDD"
# Okabe-Ito: small caps blue, large caps orange, anything unmarked grey.
GROUP_COLOURS = {"small-cap": "#0072B2", "large-cap": "#E69F00", "other": "#999999"}
_EXTRA = ("#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _short(name: str, limit: int = 9) -> str:
    """Long names would overlap their neighbours: SMALLCAP_TECH -> "SMALLCAP\nTECH", else cut."""
    if len(name) <= limit:
        return name
    head, sep, tail = name.partition("_")
    if sep and len(head) <= limit + 1 and len(tail) <= limit + 1:
        return f"{head}\n{tail}"
    return name[: limit - 1] + "…"


def render_heatmap(h: Heatmap) -> bytes:
    """Crypto rows × equity columns, each cell coloured by ρ (−1 blue … 0 white … +1 red) with
    the value printed; a line separates the small-cap columns from the large-cap ones."""
    nr, nc = len(h.rows), len(h.cols)
    width = 7.2
    height = min(12.0, 2.6 + 0.78 * nr)
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained", facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    grid = np.full((nr, nc), np.nan)
    for i, a in enumerate(h.rows):
        for j, b in enumerate(h.cols):
            v = h.value(a, b)
            grid[i, j] = np.nan if v is None else v
    norm = Normalize(vmin=-1.0, vmax=1.0)
    ax.set_facecolor(_MISSING)
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=HEAT_CMAP, norm=norm, aspect="auto")
    cell_pt = 15 if nc <= 8 else 12
    for i in range(nr):
        for j in range(nc):
            v = grid[i, j]
            text = "—" if math.isnan(v) else f"{v:.2f}"  # the colour carries the sign too
            # Dark cells get white digits; pale ones black.
            colour = "white" if not math.isnan(v) and abs(v) > 0.55 else "black"
            ax.text(j, i, text, ha="center", va="center", fontsize=cell_pt, color=colour, fontweight="bold")
    ax.set_xticks(range(nc))
    ax.set_xticklabels([_esc(_short(c)) for c in h.cols], rotation=40, ha="right", rotation_mode="anchor",
                       fontsize=12)
    ax.set_yticks(range(nr))
    ax.set_yticklabels([_esc(r) for r in h.rows], fontsize=13)
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(-0.5, nc, 1.0), minor=True)
    ax.set_yticks(np.arange(-0.5, nr, 1.0), minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    # Group labels over the columns, and a dark line where small caps end and large caps begin.
    caps = list(h.caps)
    for cap, label in (("small", "small-cap"), ("large", "large-cap")):
        idx = [j for j, c in enumerate(caps) if c == cap]
        if idx:
            ax.text((idx[0] + idx[-1]) / 2, -0.62, label, ha="center", va="bottom", fontsize=13,
                    color=GROUP_COLOURS[label], fontweight="bold", transform=ax.transData)
    for j in range(1, nc):
        if caps[j] != caps[j - 1]:
            ax.axvline(j - 0.5, color="#222222", linewidth=3)
    bar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.06, pad=0.02, aspect=40)
    bar.set_ticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    bar.ax.tick_params(labelsize=12)
    bar.set_label("correlation of daily log returns" if h.timeframe == "1d" else "correlation of hourly log returns",
                  fontsize=12)
    asof = "no data yet" if h.asof is None else f"as of {_date(h.asof, h.timeframe)}"
    fig.suptitle(f"Crypto vs equities — {h.window}-bar correlation ({_esc(h.timeframe)})\n{asof}",
                 fontsize=15, fontweight="bold")
    return _to_png(canvas)


def _date(ts: int, timeframe: str) -> str:
    from bot.format import iso_ts

    return iso_ts(ts, timeframe)


def render_history(data: HistoryChartData) -> bytes:
    """Per-year grouped bars: each group's mean correlation, its members as dots over the bar,
    the mean printed on it — the JPMorgan comparison (small-cap vs large-cap tech) at a glance."""
    rows = data.history.rows
    years = sorted({r.period for r in rows})
    cell = {(r.b, r.period): r.value for r in rows}
    groups = [(g, m) for g, m in data.groups.items() if any(cell.get((b, y)) is not None for b in m for y in years)]
    fig = Figure(figsize=(7.2, 7.6), dpi=DPI, layout="constrained", facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ng = max(len(groups), 1)
    width = 0.8 / ng
    colours = {g: GROUP_COLOURS.get(g, _EXTRA[i % len(_EXTRA)]) for i, (g, _) in enumerate(groups)}
    lo_all, hi_all = 0.0, 0.0
    for k, (g, members) in enumerate(groups):
        xs, means = [], []
        for i, y in enumerate(years):
            vals = [v for b in members if (v := cell.get((b, y))) is not None]
            if not vals:
                continue
            x = i - 0.4 + width * (k + 0.5)
            mean = float(np.mean(vals))
            xs.append(x)
            means.append(mean)
            if len(members) > 1:
                ax.scatter([x] * len(vals), vals, s=22, color="white", edgecolor="#222222", linewidth=0.9, zorder=4)
            lo_all, hi_all = min(lo_all, *vals), max(hi_all, *vals)
            # The mean sits beyond the bar's end and its dots: above a positive bar, below a negative one.
            up = mean >= 0
            at = (max(mean, *vals) + 0.015) if up else (min(mean, *vals) - 0.015)
            ax.text(x, at, f"{mean:.2f}", ha="center", va="bottom" if up else "top",
                    fontsize=9, color="#222222", rotation=0 if ng <= 3 else 90)
        label = _esc(g) if len(members) == 1 or g == members[0] else f"{_esc(g)} ({', '.join(map(_esc, members))})"
        ax.bar(xs, means, width=width * 0.92, color=colours[g], label=_wrap(label), zorder=3)
    ax.axhline(0.0, color=_MUTED, linewidth=1.0, zorder=2)
    ax.set_xticks(range(len(years)))
    ax.set_xticklabels(years, fontsize=13)
    ax.tick_params(axis="y", labelsize=12)
    ax.set_ylim(min(-0.1, lo_all - 0.08), max(0.5, hi_all + 0.08))
    ax.set_ylabel("correlation of daily log returns", fontsize=13)
    ax.grid(True, axis="y", color="#DDDDDD", linewidth=0.8)
    ax.set_axisbelow(True)
    if groups:
        # Below the axes: inside, it would cover the tallest year's bars.
        fig.legend(loc="outside lower center", fontsize=12, ncols=1 if len(groups) <= 3 else 2, frameon=False)
    else:
        ax.text(0.5, 0.5, "no history yet", transform=ax.transAxes, ha="center", va="center", fontsize=15,
                color=_MUTED)
    fig.suptitle(f"{_esc(data.a)}: correlation per year", fontsize=17, fontweight="bold")
    sub = "bar = group mean · dots = each counterpart" if any(len(m) > 1 for _, m in groups) else ""
    if sub:
        ax.set_title(sub, fontsize=12, color=_MUTED)
    return _to_png(canvas)


def _wrap(text: str, width: int = 44) -> str:
    """Legend entries listing many members wrap instead of running off the picture."""
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return "\n".join(lines)
