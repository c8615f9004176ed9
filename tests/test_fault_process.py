"""The fault matrix, part 3: faults of the process's surroundings, on a real `corrbot -v run`.

- Disk full while writing: the child starts with RLIMIT_FSIZE (no root needed) so its SQLite
  files cannot grow past the seeded database + 512 KiB: the big catch-up poll fails ("database or disk is full"),
  the service stays up and says so once; the limit is lifted (prlimit on the running child) and
  the next /poll stores exactly what a clean run stores.
- A Bot API answering HTTP 200 with a non-JSON body (a captive portal): at start and mid-run,
  `corrbot run` ends with one line saying so and exit 1 (systemd restarts it), no traceback;
  once the API is back it starts cleanly.

Both run concurrently, each in its own world. (Telegram gone for minutes is in
tests/test_fault_kill.py, beside the kill trials, so its wait costs no wall time.)
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from pathlib import Path

from fault_world import CHATS, World, close_world, delivered, integrity, make_world, snapshot, token_leaks
from service_harness import REPO, env, sigterm

END = "2025-07-11"
ROOM = 512 * 1024  # beyond the seeded database's size: enough for a day's poll, not for months


async def spawn_limited(world: World, log: Path) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    """`corrbot -v run` whose files may not grow past the seeded database's size + ROOM (the
    limit is per file offset: the database itself must stay writable); output through a pipe
    (a log file would hit the limit too), copied to ``log`` here."""
    fsize = world.db_path.stat().st_size + ROOM

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "--config", str(world.cfg), "-v", "run", cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env(True, **world.child_env()),
        preexec_fn=limit)

    async def copy() -> None:
        assert proc.stdout is not None
        with log.open("ab") as fh:
            async for line in proc.stdout:
                fh.write(line)
                fh.flush()

    world.logs.append(log)
    return proc, asyncio.create_task(copy())


async def disk_full(world: World, clean: World) -> str:
    log = world.tmp / "limited.log"
    ready = len(world.bot.sent("setMyCommands"))
    proc, copier = await spawn_limited(world, log)
    await world.bot.wait_for("setMyCommands", count=ready + 1, timeout=90)
    try:
        await world.poll()
        world.set_clock(END)  # months of bars at once: far more than 512 KiB of pages
        failed = await world.poll(may_fail=True)
        assert "poll cycle failed" in failed, failed
        assert proc.returncode is None and integrity(world.db_path) == "ok"
        pushed = [c.plain for c in world.bot.sent("sendMessage", chat_id=CHATS[0])]
        assert any("poll cycle failed" in t for t in pushed), pushed
        # Space comes back (the operator cleaned up): the next poll does it all.
        resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        done = await world.poll()
        assert "done" in done, done
        await world.drain()
    finally:
        took = await sigterm(proc, log, "after disk full")  # type: ignore[arg-type]
        await copier
    # The clean world: the same two polls, no limit.
    proc = await clean.start()
    try:
        await clean.poll()
        clean.set_clock(END)
        await clean.poll()
        await clean.drain()
    finally:
        await clean.stop(proc)
    want, got = snapshot(clean.db_path), snapshot(world.db_path)
    want.bars_equal(got)
    want.corr_equal(got)
    assert got.episodes == want.episodes
    for chat in CHATS:
        alerts = [t for t in delivered(world.bot, chat) if "poll cycle" not in t]
        assert alerts == [t for t in delivered(clean.bot, chat) if "poll cycle" not in t], chat
    assert "Traceback" not in log.read_text()
    assert token_leaks(world) == []
    return f"disk full: 1 poll failed, recovered; alerts {len(want.outbox)} expected, stop {took:.2f}s"


async def not_json(world: World) -> str:
    lines = []
    for when in ("at start", "mid-run"):
        log = world.tmp / f"garbage-{when.replace(' ', '')}.log"
        world.logs.append(log)
        if when == "at start":
            world.bot.script("getMe", *["garbage"] * 50)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli", "--config", str(world.cfg), "-v", "run", cwd=REPO,
            stdout=log.open("ab"), stderr=asyncio.subprocess.PIPE, env=env(True, **world.child_env()))
        if when == "mid-run":
            await world.bot.wait_for("getUpdates", timeout=90)
            world.bot.script("getUpdates", *["garbage"] * 500)
            world.bot.script("getMe", *["garbage"] * 500)
        _, err = await asyncio.wait_for(proc.communicate(), 90)
        text = err.decode()
        last = text.rstrip().splitlines()[-1]
        assert proc.returncode == 1, text[-3000:]
        assert "Traceback" not in text + log.read_text(), text[-3000:]
        assert last.startswith("corrbot: the Telegram Bot API at") and "not JSON" in last, last
        lines.append(f"{when}: exit {proc.returncode}")
        log.write_text(log.read_text() + text)
        world.bot._scripts.clear()
    proc = await world.start()  # the API is back: a clean start and stop
    await sigterm(proc, world.logs[-1], "after the non-JSON API came back")
    assert token_leaks(world) == []
    return "non-JSON Bot API: " + ", ".join(lines) + "; restarted cleanly"


async def test_disk_full_and_a_non_json_bot_api(tmp_path: Path, fault_seed: Path) -> None:
    worlds = [await make_world(tmp_path / n, fault_seed) for n in ("full", "clean", "garbage")]
    try:
        results = await asyncio.gather(disk_full(worlds[0], worlds[1]), not_json(worlds[2]))
    finally:
        for w in worlds:
            await close_world(w)
    line = "process faults: " + " | ".join(results)
    print(line)
    if os.environ.get("CORRBOT_FAULT_FIGURES"):
        with open(os.environ["CORRBOT_FAULT_FIGURES"], "a") as fh:
            fh.write(line + "\n")
