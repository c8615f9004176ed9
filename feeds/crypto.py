"""The ccxt crypto feed: closed spot OHLCV candles from exchanges, as bar frames.

- `make_exchange` builds a rate-limited, spot-only ccxt async client (URL override for tests
  and proxies via ``feeds.ccxt_urls``).
- `fetch_closed_candles` pages through one symbol × timeframe and drops the forming candle.
- `fetch_crypto` does that for every requested crypto asset × timeframe at once, from the
  start the caller gives (``service.sync`` derives it from the last stored bar), with
  retries, exponential backoff and the asset's fallback exchanges. It returns frames; it
  never touches storage.

Temporary trouble (network, rate limits, maintenance, HTTP 429/418/5xx) is retried; permanent
trouble (unknown symbol, bad request, auth) is not, and is logged once per (exchange, symbol).
A 429/418 with a ``Retry-After`` header is retried no sooner than it says; one asking for more
than `RETRY_AFTER_MAX` seconds ends this poll's attempts for that request (the next poll tries).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
import ccxt.async_support as accxt
import pandas as pd

from core.config import AssetConfig, Config, FeedsConfig
from core.errors import BadDataError, FeedError, PermanentFeedError, TemporaryFeedError
from core.retry import Sleep, retry_async
from core.timeframes import TIMEFRAME_SECONDS
from feeds.base import BAR_COLUMNS, Progress

log = logging.getLogger(__name__)

ExchangeFactory = Callable[[str], accxt.Exchange]
T = TypeVar("T")

# (exchange id, symbol) whose permanent error this process already logged; cleared on success.
_REPORTED: set[tuple[str, str]] = set()

# Order matters: these are ExchangeError subclasses, and any other ccxt error is retried.
_PERMANENT = (accxt.BadRequest, accxt.AuthenticationError, accxt.NotSupported)
_TEMPORARY = (accxt.BaseError, aiohttp.ClientError, TimeoutError, OSError)
RETRY_AFTER_MAX = 300.0  # longer waits (an IP ban) are not slept through inside a poll cycle


class RetryAfterError(accxt.RateLimitExceeded):  # type: ignore[misc]
    """A 429/418 that said how long to wait (``Retry-After``, seconds)."""

    def __init__(self, message: str, seconds: float) -> None:
        super().__init__(message)
        self.retry_after = seconds


class _LongRetryAfter(RetryAfterError):
    """A wait over `RETRY_AFTER_MAX`: not retried within this poll."""


_URL = re.compile(r"[a-z]+://\S+", re.IGNORECASE)
_TAG = re.compile(r"<[^>]{0,200}>")


def make_exchange(exchange_id: str, feeds: FeedsConfig) -> accxt.Exchange:
    """A ccxt async client: rate limiter on, ``feeds.timeout_seconds``, spot markets only."""
    cls = getattr(accxt, exchange_id, None)
    if cls is None or exchange_id not in accxt.exchanges:
        raise PermanentFeedError(exchange_id, "not a ccxt exchange id")
    ex: accxt.Exchange = cls(
        {"enableRateLimit": True, "timeout": int(feeds.timeout_seconds * 1000)}
    )
    ex.options["defaultType"] = "spot"
    # Loading derivative markets costs extra requests (binance: fapi + dapi exchangeInfo) and
    # can fail on its own; we only ever read spot candles.
    fm = ex.options.get("fetchMarkets")
    if isinstance(fm, dict) and isinstance(fm.get("types"), list):
        ex.options["fetchMarkets"] = {**fm, "types": ["spot"]}
    elif isinstance(fm, list) and "spot" in fm:
        ex.options["fetchMarkets"] = ["spot"]
    base = feeds.ccxt_urls.get(exchange_id)
    if base:
        ex.urls["api"] = _rebase(ex.urls["api"], base)
    _honour_retry_after(ex)
    return ex


def _retry_after(headers: dict[str, str] | None) -> float | None:
    for key, value in (headers or {}).items():
        if key.lower() == "retry-after":
            try:
                return max(0.0, float(value))
            except ValueError:
                return None  # an HTTP date: rare for exchanges; the backoff applies
    return None


def _honour_retry_after(ex: accxt.Exchange) -> None:
    """ccxt turns a 429/418 into DDoSProtection and drops the headers; this hook sees them first
    (``handle_errors`` gets each response's own headers, so concurrent requests do not mix).
    It also stops ccxt reading a truncated JSON body as "no candles" (it parses it to None and
    fetch_ohlcv returns []), which would end paging early without a word: that is retried."""
    inner = ex.handle_errors

    def handle_errors(code: int, reason: str, url: str, method: str, headers: dict[str, str],
                      body: str, response: Any = None, *rest: Any) -> Any:
        wait = _retry_after(headers) if code in (418, 429) else None
        if wait is not None:
            cls = _LongRetryAfter if wait > RETRY_AFTER_MAX else RetryAfterError
            raise cls(f"{ex.id} {code} {reason}: retry after {wait:g}s", wait)
        if 200 <= code < 300 and response is None and (body or "").lstrip()[:1] in ("[", "{"):
            raise accxt.BadResponse(f"{ex.id} {code}: malformed JSON in the answer ({len(body)} bytes)")
        return inner(code, reason, url, method, headers, body, response, *rest)

    ex.handle_errors = handle_errors  # type: ignore[method-assign]


def _rebase(api: Any, base: str) -> Any:
    """Every URL in ccxt's ``urls['api']`` moved onto ``base``, keeping its path."""
    if isinstance(api, str):
        parts = urlsplit(api)
        return base.rstrip("/") + parts.path + (f"?{parts.query}" if parts.query else "")
    if isinstance(api, dict):
        return {k: _rebase(v, base) for k, v in api.items()}
    return api


def _clean(exc: BaseException, source: str) -> str:
    """One short line about ``exc``: no URLs (query strings may carry keys), no HTML."""
    text = _URL.sub("<url>", _TAG.sub(" ", str(exc)))
    text = " ".join(text.split())
    if text.startswith(source + " "):
        text = text[len(source) + 1 :]
    text = text[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    source: str,
    what: str,
    hint: str,
    retries: int,
    backoff: float,
    sleep: Sleep,
) -> T:
    """``call()`` through `core.retry.retry_async`; the final error becomes a FeedError."""
    try:
        return await retry_async(
            call, retries=retries, backoff=backoff, retry_on=_TEMPORARY, give_up_on=(*_PERMANENT, _LongRetryAfter),
            what=f"{source}: {what}", describe=lambda e: _clean(e, source), sleep=sleep,
            wait_hint=lambda e: e.retry_after if isinstance(e, RetryAfterError) else None,
        )
    except _PERMANENT as exc:
        raise PermanentFeedError(source, f"{what}: {_clean(exc, source)} ({hint})") from None
    except _TEMPORARY as exc:
        n = retries + 1
        raise TemporaryFeedError(
            source, f"{what}: {_clean(exc, source)} (gave up after {n} attempt{'s' * (n > 1)})"
        ) from None


async def fetch_closed_candles(
    exchange: accxt.Exchange,
    symbol: str,
    timeframe: str,
    since_ms: int,
    *,
    now_ms: int | None = None,
    limit: int = 1000,
    retries: int,
    backoff: float,
    sleep: Sleep = asyncio.sleep,
    hint: str = "check the symbol",
    on_page: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Closed candles of ``symbol`` opening at or after ``since_ms``, as a bar frame.

    Pages ``limit`` candles at a time until the still-forming candle (open + tf > now) or the
    end of the exchange's data. Candles with a non-positive or NaN close are skipped.
    """
    tf_ms = TIMEFRAME_SECONDS[timeframe] * 1000
    now = int(now_ms) if now_ms is not None else int(time.time() * 1000)
    cursor = since_ms - since_ms % tf_ms  # candles open on UTC timeframe boundaries
    source = str(exchange.id)
    rows: dict[int, list[Any]] = {}
    while cursor + tf_ms <= now:  # otherwise no closed candle can start at or after cursor
        batch = await _with_retries(
            partial(exchange.fetch_ohlcv, symbol, timeframe, cursor, limit),
            source=source, what=f"{symbol} {timeframe}", hint=hint,
            retries=retries, backoff=backoff, sleep=sleep,
        )
        fresh = [c for c in batch if c and c[0] is not None and int(c[0]) >= cursor]
        if not fresh:
            break
        for c in fresh:
            if int(c[0]) + tf_ms <= now:
                _check_duplicate(rows.get(int(c[0])), c, source, symbol, timeframe)
                rows[int(c[0])] = c
        if on_page is not None:
            on_page(len(rows))
        cursor = max(int(c[0]) for c in fresh) + tf_ms
    keys = sorted(rows)
    df = pd.DataFrame(
        [[float("nan") if v is None else float(v) for v in rows[k][1:6]] for k in keys],
        index=pd.Index([k // 1000 for k in keys], dtype="int64", name="ts"),
        columns=list(BAR_COLUMNS),
        dtype="float64",
    )
    bad = ~(df["close"] > 0)  # also catches NaN
    if bad.any():
        first = datetime.fromtimestamp(int(df.index[bad.to_numpy()][0]), UTC)
        log.warning("%s: %s %s: skipped %d candle(s) with a non-positive or missing close "
                    "(first at %s)", source, symbol, timeframe, int(bad.sum()), first)
        df = df.loc[~bad]
    return df


def _check_duplicate(seen: list[Any] | None, c: list[Any], source: str, symbol: str,
                     timeframe: str) -> None:
    """The same closed candle twice with other prices: the exchange's data cannot be trusted."""
    if seen is None or list(seen[1:5]) == list(c[1:5]):
        return
    at = datetime.fromtimestamp(int(c[0]) // 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    raise BadDataError(source, f"{symbol} {timeframe}: two candles at {at} with different prices "
                       f"(close {seen[4]} and {c[4]}): response refused")


@dataclass
class _Poll:
    """State shared by the concurrent jobs of one `fetch_crypto` call."""

    cfg: Config
    factory: ExchangeFactory
    sleep: Sleep
    now_ms: int
    reported: set[tuple[str, str]]
    progress: Progress | None
    exchanges: dict[str, accxt.Exchange] = field(default_factory=dict)
    broken: dict[str, FeedError] = field(default_factory=dict)
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def exchange(self, ex_id: str) -> accxt.Exchange:
        """The shared client for ``ex_id`` with markets loaded; one failure fails all users."""
        async with self.locks.setdefault(ex_id, asyncio.Lock()):
            if ex_id in self.broken:
                err = self.broken[ex_id]
                raise type(err)(ex_id, str(err).removeprefix(f"{ex_id}: "))
            try:
                ex = self.exchanges.get(ex_id)
                if ex is None:
                    ex = self.exchanges[ex_id] = self.factory(ex_id)
                if not ex.markets:
                    f = self.cfg.feeds
                    await _with_retries(
                        ex.load_markets, source=ex_id, what="loading markets",
                        hint=f"check the exchange and feeds.ccxt_urls.{ex_id}",
                        retries=f.retries, backoff=f.backoff_seconds, sleep=self.sleep,
                    )
                return ex
            except FeedError as err:
                self.broken[ex_id] = err
                raise

    def report_once(self, ex_id: str, symbol: str, err: FeedError) -> None:
        if (ex_id, symbol) not in self.reported:
            self.reported.add((ex_id, symbol))
            log.error("%s", err)

    async def job(self, asset: AssetConfig, index: int, timeframe: str, start: int) -> CryptoFetch:
        assert asset.exchange is not None and asset.symbol is not None  # config guarantees
        failures: list[FeedError] = []
        chain = [asset.exchange, *asset.fallback_exchanges]
        for j, ex_id in enumerate(chain):
            where = f"assets[{index}]"
            hint = f"check {where}." + ("symbol" if j == 0 else f"fallback_exchanges[{j - 1}]")
            try:
                ex = await self.exchange(ex_id)
                if asset.symbol not in ex.markets:
                    raise PermanentFeedError(ex_id, f"no market {asset.symbol} ({hint})")
                if not ex.has.get("fetchOHLCV") or timeframe not in (ex.timeframes or {}):
                    raise PermanentFeedError(ex_id, f"no {timeframe} candles ({hint})")
                df = await fetch_closed_candles(
                    ex, asset.symbol, timeframe, start, now_ms=self.now_ms,
                    retries=self.cfg.feeds.retries, backoff=self.cfg.feeds.backoff_seconds,
                    sleep=self.sleep, hint=hint, on_page=self._progress(asset.key, timeframe),
                )
            except (PermanentFeedError, BadDataError) as err:
                self.report_once(ex_id, asset.symbol, err)
                failures.append(err)
                continue
            except TemporaryFeedError as err:
                log.warning("%s (%s %s)", err, asset.key, timeframe)
                failures.append(err)
                continue
            self.reported.discard((ex_id, asset.symbol))
            if failures:
                log.warning("%s %s: fetched from fallback %s", asset.key, timeframe, ex_id)
            return CryptoFetch(asset.key, timeframe, ex_id, df, failures)
        return CryptoFetch(asset.key, timeframe, asset.exchange, None, failures)

    def _progress(self, key: str, timeframe: str) -> Callable[[int], None] | None:
        cb = self.progress
        return None if cb is None else (lambda n: cb(key, timeframe, n))

    async def safe_job(self, asset: AssetConfig, index: int, timeframe: str, start: int) -> CryptoFetch:
        """`job`, but a bug in one asset's job must not take the others down."""
        try:
            return await self.job(asset, index, timeframe, start)
        except Exception as exc:
            log.exception("%s %s: unexpected error", asset.key, timeframe)
            src = asset.exchange or "ccxt"
            err = TemporaryFeedError(src, f"unexpected {_clean(exc, src)}")
            return CryptoFetch(asset.key, timeframe, src, None, [err])

    async def close(self) -> None:
        for ex_id, ex in self.exchanges.items():
            try:
                await ex.close()
            except Exception as exc:  # closing is best effort
                log.debug("%s: close failed: %s", ex_id, _clean(exc, ex_id))


@dataclass(frozen=True)
class CryptoFetch:
    """One asset × timeframe: the closed candles fetched (None if every exchange failed), the
    exchange that served them, and the failures met on the way (primary, fallbacks)."""

    asset: str
    timeframe: str
    source: str
    bars: pd.DataFrame | None
    failures: list[FeedError]

    @property
    def error(self) -> str | None:
        return None if self.bars is not None else "; ".join(str(e) for e in self.failures)[:500]


async def fetch_crypto(
    cfg: Config,
    starts: dict[tuple[str, str], int],
    *,
    progress: Progress | None = None,
    exchange_factory: ExchangeFactory | None = None,
    sleep: Sleep = asyncio.sleep,
    now_ms: int | None = None,
    reported: set[tuple[str, str]] | None = None,
) -> list[CryptoFetch]:
    """Closed candles for each (asset key, timeframe) in ``starts``, from that start (UTC ms).

    ``reported`` is the set of (exchange, symbol) permanent errors already logged.
    """
    index = {a.key: (i, a) for i, a in enumerate(cfg.assets) if a.kind == "crypto"}
    poll = _Poll(
        cfg, exchange_factory or (lambda ex_id: make_exchange(ex_id, cfg.feeds)), sleep,
        int(now_ms) if now_ms is not None else int(time.time() * 1000),
        _REPORTED if reported is None else reported, progress,
    )
    try:
        return list(await asyncio.gather(
            *(poll.safe_job(index[key][1], index[key][0], tf, start) for (key, tf), start in starts.items())
        ))
    finally:
        await poll.close()
