"""A loopback Binance spot REST server for tests: the real wire protocol, real data, scriptable.

Point a real ``ccxt.async_support`` client at it (``feeds.ccxt_urls = {"binance": server.url}``)
and it answers what ccxt needs for spot market data: ``/api/v3/ping``, ``/api/v3/time``,
``/api/v3/exchangeInfo`` and ``/api/v3/klines`` (symbol, interval, startTime, endTime, limit,
Binance's selection rules and response shape). Any other path gets a 404 and is still counted,
so a test can see if ccxt started calling something new.

Data:

* BTCUSDT 1h klines are the real Binance rows of
  ``tests/data/intraday/BTCUSDT_1h_binance_2023-2026.csv`` (one real hole: 2023-03-24 13:00).
* ETHUSDT, SOLUSDT and ADAUSDT are NOT real prices: each is BTC scaled by a constant
  (`SCALED`: prices × k rounded to the symbol's tick, volume ÷ k) — distinct, deterministic series.
* 1d klines are aggregated from the 1h rows per UTC day (first open, max high, min low, last
  close, summed volumes and trade counts), like Binance's UTC daily candles.
* Taker-buy volumes are not in the CSV and are served as "0.00000000". Intervals other than
  1h and 1d answer -1120 "Invalid interval." (there is no real 30m data).

Scripting: ``now_ms`` is the server clock — klines opening after it do not exist yet and the one
containing it is returned still forming (a 1d candle then aggregates only the hours so far).
``fail(...)`` (or `rate_limited`, `unavailable`, `banned`, `invalid_symbol`) queues failures for
the next N matching requests, `stall` leaves them unanswered for a while; ``patch(...)`` serves
bad values for one kline; ``mangled = N`` serves the next N klines answers with every candle
twice, newest first; ``requests`` records every request (path, query, status, arrival time) and
``count(path, **query)`` counts them.

    async with BinanceServer(csv_path) as server:
        server.rate_limited(times=2)
        ... ccxt client with urls pointed at server.url ...
        assert server.count("/api/v3/klines") == 3
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from aiohttp import web

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
INTERVAL_MS = {"1h": HOUR_MS, "1d": DAY_MS}
# symbol -> (price factor vs BTC, price decimals); see the module docstring.
SCALED: dict[str, tuple[float, int]] = {
    "BTCUSDT": (1.0, 2),
    "ETHUSDT": (0.06, 2),
    "SOLUSDT": (0.0012, 2),
    "ADAUSDT": (0.000015, 4),
}
_COLS = ["open", "high", "low", "close", "volume", "quote_volume", "trades"]


@lru_cache(maxsize=4)
def _btc_1h(csv_path: str) -> pd.DataFrame:
    raw = pd.read_csv(csv_path)
    ts = pd.to_datetime(raw["timestamp"], utc=True)
    open_ms = (ts - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
    df = raw.rename(columns={"trade_count": "trades"}).loc[:, _COLS].copy()
    df.index = pd.Index(open_ms.to_numpy(dtype="int64"), name="open_ms")
    return df


@lru_cache(maxsize=16)
def hourly(csv_path: str, symbol: str) -> pd.DataFrame:
    """The 1h rows this server serves for ``symbol`` (index: open time in ms)."""
    btc = _btc_1h(csv_path)
    k, decimals = SCALED[symbol]
    if k == 1.0:
        return btc
    df = btc.copy()
    for col in ("open", "high", "low", "close"):
        df[col] = (btc[col] * k).round(decimals)
    df["volume"] = (btc["volume"] / k).round(4)
    return df


def daily_from_hourly(h: pd.DataFrame) -> pd.DataFrame:
    """Aggregate 1h rows into UTC-day rows (index: day open time in ms)."""
    day = pd.Index((h.index.to_numpy() // DAY_MS) * DAY_MS, name="open_ms")
    g = h.groupby(day, sort=True)
    return pd.DataFrame(
        {
            "open": g["open"].first(),
            "high": g["high"].max(),
            "low": g["low"].min(),
            "close": g["close"].last(),
            "volume": g["volume"].sum(),
            "quote_volume": g["quote_volume"].sum(),
            "trades": g["trades"].sum(),
        }
    )


@dataclass
class Failure:
    status: int
    body: str
    headers: dict[str, str]
    path: str | None  # None = any path
    symbol: str | None  # None = any (or no) symbol
    remaining: int | None  # None = forever
    delay: float = 0.0  # seconds before answering (longer than the client's timeout: a stall)

    def matches(self, path: str, symbol: str | None) -> bool:
        return (self.path is None or self.path == path) and (
            self.symbol is None or self.symbol == symbol
        )


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    status: int = 200
    t: float = field(default_factory=time.monotonic)  # arrival
    faulted: bool = False  # answered by a scripted failure or mangled


@dataclass
class BinanceServer:
    csv_path: Path
    symbols: tuple[str, ...] = tuple(SCALED)
    now_ms: int | None = None  # None = just after the last CSV bar closed
    requests: list[Seen] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # (symbol, interval, open_ms) -> column values served instead of the data's (bad candles)
    patches: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)
    # (symbol, interval, open_ms) -> values of a second kline served right after the real one
    duplicates: dict[tuple[str, str, int], dict[str, float]] = field(default_factory=dict)
    mangled: int = 0  # the next N klines answers repeat every candle and come newest first
    _runner: web.AppRunner | None = None
    port: int = 0

    def __post_init__(self) -> None:
        if self.now_ms is None:
            self.now_ms = int(_btc_1h(str(self.csv_path)).index[-1]) + HOUR_MS

    # ---- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> BinanceServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> BinanceServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- scripting ------------------------------------------------------------------------

    def fail(
        self,
        status: int,
        body: object = "",
        *,
        times: int | None = 1,
        path: str | None = None,
        symbol: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        """The next ``times`` matching requests (None = all) get ``status`` and ``body``."""
        text = body if isinstance(body, str) else json.dumps(body)
        self.failures.append(Failure(status, text, dict(headers or {}), path, symbol, times))

    def stall(self, seconds: float, *, times: int | None = 1, path: str | None = "/api/v3/klines",
              symbol: str | None = None) -> None:
        """The next ``times`` matching requests get no answer for ``seconds`` (then a 504)."""
        self.failures.append(Failure(504, "<html>504 Gateway Time-out</html>", {}, path, symbol, times, seconds))

    def rate_limited(self, times: int | None = 1, retry_after: int = 1, **kw: Any) -> None:
        msg = "Too many requests; current limit of IP is 6000 requests per minute."
        self.fail(429, {"code": -1003, "msg": msg}, times=times,
                  headers={"Retry-After": str(retry_after)}, **kw)

    def banned(self, times: int | None = 1, **kw: Any) -> None:
        msg = "Way too much request weight used; IP banned until 1700000000000."
        self.fail(418, {"code": -1003, "msg": msg}, times=times, **kw)

    def unavailable(self, times: int | None = 1, **kw: Any) -> None:
        page = "<html><body><h1>503 Service Unavailable</h1></body></html>"
        self.fail(503, page, times=times, **kw)

    def invalid_symbol(self, times: int | None = 1, **kw: Any) -> None:
        self.fail(400, {"code": -1121, "msg": "Invalid symbol."}, times=times, **kw)

    def patch(self, symbol: str, interval: str, open_ms: int, **values: float) -> None:
        """Serve ``values`` (e.g. close=0.0) for one kline instead of the real ones."""
        self.patches[(symbol, interval, open_ms)] = values

    def duplicate(self, symbol: str, interval: str, open_ms: int, **values: float) -> None:
        """Serve one kline twice: the real one, then a copy with ``values`` changed."""
        self.duplicates[(symbol, interval, open_ms)] = values

    def clear_failures(self) -> None:
        self.failures.clear()

    def count(self, path: str | None = None, **query: str) -> int:
        """Requests seen for ``path`` (None = all) whose query has the given values."""
        return sum(
            1
            for r in self.requests
            if (path is None or r.path == path)
            and all(r.query.get(k) == v for k, v in query.items())
        )

    def klines_frame(self, symbol: str, interval: str) -> pd.DataFrame:
        """What the server holds for symbol × interval at its current ``now_ms`` (incl. forming)."""
        assert self.now_ms is not None
        h = hourly(str(self.csv_path), symbol)
        h = h.loc[h.index <= self.now_ms]
        df = daily_from_hourly(h) if interval == "1d" else h
        mine = {k[2]: v for k, v in self.patches.items() if k[:2] == (symbol, interval)}
        if mine:
            df = df.copy()
            for open_ms, values in mine.items():
                for col, value in values.items():
                    if open_ms in df.index:
                        df.loc[open_ms, col] = value
        return df

    # ---- HTTP -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        seen = Seen(request.path, query)
        self.requests.append(seen)
        for f in self.failures:
            if f.remaining != 0 and f.matches(request.path, query.get("symbol")):
                if f.remaining is not None:
                    f.remaining -= 1
                seen.status, seen.faulted = f.status, True
                if f.delay:
                    await asyncio.sleep(f.delay)
                ctype = "application/json" if f.body.startswith("{") else "text/html"
                return web.Response(status=f.status, text=f.body, headers=f.headers,
                                    content_type=ctype)
        if request.method != "GET":
            seen.status = 405
            return web.Response(status=405)
        routes: dict[str, Callable[[], object]] = {
            "/api/v3/ping": lambda: {},
            "/api/v3/time": lambda: {"serverTime": self.now_ms},
            "/api/v3/exchangeInfo": self._exchange_info,
            "/api/v3/klines": lambda: self._klines(query),
        }
        if request.path not in routes:
            seen.status = 404
            return web.Response(status=404, text="<html><body>Not Found</body></html>",
                                content_type="text/html")
        try:
            payload = routes[request.path]()
        except _ApiError as err:
            seen.status = 400
            return web.json_response({"code": err.code, "msg": err.msg}, status=400)
        return web.json_response(payload)

    def _exchange_info(self) -> dict[str, Any]:
        return {
            "timezone": "UTC",
            "serverTime": self.now_ms,
            "rateLimits": [
                {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1,
                 "limit": 6000},
                {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
                {"rateLimitType": "RAW_REQUESTS", "interval": "MINUTE", "intervalNum": 5,
                 "limit": 61000},
            ],
            "exchangeFilters": [],
            "symbols": [_symbol_info(s) for s in self.symbols],
        }

    def _klines(self, q: dict[str, str]) -> list[list[Any]]:
        symbol = q.get("symbol")
        if not symbol:
            raise _ApiError(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                   "or malformed.")
        if symbol not in self.symbols:
            raise _ApiError(-1121, "Invalid symbol.")
        interval = q.get("interval", "")
        if interval not in INTERVAL_MS:
            raise _ApiError(-1120, "Invalid interval.")
        try:
            limit = int(q.get("limit", "500"))
            start = int(q["startTime"]) if "startTime" in q else None
            end = int(q["endTime"]) if "endTime" in q else None
        except ValueError:
            raise _ApiError(-1100, "Illegal characters found in a parameter.") from None
        if not 1 <= limit <= 1000:
            raise _ApiError(-1130, "Data sent for parameter 'limit' is not valid.")
        df = self.klines_frame(symbol, interval)
        opens = df.index.to_numpy()
        sel = np.ones(len(df), dtype=bool)
        if start is not None:
            sel &= opens >= start
        if end is not None:
            sel &= opens <= end
        rows = df.loc[sel]
        # Binance: with a startTime the first `limit` klines, otherwise the latest `limit`.
        rows = rows.iloc[:limit] if start is not None else rows.iloc[-limit:]
        step = INTERVAL_MS[interval]
        zero = "0.00000000"
        out = []
        for t, o, h, lo, c, v, qv, n in rows.itertuples(name=None):
            values = [{"open": o, "high": h, "low": lo, "close": c, "volume": v}]
            if (symbol, interval, int(t)) in self.duplicates:
                values.append(values[0] | self.duplicates[(symbol, interval, int(t))])
            out += [[int(t), f"{x['open']:.8f}", f"{x['high']:.8f}", f"{x['low']:.8f}",
                     f"{x['close']:.8f}", f"{x['volume']:.8f}", int(t) + step - 1, f"{qv:.8f}",
                     int(n), zero, zero, "0"] for x in values]
        if self.mangled > 0 and out:
            self.mangled -= 1
            self.requests[-1].faulted = True
            out = [row for row in reversed(out) for _ in range(2)]
        return out


class _ApiError(Exception):
    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg


def _symbol_info(symbol: str) -> dict[str, Any]:
    base, quote = symbol[:-4], symbol[-4:]
    tick = f"{10.0 ** -SCALED[symbol][1]:.8f}"
    return {
        "symbol": symbol,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": True,
        "filters": [
            {"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "1000000.00000000",
             "tickSize": tick},
            {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000",
             "stepSize": "0.00001000"},
            {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": True,
             "maxNotional": "9000000.00000000", "applyMaxToMarket": False, "avgPriceMins": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT", "MARGIN"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }
