"""The analysis numbers (issue 11) against independent computations on the bundled real data:
lead-lag against pandas ``shift``, the Dimson beta against statsmodels OLS, the percentile of
today's correlation by hand over an independent rolling correlation, the FOMC calendar against
the Fed's published dates, and the CLI's `heatmap` / `leadlag` / `corr --json` output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from reference import Z, daily_close
from test_cli import Demo, cli, one_json, one_line_error

from bot import alert_text
from core.fomc import decisions, describe, nearest_decision, parse_fomc, sessions_from
from core.models import AlertEvent
from core.rules import CorrLevelRule
from service import analysis
from service import queries as q
from service.demo import build_demo_db, demo_files
from storage.db import open_db

TOL = 1e-9


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    from test_cli import config_toml

    d = tmp_path_factory.mktemp("analysis")
    cfg = build_demo_db(d / "demo.db")
    toml = d / "corrbot.toml"
    toml.write_text(config_toml(cfg, d / "demo.db"), encoding="utf-8")
    return Demo(cfg, toml)


def returns(a: str, b: str) -> pd.DataFrame:
    """Aligned daily log returns straight from the CSVs: own read, inner join, log-diff."""
    files = demo_files()
    j = pd.concat([daily_close(files[a]).rename("x"), daily_close(files[b]).rename("y")], axis=1, join="inner")
    return np.log(j.sort_index()).diff().iloc[1:]


def fisher(r: float, n: int) -> tuple[float, float]:
    half = Z / np.sqrt(n - 3)
    return float(np.tanh(np.arctanh(r) - half)), float(np.tanh(np.arctanh(r) + half))


@pytest.mark.parametrize(("a", "b", "days"), [("BTC", "IWM", None), ("ETH", "QQQ", 365), ("SOL", "PSCT", 730)])
def test_lead_lag_matches_pandas_shift(demo: Demo, a: str, b: str, days: int | None) -> None:
    db = open_db(demo.cfg.storage.path, readonly=True)
    ll = analysis.leadlag(db, demo.cfg, a, b, period_days=days, period_label="x")
    r = returns(a, b)
    if days is not None:
        r = r[r.index > r.index[-1] - pd.Timedelta(days=days)]
    assert ll.n == len(r) and pd.Timestamp(ll.end, unit="s") == r.index[-1]
    assert [row.lag for row in ll.rows] == list(range(-5, 6))
    for row in ll.rows:
        # lag k: a at t against b at t + k, i.e. b shifted back by k.
        pair = pd.concat([r["x"], r["y"].shift(-row.lag)], axis=1).dropna()
        want = pair.iloc[:, 0].corr(pair.iloc[:, 1])
        assert row.n == len(pair)
        assert row.r is not None and abs(row.r - want) < TOL, (row.lag, row.r, want)
        lo, hi = fisher(want, len(pair))
        assert row.ci95 is not None and abs(row.ci95[0] - lo) < TOL and abs(row.ci95[1] - hi) < TOL


@pytest.mark.parametrize(("a", "b"), [("BTC", "IWM"), ("BTC", "QQQ"), ("ALTS", "SMALLCAP_TECH")])
def test_dimson_beta_matches_statsmodels_ols(demo: Demo, a: str, b: str) -> None:
    db = open_db(demo.cfg.storage.path, readonly=True)
    ll = analysis.leadlag(db, demo.cfg, a, b, period_days=None, period_label="all")
    if a == "ALTS":
        # Baskets come from the demo's own reference construction (members on IWM's sessions).
        j = pd.concat([demo.prices[a].rename("x"), demo.prices[b].rename("y")], axis=1, join="inner")
        r = np.log(j.sort_index()).diff().iloc[1:]
    else:
        r = returns(a, b)
    df = pd.DataFrame({"x": r["x"], "y0": r["y"], "y1": r["y"].shift(1)}).dropna()
    fit = sm.OLS(df["x"], sm.add_constant(df[["y0", "y1"]])).fit()
    assert ll.dimson_parts is not None and ll.dimson_beta is not None and ll.beta is not None
    assert abs(ll.dimson_parts[0] - fit.params["y0"]) < 1e-8
    assert abs(ll.dimson_parts[1] - fit.params["y1"]) < 1e-8
    assert abs(ll.dimson_beta - (fit.params["y0"] + fit.params["y1"])) < 1e-8
    plain = sm.OLS(r["x"], sm.add_constant(r["y"])).fit().params["y"]
    assert abs(ll.beta - plain) < 1e-8


def hand_percentile(values: list[float], v: float) -> float:
    below = 0
    for x in values:
        if x <= v:
            below += 1
    return 100.0 * below / len(values)


@pytest.mark.parametrize(("a", "b", "w"), [("BTC", "IWM", 90), ("BTC", "SMALLCAP_TECH", 30), ("ETH", "XLK", 90)])
def test_percentile_of_today_by_hand(demo: Demo, a: str, b: str, w: int) -> None:
    db = open_db(demo.cfg.storage.path, readonly=True)
    (reading,) = q.corr_readings(db, demo.cfg, a, b, window=w)
    ref = demo.ref(a, b, w)["value"].dropna()
    today = float(ref.iloc[-1])
    assert reading.standing is not None
    assert abs(reading.standing.percentile - hand_percentile(list(ref), today)) < 1e-9
    assert reading.standing.n == len(ref)
    assert reading.standing.since == ref.index[0].date().isoformat()


def test_alert_context_uses_only_history_up_to_the_bar(demo: Demo) -> None:
    db = open_db(demo.cfg.storage.path, readonly=True)
    ref = demo.ref("BTC", "IWM", 30)["value"].dropna()
    at = pd.Timestamp("2022-06-15")  # an FOMC decision day (75 bp)
    ts = int(at.timestamp())
    ctx = analysis.alert_context(db, demo.cfg, "BTC", "IWM", "1d", 30, ts)
    past = ref[ref.index <= at]
    assert abs(ctx["corr"] - past.iloc[-1]) < TOL
    assert abs(ctx["pctile"] - hand_percentile(list(past), float(past.iloc[-1]))) < 1e-9
    assert ctx["pctile_since"] == past.index[0].year and ctx["pctile_n"] == len(past)
    assert ctx["fomc_ts"] == ts and ctx["fomc_sessions"] == 0


# ---- the FOMC calendar ------------------------------------------------------------------------


def test_fomc_calendar_shape() -> None:
    ds = decisions()
    per_year = pd.Series([d.day.year for d in ds if d.kind == "scheduled"]).value_counts()
    # Eight scheduled meetings a year; in 2020 the March 17-18 one was replaced by the unscheduled March 15.
    assert per_year.to_dict() == {y: 7 if y == 2020 else 8 for y in range(2019, 2027)}
    # Scheduled decisions are on Wednesdays, except the two election-week meetings (Thursdays).
    odd = {d.day.isoformat() for d in ds if d.kind == "scheduled" and d.day.weekday() != 2}
    assert odd == {"2020-11-05", "2024-11-07"}
    assert [d.day.isoformat() for d in ds if d.kind == "unscheduled"] == ["2020-03-03", "2020-03-15"]
    assert "2020-03-18" not in {d.day.isoformat() for d in ds}  # replaced by the March 15 decision


def test_fomc_sessions_around_a_decision() -> None:
    sept = next(d for d in decisions() if d.day.isoformat() == "2025-09-17")
    fri = int(pd.Timestamp("2025-09-19").timestamp())
    assert sessions_from(sept.ts, fri) == 2
    assert describe(sept, 2) == "2 sessions after the FOMC decision of 2025-09-17"
    assert nearest_decision(fri, 3) == (sept, 2) and nearest_decision(fri, 1) is None
    mon = int(pd.Timestamp("2025-09-15").timestamp())
    assert nearest_decision(mon, 3) == (sept, -2)
    assert describe(sept, -1) == "1 session before the FOMC decision of 2025-09-17"
    # The Sunday decision of 2020-03-15: the Monday is the first session after it, the Friday the last before.
    sun = next(d for d in decisions() if d.day.isoformat() == "2020-03-15")
    assert sessions_from(sun.ts, int(pd.Timestamp("2020-03-16").timestamp())) == 1
    assert sessions_from(sun.ts, int(pd.Timestamp("2020-03-13").timestamp())) == -1


def test_fomc_csv_errors_name_the_line() -> None:
    with pytest.raises(ValueError, match="line 3: bad date"):
        parse_fomc("# c\ndate,kind,meeting\n2020-01-29,scheduled,x\n2020-13-01,scheduled,y\n")
    with pytest.raises(ValueError, match="kind must be"):
        parse_fomc("date,kind,meeting\n2020-01-29,emergency,x\n")


def test_fire_message_says_percentile_and_fomc(demo: Demo) -> None:
    db = open_db(demo.cfg.storage.path, readonly=True)
    ts = int(pd.Timestamp("2022-06-17").timestamp())  # two sessions after 2022-06-15
    ctx = analysis.alert_context(db, demo.cfg, "BTC", "IWM", "1d", 30, ts)
    rule = CorrLevelRule(name="r", kind="corr_level", timeframe="1d", window=30, above=0.5)
    ev = AlertEvent("fire", rule, "BTC/IWM", "BTC", "IWM", 30, 1, ts, None, ctx["corr"], ctx["corr"], ctx, ctx)
    text = alert_text.fire_text([ev])
    pct = round(ctx["pctile"])
    assert f"ρ at its {pct}" in text and "percentile since 2019" in text
    assert "🏛 2 sessions after the FOMC decision of 2022-06-15" in text


# ---- the CLI ----------------------------------------------------------------------------------


def test_cli_heatmap_json_and_picture(demo: Demo, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_png = tmp_path / "h.png"
    rc, out, err = cli(demo, capsys, "heatmap", "--json", "--out", str(out_png))
    assert (rc, err) == (0, "")
    obj = one_json(out)
    assert obj["window"] == 90 and obj["asof"] == "2025-08-22"
    # Small caps first, large caps last, each group in config order.
    assert obj["cols"] == ["IWM", "PSCT", "IWO", "XSW", "SMALLCAP_TECH", "QQQ", "SPY", "XLK"]
    assert obj["rows"] == ["BTC", "ETH", "SOL", "ADA", "ALTS"]
    cells = obj["cells"]
    assert isinstance(cells, list) and len(cells) == 40
    for c in cells:
        assert abs(c["value"] - demo.last(c["a"], c["b"], 90)["value"]) < TOL, c
    assert out_png.read_bytes().startswith(b"\x89PNG")


def test_cli_heatmap_text(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(demo, capsys, "heatmap", "--window", "30")
    assert rc == 0
    lines = out.splitlines()
    header = lines[1].split()
    assert header[0] == "IWM" and header[-1] == "XLK"
    for line in lines[2:7]:
        name, *vals = line.split()
        for b, v in zip(header, vals, strict=True):
            assert abs(float(v) - demo.last(name, b, 30)["value"]) <= 0.005 + TOL


def test_cli_leadlag_json(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = cli(demo, capsys, "leadlag", "btc", "iwm", "--period", "all", "--json")
    assert rc == 0
    obj = one_json(out)
    r = returns("BTC", "IWM")
    lags = obj["lags"]
    assert isinstance(lags, list)
    for row in lags:
        assert abs(row["r"] - r["x"].corr(r["y"].shift(-row["lag"]))) < TOL
    assert obj["n"] == len(r) and obj["start"] == r.index[0].date().isoformat()


@pytest.mark.parametrize(("argv", "words"), [
    (["leadlag", "BTC", "ETH"], ["not a watched pair"]),
    (["leadlag", "BTC", "IWM", "--lags", "0"], ["lags must be between 1 and 20"]),
    (["heatmap", "--window", "45"], ["window 45", "30, 90"]),
    (["heatmap", "--timeframe", "1h"], ["timeframe '1h'"]),
])
def test_cli_bad_arguments(demo: Demo, capsys: pytest.CaptureFixture[str], argv: list[str], words: list[str]) -> None:
    rc, out, err = cli(demo, capsys, *argv)
    assert rc == 2 and out == ""
    line = one_line_error(err)
    for w in words:
        assert w in line


def test_corr_json_percentile(demo: Demo, capsys: pytest.CaptureFixture[str]) -> None:
    obj = json.loads(cli(demo, capsys, "corr", "BTC", "IWM", "--json")[1])
    ref = demo.ref("BTC", "IWM", 90)["value"].dropna()
    assert abs(obj["percentile"] - hand_percentile(list(ref), float(ref.iloc[-1]))) < 1e-9
    assert obj["percentile_since"] == ref.index[0].date().isoformat() and obj["percentile_n"] == len(ref)
