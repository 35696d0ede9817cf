"""Peak resident memory of this process while a function runs (used by the refit test and bench)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

import psutil

T = TypeVar("T")


def peak_rss_growth(fn: Callable[[], T], interval_s: float = 0.0002) -> tuple[T, int]:
    """(fn(), peak RSS while fn ran minus RSS before). A thread samples RSS every ``interval_s``; run
    with ``MALLOC_MMAP_THRESHOLD_`` set low so freed tensors leave RSS and the peak is live bytes."""
    proc = psutil.Process()
    base = peak = proc.memory_info().rss
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, proc.memory_info().rss)
            time.sleep(interval_s)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, max(peak, proc.memory_info().rss) - base
