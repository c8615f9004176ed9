"""The yfinance equity feed, tested at the wire: the real yfinance client talks to a
loopback server (tests/yahoo_server.py) serving recorded Yahoo responses and real CSV bars."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yfinance as yf
from yahoo_server import YahooServer

from core.config import Config, FeedsConfig, parse_config
from core.errors import PermanentFeedError
from feeds.equities import fetch_equity_bars
from service.sync import poll_equities
from storage.bars import read_bars
from storage.db import open_db
from storage.status import all_status


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def day_ts(d: str) -> int:
    return int(pd.Timestamp(d, tz="UTC").timestamp())


@pytest.fixture(scope="module", autouse=True)
def _yf_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # yfinance persists ticker timezones on disk; keep that out of the user's home.
    yf.set_tz_cache_location(str(tmp_path_factory.mktemp("yfcache")))


@pytest.fixture
def server(data_dir: Path) -> Iterator[YahooServer]:
    with YahooServer(data_dir) as srv:
        yield srv


def feeds(srv: YahooServer, **kw: Any) -> FeedsConfig:
    return FeedsConfig(yahoo_base_url=srv.base_url, **kw)


def config(
    srv: YahooServer, tickers: dict[str, str], base_url: str | None = None, **feed_kw: Any
) -> Config:
    assets: list[dict[str, Any]] = [
        {"name": "BTC", "kind": "crypto", "exchange": "binance", "symbol": "BTC/USDT"}
    ]
    assets += [{"name": n, "kind": "equity", "ticker": t} for n, t in tickers.items()]
    return parse_config(
        {
            "assets": assets,
            "feeds": {
                "yahoo_base_url": base_url or srv.base_url, "backoff_seconds": 2.0, **feed_kw
            },
        }
    )


class Sleeps(list[float]):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def csv_daily(data_dir: Path, name: str) -> pd.Series:
    raw = pd.read_csv(data_dir / name, index_col="Date")
    raw.index = [day_ts(d) for d in raw.index]
    return raw["Close"]


# ---- fetch_equity_bars -----------------------------------------------------------------


def test_batched_daily_fetch_matches_csv(server: YahooServer, data_dir: Path) -> None:
    out = fetch_equity_bars(
        ["IWM", "QQQ", "^RUT"], "1d", utc(2025, 6, 1), utc(2025, 7, 12),
        feeds=feeds(server), now=utc(2025, 7, 14),
    )
    assert set(out) == {"IWM", "QQQ", "^RUT"}
    for ticker, fname in [("IWM", "IWM_daily_ohlcv_2025-07-11.csv"),
                          ("QQQ", "QQQ_daily_ohlcv_2025-07-11.csv"),
                          ("^RUT", "RUT_index_daily_ohlcv_2025-07-11.csv")]:
        expected = csv_daily(data_dir, fname).loc[day_ts("2025-06-02"):]
        got = out[ticker]
        assert list(got.index) == list(expected.index)  # 00:00 UTC of each session date
        assert got.index[0] == day_ts("2025-06-02") and got.index[-1] == day_ts("2025-07-11")
        pd.testing.assert_series_equal(got["close"], expected, check_names=False, rtol=1e-12)
    # one chart request per ticker (plus yfinance's timezone probes), all on the loopback
    assert sorted(r.symbol for r in server.chart_log()) == ["IWM", "QQQ", "^RUT"]


def test_recorded_qqq_fixture_is_auto_adjusted(server: YahooServer) -> None:
    out = fetch_equity_bars(["QQQ"], "1d", utc(2020, 1, 1), utc(2020, 1, 3), feeds=feeds(server))
    df = out["QQQ"]
    assert list(df.index) == [day_ts("2020-01-02")]
    row = df.iloc[0]
    assert row["close"] == pytest.approx(209.6380615234375, rel=1e-12)  # adjclose, not 216.16
    ratio = 209.6380615234375 / 216.16000366210938
    assert row["open"] == pytest.approx(214.39999389648438 * ratio, rel=1e-12)
    assert row["volume"] == 30969400


def test_aapl_fixture_split_and_dividend(server: YahooServer, data_dir: Path) -> None:
    path = data_dir / "api_fixtures/yahoo_chart/chart-AAPL-2020-08-31-to-2020-11-07.json"
    body = json.loads(path.read_text())["response"]["bodyJson"]["chart"]["result"][0]
    out = fetch_equity_bars(["AAPL"], "1d", utc(2020, 8, 31), utc(2020, 11, 7), feeds=feeds(server))
    df = out["AAPL"]
    adj = body["indicators"]["adjclose"][0]["adjclose"]
    dates = [
        pd.Timestamp(t, unit="s", tz="America/New_York").strftime("%Y-%m-%d")
        for t in body["timestamp"]
    ]
    assert list(df.index) == [day_ts(d) for d in dates]
    assert df["close"].tolist() == pytest.approx(adj, rel=1e-12)
    # 4:1 split on the first day: prices are on the post-split scale, no jump across it
    assert df["close"].pct_change().abs().max() < 0.15
    # dividend 0.205 going ex on 2020-11-06: bars before it carry one more adjustment step
    ratio = df["close"].to_numpy() / body["indicators"]["quote"][0]["close"]
    step = 1 - 0.205 / body["indicators"]["quote"][0]["close"][-2]
    assert ratio[-2] / ratio[-1] == pytest.approx(step, rel=1e-4)
    assert ratio[0] == pytest.approx(ratio[-2], rel=1e-6)


def test_aapl_weekend_minute_request_is_empty(server: YahooServer) -> None:
    out = fetch_equity_bars(["AAPL"], "1m", utc(2025, 2, 1), utc(2025, 2, 2), feeds=feeds(server))
    assert out["AAPL"].empty
    # yfinance sends either period1/period2 or a range for this request: any 1m chart request counts.
    assert any(r.params.get("interval") == "1m" for r in server.chart_log("AAPL", history_only=False))


def test_unfinished_daily_session_dropped(server: YahooServer) -> None:
    server.now = int(utc(2025, 7, 11, 19).timestamp())  # 15:00 ET: the session is open
    out = fetch_equity_bars(["IWM"], "1d", utc(2025, 7, 1), None, feeds=feeds(server),
                            now=utc(2025, 7, 11, 19))
    assert out["IWM"].index[-1] == day_ts("2025-07-10")


@pytest.mark.parametrize(("hour", "minute", "has_today"), [(17, 55, False), (18, 5, True)])
def test_half_day_session_closes_at_13(
    server: YahooServer, hour: int, minute: int, has_today: bool
) -> None:
    now = utc(2024, 11, 29, hour, minute)  # Black Friday: NYSE closes 13:00 ET = 18:00 UTC
    server.now = int(now.timestamp())
    out = fetch_equity_bars(["IWM"], "1d", utc(2024, 11, 20), None, feeds=feeds(server), now=now)
    assert (day_ts("2024-11-29") in out["IWM"].index) is has_today
    assert day_ts("2024-11-27") in out["IWM"].index


@pytest.mark.parametrize(("minute", "kept"), [(55, False), (65, True)])
def test_last_hourly_bar_ends_at_the_close(server: YahooServer, minute: int, kept: bool) -> None:
    # 2025-07-10 (EDT): the 15:30 ET bar starts 19:30 UTC and, capped at the close, ends 20:00
    now = pd.Timestamp("2025-07-10 19:00", tz="UTC").to_pydatetime() + pd.Timedelta(minutes=minute)
    server.now = int(now.timestamp())
    out = fetch_equity_bars(["IWM"], "1h", utc(2025, 7, 10), None, feeds=feeds(server), now=now)
    last_bar = int(pd.Timestamp("2025-07-10 19:30", tz="UTC").timestamp())
    assert (last_bar in out["IWM"].index) is kept
    assert out["IWM"].index[0] == int(pd.Timestamp("2025-07-10 13:30", tz="UTC").timestamp())


def test_null_and_non_positive_closes_dropped(server: YahooServer) -> None:
    open_ts = {d: int(pd.Timestamp(f"{d} 09:30", tz="America/New_York").timestamp())
               for d in ("2025-07-08", "2025-07-09")}
    server.patch("IWM", open_ts["2025-07-08"], close=None, adjclose=None)
    server.patch("IWM", open_ts["2025-07-09"], close=0.0, adjclose=0.0)
    out = fetch_equity_bars(["IWM"], "1d", utc(2025, 7, 7), utc(2025, 7, 12), feeds=feeds(server))
    assert list(out["IWM"].index) == [day_ts(d) for d in ("2025-07-07", "2025-07-10", "2025-07-11")]


def test_unknown_ticker_fetch_raises_permanent(server: YahooServer) -> None:
    with pytest.raises(PermanentFeedError, match="NOPE"):
        fetch_equity_bars(
            ["IWM", "NOPE"], "1d", utc(2025, 7, 1), utc(2025, 7, 12), feeds=feeds(server)
        )


# ---- poll_equities ---------------------------------------------------------------------


async def test_hourly_poll_stores_utc_starts_and_drops_partial_bar(
    server: YahooServer, db_path: Path, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = utc(2026, 1, 2, 18)  # the file was saved ~18:00 UTC: its 17:30 bar is partial
    server.now = int(now.timestamp())
    cfg = config(server, {"IWM": "IWM"})
    db = open_db(db_path)
    with caplog.at_level(logging.DEBUG, logger="feeds.equities"):
        res = await poll_equities(db, cfg, timeframes=("1h",), now=now)
    assert [r.ok for r in res] == [True]
    assert "clamped" in caplog.text
    raw = pd.read_csv(data_dir / "intraday/IWM_1h_2024-2026.csv")
    expected = pd.Series(
        raw["close"].to_numpy(),
        index=pd.to_datetime(raw["timestamp"], utc=True).dt.as_unit("s").astype("int64"),
    )
    lo = int(now.timestamp()) - 729 * 86400
    expected = expected[(expected.index >= lo) & (expected.index < int(now.timestamp()) - 3600)]
    bars = read_bars(db, "IWM", "1h")
    assert bars.index[-1] == int(pd.Timestamp("2026-01-02 16:30", tz="UTC").timestamp())
    assert bars.index[0] >= lo
    pd.testing.assert_series_equal(
        bars["close"], expected, check_names=False, check_index_type=False
    )
    assert res[0].inserted == len(expected)


async def test_incremental_poll_fetches_only_new_bars(server: YahooServer, db_path: Path) -> None:
    cfg = config(server, {"IWM": "IWM", "RUT": "^RUT"}, backfill_days=60)
    db = open_db(db_path)
    first_now = utc(2025, 6, 30, 22)
    server.now = int(first_now.timestamp())
    res1 = await poll_equities(db, cfg, timeframes=("1d",), now=first_now)
    assert all(r.ok and r.inserted > 30 for r in res1)
    last = read_bars(db, "IWM", "1d").index[-1]
    assert last == day_ts("2025-06-30")

    now = utc(2025, 7, 12)
    server.now = int(now.timestamp())
    server.log.clear()
    res2 = await poll_equities(db, cfg, timeframes=("1d",), now=now)
    # 2025-07-01 .. 07-11: eight sessions (not the 4th of July)
    assert {r.asset: r.inserted for r in res2} == {"IWM": 8, "RUT": 8}
    assert all(r.updated == 0 for r in res2)
    hist = server.chart_log()
    assert len(hist) == 2 and all(int(r.params["period1"]) >= last - 8 * 86400 for r in hist)

    res3 = await poll_equities(db, cfg, timeframes=("1d",), now=now)
    assert [(r.inserted, r.updated) for r in res3] == [(0, 0), (0, 0)]


async def test_adjustment_drift_triggers_full_refetch(server: YahooServer, db_path: Path) -> None:
    cfg = config(server, {"IWM": "IWM"}, backfill_days=90)
    db = open_db(db_path)
    now = utc(2025, 7, 12)
    server.now = int(now.timestamp())
    await poll_equities(db, cfg, timeframes=("1d",), now=now)
    before = read_bars(db, "IWM", "1d")
    db.execute("DELETE FROM dirty")

    # Yahoo back-adjusts history after a dividend going ex on 2025-07-09.
    ex_date = int(pd.Timestamp("2025-07-09 09:30", tz="America/New_York").timestamp())
    server.rescale("IWM", 0.99, before=ex_date)
    server.log.clear()
    res = await poll_equities(db, cfg, timeframes=("1d",), now=now)
    after = read_bars(db, "IWM", "1d")
    hist = server.chart_log("IWM")
    assert len(hist) == 2  # the incremental overlap, then the full history
    assert int(hist[1].params["period1"]) <= before.index[0]
    old = before.index < day_ts("2025-07-09")
    assert (after["close"][old] / before["close"][old]).to_numpy() == pytest.approx(0.99, rel=1e-9)
    assert after["close"][~old].tolist() == before["close"][~old].tolist()
    assert res[0].updated == int(old.sum())
    dirty = db.execute("SELECT since_ts FROM dirty WHERE asset = 'IWM'").fetchone()
    assert dirty[0] == before.index[0]


async def test_unknown_ticker_is_permanent_and_reported_once(
    server: YahooServer, db_path: Path
) -> None:
    cfg = config(server, {"IWM": "IWM", "NOPE": "NOPE"}, backfill_days=30, retries=3)
    db = open_db(db_path)
    sleeps = Sleeps()
    now = utc(2025, 7, 12)
    res = await poll_equities(db, cfg, now=now, sleep=sleeps)
    by = {(r.asset, r.timeframe): r for r in res}
    assert by[("IWM", "1d")].ok and by[("IWM", "1d")].inserted > 15
    assert by[("IWM", "1h")].ok and by[("IWM", "1h")].inserted > 100
    assert not by[("NOPE", "1d")].ok and "unknown ticker" in str(by[("NOPE", "1d")].error)
    assert by[("NOPE", "1h")].error == by[("NOPE", "1d")].error
    assert sleeps == []  # a permanent error is not retried
    nope = [r for r in server.log if r.symbol == "NOPE"]
    assert nope and all(r.params.get("interval") == "1d" for r in nope)  # 1h never asked
    status = {s.asset: s for s in all_status(db)}
    assert status["NOPE"].last_error and status["IWM"].last_error is None


@pytest.mark.parametrize("status", [429, 500])
async def test_transient_errors_are_retried_with_backoff(
    server: YahooServer, db_path: Path, status: int
) -> None:
    cfg = config(server, {"IWM": "IWM"}, backfill_days=30, retries=4)
    db = open_db(db_path)
    sleeps = Sleeps()
    server.fail_next(status, 4)  # yfinance retries each failed request once itself
    res = await poll_equities(db, cfg, timeframes=("1d",), now=utc(2025, 7, 12), sleep=sleeps)
    assert res[0].ok and res[0].inserted > 15
    assert sleeps == [2.0, 4.0]


async def test_persistent_500_reports_error_and_leaves_db_unchanged(
    server: YahooServer, db_path: Path
) -> None:
    cfg = config(server, {"IWM": "IWM"}, backfill_days=30, retries=2)
    db = open_db(db_path)
    now = utc(2025, 7, 12)
    await poll_equities(db, cfg, timeframes=("1d",), now=utc(2025, 7, 3))
    before = read_bars(db, "IWM", "1d")
    server.fail_next(500, 10_000)
    sleeps = Sleeps()
    res = await poll_equities(db, cfg, timeframes=("1d",), now=now, sleep=sleeps)
    assert not res[0].ok and "HTTP 500" in str(res[0].error)
    assert sleeps == [2.0, 4.0]
    pd.testing.assert_frame_equal(read_bars(db, "IWM", "1d"), before)
    assert {s.asset: s for s in all_status(db)}["IWM"].last_error == res[0].error


async def test_connection_refused_is_temporary(db_path: Path, server: YahooServer) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = config(server, {"IWM": "IWM"}, base_url=f"http://127.0.0.1:{port}", retries=1)
    sleeps = Sleeps()
    res = await poll_equities(open_db(db_path), cfg, timeframes=("1d",), now=utc(2025, 7, 12),
                              sleep=sleeps)
    assert not res[0].ok and "unreachable" in str(res[0].error)
    assert sleeps == [2.0]
    assert server.log == []  # nothing leaked to the other server either
