# ruff: noqa: E501
"""Benchmark of the correlation read paths users hit, on a large synthetic corr table.

Run ``.venv/bin/python bench/bench_reads.py [pairs] [years]`` (default 2,000 pairs × 2 daily
windows × 5 years of sessions). Figures only: nothing is asserted about time. The script only
uses functions that exist before and after the issue-10 storage layout, so the same file can
be run on both checkouts (it imports the checkout it lives in).

1. History: every series' rows but the last ``LIVE`` bars, written in one bulk `write_rows`
   (series-major order), then the last ``LIVE`` bars one bar at a time the way the pipeline
   stores a new bar (`write_steps` where it exists, else `write_rows`; then where it exists
   `compact_slice` in a transaction of its own, as `service.pipeline.compact_recent` does).
   The last bar is left as the alert layer finds it (pending, where that exists); the reads
   are then repeated after the upkeep.
2. Reads, each timed per call (median, p90 over the sample):
   - /corr: `latest_row` of a series, and `latest_row(at_or_before=ts − 7 days)` (the change);
   - /chart: `read_series` of one series, the whole history and the last 365 days;
   - the alert layer: `storage.alerts.series_tail` of every series (after the bar before the
     last, 60 rows of context as a z-score rule's history, then none as a level rule), total
     for all series; where it exists, the same rows through
     `series_tails` in one call, the read `service.alerts` makes for a rule's series.
   All of them again after the upkeep (the pending bar expanded and one slice compacted).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from anywhere

from storage import corr as corr_store  # noqa: E402
from storage.alerts import series_tail  # noqa: E402
from storage.db import open_db, transaction  # noqa: E402

DAY = 86400
LIVE = 40  # bars stored one at a time at the end
SAMPLE = 300
T0 = 1_420_070_400  # 2015-01-01


def rows_for(sids: np.ndarray, ts: np.ndarray, rng: np.random.Generator) -> list[tuple[object, ...]]:
    """(series_id, ts, value, n, ci_lo, ci_hi, beta, ewma), series-major."""
    k, m = sids.size, ts.size
    v = rng.uniform(-0.9, 0.9, (k, m))
    cols = [
        np.repeat(sids, m).tolist(),
        np.tile(ts, k).tolist(),
        v.ravel().tolist(),
        [30] * (k * m),
        (v - 0.2).ravel().tolist(),
        (v + 0.2).ravel().tolist(),
        (v * 1.5).ravel().tolist(),
        (v * 0.9).ravel().tolist(),
    ]
    return list(zip(*cols, strict=True))


def stats(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    return f"median {np.median(a):8.3f}  p90 {np.percentile(a, 90):8.3f}  max {a.max():8.3f} ms"


def main() -> None:
    n_pairs = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    years = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    n_bars = 252 * years
    rng = np.random.default_rng(7)
    print(f"corr read benchmark — {n_pairs} pairs × 2 windows, {n_bars} daily bars, SQLite {sqlite3.sqlite_version}, checkout {REPO}")
    compact = getattr(corr_store, "compact_slice", None)
    print("store path: " + ("write_rows to corr_recent + rolling compaction" if compact else "write_rows to corr"))
    with tempfile.TemporaryDirectory(prefix="corrbot-reads-") as tmp:
        path = Path(tmp) / "reads.db"
        db = open_db(path)
        keys = [(f"C{p // 100:03d}", f"E{p % 100:03d}", "1d", w) for p in range(n_pairs) for w in (30, 90)]
        ids = corr_store.series_ids(db, keys)
        sid = np.array([ids[k] for k in keys], dtype=np.int64)
        ts = T0 + DAY * np.arange(n_bars, dtype=np.int64)
        t0 = time.perf_counter()
        for chunk in np.array_split(sid, max(1, sid.size // 200)):
            with transaction(db):
                corr_store.write_rows(db, rows_for(chunk, ts[:-LIVE], rng))
        t_bulk = time.perf_counter() - t0
        t_live = []
        steps = getattr(corr_store, "write_steps", None)  # the pipeline's path since the pending tier
        order = np.argsort(sid)
        for i in range(LIVE):
            rows = rows_for(sid, ts[n_bars - LIVE + i : n_bars - LIVE + i + 1], rng)
            t0 = time.perf_counter()
            with transaction(db):
                if steps is not None:
                    arr = np.array([r[2:] for r in rows], dtype=np.float64)[order]
                    steps(db, [(int(ts[n_bars - LIVE + i]), sid[order], arr)])
                else:
                    corr_store.write_rows(db, rows)
            t_live.append(time.perf_counter() - t0)
            if compact is not None and i < LIVE - 1:  # the last bar stays as the alerts find it
                with transaction(db):
                    compact(db, sid, i)
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"history: {sid.size * (n_bars - LIVE) / 1e6:.1f} M rows bulk in {t_bulk:.1f} s; then {LIVE} live bars of {sid.size} rows: {stats(t_live)}")
        print(f"file: {path.stat().st_size / 2**20:.0f} MB")
        db.conn.close()

        db = open_db(path)  # a fresh connection, as a reader thread has
        pick = rng.choice(sid, min(SAMPLE, sid.size), replace=False).tolist()
        last = int(ts[-1])

        def timed(fn, args_list):  # type: ignore[no-untyped-def]
            out = []
            for args in args_list:
                t0 = time.perf_counter()
                fn(*args)
                out.append(time.perf_counter() - t0)
            return out

        tails = getattr(corr_store, "series_tails", None)  # the alert layer's batched read, where it exists
        wanted = [(s, int(ts[-2])) for s in sid.tolist()]

        def alert_reads(when: str) -> None:
            for context in (60, 0):  # a z-score / jump rule's context; a level rule has none
                t0 = time.perf_counter()
                got = 0
                for s, after in wanted:
                    got += series_tail(db, s, after, context)[0].size
                t_all = time.perf_counter() - t0
                print(f"alerts  series_tail of all {sid.size} series, context {context:2d}{when}: {t_all * 1e3:.0f} ms total, {t_all / sid.size * 1e6:.0f} µs per series ({got} rows)")
                if tails is not None:
                    t0 = time.perf_counter()
                    got = sum(t.size for t, _ in tails(db, wanted, context))
                    t_all = time.perf_counter() - t0
                    print(f"alerts  series_tails (one call, as service.alerts reads a rule's series), context {context:2d}{when}: {t_all * 1e3:.0f} ms total, {t_all / sid.size * 1e6:.0f} µs per series ({got} rows)")

        def corr_reads() -> None:
            print(f"/corr   latest_row                   : {stats(timed(lambda s: corr_store.latest_row(db, s), [(s,) for s in pick]))}")
            print(f"/corr   latest_row(at_or_before −7d) : {stats(timed(lambda s: corr_store.latest_row(db, s, last - 7 * DAY), [(s,) for s in pick]))}")
            print(f"/chart  read_series, all {n_bars} rows : {stats(timed(lambda s: corr_store.read_series(db, s), [(s,) for s in few]))}")
            print(f"/chart  read_series, last 365 days   : {stats(timed(lambda s: corr_store.read_series(db, s, last - 365 * DAY), [(s,) for s in few]))}")

        few = pick[:50]
        corr_reads()
        alert_reads(" (the new bar as the alerts read it)")
        if compact is not None:
            with transaction(db):
                compact(db, sid, LIVE - 1)
            print("after the cycle's upkeep (the new bar written out as rows, one slice compacted):")
            corr_reads()
            alert_reads("")
        db.conn.close()


if __name__ == "__main__":
    main()
