"""Benchmark of /corr reply latency through the real Application and the loopback Bot API.

Run ``.venv/bin/python bench/bench_bot.py [rounds] [chats]`` (default 20 rounds × 20 chats).
Each round, ``chats`` private chats send /corr at the same instant; the latency of one reply
is the time from its update being made available by the server (queued for getUpdates) to
the sendMessage for that chat arriving at the server. This covers the long-poll pickup,
access check, argument parsing, the two SQLite queries in worker threads, formatting, the
AIORateLimiter and the HTTP round trip. Prints p50/p90/p99/max. Nothing is asserted.

Two placements of the loopback Bot API, in the same run:

- *in the bot's loop* (the tests' `BotHarness`): the fake Telegram parses every request,
  checks the HTML and builds its answers on the bot's own event loop, so each reply also
  waits for the server's work on the other replies — what this bench measured before;
- *in its own process*: the same server, alone in a child process, as Telegram is in
  production (another machine). Timestamps are taken in the child with ``time.monotonic``,
  which is one clock for every process on Linux. Measured twice, round for round in turn
  so both see the same machine: with the bot's HTTP transport (`bot.transport`, aiohttp)
  and with PTB's default httpx transport, the baseline. For each, the CPU time per reply
  (Linux /proc, 10 ms ticks summed over all replies) of the bot's event loop thread, of its
  reader threads (the SQLite queries) and of the server's process: on a 2-core machine the
  three share the cores, so the last reply of a burst waits for roughly their sum × 20.

Data: the demo database (real daily data, 2019–2025), built in a temporary directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from botapi_server import TOKEN, BotApiServer, BotHarness, demo_config  # noqa: E402


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


# ---- the server alone in a child process ------------------------------------------------------


def _serve(conn: Connection) -> None:
    """Child: run the Bot API server; answer ("push", users) with the push times and
    ("sent", start) with [(chat_id, t)] of the accepted sendMessage calls since ``start``."""

    async def main() -> None:
        server = await BotApiServer(TOKEN).start()
        conn.send(server.port)
        loop = asyncio.get_running_loop()
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg[0] == "push":
                conn.send({u: server.pushed_at[server.push_command("/corr", user_id=u)] for u in msg[1]})
            elif msg[0] == "count":
                conn.send(len(server.calls))
            elif msg[0] == "sent":
                conn.send([(int(c.chat_id), c.t) for c in server.calls[msg[1]:]
                           if c.method == "sendMessage" and c.status == 200])
            else:
                await server.stop()
                conn.send("bye")
                return

    asyncio.run(main())


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_of(stat_path: str) -> float:
    """user + system CPU seconds from a /proc .../stat file."""
    with open(stat_path) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def thread_cpu() -> dict[int, float]:
    """CPU seconds of every thread of this process, by native thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # the thread ended meanwhile
            out[int(tid)] = _cpu_of(f"/proc/self/task/{tid}/stat")
    return out


class AppOnly:
    """The Application on a private loop in a thread, talking to a server elsewhere."""

    def __init__(self, cfg: Any, port: int, *, httpx: bool = False) -> None:
        from core.config import TelegramConfig

        self.httpx = httpx
        tg = cfg.telegram.model_dump()
        tg.update(base_url=f"http://127.0.0.1:{port}/bot", base_file_url=f"http://127.0.0.1:{port}/file/bot")
        self.cfg = cfg.model_copy(update={"telegram": TelegramConfig(**tg)})
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(60)

    def cpu(self, snap: dict[int, float]) -> tuple[float, float]:
        """(event loop thread, reader threads) CPU seconds in ``snap``."""
        # The threads of this app's own reader pool (storage.readers.QueryRunner).
        readers = [t.native_id for t in self.api.db._pool._threads]  # type: ignore[attr-defined]
        return snap.get(self.thread.native_id or 0, 0.0), sum(snap.get(t or 0, 0.0) for t in readers)

    async def _start(self) -> None:
        from telegram.request import HTTPXRequest

        from bot.app import build_application, start
        from service.api import ServiceApi

        # PTB's own transport and pool sizes, as `Application.builder()` makes them.
        requests = (HTTPXRequest(connection_pool_size=256), HTTPXRequest(connection_pool_size=1)) \
            if self.httpx else None
        self.api = ServiceApi(self.cfg)
        self.app = build_application(self.cfg, TOKEN, self.api, requests=requests)
        await start(self.app)  # the long poll of production (10 s), not the tests' 1 s

    def close(self) -> None:
        from bot.app import stop

        asyncio.run_coroutine_threadsafe(stop(self.app), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


# ---- one measurement ------------------------------------------------------------------------


class Target:
    """Where a round is sent: push the updates, count the calls, read the sends since a count."""

    def __init__(self, push: Callable[[list[int]], dict[int, float]], count: Callable[[], int],
                 sent: Callable[[int], list[tuple[int, float]]]) -> None:
        self.push, self.count, self.sent = push, count, sent
        self.latencies: list[float] = []

    def round(self, users: list[int], keep: bool) -> None:
        start = self.count()
        pushed = self.push(users)
        deadline = time.monotonic() + 60
        got: dict[int, float] = {}
        while len(got) < len(users) and time.monotonic() < deadline:
            time.sleep(0.005)
            got = dict(self.sent(start))
        if keep:
            self.latencies += [(got[u] - pushed[u]) * 1000 for u in users if u in got]
        time.sleep(1.1)  # let the 30 msg/s limiter refill: each round is a fresh burst


WARM_UP = 2  # rounds: the first bursts open the reader connections and fill their page caches


def measure(rounds: int, users: list[int], targets: list[Target], *, warm_up: int = WARM_UP) -> None:
    """``rounds`` rounds on each target, taking the targets in turn round by round, after
    ``warm_up`` rounds on each that are not counted."""
    for i in range(-warm_up, rounds):
        for t in targets:
            t.round(users, keep=i >= 0)


def in_loop(cfg: Any, rounds: int, users: list[int]) -> list[float]:
    bot = BotHarness(cfg)
    srv = bot.server
    target = Target(
        lambda us: {u: srv.pushed_at[srv.push_command("/corr", user_id=u)] for u in us},
        lambda: len(srv.calls),
        lambda start: [(int(c.chat_id), c.t) for c in srv.calls[start:]
                       if c.method == "sendMessage" and c.status == 200],
    )
    try:
        measure(rounds, users, [target])
        return target.latencies
    finally:
        bot.close()


class ServerProcess:
    """The loopback Bot API alone in a child process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # a clean child: no copy of this process's loops
        self.parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        self.port = int(self.parent.recv())

    def ask(self, *msg: Any) -> Any:
        self.parent.send(msg)
        return self.parent.recv()

    def target(self) -> Target:
        return Target(lambda us: self.ask("push", us), lambda: self.ask("count"),
                      lambda start: self.ask("sent", start))

    def cpu(self) -> float:
        return _cpu_of(f"/proc/{self.proc.pid}/stat")

    def close(self) -> None:
        self.ask("stop")
        self.proc.join(10)


@dataclass
class Result:
    latencies: list[float]
    cpu_ms: tuple[float, float, float] | None = None  # per reply: event loop, readers, server


def own_process(cfg: Any, rounds: int, users: list[int]) -> tuple[Result, Result]:
    """(the bot's transport, PTB's httpx transport), rounds taken in turn."""
    servers = [ServerProcess(), ServerProcess()]
    apps = [AppOnly(cfg, servers[0].port), AppOnly(cfg, servers[1].port, httpx=True)]
    targets = [s.target() for s in servers]
    try:
        measure(0, users, targets)  # the warm-up rounds, outside the CPU accounting
        before, server_before = thread_cpu(), [s.cpu() for s in servers]
        measure(rounds, users, targets, warm_up=0)
        after, server_after = thread_cpu(), [s.cpu() for s in servers]
        out = []
        for app, target, s0, s1 in zip(apps, targets, server_before, server_after, strict=True):
            n = max(len(target.latencies), 1)
            (l0, r0), (l1, r1) = app.cpu(before), app.cpu(after)
            out.append(Result(target.latencies, ((l1 - l0) * 1000 / n, (r1 - r0) * 1000 / n, (s1 - s0) * 1000 / n)))
        return out[0], out[1]
    finally:
        for app in apps:
            app.close()
        for srv in servers:
            srv.close()


def report(title: str, result: Result, n: int) -> None:
    latencies = result.latencies
    print(f"{title} ({len(latencies)}/{n} replies)")
    print(f"  p50 {percentile(latencies, 50):7.1f} ms   p90 {percentile(latencies, 90):7.1f} ms   "
          f"p99 {percentile(latencies, 99):7.1f} ms   max {max(latencies):7.1f} ms   "
          f"mean {statistics.fmean(latencies):.1f} ms")
    if result.cpu_ms is not None:
        loop, readers, server = result.cpu_ms
        print(f"  CPU per reply: bot event loop {loop:.2f} ms, reader threads {readers:.2f} ms "
              f"(bot {loop + readers:.2f} ms); the server's process {server:.2f} ms")


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    chats = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    users = [10_000 + i for i in range(chats)]
    t0 = time.perf_counter()
    cfg = demo_config(allowed_user_ids=users)
    print(f"demo database ready in {time.perf_counter() - t0:.1f}s: {cfg.storage.path}")
    print(f"/corr latency, {chats} chats at once × {rounds} rounds (after {WARM_UP} warm-up rounds)")
    report("server in the bot's event loop (the tests' harness; before)", Result(in_loop(cfg, rounds, users)),
           rounds * chats)
    ours, httpx = own_process(cfg, rounds, users)
    report("server in its own process (as Telegram is), PTB's httpx transport (before)", httpx, rounds * chats)
    report("server in its own process (as Telegram is), bot.transport on aiohttp (now)", ours, rounds * chats)


if __name__ == "__main__":
    main()
