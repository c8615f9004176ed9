"""Every stored correlation, CI, beta and EWMA on the real data equals pandas to 1e-9."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from reference import basket, daily_close, expected

from service.demo import DATA, build_demo_db, demo_config, demo_files
from service.pipeline import update_correlations
from storage.bars import upsert_bars
from storage.db import open_db

TOL = 1e-9


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    cfg = build_demo_db(path)
    return cfg, open_db(path)


def stored(db: sqlite_utils.Database, a: str, b: str, tf: str, w: int) -> pd.DataFrame:
    rows = db.execute(
        "SELECT asof, value, ci_lo, ci_hi, beta, ewma, n FROM corr_view "
        "WHERE a = ? AND b = ? AND timeframe = ? AND window = ? ORDER BY asof",
        [a, b, tf, w],
    ).fetchall()
    df = pd.DataFrame(rows, columns=["asof", "value", "ci_lo", "ci_hi", "beta", "ewma", "n"])
    df.index = pd.DatetimeIndex(pd.to_datetime(df.pop("asof")))
    return df.astype(float)


def reference_prices(cfg) -> dict[str, pd.Series]:  # type: ignore[no-untyped-def]
    prices = {name: daily_close(path) for name, path in demo_files().items()}
    # Baskets rebalance at every observation of the timeframe: for 1d, NYSE sessions, whose
    # dates we take from an equity file (PROVENANCE: no missing sessions), not a calendar.
    sessions = prices["IWM"].index
    for b in cfg.baskets:
        prices[b.key] = basket({m: prices[m].reindex(sessions).dropna() for m in b.members}, dict(b.members))
    return prices


def assert_frame_close(got: pd.DataFrame, exp: pd.DataFrame) -> None:
    assert list(got.index) == list(exp.index)
    for col in ("value", "ci_lo", "ci_hi", "beta", "ewma", "n"):
        g, e = got[col].to_numpy(), exp[col].to_numpy(dtype=float)
        assert np.array_equal(np.isnan(g), np.isnan(e)), col
        ok = ~np.isnan(g)
        assert ok.any(), col
        np.testing.assert_allclose(g[ok], e[ok], rtol=0, atol=TOL, err_msg=col)


def test_every_daily_pair_and_window_matches_pandas(demo) -> None:  # type: ignore[no-untyped-def]
    cfg, db = demo
    prices = reference_prices(cfg)
    checked = 0
    for a, b in cfg.pair_list:
        for w in cfg.windows_for("1d"):
            exp = expected(prices[a], prices[b], w, cfg.correlation.ewma_lambda)
            assert_frame_close(stored(db, a, b, "1d", w), exp)
            checked += 1
    assert checked == len(cfg.pair_list) * 2 == 80


def test_incremental_updates_equal_full_build(demo, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, db_full = demo
    cfg = demo_config(tmp_path / "inc.db")
    db = open_db(cfg.storage.path)
    bars = {name: daily_close(path) for name, path in demo_files().items()}
    cut = pd.Timestamp("2025-06-30")

    def load(lo: pd.Timestamp | None, hi: pd.Timestamp | None) -> None:
        for name, s in bars.items():
            part = s[(s.index > lo) if lo is not None else slice(None)] if lo is not None else s
            part = part[part.index <= hi] if hi is not None else part
            ts = (part.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
            upsert_bars(db, name, "1d", pd.DataFrame({"close": part.to_numpy()}, index=ts), "t")

    load(None, cut)
    update_correlations(db, cfg)
    # Then one session at a time, as a live service would see them.
    days = sorted({d for s in bars.values() for d in s.index if d > cut})
    for lo, hi in zip([cut, *days[:-1]], days, strict=True):
        load(lo, hi)
        rep = update_correlations(db, cfg)
        assert rep.pairs_recomputed["1d"] == 0  # appended, never recomputed
    q = "SELECT a, b, window, asof, value, ci_lo, ci_hi, beta, ewma, n FROM corr_view ORDER BY 1, 2, 3, 4"
    inc = db.execute(q).fetchall()
    full = db_full.execute(q).fetchall()
    assert len(inc) == len(full) > 100_000
    for r1, r2 in zip(inc, full, strict=True):
        assert r1[:4] == r2[:4]
        np.testing.assert_allclose(np.array(r1[4:], dtype=float), np.array(r2[4:], dtype=float), rtol=0, atol=1e-12)


def test_changed_history_triggers_recompute_and_stays_correct(tmp_path: Path) -> None:
    cfg = demo_config(tmp_path / "d.db")
    db = open_db(cfg.storage.path)
    from service.demo import import_all

    import_all(db, cfg)
    update_correlations(db, cfg)
    # Yahoo re-adjusts: every IWM price before 2024 scaled by a constant, one day revised.
    iwm = daily_close(DATA / "IWM_daily.csv")
    iwm[iwm.index < "2024-01-01"] *= 0.98
    iwm[pd.Timestamp("2023-03-10")] *= 1.01
    ts = (iwm.index - pd.Timestamp("1970-01-01")) // pd.Timedelta(seconds=1)
    upsert_bars(db, "IWM", "1d", pd.DataFrame({"close": iwm.to_numpy()}, index=ts), "t")
    rep = update_correlations(db, cfg)
    assert rep.pairs_recomputed["1d"] == 5  # BTC, ETH, SOL, ADA and ALTS × IWM; nothing else
    prices = {name: daily_close(p) for name, p in demo_files().items()}
    prices["IWM"] = iwm
    exp = expected(prices["BTC"], prices["IWM"], 30, cfg.correlation.ewma_lambda)
    assert_frame_close(stored(db, "BTC", "IWM", "1d", 30), exp)
