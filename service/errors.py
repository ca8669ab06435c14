"""One JSON error shape for every 4xx/5xx: {"error": {"code", "message", "details"}}.

Whatever raised the error, the response quotes at most a short prefix of anything the client sent:
``quote()`` is for messages, and every error body is clipped (long strings, long lists, deep nesting)
before it is written, so an error can never be much larger than the limits below.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

log = logging.getLogger("service.errors")

_CODES = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 406: "not_acceptable", 409: "conflict", 412: "precondition_failed",
          413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid", 429: "too_many_requests",
          500: "internal_error", 503: "unavailable", 504: "timeout"}

QUOTE_CHARS = 60  # characters of a client value quoted in a message
MESSAGE_CHARS = 400  # an error message is never longer than this
DETAIL_CHARS = 200  # a string inside details
DETAIL_ITEMS = 50  # items of a list (members of an object) inside details
DETAIL_DEPTH = 6


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None, details: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.details = details
        self.headers = headers


def quote(value: Any, limit: int = QUOTE_CHARS) -> str:
    """A client value for a message: its repr, cut to a short prefix that says how long it was."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return repr(text[:limit]) + f"... ({len(text)} characters)"


def clip(value: Any, depth: int = 0) -> Any:
    """``value`` with long strings cut, long lists and objects shortened and deep nesting dropped."""
    if isinstance(value, str):
        return value if len(value) <= DETAIL_CHARS else value[:DETAIL_CHARS] + "..."
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if depth >= DETAIL_DEPTH:
        return None
    if isinstance(value, dict):
        items = list(value.items())
        out = {clip(str(k))[:DETAIL_CHARS]: clip(v, depth + 1) for k, v in items[:DETAIL_ITEMS]}
        if len(items) > DETAIL_ITEMS:
            out["..."] = f"{len(items) - DETAIL_ITEMS} more"
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        items = list(value)
        out_list = [clip(v, depth + 1) for v in items[:DETAIL_ITEMS]]
        if len(items) > DETAIL_ITEMS:
            out_list.append(f"... {len(items) - DETAIL_ITEMS} more")
        return out_list
    return clip(str(value), depth)


def error_body(code: str, message: str, details: Any = None) -> dict:
    if len(message) > MESSAGE_CHARS:
        message = message[:MESSAGE_CHARS] + "..."
    return {"error": {"code": code, "message": message, "details": clip(details)}}


def error_response(status: int, message: str, *, code: str | None = None, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(code or _CODES.get(status, "error"), message, details),
                        status_code=status, headers=headers)


ERROR_BODY_SCHEMA = {
    "type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "details"], "properties": {
            "code": {"type": "string", "description": "stable and machine-readable, e.g. not_found"},
            "message": {"type": "string", "maxLength": MESSAGE_CHARS + 3, "description": "what to change"},
            "details": {"description": "structured facts about the problem (fields, allowed values), or null"}}}},
}
ERROR_SCHEMA = {
    "description": "Error",
    "content": {"application/json": {"schema": ERROR_BODY_SCHEMA,
                                     "example": error_body("not_found", "no technique 'squeeze-excitation'",
                                                           {"did_you_mean": ["squeeze-and-excitation"]})}},
}


def _endpoints(routes, prefix: str = ""):
    """(path regex, methods) of every endpoint, through the routers the app includes."""
    for route in routes:
        router = getattr(route, "original_router", None)
        if router is not None:
            context = getattr(route, "include_context", None)
            yield from _endpoints(router.routes, prefix + (getattr(context, "prefix", "") or ""))
        elif getattr(route, "methods", None) and hasattr(route, "path_regex"):
            yield (compile_path(prefix + route.path)[0] if prefix else route.path_regex), route.methods


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers on this path (for the Allow header of a 405)."""
    path = request.scope.get("path", "")
    methods: set[str] = set()
    for regex, route_methods in _endpoints(request.app.router.routes):
        if regex.match(path):
            methods |= set(route_methods)
    return sorted(methods)


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_req: Request, exc: ApiError):
        return error_response(exc.status, exc.message, code=exc.code, details=exc.details, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError):
        details = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body") or None,
                    "problem": e.get("msg"), "input": _safe(e.get("input"))} for e in exc.errors()]
        where = ", ".join(dict.fromkeys(clip(d["field"] or "request") for d in details))
        return error_response(422, f"invalid request: {where}", details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(req: Request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else _CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405:
            allow = allowed_methods(req) or ["GET", "HEAD"]  # no route: the static files, which only serve reads
            headers["Allow"] = ", ".join(allow)
            msg = f"{req.method} is not supported here; use {', '.join(allow)}"
            return error_response(405, msg, details={"allow": allow}, headers=headers)
        return error_response(exc.status_code, msg, headers=headers or None)

    @app.exception_handler(Exception)
    async def _unhandled(req: Request, exc: Exception):
        log.exception("unhandled error on %s %s", req.method, req.url.path)
        return error_response(500, "internal error; the request id in the logs identifies it")


def _safe(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value if not isinstance(value, str) or len(value) <= DETAIL_CHARS else value[:DETAIL_CHARS] + "..."
    return None
