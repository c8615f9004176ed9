"""What every feed returns, and the bar-frame conventions all feeds share.

A bar frame is a DataFrame indexed by ``ts`` — int64 UTC epoch seconds of the bar's *open*;
daily bars sit at 00:00 UTC of their date (the NYSE session date for equities, the UTC day
for crypto) — with float columns ``open, high, low, close, volume``. Only closed bars:
a still-forming candle or a session that has not closed yet is never returned.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

BAR_COLUMNS = ("open", "high", "low", "close", "volume")

# progress(asset, timeframe, bars_so_far) — e.g. a tqdm update; None = silent.
Progress = Callable[[str, str, int], None]


@dataclass(frozen=True)
class FeedResult:
    source: str  # "binance", "yahoo", "csv:<file>"…
    asset: str
    timeframe: str
    fetched: int
    inserted: int
    updated: int
    error: str | None = None  # one line, no secrets; None on success

    @property
    def ok(self) -> bool:
        return self.error is None
