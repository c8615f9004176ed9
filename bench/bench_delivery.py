"""Benchmark of outbox delivery: 1,000 queued alerts to the loopback Bot API under Telegram's limits.

Run ``.venv/bin/python bench/bench_delivery.py [messages] [chats]`` (default 1000 over 100
private chats, ~70 s). The real PTB ``ExtBot`` with ``AIORateLimiter`` (30 messages/s overall,
20/min per group — private chats here, so only the 30/s applies) sends through
`bot.delivery.Delivery` from a real SQLite outbox, so the floor is messages / 30 s. The
baseline in the same run sends the same texts one by one in a plain loop, no outbox, with a
fresh bot and limiter. Prints one table; the Delivery run is checked for exactly once and in
order per chat. Nothing else is asserted.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from botapi_server import TOKEN, BotApiServer  # noqa: E402
from telegram.constants import ParseMode  # noqa: E402
from telegram.ext import AIORateLimiter, ExtBot  # noqa: E402
from telegram.request import HTTPXRequest  # noqa: E402

from bot.delivery import Delivery  # noqa: E402
from bot.format import strip_html  # noqa: E402
from storage import outbox  # noqa: E402
from storage.db import open_db, transaction  # noqa: E402
from storage.push_chats import PushChats  # noqa: E402

RATE = 30.0  # Telegram: messages per second overall (AIORateLimiter's default)
BURST = 30  # aiolimiter's bucket starts full: the first 30 go at once


async def new_bot(server: BotApiServer) -> ExtBot[int]:
    request = HTTPXRequest(connection_pool_size=32)
    bot: ExtBot[int] = ExtBot(TOKEN, base_url=server.base_url, request=request, rate_limiter=AIORateLimiter())
    await bot.initialize()
    return bot


async def run_delivery(server: BotApiServer, work: list[tuple[int, str]], db_path: Path) -> tuple[float, int]:
    db = open_db(db_path)
    with transaction(db):  # queued the way the alert layer does, interleaved across chats
        for chat, text in work:
            outbox.enqueue(db, chat, "fire", text)
    chats = PushChats(db_path)
    chats.seed(sorted({c for c, _ in work}))
    bot = await new_bot(server)
    delivery = Delivery(bot, db_path, chats)
    rounds = 0
    t0 = time.perf_counter()
    while (await delivery.run_once()).pending:
        rounds += 1
    elapsed = time.perf_counter() - t0
    delivery.close()
    chats.close()
    db.conn.close()
    await bot.shutdown()
    return elapsed, rounds + 1


async def run_plain_loop(server: BotApiServer, work: list[tuple[int, str]]) -> float:
    bot = await new_bot(server)
    t0 = time.perf_counter()
    for chat, text in work:
        await bot.send_message(chat, text, parse_mode=ParseMode.HTML)
    elapsed = time.perf_counter() - t0
    await bot.shutdown()
    return elapsed


def check(server: BotApiServer, work: list[tuple[int, str]], since: int) -> str:
    got: dict[str, list[str]] = {}
    for c in server.calls[since:]:
        if c.method == "sendMessage" and c.status == 200:
            got.setdefault(str(c.chat_id), []).append(c.plain)
    want: dict[str, list[str]] = {}
    for chat, text in work:
        want.setdefault(str(chat), []).append(strip_html(text))
    return "exactly once, in order per chat" if got == want else "MISMATCH (lost, duplicated or reordered)"


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    n_chats = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    chats = [20_000 + i for i in range(n_chats)]
    work = [(chats[i % n_chats], f"<b>BTC/PSCT</b> crossed 0.5 &amp; held · alert {i}") for i in range(n)]
    floor = n / RATE
    server = await BotApiServer(TOKEN).start()
    try:
        with tempfile.TemporaryDirectory(prefix="corrbot-bench-") as tmp:
            since = len(server.calls)
            t_outbox, rounds = await run_delivery(server, work, Path(tmp) / "corrbot.db")
            verdict = check(server, work, since)
        await asyncio.sleep(1.5)  # nothing carries over, but keep the phases apart on the server
        t_plain = await run_plain_loop(server, work)
    finally:
        await server.stop()
    print(f"{n} messages over {n_chats} private chats; Telegram allows {RATE:.0f} msg/s overall")
    print(f"floor: {n} / {RATE:.0f} = {floor:.1f} s  (aiolimiter lets the first {BURST} through at once: "
          f"{(n - BURST) / RATE:.1f} s is reachable)")
    print(f"{'mode':<30} {'time s':>7} {'msg/s':>7} {'× floor':>8}")
    label = f"outbox Delivery ({rounds} round{'s' * (rounds > 1)})"
    for name, t in ((label, t_outbox), ("plain send loop, no outbox", t_plain)):
        print(f"{name:<30} {t:7.1f} {n / t:7.1f} {t / floor:8.2f}")
    print(f"Delivery: {verdict}")


if __name__ == "__main__":
    asyncio.run(main())
