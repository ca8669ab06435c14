"""Bounded JSON parsing for everything a client sends (bodies, JSON query parameters, headers in
binary formats): size and nesting depth are checked, and every failure is a 400 in the error shape.

The fast parser (orjson) reads standard JSON; the standard library's parser is the fallback only for
what orjson refuses but JSON number extensions allow (NaN, Infinity), and its recursion is bounded by
the same depth check before it runs.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

from .errors import ApiError

MAX_DEPTH = 64  # tensors are rank <= 8; no request object of ours nests deeper than a few levels


def _too_deep(text: bytes, limit: int) -> bool:
    """True when brackets nest deeper than ``limit`` (strings are skipped; a linear scan)."""
    depth = 0
    in_string = False
    escaped = False
    # bytes.translate/find would be faster, but bodies reaching this scan are only the fallback path
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def depth_of(value: Any) -> int:
    """Nesting depth of a parsed value, computed without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, level)
            stack.extend((v, level + 1) for v in item)
    return deepest


def loads(data: bytes | str, *, what: str = "the body", max_depth: int = MAX_DEPTH,
          allow_nonfinite: bool = True) -> Any:
    """Parse ``data`` as JSON or raise a 400 ``ApiError`` that says what was wrong."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc).lower():
            raise _deep(what, max_depth) from None
        if not allow_nonfinite:
            raise ApiError(400, f"{what} is not valid JSON: {_short(str(exc))}") from None
        # NaN / Infinity: only the standard parser accepts them; bound its recursion first
        if _too_deep(data, max_depth):
            raise _deep(what, max_depth) from None
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, ValueError, RecursionError) as exc2:
            raise ApiError(400, f"{what} is not valid JSON: {_short(str(exc2))}") from None
    if depth_of(value) > max_depth:
        raise _deep(what, max_depth)
    return value


def _deep(what: str, limit: int) -> ApiError:
    return ApiError(400, f"{what} nests JSON deeper than {limit} levels", details={"max_depth": limit})


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
