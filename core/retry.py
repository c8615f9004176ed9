"""The one retry helper: exponential backoff around an async call, cancellable at every wait.

Callers say which exceptions are worth another try (``retry_on``) and may hand back the
server's own wait (``wait_hint``, e.g. Telegram's ``retry_after``). Everything else is
raised at once. ``sleep`` is injectable so tests run on a fake clock; because the wait is an
``await``, cancelling the task (service shutdown) ends it immediately.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[Any]]

log = logging.getLogger(__name__)


def backoff_delays(retries: int, base: float, cap: float | None = None) -> Iterator[float]:
    """base, 2·base, 4·base, … (``retries`` of them), each at most ``cap``."""
    for attempt in range(retries):
        delay = base * 2**attempt
        yield min(delay, cap) if cap is not None else delay


async def retry_async(
    call: Callable[[], Awaitable[T]],
    *,
    retries: int,
    backoff: float,
    retry_on: tuple[type[BaseException], ...],
    give_up_on: tuple[type[BaseException], ...] = (),
    what: str = "call",
    describe: Callable[[BaseException], str] = str,
    wait_hint: Callable[[BaseException], float | None] | None = None,
    sleep: Sleep = asyncio.sleep,
) -> T:
    """``await call()``; on a ``retry_on`` error (not a ``give_up_on`` one) wait and try again,
    up to ``retries`` more times; the last error is raised as is."""
    delays = backoff_delays(retries, backoff)
    while True:
        try:
            return await call()
        except give_up_on:
            raise
        except retry_on as exc:
            delay = next(delays, None)
            if delay is None:
                raise
            hint = wait_hint(exc) if wait_hint is not None else None
            if hint is not None:
                delay = max(delay, hint)
            log.warning("%s failed (%s); retrying in %.1fs", what, describe(exc), delay)
            await sleep(delay)
