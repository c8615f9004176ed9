"""Telegram's failures, scripted on the loopback server: 429, 500, 400, 403, chat migration.

The bot must survive each, do what the error kind calls for, and keep answering.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from botapi_server import ADMIN, GROUP, USER, BotHarness, demo_config

from bot.notify import TelegramNotifier
from storage.push_chats import PushChats


@pytest.fixture(scope="module")
def bot() -> Iterator[BotHarness]:
    h = BotHarness(demo_config())
    yield h
    h.close()


def _calls(bot: BotHarness, since: int, method: str = "sendMessage") -> list[tuple[int, object]]:
    return [(c.status, c.chat_id) for c in bot.server.calls[since:] if c.method == method]


def test_429_waits_retry_after_then_delivers(bot: BotHarness) -> None:
    start = len(bot.server.calls)
    bot.server.script("sendMessage", 429, chat_id=USER)
    t0 = time.monotonic()
    replies = bot.ask("/help", timeout=20)
    assert len(replies) == 1
    calls = [c for c in bot.server.calls[start:] if c.method == "sendMessage"]
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].t - calls[0].t >= 0.95  # Telegram said "retry after 1"
    assert time.monotonic() - t0 < 10
    assert bot.errors == 0


def test_500_is_retried_with_backoff(bot: BotHarness) -> None:
    start = len(bot.server.calls)
    bot.server.script("sendMessage", 500, 500, chat_id=USER)
    assert len(bot.ask("/corr", timeout=20)) == 1
    assert [s for s, _ in _calls(bot, start)] == [500, 500, 200]
    assert bot.errors == 0


def test_persistent_500_reaches_error_handler_which_tells_user_and_admins(
    bot: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    before = bot.errors
    bot.server.script("sendMessage", 500, 500, 500, 500, chat_id=USER)
    replies = bot.ask("/rank", timeout=30, quiet=0.5)
    assert [r.plain for r in replies] == ["Sorry — that failed on our side; the admins have been told."]
    assert bot.errors == before + 1
    admin = bot.server.sent("sendMessage", chat_id=ADMIN)
    assert admin and admin[-1].plain.startswith("⚠ corrbot error: NetworkError")
    assert "error while handling an update" in caplog.text


def test_400_is_logged_with_payload_and_resent_as_plain_text(
    bot: BotHarness, caplog: pytest.LogCaptureFixture
) -> None:
    start, errors = len(bot.server.calls), bot.errors
    bot.server.script("sendMessage", 400, chat_id=USER)
    replies = bot.ask("/rank eth", timeout=20)
    assert len(replies) == 1 and "parse_mode" not in replies[0].params
    assert "<pre>" not in replies[0].text and "ETH ranked" in replies[0].text
    calls = [c for c in bot.server.calls[start:] if c.method == "sendMessage"]
    assert [c.status for c in calls] == [400, 200]  # not retried as is
    assert "Telegram rejected our message" in caplog.text and "payload" in caplog.text
    assert bot.errors == errors


def test_403_on_reply_is_survived(bot: BotHarness, caplog: pytest.LogCaptureFixture) -> None:
    errors = bot.errors
    bot.server.script("sendMessage", 403, chat_id=GROUP)
    assert bot.ask("/help", chat_id=GROUP, chat_type="group", timeout=2) == []
    assert "cannot answer in chat" in caplog.text
    assert len(bot.ask("/help", chat_id=GROUP, chat_type="group")) == 1
    assert bot.errors == errors


def test_reply_follows_chat_migration(bot: BotHarness) -> None:
    new_id = -1001713953955
    bot.server.script("sendMessage", ("migrate", new_id), chat_id=GROUP)
    start = len(bot.server.calls)
    bot.ask("/help", chat_id=GROUP, chat_type="group", timeout=2)
    assert _calls(bot, start)[-1] == (200, new_id)


def test_polling_survives_getupdates_errors(bot: BotHarness) -> None:
    bot.server.script("getUpdates", 500, 429)
    assert len(bot.ask("/help", timeout=30)) == 1


def test_pushes_disable_kicked_chats_and_follow_migrations(bot: BotHarness, tmp_path: Path) -> None:
    chats = PushChats(tmp_path / "push.db")
    kicked, migrating, channel, new_id = -4001, -4002, "@corrbot_alerts", -1004002
    notifier = TelegramNotifier(bot.app.bot, chats, [kicked, migrating, channel], thread_id=7,
                                backoff=0.01)
    bot.server.script("sendMessage", 403, chat_id=kicked)
    bot.server.script("sendMessage", ("migrate", new_id), chat_id=migrating)
    start = len(bot.server.calls)
    assert bot.run(notifier.push("<b>BTC/PSCT</b> crossed 0.5")) == 2
    ok = [c for c in bot.server.calls[start:] if c.method == "sendMessage" and c.status == 200]
    assert sorted(str(c.chat_id) for c in ok) == sorted([str(new_id), channel])
    assert all(c.params.get("message_thread_id") == 7 for c in ok)
    # persisted: a new notifier over the same table skips the kicked chat, uses the new id
    again = TelegramNotifier(bot.app.bot, PushChats(tmp_path / "push.db"),
                             [kicked, migrating, channel])
    start = len(bot.server.calls)
    assert bot.run(again.push("second")) == 2
    targets = {str(c.chat_id) for c in bot.server.calls[start:] if c.method == "sendMessage"}
    assert targets == {str(new_id), channel}
    rows = sqlite3.connect(tmp_path / "push.db").execute(
        "SELECT configured, chat_id, enabled FROM push_chats ORDER BY configured").fetchall()
    assert (str(kicked), str(kicked), 0) in rows and (str(migrating), str(new_id), 1) in rows
    chats.close()
