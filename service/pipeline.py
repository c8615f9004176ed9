"""Bars in SQLite -> aligned observation panel -> engine -> correlation rows in SQLite.

`update_correlations` is what every poll cycle, import and backfill ends with. It resumes each
pair from its checkpoint and steps only through observations newer than the pair's last
row, so a new bar costs O(pairs × window). Checkpoints are saved for one pair in
`CHECKPOINT_SLICES` per update (in rotation), so a pair may resume from a checkpoint a few
observations behind its rows: stepping from bars is exact, so the replayed rows are the stored
ones and are not written again (``keep_until``). A pair is recomputed from scratch only when one
of its assets had bars changed at or before that pair's checkpoint (a backfill of older history,
a re-adjusted Yahoo series) or when its definition changed: basket members or weights, windows,
λ, alignment rules (service/fingerprint.py, stored per pair). Bars changed after its checkpoint
replace its rows from the change on.
Everything — rows, checkpoints, clearing the dirty markers — is one transaction.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import sqlite_utils

from core.calendar import DAY
from core.config import Config
from core.timeframes import INTRADAY_CRYPTO
from monitors.align import basket_prices, crypto_obs, equity_obs, session_of
from monitors.engine import Engine, WindowRows
from service.fingerprint import pair_fingerprints
from storage import corr as corr_store
from storage.bars import read_bars
from storage.db import transaction
from storage.fingerprints import load_fingerprints, save_fingerprints

log = logging.getLogger(__name__)
CHECKPOINT_SLICES = 16  # each pair's checkpoint is saved at least every 16 updates (see module doc)


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


def panel_end(db: sqlite_utils.Database, cfg: Config, timeframe: str) -> int | None:
    """The last observation `build_panel` would return, without reading any bar — known when
    no bar was written since the update that stepped ``timeframe`` to it and the definitions
    are unchanged (the panel is then the one that update read); else None."""
    if corr_store.read_dirty(db) or not _up_to_date(db, cfg, timeframe):
        return None
    return corr_store.load_progress(db, timeframe).stepped_to


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


def update_correlations(
    db: sqlite_utils.Database, cfg: Config, *, timeframes: list[str] | None = None, compact: bool = True
) -> UpdateReport:
    """Bring the stored correlations up to date with the stored bars.

    Then (``compact``) `compact_recent` in a transaction of its own; the service passes False
    and compacts after the cycle's alerts are out, so the move is off the path to the user.
    """
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
            if not dirty and _up_to_date(db, cfg, tf):
                report.rows_written[tf] = report.pairs_recomputed[tf] = report.observations[tf] = 0
                continue
            _update_timeframe(db, cfg, tf, affected, report)
        if set(tfs) >= set(cfg.correlation.timeframes):
            corr_store.clear_dirty(db, dirty)
    log.debug("correlations updated: %s", report.summary())  # `run` logs it in its cycle line
    if compact:
        compact_recent(db, cfg)
    return report


def compact_recent(db: sqlite_utils.Database, cfg: Config) -> int:
    """Move one slice of each timeframe's series from ``corr_recent`` into ``corr`` (see
    `storage.corr`), in a transaction of its own; rows moved."""
    moved = 0
    with transaction(db):
        for tf in cfg.correlation.timeframes:
            progress = corr_store.load_progress(db, tf)
            moved += corr_store.compact_slice(db, corr_store.timeframe_series(db, tf), progress.compact_cursor)
            corr_store.save_progress(db, tf, replace(progress, compact_cursor=progress.compact_cursor + 1))
    return moved


def step_arrays(
    ts: int, out: list[WindowRows], sid: np.ndarray, keep_until: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """One engine step as (series ids ascending, their numbers (len, 6) in
    `storage.corr.CORR_COLUMNS` order; NaN for NULL): what `storage.corr.write_steps` stores.

    ``sid[pair, window_index]`` is the series id. Pairs with ``keep_until[pair] >= ts``
    already have this row stored (a replay from an older checkpoint) and are left out.
    """
    if not out:
        return np.empty(0, np.int64), np.empty((0, 6), np.float64)
    parts: list[tuple[np.ndarray, ...]] = []
    for wi, wr in enumerate(out):
        sel: slice | np.ndarray = slice(None)
        if keep_until is not None:
            new = keep_until[wr.pair] < ts
            if not new.all():
                sel = np.flatnonzero(new)
        parts.append(
            (sid[wr.pair[sel], wi], wr.value[sel], wr.n[sel], wr.ci_lo[sel], wr.ci_hi[sel], wr.beta[sel], wr.ewma[sel])
        )
    cols = [np.concatenate(c) for c in zip(*parts, strict=True)]
    order = np.argsort(cols[0], kind="stable")
    return cols[0][order], np.column_stack([c[order] for c in cols[1:]]).astype(np.float64, copy=False)


def step_rows(
    ts: int, out: list[WindowRows], sid: np.ndarray, keep_until: np.ndarray | None = None
) -> list[tuple[object, ...]]:
    """The same step as `storage.corr.write_rows` rows (series_id, ts, value, n, ci_lo, ci_hi,
    beta, ewma), by series id."""
    ids, data = step_arrays(ts, out, sid, keep_until)
    return corr_store.step_to_rows(ts, ids, data)


def layout_of(pairs: list[tuple[str, str]], windows: list[int], lam: float) -> str:
    """Fingerprint of what a timeframe's progress covers: pairs, windows and λ."""
    return hashlib.sha256(json.dumps([pairs, windows, lam]).encode()).hexdigest()[:16]


def due_checkpoints(n_pairs: int, cursor: int, forced: np.ndarray, stepped: int) -> np.ndarray:
    """Pairs whose checkpoint is saved this update: one slice in rotation, the ``forced`` ones
    (recomputed: their old checkpoint is stale) — or all after a long run of observations."""
    if stepped >= CHECKPOINT_SLICES:
        return np.arange(n_pairs)
    due = np.arange(n_pairs) % CHECKPOINT_SLICES == cursor % CHECKPOINT_SLICES
    due[forced] = True
    return np.flatnonzero(due)


def save_due_checkpoints(
    db: sqlite_utils.Database, tf: str, engine: Engine, pairs: list[tuple[str, str]], due: np.ndarray
) -> None:
    states = engine.export_states(due)
    corr_store.save_checkpoints(
        db,
        tf,
        [
            (*pairs[p], corr_store.Checkpoint(int(engine.last_ts[p]), int(engine.n[p]), engine.wmax, engine.lam, st))
            for p, st in zip(due.tolist(), states, strict=True)
        ],
    )


def _up_to_date(db: sqlite_utils.Database, cfg: Config, tf: str) -> bool:
    """No bar was written since the last update (the caller saw no dirty marker) and the pairs,
    windows, λ and definitions are the ones ``tf``'s rows were computed with: nothing can have
    changed, so the panel (every bar of every asset) need not be read. Most poll cycles are
    like this: a 5-minute crypto poll finds no closed candle until the hour turns."""
    progress = corr_store.load_progress(db, tf)
    if progress.stepped_to is None:
        return False
    if progress.layout != layout_of(cfg.pair_list, cfg.windows_for(tf), cfg.correlation.ewma_lambda):
        return False
    return not _changed_definitions(db, cfg, tf)


def _changed_definitions(db: sqlite_utils.Database, cfg: Config, tf: str) -> set[tuple[str, str]]:
    """Pairs whose definition (baskets, windows, λ, alignment) differs from what their stored
    rows were computed with — or is unknown (rows from before fingerprints): recompute them."""
    stored = load_fingerprints(db, tf)
    return {pair for pair, fp in pair_fingerprints(cfg, tf).items() if stored.get(pair) != fp}


def _resume(
    db: sqlite_utils.Database,
    cfg: Config,
    tf: str,
    engine: Engine,
    sid: np.ndarray,
    affected: dict[str, int],
    same_layout: bool,
    stepped_to: int | None,
) -> tuple[list[int], np.ndarray]:
    """Restore every pair it can from its checkpoint: (pairs to recompute from scratch, and per
    pair the ts through which its rows are already stored and valid)."""
    pairs = cfg.pair_list
    lam = cfg.correlation.ewma_lambda
    checkpoints = corr_store.load_checkpoints(db, tf)
    changed = _changed_definitions(db, cfg, tf)
    never = np.iinfo(np.int64).min
    keep_until = np.full(len(pairs), never, dtype=np.int64)
    recompute: list[int] = []
    rewrite: dict[int, list[int]] = {}  # first changed ts -> pairs whose rows from then are replaced
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
            and (a, b) not in changed
            and engine.import_state(p, cp.state)
        )
        if not resumable or cp is None:
            recompute.append(p)
            continue
        # Rows through the checkpoint exist; so do those through the last update's end when the
        # layout is the one that update stored (else ask the table: a pair added back later).
        if same_layout and stepped_to is not None:
            stored = stepped_to
        else:
            last = corr_store.latest_row(db, int(sid[p, 0]))
            stored = never if last is None else last[0]
        stored = max(stored, cp.last_ts)
        if first_change is not None and first_change <= stored:
            rewrite.setdefault(first_change, []).append(p)
            keep_until[p] = first_change - 1
        else:
            keep_until[p] = stored
    for since, ps in rewrite.items():
        corr_store.delete_series_rows(db, sid[ps].ravel().tolist(), since=since)
    if recompute:
        corr_store.delete_series_rows(db, sid[recompute].ravel().tolist())
        engine.reset(np.array(recompute, dtype=np.int64))
    return recompute, keep_until


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
    sid = np.array([[ids[(a, b, tf, w)] for w in windows] for a, b in pairs], dtype=np.int64).reshape(
        len(pairs), len(windows)
    )
    progress = corr_store.load_progress(db, tf)
    layout = layout_of(pairs, windows, lam)
    recompute, keep_until = _resume(
        db, cfg, tf, engine, sid, affected, progress.layout == layout, progress.stepped_to
    )
    start = int(engine.last_ts.min()) if len(pairs) else 0
    new = panel[panel.index > start]
    ts_arr = new.index.to_numpy(np.int64)
    sessions = session_of(ts_arr, tf) if tf != "1d" else ts_arr
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log(new.to_numpy(np.float64))
    steps: list[tuple[int, np.ndarray, np.ndarray]] = []
    stepped = 0  # observations that gave some pair a new return (what "new observations" counts)
    for i, ts in enumerate(ts_arr.tolist()):
        out = engine.step(ts, int(sessions[i]), logp[i])
        stepped += bool(out)
        step_ids, data = step_arrays(ts, out, sid, keep_until)
        if step_ids.size:
            steps.append((ts, step_ids, data))
    corr_store.write_steps(db, steps)
    due = due_checkpoints(len(pairs), progress.checkpoint_cursor, np.array(recompute, dtype=np.int64), len(ts_arr))
    save_due_checkpoints(db, tf, engine, pairs, due)
    save_fingerprints(db, tf, pair_fingerprints(cfg, tf))
    end = int(panel.index.max()) if len(panel) else None
    corr_store.save_progress(
        db,
        tf,
        corr_store.Progress(end, layout, progress.checkpoint_cursor + 1, progress.compact_cursor),
    )
    report.rows_written[tf] = sum(st[1].size for st in steps)
    report.pairs_recomputed[tf] = len(recompute)
    report.observations[tf] = stepped
