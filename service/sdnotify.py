"""systemd's notify protocol, spoken directly: datagrams to ``$NOTIFY_SOCKET``.

READY=1, STATUS=…, WATCHDOG=1, STOPPING=1 (see sd_notify(3)). A leading ``@`` names a
socket in Linux's abstract namespace. Without ``$NOTIFY_SOCKET`` (a terminal, the tests)
every call is a no-op, and a send that fails is logged once and otherwise ignored: the
service must never stop because systemd is not listening.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        addr = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self._addr: str | bytes | None = None
        if addr.startswith("@"):
            self._addr = b"\0" + addr[1:].encode()
        elif addr.startswith("/"):
            self._addr = addr
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self._addr is not None

    def send(self, *lines: str) -> None:
        if self._addr is None:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto("\n".join(lines).encode(), self._addr)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("sd_notify to %s failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        self.send(f"STATUS={status}")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")


def watchdog_seconds() -> float | None:
    """systemd's WatchdogSec for this process (``$WATCHDOG_USEC``), if it set one for us."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6
    except ValueError:
        return None
