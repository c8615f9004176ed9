"""The NYSE (XNYS) calendar, loaded once per process: sessions with their open and close.

Everything that needs market hours — alignment, partial-bar filtering, the equity poll
schedule, staleness counted in session time — asks this module, so there is one calendar.
"""

from __future__ import annotations

from functools import lru_cache

import exchange_calendars as xcals
import numpy as np
import pandas as pd

DAY = 86400


@lru_cache(maxsize=1)
def nyse_schedule() -> pd.DataFrame:
    """XNYS sessions from 1990 on: index = session date ts (00:00 UTC); open/close as UTC epoch s."""
    sched = xcals.get_calendar("XNYS", start="1990-01-01").schedule
    epoch = pd.Timestamp("1970-01-01", tz="UTC")
    sec = pd.Timedelta(seconds=1)
    return pd.DataFrame(
        {
            "open": ((sched["open"] - epoch) // sec).to_numpy(np.int64),
            "close": ((sched["close"] - epoch) // sec).to_numpy(np.int64),
        },
        index=pd.Index(((sched.index - epoch.tz_localize(None)) // sec).to_numpy(np.int64), name="ts"),
    )


def session_close(day_ts: int) -> int | None:
    """UTC epoch of the NYSE close (16:00 ET, 13:00 on half days) of the date at ``day_ts``
    (any second of that UTC date); None if the market was closed that day or it is off the
    calendar's range."""
    sched = nyse_schedule()
    day = day_ts - day_ts % DAY
    days = sched.index.to_numpy()
    i = int(np.searchsorted(days, day))
    if i < len(days) and int(days[i]) == day:
        return int(sched["close"].to_numpy()[i])
    return None


def session_seconds_between(start: int, end: int) -> int:
    """How many seconds of regular NYSE trading lie in [start, end) (UTC epoch seconds)."""
    if end <= start:
        return 0
    sched = nyse_schedule()
    opens, closes = sched["open"].to_numpy(), sched["close"].to_numpy()
    lo = int(np.searchsorted(closes, start, side="right"))
    hi = int(np.searchsorted(opens, end, side="left"))
    if hi <= lo:
        return 0
    o = np.maximum(opens[lo:hi], start)
    c = np.minimum(closes[lo:hi], end)
    return int(np.clip(c - o, 0, None).sum())


def is_open(ts: int) -> bool:
    """Whether the NYSE regular session is open at ``ts``."""
    sched = nyse_schedule()
    opens, closes = sched["open"].to_numpy(), sched["close"].to_numpy()
    i = int(np.searchsorted(opens, ts, side="right")) - 1
    return i >= 0 and ts < int(closes[i])


def sessions_between(start: int, end: int) -> int:
    """NYSE sessions whose date lies in (start, end] (daily bar ts are 00:00 UTC of the date)."""
    days = nyse_schedule().index.to_numpy()
    return int(np.searchsorted(days, end, side="right") - np.searchsorted(days, start, side="right"))
