"""Hand the memory a poll cycle freed back to the OS: cyclic garbage, then glibc's heap.

Each crypto poll builds ccxt exchange clients whose objects form reference cycles; they are
freed only by a full collection, which CPython runs rarely in a process holding a few hundred
thousand long-lived objects (pandas, ccxt, telegram), so RSS crept up by ~2–3 MB per market
hour in the soak (bench/bench_soak.py). `trim_heap` therefore collects first. The first call
freezes what is alive by then (`gc.freeze`: the imports, the config, the first cycle's
caches), so the per-cycle full collection only walks what later cycles made — well under a
millisecond instead of ~190 ms.

Then ``malloc_trim(0)``: glibc keeps the freed pages of its heap for reuse, so a long-running
service's RSS would stay at its worst cycle; the trim returns the free pages (below the heap
top too, by ``madvise``). Other C libraries (musl, macOS) have no such call: there only the
collection runs.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable


def _find_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the C library the interpreter runs on
    except OSError:
        return None
    trim: Callable[[int], int] | None = getattr(libc, "malloc_trim", None)  # glibc only
    return trim


_TRIM = _find_trim()
_frozen = False


def trim_heap() -> bool:
    """Collect cyclic garbage, then return free heap pages to the OS; whether any pages were
    returned (False where there is no glibc)."""
    global _frozen
    gc.collect()
    if not _frozen:
        gc.freeze()  # long-lived from here on: later full collections skip them
        _frozen = True
    return _TRIM is not None and bool(_TRIM(0))
