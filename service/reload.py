"""SIGHUP (`systemctl reload corrbot`): read the config again and run on it without a restart.

What a reload changes: the watch list (assets, baskets, pairs, windows), the alert rules and
their thresholds, the schedule and digest, feed settings, and who may use the bot. What it
cannot: where the database is, the token, how Telegram is reached, which chats get the
alerts and the metrics address (`RESTART_ONLY`). A file that changes any of those, or does
not validate, is refused with one log line naming what is wrong, and the service keeps
running on the config it has. The swap waits for a running poll cycle, so no cycle mixes
two configs; systemd hears RELOADING=1 … READY=1 around it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.config import Config, load_config
from core.errors import ConfigError
from service.sdnotify import Notifier as SdNotifier

log = logging.getLogger("corrbot.reload")

RESTART_ONLY = (
    "storage", "telegram.base_url", "telegram.base_file_url", "telegram.proxy", "telegram.token_file",
    "telegram.alert_chat_ids", "telegram.alert_thread_id", "telegram.token_check_seconds", "metrics",
)
_SECTIONS = ("assets", "baskets", "pairs", "correlation", "feeds", "telegram", "rules", "schedule")


def _get(cfg: Config, dotted: str) -> object:
    value: object = cfg
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def restart_only_changes(old: Config, new: Config) -> list[str]:
    def same(key: str) -> bool:
        if key == "storage":  # started from a relative path, reloaded from the resolved one
            a, b = old.storage, new.storage
            return a.model_copy(update={"path": a.path.resolve()}) == b.model_copy(update={"path": b.path.resolve()})
        return _get(old, key) == _get(new, key)

    return [key for key in RESTART_ONLY if not same(key)]


def describe_changes(old: Config, new: Config) -> str:
    """"rules (3 -> 4), schedule" or "nothing changed"."""
    parts = []
    for name in _SECTIONS:
        a, b = getattr(old, name), getattr(new, name)
        if a != b:
            parts.append(f"{name} ({len(a)} -> {len(b)})" if isinstance(a, list) and len(a) != len(b) else name)
    return ", ".join(parts) or "nothing changed"


class Reloader:
    """Re-reads ``path`` on request; ``apply`` swaps the new config in (see `service.runner`)."""

    def __init__(self, path: Path, current: Callable[[], Config],
                 apply: Callable[[Config], Awaitable[None]], sd: SdNotifier) -> None:
        self.path, self.current, self.apply, self.sd = path, current, apply, sd
        self._lock = asyncio.Lock()  # two HUPs in a row: the second reads the file after the first
        self.reloads = 0

    async def __call__(self) -> bool:
        async with self._lock:
            self.sd.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                         "STATUS=reloading the config")
            try:
                return await self._reload()
            finally:
                self.sd.send("READY=1")

    async def _reload(self) -> bool:
        old = self.current()
        try:
            new = await asyncio.to_thread(load_config, self.path)
        except ConfigError as exc:
            log.error("reload refused, still running on the previous config: %s", exc)
            return False
        fixed = restart_only_changes(old, new)
        if fixed:
            log.error("reload refused, still running on the previous config: %s changed, which needs a "
                      "restart (systemctl restart corrbot)", ", ".join(fixed))
            return False
        changes = describe_changes(old, new)
        await self.apply(new)
        self.reloads += 1
        log.info("config reloaded from %s: %s", self.path, changes)
        return True
