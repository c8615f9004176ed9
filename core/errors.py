"""The corrbot exception hierarchy: every error we raise on purpose is one of these.

    CorrbotError                    base; its message is one line, safe to show a user
    ├── ConfigError                 the TOML is missing, malformed or inconsistent (exit 2)
    ├── UserInputError              a CLI argument or chat command names something wrong
    │   ├── UnknownAssetError       an asset name that is not configured (carries suggestions)
    │   └── BadWindowError          a window/timeframe that is not configured
    ├── ImportFileError             a CSV that cannot be imported (names file and line; exit 2)
    ├── FeedError                   market-data source trouble
    │   ├── TemporaryFeedError      network, rate limit, exchange down: retried with backoff
    │   ├── PermanentFeedError      bad symbol, unknown ticker: reported once, not retried
    │   └── BadDataError            a response that would store wrong prices: refused, logged once
    ├── StorageError                the database is unusable (e.g. schema newer than this code)
    └── NotEnoughDataError          a pair has fewer aligned returns than the window

Messages never contain secrets (tokens, proxy credentials): callers build them from names
and values the user already knows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# C0/C1 controls and the Unicode line/paragraph separators: anything that could break a line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    """A control character as TOML (and JSON) would write it in a quoted key: \\n, \\u007f."""
    return _SHORT.get(ch, f"\\u{ord(ch):04x}")


class CorrbotError(Exception):
    """Base class; ``str(err)`` is a one-line message fit for a terminal or a chat."""


class ConfigError(CorrbotError):
    """Invalid configuration. ``key`` is the dotted path of the offending key, if known.

    The message is kept to one line whatever the file holds: line breaks and other control
    characters from keys or values are shown escaped (``\\n``)."""

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        text = f"{key}: {message}" if key else message
        super().__init__(_CONTROL.sub(lambda m: _escaped(m.group()), text))


class UserInputError(CorrbotError):
    """Something a user typed is not acceptable; the message says what is allowed."""


class UnknownAssetError(UserInputError):
    def __init__(self, name: str, suggestions: Sequence[str]) -> None:
        self.name = name
        self.suggestions = list(suggestions)
        hint = f" — did you mean {', '.join(self.suggestions)}?" if self.suggestions else ""
        super().__init__(f"unknown asset {name!r}{hint}")


class BadWindowError(UserInputError):
    pass


class ImportFileError(CorrbotError):
    """A CSV could not be imported; nothing was written."""

    def __init__(self, path: str, message: str, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = f"{path}:{line}" if line is not None else path
        super().__init__(f"{where}: {message}")


class FeedError(CorrbotError):
    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"{source}: {message}")


class TemporaryFeedError(FeedError):
    pass


class PermanentFeedError(FeedError):
    pass


class BadDataError(FeedError):
    """A feed answered, but with bars that fail the integrity guards; nothing was stored."""


class StorageError(CorrbotError):
    pass


class NotEnoughDataError(CorrbotError):
    """E.g. ``BTC/PSCT 1d w90: 61 of 90 returns``."""

    def __init__(self, label: str, have: int, need: int) -> None:
        self.label, self.have, self.need = label, have, need
        super().__init__(f"{label}: {have} of {need} returns")
