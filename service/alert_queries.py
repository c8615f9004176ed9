"""The alert commands' side of the service: /alerts, /rules, /mute, /unmute, /set, /backtest,
/subscribe and the alert buttons. Names typed in chat are resolved here (rule names, assets,
pairs); every mistake is a `UserInputError` whose message says what is allowed."""

from __future__ import annotations

import time

import sqlite_utils

from core.config import Config
from core.errors import UserInputError
from core.models import AlertStatus, AlertsView, BacktestSummary, EpisodeView, MuteView, RuleView
from core.rules import RuleConfig, format_duration
from service.alerts import apply_overrides, effective_rules
from service.backtest import backtest
from storage import alerts as store
from storage import corr as corr_store
from storage import outbox

MAX_MUTE = 30 * 86400
_SHOWN = ("above", "clear_below", "below", "clear_above", "lookback", "delta", "clear_delta", "history", "z",
          "clear_z", "horizon", "min_corr", "direction", "after", "for_bars", "repeat_interval", "cooldown")


def _view(e: store.Episode) -> EpisodeView:
    return EpisodeView(e.id, e.rule, e.kind, e.key, e.timeframe, e.window, e.severity, e.fired_ts,
                       e.resolved_ts, e.fire_value)


def alerts(db: sqlite_utils.Database, cfg: Config, n: int = 10) -> AlertsView:
    return AlertsView([_view(e) for e in store.firing_episodes(db)], [_view(e) for e in store.recent_episodes(db, n)])


def find_rule(cfg: Config, name: str) -> RuleConfig:
    for r in cfg.rules:
        if r.name.lower() == name.lower():
            return r
    names = ", ".join(r.name for r in cfg.rules) or "none configured"
    raise UserInputError(f"unknown rule {name!r} (rules: {names})")


def _settings(rule: RuleConfig) -> dict[str, str]:
    out = {}
    for k in _SHOWN:
        v = getattr(rule, k, None)
        if v is None or (k in ("repeat_interval", "cooldown") and v == 0) or (k == "for_bars" and v == 1):
            continue
        out[k] = format_duration(v) if k in ("repeat_interval", "cooldown", "after") else f"{v:g}" \
            if isinstance(v, float) else str(v)
    return out


def rules(db: sqlite_utils.Database, cfg: Config) -> list[RuleView]:
    over = store.overrides(db)
    counts = store.rule_counts(db)
    out = []
    for r in effective_rules(db, cfg):
        pairs = [] if r.kind == "stale" else [f"{a}/{b}" for a, b in cfg.rule_pairs(r)]
        window = None if r.kind == "stale" else cfg.rule_window(r)
        firing, total = counts.get(r.name, (0, 0))
        out.append(RuleView(r.name, r.kind, r.severity, r.timeframe, window, pairs, _settings(r),
                            over.get(r.name, {}), firing, total))
    return out


def _target(cfg: Config, token: str) -> tuple[str | None, str | None]:
    """A /mute target -> (rule, target): a rule name, an asset, or a pair "A/B"."""
    for r in cfg.rules:
        if r.name.lower() == token.lower():
            return r.name, None
    if "/" in token:
        a, _, b = token.partition("/")
        ka, kb = cfg.resolve(a), cfg.resolve(b)
        if (ka, kb) in cfg.pair_list:
            return None, f"{ka}/{kb}"
        if (kb, ka) in cfg.pair_list:
            return None, f"{kb}/{ka}"
        raise UserInputError(f"{ka}/{kb} is not a watched pair")
    return None, cfg.resolve(token)


def mute(db: sqlite_utils.Database, cfg: Config, seconds: int, target: str | None, by: str | None) -> MuteView:
    if not 60 <= seconds <= MAX_MUTE:
        raise UserInputError("a mute lasts from 1m to 30d")
    rule, what = _target(cfg, target) if target else (None, None)
    until = time.time() + seconds
    mid = store.add_mute(db, rule, what, until, by)
    return MuteView(mid, rule, what, until, by)


def mute_episode(db: sqlite_utils.Database, cfg: Config, episode_id: int, seconds: int, by: str | None) -> MuteView:
    ep = store.get_episode(db, episode_id)
    if ep is None:
        raise UserInputError("that alert is no longer known")
    until = time.time() + seconds
    target = ep.key if ep.a else None
    return MuteView(store.add_mute(db, ep.rule, target, until, by), ep.rule, target, until, by)


def mutes(db: sqlite_utils.Database, cfg: Config) -> list[MuteView]:
    return [MuteView(m.id, m.rule, m.target, m.until_ts, m.created_by) for m in store.active_mutes(db, time.time())]


def unmute(db: sqlite_utils.Database, cfg: Config, ids: list[int] | None) -> int:
    return store.lift_mutes(db, ids)


def set_rule(db: sqlite_utils.Database, cfg: Config, name: str, key: str, value: str, by: str | None) -> RuleView:
    rule = find_rule(cfg, name)
    current = store.overrides(db).get(rule.name, {})
    new = apply_overrides(rule, {**current, key: value})  # validates like the config; raises UserInputError
    windows = cfg.windows_for(new.timeframe)
    if new.window is not None and new.window not in windows:  # the config's cross-check, as in _check_rules
        raise UserInputError(f"{rule.name}.window: {new.window} is not one of the {new.timeframe} windows {windows}")
    store.set_override(db, rule.name, key, value, by)
    return next(r for r in rules(db, cfg) if r.name == rule.name)


def reset_rule(db: sqlite_utils.Database, cfg: Config, name: str) -> RuleView:
    rule = find_rule(cfg, name)
    store.reset_overrides(db, rule.name)
    return next(r for r in rules(db, cfg) if r.name == rule.name)


def backtest_summary(
    db: sqlite_utils.Database, cfg: Config, rule: str | None, period_days: int | None, label: str
) -> BacktestSummary:
    if rule is not None:
        find_rule(cfg, rule)
    end = corr_store.latest_ts(db)
    start = None if period_days is None or end is None else end - period_days * 86400
    episodes = backtest(db, cfg, start=start, rule=rule)
    counts: dict[tuple[str, str], int] = {}
    for e in episodes:
        counts[(e.rule, f"{e.a}/{e.b}")] = counts.get((e.rule, f"{e.a}/{e.b}"), 0) + 1
    names = [r.name for r in cfg.rules if r.kind != "stale" and (rule is None or r.name.lower() == rule.lower())]
    rows = [(r, pair, counts.get((r, pair), 0)) for r in names
            for pair in [f"{a}/{b}" for a, b in cfg.rule_pairs(find_rule(cfg, r))]]
    return BacktestSummary(label, start, end, rows)


def alert_status(db: sqlite_utils.Database, cfg: Config) -> AlertStatus:
    pending, failed = store.outbox_counts(db)
    failures = [f"{r.chat}: {r.error}" for r in outbox.failed_rows(db, 3)]
    return AlertStatus([_view(e) for e in store.firing_episodes(db)], pending, failed, store.last_evaluated(db),
                       mutes(db, cfg), outbox.next_due(db) if pending else None, failures, store.overrides(db))
