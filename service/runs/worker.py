"""A run worker: a spawned process that imports torch and the mechanisms, and executes jobs that the
HTTP process sends over a pipe as JSON (never pickles). Tensors are read from and written to
shared-memory segments named in the job.

Job ``{"op": "run", ...}``: validate shapes and hyper-parameters, price the run on the meta device
(parameters, peak bytes) and refuse it when it is over the limits, then build (or reuse) the module,
run it and write the outputs. ``{"op": "check"}`` does the first two steps only; ``{"op":
"describe"}`` returns what ``GET /techniques/{slug}/implementation`` shows.

The worker sets its own address-space limit once it is warm, so one run cannot take the machine: an
allocation past it fails inside the run (413), and the process lives on.
"""

from __future__ import annotations

import math
import os
import resource
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson


class JobError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, details: Any = None):
        super().__init__(message)
        self.status, self.message, self.code, self.details = status, message, code, details


def _vm_size() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


class Worker:
    def __init__(self, config: dict[str, Any]):
        import torch

        from ..mechanisms import registry
        from . import budget

        self.torch = torch
        self.config = config
        self.registry = registry
        self.budget = budget
        self.shm_dir = Path(config["shm_dir"])
        self.maps: dict[str, tuple[Any, int]] = {}
        self.estimates = budget.EstimateCache()
        self.modules: OrderedDict[tuple, tuple[Any, int]] = OrderedDict()
        self.module_bytes = 0
        self.specs: dict[str, dict] = {}
        if config.get("torch_threads"):
            torch.set_num_threads(int(config["torch_threads"]))
        registry.all_mechanisms()

    # ------------------------------------------------------------ shared memory
    def _map(self, name: str, need: int):
        """The mapping of segment ``name`` (cached while its file is the same one). Mappings of files that
        were removed are dropped when a new one is made, so their pages can go back to the system."""
        import mmap

        from .shm import check_region_name

        check_region_name(name)
        path = self.shm_dir / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise JobError(400, f"shared-memory region {name} does not exist") from None
        cached = self.maps.get(name)
        if cached is not None and cached[1] >= need and cached[2] == st.st_ino:
            return cached[0]
        if st.st_size < need:
            raise JobError(400, f"shared-memory region {name} holds {st.st_size} bytes; {need} are needed")
        for old in [n for n, (_, _, ino) in self.maps.items() if n == name or not _same_file(self.shm_dir / n, ino)]:
            self._unmap(old)
        fd = os.open(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self.maps[name] = (mm, size, st.st_ino)
        return mm

    def _unmap(self, name: str) -> None:
        entry = self.maps.pop(name, None)
        if entry is not None:
            try:
                entry[0].close()
            except BufferError:  # a tensor still views it; the garbage collector closes it later
                pass

    def _tensor(self, ref: dict[str, Any]):
        torch = self.torch
        from .budget import TORCH_DTYPES

        mm = self._map(ref["segment"], ref["offset"] + ref["nbytes"])
        dtype = TORCH_DTYPES[ref["dtype"]]
        count = math.prod(ref["shape"])
        item = torch.empty((), dtype=dtype).element_size()
        if count == 0:
            return torch.empty(ref["shape"], dtype=dtype)
        if ref["offset"] % item:
            raw = torch.frombuffer(mm, dtype=torch.uint8, count=ref["nbytes"], offset=ref["offset"]).clone()
            t = raw.view(dtype)
        else:
            t = torch.frombuffer(mm, dtype=dtype, count=count, offset=ref["offset"])
        layout = ref.get("layout", "C")
        if layout == "F":
            return t.reshape(list(reversed(ref["shape"]))).permute(*reversed(range(len(ref["shape"]))))
        if layout == "BE":
            import numpy as np

            arr = t.numpy().view(np.dtype(t.numpy().dtype).newbyteorder(">")).astype(t.numpy().dtype)
            return torch.from_numpy(arr).reshape(ref["shape"])
        return t.reshape(ref["shape"])

    # ------------------------------------------------------------ jobs
    def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        op = job.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "describe":
            return {"ok": True, "spec": self.describe(job["slug"])}
        if op in ("run", "check"):
            return self.run(job, execute=op == "run")
        raise JobError(400, f"unknown operation {op!r}")

    def _mechanism(self, slug: str):
        mech = self.registry.get(slug)
        if mech is None:
            raise JobError(404, f"no implementation for '{slug}'", details={"implemented": sorted(
                self.registry.all_mechanisms())[:60]})
        return mech

    def run(self, job: dict[str, Any], execute: bool) -> dict[str, Any]:
        from ..mechanisms import runtime
        from ..mechanisms.base import MechanismInputError

        torch = self.torch
        cfg = self.config
        mech = self._mechanism(job["slug"])
        shapes = {r["name"]: tuple(r["shape"]) for r in job["inputs"]}
        try:
            params = mech.validate(shapes, job.get("hyperparameters") or {})
        except MechanismInputError as exc:
            raise JobError(422, f"{mech.slug}: {exc}", details={"field": exc.field, "expected": exc.expected}) from None
        dtype_name = job.get("dtype", "float32")
        need_weights = bool(job.get("return_attention", True))
        try:
            est = self.estimates.get(mech, shapes, params, dtype_name, need_weights, cfg["max_parameters"])
        except MechanismInputError as exc:
            raise JobError(422, f"{mech.slug}: {exc}", details={"field": exc.field, "expected": exc.expected}) from None
        except Exception as exc:  # noqa: BLE001 - shapes the mechanism cannot take surface while tracing
            raise JobError(422, f"{mech.slug} cannot run on these inputs: {str(exc)[:300]}",
                           details={"shapes": {k: list(v) for k, v in shapes.items()}}) from None
        if est.parameters > cfg["max_parameters"]:
            raise JobError(422, f"{mech.slug} with these hyper-parameters and inputs would have {est.parameters:,} "
                                f"parameters; the limit is {cfg['max_parameters']:,} (setting ATLAS_RUN_MAX_PARAMETERS)",
                           code="over_budget", details={"field": "hyperparameters", "parameters": est.parameters,
                                                        "limit": cfg["max_parameters"],
                                                        "setting": "ATLAS_RUN_MAX_PARAMETERS"})
        item = self.budget.ITEMSIZE[dtype_name]
        input_bytes = sum(math.prod(s) * item for s in shapes.values())
        weights = job.get("weights")
        if weights:
            input_bytes += sum(math.prod(r["shape"]) * item for r in weights)
        peak = math.ceil(cfg["margin"] * est.activation_peak_bytes)
        total = est.weight_bytes + input_bytes + peak + cfg["overhead_bytes"]
        cost = {"parameters": est.parameters, "weight_bytes": est.weight_bytes, "input_bytes": input_bytes,
                "activation_peak_bytes": est.activation_peak_bytes, "budgeted_bytes": total,
                "limit_bytes": cfg["max_run_bytes"]}
        if total > cfg["max_run_bytes"]:
            raise JobError(413, f"{mech.slug} on these inputs would need about {total / 2**20:,.0f} MiB "
                                f"(weights {est.weight_bytes / 2**20:,.1f}, inputs {input_bytes / 2**20:,.1f}, "
                                f"activations {peak / 2**20:,.1f} with margin); the limit is "
                                f"{cfg['max_run_bytes'] / 2**20:,.0f} MiB (setting ATLAS_RUN_MAX_BYTES). "
                                "Use smaller inputs" + (" or return_attention=false" if need_weights else ""),
                           code="over_budget", details={**cost, "setting": "ATLAS_RUN_MAX_BYTES"})
        attention = {o.name for o in mech.outputs if o.attention}
        out_refs = [(name, shape, dt) for name, (shape, dt) in est.outputs.items()
                    if need_weights or name not in attention]
        if not execute:
            return {"ok": True, "hyperparameters": params, "cost": cost, "flops": est.flops,
                    "outputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in out_refs]}
        capacity = job.get("out_capacity")
        if capacity is not None:
            from .wire import aligned

            need = 0
            for _, shape, dt in sorted(out_refs, key=lambda r: -self.budget.element_size(r[2])):
                need = aligned(need + math.prod(shape) * self.budget.element_size(dt))
            if need > capacity:
                raise JobError(413, f"the outputs need {need} bytes; the output region holds {capacity}",
                               details={"needed_bytes": need, "capacity": capacity,
                                        "outputs": [{"name": n, "shape": s, "dtype": d} for n, s, d in out_refs]})

        dtype = self.budget.TORCH_DTYPES[dtype_name]
        device = torch.device(job.get("device", "cpu"))
        if device.type == "cuda" and not torch.cuda.is_available():
            raise JobError(422, "device=cuda was asked for but this server has no CUDA device",
                           details={"field": "device", "expected": "cpu"})
        inputs = {r["name"]: self._tensor(r) for r in job["inputs"]}
        if not job.get("allow_nonfinite", False):
            for name, t in inputs.items():
                if t.numel() and not torch.isfinite(torch.stack(torch.aminmax(t.float() if t.dtype == torch.bfloat16
                                                                              else t))).all():
                    raise JobError(422, f"input '{name}' holds NaN or infinite values; clean it or pass "
                                        "allow_nonfinite=true", details={"field": f"inputs.{name}"})
        seed = int(job.get("seed", 0))
        build = time.perf_counter()
        if weights:
            module = runtime.build_module(mech, shapes, params, seed, dtype=dtype, device=device)
            try:
                runtime.load_weights(module, {r["name"]: self._tensor(r) for r in weights})
            except MechanismInputError as exc:
                raise JobError(422, str(exc), details={"field": exc.field, "expected": exc.expected}) from None
        else:
            module = self._cached_module(mech, shapes, params, seed, dtype, device, est.weight_bytes)
        build_ms = (time.perf_counter() - build) * 1000.0
        moved = {k: v.to(device=device, dtype=dtype) for k, v in inputs.items()}
        start = time.perf_counter()
        try:
            out = runtime.forward(mech, module, moved, seed, need_weights=need_weights)
        except MemoryError:
            raise
        except RuntimeError as exc:
            if "alloc" in str(exc).lower() and "memory" in str(exc).lower():
                raise MemoryError(str(exc)) from None
            raise JobError(422, f"{mech.slug} could not run on these inputs with dtype {dtype_name}: "
                                f"{str(exc)[:300]}", details={"dtype": dtype_name}) from None
        if device.type == "cuda":
            torch.cuda.synchronize()
        forward_ms = (time.perf_counter() - start) * 1000.0
        if not need_weights:
            out = {k: v for k, v in out.items() if k not in attention}
        refs = self._write_outputs(job, out)
        del moved, inputs, out
        return {"ok": True, "hyperparameters": params, "outputs": refs,
                "out_segment": job["out_segment"], "out_size": self.maps[job["out_segment"]][1],
                "attention": sorted(r["name"] for r in refs if r["name"] in attention),
                "parameter_count": est.parameters, "flops": est.flops, "cost": cost,
                "time_ms": {"forward": round(forward_ms, 3), "build": round(build_ms, 3)}}

    def _cached_module(self, mech, shapes, params, seed, dtype, device, nbytes):
        from ..mechanisms import runtime

        key = (mech.slug, tuple(sorted(shapes.items())), tuple(sorted((k, repr(v)) for k, v in params.items())),
               seed, str(dtype), str(device))
        found = self.modules.get(key)
        if found is not None:
            self.modules.move_to_end(key)
            return found[0]
        module = runtime.build_module(mech, shapes, params, seed, dtype=dtype, device=device)
        limit = self.config["module_cache_bytes"]
        if nbytes <= limit:
            self.modules[key] = (module, nbytes)
            self.module_bytes += nbytes
            while self.module_bytes > limit and self.modules:
                _, (_, n) = self.modules.popitem(last=False)
                self.module_bytes -= n
        return module

    def _write_outputs(self, job: dict[str, Any], out: dict[str, Any]) -> list[dict[str, Any]]:
        from .shm import resize
        from .wire import aligned

        torch = self.torch
        tensors = [(k, v.detach().contiguous().cpu()) for k, v in out.items() if isinstance(v, torch.Tensor)]
        tensors.sort(key=lambda kv: -kv[1].element_size())
        layout, pos = [], 0
        for name, t in tensors:
            nbytes = t.numel() * t.element_size()
            layout.append((name, t, pos, nbytes))
            pos = aligned(pos + nbytes)
        seg = job["out_segment"]
        cached = self.maps.get(seg)
        if cached is None or cached[1] < pos:
            self._unmap(seg)
            resize(self.shm_dir, seg, pos)
        mm = self._map(seg, pos)
        refs = []
        for name, t, offset, nbytes in layout:
            if nbytes:
                target = torch.frombuffer(mm, dtype=torch.uint8, count=nbytes, offset=offset)
                target.copy_(t.reshape(-1).view(torch.uint8))
            refs.append({"name": name, "dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape),
                         "offset": offset, "nbytes": nbytes})
        return refs

    def describe(self, slug: str) -> dict[str, Any]:
        if slug not in self.specs:
            from .spec import implementation_spec

            self.specs[slug] = implementation_spec(self._mechanism(slug))
        return self.specs[slug]

    def warm(self) -> None:
        """Pay the one-time costs (tracing machinery, kernels) before taking jobs."""
        from ..mechanisms import runtime

        mech = self.registry.get("squeeze-and-excitation")
        if mech is None:
            return
        shapes = mech.example_shapes
        self.estimates.get(mech, shapes, mech.defaults(), "float32", True)
        runtime.run(mech, {k: self.torch.ones(v) for k, v in shapes.items()}, mech.defaults())


def _same_file(path: Path, inode: int) -> bool:
    try:
        return os.stat(path).st_ino == inode
    except FileNotFoundError:
        return False


def main(conn, config: dict[str, Any] | None = None) -> None:
    """Entry point of a spawned worker: warm up, limit the address space, then serve jobs until EOF."""
    try:
        if config is None:
            config = orjson.loads(conn.recv_bytes())
        worker = Worker(config)
        worker.warm()
        if config.get("memory_limit_bytes"):
            limit = _vm_size() + int(config["memory_limit_bytes"])
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        conn.send_bytes(orjson.dumps({"ready": True, "pid": os.getpid()}))
    except Exception as exc:  # noqa: BLE001 - report why the worker could not start
        conn.send_bytes(orjson.dumps({"ready": False, "error": f"{type(exc).__name__}: {exc}"[:500]}))
        return
    while True:
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):
            return
        job: dict[str, Any] = {}
        try:
            job = orjson.loads(raw)
            reply = worker.handle(job)
        except JobError as exc:
            reply = {"ok": False, "status": exc.status, "code": exc.code, "message": exc.message,
                     "details": exc.details}
        except MemoryError as exc:
            limit = config.get("memory_limit_bytes") or 0
            reply = {"ok": False, "status": 413, "code": "over_budget",
                     "message": "the run needed more memory than a run worker may use "
                                f"({limit / 2**20:,.0f} MiB, setting ATLAS_RUN_WORKER_MEMORY_BYTES); use smaller inputs",
                     "details": {"limit_bytes": limit, "setting": "ATLAS_RUN_WORKER_MEMORY_BYTES",
                                 "error": str(exc)[:200]}}
        except Exception as exc:  # noqa: BLE001 - a bug: report it, keep serving
            from .shm import NoSpace

            if isinstance(exc, NoSpace):
                reply = {"ok": False, "status": 503, "code": "busy", "details": None,
                         "message": f"no shared memory left for the outputs ({exc.strerror}); retry shortly"}
                conn.send_bytes(orjson.dumps(reply))
                continue
            reply = {"ok": False, "status": 500, "code": "internal_error",
                     "message": f"the run failed inside the worker: {type(exc).__name__}",
                     "details": {"trace": traceback.format_exc(limit=-3)[-800:]}}
        try:
            conn.send_bytes(orjson.dumps(reply, option=orjson.OPT_SERIALIZE_NUMPY))
        except (EOFError, OSError):
            return


if __name__ == "__main__":
    import sys
    from multiprocessing.connection import Connection

    main(Connection(int(sys.argv[1])))
