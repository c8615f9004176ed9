"""Read side: the numbers the CLI and the chat commands show, as plain dataclasses.

This is corrbot's "rpc" layer: it resolves user-typed names against the config, reads
stored correlations (storage/) or computes from stored bars with monitors/, and returns
numbers. Formatting lives in the CLI and in bot/. Every function takes (db, cfg, …) and
raises `UnknownAssetError` / `BadWindowError` for bad names and windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import sqlite_utils

from core import __version__
from core.calendar import DAY
from core.config import TIMEFRAMES, Config
from core.errors import BadWindowError, NotEnoughDataError
from core.fomc import decisions_between
from core.models import (
    ChartData,
    CorrReading,
    CorrView,
    Divergence,
    Freshness,
    History,
    HistoryRow,
    Ranking,
    RankRow,
    Standing,
    StatusReport,
    iso,
)
from core.rules import DivergenceRule
from monitors.align import pair_returns
from monitors.rules import divergence_signal
from monitors.stats import pearson
from service.pipeline import build_panel
from storage import corr as corr_store
from storage.bars import newest_bars
from storage.status import all_status


def _num(v: object) -> float | None:
    return None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v)  # type: ignore[arg-type]


def check_timeframe(cfg: Config, timeframe: str) -> str:
    tf = timeframe.lower()
    if tf not in TIMEFRAMES or tf not in cfg.correlation.timeframes:
        raise BadWindowError(
            f"timeframe {timeframe!r} is not configured; use one of {', '.join(cfg.correlation.timeframes)}"
        )
    return tf


def check_window(cfg: Config, window: int | None, timeframe: str) -> list[int]:
    allowed = cfg.windows_for(timeframe)
    if window is None:
        return allowed
    if window not in allowed:
        raise BadWindowError(
            f"window {window} is not configured for {timeframe}; use one of {', '.join(map(str, allowed))}"
        )
    return [window]


def _oriented(cfg: Config, a: str, b: str) -> tuple[str, str]:
    """The stored orientation (crypto, equity) of a pair typed in either order."""
    if (a, b) in cfg.pair_list:
        return a, b
    if (b, a) in cfg.pair_list:
        return b, a
    raise BadWindowError(
        f"{a} and {b} are not a watched pair; {a} is paired with {', '.join(cfg.counterparts(a)) or 'nothing'}"
    )


def _reading(db: sqlite_utils.Database, cfg: Config, a: str, b: str, tf: str, w: int) -> CorrReading:
    """The latest value of the series, its change over 7 days and where it stands in its history."""
    ca, cb = _oriented(cfg, a, b)
    sid = corr_store.find_series(db, ca, cb, tf, w)
    row = corr_store.latest_row(db, sid) if sid is not None else None
    if row is None:
        return CorrReading(a, b, tf, w, None, 0, None, None, None, None, None)
    ts, v = row
    value = _num(v["value"])
    change, where = None, None
    if value is not None and sid is not None:
        prev = corr_store.latest_row(db, sid, at_or_before=ts - 7 * DAY)
        if prev is not None and _num(prev[1]["value"]) is not None:
            change = value - float(prev[1]["value"])  # type: ignore[arg-type]
        where = standing(db, sid, ts, value, tf)
    lo, hi = _num(v["ci_lo"]), _num(v["ci_hi"])
    return CorrReading(
        a,
        b,
        tf,
        w,
        value,
        int(v["n"] or 0),
        ts,
        (lo, hi) if lo is not None and hi is not None else None,
        _num(v["beta"]),
        _num(v["ewma"]),
        change,
        where,
    )


def corr_readings(
    db: sqlite_utils.Database,
    cfg: Config,
    a: str | None = None,
    b: str | None = None,
    *,
    window: int | None = None,
    timeframe: str = "1d",
) -> list[CorrReading]:
    """The latest correlation of a with b, one reading per configured window (or `window`)."""
    tf = check_timeframe(cfg, timeframe)
    ka = cfg.resolve(a) if a else cfg.default_crypto
    if b:
        kb = cfg.resolve(b)
    elif ka == cfg.default_crypto or cfg.default_benchmark in cfg.counterparts(ka):
        kb = cfg.default_benchmark if cfg.default_benchmark in cfg.counterparts(ka) else cfg.counterparts(ka)[0]
    else:
        kb = cfg.counterparts(ka)[0] if cfg.counterparts(ka) else cfg.default_benchmark
    return [_reading(db, cfg, ka, kb, tf, w) for w in check_window(cfg, window, tf)]


def corr_view(
    db: sqlite_utils.Database, cfg: Config, a: str | None, b: str | None, *, window: int | None, timeframe: str
) -> CorrView:
    """/corr's readings and the freshness of the pair's bars, in one trip to a reader thread."""
    readings = corr_readings(db, cfg, a, b, window=window, timeframe=timeframe)
    names = [readings[0].a, readings[0].b] if readings else []
    return CorrView(readings, freshness(db, cfg, names) if names else [])


def standing(db: sqlite_utils.Database, sid: int, ts: int, value: float, timeframe: str) -> Standing | None:
    """Where ``value`` (the series' value at ``ts``) stands among its stored values up to ``ts``:
    the share at or below it (`monitors.analysis.percentile_of`), counted in SQLite so a reply
    does not read the series' whole history out."""
    at_or_below, n, first = corr_store.rank_at(db, sid, ts, value)
    if n == 0 or first is None:
        return None
    return Standing(100.0 * at_or_below / n, iso(first, timeframe) or "", n)


def rank(
    db: sqlite_utils.Database,
    cfg: Config,
    a: str | None = None,
    *,
    window: int | None = None,
    timeframe: str = "1d",
) -> Ranking:
    """Every counterpart of a, by its latest correlation, highest first (no value last)."""
    tf = check_timeframe(cfg, timeframe)
    ka = cfg.resolve(a) if a else cfg.default_crypto
    w = check_window(cfg, window if window is not None else cfg.default_window(tf), tf)[0]
    readings = [_reading(db, cfg, ka, b, tf, w) for b in cfg.counterparts(ka)]
    readings.sort(key=lambda r: (r.value is None, -(r.value or 0.0)))
    asof = max((r.asof for r in readings if r.asof is not None), default=None)
    return Ranking(ka, tf, w, asof, [RankRow(r.b, r.value, r.n) for r in readings])


def history(db: sqlite_utils.Database, cfg: Config, a: str | None = None, *, by: str = "year") -> History:
    """Correlation of a with each counterpart per calendar year, all daily returns of the year."""
    if by != "year":
        raise BadWindowError(f"history by {by!r} is not supported; use: year")
    ka = cfg.resolve(a) if a else cfg.default_crypto
    panel = build_panel(db, cfg, "1d")
    rows: list[HistoryRow] = []
    for b in cfg.counterparts(ka):
        r = pair_returns(panel[ka].dropna(), panel[b].dropna(), "1d")
        years = pd.to_datetime(r.index, unit="s").year
        for year, grp in r.groupby(years):
            v = pearson(grp["x"].to_numpy(), grp["y"].to_numpy())
            rows.append(HistoryRow(str(year), b, None if np.isnan(v) else v, len(grp)))
    order = {b: i for i, b in enumerate(cfg.counterparts(ka))}
    rows.sort(key=lambda h: (h.period, order[h.b]))
    return History(ka, by, rows)


def chart_data(
    db: sqlite_utils.Database,
    cfg: Config,
    a: str | None = None,
    b: str | None = None,
    *,
    window: int | None = None,
    timeframe: str = "1d",
    period_days: int | None = 365,
    until: int | None = None,
    spans: tuple[tuple[str, int, int | None], ...] = (),
) -> ChartData:
    """The correlation series with its CI and both prices rebased to 100, over the period
    ending at the latest observation (or at ``until``); ``spans`` are alert episodes to shade."""
    reading = corr_readings(
        db, cfg, a, b, window=window if window is not None else cfg.default_window(timeframe), timeframe=timeframe
    )[0]
    ca, cb = _oriented(cfg, reading.a, reading.b)
    sid = corr_store.find_series(db, ca, cb, reading.timeframe, reading.window)
    last = reading.asof if until is None or reading.asof is None else min(until, reading.asof)
    since = None if period_days is None or last is None else last - period_days * DAY
    series = (
        corr_store.read_series(db, sid, since) if sid is not None else pd.DataFrame(columns=["value", "ci_lo", "ci_hi"])
    )
    if until is not None:
        series = series[series.index <= until]
        last = int(series.index.max()) if len(series) else last
    corr = series[["value", "ci_lo", "ci_hi"]].astype("float64")
    corr.index = pd.to_datetime(corr.index.astype("int64"), unit="s", utc=True)
    panel = build_panel(db, cfg, reading.timeframe)
    both = panel[[reading.a, reading.b]].dropna()
    if since is not None:
        both = both[both.index >= since]
    if until is not None:
        both = both[both.index <= until]
    rebased = both / both.iloc[0] * 100.0 if len(both) else both
    rebased.index = pd.to_datetime(rebased.index.astype("int64"), unit="s", utc=True)
    return ChartData(
        reading.a, reading.b, reading.timeframe, reading.window, corr,
        rebased[reading.a].astype("float64"), rebased[reading.b].astype("float64"),
        tuple(cfg.telegram.alert_levels), iso(last, reading.timeframe) or "", spans,
        tuple(d.ts for d in decisions_between(_first(corr, rebased), last)) if last is not None else (),
    )


def _first(corr: pd.DataFrame, prices: pd.DataFrame) -> int:
    """The earliest timestamp drawn (UTC epoch s): FOMC markers before it would be off the chart."""
    starts = [int(f.index[0].timestamp()) for f in (corr, prices) if len(f)]
    return min(starts, default=2**62)


def divergence(
    db: sqlite_utils.Database,
    cfg: Config,
    a: str | None = None,
    b: str | None = None,
    *,
    timeframe: str = "1d",
) -> Divergence:
    """The divergence rule's numbers for the latest bar, from the same code as the alert.

    Window and horizon are those of the first `divergence` rule watching the pair (else of
    any divergence rule, else the default window and 3 bars): what /diverge shows is what
    the alert would say.
    """
    tf = check_timeframe(cfg, timeframe)
    reading = corr_readings(db, cfg, a, b, window=cfg.default_window(tf), timeframe=tf)[0]
    ca, cb = _oriented(cfg, reading.a, reading.b)
    rules = [r for r in cfg.rules if isinstance(r, DivergenceRule)]
    rule = next((r for r in rules if (ca, cb) in cfg.rule_pairs(r)), rules[0] if rules else None)
    w = cfg.rule_window(rule) if rule is not None and rule.timeframe == tf else cfg.default_window(tf)
    horizon = rule.horizon if rule is not None else 3
    panel = build_panel(db, cfg, tf)
    r = pair_returns(panel[ca].dropna(), panel[cb].dropna(), tf)
    need = w + horizon
    if len(r) < need:
        raise NotEnoughDataError(f"{ca}/{cb} {tf} divergence", len(r), need)
    tail = r.iloc[-need:]  # the evaluated bar plus window + horizon − 1 returns of context
    sig = divergence_signal(tail["x"].to_numpy()[None, :], tail["y"].to_numpy()[None, :], window=w,
                            horizon=horizon, z=3.0, min_corr=-1.0)
    d = {k: float(v[0, -1]) for k, v in sig.detail.items()}
    z = float(sig.value[0, -1])
    return Divergence(ca, cb, tf, w, horizon, d["R_c"], d["R_e"], d["expected"], d["residual"],
                      z if np.isfinite(z) else None, d["beta"], d["rho"], int(r.index[-1]))


def freshness(db: sqlite_utils.Database, cfg: Config, names: list[str]) -> list[Freshness]:
    out: list[Freshness] = []
    for name in names:
        for key in [name] if name in cfg.asset_by_key else [m.upper() for m in cfg.basket_by_key[name].members]:
            last = newest_bars(db, key)
            out.extend(Freshness(key, tf, last.get(tf)) for tf in sorted(last) or ["1d"])
    return out


def db_size(db: sqlite_utils.Database) -> int:
    row = db.execute("PRAGMA database_list").fetchone()
    path = Path(row[2]) if row and row[2] else None
    if path is None:
        return 0
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def status(db: sqlite_utils.Database, cfg: Config) -> StatusReport:
    return StatusReport(all_status(db), freshness(db, cfg, [a.key for a in cfg.assets]), db_size(db), __version__)
