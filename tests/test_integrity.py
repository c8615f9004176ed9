"""The integrity guards on real files, as a user meets them: cut downloads, the wrong file for
an asset, a differently adjusted download, absurd values, bad feed responses, and definition
changes that must recompute stored correlations.

Every refusal is checked to leave the database byte-for-byte as it was; every accepted
re-adjustment against an independent pandas read of the files (returns unchanged, one scale).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from binance_server import BinanceServer
from conftest import DEMO_DATA, TEST_DATA
from reference import basket, daily_close, expected
from test_feed_crypto import CSV, NOW, H, Sleeps, make_cfg, ms
from test_feed_equities import _yf_cache, config, day_ts, utc  # noqa: F401 (_yf_cache: fixture)
from yahoo_server import YahooServer

from core.config import Config, parse_config
from core.errors import ImportFileError
from feeds.csv_import import parse_csv
from service.cli import main
from service.demo import demo_config, demo_files
from service.pipeline import update_correlations
from service.queries import corr_readings
from service.sync import import_csv, poll_crypto, poll_equities
from storage.bars import read_bars
from storage.db import open_db
from storage.status import all_status

IWM_CLOSE = TEST_DATA / "IWM_daily_close.csv"  # Factor_Attribution, 2026-08-03 download
IWM_OHLCV = TEST_DATA / "IWM_daily_ohlcv_2025-07-11.csv"  # alitalbi, 2025-07-13 download
XLK_OHLCV = TEST_DATA / "XLK_daily_ohlcv_2025-07-11.csv"  # pre-split scale, ×2.0105
RUT_OHLCV = TEST_DATA / "RUT_index_daily_ohlcv_2025-07-11.csv"
BTC_2024 = TEST_DATA / "BTC-USD_daily_2014-2024.csv"
BTC_2025 = TEST_DATA / "BTC-USD_daily_2018-2025.csv"
IWM_1H = TEST_DATA / "intraday" / "IWM_1h_2024-2026.csv"
NOW_TS = int(pd.Timestamp("2026-11-29", tz="UTC").timestamp())  # a fixed "today" for the checks


@pytest.fixture(scope="module")
def cfg() -> Config:
    return demo_config(Path("unused.db"))


@pytest.fixture
def db(db_path: Path) -> sqlite_utils.Database:
    return open_db(db_path)


def digest(db: sqlite_utils.Database) -> str:
    rows = db.execute("SELECT * FROM bars ORDER BY asset, timeframe, ts").fetchall()
    rows += db.execute("SELECT * FROM dirty ORDER BY asset, timeframe").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def edited(tmp_path: Path, src: Path, name: str, lines: list[str] | None = None,
           raw: bytes | None = None) -> Path:
    p = tmp_path / name
    p.write_bytes(raw if raw is not None else "".join(lines or []).encode())
    return p


def lines_of(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


def refused(db: sqlite_utils.Database, cfg: Config, asset: str, path: Path, line: int | None,
            *words: str, **kw: Any) -> str:
    """Import must fail naming the file and line, and change nothing."""
    before, changes = digest(db), db.conn.total_changes
    with pytest.raises(ImportFileError) as err:
        import_csv(db, cfg, asset, path, now=NOW_TS, **kw)
    msg = str(err.value)
    assert err.value.line == line, msg
    assert msg.startswith(f"{path}:{line}: " if line else f"{path}: ") and "\n" not in msg
    for w in words:
        assert w in msg, msg
    assert digest(db) == before and db.conn.total_changes == changes
    return msg


# ---- interrupted downloads -------------------------------------------------------------------


def test_cut_inside_the_last_close_is_dropped_not_stored(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    import_csv(db, cfg, "IWM", IWM_CLOSE, now=NOW_TS)
    before = digest(db)
    src = lines_of(IWM_CLOSE)
    assert src[-2] == "2026-07-31,291.20001220703125\n"
    # The download stopped inside 2026-07-31's close: "…,291" with no newline after it.
    cut = edited(tmp_path, IWM_CLOSE, "cut.csv", [*src[:-2], "2026-07-31,291"])
    rep = import_csv(db, cfg, "IWM", cut, now=NOW_TS)
    assert rep.warnings == [(len(src) - 1, "partial last row (the file does not end with a "
                             "newline): dropped, not stored — a cut-off download?")]
    assert (rep.inserted, rep.updated, rep.unchanged) == (0, 0, len(src) - 3)
    assert digest(db) == before
    stored = read_bars(db, "IWM", "1d")
    assert stored.loc[int(pd.Timestamp("2026-07-31").timestamp()), "close"] == 291.20001220703125


def test_yahoo_row_cut_short_is_dropped(tmp_path: Path, cfg: Config, db: sqlite_utils.Database) -> None:
    src = lines_of(BTC_2025)
    # The last line ends inside the Close field; the file ends with a newline all the same.
    last = src[-2].split(",")
    cut = edited(tmp_path, BTC_2025, "btc.csv", [*src[:-2], ",".join(last[:4]) + ",934\n"])
    rep = import_csv(db, cfg, "BTC", cut, now=NOW_TS)
    assert rep.warnings == [(len(src) - 1, "partial last row (5 of 9 fields): dropped, not "
                             "stored — a cut-off download?")]
    ref = daily_close(BTC_2025).iloc[:-2]
    stored = read_bars(db, "BTC", "1d")
    assert len(stored) == len(ref) and stored["close"].iloc[-1] == ref.iloc[-1]


def test_cut_close_with_a_newline_is_refused(tmp_path: Path, cfg: Config, db: sqlite_utils.Database) -> None:
    import_csv(db, cfg, "IWM", IWM_CLOSE, now=NOW_TS)
    src = lines_of(IWM_CLOSE)
    cut = edited(tmp_path, IWM_CLOSE, "cut.csv", [*src[:-2], "2026-07-31,29\n"])
    refused(db, cfg, "IWM", cut, len(src) - 1, "would change 1 of", "largest -90.04% on 2026-07-31",
            "291.2 stored, 29 here", "--replace")


# ---- the wrong file for the asset -------------------------------------------------------------


def test_crypto_file_as_equity_is_refused(cfg: Config, db: sqlite_utils.Database) -> None:
    import_csv(db, cfg, "IWM", IWM_CLOSE, now=NOW_TS)
    # 2024-01-01 is a Monday, but New Year's Day: the NYSE was closed.
    refused(db, cfg, "IWM", BTC_2024, 2, "2024-01-01 (Monday) is not an NYSE session day",
            "114 bar(s) when the market was closed")  # 366 days − 252 sessions


def test_equity_file_as_crypto_is_refused(cfg: Config, db: sqlite_utils.Database) -> None:
    import_csv(db, cfg, "BTC", BTC_2024, now=NOW_TS)
    refused(db, cfg, "BTC", IWM_OHLCV, 2, "no weekend bar in 920 days", "an equity file?")


def test_eth_file_as_sol_is_refused(cfg: Config, db: sqlite_utils.Database) -> None:
    import_csv(db, cfg, "SOL", DEMO_DATA / "SOL-USD_daily.csv", now=NOW_TS)
    # The line named is the ETH file's line with the largest change.
    refused(db, cfg, "SOL", DEMO_DATA / "ETH-USD_daily.csv", 738,
            "would change 1961 of 1961 stored SOL 1d closes by more than 0.10%",
            "(largest +62470.06% on 2021-01-06: 1.92922 stored, 1207.11 here)")


def test_index_file_as_etf_is_refused(cfg: Config, db: sqlite_utils.Database) -> None:
    import_csv(db, cfg, "IWM", IWM_CLOSE, now=NOW_TS)
    refused(db, cfg, "IWM", RUT_OHLCV, 7, "would change 632 of 632 stored IWM 1d closes",
            "(largest +952.85% on 2023-01-10: 173.117 stored, 1822.65 here)")


def test_future_rows_and_wrong_timeframe_are_refused(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    src = lines_of(IWM_CLOSE)
    future = edited(tmp_path, IWM_CLOSE, "f.csv", [*src[:-1], "2099-01-02,300.5\n"])
    refused(db, cfg, "IWM", future, len(src), "2099-01-02 is in the future")
    refused(db, cfg, "IWM", IWM_1H, 3, "rows are 1h bars (mostly 3600 s apart), not the 30m bars",
            timeframe="30m")


# ---- a differently adjusted download -----------------------------------------------------------


def log_returns(s: pd.Series) -> pd.Series:
    return np.log(s).diff().dropna()


@pytest.mark.parametrize("lacking", [None, "2024-06-03"])
def test_readjusted_xlk_is_taken_on_one_scale(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database, lacking: str | None
) -> None:
    xlk_file = DEMO_DATA / "XLK_daily.csv"  # the 2026 download, after XLK's 2-for-1 split
    import_csv(db, cfg, "XLK", xlk_file, now=NOW_TS)
    new_file = XLK_OHLCV
    if lacking:  # a download that misses one row: the stored bar there is rescaled too
        kept = [line for line in lines_of(XLK_OHLCV) if not line.startswith(lacking)]
        new_file = edited(tmp_path, XLK_OHLCV, "xlk.csv", kept)
    rep = import_csv(db, cfg, "XLK", new_file, now=NOW_TS)
    assert len(rep.notes) == 1 and "re-adjusted history" in rep.notes[0] and "× 2.0105 from 2023-01-03" in rep.notes[0]
    old, new = daily_close(xlk_file), daily_close(new_file)
    ratio = float((new / old).dropna().median())
    stored = read_bars(db, "XLK", "1d")["close"]
    stored.index = pd.to_datetime(stored.index, unit="s")
    # The file's own closes where it has them, the old download × the ratio elsewhere...
    np.testing.assert_allclose(stored.loc[new.index], new.to_numpy(), rtol=1e-12)
    rest = old.index.difference(new.index)
    np.testing.assert_allclose(stored.loc[rest], old.loc[rest].to_numpy() * ratio, rtol=1e-12)
    # ... so every daily return is the old download's, the join 2025-07-11 -> 07-14 included
    # (before the guard it was a false -50 %).
    np.testing.assert_allclose(log_returns(stored), log_returns(old).loc[stored.index[1:]], atol=2e-5)
    join = stored.loc["2025-07-14"] / stored.loc["2025-07-11"] - 1
    assert abs(join - (old.loc["2025-07-14"] / old.loc["2025-07-11"] - 1)) < 1e-5


def test_readjusted_iwm_ohlcv_over_close_file(cfg: Config, db: sqlite_utils.Database) -> None:
    import_csv(db, cfg, "IWM", IWM_CLOSE, now=NOW_TS)
    rep = import_csv(db, cfg, "IWM", IWM_OHLCV, now=NOW_TS)
    assert "× 1.01039" in rep.notes[0]
    old = daily_close(IWM_CLOSE)
    stored = read_bars(db, "IWM", "1d")["close"]
    stored.index = pd.to_datetime(stored.index, unit="s")
    np.testing.assert_allclose(log_returns(stored), log_returns(old), atol=5e-6)


# ---- absurd values -------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "words"), [
    ("1e300", "1e300", ["close 1e+300 on 2024-06-03 is", "from the close 200.791 on 2024-05-31",
                        "more than an equity bar moves (integrity.max_move.equity = 0.5)"]),
    ("x1000", None, ["close 199659 on 2024-06-03 is +99336.3% from the close 200.791 on "
                     "2024-05-31"]),
])
def test_absurd_close_is_refused(tmp_path: Path, cfg: Config, db: sqlite_utils.Database,
                                 name: str, value: str | None, words: list[str]) -> None:
    src = lines_of(IWM_CLOSE)
    i = next(k for k, line in enumerate(src) if line.startswith("2024-06-03,"))
    date, close = src[i].rstrip("\n").split(",")
    src[i] = f"{date},{value if value else repr(float(close) * 1000)}\n"
    refused(db, cfg, "IWM", edited(tmp_path, IWM_CLOSE, f"{name}.csv", src), i + 1, *words)


def test_one_row_file_over_history_and_replace(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    import_csv(db, cfg, "IWM", IWM_CLOSE, now=NOW_TS)
    one = edited(tmp_path, IWM_CLOSE, "one.csv", ["Date,Close\n", "2024-01-02,1\n"])
    refused(db, cfg, "IWM", one, 2, "would change 1 of 1 stored IWM 1d closes",
            "(largest -99.49% on 2024-01-02: 194.199 stored, 1 here)")
    # A real-sized revision goes through with --replace, and says so.
    stored = read_bars(db, "IWM", "1d")
    day = int(pd.Timestamp("2024-01-02").timestamp())
    value = float(stored.loc[day, "close"]) * 1.01
    revised = edited(tmp_path, IWM_CLOSE, "rev.csv", ["Date,Close\n", f"2024-01-02,{value!r}\n"])
    refused(db, cfg, "IWM", revised, 2, "+1.00%")
    rep = import_csv(db, cfg, "IWM", revised, now=NOW_TS, replace=True)
    assert rep.updated == 1 and "--replace: 1 stored close(s) overwritten" in rep.notes[0]
    assert read_bars(db, "IWM", "1d").loc[day, "close"] == pytest.approx(stored.loc[day, "close"] * 1.01)


def test_chunked_reading_matches_one_chunk() -> None:
    whole = parse_csv(IWM_1H)
    chunked = parse_csv(IWM_1H, chunk_rows=97)
    pd.testing.assert_frame_equal(whole.bars, chunked.bars, check_exact=True)
    np.testing.assert_array_equal(whole.lines, chunked.lines)


# ---- the CLI --------------------------------------------------------------------------------------


def test_cli_refusal_exits_2_and_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f'[storage]\npath = "{tmp_path / "c.db"}"\n[[assets]]\nname = "BTC"\nkind = "crypto"\n'
                    'exchange = "binance"\nsymbol = "BTC/USDT"\n[[assets]]\nname = "IWM"\n'
                    'kind = "equity"\nticker = "IWM"\n[correlation]\ntimeframes = ["1d"]\n', encoding="utf-8")
    assert main(["--config", str(toml), "import", "IWM", str(IWM_CLOSE)]) == 0
    capsys.readouterr()
    assert main(["--config", str(toml), "import", "IWM", str(BTC_2024)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "is not an NYSE session day" in err
    src = lines_of(IWM_CLOSE)
    cut = edited(tmp_path, IWM_CLOSE, "cut.csv", [*src[:-1], src[-1][:13]])
    assert main(["--config", str(toml), "import", "IWM", str(cut)]) == 0
    out, err = capsys.readouterr()
    assert err == f"corrbot: warning: {cut}:{len(src)}: partial last row (the file does not end " \
                  "with a newline): dropped, not stored — a cut-off download?\n"
    assert ", 0 new, 0 updated," in out


# ---- feeds ------------------------------------------------------------------------------------------


@pytest.fixture
async def server(data_dir: Path) -> Any:
    async with BinanceServer(data_dir / CSV, now_ms=NOW) as s:
        yield s


async def test_feed_candle_x1000_is_refused_logged_once(
    server: BinanceServer, db: sqlite_utils.Database, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg({"binance": server.url})
    await poll_crypto(db, cfg, assets=["BTC"], now_ms=NOW, timeframes=("1h",), sleep=Sleeps(),
                      reported=set())
    before = digest(db)
    later = NOW + 6 * H * 1000
    server.now_ms = later
    bad = NOW - 1800 * 1000 + 2 * H * 1000  # the third new candle
    real = float(server.klines_frame("BTCUSDT", "1h").loc[bad, "close"])
    server.patch("BTCUSDT", "1h", bad, close=real * 1000, high=real * 1000)
    caplog.set_level(logging.ERROR)
    for _ in range(2):
        res = await poll_crypto(db, cfg, assets=["BTC"], now_ms=later, timeframes=("1h",),
                                sleep=Sleeps(), reported=set())
        assert res[0].error is not None and "refused 6 bar(s)" in res[0].error
        assert "integrity.max_move.crypto" in res[0].error
    assert digest(db) == before
    logged = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(logged) == 1
    status = {(s.source, s.asset): s for s in all_status(db)}["binance", "BTC"]
    assert status.last_error is not None and "refused" in status.last_error
    assert status.last_error_at is not None and status.last_error_at >= str(status.last_ok_at)


async def test_feed_duplicate_candle_is_refused(
    server: BinanceServer, db: sqlite_utils.Database, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_cfg({"binance": server.url})
    dup = ms("2023-05-10T12:00:00")
    real = float(server.klines_frame("BTCUSDT", "1h").loc[dup, "close"])
    server.duplicate("BTCUSDT", "1h", dup, close=real * 1.02)
    caplog.set_level(logging.ERROR)
    reported: set[tuple[str, str]] = set()
    for _ in range(2):
        res = await poll_crypto(db, cfg, assets=["BTC"], now_ms=NOW, timeframes=("1h",),
                                sleep=Sleeps(), reported=reported)
        assert res[0].error is not None and "two candles at 2023-05-10 12:00 UTC" in res[0].error
    assert read_bars(db, "BTC", "1h").empty
    assert len([r for r in caplog.records if "two candles" in r.getMessage()]) == 1
    status = {(s.source, s.asset): s for s in all_status(db)}["binance", "BTC"]
    assert status.last_error is not None and "different prices" in status.last_error


async def test_yahoo_bar_x1000_is_refused(data_dir: Path, db: sqlite_utils.Database,
                                         caplog: pytest.LogCaptureFixture) -> None:
    with YahooServer(data_dir) as srv:
        cfg = config(srv, {"IWM": "IWM"}, backfill_days=30)
        first = await poll_equities(db, cfg, timeframes=("1d",), now=utc(2025, 7, 3))
        assert first[0].ok and first[0].inserted > 15
        before = digest(db)
        bar = int(pd.Timestamp("2025-07-08 09:30", tz="America/New_York").timestamp())
        real = float(srv.series("IWM", "1d").loc[bar, "adjclose"])  # type: ignore[union-attr]
        srv.patch("IWM", bar, adjclose=real * 1000)  # yfinance's auto_adjust takes adjclose
        caplog.set_level(logging.ERROR)
        for _ in range(2):
            res = await poll_equities(db, cfg, timeframes=("1d",), now=utc(2025, 7, 12))
            assert res[0].error is not None and "yahoo: IWM 1d: refused" in res[0].error
            assert "close 221250 on 2025-07-08 is +100591.8% from the close 219.73 on 2025-07-07" in res[0].error
    assert digest(db) == before
    assert len([r for r in caplog.records if "refused" in r.getMessage()]) == 1
    status = {(s.source, s.asset): s for s in all_status(db)}["yahoo", "IWM"]
    assert status.last_error is not None and "integrity.max_move.equity" in status.last_error


# ---- definitions that stored correlations depend on ----------------------------------------------


def build(path: Path, cfg: Config) -> sqlite_utils.Database:
    db = open_db(path)
    for name, file in demo_files().items():
        import_csv(db, cfg, name, file, now=NOW_TS)
    update_correlations(db, cfg)
    return db


def with_alts(cfg: Config, members: dict[str, float]) -> Config:
    data = cfg.model_dump(mode="json")
    data["baskets"] = [b if b["name"] != "ALTS" else {"name": "ALTS", "members": members}
                       for b in data["baskets"]]
    return parse_config(data)


def test_basket_weight_change_recomputes_to_fresh_build(tmp_path: Path, cfg: Config) -> None:
    db = build(tmp_path / "old.db", cfg)
    before = corr_readings(db, cfg, "ALTS", "IWM", window=30)[0]
    new_cfg = with_alts(cfg, {"ETH": 0.2, "SOL": 0.4, "ADA": 0.4})
    rep = update_correlations(db, new_cfg)
    # Exactly the pairs with ALTS are recomputed: ALTS × 7 equities and SMALLCAP_TECH.
    assert rep.pairs_recomputed["1d"] == 8
    after = corr_readings(db, new_cfg, "ALTS", "IWM", window=30)[0]
    fresh = corr_readings(build(tmp_path / "fresh.db", new_cfg), new_cfg, "ALTS", "IWM", window=30)[0]
    assert after.value != before.value
    assert after.value == pytest.approx(fresh.value, abs=1e-12) and after.asof == fresh.asof
    prices = {n: daily_close(p) for n, p in demo_files().items()}
    sessions = prices["IWM"].index
    alts = basket({m: prices[m].reindex(sessions).dropna() for m in ("ETH", "SOL", "ADA")},
                  {"ETH": 0.2, "SOL": 0.4, "ADA": 0.4})
    ref = expected(alts, prices["IWM"], 30, cfg.correlation.ewma_lambda).iloc[-1]
    assert after.value == pytest.approx(ref["value"], abs=1e-9)
    assert update_correlations(db, new_cfg).pairs_recomputed["1d"] == 0  # and only once


def test_added_window_is_computed_over_all_history(tmp_path: Path, cfg: Config) -> None:
    db = build(tmp_path / "w.db", cfg)
    data = cfg.model_dump(mode="json")
    data["correlation"]["windows"] = [30, 60, 90]  # same largest window: the checkpoint fits
    new_cfg = parse_config(data)
    update_correlations(db, new_cfg)
    r = corr_readings(db, new_cfg, "BTC", "IWM", window=60)[0]
    prices = {n: daily_close(p) for n, p in demo_files().items()}
    ref = expected(prices["BTC"], prices["IWM"], 60, cfg.correlation.ewma_lambda)
    assert r.value == pytest.approx(ref["value"].iloc[-1], abs=1e-9)
    n_rows = db.execute("SELECT count(*) FROM corr_view WHERE a='BTC' AND b='IWM' AND window=60 "
                        "AND value IS NOT NULL").fetchone()[0]
    assert n_rows == int(ref["value"].notna().sum())
