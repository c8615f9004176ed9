"""Alignment: stored bars -> one price per observation on the NYSE clock. Pure, no I/O.

Observations (their ``ts`` is int UTC epoch seconds):

* ``1d`` — one per NYSE session (exchange_calendars XNYS, half days and holidays included),
  ``ts`` = 00:00 UTC of the session date. Equity price = the session's adjusted close (the
  daily bar of that date). Crypto price = the close of the last intraday candle that ends at
  or before the session close (16:00 New York, 13:00 on half days) and less than one candle
  length before it; where no such candle exists (e.g. history imported from a Yahoo daily
  file) the crypto *daily* bar of the same calendar date is used, whose close is the UTC
  midnight that ends that date, about 3–4 hours after the equity close.
* ``1h`` — regular-session hours only: the ends of Yahoo's hourly bars (10:30, 11:30, …,
  15:30 and the close, in New York time; fewer on half days), ``ts`` = that end time.
  Equity price = the close of the hourly bar ending there. Crypto price = the last candle
  close at or before that time, no older than one candle (with 1h candles, which end on the
  hour, that is the candle that ended 30 minutes earlier; fetch 30m candles for exact
  sampling). Each observation carries its session, so no return spans a session gap.

Pairs are then aligned on the timestamps both sides have (inner join, never forward-filled)
and returns are log returns of the aligned prices: see `pair_returns`.
Baskets are built from their members' aligned simple returns: see `basket_prices`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from core.calendar import nyse_schedule

HOUR = 3600


@dataclass(frozen=True)
class Grid:
    """The observation clock of one timeframe: ``ts`` and the session (date ts) of each."""

    timeframe: str
    ts: np.ndarray  # int64, sorted
    session: np.ndarray  # int64 session-date ts, same length


@lru_cache(maxsize=4)
def grid(timeframe: str) -> Grid:
    sched = nyse_schedule()
    if timeframe == "1d":
        ts = sched.index.to_numpy()
        return Grid("1d", ts, ts)
    if timeframe != "1h":
        raise ValueError(f"unknown timeframe {timeframe!r}")
    opens, closes, dates = sched["open"].to_numpy(), sched["close"].to_numpy(), sched.index.to_numpy()
    # Bar k of a session starts at open + k h; it ends at min(open + (k+1) h, close).
    nbars = np.ceil((closes - opens) / HOUR).astype(np.int64)
    rep_open = np.repeat(opens, nbars)
    k = np.arange(nbars.sum()) - np.repeat(np.cumsum(nbars) - nbars, nbars)
    ends = np.minimum(rep_open + (k + 1) * HOUR, np.repeat(closes, nbars))
    return Grid("1h", ends.astype(np.int64), np.repeat(dates, nbars).astype(np.int64))


def equity_obs(bars: pd.DataFrame, timeframe: str) -> pd.Series:
    """Equity closes placed on the observation clock (bars outside sessions are dropped)."""
    if bars.empty:
        return pd.Series(dtype="float64")
    g = grid(timeframe)
    starts = bars.index.to_numpy(dtype=np.int64)
    close = bars["close"].to_numpy(dtype=np.float64)
    if timeframe == "1d":
        keep = np.isin(starts, g.ts)
        return pd.Series(close[keep], index=starts[keep])
    sched = nyse_schedule()
    # The session containing each bar start: the last session whose open is <= start.
    opens, closes = sched["open"].to_numpy(), sched["close"].to_numpy()
    i = np.searchsorted(opens, starts, side="right") - 1
    ok = (i >= 0) & (starts < closes[np.maximum(i, 0)])
    ends = np.minimum(starts + HOUR, closes[np.maximum(i, 0)])
    s = pd.Series(close[ok], index=ends[ok])
    s = s[s.index.isin(g.ts)]
    return s[~s.index.duplicated(keep="last")]


def _asof(ends: np.ndarray, closes: np.ndarray, at: np.ndarray, max_age: np.ndarray | int) -> np.ndarray:
    """Close of the last candle ending at or before each `at`, if younger than max_age."""
    if len(ends) == 0:
        return np.full(len(at), np.nan)
    i = np.searchsorted(ends, at, side="right") - 1
    j = np.maximum(i, 0)
    fresh = (i >= 0) & (at - ends[j] < max_age)
    return np.where(fresh, closes[j], np.nan)


def crypto_obs(intraday: Mapping[int, pd.DataFrame], daily: pd.DataFrame | None, timeframe: str) -> pd.Series:
    """Crypto prices sampled on the clock. ``intraday`` maps candle seconds -> bar frame."""
    g = grid(timeframe)
    parts = [
        pd.Series(df["close"].to_numpy(np.float64), index=df.index.to_numpy(np.int64) + secs)
        for secs, df in intraday.items()
        if not df.empty
    ]
    if timeframe == "1d":
        sched = nyse_schedule()
        at = sched["close"].to_numpy()
        dates = sched.index.to_numpy()
    else:
        at = g.ts
        dates = g.ts
    out = np.full(len(at), np.nan)
    if parts:
        # Finer candles first, so at equal end time the finer close wins; both are the same
        # instant anyway. max_age = that candle length.
        merged = pd.concat(parts).sort_index()
        merged = merged[~merged.index.duplicated(keep="first")]
        age = max(intraday) if intraday else HOUR
        out = _asof(merged.index.to_numpy(), merged.to_numpy(), at, age)
    if timeframe == "1d" and daily is not None and not daily.empty:
        fallback = pd.Series(daily["close"].to_numpy(np.float64), index=daily.index.to_numpy(np.int64))
        fb = fallback.reindex(dates).to_numpy()
        out = np.where(np.isnan(out), fb, out)
    s = pd.Series(out, index=dates.astype(np.int64))
    return s.dropna()


def basket_prices(members: Mapping[str, pd.Series], weights: Mapping[str, float]) -> pd.Series:
    """A constant-weight basket rebalanced every observation, as a price index (100 at start).

    Members are inner-joined; the basket's return over each step is the weighted sum of the
    members' simple returns over that step (weights normalised to sum to 1).
    """
    names = list(weights)
    w = np.array([weights[n] for n in names], dtype=np.float64)
    w = w / w.sum()
    df = pd.concat([members[n].rename(n) for n in names], axis=1, join="inner").sort_index()
    if df.empty:
        return pd.Series(dtype="float64")
    simple = df.to_numpy()[1:] / df.to_numpy()[:-1] - 1.0
    level = 100.0 * np.concatenate([[1.0], np.cumprod(1.0 + simple @ w)])
    return pd.Series(level, index=df.index)


def pair_returns(a: pd.Series, b: pd.Series, timeframe: str) -> pd.DataFrame:
    """Aligned log returns of two observation series: columns x (a), y (b), index ts.

    Inner join on the timestamps both have, log-diff; for 1h, a return whose two ends lie in
    different sessions is dropped (no overnight or weekend returns).
    """
    df = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").sort_index()
    lp = np.log(df.to_numpy())
    ts = df.index.to_numpy(np.int64)
    r = lp[1:] - lp[:-1]
    keep = np.ones(len(r), dtype=bool)
    if timeframe == "1h":
        sess = session_of(ts, timeframe)
        keep = sess[1:] == sess[:-1]
    return pd.DataFrame({"x": r[keep, 0], "y": r[keep, 1]}, index=ts[1:][keep])


def session_of(ts: np.ndarray, timeframe: str) -> np.ndarray:
    """The session date ts of each observation ts on the clock."""
    g = grid(timeframe)
    i = np.searchsorted(g.ts, ts)
    return g.session[np.minimum(i, len(g.ts) - 1)]
