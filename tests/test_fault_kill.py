"""The fault matrix, part 2: `kill -9` and SIGTERM at random points of the poll → evaluate →
deliver cycle of a real `corrbot -v run` (52 kills, 10 SIGTERMs), and Telegram gone for minutes.

Two kill chains run side by side, each on its own seeded copy and its own loopback servers,
against a clean chain that walks the same clock with /poll and is never killed. Each trial
moves the clock a few days, writes that stretch of equity bars as the Yahoo feed would have
while the service was down, and starts the service; its start-up cycle fetches the crypto
candles live, updates the correlations, evaluates the rules and delivers. When the cycle
reaches the phase drawn for the trial (fetching, evaluating, delivering) the process gets
SIGKILL after a short random delay — or, every sixth trial, SIGTERM (exit 0 within 10 s, no
traceback). After every stop ``PRAGMA integrity_check`` is ok. A last ordinary run (/poll)
finishes the work; then the bars, correlations and alert episodes equal the clean chain's,
every alert the clean chain delivered reached every chat (as its own message, or folded into
a later catch-up's "episode" message when a kill undid a step), and duplicates — the
at-least-once window between Telegram's answer and the outbox update — are counted: at most
one per chat per stop that landed while delivering.

The trials are forked from a pre-imported interpreter (tests/zygote.py): each is a real process
killed with a real SIGKILL, without ~3 s of imports per start. The Telegram outage
(``CORRBOT_TELEGRAM_DOWN_SECONDS``, default 120) runs beside the chains so its wait costs no
wall time: the Bot API goes away while a poll queues alerts and comes back minutes later;
every alert is then delivered once, in order, and the bot answers commands again.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
from pathlib import Path

import pandas as pd
from botapi_server import ADMIN, parse_html
from fault_world import (
    CHATS,
    World,
    close_world,
    delivered,
    integrity,
    make_world,
    pending,
    snapshot,
    token_leaks,
    write_equities,
)
from service_harness import REPO, env, sigterm, until

END = "2025-07-11"
CHAINS, TRIALS = 2, 31  # per chain: every 6th trial a SIGTERM, the rest kill -9 (52 kills in all)
DOWN = float(os.environ.get("CORRBOT_TELEGRAM_DOWN_SECONDS", "120"))
MARKERS = {"evaluate": "correlations updated", "deliver": "alerts: "}


class Forked:
    """A `corrbot` process forked by tests/zygote.py; enough of asyncio's Process for the harness."""

    def __init__(self, zygote: Zygote, pid: int) -> None:
        self.zygote, self.pid = zygote, pid

    @property
    def returncode(self) -> int | None:
        return self.zygote.exits.get(self.pid)

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        while self.returncode is None:
            await asyncio.sleep(0.01)
        return self.returncode


class Zygote:
    """Forks `corrbot -v run` from one pre-imported interpreter (see tests/zygote.py)."""

    def __init__(self) -> None:
        self.exits: dict[int, int] = {}
        self._pids: asyncio.Queue[int] = asyncio.Queue()

    async def start(self, world: World) -> Zygote:
        extra = world.child_env() | {"PYTHONPATH": str(REPO)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "tests" / "zygote.py"), cwd=REPO, env=env(True, **extra),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
        assert self.proc.stdout is not None
        assert (await asyncio.wait_for(self.proc.stdout.readline(), 120)).strip() == b"ready"
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            word, *rest = raw.decode().split()
            if word == "pid":
                await self._pids.put(int(rest[0]))
            elif word == "exit":
                self.exits[int(rest[0])] = int(rest[1])

    async def spawn(self, world: World, log: Path) -> Forked:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"argv": ["--config", str(world.cfg), "-v", "run"], "log": str(log)})
                              .encode() + b"\n")
        await self.proc.stdin.drain()
        return Forked(self, await asyncio.wait_for(self._pids.get(), 30))

    async def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 30)
        self._reader.cancel()


async def start_forked(world: World, zygote: Zygote) -> Forked:
    log = world.tmp / f"run{len(world.logs)}.log"
    world.logs.append(log)
    return await zygote.spawn(world, log)


def steps() -> list[str]:
    days = pd.date_range("2025-04-03", END, periods=TRIALS).strftime("%Y-%m-%d").tolist()
    return list(dict.fromkeys(days))


class Tail:
    """New text of a log file since the last read (logs at DEBUG grow fast: never reread)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.text = path, 0, ""

    def read(self) -> str:
        if self.path.exists():
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
            self.offset += len(chunk)
            self.text += chunk.decode(errors="replace")
        return self.text


def phase_of(text: str, fetched: bool) -> str:
    """Where the cycle was when the process died: the last marker its log shows."""
    marks = {"evaluate": text.rfind(MARKERS["evaluate"]), "deliver": text.rfind(MARKERS["deliver"]),
             "after the cycle": text.rfind(" done in ")}
    best = max(marks, key=lambda k: marks[k])
    if marks[best] >= 0:
        return best
    return "poll" if fetched else "start-up"


async def clean_chain(world: World, full: Path) -> None:
    proc = await world.start()
    try:
        await world.poll()
        for day in steps():
            world.set_clock(day)
            write_equities(world.db_path, full, day)
            await world.poll()
        await world.drain()
    finally:
        await world.stop(proc)


async def kill_chain(world: World, seed: int, full: Path) -> dict[str, object]:
    rng = random.Random(seed)
    proc = await world.start()  # a clean first cycle starts every rule at the seed's last bar
    await world.poll()
    await world.stop(proc)
    kills: dict[str, int] = {}
    stops: list[float] = []
    zygote = await Zygote().start(world)
    try:
        for i, day in enumerate(steps()):
            await trial(world, zygote, rng, i, day, full, kills, stops)
    finally:
        await zygote.close()
    world.set_clock(END)
    proc = await world.start()  # one last run (an ordinary spawn) finishes the work cleanly
    try:
        await world.poll()
        await world.drain()
    finally:
        stops.append(await world.stop(proc))
    return {"kills": kills, "stops": stops}


async def trial(world: World, zygote: Zygote, rng: random.Random, i: int, day: str, full: Path,
                kills: dict[str, int], stops: list[float]) -> None:
    """One start at ``day``: the start-up cycle (crypto fetched live, the equity bars written as
    the feed would while the service was down) is stopped at a random point of the phase drawn."""
    world.set_clock(day)
    write_equities(world.db_path, full, day)
    asked = len(world.binance.requests)
    sent = sum(len(delivered(world.bot, c)) for c in CHATS)
    proc = await start_forked(world, zygote)
    tail = Tail(world.logs[-1])
    target = rng.choice(["poll", "evaluate", "deliver"])
    for _ in range(1000):  # until the phase is reached (or the cycle is over: then it dies idle)
        text = tail.read()
        if " done in " in text or (target == "poll" and len(world.binance.requests) > asked):
            break
        if target == "evaluate" and MARKERS["evaluate"] in text:
            break
        if target == "deliver" and sum(len(delivered(world.bot, c)) for c in CHATS) > sent:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(rng.uniform(0.0, 0.5 if target == "poll" else 0.05))
    if i % 6 == 5:
        stops.append(await sigterm(proc, world.logs[-1], f"trial {i} ({target})"))  # type: ignore[arg-type]
    else:
        proc.kill()
        await proc.wait()
        where = phase_of(tail.read(), len(world.binance.requests) > asked)
        kills[where] = kills.get(where, 0) + 1
    assert integrity(world.db_path) == "ok", f"trial {i}"


async def telegram_gone(world: World) -> str:
    proc = await world.start()
    try:
        await world.poll()
        world.set_clock("2025-05-26")  # this step queues 15 alerts
        asked = len(world.binance.requests)
        world.bot.push_command("/poll", user_id=ADMIN)
        await until(lambda: len(world.binance.requests) > asked, what="the poll to start")
        await world.bot.down()
        await until(lambda: pending(world.db_path) > 0, what="alerts queued while Telegram is gone")
        await asyncio.sleep(DOWN)
        assert proc.returncode is None and integrity(world.db_path) == "ok"
        queued = pending(world.db_path)
        await world.bot.up()
        await world.drain(timeout=DOWN + 120)
        status = await world.poll()  # the bot answers commands again
        assert "done" in status
    finally:
        took = await world.stop(proc, "after Telegram came back")
    got = snapshot(world.db_path)
    assert all(st == "sent" for *_, st in got.outbox)
    for chat in CHATS:
        want = [t for c, _, t, _ in got.outbox if c == str(chat)]
        assert delivered(world.bot, chat) == [parse_html(t) for t in want], chat  # each once, in order
    assert token_leaks(world) == []
    return f"Telegram gone {DOWN:.0f}s: {queued} alerts waited, all delivered once; stop {took:.2f}s"


async def test_kill_9_and_sigterm_at_random_points_lose_nothing(tmp_path: Path, fault_seed: Path,
                                                                fault_full: Path) -> None:
    base = int(os.environ.get("CORRBOT_KILL_SEED", "11"))
    clean = await make_world(tmp_path / "clean", fault_seed)
    chains = [await make_world(tmp_path / f"chain{k}", fault_seed) for k in range(CHAINS)]
    gone = await make_world(tmp_path / "gone", fault_seed)
    try:
        results = await asyncio.gather(clean_chain(clean, fault_full), telegram_gone(gone),
                                       *(kill_chain(w, base + k, fault_full) for k, w in enumerate(chains)))
    finally:
        for w in (clean, *chains, gone):
            await close_world(w)
    want = snapshot(clean.db_path)
    kills: dict[str, int] = {}
    stops: list[float] = []
    lost = dup = expected = got_n = 0
    for w, res in zip(chains, results[2:], strict=True):
        assert isinstance(res, dict)
        for k, v in res["kills"].items():  # type: ignore[union-attr]
            kills[k] = kills.get(k, 0) + v
        stops += res["stops"]  # type: ignore[arg-type]
        got = snapshot(w.db_path)
        assert integrity(w.db_path) == "ok"
        want.bars_equal(got)
        want.corr_equal(got)
        assert got.episodes == want.episodes
        assert all(status == "sent" for *_, status in got.outbox)
        for chat in CHATS:
            have = got.sent_episodes.get(str(chat), set())
            for rule, key, fired, kind in want.sent_episodes.get(str(chat), set()):
                expected += 1
                # A kill before a step committed folds that step into the next one's catch-up:
                # a fire and its resolve may then arrive as one "episode" message.
                ok = (rule, key, fired, kind) in have or (rule, key, fired, "episode") in have or (
                    kind == "episode" and {(rule, key, fired, "fire"), (rule, key, fired, "resolve")} <= have)
                lost += not ok
            texts = delivered(w.bot, chat)
            got_n += len(set(texts))
            dup += len(texts) - len(set(texts))
        assert token_leaks(w) == []
    n_kills = sum(kills.values())
    line = (f"kill/SIGTERM trials: {n_kills} kill -9 (at {dict(sorted(kills.items()))}), {len(stops)} SIGTERM "
            f"(exit 0, max {max(stops):.2f}s); alerts expected {expected}, lost {lost}; messages delivered "
            f"{got_n}, duplicated {dup} | {results[1]}")
    print(line)
    if os.environ.get("CORRBOT_FAULT_FIGURES"):
        with open(os.environ["CORRBOT_FAULT_FIGURES"], "a") as fh:
            fh.write(line + "\n")
    assert n_kills >= 50
    assert lost == 0, line
    # A SIGTERM cancels a send in flight too (its final round is bounded): same window.
    assert dup <= (kills.get("deliver", 0) + len(stops)) * len(CHATS), line
