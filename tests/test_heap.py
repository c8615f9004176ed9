"""trim_heap gives freed heap pages back: RSS falls by what was freed (glibc only)."""

from __future__ import annotations

import platform

import pytest

from service.heap import trim_heap


def rss_kb() -> int:
    with open("/proc/self/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS:"))


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_heap_pages_go_back_to_the_os() -> None:
    trim_heap()
    # 40 MB of 16 KiB buffers: above pymalloc's limit, below glibc's mmap threshold, so they
    # live on the malloc heap; the one allocated after them pins the heap top.
    blocks = [bytearray(16384) for _ in range(2560)]
    for b in blocks:
        b[::4096] = b"\x01" * len(b[::4096])  # touch every page
    pin = bytearray(16384)
    before = rss_kb()
    del blocks
    freed = rss_kb()
    assert trim_heap() is True
    after = rss_kb()
    assert before - freed < 20_000  # glibc kept most of the freed pages…
    assert freed - after > 30_000  # …until trimmed
    assert len(pin) == 16384
