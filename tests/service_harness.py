"""Helpers shared by the tests that run `corrbot` as real subprocesses (service e2e, stop,
fault matrix): the child's environment, starting `corrbot -v run` and CLI commands, waiting
on log lines, a SIGTERM that checks the clean exit, and a TCP "black hole" server."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

from botapi_server import ADMIN, TOKEN, BotApiServer

REPO = Path(__file__).resolve().parents[1]
STOP_BOUND = 10.0  # seconds from SIGTERM to exit 0: the one timing bound of the suite (issue 8)


def env(token: bool = True, **extra: str) -> dict[str, str]:
    """The caller's environment without its token or systemd socket; ours added if ``token``."""
    out = {k: v for k, v in os.environ.items() if k not in ("CORRBOT_TELEGRAM_TOKEN", "NOTIFY_SOCKET")}
    out["PYTHONUNBUFFERED"] = "1"
    if token:
        out["CORRBOT_TELEGRAM_TOKEN"] = TOKEN
    return out | extra


async def spawn(cfg: Path, log: Path, *, token: bool = True, **extra: str) -> asyncio.subprocess.Process:
    """`corrbot --config cfg -v run` with stdout and stderr appended to ``log``."""
    with log.open("ab") as fh:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "--config", str(cfg), "-v", "run", cwd=REPO,
            stdout=fh, stderr=fh, env=env(token, **extra))


async def corrbot(cfg: Path, *args: str, check: bool = True, **extra: str) -> str:
    """One CLI command to completion; its output (stdout and stderr together)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "--config", str(cfg), *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env(True, **extra),
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    text = out.decode()
    assert not check or proc.returncode == 0, text
    return text


async def until(pred: Callable[[], object], timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def logged(log: Path, text: str) -> bool:
    return text in log.read_text(errors="replace")


async def poll(server: BotApiServer, timeout: float = 90, *, may_fail: bool = False) -> str:
    """/poll from the admin until a whole cycle ran (the startup cycle may be running); the
    cycle must succeed unless ``may_fail``."""
    for _ in range(60):
        before = len(server.sent("sendMessage", chat_id=ADMIN))
        server.push_command("/poll", user_id=ADMIN)
        calls = await server.wait_for("sendMessage", lambda c: c.chat_id == ADMIN, count=before + 1, timeout=timeout)
        text = calls[-1].plain
        if "already running" not in text:
            assert "done" in text or (may_fail and "failed" in text), text
            return text
        await asyncio.sleep(0.3)
    raise AssertionError("no poll cycle could start")


async def sigterm(proc: asyncio.subprocess.Process, log: Path, what: str) -> float:
    """SIGTERM, then: exit 0 within the bound, no traceback, "corrbot stopped" logged last."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), STOP_BOUND + 20)
    finally:
        if proc.returncode is None:
            proc.kill()
    took = time.monotonic() - t0
    text = log.read_text(errors="replace")
    print(f"SIGTERM {what}: exit {proc.returncode} after {took:.2f}s")
    assert proc.returncode == 0, text[-4000:]
    assert took < STOP_BOUND, f"{what}: {took:.1f}s\n{text[-4000:]}"
    assert "Traceback" not in text, text[-4000:]
    if "corrbot stopping" in text:  # stopped after starting (not while still importing)
        assert text.count("corrbot stopped") == text.count("corrbot stopping"), text[-4000:]
        assert "corrbot stopped" in text.rstrip().splitlines()[-1], text[-4000:]
    return took


class BlackHole:
    """Accepts TCP connections and never sends a byte back."""

    def __init__(self) -> None:
        self.accepted = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> BlackHole:
        self._server = await asyncio.start_server(self._conn, "127.0.0.1", 0)
        return self

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self._writers.append(writer)  # kept open: the client waits for an answer that never comes

    async def stop(self) -> None:
        for w in self._writers:
            w.close()
        if self._server is not None:
            self._server.close()


def closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
