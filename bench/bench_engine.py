# ruff: noqa: E501
"""Benchmark of the incremental correlation engine: one new bar for 10,000 pairs, side by side
with a pandas ``rolling().corr()`` recompute, plus the DB size per year of the example config.

Run ``.venv/bin/python bench/bench_engine.py``. Figures only: nothing is asserted about time.

1. A synthetic universe of 100 crypto × 100 equity assets (10,000 pairs): correlated random-walk
   log prices (one common factor + noise, seeded), on the real NYSE clock (daily sessions and
   regular-session hours, from `monitors.align`).
2. Warm-up: the 1d engine (windows 30, 90) and the 1h engine (window 35, intraday) step through
   ~300 observations of history, so every window is full; the last part of the history is also
   written to a real SQLite file so the corr table is not empty when we measure.
3. Per new bar (30 bars each): (a) `Engine.step` alone, (b) step + building the rows the way
   `service.pipeline` does + `storage.corr.write_rows` inside `storage.db.transaction` (the
   headline "take one new bar, update every correlation and store it": committed, readable),
   (c) (b) + the checkpoints `update_correlations` saves on a run (`due_checkpoints` /
   `save_due_checkpoints`: one slice of the pairs in rotation; before issue 10 it was every
   pair, every run). After each bar of (b) and (c), in a transaction of its own as the service
   does after the cycle's alerts: (m) `compact_slice`, moving one slice of the series' recent
   rows into the series-major table (upkeep, off the path to the user; reported apart).
4. pandas baseline in the same run: `X.rolling(w).corr(Y)` over the same pairs, both over just
   enough history for the latest value (w+1 prices) and over the full stored history.
5. DB size per year for config.example.toml (45 pairs; 1d and 1h, windows 30 and 90): one
   synthetic year (2024) of bars upserted with `upsert_bars`, `update_correlations`, VACUUM,
   size split by table with the ``dbstat`` virtual table.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # runnable as a plain script from anywhere

from core.calendar import nyse_schedule  # noqa: E402
from core.config import load_config  # noqa: E402
from monitors.align import grid  # noqa: E402
from monitors.engine import Engine, WindowRows  # noqa: E402
from service.pipeline import (  # noqa: E402
    CHECKPOINT_SLICES,
    due_checkpoints,
    save_due_checkpoints,
    step_arrays,
    step_rows,
    update_correlations,
)
from storage import corr as corr_store  # noqa: E402
from storage.bars import upsert_bars  # noqa: E402
from storage.db import open_db, transaction  # noqa: E402

N_CRYPTO = 100
N_EQUITY = 100
LAM = 0.94
WARM = 300  # observations of history stepped before measuring
PREFILL = 70  # of which the last PREFILL are also written to the DB (≈ 1 leaf page per series)
NEW = 30  # new bars per measured phase; phases a, b0, b, c use consecutive bars
PANDAS_SAMPLE = 500  # pairs timed for the pandas baseline, scaled linearly to 10,000
PANDAS_REPEAT = 3
DAY_WINDOWS = [30, 90]
HOUR_WINDOWS = [35]
Y2024 = int(pd.Timestamp("2024-01-01", tz="UTC").timestamp())
Y2025 = int(pd.Timestamp("2025-01-01", tz="UTC").timestamp())


# ---- synthetic data -----------------------------------------------------------------------


def synthetic_logp(n_obs: int, rng: np.random.Generator, vol: float) -> np.ndarray:
    """(n_obs, 200) log prices: columns 0..99 crypto, 100..199 equity; factor + noise."""
    factor = rng.normal(0.0, vol, n_obs)
    load = np.concatenate([rng.uniform(0.3, 1.5, N_CRYPTO), rng.uniform(0.5, 1.2, N_EQUITY)])
    noise_vol = np.concatenate([np.full(N_CRYPTO, 2.0 * vol), np.full(N_EQUITY, 0.8 * vol)])
    rets = factor[:, None] * load[None, :] + rng.normal(0.0, 1.0, (n_obs, load.size)) * noise_vol
    rets[0] = 0.0
    start = np.log(rng.uniform(1.0, 500.0, load.size))
    return start + np.cumsum(rets, axis=0)


def clock(tf: str, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
    """The last n_obs observation ts (and their sessions) of `tf` before 2025."""
    g = grid(tf)
    end = int(np.searchsorted(g.ts, Y2025))
    return g.ts[end - n_obs : end], g.session[end - n_obs : end]


# ---- helpers ------------------------------------------------------------------------------


def ms_stats(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    return f"median {np.median(a):8.1f}  p90 {np.percentile(a, 90):8.1f}  max {a.max():8.1f} ms"


def med(xs: list[float]) -> float:
    return float(np.median(xs))



# ---- the 10,000-pair universe ---------------------------------------------------------------


class Universe:
    def __init__(self, tf: str, windows: list[int], rng: np.random.Generator, db_path: Path) -> None:
        self.tf = tf
        self.windows = windows
        n_obs = WARM + 4 * NEW  # phases a, b0, b, c
        self.ts, self.sess = clock(tf, n_obs)
        if tf == "1d":
            self.sess = self.ts
        self.logp = synthetic_logp(n_obs, rng, 0.01 if tf == "1d" else 0.003)
        cols = [(c, N_CRYPTO + e) for c in range(N_CRYPTO) for e in range(N_EQUITY)]
        self.names = [f"C{c:03d}" for c in range(N_CRYPTO)] + [f"E{e:03d}" for e in range(N_EQUITY)]
        self.pairs = [(self.names[a], self.names[b]) for a, b in cols]
        self.ia = np.array([a for a, _ in cols])
        self.ib = np.array([b for _, b in cols])
        self.engine = Engine(cols, windows, intraday=tf != "1d", lam=LAM)
        self.db = open_db(db_path)
        ids = corr_store.series_ids(self.db, [(a, b, tf, w) for a, b in self.pairs for w in windows])
        self.sid = np.array([[ids[(a, b, tf, w)] for w in windows] for a, b in self.pairs], dtype=np.int64)
        self.i = 0  # next observation to step
        self.updates = 0  # the pipeline's rotating cursors (compaction, checkpoints)

    def step(self) -> tuple[int, list[WindowRows]]:
        i = self.i
        self.i += 1
        ts = int(self.ts[i])
        return ts, self.engine.step(ts, int(self.sess[i]), self.logp[i])

    def warm(self) -> dict[str, float]:
        t0 = time.perf_counter()
        nrows = 0
        for _ in range(WARM - PREFILL):
            _, out = self.step()
            nrows += sum(len(w.pair) for w in out)
        t_engine = time.perf_counter() - t0
        steps_engine = WARM - PREFILL
        t0 = time.perf_counter()
        nrows_db = 0
        for _ in range(PREFILL):
            ts, out = self.step()
            rows = step_rows(ts, out, self.sid)
            with transaction(self.db):
                corr_store.write_rows(self.db, rows)
            with transaction(self.db):
                corr_store.compact_slice(self.db, self.sid.ravel(), self.updates)
            self.updates += 1
            nrows_db += len(rows)
        t_db = time.perf_counter() - t0
        return {
            "steps": steps_engine,
            "t_engine": t_engine,
            "rows_engine": nrows,
            "steps_db": PREFILL,
            "t_db": t_db,
            "rows_db": nrows_db,
        }

    def phase_a(self) -> tuple[list[float], list[int]]:
        times, nrows = [], []
        for _ in range(NEW):
            t0 = time.perf_counter()
            _, out = self.step()
            times.append(time.perf_counter() - t0)
            nrows.append(sum(len(w.pair) for w in out))
        return times, nrows

    def phase_b(self, with_checkpoint: bool, path: str = "steps") -> dict[str, list[float]]:
        """``path`` "steps": what `service.pipeline` does now (`step_arrays`, then
        `storage.corr.write_steps`: one pending row per step); "rows": the row path it replaced
        (`step_rows`, then `write_rows` into ``corr_recent``), the baseline in the same run."""
        keys = ("total", "step", "rows", "write", "compact", "commit", "ckpt")
        parts: dict[str, list[float]] = {k: [] for k in keys}
        for _ in range(NEW):
            t0 = time.perf_counter()
            ts, out = self.step()
            t1 = time.perf_counter()
            if path == "steps":
                ids, data = step_arrays(ts, out, self.sid)
            else:
                rows = step_rows(ts, out, self.sid)
            t2 = time.perf_counter()
            tx = transaction(self.db)
            tx.__enter__()
            if path == "steps":
                corr_store.write_steps(self.db, [(ts, ids, data)] if ids.size else [])
            else:
                corr_store.write_rows(self.db, rows)
            t3 = time.perf_counter()
            t4 = t3
            if with_checkpoint:
                due = due_checkpoints(len(self.pairs), self.updates, np.array([], dtype=np.int64), 1)
                save_due_checkpoints(self.db, self.tf, self.engine, self.pairs, due)
            t5 = time.perf_counter()
            tx.__exit__(None, None, None)
            t6 = time.perf_counter()
            self.updates += 1
            with transaction(self.db):  # expands the pending step, then moves one slice
                corr_store.compact_slice(self.db, self.sid.ravel(), self.updates)
            parts["compact"].append(time.perf_counter() - t6)
            parts["total"].append(t6 - t0)
            parts["step"].append(t1 - t0)
            parts["rows"].append(t2 - t1)
            parts["write"].append(t3 - t2)
            parts["ckpt"].append(t5 - t4)
            parts["commit"].append(t6 - t5)
        return parts

    def last_logp(self) -> np.ndarray:
        return self.logp[: self.i]


def pandas_recompute(logp: np.ndarray, ia: np.ndarray, ib: np.ndarray, windows: list[int], hist: int | None) -> float:
    """Seconds to recompute every window's rolling corr for the given pairs with pandas.

    ``hist``: number of prices used per window (None = all stored history, else w + hist).
    """
    t0 = time.perf_counter()
    for w in windows:
        lp = logp if hist is None else logp[-(w + hist) :]
        x = pd.DataFrame(np.diff(lp[:, ia], axis=0))
        y = pd.DataFrame(np.diff(lp[:, ib], axis=0))
        last = x.rolling(w).corr(y).iloc[-1]
        assert len(last) == len(ia)
    return time.perf_counter() - t0


def pandas_baseline(u: Universe, rng: np.random.Generator) -> dict[str, float]:
    """Per-bar seconds for all 10,000 pairs (from a PANDAS_SAMPLE sample, scaled linearly)."""
    n_pairs = len(u.pairs)
    pick = rng.choice(n_pairs, PANDAS_SAMPLE, replace=False)
    lp = u.last_logp()
    out = {}
    for name, hist in (("short", 1), ("full", None)):
        ts = [pandas_recompute(lp, u.ia[pick], u.ib[pick], u.windows, hist) for _ in range(PANDAS_REPEAT)]
        out[name] = med(ts) * n_pairs / PANDAS_SAMPLE
    out["history"] = len(lp)
    return out


def check_against_pandas(u: Universe, rng: np.random.Generator) -> float:
    """Max |engine − pandas| of the latest value, 50 random pairs, largest window (1d only)."""
    pick = rng.choice(len(u.pairs), 50, replace=False)
    lp = u.last_logp()
    w = u.windows[-1]
    x = pd.DataFrame(np.diff(lp[:, u.ia[pick]], axis=0))
    y = pd.DataFrame(np.diff(lp[:, u.ib[pick]], axis=0))
    ref = x.rolling(w).corr(y).iloc[-1].to_numpy()
    from monitors.stats import window_stats

    mine, _, _, _ = window_stats(u.engine.bx[pick, -w:], u.engine.by[pick, -w:])
    return float(np.max(np.abs(ref - mine)))


# ---- DB size per year for the example config ----------------------------------------------


def ohlcv(close: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    open_ = np.concatenate([[close[0]], close[:-1]])
    wig = np.abs(rng.normal(0.0, 0.002, close.size))
    return {
        "open": open_,
        "high": np.maximum(open_, close) * (1 + wig),
        "low": np.minimum(open_, close) * (1 - wig),
        "close": close,
        "volume": rng.uniform(1e3, 1e6, close.size),
    }


def example_year(tmp: Path, rng: np.random.Generator) -> dict[str, object]:
    cfg = load_config(REPO / "config.example.toml")
    sched = nyse_schedule()
    year = sched[(sched.index >= Y2024) & (sched.index < Y2025)]
    opens, closes = year["open"].to_numpy(), year["close"].to_numpy()
    nbars = np.ceil((closes - opens) / 3600).astype(np.int64)
    eq_1h = np.concatenate([o + 3600 * np.arange(k) for o, k in zip(opens, nbars, strict=True)])
    eq_1d = year.index.to_numpy(np.int64)
    cr_1h = np.arange(Y2024, Y2025, 3600, dtype=np.int64)
    cr_1d = np.arange(Y2024, Y2025, 86400, dtype=np.int64)
    db_path = tmp / "example_year.db"
    db = open_db(db_path)
    t0 = time.perf_counter()
    nbars_total = 0
    for asset in cfg.assets:
        frames = {"1d": eq_1d, "1h": eq_1h} if asset.kind == "equity" else {"1d": cr_1d, "1h": cr_1h}
        for tf, ts in frames.items():
            vol = 0.01 if tf == "1d" else 0.003
            close = rng.uniform(20.0, 500.0) * np.exp(np.cumsum(rng.normal(0.0, vol, ts.size)))
            upsert_bars(db, asset.key, tf, pd.DataFrame(ohlcv(close, rng), index=ts), "synthetic")
            nbars_total += ts.size
    t_upsert = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = update_correlations(db, cfg)
    t_update = time.perf_counter() - t0
    n_by_tf = {tf: corr_store.count_rows(db, tf) for tf in cfg.correlation.timeframes}
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = db_path.stat().st_size
    try:
        by_name = dict(db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        how = "dbstat"
    except sqlite3.OperationalError:
        by_name, how = {}, "unavailable"
    db.conn.close()

    def group(prefixes: tuple[str, ...]) -> int:
        return sum(v for k, v in by_name.items() if k.startswith(prefixes))

    return {
        "pairs": len(cfg.pair_list),
        "windows": {tf: cfg.windows_for(tf) for tf in cfg.correlation.timeframes},
        "sessions": len(year),
        "hourly_obs": int(nbars.sum()),
        "bars": nbars_total,
        "corr_rows": n_by_tf,
        "t_upsert": t_upsert,
        "t_update": t_update,
        "report": report.summary(),
        "size": size,
        "bars_bytes": group(("bars",)),
        "corr_bytes": group(("corr", "series", "sqlite_autoindex_series", "sqlite_autoindex_corr")),
        "state_bytes": group(("pair_state", "sqlite_autoindex_pair_state")),
        "how": how,
    }


# ---- main ---------------------------------------------------------------------------------


def main() -> None:
    t_start = time.perf_counter()
    rng = np.random.default_rng(20240607)
    mb = 1024 * 1024
    print(
        f"corrbot engine benchmark — {N_CRYPTO} crypto × {N_EQUITY} equity = {N_CRYPTO * N_EQUITY} pairs, "
        f"numpy {np.__version__}, pandas {pd.__version__}, SQLite {sqlite3.sqlite_version}, {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(prefix="corrbot-bench-") as tmpdir:
        tmp = Path(tmpdir)
        db_path = tmp / "bench.db"
        day = Universe("1d", DAY_WINDOWS, rng, db_path)
        hour = Universe("1h", HOUR_WINDOWS, rng, db_path)
        results = {}
        results_base: dict[str, list[float]] = {}
        for u in (day, hour):
            label = f"{u.tf} windows {u.windows}" + (" (intraday)" if u.tf != "1d" else "")
            print(f"\n== {label}: {len(u.pairs)} pairs, {len(u.pairs) * len(u.windows)} series ==")
            w = u.warm()
            print(
                f"warm-up, engine only : {w['steps']} steps in {w['t_engine']:.2f} s = "
                f"{w['steps'] / w['t_engine']:.0f} steps/s, {w['rows_engine'] / w['t_engine'] / 1e6:.2f} M rows/s"
            )
            print(
                f"warm-up, + store     : {w['steps_db']} steps in {w['t_db']:.2f} s = "
                f"{w['steps_db'] / w['t_db']:.1f} steps/s, {w['rows_db'] / w['t_db'] / 1e3:.0f} k rows/s "
                f"(prefills the corr table: {w['rows_db'] / 1e6:.1f} M rows)"
            )
            a, nrows = u.phase_a()
            print(
                f"(a) step alone       : {ms_stats(a)}   [{int(np.median(nrows))} rows/bar median; "
                f"{sum(n == 0 for n in nrows)} of {NEW} bars open a session and give no rows]"
            )
            base = u.phase_b(with_checkpoint=False, path="rows")
            print(f"(b0) baseline, the row path (step_rows + write_rows into corr_recent): {ms_stats(base['total'])}")
            print(
                f"      of which (median): step {med(base['step']) * 1e3:.1f}, build rows {med(base['rows']) * 1e3:.1f}, "
                f"write_rows {med(base['write']) * 1e3:.1f}, COMMIT {med(base['commit']) * 1e3:.1f} ms; "
                f"then (m) compact_slice {med(base['compact']) * 1e3:.1f} ms"
            )
            b = u.phase_b(with_checkpoint=False)
            print(f"(b) step+rows+store  : {ms_stats(b['total'])}   [the pipeline's path: one pending row per step]")
            print(
                f"      of which (median): step {med(b['step']) * 1e3:.1f}, step arrays {med(b['rows']) * 1e3:.1f}, "
                f"write_steps {med(b['write']) * 1e3:.1f}, COMMIT {med(b['commit']) * 1e3:.1f} ms"
            )
            print(f"(m) then, after the alerts, expand + compact_slice in its own transaction: {ms_stats(b['compact'])}")
            c = u.phase_b(with_checkpoint=True)
            state = u.engine.state_size * 8
            print(f"(c) (b)+checkpoint   : {ms_stats(c['total'])}")
            print(
                f"      of which (median): step {med(c['step']) * 1e3:.1f}, step arrays {med(c['rows']) * 1e3:.1f}, "
                f"write_steps {med(c['write']) * 1e3:.1f}, checkpoints {med(c['ckpt']) * 1e3:.1f}, "
                f"COMMIT {med(c['commit']) * 1e3:.1f} ms; then (m) {med(c['compact']) * 1e3:.1f} ms"
            )
            p = pandas_baseline(u, rng)
            print(
                f"pandas rolling().corr(), all {len(u.pairs)} pairs (timed on {PANDAS_SAMPLE} sampled pairs, "
                f"median of {PANDAS_REPEAT}, scaled ×{len(u.pairs) // PANDAS_SAMPLE}; compute only, no storage):"
            )
            print(
                f"      w+1 prices per window      : {p['short'] * 1e3:9.0f} ms/bar  "
                f"→ (b) is {p['short'] / med(b['total']):6.1f}× faster, (c) {p['short'] / med(c['total']):6.1f}×, "
                f"(b0) {p['short'] / med(base['total']):6.1f}×, (a) {p['short'] / med(a):6.1f}×"
            )
            print(
                f"      full history ({p['history']} obs)  : {p['full'] * 1e3:9.0f} ms/bar  "
                f"→ (b) is {p['full'] / med(b['total']):6.1f}× faster, (a) {p['full'] / med(a):6.1f}×"
            )
            results[u.tf] = (a, b, c, p, state)
            results_base[u.tf] = base['total']
        print(
            f"\nsanity: max |engine − pandas| of the latest 1d w={DAY_WINDOWS[-1]} value, 50 pairs: "
            f"{check_against_pandas(day, rng):.2e}"
        )
        n_corr = corr_store.count_rows(day.db)
        day.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        print(f"bench DB: {n_corr / 1e6:.1f} M corr rows, {db_path.stat().st_size / mb:.0f} MB")
        day.db.conn.close()
        hour.db.conn.close()

        print("\n== DB size per year, config.example.toml ==")
        ex = example_year(tmp, rng)
        print(
            f"{ex['pairs']} pairs, windows {ex['windows']}, {ex['sessions']} sessions, {ex['hourly_obs']} hourly obs in 2024"
        )
        print(
            f"upsert {ex['bars']} bars: {ex['t_upsert']:.2f} s; update_correlations (full build of the year): "
            f"{ex['t_update']:.2f} s ({ex['report']})"
        )
        print(f"corr rows by timeframe: {ex['corr_rows']}")
        print(
            f"after VACUUM: {ex['size'] / mb:.2f} MB file ({ex['how']}): bars {ex['bars_bytes'] / mb:.2f} MB, "
            f"corr+series {ex['corr_bytes'] / mb:.2f} MB, checkpoints {ex['state_bytes'] / mb:.2f} MB (fixed, not per year)"
        )

    elapsed = time.perf_counter() - t_start
    per_year = (ex["bars_bytes"] + ex["corr_bytes"]) / mb
    print("\n" + "=" * 100)
    print(f"SUMMARY — {N_CRYPTO * N_EQUITY} pairs, one new bar for every asset (median / p90 / max, ms)")
    for tf, (a, b, c, p, s), target in (("1d [30, 90]", results["1d"], 100), ("1h [35]    ", results["1h"], 50)):
        q = lambda xs: f"{np.median(xs) * 1e3:7.1f} / {np.percentile(xs, 90) * 1e3:7.1f} / {max(xs) * 1e3:7.1f}"  # noqa: E731
        print(f"  {tf} (a) step        {q(a)}")
        print(f"  {tf} (b0) row path   {q(results_base[tf.split()[0]])}   (baseline: step_rows + write_rows)")
        print(f"  {tf} (b) step+store  {q(b['total'])}   target ≤ {target} ms")
        print(f"  {tf} (m) compaction  {q(b['compact'] + c['compact'])}   (own transaction after each bar, off the reply path)")
        print(f"  {tf} (c) +checkpoint {q(c['total'])}   target ≤ {target} ms "
              f"({s * -(-len(day.pairs) // CHECKPOINT_SLICES) / mb:.2f} MB of state per save)")
        print(
            f"  {tf} pandas w+1 recompute {p['short'] * 1e3:7.0f} ms → {p['short'] / med(b['total']):6.1f}×;"
            f"  full-history {p['full'] * 1e3:7.0f} ms → {p['full'] / med(b['total']):6.1f}×   target ≥ 25× (speedup of (b))"
        )
        print(
            f"  {tf} engine step alone (a) vs pandas: {p['short'] / med(a):6.1f}× (w+1), {p['full'] / med(a):6.1f}× (full history)"
        )
    print(
        f"  example config DB: {per_year:.2f} MB per year (bars {ex['bars_bytes'] / mb:.2f} + corr {ex['corr_bytes'] / mb:.2f}),"
        f" + {ex['state_bytes'] / mb:.2f} MB checkpoints"
    )
    print(f"  pandas figures: {PANDAS_SAMPLE} sampled pairs scaled linearly to {N_CRYPTO * N_EQUITY}")
    print(f"  total run time {elapsed:.0f} s; reproduce: cd {REPO} && .venv/bin/python bench/bench_engine.py")


if __name__ == "__main__":
    main()
