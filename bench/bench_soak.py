"""Soak: a simulated week of `corrbot run`'s poll cycle on a fake clock, and start-to-ready.

The example config's watch list and rules (config.example.toml), against the loopback
Binance and Yahoo servers of tests/ (real ccxt and yfinance clients, real SQLite): crypto
every 5 minutes around the clock, equities every 15 minutes while the NYSE is open plus the
slot after the close — the runner's own `equities_due` — then correlations, the alert rules
and a console delivery round, then the storage upkeep and the heap trim (`service.heap`): the cycle
`service.cycle.PollCycle` runs. The clock is the servers' (what bars exist) and the cycle's
``now``; nothing sleeps.

Reported: RSS at start, after the first (backfill) cycle and at the end, per simulated day;
DB growth per day; cycles, bars and alerts; cycle time percentiles. Then `corrbot run`
start-to-ready (READY=1 on NOTIFY_SOCKET, the bot polling a loopback Bot API), median of 5,
beside two baselines from the same run: a bare interpreter and one that only imports the
libraries corrbot needs.

    .venv/bin/python bench/bench_soak.py [--days 7] [--start 2025-04-07]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from binance_server import BinanceServer  # noqa: E402
from botapi_server import TOKEN, BotApiServer  # noqa: E402
from yahoo_server import YahooServer  # noqa: E402

from bot.delivery import ConsoleDelivery  # noqa: E402
from core.config import load_config  # noqa: E402
from service.evaluate import evaluate  # noqa: E402
from service.heap import trim_heap  # noqa: E402
from service.logsetup import configure  # noqa: E402
from service.pipeline import compact_recent, update_correlations  # noqa: E402
from service.runner import equities_due  # noqa: E402
from service.sync import poll_crypto, poll_equities  # noqa: E402
from storage.db import open_db  # noqa: E402

DATA = REPO / "tests" / "data"
STEP = 300  # crypto every 5 minutes


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def example_config(db: Path, binance: str, yahoo: str) -> str:
    """config.example.toml as shipped, on loopback feeds, no retries (they would only sleep)."""
    text = (REPO / "config.example.toml").read_text()
    edits = {
        'path = "corrbot.db"': f'path = "{db}"',
        "retries = 4 ": "retries = 0 ",
        '# yahoo_base_url = "http://127.0.0.1:8080"': f'yahoo_base_url = "{yahoo}"',
        '# ccxt_urls = { binance = "http://127.0.0.1:8081" }': f'ccxt_urls = {{ binance = "{binance}" }}',
    }
    for old, new in edits.items():
        if old not in text:
            raise SystemExit(f"config.example.toml changed ({old!r} is gone): update bench_soak.example_config")
        text = text.replace(old, new, 1)
    return text


def soak_config(tmp: Path, binance: str, yahoo: str) -> Path:
    path = tmp / "corrbot.toml"
    path.write_text(example_config(tmp / "soak.db", binance, yahoo))
    return path


def serve_feeds(conn: Connection, t0: int) -> None:
    """The loopback exchange and Yahoo, in a child process so the service's RSS is its own.
    The parent sends the simulated time before each cycle; None ends it."""

    async def main() -> None:
        binance = await BinanceServer(DATA / "intraday/BTCUSDT_1h_binance_2023-2026.csv", now_ms=t0 * 1000).start()
        with YahooServer(DATA, now=t0) as yahoo:
            conn.send((binance.url, yahoo.base_url))
            loop = asyncio.get_running_loop()
            while (now := await loop.run_in_executor(None, conn.recv)) is not None:
                binance.now_ms, yahoo.now = now * 1000, now
                binance.requests.clear()  # the servers' request logs would grow all week
                yahoo.log.clear()
                conn.send("ok")
        await binance.stop()

    asyncio.run(main())


async def simulate(days: float, start: str, tmp: Path) -> None:
    t0 = int(datetime.fromisoformat(start).replace(tzinfo=UTC).timestamp())
    conn, child_end = multiprocessing.get_context("fork").Pipe()
    feeds = multiprocessing.get_context("fork").Process(target=serve_feeds, args=(child_end, t0), daemon=True)
    feeds.start()
    binance_url, yahoo_url = conn.recv()
    cfg = load_config(soak_config(tmp, binance_url, yahoo_url))
    rss0 = rss_first = rss_mb()
    db = open_db(cfg.storage.path)
    console = ConsoleDelivery(cfg.storage.path)
    cycle_s: list[float] = []
    per_day: list[tuple[int, float, float]] = []
    fired = resolved = messages = bars = 0
    devnull = open(os.devnull, "w")  # noqa: SIM115 — the console notifier prints each push
    real_stdout, sys.stdout = sys.stdout, devnull
    try:
        for i in range(int(days * 86400) // STEP + 1):
            now = t0 + i * STEP
            conn.send(now)
            conn.recv()
            c0 = time.perf_counter()
            res = await poll_crypto(db, cfg, now_ms=now * 1000)
            if equities_due(now, cfg):
                res += await poll_equities(db, cfg, now=datetime.fromtimestamp(now, UTC))
            bars += sum(r.inserted for r in res)
            update_correlations(db, cfg, compact=False)
            rep = evaluate(db, cfg, ["console"], now=now)
            fired, resolved, messages = fired + rep.fired, resolved + rep.resolved, messages + rep.messages
            await console.round()
            compact_recent(db, cfg)  # the upkeep after the alerts, as the service does
            trim_heap()
            cycle_s.append(time.perf_counter() - c0)
            if i == 0:
                rss_first = rss_mb()
            if i and i % (86400 // STEP) == 0:
                per_day.append((i // (86400 // STEP), rss_mb(), Path(cfg.storage.path).stat().st_size / 1e6))
    finally:
        sys.stdout = real_stdout
        devnull.close()
        console.close()
        db.conn.close()
        conn.send(None)
        feeds.join(30)
    first, rest = cycle_s[0], sorted(cycle_s[1:])
    print(f"simulated {days} days from {start}: {len(cycle_s)} cycles, {bars} bars stored, "
          f"{fired} alerts fired, {resolved} resolved, {messages} messages delivered to the console")
    print(f"  first cycle (backfill of {cfg.feeds.backfill_days} days): {first:.1f} s; then per cycle "
          f"p50 {rest[len(rest) // 2] * 1000:.0f} ms, p95 {rest[int(len(rest) * .95)] * 1000:.0f} ms, "
          f"max {rest[-1] * 1000:.0f} ms; wall {sum(cycle_s):.0f} s")
    print(f"  RSS of the service's process: start {rss0:.0f} MB, after the backfill cycle {rss_first:.0f} MB, "
          f"peak {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    prev = None
    for day, rss, size in per_day:
        grow = f", +{size - prev:.2f} MB that day" if prev is not None else ""
        print(f"  day {day}: RSS {rss:.0f} MB, DB {size:.1f} MB{grow}")
        prev = size


def _rss_of(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        return next(int(ln.split()[1]) / 1024 for ln in fh if ln.startswith("VmRSS:"))


READY_RSS: list[float] = []


def _ready_seconds(cmd: list[str], env: dict[str, str], sock_addr: str | None) -> float:
    sock = None
    if sock_addr:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(b"\0" + sock_addr[1:].encode())
        sock.settimeout(60)
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if sock is None:
            proc.wait(60)
            return time.perf_counter() - t
        while b"READY=1" not in sock.recv(4096):
            pass
        took = time.perf_counter() - t
        READY_RSS.append(_rss_of(proc.pid))
        return took
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        if sock is not None:
            sock.close()


async def start_to_ready(tmp: Path, trials: int = 5) -> None:
    server = await BotApiServer(TOKEN).start()
    cfg = tmp / "ready.toml"
    dead = "http://127.0.0.1:9"  # the start-up poll fails at once; READY does not wait for it
    text = example_config(tmp / "r.db", dead, dead)
    default_url = 'base_url = "https://api.telegram.org/bot"'
    assert default_url in text, "config.example.toml's [telegram] base_url moved: update the bench"
    cfg.write_text(text.replace(default_url, f'base_url = "{server.base_url}"', 1))
    corrbot = str(Path(sys.executable).with_name("corrbot"))
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    env |= {"CORRBOT_TELEGRAM_TOKEN": TOKEN, "CORRBOT_CONFIG": str(cfg)}
    loop = asyncio.get_running_loop()
    rows = []
    for label, cmd, notify in [
        ("python -c pass (baseline)", [sys.executable, "-c", "pass"], False),
        ("import pandas, ccxt, yfinance, telegram, matplotlib (baseline)",
         [sys.executable, "-c", "import pandas, ccxt, yfinance, telegram, matplotlib, sqlite_utils"], False),
        ("corrbot run: start -> READY=1", [corrbot, "run"], True),
    ]:
        times = []
        for n in range(trials):
            addr = f"@corrbot-soak-{os.getpid()}-{n}" if notify else None
            e = env | ({"NOTIFY_SOCKET": addr} if addr else {})
            times.append(await loop.run_in_executor(None, _ready_seconds, cmd, e, addr))
        rows.append((label, statistics.median(times), min(times), max(times)))
    await server.stop()
    print(f"start-to-ready, {trials} runs each (median / min / max):")
    for label, med, lo, hi in rows:
        print(f"  {label:<62} {med:5.2f} s  {lo:5.2f}  {hi:5.2f}")
    print(f"  corrbot's own share: {rows[2][1] - rows[1][1]:.2f} s over importing its libraries")
    print(f"  corrbot run RSS at READY=1: median {statistics.median(READY_RSS):.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=7)
    ap.add_argument("--start", default="2025-04-07")
    ap.add_argument("--trials", type=int, default=5)
    args = ap.parse_args()
    configure(verbose=False, service=True)  # the service's log policy (library warnings out)…
    logging.getLogger().setLevel(logging.WARNING)  # …without its per-cycle INFO lines
    tmp = Path(tempfile.mkdtemp(prefix="corrbot-soak-"))
    try:
        asyncio.run(simulate(args.days, args.start, tmp))
        asyncio.run(start_to_ready(tmp, args.trials))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
