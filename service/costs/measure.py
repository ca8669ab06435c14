"""What one sweep point measures: forward latency, peak memory of the forward, parameters and FLOPs.

Peak memory on CPU is the process's resident-set high-water mark, read from the kernel: before the
forward the mark is reset to the current resident size (``echo 5 > /proc/self/clear_refs``), after it
``VmHWM`` in ``/proc/self/status`` is the highest resident size reached, and the difference is what the
forward added at its peak. This is measured, not estimated: it sees every allocation the forward
touches (PyTorch tensors, oneDNN and BLAS scratch space), which an allocator-level count would miss.
The sweep has glibc serve every allocation from its heap
(``mallopt(M_MMAP_MAX, 0)``) and keep freed memory (a high ``M_TRIM_THRESHOLD``), so a warm call reuses
the memory of the previous one as a caching allocator would; otherwise each call above glibc's 32 MiB
mmap limit pays for fresh pages from the kernel (costly in a virtual machine), which makes latency a
step function of allocation size rather than of the work. Before the memory is measured the heap is
trimmed (``malloc_trim(0)`` returns every free page to the kernel), so the forward's allocations fault
in fresh pages and the high-water mark sees them; the baseline is the resident size just before the
call. The resolution is a few pages; the fits ignore figures under about a megabyte.
On CUDA the peak is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (the
caching allocator's own count of live tensor bytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_CLEAR_REFS = Path("/proc/self/clear_refs")
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_STATUS = Path("/proc/self/status")


def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


_LIBC = _libc()


def rss_peak_supported() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
        return "VmHWM" in _STATUS.read_text()
    except OSError:
        return False


def configure_malloc() -> bool:
    """Serve allocations from the heap and keep freed memory for reuse (see the module docstring)."""
    if _LIBC is None or not hasattr(_LIBC, "mallopt"):
        return False
    return bool(_LIBC.mallopt(_M_MMAP_MAX, 0)) and bool(_LIBC.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _trim() -> None:
    if _LIBC is not None and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_rss_delta(fn: Callable[[], object]) -> int:
    """Bytes the resident set grew by at its highest while ``fn`` ran (its result is dropped after)."""
    _trim()
    before = _status_kib("VmRSS")
    _CLEAR_REFS.write_text("5")  # VmHWM := VmRSS
    result = fn()
    peak = _status_kib("VmHWM")
    del result
    return max(0, peak - before) * 1024


def peak_cuda_bytes(fn: Callable[[], object], device: torch.device) -> int:
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device)
    del result
    return max(0, peak - base)


@dataclass
class Timing:
    median_s: float  # wall time
    cpu_median_s: float  # CPU time of the process (all its threads, user + system)
    repeats: int
    spread: float  # (p75 - p25) / median of the wall times: how noisy the point was


def time_forward(fn: Callable[[], object], device: torch.device, *, min_repeats: int = 5,
                 max_repeats: int = 50, min_total_s: float = 0.2, warmup: int = 2) -> Timing:
    """Median wall time and median CPU time of warm calls: ``warmup`` calls first, then at least
    ``min_repeats`` and until ``min_total_s`` has passed (at most ``max_repeats``; three when calls are
    slow). On a machine shared with other work the wall time includes waiting for a core; the CPU time
    of the process does not, which makes it the steadier measure of how the work grows."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times: list[float] = []
    cpu: list[float] = []
    started = time.perf_counter()
    while len(times) < max_repeats:
        elapsed = time.perf_counter() - started
        if len(times) >= min_repeats and elapsed >= min_total_s:
            break
        if len(times) >= 3 and min_total_s > 0 and elapsed >= 3 * min_total_s:
            break  # slow calls: three are enough for a median
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    median = statistics.median(times)
    q = statistics.quantiles(times, n=4) if len(times) >= 2 else [median, median, median]
    return Timing(median, statistics.median(cpu), len(times), (q[2] - q[0]) / median if median > 0 else 0.0)


def count_flops(forward: Callable[[torch.device], object]) -> int | None:
    """Floating-point operations of one forward, counted by ``FlopCounterMode`` on the meta device
    (matrix products and convolutions; element-wise operations are not counted). ``forward(device)``
    builds and runs the module on the given device. None when an operation has no meta kernel."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as counter:
            forward(torch.device("meta"))
        return int(counter.get_total_flops())
    except Exception:  # noqa: BLE001 - an op without a meta kernel: no FLOP figure for this point
        return None
