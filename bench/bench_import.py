"""Benchmark of `corrbot import`: synthetic kline/Yahoo CSVs through parse, validate and upsert.

Run ``.venv/bin/python bench/bench_import.py [rows]``. Prints bars/s for parse+validate alone,
end to end (parse + validate + upsert into a fresh SQLite file) and for a re-import of the same
file (the idempotent path, which writes nothing). Figures only: nothing is asserted about time.

End to end includes the integrity guards (service/guard.py). The synthetic hourly series runs
from 1990 into the future, so the import's clock is set after its last bar (the date check
still runs); the daily file is a crypto series (every calendar day) from 1970 to before today.
Peak memory on a big file: bench/bench_import_memory.py.

``bench_import.py --file ASSET PATH [repeats]``: a real file instead (say a Binance hourly
dump), in this process, so start-up is not counted: `import_csv` end to end into a fresh
database, side by side with a bare sqlite3 ``executemany`` of the same parsed rows into the
same ``bars`` table of another fresh database (the reference of the import/executemany ratio),
in one transaction each. A second baseline inserts the same rows 32 to a multi-row INSERT
statement, the statement shape `upsert_bars` uses (the floor now): what is left between it and
the import is parsing and the checks. Medians of ``repeats`` (default 7).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from anywhere

from core.config import Config, parse_config  # noqa: E402
from feeds.csv_import import parse_csv  # noqa: E402
from service.sync import import_csv  # noqa: E402
from storage.bars import upsert_bars  # noqa: E402
from storage.db import open_db, transaction  # noqa: E402


def _prices(n: int, rng: np.random.Generator, start: float) -> dict[str, np.ndarray]:
    close = start * np.exp(np.cumsum(rng.normal(0.0, 0.004, n)))
    open_ = np.concatenate([[start], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, 0.002, n))
    return {
        "open": open_,
        "high": np.maximum(open_, close) * (1 + wiggle),
        "low": np.minimum(open_, close) * (1 - wiggle),
        "close": close,
        "volume": rng.uniform(100.0, 5000.0, n).round(5),
    }


def write_kline(path: Path, n: int) -> None:
    """Binance-style hourly klines, timestamps as in the real dumps (``… 00:00:00+00:00``)."""
    rng = np.random.default_rng(1)
    ts = pd.date_range("1990-01-01", periods=n, freq="h", tz="UTC")
    p = _prices(n, rng, 20000.0)
    df = pd.DataFrame(
        {"symbol": "BTCUSDT", "interval": "1h", "timestamp": ts.strftime("%Y-%m-%d %H:%M:%S+00:00")}
        | {k: v.round(2) for k, v in p.items()}
        | {"quote_volume": (p["volume"] * p["close"]).round(4), "trade_count": 1000}
    )
    df.to_csv(path, index=False)


def write_yahoo_daily(path: Path, n: int) -> None:
    """Classic Yahoo download with Adj Close (so the scaling path is exercised too)."""
    rng = np.random.default_rng(2)
    dates = pd.date_range("1970-01-01", periods=n, freq="D")
    p = _prices(n, rng, 50.0)
    df = pd.DataFrame({"Date": dates.strftime("%Y-%m-%d")})
    for k in ("open", "high", "low", "close"):
        df[k.capitalize()] = p[k]
    df["Adj Close"] = p["close"] * 0.97
    df["Volume"] = p["volume"].round(0).astype("int64")
    df.to_csv(path, index=False)


def _rate(label: str, n: int, seconds: float) -> None:
    print(f"  {label:26s} {seconds:6.2f} s  {n / seconds:12,.0f} bars/s")


def run_case(cfg: Config, asset: str, path: Path, n: int, tmp: Path) -> None:
    """Parse alone, upsert alone (fresh DB), then end to end (another fresh DB) and again."""
    t0 = time.perf_counter()
    parsed = parse_csv(path)
    t_parse = time.perf_counter() - t0
    db = open_db(tmp / f"{asset}_upsert.db")
    t0 = time.perf_counter()
    upsert_bars(db, asset, parsed.timeframe, parsed.bars, "bench")
    t_upsert = time.perf_counter() - t0
    db.conn.close()
    db = open_db(tmp / f"{asset}.db")
    t0 = time.perf_counter()
    clock = int(parsed.bars.index[-1]) + 86400
    first = import_csv(db, cfg, asset, path, now=clock)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = import_csv(db, cfg, asset, path, now=clock)
    t_again = time.perf_counter() - t0
    db.conn.close()
    _rate("parse+validate", n, t_parse)
    _rate("upsert_bars alone", n, t_upsert)
    _rate("import end to end", n, t_first)
    _rate("re-import (writes nothing)", n, t_again)
    print(
        f"  first: inserted {first.inserted:,}; again: unchanged {again.unchanged:,}, "
        f"written {again.inserted + again.updated}"
    )


def real_file(asset: str, path: Path, repeats: int) -> None:
    cfg = parse_config(
        {"assets": [{"name": asset, "kind": "crypto", "exchange": "binance", "symbol": f"{asset}/USDT"},
                    {"name": "SPY", "kind": "equity", "ticker": "SPY"}]}
    )
    parsed = parse_csv(path)
    n = len(parsed.bars)
    b = parsed.bars
    cols = [b[c].tolist() for c in ("open", "high", "low", "close", "volume")]
    rows = list(zip([asset] * n, [parsed.timeframe] * n, b.index.tolist(), *cols, ["bare"] * n, strict=True))
    block = 32
    flat = [v for row in rows for v in row]
    multi = ("INSERT INTO bars VALUES " + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * block),
             [flat[i : i + 9 * block] for i in range(0, n // block * 9 * block, 9 * block)])
    t_imp, t_bare, t_multi = [], [], []
    with tempfile.TemporaryDirectory() as tmp_name:
        for i in range(repeats):
            db = open_db(Path(tmp_name) / f"imp{i}.db")
            t0 = time.perf_counter()
            rep = import_csv(db, cfg, asset, path)
            t_imp.append(time.perf_counter() - t0)
            db.conn.close()
            db = open_db(Path(tmp_name) / f"bare{i}.db")
            t0 = time.perf_counter()
            with transaction(db) as conn:
                conn.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
            t_bare.append(time.perf_counter() - t0)
            db.conn.close()
            db = open_db(Path(tmp_name) / f"multi{i}.db")
            t0 = time.perf_counter()
            with transaction(db) as conn:
                conn.executemany(multi[0], multi[1])
                conn.executemany("INSERT INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows[n // block * block :])
            t_multi.append(time.perf_counter() - t0)
            db.conn.close()
    imp, bare = float(np.median(t_imp)), float(np.median(t_bare))
    print(f"{path.name}: {n:,} bars ({parsed.timeframe}), {rep.inserted:,} inserted; median of {repeats}, in process")
    _rate("import_csv end to end", n, imp)
    _rate("bare executemany", n, bare)
    print(f"  import / bare executemany speed: {bare / imp:.2f}×")
    multi_t = float(np.median(t_multi))
    _rate("bare 32-row INSERTs", n, multi_t)
    print(f"  import / bare 32-row INSERTs speed: {multi_t / imp:.2f}×")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--file":
        real_file(sys.argv[2].upper(), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 7)
        return
    n_hourly = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    n_daily = min(n_hourly, 20_000)  # 1970-01-01 .. 2024-10: every day, none in the future
    cfg = parse_config(
        {
            "assets": [
                {"name": "BTC", "kind": "crypto", "exchange": "binance", "symbol": "BTC/USDT"},
                {"name": "ETH", "kind": "crypto", "exchange": "binance", "symbol": "ETH/USDT"},
                {"name": "SPY", "kind": "equity", "ticker": "SPY"},
            ]
        }
    )
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for asset, path, write, n in [
            ("BTC", tmp / "kline_1h.csv", write_kline, n_hourly),
            ("ETH", tmp / "yahoo_1d.csv", write_yahoo_daily, n_daily),
        ]:
            write(path, n)
            print(f"\n{path.name}: {n:,} rows, {path.stat().st_size / 1e6:.1f} MB")
            run_case(cfg, asset, path, n, tmp)


if __name__ == "__main__":
    main()
