"""`corrbot backfill`: fetch history for the watch list from every feed, with a progress bar,
then bring the correlations up to date."""

from __future__ import annotations

from datetime import datetime

import sqlite_utils
from tqdm import tqdm

from core.config import Config
from feeds.base import FeedResult
from service.pipeline import update_correlations
from service.sync import poll_crypto, poll_equities


async def backfill(
    db: sqlite_utils.Database, cfg: Config, *, since: datetime | None = None, assets: list[str] | None = None
) -> list[FeedResult]:
    keys = [cfg.resolve(a) for a in assets] if assets else None
    crypto = [k for k in keys if cfg.kind_of(k) == "crypto"] if keys else None
    equity = [k for k in keys if cfg.kind_of(k) == "equity"] if keys else None
    bar = tqdm(unit=" bars", desc="backfill", leave=True)

    def progress(asset: str, timeframe: str, n: int) -> None:
        bar.set_postfix_str(f"{asset} {timeframe}", refresh=False)
        bar.update(n)

    results: list[FeedResult] = []
    try:
        if crypto is None or crypto:
            results += await poll_crypto(db, cfg, assets=crypto, since=since, progress=progress)
        if equity is None or equity:
            results += await poll_equities(db, cfg, assets=equity, since=since, progress=progress)
    finally:
        bar.close()
    for r in results:
        status = "ok" if r.ok else f"error: {r.error}"
        print(f"{r.source:<10} {r.asset:<14} {r.timeframe:<3} {r.fetched:>7} fetched {r.inserted:>7} new  {status}")
    print(update_correlations(db, cfg).summary())
    return results
