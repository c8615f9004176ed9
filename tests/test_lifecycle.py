"""The alert lifecycle on hand-made bars (bar time is the clock: no sleeps, no wall time)."""

from __future__ import annotations

import numpy as np

from monitors.lifecycle import FIRING, OK, PENDING, LifeState, advance

H = 3600


def run(values: list[float], trig: float = 0.6, clear: float = 0.4, **kw: int) -> list[tuple[str, int]]:
    v = np.array([values], dtype=float)
    ts = np.arange(1, len(values) + 1, dtype=np.int64) * H
    st = LifeState.fresh(1)
    out = advance(st, ts, v, v >= trig, v < clear, **kw)
    return [(t.kind, t.ts // H) for t in out]


def test_fires_once_and_resolves_once_with_hysteresis() -> None:
    # 0.65 fires; 0.5 (between the thresholds) keeps it firing; 0.35 resolves; 0.7 fires again.
    assert run([0.5, 0.65, 0.7, 0.5, 0.62, 0.35, 0.3, 0.7]) == [("fire", 2), ("resolve", 6), ("fire", 8)]


def test_for_bars_needs_consecutive_bars() -> None:
    assert run([0.7, 0.5, 0.7, 0.7, 0.7], for_bars=3) == [("fire", 5)]


def test_missing_bars_do_not_break_or_count() -> None:
    assert run([0.7, float("nan"), 0.7], for_bars=2) == [("fire", 3)]


def test_cooldown_delays_the_next_fire() -> None:
    assert run([0.7, 0.3, 0.7, 0.7, 0.7], cooldown=3 * H) == [("fire", 1), ("resolve", 2), ("fire", 5)]


def test_reminders_while_firing() -> None:
    got = run([0.7] * 7 + [0.3], repeat_interval=3 * H)
    assert got == [("fire", 1), ("reminder", 4), ("reminder", 7), ("resolve", 8)]


def test_cursor_skips_bars_already_seen_and_frozen_keys_stand_still() -> None:
    v = np.array([[0.7, 0.7], [0.7, 0.3]])
    ts = np.array([H, 2 * H], dtype=np.int64)
    st = LifeState.fresh(2)
    first = advance(st, ts, v, v >= 0.6, v < 0.4, frozen=np.array([False, True]))
    assert [(t.kind, t.key) for t in first] == [("fire", 0)]
    assert list(st.last_ts) == [2 * H, np.iinfo(np.int64).min]
    again = advance(st, ts, v, v >= 0.6, v < 0.4)  # key 0 has seen both bars; key 1 now runs
    assert [(t.kind, t.key, t.ts) for t in again] == [("fire", 1, H), ("resolve", 1, 2 * H)]
    assert list(st.status) == [FIRING, OK]


def test_pending_state_is_kept_between_calls() -> None:
    st = LifeState.fresh(1)
    v = np.array([[0.7]])
    assert advance(st, np.array([H]), v, v >= 0.6, v < 0.4, for_bars=2) == []
    assert st.status[0] == PENDING
    out = advance(st, np.array([2 * H]), v, v >= 0.6, v < 0.4, for_bars=2)
    assert [t.kind for t in out] == ["fire"]
