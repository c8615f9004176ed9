"""/heatmap, /leadlag, /history's picture, /corr's percentile and /chart's FOMC markers, sent
through the real python-telegram-bot Application and the loopback Bot API. Numbers are parsed
out of what the server received and checked against independent pandas computations; pictures
are checked by the colours where they must be."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from botapi_server import BotHarness, demo_config
from matplotlib import colormaps
from PIL import Image
from reference import daily_close, expected

from bot.args import usage
from bot.charts_extra import GROUP_COLOURS, HEAT_CMAP
from core.fomc import decisions
from service.demo import demo_files

PNG = b"\x89PNG\r\n\x1a\n"
NUM = r"([+-]\d+\.\d+)"


@pytest.fixture(scope="module")
def bot() -> Iterator[BotHarness]:
    h = BotHarness(demo_config())
    yield h
    h.close()


def pixels(png: bytes, rgb: tuple[int, int, int], box: tuple[float, float, float, float] = (0, 0, 1, 1)) -> int:
    """Pixels within a small distance of ``rgb`` inside box (left, top, right, bottom as fractions)."""
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.int32)
    h, w = img.shape[:2]
    left, top, right, bottom = box
    band = img[int(h * top): int(h * bottom), int(w * left): int(w * right)]
    return int((np.abs(band - np.array(rgb)).sum(axis=2) < 30).sum())


def hexrgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def prices() -> dict[str, pd.Series]:
    return {k: daily_close(p) for k, p in demo_files().items()}


def test_heatmap_picture_through_the_command(bot: BotHarness) -> None:
    replies = bot.ask("/heatmap 1d 90", quiet=0.5, timeout=30)
    assert [r.method for r in replies] == ["sendPhoto"]
    png = replies[0].files["photo"]
    assert png.startswith(PNG)
    img = Image.open(io.BytesIO(png))
    assert img.width == 1080  # phone width
    p = prices()
    # Every cell's colour is the palette's colour for its value: check the extreme cells.
    values = {(a, b): float(expected(p[a], p[b], 90, 0.94)["value"].iloc[-1])
              for a in ("BTC", "ETH", "SOL", "ADA") for b in ("IWM", "PSCT", "IWO", "XSW", "QQQ", "SPY", "XLK")}
    cmap = colormaps[HEAT_CMAP]
    for v in (max(values.values()), min(values.values())):
        rgb = tuple(round(c * 255) for c in cmap((v + 1) / 2)[:3])
        assert pixels(png, rgb) > 3000, (v, rgb)  # at least one whole cell of that colour
    cap = replies[0].plain
    m = re.search(rf"highest: (\w+)/(\w+) {NUM}", cap)
    assert m and "w90" in cap and "as of 2025-08-22" in cap
    assert abs(float(m.group(3)) - max(values.values())) <= 0.0051 or m.group(1) == "ALTS"


def test_heatmap_bad_arguments_get_a_usage_line(bot: BotHarness) -> None:
    assert bot.one("/heatmap btc") == usage("heatmap")
    assert "window 45 is not configured" in bot.one("/heatmap 45")
    assert "timeframe 1h is not configured" in bot.one("/heatmap 1h")


def test_leadlag_table_matches_pandas_shift(bot: BotHarness) -> None:
    text = bot.one("/leadlag btc iwm all")
    p = prices()
    j = pd.concat([p["BTC"].rename("x"), p["IWM"].rename("y")], axis=1, join="inner").sort_index()
    r = np.log(j).diff().iloc[1:]
    rows = re.findall(rf"^\s*([+-]?\d+)\s+{NUM}\s+{NUM} … {NUM}", text, re.M)
    assert [int(k) for k, *_ in rows] == list(range(-5, 6)), text
    for k, v, lo, hi in rows:
        pair = pd.concat([r["x"], r["y"].shift(-int(k))], axis=1).dropna()
        want = pair.iloc[:, 0].corr(pair.iloc[:, 1])
        assert abs(float(v) - want) <= 0.0051, (k, v, want)
        half = 1.959963984540054 / np.sqrt(len(pair) - 3)
        assert abs(float(lo) - np.tanh(np.arctanh(want) - half)) <= 0.0051
        assert abs(float(hi) - np.tanh(np.arctanh(want) + half)) <= 0.0051
    m = re.search(r"β (\d\.\d\d) · Dimson β (-?\d\.\d\d) \(same session (-?\d\.\d\d) \+ previous (-?\d\.\d\d)\)", text)
    assert m, text
    y1 = r["y"].shift(1)
    ok = y1.notna()
    design = np.column_stack([np.ones(ok.sum()), r["y"][ok], y1[ok]])
    coef = np.linalg.lstsq(design, r["x"][ok].to_numpy(), rcond=None)[0]
    assert abs(float(m.group(3)) - coef[1]) <= 0.0051 and abs(float(m.group(4)) - coef[2]) <= 0.0051
    assert abs(float(m.group(2)) - (coef[1] + coef[2])) <= 0.0051
    assert abs(float(m.group(1)) - r["x"].cov(r["y"]) / r["y"].var()) <= 0.0051


def test_leadlag_bad_arguments(bot: BotHarness) -> None:
    assert bot.one("/leadlag btc iwm eth") == usage("leadlag")
    assert "not a watched pair" in bot.one("/leadlag btc eth")
    assert "period must be between" in bot.one("/leadlag btc iwm 2d")


def test_corr_shows_the_percentile_of_today(bot: BotHarness) -> None:
    text = bot.one("/corr btc iwm 90")
    m = re.search(r"(\d+)(?:st|nd|rd|th) percentile since (\d{4}-\d\d-\d\d) \((\d+) values\)", text)
    assert m, text
    p = prices()
    ref = expected(p["BTC"], p["IWM"], 90, 0.94)["value"].dropna()
    today = float(ref.iloc[-1])
    want = 100.0 * sum(1 for v in ref if v <= today) / len(ref)
    assert int(m.group(1)) == round(want)
    assert m.group(2) == ref.index[0].date().isoformat() and int(m.group(3)) == len(ref)


def test_history_sends_table_then_grouped_bars(bot: BotHarness) -> None:
    replies = bot.ask("/history btc", quiet=3.0, timeout=30)  # the picture renders after the table is sent
    assert [r.method for r in replies] == ["sendMessage", "sendPhoto"]
    assert "<pre>" in replies[0].text
    png = replies[1].files["photo"]
    assert png.startswith(PNG)
    # Both groups' bars are there: small caps blue, large caps orange, in the plot area.
    assert pixels(png, hexrgb(GROUP_COLOURS["small-cap"]), (0.1, 0.1, 1, 0.8)) > 20_000
    assert pixels(png, hexrgb(GROUP_COLOURS["large-cap"]), (0.1, 0.1, 1, 0.8)) > 15_000
    assert "small-cap: IWM, PSCT, IWO, XSW, SMALLCAP_TECH" in replies[1].plain


def test_chart_marks_fomc_decisions(bot: BotHarness) -> None:
    png = bot.ask("/chart btc iwm 90 1y", quiet=0.5, timeout=30)[0].files["photo"]
    green = hexrgb("#009E73")
    # Eight decisions in the year to 2025-08-22, dotted through both panels.
    n = sum(1 for d in decisions() if pd.Timestamp("2024-08-22").date() < d.day <= pd.Timestamp("2025-08-22").date())
    assert n == 8
    assert pixels(png, green, (0, 0.05, 1, 0.55)) > 8 * 120
    assert pixels(png, green, (0, 0.62, 1, 0.95)) > 8 * 100
