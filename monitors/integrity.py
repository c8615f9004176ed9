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
MAX_RUNS = 4  # ex-dates inside one overlap, at most (a few quarters of dividends)
GAP_BARS = 3  # a gap of up to this many bar lengths (a weekend) counts as one bar for moves
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True)
class Fault:
    ts: int  # the bar at fault (a bar of the batch when there is one)
    message: str


@dataclass(frozen=True)
class Overlap:
    n: int  # stored bars the batch overlaps
    # The re-adjustment found: (first ts, new / stored) of each run of ≥ MIN_RESCALE overlapping
    # bars sharing one ratio, oldest first (several runs: a dividend or split went ex inside
    # the overlap). Empty when there is none (ratios ≈ 1, or too few bars to tell).
    runs: list[tuple[int, float]]
    changed: int  # overlapping closes that change by more than the tolerance (after the ratios)
    worst_ts: int | None  # where the largest change is
    worst: float  # that change, relative (new / (stored · ratio) − 1)
    old: float  # the stored close there
    new: float  # the batch's close there

    @property
    def first(self) -> float:
        """The factor for stored bars older than the batch."""
        return self.runs[0][1] if self.runs else 1.0

    @property
    def last(self) -> float:
        """The factor for stored bars newer than the batch."""
        return self.runs[-1][1] if self.runs else 1.0


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
    base = math.log1p(limit)
    step = TIMEFRAME_SECONDS[timeframe]

    def too_far(t0: int, c0: float, t1: int, c1: float) -> bool:
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            move = abs(math.log(c1 / c0)) if c0 > 0 and c1 > 0 else math.inf
        return not move <= base * math.sqrt(max((t1 - t0) / step / GAP_BARS, 1.0))

    def fault(bar_t: int, bar_c: float, ref_t: int, ref_c: float, src: str, direction: str) -> Fault:
        article = "an" if kind == "equity" else "a"
        return Fault(bar_t, f"close {bar_c:.6g} on {when(bar_t, timeframe)} is "
                     f"{bar_c / ref_c - 1.0:+.1%} {direction} {src} {ref_c:.6g} on "
                     f"{when(ref_t, timeframe)}: more than {article} {kind} bar moves "
                     f"(integrity.max_move.{kind} = {limit:g})")

    if not ts.size:
        return None
    if before is not None and too_far(before[0], before[1], int(ts[0]), float(close[0])):
        return fault(int(ts[0]), float(close[0]), before[0], before[1], "the stored close", "from")
    # Vectorised against the one-bar allowance; only the few bars beyond it look at their gap
    # (no full-length temporaries beyond the log and one difference: big imports).
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = np.diff(np.log(close))
    np.abs(d, out=d)
    for k in np.flatnonzero(~(d <= base)).tolist():
        if too_far(int(ts[k]), float(close[k]), int(ts[k + 1]), float(close[k + 1])):
            return fault(int(ts[k + 1]), float(close[k + 1]), int(ts[k]), float(close[k]),
                         "the close", "from")
    if after is not None and too_far(int(ts[-1]), float(close[-1]), after[0], after[1]):
        return fault(int(ts[-1]), float(close[-1]), after[0], after[1], "the stored close", "to")
    return None


def compare_overlap(ts: np.ndarray, close: np.ndarray, old_ts: np.ndarray, old_close: np.ndarray,
                    tol: float) -> Overlap:
    """The batch's closes against the stored ones on the same timestamps.

    A vendor re-adjustment multiplies history before each ex-date by one factor, so the ratio
    new/stored, in time order, is a step function: runs sharing one ratio to RATIO_TOL. Runs of
    at least MIN_RESCALE bars (at most MAX_RUNS of them, and not all ≈ 1) are taken as one; every
    other bar is judged against the ratio of the run before it (or after, at the start).
    """
    _, i, j = np.intersect1d(ts, old_ts, assume_unique=True, return_indices=True)
    if not i.size:
        return Overlap(0, [], 0, None, 0.0, math.nan, math.nan)
    new, old = close[i], old_close[j]
    ratio = new / old
    cuts = np.flatnonzero(np.abs(ratio[1:] / ratio[:-1] - 1.0) > RATIO_TOL) + 1
    bounds = list(zip([0, *cuts.tolist()], [*cuts.tolist(), ratio.size], strict=True))
    long = [(lo, hi) for lo, hi in bounds if hi - lo >= MIN_RESCALE]
    expect = np.ones(ratio.size)
    runs: list[tuple[int, float]] = []
    if 0 < len(long) <= MAX_RUNS:
        ks = [float(np.median(ratio[lo:hi])) for lo, hi in long]
        if any(abs(k - 1.0) > RATIO_EPS for k in ks):
            runs = [(int(ts[i[lo]]), k) for (lo, _), k in zip(long, ks, strict=True)]
            starts = np.array([lo for lo, _ in long])
            which = np.maximum(np.searchsorted(starts, np.arange(ratio.size), side="right") - 1, 0)
            expect = np.array(ks)[which]
    rel = ratio / expect - 1.0
    k = int(np.argmax(np.abs(rel)))
    changed = int((np.abs(rel) > tol).sum())
    return Overlap(int(i.size), runs, changed, int(ts[i[k]]), float(rel[k]), float(old[k]),
                   float(new[k]))
