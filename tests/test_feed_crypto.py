"""feeds.crypto at the wire: the real ccxt async client against the loopback Binance server.

Expected bars come from an independent pandas read of the real BTCUSDT 1h CSV.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from binance_server import BinanceServer  # tests/ is on sys.path (rootdir conftest)

from core.config import Config, parse_config
from core.errors import UnknownAssetError
from feeds.crypto import fetch_closed_candles, make_exchange
from service.sync import poll_crypto
from storage.bars import read_bars
from storage.db import open_db
from storage.status import all_status

CSV = "intraday/BTCUSDT_1h_binance_2023-2026.csv"
H = 3600


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


# Server clock 30 minutes into an hour: the 00:00 candle of 2023-05-15 is still forming.
NOW = ms("2023-05-15T00:30:00")


class Sleeps:
    """Injected instead of asyncio.sleep: records the backoff delays, waits for nothing."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def csv_bars(data_dir: Path) -> pd.DataFrame:
    raw = pd.read_csv(data_dir / CSV)
    ts = pd.to_datetime(raw["timestamp"], utc=True)
    df = raw[["open", "high", "low", "close", "volume"]].astype("float64")
    df.index = pd.Index(
        ((ts - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta(seconds=1)).to_numpy(),
        dtype="int64",
        name="ts",
    )
    return df


def make_cfg(urls: dict[str, str], *, btc: dict[str, Any] | None = None, **feeds: Any) -> Config:
    return parse_config(
        {
            "assets": [
                {"name": "BTC", "kind": "crypto", "exchange": "binance", "symbol": "BTC/USDT",
                 **(btc or {})},
                {"name": "ETH", "kind": "crypto", "exchange": "binance", "symbol": "ETH/USDT"},
                {"name": "IWM", "kind": "equity", "ticker": "IWM"},
            ],
            "feeds": {"ccxt_urls": urls, "backfill_days": 75, "retries": 3,
                      "backoff_seconds": 0.5, **feeds},
        }
    )


@pytest.fixture
async def server(data_dir: Path) -> AsyncIterator[BinanceServer]:
    async with BinanceServer(data_dir / CSV, now_ms=NOW) as s:
        yield s


@pytest.fixture
def db(db_path: Path) -> Any:
    return open_db(db_path)


def bars_table(db: Any) -> list[tuple[Any, ...]]:
    return list(db.execute("SELECT * FROM bars ORDER BY asset, timeframe, ts").fetchall())


async def test_backfill_paginates_and_matches_csv(server, db, data_dir) -> None:
    cfg = make_cfg({"binance": server.url})
    seen: list[tuple[str, str, int]] = []
    sleeps = Sleeps()
    results = await poll_crypto(db, cfg, assets=["btc"], now_ms=NOW, sleep=sleeps,
                                progress=lambda a, tf, n: seen.append((a, tf, n)),
                                reported=set())
    assert [(r.asset, r.timeframe, r.ok, r.source) for r in results] == [
        ("BTC", "1h", True, "binance"), ("BTC", "1d", True, "binance")]
    # 2023-03-01 .. 2023-05-14 23:00 is 1,799 closed hours (one real hole): two pages.
    start = ms("2023-03-01T00:00:00") // 1000
    expected = csv_bars(data_dir).loc[start : NOW // 1000 - H]
    assert len(expected) == 75 * 24 - 1
    stored = read_bars(db, "BTC", "1h")
    pd.testing.assert_frame_equal(stored, expected, check_exact=True)
    assert results[0].fetched == results[0].inserted == len(expected)
    assert server.count("/api/v3/klines", symbol="BTCUSDT", interval="1h") == 2
    assert server.count("/api/v3/klines", symbol="ETHUSDT") == 0
    assert [n for a, tf, n in seen if tf == "1h"] == [1000, len(expected)]
    assert sleeps.delays == []
    status = {(s.source, s.asset): s for s in all_status(db)}
    assert status[("binance", "BTC")].last_error is None


async def test_daily_candles_are_utc_day_aggregates(server, db, data_dir) -> None:
    await poll_crypto(db, make_cfg({"binance": server.url}), assets=["BTC"], now_ms=NOW,
                      timeframes=("1d",), sleep=Sleeps(), reported=set())
    # Every hour of the closed days 2023-03-01 .. 2023-05-14.
    h = csv_bars(data_dir).loc[ms("2023-03-01T00:00:00") // 1000 : NOW // 1000 - 1801]
    g = h.groupby(h.index // 86400 * 86400)
    expected = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(),
                             "low": g["low"].min(), "close": g["close"].last(),
                             "volume": g["volume"].sum()}).rename_axis("ts")
    stored = read_bars(db, "BTC", "1d")
    assert len(stored) == 75  # 2023-03-01 .. 2023-05-14; 2023-05-15 is still forming
    cols = ["open", "high", "low", "close"]
    pd.testing.assert_frame_equal(stored[cols], expected[cols], check_exact=True)
    pd.testing.assert_series_equal(stored["volume"], expected["volume"], rtol=1e-12)
    # The day of Binance's halt (2023-03-24 13:00 missing) aggregates its 23 real hours.
    day = ms("2023-03-24T00:00:00") // 1000
    hours = h.loc[day : day + 86400 - 1]
    assert len(hours) == 23
    assert stored.loc[day, "close"] == hours["close"].iloc[-1]
    assert stored.index.max() == ms("2023-05-14T00:00:00") // 1000


async def test_forming_candle_is_dropped(server) -> None:
    server.now_ms = ms("2024-03-01T10:20:00")
    ex = make_exchange("binance", make_cfg({"binance": server.url}).feeds)
    try:
        df = await fetch_closed_candles(ex, "BTC/USDT", "1h", ms("2024-03-01T00:00:00"),
                                        now_ms=server.now_ms, retries=0, backoff=0.0)
        # The server did send the forming 10:00 candle; the feed must not keep it.
        assert ms("2024-03-01T10:00:00") in server.klines_frame("BTCUSDT", "1h").index
        assert list(df.index) == [ms("2024-03-01T00:00:00") // 1000 + i * H for i in range(10)]
        daily = await fetch_closed_candles(ex, "BTC/USDT", "1d", ms("2024-02-28T00:00:00"),
                                           now_ms=server.now_ms, retries=0, backoff=0.0)
        assert list(daily.index) == [ms("2024-02-28T00:00:00") // 1000 + i * 86400
                                     for i in range(2)]
    finally:
        await ex.close()


async def test_second_poll_fetches_only_new_candles(server, db) -> None:
    cfg = make_cfg({"binance": server.url})
    await poll_crypto(db, cfg, now_ms=NOW, sleep=Sleeps(), reported=set())
    before = bars_table(db)
    server.requests.clear()
    later = NOW + 5 * H * 1000  # 05:30: five more closed hours, the day is still forming
    server.now_ms = later
    results = await poll_crypto(db, cfg, now_ms=later, sleep=Sleeps(), reported=set())
    by = {(r.asset, r.timeframe): r for r in results}
    for asset in ("BTC", "ETH"):
        hourly = by[asset, "1h"]
        assert (hourly.fetched, hourly.inserted, hourly.updated) == (5, 5, 0)
        assert (by[asset, "1d"].fetched, by[asset, "1d"].inserted) == (0, 0)
        assert server.count("/api/v3/klines", symbol=f"{asset}USDT", interval="1h",
                            startTime=str(NOW - 1800 * 1000)) == 1
    # 1d: the next day to fetch (05-15) is still forming, so no request at all.
    assert server.count("/api/v3/klines") == 2
    after = bars_table(db)
    assert set(before) <= set(after)
    assert len(after) == len(before) + 10
    # Polling again at the same instant asks the exchange for nothing.
    server.requests.clear()
    await poll_crypto(db, cfg, now_ms=later, sleep=Sleeps(), reported=set())
    assert server.count("/api/v3/klines") == 0


async def test_rate_limit_and_unavailable_are_retried_with_backoff(server, db, data_dir) -> None:
    server.rate_limited(times=1, path="/api/v3/klines", symbol="BTCUSDT")
    server.unavailable(times=1, path="/api/v3/klines", symbol="BTCUSDT")
    server.banned(times=1, path="/api/v3/klines", symbol="BTCUSDT")
    sleeps = Sleeps()
    results = await poll_crypto(db, make_cfg({"binance": server.url}), assets=["BTC"],
                                timeframes=("1h",), now_ms=NOW, sleep=sleeps, reported=set())
    assert results[0].ok, results[0].error
    assert sleeps.delays == [1.0, 1.0, 2.0]  # the 429 said Retry-After: 1, over the 0.5 s backoff
    assert [r.status for r in server.requests if r.path == "/api/v3/klines"] == [
        429, 503, 418, 200, 200]
    expected = csv_bars(data_dir).loc[ms("2023-03-01T00:00:00") // 1000 : NOW // 1000 - H]
    pd.testing.assert_frame_equal(read_bars(db, "BTC", "1h"), expected, check_exact=True)


async def test_retry_after_is_honoured_and_a_ban_is_not_slept_through(server, db) -> None:
    server.rate_limited(times=1, retry_after=7, path="/api/v3/klines", symbol="BTCUSDT")
    sleeps = Sleeps()
    cfg = make_cfg({"binance": server.url})
    results = await poll_crypto(db, cfg, assets=["BTC"], timeframes=("1h",), now_ms=NOW, sleep=sleeps,
                                reported=set())
    assert results[0].ok, results[0].error
    assert sleeps.delays == [7.0]  # not the 0.5 s backoff: the exchange asked for 7
    # Retry-After over an hour (an IP ban): this poll gives up at once; the next poll tries again.
    server.requests.clear()
    server.rate_limited(times=1, retry_after=3600, path="/api/v3/klines", symbol="BTCUSDT")
    sleeps = Sleeps()
    results = await poll_crypto(db, cfg, assets=["BTC"], timeframes=("1h",), now_ms=NOW + 3 * H * 1000,
                                sleep=sleeps, reported=set())
    assert not results[0].ok and "retry after 3600s" in str(results[0].error)
    assert sleeps.delays == [] and server.count("/api/v3/klines") == 1


async def test_truncated_json_is_retried_not_read_as_the_end_of_the_data(server, db, data_dir) -> None:
    """ccxt parses a cut-off body to None and fetch_ohlcv then returns [], which looks like "no
    more candles": the poll would stop early without a word. It is a temporary error instead."""
    server.fail(200, '[[1677628800000,"23141.', times=1, path="/api/v3/klines", symbol="BTCUSDT")
    sleeps = Sleeps()
    results = await poll_crypto(db, make_cfg({"binance": server.url}), assets=["BTC"],
                                timeframes=("1h",), now_ms=NOW, sleep=sleeps, reported=set())
    assert results[0].ok, results[0].error
    assert sleeps.delays == [0.5]
    expected = csv_bars(data_dir).loc[ms("2023-03-01T00:00:00") // 1000 : NOW // 1000 - H]
    pd.testing.assert_frame_equal(read_bars(db, "BTC", "1h"), expected, check_exact=True)


async def test_persistent_failure_reports_error_and_spares_other_assets(
    server, db, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="feeds.crypto")
    server.unavailable(times=None, path="/api/v3/klines", symbol="ETHUSDT")
    sleeps = Sleeps()
    cfg = make_cfg({"binance": server.url}, retries=2, backoff_seconds=1.0)
    results = await poll_crypto(db, cfg, timeframes=("1h",), now_ms=NOW, sleep=sleeps,
                                reported=set())
    by = {r.asset: r for r in results}
    assert by["BTC"].ok and by["BTC"].inserted == 75 * 24 - 1
    err = by["ETH"].error
    assert err is not None and err.startswith("binance: ETH/USDT 1h: ExchangeNotAvailable")
    assert "gave up after 3 attempts" in err
    assert "http" not in err and "\n" not in err and "<" not in err.replace("<url>", "")
    assert sleeps.delays == [1.0, 2.0]
    assert server.count("/api/v3/klines", symbol="ETHUSDT") == 3
    assert read_bars(db, "ETH", "1h").empty
    status = {(s.source, s.asset): s for s in all_status(db)}
    assert status[("binance", "ETH")].last_error == err
    assert status[("binance", "ETH")].last_ok_at is None
    # ccxt's own messages carry the full request URL; none of it reaches our logs.
    assert caplog.records and not any("127.0.0.1" in r.getMessage() for r in caplog.records)


async def test_fallback_exchange_used_when_primary_is_down(server, db, data_dir) -> None:
    async with BinanceServer(data_dir / CSV, now_ms=NOW) as backup:
        server.unavailable(times=None)  # every path, forever
        cfg = make_cfg({"binance": server.url, "binanceus": backup.url},
                       btc={"fallback_exchanges": ["binanceus"]}, retries=2)
        sleeps = Sleeps()
        results = await poll_crypto(db, cfg, assets=["BTC"], now_ms=NOW, sleep=sleeps,
                                    reported=set())
        assert [(r.timeframe, r.source, r.ok) for r in results] == [
            ("1h", "binanceus", True), ("1d", "binanceus", True)]
        # Both timeframe jobs share one failed market load on the primary: one retry series.
        assert server.count("/api/v3/exchangeInfo") == 3
        assert sleeps.delays == [0.5, 1.0]
        assert backup.count("/api/v3/klines", interval="1h") == 2
        expected = csv_bars(data_dir).loc[ms("2023-03-01T00:00:00") // 1000 : NOW // 1000 - H]
        stored = read_bars(db, "BTC", "1h")
        pd.testing.assert_frame_equal(stored, expected, check_exact=True)
        sources = {r[0] for r in db.execute("SELECT DISTINCT source FROM bars").fetchall()}
        assert sources == {"binanceus"}
        status = {(s.source, s.asset): s for s in all_status(db)}
        assert status[("binanceus", "BTC")].last_ok_at is not None
        assert "loading markets" in (status[("binance", "BTC")].last_error or "")


async def test_unknown_symbol_is_permanent_reported_once(server, db, caplog) -> None:
    cfg = make_cfg({"binance": server.url}, btc={"symbol": "BTC/USDX"})
    reported: set[tuple[str, str]] = set()
    sleeps = Sleeps()
    caplog.set_level(logging.INFO, logger="feeds.crypto")
    for _ in range(2):
        results = await poll_crypto(db, cfg, assets=["BTC"], now_ms=NOW, sleep=sleeps,
                                    reported=reported)
        assert [r.error for r in results] == [
            "binance: no market BTC/USDX (check assets[0].symbol)"] * 2
    assert sleeps.delays == []
    assert server.count("/api/v3/klines") == 0
    logged = [r for r in caplog.records if "BTC/USDX" in r.getMessage()]
    assert len(logged) == 1 and logged[0].levelno == logging.ERROR
    assert bars_table(db) == []


async def test_invalid_symbol_answer_is_not_retried(server, db) -> None:
    server.invalid_symbol(times=None, path="/api/v3/klines", symbol="ETHUSDT")
    sleeps = Sleeps()
    results = await poll_crypto(db, make_cfg({"binance": server.url}), timeframes=("1h",),
                                now_ms=NOW, sleep=sleeps, reported=set())
    by = {r.asset: r for r in results}
    assert by["BTC"].ok
    assert by["ETH"].error == ('binance: ETH/USDT 1h: BadSymbol: {"code": -1121, "msg": '
                               '"Invalid symbol."} (check assets[1].symbol)')
    assert server.count("/api/v3/klines", symbol="ETHUSDT") == 1
    assert sleeps.delays == []


async def test_failures_leave_the_database_unchanged(server, db) -> None:
    cfg = make_cfg({"binance": server.url}, retries=1)
    await poll_crypto(db, cfg, now_ms=NOW, sleep=Sleeps(), reported=set())
    before = bars_table(db)
    later = NOW + 30 * H * 1000
    server.now_ms = later
    # Thirty new hours and a new day exist, but every candle request now fails for good.
    server.unavailable(times=None, path="/api/v3/klines", symbol="BTCUSDT")
    server.invalid_symbol(times=None, path="/api/v3/klines", symbol="ETHUSDT")
    results = await poll_crypto(db, cfg, now_ms=later, sleep=Sleeps(), reported=set())
    assert not any(r.ok for r in results)
    assert bars_table(db) == before


async def test_bad_closes_are_skipped(server, db) -> None:
    zero, negative = ms("2023-05-10T03:00:00"), ms("2023-05-10T04:00:00")
    server.patch("BTCUSDT", "1h", zero, close=0.0)
    server.patch("BTCUSDT", "1h", negative, close=-5.0)
    results = await poll_crypto(db, make_cfg({"binance": server.url}), assets=["BTC"],
                                timeframes=("1h",), now_ms=NOW, sleep=Sleeps(), reported=set())
    assert results[0].ok and results[0].fetched == 75 * 24 - 3
    stored = read_bars(db, "BTC", "1h")
    assert zero // 1000 not in stored.index and negative // 1000 not in stored.index
    assert (stored["close"] > 0).all()


async def test_since_refetches_and_names_are_resolved(server, db) -> None:
    cfg = make_cfg({"binance": server.url})
    await poll_crypto(db, cfg, assets=["BTC"], now_ms=NOW, sleep=Sleeps(), reported=set())
    server.requests.clear()
    results = await poll_crypto(db, cfg, assets=["btc", "IWM"], timeframes=("1h",),
                                since=datetime(2023, 5, 14, 12, 0), now_ms=NOW,
                                sleep=Sleeps(), reported=set())
    assert [(r.asset, r.fetched, r.inserted, r.updated) for r in results] == [("BTC", 12, 0, 0)]
    assert server.count("/api/v3/klines", startTime=str(ms("2023-05-14T12:00:00"))) == 1
    with pytest.raises(UnknownAssetError):
        await poll_crypto(db, cfg, assets=["DOGE"], now_ms=NOW, reported=set())


def test_make_exchange_is_spot_only_rate_limited_and_rebased() -> None:
    feeds = make_cfg({"binance": "http://127.0.0.1:9"}, timeout_seconds=7.5).feeds
    ex = make_exchange("binance", feeds)
    assert ex.enableRateLimit is True and ex.timeout == 7500
    assert ex.options["fetchMarkets"]["types"] == ["spot"]
    assert ex.urls["api"]["public"] == "http://127.0.0.1:9/api/v3"
    assert ex.urls["api"]["sapi"] == "http://127.0.0.1:9/sapi/v1"
    assert all(str(u).startswith("http://127.0.0.1:9/") for u in ex.urls["api"].values())
    other = make_exchange("binanceus", feeds)
    assert other.urls["api"]["public"].startswith("https://api.binance.us/")
