"""The /chart picture: rolling correlation over rebased prices, rendered to PNG bytes in memory.

Only matplotlib's object-oriented API and the Agg canvas are used - no pyplot, no rcParams
changes - so ``render_chart`` keeps no global state and can run in ``asyncio.to_thread``.
Every style choice is passed explicitly for the same reason.
"""

from __future__ import annotations

import datetime as dt
import io
import math
from typing import Any

import matplotlib.dates as mdates
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, NullLocator
from PIL import Image

from core.models import ChartData

__all__ = ["DPI", "FIGSIZE_IN", "render_chart"]

# 7.2 x 9 in at 150 dpi = 1080 x 1350 px: Telegram's portrait photo shape, sharp on phones.
FIGSIZE_IN = (7.2, 9.0)
DPI = 150

# Okabe-Ito colours stay distinguishable for colour-blind readers.
_CORR = "#0072B2"
_LEVEL = "#D55E00"
_PRICE_A = "#E69F00"
_PRICE_B = "#0072B2"
_MUTED = "#555555"
_FOMC = "#009E73"

_TITLE_PT = 17
_SUBTITLE_PT = 13
_LABEL_PT = 13
_TICK_PT = 12
_NOTE_PT = 15


def _esc(text: str) -> str:
    """Escape ``$`` so an asset called "A$B" is shown literally instead of starting mathtext."""
    return text.replace("$", r"\$")


def _x(index: pd.Index) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Timestamps -> matplotlib date numbers, done here so pandas' unit converters are not needed.

    A naive index is taken to be UTC already (the engine's convention).
    """
    idx = pd.DatetimeIndex(index)
    if idx.tz is not None:
        idx = idx.tz_convert("UTC").tz_localize(None)
    values = idx.to_numpy(dtype="datetime64[us]")
    return np.asarray(mdates.date2num(values), dtype=np.float64)  # type: ignore[no-untyped-call]


def _col(frame: pd.DataFrame, name: str) -> np.ndarray[Any, np.dtype[np.float64]]:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return np.asarray(pd.to_numeric(frame[name], errors="coerce"), dtype=np.float64)


def _fmt(v: float) -> str:
    return f"{v:+.2f}"


def _subtitle(
    data: ChartData, value: np.ndarray[Any, Any], lo: np.ndarray[Any, Any], hi: np.ndarray[Any, Any]
) -> str:
    finite = np.flatnonzero(np.isfinite(value))
    asof = f"as of {_esc(data.asof)}"
    if finite.size == 0:
        return f"latest: n/a · {asof}"
    i = int(finite[-1])
    text = f"latest ρ = {_fmt(float(value[i]))}"
    if math.isfinite(lo[i]) and math.isfinite(hi[i]):
        text += f"  (95% CI {_fmt(float(lo[i]))} … {_fmt(float(hi[i]))})"
    if i != len(value) - 1:
        # The newest bar has no correlation; say which bar the number belongs to.
        when = pd.Timestamp(data.corr.index[i]).date().isoformat()
        text += f" on {when}"
    sep = " · " if len(text) + len(asof) <= 58 else "\n"
    return f"{text}{sep}{asof}"


def _draw_corr(
    ax: Axes,
    data: ChartData,
    x: np.ndarray[Any, Any],
    value: np.ndarray[Any, Any],
    lo: np.ndarray[Any, Any],
    hi: np.ndarray[Any, Any],
) -> None:
    ax.set_ylim(-1.05, 1.05)
    ax.set_yticks([-1.0, -0.5, 0.0, 0.5, 1.0])
    ax.set_yticks([-0.75, -0.25, 0.25, 0.75], minor=True)
    ax.yaxis.set_major_formatter("{x:g}")
    ax.axhline(0.0, color=_MUTED, linewidth=1.0, zorder=1)
    trans = ax.get_yaxis_transform()  # x in axes fraction, y in data units
    shown = sorted({v for v in data.levels if math.isfinite(v) and -1.0 <= v <= 1.0})
    label_x, prev = 0.01, -math.inf
    for level in shown:
        # Levels closer than a label's height would print on top of each other: step right.
        label_x = label_x + 0.22 if level - prev < 0.12 else 0.01
        prev = level
        ax.axhline(level, color=_LEVEL, linestyle=(0, (6, 4)), linewidth=1.4, zorder=2)
        # Label at the left edge: the right edge holds the newest, most-read values.
        ax.text(
            label_x,
            level,
            f"alert {_fmt(level)}",
            transform=trans,
            ha="left",
            va="bottom" if level < 0.85 else "top",
            color=_LEVEL,
            fontsize=_TICK_PT,
            fontweight="bold",
            zorder=5,
            bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.75, "pad": 1.5},
        )

    band = np.isfinite(lo) & np.isfinite(hi)
    if band.any():
        ax.fill_between(
            x, lo, hi, where=band, color=_CORR, alpha=0.2, linewidth=0, label="95% CI", zorder=2
        )
    finite = np.isfinite(value)
    if finite.any():
        # A lone point (or very short history) is invisible as a bare line, so mark it.
        marker = "o" if int(finite.sum()) < 3 else None
        ax.plot(
            x,
            value,
            color=_CORR,
            linewidth=1.8,
            marker=marker,
            markersize=5,
            label=f"{data.window}-bar correlation",
            zorder=3,
        )
        last = int(np.flatnonzero(finite)[-1])
        ax.plot(
            [x[last]],
            [value[last]],
            "o",
            color=_CORR,
            markersize=7,
            markeredgecolor="white",
            zorder=4,
        )
        # "best" avoids covering the line wherever this pair happens to sit.
        ax.legend(loc="best", fontsize=_TICK_PT, framealpha=0.85)
    else:
        ax.text(
            0.5,
            0.5,
            f"not enough data yet\n(needs {data.window} bars)",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=_NOTE_PT,
            color=_MUTED,
            zorder=5,
            bbox={"facecolor": "white", "edgecolor": "none"},
        )
    ax.set_ylabel("correlation", fontsize=_LABEL_PT)


def _draw_prices(
    ax: Axes,
    data: ChartData,
    x: np.ndarray[Any, Any],
    pa: np.ndarray[Any, Any],
    pb: np.ndarray[Any, Any],
) -> None:
    handles, labels = [], []
    for series, name, color in ((pa, data.a, _PRICE_A), (pb, data.b, _PRICE_B)):
        n = int(np.isfinite(series).sum())
        if n == 0:
            continue
        (line,) = ax.plot(
            x, series, color=color, linewidth=1.6, marker="o" if n < 3 else None, markersize=5
        )
        handles.append(line)
        labels.append(_esc(name))
    both = np.concatenate([pa, pb])
    both = both[np.isfinite(both)]
    # BTC can move 30x while IWM moves 1.5x; a log axis keeps both legible.
    if both.size and (both > 0).all() and both.max() / both.min() > 3:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter("{x:g}")
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.axhline(100.0, color=_MUTED, linewidth=0.8, linestyle=":", zorder=1)
    if handles:
        # Explicit labels: via label= matplotlib would silently drop a name like "_x_".
        ax.legend(handles, labels, loc="upper left", fontsize=_TICK_PT, framealpha=0.85)
    else:
        ax.text(
            0.5,
            0.5,
            "no price data",
            transform=ax.transAxes,
            ha="center",
            va="center",
            fontsize=_NOTE_PT,
            color=_MUTED,
            bbox={"facecolor": "white", "edgecolor": "none"},
        )
    ax.set_ylabel("price, rebased to 100", fontsize=_LABEL_PT)


def _set_x_axis(ax: Axes, x: np.ndarray[Any, Any]) -> None:
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        ax.xaxis.set_major_locator(NullLocator())  # no data: no misleading 1970 dates
        return
    lo, hi = float(finite.min()), float(finite.max())
    if hi - lo < 1e-9:
        lo, hi = lo - 1.0, hi + 1.0  # one timestamp: show a day either side
    pad = (hi - lo) * 0.01
    ax.set_xlim(lo - pad, hi + pad)
    # matplotlib.dates is untyped, hence the ignores.
    locator = mdates.AutoDateLocator(tz=dt.UTC, minticks=3, maxticks=7)  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(locator, tz=dt.UTC)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(formatter)


def _draw_spans(axes: tuple[Axes, Axes], data: ChartData, x: np.ndarray[Any, Any]) -> None:
    """Shade alert episodes so the alert meets its context; the label sits inside the plot."""
    finite = x[np.isfinite(x)]
    if not data.spans or finite.size == 0:
        return
    lo, hi = float(finite.min()), float(finite.max())
    least = max((hi - lo) * 0.012, 0.5)  # an episode of one bar must still show
    for label, start, end in data.spans:
        x0 = float(_x(pd.DatetimeIndex([pd.Timestamp(start, unit="s", tz="UTC")]))[0])
        x1 = hi if end is None else float(_x(pd.DatetimeIndex([pd.Timestamp(end, unit="s", tz="UTC")]))[0])
        if x1 - x0 < least:
            x0 = min(x0, hi - least) if end is None else x0
            x1 = x0 + least
        for ax in axes:
            ax.axvspan(x0, x1, color=_LEVEL, alpha=0.18, linewidth=0, zorder=0)
        # Near the right edge the label goes to the span's left, so it stays on the canvas.
        right = x0 > lo + (hi - lo) * 0.7
        axes[0].text(x0 if right else x1, 0.98, f"{_esc(label)} ", transform=axes[0].get_xaxis_transform(),
                     ha="right" if right else "left", va="top", fontsize=_TICK_PT, color=_LEVEL, zorder=6)


def _draw_fomc(axes: tuple[Axes, Axes], data: ChartData) -> None:
    """FOMC decisions as thin green dotted verticals on both panels, with a ▼ on the top edge."""
    if not data.fomc:
        return
    xs = _x(pd.DatetimeIndex([pd.Timestamp(t, unit="s", tz="UTC") for t in data.fomc]))
    # Over years there are dozens: faint lines then, so the correlation stays the figure's subject.
    dense = len(xs) > 16
    for i, x in enumerate(xs):
        for ax in axes:
            ax.axvline(float(x), color=_FOMC, linestyle=(0, (2, 2)), linewidth=0.7 if dense else 1.1,
                       alpha=0.3 if dense else 1.0, zorder=1,
                       label="FOMC decision" if i == 0 and ax is axes[0] else None)
        axes[0].plot([float(x)], [1.0], marker="v", markersize=5 if dense else 7, color=_FOMC, clip_on=False, zorder=6,
                     transform=axes[0].get_xaxis_transform())


def render_chart(data: ChartData) -> bytes:
    """Draw ``data`` and return the PNG bytes (about 1080 x 1350 px)."""
    fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout="constrained", facecolor="white")
    canvas = FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])

    xc = _x(data.corr.index)
    value, lo, hi = (_col(data.corr, c) for c in ("value", "ci_lo", "ci_hi"))
    xp = _x(data.price_a.index)
    pa = np.asarray(data.price_a, dtype=np.float64)
    pb = np.asarray(data.price_b.reindex(data.price_a.index), dtype=np.float64)

    _draw_fomc((top, bottom), data)  # first: its legend entry joins the correlation legend
    _draw_corr(top, data, xc, value, lo, hi)
    _draw_prices(bottom, data, xp, pa, pb)
    _draw_spans((top, bottom), data, np.concatenate([xc, xp]))

    _set_x_axis(bottom, np.concatenate([xc, xp]))
    for ax in (top, bottom):
        ax.tick_params(labelsize=_TICK_PT)
        ax.grid(True, color="#DDDDDD", linewidth=0.8)
        ax.set_axisbelow(True)
    bottom.xaxis.get_offset_text().set_fontsize(_TICK_PT)

    pair = f"{_esc(data.a)} vs {_esc(data.b)}"
    what = f"{data.window}-bar correlation ({_esc(data.timeframe)})"
    # Long asset names would run off a 1080 px canvas; break the title instead.
    title = f"{pair} — {what}" if len(pair) + len(what) <= 38 else f"{pair}\n{what}"
    fig.suptitle(title, fontsize=_TITLE_PT, fontweight="bold")
    top.set_title(_subtitle(data, value, lo, hi), fontsize=_SUBTITLE_PT, color=_MUTED)

    return _to_png(canvas)


def _to_png(canvas: FigureCanvasAgg) -> bytes:
    """Encode as a 256-colour palette PNG: about a third of the RGBA size, visually the same.

    A chart has few distinct colours besides anti-aliasing ramps, so octree quantisation
    without dithering loses nothing visible; no metadata is written, so output is repeatable.
    """
    canvas.draw()  # type: ignore[no-untyped-call]
    rgba = np.asarray(canvas.buffer_rgba())  # type: ignore[no-untyped-call]
    image = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    palette = image.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    palette.save(buf, format="PNG", optimize=True)
    return buf.getvalue()
