"""The live alert step: every rule over the bars since its cursor, in one SQLite transaction.

State changes, episodes and the outbox rows they cause are written together, so a crash
loses nothing and repeats nothing: either the step happened (and its messages are queued)
or it did not. Order within the step: `stale` rules first (they inhibit the others), then
each rule's transitions become events, grouped per rule into one message per chat:
fires (with Chart / Mute buttons), episodes that opened and closed inside this catch-up,
reminders, resolved notices (each a reply to its fire message) and fires whose mute ended.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlite_utils

from bot import alert_text
from core.config import Config
from core.models import AlertEvent
from core.rules import RuleConfig, StaleRule
from monitors.lifecycle import FIRING, NO_TS, OK, PENDING, LifeState
from service.alerts import detail_at, effective_rules, frozen_keys, rule_inputs, run_rule
from service.analysis import alert_context
from service.pipeline import members_of
from storage import alerts as store
from storage.db import transaction
from storage.outbox import enqueue

log = logging.getLogger(__name__)
_STATUS = {"ok": OK, "pending": PENDING, "firing": FIRING}
_NAME = {v: k for k, v in _STATUS.items()}


@dataclass
class EvalReport:
    fired: int = 0
    resolved: int = 0
    messages: int = 0
    evaluated_bars: int = 0
    inhibited: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"alerts: {self.evaluated_bars} bars evaluated, {self.fired} fired, {self.resolved} resolved, "
                f"{self.messages} messages queued" + (f", inhibited {self.inhibited}" if self.inhibited else ""))


def _life(row: store.StateRow | None) -> LifeState:
    st = LifeState.fresh(1)
    if row is not None:
        st.status[0], st.pending[0] = _STATUS[row.status], row.pending
        for arr, v in ((st.last_ts, row.last_ts), (st.notice_ts, row.notice_ts), (st.resolved_ts, row.resolved_ts)):
            arr[0] = NO_TS if v is None else v
    return st


def _row(st: LifeState, episode: int | None) -> store.StateRow:
    def opt(v: np.int64) -> int | None:
        return None if int(v) == NO_TS else int(v)

    return store.StateRow(_NAME[int(st.status[0])], int(st.pending[0]), opt(st.last_ts[0]), episode,
                          opt(st.notice_ts[0]), opt(st.resolved_ts[0]))


def _muted(mutes: list[store.Mute], rule: RuleConfig, cfg: Config, a: str | None, b: str | None) -> bool:
    assets = set(members_of(cfg, a) + members_of(cfg, b) + [a, b]) if a and b else set()
    for m in mutes:
        if m.rule is not None and m.rule.lower() != rule.name.lower():
            continue
        if m.target is None or m.target == f"{a}/{b}" or m.target in assets:
            return True
    return False


def evaluate(db: sqlite_utils.Database, cfg: Config, chats: list[str], *, now: float) -> EvalReport:
    """One alert step at wall time ``now`` (used for `stale` and mutes; rules run on bar time)."""
    report = EvalReport()
    panels: dict[str, pd.DataFrame] = {}
    with transaction(db):
        mutes = store.active_mutes(db, now)
        rules = effective_rules(db, cfg)
        retired = store.retire_rules(db, [r.name for r in rules], int(now))
        if retired:
            log.info("rules no longer in the config: %s (their open alerts ended without a notice)",
                     ", ".join(retired))
        stale_assets: set[str] = set()
        for rule in sorted(rules, key=lambda r: not isinstance(r, StaleRule)):
            rows = store.load_state(db, rule.name)
            frozen = frozen_keys(cfg, rule, stale_assets)
            report.inhibited += sorted(frozen)
            cursors = {k: r.last_ts for k, r in rows.items()}
            inputs = [ki for ki in rule_inputs(db, cfg, rule, cursors, now=now, panels=panels) if ki.key not in frozen]
            report.evaluated_bars += sum(len(ki.ts) for ki in inputs)
            states = {ki.key: _life(rows.get(ki.key)) for ki in inputs}
            episodes: dict[str, int | None] = {k: r.episode_id for k, r in rows.items()}
            events: list[AlertEvent] = []
            for ki, tr in run_rule(rule, inputs, states):
                value = float(ki.signal.value[0, tr.bar])
                detail = detail_at(ki, tr.bar)
                window = None if isinstance(rule, StaleRule) else cfg.rule_window(rule)
                if tr.kind == "fire":
                    if ki.a is not None and ki.b is not None and window is not None:
                        detail |= alert_context(db, cfg, ki.a, ki.b, rule.timeframe, window, tr.ts)
                    muted = _muted(mutes, rule, cfg, ki.a, ki.b)
                    eid = store.open_episode(db, rule=rule.name, kind=rule.kind, key=ki.key, a=ki.a, b=ki.b,
                                             timeframe=rule.timeframe, window=window, severity=rule.severity,
                                             fired_ts=tr.ts, value=value, detail=detail, withheld=muted)
                    episodes[ki.key] = eid
                    report.fired += 1
                    events.append(AlertEvent("fire", rule, ki.key, ki.a, ki.b, window, eid, tr.ts, None, value,
                                             value, detail, detail))
                    continue
                open_id = episodes.get(ki.key)
                ep = store.get_episode(db, open_id) if open_id is not None else None
                if ep is None:
                    continue
                if tr.kind == "resolve":
                    store.close_episode(db, ep.id, tr.ts, value)
                    episodes[ki.key] = None
                    report.resolved += 1
                events.append(AlertEvent(tr.kind, rule, ki.key, ki.a, ki.b, window, ep.id, ep.fired_ts,
                                         tr.ts if tr.kind == "resolve" else None, value, ep.fire_value,
                                         detail, ep.detail))
            for ki in inputs:
                rows[ki.key] = _row(states[ki.key], episodes.get(ki.key))
            store.save_state(db, rule.name, {ki.key: rows[ki.key] for ki in inputs})
            if isinstance(rule, StaleRule):
                for key, r in rows.items():
                    if r.status == "firing" and key not in frozen:
                        stale_assets |= set(cfg.sources.get(key, []))
            report.messages += _queue(db, cfg, rule, events, chats, mutes)
        report.messages += _unmuted(db, cfg, rules, chats, mutes)
    log.debug("%s", report.summary())  # the cycle's own line includes it
    return report


def _queue(db: sqlite_utils.Database, cfg: Config, rule: RuleConfig, events: list[AlertEvent],
           chats: list[str], mutes: list[store.Mute]) -> int:
    """Messages for one rule's events of this step; returns how many outbox rows."""
    resolved_now = {e.episode_id for e in events if e.kind == "resolve"}
    fired_now = {e.episode_id for e in events if e.kind == "fire"}
    withheld = {ep.id for e in events if e.episode_id is not None
                and (ep := store.get_episode(db, e.episode_id)) is not None and ep.withheld}
    shown = [e for e in events if e.episode_id not in withheld]
    fires = [e for e in shown if e.kind == "fire" and e.episode_id not in resolved_now]
    episodes = [e for e in shown if e.kind == "resolve" and e.episode_id in fired_now]
    resolves = [e for e in shown if e.kind == "resolve" and e.episode_id not in fired_now]
    reminders = [e for e in shown if e.kind == "reminder" and e.episode_id not in resolved_now]
    silent = rule.severity == "info"
    n = 0
    for chat in chats:
        if fires:
            first = fires[0].episode_id
            enqueue(db, chat, "fire", alert_text.fire_text(fires), silent=silent,
                    buttons=alert_text.buttons(first) if first is not None else None,
                    episodes=[e.episode_id for e in fires if e.episode_id is not None])
            n += 1
        if episodes:
            enqueue(db, chat, "episode", alert_text.episode_text(episodes), silent=silent,
                    episodes=[e.episode_id for e in episodes if e.episode_id is not None])
            n += 1
        if reminders:
            enqueue(db, chat, "reminder", alert_text.reminder_text(reminders), silent=silent,
                    episodes=[e.episode_id for e in reminders if e.episode_id is not None])
            n += 1
        for e in resolves:
            assert e.episode_id is not None
            enqueue(db, chat, "resolve", alert_text.resolve_text(e), silent=silent,
                    reply_to=store.fire_outbox_id(db, e.episode_id, chat), episodes=[e.episode_id])
            n += 1
    return n


def _unmuted(db: sqlite_utils.Database, cfg: Config, rules: list[RuleConfig], chats: list[str],
             mutes: list[store.Mute]) -> int:
    """Fires held back by a mute that has ended, while still firing: one message each rule."""
    by_name = {r.name: r for r in rules}
    groups: dict[str, list[AlertEvent]] = {}
    for ep in store.firing_episodes(db):
        rule = by_name.get(ep.rule)
        if not ep.withheld or rule is None or _muted(mutes, rule, cfg, ep.a, ep.b):
            continue
        store.set_withheld(db, ep.id, False)
        groups.setdefault(ep.rule, []).append(
            AlertEvent("unmuted", rule, ep.key, ep.a, ep.b, ep.window, ep.id, ep.fired_ts, None,
                       ep.fire_value, ep.fire_value, ep.detail, ep.detail))
    n = 0
    for name, events in groups.items():
        for chat in chats:
            enqueue(db, chat, "fire", alert_text.unmuted_text(events), silent=by_name[name].severity == "info",
                    buttons=alert_text.buttons(events[0].episode_id or 0),
                    episodes=[e.episode_id for e in events if e.episode_id is not None])
            n += 1
    return n
