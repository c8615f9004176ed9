"""`corrbot backtest`: replay stored history through the rules with fresh state, no Telegram.

The same `rule_inputs` and `run_rule` as the live step (service/evaluate.py), so a bar fed
live gives the same transitions as its replay here. `stale` rules need the wall clock and
are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd
import sqlite_utils

from core.config import Config
from core.errors import UserInputError
from core.models import iso
from core.rules import StaleRule
from monitors.lifecycle import LifeState
from service.alerts import ALL, detail_at, effective_rules, rule_inputs, run_rule
from service.analysis import alert_context


@dataclass(frozen=True)
class Episode:
    rule: str
    kind: str
    a: str
    b: str
    timeframe: str
    window: int
    fired_ts: int
    resolved_ts: int | None
    value: float  # the rule's measured value on the firing bar
    detail: dict[str, float] = field(default_factory=dict)  # what a fire message shows
    resolve_value: float | None = None
    resolve_detail: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {"rule": self.rule, "kind": self.kind, "a": self.a, "b": self.b, "timeframe": self.timeframe,
                "window": self.window, "fired_at": iso(self.fired_ts, self.timeframe),
                "resolved_at": iso(self.resolved_ts, self.timeframe), "value": self.value}


def backtest(
    db: sqlite_utils.Database, cfg: Config, *, start: int | None = None, end: int | None = None,
    rule: str | None = None,
) -> list[Episode]:
    """Every episode the rules would have produced between ``start`` and ``end`` (UTC epoch s)."""
    rules = [r for r in effective_rules(db, cfg) if not isinstance(r, StaleRule)]
    if rule is not None:
        rules = [r for r in rules if r.name.lower() == rule.lower()]
        if not rules:
            names = ", ".join(r.name for r in cfg.rules) or "none configured"
            raise UserInputError(f"unknown rule {rule!r} (rules: {names})")
    cursor = ALL if start is None else start - 1
    panels: dict[str, pd.DataFrame] = {}
    out: list[Episode] = []
    for r in rules:
        keys = [f"{a}/{b}" for a, b in cfg.rule_pairs(r)]
        inputs = rule_inputs(db, cfg, r, dict.fromkeys(keys, cursor), now=0.0, end=end, panels=panels)
        states: dict[str, LifeState] = {}
        open_: dict[str, Episode] = {}
        for ki, tr in run_rule(r, inputs, states):
            assert ki.a is not None and ki.b is not None
            if tr.kind == "fire":
                w = cfg.rule_window(r)
                detail = detail_at(ki, tr.bar) | alert_context(db, cfg, ki.a, ki.b, r.timeframe, w, tr.ts)
                open_[ki.key] = Episode(r.name, r.kind, ki.a, ki.b, r.timeframe, w, tr.ts, None,
                                        float(ki.signal.value[0, tr.bar]), detail)
            elif tr.kind == "resolve" and ki.key in open_:
                ep = open_.pop(ki.key)
                out.append(replace(ep, resolved_ts=tr.ts, resolve_value=float(ki.signal.value[0, tr.bar]),
                                   resolve_detail=detail_at(ki, tr.bar)))
        out.extend(open_.values())
    out.sort(key=lambda e: (e.fired_ts, e.rule, e.a, e.b))
    return out


def counts_per_year(episodes: list[Episode]) -> dict[tuple[str, str], dict[int, int]]:
    """(rule, "A/B") -> {year: episodes fired that year}."""
    out: dict[tuple[str, str], dict[int, int]] = {}
    for e in episodes:
        year = pd.Timestamp(e.fired_ts, unit="s").year
        row = out.setdefault((e.rule, f"{e.a}/{e.b}"), {})
        row[year] = row.get(year, 0) + 1
    return out
