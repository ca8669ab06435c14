"""Shared-memory segments: files in a tmpfs directory (``/dev/shm`` by default) mapped by the HTTP
process and by the run workers, so tensors cross the process boundary without being copied through a
pipe.

The front process keeps a pool of segments and reuses them, so a steady stream of requests touches no
fresh pages. A segment is named ``<prefix><counter>``; workers open segments by name and cache their
mappings. Client-named regions (the co-located shared-memory path) are validated by
:func:`check_region_name` and never leave the configured directory.
"""

from __future__ import annotations

import mmap
import os
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def default_dir() -> Path:
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(os.environ.get("TMPDIR", "/tmp"))


def check_region_name(name: str) -> str:
    """A region name is one path component of letters, digits, '_', '-' and '.', not starting with
    '.'; with or without the leading '/' that POSIX shm_open names carry."""
    bare = name[1:] if name.startswith("/") else name
    if not _NAME.match(bare) or ".." in bare:
        raise ValueError("a shared-memory region name is one component of letters, digits, '_', '-' and '.' "
                         "(optionally with a leading '/'), at most 128 characters")
    return bare


@dataclass
class Segment:
    """One mapped segment. ``size`` is the file's length; ``map`` covers all of it."""

    name: str
    path: Path
    size: int
    map: mmap.mmap | None = None
    owned: bool = True

    def view(self) -> memoryview:
        assert self.map is not None
        return memoryview(self.map)

    def close(self) -> None:
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # a live export (numpy view) keeps it; the GC closes it later
                pass
            self.map = None

    def unlink(self) -> None:
        self.close()
        if self.owned:
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass


class NoSpace(OSError):
    """The shm directory cannot hold a segment of the asked size."""


def _reserve(fd: int, size: int) -> None:
    """Give the file real pages now: a write through a mapping into a full tmpfs would be a SIGBUS,
    an allocation that fails here is an error the caller can answer."""
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        raise NoSpace(exc.errno, f"no room for {size} bytes of shared memory: {exc.strerror}") from None


def _map(path: Path, size: int, create: bool) -> mmap.mmap:
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create or os.fstat(fd).st_size < size:
            try:
                _reserve(fd, size)
            except NoSpace:
                if create:
                    path.unlink(missing_ok=True)
                raise
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


def open_segment(directory: Path, name: str, size: int | None = None) -> Segment:
    """Map an existing segment (all of it, or its first ``size`` bytes)."""
    path = directory / name
    actual = path.stat().st_size
    if size is None:
        size = actual
    if size > actual:
        raise ValueError(f"segment {name} holds {actual} bytes, fewer than the {size} asked for")
    return Segment(name, path, size, _map(path, max(size, 1), create=False), owned=False)


def resize(directory: Path, name: str, size: int) -> None:
    """Grow a segment file (the writer does this when its outputs do not fit)."""
    fd = os.open(directory / name, os.O_RDWR)
    try:
        if os.fstat(fd).st_size < size:
            _reserve(fd, size)
    finally:
        os.close(fd)


_PAGE = mmap.PAGESIZE


def _round(n: int) -> int:
    """Segment sizes are powers of two from 64 KiB, so a freed segment fits the next request of its class."""
    size = 64 << 10
    while size < n:
        size <<= 1
    return size


class SegmentPool:
    """Reusable segments owned by this process. ``take(n)`` returns a segment of at least ``n`` bytes;
    ``give(seg)`` returns it. At most ``keep_bytes`` of free segments are kept mapped."""

    def __init__(self, directory: Path, keep_bytes: int, prefix: str | None = None, max_in_use: int | None = None):
        self.directory = Path(directory)
        self.max_in_use = max_in_use
        self.in_use = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix or f"atlas-{os.getpid()}-{secrets.token_hex(4)}-"
        self.keep_bytes = keep_bytes
        self._free: list[Segment] = []
        self._all: dict[str, Segment] = {}
        self._count = 0
        self._lock = threading.Lock()

    def take(self, n: int) -> Segment:
        """A segment of at least ``n`` bytes; :class:`NoSpace` when the bytes in use would pass
        ``max_in_use`` or the directory is full."""
        with self._lock:
            if self.max_in_use is not None and self.in_use + n > self.max_in_use:
                raise NoSpace(28, f"{self.in_use} bytes of shared memory are in use; {n} more would pass the "
                                  f"limit of {self.max_in_use}")
            best = None
            for seg in self._free:
                if seg.size >= n and (best is None or seg.size < best.size):
                    best = seg
            if best is not None:
                self._free.remove(best)
                self.in_use += best.size
                return best
            self._count += 1
            name = f"{self.prefix}{self._count}"
            size = _round(max(n, 1))
            self.in_use += size
        try:
            seg = Segment(name, self.directory / name, size, _map(self.directory / name, size, create=True))
        except BaseException:
            with self._lock:
                self.in_use -= size
            raise
        with self._lock:
            self._all[name] = seg
        return seg

    def refresh(self, seg: Segment) -> None:
        """Re-map a segment whose file another process grew."""
        actual = seg.path.stat().st_size
        if actual != seg.size:
            seg.close()
            seg.map = _map(seg.path, actual, create=False)
            with self._lock:
                self.in_use += actual - seg.size
            seg.size = actual

    def give(self, seg: Segment) -> None:
        with self._lock:
            self.in_use -= seg.size
            free_bytes = sum(s.size for s in self._free)
            if seg.name in self._all and free_bytes + seg.size <= self.keep_bytes:
                self._free.append(seg)
                return
            self._all.pop(seg.name, None)
        seg.unlink()

    @contextmanager
    def given_back_on_error(self, seg: Segment) -> Iterator[Segment]:
        """``seg`` for the block; given back to the pool if the block raises (the caller keeps it otherwise)."""
        try:
            yield seg
        except BaseException:
            self.give(seg)
            raise

    def close(self) -> None:
        with self._lock:
            segments = list(self._all.values())
            self._all.clear()
            self._free.clear()
        for seg in segments:
            seg.unlink()
