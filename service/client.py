"""A small typed client for the Attention Atlas API (httpx).

    from service.client import AtlasClient
    with AtlasClient("http://127.0.0.1:8000") as atlas:
        for t in atlas.techniques(subcategory="channel"):
            print(t["slug"], t["year"])
        bib = atlas.citation("cbam", fmt="bibtex")
        out = atlas.run("squeeze-and-excitation", {"x": torch.randn(8, 256, 28, 28)}, hyperparameters={"reduction": 8})
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

SAFETENSORS = "application/vnd.safetensors"


class AtlasError(Exception):
    """An error answer of the API, with its status, code, message and details."""

    def __init__(self, status: int, code: str, message: str, details: Any = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class AtlasClient:
    def __init__(self, base_url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 timeout: float = 120.0, http: httpx.Client | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(headers)
        self._owned = http is None

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
            raise AtlasError(r.status_code, err.get("code", ""), err.get("message", ""), err.get("details"))
        return r

    # catalogue
    def techniques(self, *, page_size: int = 100, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every technique matching the filters (any GET /techniques parameter), following the cursors."""
        params = {k: v for k, v in filters.items() if v is not None}
        params["limit"] = page_size
        cursor = None
        while True:
            page = self._check(self._http.get("/techniques", params={**params, **({"cursor": cursor} if cursor else {})}))
            body = page.json()
            yield from body["items"]
            cursor = body["next_cursor"]
            if not cursor:
                return

    def technique(self, slug: str, fields: list[str] | None = None) -> dict[str, Any]:
        params = {"fields": ",".join(fields)} if fields else None
        return self._check(self._http.get(f"/techniques/{slug}", params=params)).json()

    def taxonomy(self) -> dict[str, Any]:
        return self._check(self._http.get("/taxonomy")).json()

    def citation(self, slug: str, fmt: str = "bibtex", **params: Any) -> str:
        return self._check(self._http.get(f"/techniques/{slug}/citation", params={"format": fmt, **params})).text

    # mechanisms
    def implementation(self, slug: str) -> dict[str, Any]:
        return self._check(self._http.get(f"/techniques/{slug}/implementation")).json()

    def run(self, slug: str, inputs: Mapping[str, torch.Tensor], *, hyperparameters: Mapping[str, Any] | None = None,
            weights: Mapping[str, torch.Tensor] | None = None, seed: int = 0, dtype: str = "float32",
            return_attention: bool = True) -> dict[str, torch.Tensor]:
        """Run a mechanism with binary tensors both ways; returns the output and attention tensors.
        The run facts (time, parameters, FLOPs) are in ``self.last_run``."""
        options = {"hyperparameters": dict(hyperparameters or {}), "seed": seed, "dtype": dtype,
                   "return_attention": return_attention}
        files: dict[str, Any] = {"inputs": ("inputs.safetensors", st_save(dict(inputs)), SAFETENSORS),
                                 "options": (None, json.dumps(options))}
        if weights is not None:
            files["weights"] = ("weights.safetensors", st_save(dict(weights)), SAFETENSORS)
        r = self._check(self._http.post(f"/techniques/{slug}/run", files=files, headers={"Accept": SAFETENSORS}))
        header_len = int.from_bytes(r.content[:8], "little")
        meta = json.loads(r.content[8:8 + header_len]).get("__metadata__", {})
        self.last_run = json.loads(meta.get("atlas", "{}"))
        return dict(st_load(r.content))
