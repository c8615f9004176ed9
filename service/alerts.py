"""Rules over stored series: the inputs each rule reads, and one lifecycle run per rule.

Live (`service.evaluate`) and `corrbot backtest` both call `rule_inputs` and `run_rule`, so
they cannot disagree: the only difference is where a key's cursor starts (live: the stored
state, or the latest bar when there is none; backtest: fresh state at the start date).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlite_utils
from pydantic import TypeAdapter, ValidationError

from core.calendar import session_seconds_between
from core.config import Config
from core.errors import UserInputError
from core.rules import (
    CorrJumpRule,
    CorrLevelRule,
    CorrZscoreRule,
    DivergenceRule,
    RuleConfig,
    StaleRule,
)
from monitors.align import pair_returns
from monitors.lifecycle import LifeState, Transition, advance
from monitors.rules import Signal, divergence_signal, jump_signal, level_signal, zscore_signal
from service.pipeline import build_panel, members_of, panel_end
from storage import corr as corr_store
from storage.alerts import overrides, series_tails
from storage.status import all_status

ALL = -(2**62)  # a cursor before any bar: evaluate everything
_ADAPTER: TypeAdapter[RuleConfig] = TypeAdapter(RuleConfig)


def apply_overrides(rule: RuleConfig, values: dict[str, str]) -> RuleConfig:
    """The rule with /set values applied, validated like the config (raises UserInputError)."""
    data = rule.model_dump()
    for k, v in values.items():
        if k not in data or k in ("name", "kind", "pairs", "timeframe"):
            settable = ", ".join(sorted(set(data) - {"name", "kind", "pairs", "timeframe"}))
            raise UserInputError(f"{rule.name} has no settable key {k!r} (one of {settable})")
        data[k] = None if v.lower() in ("none", "null", "off") and k not in ("repeat_interval", "cooldown") else v
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"][1:]) or "value"
        raise UserInputError(f"{rule.name}.{where}: {str(err['msg']).removeprefix('Value error, ')}") from None


def effective_rules(db: sqlite_utils.Database, cfg: Config) -> list[RuleConfig]:
    over = overrides(db)
    out = []
    for r in cfg.rules:
        try:
            out.append(apply_overrides(r, over.get(r.name, {})))
        except UserInputError:
            out.append(r)  # an override that no longer fits this config is ignored, not fatal
    return out


@dataclass(frozen=True)
class KeyInput:
    """One key's bars to evaluate (ts) and its signal over them (shape (1, len(ts)))."""

    key: str
    a: str | None
    b: str | None
    ts: np.ndarray
    signal: Signal


def _context(rule: RuleConfig) -> int:
    if isinstance(rule, CorrJumpRule):
        return rule.lookback
    if isinstance(rule, CorrZscoreRule):
        return rule.history
    return 0


def _corr_signal(rule: RuleConfig, vals: np.ndarray) -> Signal:
    if isinstance(rule, CorrLevelRule):
        return level_signal(vals, above=rule.above, clear_below=rule.clear_below, below=rule.below,
                            clear_above=rule.clear_above)
    if isinstance(rule, CorrJumpRule):
        return jump_signal(vals, lookback=rule.lookback, delta=rule.delta, direction=rule.direction,
                           clear_delta=rule.clear_delta)
    assert isinstance(rule, CorrZscoreRule)
    return zscore_signal(vals, history=rule.history, z=rule.z, direction=rule.direction, clear_z=rule.clear_z)


def _new(ts: np.ndarray, cursor: int | None, end: int | None) -> np.ndarray:
    """Which bars to evaluate: after the cursor (only the latest when there is none)."""
    keep = ts > cursor if cursor is not None else np.arange(len(ts)) == len(ts) - 1
    return keep & (ts <= end) if end is not None else keep


def _pad(vals: np.ndarray, first: int, context: int) -> np.ndarray:
    """The values from ``first - context`` on, NaN-padded on the left where history is short."""
    lo = first - context
    head = np.full(max(0, -lo), np.nan)
    return np.concatenate([head, vals[max(lo, 0):]])[None, :]


def _returns_after(db: sqlite_utils.Database, cfg: Config, a: str, b: str, tf: str, cursor: int | None) -> bool:
    """Whether the pair has an aligned return after ``cursor`` (any return when None), told by
    its stored correlation rows — one per return (`Engine.step` writes a row for every return,
    NaN until the window fills) — so only call it when they are current (`panel_end`)."""
    sid = corr_store.find_series(db, a, b, tf, cfg.windows_for(tf)[0])
    if sid is None:
        return True  # not a stored pair: only the panel can tell
    last = corr_store.latest_row(db, sid)
    return last is not None and (cursor is None or last[0] > cursor)


def _tails(
    db: sqlite_utils.Database, cfg: Config, rule: RuleConfig, cursors: dict[str, int | None], window: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each stored pair's `series_tail` for a correlation rule, read for all pairs at once."""
    keys, wanted = [], []
    for a, b in cfg.rule_pairs(rule):
        sid = corr_store.find_series(db, a, b, rule.timeframe, window)
        if sid is not None:
            keys.append(f"{a}/{b}")
            wanted.append((sid, cursors.get(f"{a}/{b}")))
    return dict(zip(keys, series_tails(db, wanted, _context(rule)), strict=True))


def rule_inputs(
    db: sqlite_utils.Database, cfg: Config, rule: RuleConfig, cursors: dict[str, int | None], *,
    now: float, end: int | None = None, panels: dict[str, pd.DataFrame] | None = None,
) -> list[KeyInput]:
    """Each key's new bars and signal. ``cursors`` maps key -> last evaluated bar (or None)."""
    if isinstance(rule, StaleRule):
        return _stale_inputs(db, cfg, rule, now)
    window = cfg.rule_window(rule)
    out: list[KeyInput] = []
    current: list[bool] = []  # are the stored correlations those of the stored bars? (asked once)
    tails = {} if isinstance(rule, DivergenceRule) else _tails(db, cfg, rule, cursors, window)
    for a, b in cfg.rule_pairs(rule):
        key = f"{a}/{b}"
        cursor = cursors.get(key)
        if isinstance(rule, DivergenceRule):
            if panels is None or rule.timeframe not in panels:
                if not current:
                    current.append(panel_end(db, cfg, rule.timeframe) is not None)
                if current[0] and not _returns_after(db, cfg, a, b, rule.timeframe, cursor):
                    continue  # most cycles: no new return, so no panel (every stored bar) to read
            if panels is None:
                panels = {}
            if rule.timeframe not in panels:
                panels[rule.timeframe] = build_panel(db, cfg, rule.timeframe)
            panel = panels[rule.timeframe]
            r = pair_returns(panel[a].dropna(), panel[b].dropna(), rule.timeframe)
            ts = r.index.to_numpy(np.int64)
            new = _new(ts, cursor, end)
            if not new.any():
                continue
            first, ctx = int(np.flatnonzero(new)[0]), window + rule.horizon - 1
            last = int(np.flatnonzero(new)[-1]) + 1
            c = _pad(r["x"].to_numpy()[:last], first, ctx)
            e = _pad(r["y"].to_numpy()[:last], first, ctx)
            sig = divergence_signal(c, e, window=window, horizon=rule.horizon, z=rule.z, min_corr=rule.min_corr,
                                    direction=rule.direction, clear_z=rule.clear_z)
        else:
            if key not in tails:
                continue  # no stored series
            ctx = _context(rule)
            ts, vals = tails[key]
            new = _new(ts, cursor, end)
            if not new.any():
                continue
            first, last = int(np.flatnonzero(new)[0]), int(np.flatnonzero(new)[-1]) + 1
            sig = _corr_signal(rule, _pad(vals[:last], first, ctx))
        n = int(new.sum())
        sig = Signal(sig.value[:, -n:], sig.trigger[:, -n:], sig.clear[:, -n:],
                     {k: v[:, -n:] for k, v in sig.detail.items()})
        out.append(KeyInput(key, a, b, ts[new], sig))
    return out


def _stale_inputs(db: sqlite_utils.Database, cfg: Config, rule: StaleRule, now: float) -> list[KeyInput]:
    last_ok: dict[str, float] = {}
    for f in all_status(db):
        if f.last_ok_at:
            t = pd.Timestamp(f.last_ok_at).timestamp()
            last_ok[f.source] = max(last_ok.get(f.source, t), t)
    out = []
    for src in rule.sources or list(cfg.sources):
        seen = last_ok.get(src)
        if seen is None:
            continue  # never polled yet: nothing to be stale against (startup)
        age = session_seconds_between(int(seen), int(now)) if src == "yahoo" else now - seen
        v = np.array([[float(age)]])
        sig = Signal(v, v > rule.after, v <= rule.after, {"age": v})
        out.append(KeyInput(src, None, None, np.array([int(now)], dtype=np.int64), sig))
    return out


def frozen_keys(cfg: Config, rule: RuleConfig, stale_assets: set[str]) -> set[str]:
    """Keys of ``rule`` inhibited because one of their assets' sources is stale."""
    if isinstance(rule, StaleRule) or not stale_assets:
        return set()
    return {
        f"{a}/{b}" for a, b in cfg.rule_pairs(rule)
        if stale_assets & set(members_of(cfg, a) + members_of(cfg, b))
    }


def run_rule(
    rule: RuleConfig, inputs: list[KeyInput], states: dict[str, LifeState]
) -> list[tuple[KeyInput, Transition]]:
    """Step each key's lifecycle state through its bars; transitions in bar order per key."""
    out: list[tuple[KeyInput, Transition]] = []
    for ki in inputs:
        st = states.setdefault(ki.key, LifeState.fresh(1))
        for tr in advance(st, ki.ts, ki.signal.value, ki.signal.trigger, ki.signal.clear, for_bars=rule.for_bars,
                          cooldown=rule.cooldown, repeat_interval=rule.repeat_interval):
            out.append((ki, tr))
    return out


def detail_at(ki: KeyInput, bar: int) -> dict[str, float]:
    return {k: float(v[0, bar]) for k, v in ki.signal.detail.items() if np.isfinite(v[0, bar])}
