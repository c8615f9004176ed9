"""trim_heap gives freed heap pages back: RSS falls by what was freed (glibc only)."""

from __future__ import annotations

import gc
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


def test_cyclic_garbage_is_collected_each_call() -> None:
    trim_heap()  # the first call freezes what is alive; later calls still collect cycles

    class Node:
        def __init__(self) -> None:
            self.me = self
            self.payload = bytearray(1 << 20)

    gc.disable()  # no automatic collection: only trim_heap can free the cycles
    try:
        before = rss_kb()
        for _ in range(40):
            Node()
        grown = rss_kb()
        trim_heap()
        after = rss_kb()
    finally:
        gc.enable()
    assert grown - before > 30_000  # 40 MB of unreachable cycles held…
    assert grown - after > 30_000  # …freed by the call
