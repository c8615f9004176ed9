"""Feeds -> storage: what the feeds fetch (or a CSV holds) is written here, nowhere else.

The feeds only fetch; this module decides where each fetch starts (from the last stored
bar), stores the bars (`storage.bars.upsert_bars`), records each source's health for /status
and returns one `FeedResult` per asset × timeframe. It also owns the Yahoo adjustment-drift
check, which compares fresh closes with stored ones: a drifted series is refetched whole so
the stored history stays on one adjusted scale.

Every write goes through the integrity guard (service/guard.py) first: a CSV that fails it is an
`ImportFileError` naming file and line (nothing stored); a feed batch that fails it is refused,
logged once and recorded as the source's error for /status (`guarded_upsert`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import sqlite_utils

from core.config import Config
from core.errors import (
    BadDataError,
    BadWindowError,
    FeedError,
    ImportFileError,
    PermanentFeedError,
    UserInputError,
)
from core.retry import Sleep
from core.timeframes import TIMEFRAME_SECONDS
from feeds.base import FeedResult, Progress
from feeds.crypto import ExchangeFactory, fetch_crypto
from feeds.csv_import import parse_csv
from feeds.equities import SOURCE as YAHOO
from feeds.equities import fetch_equities
from service.guard import Refused, apply_plan, check_write
from storage.bars import UpsertResult, bar_counts, last_bar_ts, read_bars
from storage.db import transaction
from storage.status import record_error, record_ok

log = logging.getLogger(__name__)

OVERLAP = {"1d": timedelta(days=7), "1h": timedelta(days=3)}  # a few sessions, for drift checks
DRIFT_RTOL = 1e-6


@dataclass(frozen=True)
class ImportReport:
    asset: str  # canonical key the bars were stored under
    timeframe: str  # '1d', '1h' or '30m'
    layout: str  # short layout name, see feeds/csv_import.py
    rows_read: int  # data rows in the file (blank lines excluded, skipped/dropped rows included)
    inserted: int
    updated: int
    unchanged: int
    skipped: list[tuple[int, str]]  # (physical line, reason)
    first_ts: int
    last_ts: int
    warnings: list[tuple[int, str]] = field(default_factory=list)  # (line, what was dropped)
    notes: list[str] = field(default_factory=list)  # re-adjustments taken, --replace overwrites


def import_csv(
    db: sqlite_utils.Database, cfg: Config, asset: str, path: str | Path, *,
    drop_last: bool = False, timeframe: str | None = None, replace: bool = False,
    now: int | None = None,
) -> ImportReport:
    """Import the bar file at ``path`` for ``asset``: validate it whole, check it against the
    stored series (service/guard.py), then one transaction (rescale if re-adjusted, upsert)."""
    key = cfg.resolve(asset)
    if key in cfg.basket_by_key:
        raise UserInputError(f"{key} is a basket: baskets are computed from members, not imported")
    p = parse_csv(path, drop_last=drop_last, timeframe=timeframe)
    with transaction(db):  # the checks read what the write then changes: one snapshot
        try:
            plan = check_write(db, cfg, key, p.timeframe, p.bars, now=now, replace=replace)
        except Refused as exc:
            raise ImportFileError(str(path), str(exc), p.line_of(exc.fault.ts)) from None
        res = apply_plan(db, key, p.timeframe, p.bars, f"csv:{Path(path).name}", plan)
    return ImportReport(key, p.timeframe, p.layout, p.rows_read, res.inserted, res.updated,
                        res.unchanged, p.skipped, int(p.bars.index[0]), int(p.bars.index[-1]),
                        p.warnings, plan.notes)


# (source, asset, timeframe) refused with this message: logged once, until it stores again.
_REFUSED: dict[tuple[str, str, str], str] = {}


def guarded_upsert(db: sqlite_utils.Database, cfg: Config, source: str, asset: str, tf: str,
                   bars: pd.DataFrame, now: int | None = None) -> UpsertResult | str:
    """Store what a feed fetched if it passes the guards; else the refusal (one line), which is
    logged once and recorded as the source's error for /status. Nothing is stored then."""
    key = (source, asset, tf)
    with transaction(db):
        try:
            plan = check_write(db, cfg, asset, tf, bars, now=now)
        except Refused as exc:
            msg = str(BadDataError(source, f"{asset} {tf}: refused {len(bars)} bar(s): {exc}"))
            if _REFUSED.get(key) != msg:
                log.error("%s", msg)
            _REFUSED[key] = msg
            record_error(db, source, asset, msg)
            return msg
        res = apply_plan(db, asset, tf, bars, source, plan)
    _REFUSED.pop(key, None)
    for note in plan.notes:
        log.warning("%s: %s", source, note)
    return res


async def poll_crypto(
    db: sqlite_utils.Database, cfg: Config, *, assets: list[str] | None = None,
    since: datetime | None = None, timeframes: tuple[str, ...] | None = None,
    progress: Progress | None = None, exchange_factory: ExchangeFactory | None = None,
    sleep: Sleep = asyncio.sleep, now_ms: int | None = None,
    reported: set[tuple[str, str]] | None = None,
) -> list[FeedResult]:
    """Fetch and store new closed candles for the crypto assets; one result per asset × tf.

    ``assets`` names assets (any case); equity assets and baskets among them are ignored.
    ``since`` (naive = UTC) refetches from that time instead of from the last stored bar.
    """
    tfs = tuple(dict.fromkeys(timeframes or (cfg.feeds.crypto_bar, "1d")))
    for tf in tfs:
        if tf not in TIMEFRAME_SECONDS:
            raise BadWindowError(f"unknown timeframe {tf!r}; use one of {', '.join(TIMEFRAME_SECONDS)}")
    keys = None if assets is None else {cfg.resolve(n) for n in assets}
    chosen = [a.key for a in cfg.assets if a.kind == "crypto" and (keys is None or a.key in keys)]
    now = int(now_ms) if now_ms is not None else int(datetime.now(UTC).timestamp() * 1000)
    starts: dict[tuple[str, str], int] = {}
    for key in chosen:
        for tf in tfs:
            last = last_bar_ts(db, key, tf)
            if since is not None:
                aware = since if since.tzinfo is not None else since.replace(tzinfo=UTC)
                starts[(key, tf)] = int(aware.timestamp() * 1000)
            elif last is not None:  # stored bars are closed: never refetch them
                starts[(key, tf)] = last * 1000 + TIMEFRAME_SECONDS[tf] * 1000
            else:
                starts[(key, tf)] = now - cfg.feeds.backfill_days * 86_400_000
    fetched = await fetch_crypto(cfg, starts, progress=progress, exchange_factory=exchange_factory,
                                 sleep=sleep, now_ms=now, reported=reported)
    results = []
    for f in fetched:
        for failed in f.failures:
            record_error(db, failed.source, f.asset, str(failed))
        if f.bars is None:
            results.append(FeedResult(f.source, f.asset, f.timeframe, 0, 0, 0, error=f.error))
            continue
        res = await asyncio.to_thread(guarded_upsert, db, cfg, f.source, f.asset, f.timeframe,
                                      f.bars, now // 1000)
        if isinstance(res, str):
            results.append(FeedResult(f.source, f.asset, f.timeframe, len(f.bars), 0, 0, error=res))
            continue
        record_ok(db, f.source, f.asset, last_bar_ts(db, f.asset, f.timeframe))
        results.append(FeedResult(f.source, f.asset, f.timeframe, len(f.bars), res.inserted, res.updated))
    return results


def _drifted(db: sqlite_utils.Database, asset: str, tf: str, fresh: pd.DataFrame) -> bool:
    if fresh.empty:
        return False
    stored = read_bars(db, asset, tf, since=int(fresh.index.min()), until=int(fresh.index.max()))
    common = stored.index.intersection(fresh.index)
    if common.empty:
        return False
    old, new = stored.loc[common, "close"], fresh.loc[common, "close"]
    return bool(((new - old).abs() > DRIFT_RTOL * old.abs()).any())


async def _equity_timeframe(
    db: sqlite_utils.Database, cfg: Config, tf: str, ticker_of: dict[str, str],
    since: datetime | None, now: datetime, sleep: Sleep,
) -> tuple[dict[str, pd.DataFrame], dict[str, FeedError]]:
    """Frames (by asset key) for one timeframe: one batched download from the earliest start
    any asset needs, then a full-history refetch for assets whose adjustment drifted."""
    starts = {}
    for key in ticker_of:
        last = last_bar_ts(db, key, tf)
        if since is not None:
            starts[key] = since
        elif last is None:
            starts[key] = now - timedelta(days=cfg.feeds.backfill_days)
        else:
            starts[key] = datetime.fromtimestamp(last, UTC) - OVERLAP.get(tf, timedelta(days=3))
    frames, errors = await fetch_equities(cfg, tf, ticker_of, min(starts.values()), now, sleep)
    counts = bar_counts(db)
    # Drifted, with stored history older than what we just fetched: refetch all of it.
    drifted = [
        k for k, df in frames.items()
        if _drifted(db, k, tf, df) and counts[(k, tf)][1] < int(df.index.min())
    ]
    if drifted:
        full = min(datetime.fromtimestamp(counts[(k, tf)][1], UTC) for k in drifted)
        log.info(
            "yahoo %s: adjustment drift in %s; refetching from %s", tf, drifted, full.date())
        got, errs = await fetch_equities(cfg, tf, {k: ticker_of[k] for k in drifted}, full, now, sleep)
        for k in drifted:  # never store a partly re-adjusted series: full history or nothing
            frames.pop(k, None)
        frames.update(got)
        errors.update(errs)
    return frames, errors


async def poll_equities(
    db: sqlite_utils.Database, cfg: Config, *, assets: list[str] | None = None,
    since: datetime | None = None, timeframes: tuple[str, ...] = ("1d", "1h"),
    progress: Progress | None = None, sleep: Sleep = asyncio.sleep, now: datetime | None = None,
) -> list[FeedResult]:
    """Fetch new closed bars for the configured equity assets (or just ``assets``) and upsert
    them; one result per asset × timeframe. ``since`` refetches from that time (backfill)."""
    now = now or datetime.now(UTC)
    chosen = {a.upper() for a in assets} if assets is not None else None
    ticker_of = {
        a.key: str(a.ticker) for a in cfg.assets
        if a.kind == "equity" and (chosen is None or a.key in chosen)
    }
    dead: dict[str, str] = {}  # asset -> permanent error: reported once, not asked again
    results: list[FeedResult] = []
    for tf in timeframes:
        live = {k: t for k, t in ticker_of.items() if k not in dead}
        frames, errors = (
            await _equity_timeframe(db, cfg, tf, live, since, now, sleep) if live else ({}, {})
        )
        for key in ticker_of:
            if key in dead:
                results.append(FeedResult(YAHOO, key, tf, 0, 0, 0, dead[key]))
            elif key in errors:
                msg = str(errors[key])
                record_error(db, YAHOO, key, msg)
                if isinstance(errors[key], PermanentFeedError):
                    dead[key] = msg
                results.append(FeedResult(YAHOO, key, tf, 0, 0, 0, msg))
            elif key in frames:
                df = frames[key]
                res = guarded_upsert(db, cfg, YAHOO, key, tf, df, int(now.timestamp()))
                if isinstance(res, str):
                    results.append(FeedResult(YAHOO, key, tf, len(df), 0, 0, res))
                    continue
                record_ok(db, YAHOO, key, last_bar_ts(db, key, tf))
                if progress is not None:
                    progress(key, tf, len(df))
                results.append(FeedResult(YAHOO, key, tf, len(df), res.inserted, res.updated))
    return results
