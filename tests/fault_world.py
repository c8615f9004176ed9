"""The world the fault-matrix tests run `corrbot run` in: loopback Binance, Yahoo and Bot API
servers serving real data on a clock the test moves, a seeded database, and the checks every
fault ends with (integrity, the stored data, the alerts, the token nowhere).

Clock: the servers serve what existed just before midnight UTC of a day (`World.set_clock`);
the service's own clock is the real one, so everything served counts as closed. The seed is
`corrbot backfill` from `SEED_SINCE` to `D0` against these servers, made once per test session.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
from binance_server import BinanceServer
from botapi_server import ADMIN, TOKEN, BotApiServer
from service_harness import REPO, corrbot, poll, sigterm, spawn
from yahoo_server import YahooServer

from storage import corr as corr_store
from storage.bars import read_bars, upsert_bars
from storage.db import open_db

DATA = REPO / "tests" / "data"
BTC_CSV = DATA / "intraday" / "BTCUSDT_1h_binance_2023-2026.csv"
SEED_SINCE = "2025-01-21"
D0 = "2025-03-31"  # the seed's last day; the runs then walk the clock to 2025-07-11
CRYPTO = ("BTC", "ETH", "SOL")
EQUITY = ("IWM", "QQQ")
PAIRS = [("BTC", "IWM"), ("BTC", "QQQ"), ("ETH", "IWM"), ("ETH", "QQQ")]
CHATS = [-4242, 5003, -777]
RULES = """
[[rules]]
name = "coupling"
kind = "corr_level"
window = 30
pairs = ["BTC/IWM", "BTC/QQQ", "ETH/IWM", "ETH/QQQ"]
above = 0.5
clear_below = 0.4

[[rules]]
name = "jump"
kind = "corr_jump"
window = 30
pairs = ["BTC/IWM", "BTC/QQQ", "ETH/IWM", "ETH/QQQ"]
lookback = 5
delta = 0.2
"""


def day_ms(day: str) -> int:
    return int(pd.Timestamp(day, tz="UTC").timestamp() * 1000)


@dataclass
class World:
    tmp: Path
    binance: BinanceServer
    yahoo: YahooServer
    bot: BotApiServer
    logs: list[Path] = field(default_factory=list)

    @property
    def cfg(self) -> Path:
        return self.tmp / "corrbot.toml"

    @property
    def db_path(self) -> Path:
        return self.tmp / "corrbot.db"

    def set_clock(self, day: str) -> None:
        """The servers serve everything that opened before midnight UTC at the end of ``day``."""
        end = day_ms(day) + 86_400_000 - 1
        self.binance.now_ms = end
        self.yahoo.now = end // 1000

    def write_config(self, *, retries: int = 2, timeout: float = 2.0, extra: str = "") -> Path:
        assets = "".join(
            f'\n[[assets]]\nname = "{c}"\nkind = "crypto"\nexchange = "binance"\nsymbol = "{c}/USDT"\n'
            for c in CRYPTO) + "".join(f'\n[[assets]]\nname = "{e}"\nkind = "equity"\nticker = "{e}"\n' for e in EQUITY)
        self.cfg.write_text(f"""
[storage]
path = "corrbot.db"
busy_timeout_seconds = 5.0
{assets}
[correlation]
timeframes = ["1d"]
windows = [30]
default_window = 30

[feeds]
retries = {retries}
backoff_seconds = 0.3
timeout_seconds = {timeout}
yahoo_base_url = "{self.yahoo.base_url}"
ccxt_urls = {{ binance = "{self.binance.url}" }}

[schedule]
crypto_poll_minutes = 600
equity_poll_minutes = 390
delivery_seconds = 0.5

[telegram]
base_url = "{self.bot.base_url}"
alert_chat_ids = {CHATS}
admin_user_ids = [{ADMIN}]
token_check_seconds = 2
{extra}
{RULES}
""", encoding="utf-8")
        return self.cfg

    def child_env(self) -> dict[str, str]:
        # yfinance keeps a timezone cache under the user's cache dir: one per world, not shared.
        return {"XDG_CACHE_HOME": str(self.tmp / "cache")}

    async def start(self, name: str = "run") -> asyncio.subprocess.Process:
        log = self.tmp / f"{name}{len(self.logs)}.log"
        self.logs.append(log)
        ready = len(self.bot.sent("setMyCommands"))
        proc = await spawn(self.cfg, log, token=True, **self.child_env())
        await self.bot.wait_for("setMyCommands", count=ready + 1, timeout=90)
        return proc

    async def poll(self, *, may_fail: bool = False) -> str:
        return await poll(self.bot, may_fail=may_fail)

    async def stop(self, proc: asyncio.subprocess.Process, what: str = "end of run") -> float:
        return await sigterm(proc, self.logs[-1], what)

    async def drain(self, timeout: float = 90.0) -> None:
        """Until the outbox has nothing pending (deliveries in backoff included)."""
        for _ in range(int(timeout / 0.25)):
            if pending(self.db_path) == 0:
                return
            await asyncio.sleep(0.25)
        raise AssertionError(f"outbox still has {pending(self.db_path)} pending after {timeout}s")


async def make_world(tmp: Path, seed: Path | None) -> World:
    tmp.mkdir(parents=True, exist_ok=True)
    binance = await BinanceServer(BTC_CSV).start()
    yahoo = YahooServer(DATA)
    yahoo.__enter__()
    bot = await BotApiServer(TOKEN, latency=0.02).start()
    world = World(tmp, binance, yahoo, bot)
    world.set_clock(D0)
    world.write_config()
    if seed is not None:
        shutil.copy(seed, world.db_path)
    return world


async def close_world(world: World) -> None:
    await world.bot.stop()
    await world.binance.stop()
    world.yahoo.__exit__()


def build_seed(where: Path, until: str = D0) -> Path:
    """`corrbot backfill --since SEED_SINCE` with the servers at ``until`` (run once per session)."""

    async def go() -> None:
        world = await make_world(where, None)
        world.set_clock(until)
        try:
            out = await corrbot(world.cfg, "backfill", "--since", SEED_SINCE, **world.child_env())
            assert "error" not in out, out
        finally:
            await close_world(world)

    asyncio.run(go())
    return where / "corrbot.db"


def write_equities(db_path: Path, full: Path, day: str) -> None:
    """The equity bars of ``full`` (a backfill to the end) up to ``day``, stored as the Yahoo
    feed stores them — for runs whose only cycle is the start-up one (crypto only)."""
    src, dst = open_db(full, readonly=True), open_db(db_path, busy_timeout=30)
    try:
        end = day_ms(day) // 1000 + 86_400
        for asset in EQUITY:
            for tf in ("1d", "1h"):
                bars = read_bars(src, asset, tf)
                upsert_bars(dst, asset, tf, bars[bars.index < end], "yahoo")
    finally:
        src.conn.close()
        dst.conn.close()


# ---- what is checked after each fault --------------------------------------------------------

def pending(db_path: Path) -> int:
    with sqlite3.connect(db_path, timeout=30) as conn:
        return int(conn.execute("SELECT count(*) FROM outbox WHERE status = 'pending'").fetchone()[0])


def integrity(db_path: Path) -> str:
    with sqlite3.connect(db_path, timeout=30) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


@dataclass
class Snapshot:
    bars: dict[tuple[str, str], pd.DataFrame]
    corr: dict[tuple[str, str], pd.DataFrame]
    episodes: list[tuple[str, str, int, int | None]]  # rule, key, fired_ts, resolved_ts
    outbox: list[tuple[str, str, str, str]]  # chat, kind, text, status (id order)
    sent_episodes: dict[str, set[tuple[int, str]]]  # chat -> {(episode index, kind)} sent

    def bars_equal(self, other: Snapshot, skip: tuple[str, ...] = ()) -> None:
        keys = {k for k in self.bars if k[0] not in skip} | {k for k in other.bars if k[0] not in skip}
        for key in sorted(keys):
            pd.testing.assert_frame_equal(self.bars[key], other.bars[key], check_exact=True, obj=str(key))

    def corr_equal(self, other: Snapshot) -> None:
        for key in PAIRS:
            a, b = self.corr[key], other.corr[key]
            assert list(a.index) == list(b.index), key
            assert np.allclose(a.to_numpy(float), b.to_numpy(float), rtol=1e-9, atol=1e-12, equal_nan=True), key


def snapshot(db_path: Path) -> Snapshot:
    db = open_db(db_path, readonly=True)
    try:
        bars = {(a, tf): read_bars(db, a, tf) for a in (*CRYPTO, *EQUITY) for tf in ("1d", "1h")}
        corr = {}
        for a, b in PAIRS:
            sid = corr_store.find_series(db, a, b, "1d", 30)
            assert sid is not None, (a, b)
            corr[(a, b)] = corr_store.read_series(db, sid)
        eps = db.execute("SELECT id, rule, key, fired_ts, resolved_ts FROM episodes ORDER BY id").fetchall()
        index = {int(r[0]): (str(r[1]), str(r[2]), int(r[3])) for r in eps}
        outbox = [(str(c), str(k), str(t), str(s)) for c, k, t, s in db.execute(
            "SELECT chat, kind, text, status FROM outbox ORDER BY id").fetchall()]
        sent: dict[str, set[tuple[int, str]]] = {}
        for chat, kind, eid in db.execute(
                "SELECT o.chat, o.kind, e.episode_id FROM outbox o JOIN outbox_episodes e ON e.outbox_id = o.id "
                "WHERE o.status = 'sent'").fetchall():
            sent.setdefault(str(chat), set()).add((int(eid), str(kind)))
        named = {c: {(index[e][0], index[e][1], index[e][2], k) for e, k in s} for c, s in sent.items()}
        episodes = sorted((str(r[1]), str(r[2]), int(r[3]), None if r[4] is None else int(r[4])) for r in eps)
        return Snapshot(bars, corr, episodes, outbox, named)
    finally:
        db.conn.close()


def delivered(bot: BotApiServer, chat: int) -> list[str]:
    return [c.plain for c in bot.sent("sendMessage", chat_id=chat)]


def duplicates(bot: BotApiServer) -> int:
    return sum(len(got) - len(set(got)) for got in (delivered(bot, c) for c in CHATS))


def token_forms() -> list[re.Pattern[str]]:
    """The token (and its secret half alone) verbatim or percent-encoded, in any letter case."""
    secret = TOKEN.split(":", 1)[1]
    forms = {TOKEN, secret, quote(TOKEN, safe=""), quote(quote(TOKEN, safe=""), safe="")}
    return [re.compile(re.escape(f), re.IGNORECASE) for f in forms]


def token_leaks(world: World, extra_text: str = "") -> list[str]:
    """Where the token appears: each log file, the DB's text columns, anything else given."""
    found = []
    texts = {str(p): p.read_text(errors="replace") for p in world.logs if p.exists()}
    texts["extra"] = extra_text
    with sqlite3.connect(world.db_path, timeout=30) as conn:
        for (table,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
            rows = conn.execute(f'SELECT * FROM "{table}"').fetchall()
            texts[f"db:{table}"] = json.dumps([[v for v in r if isinstance(v, str)] for r in rows])
    for where, text in texts.items():
        for pattern in token_forms():
            if pattern.search(text):
                found.append(f"{where}: {pattern.pattern}")
    return found
