"""Dependencies and response helpers shared by the routers."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from sqlmodel import Session

from ..errors import ApiError, quote
from ..settings import Settings


def get_session(request: Request) -> Iterator[Session]:
    with Session(request.app.state.engine) as session:
        yield session


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


SessionDep = Annotated[Session, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings)]

_ALLOWED_CACHE: dict[int, frozenset[str]] = {}


def query_params(dependant) -> dict[str, Any]:
    """The query parameters an operation declares, by name, with those of its dependencies first (the order
    in which FastAPI validates them)."""
    out: dict[str, Any] = {}
    for sub in dependant.dependencies:
        out.update(query_params(sub))
    out.update((p.alias, p) for p in dependant.query_params)
    return out


def refuse_unknown_query(request: Request, allowed: frozenset[str]) -> None:
    """400 naming the query parameters that are not in ``allowed`` (a typo should not be silently ignored)."""
    unknown = sorted(set(request.query_params) - allowed)
    if unknown:
        raise ApiError(400, f"unknown query parameter(s): {quote(', '.join(unknown))}",
                       details={"unknown": unknown, "allowed": sorted(allowed)})


async def forbid_unknown_query(request: Request) -> None:
    """Reject query parameters the operation does not define."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed = _ALLOWED_CACHE.get(id(route))
    if allowed is None:
        allowed = frozenset(query_params(dependant))
        _ALLOWED_CACHE[id(route)] = allowed
    refuse_unknown_query(request, allowed)


def etag_for(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def conditional(request: Request, body: bytes, media_type: str, last_modified: datetime | None = None,
                headers: dict[str, str] | None = None) -> Response:
    """A response with a strong ETag (and Last-Modified), or 304 when the client's copy is current."""
    etag = etag_for(body)
    out_headers = {"ETag": etag, "Cache-Control": "no-cache", **(headers or {})}
    if last_modified is not None:
        out_headers["Last-Modified"] = format_datetime(last_modified, usegmt=True)
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        if "*" in tags or etag in tags:
            return Response(status_code=304, headers=out_headers)
    elif last_modified is not None and (ims := request.headers.get("if-modified-since")):
        try:
            if last_modified.replace(microsecond=0) <= parsedate_to_datetime(ims):
                return Response(status_code=304, headers=out_headers)
        except (TypeError, ValueError):
            pass
    return Response(content=body, media_type=media_type, headers=out_headers)


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def conditional_json(request: Request, payload: Any, last_modified: datetime | None = None) -> Response:
    return conditional(request, json_bytes(payload), "application/json", last_modified)


def declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length, checked: 400 when it is no number, 413 when it is over ``limit``; None if absent."""
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    if not declared.strip().isdigit():
        raise ApiError(400, "Content-Length is not a number")
    if len(declared.strip()) > 20 or int(declared) > limit:
        raise ApiError(413, f"the body is {quote(declared.strip(), 20)} bytes; the limit is {limit}",
                       details={"limit": limit})
    return int(declared)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it is known to exceed ``limit`` (never read whole)."""
    declared_length(request, limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body exceeds the limit of {limit} bytes", details={"limit": limit})
        chunks.append(chunk)
    return b"".join(chunks)
