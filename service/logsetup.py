"""Logging for the CLI and the service: one line per event, journald-friendly, repeats summarised.

Under systemd, stderr is the journal (``$JOURNAL_STREAM`` names its device:inode). Lines then
carry no timestamp of ours (the journal stamps them) and start with a syslog priority
(``<4>``), which journald turns into the entry's level, so ``journalctl -u corrbot -p warning``
filters. In a terminal: a timestamp, the level and the logger.

A service that polls a dead exchange every five minutes would write the same warnings forever.
`RepeatFilter` lets the first of a kind through, counts the repeats, and writes one summary per
``summary_seconds`` ("… [repeated 12 times in 1 h 0 min]"). Sources that can recover (a feed, the
poll cycle) say so themselves (`service.health`). Libraries are held to the same policy: their
INFO chatter (httpx logs every long poll, APScheduler every job) is raised to WARNING, and
yfinance's false "possibly delisted" errors are silenced in `feeds.equities`.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

# Libraries whose INFO lines are per-request noise; -v does not lower them either.
QUIET_LOGGERS = (
    "apscheduler", "ccxt", "urllib3", "asyncio", "matplotlib", "PIL", "peewee", "aiohttp",
    "httpx", "httpcore", "hpack", "telegram", "curl_cffi",
)
SUMMARY_SECONDS = 3600.0
_SYSLOG = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def under_journal(stream: TextIO | None = None) -> bool:
    """Is ``stream`` (default stderr) the journal's own socket? systemd sets
    ``JOURNAL_STREAM=dev:inode`` for the streams it connects; a redirect changes the inode."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    stream = sys.stderr if stream is None else stream
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; tracebacks are folded into the same entry."""

    def __init__(self) -> None:
        super().__init__("%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = _SYSLOG.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        # journald makes an entry of each line: a traceback's lines keep the record's priority.
        return f"<{prio}>" + text.replace("\n", f"\n<{prio}>  ")


def _duration(seconds: float) -> str:
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    return f"{minutes // 60} h {minutes % 60} min"


@dataclass
class _Seen:
    first: float
    last_written: float
    last_seen: float
    suppressed: int = 0


class RepeatFilter(logging.Filter):
    """Passes the first WARNING+ line of each kind; repeats are counted and summarised.

    A kind is the logger plus the message with its numbers blanked (a retry's delay or an
    attempt count does not make a new kind). A kind not seen for two summary periods is
    forgotten, so a failure that comes back days later is written again in full.
    """

    def __init__(self, summary_seconds: float = SUMMARY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.summary_seconds, self.clock = summary_seconds, clock
        self._seen: dict[tuple[str, int, str], _Seen] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.exc_info or getattr(record, "summarised", False):
            return True  # tracebacks are rare and each one matters; summaries are summaries
        now = self.clock()
        msg = record.getMessage()
        key = (record.name, record.levelno, _NUMBER.sub("#", msg))
        seen = self._seen.get(key)
        if seen is None or now - seen.last_seen > 2 * self.summary_seconds:
            self._seen[key] = _Seen(now, now, now)
            self._forget(now)
            return True
        seen.last_seen = now
        seen.suppressed += 1
        if now - seen.last_written < self.summary_seconds:
            return False
        record.msg, record.args = (
            f"{msg} [repeated {seen.suppressed} times in {_duration(now - seen.first)}]", None)
        seen.last_written, seen.suppressed = now, 0
        return True

    def _forget(self, now: float) -> None:
        if len(self._seen) > 512:  # bounded: one entry per kind of failure, not per event
            stale = [k for k, s in self._seen.items() if now - s.last_seen > 2 * self.summary_seconds]
            for k in stale or list(self._seen)[:256]:
                del self._seen[k]


def configure(*, verbose: bool, service: bool) -> None:
    """Root logging for one CLI invocation. ``service`` (`corrbot run`): INFO and up, repeats
    summarised; other commands: warnings only. ``verbose``: corrbot's own DEBUG lines."""
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    if under_journal(sys.stderr):
        handler.setFormatter(JournalFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    if service:
        handler.addFilter(RepeatFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO if service else logging.WARNING)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if service:
        warnings.showwarning = _warning_line(verbose)
        logging.getLogger("apscheduler.scheduler").setLevel(logging.ERROR)  # "skipped: … already running":
        # by design (a job waits for the running cycle); the cycle's own lines say what happened


def _warning_line(verbose: bool) -> Callable[..., None]:
    """Python warnings as one log line each. Libraries' deprecation notices (pandas about
    yfinance's calls, every poll) are not the operator's to act on: only -v shows them. (A
    warnings filter would not do: yfinance re-enables its own when it is imported.)"""
    wlog = logging.getLogger("py.warnings")

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: object = None, line: str | None = None) -> None:
        quiet = issubclass(category, DeprecationWarning | FutureWarning) and not verbose
        if not quiet:
            wlog.warning("%s: %s (%s:%d)", category.__name__, str(message).splitlines()[0] if str(message) else "",
                         os.path.basename(filename), lineno)

    return show
