"""`corrbot run` as an operator sees it, as a real subprocess against the loopback servers.

- SIGHUP (`systemctl reload`): a new threshold, asset, rule and user take effect without a
  restart; an invalid file, or one that moves the database, is refused with one line and the
  service keeps the config it has; systemd hears RELOADING=1 then READY=1.
- The log under systemd ($JOURNAL_STREAM is stderr): syslog priorities, no timestamps of ours;
  an exchange that is down is reported once, not every poll, and its recovery is reported.
- `[metrics] listen`: the Prometheus exporter counts what the service did, read back with
  prometheus_client's own text parser.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path

from binance_server import BinanceServer
from botapi_server import ADMIN, TOKEN, BotApiServer
from prometheus_client.parser import text_string_to_metric_families
from test_sdnotify import Listener
from test_service_e2e import ALERT_CHAT, DEAD, REPO, _env, import_until, poll, write_config

RULE = """
[[rules]]
name = "coupling"
kind = "corr_level"
window = 30
pairs = ["BTC/IWM"]
above = {above}
clear_below = 0.45
"""
NEW_RULE = """
[[rules]]
name = "smallcap-decoupling"
kind = "corr_level"
window = 30
pairs = ["BTC/SMALLCAP_TECH"]
below = 0.0
clear_above = 0.1
"""
NEWCOMER = 777_000_111  # a user the reload lets in


async def _stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 15)


async def _reply(server: BotApiServer, text: str, user: int = ADMIN) -> str:
    before = len(server.sent("sendMessage", chat_id=user))
    server.push_command(text, user_id=user)
    calls = await server.wait_for("sendMessage", lambda c: c.chat_id == user, count=before + 1, timeout=30)
    return str(calls[-1].plain)


async def _logged(log: Path, text: str, timeout: float = 30.0) -> str:
    for _ in range(int(timeout * 10)):
        body = log.read_text(errors="replace")
        if text in body:
            return body
        await asyncio.sleep(0.1)
    raise AssertionError(f"{text!r} not logged:\n{log.read_text(errors='replace')[-3000:]}")


async def test_sighup_reloads_rules_watch_list_and_users_and_refuses_bad_files(tmp_path: Path) -> None:
    address = f"@corrbot-reload-{os.getpid()}"
    listener = Listener(address)
    server = await BotApiServer(TOKEN).start()
    cfg = write_config(tmp_path, server, RULE.format(above=0.95), chats=[ALERT_CHAT])
    original = cfg.read_text()
    await import_until(cfg, tmp_path, "2025-03-31")
    log = tmp_path / "run.log"
    fh = log.open("ab")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "--config", str(cfg), "run", cwd=REPO, stdout=fh, stderr=fh,
        env=_env() | {"NOTIFY_SOCKET": address})
    try:
        await listener.until("READY=1")
        await poll(server)  # the rule starts at the latest bar, 2025-03-31
        assert "Sorry, this bot is private." in await _reply(server, "/help", user=NEWCOMER)
        assert "ARKK" not in await _reply(server, "/help")

        # The threshold comes down to where BTC/IWM crossed in April 2025, a rule and an asset
        # are added, and a newcomer is allowed in: all by SIGHUP.
        reloaded = (original.replace("above = 0.95", "above = 0.55")
                    .replace(f"admin_user_ids = [{ADMIN}]",
                             f"admin_user_ids = [{ADMIN}]\nallowed_user_ids = [{NEWCOMER}]")
                    + NEW_RULE + '\n[[assets]]\nname = "ARKK"\nkind = "equity"\nticker = "ARKK"\n')
        cfg.write_text(reloaded)
        proc.send_signal(signal.SIGHUP)
        assert "RELOADING=1" in await listener.until("RELOADING=1")
        await listener.until("READY=1")
        body = await _logged(log, "config reloaded from")
        assert re.search(r"config reloaded from \S+corrbot\.toml: assets \(11 -> 12\), telegram, rules \(1 -> 2\)",
                         body), body
        rules = await _reply(server, "/rules")
        assert "smallcap-decoupling" in rules and "0.55" in rules and "0.95" not in rules, rules
        assert "ARKK" in await _reply(server, "/help")
        assert "Assets:" in await _reply(server, "/help", user=NEWCOMER)

        await import_until(cfg, tmp_path, "2025-04-16")
        await poll(server)  # 0.55 is crossed on 2025-04-14; 0.95 never was
        (fire,) = await server.wait_for("sendMessage", lambda c: c.chat_id == ALERT_CHAT, timeout=30)
        assert "crossed above +0.55" in fire.plain and "as of 2025-04-14" in fire.plain

        # Not TOML: refused in one line; the reloaded config stays.
        cfg.write_text(reloaded + "\nbroken = [\n")
        proc.send_signal(signal.SIGHUP)
        body = await _logged(log, "reload refused")
        (refused,) = [ln for ln in body.splitlines() if "reload refused" in ln]
        assert "not valid TOML" in refused and "still running on the previous config" in refused
        assert "smallcap-decoupling" in await _reply(server, "/rules")

        # Moving the database needs a restart: refused, named.
        cfg.write_text(reloaded.replace('path = "corrbot.db"', 'path = "elsewhere.db"'))
        proc.send_signal(signal.SIGHUP)
        body = await _logged(log, "storage changed, which needs a restart")
        assert not (tmp_path / "elsewhere.db").exists()
        assert "Traceback" not in body
        assert proc.returncode is None
    finally:
        rc = await _stop(proc)
        listener.close()
        await server.stop()
    assert rc == 0, log.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


async def test_journal_log_says_an_outage_once_then_its_recovery_and_metrics_count_it(
        tmp_path: Path, data_dir: Path) -> None:
    server = await BotApiServer(TOKEN).start()
    binance = await BinanceServer(data_dir / "intraday/BTCUSDT_1h_binance_2023-2026.csv").start()
    port = _free_port()
    assert binance.now_ms is not None  # the loopback exchange's "now": its data's last hour
    backfill = int((time.time() * 1000 - binance.now_ms) // 86_400_000) + 3  # a few days of its data
    cfg = write_config(tmp_path, server, "", chats=[ALERT_CHAT])
    cfg.write_text(cfg.read_text().replace(f'binance = "{DEAD}"', f'binance = "{binance.url}"')
                   .replace("[feeds]", f"[feeds]\nbackfill_days = {backfill}")
                   + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')
    binance.unavailable(times=None)  # down from the start
    log = tmp_path / "run.log"
    fh = log.open("ab")
    st = os.fstat(fh.fileno())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "--config", str(cfg), "run", cwd=REPO, stdout=fh, stderr=fh,
        env=_env() | {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        await server.wait_for("setMyCommands", timeout=60)
        for _ in range(3):
            await poll(server)
        down = log.read_text()
        m = _scrape(port)
        assert m[("corrbot_feed_errors_total", (("source", "binance"),))] >= 3 * 8  # 4 assets x 2 timeframes
        binance.clear_failures()
        await poll(server)
        up = await _logged(log, "binance recovered")
        m2 = _scrape(port)
    finally:
        rc = await _stop(proc)
        await binance.stop()
        await server.stop()
    assert rc == 0, log.read_text()
    lines = log.read_text().splitlines()
    # The journal's format: a priority, the logger, the message; journald adds the time.
    assert all(re.match(r"^<[2-7]>[\w.]+: ", ln) for ln in lines), [ln for ln in lines if not re.match(r"^<", ln)]
    assert not any(re.match(r"^<\d>\S*\d{4}-\d\d-\d\d", ln) for ln in lines)
    assert "<4>corrbot.feeds: binance failing: 8 of 8 failed" in down
    # Three polls of a dead exchange: each kind of warning once, not once per poll.
    warnings = [ln for ln in down.splitlines() if ln.startswith("<4>")]
    assert len(warnings) == len(set(warnings)), "\n".join(warnings)
    assert down.count("binance failing") == 1
    assert re.search(r"<6>corrbot\.feeds: binance recovered after \d+ min \(4 failed polls\)", up), up
    assert "yahoo failing" in down  # Yahoo is unreachable throughout (reported once too)
    assert down.count("yahoo failing") == 1
    # Metrics: four polls that finished (the start-up one too), bars from the recovered exchange.
    polls_ok = m2[("corrbot_polls_total", (("outcome", "ok"),))]
    assert polls_ok == len(re.findall(r"poll cycle \d+ done in", up)) == 5  # start-up + four /poll
    assert m2[("corrbot_bars_stored_total", (("source", "binance"),))] > 0
    assert m2[("corrbot_outbox_pending", ())] == 0.0
    assert m2[("corrbot_evaluation_seconds_count", ())] == polls_ok
