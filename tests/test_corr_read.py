"""The read side of the correlation tiers (`storage.corr_read`): every read equals an oracle
built here from the raw tables (``corr`` ∪ ``corr_recent`` ∪ the pending blobs decoded with
numpy), in every state the service leaves them in — pending steps, slices compacted at
different times, a step for some series only, series of two timeframes whose ids interleave
(a watch-list change), a revised bar that deletes rows, a rolled-back step, another
connection that read before the writes — and the values are pandas' on the real demo data.
`series_tails` (the alert layer's batched read) equals `series_tail` byte for byte."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from reference import daily_close, expected

from service.demo import demo_config, demo_files
from service.pipeline import compact_recent, update_correlations
from storage import corr as corr_store
from storage import corr_read
from storage.bars import upsert_bars
from storage.db import open_db, transaction

COLS = ["value", "n", "ci_lo", "ci_hi", "beta", "ewma"]
CUT = pd.Timestamp("2025-05-30")
DAY, HOUR = 86_400, 3_600


def oracle(db: sqlite_utils.Database) -> pd.DataFrame:
    """Every stored row, from the raw tables: the reads must give exactly these."""
    sql = "SELECT series_id, ts, {c} FROM {t}".format
    rows = db.execute(f"{sql(c=', '.join(COLS), t='corr')} UNION ALL {sql(c=', '.join(COLS), t='corr_recent')}")
    df = pd.DataFrame(rows.fetchall(), columns=["series_id", "ts", *COLS], dtype=float)
    parts = [df]
    for ts, ids, data in db.execute("SELECT ts, ids, data FROM corr_pending").fetchall():
        d = np.frombuffer(data, dtype="<f8").reshape(-1, 6)
        parts.append(pd.DataFrame(np.column_stack([np.frombuffer(ids, dtype="<i8"), np.full(len(d), ts), d]),
                                  columns=df.columns))
    out = pd.concat(parts).sort_values(["series_id", "ts"], kind="stable")
    assert not out.duplicated(["series_id", "ts"]).any()  # one tier per row
    return out.astype({"series_id": np.int64, "ts": np.int64}).reset_index(drop=True)


def same(a: object, b: object) -> bool:
    """Equal, with NULL (None) and NaN the same."""
    a_null, b_null = a is None or a != a, b is None or b != b
    return a_null and b_null if a_null or b_null else a == b


def check_reads(db: sqlite_utils.Database, want: pd.DataFrame, ids: list[int]) -> None:
    """latest_row (several bounds), read_series (all, since), series_tail (several cursors and
    contexts) and series_tails of every series against the oracle rows ``want``."""
    stamps = np.unique(want["ts"].to_numpy())
    # Bounded reads first: a connection that cached the tiers before the last writes must not
    # take its stale view for the truth (the newest stamp may be a pending step's).
    bounds = [*stamps[-12:][::-1].tolist(), None, int(stamps[-5]) + 1, int(stamps[0]) - 1]
    for sid in ids:
        mine = want[want["series_id"] == sid]
        ts = mine["ts"].to_numpy(np.int64)
        for hi in bounds:
            got = corr_store.latest_row(db, sid, hi)
            sel = mine if hi is None else mine[mine["ts"] <= hi]
            if sel.empty:
                assert got is None, (sid, hi)
                continue
            last = sel.iloc[-1]
            assert got is not None and got[0] == int(last["ts"]), (sid, hi, got)
            assert all(same(got[1][c], last[c]) for c in COLS), (sid, hi, got, last)
            vals = sel["value"].dropna()
            if hi is not None and not vals.empty:
                v = float(vals.iloc[len(vals) // 2])
                first = int(sel["ts"][sel["value"].notna()].iloc[0])
                assert corr_store.rank_at(db, sid, hi, v) == (int((vals <= v).sum()), len(vals), first)
        for since in (None, int(stamps[-3]), int(stamps[-20])):
            df = corr_store.read_series(db, sid, since)
            sel = mine if since is None else mine[mine["ts"] >= since]
            np.testing.assert_array_equal(df.index.to_numpy(np.int64), sel["ts"].to_numpy(np.int64))
            np.testing.assert_array_equal(df[COLS].to_numpy(float), sel[COLS].to_numpy(float))
        for after in bounds:
            for context in (0, 1, 5, 40):
                got_ts, got_val = corr_store.series_tail(db, sid, after, context)
                if after is None:
                    lo = max(len(ts) - context - 1, 0)
                else:
                    lo = max(int(np.searchsorted(ts, after, side="right")) - context, 0)
                np.testing.assert_array_equal(got_ts, ts[lo:])
                np.testing.assert_array_equal(got_val, mine["value"].to_numpy(float)[lo:])
    cursors = bounds[:3] + bounds[-2:]  # the newest stamps, between two, before every row
    wanted = [[(sid, after) for sid in ids] for after in (None, *cursors)]
    wanted.append([(sid, cursors[i % len(cursors)]) for i, sid in enumerate(ids)])  # cursors differ
    wanted.append([(sid, None if i % 3 == 0 else bounds[i % 11]) for i, sid in enumerate(ids)])
    for want in wanted:
        for context in (0, 1, 3, 40):
            batch = corr_store.series_tails(db, want, context)
            for (sid, after), (b_ts, b_val) in zip(want, batch, strict=True):
                one_ts, one_val = corr_store.series_tail(db, sid, after, context)
                assert b_ts.tobytes() == one_ts.tobytes() and b_val.tobytes() == one_val.tobytes()


def test_reads_equal_the_raw_rows_and_pandas_through_the_service_cycle(tmp_path: Path) -> None:
    """The demo (real daily data) stepped one session at a time as `corrbot run` does —
    pending until the cycle's alerts are read, then one slice compacted — read in each state,
    from this connection and from one opened before; the newest values are pandas'."""
    cfg = demo_config(tmp_path / "c.db")
    db = open_db(cfg.storage.path)
    reader = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}

    def load(lo: pd.Timestamp | None, hi: pd.Timestamp) -> None:
        for name, s in bars.items():
            part = s[(s.index > lo) & (s.index <= hi)] if lo is not None else s[s.index <= hi]
            epoch = (part.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
            upsert_bars(db, name, "1d", pd.DataFrame({"close": part.to_numpy()}, index=epoch), "t")

    load(None, CUT)
    update_correlations(db, cfg)
    ids = corr_store.timeframe_series(db, "1d").tolist()
    corr_store.latest_row(reader, ids[0])  # the reader has a cache from before every write below
    days = sorted(d for d in bars["IWM"].index if d > CUT)[:6]
    for n, (lo, hi) in enumerate(zip([CUT, *days[:-1]], days, strict=True)):
        load(lo, hi)
        update_correlations(db, cfg, compact=False)
        want = oracle(db)
        assert db.execute("SELECT count(*) FROM corr_pending").fetchone()[0] >= 1
        if n % 2 == 0:  # half the states read while the new bar is pending, half after the upkeep
            check_reads(db, want, ids)
            check_reads(reader, want, ids)
        compact_recent(db, cfg)
        assert oracle(db).equals(want)
        if n % 2 == 1:
            check_reads(db, want, ids)
            check_reads(reader, want, ids)
    assert corr_store.recent_ts(db)  # some rows still recent, some series compacted since
    prices = {name: s[s.index <= days[-1]] for name, s in bars.items()}
    for a, b in (("BTC", "IWM"), ("ETH", "QQQ"), ("SOL", "XSW")):
        for w in cfg.windows_for("1d"):
            exp = expected(prices[a], prices[b], w, cfg.correlation.ewma_lambda)
            sid = corr_store.find_series(db, a, b, "1d", w)
            assert sid is not None
            last = corr_store.latest_row(reader, sid)
            assert last is not None and last[0] == int(exp.index[-1].timestamp())
            np.testing.assert_allclose(last[1]["value"], exp["value"].iloc[-1], rtol=0, atol=1e-9)
            [(t, v)] = corr_store.series_tails(reader, [(sid, int(exp.index[-8].timestamp()))], 30)
            np.testing.assert_array_equal(t, (exp.index[-37:] - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1))
            np.testing.assert_allclose(v, exp["value"].iloc[-37:].to_numpy(), rtol=0, atol=1e-9)


def test_interleaved_timeframes_partial_steps_revisions_and_rollbacks_read_every_row(tmp_path: Path) -> None:
    """Hand-made tiers the id-range filter and the one-statement proofs must not be fooled by:
    1h and 1d series whose ids interleave (pairs added later), 1d stamps that are also 1h
    stamps, steps for some series only, slices compacted at different times, a revised bar
    (rows deleted from a ts on, then rewritten), a rolled-back step, and a reader connection
    that cached the tiers before each change. Values: real BTC/IWM daily log returns."""
    btc = np.log(daily_close(demo_files()["BTC"])).diff().dropna().to_numpy()
    rng = np.random.default_rng(5)
    db = open_db(tmp_path / "m.db")
    reader = open_db(tmp_path / "m.db")
    keys = [(f"A{i}", "IWM", tf, 30) for i in range(6) for tf in ("1h", "1d")]
    ids = corr_store.series_ids(db, keys)
    later = corr_store.series_ids(db, [(f"B{i}", "IWM", tf, 30) for i in range(3) for tf in ("1d", "1h")])
    ids |= later
    by_tf = {tf: np.array(sorted(v for k, v in ids.items() if k[2] == tf), dtype=np.int64) for tf in ("1h", "1d")}
    every = sorted(ids.values())

    def numbers(k: int) -> np.ndarray:
        v = rng.choice(btc, k)
        d = np.column_stack([v, np.full(k, 30.0), v - 0.1, v + 0.1, v * 2, v * 0.5])
        d[rng.random(k) < 0.15, 0] = np.nan  # NULL values too
        return d

    def step(ts: int, tf: str, frac: float = 1.0) -> None:
        sid = by_tf[tf]
        sid = np.sort(rng.choice(sid, max(1, int(sid.size * frac)), replace=False))
        with transaction(db):
            corr_store.write_steps(db, [(ts, sid, numbers(sid.size))])

    def upkeep(cursor: int) -> None:
        with transaction(db):
            corr_store.compact_slice(db, np.array(every, dtype=np.int64), cursor)

    def both() -> None:
        want = oracle(db)
        check_reads(db, want, every)
        check_reads(reader, want, every)

    t0 = 1_700_000_000 - 1_700_000_000 % DAY
    with transaction(db):  # a history long enough for the contexts, straight to corr
        corr_store.write_rows(db, [(s, t0 - (20 - i) * DAY if s in by_tf["1d"] else t0 - (20 - i) * HOUR, *row)
                                   for s in every for i, row in enumerate(numbers(20).tolist())])
    corr_store.latest_row(reader, every[0])
    cursor = 0
    for h in range(1, 30):
        ts = t0 + h * HOUR
        step(ts, "1h", 1.0 if h % 5 else 0.5)  # some steps hold only some series
        if h % 12 == 0:
            step(ts, "1d", 1.0 if h % 24 else 0.6)  # a 1d stamp equal to a 1h stamp
        if h % 7 == 0:
            both()  # pending
        upkeep(cursor)
        cursor += 1
        if h % 9 == 0:
            both()  # after the upkeep
    # A revised bar: the 1h series' rows from 5 hours back are deleted, then stepped again.
    since = t0 + 25 * HOUR
    with transaction(db):
        corr_store.delete_series_rows(db, by_tf["1h"].tolist(), since)
    both()
    for h in range(25, 31):
        step(t0 + h * HOUR, "1h")
    both()
    with pytest.raises(RuntimeError), transaction(db):
        corr_store.write_steps(db, [(t0 + 31 * HOUR, by_tf["1h"], numbers(by_tf["1h"].size))])
        assert corr_store.latest_row(db, int(by_tf["1h"][0]))[0] == t0 + 31 * HOUR  # type: ignore[index]
        raise RuntimeError("disk full, say")
    both()
    upkeep(cursor)
    both()
    corr_store.compact_all(db)
    both()


def test_the_id_range_filter_never_skips_a_stored_row(tmp_path: Path) -> None:
    """`Tiers.at` is a superset by construction (each recent ts's lowest and highest id, read
    from the table): every (ts, series_id) of ``corr_recent`` is listed for its series."""
    db = open_db(tmp_path / "f.db")
    ids = np.array(sorted(corr_store.series_ids(db, [(f"A{i}", "B", "1h", 30) for i in range(40)]).values()))
    rng = np.random.default_rng(2)
    for h in range(12):
        sub = np.sort(rng.choice(ids, 15, replace=False))
        with transaction(db):
            corr_store.write_steps(db, [(h * HOUR, sub, rng.random((sub.size, 6)))])
        with transaction(db):
            corr_store.compact_slice(db, ids, h * 5)
    t = corr_read.tiers(db)
    rows = db.execute("SELECT ts, series_id FROM corr_recent").fetchall()
    assert rows and t.recent
    for ts, sid in rows:
        assert ts in t.at(sid)
    skipped = sum(len(t.recent) - len(t.at(int(s))) for s in ids)
    assert skipped > 0  # and it does skip stamps a series cannot be at
