"""Tensor wire formats: JSON (nested lists), safetensors and NumPy .npy.

Every decoder checks names, dtypes, shapes and element counts from the header *before* it allocates the
data, never unpickles anything (``allow_pickle=False``; safetensors has no code path), and turns
malformed or truncated input into :class:`TensorError` with the offending name.
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16,
                                  "float16": torch.float16}
# safetensors' dtype codes for the float types we accept
_ST_DTYPES = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16, "F16": torch.float16}
_ST_SIZES = {"F32": 4, "F64": 8, "BF16": 2, "F16": 2}
_NP_KINDS = {np.dtype("<f4"), np.dtype("<f8"), np.dtype("<f2"), np.dtype(">f4"), np.dtype(">f8")}


class TensorError(ValueError):
    def __init__(self, message: str, *, field: str | None = None, status: int = 400, expected: str | None = None):
        super().__init__(message)
        self.field = field
        self.status = status
        self.expected = expected


@dataclass(frozen=True)
class Limits:
    max_tensor_elements: int
    max_total_elements: int


def _check_shape(name: str, shape: Any, limits: Limits, where: str) -> tuple[int, ...]:
    if not isinstance(shape, (list, tuple)) or not all(isinstance(n, int) and not isinstance(n, bool)
                                                       for n in shape):
        raise TensorError(f"{where} '{name}': shape must be a list of integers", field=f"{where}.{name}.shape")
    if len(shape) > 8:
        raise TensorError(f"{where} '{name}': rank {len(shape)} is over 8", field=f"{where}.{name}.shape")
    if any(n < 0 for n in shape):
        raise TensorError(f"{where} '{name}': negative dimension in {list(shape)}", field=f"{where}.{name}.shape")
    count = math.prod(shape)
    if count > limits.max_tensor_elements:
        raise TensorError(f"{where} '{name}' has {count} elements; the limit is {limits.max_tensor_elements}",
                          field=f"{where}.{name}", status=413, expected=f"at most {limits.max_tensor_elements} elements")
    return tuple(shape)


def _check_total(shapes: Mapping[str, tuple[int, ...]], limits: Limits, already: int = 0) -> int:
    total = already + sum(math.prod(s) for s in shapes.values())
    if total > limits.max_total_elements:
        raise TensorError(f"the request holds {total} elements in all; the limit is {limits.max_total_elements}",
                          status=413, expected=f"at most {limits.max_total_elements} elements in all tensors")
    return total


# ---------------------------------------------------------------- JSON

def tensors_from_json(obj: Any, limits: Limits, where: str = "inputs", already: int = 0) -> dict[str, torch.Tensor]:
    """``{"x": {"shape": [2, 3], "dtype": "float32", "data": [[...], [...]]}}``; data may be nested or flat."""
    if not isinstance(obj, dict) or not obj:
        raise TensorError(f"{where} must be an object mapping names to tensors", field=where)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, spec in obj.items():
        if not isinstance(spec, dict) or "data" not in spec:
            raise TensorError(f"{where} '{name}' must be an object with 'data' (and 'shape', 'dtype')",
                              field=f"{where}.{name}")
        unknown = set(spec) - {"data", "shape", "dtype"}
        if unknown:
            raise TensorError(f"{where} '{name}': unknown keys {sorted(unknown)}", field=f"{where}.{name}")
        if "shape" in spec:
            shapes[name] = _check_shape(name, spec["shape"], limits, where)
    _check_total(shapes, limits, already)
    out: dict[str, torch.Tensor] = {}
    for name, spec in obj.items():
        dtype_name = spec.get("dtype", "float32")
        if dtype_name not in DTYPES:
            raise TensorError(f"{where} '{name}': dtype {dtype_name!r} is not supported",
                              field=f"{where}.{name}.dtype", expected=f"one of {sorted(DTYPES)}")
        try:
            arr = np.asarray(spec["data"], dtype=np.float64)
        except (ValueError, TypeError):
            raise TensorError(f"{where} '{name}': data must be numbers in a rectangular nested list",
                              field=f"{where}.{name}.data") from None
        if arr.size > limits.max_tensor_elements:
            raise TensorError(f"{where} '{name}' has {arr.size} elements; the limit is {limits.max_tensor_elements}",
                              field=f"{where}.{name}", status=413)
        if name in shapes:
            if arr.size != math.prod(shapes[name]):
                raise TensorError(f"{where} '{name}': {arr.size} values do not fill shape {list(shapes[name])}",
                                  field=f"{where}.{name}.data")
            arr = arr.reshape(shapes[name])
        out[name] = torch.from_numpy(arr).to(DTYPES[dtype_name])
    return out


def tensor_to_json(t: torch.Tensor) -> dict[str, Any]:
    """``{"shape", "dtype", "data"}`` with ``data`` as a NumPy array: :func:`json_response_bytes` writes it as
    nested lists (bfloat16 and float16 widened to float32; non-finite values become null, as JSON has none)."""
    t = t.detach().cpu()
    dtype = str(t.dtype).removeprefix("torch.")
    if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
        t = t.to(torch.float32)
    return {"shape": list(t.shape), "dtype": dtype, "data": t.contiguous().numpy()}


def json_response_bytes(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def loads(body: bytes) -> Any:
    """Parse a JSON body: the fast parser first, the standard one for what only it accepts (NaN, Infinity)."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)


# ---------------------------------------------------------------- safetensors

def safetensors_header(body: bytes, limits: Limits, where: str = "inputs") -> dict[str, tuple[int, ...]]:
    """Validate a safetensors blob's header (names, dtypes, shapes, offsets) without reading tensor data."""
    if len(body) < 8:
        raise TensorError(f"{where}: the safetensors body is truncated (no header length)", field=where)
    (header_len,) = struct.unpack("<Q", body[:8])
    if header_len > min(len(body) - 8, 100 << 20):
        raise TensorError(f"{where}: the safetensors header length {header_len} runs past the body "
                          f"({len(body)} bytes): truncated or not safetensors", field=where)
    try:
        header = json.loads(body[8:8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise TensorError(f"{where}: the safetensors header is not valid JSON", field=where) from None
    if not isinstance(header, dict):
        raise TensorError(f"{where}: the safetensors header must be an object", field=where)
    header.pop("__metadata__", None)
    data_len = len(body) - 8 - header_len
    shapes: dict[str, tuple[int, ...]] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or {"dtype", "shape", "data_offsets"} - set(info):
            raise TensorError(f"{where} '{name}': malformed safetensors entry", field=f"{where}.{name}")
        if info["dtype"] not in _ST_DTYPES:
            raise TensorError(f"{where} '{name}': dtype {info['dtype']} is not supported", field=f"{where}.{name}",
                              expected=f"one of {sorted(_ST_DTYPES)}")
        shape = _check_shape(name, info["shape"], limits, where)
        begin, end = info["data_offsets"]
        if not (0 <= begin <= end <= data_len) or end - begin != math.prod(shape) * _ST_SIZES[info["dtype"]]:
            raise TensorError(f"{where} '{name}': data offsets {info['data_offsets']} do not match its shape and "
                              f"the {data_len} data bytes present (truncated body?)", field=f"{where}.{name}")
        shapes[name] = shape
    return shapes


def tensors_from_safetensors(body: bytes, limits: Limits, where: str = "inputs", already: int = 0
                             ) -> dict[str, torch.Tensor]:
    shapes = safetensors_header(body, limits, where)
    if not shapes:
        raise TensorError(f"{where}: the safetensors body holds no tensors", field=where)
    _check_total(shapes, limits, already)
    try:
        return dict(st_load(body))
    except Exception as exc:  # noqa: BLE001 - the header passed; anything else is a malformed body
        raise TensorError(f"{where}: cannot read the safetensors body: {exc}", field=where) from None


def tensors_to_safetensors(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=dict(metadata or {}))


# ---------------------------------------------------------------- NumPy .npy

def tensor_from_npy(body: bytes, name: str, limits: Limits) -> torch.Tensor:
    buf = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(buf)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(buf)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(buf)
    except (ValueError, OSError) as exc:
        raise TensorError(f"inputs '{name}': not a valid .npy file ({exc})", field=f"inputs.{name}") from None
    if dtype not in _NP_KINDS:
        raise TensorError(f"inputs '{name}': .npy dtype {dtype} is not supported", field=f"inputs.{name}",
                          expected="float16, float32 or float64")
    _check_shape(name, list(shape), limits, "inputs")
    expected = math.prod(shape) * dtype.itemsize
    if len(body) - buf.tell() != expected:
        raise TensorError(f"inputs '{name}': the .npy data holds {len(body) - buf.tell()} bytes, its header "
                          f"announces {expected} (truncated?)", field=f"inputs.{name}")
    buf.seek(0)
    arr = np.load(buf, allow_pickle=False)
    return torch.from_numpy(np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder("="), copy=False)))
