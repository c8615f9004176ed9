"""`corrbot run` stops promptly and cleanly on SIGTERM in any state, and only one runs per DB.

Real subprocesses against loopback servers started here: a TCP "black hole" that accepts
connections and never answers (as the Binance and Yahoo base URLs), a closed port (feeds
failing fast, retried with backoff), and the loopback Bot API (tests/botapi_server.py),
also taken down mid-run. Each stop must end with exit status 0 within 10 s (the one timing
bound of the suite), with no traceback and "corrbot stopped" as the last thing logged.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

from botapi_server import ADMIN, TOKEN, BotApiServer
from service_harness import REPO, BlackHole, closed_url, env, logged, sigterm, spawn, until

from storage.db import open_db
from storage.outbox import enqueue


def write_config(tmp: Path, feeds_url: str, *, telegram_url: str | None = None, retries: int = 0,
                 backoff: float = 0.0, timeout: float = 60.0, yahoo_url: str | None = None) -> Path:
    path = tmp / "corrbot.toml"
    path.write_text(f"""
[storage]
path = "corrbot.db"

[[assets]]
name = "BTC"
kind = "crypto"
exchange = "binance"
symbol = "BTC/USDT"

[[assets]]
name = "IWM"
kind = "equity"
ticker = "IWM"

[correlation]
timeframes = ["1d"]
windows = [30]

[feeds]
retries = {retries}
backoff_seconds = {backoff}
timeout_seconds = {timeout}
yahoo_base_url = "{yahoo_url or feeds_url}"
ccxt_urls = {{ binance = "{feeds_url}" }}

[schedule]
crypto_poll_minutes = 600
equity_poll_minutes = 390
delivery_seconds = 1.0

[telegram]
base_url = "{telegram_url or closed_url() + '/bot'}"
alert_chat_ids = [-4242]
admin_user_ids = [{ADMIN}]
""", encoding="utf-8")
    return path


async def test_sigterm_mid_poll_with_feeds_that_never_answer(tmp_path: Path) -> None:
    hole = await BlackHole().start()
    server = await BotApiServer(TOKEN).start()
    try:
        for mode, token in (("console", False), ("bot", True)):
            log = tmp_path / f"{mode}.log"
            cfg = write_config(tmp_path, hole.url, telegram_url=server.base_url)
            before = hole.accepted
            proc = await spawn(cfg, log, token=token)
            await until(lambda b=before: hole.accepted > b)  # type: ignore[misc]
            await asyncio.sleep(0.5)  # the poll is now waiting on the black hole
            await sigterm(proc, log, f"{mode} mode, mid-poll on a black hole")
    finally:
        await server.stop()
        await hole.stop()


async def test_sigterm_while_yfinance_blocks_a_thread(tmp_path: Path) -> None:
    """/poll runs the equities leg too (the schedule only does in NYSE hours): yfinance then
    sits in a worker thread on a Yahoo that never answers (60 s timeout). That thread must
    not hold the exit: it is a daemon, abandoned, not joined."""
    hole = await BlackHole().start()
    server = await BotApiServer(TOKEN).start()
    log = tmp_path / "run.log"
    try:
        cfg = write_config(tmp_path, closed_url(), yahoo_url=hole.url, telegram_url=server.base_url)
        proc = await spawn(cfg, log, token=True)
        await until(lambda: logged(log, "poll cycle 1 done"))  # the startup (crypto) cycle
        server.push_command("/poll", user_id=ADMIN)
        await until(lambda: hole.accepted > 0)
        await asyncio.sleep(0.5)
        await sigterm(proc, log, "while yfinance blocks a thread")
    finally:
        await server.stop()
        await hole.stop()


async def test_sigterm_during_feed_backoff(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, closed_url(), retries=6, backoff=4.0)
    log = tmp_path / "run.log"
    proc = await spawn(cfg, log, token=False)
    await until(lambda: logged(log, "retrying in"))
    await sigterm(proc, log, "during feed backoff")


async def test_sigterm_with_telegram_gone(tmp_path: Path) -> None:
    hole = await BlackHole().start()
    server = await BotApiServer(TOKEN).start()
    log = tmp_path / "run.log"
    try:
        proc = await spawn(write_config(tmp_path, hole.url, telegram_url=server.base_url), log, token=True)
        await server.wait_for("setMyCommands", timeout=60)
        await until(lambda: hole.accepted > 0)
        await server.down()  # Telegram unreachable from here on: getUpdates and the last delivery fail
        await asyncio.sleep(1.0)
        await sigterm(proc, log, "Telegram unreachable")
    finally:
        await server.stop()
        await hole.stop()


async def test_sigterm_mid_delivery(tmp_path: Path) -> None:
    """Telegram takes 4 s per message: SIGTERM lands while one is in flight, and the final
    delivery round (bounded at 3 s) is cut short too. Nothing is marked failed or lost."""
    server = await BotApiServer(TOKEN, latency=4.0).start()
    log = tmp_path / "run.log"
    cfg = write_config(tmp_path, closed_url(), telegram_url=server.base_url)
    db = open_db(tmp_path / "corrbot.db")
    for i in range(3):
        enqueue(db, "-4242", "notice", f"notice {i}")
    db.close()
    try:
        proc = await spawn(cfg, log, token=True)
        await server.wait_for("sendMessage", timeout=60)  # arrived; its answer is 4 s away
        await asyncio.sleep(0.5)
        await sigterm(proc, log, "mid-delivery (Telegram answering in 4 s)")
    finally:
        await server.stop()
    db = open_db(tmp_path / "corrbot.db")
    statuses = [r[0] for r in db.execute("SELECT status FROM outbox ORDER BY id").fetchall()]
    db.close()
    assert len(statuses) == 3 and "failed" not in statuses, statuses
    assert statuses[-1] == "pending"  # left for the next start, not dropped


async def test_sigterm_at_random_points(tmp_path: Path) -> None:
    """From loading the service through bot start-up to the hung poll."""
    hole = await BlackHole().start()
    server = await BotApiServer(TOKEN, latency=0.2).start()
    rng = random.Random(int(os.environ.get("CORRBOT_STOP_SEED", "8")))
    try:
        cfg = write_config(tmp_path, hole.url, telegram_url=server.base_url)
        for i in range(5):
            log = tmp_path / f"run{i}.log"
            proc = await spawn(cfg, log, token=True)
            delay = rng.uniform(1.5, 9.0)
            await asyncio.sleep(delay)
            await sigterm(proc, log, f"at {delay:.1f}s after start")
    finally:
        await server.stop()
        await hole.stop()


async def test_second_instance_on_the_same_db_refuses(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, closed_url())
    first_log = tmp_path / "first.log"
    first = await spawn(cfg, first_log, token=False)
    try:
        await until(lambda: logged(first_log, "console mode"))
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "--config", str(cfg), "run", cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env(False))
        out, _ = await asyncio.wait_for(second.communicate(), 60)
        lines = out.decode().strip().splitlines()
        assert second.returncode == 1, lines
        assert len(lines) == 1 and "already using" in lines[0] and str(first.pid) in lines[0], lines
        assert first.returncode is None  # the first one is untouched
    finally:
        await sigterm(first, first_log, "first instance")
    # kill -9 leaves the lock file behind, but not the lock: a new run starts.
    again_log = tmp_path / "again.log"
    again = await spawn(cfg, again_log, token=False)
    await until(lambda: logged(again_log, "console mode"))
    again.kill()
    await again.wait()
    assert (tmp_path / "corrbot.db.lock").exists()
    last_log = tmp_path / "last.log"
    last = await spawn(cfg, last_log, token=False)
    await until(lambda: logged(last_log, "console mode"))
    await sigterm(last, last_log, "after a kill -9")
