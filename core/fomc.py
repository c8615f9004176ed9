"""The Fed's calendar: FOMC decision dates shipped with the package (core/data/fomc.csv).

No network at run time: the dates are data in the repo, with their source in the file's
header; docs/fomc.md says how to add a year. Decision date = the day the statement was
released (the second day of a scheduled meeting; unscheduled decisions on their own date).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from core.calendar import DAY, nyse_schedule

FOMC_CSV = Path(__file__).with_name("data") / "fomc.csv"


@dataclass(frozen=True)
class Decision:
    day: date
    kind: str  # scheduled | unscheduled
    meeting: str

    @property
    def ts(self) -> int:
        """00:00 UTC of the decision date (the convention of daily observation timestamps)."""
        return int(datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC).timestamp())


def parse_fomc(text: str) -> tuple[Decision, ...]:
    """Rows of the CSV (``#`` lines are comments), sorted by date; ValueError names a bad line."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = []
    for i, row in enumerate(csv.DictReader(lines), start=2):
        try:
            day = date.fromisoformat(row["date"].strip())
        except (KeyError, AttributeError, ValueError):
            raise ValueError(f"fomc.csv data line {i}: bad date {row.get('date')!r}") from None
        kind = (row.get("kind") or "").strip()
        if kind not in ("scheduled", "unscheduled"):
            raise ValueError(f"fomc.csv data line {i}: kind must be scheduled or unscheduled, got {kind!r}")
        out.append(Decision(day, kind, (row.get("meeting") or "").strip()))
    return tuple(sorted(out, key=lambda d: d.day))


@lru_cache(maxsize=1)
def decisions() -> tuple[Decision, ...]:
    return parse_fomc(FOMC_CSV.read_text(encoding="utf-8"))


def decisions_between(start: int, end: int) -> list[Decision]:
    """Decisions whose date (00:00 UTC) lies in [start, end], UTC epoch seconds."""
    return [d for d in decisions() if start <= d.ts <= end]


def sessions_from(decision_ts: int, ts: int) -> int:
    """Signed NYSE sessions from a decision to the day of ``ts``: 0 on the decision day,
    +k when ``ts`` is the k-th session after it, −k when k sessions (the day of ``ts``
    included) lie before the decision. A Sunday decision's Monday is +1."""
    days = nyse_schedule().index.to_numpy()
    day = ts - ts % DAY
    if day == decision_ts:
        return 0
    if day > decision_ts:  # sessions in (decision, day]
        return int(np.searchsorted(days, day, side="right") - np.searchsorted(days, decision_ts, side="right"))
    return -int(np.searchsorted(days, decision_ts, side="left") - np.searchsorted(days, day, side="left"))


def nearest_decision(ts: int, within: int) -> tuple[Decision, int] | None:
    """The decision closest (in sessions) to the day of ``ts``, if within ``within`` sessions;
    ties go to the earlier one (its effect is under way). None if ``within`` < 0."""
    if within < 0:
        return None
    best: tuple[Decision, int] | None = None
    lo, hi = ts - (within + 7) * 2 * DAY, ts + (within + 7) * 2 * DAY
    for d in decisions_between(lo, hi):
        k = sessions_from(d.ts, ts)
        if abs(k) <= within and (best is None or abs(k) < abs(best[1])):
            best = (d, k)
    return best


def describe(decision: Decision, offset: int) -> str:
    """'2 sessions after the FOMC decision of 2025-09-17' (or 'on the day of …', '1 session before …')."""
    when = f"the FOMC decision of {decision.day.isoformat()}"
    if offset == 0:
        return f"on the day of {when}"
    n = abs(offset)
    return f"{n} session{'s' * (n != 1)} {'after' if offset > 0 else 'before'} {when}"
