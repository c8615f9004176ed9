"""Start-to-ready time and memory of `corrbot run` with config.example.toml.

Run ``.venv/bin/python bench/bench_start.py [runs]``. Each run starts a real
``corrbot run`` process (what the console script runs, from this checkout) on the example
config, with the Telegram Bot API served on loopback (`tests/botapi_server.py`) and the
market-data feeds pointed at a closed
local port (no network: the startup poll fails fast, as offline). The clock stops at the
systemd ``READY=1`` datagram (sent once the bot is polling Telegram); the resident memory
(VmRSS, and the peak VmHWM) is read from /proc at that moment; then SIGTERM. The database is
new (the first run, not counted, creates it). Prints each run and the medians. Figures only.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from botapi_server import TOKEN, BotApiServer  # noqa: E402


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def example_config(tmp: Path, telegram_url: str) -> Path:
    text = (REPO / "config.example.toml").read_text(encoding="utf-8")
    dead = closed_url()
    text = re.sub(r'(?m)^path = "corrbot.db"', f'path = "{tmp / "corrbot.db"}"', text)
    text = text.replace("[feeds]\n", f'[feeds]\nyahoo_base_url = "{dead}"\nccxt_urls = {{ binance = "{dead}" }}\n', 1)
    text = re.sub(r'(?m)^base_url = "https://api.telegram.org/bot"', f'base_url = "{telegram_url}"', text)
    path = tmp / "corrbot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def proc_mem(pid: int) -> tuple[int, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024


async def one_run(cfg: Path, server: BotApiServer) -> tuple[float, int, int]:
    address = f"@corrbot-bench-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + address[1:].encode())
    sock.setblocking(False)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(cfg.parent), "PYTHONPATH": str(REPO),
           "CORRBOT_TELEGRAM_TOKEN": TOKEN, "NOTIFY_SOCKET": address}
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        # The console script's own code (`service.entry:main`), of this checkout
        sys.executable, "-c", "import sys; from service.entry import main; sys.exit(main())",
        "--config", str(cfg), "run",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, env=env, cwd=cfg.parent)
    try:
        while True:
            data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(sock, 4096), 120)
            if "READY=1" in data.decode().split("\n"):
                break
        ready = time.perf_counter() - t0
        rss, hwm = proc_mem(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        sock.close()
    return ready, rss, hwm


async def main() -> None:
    runs = int(next((a for a in sys.argv[1:] if a.isdigit()), "5"))
    server = await BotApiServer(TOKEN).start()
    try:
        with tempfile.TemporaryDirectory(prefix="corrbot-start-") as tmp_name:
            tmp = Path(tmp_name)
            cfg = example_config(tmp, server.base_url)
            results = [await one_run(cfg, server) for _ in range(runs + 1)][1:]  # first one warms the disk cache
    finally:
        await server.stop()
    for r, rss, hwm in results:
        print(f"  ready in {r:5.2f} s, RSS {rss} MB (peak {hwm} MB)")
    print(f"corrbot run, config.example.toml, new database: "
          f"start to READY=1 median {statistics.median(r for r, _, _ in results):.2f} s, "
          f"RSS at ready median {statistics.median(m for _, m, _ in results):.0f} MB "
          f"(peak {statistics.median(h for _, _, h in results):.0f} MB), {runs} runs")


if __name__ == "__main__":
    asyncio.run(main())
