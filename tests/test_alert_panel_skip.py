"""A divergence rule reads no panel when no pair has a return after its cursor — and its
inputs are exactly those of a full panel read, on the real bundled data, whether the stored
correlations are current (the skip) or not (a bar written since: the panel is read)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_alerts import DIVERGE, frames, load_until, with_rules

from core.rules import DivergenceRule
from monitors.align import pair_returns
from service.alerts import KeyInput, rule_inputs
from service.demo import demo_config
from service.pipeline import build_panel, panel_end, update_correlations
from storage.db import open_db


def same(got: list[KeyInput], want: list[KeyInput]) -> None:
    assert [k.key for k in got] == [k.key for k in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g.ts, w.ts)
        for f in ("value", "trigger", "clear"):
            np.testing.assert_array_equal(getattr(g.signal, f), getattr(w.signal, f))
        assert g.signal.detail.keys() == w.signal.detail.keys()
        for k in g.signal.detail:
            np.testing.assert_array_equal(g.signal.detail[k], w.signal.detail[k])


@pytest.mark.parametrize("pair", [("BTC", "IWM"), ("BTC", "SMALLCAP_TECH")])
def test_divergence_inputs_without_a_panel_equal_a_full_read(tmp_path: Path, pair: tuple[str, str]) -> None:
    cfg = with_rules(demo_config(tmp_path / "d.db"), {**DIVERGE, "pairs": ["/".join(pair)]})
    db = open_db(cfg.storage.path)
    bars = frames()
    cut = int(pd.Timestamp("2025-03-31").timestamp())
    load_until(db, bars, -(2**62), cut)
    update_correlations(db, cfg)
    rule = cfg.rules[0]
    assert isinstance(rule, DivergenceRule)
    key = "/".join(pair)

    def check(cursor: int | None, *, skipped: bool) -> None:
        full = build_panel(db, cfg, "1d")
        panels: dict[str, pd.DataFrame] = {}
        got = rule_inputs(db, cfg, rule, {key: cursor} if cursor is not None else {}, now=0.0, panels=panels)
        want = rule_inputs(db, cfg, rule, {key: cursor} if cursor is not None else {}, now=0.0, panels={"1d": full})
        same(got, want)
        assert ("1d" not in panels) is skipped

    ts = pair_returns(build_panel(db, cfg, "1d")[pair[0]].dropna(), build_panel(db, cfg, "1d")[pair[1]].dropna(),
                      "1d").index.to_numpy(np.int64)
    assert len(ts) > 300 and panel_end(db, cfg, "1d") is not None
    check(None, skipped=False)  # no state yet: the latest return
    check(int(ts[-2]), skipped=False)  # one new return
    check(int(ts[-120]), skipped=False)
    check(int(ts[-1]), skipped=True)  # up to date: no panel read
    check(int(ts[-1]) + 86400, skipped=True)
    # A session's bars written but the correlations not updated: the rows cannot tell, read it.
    nxt = int(bars["IWM"].index[bars["IWM"].index > cut][0])
    load_until(db, bars, cut, nxt)
    assert panel_end(db, cfg, "1d") is None
    check(int(ts[-1]), skipped=False)
    update_correlations(db, cfg)
    check(int(ts[-1]), skipped=False)  # the new session's return
    check(nxt, skipped=True)
