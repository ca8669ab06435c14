"""The run core on the HTTP side: request bodies into shared memory, jobs to the worker pool, results
back as views of shared memory. The run API, the Open Inference Protocol routes and the co-located
shared-memory path all go through :class:`RunService`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..api.deps import declared_length
from ..errors import ApiError
from ..settings import Settings
from . import shm, wire
from .pool import WorkerPool


@dataclass
class RunOptions:
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    dtype: str = "float32"
    return_attention: bool = True
    device: str = "cpu"
    allow_nonfinite: bool = False
    timeout_s: float | None = None


@dataclass
class RunResult:
    """Outputs as refs into ``buffer`` (a mapped segment); call :meth:`release` once they are sent."""

    slug: str
    meta: dict[str, Any]
    outputs: list[dict[str, Any]]
    buffer: memoryview
    _release: Any = None

    def release(self) -> None:
        if self._release is not None:
            self._release()
            self._release = None


class RunService:
    def __init__(self, settings: Settings):
        self.settings = settings
        directory = Path(settings.run_shm_dir) if settings.run_shm_dir else shm.default_dir()
        self.segments = shm.SegmentPool(directory, keep_bytes=settings.run_shm_keep_bytes,
                                        max_in_use=settings.run_shm_max_bytes)
        threads = settings.torch_threads or max(1, (_cpu_count() // max(1, settings.run_workers)))
        env = {}
        if settings.run_worker_malloc_tuning:
            env = {"MALLOC_MMAP_THRESHOLD_": str(32 << 20), "MALLOC_TRIM_THRESHOLD_": str(1 << 30)}
        self.config = {
            "shm_dir": str(directory), "torch_threads": threads, "memory_limit_bytes": settings.run_worker_memory_bytes,
            "max_parameters": settings.run_max_parameters, "max_run_bytes": settings.run_max_bytes,
            "overhead_bytes": settings.run_overhead_bytes, "margin": settings.run_budget_margin,
            "module_cache_bytes": settings.run_module_cache_bytes, "env": env,
        }
        self.pool = WorkerPool(self.config, settings.run_workers, settings.run_queue, settings.run_spare_workers,
                               settings.run_timeout_s)
        self.limits = wire.Limits(settings.max_tensor_elements, settings.max_total_elements)
        self._specs: dict[str, dict] = {}
        self._out_sizes: dict[tuple, int] = {}

    async def close(self) -> None:
        await self.pool.close()
        self.segments.close()

    # ------------------------------------------------------------ bodies
    async def _chunks(self, receive, declared: int | None) -> AsyncIterator[bytes]:
        """The body's chunks as they arrive; 408 past the overall allowance or a pause of more than the
        idle limit. One timeout context is moved along per chunk (no task per chunk)."""
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.run_body_timeout_s + (declared or 0) / max(1, s.run_body_min_bytes_per_s)
        idle = s.run_body_idle_timeout_s
        try:
            async with asyncio.timeout_at(min(deadline, loop.time() + idle)) as limit:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise ApiError(400, "the client closed the connection before the body arrived",
                                       code="disconnected")
                    chunk = message.get("body", b"")
                    if chunk:
                        yield chunk
                    if not message.get("more_body", False):
                        return
                    limit.reschedule(min(deadline, loop.time() + idle))
        except TimeoutError:
            raise _too_slow(s) from None

    def take(self, n: int) -> shm.Segment:
        """A pooled segment, or 503 when shared memory in use would pass its limit (or tmpfs is full)."""
        try:
            return self.segments.take(n)
        except shm.NoSpace as exc:
            raise ApiError(503, f"the server's shared memory for runs is exhausted ({exc.strerror}); retry shortly",
                           code="busy", headers={"Retry-After": "1"},
                           details={"setting": "ATLAS_RUN_SHM_MAX_BYTES", "limit": self.segments.max_in_use}) from None

    async def read_into_segment(self, request, limit: int) -> tuple[shm.Segment, int]:
        """The whole body into a pooled segment (no run slot is held meanwhile); 413 past ``limit``,
        408 when it arrives too slowly. Without Content-Length the body is read first, then copied."""
        declared = declared_length(request, limit)
        if declared is None:
            body = await self.read_bytes(request, limit)
            seg = self.take(max(len(body), 1))
            seg.view()[:len(body)] = body
            return seg, len(body)
        seg = self.take(declared)
        size = 0
        with self.segments.given_back_on_error(seg):
            view = seg.view()
            async for chunk in self._chunks(request.receive, declared):
                end = size + len(chunk)
                if end > limit or end > seg.size:
                    raise ApiError(413, f"the body exceeds the limit of {limit} bytes", details={"limit": limit})
                view[size:end] = chunk
                size = end
            view.release()
        return seg, size

    async def read_bytes(self, request, limit: int) -> bytes:
        declared = declared_length(request, limit)
        parts, size = [], 0
        async for chunk in self._chunks(request.receive, declared):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"the body exceeds the limit of {limit} bytes", details={"limit": limit})
            parts.append(chunk)
        return b"".join(parts)

    def segment_for_plan(self, plans: list[list[tuple[str, Any, str]]]) -> tuple[shm.Segment, list[list[wire.TensorRef]]]:
        total = sum(wire.plan_nbytes(p) for p in plans)
        seg = self.take(max(total, 1))
        with self.segments.given_back_on_error(seg):
            refs, pos, view = [], 0, seg.view()
            for plan in plans:
                r, pos = wire.write_plan(plan, seg.name, view, pos)
                refs.append(r)
            view.release()
        return seg, refs

    # ------------------------------------------------------------ jobs
    def check_slug(self, slug: str) -> None:
        from ..mechanisms import registry

        if slug not in registry.slugs():
            near = sorted(s for s in registry.slugs() if s.split("-")[0] == slug.split("-")[0])[:3]
            raise ApiError(404, f"no implementation for '{wire.short(slug)}'",
                           details={"did_you_mean": near, "implemented": "/techniques?has_implementation=true"})

    def _job(self, op: str, slug: str, opts: RunOptions, inputs: list[wire.TensorRef],
             weights: list[wire.TensorRef] | None) -> dict[str, Any]:
        return {"op": op, "slug": slug, "hyperparameters": opts.hyperparameters, "seed": opts.seed,
                "dtype": opts.dtype, "return_attention": opts.return_attention, "device": opts.device,
                "allow_nonfinite": opts.allow_nonfinite, "inputs": [r.to_json() for r in inputs],
                "weights": [r.to_json() for r in weights] if weights else None}

    @staticmethod
    def _raise(reply: dict[str, Any]) -> None:
        if not reply.get("ok"):
            raise ApiError(int(reply.get("status", 500)), str(reply.get("message", "the run failed")),
                           code=reply.get("code"), details=reply.get("details"))

    async def check(self, slug: str, opts: RunOptions, inputs: list[wire.TensorRef]) -> dict[str, Any]:
        """Validate and price a run without executing it (nothing is allocated)."""
        reply = await self.pool.submit(self._job("check", slug, opts, inputs, None))
        self._raise(reply)
        return reply

    async def run(self, slug: str, opts: RunOptions, inputs: list[wire.TensorRef],
                  weights: list[wire.TensorRef] | None = None, out_segment: shm.Segment | None = None) -> RunResult:
        """Execute on a worker; the outputs land in a pooled segment that the result keeps until released."""
        start = time.perf_counter()
        key = (slug, tuple((r.name, tuple(r.shape)) for r in inputs), opts.return_attention, opts.dtype)
        own = out_segment is None
        out = out_segment or self.take(self._out_sizes.get(key, sum(r.nbytes for r in inputs) or 1))
        job = self._job("run", slug, opts, inputs, weights)
        job["out_segment"] = out.name
        if not own:
            job["out_capacity"] = out.size  # a client's region: never grown; the worker checks the fit first
        try:
            limit = self.settings.run_timeout_s
            reply = await self.pool.submit(job, min(opts.timeout_s or limit, limit))
            self._raise(reply)
            if reply["out_size"] != out.size:
                self.segments.refresh(out)
        except BaseException:
            if own:
                self.segments.give(out)
            raise
        self._out_sizes[key] = reply["out_size"]
        meta = {"technique": slug, "hyperparameters": reply["hyperparameters"], "seed": opts.seed, "dtype": opts.dtype,
                "device": opts.device, "attention_outputs": reply["attention"],
                "parameter_count": reply["parameter_count"], "flops": reply["flops"], "cost": reply["cost"],
                "time_ms": {**reply["time_ms"], "total": round((time.perf_counter() - start) * 1000.0, 3)}}
        buffer = out.view() if out.map is not None else memoryview(b"")
        return RunResult(slug, meta, reply["outputs"], buffer, (lambda: self.segments.give(out)) if own else None)

    async def describe(self, slug: str) -> dict[str, Any]:
        self.check_slug(slug)
        if slug not in self._specs:
            reply = await self.pool.submit({"op": "describe", "slug": slug})
            self._raise(reply)
            self._specs[slug] = reply["spec"]
        return self._specs[slug]


def _too_slow(settings: Settings) -> ApiError:
    return ApiError(408, f"the request body did not arrive in time (allowed: {settings.run_body_timeout_s:g} s plus "
                         f"{settings.run_body_min_bytes_per_s} bytes/s, at most {settings.run_body_idle_timeout_s:g} s "
                         "without data); nothing was run", code="request_timeout",
                    headers={"Connection": "close"},
                    details={"setting": "ATLAS_RUN_BODY_TIMEOUT_S, ATLAS_RUN_BODY_MIN_BYTES_PER_S"})


def _cpu_count() -> int:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def element_count(refs: list[wire.TensorRef]) -> int:
    return sum(math.prod(r.shape) for r in refs)
