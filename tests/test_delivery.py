"""Outbox delivery through the real PTB bot to the loopback Bot API, every failure kind scripted.

The database is a real SQLite file; retries run on a fake clock (Delivery never sleeps), so
an outage of hours takes as many rounds as it takes, not hours. Every test ends by reading
what the server accepted: each queued message exactly once, in order per chat — or, where
the rules say so, failed and recorded.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlite_utils
from botapi_server import TOKEN, BotApiServer
from telegram.ext import AIORateLimiter, ExtBot
from telegram.request import HTTPXRequest

from bot.delivery import ConsoleDelivery, Delivery, DeliveryReport
from bot.format import split_message, strip_html
from storage import outbox
from storage.db import open_db
from storage.push_chats import PushChats

A, B, C = 1001, 1002, 1003  # private chats: no 20/min group limit in the way
GROUP, SUPERGROUP = -4002, -1004002
START = 1_750_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = START

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def server() -> AsyncIterator[BotApiServer]:
    s = await BotApiServer(TOKEN).start()
    yield s
    await s.stop()


@pytest.fixture
async def bot(server: BotApiServer) -> AsyncIterator[ExtBot[int]]:
    # read timeout well under the scripted stalls (1 s), so a stall is a TimedOut
    request = HTTPXRequest(read_timeout=0.3, connection_pool_size=32)
    b: ExtBot[int] = ExtBot(TOKEN, base_url=server.base_url, request=request, rate_limiter=AIORateLimiter())
    await b.initialize()
    yield b
    await b.shutdown()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite_utils.Database]:
    d = open_db(tmp_path / "corrbot.db")  # the producer's side: the alert layer's connection
    yield d
    d.conn.close()


@pytest.fixture
def chats(tmp_path: Path) -> Iterator[PushChats]:
    c = PushChats(tmp_path / "corrbot.db")
    c.seed([A, B, C, GROUP])
    yield c
    c.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def delivery(bot: ExtBot[int], tmp_path: Path, chats: PushChats, clock: Clock) -> Iterator[Delivery]:
    d = Delivery(bot, tmp_path / "corrbot.db", chats, clock=clock, backoff_base=2, backoff_max=60)
    yield d
    d.close()


def queue(db: sqlite_utils.Database, chat: int, n: int, tag: str = "m") -> list[str]:
    """n HTML messages for ``chat``; returns what the user should read, in order."""
    texts = [f"<b>{tag}{i}</b> to {chat} &amp; co" for i in range(n)]
    for t in texts:
        outbox.enqueue(db, chat, "fire", t)
    return [strip_html(t) for t in texts]


def received(server: BotApiServer) -> dict[str, list[str]]:
    """What each chat got (accepted sendMessage calls), in arrival order."""
    out: dict[str, list[str]] = {}
    for c in server.sent("sendMessage"):
        out.setdefault(str(c.chat_id), []).append(c.plain)
    return out


async def drain(d: Delivery, db: sqlite_utils.Database, clock: Clock, rounds: int = 100) -> int:
    """Rounds until nothing is pending, jumping the fake clock to the next due row."""
    for n in range(1, rounds + 1):
        if (await d.run_once()).pending == 0:
            return n
        nxt = outbox.next_due(db)
        assert nxt is not None
        clock.t = max(clock.t, nxt)
    raise AssertionError(f"still pending after {rounds} rounds: {outbox.backlog(db)}")


async def test_each_chat_gets_its_rows_in_order_once(server: BotApiServer, db: sqlite_utils.Database,
                                                     delivery: Delivery) -> None:
    expected: dict[str, list[str]] = {str(c): [] for c in (A, B, C)}
    for i in range(4):  # interleaved across chats, as alerts arrive
        for c in (A, B, C):
            expected[str(c)] += queue(db, c, 1, tag=f"r{i}-")
    report = await delivery.run_once()
    assert report == DeliveryReport(sent=12, retried=0, failed=0, pending=0)
    assert received(server) == expected
    assert await delivery.run_once() == DeliveryReport()
    ids = sorted(c.result["message_id"] for c in server.sent())
    stored = sorted(r[0] for r in db.execute("SELECT message_id FROM outbox WHERE status = 'sent'"))
    assert stored == ids


async def test_429_waits_retry_after_then_delivers_once(server: BotApiServer, db: sqlite_utils.Database,
                                                        delivery: Delivery, clock: Clock) -> None:
    a, b = queue(db, A, 2), queue(db, B, 1)
    server.script("sendMessage", (429, 30), chat_id=A)
    assert await delivery.run_once() == DeliveryReport(sent=1, retried=1, failed=0, pending=2)
    head = outbox.due(db, clock.t + 30)[0]
    assert head.next_try == clock.t + 30 and head.attempts == 0  # Telegram's wait, not a failure
    calls = len(server.calls)
    clock.t += 29
    assert await delivery.run_once() == DeliveryReport(pending=2)
    assert len(server.calls) == calls  # still waiting: nothing was sent to A
    clock.t += 1
    assert await delivery.run_once() == DeliveryReport(sent=2, pending=0)
    assert received(server) == {str(A): a, str(B): b}


async def test_5xx_timeouts_and_drops_are_retried_with_backoff(server: BotApiServer, db: sqlite_utils.Database,
                                                               delivery: Delivery, clock: Clock) -> None:
    a, b = queue(db, A, 3), queue(db, B, 2)
    failures = [500, ("timeout", 1.0), 502, "drop", 500, 500, 500]
    server.script("sendMessage", *failures, chat_id=A)
    waits = []
    for _ in failures:
        report = await delivery.run_once()
        assert report.retried == 1 and report.failed == 0
        head = outbox.due(db, float("inf"))[0]
        waits.append(head.next_try - clock.t)
        clock.t = head.next_try
    assert waits == [2, 4, 8, 16, 32, 60, 60]  # base·2^attempts, capped at backoff_max
    assert (await delivery.run_once()).sent == 3
    assert received(server) == {str(A): a, str(B): b}
    assert [c.status for c in server.calls if c.chat_id == A][:7] == [500, 504, 502, 0, 500, 500, 500]


async def test_never_dropped_even_after_hours(server: BotApiServer, db: sqlite_utils.Database, bot: ExtBot[int],
                                              tmp_path: Path, chats: PushChats, clock: Clock) -> None:
    d = Delivery(bot, tmp_path / "corrbot.db", chats, clock=clock)  # defaults: 2 s .. 300 s
    a = queue(db, A, 2)
    server.script("sendMessage", *[500] * 40, chat_id=A)
    rounds = await drain(d, db, clock, rounds=50)
    d.close()
    assert rounds == 41 and clock.t - START > 2.5 * 3600  # 2, 4, … 256, then 300 s apart
    assert received(server) == {str(A): a}
    assert [r[0] for r in db.execute("SELECT attempts FROM outbox ORDER BY id")] == [40, 0]


async def test_400_is_logged_once_and_resent_as_plain_text(server: BotApiServer, db: sqlite_utils.Database,
                                                           delivery: Delivery,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    a = queue(db, A, 1)
    outbox.enqueue(db, A, "notice", "<b>unclosed & raw")  # a formatter bug Telegram rejects itself
    server.script("sendMessage", 400, chat_id=A)
    assert await delivery.run_once() == DeliveryReport(sent=2, pending=0)
    calls = [c for c in server.calls if c.method == "sendMessage"]
    assert [(c.status, "parse_mode" in c.params) for c in calls] == [(400, True), (200, False)] * 2
    assert received(server) == {str(A): [*a, "unclosed & raw"]}
    assert caplog.text.count("payload: ") == 2 and "'<b>unclosed & raw'" in caplog.text


async def test_400_twice_fails_the_row_and_the_next_one_goes(server: BotApiServer, db: sqlite_utils.Database,
                                                             delivery: Delivery) -> None:
    a = queue(db, A, 3)
    server.script("sendMessage", 400, 400, chat_id=A)
    assert await delivery.run_once() == DeliveryReport(sent=2, failed=1, pending=0)
    assert received(server) == {str(A): a[1:]}
    [failed] = outbox.failed_rows(db, 10)
    assert failed.text.startswith("<b>m0</b>") and failed.error and failed.error.startswith("bad request:")


async def test_403_disables_the_chat_for_good(server: BotApiServer, db: sqlite_utils.Database, bot: ExtBot[int],
                                              tmp_path: Path, delivery: Delivery, clock: Clock) -> None:
    queue(db, A, 3)
    b = queue(db, B, 2)
    server.script("sendMessage", 403, chat_id=A)
    assert await delivery.run_once() == DeliveryReport(sent=2, failed=3, pending=0)
    assert received(server) == {str(B): b}
    assert {r.error for r in outbox.failed_rows(db, 10)} == {"Forbidden: bot was kicked from the group chat"}
    # a restart: new PushChats, new Delivery, new rows — A is still off, B still served
    chats2 = PushChats(tmp_path / "corrbot.db")
    d2 = Delivery(bot, tmp_path / "corrbot.db", chats2, clock=clock)
    queue(db, A, 1, tag="later")
    b += queue(db, B, 1, tag="later")
    assert await d2.run_once() == DeliveryReport(sent=1, failed=1, pending=0)
    assert received(server) == {str(B): b}
    assert [c.status for c in server.calls if c.chat_id == A] == [403]
    assert outbox.failed_rows(db, 1)[0].error == "chat disabled"
    d2.close()
    chats2.close()


async def test_migration_is_followed_at_once_and_remembered(server: BotApiServer, db: sqlite_utils.Database,
                                                            bot: ExtBot[int], tmp_path: Path, chats: PushChats,
                                                            delivery: Delivery, clock: Clock) -> None:
    fire = outbox.enqueue(db, GROUP, "fire", "<b>fired</b>")
    outbox.enqueue(db, GROUP, "resolve", "resolved", reply_to=fire)
    server.script("sendMessage", ("migrate", SUPERGROUP), chat_id=GROUP)
    assert await delivery.run_once() == DeliveryReport(sent=2, pending=0)
    assert received(server) == {str(SUPERGROUP): ["fired", "resolved"]}
    assert chats.active([GROUP]) == [(str(GROUP), SUPERGROUP)]
    fire_msg, resolve_call = server.sent()[0].result, server.sent()[1]
    assert resolve_call.result["reply_to_message"]["message_id"] == fire_msg["message_id"]
    chats2 = PushChats(tmp_path / "corrbot.db")
    d2 = Delivery(bot, tmp_path / "corrbot.db", chats2, clock=clock)
    outbox.enqueue(db, GROUP, "notice", "later")
    assert (await d2.run_once()).sent == 1
    assert [c.status for c in server.calls if c.chat_id == GROUP] == [400]
    d2.close()
    chats2.close()


async def test_server_gone_for_many_rounds_then_back(server: BotApiServer, db: sqlite_utils.Database,
                                                     delivery: Delivery, clock: Clock) -> None:
    expected = {str(c): queue(db, c, 3) for c in (A, B, C)}
    assert (await delivery.run_once()).sent == 9
    await server.down()
    for i in range(12):  # hours of outage; alerts keep coming
        for c in (A, B, C):
            expected[str(c)] += queue(db, c, 1, tag=f"out{i}-")
        report = await delivery.run_once()
        assert report.sent == 0 and report.failed == 0 and report.pending == 3 * (i + 1)
        clock.t = outbox.next_due(db) or clock.t
    await server.up()
    server.script("sendMessage", 502, "drop", chat_id=B)  # and a shaky start
    await drain(delivery, db, clock)
    assert received(server) == expected


async def test_reply_to_resolves_to_the_fire_message(server: BotApiServer, db: sqlite_utils.Database,
                                                     delivery: Delivery) -> None:
    fires = {c: outbox.enqueue(db, c, "fire", f"fire {c}") for c in (A, B)}
    for c, f in fires.items():
        outbox.enqueue(db, c, "resolve", f"resolved {c}", reply_to=f)
    server.script("sendMessage", 400, 400, chat_id=B)  # B's fire never arrives
    assert await delivery.run_once() == DeliveryReport(sent=3, failed=1, pending=0)
    a_fire, a_resolve = server.sent(chat_id=A)
    assert a_resolve.params["reply_parameters"] == {"message_id": a_fire.result["message_id"],
                                                    "allow_sending_without_reply": True}
    assert outbox.message_id_of(db, fires[A]) == a_fire.result["message_id"]
    [b_resolve] = server.sent(chat_id=B)
    assert b_resolve.plain == f"resolved {B}" and "reply_parameters" not in b_resolve.params


async def test_buttons_silent_and_topic_on_the_wire(server: BotApiServer, db: sqlite_utils.Database,
                                                    bot: ExtBot[int], tmp_path: Path, chats: PushChats,
                                                    clock: Clock) -> None:
    d = Delivery(bot, tmp_path / "corrbot.db", chats, thread_id=7, clock=clock)
    outbox.enqueue(db, A, "fire", "<b>BTC/PSCT</b> 0.71", buttons=[("Mute 1d", "mute:BTC/PSCT:1d"), ("Ack", "ack:1")])
    outbox.enqueue(db, A, "reminder", "still on", silent=True)
    assert (await d.run_once()).sent == 2
    loud, quiet = server.sent(chat_id=A)
    assert loud.params["reply_markup"] == {"inline_keyboard": [[
        {"text": "Mute 1d", "callback_data": "mute:BTC/PSCT:1d"}, {"text": "Ack", "callback_data": "ack:1"}]]}
    assert not loud.params.get("disable_notification") and quiet.params["disable_notification"] is True
    assert "reply_markup" not in quiet.params
    assert loud.params["message_thread_id"] == quiet.params["message_thread_id"] == 7
    d.close()


async def test_long_text_is_split_with_buttons_and_reply_on_the_first_chunk(
    server: BotApiServer, db: sqlite_utils.Database, delivery: Delivery
) -> None:
    fire = outbox.enqueue(db, A, "fire", "fire")
    rows = "\n".join(f"ETH/PSCT {i:4d}  0.{i % 97:02d} &lt; 1" for i in range(400))
    text = f"<b>Digest</b>\n<pre>{rows}</pre>\nend"
    oid = outbox.enqueue(db, A, "digest", text, reply_to=fire, buttons=[("Mute", "mute:digest")])
    assert (await delivery.run_once()).sent == 2
    chunks = server.sent(chat_id=A)[1:]
    assert len(chunks) == len(split_message(text)) == 3
    assert [("reply_markup" in c.params, "reply_parameters" in c.params) for c in chunks] == \
        [(True, True)] + [(False, False)] * 2
    assert "\n".join(c.plain for c in chunks) == strip_html(text)  # nothing lost or repeated
    assert outbox.message_id_of(db, oid) == chunks[0].result["message_id"]


async def test_a_disabled_chat_fails_without_a_send(server: BotApiServer, db: sqlite_utils.Database,
                                                    chats: PushChats, delivery: Delivery) -> None:
    chats.disable(str(C), "/unsubscribe")
    queue(db, C, 2)
    outbox.enqueue(db, 999, "notice", "to a chat nobody configured")
    assert await delivery.run_once() == DeliveryReport(failed=3)
    assert received(server) == {}


async def test_cancel_mid_send_finishes_the_message_in_flight_and_sends_nothing_twice(
    server: BotApiServer, db: sqlite_utils.Database, delivery: Delivery
) -> None:
    a = queue(db, A, 3)
    server.script("sendMessage", ("slow", 0.2), chat_id=A)  # Telegram accepts it, slowly
    task = asyncio.create_task(delivery.round())
    await server.wait_for("sendMessage", lambda c: c.chat_id == A)
    task.cancel()  # service shutdown while the first message is in flight
    with pytest.raises(asyncio.CancelledError):
        await task
    # The stop's final round waits for the send in flight to be recorded, then sends the rest.
    assert (await delivery.round()).sent == 2
    assert received(server) == {str(A): a}  # each once, in order: no duplicate, no loss


async def test_console_delivery_prints_plain_text_and_drains(db: sqlite_utils.Database, tmp_path: Path,
                                                             clock: Clock) -> None:
    queue(db, A, 2)
    out = io.StringIO()
    console = ConsoleDelivery(tmp_path / "corrbot.db", out, clock=clock)
    assert await console.run_once() == DeliveryReport(sent=2, pending=0)
    assert out.getvalue().splitlines() == [f"[2025-06-15 15:06:40Z] {A}: m0 to {A} & co",
                                           f"[2025-06-15 15:06:40Z] {A}: m1 to {A} & co"]
    assert await console.run_once() == DeliveryReport()
    console.close()
