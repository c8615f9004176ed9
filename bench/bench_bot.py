"""Benchmark of /corr reply latency through the real Application and the loopback Bot API.

Run ``.venv/bin/python bench/bench_bot.py [rounds] [chats]`` (default 10 rounds × 20 chats).
Each round, ``chats`` private chats send /corr at the same instant; the latency of one reply
is the time from its update being made available by the server (queued for getUpdates) to
the sendMessage for that chat arriving at the server. This covers the long-poll pickup,
access check, argument parsing, the two SQLite queries in worker threads, formatting, the
AIORateLimiter and the HTTP round trip. Prints p50/p90/p99/max. Nothing is asserted.

Data: the demo database (real daily data, 2019–2025), built in a temporary directory.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from botapi_server import BotHarness, demo_config  # noqa: E402


def percentile(xs: list[float], p: float) -> float:
    s = sorted(xs)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    chats = int(sys.argv[2]) if len(sys.argv) > 2 else 20
    users = [10_000 + i for i in range(chats)]
    t0 = time.perf_counter()
    cfg = demo_config(allowed_user_ids=users)
    print(f"demo database ready in {time.perf_counter() - t0:.1f}s: {cfg.storage.path}")
    bot = BotHarness(cfg)
    latencies: list[float] = []
    try:
        bot.ask("/corr", user_id=users[0])  # warm-up: imports, first connections
        for _ in range(rounds):
            start = len(bot.server.calls)
            pushed = {u: bot.server.pushed_at[bot.server.push_command("/corr", user_id=u)]
                      for u in users}

            def done(start: int = start) -> dict[int, float]:
                return {int(c.chat_id): c.t for c in bot.server.calls[start:]
                        if c.method == "sendMessage" and c.status == 200}

            deadline = time.monotonic() + 60
            while len(done()) < chats and time.monotonic() < deadline:
                time.sleep(0.005)
            got = done()
            latencies += [(got[u] - pushed[u]) * 1000 for u in users if u in got]
            time.sleep(1.1)  # let the 30 msg/s limiter refill: each round is a fresh burst
    finally:
        bot.close()
    n = rounds * chats
    print(f"/corr latency, {chats} chats at once × {rounds} rounds ({len(latencies)}/{n} replies)")
    print(f"  p50 {percentile(latencies, 50):7.1f} ms")
    print(f"  p90 {percentile(latencies, 90):7.1f} ms")
    print(f"  p99 {percentile(latencies, 99):7.1f} ms")
    print(f"  max {max(latencies):7.1f} ms   mean {statistics.fmean(latencies):.1f} ms")


if __name__ == "__main__":
    main()
