"""A loopback HTTP server that speaks Yahoo Finance's chart protocol, for wire-level tests.

It answers what the real yfinance client asks for when pointed at ``base_url``:

- the cookie/crumb dance: ``/`` (fc.yahoo.com: sets an ``A3`` cookie), ``/v1/test/getcrumb``,
  and the CSRF consent flow (``/consent``, ``/v2/collectConsent``, ``/copyConsent``) that
  yfinance falls back to after any HTTP error;
- ``GET /v8/finance/chart/{symbol}`` with ``period1/period2`` or ``range``, ``interval``,
  ``includePrePost`` and ``events``.

Chart bodies are (a) the recorded fixtures in ``api_fixtures/yahoo_chart`` served verbatim
when symbol, interval and period1/period2 match the recorded request, else (b) generated in
the same JSON shape from the real CSVs of ``data_dir`` (tests/data): daily OHLCV
(`DAILY_CSVS`, already auto-adjusted, so ``adjclose`` equals ``close``) and hourly bars
(`HOURLY_CSVS`). Bars are keyed by their start time (daily:
the 09:30 ET session open, as Yahoo does) and served when ``period1 <= start < period2``.

Scripting: `fail_next` (429/500 for the next N chart requests; 200: an empty frame, a chart
with no bars), `rescale` (simulate Yahoo
back-adjusting history after a dividend), ``now`` (bars starting after it are not served,
the in-progress bar is — like Yahoo), ``log`` (every request). Unknown symbols get Yahoo's
real 404 body.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import exchange_calendars as xcals
import pandas as pd

NOT_FOUND = {
    "chart": {
        "result": None,
        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
    }
}
# The files of tests/data served (2023-01-03 .. 2025-07-11 daily, 2024-01-02 .. 2026-01-02
# hourly); any other symbol is unknown (404), like a delisted ticker.
DAILY_CSVS = {
    "IWM": "IWM_daily_ohlcv_2025-07-11.csv",
    "QQQ": "QQQ_daily_ohlcv_2025-07-11.csv",
    "^RUT": "RUT_index_daily_ohlcv_2025-07-11.csv",
}
HOURLY_CSVS = {"IWM": "intraday/IWM_1h_2024-2026.csv"}
_NY = "America/New_York"


@dataclass
class Logged:
    method: str
    path: str
    params: dict[str, str]
    status: int

    @property
    def symbol(self) -> str | None:
        parts = self.path.split("/")
        return parts[4] if self.path.startswith("/v8/finance/chart/") else None

    @property
    def is_history(self) -> bool:
        """A price request (period1/period2), not yfinance's timezone probe (range=1d)."""
        return self.symbol is not None and "period1" in self.params


@dataclass
class _Fault:
    status: int
    remaining: int
    symbols: set[str] | None


@dataclass
class YahooServer:
    data_dir: Path
    now: int | None = None  # epoch seconds; None = serve everything
    log: list[Logged] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self.faults_served = 0
        self._scale: dict[tuple[str, str], tuple[float, int | None]] = {}
        self._patches: dict[tuple[str, str], dict[int, dict[str, float | None]]] = {}
        self._series: dict[tuple[str, str], pd.DataFrame] = {}
        self._fixtures = self._load_fixtures()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # ---- lifecycle ------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def __enter__(self) -> YahooServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # ---- scripting ------------------------------------------------------------------

    def fail_next(self, status: int, n: int, symbols: set[str] | None = None) -> None:
        """Answer the next ``n`` chart requests (for ``symbols``, default all) with ``status``."""
        with self._lock:
            self._faults.append(_Fault(status, n, symbols))

    def rescale(
        self, symbol: str, factor: float, before: int | None = None, interval: str = "1d"
    ) -> None:
        """Multiply adjclose of bars starting before ``before`` (default: all) by ``factor``."""
        self._scale[(symbol, interval)] = (factor, before)

    def patch(self, symbol: str, ts: int, interval: str = "1d", **values: float | None) -> None:
        """Serve ``values`` (e.g. ``close=None`` → JSON null) for the bar starting at ``ts``."""
        self._patches.setdefault((symbol, interval), {})[ts] = values

    def clear_patches(self) -> None:
        self._patches.clear()

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def chart_log(self, symbol: str | None = None, history_only: bool = True) -> list[Logged]:
        return [
            r for r in self.log
            if r.symbol is not None and (symbol is None or r.symbol == symbol)
            and (r.is_history or not history_only)
        ]

    # ---- data -----------------------------------------------------------------------

    def _load_fixtures(self) -> list[tuple[dict[str, str], str, dict[str, Any]]]:
        out = []
        for p in sorted((self.data_dir / "api_fixtures" / "yahoo_chart").glob("*.json")):
            rec = json.loads(p.read_text())
            url = urlsplit(rec["request"]["url"])
            params = {k: v[0] for k, v in parse_qs(url.query).items()}
            out.append((params, unquote(url.path.rsplit("/", 1)[1]), rec["response"]["bodyJson"]))
        return out

    def _fixture_for(self, symbol: str, params: dict[str, str]) -> dict[str, Any] | None:
        for fp, sym, body in self._fixtures:
            if sym == symbol and all(
                params.get(k) == fp.get(k) for k in ("interval", "period1", "period2")
            ):
                return body
        return None

    def series(self, symbol: str, interval: str) -> pd.DataFrame | None:
        """Bars indexed by start epoch: open, high, low, close, volume, adjclose."""
        key = (symbol, interval)
        if key not in self._series:
            df = self._read_series(symbol, interval)
            if df is None:
                return None
            self._series[key] = df
        df = self._series[key].copy()
        if key in self._scale:
            factor, before = self._scale[key]
            mask = df.index < before if before is not None else slice(None)
            df.loc[mask, "adjclose"] *= factor
        for ts, values in self._patches.get(key, {}).items():
            for col, v in values.items():
                df.loc[ts, col] = float("nan") if v is None else v
        return df

    def _read_series(self, symbol: str, interval: str) -> pd.DataFrame | None:
        if interval == "1d" and symbol in DAILY_CSVS:
            raw = pd.read_csv(self.data_dir / DAILY_CSVS[symbol])
            opens = pd.to_datetime(raw["Date"]) + pd.Timedelta(hours=9, minutes=30)
            idx = opens.dt.tz_localize(_NY).dt.tz_convert("UTC")
        elif interval in ("1h", "60m") and symbol in HOURLY_CSVS:
            raw = pd.read_csv(self.data_dir / HOURLY_CSVS[symbol])
            idx = pd.to_datetime(raw["timestamp"], utc=True)
        else:
            return None
        raw.columns = [c.lower() for c in raw.columns]
        df = raw[["open", "high", "low", "close", "volume"]].astype("float64")
        df.index = pd.Index(idx.dt.as_unit("s").astype("int64").to_numpy(), name="ts")
        if interval == "1d":
            df["adjclose"] = df["close"]
        return df

    # ---- responses ------------------------------------------------------------------

    def _meta(self, symbol: str, interval: str, ts: list[int]) -> dict[str, Any]:
        template = next(b for _, s, b in self._fixtures if s == "QQQ")
        meta: dict[str, Any] = json.loads(json.dumps(template["chart"]["result"][0]["meta"]))
        meta.update(
            symbol=symbol,
            instrumentType="INDEX" if symbol.startswith("^") else "ETF",
            dataGranularity=interval,
            longName=symbol,
            shortName=symbol,
        )
        if ts:
            meta["regularMarketTime"] = ts[-1]
        if interval.endswith(("m", "h")) and ts:
            meta["tradingPeriods"] = _trading_periods(ts[0], ts[-1])
        return meta

    def chart(self, symbol: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
        fixture = self._fixture_for(symbol, params)
        if fixture is not None:
            return 200, fixture
        interval = params.get("interval", "1d")
        df = self.series(symbol, "1h" if interval == "60m" else interval)
        if df is None:
            known = self.series(symbol, "1d") is not None or symbol in HOURLY_CSVS or any(
                s == symbol for _, s, _b in self._fixtures
            )
            if not known:
                return 404, NOT_FOUND
            df = pd.DataFrame(columns=["open", "high", "low", "close", "volume"], dtype="float64")
        if self.now is not None:
            df = df[df.index <= self.now]
        if "range" in params:  # yfinance's timezone probe: the latest bar only
            df = df.iloc[-1:]
        else:
            p1, p2 = int(params.get("period1", 0)), int(params.get("period2", 2**62))
            df = df[(df.index >= p1) & (df.index < p2)]
        ts = [int(t) for t in df.index]
        result: dict[str, Any] = {"meta": self._meta(symbol, interval, ts)}
        if ts:
            result["timestamp"] = ts
            quote = {c: _values(df[c]) for c in ("open", "high", "low", "close", "volume")}
            result["indicators"] = {"quote": [quote]}
            if "adjclose" in df.columns:
                result["indicators"]["adjclose"] = [{"adjclose": _values(df["adjclose"])}]
        else:
            result["indicators"] = {"quote": [{}]}
        return 200, {"chart": {"result": [result], "error": None}}

    def _take_fault(self, symbol: str) -> int | None:
        with self._lock:
            for f in self._faults:
                if f.remaining > 0 and (f.symbols is None or symbol in f.symbols):
                    f.remaining -= 1
                    self.faults_served += 1
                    return f.status
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _send(
                self, status: int, body: bytes, ctype: str, headers: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                # Logged before the body goes out: a client that has its answer must find its
                # request in the log (logging after the answer raced the tests' assertions).
                if self._request is not None:
                    server.log.append(Logged(*self._request, status))
                    self._request = None
                self.wfile.write(body)

            def _json(self, status: int, obj: object) -> None:
                self._send(status, json.dumps(obj).encode(), "application/json;charset=utf-8")

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                path = urlsplit(self.path).path
                self._request = ("POST", path, {})
                self._send(200, b"<html>ok</html>", "text/html")

            def do_GET(self) -> None:
                url = urlsplit(self.path)
                path = unquote(url.path)
                params = {k: v[0] for k, v in parse_qs(url.query).items()}
                self._request: tuple[str, str, dict[str, str]] | None = ("GET", path, params)
                status = self._route(path, params)
                if self._request is not None:  # a route that sent no answer (a dropped connection)
                    server.log.append(Logged(*self._request, status))
                    self._request = None

            def _route(self, path: str, params: dict[str, str]) -> int:
                if path.startswith("/v8/finance/chart/"):
                    symbol = path.rsplit("/", 1)[1]
                    fault = server._take_fault(symbol)
                    if fault == 200:  # an empty frame: the chart shape with no bars in it
                        meta = server._meta(symbol, params.get("interval", "1d"), [])
                        empty = {"meta": meta, "indicators": {"quote": [{}]}}
                        self._json(200, {"chart": {"result": [empty], "error": None}})
                        return 200
                    if fault == 429:
                        self._send(429, b"Edge: Too Many Requests", "text/plain")
                        return 429
                    if fault is not None:
                        err = {"code": "internal-error", "description": "Internal Server Error"}
                        self._json(fault, {"finance": {"result": None, "error": err}})
                        return fault
                    status, body = server.chart(symbol, params)
                    self._json(status, body)
                    return status
                if path == "/v1/test/getcrumb":
                    self._send(200, b"loopbackCrumb", "text/plain;charset=utf-8")
                    return 200
                if path == "/":  # fc.yahoo.com: a 404 page that sets the A3 cookie
                    cookie = "A3=d=loopback; Max-Age=31557600; Path=/; HttpOnly"
                    self._send(404, b"<html>404</html>", "text/html", {"Set-Cookie": cookie})
                    return 404
                if path == "/consent":
                    form = (
                        '<html><form method="post" action="/v2/collectConsent">'
                        '<input name="csrfToken" type="hidden" value="loopbackToken"/>'
                        '<input name="sessionId" type="hidden" value="loopbackSession"/>'
                        "</form></html>"
                    )
                    self._send(200, form.encode(), "text/html")
                    return 200
                if path == "/copyConsent":
                    self._send(200, b"<html>ok</html>", "text/html")
                    return 200
                err = {"code": "Not Found", "description": "HTTP 404 Not Found"}
                self._json(404, {"finance": {"result": None, "error": err}})
                return 404

        return Handler


def _values(s: pd.Series) -> list[float | int | None]:
    return [None if pd.isna(v) else (int(v) if s.name == "volume" else float(v)) for v in s]


_CAL: Any = None


def _trading_periods(first: int, last: int) -> list[list[dict[str, Any]]]:
    """Yahoo's meta.tradingPeriods (regular hours only): one [period] per session."""
    global _CAL
    if _CAL is None:
        _CAL = xcals.get_calendar("XNYS", start="2015-01-01")
    lo = pd.Timestamp(first, unit="s", tz="UTC").tz_convert(_NY).date()
    hi = pd.Timestamp(last, unit="s", tz="UTC").tz_convert(_NY).date()
    out = []
    for session in _CAL.sessions_in_range(pd.Timestamp(lo), pd.Timestamp(hi)):
        op, cl = _CAL.session_open(session), _CAL.session_close(session)
        local = op.tz_convert(_NY)
        off = int(local.utcoffset().total_seconds())
        name = local.tzname()
        start, end = int(op.timestamp()), int(cl.timestamp())
        out.append([{"timezone": name, "start": start, "end": end, "gmtoffset": off}])
    return out
