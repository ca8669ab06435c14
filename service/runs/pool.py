"""The pool of run workers, seen from the HTTP process (which never imports torch).

``workers`` spawned processes take jobs one at a time; up to ``queue`` more requests may wait for one,
beyond that a request is refused with 503 at once. ``spares`` more workers are kept started and warm:
when a run passes its time limit, its worker is killed and a spare takes its slot at once, so the slot
is free again immediately; a new spare is started in the background. A worker that dies (OOM killer,
a crash) fails only the job it held, with a 502 in the error shape, and is replaced the same way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import orjson

from ..errors import ApiError

log = logging.getLogger("service.runs")


@dataclass(eq=False)
class _Worker:
    proc: Any
    conn: Any
    started: float = field(default_factory=time.monotonic)
    ready: asyncio.Future | None = None
    pending: asyncio.Future | None = None
    pid: int | None = None
    dead: bool = False


class WorkerPool:
    def __init__(self, config: dict[str, Any], workers: int, queue: int, spares: int, timeout_s: float,
                 start_timeout_s: float = 60.0):
        self.config = config
        self.size = max(1, workers)
        self.capacity = self.size + max(0, queue)
        self.spares = max(0, spares)
        self.timeout_s = timeout_s
        self.start_timeout_s = start_timeout_s
        self._idle: deque[_Worker] = deque()
        self._spare: deque[_Worker] = deque()
        self._starting: set[_Worker] = set()
        self._busy: set[_Worker] = set()
        self._waiters: deque[asyncio.Future] = deque()
        self._outstanding = 0  # requests holding or waiting for a slot
        self._slots_free = self.size
        self._started = False
        self._closed = False
        self.stats = {"killed_on_timeout": 0, "died": 0, "started": 0}

    # ------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the workers (non-blocking: they warm up in the background)."""
        if self._started or self._closed:
            return
        self._started = True
        for _ in range(self.size + self.spares):
            self._spawn()

    def _spawn(self) -> _Worker:
        """A fresh interpreter (``python -m service.runs.worker``) joined by a socket pair: nothing of this
        process (its modules, threads or __main__) is inherited."""
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **self.config.get("env", {})}
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.Popen([sys.executable, "-m", "service.runs.worker", str(theirs.fileno())],
                                    pass_fds=[theirs.fileno()], env=env, cwd=root, stdin=subprocess.DEVNULL)
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        conn.send_bytes(orjson.dumps({k: v for k, v in self.config.items() if k != "env"}))
        w = _Worker(proc, conn, ready=loop.create_future())
        self._starting.add(w)
        self.stats["started"] += 1
        loop.add_reader(conn.fileno(), self._on_readable, w)
        # uvloop (uvicorn's default loop when installed) makes a watched socket non-blocking; recv_bytes
        # expects a blocking one and would fail on a reply that arrives in several pieces
        os.set_blocking(conn.fileno(), True)
        return w

    def _on_readable(self, w: _Worker) -> None:
        try:
            raw = w.conn.recv_bytes()
            msg = orjson.loads(raw)
        except (EOFError, OSError, orjson.JSONDecodeError):
            self._lost(w, "the run worker exited")
            return
        if w.ready is not None and not w.ready.done():
            if msg.get("ready"):
                w.pid = msg.get("pid")
                w.ready.set_result(True)
                self._starting.discard(w)
                self._enlist(w)
            else:
                log.error("a run worker could not start: %s", msg.get("error"))
                self._lost(w, f"a run worker could not start: {msg.get('error')}")
            return
        if w.pending is not None and not w.pending.done():
            w.pending.set_result(msg)

    def _enlist(self, w: _Worker) -> None:
        """A warm worker joins: as idle when a slot lacks a worker, else as a spare."""
        if self._closed:
            self._kill(w)
            return
        if len(self._idle) + len(self._busy) < self.size:
            self._idle.append(w)
            self._wake()
        else:
            self._spare.append(w)

    def _lost(self, w: _Worker, why: str) -> None:
        if w.dead:
            return
        w.dead = True
        self._close_conn(w)
        self._reap_later(w)
        self._starting.discard(w)
        for group in (self._idle, self._spare):
            if w in group:
                group.remove(w)
        self._busy.discard(w)
        if w.ready is not None and not w.ready.done():
            w.ready.set_result(False)
        if w.pending is not None and not w.pending.done():
            self.stats["died"] += 1
            w.pending.set_exception(ApiError(502, f"{why} during the run (signal or out of memory); the run was "
                                                  "lost, other runs are unaffected; retry or use smaller inputs",
                                             code="worker_died", details={"exitcode": w.proc.poll()}))
        if not self._closed:
            self._promote()
            self._spawn()

    def _close_conn(self, w: _Worker) -> None:
        try:
            asyncio.get_running_loop().remove_reader(w.conn.fileno())
        except (ValueError, OSError, RuntimeError):
            pass
        try:
            w.conn.close()
        except OSError:
            pass

    def _kill(self, w: _Worker) -> None:
        w.dead = True
        self._close_conn(w)
        try:
            w.proc.kill()
        except (OSError, ValueError):
            pass
        self._reap_later(w)

    @staticmethod
    def _reap_later(w: _Worker) -> None:
        """Collect the exit status off the event loop, so no zombie is left behind."""
        try:
            asyncio.get_running_loop().run_in_executor(None, _reap, w.proc)
        except RuntimeError:
            _reap(w.proc)

    def _promote(self) -> None:
        while self._spare and len(self._idle) + len(self._busy) < self.size:
            self._idle.append(self._spare.popleft())
            self._wake()

    def _wake(self) -> None:
        while self._waiters and self._idle:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        for w in [*self._idle, *self._spare, *self._busy, *self._starting]:
            self._kill(w)
        for w in [*self._idle, *self._spare, *self._busy, *self._starting]:
            await asyncio.to_thread(_reap, w.proc)
        self._idle.clear()
        self._spare.clear()
        self._busy.clear()
        self._starting.clear()

    # ------------------------------------------------------------ state
    @property
    def inflight(self) -> int:
        return self._outstanding

    def snapshot(self) -> dict[str, Any]:
        return {"workers": self.size, "idle": len(self._idle), "busy": len(self._busy), "spares": len(self._spare),
                "starting": len(self._starting), "waiting": len(self._waiters), "capacity": self.capacity,
                "pids": [w.pid for w in [*self._idle, *self._busy, *self._spare] if w.pid], **self.stats}

    def busy_pids(self) -> list[int]:
        return [w.pid for w in self._busy if w.pid]

    # ------------------------------------------------------------ jobs
    async def submit(self, job: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
        """Run one job on a worker; the reply dict, or an ApiError (503 busy, 504 time limit, 502 lost)."""
        if self._closed:
            raise ApiError(503, "the service is shutting down", code="unavailable")
        if self._outstanding >= self.capacity:
            raise ApiError(503, f"all {self.size} run workers are busy and {self.capacity - self.size} runs are "
                                "waiting; retry shortly", code="busy", headers={"Retry-After": "1"},
                           details={"capacity": self.capacity})
        self.start()
        self._outstanding += 1
        try:
            w = await self._acquire()
            try:
                return await self._run_on(w, job, timeout_s or self.timeout_s)
            finally:
                self._release(w)
        finally:
            self._outstanding -= 1

    async def _acquire(self) -> _Worker:
        deadline = time.monotonic() + self.start_timeout_s
        while not self._idle:
            fut = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await asyncio.wait_for(fut, timeout=max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise ApiError(503, "no run worker became free in time; retry shortly", code="busy",
                               headers={"Retry-After": "2"}) from None
            finally:
                if fut in self._waiters:
                    self._waiters.remove(fut)
        w = self._idle.popleft()
        self._busy.add(w)
        return w

    def _release(self, w: _Worker) -> None:
        self._busy.discard(w)
        if not w.dead:
            self._idle.append(w)
        self._promote()
        self._wake()

    async def _run_on(self, w: _Worker, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        w.pending = loop.create_future()
        try:
            w.conn.send_bytes(orjson.dumps(job))
        except (OSError, ValueError):
            self._lost(w, "the run worker exited")
            raise ApiError(502, "the run worker was lost before the run started; retry", code="worker_died") from None
        try:
            return await asyncio.wait_for(asyncio.shield(w.pending), timeout=timeout_s)
        except TimeoutError:
            self.stats["killed_on_timeout"] += 1
            self._kill(w)
            self._busy.discard(w)
            self._promote()
            self._spawn()
            raise ApiError(504, f"the run took longer than the limit of {timeout_s:g} s and was stopped; use smaller "
                                "inputs (setting ATLAS_RUN_TIMEOUT_S)", code="timeout",
                           details={"limit_s": timeout_s, "setting": "ATLAS_RUN_TIMEOUT_S"}) from None
        finally:
            w.pending = None


def _reap(proc) -> None:
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
