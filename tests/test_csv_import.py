"""Tests of feeds/csv_import.py: every real CSV we have, synthetic layouts, and broken files.

The real files are tests/data (one or more per layout, see tests/data/PROVENANCE.md) and the
demo data shipped in service/demo_data.

Expected values always come from an independent ``pd.read_csv`` of the same file, never from
the importer's own helpers. Broken files are generated in tmp_path from real rows.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from conftest import DEMO_DATA, TEST_DATA  # paths only, to parametrise at collection

from core.config import Config, parse_config
from core.errors import BadWindowError, ImportFileError, UnknownAssetError, UserInputError
from service.sync import ImportReport, import_csv
from storage.bars import read_bars
from storage.db import open_db

CRYPTO = ["BTC", "ETH", "SOL", "ADA"]
EQUITY = ["IWM", "QQQ", "SPY", "XLK", "PSCT", "IWO", "XSW", "^RUT", "^GSPC", "^IXIC"]
# (root, relative path): every CSV of the test data folder and of the demo data.
FILES = [("data", str(p.relative_to(TEST_DATA))) for p in sorted(TEST_DATA.rglob("*.csv"))]
FILES += [("demo", p.name) for p in sorted(DEMO_DATA.glob("*.csv"))]
BTC_DEMO = DEMO_DATA / "BTC-USD_daily.csv"
BTC_STOCKMASTER = TEST_DATA / "BTC-USD_daily_2018-2025.csv"
BINANCE_1H = TEST_DATA / "intraday" / "BTCUSDT_1h_binance_2023-2026.csv"


@pytest.fixture(scope="module")
def cfg() -> Config:
    assets: list[dict[str, object]] = [
        {"name": n, "kind": "crypto", "exchange": "binance", "symbol": f"{n}/USDT"} for n in CRYPTO
    ]
    assets += [{"name": n, "kind": "equity", "ticker": n} for n in EQUITY]
    return parse_config(
        {"assets": assets, "baskets": [{"name": "SMALLTECH", "members": {"PSCT": 1, "IWO": 1}}]}
    )


@pytest.fixture
def db(db_path: Path) -> sqlite_utils.Database:
    return open_db(db_path)


def typed_name(path: Path) -> str:
    """What a user would type for a file: BTC-USD_daily.csv -> BTC, RUT.csv -> RUT (^RUT)."""
    stem = path.stem.split("_")[0]
    return stem.removesuffix("-USD").removesuffix("USDT")


def expected(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(ts, close) straight from pandas: Adj Close if present, daily dates as written."""
    multi = path.parent.name.startswith("yf_multiheader")
    df = pd.read_csv(path, skiprows=[1, 2] if multi else None, encoding="utf-8-sig")
    df.columns = [str(c).lower() for c in df.columns]
    tcol = "timestamp" if "timestamp" in df.columns else df.columns[0]
    close = df["adj close"] if "adj close" in df.columns else df["close"]
    if path.parent.name == "intraday":
        t = pd.to_datetime(df[tcol], utc=True)
        ts = (t - pd.Timestamp("1970-01-01", tz="UTC")) // pd.Timedelta("1s")
    else:
        d = pd.to_datetime(df[tcol].astype(str).str[:10])
        ts = (d - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")
    return ts.to_numpy(dtype="int64"), close.to_numpy(dtype="float64")


def db_digest(db: sqlite_utils.Database) -> str:
    rows = db.execute("SELECT * FROM bars ORDER BY asset, timeframe, ts").fetchall()
    rows += db.execute("SELECT * FROM dirty ORDER BY asset, timeframe").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.mark.parametrize(("root", "rel"), FILES, ids=[f"{r}/{p}" for r, p in FILES])
def test_every_real_file_imports_exactly(
    root: str, rel: str, data_dir: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    path = (data_dir if root == "data" else DEMO_DATA) / rel
    rep = import_csv(db, cfg, typed_name(path), path)
    ts, close = expected(path)
    tf = "1h" if path.parent.name == "intraday" else "1d"
    assert (rep.timeframe, rep.rows_read, rep.skipped) == (tf, len(ts), [])
    assert rep.inserted == len(ts) and rep.updated == rep.unchanged == 0
    assert (rep.first_ts, rep.last_ts) == (ts[0], ts[-1])
    stored = read_bars(db, rep.asset, tf)
    np.testing.assert_array_equal(stored.index.to_numpy(), ts)
    np.testing.assert_allclose(stored["close"].to_numpy(), close, rtol=1e-12, atol=0)
    assert (stored[["open", "high", "low"]].dropna() > 0).all().all()


def test_canonical_keys_and_layouts(cfg: Config, db: sqlite_utils.Database) -> None:
    rut = import_csv(db, cfg, "rut", TEST_DATA / "yf_multiheader_2021-2026" / "RUT.csv")
    assert (rut.asset, rut.layout) == ("^RUT", "yfinance-multi")
    kl = import_csv(db, cfg, "btc", BINANCE_1H)
    assert (kl.asset, kl.layout, kl.timeframe) == ("BTC", "binance", "1h")
    yh = import_csv(db, cfg, "Eth", DEMO_DATA / "ETH-USD_daily.csv")
    assert (yh.asset, yh.layout) == ("ETH", "yahoo")
    iwm = import_csv(db, cfg, "IWM", TEST_DATA / "intraday" / "IWM_1h_2024-2026.csv")
    assert (iwm.layout, iwm.timeframe) == ("ohlcv", "1h")


def test_reimport_writes_nothing(cfg: Config, db: sqlite_utils.Database, db_path: Path) -> None:
    for path in (BTC_STOCKMASTER, BINANCE_1H):
        import_csv(db, cfg, "BTC", path)
    digest, changes = db_digest(db), db.conn.total_changes
    for path in (BTC_STOCKMASTER, BINANCE_1H):
        again = import_csv(db, cfg, "BTC", path)
        assert (again.inserted, again.updated) == (0, 0)
        assert again.unchanged == again.rows_read
    assert db.conn.total_changes == changes  # not a single row touched
    assert db_digest(db) == digest


def test_drop_last(cfg: Config, db: sqlite_utils.Database) -> None:
    ts, close = expected(BTC_STOCKMASTER)
    rep = import_csv(db, cfg, "BTC", BTC_STOCKMASTER, drop_last=True)
    assert rep.rows_read == len(ts) and rep.inserted == len(ts) - 1
    assert rep.last_ts == ts[-2] == pd.Timestamp("2025-08-22").timestamp()
    stored = read_bars(db, "BTC", "1d")
    assert stored.index[-1] == ts[-2] and stored["close"].iloc[-1] == close[-2]


def test_unknown_asset_and_basket(cfg: Config, db: sqlite_utils.Database) -> None:
    with pytest.raises(UnknownAssetError) as err:
        import_csv(db, cfg, "BTX", BTC_DEMO)
    assert "BTC" in err.value.suggestions and "did you mean" in str(err.value)
    with pytest.raises(UserInputError, match="basket"):
        import_csv(db, cfg, "smalltech", DEMO_DATA / "PSCT_daily.csv")
    with pytest.raises(BadWindowError, match="4h"):
        import_csv(db, cfg, "BTC", BTC_DEMO, timeframe="4h")
    assert db_digest(db) == db_digest(open_db(":memory:"))  # nothing stored


# ---- synthetic layouts ------------------------------------------------------------------


def write(tmp_path: Path, text: str, name: str = "f.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding=encoding)
    return p


def test_adj_close_scales_the_whole_bar(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    p = write(
        tmp_path,
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2020-01-02,10,12,9,11,5.5,100\n2020-01-03,11,11,8,10,5,200\n",
    )
    rep = import_csv(db, cfg, "SPY", p)
    assert rep.layout == "yahoo"
    bars = read_bars(db, "SPY", "1d")
    assert bars.loc[int(pd.Timestamp("2020-01-02").timestamp())].tolist() == [5, 6, 4.5, 5.5, 100]
    assert bars["close"].tolist() == [5.5, 5]


def test_null_rows_are_skipped_and_reported(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    p = write(
        tmp_path,
        "Date,Open,High,Low,Close,Adj Close,Volume\n"
        "2020-04-16,1,2,1,2,2,5\n2020-04-17,null,null,null,null,null,null\n"
        "\n2020-04-20,2,3,2,3,3,\n2020-04-21,3,3,3,,3,1\n",
    )
    rep = import_csv(db, cfg, "SPY", p)
    assert rep.skipped == [(3, "missing open, high, low, close, adj close"), (6, "missing close")]
    assert (rep.rows_read, rep.inserted) == (4, 2)
    bars = read_bars(db, "SPY", "1d")
    assert bars["close"].tolist() == [2, 3] and np.isnan(bars["volume"].iloc[1])


def test_bom_case_and_offsets(tmp_path: Path, cfg: Config, db: sqlite_utils.Database) -> None:
    # New York midnight across a DST change: the calendar date as written is what counts.
    p = write(
        tmp_path,
        "DATE,CLOSE\n2020-03-06 00:00:00-05:00,1.5\n2020-03-09 00:00:00-04:00,1.25\n",
        encoding="utf-8-sig",
    )
    rep = import_csv(db, cfg, "SPY", p)
    assert (rep.layout, rep.timeframe) == ("yfinance", "1d")
    days = [int(pd.Timestamp(d).timestamp()) for d in ("2020-03-06", "2020-03-09")]
    assert read_bars(db, "SPY", "1d").index.tolist() == days


def test_ccxt_epoch_layouts(tmp_path: Path, cfg: Config, db: sqlite_utils.Database) -> None:
    start = 1_700_000_000_000 - 1_700_000_000_000 % 1_800_000
    rows = "\n".join(
        f"{start + i * 1_800_000},{10 + i},{11 + i},{9 + i},{10.5 + i},{i}" for i in range(4)
    )
    headerless = write(tmp_path, rows + "\n", "a.csv")
    rep = import_csv(db, cfg, "ETH", headerless)
    assert (rep.layout, rep.timeframe, rep.inserted) == ("ccxt", "30m", 4)
    assert rep.first_ts == start // 1000 and rep.last_ts == start // 1000 + 3 * 1800
    header = write(tmp_path, "timestamp,open,high,low,close,volume\n" + rows + "\n", "b.csv")
    again = import_csv(db, cfg, "ETH", header)
    assert (again.layout, again.inserted, again.unchanged) == ("ohlcv", 0, 4)
    # An explicit timeframe overrides inference (here: 30-min rows stored as 30m anyway).
    assert import_csv(db, cfg, "ETH", header, timeframe="30m").unchanged == 4


# ---- broken files ---------------------------------------------------------------------------

HEAD = BTC_DEMO.read_text().splitlines()[:8]  # header + 7 real rows (2019-01-01 .. 07)


def rows_with(change: dict[int, str | None]) -> str:
    """HEAD with line numbers (1-based) replaced or removed (None)."""
    out = [change.get(i + 1, line) for i, line in enumerate(HEAD)]
    return "\n".join(x for x in out if x is not None) + "\n"


def replace_field(line_no: int, field: int, value: str) -> str:
    parts = HEAD[line_no - 1].split(",")
    parts[field] = value
    return ",".join(parts)


BROKEN: dict[str, tuple[str | bytes, int | None, str]] = {
    "duplicate": (rows_with({5: HEAD[3]}), 5, "duplicate timestamp 2019-01-03 on lines 4 and 5"),
    "unsorted": (rows_with({4: HEAD[5], 6: HEAD[3]}), 5, "out of order"),
    "zero price": (rows_with({6: replace_field(6, 4, "0")}), 6, "non-positive close"),
    "negative price": (rows_with({3: replace_field(3, 1, "-1.5")}), 3, "non-positive open"),
    "non-numeric": (rows_with({7: replace_field(7, 5, "12,5x")}), 7, "non-numeric"),
    "bad date": (rows_with({4: replace_field(4, 0, "yesterday")}), 4, "unparseable timestamp"),
    "empty": ("", None, "file is empty"),
    "header only": (HEAD[0] + "\n", None, "no data rows"),
    "unknown header": ("when,price\n2020-01-01,1\n", 1, "unrecognised header"),
    "binary": (bytes(range(256)) * 8, None, "binary"),
    "latin-1": (b"Date,Close\n2020-01-01,1\n" + b"\xe9\xff\n", None, "UTF-8"),
    "all null": (HEAD[0] + "\n" + replace_field(2, 4, "null") + "\n", None, "no usable rows"),
}


def intraday(step_s: int, n: int = 6) -> str:
    t0 = pd.Timestamp("2024-01-02 10:00", tz="UTC")
    rows = [f"{t0 + pd.Timedelta(seconds=i * step_s)},1,2,0.5,1.5,10" for i in range(n)]
    return "timestamp,open,high,low,close,volume\n" + "\n".join(rows) + "\n"


BROKEN["15 min spacing"] = (intraday(900), 3, "900 s apart")
BROKEN["lone intraday row"] = (intraday(3600, 1), 2, "single intraday row")


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_file_is_rejected_and_db_untouched(
    case: str, tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    import_csv(db, cfg, "BTC", BTC_DEMO)  # pre-existing data the bad file overlaps
    import_csv(db, cfg, "BTC", BINANCE_1H)
    before, n_before = db_digest(db), db.conn.total_changes
    content, line, message = BROKEN[case]
    p = tmp_path / "bad.csv"
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ImportFileError) as err:
        import_csv(db, cfg, "BTC", p)
    assert err.value.line == line and message in str(err.value)
    where = f"{p}:{line}: " if line is not None else f"{p}: "
    assert str(err.value).startswith(where) and "\n" not in str(err.value)
    assert db_digest(db) == before and db.conn.total_changes == n_before


def test_missing_file_and_directory(tmp_path: Path, cfg: Config, db: sqlite_utils.Database) -> None:
    with pytest.raises(ImportFileError, match="no such file"):
        import_csv(db, cfg, "BTC", tmp_path / "nope.csv")
    with pytest.raises(ImportFileError, match="directory"):
        import_csv(db, cfg, "BTC", tmp_path)


def test_explicit_timeframe_finer_than_rows(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    p = write(tmp_path, intraday(1800))
    with pytest.raises(ImportFileError, match="less than one 1h bar") as err:
        import_csv(db, cfg, "BTC", p, timeframe="1h")
    assert err.value.line == 3
    assert read_bars(db, "BTC", "1h").empty


def test_interval_column_and_report_type(
    tmp_path: Path, cfg: Config, db: sqlite_utils.Database
) -> None:
    src = BINANCE_1H.read_text().splitlines()[:4]
    mixed = write(tmp_path, "\n".join([*src[:3], src[3].replace(",1h,", ",4h,")]) + "\n")
    with pytest.raises(ImportFileError, match="interval changes") as err:
        import_csv(db, cfg, "BTC", mixed)
    assert err.value.line == 4
    four = write(tmp_path, "\n".join(s.replace(",1h,", ",4h,") for s in src) + "\n", "4h.csv")
    with pytest.raises(ImportFileError, match="unsupported interval") as err:
        import_csv(db, cfg, "BTC", four)
    assert err.value.line == 2
    ok = import_csv(db, cfg, "BTC", write(tmp_path, "\n".join(src) + "\n", "ok.csv"))
    assert isinstance(ok, ImportReport) and (ok.timeframe, ok.inserted) == ("1h", 3)
