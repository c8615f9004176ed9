"""Feed health across poll cycles, for the log: a failure once, a summary an hour, the recovery.

Each poll reports per-asset results; an exchange that is down fails every asset on it, every
five minutes, for hours. `SourceHealth` turns that into three kinds of line per source:
"binance failing: …" when it starts, "binance still failing after 2 h 5 min, 25 polls: …"
once per ``summary_seconds``, and "binance recovered after 2 h 10 min (26 failed polls)".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from feeds.base import FeedResult
from service.logsetup import SUMMARY_SECONDS

log = logging.getLogger("corrbot.feeds")
ALREADY_SUMMARISED = {"summarised": True}  # `RepeatFilter` lets these through as they are


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


@dataclass
class _Outage:
    since: float
    summarised: float
    polls: int
    error: str


class SourceHealth:
    def __init__(self, summary_seconds: float = SUMMARY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.summary_seconds, self.clock = summary_seconds, clock
        self.outages: dict[str, _Outage] = {}

    def observe(self, results: Iterable[FeedResult]) -> None:
        """One poll's results. A source with any failed asset is failing; with none, healthy."""
        now = self.clock()
        by_source: dict[str, list[FeedResult]] = {}
        for r in results:
            by_source.setdefault(r.source, []).append(r)
        for source, rs in by_source.items():
            failed = [r for r in rs if r.error]
            outage = self.outages.get(source)
            if not failed:
                if outage is not None:
                    del self.outages[source]
                    polls = f"{outage.polls} failed poll{'s' if outage.polls != 1 else ''}"
                    log.info("%s recovered after %s (%s)", source, _duration(now - outage.since), polls,
                             extra=ALREADY_SUMMARISED)
                continue
            what = ", ".join(sorted({f"{r.asset} {r.timeframe}" for r in failed}))
            error = f"{len(failed)} of {len(rs)} failed ({what[:120]}): {failed[0].error}"[:400]
            if outage is None:
                self.outages[source] = _Outage(now, now, 1, error)
                log.warning("%s failing: %s", source, error, extra=ALREADY_SUMMARISED)
                continue
            outage.polls += 1
            outage.error = error
            if now - outage.summarised >= self.summary_seconds:
                outage.summarised = now
                log.warning("%s still failing after %s, %d polls: %s", source,
                            _duration(now - outage.since), outage.polls, error, extra=ALREADY_SUMMARISED)
