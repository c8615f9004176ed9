"""The Yahoo Finance equity feed: adjusted daily and hourly bars for ETFs/indices via yfinance.

`fetch_equity_bars` makes one batched ``yf.download`` call for all tickers (yfinance then
issues one chart request per ticker, sequentially: polite to Yahoo and deterministic);
`fetch_equities` runs it in a thread with retries and drops partial bars; ``service.sync``
stores what it returns (and checks it for adjustment drift against what is stored).

Pointing yfinance elsewhere (``feeds.yahoo_base_url``): yfinance hard-codes its hosts —
``query1/query2.finance.yahoo.com`` as module constants copied into a dozen modules at
import time, and ``fc.yahoo.com`` / ``guce.yahoo.com`` / ``consent.yahoo.com`` as literal
strings in the cookie/crumb code — so patching ``yfinance.const`` cannot redirect all of
it. Instead we pass our own session through yfinance's supported ``session=`` argument: a
`curl_cffi` Session subclass (`_YahooSession`) that rewrites any ``*.yahoo.com`` URL to
``yahoo_base_url`` + the original path and query. The same hook suits a team behind a
reverse proxy or mirror. No yfinance constant is patched; the only global effects are
that yfinance's ``YfData`` singleton keeps the last session it was given (``yf.download``
installs one on every call anyway) and that we clear its in-process response memo (see
`_download`) before each download.

Telling "no such ticker" from "network down": yfinance swallows HTTP errors (it logs them
and returns an empty frame; an unreachable Yahoo even looks like "possibly delisted; no
timezone found"). Our session records the HTTP status of every chart request per symbol,
so for a ticker that came back empty we decide from the wire: a transport error, 429 or
5xx ⇒ `TemporaryFeedError` (retried with exponential backoff); otherwise a 404 (Yahoo's
``"No data found, symbol may be delisted"``) or other 4xx ⇒ `PermanentFeedError` (reported
once, not retried); all 200 ⇒ simply no bars in that range (e.g. a weekend).

Adjustment drift (checked in ``service.sync``): Yahoo back-adjusts all history on every
dividend/split, so an
incremental poll refetches a few sessions of overlap; if any overlapping stored close
differs from the fresh one by more than 1e-6 relative, the whole stored range of that
ticker/timeframe is refetched and upserted, keeping the series consistently adjusted
(`upsert_bars` marks the asset dirty from the first changed bar, so correlations are
recomputed). Hourly history beyond Yahoo's ~730 days cannot be refetched; the integrity guard
(service/guard.py) rescales it by the ratio it finds over the refetched overlap.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np
import pandas as pd
import yfinance as yf
from curl_cffi import requests as curl_requests
from yfinance.data import YfData

from core.calendar import session_close
from core.config import Config, FeedsConfig
from core.errors import FeedError, PermanentFeedError, TemporaryFeedError
from core.retry import Sleep, backoff_delays
from core.timeframes import TIMEFRAME_SECONDS
from feeds.base import BAR_COLUMNS

log = logging.getLogger(__name__)
# yfinance logs every failed request itself (~50 ERROR/WARNING lines per poll with Yahoo
# unreachable, including a false "possibly delisted; no timezone found") and swallows the
# error; we classify it from the wire and log one line per ticker (`fetch_equities`).
logging.getLogger("yfinance").setLevel(logging.CRITICAL)

SOURCE = "yahoo"
HOURLY_LIMIT = timedelta(days=729)  # Yahoo serves ~730 days of 1h bars; keep a day of margin

# yfinance's state (YfData singleton, response cache) is process-global: one download at a time.
_LOCK = threading.Lock()
_SESSIONS: dict[str | None, _YahooSession] = {}


class _YahooSession(curl_requests.Session):  # type: ignore[misc,type-arg]
    """curl_cffi session that reroutes Yahoo hosts to a base URL and records chart statuses."""

    def __init__(self, base_url: str | None) -> None:
        super().__init__(impersonate="chrome")
        self.base_url = base_url.rstrip("/") if base_url else None
        self.outcomes: dict[str, list[int | None]] = {}  # symbol -> statuses (None: no reply)

    def request(self, method: Any, url: str, *args: Any, **kwargs: Any) -> Any:
        parts = urlsplit(url)
        target = url
        if self.base_url and (parts.hostname or "").endswith("yahoo.com"):
            target = self.base_url + parts.path + (f"?{parts.query}" if parts.query else "")
        symbol = None
        if parts.path.startswith("/v8/finance/chart/"):
            symbol = unquote(parts.path.rsplit("/", 1)[1]).upper()
        try:
            resp = super().request(method, target, *args, **kwargs)
        except Exception:
            if symbol is not None:
                self.outcomes.setdefault(symbol, []).append(None)
            raise
        if symbol is not None:
            self.outcomes.setdefault(symbol, []).append(int(resp.status_code))
        return resp


def _session(base_url: str | None) -> _YahooSession:
    # One session per base URL, reused so Yahoo's cookie and crumb survive between polls.
    if base_url not in _SESSIONS:
        _SESSIONS[base_url] = _YahooSession(base_url)
    return _SESSIONS[base_url]


def _classify(ticker: str, statuses: list[int | None]) -> FeedError:
    if not statuses or any(s is None or s == 429 or s >= 500 for s in statuses):
        why = "rate limited (HTTP 429)" if 429 in statuses else "Yahoo unreachable or failing"
        last = next((s for s in reversed(statuses) if s is not None), None)
        return TemporaryFeedError(SOURCE, f"{ticker}: {why}" + (f" (HTTP {last})" if last else ""))
    if 404 in statuses:
        return PermanentFeedError(
            SOURCE, f"{ticker}: unknown ticker (no data found, symbol may be delisted)"
        )
    bad = next(s for s in statuses if s is not None and s >= 400)
    return PermanentFeedError(SOURCE, f"{ticker}: Yahoo refused the request (HTTP {bad})")


def _to_epoch(idx: pd.Index, daily: bool) -> pd.Index:
    dt = pd.DatetimeIndex(idx)
    if daily:  # yfinance gives the exchange-local session date; we store 00:00 UTC of it
        dt = pd.DatetimeIndex(dt.tz_localize(None) if dt.tz else dt).normalize().tz_localize("UTC")
    secs = np.asarray((dt if dt.tz else dt.tz_localize("UTC")).as_unit("s").asi8, dtype="int64")
    return pd.Index(secs, name="ts")  # type: ignore[no-any-return]


def _frame_for(data: pd.DataFrame, ticker: str, interval: str) -> pd.DataFrame:
    """One ticker's bars out of a ``group_by="ticker"`` download, in our bar-frame shape."""
    empty = pd.DataFrame(
        columns=list(BAR_COLUMNS), index=pd.Index([], dtype="int64", name="ts"), dtype="float64"
    )
    if data is None or data.empty or not isinstance(data.columns, pd.MultiIndex):
        return empty
    if ticker not in data.columns.get_level_values(0):
        return empty
    sub = pd.DataFrame(data[ticker])
    sub.columns = [str(c).lower() for c in sub.columns]
    cols = {c: sub[c] if c in sub.columns else float("nan") for c in BAR_COLUMNS}
    df = pd.DataFrame(cols, index=sub.index).astype("float64")
    df = df[df["close"].notna() & (df["close"] > 0)]
    df.index = _to_epoch(df.index, daily=interval == "1d")
    return df[~df.index.duplicated(keep="last")].sort_index()


def drop_partial_bars(df: pd.DataFrame, interval: str, now: datetime) -> pd.DataFrame:
    """Keep only bars that had closed at ``now``.

    Daily: the session's close (half days included) must be <= now. Hourly: the bar's end,
    start + 1h capped at the session close (the 15:30 ET bar lasts 30 minutes), must be <= now.
    Bars older than a week are closed whatever the calendar says, so only the tail is checked.
    """
    now_ts = int(now.timestamp())
    step = TIMEFRAME_SECONDS.get(interval) or int(pd.Timedelta(interval).total_seconds())

    def closed(ts: int) -> bool:
        if ts < now_ts - 7 * 86400:
            return True
        if interval == "1d":
            close = session_close(ts)
            return (ts + 86400 if close is None else close) <= now_ts
        local = pd.Timestamp(ts, unit="s", tz="UTC").tz_convert("America/New_York")
        close = session_close(int(pd.Timestamp(local.date()).timestamp()))
        return (ts + step if close is None else min(ts + step, close)) <= now_ts

    return df[[closed(int(ts)) for ts in df.index]]


def _download(
    tickers: list[str], interval: str, start: datetime, end: datetime | None,
    feeds: FeedsConfig, now: datetime,
) -> tuple[dict[str, pd.DataFrame], dict[str, FeedError]]:
    """One attempt: frames for tickers that answered, errors for those that did not."""
    if interval == "1h" and start < now - HOURLY_LIMIT:
        log.debug("1h start %s clamped to %s: Yahoo serves ~730 days of hourly bars",
                  start.isoformat(), (now - HOURLY_LIMIT).isoformat())
        start = now - HOURLY_LIMIT
    wanted = {t.upper(): t for t in tickers}
    with _LOCK:
        session = _session(feeds.yahoo_base_url)
        session.outcomes.clear()
        # yfinance memoises past-dated chart responses (even errors) per process: a stale
        # 500 or a previous server's body must never be served back to us.
        YfData.cache_get.cache_clear()
        try:
            data = yf.download(
                list(wanted), start=int(start.timestamp()),
                end=int((end or now).timestamp()), interval=interval, group_by="ticker",
                auto_adjust=True, actions=False, progress=False, threads=False,
                timeout=feeds.timeout_seconds, session=session, multi_level_index=True,
            )
        except Exception as exc:  # yfinance catches per-ticker errors; this is a bug or worse
            log.warning("yf.download(%s, %s) failed: %r", list(wanted), interval, exc)
            why = f"yfinance failed ({type(exc).__name__})"
            return {}, {t: TemporaryFeedError(SOURCE, f"{t}: {why}") for t in tickers}
        outcomes = {k: list(v) for k, v in session.outcomes.items()}
    frames: dict[str, pd.DataFrame] = {}
    errors: dict[str, FeedError] = {}
    for up, orig in wanted.items():
        df = _frame_for(data, up, interval)
        statuses = outcomes.get(up, [])
        if df.empty and not (statuses and all(s == 200 for s in statuses)):
            errors[orig] = _classify(orig, statuses)
        else:
            frames[orig] = drop_partial_bars(df, interval, now)
    return frames, errors


def fetch_equity_bars(
    tickers: list[str], interval: str, start: datetime, end: datetime | None, *,
    feeds: FeedsConfig, now: datetime | None = None,
) -> dict[str, pd.DataFrame]:
    """Blocking: closed, adjusted bars per ticker from one batched download (single attempt).

    Raises `PermanentFeedError` if any ticker is unknown, else `TemporaryFeedError` if any
    failed transiently; `poll_equities` uses the per-ticker variant to keep partial results.
    """
    frames, errors = _download(tickers, interval, start, end, feeds, now or datetime.now(UTC))
    if errors:
        perm: list[FeedError] = [e for e in errors.values() if isinstance(e, PermanentFeedError)]
        raise (perm or list(errors.values()))[0]
    return frames


async def _download_retrying(
    tickers: list[str], interval: str, start: datetime, feeds: FeedsConfig, now: datetime,
    sleep: Sleep,
) -> tuple[dict[str, pd.DataFrame], dict[str, FeedError]]:
    """Retries only the tickers that failed transiently, with the shared backoff schedule."""
    frames: dict[str, pd.DataFrame] = {}
    errors: dict[str, FeedError] = {}
    pending = list(tickers)
    delays = backoff_delays(feeds.retries, feeds.backoff_seconds)
    while pending:
        got, errs = await asyncio.to_thread(_download, pending, interval, start, None, feeds, now)
        frames.update(got)
        errors.update(errs)
        for t in got:
            errors.pop(t, None)
        pending = [t for t, e in errs.items() if isinstance(e, TemporaryFeedError)]
        delay = next(delays, None) if pending else None
        if delay is None:
            break
        log.info("yahoo %s: %s failed (%s); retry in %.1fs", interval, ", ".join(pending),
                 errs[pending[0]], delay)
        await sleep(delay)
    return frames, errors


async def fetch_equities(
    cfg: Config, tf: str, ticker_of: dict[str, str], start: datetime, now: datetime, sleep: Sleep
) -> tuple[dict[str, pd.DataFrame], dict[str, FeedError]]:
    """Closed bars by asset key for one timeframe: one batched download from ``start``."""
    key_of = {t: k for k, t in ticker_of.items()}
    got, errs = await _download_retrying(list(ticker_of.values()), tf, start, cfg.feeds, now, sleep)
    for t, err in errs.items():  # our one line per failure (yfinance's own are silenced above)
        log.warning("%s (%s %s)", err, key_of[t], tf)
    return {key_of[t]: df for t, df in got.items()}, {key_of[t]: e for t, e in errs.items()}
