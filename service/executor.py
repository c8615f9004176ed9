"""A thread pool of daemon threads that shutdown abandons instead of joining.

`corrbot run` installs it as the loop's default executor, so every ``asyncio.to_thread`` —
yfinance downloads above all — runs here. The stdlib ``ThreadPoolExecutor`` joins its
threads at exit (``asyncio.run`` waits for the default executor, and an atexit hook waits
again), so one download stuck on a socket that never answers kept the process alive for
minutes after SIGTERM. Our threads are daemons: the awaiting task is cancelled, the thread
is left to finish or die with the process. Nothing durable runs in them unguarded — SQLite
writes are transactions, and a write cut short by exit is rolled back on the next open.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class DaemonExecutor(ThreadPoolExecutor):
    """Up to ``max_workers`` daemon threads, started as work arrives; never joined.

    A ThreadPoolExecutor only because ``loop.set_default_executor`` insists on one (3.11);
    nothing of the parent is used — its __init__ is not called, so no thread of ours is ever
    registered with its join-at-exit hook.
    """

    def __init__(self, max_workers: int = 8, name: str = "corrbot-worker") -> None:  # no super(): see above
        self._max, self._name = max_workers, name
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._busy = 0
        self._mutex = threading.Lock()
        self._closed = False

    def submit(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> Future[T]:
        fut: Future[T] = Future()
        with self._mutex:
            if self._closed:
                raise RuntimeError("executor is shut down")
            self._queue.put((fut, fn, args, kwargs))
            if self._busy + self._queue.qsize() > len(self._workers) and len(self._workers) < self._max:
                t = threading.Thread(target=self._work, name=f"{self._name}-{len(self._workers)}", daemon=True)
                self._workers.append(t)
                t.start()
        return fut

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args, kwargs = item
            with self._mutex:
                self._busy += 1
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # handed to the awaiting task, as the stdlib pool does
                    fut.set_exception(exc)
            with self._mutex:
                self._busy -= 1

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        # ``wait`` is ignored on purpose: a blocked call must not hold the process (see above).
        with self._mutex:
            self._closed = True
            for _ in self._workers:
                self._queue.put(None)
