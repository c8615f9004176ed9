"""Keep the bot token out of every log record.

The token is part of every Bot API URL (``/bot<token>/sendMessage``) and httpx logs request
URLs at INFO, so the token would otherwise land in journald. Two layers:

- the "httpx"/"httpcore" loggers are set to WARNING (no per-request lines at all);
- `RedactFilter` rewrites any record's message, arguments and traceback text, replacing
  the known token(s) and anything shaped like one (``bot<digits>:<30+ chars>``), in any
  letter case and percent-encoding (an error that echoes the URL path: ``%2fbot1%3aaa…``).

A logging.Filter attached to a logger only sees records created on that logger, not ones
propagating from children, and handlers added later (pytest's caplog, a journald handler)
would not carry it. So `install` also wraps the log-record factory: every record, from any
logger, passes through the filter as it is created, before any handler sees it.
"""

from __future__ import annotations

import logging
import re
import threading
import traceback
from typing import Any

# A token's ":" may come back percent-encoded (once or twice) and the whole token lower-cased:
# a Bot API error that echoes the request path ("%2fbot123456789%3aaafake…%2fgetme").
_COLON = r"(?::|%3a|%253a)"
_SHAPE = re.compile(rf"(bot)?\d{{5,}}{_COLON}[A-Za-z0-9_-]{{30,}}", re.IGNORECASE)
REDACTED = "<redacted>"

_lock = threading.Lock()
_secrets: dict[str, re.Pattern[str]] = {}
_installed = False


def _any_encoding(secret: str) -> re.Pattern[str]:
    """``secret`` verbatim, in any letter case, with any character percent-encoded (%XX, %25XX)."""
    alts = []
    for ch in secret:
        codes = "".join(f"%{b:02x}" for b in ch.encode("utf-8"))
        alts.append(f"(?:{re.escape(ch)}|{re.escape(codes)}|{re.escape(codes.replace('%', '%25'))})")
    return re.compile("".join(alts), re.IGNORECASE)


def redact(text: str) -> str:
    for pattern in _secrets.values():
        text = pattern.sub(REDACTED, text)
    return _SHAPE.sub(REDACTED, text)


class RedactFilter(logging.Filter):
    """Rewrites the record in place so every handler and formatter sees the redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = record.getMessage()
        except Exception:  # a bad format string: keep the raw parts, redacted
            msg = f"{record.msg} {record.args}"
        record.msg = redact(msg)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(
                "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            )
            # Formatters print exc_text when set; the exception object itself stays for
            # code that inspects it, and its str() is redacted by the line above.
        elif record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_FILTER = RedactFilter()


def install(*secrets: str) -> None:
    """Redact ``secrets`` (and token-shaped strings) from all log records from now on."""
    global _installed
    with _lock:
        for s in secrets:
            if s and s not in _secrets:
                _secrets[s] = _any_encoding(s)
        for name in ("httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _FILTER.filter(record)
            return record

        logging.setLogRecordFactory(factory)
