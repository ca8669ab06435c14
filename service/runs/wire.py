"""Tensor wire formats on the HTTP side, without torch: JSON tensors, safetensors and NumPy .npy.

Every decoder validates names, dtypes, shapes, element counts and byte ranges from the header before
anything is allocated, never unpickles anything, and describes each tensor as a :class:`TensorRef`
(segment, offset, dtype, shape) into the shared-memory segment that holds the request body. The run
worker maps the same bytes; nothing is copied on the way.
"""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import orjson

from .. import jsonbody
from ..errors import ApiError

# name -> (item size, safetensors code, numpy dtype or None where NumPy has none)
DTYPES: dict[str, tuple[int, str, Any]] = {
    "float32": (4, "F32", np.dtype("<f4")),
    "float64": (8, "F64", np.dtype("<f8")),
    "bfloat16": (2, "BF16", None),
    "float16": (2, "F16", np.dtype("<f2")),
    "int64": (8, "I64", np.dtype("<i8")),
    "int32": (4, "I32", np.dtype("<i4")),
    "uint8": (1, "U8", np.dtype("u1")),
    "bool": (1, "BOOL", np.dtype("?")),
}
INPUT_DTYPES = ("float32", "float64", "bfloat16", "float16")
ST_TO_NAME = {code: name for name, (_, code, _) in DTYPES.items()}
MAX_RANK = 8


class TensorError(ApiError):
    """A malformed or over-limit tensor: 400 (or 413 for sizes), naming the tensor."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400, expected: str | None = None):
        super().__init__(status, message, details={"field": field, "expected": expected})
        self.field = field
        self.expected = expected


@dataclass(frozen=True)
class Limits:
    max_tensor_elements: int
    max_total_elements: int


@dataclass
class TensorRef:
    """Where one tensor's bytes are: ``nbytes`` bytes at ``offset`` of segment ``segment``.
    ``layout`` is "C" (row-major), "F" (column-major .npy) or "BE" (big-endian .npy)."""

    name: str
    dtype: str
    shape: list[int]
    segment: str
    offset: int
    nbytes: int
    layout: str = "C"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TensorRef:
        return cls(**raw)


def short(value: Any, limit: int = 64) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_shape(name: str, shape: Any, limits: Limits, where: str) -> list[int]:
    if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in shape):
        raise TensorError(f"{where} '{short(name)}': shape must be a list of integers",
                          field=f"{where}.{short(name)}.shape", expected="[B, C, H, W]-style list of integers")
    if len(shape) > MAX_RANK:
        raise TensorError(f"{where} '{short(name)}': rank {len(shape)} is over {MAX_RANK}",
                          field=f"{where}.{short(name)}.shape", expected=f"rank <= {MAX_RANK}")
    if any(n < 0 for n in shape):
        raise TensorError(f"{where} '{short(name)}': negative dimension in {shape}",
                          field=f"{where}.{short(name)}.shape", expected="sizes >= 0")
    count = math.prod(shape)
    if count > limits.max_tensor_elements:
        raise TensorError(f"{where} '{short(name)}' has {count} elements; the limit is {limits.max_tensor_elements} "
                          "(setting ATLAS_MAX_TENSOR_ELEMENTS)", field=f"{where}.{short(name)}", status=413,
                          expected=f"at most {limits.max_tensor_elements} elements")
    return list(shape)


def check_total(counts: Iterable[int], limits: Limits, already: int = 0) -> int:
    total = already + sum(counts)
    if total > limits.max_total_elements:
        raise TensorError(f"the request holds {total} elements in all; the limit is {limits.max_total_elements} "
                          "(setting ATLAS_MAX_TOTAL_ELEMENTS)", status=413,
                          expected=f"at most {limits.max_total_elements} elements in all tensors")
    return total


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name or len(name) > 128:
        raise TensorError(f"{where}: tensor names are non-empty strings of at most 128 characters",
                          field=where, expected="a short name such as 'x'")
    return name


# ---------------------------------------------------------------- JSON tensors

def json_tensor_plan(obj: Any, limits: Limits, where: str = "inputs", already: int = 0
                     ) -> list[tuple[str, np.ndarray, str]]:
    """``{"x": {"shape": [2, 3], "dtype": "float32", "data": [[...], [...]]}}`` -> (name, float64 array,
    dtype) for each tensor, every shape and count checked. ``data`` may be nested or flat."""
    if not isinstance(obj, dict) or not obj:
        raise TensorError(f"{where} must be an object mapping names to tensors", field=where,
                          expected='{"x": {"shape": [...], "dtype": "float32", "data": [...]}}')
    declared: dict[str, list[int]] = {}
    for name, spec in obj.items():
        _check_name(name, where)
        if not isinstance(spec, dict) or "data" not in spec:
            raise TensorError(f"{where} '{short(name)}' must be an object with 'data' (and 'shape', 'dtype')",
                              field=f"{where}.{short(name)}", expected="an object with shape, dtype and data")
        unknown = set(spec) - {"data", "shape", "dtype"}
        if unknown:
            raise TensorError(f"{where} '{short(name)}': unknown keys {sorted(short(k) for k in unknown)}",
                              field=f"{where}.{short(name)}", expected="keys shape, dtype, data")
        dtype = spec.get("dtype", "float32")
        if not isinstance(dtype, str) or dtype not in INPUT_DTYPES:
            raise TensorError(f"{where} '{short(name)}': dtype {short(dtype)} is not supported",
                              field=f"{where}.{short(name)}.dtype", expected=f"one of {list(INPUT_DTYPES)}")
        if "shape" in spec:
            declared[name] = check_shape(name, spec["shape"], limits, where)
    check_total((math.prod(s) for s in declared.values()), limits, already)
    plan = []
    total = already
    for name, spec in obj.items():
        data = spec["data"]
        if not isinstance(data, (list, int, float)) or isinstance(data, bool):
            raise TensorError(f"{where} '{short(name)}': data must be a number or a nested list of numbers",
                              field=f"{where}.{short(name)}.data", expected="numbers in a rectangular nested list")
        try:
            arr = np.asarray(data, dtype=np.float64)
        except (ValueError, TypeError, OverflowError):
            raise TensorError(f"{where} '{short(name)}': data must be numbers in a rectangular nested list",
                              field=f"{where}.{short(name)}.data",
                              expected="numbers in a rectangular nested list") from None
        total = check_total([arr.size], limits, total)
        if arr.size > limits.max_tensor_elements:
            raise TensorError(f"{where} '{short(name)}' has {arr.size} elements; the limit is "
                              f"{limits.max_tensor_elements}", field=f"{where}.{short(name)}", status=413)
        if name in declared:
            if arr.size != math.prod(declared[name]):
                raise TensorError(f"{where} '{short(name)}': {arr.size} values do not fill shape {declared[name]}",
                                  field=f"{where}.{short(name)}.data", expected=f"{math.prod(declared[name])} values")
            arr = arr.reshape(declared[name])
        if arr.ndim > MAX_RANK:
            raise TensorError(f"{where} '{short(name)}': rank {arr.ndim} is over {MAX_RANK}",
                              field=f"{where}.{short(name)}.data")
        plan.append((name, arr, spec.get("dtype", "float32")))
    return plan


def to_bfloat16_bits(arr: np.ndarray) -> np.ndarray:
    """float -> bfloat16 bit patterns (uint16), rounding to nearest even as torch does; NaN stays NaN."""
    f32 = np.ascontiguousarray(arr, dtype=np.float32)
    bits = f32.view(np.uint32)
    rounded = ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        rounded[nan] = 0x7FC0
    return rounded


def from_bfloat16_bits(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def plan_nbytes(plan: list[tuple[str, np.ndarray, str]]) -> int:
    return sum(aligned(arr.size * DTYPES[dtype][0]) for _, arr, dtype in plan)


def aligned(n: int, to: int = 64) -> int:
    return (n + to - 1) // to * to


def write_plan(plan: list[tuple[str, np.ndarray, str]], seg_name: str, buf: memoryview, start: int = 0
               ) -> tuple[list[TensorRef], int]:
    """Write JSON-decoded arrays into ``buf`` at 64-byte aligned offsets; return their refs and the end."""
    refs = []
    offset = start
    for name, arr, dtype in plan:
        size, _, np_dtype = DTYPES[dtype]
        nbytes = arr.size * size
        raw = to_bfloat16_bits(arr) if dtype == "bfloat16" else arr.astype(np_dtype, copy=False)
        target = np.frombuffer(buf, dtype=raw.dtype, count=arr.size, offset=offset)
        target[:] = raw.reshape(-1)
        refs.append(TensorRef(name, dtype, list(arr.shape), seg_name, offset, nbytes))
        offset = aligned(offset + nbytes)
    return refs, offset


# ---------------------------------------------------------------- safetensors

def safetensors_refs(buf: memoryview, length: int, seg_name: str, base: int, limits: Limits,
                     where: str = "inputs", already: int = 0) -> list[TensorRef]:
    """Validate a safetensors blob of ``length`` bytes at ``base`` in ``buf`` (names, dtypes, shapes,
    offsets: each of the type the format defines) and describe its tensors without reading the data."""
    if length < 8:
        raise TensorError(f"{where}: the safetensors body is truncated (no header length)", field=where,
                          expected="8-byte little-endian header length, JSON header, data")
    (header_len,) = struct.unpack_from("<Q", buf, base)
    if header_len > min(length - 8, 16 << 20):
        raise TensorError(f"{where}: the safetensors header length {header_len} runs past the body "
                          f"({length} bytes): truncated or not safetensors", field=where)
    header = jsonbody.loads(bytes(buf[base + 8:base + 8 + header_len]), what=f"{where}: the safetensors header",
                            max_depth=4, allow_nonfinite=False)
    if not isinstance(header, dict):
        raise TensorError(f"{where}: the safetensors header must be a JSON object", field=where)
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise TensorError(f"{where}: __metadata__ must map strings to strings", field=f"{where}.__metadata__")
    data_start = base + 8 + header_len
    data_len = length - 8 - header_len
    refs: list[TensorRef] = []
    for name, info in header.items():
        _check_name(name, where)
        label = f"{where}.{short(name)}"
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise TensorError(f"{where} '{short(name)}': a safetensors entry has exactly dtype, shape and "
                              "data_offsets", field=label)
        code = info["dtype"]
        if not isinstance(code, str) or ST_TO_NAME.get(code) not in INPUT_DTYPES:
            raise TensorError(f"{where} '{short(name)}': dtype {short(code)} is not supported", field=label,
                              expected="one of F32, F64, BF16, F16")
        shape = check_shape(name, info["shape"], limits, where)
        offsets = info["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise TensorError(f"{where} '{short(name)}': data_offsets must be a list of two integers [begin, end]",
                              field=label)
        begin, end = offsets
        dtype = ST_TO_NAME[code]
        nbytes = math.prod(shape) * DTYPES[dtype][0]
        if not (0 <= begin <= end <= data_len) or end - begin != nbytes:
            raise TensorError(f"{where} '{short(name)}': data offsets {offsets} do not match its shape and the "
                              f"{data_len} data bytes present (truncated body?)", field=label)
        refs.append(TensorRef(name, dtype, shape, seg_name, data_start + begin, nbytes))
    if not refs:
        raise TensorError(f"{where}: the safetensors body holds no tensors", field=where)
    ordered = sorted(refs, key=lambda r: r.offset)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.offset < a.offset + a.nbytes:
            raise TensorError(f"{where}: tensors '{short(a.name)}' and '{short(b.name)}' overlap", field=where)
    check_total((math.prod(r.shape) for r in refs), limits, already)
    return refs


def safetensors_header_bytes(refs: list[dict[str, Any]], metadata: Mapping[str, str] | None = None) -> bytes:
    """The 8-byte length and JSON header for outputs laid out back to back in ``refs`` order."""
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    pos = 0
    for ref in refs:
        header[ref["name"]] = {"dtype": DTYPES[ref["dtype"]][1], "shape": ref["shape"],
                               "data_offsets": [pos, pos + ref["nbytes"]]}
        pos += ref["nbytes"]
    raw = orjson.dumps(header)
    raw += b" " * (-(len(raw) + 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


# ---------------------------------------------------------------- NumPy .npy

_NPY_OK = {np.dtype("<f2"): "float16", np.dtype("<f4"): "float32", np.dtype("<f8"): "float64",
           np.dtype(">f4"): "float32", np.dtype(">f8"): "float64", np.dtype(">f2"): "float16"}


def npy_ref(buf: memoryview, length: int, seg_name: str, base: int, name: str, limits: Limits) -> TensorRef:
    """Validate a .npy body with NumPy's own header reader (versions 1.0, 2.0, 3.0) and describe it."""
    head = io.BytesIO(bytes(buf[base:base + min(length, 1 << 16)]))
    label = f"inputs.{short(name)}"
    try:
        version = np.lib.format.read_magic(head)
        if version not in ((1, 0), (2, 0), (3, 0)):
            raise TensorError(f"inputs '{short(name)}': .npy format version {version[0]}.{version[1]} is not "
                              "supported", field=label, expected=".npy format version 1.0, 2.0 or 3.0")
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(head, max_header_size=10000)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(head, max_header_size=10000)
    except TensorError:
        raise
    except Exception as exc:  # noqa: BLE001 - NumPy raises several types for malformed headers
        raise TensorError(f"inputs '{short(name)}': not a valid .npy file ({short(str(exc), 120)})",
                          field=label, expected="a .npy file written by numpy.save") from None
    if dtype not in _NPY_OK:
        raise TensorError(f"inputs '{short(name)}': .npy dtype {dtype} is not supported", field=label,
                          expected="float16, float32 or float64")
    shape = check_shape(name, list(shape), limits, "inputs")
    check_total([math.prod(shape)], limits)
    data_off = head.tell()
    nbytes = math.prod(shape) * dtype.itemsize
    if length - data_off != nbytes:
        raise TensorError(f"inputs '{short(name)}': the .npy data holds {length - data_off} bytes, its header "
                          f"announces {nbytes} (truncated?)", field=label)
    layout = "BE" if dtype.byteorder == ">" else ("F" if fortran and len(shape) > 1 else "C")
    if layout == "BE" and fortran and len(shape) > 1:
        raise TensorError(f"inputs '{short(name)}': big-endian Fortran-order .npy is not supported", field=label,
                          expected="C order or little-endian")
    return TensorRef(name, _NPY_OK[dtype], shape, seg_name, base + data_off, nbytes, layout)


# ---------------------------------------------------------------- outputs

def output_array(buf: memoryview, ref: Mapping[str, Any]) -> np.ndarray:
    """A NumPy view of one output (bfloat16 and float16 widened to float32 for JSON)."""
    dtype = ref["dtype"]
    count = math.prod(ref["shape"])
    if dtype == "bfloat16":
        bits = np.frombuffer(buf, dtype=np.uint16, count=count, offset=ref["offset"])
        return from_bfloat16_bits(bits).reshape(ref["shape"])
    arr = np.frombuffer(buf, dtype=DTYPES[dtype][2], count=count, offset=ref["offset"]).reshape(ref["shape"])
    return arr.astype(np.float32) if dtype == "float16" else arr


def json_output(buf: memoryview, ref: Mapping[str, Any]) -> dict[str, Any]:
    return {"shape": list(ref["shape"]), "dtype": ref["dtype"], "data": output_array(buf, ref)}


def json_bytes(payload: Any) -> bytes:
    """orjson with NumPy arrays written directly; NaN and infinities become null, as JSON has none."""
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
