"""A small typed client for the Attention Atlas API (httpx), for scripts and notebooks.

    from service.client import AtlasClient
    atlas = AtlasClient("http://127.0.0.1:8000")
    out = atlas.run("cbam", x, reduction=8)          # x: NumPy array or torch tensor; out: the same kind
    out["output"], out["channel_weights"], out.facts["time_ms"]
    for t in atlas.techniques(subcategory="channel"):   # follows the cursors
        print(t["slug"], t["year"])
    print(atlas.citation("cbam", "bibtex"))

torch is optional: NumPy in, NumPy out needs only numpy; torch tensors in give torch tensors out.
Tensors travel as safetensors both ways (a multipart body, as ``POST /techniques/{slug}/run`` takes it).
"""

from __future__ import annotations

import json
import math
import struct
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

SAFETENSORS = "application/vnd.safetensors"

# safetensors dtype codes <-> NumPy (bfloat16 has no NumPy type: it is widened to float32 on the way in)
_ST_NUMPY = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
             "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
_NUMPY_ST = {np.dtype(v): k for k, v in _ST_NUMPY.items()}


class AtlasError(Exception):
    """An error answer of the API, with its status, code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


@dataclass
class Page:
    """One page of ``GET /techniques``: its items, the total matching the filters, the cursor to the next."""

    items: list[dict[str, Any]]
    total: int
    next_cursor: str | None


class RunResult(dict):
    """The outputs of a run by name (``"output"`` first, then attention maps), as NumPy arrays or torch
    tensors like the inputs; ``facts`` holds the run facts (hyper-parameters used, seed, time, FLOPs)."""

    facts: dict[str, Any]

    @property
    def output(self):
        return self["output"]

    @property
    def attention(self) -> dict[str, Any]:
        names = self.facts.get("attention_outputs", [])
        return {k: v for k, v in self.items() if k in names}


def _torch():
    return sys.modules.get("torch")


def _is_torch(value: Any) -> bool:
    torch = _torch()
    return torch is not None and isinstance(value, torch.Tensor)


def _encode_numpy(arrays: Mapping[str, np.ndarray]) -> bytes:
    """safetensors bytes of NumPy arrays (little-endian, C order), without torch."""
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for name, arr in arrays.items():
        arr = np.ascontiguousarray(arr)
        code = _NUMPY_ST.get(arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype)
        if code is None:
            raise TypeError(f"input '{name}' has dtype {arr.dtype}; send float32, float64 or float16")
        data = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": code, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def _decode_numpy(blob: bytes) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """NumPy arrays and metadata from safetensors bytes; BF16 becomes float32 (exactly)."""
    (n,) = struct.unpack_from("<Q", blob)
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", {}) or {}
    base = 8 + n
    out = {}
    for name, spec in header.items():
        start, end = spec["data_offsets"]
        raw = blob[base + start:base + end]
        if spec["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            arr = np.frombuffer(raw, dtype=np.dtype(_ST_NUMPY[spec["dtype"]]).newbyteorder("<"))
        out[name] = arr.reshape(spec["shape"]).copy() if math.prod(spec["shape"]) else arr.reshape(spec["shape"])
    return out, meta


def _infer_dtype(values: Sequence[Any]) -> str:
    """The run dtype that keeps the inputs' precision: float64 or bfloat16 when every input is, else float32."""
    names = set()
    for v in values:
        names.add(str(v.dtype).removeprefix("torch."))
    if names == {"float64"}:
        return "float64"
    if names == {"bfloat16"}:
        return "bfloat16"
    return "float32"


class AtlasClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 120.0, http: httpx.Client | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(headers)
        self._owned = http is None
        self._input_names: dict[str, list[str]] = {}
        self.last_run: dict[str, Any] = {}

    def __enter__(self) -> AtlasClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._owned:
            self._http.close()

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                err = r.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise AtlasError(r.status_code, "http_error", r.text[:200]) from None
            if isinstance(err, str):  # the Open Inference Protocol's error shape
                raise AtlasError(r.status_code, "error", err)
            raise AtlasError(r.status_code, err.get("code", ""), err.get("message", ""), err.get("details"))
        return r

    # ---------------------------------------------------------------- catalogue and paging
    def page(self, *, limit: int = 20, cursor: str | None = None, **filters: Any) -> Page:
        """One page of ``GET /techniques`` (any of its filters, ``q=``, ``sort=``, ``fields=``)."""
        params = {k: (",".join(v) if isinstance(v, list | tuple) else v) for k, v in filters.items() if v is not None}
        params["limit"] = limit
        if cursor:
            params["cursor"] = cursor
        body = self._check(self._http.get("/techniques", params=params)).json()
        return Page(items=body["items"], total=body["total"], next_cursor=body.get("next_cursor"))

    def pages(self, *, page_size: int = 100, **filters: Any) -> Iterator[Page]:
        """Every page matching the filters, following ``next_cursor`` (keyset paging: nothing skipped or
        repeated)."""
        cursor = None
        while True:
            page = self.page(limit=page_size, cursor=cursor, **filters)
            yield page
            cursor = page.next_cursor
            if not cursor:
                return

    def techniques(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every technique matching the filters, one at a time across pages."""
        for page in self.pages(page_size=page_size, **filters):
            yield from page.items

    def count(self, **filters: Any) -> int:
        """How many techniques match the filters."""
        return self.page(limit=1, **filters).total

    def technique(self, slug: str, fields: list[str] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        return self._check(self._http.get(f"/techniques/{slug}", params=params)).json()

    def taxonomy(self) -> dict[str, Any]:
        return self._check(self._http.get("/taxonomy")).json()

    # ---------------------------------------------------------------- citations
    def citation(self, slug: str, fmt: str = "bibtex", **params: Any) -> str:
        """The original paper of a technique: ``fmt`` bibtex, biblatex, ris, csl-json or formatted (with
        ``style=apa`` etc.)."""
        return self._check(self._http.get(f"/techniques/{slug}/citation", params={"format": fmt, **params})).text

    def export(self, fmt: str = "bibtex", **filters: Any) -> str:
        """The papers of every technique matching the filters (no filters: the whole library)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._check(self._http.get("/export", params={"format": fmt, **params})).text

    def note(self, slug: str) -> str:
        """The technique's Markdown literature note (YAML front matter, for Obsidian)."""
        return self._check(self._http.get(f"/techniques/{slug}/note.md")).text

    # ---------------------------------------------------------------- mechanisms
    def implementation(self, slug: str) -> dict[str, Any]:
        return self._check(self._http.get(f"/techniques/{slug}/implementation")).json()

    def _names(self, slug: str) -> list[str]:
        if slug not in self._input_names:
            spec = self.implementation(slug)
            self._input_names[slug] = [i["name"] for i in spec["inputs"]]
        return self._input_names[slug]

    def _named_inputs(self, slug: str, inputs: Any) -> dict[str, Any]:
        if isinstance(inputs, Mapping):
            return dict(inputs)
        names = self._names(slug)
        if isinstance(inputs, list | tuple):
            if len(inputs) > len(names):
                raise ValueError(f"{slug} takes at most {len(names)} inputs {names}, got {len(inputs)}")
            return dict(zip(names, inputs, strict=False))
        return {names[0]: inputs}

    def run(self, slug: str, inputs: Any, *, hyperparameters: Mapping[str, Any] | None = None,
            weights: Mapping[str, Any] | None = None, seed: int = 0, dtype: str | None = None,
            return_attention: bool = True, **hyper: Any) -> RunResult:
        """Run a technique's reference implementation on your tensors.

        ``inputs``: one array (the technique's first input), a sequence (in the order of its inputs) or a
        mapping name -> array; NumPy arrays or torch tensors. Hyper-parameters as keyword arguments
        (``reduction=8``) or as ``hyperparameters={...}``. ``dtype`` defaults to the inputs' precision
        (float64 or bfloat16 when every input has it, else float32). The outputs come back as the inputs
        came: NumPy arrays for NumPy inputs (bfloat16 widened to float32), torch tensors for torch inputs.
        """
        named = self._named_inputs(slug, inputs)
        as_torch = any(_is_torch(v) for v in named.values())
        if as_torch:
            named = {k: v if _is_torch(v) else _torch().as_tensor(np.asarray(v)) for k, v in named.items()}
        else:
            named = {k: np.asarray(v) for k, v in named.items()}
        params = {**dict(hyperparameters or {}), **hyper}
        options = {"hyperparameters": params, "seed": seed, "dtype": dtype or _infer_dtype(list(named.values())),
                   "return_attention": return_attention}
        files: dict[str, Any] = {"inputs": ("inputs.safetensors", self._encode(named, as_torch), SAFETENSORS),
                                 "options": (None, json.dumps(options))}
        if weights is not None:
            files["weights"] = ("weights.safetensors", self._encode(dict(weights), as_torch), SAFETENSORS)
        r = self._check(self._http.post(f"/techniques/{slug}/run", files=files, headers={"Accept": SAFETENSORS}))
        arrays, meta = _decode_numpy(r.content) if not as_torch else self._decode_torch(r.content)
        result = RunResult(sorted(arrays.items(), key=lambda kv: kv[0] != "output"))  # output first
        result.facts = json.loads(meta.get("atlas", "{}"))
        self.last_run = result.facts
        return result

    @staticmethod
    def _encode(tensors: dict[str, Any], as_torch: bool) -> bytes:
        if not as_torch:
            return _encode_numpy({k: np.asarray(v) for k, v in tensors.items()})
        from safetensors.torch import save

        torch = _torch()
        return save({k: (v if _is_torch(v) else torch.as_tensor(np.asarray(v))).detach().cpu().contiguous()
                     for k, v in tensors.items()})

    @staticmethod
    def _decode_torch(blob: bytes) -> tuple[dict[str, Any], dict[str, str]]:
        from safetensors.torch import load

        (n,) = struct.unpack_from("<Q", blob)
        meta = json.loads(blob[8:8 + n]).get("__metadata__", {}) or {}
        return dict(load(blob)), meta
