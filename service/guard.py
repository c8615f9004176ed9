"""The integrity guard: every write of bars — CSV import or feed poll — is checked here first.

`check_write` runs the shape checks of ``monitors.integrity`` on the batch (dates, calendar,
single-bar moves, the joins with the stored bars around it) and compares it with the stored
closes it overlaps. It returns a `WritePlan` or raises `Refused` (the bar at fault and one line
saying what is wrong); the caller turns that into its own error — `ImportFileError` naming the
file and line, or `BadDataError` for a feed — before anything is written. `apply_plan` then
stores the batch: a detected re-adjustment first rescales the stored bars around it, in the same
transaction as the upsert, so the history stays on one scale with no jump at the join.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlite_utils

from core.config import Config
from monitors.integrity import (
    Fault,
    Overlap,
    calendar_fault,
    compare_overlap,
    move_fault,
    time_fault,
    weekend_fault,
    when,
)
from storage.bars import (
    UpsertResult,
    neighbour,
    read_closes,
    rescale_bars,
    scale_bars_at,
    upsert_bars,
)
from storage.db import transaction


class Refused(Exception):
    """The batch fails a guard; ``fault.ts`` is the bar to blame, ``str()`` the one line."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        super().__init__(fault.message)


@dataclass(frozen=True)
class WritePlan:
    older: float = 1.0  # stored prices before the batch × this (1.0: no re-adjustment)
    newer: float = 1.0  # stored prices after the batch × this
    inside: list[tuple[int, float]] = field(default_factory=list)  # stored bars in the batch's
    # range that the batch lacks (a row missing from a download): (ts, factor)
    overlap: int = 0  # stored bars the batch overlaps
    replaced: int = 0  # stored closes changed beyond the tolerance (only with replace=True)
    notes: list[str] = field(default_factory=list)  # what the user should be told


def check_write(
    db: sqlite_utils.Database, cfg: Config, asset: str, timeframe: str, bars: pd.DataFrame, *,
    now: int | None = None, replace: bool = False,
) -> WritePlan:
    """Check ``bars`` (a bar frame, sorted, unique ts) against the rules and the stored series."""
    if bars.empty:
        return WritePlan()
    kind = cfg.kind_of(asset)
    ts = bars.index.to_numpy(np.int64)
    close = bars["close"].to_numpy(np.float64)
    now = int(time.time()) if now is None else now
    for fault in (time_fault(ts, timeframe, now), calendar_fault(ts, kind, timeframe),
                  weekend_fault(ts, kind)):
        if fault is not None:
            raise Refused(fault)
    lo, hi = int(ts[0]), int(ts[-1])
    old_ts, old_close = read_closes(db, asset, timeframe, lo, hi)
    ov = compare_overlap(ts, close, old_ts, old_close, cfg.integrity.tolerance)
    notes: list[str] = []
    if ov.changed and not replace:
        assert ov.worst_ts is not None
        raise Refused(Fault(ov.worst_ts, (
            f"would change {ov.changed} of {ov.n} stored {asset} {timeframe} closes by more than "
            f"{cfg.integrity.tolerance:.2%} (largest {ov.worst:+.2%} on {when(ov.worst_ts, timeframe)}: "
            f"{ov.old:.6g} stored, {ov.new:.6g} here{_scaled(ov)}) — refused; "
            "`import --replace` overwrites")))
    if ov.runs:
        steps = "; ".join(f"× {k:.6g} from {when(t, timeframe)}" for t, k in ov.runs)
        notes.append(
            f"{asset} {timeframe}: re-adjusted history — the new closes are the stored ones {steps} "
            f"({ov.n} overlapping bars; a vendor re-adjustment): the stored bars around them were "
            "rescaled to match, so the whole series is on one scale with no jump at the join")
    if ov.changed:
        notes.append(f"{asset} {timeframe}: --replace: {ov.changed} stored close(s) overwritten "
                     f"(largest change {ov.worst:+.2%})")
    before = neighbour(db, asset, timeframe, lo, before=True)
    after = neighbour(db, asset, timeframe, hi, before=False)
    fault = move_fault(ts, close, limit=cfg.integrity.move_limit(kind), kind=kind,
                       timeframe=timeframe, before=_times(before, ov.first),
                       after=_times(after, ov.last))
    if fault is not None:
        raise Refused(fault)
    inside: list[tuple[int, float]] = []
    if ov.runs:
        lacking = np.setdiff1d(old_ts, ts, assume_unique=True)
        starts = np.array([t for t, _ in ov.runs], dtype=np.int64)
        ks = [k for _, k in ov.runs]
        inside = [(int(t), ks[max(int(np.searchsorted(starts, t, side="right")) - 1, 0)])
                  for t in lacking.tolist()]
    return WritePlan(ov.first, ov.last, inside, ov.n, ov.changed if replace else 0, notes)


def _times(bar: tuple[int, float] | None, k: float) -> tuple[int, float] | None:
    return None if bar is None else (bar[0], bar[1] * k)


def _scaled(ov: Overlap) -> str:
    return "" if not ov.runs else ", after the re-adjustment ratio"


def apply_plan(db: sqlite_utils.Database, asset: str, timeframe: str, bars: pd.DataFrame,
               source: str, plan: WritePlan) -> UpsertResult:
    """Rescale (if the plan says so) and upsert, in one transaction."""
    if bars.empty:
        return UpsertResult(0, 0, 0)
    lo, hi = int(bars.index[0]), int(bars.index[-1])
    with transaction(db):
        if plan.older != 1.0 and math.isfinite(plan.older):
            rescale_bars(db, asset, timeframe, plan.older, before=lo)
        if plan.newer != 1.0 and math.isfinite(plan.newer):
            rescale_bars(db, asset, timeframe, plan.newer, after=hi)
        scale_bars_at(db, asset, timeframe, plan.inside)
        return upsert_bars(db, asset, timeframe, bars, source)
