"""The OpenAPI document states what the server accepts, including what depends on the settings.

FastAPI builds the document from the routes; this module completes it once, when it is first asked for:

- every operation documents 400 (unknown query parameters are refused on every route) and, where it
  takes parameters or a body, 422 (a value of the wrong type or outside its bounds);
- ``limit`` carries its bounds (1 .. ``page_size_max``);
- ``PATCH /techniques/{slug}`` carries the JSON Schema its body is checked against, with the text
  limits of the settings (``service.catalog.edits``).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .catalog import edits
from .errors import ERROR_SCHEMA
from .settings import Settings

_METHODS = ("get", "put", "post", "patch", "delete", "head", "options")


def install(app: FastAPI) -> None:
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            complete(build(), app.state.settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _bound_integer(schema: dict[str, Any], minimum: int, maximum: int) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "integer":
            branch["minimum"] = minimum
            branch["maximum"] = maximum


def complete(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    for path, item in doc.get("paths", {}).items():
        for method in _METHODS:
            op = item.get(method)
            if op is None:
                continue
            responses = op.setdefault("responses", {})
            responses.setdefault("400", {"description": "Unknown query parameter, or a value the operation "
                                                        "cannot use"})
            if op.get("parameters") or op.get("requestBody"):
                responses.setdefault("422", {"description": "A parameter or body of the wrong type or outside "
                                                            "its bounds"})
            html = "text/html" in responses.get("200", {}).get("content", {})
            for status in ("400", "422"):
                if status in responses:  # errors raised before the route runs are JSON, even on HTML pages
                    content = responses[status].setdefault("content", {})
                    content.setdefault("application/json", dict(ERROR_SCHEMA["content"]["application/json"]))
                    if html and status == "400":  # a page's own refusals are pages
                        content.setdefault("text/html", {"schema": {"type": "string"}})
            for param in op.get("parameters", []):
                if param.get("name") == "limit" and param.get("in") == "query":
                    _bound_integer(param.setdefault("schema", {}), 1, settings.page_size_max)
            if method == "patch" and path == "/techniques/{slug}":
                for media in op.get("requestBody", {}).get("content", {}).values():
                    media["schema"] = edits.patch_schema(settings)
    return doc
