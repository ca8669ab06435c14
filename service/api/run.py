"""The run API: GET /techniques/{slug}/implementation, POST /techniques/{slug}/run, POST /run (batch),
and the co-located shared-memory path. Routes parse and hand over; the work is in service.runs."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request as StarletteRequest

from .. import jsonbody
from ..errors import ERROR_SCHEMA, ApiError
from ..runs import wire
from ..runs.core import RunOptions, RunResult, RunService, element_count
from .deps import SessionDep, conditional_json

router = APIRouter(tags=["run"])

SAFETENSORS = "application/vnd.safetensors"
NPY = "application/x-npy"
SLUG = Path(description="the technique's slug", examples=["squeeze-and-excitation"],
            pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=96)
_RESPONSE_CHUNK = 1 << 20


class RunOptionsModel(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: dict[str, Any] = Field(default_factory=dict, description="overrides of the defaults")
    seed: int = Field(0, ge=0, le=2**63 - 1, description="initialises the weights and any sampling")
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = "float32"
    return_attention: bool = Field(True, description="false: only the output (may take a fused kernel)")
    device: Literal["cpu", "cuda"] = "cpu"
    allow_nonfinite: bool = Field(False, description="accept NaN/inf in inputs")
    timeout_s: float | None = Field(None, ge=0.5, description="a shorter time limit for this run than the "
                                    "server's (ATLAS_RUN_TIMEOUT_S), at least 0.5 s; never a longer one")

    def options(self) -> RunOptions:
        return RunOptions(self.hyperparameters, self.seed, self.dtype, self.return_attention, self.device,
                          self.allow_nonfinite, self.timeout_s)


class RunRequest(RunOptionsModel):
    inputs: dict[str, Any] = Field(description="name -> {shape, dtype, data}")
    weights: dict[str, Any] | None = Field(None, description="name -> {shape, dtype, data}; see /implementation")


class BatchRequest(RunOptionsModel):
    techniques: list[str] = Field(min_length=1, description="slugs to run on the same inputs")
    inputs: dict[str, Any]
    hyperparameters: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                       description="slug -> hyper-parameter overrides")


class SharedRegionTensor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: str = Field(description="a registered region's name")
    offset: int = Field(0, ge=0)
    shape: list[int]
    dtype: Literal["float32", "float64", "bfloat16", "float16"] = "float32"


class SharedRunRequest(RunOptionsModel):
    inputs: dict[str, SharedRegionTensor]
    output_region: str = Field(description="a registered region the outputs are written to, from its start")


class RegionRegistration(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="the name runs use for the region")
    key: str = Field(description="the POSIX shared-memory name, e.g. /my_inputs (a file in the server's shm "
                                 "directory)")
    byte_size: int = Field(ge=1)


def _service(request: Request) -> RunService:
    return request.app.state.runs


def _validate(model, raw: Any, strict: bool = True):
    """JSON bodies are validated strictly (a string is no boolean); query parameters arrive as text."""
    try:
        return model.model_validate(raw, strict=strict)
    except ValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()][:20]
        raise ApiError(422, "invalid run request: " + "; ".join(
            f"{wire.short(d['field'], 80)}: {d['problem']}" for d in details[:5]), details=details) from None


def _options_from_query(request: Request) -> RunOptionsModel:
    """Options of binary requests come as query parameters (hyperparameters as a JSON object)."""
    q = request.query_params
    raw: dict[str, Any] = {k: q[k] for k in ("seed", "dtype", "return_attention", "device", "allow_nonfinite", "timeout_s")
                           if k in q}
    if "hyperparameters" in q:
        try:
            raw["hyperparameters"] = jsonbody.loads(q["hyperparameters"], what="the hyperparameters parameter",
                                                    max_depth=8, allow_nonfinite=False)
        except ApiError as exc:
            raise ApiError(400, "hyperparameters must be a JSON object, e.g. {\"reduction\": 8}: " + exc.message,
                           details={"parameter": "hyperparameters"}) from None
    return _validate(RunOptionsModel, raw, strict=False)


def _wants_safetensors(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return SAFETENSORS in accept and "application/json" not in accept.split(SAFETENSORS)[0]


def _respond(request: Request, result: RunResult) -> Response:
    meta = result.meta
    if _wants_safetensors(request):
        import orjson

        header = wire.safetensors_header_bytes(result.outputs, {"atlas": orjson.dumps(meta).decode()})

        async def body():
            try:
                yield header
                for ref in result.outputs:
                    start, end = ref["offset"], ref["offset"] + ref["nbytes"]
                    for pos in range(start, end, _RESPONSE_CHUNK):
                        yield result.buffer[pos:min(end, pos + _RESPONSE_CHUNK)]
            finally:
                result.release()

        length = len(header) + sum(r["nbytes"] for r in result.outputs)
        return StreamingResponse(body(), media_type=SAFETENSORS, headers={
            "Content-Length": str(length), "X-Atlas-Forward-Ms": str(meta["time_ms"]["forward"]),
            "X-Atlas-Parameters": str(meta["parameter_count"])})
    accept = request.headers.get("accept", "*/*")
    try:
        if not any(t in accept for t in ("application/json", "*/*", "application/*")):
            raise ApiError(406, f"cannot answer with {wire.short(accept)}",
                           details={"supported": ["application/json", SAFETENSORS]})
        payload = {**meta, "outputs": {ref["name"]: wire.json_output(result.buffer, ref) for ref in result.outputs}}
        return Response(wire.json_bytes(payload), media_type="application/json")
    finally:
        result.release()


async def _decode(request: Request, svc: RunService, slug: str):
    """(options, input refs, weight refs, segments to give back)."""
    s = request.app.state.settings
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype in ("application/json", ""):
        body = await svc.read_bytes(request, s.max_json_body_bytes)
        req = _validate(RunRequest, jsonbody.loads(body, what="the run body"))
        plans = [wire.json_tensor_plan(req.inputs, svc.limits)]
        if req.weights is not None:
            used = sum(arr.size for _, arr, _ in plans[0])
            plans.append(wire.json_tensor_plan(req.weights, svc.limits, "weights", used))
        seg, refs = svc.segment_for_plan(plans)
        return req.options(), refs[0], (refs[1] if len(refs) > 1 else None), [seg]
    if ctype == SAFETENSORS:
        opts = _options_from_query(request)
        seg, size = await svc.read_into_segment(request, s.max_body_bytes)
        with svc.segments.given_back_on_error(seg):
            refs = wire.safetensors_refs(seg.view(), size, seg.name, 0, svc.limits)
        return opts.options(), refs, None, [seg]
    if ctype == NPY:
        opts = _options_from_query(request)
        name = request.query_params.get("input", "")
        seg, size = await svc.read_into_segment(request, s.max_body_bytes)
        with svc.segments.given_back_on_error(seg):
            if not name:
                spec = await svc.describe(slug)
                name = spec["inputs"][0]["name"]
            refs = [wire.npy_ref(seg.view(), size, seg.name, 0, name, svc.limits)]
        return opts.options(), refs, None, [seg]
    if ctype == "multipart/form-data":
        return await _decode_multipart(request, svc)
    raise ApiError(415, f"unsupported content type {wire.short(ctype)!r}",
                   details={"supported": ["application/json", SAFETENSORS, NPY, "multipart/form-data"]})


async def _decode_multipart(request: Request, svc: RunService):
    s = request.app.state.settings
    opts = _options_from_query(request)
    body = await svc.read_bytes(request, s.max_body_bytes)
    try:
        form = await _buffered(request, body).form(max_files=2, max_fields=4, max_part_size=s.max_body_bytes)
    except Exception as exc:  # noqa: BLE001 - the multipart parser's errors are all client errors
        raise ApiError(400, f"malformed multipart body: {wire.short(str(exc), 120)}") from None
    parts = dict(form.multi_items())
    unknown = set(parts) - {"inputs", "weights", "options"}
    if unknown or "inputs" not in parts:
        raise ApiError(400, "multipart runs take parts 'inputs' (safetensors), optionally 'weights' (safetensors) "
                            "and 'options' (JSON)", details={"unknown": sorted(wire.short(u) for u in unknown)})

    async def raw(part) -> bytes:
        return await part.read() if hasattr(part, "read") else part.encode()

    if "options" in parts:
        text = await raw(parts["options"])
        try:
            text.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the 'options' part must be UTF-8 JSON") from None
        opts = _validate(RunOptionsModel, jsonbody.loads(text, what="the 'options' part", max_depth=8))
    blobs = [await raw(parts["inputs"])] + ([await raw(parts["weights"])] if "weights" in parts else [])
    seg = svc.take(sum(len(b) for b in blobs) + 64)
    with svc.segments.given_back_on_error(seg):
        view, pos, found = seg.view(), 0, []
        used = 0
        for blob, where in zip(blobs, ("inputs", "weights"), strict=False):
            view[pos:pos + len(blob)] = blob
            refs = wire.safetensors_refs(view, len(blob), seg.name, pos, svc.limits, where, used)
            used += element_count(refs)
            found.append(refs)
            pos = wire.aligned(pos + len(blob))
        view.release()
    return opts.options(), found[0], (found[1] if len(found) > 1 else None), [seg]


def _buffered(request: Request, body: bytes) -> StarletteRequest:
    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return StarletteRequest(request.scope, receive)


def _tensor_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["data"], "additionalProperties": False, "properties": {
        "shape": {"type": "array", "maxItems": wire.MAX_RANK, "items": {"type": "integer", "minimum": 0}},
        "dtype": {"type": "string", "enum": list(wire.INPUT_DTYPES)},
        "data": {"description": "numbers, nested as the shape or flat", "type": ["array", "number"]}}}


def _options_schema() -> dict[str, Any]:
    return {
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "dtype": {"type": "string", "enum": list(wire.INPUT_DTYPES)},
        "return_attention": {"type": "boolean"}, "device": {"type": "string", "enum": ["cpu", "cuda"]},
        "allow_nonfinite": {"type": "boolean"}, "timeout_s": {"type": ["number", "null"], "minimum": 0.5}}


_TENSORS = {"type": "object", "minProperties": 1, "maxProperties": 16, "additionalProperties": _tensor_schema()}
RUN_BODY_SCHEMA = {"type": "object", "required": ["inputs"], "additionalProperties": False, "properties": {
    "inputs": _TENSORS, "weights": {"anyOf": [_TENSORS, {"type": "null"}]},
    "hyperparameters": {"type": "object", "description": "overrides of the defaults (see /implementation)"},
    **_options_schema()}}
BATCH_BODY_SCHEMA = {"type": "object", "required": ["techniques", "inputs"], "additionalProperties": False,
                     "properties": {
                         "techniques": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                         "inputs": _TENSORS,
                         "hyperparameters": {"type": "object", "additionalProperties": {"type": "object"}},
                         **_options_schema()}}
MULTIPART_SCHEMA = {"type": "object", "required": ["inputs"], "additionalProperties": False, "properties": {
    "inputs": {"type": "string", "format": "binary", "description": "safetensors"},
    "weights": {"type": "string", "format": "binary", "description": "safetensors"},
    "options": {"type": "string", "description": "JSON object of run options"}}}


_RUN_EXAMPLE = {"inputs": {"x": {"shape": [1, 4, 2, 2], "dtype": "float32",
                                 "data": [[[[0.1, 0.2], [0.3, 0.4]], [[1, 0], [0, 1]], [[0.5, 0.5], [0.5, 0.5]],
                                           [[-1, 1], [1, -1]]]]}},
                "hyperparameters": {"reduction": 2}, "seed": 0, "return_attention": True}
_BATCH_EXAMPLE = {"techniques": ["squeeze-and-excitation", "cbam"], "inputs": _RUN_EXAMPLE["inputs"],
                  "hyperparameters": {"squeeze-and-excitation": {"reduction": 2}, "cbam": {"reduction": 2}},
                  "seed": 0, "return_attention": False}
_RUN_ERRORS = {400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 408: ERROR_SCHEMA, 413: ERROR_SCHEMA, 415: ERROR_SCHEMA,
               422: ERROR_SCHEMA, 502: ERROR_SCHEMA, 503: ERROR_SCHEMA, 504: ERROR_SCHEMA}


@router.post("/techniques/{slug}/run", summary="Run a technique's reference implementation",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/json": {"schema": RUN_BODY_SCHEMA, "example": _RUN_EXAMPLE},
                 SAFETENSORS: {"schema": {"type": "string", "format": "binary"}},
                 NPY: {"schema": {"type": "string", "format": "binary"}},
                 "multipart/form-data": {"schema": MULTIPART_SCHEMA}}}},
             responses={200: {"content": {"application/json": {"example": {
                 "technique": "squeeze-and-excitation", "parameter_count": 14, "flops": 48,
                 "time_ms": {"forward": 0.1, "build": 0.5, "total": 1.2},
                 "outputs": {"output": {"shape": [1, 4, 2, 2], "dtype": "float32", "data": "..."}}}},
                 SAFETENSORS: {}}}, **_RUN_ERRORS})
async def run_technique(
    request: Request, slug: Annotated[str, SLUG],
    seed: Annotated[int | None, Query(description="binary bodies: seed", examples=[0])] = None,
    dtype: Annotated[Literal["float32", "float64", "bfloat16", "float16"] | None,
                     Query(description="binary bodies: the run's dtype")] = None,
    return_attention: Annotated[bool | None, Query(description="binary bodies: return attention maps")] = None,
    device: Annotated[Literal["cpu", "cuda"] | None, Query(description="binary bodies: cpu or cuda")] = None,
    allow_nonfinite: Annotated[bool | None, Query(description="binary bodies: accept NaN/inf")] = None,
    timeout_s: Annotated[float | None, Query(ge=0.5, description="binary bodies: a shorter time limit for this "
                                                                "run (at least 0.5 s)")] = None,
    hyperparameters: Annotated[str | None, Query(description="binary bodies: JSON object",
                                                 examples=['{"reduction": 8}'])] = None,
    input: Annotated[str | None, Query(description=".npy bodies: the input's name")] = None,  # noqa: A002
) -> Response:
    """Execute the mechanism on posted tensors, in a worker process.

    Bodies: `application/json` (`inputs`, optional `weights`, options), `application/vnd.safetensors`
    (the inputs; options as query parameters), `application/x-npy` (one input), or `multipart/form-data`
    with parts `inputs` and optional `weights` (safetensors) and `options` (JSON). The answer is JSON, or
    safetensors when `Accept: application/vnd.safetensors` (run facts in its `__metadata__`).

    Before anything is allocated the run is priced (parameters and peak bytes, traced on PyTorch's meta
    device) and refused with 422/413 when over the limits; the body is read in full before a run slot is
    taken (408 when it arrives too slowly); a run over the time limit is stopped (504)."""
    svc = _service(request)
    svc.check_slug(slug)
    opts, inputs, weights, segments = await _decode(request, svc, slug)
    try:
        result = await svc.run(slug, opts, inputs, weights)
    finally:
        for seg in segments:
            svc.segments.give(seg)
    request.app.state.metrics.observe_run(slug, result.meta["time_ms"]["forward"] / 1000.0)
    return _respond(request, result)


@router.post("/run", summary="Run several techniques on the same inputs",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": BATCH_BODY_SCHEMA, "example": _BATCH_EXAMPLE}}}},
             responses={200: {"content": {"application/json": {"example": {"results": {
                 "squeeze-and-excitation": {"outputs": {"output": {"shape": [1, 4, 2, 2]}}}}}}}}, **_RUN_ERRORS})
async def run_batch(request: Request) -> Response:
    """Every listed technique runs on the same inputs with the same seed; all are validated and priced
    before any runs, so one bad slug or hyper-parameter fails the whole request with nothing executed."""
    svc = _service(request)
    settings = request.app.state.settings
    body = await svc.read_bytes(request, settings.max_json_body_bytes)
    req = _validate(BatchRequest, jsonbody.loads(body, what="the batch body"))
    if len(req.techniques) > settings.max_batch_slugs:
        raise ApiError(400, f"{len(req.techniques)} techniques; at most {settings.max_batch_slugs} per batch",
                       details={"field": "techniques"})
    unknown_hp = sorted(set(req.hyperparameters) - set(req.techniques))
    if unknown_hp:
        raise ApiError(422, f"hyperparameters given for techniques not in the batch: {[wire.short(u) for u in unknown_hp]}",
                       details={"field": "hyperparameters"})
    slugs = list(dict.fromkeys(req.techniques))
    for slug in slugs:
        svc.check_slug(slug)
    seg, (inputs,) = svc.segment_for_plan([wire.json_tensor_plan(req.inputs, svc.limits)])
    try:
        base = req.options()
        plans = []
        for slug in slugs:
            opts = RunOptions(req.hyperparameters.get(slug, {}), base.seed, base.dtype, base.return_attention,
                              base.device, base.allow_nonfinite, base.timeout_s)
            try:
                await svc.check(slug, opts, inputs)
            except ApiError as exc:
                exc.message = f"{slug}: {exc.message}" if not exc.message.startswith(slug) else exc.message
                raise
            plans.append((slug, opts))
        results, held = {}, []
        try:
            for slug, opts in plans:
                result = await svc.run(slug, opts, inputs)
                held.append(result)
                results[slug] = {**result.meta, "outputs": {ref["name"]: wire.json_output(result.buffer, ref)
                                                            for ref in result.outputs}}
                request.app.state.metrics.observe_run(slug, result.meta["time_ms"]["forward"] / 1000.0)
            body_bytes = wire.json_bytes({"results": results})
        finally:
            for result in held:
                result.release()
    finally:
        svc.segments.give(seg)
    return Response(body_bytes, media_type="application/json")


@router.get("/techniques/{slug}/implementation", summary="Inputs, outputs, hyper-parameters and source of the "
            "reference implementation",
            responses={200: {"content": {"application/json": {"example": {
                "technique": "squeeze-and-excitation", "inputs": [{"name": "x", "dims": ["B", "C", "H", "W"]}],
                "hyperparameters": [{"name": "reduction", "type": "int", "default": 16, "minimum": 1}],
                "parameters": {"shapes": {"fc1.weight": [2, 32]}}, "divergences": []}}}}, 404: ERROR_SCHEMA})
async def implementation(request: Request, session: SessionDep, slug: Annotated[str, SLUG]) -> Response:
    """What `POST /techniques/{slug}/run` takes and returns; `parameters.shapes` lists the weight names and
    shapes for the example input and default hyper-parameters (the names stay, the shapes follow C etc.);
    `divergences` lists where the authors' released code differs from the paper."""
    from ..catalog import query
    from ..catalog.divergences import divergences_for

    query.get_technique(session, slug)
    spec = dict(await _service(request).describe(slug))
    spec["divergences"] = divergences_for(session, slug)
    return conditional_json(request, spec)


# ---------------------------------------------------------------- co-located shared memory

def _regions(request: Request) -> dict[str, dict[str, Any]]:
    if not request.app.state.settings.run_shm_client_regions:
        raise ApiError(403, "client shared-memory regions are disabled on this server",
                       code="forbidden", details={"setting": "ATLAS_RUN_SHM_CLIENT_REGIONS"})
    return request.app.state.shm_regions


@router.post("/shm/regions", status_code=201, summary="Register a shared-memory region (co-located clients)",
             openapi_extra={"requestBody": {"content": {"application/json": {"example": {
                 "name": "inputs", "key": "/my_inputs", "byte_size": 6422528}}}}},
             responses={400: ERROR_SCHEMA, 403: ERROR_SCHEMA, 409: ERROR_SCHEMA, 422: ERROR_SCHEMA})
async def register_region(request: Request) -> Response:
    """A client on the same host registers a POSIX shared-memory object it created (`key`, as given to
    shm_open) under a `name`; runs then name regions for inputs and outputs instead of sending tensors.
    Only when the server enables it (`ATLAS_RUN_SHM_CLIENT_REGIONS=true`)."""
    from ..runs import shm

    regions = _regions(request)
    body = await _service(request).read_bytes(request, 64 << 10)
    reg = _validate(RegionRegistration, jsonbody.loads(body, what="the region body", max_depth=4))
    try:
        shm.check_region_name(reg.name)
        key = shm.check_region_name(reg.key)
    except ValueError as exc:
        raise ApiError(400, str(exc), details={"field": "name/key"}) from None
    svc = _service(request)
    if key.startswith("atlas-"):
        raise ApiError(400, "region keys starting with 'atlas-' are the server's own", details={"field": "key"})
    path = svc.segments.directory / key
    if not path.is_file():
        raise ApiError(400, f"no shared-memory object {key!r} in the server's shm directory",
                       details={"field": "key", "directory": str(svc.segments.directory)})
    if path.stat().st_size < reg.byte_size:
        raise ApiError(400, f"shared-memory object {key!r} holds {path.stat().st_size} bytes, fewer than byte_size",
                       details={"field": "byte_size"})
    if reg.name in regions:
        raise ApiError(409, f"a region named {reg.name!r} is registered already; unregister it first")
    regions[reg.name] = {"name": reg.name, "key": key, "byte_size": reg.byte_size}
    return Response(wire.json_bytes(regions[reg.name]), status_code=201, media_type="application/json")


@router.get("/shm/regions", summary="Registered shared-memory regions", responses={
    200: {"content": {"application/json": {"example": {"regions": [
        {"name": "inputs", "key": "my_inputs", "byte_size": 6422528}]}}}}, 403: ERROR_SCHEMA})
def list_regions(request: Request) -> dict:
    return {"regions": list(_regions(request).values())}


@router.delete("/shm/regions/{name}", status_code=204, summary="Unregister a shared-memory region",
               responses={403: ERROR_SCHEMA, 404: ERROR_SCHEMA})
def unregister_region(request: Request,
                      name: Annotated[str, Path(max_length=128, examples=["inputs"])]) -> Response:
    if _regions(request).pop(name, None) is None:
        raise ApiError(404, f"no region named {wire.short(name)!r}")
    return Response(status_code=204)


@router.post("/techniques/{slug}/run/shm", summary="Run on tensors in registered shared-memory regions",
             openapi_extra={"requestBody": {"content": {"application/json": {"example": {
                 "inputs": {"x": {"region": "inputs", "offset": 0, "shape": [8, 256, 28, 28], "dtype": "float32"}},
                 "output_region": "outputs", "hyperparameters": {"reduction": 16}, "return_attention": False}}}}},
             responses={200: {"content": {"application/json": {"example": {
                 "technique": "squeeze-and-excitation", "output_region": "out",
                 "outputs": [{"name": "output", "dtype": "float32", "shape": [8, 256, 28, 28], "offset": 0,
                              "nbytes": 6422528}]}}}}, **_RUN_ERRORS, 403: ERROR_SCHEMA})
async def run_shared(request: Request, slug: Annotated[str, SLUG]) -> Response:
    """Inputs are read from, and outputs written to, regions registered with `POST /shm/regions`; the
    answer lists each output's offset, dtype and shape in the output region (written from its start)."""
    import math

    regions = _regions(request)
    svc = _service(request)
    svc.check_slug(slug)
    body = await svc.read_bytes(request, 1 << 20)
    req = _validate(SharedRunRequest, jsonbody.loads(body, what="the run body"))
    refs = []
    for name, t in req.inputs.items():
        region = regions.get(t.region)
        if region is None:
            raise ApiError(400, f"input '{wire.short(name)}': no region named {wire.short(t.region)!r}",
                           details={"field": f"inputs.{wire.short(name)}.region"})
        shape = wire.check_shape(name, t.shape, svc.limits, "inputs")
        nbytes = math.prod(shape) * wire.DTYPES[t.dtype][0]
        if t.offset + nbytes > region["byte_size"]:
            raise ApiError(400, f"input '{wire.short(name)}' runs past the end of region {t.region!r}",
                           details={"field": f"inputs.{wire.short(name)}", "byte_size": region["byte_size"]})
        refs.append(wire.TensorRef(name, t.dtype, shape, region["key"], t.offset, nbytes))
    wire.check_total((math.prod(r.shape) for r in refs), svc.limits)
    out = regions.get(req.output_region)
    if out is None:
        raise ApiError(400, f"no region named {wire.short(req.output_region)!r}", details={"field": "output_region"})
    from ..runs.shm import Segment

    region_seg = Segment(out["key"], svc.segments.directory / out["key"], out["byte_size"], owned=False)
    result = await svc.run(slug, req.options(), refs, out_segment=region_seg)  # 413 when the outputs do not fit
    request.app.state.metrics.observe_run(slug, result.meta["time_ms"]["forward"] / 1000.0)
    return Response(wire.json_bytes({**result.meta, "output_region": req.output_region, "outputs": result.outputs}),
                    media_type="application/json")

