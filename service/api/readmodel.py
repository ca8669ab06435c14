"""Serving catalogue reads from the snapshot (service/catalog/snapshot.py).

- ``install(app)`` puts a ``SnapshotStore`` on ``app.state.catalogue`` and adds ``NotModifiedMiddleware``,
  which answers a conditional GET whose ``If-None-Match`` names the current ETag with 304 before routing,
  parameter parsing or any other work.
- ``snapshot(request)`` is the snapshot for this request (checked once per request).
- ``respond`` answers ``If-None-Match`` / ``If-Modified-Since`` from the validators and builds the body
  only when it is needed.

Validators: a technique without ``fields`` has the ETag of its JSON bytes (the one ``PATCH`` checks
``If-Match`` against); taxonomy and applications likewise. A list, or a technique with ``fields``, has
an ETag derived from the content it is made of (the snapshot's digest, or the technique's ETag) and the
exact path and query string: equal content and an equal request give equal bytes, so the ETag is strong
and can be checked before the response is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import Any

from fastapi import FastAPI, Request, Response

from ..catalog.snapshot import Snapshot, SnapshotStore, derived_etag

SCOPE_KEY = "atlas.snapshot"
_TECHNIQUE_PATH = re.compile(r"^/techniques/([a-z0-9]+(?:-[a-z0-9]+)*)$")


def install(app: FastAPI) -> None:
    settings = app.state.settings
    app.state.catalogue = SnapshotStore(app.state.engine, settings.catalog_check_interval_ms,
                                        search_cache=settings.catalog_search_cache)
    app.state.catalogue_salt = f"{settings.page_size_default}/{settings.page_size_max}"
    app.add_middleware(NotModifiedMiddleware)


def snapshot(request: Request) -> Snapshot:
    snap = request.scope.get(SCOPE_KEY)
    if snap is None:
        snap = request.app.state.catalogue.current()
        request.scope[SCOPE_KEY] = snap
    return snap


def list_etag(request_app_state: Any, snap: Snapshot, path: str, query_string: bytes) -> str:
    return derived_etag(snap.digest, request_app_state.catalogue_salt, path,
                        query_string.decode("latin-1"))


def _tags(header: str) -> set[str]:
    return {t.strip().removeprefix("W/") for t in header.split(",")}


def _headers(etag: str, last_modified_http: str | None) -> dict[str, str]:
    out = {"ETag": etag, "Cache-Control": "no-cache"}
    if last_modified_http:
        out["Last-Modified"] = last_modified_http
    return out


def not_modified(request: Request, etag: str, last_modified_http: str | None) -> bool:
    """Whether the client's copy is current: If-None-Match names the ETag (or *), or, without
    If-None-Match, If-Modified-Since is not before Last-Modified."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = _tags(inm)
        return "*" in tags or etag in tags
    ims = request.headers.get("if-modified-since")
    if last_modified_http is None or not ims:
        return False
    try:
        return parsedate_to_datetime(last_modified_http) <= parsedate_to_datetime(ims)
    except (TypeError, ValueError):
        return False


def respond(request: Request, etag: str, last_modified_http: str | None, body: Callable[[], bytes]) -> Response:
    """200 with the JSON ``body()`` and validators, or 304 when the client's copy is current (the body is not
    built). A built list or field selection is kept with the snapshot for the next equal request (a record, the
    taxonomy and the applications are the snapshot's own bodies already)."""
    headers = _headers(etag, last_modified_http)
    if not_modified(request, etag, last_modified_http):
        return Response(status_code=304, headers=headers)
    content = body()
    scope = request.scope
    if scope["method"] == "GET" and (scope["query_string"] or scope["path"] == "/techniques"):
        snap = scope.get(SCOPE_KEY)
        budget = request.app.state.settings.catalog_response_cache_bytes
        if snap is not None and budget:
            snap.responses.keep((scope["path"], scope["query_string"]), etag, last_modified_http, content, budget)
    return Response(content=content, media_type="application/json", headers=headers)


class _RouteLabel:
    """What the metrics middleware reads from ``scope['route']`` for a request answered here."""

    def __init__(self, path: str):
        self.path = path


_LABELS = {p: _RouteLabel(p) for p in ("/techniques", "/techniques/{slug}", "/taxonomy", "/applications")}


def _raw_headers(etag: str, last_modified_http: str | None, body: bytes | None = None) -> list[tuple[bytes, bytes]]:
    out = [(k.lower().encode(), v.encode()) for k, v in _headers(etag, last_modified_http).items()]
    if body is not None:
        out += [(b"content-length", str(len(body)).encode()), (b"content-type", b"application/json")]
    return out


class NotModifiedMiddleware:
    """Answers GETs of catalogue resources from the snapshot before routing: with 304 where If-None-Match
    names the current ETag, and with the body where the snapshot holds it for this exact request (a
    technique, the taxonomy and the applications as built; a list or field selection once it was built,
    see ``respond``). Everything else goes on to the routes (with the snapshot already looked up)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if path in ("/techniques", "/taxonomy", "/applications"):
            template, slug = path, None
        elif m := _TECHNIQUE_PATH.match(path):
            template, slug = "/techniques/{slug}", m.group(1)
        else:
            await self.app(scope, receive, send)
            return
        state = scope["app"].state
        try:
            snap = state.catalogue.current()
        except Exception:  # noqa: BLE001 - the route reports it in the error shape
            await self.app(scope, receive, send)
            return
        scope[SCOPE_KEY] = snap
        tags = None
        conditional_on_date = False
        for name, value in scope["headers"]:
            if name == b"if-none-match":
                tags = _tags(value.decode("latin-1"))
            elif name == b"if-modified-since":
                conditional_on_date = True
        found = self._known(state, snap, template, slug, path, scope["query_string"], tags is not None)
        if found is not None:
            etag, last_modified_http, body = found
            if tags is not None and etag in tags and "*" not in tags:
                scope["route"] = _LABELS[template]
                await send({"type": "http.response.start", "status": 304,
                            "headers": _raw_headers(etag, last_modified_http)})
                await send({"type": "http.response.body", "body": b""})
                return
            # If-Modified-Since alone, or If-None-Match: *, is for the route to compare
            if body is not None and (not conditional_on_date if tags is None else "*" not in tags):
                scope["route"] = _LABELS[template]
                await send({"type": "http.response.start", "status": 200,
                            "headers": _raw_headers(etag, last_modified_http, body)})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)

    @staticmethod
    def _known(state, snap: Snapshot, template: str, slug: str | None, path: str, query_string: bytes,
               want_validators: bool) -> tuple[str, str | None, bytes | None] | None:
        """The ETag, Last-Modified and body of a 200 for this exact request. The body where the snapshot
        holds it (a resource as built; a list or field selection once built, see ``respond``); else, when
        ``want_validators``, the validators alone, derived without building the body. None where only the
        route can tell (e.g. a query string on a resource that takes none, which is refused)."""
        if template in ("/taxonomy", "/applications"):
            if query_string:
                return None
            res = snap.taxonomy if template == "/taxonomy" else snap.applications
            return res.etag, res.last_modified_http, res.body
        if template == "/techniques/{slug}":
            entry = snap.entries.get(slug or "")
            if entry is None:
                return None
            if not query_string:
                return entry.resource.etag, entry.resource.last_modified_http, entry.resource.body
        held = snap.responses.get((path, query_string))
        if held is not None or not want_validators:
            return held
        if template == "/techniques":
            return list_etag(state, snap, template, query_string), snap.last_modified_http, None
        res = entry.resource
        return derived_etag(res.etag, query_string.decode("latin-1")), res.last_modified_http, None
