"""Open Inference Protocol v2 routes (KServe v2 / Triton REST): every technique is a model.

The protocol itself (parsing, the binary tensor data extension, encoding) is in ``service/oip.py``; the run
goes through the same path as ``POST /techniques/{slug}/run`` (limits, run slots, time limit, module
cache) by way of :func:`execute`. Errors on these routes have the protocol's shape ``{"error": "..."}``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response

from .. import __version__, oip
from ..errors import ApiError

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

_ERROR = {"description": "Error", "content": {"application/json": {"example": {"error": "unknown model 'cbm'"}}}}
_MODEL = "the technique's slug, e.g. `cbam`"


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


async def execute(request: Request, slug: str, inputs: dict[str, tuple[np.ndarray, str]], hyperparameters: dict[str, Any],
                  *, seed: int, dtype: str, allow_nonfinite: bool, need_attention: bool
                  ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Run ``slug`` on the run core, as ``POST /techniques/{slug}/run`` does: the inputs (name -> (array,
    wire dtype)) go into a shared-memory segment, a worker validates, prices and runs them under the same
    limits, run slots and time limit. Returns the outputs by name as NumPy arrays (bfloat16 as uint16 bit
    patterns) and the run facts; raises ``ApiError`` as the run API does."""
    from ..runs.core import RunOptions

    svc = request.app.state.runs
    seg, refs = svc.segment_for_plan([[(name, arr, wire_dtype) for name, (arr, wire_dtype) in inputs.items()]])
    try:
        result = await svc.run(slug, RunOptions(hyperparameters=hyperparameters, seed=seed, dtype=dtype,
                                                return_attention=need_attention, allow_nonfinite=allow_nonfinite),
                               refs[0])
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

@router.get("", summary="Server metadata", responses={200: {"content": {"application/json": {"example": {
    "name": "attention-atlas", "version": __version__, "extensions": ["binary_tensor_data"]}}}}})
def server_metadata() -> Response:
    """Name, version and the protocol extensions this server supports."""
    return _json({"name": "attention-atlas", "version": __version__, "extensions": ["binary_tensor_data"]})


@router.get("/health/live", summary="Server liveness", responses={200: {"description": "live"}})
def live() -> Response:
    return Response(status_code=200)


@router.get("/health/ready", summary="Server readiness", responses={200: {"description": "ready"}, 503: _ERROR})
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
async def model(request: Request, model_name: str) -> Response:
    """Inputs and outputs of a technique (the model name is its slug) with OIP names, datatypes and shapes
    (-1: any size). Outputs after `output` are attention maps. FP64 and BF16 inputs are accepted as well
    as FP32; the outputs follow them (or the `dtype` parameter)."""
    return await _metadata(request, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}", summary="Model metadata (version 1)",
            responses={200: {"content": {"application/json": {"example": _META_EXAMPLE}}}, 404: _ERROR})
async def model_version(request: Request, model_name: str, model_version: str) -> Response:
    return await _metadata(request, model_name, model_version)


@router.get("/models/{model_name}/ready", summary="Model readiness", responses={200: {}, 404: _ERROR})
async def model_ready(request: Request, model_name: str) -> Response:
    return await _ready(request, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}/ready", summary="Model readiness (version 1)",
            responses={200: {}, 404: _ERROR})
async def model_version_ready(request: Request, model_name: str, model_version: str) -> Response:
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
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"example": _INFER_EXAMPLE},
                 "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}},
             responses={200: {"content": {"application/json": {"example": _INFER_ANSWER},
                                          "application/octet-stream": {}}},
                        400: _ERROR, 404: _ERROR, 413: _ERROR, 422: _ERROR, 503: _ERROR, 504: _ERROR})
async def infer(request: Request, model_name: str) -> Response:
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
async def infer_version(request: Request, model_name: str, model_version: str) -> Response:
    return await _infer(request, model_name, model_version)


async def _infer(request: Request, model_name: str, model_version: str | None) -> Response:
    settings = request.app.state.settings
    try:
        spec = await describe(request, model_name, model_version)
        if request.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
            raise oip.OipError(415, "compressed requests are not accepted; send the body uncompressed")
        from .deps import read_body

        body = await read_body(request, settings.max_body_bytes)
        limits = oip.Limits(settings.max_tensor_elements, settings.max_total_elements, settings.max_json_body_bytes)
        req = oip.parse_infer(body, request.headers.get("inference-header-content-length"), limits)
        known = [o["name"] for o in spec["outputs"]]
        attention = {o["name"] for o in spec["outputs"] if o["attention"]}
        wanted = req.outputs if req.outputs is not None else [oip.RequestedOutput(n, req.binary_output) for n in known]
        for o in wanted:
            if o.name not in known:
                raise oip.OipError(400, f"model '{model_name}' has no output '{o.name}'; its outputs are {known}")
        if any(t.shm for t in req.inputs.values()) or any(o.shm for o in wanted):
            raise oip.OipError(400, "this server has no system shared-memory regions; send the tensors in the body")
        dtype = oip.run_dtype(req)
        outputs, facts = await execute(
            request, model_name, {k: oip.as_wire(t) for k, t in req.inputs.items()}, req.hyperparameters,
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
    tensors = [oip.Tensor(o.name, datatype, tuple(outputs[o.name].shape), outputs[o.name]) for o in wanted]
    body, headers = oip.encode_infer(model_name, req.id, tensors, {o.name for o in wanted if o.binary}, facts)
    media = "application/octet-stream" if headers else "application/json"
    return Response(body, media_type=media, headers=headers)


@router.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def unknown(path: str) -> Response:
    return _error(404, f"no route /v2/{path} in the Open Inference Protocol REST API")
