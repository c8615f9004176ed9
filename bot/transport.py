"""The Bot API's HTTP client: python-telegram-bot's `BaseRequest` on aiohttp.

PTB's default transport is httpx. At 20 chats asking at once, a reply's CPU on the bot's one
event loop was ~6 ms, and httpx/httpcore/anyio took 1–1.6 ms more of it per request than
aiohttp does (httpcore asks anyio for the socket's attributes on every request and scans the
whole pool for each one). aiohttp is already installed for ccxt, so the bot uses it when no
proxy is configured; a proxy (SOCKS5 included) keeps PTB's httpx transport, which speaks it —
``telegram.proxy``, or one in the environment (HTTPS_PROXY…), which httpx honours and which
this transport must not silently bypass (`proxy_in_environment`).

Semantics follow PTB's `HTTPXRequest`: the same timeouts (connect 5 s, read 5 s, pool 1 s;
PTB raises the read timeout of a long poll itself), the same errors (`TimedOut` for a
timeout, `NetworkError` naming the aiohttp exception otherwise), form-encoded parameters and
multipart when a file is sent. aiohttp has no write timeout: a stalled upload ends at the
read timeout of the response instead. Every request is cancellable like any coroutine.
"""

from __future__ import annotations

from urllib.parse import urlencode
from urllib.request import getproxies

import aiohttp
from telegram.error import NetworkError, TimedOut
from telegram.request import BaseRequest, RequestData

# PTB's HTTPXRequest defaults, so swapping the transport changes no waiting time.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
POOL_TIMEOUT = 1.0
FORM = "application/x-www-form-urlencoded"


def proxy_in_environment() -> bool:
    """A proxy set in the environment (HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, any case)."""
    return any(scheme != "no" for scheme in getproxies())


def _seconds(value: object, default: float | None) -> float | None:
    """A timeout PTB passed: DEFAULT_NONE means ours; None means wait for ever."""
    return default if isinstance(value, type(BaseRequest.DEFAULT_NONE)) else value  # type: ignore[return-value]


class AiohttpRequest(BaseRequest):
    """One aiohttp session with a pool of ``pool_size`` keep-alive connections."""

    def __init__(self, pool_size: int, *, read_timeout: float | None = READ_TIMEOUT) -> None:
        self._pool_size = pool_size
        self._read_timeout = read_timeout
        self._session: aiohttp.ClientSession | None = None

    @property
    def read_timeout(self) -> float | None:
        return self._read_timeout

    async def initialize(self) -> None:
        if self._session is None or self._session.closed:
            # The system resolver (getaddrinfo: /etc/hosts, nsswitch), as httpx uses, even
            # where aiodns happens to be installed.
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=self._pool_size, resolver=aiohttp.ThreadedResolver()
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"User-Agent": self.USER_AGENT}, raise_for_status=False
            )

    async def shutdown(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None

    async def do_request(
        self,
        url: str,
        method: str,
        request_data: RequestData | None = None,
        read_timeout: object = BaseRequest.DEFAULT_NONE,
        write_timeout: object = BaseRequest.DEFAULT_NONE,
        connect_timeout: object = BaseRequest.DEFAULT_NONE,
        pool_timeout: object = BaseRequest.DEFAULT_NONE,
    ) -> tuple[int, bytes]:
        if self._session is None or self._session.closed:
            raise RuntimeError("this AiohttpRequest is not initialized")
        connect = _seconds(connect_timeout, CONNECT_TIMEOUT)
        pool = _seconds(pool_timeout, POOL_TIMEOUT)
        # aiohttp's ``connect`` covers waiting for a pooled connection and opening one.
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None or pool is None else connect + pool,
            sock_connect=connect,
            sock_read=_seconds(read_timeout, self._read_timeout),
        )
        try:
            async with self._session.request(method, url, data=_body(request_data), timeout=timeout) as res:
                return res.status, await res.read()
        except TimeoutError as exc:  # aiohttp's timeouts (ServerTimeoutError…) are TimeoutErrors
            raise TimedOut from exc
        except aiohttp.ClientError as exc:
            # The class name says what happened when the message is empty (a dropped connection).
            raise NetworkError(f"aiohttp.{type(exc).__name__}: {exc}") from exc


def _body(request_data: RequestData | None) -> aiohttp.FormData | aiohttp.BytesPayload | None:
    """Form-encoded parameters, or multipart with the files when there are any (as PTB's
    httpx transport sends them)."""
    if request_data is None:
        return None
    params = request_data.json_parameters
    if not request_data.contains_files:
        # Encoded here: given a dict, aiohttp builds a multipart writer (and a uuid4
        # boundary) for every request before finding it has no file to send.
        return aiohttp.BytesPayload(urlencode(params).encode(), content_type=FORM)
    form = aiohttp.FormData()
    for name, value in params.items():
        form.add_field(name, value)
    for name, part in request_data.multipart_data.items():
        filename, content, mimetype = part
        form.add_field(name, content, filename=filename, content_type=mimetype)
    return form
