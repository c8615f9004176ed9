"""`corrbot run` as a real subprocess against the loopback Bot API: history imported with
`corrbot import` while it runs, /poll from an admin, the alert and then its resolved notice
in the alert chat — and `kill -9` at random points of evaluation and delivery."""

from __future__ import annotations

import asyncio
import random
import signal
from pathlib import Path
from typing import Any

import pandas as pd
from botapi_server import ADMIN, TOKEN, BotApiServer
from service_harness import corrbot, poll, spawn

from core.config import load_config
from feeds.csv_import import parse_csv
from service.backtest import backtest
from service.demo import demo_files
from storage.bars import upsert_bars
from storage.db import open_db

ALERT_CHAT = -4242
DEAD = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused at once


def write_config(tmp: Path, server: BotApiServer, rules: str, *, chats: list[int], delivery: float = 0.5,
                 telegram: str = "") -> Path:
    assets = "".join(
        f'\n[[assets]]\nname = "{c}"\nkind = "crypto"\nexchange = "binance"\nsymbol = "{c}/USDT"\n'
        for c in ("BTC", "ETH", "SOL", "ADA")
    ) + "".join(
        f'\n[[assets]]\nname = "{e}"\nkind = "equity"\nticker = "{e}"\n'
        for e in ("IWM", "PSCT", "IWO", "XSW", "QQQ", "SPY", "XLK")
    )
    text = f"""
[storage]
path = "corrbot.db"
{assets}
[[baskets]]
name = "SMALLCAP_TECH"
members = {{ PSCT = 0.5, XSW = 0.5 }}

[correlation]
timeframes = ["1d"]
windows = [30, 90]
default_window = 30

[feeds]
retries = 0
backoff_seconds = 0.0
timeout_seconds = 2.0
yahoo_base_url = "{DEAD}"
ccxt_urls = {{ binance = "{DEAD}" }}

[schedule]
crypto_poll_minutes = 600
equity_poll_minutes = 390
delivery_seconds = {delivery}

[telegram]
base_url = "{server.base_url}"
alert_chat_ids = {chats}
admin_user_ids = [{ADMIN}]
{telegram}
{rules}
"""
    path = tmp / "corrbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


LEVEL_RULE = """
[[rules]]
name = "coupling"
kind = "corr_level"
window = 30
pairs = ["BTC/IWM"]
above = 0.55
clear_below = 0.45
"""


def cut_csvs(tmp: Path, until: str, names: tuple[str, ...]) -> dict[str, Path]:
    """The bundled CSVs of ``names`` cut after the date ``until`` (header kept, rows as they are)."""
    out = {}
    for name, src in demo_files().items():
        if name not in names:
            continue
        df = pd.read_csv(src, dtype=str)
        dst = tmp / f"{name}-{until}.csv"
        df[df["Date"].str[:10] <= until].to_csv(dst, index=False)
        out[name] = dst
    return out


async def import_until(cfg: Path, tmp: Path, until: str, names: tuple[str, ...] = ("BTC", "IWM")) -> None:
    # Sequential on purpose: each import is its own writer, as a user would run them.
    for name, path in cut_csvs(tmp, until, names).items():
        await corrbot(cfg, "import", name, str(path))


async def start_run(cfg: Path, log: Path) -> asyncio.subprocess.Process:
    return await spawn(cfg, log, token=True)


def alerts_in(server: BotApiServer, chat: int) -> list[Any]:
    return [c for c in server.sent("sendMessage", chat_id=chat)]


async def test_run_import_poll_fire_then_resolve(tmp_path: Path) -> None:
    server = await BotApiServer(TOKEN).start()
    cfg = write_config(tmp_path, server, LEVEL_RULE, chats=[ALERT_CHAT])
    await import_until(cfg, tmp_path, "2025-03-31")
    proc = await start_run(cfg, tmp_path / "run.log")
    try:
        await server.wait_for("setMyCommands", timeout=60)
        await poll(server)  # the rule starts at the latest bar, 2025-03-31: BTC/IWM w30 is under 0.55
        assert alerts_in(server, ALERT_CHAT) == []
        await import_until(cfg, tmp_path, "2025-04-16")  # while it runs
        await poll(server)
        (fire,) = await server.wait_for("sendMessage", lambda c: c.chat_id == ALERT_CHAT, timeout=30)
        assert "coupling" in fire.plain and "BTC / IWM" in fire.plain and "crossed above +0.55" in fire.plain
        assert "as of 2025-04-14" in fire.plain
        buttons = [b["callback_data"] for b in fire.params["reply_markup"]["inline_keyboard"][0]]
        assert buttons[0].startswith("c:") and buttons[1].endswith(":1h") and buttons[2].endswith(":24h")
        await import_until(cfg, tmp_path, "2025-05-30")
        await poll(server)
        calls = await server.wait_for("sendMessage", lambda c: c.chat_id == ALERT_CHAT, count=2, timeout=30)
        resolved = calls[1]
        assert "resolved" in resolved.plain and "back under +0.45" in resolved.plain
        assert "2025-04-14 → 2025-05-22" in resolved.plain
        assert resolved.params["reply_parameters"]["message_id"] == fire.result["message_id"]
        await poll(server)  # nothing new: nothing sent twice
        await asyncio.sleep(1.5)
        assert len(alerts_in(server, ALERT_CHAT)) == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        await server.stop()
    assert proc.returncode == 0, (tmp_path / "run.log").read_text()


async def test_revoked_token_mid_run_stops_with_one_line_and_non_zero_exit(tmp_path: Path) -> None:
    """PTB stops polling for good on a revoked token; the service must not stay up answering
    nobody: it stops, says why in one line (no token in it) and exits non-zero."""
    server = await BotApiServer(TOKEN).start()
    cfg = write_config(tmp_path, server, "", chats=[ALERT_CHAT], telegram="token_check_seconds = 1")
    log = tmp_path / "run.log"
    proc = await start_run(cfg, log)
    try:
        await server.wait_for("setMyCommands", timeout=60)
        await server.wait_for("getUpdates", timeout=60)  # polling runs: the revocation is mid-run
        server.token = "5081234567:AAF-revoked_revoked_revoked_revoked_0"  # every call now gets 401
        await asyncio.wait_for(proc.wait(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
        await server.stop()
    text = log.read_text()
    assert proc.returncode == 2, text[-2000:]
    assert "rejected the token while running" in text and "Traceback" not in text
    assert TOKEN.split(":")[1] not in text
    assert text.rstrip().splitlines()[-1].startswith("corrbot: telegram: the Bot API rejected the token")


KILL_ASSETS = ("BTC", "ETH", "IWM", "QQQ")
BUSY_RULES = """
[[rules]]
name = "coupling"
kind = "corr_level"
window = 30
above = 0.5
clear_below = 0.4

[[rules]]
name = "jump"
kind = "corr_jump"
window = 30
lookback = 5
delta = 0.2
"""


async def test_kill_9_loses_nothing(tmp_path: Path) -> None:
    """Bars arrive a few weeks at a time; after each import the service starts, evaluates and
    delivers (Telegram answering in 50 ms), and is killed -9 at a random moment of that —
    at least 20 times — then restarted until the outbox is empty. Nothing may be lost; the
    duplicates (at-least-once delivery) are counted and reported."""
    server = await BotApiServer(TOKEN, latency=0.05).start()
    chats = [-5001, -5002, 5003, 5004, 5005, 5006]
    cfg = write_config(tmp_path, server, BUSY_RULES, chats=chats)
    await import_until(cfg, tmp_path, "2023-12-29", KILL_ASSETS)
    # One clean cycle puts every rule's cursor at 2023-12-29.
    proc = await start_run(cfg, tmp_path / "run.log")
    await server.wait_for("setMyCommands", timeout=60)
    await poll(server)
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    sessions = [d for d in pd.read_csv(demo_files()["IWM"])["Date"].str[:10] if "2024-01-01" <= d <= "2025-08-22"]
    chunks = [sessions[i] for i in range(19, len(sessions), 20)] + [sessions[-1]]
    bars = {name: parse_csv(demo_files()[name]).bars for name in KILL_ASSETS}
    rng = random.Random(7)
    kills = 0
    for until in chunks:
        # The new bars land as a feed would write them (the service is down: it was killed).
        db = open_db(tmp_path / "corrbot.db")
        for name, df in bars.items():
            upsert_bars(db, name, "1d", df[df.index <= int(pd.Timestamp(until).timestamp())], "test")
        db.close()
        ready = len(server.sent("setMyCommands"))
        proc = await start_run(cfg, tmp_path / "run.log")
        await server.wait_for("setMyCommands", count=ready + 1, timeout=60)
        await asyncio.sleep(rng.uniform(0.0, 2.5))  # the cycle runs at start: evaluation, then delivery
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        await proc.wait()
    proc = await start_run(cfg, tmp_path / "run.log")  # one last run finishes the job cleanly
    try:
        for _ in range(240):
            db = open_db(tmp_path / "corrbot.db")
            left = db.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0]
            last = db.execute("SELECT min(last_ts) FROM alert_state").fetchone()[0]
            db.close()
            if left == 0 and last == int(pd.Timestamp("2025-08-22").timestamp()):
                break
            await asyncio.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        await server.stop()
    db = open_db(tmp_path / "corrbot.db")
    rows = db.execute("SELECT chat, text, status FROM outbox ORDER BY id").fetchall()
    from bot.format import split_message, strip_html

    assert kills >= 20
    assert len(rows) >= 100 and all(status == "sent" for _, _, status in rows)
    lost = dup = 0
    for chat in chats:
        # A long message (a big catch-up) arrives in several parts: compare the parts.
        want = [strip_html(part) for c, t, _ in rows if c == str(chat) for part in split_message(t)]
        got = [c.plain for c in server.sent("sendMessage", chat_id=chat)]
        lost += sum(1 for t in want if t not in got)
        dup += len(got) - len(set(got))
        firsts = [got.index(t) for t in want if t in got]  # in order: first arrivals follow the outbox
        assert firsts == sorted(firsts), chat
    # The same bars replayed give the same episodes: nothing evaluated twice or skipped.
    # The live service started every rule at the latest bar then (2023-12-29): a backtest from
    # that bar with fresh state must give exactly the episodes the killed-and-restarted service kept.
    live = db.execute("SELECT rule, key, fired_ts, resolved_ts FROM episodes ORDER BY rule, key, fired_ts").fetchall()
    start = int(pd.Timestamp("2023-12-29").timestamp())
    replay = sorted((e.rule, f"{e.a}/{e.b}", e.fired_ts, e.resolved_ts)
                    for e in backtest(db, load_config(cfg), start=start))
    report = f"kill -9 trials: {kills}; messages: {len(rows)}; lost: {lost}; duplicates: {dup}"
    print(report)
    assert lost == 0, report
    assert live == replay
