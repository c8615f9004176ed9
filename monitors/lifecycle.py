"""The alert lifecycle (Alertmanager's semantics), vectorised over alert keys. Pure numpy.

Per key (a rule × pair, or a rule × source) the state is: ok → pending → firing → ok.
`advance` consumes bars in order; for each bar where the key has a value:

- not firing: the condition (``trigger``) must hold for ``for_bars`` consecutive bars and the
  key must be out of its ``cooldown`` (bar time since its last resolve) — then it FIRES.
  A bar without the condition resets the count.
- firing: the first bar with ``clear`` RESOLVES it (thresholds differ: hysteresis). While
  firing, a REMINDER is due every ``repeat_interval`` seconds of bar time (0 = never).

Bars without a value for a key (NaN, or at or before the key's cursor) do not exist for it;
``frozen`` keys (inhibited by a firing `stale` alert) skip every bar and keep their cursor.
Time is bar time, never the wall clock, so a backtest and the live service agree exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

OK, PENDING, FIRING = 0, 1, 2
NO_TS = np.iinfo(np.int64).min  # "never" for the ts fields


@dataclass
class LifeState:
    """Arrays over keys; `fresh(n)` is the state of keys never evaluated."""

    status: np.ndarray  # int64: OK, PENDING, FIRING
    pending: np.ndarray  # int64: consecutive bars the condition has held
    fired_ts: np.ndarray  # int64 bar ts of the open episode's fire (NO_TS if none)
    notice_ts: np.ndarray  # int64 bar ts of the fire or the last reminder
    resolved_ts: np.ndarray  # int64 bar ts of the last resolve (cooldown)
    last_ts: np.ndarray  # int64 the cursor: last bar evaluated

    @classmethod
    def fresh(cls, n: int) -> LifeState:
        def never() -> np.ndarray:
            return np.full(n, NO_TS, dtype=np.int64)

        z = np.zeros(n, dtype=np.int64)
        return cls(z.copy(), z.copy(), never(), never(), never(), never())


class Transition(NamedTuple):  # a tuple: thousands can be made per bar when a big universe moves
    kind: Literal["fire", "resolve", "reminder"]
    key: int  # index into the keys
    bar: int  # column of the bar in the evaluated block
    ts: int  # the bar's ts


_KINDS: tuple[Literal["fire", "resolve", "reminder"], ...] = ("fire", "resolve", "reminder")


def advance(
    state: LifeState,
    ts: np.ndarray,
    value: np.ndarray,
    trigger: np.ndarray,
    clear: np.ndarray,
    *,
    for_bars: int = 1,
    cooldown: int = 0,
    repeat_interval: int = 0,
    frozen: np.ndarray | None = None,
) -> list[Transition]:
    """Step ``state`` (in place) through the bars ``ts`` (T,) with per-key (P, T) signals.

    Returns the transitions in bar order (keys ascending within a bar).
    """
    n_keys, n_bars = value.shape
    out: list[Transition] = []
    still = np.zeros(n_keys, dtype=bool) if frozen is None else frozen
    for t in range(n_bars):
        bar_ts = int(ts[t])
        live = np.isfinite(value[:, t]) & (state.last_ts < bar_ts) & ~still
        if not live.any():
            continue
        firing = live & (state.status == FIRING)
        resolve = firing & clear[:, t]
        remind = firing & ~resolve & (repeat_interval > 0) & (bar_ts - state.notice_ts >= repeat_interval)
        idle = live & (state.status != FIRING)
        holds = idle & trigger[:, t]
        state.pending[idle & ~holds] = 0
        state.status[idle & ~holds] = OK
        state.pending[holds] += 1
        cool = (state.resolved_ts == NO_TS) | (bar_ts - state.resolved_ts >= cooldown)
        fire = holds & (state.pending >= for_bars) & cool
        state.status[holds & ~fire] = PENDING
        state.status[fire] = FIRING
        state.pending[fire] = 0
        state.fired_ts[fire] = bar_ts
        state.notice_ts[fire | remind] = bar_ts
        state.status[resolve] = OK
        state.pending[resolve] = 0
        state.resolved_ts[resolve] = bar_ts
        state.fired_ts[resolve] = NO_TS
        state.last_ts[live] = bar_ts
        # At most one transition per key and bar (fire, resolve and reminder exclude each
        # other), so keys ascending within bars ascending needs no sort.
        keys = np.flatnonzero(fire | resolve | remind)
        which = np.where(fire[keys], 0, np.where(resolve[keys], 1, 2))
        out.extend(Transition(_KINDS[w], k, t, bar_ts) for k, w in zip(keys.tolist(), which.tolist(), strict=True))
    return out
