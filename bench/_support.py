"""Helpers shared by the benchmarks (each is run as ``python bench/<name>.py``, which puts bench/ on sys.path)."""

from __future__ import annotations

import socket
import statistics
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def median_time(fn, repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``repeat`` calls of ``fn``, after ``warmup`` calls that are not timed."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)
