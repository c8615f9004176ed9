"""systemd's notify protocol, end to end: a real `corrbot run` subprocess talks to an AF_UNIX
datagram socket bound here and passed as NOTIFY_SOCKET, as systemd would.

READY=1 comes once the bot polls Telegram (after setMyCommands reached the loopback Bot
API), WATCHDOG=1 only after a poll cycle finished, STATUS= says what the service is doing,
and STOPPING=1 arrives on SIGTERM before the exit.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

from botapi_server import TOKEN, BotApiServer
from service_harness import closed_url, sigterm, spawn
from test_service_stop import write_config

from service.sdnotify import Notifier


class Listener:
    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.setblocking(False)
        self.messages: list[list[str]] = []

    async def next(self, timeout: float = 60.0) -> list[str]:
        data = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(self.sock, 4096), timeout)
        self.messages.append(data.decode().split("\n"))
        return self.messages[-1]

    async def until(self, line: str, timeout: float = 60.0) -> list[str]:
        while True:
            msg = await self.next(timeout)
            if line in msg:
                return msg

    def close(self) -> None:
        self.sock.close()


async def test_ready_status_watchdog_stopping(tmp_path: Path) -> None:
    address = f"@corrbot-test-{os.getpid()}"  # Linux's abstract namespace, as systemd may use
    listener = Listener(address)
    server = await BotApiServer(TOKEN).start()
    log = tmp_path / "run.log"
    try:
        cfg = write_config(tmp_path, closed_url(), telegram_url=server.base_url)  # cycles end fast
        proc = await spawn(cfg, log, token=True, NOTIFY_SOCKET=address)
        ready = await listener.until("READY=1")
        assert server.sent("setMyCommands"), "READY=1 before the bot was up"
        assert "STATUS=polling" in ready
        beat = await listener.until("WATCHDOG=1")  # the startup poll cycle finished
        assert "poll cycle 1 done" in log.read_text()
        assert "STATUS=polling; 0 alerts firing; outbox 0" in beat, beat
        await sigterm(proc, log, "with NOTIFY_SOCKET")
        stopping = await listener.until("STOPPING=1", timeout=5)
        assert "STATUS=stopping" in stopping
        every = [line for msg in listener.messages for line in msg]
        assert every.count("READY=1") == 1
    finally:
        listener.close()
        await server.stop()


def test_a_socket_path_and_no_socket(tmp_path: Path) -> None:
    listener = Listener(str(tmp_path / "notify"))
    try:
        Notifier(str(tmp_path / "notify")).send("STATUS=hello")
        assert listener.sock.recv(100) == b"STATUS=hello"
        quiet = Notifier("")
        assert not quiet.enabled
        quiet.ready("ignored")  # no socket: nothing sent, nothing raised
        Notifier(str(tmp_path / "nobody-listens")).watchdog()  # a failed send never raises
    finally:
        listener.close()
