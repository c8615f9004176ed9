"""service.runner: the scheduled poll cycle with and without a Telegram token, clean stops.

Feeds point at a closed loopback port, so each cycle runs offline and records feed errors.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from botapi_server import ADMIN, TOKEN, BotApiServer, demo_config

from core.config import Config, FeedsConfig, StorageConfig, TelegramConfig
from core.errors import ConfigError, CorrbotError
from service.runner import run

REPO = Path(__file__).resolve().parents[1]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline_config(tmp_path: Path, **telegram: Any) -> Config:
    base = demo_config(**telegram)
    path = tmp_path / "run.db"
    src = sqlite3.connect(base.storage.path)
    with sqlite3.connect(path) as dst:
        src.backup(dst)
    src.close()
    dead = f"http://127.0.0.1:{_closed_port()}"
    feeds = FeedsConfig(retries=0, backoff_seconds=0.0, timeout_seconds=2.0, poll_minutes=60,
                        yahoo_base_url=dead, ccxt_urls={"binance": dead})
    return base.model_copy(update={"storage": StorageConfig(path=path), "feeds": feeds})


async def _wait(pred: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_console_mode_runs_cycles_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("CORRBOT_TELEGRAM_TOKEN", raising=False)
    cfg = offline_config(tmp_path)
    stop = asyncio.Event()
    caplog.set_level("INFO", logger="corrbot.runner")
    task = asyncio.create_task(run(cfg, stop_event=stop))
    await _wait(lambda: "poll cycle" in caplog.text)
    stop.set()
    await asyncio.wait_for(task, 20)
    assert "console mode" in caplog.text and "corrbot stopped" in caplog.text
    assert "poll cycle 1 done" in caplog.text, caplog.text


async def test_bot_mode_answers_schedules_and_polls_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = await BotApiServer(TOKEN).start()
    cfg = offline_config(tmp_path, base_url=server.base_url, admin_user_ids=[ADMIN],
                         alert_chat_ids=[-4242])
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", TOKEN)
    stop = asyncio.Event()
    task = asyncio.create_task(run(cfg, stop_event=stop))
    try:
        await server.wait_for("setMyCommands", timeout=60)
        server.push_command("/status", user_id=ADMIN)
        await server.wait_for("sendMessage", lambda c: c.chat_id == ADMIN, timeout=60)
        await server.idle()
        # With every feed failing, the admin's /status can run past 4096 characters: two parts.
        status = "\n".join(c.plain for c in server.sent("sendMessage", chat_id=ADMIN))
        assert "poll crypto: next" in status and "poll equities: next" in status
        assert "deliver: next" in status
        server.push_command("/poll", user_id=ADMIN)
        polled = await server.wait_for(
            "sendMessage", lambda c: c.chat_id == ADMIN and "poll cycle" in c.plain, timeout=60)
        assert "done" in polled[0].plain or "already running" in polled[0].plain
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await server.stop()
    # Chats seeded from the config (other tests' /subscribe may have added rows to the shared demo DB).
    rows = sqlite3.connect(cfg.storage.path).execute(
        "SELECT configured FROM push_chats WHERE origin = 'config'").fetchall()
    assert rows == [("-4242",)]
    assert TelegramConfig  # the config model the runner reads


async def test_rejected_token_is_one_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = await BotApiServer(TOKEN).start()
    wrong = "5081234567:AAF-thisIsNotTheTokenTheServerKnows_99"
    cfg = offline_config(tmp_path, base_url=server.base_url)
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", wrong)
    try:
        with pytest.raises(ConfigError, match="rejected the token") as info:
            await asyncio.wait_for(run(cfg, stop_event=asyncio.Event()), 30)
        assert wrong.split(":")[1] not in str(info.value)
    finally:
        await server.stop()


async def test_unreachable_api_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = offline_config(tmp_path, base_url=f"http://127.0.0.1:{_closed_port()}/bot")
    monkeypatch.setenv("CORRBOT_TELEGRAM_TOKEN", TOKEN)
    with pytest.raises(CorrbotError, match="cannot reach the Telegram Bot API") as info:
        await asyncio.wait_for(run(cfg, stop_event=asyncio.Event()), 60)
    assert TOKEN.split(":")[1] not in str(info.value)


def test_sigterm_stops_the_service(tmp_path: Path) -> None:
    cfg = offline_config(tmp_path)
    script = textwrap.dedent(f"""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout)
        from core.config import Config
        from service.runner import main_run
        cfg = Config.model_validate_json({cfg.model_dump_json()!r})
        main_run(cfg)
        print("EXITED CLEANLY", flush=True)
    """)
    env = {k: v for k, v in os.environ.items() if k != "CORRBOT_TELEGRAM_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        lines.append(line)
        if "poll cycle" in line or time.monotonic() > deadline:
            break
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "corrbot stopped" in text and "EXITED CLEANLY" in text
