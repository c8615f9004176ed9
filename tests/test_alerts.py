"""The alert layer on the real bundled data: episodes against an independent pandas reference,
live (one bar at a time) against the backtest, and what the outbox receives."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlite_utils
from reference import basket, daily_close, expected

from core.config import Config, parse_config
from feeds.csv_import import parse_csv
from service.backtest import backtest
from service.demo import build_demo_db, demo_config, demo_files
from service.evaluate import evaluate
from service.pipeline import update_correlations
from storage.alerts import add_mute, lift_mutes
from storage.bars import upsert_bars
from storage.db import open_db
from storage.status import record_ok

LEVEL = {"name": "coupling", "kind": "corr_level", "window": 30, "above": 0.6, "clear_below": 0.4,
         "pairs": ["BTC/IWM", "BTC/SMALLCAP_TECH", "ETH/IWM"]}
DIVERGE = {"name": "diverge", "kind": "divergence", "window": 90, "horizon": 3, "z": 3.0, "min_corr": 0.3,
           "pairs": ["BTC/IWM", "BTC/SMALLCAP_TECH"], "severity": "critical"}
JUMP = {"name": "jump", "kind": "corr_jump", "window": 30, "lookback": 5, "delta": 0.3, "pairs": ["BTC/IWM"],
        "severity": "info"}
ZSCORE = {"name": "unusual", "kind": "corr_zscore", "window": 30, "history": 252, "z": 2.5, "pairs": ["BTC/IWM"]}


def with_rules(cfg: Config, *rules: dict[str, Any], path: Path | None = None) -> Config:
    data = cfg.model_dump(mode="json")
    data["rules"] = list(rules)
    if path is not None:
        data["storage"] = {"path": str(path)}
    return parse_config(data)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, sqlite_utils.Database]:
    path = tmp_path_factory.mktemp("alerts") / "demo.db"
    cfg = with_rules(build_demo_db(path), LEVEL, DIVERGE, JUMP, ZSCORE)
    return cfg, open_db(path)


# ---- an independent reference: pandas numbers, a plain loop for the state machine -------------


def ref_prices() -> dict[str, pd.Series]:
    prices = {name: daily_close(p) for name, p in demo_files().items()}
    sessions = prices["IWM"].index
    prices["SMALLCAP_TECH"] = basket({m: prices[m].reindex(sessions).dropna() for m in ("PSCT", "XSW")},
                                     {"PSCT": 0.5, "XSW": 0.5})
    return prices


def aligned_returns(a: pd.Series, b: pd.Series) -> pd.DataFrame:
    j = pd.concat([a.rename("c"), b.rename("e")], axis=1, join="inner").sort_index()
    return np.log(j).diff().iloc[1:]


def episodes_from(values: pd.Series, trigger: pd.Series, clear: pd.Series) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    firing = False
    for when, v in values.items():
        if np.isnan(v):
            continue
        if not firing and trigger[when]:
            firing = True
            out.append((str(when.date()), None))
        elif firing and clear[when]:
            firing = False
            out[-1] = (out[-1][0], str(when.date()))
    return out


def ref_level(a: str, b: str) -> list[tuple[str, str | None]]:
    p = ref_prices()
    rho = expected(p[a], p[b], 30, 0.94)["value"]
    return episodes_from(rho, rho >= 0.6, rho < 0.4)


def ref_divergence(a: str, b: str, window: int = 90, horizon: int = 3) -> list[tuple[str, str | None]]:
    p = ref_prices()
    r = aligned_returns(p[a], p[b])
    c, e = r["c"], r["e"]
    beta = (c.rolling(window).cov(e) / e.rolling(window).var()).shift(horizon)
    rho = c.rolling(window).corr(e).shift(horizon)
    z = pd.Series(np.nan, index=r.index)
    for i in range(window + horizon - 1, len(r)):
        est = r.iloc[i - horizon - window + 1 : i - horizon + 1]
        resid = est["c"] - beta.iloc[i] * est["e"]
        recent = r.iloc[i - horizon + 1 : i + 1]
        z.iloc[i] = (recent["c"].sum() - beta.iloc[i] * recent["e"].sum()) / (resid.std(ddof=1) * np.sqrt(horizon))
    return episodes_from(z, (rho >= 0.3) & (z.abs() >= 3.0), z.abs() < 1.5)


def ours(db: sqlite_utils.Database, cfg: Config, rule: str, a: str, b: str, **kw: Any) -> list[tuple[str, str | None]]:
    return [(e.as_json()["fired_at"], e.as_json()["resolved_at"])  # type: ignore[misc]
            for e in backtest(db, cfg, rule=rule, **kw) if (e.a, e.b) == (a, b)]


@pytest.mark.parametrize("pair", [("BTC", "IWM"), ("BTC", "SMALLCAP_TECH"), ("ETH", "IWM")])
def test_corr_level_episodes_equal_pandas(demo: Any, pair: tuple[str, str]) -> None:
    cfg, db = demo
    got = ours(db, cfg, "coupling", *pair)
    assert got == ref_level(*pair)
    assert 3 <= len(got) <= 40  # a handful a year over 2019–2025, not daily


@pytest.mark.parametrize("pair", [("BTC", "IWM"), ("BTC", "SMALLCAP_TECH")])
def test_divergence_episodes_equal_pandas(demo: Any, pair: tuple[str, str]) -> None:
    cfg, db = demo
    got = ours(db, cfg, "diverge", *pair)
    assert got == ref_divergence(*pair)
    assert len(got) >= 3


def test_backtest_respects_start_and_end(demo: Any) -> None:
    cfg, db = demo
    start, end = pd.Timestamp("2024-01-01").timestamp(), pd.Timestamp("2024-12-31").timestamp()
    eps = backtest(db, cfg, start=int(start), end=int(end))
    assert eps and all(start <= e.fired_ts <= end for e in eps)
    assert all(e.resolved_ts is None or e.resolved_ts <= end for e in eps)


# ---- live, one bar at a time ----------------------------------------------------------


def frames() -> dict[str, pd.DataFrame]:
    return {name: parse_csv(path).bars for name, path in demo_files().items()}


def load_until(db: sqlite_utils.Database, bars: dict[str, pd.DataFrame], lo: int, hi: int) -> None:
    for name, df in bars.items():
        part = df[(df.index > lo) & (df.index <= hi)]
        if len(part):
            upsert_bars(db, name, "1d", part, "test")


def test_live_bar_by_bar_equals_backtest(tmp_path: Path) -> None:
    cfg = with_rules(demo_config(tmp_path / "live.db"), LEVEL, DIVERGE, JUMP, ZSCORE)
    db = open_db(cfg.storage.path)
    bars = frames()
    sessions = bars["IWM"].index
    start = int(sessions[-160])  # ~7 months of sessions fed one by one (2025)
    load_until(db, bars, -(2**62), start)
    update_correlations(db, cfg)
    evaluate(db, cfg, ["team"], now=start + 86400.0)  # no state yet: starts at the latest bar
    prev = start
    for ts in sessions[sessions > start]:
        load_until(db, bars, prev, int(ts))
        prev = int(ts)
        update_correlations(db, cfg)
        evaluate(db, cfg, ["team"], now=ts + 86400.0)
    live = db.execute("SELECT rule, a, b, fired_ts, resolved_ts FROM episodes ORDER BY fired_ts, rule, a, b").fetchall()
    replay = [(e.rule, e.a, e.b, e.fired_ts, e.resolved_ts) for e in backtest(db, cfg, start=start)]
    assert sorted(live) == sorted(replay)
    assert len(live) >= 4
    # One message per fire and one per resolve, the resolve replying to its fire.
    fires = db.execute("SELECT count(*) FROM outbox WHERE kind = 'fire'").fetchone()[0]
    assert 0 < fires <= len(live)
    unreplied = db.execute("SELECT count(*) FROM outbox WHERE kind = 'resolve' AND reply_to IS NULL").fetchone()[0]
    assert unreplied == 0


# ---- what the outbox receives -------------------------------------------------------------


def planted(tmp_path: Path, *rules: dict[str, Any]) -> tuple[Config, sqlite_utils.Database, list[int]]:
    """Real data until 2025-03-31, then sessions fed one at a time from 2025-04-01."""
    cfg = with_rules(demo_config(tmp_path / "p.db"), *rules)
    db = open_db(cfg.storage.path)
    bars = frames()
    cut = int(pd.Timestamp("2025-03-31").timestamp())
    load_until(db, bars, -(2**62), cut)
    update_correlations(db, cfg)
    evaluate(db, cfg, ["team", "desk"], now=cut + 86400.0)
    sessions = [int(t) for t in bars["IWM"].index if t > cut]
    return cfg, db, sessions


def feed(db: sqlite_utils.Database, cfg: Config, since: int, until: int, **kw: Any) -> None:
    bars = frames()
    days = [int(t) for t in bars["IWM"].index if since < t <= until]
    prev = since
    for ts in days:
        load_until(db, bars, prev, ts)
        prev = ts
        update_correlations(db, cfg)
        evaluate(db, cfg, ["team", "desk"], now=ts + 86400.0, **kw)


def outbox(db: sqlite_utils.Database) -> list[tuple[Any, ...]]:
    return db.execute("SELECT id, chat, kind, text, reply_to, buttons, silent FROM outbox ORDER BY id").fetchall()


def test_fire_resolve_grouping_and_replies(tmp_path: Path) -> None:
    rule = {**LEVEL, "pairs": ["BTC/IWM", "BTC/SMALLCAP_TECH"], "above": 0.55, "clear_below": 0.45}
    cfg, db, sessions = planted(tmp_path, rule)
    feed(db, cfg, sessions[0] - 1, sessions[-1])
    rows = outbox(db)
    assert rows, "the 2025 data crosses 0.55 for BTC/IWM"
    eps = db.execute("SELECT id, a, b, fired_ts, resolved_ts FROM episodes ORDER BY id").fetchall()
    for chat in ("team", "desk"):
        mine = [r for r in rows if r[1] == chat]
        fire_ids = {r[0] for r in mine if r[2] == "fire"}
        for r in mine:
            if r[2] == "resolve":
                assert r[4] in fire_ids and "resolved" in r[3] and "lasted" in r[3]
            if r[2] == "fire":
                assert '"c:' in r[5] and '"m:' in r[5]  # Chart, Mute 1h, Mute 24h
    # Never a second fire message for an open episode: fires per chat == distinct fire bars.
    fire_days = {(e[3]) for e in eps}
    assert len([r for r in rows if r[1] == "team" and r[2] == "fire"]) <= len(fire_days)
    both = [r for r in rows if r[2] == "fire" and "2 pairs" in r[3]]
    same_day = [d for d in fire_days if sum(1 for e in eps if e[3] == d) == 2]
    assert len(both) == 2 * len(same_day)  # grouped: one message per chat when both fire together


def test_mute_withholds_then_one_message_when_it_ends(tmp_path: Path) -> None:
    rule = {**LEVEL, "pairs": ["BTC/IWM"], "above": 0.55, "clear_below": 0.45}
    cfg, db, sessions = planted(tmp_path, rule)
    add_mute(db, "coupling", None, until_ts=9e12, by="test")
    feed(db, cfg, sessions[0] - 1, sessions[-1])
    assert db.execute("SELECT count(*) FROM episodes").fetchone()[0] > 0  # state advanced
    assert outbox(db) == []  # nothing said while muted
    firing = db.execute("SELECT count(*) FROM episodes WHERE resolved_ts IS NULL").fetchone()[0]
    lift_mutes(db, None)
    evaluate(db, cfg, ["team"], now=sessions[-1] + 2 * 86400.0)
    rows = outbox(db)
    assert len(rows) == (1 if firing else 0)
    if firing:
        assert "mute ended" in rows[0][3]


def test_stale_source_fires_and_inhibits_its_assets(tmp_path: Path) -> None:
    stale = {"name": "stale", "kind": "stale", "after": "2h", "sources": ["yahoo"]}
    rule = {**LEVEL, "pairs": ["BTC/IWM"], "above": 0.55, "clear_below": 0.45}
    cfg, db, sessions = planted(tmp_path, stale, rule)
    record_ok(db, "yahoo", "IWM", None)  # "now" in the DB's clock: long before the fake `now` below
    db.execute("UPDATE feed_status SET last_ok_at = '2025-03-31T20:00:00+00:00'")
    before = db.execute("SELECT last_ts FROM alert_state WHERE rule = 'coupling'").fetchone()
    feed(db, cfg, sessions[0] - 1, sessions[10])
    kinds = [r[2] for r in outbox(db)]
    assert kinds.count("fire") == 2  # the stale alert, once per chat, and nothing else
    assert "yahoo" in outbox(db)[0][3] and "no successful poll" in outbox(db)[0][3]
    after = db.execute("SELECT last_ts FROM alert_state WHERE rule = 'coupling'").fetchone()
    assert after == before  # frozen while the source is stale


def test_demo_prints_every_push_and_writes_the_notable_chart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from PIL import Image

    from service.cli import main
    from service.demo import replay_alerts, with_example_rules

    db_path = tmp_path / "demo.db"
    assert main(["demo", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    m = re.search(r"rules would have pushed, 2019–2025 \((\d+) messages\)", out)
    assert m, out[-2000:]
    cfg = with_example_rules(demo_config(db_path))
    db = open_db(db_path)
    replay = replay_alerts(db, cfg)
    assert int(m.group(1)) == len(replay.pushes) > 50
    fired = {(e.rule, e.fired_ts) for e in replay.episodes}  # one message per rule and firing bar
    resolved = [e for e in replay.episodes if e.resolved_ts is not None]
    assert len(replay.pushes) == len(fired) + len(resolved)
    assert out.count("✅ resolved · ") == len(resolved)
    png = re.search(r"chart of the most notable episode \(btc_diverges, BTC/\w+, 2020-03-12, .*\): (\S+\.png)", out)
    assert png, out[-500:]
    img = Image.open(png.group(1))
    assert img.size == (1080, 1350)
