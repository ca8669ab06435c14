"""What ``PATCH /techniques/{slug}`` accepts, as one JSON Schema built from the settings: the OpenAPI
document publishes it and the route checks every patch against it before anything else, so the document
and the server cannot disagree. The rules the schema cannot state (a formula that parses as LaTeX, legend
symbols that are distinct) are checked afterwards with the rest of the record's rules.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from ..models import Application
from ..settings import Settings

# no leading or trailing whitespace (the record rules strip it, so it could only hide a short text) and no
# NUL (PostgreSQL text cannot hold it); "" passes, minLength decides whether it may be empty
# The whitespace class is spelled out (exactly the characters str.strip removes), so that the pattern means
# the same in every regular-expression dialect (\s differs between Python and ECMA-262).
_WS = r"\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
TEXT_PATTERN = rf"^(?![\s\S]*[{_WS}]$)(?:[^{_WS}\x00][^\x00]*)?$"
TAG_PATTERN = r"^[a-z0-9]+(?:-[a-z0-9]+)*$"
TAG_CHARS = Application.__table__.c.tag.type.length  # the database column's width


def patch_schema(settings: Settings) -> dict[str, Any]:
    return _schema(settings.max_name_chars, settings.max_item_chars, settings.max_text_chars, settings.max_list_items)


@lru_cache(maxsize=8)
def _schema(name: int, item: int, text: int, items: int) -> dict[str, Any]:
    def s(min_len: int, max_len: int, nullable: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"type": ["string", "null"] if nullable else "string", "minLength": min_len,
                               "maxLength": max_len, "pattern": TEXT_PATTERN}
        return out

    def points(min_items: int) -> dict[str, Any]:
        return {"type": "array", "minItems": min_items, "maxItems": items, "items": s(15, item)}

    return {
        "type": "object", "additionalProperties": False,
        "description": "the fields to change (JSON merge patch); null removes survey_note or complexity.note",
        "properties": {
            "name": s(2, name),
            "aliases": {"type": "array", "maxItems": items, "items": s(0, name)},
            "summary": s(80, text),
            "strengths": points(2),
            "limitations": points(2),
            "applications": {"type": "array", "minItems": 1, "maxItems": items, "uniqueItems": True,
                             "items": {"type": "string", "maxLength": TAG_CHARS, "pattern": TAG_PATTERN}},
            "formula": {"type": "object", "additionalProperties": False, "properties": {
                "latex": s(3, text),
                "legend": {"type": "array", "minItems": 1, "maxItems": items, "items": {
                    "type": "object", "additionalProperties": False, "required": ["symbol", "meaning"],
                    "properties": {"symbol": s(1, name), "meaning": s(3, item)}}}}},
            "complexity": {"type": "object", "additionalProperties": False, "properties": {
                "time": s(3, item), "memory": s(3, item), "note": s(0, text, nullable=True)}},
            "survey_note": s(0, text, nullable=True),
        },
    }


_TYPES = {"string": str, "array": list, "object": dict, "null": type(None)}


def problems(value: Any, schema: dict[str, Any], field: str = "") -> list[dict[str, Any]]:
    """Every place where ``value`` breaks ``schema`` (the subset of JSON Schema that patch_schema uses)."""
    where = field or "body"
    types = schema.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(isinstance(value, _TYPES[t]) for t in names):
            return [{"field": where, "problem": f"must be {' or '.join(names)}"}]
    out: list[dict[str, Any]] = []
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append({"field": where, "problem": f"at least {schema['minLength']} characters"})
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append({"field": where, "problem": f"at most {schema['maxLength']} characters (got {len(value)})"})
        elif "pattern" in schema and not _regex(schema["pattern"]).search(value):
            out.append({"field": where, "problem": "no leading or trailing whitespace, no NUL character"
                        if schema["pattern"] == TEXT_PATTERN else "lowercase words joined by single hyphens"})
    elif isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append({"field": where, "problem": f"at least {schema['minItems']} item(s)"})
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append({"field": where, "problem": f"at most {schema['maxItems']} items (got {len(value)})"})
            return out
        if schema.get("uniqueItems") and len({repr(v) for v in value}) != len(value):
            out.append({"field": where, "problem": "items must be distinct"})
        for i, item in enumerate(value):
            out += problems(item, schema.get("items", {}), f"{field}.{i}" if field else str(i))
    elif isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            if name not in value:
                out.append({"field": f"{field}.{name}" if field else name, "problem": "required"})
        for name, item in value.items():
            sub = f"{field}.{name}" if field else str(name)
            if name in props:
                out += problems(item, props[name], sub)
            elif schema.get("additionalProperties") is False:
                out.append({"field": sub[:80], "problem": "not a field that can be changed here"})
    return out


@lru_cache(maxsize=16)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
