"""The Bot API transport (`bot.transport.AiohttpRequest`) at the wire, and the proxy path.

Loopback servers only: the Bot API fake, a socket that accepts and never answers, a closed
port, and a plain HTTP forward proxy in front of the Bot API fake (httpx, PTB's own
transport, is used whenever ``telegram.proxy`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from botapi_server import TOKEN, USER, BotApiServer, BotHarness, demo_config
from telegram import Bot
from telegram.error import NetworkError, TimedOut
from telegram.request import HTTPXRequest

from bot.transport import AiohttpRequest


@contextlib.asynccontextmanager
async def _hung(read_timeout: float | None) -> AsyncIterator[tuple[AiohttpRequest, int, list[asyncio.StreamWriter]]]:
    """An initialised transport and a server that accepts connections, reads and never
    answers (a Telegram that hangs): (request, the server's port, its open connections)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    request = AiohttpRequest(2, read_timeout=read_timeout)
    await request.initialize()
    try:
        yield request, server.sockets[0].getsockname()[1], held
    finally:
        await request.shutdown()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_messages_and_files_reach_the_bot_api_as_ptb_sends_them() -> None:
    server = await BotApiServer(TOKEN).start()
    request = AiohttpRequest(4)
    bot = Bot(TOKEN, base_url=server.base_url, request=request, get_updates_request=AiohttpRequest(1))
    try:
        await bot.initialize()
        msg = await bot.send_message(USER, "<b>ρ +0.63</b> · a&amp;b", parse_mode="HTML")
        png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 300  # binary, every byte value
        photo = await bot.send_photo(USER, png, caption="<i>chart</i>", parse_mode="HTML")
    finally:
        await bot.shutdown()
        await server.stop()
    text_call, photo_call = [c for c in server.calls if c.method in ("sendMessage", "sendPhoto")]
    assert text_call.params["text"] == "<b>ρ +0.63</b> · a&amp;b" and text_call.params["chat_id"] == USER
    assert msg.message_id > 0 and photo.message_id > msg.message_id
    assert photo_call.files["photo"] == png and photo_call.params["caption"] == "<i>chart</i>"
    assert request._session is None  # shut down with the bot


async def test_a_hung_server_times_out_and_a_closed_port_is_a_network_error_without_the_token() -> None:
    async with _hung(read_timeout=0.3) as (request, port, _):
        t0 = time.monotonic()
        with pytest.raises(TimedOut):
            await request.post(f"http://127.0.0.1:{port}/bot{TOKEN}/getMe")
        assert time.monotonic() - t0 < 3  # our 0.3 s, not the 5 s default, ended it
        with pytest.raises(NetworkError) as err:
            await request.post(f"http://127.0.0.1:{_closed_port()}/bot{TOKEN}/getMe")
    assert "aiohttp.ClientConnectorError" in str(err.value)
    assert TOKEN not in str(err.value) and TOKEN.split(":")[1] not in str(err.value)


async def test_a_request_waiting_on_a_hung_server_is_cancelled_at_once() -> None:
    async with _hung(read_timeout=None) as (request, port, held):  # a long poll waits for ever
        task = asyncio.create_task(request.post(f"http://127.0.0.1:{port}/bot{TOKEN}/getUpdates"))
        while not held:
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - t0 < 1  # the service must stop within seconds in any state


async def test_requests_before_initialize_or_after_shutdown_are_refused() -> None:
    request = AiohttpRequest(1)
    url = f"http://127.0.0.1:{_closed_port()}/bot{TOKEN}/getMe"
    with pytest.raises(NetworkError, match="not initialized"):
        await request.post(url)
    await request.initialize()
    await request.shutdown()
    with pytest.raises(NetworkError, match="not initialized"):
        await request.post(url)


# ---- the proxy path: httpx through a real forward proxy -------------------------------------


class ForwardProxy:
    """A plain HTTP forward proxy: requests in absolute form, forwarded with aiohttp."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def start(self) -> ForwardProxy:
        self.session = aiohttp.ClientSession()
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                method, target, _ = line.decode().split(" ", 2)
                headers: dict[str, str] = {}
                while (h := await reader.readline()) not in (b"\r\n", b""):
                    k, v = h.decode().split(":", 1)
                    headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.seen.append(method + " " + target.rsplit("/", 1)[-1])
                fwd = {k: v for k, v in headers.items() if k in ("content-type", "user-agent")}
                async with self.session.request(method, target, data=body, headers=fwd) as res:
                    payload = await res.read()
                    head = (f"HTTP/1.1 {res.status} {res.reason}\r\nContent-Type: {res.content_type}\r\n"
                            f"Content-Length: {len(payload)}\r\n\r\n")
                writer.write(head.encode() + payload)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.session.close()


@pytest.mark.parametrize("where", ["config", "environment"])
def test_with_a_proxy_the_bot_talks_through_it_with_httpx(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``telegram.proxy``, or HTTP_PROXY in the environment (which httpx honours: the aiohttp
    transport must not bypass it)."""
    loop = asyncio.new_event_loop()
    proxy: Any = loop.run_until_complete(ForwardProxy().start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    if where == "environment":
        for name in ("NO_PROXY", "no_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
    bot = BotHarness(demo_config(proxy=proxy.url) if where == "config" else demo_config())
    try:
        assert isinstance(bot.app.bot.request, HTTPXRequest)
        replies = bot.ask("/corr")
    finally:
        bot.close()
        asyncio.run_coroutine_threadsafe(proxy.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    assert len(replies) == 1 and "BTC / SMALLCAP_TECH" in replies[0].params["text"]
    assert "POST sendMessage" in proxy.seen and "POST getUpdates" in proxy.seen


def test_without_a_proxy_the_bot_uses_the_aiohttp_transport() -> None:
    bot = BotHarness(demo_config())
    try:
        assert isinstance(bot.app.bot.request, AiohttpRequest)
        assert len(bot.ask("/corr")) == 1
    finally:
        bot.close()


def test_a_socks5_proxy_as_in_the_example_config_builds_an_httpx_bot() -> None:
    """config.example.toml suggests ``socks5://…``: PTB needs its ``socks`` extra for that
    (it refused to build the bot before the extra was a dependency)."""
    from bot.app import build_application
    from service.api import ServiceApi

    cfg = demo_config(proxy="socks5://127.0.0.1:1080")
    api = ServiceApi(cfg)
    try:
        app = build_application(cfg, TOKEN, api)
        assert isinstance(app.bot.request, HTTPXRequest)
    finally:
        api.close()
