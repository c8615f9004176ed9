"""Peak memory of `corrbot import` on a big file: chunked reading vs the old whole-file way.

Run ``.venv/bin/python bench/bench_import_memory.py [rows]`` (default 2,380,000 rows, ~220 MB:
the size of the file that peaked at 1.22 GB before). It writes a synthetic Binance-style hourly
kline file (bench_import.py's generator) in a temp dir, then imports it into a fresh SQLite
file in a child process per approach and prints each child's peak RSS next to the file size:

* ``chunked``  what `corrbot import` does now: ``import_csv`` (CSV read in 200k-row chunks
               into typed arrays, guards, upsert in 200k-row slices, one transaction)
* ``whole``    the old way, same code with one chunk and one slice: the whole file read
               by one ``read_csv`` and every row bound in one ``executemany``

The synthetic hours run from 1990 into the future, so the children set the guard's clock
just after the last bar (the date check still runs). Figures only: nothing is asserted.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from anywhere
sys.path.insert(0, str(REPO / "bench"))

from bench_import import write_kline  # noqa: E402

from core.config import parse_config  # noqa: E402

CFG = {"assets": [{"name": "BTC", "kind": "crypto", "exchange": "binance", "symbol": "BTC/USDT"},
                  {"name": "SPY", "kind": "equity", "ticker": "SPY"}]}


def _peak_mb() -> float:
    """This process's peak RSS in MiB. VmHWM starts afresh at exec; ru_maxrss (the fallback,
    not Linux) may carry the forking parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: Path, db_path: Path) -> None:
    from feeds.csv_import import parse_csv
    from service.guard import check_write
    from service.sync import import_csv
    from storage.bars import upsert_bars
    from storage.db import open_db, transaction

    cfg = parse_config(CFG)
    db = open_db(db_path)
    start_mb = _peak_mb()
    t0 = time.perf_counter()
    if mode == "chunked":
        rep = import_csv(db, cfg, "BTC", path, now=2**40)
        n = rep.inserted
    else:
        p = parse_csv(path, chunk_rows=10**9)
        with transaction(db):
            check_write(db, cfg, "BTC", p.timeframe, p.bars, now=2**40)
            n = upsert_bars(db, "BTC", p.timeframe, p.bars, "bench", slice_rows=10**9).inserted
    secs = time.perf_counter() - t0
    print(f"{start_mb:.1f} {_peak_mb():.1f} {secs:.2f} {n}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 2_380_000
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        path = tmp / "kline_1h.csv"
        write_kline(path, rows)
        size_mb = path.stat().st_size / 2**20
        print(f"{path.name}: {rows:,} rows, {size_mb:.1f} MiB\n")
        print(f"  {'approach':8s} {'before':>9s} {'peak RSS':>9s} {'peak/file':>9s} "
              f"{'import':>8s} {'bars/s':>10s}")
        for mode in ("chunked", "whole"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(path), str(tmp / f"{mode}.db")],
                check=True, capture_output=True, text=True).stdout.split()
            start, peak, secs, n = float(out[0]), float(out[1]), float(out[2]), int(out[3])
            print(f"  {mode:8s} {start:7.0f} MiB {peak:5.0f} MiB {peak / size_mb:8.2f}x "
                  f"{secs:6.1f} s {n / secs:10,.0f}")
        print("\n  before = RSS after the imports and opening the DB; peak/file = peak RSS / file size")


if __name__ == "__main__":
    main()
