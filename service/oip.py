"""Open Inference Protocol v2 (the KServe v2 / Triton REST protocol): parsing and encoding, no routes.

Tensors are NumPy arrays here (no torch): a BF16 tensor, which NumPy has no type for, is carried as its
raw 16-bit patterns in a ``uint16`` array with ``datatype == "BF16"``. The routes in ``api/oip.py`` turn
a parsed :class:`InferRequest` into the run path's request and the run's outputs into an answer.

Binary tensor data extension: the body is a JSON header of ``Inference-Header-Content-Length`` bytes,
then the raw tensors, in the order of the inputs that carry ``parameters.binary_data_size``. Answers do
the same for the outputs asked for with ``parameters.binary_data`` (or, when no output is named, for all
of them when the request's ``parameters.binary_data_output`` is true).

Every problem raises :class:`OipError` (status and message) before anything is allocated beyond what
the header promised and the limits allow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from .runs import wire

# OIP datatype -> NumPy dtype of the wire bytes (little-endian); BF16 travels as uint16 bit patterns
WIRE = {"BOOL": np.dtype("?"), "UINT8": np.dtype("u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
        "UINT64": np.dtype("<u8"), "INT8": np.dtype("i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
        "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
        "BF16": np.dtype("<u2")}
FLOAT_TYPES = ("FP32", "FP64", "BF16", "FP16")
RUN_DTYPE = {"FP32": "float32", "FP64": "float64", "BF16": "bfloat16", "FP16": "float16"}  # the run dtypes
DATATYPE_OF_RUN = {v: k for k, v in RUN_DTYPE.items()}

# request parameters that steer the run (everything else is a hyper-parameter of the technique)
CONTROL = {"seed", "dtype", "binary_data_output", "allow_nonfinite"}
# parameters tritonclient and other OIP clients may send for schedulers we do not have: accepted, no effect
IGNORED = {"priority", "timeout", "sequence_id", "sequence_start", "sequence_end"}
MAX_RANK = 8


class OipError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


@dataclass(frozen=True)
class ShmRef:
    """A tensor in a registered system shared-memory region (the shared-memory extension)."""

    region: str
    byte_size: int
    offset: int = 0


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray | None  # shaped; BF16 as uint16 bit patterns; None when the tensor is in shared memory
    shm: ShmRef | None = None


@dataclass
class RequestedOutput:
    name: str
    binary: bool
    shm: ShmRef | None = None


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, Tensor]
    hyperparameters: dict[str, Any]
    seed: int = 0
    dtype: str | None = None  # run dtype asked for (float32, float64, bfloat16); None: from the inputs
    allow_nonfinite: bool = False
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False  # default for outputs not named (request parameter binary_data_output)
    ignored: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Limits:
    max_tensor_elements: int
    max_total_elements: int
    max_json_bytes: int


# ------------------------------------------------------------------------------------------ BF16

# bfloat16 <-> bit patterns: the run API's conversions (rounding to nearest even, as torch does)
bf16_bits_from_float32 = wire.to_bfloat16_bits
float32_from_bf16_bits = wire.from_bfloat16_bits


# ------------------------------------------------------------------------------------------ parsing

def _json(data: bytes, what: str, limit: int) -> Any:
    if len(data) > limit:
        raise OipError(413, f"{what} is {len(data)} bytes; the limit is {limit}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise OipError(400, f"{what} is not valid JSON: {str(exc)[:200]}") from None


def _only(obj: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise OipError(400, f"{where}: unknown field(s) {unknown}; allowed: {sorted(allowed)}")


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in raw):
        raise OipError(400, f"{where}: 'shape' must be a list of integers")
    if len(raw) > MAX_RANK:
        raise OipError(400, f"{where}: rank {len(raw)} is over {MAX_RANK}")
    if any(n < 0 for n in raw):
        raise OipError(400, f"{where}: negative dimension in shape {raw}")
    return tuple(raw)


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise OipError(400, f"{where}: 'parameters' must be an object")
    for key, value in raw.items():
        if not isinstance(value, (bool, int, float, str)):
            raise OipError(400, f"{where}: parameter '{key}' must be a boolean, number or string")
    return raw


def _flatten(data: Any, where: str) -> list:
    """Nested lists of numbers -> one flat list (row-major), without recursion."""
    if not isinstance(data, list):
        raise OipError(400, f"{where}: 'data' must be a list (flat or nested, row-major)")
    out: list = []
    stack = [iter(data)]
    while stack:
        item = next(stack[-1], _END)
        if item is _END:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > MAX_RANK:
                raise OipError(400, f"{where}: 'data' nests deeper than rank {MAX_RANK}")
            stack.append(iter(item))
        elif isinstance(item, (int, float)) and not isinstance(item, str):
            out.append(item)
        else:
            raise OipError(400, f"{where}: 'data' holds {type(item).__name__} values; only numbers "
                                "(and booleans for BOOL) are accepted")
    return out


_END = object()


def _shm_ref(params: Mapping[str, Any], where: str) -> ShmRef | None:
    """The shared-memory parameters of a tensor, or None when it names no region."""
    keys = {"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"}
    if not keys & set(params):
        return None
    region, size, offset = (params.get("shared_memory_region"), params.get("shared_memory_byte_size"),
                            params.get("shared_memory_offset", 0))
    if not isinstance(region, str) or not region:
        raise OipError(400, f"{where}: shared_memory_region must name a registered region")
    for key, value in (("shared_memory_byte_size", size), ("shared_memory_offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise OipError(400, f"{where}: {key} must be a non-negative integer")
    return ShmRef(region, size, offset)


def _from_json_data(data: Any, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    flat = _flatten(data, where)
    count = math.prod(shape)
    if len(flat) != count:
        raise OipError(400, f"{where}: 'data' has {len(flat)} elements; shape {list(shape)} needs {count}")
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise OipError(400, f"{where}: 'data' of a BOOL tensor must hold true/false only")
    elif any(isinstance(v, bool) for v in flat):
        raise OipError(400, f"{where}: booleans in 'data' of a {datatype} tensor")
    elif datatype not in FLOAT_TYPES and not all(isinstance(v, int) for v in flat):
        raise OipError(400, f"{where}: 'data' of an {datatype} tensor must hold integers only")
    try:
        if datatype == "BF16":
            arr = bf16_bits_from_float32(np.asarray(flat, dtype=np.float32))
        elif datatype in FLOAT_TYPES:
            arr = np.asarray(flat, dtype=np.float64).astype(WIRE[datatype])
        else:
            arr = np.asarray(flat, dtype=WIRE[datatype])
    except (OverflowError, ValueError, TypeError) as exc:
        raise OipError(400, f"{where}: 'data' does not fit {datatype}: {str(exc)[:120]}") from None
    return arr.reshape(shape)


def parse_infer(body: bytes, header_length: str | None, limits: Limits) -> InferRequest:
    """A request body (JSON, or JSON header + binary tensors) -> :class:`InferRequest`."""
    if header_length is not None:
        if not header_length.strip().isdigit():
            raise OipError(400, "Inference-Header-Content-Length must be a non-negative integer")
        n = int(header_length)
        if n > len(body):
            raise OipError(400, f"Inference-Header-Content-Length is {n} but the body has only {len(body)} bytes")
        head, binary = body[:n], memoryview(body)[n:]
    else:
        head, binary = body, memoryview(b"")
    doc = _json(head, "the inference request header" if header_length is not None else
                "the body (a JSON header followed by binary tensors needs the Inference-Header-Content-Length "
                "header)", limits.max_json_bytes)
    if not isinstance(doc, dict):
        raise OipError(400, "the inference request must be a JSON object with 'inputs'")
    _only(doc, {"id", "parameters", "inputs", "outputs"}, "request")
    if "id" in doc and not isinstance(doc["id"], str):
        raise OipError(400, "request: 'id' must be a string")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise OipError(400, "request: 'inputs' must be a non-empty list of tensors")

    # first pass: names, datatypes, shapes and sizes from the header, before any tensor is built
    plans = []
    total = 0
    binary_needed = 0
    for i, raw in enumerate(raw_inputs):
        where = f"inputs[{i}]"
        if not isinstance(raw, dict):
            raise OipError(400, f"{where} must be an object with name, shape, datatype and data")
        _only(raw, {"name", "shape", "datatype", "parameters", "data"}, where)
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise OipError(400, f"{where}: 'name' must be a non-empty string")
        where = f"input '{name}'"
        if any(p[0] == name for p in plans):
            raise OipError(400, f"{where} is given twice")
        datatype = raw.get("datatype")
        if datatype not in WIRE:
            raise OipError(400, f"{where}: datatype {datatype!r} is not supported; use one of {sorted(WIRE)}")
        shape = _shape(raw.get("shape"), where)
        count = math.prod(shape)
        if count > limits.max_tensor_elements:
            raise OipError(413, f"{where} has {count} elements; the limit is {limits.max_tensor_elements}")
        total += count
        if total > limits.max_total_elements:
            raise OipError(413, f"the inputs hold {total} elements in all; the limit is {limits.max_total_elements}")
        params = _parameters(raw.get("parameters"), where)
        _only(params, {"binary_data_size", "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"},
              f"{where} parameters")
        size = params.get("binary_data_size")
        shm = _shm_ref(params, where)
        if shm is not None:
            if "data" in raw or size is not None:
                raise OipError(400, f"{where} names a shared-memory region and also carries data; send one")
            expected = count * WIRE[datatype].itemsize
            if shm.byte_size != expected:
                raise OipError(400, f"{where}: shared_memory_byte_size is {shm.byte_size} but {datatype} "
                                    f"{list(shape)} takes {expected}")
        elif size is not None:
            if "data" in raw:
                raise OipError(400, f"{where} has both 'data' and parameters.binary_data_size; send one")
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise OipError(400, f"{where}: binary_data_size must be a non-negative integer")
            expected = count * WIRE[datatype].itemsize
            if size != expected:
                raise OipError(400, f"{where}: binary_data_size is {size} bytes but {datatype} {list(shape)} "
                                    f"takes {expected}")
            binary_needed += size
        elif "data" not in raw:
            raise OipError(400, f"{where} has neither 'data' nor parameters.binary_data_size")
        plans.append((name, datatype, shape, size, raw.get("data"), shm))
    if binary_needed != len(binary):
        if header_length is None:
            raise OipError(400, "inputs declare binary_data_size but the request has no "
                                "Inference-Header-Content-Length header")
        raise OipError(400, f"the binary part is {len(binary)} bytes but the inputs declare {binary_needed}")

    inputs: dict[str, Tensor] = {}
    offset = 0
    for name, datatype, shape, size, data, shm in plans:
        if shm is not None:
            inputs[name] = Tensor(name, datatype, shape, None, shm)
            continue
        if size is not None:
            arr = np.frombuffer(binary[offset:offset + size], dtype=WIRE[datatype]).reshape(shape)
            offset += size
        else:
            arr = _from_json_data(data, datatype, shape, f"input '{name}'")
        inputs[name] = Tensor(name, datatype, shape, arr)

    req = InferRequest(id=doc.get("id"), inputs=inputs, hyperparameters={})
    params = _parameters(doc.get("parameters"), "request")
    for key, value in params.items():
        if key in IGNORED:
            req.ignored[key] = value
        elif key == "seed":
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
                raise OipError(400, "parameter 'seed' must be an integer in [0, 2^63)")
            req.seed = value
        elif key == "dtype":
            dtype = RUN_DTYPE.get(value, value)
            if dtype not in DATATYPE_OF_RUN:
                raise OipError(400, f"parameter 'dtype' must be one of {sorted(RUN_DTYPE)} "
                                    f"(or {sorted(DATATYPE_OF_RUN)})")
            req.dtype = dtype
        elif key in ("binary_data_output", "allow_nonfinite"):
            if not isinstance(value, bool):
                raise OipError(400, f"parameter '{key}' must be true or false")
            setattr(req, "binary_output" if key == "binary_data_output" else key, value)
        else:
            req.hyperparameters[key] = value

    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise OipError(400, "request: 'outputs' must be a list of {name, parameters}")
        req.outputs = []
        for i, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
                raise OipError(400, f"outputs[{i}] must be an object with a 'name'")
            _only(raw, {"name", "parameters"}, f"outputs[{i}]")
            oparams = _parameters(raw.get("parameters"), f"output '{raw['name']}'")
            _only(oparams, {"binary_data", "classification", "shared_memory_region", "shared_memory_byte_size",
                            "shared_memory_offset"}, f"output '{raw['name']}' parameters")
            if oparams.get("classification"):
                raise OipError(400, f"output '{raw['name']}': the classification extension is not supported")
            binary = oparams.get("binary_data", req.binary_output)
            if not isinstance(binary, bool):
                raise OipError(400, f"output '{raw['name']}': binary_data must be true or false")
            if any(o.name == raw["name"] for o in req.outputs):
                raise OipError(400, f"output '{raw['name']}' is asked for twice")
            shm = _shm_ref(oparams, f"output '{raw['name']}'")
            if shm is not None and oparams.get("binary_data"):
                raise OipError(400, f"output '{raw['name']}': binary_data and a shared-memory region exclude each other")
            req.outputs.append(RequestedOutput(raw["name"], binary and shm is None, shm))
    return req


def run_dtype(req: InferRequest) -> str:
    """The dtype the run uses: the one asked for, else the inputs' when they all share one float datatype
    (FP64, BF16 or FP16), else float32."""
    if req.dtype:
        return req.dtype
    kinds = {t.datatype for t in req.inputs.values()}
    if len(kinds) == 1 and next(iter(kinds)) in RUN_DTYPE:
        return RUN_DTYPE[next(iter(kinds))]
    return "float32"


def as_wire(t: Tensor) -> tuple[np.ndarray, str]:
    """An input as (array, run-core dtype name): float tensors as they came (BF16 widened exactly to float32,
    which the core narrows back), integers and booleans as float64 or float32. Not for shared memory."""
    assert t.array is not None
    if t.datatype == "BF16":
        return float32_from_bf16_bits(t.array), "bfloat16"
    if t.datatype in RUN_DTYPE:
        return t.array, RUN_DTYPE[t.datatype]
    if t.array.dtype.itemsize > 2:
        return t.array.astype(np.float64), "float64"
    return t.array.astype(np.float32), "float32"


# ------------------------------------------------------------------------------------------ encoding

def encode_infer(model: str, request_id: str | None, outputs: Iterable[Tensor], binary: set[str],
                 parameters: Mapping[str, Any] | None = None) -> tuple[bytes, dict[str, str]]:
    """The answer body and its extra headers (``Inference-Header-Content-Length`` when binary parts follow)."""
    entries, blobs = [], []
    for t in outputs:
        entry: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if t.shm is not None:  # written into the client's region already
            entry["parameters"] = {"shared_memory_region": t.shm.region, "shared_memory_byte_size": t.shm.byte_size}
        elif t.name in binary:
            raw = np.ascontiguousarray(t.array, dtype=WIRE[t.datatype]).tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            values = float32_from_bf16_bits(t.array) if t.datatype == "BF16" else t.array
            entry["data"] = np.ascontiguousarray(values).reshape(-1)
        entries.append(entry)
    doc: dict[str, Any] = {"model_name": model, "model_version": "1"}
    if request_id is not None:
        doc["id"] = request_id
    if parameters:
        doc["parameters"] = {k: v for k, v in parameters.items() if v is not None}
    doc["outputs"] = entries
    head = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not blobs:
        return head, {}
    return head + b"".join(blobs), {"Inference-Header-Content-Length": str(len(head))}


def tensor_metadata(name: str, dims: Iterable[str], datatype: str = "FP32") -> dict[str, Any]:
    """OIP tensor metadata: fixed sizes as numbers, symbolic ones as -1."""
    return {"name": name, "datatype": datatype, "shape": [int(d) if d.isdigit() else -1 for d in dims]}


def error_body(message: str) -> bytes:
    return orjson.dumps({"error": message})
