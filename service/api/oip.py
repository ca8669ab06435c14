"""Open Inference Protocol v2 routes (KServe v2 / Triton REST): every technique is a model.

The protocol itself (parsing, the binary tensor data extension, encoding) is in ``service/oip.py``; runs
go through the same core as ``POST /techniques/{slug}/run`` (limits, cost budget, worker processes, time
limit) by way of :func:`execute`, and model metadata comes from :func:`describe`. Errors on these routes
have the protocol's shape ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Request, Response
from fastapi import Path as FastPath

from .. import __version__, oip
from ..errors import ApiError

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_ERROR = {"description": "Error", "content": {"application/json": {"example": {"error": "unknown model 'cbm'"}}}}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response(oip.error_body(message), status_code=status, media_type="application/json", headers=headers)


def _json(doc: Any, status: int = 200) -> Response:
    import orjson

    return Response(orjson.dumps(doc), status_code=status, media_type="application/json")


def model_metadata(slug: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": slug, "versions": ["1"], "platform": "pytorch",
        "inputs": [oip.tensor_metadata(i["name"], i["dims"]) for i in spec["inputs"]],
        "outputs": [oip.tensor_metadata(o["name"], o["dims"]) for o in spec["outputs"]],
    }


# ------------------------------------------------------------------------------------------ the run core
# The two functions below are the only places that know how runs are executed.

async def describe(request: Request, name: str, version: str | None) -> dict[str, Any]:
    """Inputs and outputs of model ``name`` (``{"inputs": [{name, dims}], "outputs": [{name, dims,
    attention}]}``, from the run workers); ``OipError`` 404 for an unknown model or version."""
    from ..mechanisms import registry

    if name not in registry.slugs():
        raise oip.OipError(404, f"unknown model '{name[:96]}'; GET /techniques?has_implementation=true lists them")
    if version is not None and version != "1":
        raise oip.OipError(404, f"model '{name}' has only version 1, not '{version[:32]}'")
    return await request.app.state.runs.describe(name)


async def execute(request: Request, slug: str, inputs: dict[str, tuple[np.ndarray, str] | oip.Tensor],
                  hyperparameters: dict[str, Any], *, seed: int, dtype: str, allow_nonfinite: bool,
                  need_attention: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run ``slug`` on the run core, as ``POST /techniques/{slug}/run`` does: the inputs (name -> (array,
    wire dtype)) go into a shared-memory segment, a worker validates, prices and runs them under the same
    limits, run slots and time limit. Returns the outputs by name as NumPy arrays (bfloat16 as uint16 bit
    patterns) and the run facts; raises ``ApiError`` as the run API does. An input given as an
    ``oip.Tensor`` with ``shm`` set is read by the worker straight from the client's registered region."""
    from ..runs import wire
    from ..runs.core import RunOptions

    svc = request.app.state.runs
    plan = [(name, *value) for name, value in inputs.items() if not isinstance(value, oip.Tensor)]
    seg, refs = svc.segment_for_plan([plan])
    by_name = {r.name: r for r in refs[0]}
    try:
        for name, value in inputs.items():
            if isinstance(value, oip.Tensor):
                region = _region(request, value.shm.region)
                end = value.shm.offset + value.shm.byte_size
                if end > region["byte_size"]:
                    raise oip.OipError(400, f"input '{name}' runs past the end of region '{value.shm.region}' "
                                            f"({end} > {region['byte_size']} bytes)")
                by_name[name] = wire.TensorRef(name, oip.RUN_DTYPE[value.datatype], list(value.shape),
                                               region["key"], region.get("offset", 0) + value.shm.offset,
                                               value.shm.byte_size)
        wire.check_total((math.prod(r.shape) for r in by_name.values()), svc.limits)
        result = await svc.run(slug, RunOptions(hyperparameters=hyperparameters, seed=seed, dtype=dtype,
                                                return_attention=need_attention, allow_nonfinite=allow_nonfinite),
                               [by_name[name] for name in inputs])
    finally:
        svc.segments.give(seg)
    try:
        outputs = {}
        for ref in result.outputs:
            raw = np.dtype("<u2") if ref["dtype"] == "bfloat16" else _NUMPY[ref["dtype"]]
            count = math.prod(ref["shape"])
            outputs[ref["name"]] = np.frombuffer(result.buffer, dtype=raw, count=count,
                                                 offset=ref["offset"]).reshape(ref["shape"]).copy()
    finally:
        result.release()
    meta = result.meta
    request.app.state.metrics.observe_run(slug, meta["time_ms"]["forward"] / 1000.0)
    facts = {"seed": seed, "dtype": dtype, "forward_ms": meta["time_ms"]["forward"],
             "total_ms": meta["time_ms"]["total"], "parameter_count": meta["parameter_count"], "flops": meta["flops"]}
    return outputs, facts


_NUMPY = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8"), "float16": np.dtype("<f2")}


# ------------------------------------------------------------------------------------------ routes

ModelName = Annotated[str, FastPath(description="a technique's slug", examples=["squeeze-and-excitation"],
                                    max_length=96)]
RegionName = Annotated[str, FastPath(description="a registered region's name", examples=["input0"], max_length=128)]
ModelVersion = Annotated[str, FastPath(description="the only version is 1", examples=["1"], max_length=16)]


@router.get("", summary="Server metadata", responses={200: {"content": {"application/json": {"example": {
    "name": "attention-atlas", "version": __version__, "extensions": ["binary_tensor_data"]}}}}})
def server_metadata(request: Request) -> Response:
    """Name, version and the protocol extensions this server supports."""
    extensions = ["binary_tensor_data"]
    if request.app.state.settings.run_shm_client_regions:
        extensions.append("system_shared_memory")
    return _json({"name": "attention-atlas", "version": __version__, "extensions": extensions})


@router.get("/health/live", summary="Server liveness", response_class=Response,
            responses={200: {"description": "live"}})
def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", summary="Server readiness", response_class=Response,
            responses={200: {"description": "ready"}, 503: _ERROR})
def ready(request: Request) -> Response:
    """Ready when the process can run models (the catalogue database is not needed for inference)."""
    from ..mechanisms import registry

    if not registry.slugs():
        return _error(503, "no models are registered")
    return Response(status_code=200)


_META_EXAMPLE = {"name": "cbam", "versions": ["1"], "platform": "pytorch",
                 "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, -1, -1, -1]}],
                 "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, -1, -1, -1]},
                             {"name": "channel_weights", "datatype": "FP32", "shape": [-1, -1]},
                             {"name": "spatial_map", "datatype": "FP32", "shape": [-1, 1, -1, -1]}]}


async def _metadata(request: Request, model_name: str, model_version: str | None) -> Response:
    try:
        return _json(model_metadata(model_name, await describe(request, model_name, model_version)))
    except (oip.OipError, ApiError) as exc:
        return _error(exc.status, exc.message)


async def _ready(request: Request, model_name: str, model_version: str | None) -> Response:
    try:
        await describe(request, model_name, model_version)
    except (oip.OipError, ApiError) as exc:
        return _error(exc.status, exc.message)
    return Response(status_code=200)


@router.get("/models/{model_name}", summary="Model metadata",
            responses={200: {"content": {"application/json": {"example": _META_EXAMPLE}}}, 404: _ERROR})
async def model(request: Request, model_name: ModelName) -> Response:
    """Inputs and outputs of a technique (the model name is its slug) with OIP names, datatypes and shapes
    (-1: any size). Outputs after `output` are attention maps. FP64 and BF16 inputs are accepted as well
    as FP32; the outputs follow them (or the `dtype` parameter)."""
    return await _metadata(request, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}", summary="Model metadata (version 1)",
            responses={200: {"content": {"application/json": {"example": _META_EXAMPLE}}}, 404: _ERROR})
async def model_version(request: Request, model_name: ModelName, model_version: ModelVersion) -> Response:
    return await _metadata(request, model_name, model_version)


@router.get("/models/{model_name}/ready", summary="Model readiness", response_class=Response, responses={200: {}, 404: _ERROR})
async def model_ready(request: Request, model_name: ModelName) -> Response:
    return await _ready(request, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", summary="Model readiness (version 1)",
            response_class=Response, responses={200: {}, 404: _ERROR})
async def model_version_ready(request: Request, model_name: ModelName, model_version: ModelVersion) -> Response:
    return await _ready(request, model_name, model_version)


_INFER_EXAMPLE = {
    "id": "42",
    "parameters": {"reduction": 2, "seed": 0},
    "inputs": [{"name": "x", "shape": [1, 4, 1, 2], "datatype": "FP32", "data": [0.1, 0.2, 1, 0, 0.5, 0.5, -1, 1]}],
    "outputs": [{"name": "output"}, {"name": "weights"}],
}
_INFER_ANSWER = {"model_name": "squeeze-and-excitation", "model_version": "1", "id": "42",
                 "parameters": {"seed": 0, "dtype": "float32", "forward_ms": 0.1, "parameter_count": 14},
                 "outputs": [{"name": "output", "datatype": "FP32", "shape": [1, 4, 1, 2], "data": [0.05, "..."]}]}


@router.post("/models/{model_name}/infer", summary="Run a technique (Open Inference Protocol)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"example": _INFER_EXAMPLE},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={200: {"content": {"application/json": {"example": _INFER_ANSWER},
                                          "application/octet-stream": {}}},
                        400: _ERROR, 404: _ERROR, 413: _ERROR, 422: _ERROR, 503: _ERROR, 504: _ERROR})
async def infer(request: Request, model_name: ModelName) -> Response:
    """Inputs as OIP tensors (`name`, `shape`, `datatype`, `data` flat or nested row-major), or binary:
    a JSON header of `Inference-Header-Content-Length` bytes followed by the raw little-endian tensors of
    the inputs that declare `parameters.binary_data_size`, in order.

    Request `parameters`: the technique's hyper-parameters (e.g. `reduction`), `seed` (weights and
    sampling), `dtype` (FP32/FP64/BF16; default: the inputs' when all are FP64 or all BF16, else FP32),
    `allow_nonfinite`, `binary_data_output`. `outputs` picks outputs (attention maps are outputs after
    `output`) and `parameters.binary_data` returns one as binary. Limits, run slots and the time limit
    are those of `POST /techniques/{slug}/run`."""
    return await _infer(request, model_name, None)


@router.post("/models/{model_name}/versions/{model_version}/infer", summary="Run a technique (version 1)",
             responses={200: {}, 400: _ERROR, 404: _ERROR, 413: _ERROR, 422: _ERROR, 503: _ERROR, 504: _ERROR})
async def infer_version(request: Request, model_name: ModelName, model_version: ModelVersion) -> Response:
    return await _infer(request, model_name, model_version)


async def _infer(request: Request, model_name: str, model_version: str | None) -> Response:
    settings = request.app.state.settings
    try:
        spec = await describe(request, model_name, model_version)
        if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            raise oip.OipError(415, "compressed requests are not accepted; send the body uncompressed")
        # the run API's reader: the body must arrive in time (408), and no run slot is held meanwhile
        body = await request.app.state.runs.read_bytes(request, settings.max_body_bytes)
        limits = oip.Limits(settings.max_tensor_elements, settings.max_total_elements, settings.max_json_body_bytes)
        req = oip.parse_infer(body, request.headers.get("inference-header-content-length"), limits)
        known = [o["name"] for o in spec["outputs"]]
        attention = {o["name"] for o in spec["outputs"] if o["attention"]}
        wanted = req.outputs if req.outputs is not None else [oip.RequestedOutput(n, req.binary_output) for n in known]
        for o in wanted:
            if o.name not in known:
                raise oip.OipError(400, f"model '{model_name}' has no output '{o.name}'; its outputs are {known}")
        for t in req.inputs.values():
            if t.shm is not None and t.datatype not in oip.RUN_DTYPE:
                raise oip.OipError(400, f"input '{t.name}' in shared memory must be one of {sorted(oip.RUN_DTYPE)}")
        dtype = oip.run_dtype(req)
        outputs, facts = await execute(
            request, model_name, {k: (t if t.shm else oip.as_wire(t)) for k, t in req.inputs.items()},
            req.hyperparameters,
            seed=req.seed, dtype=dtype, allow_nonfinite=req.allow_nonfinite,
            need_attention=any(o.name in attention for o in wanted))
    except oip.OipError as exc:
        return _error(exc.status, exc.message, exc.headers)
    except ApiError as exc:
        return _error(exc.status, exc.message, exc.headers)
    datatype = oip.DATATYPE_OF_RUN[dtype]
    missing = [o.name for o in wanted if o.name not in outputs]
    if missing:
        return _error(500, f"the run did not produce {missing}")
    tensors = [oip.Tensor(o.name, datatype, tuple(outputs[o.name].shape), outputs[o.name], o.shm) for o in wanted]
    try:
        _write_to_regions(request, [t for t in tensors if t.shm is not None])
    except oip.OipError as exc:
        return _error(exc.status, exc.message)
    body, headers = oip.encode_infer(model_name, req.id, tensors, {o.name for o in wanted if o.binary}, facts)
    media = "application/octet-stream" if headers else "application/json"
    return Response(body, media_type=media, headers=headers)


# ------------------------------------------------------------------------------------------ shared memory
# The system shared-memory extension, for clients on the same host (tritonclient.utils.shared_memory):
# regions are POSIX shared-memory objects in the server's shm directory, registered under a name; inputs
# and outputs then name a region instead of carrying data. Off unless ATLAS_RUN_SHM_CLIENT_REGIONS=true;
# the regions are the ones POST /shm/regions registers for the run API.

def _regions(request: Request) -> dict[str, dict[str, Any]]:
    if not request.app.state.settings.run_shm_client_regions:
        raise oip.OipError(403, "shared-memory regions are disabled on this server (ATLAS_RUN_SHM_CLIENT_REGIONS)")
    return request.app.state.shm_regions


def _region(request: Request, name: str) -> dict[str, Any]:
    region = _regions(request).get(name)
    if region is None:
        raise oip.OipError(400, f"no shared-memory region named '{name[:128]}' is registered")
    return region


def _write_to_regions(request: Request, tensors: list[oip.Tensor]) -> None:
    """Copy outputs into the regions the client named for them."""
    from ..runs import shm

    directory = request.app.state.runs.segments.directory
    for t in tensors:
        region = _region(request, t.shm.region)
        raw = np.ascontiguousarray(t.array, dtype=oip.WIRE[t.datatype]).reshape(-1).view(np.uint8)
        if raw.size > t.shm.byte_size or t.shm.offset + t.shm.byte_size > region["byte_size"]:
            raise oip.OipError(400, f"output '{t.name}' needs {raw.size} bytes; region '{t.shm.region}' offers "
                                    f"{min(t.shm.byte_size, region['byte_size'] - t.shm.offset)} at offset {t.shm.offset}")
        start = region.get("offset", 0) + t.shm.offset
        seg = shm.open_segment(directory, region["key"], start + raw.size)
        try:
            view = seg.view()
            view[start:start + raw.size] = raw.tobytes()
            view.release()
        finally:
            seg.close()
        t.shm = oip.ShmRef(t.shm.region, int(raw.size), t.shm.offset)


def _status(regions: list[dict[str, Any]]) -> Response:
    return _json([{"name": r["name"], "key": "/" + r["key"], "offset": r.get("offset", 0), "byte_size": r["byte_size"]}
                  for r in regions])


@router.get("/systemsharedmemory/status", summary="Registered system shared-memory regions",
            responses={200: {"content": {"application/json": {"example": [
                {"name": "in", "key": "/my_inputs", "offset": 0, "byte_size": 4096}]}}}, 403: _ERROR})
def shm_status(request: Request) -> Response:
    try:
        return _status(list(_regions(request).values()))
    except oip.OipError as exc:
        return _error(exc.status, exc.message)


@router.get("/systemsharedmemory/region/{region_name}/status", summary="One system shared-memory region",
            responses={200: {}, 400: _ERROR, 403: _ERROR})
def shm_region_status(request: Request, region_name: RegionName) -> Response:
    try:
        return _status([_region(request, region_name)])
    except oip.OipError as exc:
        return _error(exc.status, exc.message)


@router.post("/systemsharedmemory/region/{region_name}/register", summary="Register a system shared-memory region",
             openapi_extra={"requestBody": {"content": {"application/json": {"example": {
                 "key": "/my_inputs", "offset": 0, "byte_size": 4096}}}}},
             responses={200: {}, 400: _ERROR, 403: _ERROR, 409: _ERROR})
async def shm_register(request: Request, region_name: RegionName) -> Response:
    """`key` is the name the client gave shm_open; the object must exist in the server's shm directory."""
    from ..runs import shm

    try:
        regions = _regions(request)
        body = await request.app.state.runs.read_bytes(request, 64 << 10)
        doc = oip._json(body, "the registration", 64 << 10)
        if not isinstance(doc, dict) or set(doc) - {"key", "offset", "byte_size"} or "key" not in doc:
            raise oip.OipError(400, "the registration is {\"key\": \"/name\", \"offset\": 0, \"byte_size\": n}")
        offset, size = doc.get("offset", 0), doc.get("byte_size")
        for label, value in (("offset", offset), ("byte_size", size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (1 if label == "byte_size" else 0):
                raise oip.OipError(400, f"'{label}' must be a {'positive' if label == 'byte_size' else 'non-negative'} "
                                        "integer")
        try:
            shm.check_region_name(region_name)
            key = shm.check_region_name(doc["key"]) if isinstance(doc["key"], str) else ""
        except ValueError as exc:
            raise oip.OipError(400, str(exc)) from None
        if not key or key.startswith("atlas-"):
            raise oip.OipError(400, "'key' must name a shared-memory object of the client (not 'atlas-...')")
        path = request.app.state.runs.segments.directory / key
        if not path.is_file():
            raise oip.OipError(400, f"no shared-memory object '/{key}' on this host")
        if path.stat().st_size < offset + size:
            raise oip.OipError(400, f"'/{key}' holds {path.stat().st_size} bytes, fewer than offset + byte_size")
        if region_name in regions:
            raise oip.OipError(409, f"a region named '{region_name}' is registered already; unregister it first")
        regions[region_name] = {"name": region_name, "key": key, "offset": offset, "byte_size": size}
    except (oip.OipError, ApiError) as exc:
        return _error(exc.status, exc.message)
    return Response(status_code=200)


@router.post("/systemsharedmemory/unregister", summary="Unregister every system shared-memory region",
             response_class=Response, responses={200: {"description": "unregistered"}, 403: _ERROR})
def shm_unregister_all(request: Request) -> Response:
    try:
        _regions(request).clear()
    except oip.OipError as exc:
        return _error(exc.status, exc.message)
    return Response(status_code=200)


@router.post("/systemsharedmemory/region/{region_name}/unregister", summary="Unregister a system shared-memory region",
             responses={200: {}, 403: _ERROR})
def shm_unregister(request: Request, region_name: RegionName) -> Response:
    try:
        _regions(request).pop(region_name, None)
    except oip.OipError as exc:
        return _error(exc.status, exc.message)
    return Response(status_code=200)


@router.api_route("/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"],
                  include_in_schema=False)
def unknown(request: Request, path: str) -> Response:
    """404 for paths the protocol does not have; 405 (with Allow) for a method a path does not take."""
    from starlette.routing import Match

    allowed: set[str] = set()
    for route in router.routes:
        methods = getattr(route, "methods", None)
        if methods and getattr(route, "endpoint", None) is not unknown:
            match, _ = route.matches({**request.scope, "method": next(iter(methods))})
            if match == Match.FULL:
                allowed |= methods
    if allowed:
        response = _error(405, f"{request.method} is not allowed on /v2/{path}; allowed: {', '.join(sorted(allowed))}")
        response.headers["Allow"] = ", ".join(sorted(allowed))
        return response
    return _error(404, f"no route /v2/{path} in the Open Inference Protocol REST API")
