"""Alignment on the NYSE clock, checked on real hourly data against pandas.

Half days, holidays, weekends, DST changes and a missing session on one side, plus the
full 1h and 1d-from-hourly pipelines against an independent merge_asof computation.
"""

from __future__ import annotations

from pathlib import Path

import exchange_calendars as xcals
import numpy as np
import pandas as pd
import pytest
from reference import daily_close, expected

from core.config import parse_config
from monitors.align import crypto_obs, equity_obs, grid, pair_returns
from service.pipeline import update_correlations
from service.queries import corr_readings
from service.sync import import_csv
from storage import corr as corr_store
from storage.bars import read_bars
from storage.db import open_db

EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
SCHED = xcals.get_calendar("XNYS", start="2022-01-01", end="2026-12-31").schedule


def ts(s: str) -> int:
    return int((pd.Timestamp(s, tz="UTC") - EPOCH) // pd.Timedelta(seconds=1))


def cfg_for(tmp_path: Path, timeframes: list[str], windows: list[int]):  # type: ignore[no-untyped-def]
    return parse_config(
        {
            "storage": {"path": str(tmp_path / "a.db")},
            "assets": [
                {"name": "BTC", "kind": "crypto", "exchange": "binance", "symbol": "BTC/USDT"},
                {"name": "IWM", "kind": "equity", "ticker": "IWM"},
            ],
            "correlation": {"timeframes": timeframes, "windows": windows},
        }
    )


@pytest.fixture(scope="module")
def hourly_db(tmp_path_factory: pytest.TempPathFactory, data_dir: Path):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("hourly")
    cfg = cfg_for(tmp, ["1h", "1d"], [35])
    db = open_db(cfg.storage.path)
    # tests/data/PROVENANCE.md: drop the last bar (IWM's are incomplete; so was the untrimmed BTC file's).
    import_csv(db, cfg, "BTC", data_dir / "intraday" / "BTCUSDT_1h_binance_2023-2026.csv", drop_last=True)
    import_csv(db, cfg, "IWM", data_dir / "intraday" / "IWM_1h_2024-2026.csv", drop_last=True)
    import_csv(db, cfg, "IWM", data_dir / "IWM_daily_close.csv", drop_last=True)
    update_correlations(db, cfg)
    return cfg, db


def ref_btc_hourly(data_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(data_dir / "intraday" / "BTCUSDT_1h_binance_2023-2026.csv").iloc[:-1]
    end = (pd.to_datetime(df["timestamp"], utc=True) + pd.Timedelta(hours=1)).astype("datetime64[ns, UTC]")
    return pd.DataFrame({"end": end, "btc": df["close"].to_numpy(float)})


def ref_btc_at(data_dir: Path, times: pd.Series) -> pd.Series:
    """BTC close of the last candle ending at or before each time, younger than 1 h."""
    left = pd.DataFrame({"t": pd.to_datetime(times, utc=True).astype("datetime64[ns, UTC]")}).sort_values("t")
    m = pd.merge_asof(
        left, ref_btc_hourly(data_dir), left_on="t", right_on="end", tolerance=pd.Timedelta(minutes=59, seconds=59)
    )
    return pd.Series(m["btc"].to_numpy(), index=pd.DatetimeIndex(m["t"]))


def test_hourly_pipeline_matches_pandas(hourly_db, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, db = hourly_db
    iwm = pd.read_csv(data_dir / "intraday" / "IWM_1h_2024-2026.csv").iloc[:-1]
    start = pd.to_datetime(iwm["timestamp"], utc=True)
    day = start.dt.tz_convert("America/New_York").dt.tz_localize(None).dt.normalize()
    close = SCHED["close"].reindex(day).to_numpy()
    end = pd.Series(np.minimum(start + pd.Timedelta(hours=1), close), index=iwm.index)
    eq = pd.Series(iwm["close"].to_numpy(float), index=pd.DatetimeIndex(end))
    btc = ref_btc_at(data_dir, end).dropna()

    def same_session(idx: pd.DatetimeIndex) -> np.ndarray:
        d = idx.tz_convert("America/New_York").date
        return np.concatenate([[False], d[1:] == d[:-1]])

    exp = expected(btc, eq, 35, cfg.correlation.ewma_lambda, same_session=same_session)
    (sid,) = [i for (i,) in db.execute("SELECT id FROM series WHERE timeframe = '1h' AND window = 35")]
    got = corr_store.read_series(db, sid)[["value", "ci_lo", "ci_hi", "beta", "ewma", "n"]].astype(float)
    got.index = pd.DatetimeIndex(pd.to_datetime(got.index.astype("int64"), unit="s", utc=True))
    assert len(got) > 2500
    assert list(got.index) == list(exp.index)
    for col in ("value", "ci_lo", "ci_hi", "beta", "ewma", "n"):
        g, e = got[col].to_numpy(), exp[col].to_numpy(float)
        assert np.array_equal(np.isnan(g), np.isnan(e)), col
        np.testing.assert_allclose(g[~np.isnan(g)], e[~np.isnan(e)], rtol=0, atol=1e-9, err_msg=col)
    # No return spans a session gap: the first hour of every session has no row.
    first_bars = got.index[got.index.tz_convert("America/New_York").strftime("%H:%M") == "10:30"]
    assert len(first_bars) == 0


def test_daily_crypto_sampled_at_session_close_from_hourly(hourly_db, data_dir: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, db = hourly_db
    sessions = SCHED.loc["2023-01-01":"2026-02-02"]
    btc = ref_btc_at(data_dir, pd.Series(sessions["close"].to_numpy())).dropna()
    btc.index = btc.index.tz_convert("America/New_York").tz_localize(None).normalize()
    iwm = daily_close(data_dir / "IWM_daily_close.csv")
    exp = expected(btc, iwm, 35, cfg.correlation.ewma_lambda)
    rows = db.execute(
        "SELECT asof, value, beta FROM corr_view WHERE timeframe = '1d' AND window = 35 ORDER BY asof"
    ).fetchall()
    got = pd.DataFrame(rows, columns=["asof", "value", "beta"]).set_index("asof")
    got.index = pd.DatetimeIndex(pd.to_datetime(got.index))
    # Hourly BTC starts 2023-01-01; the daily series uses it for every session it covers.
    exp = exp[exp.index >= got.index[0]]
    np.testing.assert_allclose(got["value"].to_numpy(float), exp["value"].reindex(got.index).to_numpy(float), atol=1e-9)
    np.testing.assert_allclose(got["beta"].to_numpy(float), exp["beta"].reindex(got.index).to_numpy(float), atol=1e-9)


def test_half_day_dst_holiday_weekend(hourly_db) -> None:  # type: ignore[no-untyped-def]
    _, db = hourly_db
    h = read_bars(db, "BTC", "1h")
    s = crypto_obs({3600: h}, None, "1d")
    candle = h["close"]
    # Black Friday 2024 closes at 13:00 ET = 18:00 UTC: the candle opened 17:00 UTC.
    assert s[ts("2024-11-29")] == candle[ts("2024-11-29 17:00")]
    # DST: before the March 2024 change the close is 21:00 UTC, after it 20:00 UTC.
    assert s[ts("2024-03-08")] == candle[ts("2024-03-08 20:00")]
    assert s[ts("2024-03-11")] == candle[ts("2024-03-11 19:00")]
    # Independence Day and a weekend have no observation.
    for day in ("2024-07-04", "2024-07-06", "2024-07-07"):
        assert ts(day) not in s.index
    # The hourly clock on the half day: 10:30, 11:30, 12:30 ET and the 13:00 close.
    g = grid("1h")
    day = g.ts[g.session == ts("2024-11-29")]
    assert [pd.Timestamp(t, unit="s", tz="UTC").strftime("%H:%M") for t in day] == ["15:30", "16:30", "17:30", "18:00"]
    # A regular winter day has 7 hourly observations ending at 21:00 UTC.
    day = g.ts[g.session == ts("2024-12-02")]
    assert len(day) == 7 and pd.Timestamp(day[-1], unit="s", tz="UTC").strftime("%H:%M") == "21:00"


def test_missing_session_on_one_side_spans_the_gap(hourly_db) -> None:  # type: ignore[no-untyped-def]
    _, db = hourly_db
    btc = crypto_obs({3600: read_bars(db, "BTC", "1h")}, None, "1d")
    iwm = equity_obs(read_bars(db, "IWM", "1d"), "1d")
    gap = ts("2024-06-05")
    r = pair_returns(btc, iwm.drop(gap), "1d")
    assert gap not in r.index
    after = ts("2024-06-06")
    assert r.loc[after, "x"] == pytest.approx(np.log(btc[after] / btc[ts("2024-06-04")]), abs=1e-12)
    assert r.loc[after, "y"] == pytest.approx(np.log(iwm[after] / iwm[ts("2024-06-04")]), abs=1e-12)


def test_too_few_returns_says_how_many(tmp_path: Path, data_dir: Path) -> None:
    cfg = cfg_for(tmp_path, ["1d"], [30, 90])
    db = open_db(cfg.storage.path)
    btc = pd.read_csv(data_dir / "BTC-USD_daily_2014-2024.csv")
    iwm = pd.read_csv(data_dir / "IWM_daily_close.csv")
    short = tmp_path / "btc.csv"
    btc[(btc["Date"] >= "2024-09-01")].to_csv(short, index=False)
    import_csv(db, cfg, "BTC", short)
    iwm_short = tmp_path / "iwm.csv"
    iwm[(iwm["Date"] >= "2024-09-01") & (iwm["Date"] <= "2024-12-31")].to_csv(iwm_short, index=False)
    import_csv(db, cfg, "IWM", iwm_short)
    update_correlations(db, cfg)
    w30, w90 = corr_readings(db, cfg, "BTC", "IWM")
    n_returns = len(pd.read_csv(iwm_short)) - 1  # BTC has every day; IWM every session
    assert w30.value is not None and w30.n == 30
    assert w90.value is None and w90.n == n_returns < 90
    assert w90.missing() == f"BTC/IWM 1d w90: {n_returns} of 90 returns"
