"""The run API: GET /techniques/{slug}/implementation, POST /techniques/{slug}/run, POST /run (batch)."""

from __future__ import annotations

import inspect
import json
import math
from typing import Annotated, Any, Literal

import torch
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request as StarletteRequest

from .. import tensors
from ..errors import ERROR_SCHEMA, ApiError
from ..mechanisms import registry, runtime
from ..mechanisms.base import Mechanism, MechanismInputError
from ..runner import ModuleCache, RunPool, Stopwatch, flops
from .deps import SessionDep, conditional_json, read_body

router = APIRouter(tags=["run"])

SAFETENSORS = "application/vnd.safetensors"
NPY = "application/x-npy"
SLUG = Path(description="the technique's slug", examples=["squeeze-and-excitation"],
            pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=96)


class RunOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="overrides of the defaults")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="initialises the weights and any sampling")
    dtype: Literal["float32", "float64", "bfloat16"] = "float32"
    return_attention: bool = Field(True, description="false: only the output (may take a fused kernel)")
    device: Literal["cpu", "cuda"] = "cpu"
    allow_nonfinite: bool = Field(False, description="accept NaN/inf in inputs")


class RunRequest(RunOptions):
    inputs: dict[str, Any] = Field(description="name -> {shape, dtype, data}")
    weights: dict[str, Any] | None = Field(None, description="name -> {shape, dtype, data}; see /implementation")


class BatchRequest(RunOptions):
    techniques: list[str] = Field(min_length=1, description="slugs to run on the same inputs")
    inputs: dict[str, Any]
    hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                       description="slug -> hyper-parameter overrides")


def _mechanism(slug: str) -> Mechanism:
    mech = registry.get(slug)
    if mech is None:
        near = [s for s in registry.all_mechanisms() if s.split("-")[0] == slug.split("-")[0]][:3]
        raise ApiError(404, f"no implementation for '{slug}'", details={"did_you_mean": near,
                                                                         "implemented": "/techniques?has_implementation=true"})
    return mech


def _limits(request: Request) -> tensors.Limits:
    s = request.app.state.settings
    return tensors.Limits(max_tensor_elements=s.max_tensor_elements, max_total_elements=s.max_total_elements)


def _input_error(exc: tensors.TensorError | MechanismInputError) -> ApiError:
    status = getattr(exc, "status", 422 if isinstance(exc, MechanismInputError) else 400)
    return ApiError(status, str(exc), details={"field": exc.field, "expected": exc.expected})


def _options_from_query(request: Request) -> RunOptions:
    """Options of binary requests come as query parameters (hyperparameters as a JSON object)."""
    q = request.query_params
    raw: dict[str, Any] = {}
    for key in ("seed", "dtype", "return_attention", "device", "allow_nonfinite"):
        if key in q:
            raw[key] = q[key]
    if "hyperparameters" in q:
        try:
            raw["hyperparameters"] = json.loads(q["hyperparameters"])
        except json.JSONDecodeError:
            raise ApiError(400, "hyperparameters must be a JSON object, e.g. {\"reduction\": 8}",
                           details={"parameter": "hyperparameters"}) from None
    return _validate(RunOptions, raw)


def _validate(model, raw: Any):
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
        raise ApiError(422, "invalid run request: " + "; ".join(f"{d['field']}: {d['problem']}" for d in details),
                       details=details) from None


def _check_device(device: str) -> torch.device:
    if device == "cuda" and not torch.cuda.is_available():
        raise ApiError(422, "device=cuda was asked for but this server has no CUDA device",
                       details={"field": "device", "expected": "cpu"})
    return torch.device(device)


def _check_finite(inputs: dict[str, torch.Tensor], allow: bool) -> None:
    if allow:
        return
    for name, t in inputs.items():
        # min and max propagate NaN and carry +-inf: one reduction instead of a boolean mask of every element
        if t.numel() and not torch.isfinite(torch.stack(torch.aminmax(t))).all():
            raise ApiError(422, f"input '{name}' holds NaN or infinite values; clean it or pass allow_nonfinite=true",
                           details={"field": f"inputs.{name}"})


def _prepare(mech: Mechanism, inputs: dict[str, torch.Tensor], params: dict[str, Any]) -> dict[str, Any]:
    try:
        return mech.validate({k: tuple(v.shape) for k, v in inputs.items()}, params)
    except MechanismInputError as exc:
        raise _input_error(exc) from None


def _execute(mech: Mechanism, inputs: dict[str, torch.Tensor], params: dict[str, Any], opts: RunOptions,
             weights: dict[str, torch.Tensor] | None, cache: ModuleCache | None = None) -> dict[str, Any]:
    """Build (or reuse), load weights, run; called in a worker thread."""
    dtype = tensors.DTYPES[opts.dtype]
    device = torch.device(opts.device)
    shapes = {k: tuple(v.shape) for k, v in inputs.items()}

    def build():
        return runtime.build_module(mech, shapes, params, opts.seed, dtype=dtype, device=device)

    if weights is not None or cache is None:
        module = build()
        if weights is not None:
            runtime.load_weights(module, weights)
    else:
        key = (mech.slug, tuple(sorted(shapes.items())), tuple(sorted(params.items())), opts.seed, opts.dtype,
               opts.device)
        module = cache.get(key, build)
    moved = {k: v.to(device=device, dtype=dtype) for k, v in inputs.items()}
    watch = Stopwatch()
    try:
        out = runtime.forward(mech, module, moved, opts.seed, need_weights=opts.return_attention)
    except RuntimeError as exc:
        raise ApiError(422, f"{mech.slug} could not run on these inputs with dtype {opts.dtype}: {str(exc)[:300]}",
                       details={"dtype": opts.dtype, "shapes": {k: list(v) for k, v in shapes.items()}}) from None
    if device.type == "cuda":
        torch.cuda.synchronize()
    forward_ms = watch.ms()
    attention = {o.name for o in mech.outputs if o.attention}
    if not opts.return_attention:
        out = {k: v for k, v in out.items() if k not in attention}
    return {
        "outputs": out, "attention": sorted(k for k in out if k in attention), "forward_ms": forward_ms,
        "parameter_count": sum(p.numel() for p in module.parameters()),
        "flops": flops(mech, shapes, params, opts.return_attention),
    }


def _meta(slug: str, result: dict[str, Any], params: dict[str, Any], opts: RunOptions, total_ms: float) -> dict:
    return {"technique": slug, "hyperparameters": params, "seed": opts.seed, "dtype": opts.dtype,
            "device": opts.device, "attention_outputs": result["attention"],
            "parameter_count": result["parameter_count"], "flops": result["flops"],
            "time_ms": {"forward": result["forward_ms"], "total": total_ms}}


def _wants_safetensors(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return SAFETENSORS in accept and "application/json" not in accept.split(SAFETENSORS)[0]


def _respond(request: Request, meta: dict, outputs: dict[str, torch.Tensor]) -> Response:
    if _wants_safetensors(request):
        body = tensors.tensors_to_safetensors(outputs, {"atlas": json.dumps(meta)})
        return Response(body, media_type=SAFETENSORS, headers={
            "X-Atlas-Forward-Ms": str(meta["time_ms"]["forward"]), "X-Atlas-Parameters": str(meta["parameter_count"])})
    accept = request.headers.get("accept", "*/*")
    if not any(t in accept for t in ("application/json", "*/*", "application/*")):
        raise ApiError(406, f"cannot answer with {accept}", details={"supported": ["application/json", SAFETENSORS]})
    return Response(tensors.json_response_bytes({**meta, "outputs": {k: tensors.tensor_to_json(v)
                                                                     for k, v in outputs.items()}}),
                    media_type="application/json")


async def _decode_request(request: Request, slug: str) -> tuple[RunOptions, dict[str, torch.Tensor],
                                                                dict[str, torch.Tensor] | None]:
    settings = request.app.state.settings
    limits = _limits(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if ctype == "application/json" or ctype == "":
            body = await read_body(request, settings.max_json_body_bytes)
            try:
                raw = tensors.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                raise ApiError(400, f"the body is not valid JSON: {exc}") from None
            req = _validate(RunRequest, raw)
            inputs = tensors.tensors_from_json(req.inputs, limits)
            used = sum(t.numel() for t in inputs.values())
            weights = tensors.tensors_from_json(req.weights, limits, "weights", used) if req.weights else None
            return RunOptions(**req.model_dump(exclude={"inputs", "weights"})), inputs, weights
        if ctype == SAFETENSORS:
            opts = _options_from_query(request)
            body = await read_body(request, settings.max_body_bytes)
            return opts, tensors.tensors_from_safetensors(body, limits), None
        if ctype == NPY:
            opts = _options_from_query(request)
            mech = _mechanism(slug)
            name = request.query_params.get("input", mech.inputs[0].name)
            body = await read_body(request, settings.max_body_bytes)
            return opts, {name: tensors.tensor_from_npy(body, name, limits)}, None
        if ctype == "multipart/form-data":
            opts = _options_from_query(request)
            body = await read_body(request, settings.max_body_bytes)
            form = await _buffered(request, body).form(max_files=2, max_fields=4, max_part_size=settings.max_body_bytes)
            parts = {k: v for k, v in form.multi_items()}
            unknown = set(parts) - {"inputs", "weights", "options"}
            if unknown or "inputs" not in parts:
                raise ApiError(400, "multipart runs take parts 'inputs' (safetensors), optionally 'weights' "
                                    "(safetensors) and 'options' (JSON)", details={"unknown": sorted(unknown)})
            if "options" in parts:
                raw_opts = parts["options"]
                raw_opts = await raw_opts.read() if hasattr(raw_opts, "read") else raw_opts
                try:
                    opts = _validate(RunOptions, json.loads(raw_opts))
                except json.JSONDecodeError:
                    raise ApiError(400, "the 'options' part must be a JSON object") from None
            blob = parts["inputs"]
            inputs = tensors.tensors_from_safetensors(await blob.read() if hasattr(blob, "read") else blob.encode(),
                                                      limits)
            weights = None
            if "weights" in parts:
                w = parts["weights"]
                used = sum(t.numel() for t in inputs.values())
                weights = tensors.tensors_from_safetensors(await w.read() if hasattr(w, "read") else w.encode(),
                                                           limits, "weights", used)
            return opts, inputs, weights
    except tensors.TensorError as exc:
        raise _input_error(exc) from None
    raise ApiError(415, f"unsupported content type {ctype!r}",
                   details={"supported": ["application/json", SAFETENSORS, NPY, "multipart/form-data"]})


def _buffered(request: Request, body: bytes) -> StarletteRequest:
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return StarletteRequest(request.scope, receive)


_RUN_EXAMPLE = {"inputs": {"x": {"shape": [1, 4, 2, 2], "dtype": "float32",
                                 "data": [[[[0.1, 0.2], [0.3, 0.4]], [[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]],
                                           [[-1, 1], [1, -1]]]]}},
                "hyperparameters": {"reduction": 2}, "seed": 0, "return_attention": True}


@router.post("/techniques/{slug}/run", summary="Run a technique's reference implementation",
             openapi_extra={"requestBody": {"content": {
                 "application/json": {"example": _RUN_EXAMPLE},
                 SAFETENSORS: {"schema": {"type": "string", "format": "binary"}},
                 NPY: {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": {"type": "object", "properties": {
                     "inputs": {"type": "string", "format": "binary"},
                     "weights": {"type": "string", "format": "binary"},
                     "options": {"type": "string"}}}}}}},
             responses={200: {"content": {"application/json": {"example": {
                 "technique": "squeeze-and-excitation", "parameter_count": 14, "flops": 48,
                 "time_ms": {"forward": 0.1, "total": 1.2},
                 "outputs": {"output": {"shape": [1, 4, 2, 2], "dtype": "float32", "data": "..."}}}},
                 SAFETENSORS: {}}},
                 400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 413: ERROR_SCHEMA, 415: ERROR_SCHEMA, 422: ERROR_SCHEMA,
                 503: ERROR_SCHEMA, 504: ERROR_SCHEMA})
async def run_technique(
    request: Request, slug: Annotated[str, SLUG],
    seed: Annotated[int | None, Query(description="binary bodies: seed", examples=[0])] = None,
    dtype: Annotated[str | None, Query(description="binary bodies: float32, float64 or bfloat16")] = None,
    return_attention: Annotated[bool | None, Query(description="binary bodies: return attention maps")] = None,
    device: Annotated[str | None, Query(description="binary bodies: cpu or cuda")] = None,
    allow_nonfinite: Annotated[bool | None, Query(description="binary bodies: accept NaN/inf")] = None,
    hyperparameters: Annotated[str | None, Query(description="binary bodies: JSON object",
                                                 examples=['{"reduction": 8}'])] = None,
    input: Annotated[str | None, Query(description=".npy bodies: the input's name")] = None,  # noqa: A002
) -> Response:
    """Execute the mechanism on posted tensors.

    Bodies: `application/json` (`inputs`, optional `weights`, options), `application/vnd.safetensors`
    (the inputs; options as query parameters), `application/x-npy` (one input), or `multipart/form-data`
    with parts `inputs` and optional `weights` (safetensors) and `options` (JSON). The answer is JSON, or
    safetensors when `Accept: application/vnd.safetensors` (run facts in its `__metadata__`)."""
    watch = Stopwatch()
    mech = _mechanism(slug)
    pool: RunPool = request.app.state.run_pool
    pool.reserve()  # refuse at once when busy, before reading a large body
    submitted = False
    try:
        opts, inputs, weights = await _decode_request(request, slug)
        _check_device(opts.device)
        _check_finite(inputs, opts.allow_nonfinite)
        params = _prepare(mech, inputs, opts.hyperparameters)
        submitted = True  # from here the pool releases the slot when the work ends
        cache = request.app.state.module_cache
        result = await pool.run(lambda: _safe_execute(mech, inputs, params, opts, weights, cache), reserved=True)
    finally:
        if not submitted:
            pool.release()
    meta = _meta(slug, result, params, opts, 0.0)
    meta["time_ms"]["total"] = watch.ms()
    request.app.state.metrics.observe_run(slug, meta["time_ms"]["forward"] / 1000.0)
    return _respond(request, meta, result["outputs"])


def _safe_execute(mech, inputs, params, opts, weights, cache=None):
    try:
        return _execute(mech, inputs, params, opts, weights, cache)
    except MechanismInputError as exc:
        raise _input_error(exc) from None


@router.post("/run", summary="Run several techniques on the same inputs",
             openapi_extra={"requestBody": {"content": {"application/json": {"example": {
                 "techniques": ["squeeze-and-excitation", "cbam"],
                 "inputs": _RUN_EXAMPLE["inputs"], "hyperparameters": {"squeeze-and-excitation": {"reduction": 2}},
                 "seed": 0, "return_attention": False}}}}},
             responses={200: {"content": {"application/json": {"example": {"results": {
                 "squeeze-and-excitation": {"outputs": {"output": {"shape": [1, 4, 2, 2]}}}}}}}},
                 400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 413: ERROR_SCHEMA, 422: ERROR_SCHEMA})
async def run_batch(request: Request) -> Response:
    """Every listed technique runs on the same inputs with the same seed; all are validated before any
    runs, so one bad slug or hyper-parameter fails the whole request with nothing executed."""
    watch = Stopwatch()
    settings = request.app.state.settings
    body = await read_body(request, settings.max_json_body_bytes)
    try:
        raw = tensors.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    req = _validate(BatchRequest, raw)
    if len(req.techniques) > settings.max_batch_slugs:
        raise ApiError(400, f"{len(req.techniques)} techniques; at most {settings.max_batch_slugs} per batch",
                       details={"field": "techniques"})
    unknown_hp = sorted(set(req.hyperparameters) - set(req.techniques))
    if unknown_hp:
        raise ApiError(422, f"hyperparameters given for techniques not in the batch: {unknown_hp}",
                       details={"field": "hyperparameters"})
    try:
        inputs = tensors.tensors_from_json(req.inputs, _limits(request))
    except tensors.TensorError as exc:
        raise _input_error(exc) from None
    _check_device(req.device)
    _check_finite(inputs, req.allow_nonfinite)
    mechs = {slug: _mechanism(slug) for slug in dict.fromkeys(req.techniques)}  # every slug known first
    plan = []
    for slug, mech in mechs.items():
        try:
            params = _prepare(mech, inputs, req.hyperparameters.get(slug, {}))
        except ApiError as exc:
            exc.message = f"{slug}: {exc.message}"
            raise
        plan.append((slug, mech, params))
    opts = RunOptions(**req.model_dump(exclude={"techniques", "inputs", "hyperparameters"}))

    def run_all() -> list[tuple[str, dict, dict]]:
        cache = request.app.state.module_cache
        return [(slug, params, _safe_execute(mech, inputs, params, opts, None, cache)) for slug, mech, params in plan]

    pool: RunPool = request.app.state.run_pool
    results = {}
    for slug, params, result in await pool.run(run_all):  # one slot, one time limit for the whole batch
        meta = _meta(slug, result, params, opts, 0.0)
        results[slug] = {**meta, "outputs": {k: tensors.tensor_to_json(v) for k, v in result["outputs"].items()}}
        request.app.state.metrics.observe_run(slug, meta["time_ms"]["forward"] / 1000.0)
    return Response(tensors.json_response_bytes({"results": results, "time_ms": watch.ms()}),
                    media_type="application/json")


def implementation_spec(mech: Mechanism, base_url: str = "") -> dict[str, Any]:
    params = mech.defaults()
    module_obj = inspect.getmodule(mech.build)
    example_inputs = {}
    for name, shape in mech.example_shapes.items():
        n = math.prod(shape)
        flat = [round(math.sin(0.7 * i), 4) for i in range(n)]
        example_inputs[name] = {"shape": list(shape), "dtype": "float32", "data": flat}
    return {
        "technique": mech.slug, "title": mech.title, "reference": mech.reference, "notes": mech.notes or None,
        "stochastic": mech.stochastic,
        "inputs": [{"name": i.name, "dims": list(i.dims), "rank": len(i.dims), "description": i.description,
                    "optional": i.optional, "dtypes": ["float32", "float64", "bfloat16"]} for i in mech.inputs],
        "outputs": [{"name": o.name, "dims": list(o.dims), "description": o.description, "attention": o.attention}
                    for o in mech.outputs],
        "hyperparameters": [{"name": h.name, "type": h.kind, "default": h.default, "minimum": h.minimum,
                             "maximum": h.maximum, "choices": list(h.choices) if h.choices else None,
                             "description": h.description} for h in mech.hyperparams],
        "constraints": list(mech.constraints),
        "parameters": {"for_inputs": {k: list(v) for k, v in mech.example_shapes.items()}, "hyperparameters": params,
                       "shapes": runtime.parameter_shapes(mech, mech.example_shapes, params)},
        "example_request": {"method": "POST", "url": f"{base_url}/techniques/{mech.slug}/run",
                            "json": {"inputs": example_inputs, "hyperparameters": params, "seed": 0}},
        "source": inspect.getsource(module_obj) if module_obj else None,
        "source_module": module_obj.__name__ if module_obj else None,
    }


@router.get("/techniques/{slug}/implementation", summary="Inputs, outputs, hyper-parameters and source of the "
            "reference implementation",
            responses={200: {"content": {"application/json": {"example": {
                "technique": "squeeze-and-excitation", "inputs": [{"name": "x", "dims": ["B", "C", "H", "W"]}],
                "hyperparameters": [{"name": "reduction", "type": "int", "default": 16, "minimum": 1}],
                "parameters": {"shapes": {"fc1.weight": [2, 32]}}}}}}, 404: ERROR_SCHEMA})
def implementation(request: Request, session: SessionDep, slug: Annotated[str, SLUG]) -> Response:
    """What `POST /techniques/{slug}/run` takes and returns; `parameters.shapes` lists the weight names and
    shapes for the example input and default hyper-parameters (the names stay, the shapes follow C etc.)."""
    from ..catalog import query

    query.get_technique(session, slug)
    return conditional_json(request, implementation_spec(_mechanism(slug)))
