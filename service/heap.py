"""Hand the heap a poll cycle freed back to the OS (glibc's ``malloc_trim``).

A cycle that reads bars into pandas frees them again, but glibc keeps the freed pages of its
heap for reuse, so a long-running service's RSS creeps up to its worst cycle and stays there.
``malloc_trim(0)`` returns the free pages (below the heap top too, by ``madvise``); it takes
well under a millisecond after a cycle. Other C libraries (musl, macOS) have no such call:
there it does nothing.
"""

from __future__ import annotations

import ctypes
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


def trim_heap() -> bool:
    """Return free heap pages to the OS; whether any were (False where there is no glibc)."""
    return _TRIM is not None and bool(_TRIM(0))
