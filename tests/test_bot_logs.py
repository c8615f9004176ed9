"""The bot token never reaches a log line, an error message or a reply.

A whole bot session runs with caplog at DEBUG, including failures and the error handler, on
both HTTP transports: the bot's own (`bot.transport`, aiohttp) and PTB's httpx one (used with
a proxy), with httpx's request logging at INFO (which prints every request URL,
``/bot<token>/<method>``).
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from botapi_server import ADMIN, TOKEN, USER, BotHarness, demo_config
from telegram.request import HTTPXRequest

from bot import redact
from bot.transport import AiohttpRequest

TOKEN_SHAPE = re.compile(r"bot\d+:[A-Za-z0-9_-]{30,}")


@pytest.mark.parametrize("transport", ["aiohttp", "httpx"])
def test_token_never_logged_or_sent(caplog: pytest.LogCaptureFixture, transport: str) -> None:
    caplog.set_level(logging.DEBUG)
    # PTB's own DEBUG lines carry URLs and update texts; a test run earlier in this process may
    # have left the "telegram" logger at WARNING (`service.logsetup` does that), so set it here.
    caplog.set_level(logging.DEBUG, logger="telegram")
    kw: dict[str, Any] = {}
    if transport == "httpx":
        kw["requests"] = HTTPXRequest(connection_pool_size=8), HTTPXRequest(connection_pool_size=1)
    bot = BotHarness(demo_config(), httpx_info=True, **kw)
    try:
        assert logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert isinstance(bot.app.bot.request, HTTPXRequest if transport == "httpx" else AiohttpRequest)
        assert len(bot.ask("/corr")) == 1
        assert len(bot.ask("/chart btc iwm 90d", quiet=0.5, timeout=30)) == 1
        bot.server.script("sendMessage", 500, 500, 500, 500, chat_id=USER)
        bot.ask("/status", quiet=0.5, timeout=30)  # -> error handler -> admins told
        bot.server.script("sendMessage", 400, chat_id=USER)
        bot.ask("/help")
        bot.server.script("getUpdates", 500)
        bot.ask("/rank")
        bot.ask(f"/corr {TOKEN}")  # a user pasting the token gets it neither echoed nor logged
        calls = list(bot.server.calls)
    finally:
        bot.close()
    assert bot.errors >= 1
    assert redact.REDACTED in caplog.text
    if transport == "httpx":
        assert "HTTP Request" in caplog.text  # httpx did log
    everything = caplog.text + "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records
    )
    assert TOKEN not in everything and TOKEN.split(":")[1] not in everything
    assert not TOKEN_SHAPE.search(everything)
    for c in calls:
        assert TOKEN.split(":")[1] not in str(c.params), c.method
    assert any(c.chat_id == ADMIN for c in calls if c.method == "sendMessage")


def test_redact_shapes() -> None:
    redact.install("123:secret-that-is-short")
    assert "secret-that-is-short" not in redact.redact("x 123:secret-that-is-short y")
    fake = "987654321:AAH-abcdefghijklmnopqrstuvwxyz012345"  # made up: a token's shape, no bot's token
    s = f"GET https://api.telegram.org/bot{fake}/getMe"
    assert redact.redact(s) == f"GET https://api.telegram.org/{redact.REDACTED}/getMe"


def test_filter_redacts_args_and_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    redact.install()
    fake = "bot5550001:" + "Z" * 35
    log = logging.getLogger("corrbot.test.redact")
    with caplog.at_level(logging.INFO):
        log.info("url %s", f"http://x/{fake}/sendMessage")
        try:
            raise RuntimeError(f"failed at {fake}")
        except RuntimeError:
            log.exception("boom")
    assert fake not in caplog.text and "Z" * 35 not in caplog.text
    assert caplog.text.count(redact.REDACTED) == 2
