"""The correlation row layout of issue 10: rows appended to ``corr_recent`` and compacted into
``corr``, checkpoints saved in rotation with replay from bars, and the migration of a schema-3
database. Every check compares stored numbers with a full build or with pandas on real data."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from conftest import REPO
from reference import daily_close, expected

from service.demo import DATA, build_demo_db, demo_config, demo_files
from service.pipeline import CHECKPOINT_SLICES, compact_recent, update_correlations
from storage import corr as corr_store
from storage.bars import upsert_bars
from storage.db import MIGRATIONS, SCHEMA_VERSION, open_db, transaction

CUT = pd.Timestamp("2025-05-30")
ALL = "SELECT a, b, timeframe, window, asof, value, ci_lo, ci_hi, beta, ewma, n FROM corr_view ORDER BY 1, 2, 3, 4, 5"

# A child process that appends the demo's daily bars after CUT one session at a time and
# updates after each, printing the session it stored; the test kills it with SIGKILL.
CHILD = """
import sys
import pandas as pd
from reference import daily_close
from service.demo import demo_config, demo_files
from service.pipeline import update_correlations
from storage.bars import upsert_bars
from storage.db import open_db

cfg = demo_config(__import__("pathlib").Path(sys.argv[1]))
db = open_db(cfg.storage.path)
bars = {name: daily_close(path) for name, path in demo_files().items()}
days = sorted({d for s in bars.values() for d in s.index if d > pd.Timestamp(sys.argv[2])})
for day in days:
    for name, s in bars.items():
        part = s[s.index == day]
        ts = (part.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
        upsert_bars(db, name, "1d", pd.DataFrame({"close": part.to_numpy()}, index=ts), "t")
    update_correlations(db, cfg)
    print(day.date(), flush=True)
"""


def load(db: sqlite_utils.Database, bars: dict[str, pd.Series], lo: pd.Timestamp | None, hi: pd.Timestamp) -> None:
    for name, s in bars.items():
        part = s[(s.index > lo) & (s.index <= hi)] if lo is not None else s[s.index <= hi]
        ts = (part.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
        upsert_bars(db, name, "1d", pd.DataFrame({"close": part.to_numpy()}, index=ts), "t")


def assert_same_rows(got: list[tuple[object, ...]], want: list[tuple[object, ...]]) -> None:
    assert len(got) == len(want) > 100_000
    for r1, r2 in zip(got, want, strict=True):
        assert r1[:5] == r2[:5]
        np.testing.assert_allclose(np.array(r1[5:], dtype=float), np.array(r2[5:], dtype=float), rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> sqlite_utils.Database:
    path = tmp_path_factory.mktemp("full") / "demo.db"
    build_demo_db(path)
    return open_db(path)


def test_crash_between_checkpoints_resumes_to_the_same_numbers(full: sqlite_utils.Database, tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "inc.db")
    db = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}
    load(db, bars, None, CUT)
    update_correlations(db, cfg)
    db.conn.close()

    env = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}", "PATH": "/usr/bin:/bin"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(cfg.storage.path), str(CUT.date())],
        cwd=REPO, env=env, stdout=subprocess.PIPE, text=True,
    )
    assert child.stdout is not None
    done = [child.stdout.readline().strip() for _ in range(CHECKPOINT_SLICES + 5)]
    child.send_signal(signal.SIGKILL)  # mid-way through the next session's update, or between two
    child.wait()
    assert all(done)

    db = open_db(cfg.storage.path)
    # The crash left checkpoints behind the stored rows: the resume below replays from them.
    stepped = corr_store.load_progress(db, "1d").stepped_to
    assert stepped is not None and stepped >= pd.Timestamp(done[-1]).timestamp()
    behind = [c for c in corr_store.load_checkpoints(db, "1d").values() if c.last_ts < stepped]
    assert len(behind) > len(cfg.pair_list) // 2
    assert corr_store.count_rows(db) > 0 and corr_store.recent_ts(db)  # rows in both tables

    days = sorted({d for s in bars.values() for d in s.index if d > CUT})
    for lo, hi in zip([CUT, *days[:-1]], days, strict=True):
        load(db, bars, lo, hi)
        assert update_correlations(db, cfg).pairs_recomputed["1d"] == 0
    assert_same_rows(db.execute(ALL).fetchall(), full.execute(ALL).fetchall())
    # Everything moved into the series-major table reads the same.
    compact_recent(db, cfg)
    corr_store.compact_all(db)
    assert not corr_store.recent_ts(db)
    assert_same_rows(db.execute(ALL).fetchall(), full.execute(ALL).fetchall())


def test_changed_bar_after_a_checkpoint_replaces_rows_from_there(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "d.db")
    db = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}
    load(db, bars, None, CUT)
    update_correlations(db, cfg)
    days = sorted({d for s in bars.values() for d in s.index if d > CUT})[:12]
    for lo, hi in zip([CUT, *days[:-1]], days, strict=True):
        load(db, bars, lo, hi)
        update_correlations(db, cfg)
    # Yahoo revises IWM three sessions before the end: rows from there on are stale.
    iwm = daily_close(DATA / "IWM_daily.csv")
    iwm = iwm[iwm.index <= days[-1]]
    iwm[days[-3]] *= 1.02
    epoch = (iwm.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    upsert_bars(db, "IWM", "1d", pd.DataFrame({"close": iwm.to_numpy()}, index=epoch), "t")
    rep = update_correlations(db, cfg)
    assert rep.pairs_recomputed["1d"] < 5  # the IWM pairs whose checkpoint predates the change replay
    prices = {name: s[s.index <= days[-1]] for name, s in bars.items()}
    prices["IWM"] = iwm
    for a in ("BTC", "ETH", "SOL", "ADA"):  # recomputed and replayed pairs alike
        for w in cfg.windows_for("1d"):
            exp = expected(prices[a], prices["IWM"], w, cfg.correlation.ewma_lambda)
            got = corr_store.read_series(db, corr_store.find_series(db, a, "IWM", "1d", w) or -1)
            assert len(got) == len(exp)
            for col in ("value", "ci_lo", "ci_hi", "beta", "ewma"):
                g, e = got[col].to_numpy(), exp[col].to_numpy(dtype=float)
                assert np.array_equal(np.isnan(g), np.isnan(e))
                np.testing.assert_allclose(g[~np.isnan(g)], e[~np.isnan(e)], rtol=0, atol=1e-9, err_msg=col)


def test_schema_3_database_migrates_and_reads_the_same(full: sqlite_utils.Database, tmp_path: Path) -> None:
    # A corrbot 0.x (schema 3) database: every row in `corr`, no corr_recent / corr_progress.
    old = tmp_path / "v3.db"
    db3 = sqlite_utils.Database(old)
    db3.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
    for step in MIGRATIONS[:3]:
        step(db3)
    db3.execute("INSERT INTO meta VALUES ('schema_version', '3')")
    for table in ("bars", "series", "pair_state", "feed_status"):
        rows = full.execute(f"SELECT * FROM {table}").fetchall()
        if rows:
            db3.conn.executemany(f"INSERT INTO {table} VALUES ({', '.join('?' * len(rows[0]))})", rows)
    db3.conn.executemany(
        "INSERT INTO corr VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        full.execute(
            "SELECT series_id, ts, value, n, ci_lo, ci_hi, beta, ewma FROM corr "
            "UNION ALL SELECT series_id, ts, value, n, ci_lo, ci_hi, beta, ewma FROM corr_recent"
        ).fetchall(),
    )
    db3.conn.commit()
    db3.conn.close()

    db = open_db(old)
    assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == str(SCHEMA_VERSION)
    assert {"corr_recent", "corr_progress"} <= set(db.table_names())
    assert_same_rows(db.execute(ALL).fetchall(), full.execute(ALL).fetchall())
    # Schema 3 stored no definition fingerprints (schema 4), so the first update recomputes every
    # pair once, to the same numbers; after that an update finds its progress and writes nothing.
    cfg = demo_config(old)
    rep = update_correlations(db, cfg)
    assert rep.pairs_recomputed["1d"] == len(cfg.pair_list)
    assert_same_rows(db.execute(ALL).fetchall(), full.execute(ALL).fetchall())
    rep = update_correlations(db, cfg)
    assert rep.rows_written["1d"] == 0 and rep.pairs_recomputed["1d"] == 0
    assert_same_rows(db.execute(ALL).fetchall(), full.execute(ALL).fetchall())
    sid = corr_store.find_series(db, "BTC", "QQQ", "1d", 30)
    assert sid is not None
    pd.testing.assert_frame_equal(corr_store.read_series(db, sid), corr_store.read_series(full, sid))


def test_reads_over_both_tables(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "r.db")
    db = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}
    load(db, bars, None, CUT)
    update_correlations(db, cfg)
    sessions = sorted(d for d in bars["IWM"].index if d > CUT)[:3]  # every pair has an equity side
    for lo, hi in zip([CUT, *sessions[:-1]], sessions, strict=True):
        load(db, bars, lo, hi)
        update_correlations(db, cfg)
    assert len(corr_store.recent_ts(db)) == 3  # the last three sessions' rows are still recent
    sid = corr_store.find_series(db, "BTC", "QQQ", "1d", 90)
    assert sid is not None
    hist = corr_store.read_series(db, sid)
    for ts in (int(hist.index[-1]), int(hist.index[-2]), int(hist.index[len(hist) // 2])):
        vals = hist["value"][hist.index <= ts].dropna()
        v = float(hist.loc[ts, "value"])
        le, n, first = corr_store.rank_at(db, sid, ts, v)
        assert (le, n, first) == (int((vals.to_numpy() <= v).sum()), len(vals), int(vals.index[0]))
    # The alert layer's read: rows after a cursor plus context before it, as from one table;
    # every series, so some were compacted since the last sessions and some were not.
    for sid in corr_store.timeframe_series(db, "1d").tolist():
        hist = corr_store.read_series(db, sid)
        ts_all = hist.index.to_numpy(np.int64)
        val_all = hist["value"].to_numpy(np.float64)
        for after in (None, int(ts_all[-1]), int(ts_all[-2]), int(ts_all[-4]), int(ts_all[-40]), int(ts_all[0]) - 1):
            for context in (0, 1, 2, 60):
                got_ts, got_val = corr_store.series_tail(db, sid, after, context)
                if after is None:
                    lo = max(len(ts_all) - context - 1, 0)
                else:
                    lo = max(int(np.searchsorted(ts_all, after, side="right")) - context, 0)
                np.testing.assert_array_equal(got_ts, ts_all[lo:])
                np.testing.assert_array_equal(got_val, val_all[lo:])


def test_an_update_with_no_new_bar_reads_no_bars_and_the_next_bar_still_counts(tmp_path: Path) -> None:
    """Most service cycles store no bar (a 5-minute poll before the hour turns): the update then
    reads no bars at all. A bar stored afterwards is stepped as usual, to pandas' numbers."""
    cfg = demo_config(tmp_path / "n.db")
    db = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}
    load(db, bars, None, CUT)
    update_correlations(db, cfg)
    before = db.execute(ALL).fetchall()
    statements: list[str] = []
    db.conn.set_trace_callback(statements.append)
    rep = update_correlations(db, cfg)
    db.conn.set_trace_callback(None)
    assert rep.rows_written["1d"] == rep.observations["1d"] == rep.pairs_recomputed["1d"] == 0
    assert not [s for s in statements if "FROM bars" in s], statements
    assert db.execute(ALL).fetchall() == before
    day = min(d for d in bars["IWM"].index if d > CUT)  # the next NYSE session (crypto has weekends)
    load(db, bars, CUT, day)
    rep = update_correlations(db, cfg)
    assert rep.observations["1d"] == 1 and rep.pairs_recomputed["1d"] == 0
    prices = {name: s[s.index <= day] for name, s in bars.items()}
    for w in cfg.windows_for("1d"):
        exp = expected(prices["BTC"], prices["IWM"], w, cfg.correlation.ewma_lambda)
        got = corr_store.read_series(db, corr_store.find_series(db, "BTC", "IWM", "1d", w) or -1)
        assert len(got) == len(exp)
        np.testing.assert_allclose(got["value"].iloc[-1], float(exp["value"].iloc[-1]), rtol=0, atol=1e-9)


def _reads(db: sqlite_utils.Database, cursor: int) -> dict[str, object]:
    """Every read the users' paths make, for every series: /chart, /corr, the alert layer."""
    got: dict[str, object] = {"latest_ts": corr_store.latest_ts(db), "count": corr_store.count_rows(db),
                              "count_1d": corr_store.count_rows(db, "1d")}
    for sid in corr_store.timeframe_series(db, "1d").tolist():
        series = corr_store.read_series(db, sid)
        last = corr_store.latest_row(db, sid)
        got[f"series {sid}"] = series.to_numpy().tobytes() + series.index.to_numpy().tobytes()
        got[f"latest {sid}"] = last
        got[f"before {sid}"] = corr_store.latest_row(db, sid, at_or_before=cursor)
        for after in (None, cursor):
            ts, val = corr_store.series_tail(db, sid, after, 5)
            got[f"tail {sid} {after}"] = ts.tobytes() + val.tobytes()
        if last is not None and last[1]["value"] is not None:
            got[f"rank {sid}"] = corr_store.rank_at(db, sid, last[0], float(last[1]["value"]))
            got[f"rank-1 {sid}"] = corr_store.rank_at(db, sid, cursor, float(last[1]["value"]))
    return got


def test_pending_steps_read_the_same_as_rows_and_expand_to_them(full: sqlite_utils.Database, tmp_path: Path) -> None:
    """The service stores each new bar's step as one pending row and expands it after the
    cycle's alerts: every read before the expansion equals the same read after it, for every
    series, also through another connection opened earlier (the bot's readers); the result
    equals the full build, and a revised bar (which deletes rows) expands first."""
    cfg = demo_config(tmp_path / "p.db")
    db = open_db(cfg.storage.path)
    reader = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}
    load(db, bars, None, CUT)
    update_correlations(db, cfg)
    days = sorted(d for d in bars["IWM"].index if d > CUT)  # sessions: each gives every pair a step
    cursor = int(pd.Timestamp(days[1]).timestamp())
    before = corr_store.latest_row(reader, corr_store.find_series(db, "BTC", "IWM", "1d", 30) or -1)
    for lo, hi in zip([CUT, *days[:3]], days[:4], strict=True):
        load(db, bars, lo, hi)
        update_correlations(db, cfg, compact=False)  # as `corrbot run` does: the cycle's alerts come next
    assert db.execute("SELECT count(*) FROM corr_pending").fetchone()[0] == 4
    after = corr_store.latest_row(reader, corr_store.find_series(db, "BTC", "IWM", "1d", 30) or -1)
    assert before is not None and after is not None and after[0] == int(pd.Timestamp(days[3]).timestamp()) > before[0]

    # A revised IWM bar two sessions back: its pairs' rows from there are deleted and rewritten.
    iwm = bars["IWM"][bars["IWM"].index <= days[3]].copy()
    iwm[days[2]] *= 1.01
    epoch = (iwm.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    upsert_bars(db, "IWM", "1d", pd.DataFrame({"close": iwm.to_numpy()}, index=epoch), "t")
    update_correlations(db, cfg, compact=False)
    upsert_bars(db, "IWM", "1d", pd.DataFrame({"close": bars["IWM"][days[2]:days[3]].to_numpy()},
                                             index=epoch[-2:]), "t")
    update_correlations(db, cfg, compact=False)
    load(db, bars, days[3], days[4])
    update_correlations(db, cfg, compact=False)
    assert db.execute("SELECT count(*) FROM corr_pending").fetchone()[0] >= 1

    pending_reads = _reads(db, cursor)
    assert _reads(reader, cursor) == pending_reads
    compact_recent(db, cfg)
    assert db.execute("SELECT count(*) FROM corr_pending").fetchone()[0] == 0
    assert _reads(db, cursor) == pending_reads
    assert _reads(reader, cursor) == pending_reads
    corr_store.compact_all(db)
    assert _reads(db, cursor) == pending_reads
    end = pd.Timestamp(days[4]).strftime("%Y-%m-%d")
    want = [r for r in full.execute(ALL).fetchall() if r[4] <= end]
    assert_same_rows(db.execute(ALL).fetchall(), want)


def test_a_rolled_back_step_is_not_read_afterwards(tmp_path: Path) -> None:
    """A step read inside the transaction that wrote it is gone for this connection's readers
    once the transaction rolls back (the cache of pending steps is keyed on rollbacks too)."""
    db = open_db(tmp_path / "r.db")
    ids = corr_store.series_ids(db, [("BTC", "IWM", "1d", 30), ("ETH", "IWM", "1d", 30)])
    sid = np.array(sorted(ids.values()), dtype=np.int64)
    data = np.array([[0.5, 30, 0.2, 0.7, 1.1, 0.45], [np.nan, 30, np.nan, np.nan, 0.9, 0.3]])
    with transaction(db):
        corr_store.write_steps(db, [(86_400, sid, data)])
    assert corr_store.latest_row(db, int(sid[1])) == (
        86_400, {"value": None, "n": 30, "ci_lo": None, "ci_hi": None, "beta": 0.9, "ewma": 0.3})
    with pytest.raises(RuntimeError), transaction(db):
        corr_store.write_steps(db, [(2 * 86_400, sid, data + 0.01)])
        assert corr_store.latest_row(db, int(sid[0]))[0] == 2 * 86_400  # type: ignore[index]
        raise RuntimeError("disk full, say")
    assert corr_store.latest_row(db, int(sid[0])) == (
        86_400, {"value": 0.5, "n": 30, "ci_lo": 0.2, "ci_hi": 0.7, "beta": 1.1, "ewma": 0.45})
    assert corr_store.latest_ts(db) == 86_400 and corr_store.count_rows(db) == 2
