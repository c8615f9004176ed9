"""The fault matrix, part 1: `corrbot -v run` (a real subprocess, the known test token, DEBUG
logs) walks the clock from 2025-03-31 to 2025-07-11 against loopback Binance, Yahoo and Bot
API servers twice at once: a clean run, and a run where each step injects faults —

- exchange: a stalled request (past the client timeout), 5xx for a whole poll, 429 with
  Retry-After (honoured), a malformed JSON body, empty candles, every candle twice and newest
  first, a symbol delisted (SOL leaves exchangeInfo);
- Yahoo: rate limiting (429), empty frames, partial rows (null close and volume);
- Telegram: 429 with retry_after, 500, 502, 400 (resent as plain text), 403 (the bot removed
  from one alert chat);
- the DB held open by a read transaction (Datasette-style) while the service writes.

After every step the process still runs and ``PRAGMA integrity_check`` is ok; at the end the
bars, the correlations and the alert episodes equal the clean run's, each alert chat got the
clean run's messages once each and in order (the kicked chat: those before the kick), the
outbox is empty, SIGTERM ends it with exit 0, and the token appears nowhere: not in the logs,
the DB's text columns or the /status reply, in any letter case or percent-encoding.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pandas as pd
from botapi_server import ADMIN
from fault_world import (
    CHATS,
    World,
    close_world,
    day_ms,
    delivered,
    duplicates,
    integrity,
    make_world,
    snapshot,
    token_leaks,
)

STEPS = ["2025-04-14", "2025-04-28", "2025-05-12", "2025-05-26", "2025-06-09", "2025-06-23", "2025-07-11"]
KICKED = -777


class Faults:
    """Injects the faults of each step into a world and counts them."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.injected: dict[str, int] = {}
        self.reader: sqlite3.Connection | None = None

    def note(self, what: str, n: int = 1) -> None:
        self.injected[what] = self.injected.get(what, 0) + n

    def served(self) -> int:
        """Faulty answers the servers actually gave (scripted ones left unserved not counted)."""
        tg = sum(1 for c in self.w.bot.calls if c.method == "sendMessage" and c.status != 200)
        return sum(r.faulted for r in self.w.binance.requests) + self.w.yahoo.faults_served + tg

    def before(self, step: int) -> bool:
        """Faults for this step's poll; True when they outlast one poll (cleared by `after`)."""
        b, y, t = self.w.binance, self.w.yahoo, self.w.bot
        if step == 0:  # all absorbed by the feeds' retries within the poll
            b.stall(3.0, symbol="BTCUSDT")  # the client times out at 2 s
            b.rate_limited(times=1, retry_after=2, path="/api/v3/klines", symbol="ETHUSDT")
            y.fail_next(429, 2)
            self.note("exchange timeout"), self.note("exchange 429 Retry-After"), self.note("yahoo 429", 2)
            t.script("sendMessage", (429, 2), 500, 502, chat_id=CHATS[0])
            t.script("sendMessage", 400, chat_id=CHATS[1])
            self.note("telegram 429"), self.note("telegram 500"), self.note("telegram 502"), self.note("telegram 400")
            return False
        if step == 1:  # a whole poll goes without ETH and IWM
            b.unavailable(times=None, path="/api/v3/klines", symbol="ETHUSDT")
            y.fail_next(200, 10, {"IWM"})
            self.note("exchange 5xx (whole poll)"), self.note("yahoo empty frame")
            return True
        if step == 2:
            b.fail(200, '[[1746403200000,"94314.',  times=1, path="/api/v3/klines", symbol="BTCUSDT")
            b.fail(200, "[]", times=2, path="/api/v3/klines", symbol="ETHUSDT")
            last = int(y.series("QQQ", "1d").loc[: day_ms(STEPS[2]) // 1000].index[-1])  # type: ignore[union-attr]
            y.patch("QQQ", last, close=None, volume=None)
            iwm = int(y.series("IWM", "1d").loc[: day_ms(STEPS[2]) // 1000].index[-3])  # type: ignore[union-attr]
            y.patch("IWM", iwm, close=None)
            self.note("exchange malformed JSON"), self.note("exchange empty candles", 2)
            self.note("yahoo partial rows", 2)
            return True
        if step == 3:
            b.mangled = 8  # every candle twice, newest first
            self.note("exchange duplicate+out-of-order candles", 8)
            return False
        if step == 4:
            t.script("sendMessage", 403, chat_id=KICKED)
            b.symbols = tuple(s for s in b.symbols if s != "SOLUSDT")
            self.note("telegram 403"), self.note("exchange delisted symbol")
            return False
        if step == 5:  # a reader holds a snapshot open while the poll writes
            self.reader = sqlite3.connect(f"file:{self.w.db_path}?mode=ro", uri=True)
            self.reader.execute("BEGIN")
            self.reader.execute("SELECT count(*) FROM bars").fetchone()
            self.note("DB held by a reader")
            return True
        return False

    def after(self, step: int) -> None:
        """Every fault ends with its step (the rest of that step's scripted failures unserved)."""
        self.w.binance.clear_failures()
        self.w.binance.mangled = 0
        self.w.yahoo.clear_faults()
        self.w.yahoo.clear_patches()
        if self.reader is not None:
            self.reader.rollback()
            self.reader.close()
            self.reader = None


async def drive(world: World, faults: Faults | None) -> tuple[str, float]:
    proc = await world.start()
    sol_at_delisting: pd.DataFrame | None = None
    try:
        await world.poll()  # the rules start at the seed's last bar
        for i, day in enumerate(STEPS):
            world.set_clock(day)
            lasting = faults.before(i) if faults else False
            if faults and i == 4:
                sol_at_delisting = snapshot(world.db_path).bars[("SOL", "1h")]
            text = await world.poll()  # "done": feed errors are counted in it, a DB error would fail it
            if faults:
                faults.after(i)
            if lasting:
                assert "done" in text, f"step {i}: {text}"
                text = await world.poll()
            assert proc.returncode is None, f"step {i}: the service died"
            assert integrity(world.db_path) == "ok", f"step {i}"
            assert "done" in text, f"step {i}: {text}"
        await world.drain()
        before = len(world.bot.sent("sendMessage", chat_id=ADMIN))
        world.bot.push_command("/status", user_id=ADMIN)
        status = (await world.bot.wait_for("sendMessage", lambda c: c.chat_id == ADMIN, count=before + 1))[-1].plain
    finally:
        took = await world.stop(proc)
    if sol_at_delisting is not None:  # nothing written for the delisted symbol, nothing lost either
        pd.testing.assert_frame_equal(snapshot(world.db_path).bars[("SOL", "1h")], sol_at_delisting)
    return status, took


async def test_fault_matrix_feeds_telegram_and_reader(tmp_path: Path, fault_seed: Path) -> None:
    clean = await make_world(tmp_path / "clean", fault_seed)
    faulty = await make_world(tmp_path / "faulty", fault_seed)
    faults = Faults(faulty)
    try:
        (_, _), (status, took) = await asyncio.gather(drive(clean, None), drive(faulty, faults))
    finally:
        await close_world(clean)
        await close_world(faulty)
    want, got = snapshot(clean.db_path), snapshot(faulty.db_path)
    assert integrity(faulty.db_path) == "ok"
    want.bars_equal(got, skip=("SOL",))
    want.corr_equal(got)
    assert got.episodes == want.episodes
    assert all(status == "sent" for chat, _, _, status in got.outbox if chat != str(KICKED)), got.outbox
    for chat in CHATS[:2]:
        assert got.sent_episodes[str(chat)] == want.sent_episodes[str(chat)], chat
        assert delivered(faulty.bot, chat) == delivered(clean.bot, chat), chat
    # The kicked chat: what was queued before the kick was sent up to it, the rest failed (shown
    # in /status); once disabled, nothing more is queued for it.
    kicked = delivered(faulty.bot, KICKED)
    rows = [(text, status) for chat, _, text, status in got.outbox if chat == str(KICKED)]
    failed = [text for text, status in rows if status == "failed"]
    assert [st for _, st in rows] == ["sent"] * len(kicked) + ["failed"] * len(failed) and failed
    assert [text for text, _ in rows] == [t for chat, _, t, _ in want.outbox if chat == str(KICKED)][: len(rows)]
    assert kicked == delivered(clean.bot, KICKED)[: len(kicked)]
    assert "Forbidden: bot was kicked" in status and "no market SOL/USDT" in status
    assert duplicates(faulty.bot) == 0
    # 429s were waited out as told: Binance's Retry-After 2, Telegram's retry_after 2.
    seen = faulty.binance.requests
    i = next(i for i, r in enumerate(seen) if r.status == 429)
    retry = next(r for r in seen[i + 1:] if r.path == seen[i].path and r.query == seen[i].query)
    assert retry.t - seen[i].t >= 2.0
    tg = faulty.bot.sent("sendMessage", chat_id=CHATS[0], ok_only=False)
    j = next(j for j, c in enumerate(tg) if c.status == 429)
    assert tg[j + 1].t - tg[j].t >= 2.0
    log = faulty.logs[-1].read_text()
    assert "malformed JSON in the answer" in log and "retry after 2s" in log and "no market SOL/USDT" in log
    assert "Traceback" not in log
    assert token_leaks(faulty, status) == [] and token_leaks(clean) == []
    expected = sum(len(delivered(clean.bot, c)) for c in CHATS)
    line = (f"fault matrix: {len(faults.injected)} kinds of fault, {faults.served()} faulty answers served "
            f"({', '.join(f'{k} x{v}' for k, v in faults.injected.items())}); alerts expected {expected}, "
            f"delivered {sum(len(delivered(faulty.bot, c)) for c in CHATS)}, failed (chat kicked) {len(failed)}, "
            f"duplicated {duplicates(faulty.bot)}; episodes {len(got.episodes)}; SIGTERM exit 0 after {took:.2f}s")
    print(line)
    if os.environ.get("CORRBOT_FAULT_FIGURES"):
        with open(os.environ["CORRBOT_FAULT_FIGURES"], "a") as fh:
            fh.write(line + "\n")
