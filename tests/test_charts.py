"""Tests for bot.charts: render real demo data and awkward inputs to PNG and inspect the bytes.

The correlation here is computed ad hoc with pandas purely as test input; the real engine
lives elsewhere.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bot.charts import DPI, FIGSIZE_IN, render_chart
from core.models import ChartData

DEMO = Path(__file__).resolve().parents[1] / "service" / "demo_data"
PNG_SIG = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = round(FIGSIZE_IN[0] * DPI), round(FIGSIZE_IN[1] * DPI)
MAX_BYTES = 300_000


def _png_size(png: bytes) -> tuple[int, int]:
    """Width and height from the IHDR chunk, which must come first after the signature."""
    assert png[:8] == PNG_SIG
    length, kind = struct.unpack(">I4s", png[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _close(path: Path) -> pd.Series:
    frame = pd.read_csv(path)
    # Crypto dates carry "+00:00", equity dates are bare days; both mean UTC calendar days.
    index = pd.to_datetime(frame["Date"], utc=True).dt.normalize()
    return pd.Series(frame["Close"].to_numpy(dtype=float), index=pd.DatetimeIndex(index))


def _corr_frame(ra: pd.Series, rb: pd.Series, window: int) -> pd.DataFrame:
    value = ra.rolling(window).corr(rb)
    # Fisher-z interval, only so the band has something realistic to draw.
    z = np.arctanh(value.clip(-0.999999, 0.999999))
    half = 1.96 / np.sqrt(window - 3)
    return pd.DataFrame({"value": value, "ci_lo": np.tanh(z - half), "ci_hi": np.tanh(z + half)})


@pytest.fixture(scope="module")
def btc_iwm() -> ChartData:
    px = pd.concat(
        {"a": _close(DEMO / "BTC-USD_daily.csv"), "b": _close(DEMO / "IWM_daily.csv")},
        axis=1,
        join="inner",
    ).dropna()
    rets = np.log(px).diff()
    rebased = px / px.iloc[0] * 100.0
    return ChartData(
        a="BTC",
        b="IWM",
        timeframe="1d",
        window=90,
        corr=_corr_frame(rets["a"], rets["b"], 90),
        price_a=rebased["a"],
        price_b=rebased["b"],
        levels=(0.5,),
        asof=px.index[-1].date().isoformat(),
    )


@pytest.fixture(scope="module")
def btc_iwm_png(btc_iwm: ChartData) -> bytes:
    png = render_chart(btc_iwm)
    Path("/tmp/corrbot_chart.png").write_bytes(png)
    return png


def _synthetic(n: int, freq: str = "1D", seed: int = 0, **kw: object) -> ChartData:
    rng = np.random.default_rng(seed)
    idx = pd.date_range("2015-01-01", periods=n, freq=freq, tz="UTC")
    walk = np.exp(np.cumsum(rng.normal(0, 0.02, size=(n, 2)), axis=0))
    prices = pd.DataFrame(walk / walk[0] * 100.0, index=idx, columns=["a", "b"])
    rets = np.log(prices).diff()
    fields: dict[str, object] = {
        "a": "BTC",
        "b": "PSCT",
        "timeframe": "1h",
        "window": 30,
        "corr": _corr_frame(rets["a"], rets["b"], 30),
        "prices": prices,
        "levels": (0.5, -0.5),
        "asof": idx[-1].isoformat(),
    }
    fields.update(kw)
    # Tests describe prices as one frame with columns a, b; the model holds two named series.
    frame = fields.pop("prices")
    assert isinstance(frame, pd.DataFrame)
    fields["price_a"], fields["price_b"] = frame["a"], frame["b"]
    return ChartData(**fields)  # type: ignore[arg-type]


def test_real_data_is_a_valid_png_of_the_intended_size(btc_iwm_png: bytes) -> None:
    assert btc_iwm_png.startswith(PNG_SIG)
    assert _png_size(btc_iwm_png) == (WIDTH, HEIGHT) == (1080, 1350)
    assert btc_iwm_png.endswith(b"IEND\xaeB`\x82")
    # ~61 KB as a palette PNG; the upper bound leaves room but catches losing quantisation.
    assert 20_000 < len(btc_iwm_png) < 150_000


def test_real_data_corr_is_sane(btc_iwm: ChartData) -> None:
    # Guards the test input itself: ~6.5 years of aligned days, a defined latest value.
    assert len(btc_iwm.price_a) > 1500
    assert btc_iwm.corr["value"].notna().sum() > 1400
    assert -1.0 <= btc_iwm.corr["value"].iloc[-1] <= 1.0


def test_render_is_deterministic(btc_iwm: ChartData, btc_iwm_png: bytes) -> None:
    again = render_chart(btc_iwm)
    assert abs(len(again) - len(btc_iwm_png)) <= 0.01 * len(btc_iwm_png)


def test_concurrent_renders_match(btc_iwm: ChartData, btc_iwm_png: bytes) -> None:
    # The bot renders in asyncio.to_thread; threads must not disturb each other's figures.
    out: list[bytes] = []
    threads = [threading.Thread(target=lambda: out.append(render_chart(btc_iwm))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 3
    for png in out:
        assert abs(len(png) - len(btc_iwm_png)) <= 0.01 * len(btc_iwm_png)


def _nan_corr(index: pd.DatetimeIndex) -> pd.DataFrame:
    return pd.DataFrame(np.nan, index=index, columns=["value", "ci_lo", "ci_hi"])


# DejaVu has no CJK/emoji glyphs: matplotlib warns and draws boxes, which is acceptable.
@pytest.mark.filterwarnings("ignore:Glyph .* missing:UserWarning")
@pytest.mark.parametrize(
    "case",
    [
        "all_nan_corr",
        "single_point",
        "single_point_nan",
        "long_10k",
        "empty",
        "odd_names",
        "dollar_pair",
        "unicode_names",
        "no_levels_and_out_of_range_levels",
        "naive_index_and_negative_prices",
    ],
)
def test_edge_cases_render(case: str) -> None:
    if case == "all_nan_corr":
        base = _synthetic(20)
        data = _synthetic(20, window=90, corr=_nan_corr(base.price_a.index))
    elif case == "single_point":
        idx = pd.DatetimeIndex(["2025-08-22"], tz="UTC")
        data = _synthetic(
            1,
            corr=pd.DataFrame({"value": [0.3], "ci_lo": [0.1], "ci_hi": [0.5]}, index=idx),
            prices=pd.DataFrame({"a": [100.0], "b": [100.0]}, index=idx),
        )
    elif case == "single_point_nan":
        data = _synthetic(1)
    elif case == "long_10k":
        data = _synthetic(10_000, freq="1h")
    elif case == "empty":
        idx = pd.DatetimeIndex([], tz="UTC")
        data = _synthetic(
            1,
            corr=_nan_corr(idx),
            prices=pd.DataFrame({"a": [], "b": []}, index=idx, dtype=float),
        )
    elif case == "odd_names":
        data = _synthetic(200, a="A$B", b="_x_", timeframe="$1d$")
    elif case == "dollar_pair":
        # Two "$" would otherwise open and close a mathtext span containing "^{".
        data = _synthetic(200, a="$^{", b="C$\\frac", asof="2025-08-22 $")
    elif case == "unicode_names":
        data = _synthetic(200, a="Ünïcødé-ΒΤΣ", b="比特币 🚀 very long asset name indeed")
    elif case == "no_levels_and_out_of_range_levels":
        data = _synthetic(200, levels=(), window=5)
        render_chart(data)
        data = _synthetic(200, levels=(1.5, float("nan"), -1.0, 1.0, 0.95))
    else:
        d = _synthetic(200)
        neg = pd.concat({"a": d.price_a, "b": d.price_b}, axis=1) - 150.0  # log axis impossible: linear
        data = _synthetic(
            200,
            corr=d.corr.set_axis(d.corr.index.tz_localize(None)),
            prices=neg.set_axis(neg.index.tz_localize(None)),
        )
    png = render_chart(data)
    assert _png_size(png) == (WIDTH, HEIGHT)
    assert len(png) < MAX_BYTES


def test_long_series_stays_small() -> None:
    png = render_chart(_synthetic(10_000, freq="1h"))
    assert len(png) < MAX_BYTES


def test_no_pyplot_imported() -> None:
    # pyplot keeps global figure state; a fresh interpreter proves render_chart never loads it.
    code = (
        "import sys, pandas as pd; from bot.charts import render_chart; from core.models import ChartData; "
        "i = pd.date_range('2024-01-01', periods=3, tz='UTC'); "
        "c = pd.DataFrame({'value': [0.1, 0.2, 0.3], 'ci_lo': 0.0, 'ci_hi': 0.5}, index=i); "
        "pa = pd.Series([100.0, 101, 102], index=i); pb = pd.Series([100.0, 99, 98], index=i); "
        "render_chart(ChartData('A', 'B', '1d', 2, c, pa, pb, (0.5,), '2024-01-03')); "
        "assert 'matplotlib.pyplot' not in sys.modules"
    )
    root = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)
