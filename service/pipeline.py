"""Bars in SQLite -> aligned observation panel -> engine -> correlation rows in SQLite.

`update_correlations` is what every poll cycle, import and backfill ends with. It resumes each
pair from its checkpoint and steps only through observations newer than the pair's last
row, so a new bar costs O(pairs × window). A pair is recomputed from scratch only when one of
its assets had bars changed at or before that pair's last row (a backfill of older history,
a re-adjusted Yahoo series) or when the windows/λ in the config changed.
Everything — rows, checkpoints, clearing the dirty markers — is one transaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlite_utils

from core.calendar import DAY
from core.config import Config
from core.timeframes import INTRADAY_CRYPTO
from monitors.align import basket_prices, crypto_obs, equity_obs, session_of
from monitors.engine import Engine, WindowRows
from storage import corr as corr_store
from storage.bars import read_bars
from storage.db import transaction

log = logging.getLogger(__name__)


def build_panel(db: sqlite_utils.Database, cfg: Config, timeframe: str) -> pd.DataFrame:
    """Prices of every asset and basket on the observation clock (NaN = no observation)."""
    cols: dict[str, pd.Series] = {}
    for asset in cfg.assets:
        if asset.kind == "equity":
            cols[asset.key] = equity_obs(read_bars(db, asset.key, timeframe), timeframe)
        else:
            intraday = {secs: read_bars(db, asset.key, tf) for tf, secs in INTRADAY_CRYPTO.items()}
            daily = read_bars(db, asset.key, "1d") if timeframe == "1d" else None
            cols[asset.key] = crypto_obs(intraday, daily, timeframe)
    for basket in cfg.baskets:
        members = {m.upper(): cols[m.upper()] for m in basket.members}
        weights = {m.upper(): w for m, w in basket.members.items()}
        cols[basket.key] = basket_prices(members, weights)
    panel = pd.concat([s.rename(k) for k, s in cols.items()], axis=1, join="outer").sort_index()
    panel.index = panel.index.astype(np.int64)
    return panel.reindex(columns=cfg.names)


def members_of(cfg: Config, name: str) -> list[str]:
    basket = cfg.basket_by_key.get(name)
    return [m.upper() for m in basket.members] if basket else [name]


@dataclass
class UpdateReport:
    rows_written: dict[str, int] = field(default_factory=dict)
    pairs_recomputed: dict[str, int] = field(default_factory=dict)
    observations: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        parts = [
            f"{tf}: {self.rows_written[tf]} rows, {self.observations[tf]} new observations"
            + (f", {self.pairs_recomputed[tf]} pairs recomputed" if self.pairs_recomputed[tf] else "")
            for tf in self.rows_written
        ]
        return "; ".join(parts) or "nothing to do"


def update_correlations(db: sqlite_utils.Database, cfg: Config, *, timeframes: list[str] | None = None) -> UpdateReport:
    """Bring the stored correlations up to date with the stored bars."""
    report = UpdateReport()
    tfs = timeframes or list(cfg.correlation.timeframes)
    with transaction(db):
        dirty = corr_store.read_dirty(db)
        # The earliest observation a changed bar can affect: observations are stamped at or
        # after the start of the UTC day of the bars they are sampled from.
        affected: dict[str, int] = {}
        for asset, _tf, since, _seq in dirty:
            affected[asset] = min(affected.get(asset, since), since - since % DAY)
        for tf in tfs:
            _update_timeframe(db, cfg, tf, affected, report)
        if set(tfs) >= set(cfg.correlation.timeframes):
            corr_store.clear_dirty(db, dirty)
    log.debug("correlations updated: %s", report.summary())  # `run` logs it in its cycle line
    return report


def step_rows(ts: int, out: list[WindowRows], sid: np.ndarray) -> list[tuple[object, ...]]:
    """The corr rows (series_id, ts, value, n, ci_lo, ci_hi, beta, ewma) of one engine step.

    ``sid[pair, window_index]`` is the series id; NaN values become NULL in SQLite.
    """
    rows: list[tuple[object, ...]] = []
    for wi, wr in enumerate(out):
        rows.extend(
            zip(
                sid[wr.pair, wi].tolist(),
                [ts] * len(wr.pair),
                wr.value.tolist(),
                wr.n.tolist(),
                wr.ci_lo.tolist(),
                wr.ci_hi.tolist(),
                wr.beta.tolist(),
                wr.ewma.tolist(),
                strict=True,
            )
        )
    return rows


def _update_timeframe(
    db: sqlite_utils.Database, cfg: Config, tf: str, affected: dict[str, int], report: UpdateReport
) -> None:
    pairs = cfg.pair_list
    windows = cfg.windows_for(tf)
    lam = cfg.correlation.ewma_lambda
    panel = build_panel(db, cfg, tf)
    col = {name: i for i, name in enumerate(panel.columns)}
    engine = Engine([(col[a], col[b]) for a, b in pairs], windows, intraday=tf != "1d", lam=lam)
    ids = corr_store.series_ids(db, [(a, b, tf, w) for a, b in pairs for w in windows])
    checkpoints = corr_store.load_checkpoints(db, tf)
    recompute: list[int] = []
    for p, (a, b) in enumerate(pairs):
        cp = checkpoints.get((a, b))
        first_change = min(
            (affected[m] for m in members_of(cfg, a) + members_of(cfg, b) if m in affected),
            default=None,
        )
        resumable = (
            cp is not None
            and cp.wmax == engine.wmax
            and cp.lam == lam
            and (first_change is None or first_change > cp.last_ts)
            and engine.import_state(p, cp.state)
        )
        if not resumable:
            recompute.append(p)
    if recompute:
        corr_store.delete_series_rows(db, [ids[(*pairs[p], tf, w)] for p in recompute for w in windows])
        engine.reset(np.array(recompute, dtype=np.int64))
    start = int(engine.last_ts.min()) if len(pairs) else 0
    new = panel[panel.index > start]
    ts_arr = new.index.to_numpy(np.int64)
    sessions = session_of(ts_arr, tf) if tf != "1d" else ts_arr
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(new.to_numpy(np.float64))
    sid = np.array([[ids[(a, b, tf, w)] for w in windows] for a, b in pairs], dtype=np.int64)
    rows: list[tuple[object, ...]] = []
    stepped = 0  # observations that gave some pair a new return (what "new observations" counts)
    for i, ts in enumerate(ts_arr.tolist()):
        out = engine.step(ts, int(sessions[i]), logp[i])
        stepped += bool(out)
        rows.extend(step_rows(ts, out, sid))
    corr_store.write_rows(db, rows)
    corr_store.save_checkpoints(
        db,
        tf,
        [
            (
                a,
                b,
                corr_store.Checkpoint(
                    int(engine.last_ts[p]), int(engine.n[p]), engine.wmax, lam, engine.export_state(p)
                ),
            )
            for p, (a, b) in enumerate(pairs)
        ],
    )
    report.rows_written[tf] = len(rows)
    report.pairs_recomputed[tf] = len(recompute)
    report.observations[tf] = stepped
