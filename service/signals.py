"""Signal handling for the seconds before the service's event loop runs.

`corrbot run` is started and stopped by systemd. Importing the CLI loads pandas, pydantic and
friends (about a second); a SIGTERM in that second used to kill the process outright. The
console script (`service.entry`) installs these handlers first, with nothing but the standard
library loaded, so a stop at any moment of start-up ends the run cleanly (exit 0); the runner
asks for a SIGHUP that came early once it is ready.
"""

from __future__ import annotations

import asyncio
import signal

_HUP: list[bool] = []  # a SIGHUP (reload) that came before the service could act on it


def early_stop() -> asyncio.Event:
    """SIGTERM/SIGINT set the returned event instead of killing the process (the service's own
    handlers replace these once its event loop runs); a SIGHUP, whose default is to kill, is
    remembered and acted on once the service runs (`early_hup`)."""
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    signal.signal(signal.SIGHUP, lambda _sig, _frame: _HUP.append(True))
    return stop


def early_hup() -> bool:
    """Did a SIGHUP come during start-up? (Asked once, by the runner, when it is ready.)"""
    seen = bool(_HUP)
    _HUP.clear()
    return seen
