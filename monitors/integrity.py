"""Integrity checks of a batch of bars before it is stored: pure functions, no I/O.

Each check returns the first `Fault` it finds (the bar at fault and one line saying what is
wrong) or None. ``service.guard`` runs them on every write, CSV import and feed poll alike:

* `time_fault`      bars before 1970 or opening in the future
* `calendar_fault`  equity bars on days (hours) the NYSE was closed
* `weekend_fault`   a crypto series with no weekend bar at all (an equity file imported as crypto)
* `move_fault`      single-bar moves no market makes, inside the batch and at its joins with the
                    stored bars around it (the allowance grows with the gap between two bars)
* `compare_overlap` the batch against the stored closes it overlaps: a constant ratio is a
                    vendor re-adjustment (dividends, splits); anything else is a change of history
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from core.calendar import nyse_schedule
from core.timeframes import TIMEFRAME_SECONDS

RATIO_TOL = 1e-5  # two downloads of one adjusted series agree on the ratio to ~1.4e-6 (real files)
RATIO_EPS = 1e-6  # below this a common ratio is rounding, not a re-adjustment
MIN_RESCALE = 3  # fewer overlapping bars cannot tell a re-adjustment from a wrong file
GAP_BARS = 3  # a gap of up to this many bar lengths (a weekend) counts as one bar for moves
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Fault:
    ts: int  # the bar at fault (a bar of the batch when there is one)
    message: str


@dataclass(frozen=True)
class Overlap:
    n: int  # stored bars the batch overlaps
    scale: float  # new / stored, common to the overlap: 1.0 unless a re-adjustment was found
    changed: int  # overlapping closes that change by more than the tolerance (after scaling)
    worst_ts: int | None  # where the largest change is
    worst: float  # that change, relative (new / (stored · scale) − 1)
    old: float  # the stored close there
    new: float  # the batch's close there


def when(ts: int, timeframe: str) -> str:
    dt = datetime.fromtimestamp(int(ts), UTC)
    return dt.strftime("%Y-%m-%d") if timeframe == "1d" else dt.strftime("%Y-%m-%d %H:%M UTC")


def time_fault(ts: np.ndarray, timeframe: str, now: int) -> Fault | None:
    if ts.size and ts[0] < 0:
        return Fault(int(ts[0]), f"{when(int(ts[0]), timeframe)} is before 1970")
    late = np.flatnonzero(ts > now)
    if late.size:
        t = int(ts[late[0]])
        return Fault(t, f"{when(t, timeframe)} is in the future")
    return None


def calendar_fault(ts: np.ndarray, kind: str, timeframe: str) -> Fault | None:
    """Equities trade NYSE sessions only: a daily bar on another date, or an intraday bar that
    does not start inside a session, belongs to something else (crypto, another market)."""
    if kind != "equity" or not ts.size:
        return None
    sched = nyse_schedule()
    days = sched.index.to_numpy()
    known = ts >= days[0]  # before the calendar's range: weekends only
    weekday = ((ts // 86400) + 3) % 7  # 1970-01-01 was a Thursday (Monday = 0)
    if timeframe == "1d":
        bad = np.where(known, ~np.isin(ts, days), weekday >= 5)
    else:
        opens, closes = sched["open"].to_numpy(), sched["close"].to_numpy()
        i = np.searchsorted(opens, ts, side="right") - 1
        inside = (i >= 0) & (ts < closes[np.maximum(i, 0)])
        bad = np.where(known, ~inside, weekday >= 5)
    hit = np.flatnonzero(bad)
    if not hit.size:
        return None
    t = int(ts[hit[0]])
    what = "day" if timeframe == "1d" else "hour"
    return Fault(t, f"{when(t, timeframe)} ({_WEEKDAYS[int(weekday[hit[0]])]}) is not an NYSE "
                 f"session {what}: {hit.size} bar(s) when the market was closed — not an equity file?")


def weekend_fault(ts: np.ndarray, kind: str) -> Fault | None:
    """Crypto trades every day: two weeks or more without one weekend bar is an equity file."""
    if kind != "crypto" or ts.size < 2 or ts[-1] - ts[0] < 14 * 86400:
        return None
    if (((ts // 86400) + 3) % 7 >= 5).any():
        return None
    days = (int(ts[-1]) - int(ts[0])) // 86400
    return Fault(int(ts[0]), f"no weekend bar in {days} days: crypto trades every day "
                 "— an equity file?")


def move_fault(ts: np.ndarray, close: np.ndarray, *, limit: float, kind: str, timeframe: str,
               before: tuple[int, float] | None = None,
               after: tuple[int, float] | None = None) -> Fault | None:
    """The first single-bar move beyond ``limit`` (a simple-return fraction, symmetric in log
    terms), including the moves from the stored bar ``before`` and to the stored bar ``after``.
    Over a gap of g bar lengths (g > GAP_BARS) the allowance grows as √(g / GAP_BARS)."""
    t = np.concatenate([[before[0]] if before else [], ts, [after[0]] if after else []])
    c = np.concatenate([[before[1]] if before else [], close, [after[1]] if after else []])
    if c.size < 2:
        return None
    step = TIMEFRAME_SECONDS[timeframe]
    gaps = np.maximum(np.diff(t) / step, 1.0)
    allowed = math.log1p(limit) * np.sqrt(np.maximum(gaps / GAP_BARS, 1.0))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        move = np.abs(np.diff(np.log(c)))
    hit = np.flatnonzero(~(move <= allowed))
    if not hit.size:
        return None
    k = int(hit[0])
    stored_first = before is not None and k == 0
    stored_last = after is not None and k == c.size - 2
    bar = k if stored_last else k + 1  # the batch bar to blame
    ref = k + 1 if stored_last else k
    pct = c[bar] / c[ref] - 1.0
    src = "the stored close" if stored_first or stored_last else "the close"
    direction = "to" if stored_last else "from"
    return Fault(int(t[bar]), f"close {c[bar]:.6g} on {when(int(t[bar]), timeframe)} is "
                 f"{pct:+.1%} {direction} {src} {c[ref]:.6g} on {when(int(t[ref]), timeframe)}: "
                 f"more than a {kind} bar moves (integrity.max_move.{kind} = {limit:g})")


def compare_overlap(ts: np.ndarray, close: np.ndarray, old_ts: np.ndarray, old_close: np.ndarray,
                    tol: float) -> Overlap:
    """The batch's closes against the stored ones on the same timestamps.

    A re-adjustment is a ratio new/stored that at least half of ≥ MIN_RESCALE overlapping bars
    share to RATIO_TOL (and that is not 1); the other bars are then judged after scaling.
    """
    _, i, j = np.intersect1d(ts, old_ts, assume_unique=True, return_indices=True)
    if not i.size:
        return Overlap(0, 1.0, 0, None, 0.0, math.nan, math.nan)
    new, old = close[i], old_close[j]
    ratio = new / old
    m = float(np.median(ratio))
    scale = 1.0
    if i.size >= MIN_RESCALE and abs(m - 1.0) > RATIO_EPS:
        agree = np.abs(ratio / m - 1.0) <= RATIO_TOL
        if agree.sum() * 2 > i.size:
            scale = m
    rel = ratio / scale - 1.0
    k = int(np.argmax(np.abs(rel)))
    changed = int((np.abs(rel) > tol).sum())
    return Overlap(int(i.size), scale, changed, int(ts[i[k]]), float(rel[k]), float(old[k]),
                   float(new[k]))
