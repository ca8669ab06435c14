"""Schemathesis hooks for fuzzing the service (loaded with SCHEMATHESIS_HOOKS=tests.fuzz.hooks).

- Serializers let the fuzzer send bodies to ``POST /references``, whose request body is documented as
  text in the BibTeX and RIS media types: a generated string goes on the wire as UTF-8, anything else
  (negative data) as its JSON text. The document names the text formats (``format: bibtex`` / ``ris``);
  the strategies below generate valid files in them (any title, names, year), so positive cases are
  files the import must accept.
- A paging cursor is an opaque token: the OpenAPI document gives its alphabet and length, but only a
  ``next_cursor`` the server issued is valid, for the sort it was issued for. In positive cases a
  generated cursor is therefore replaced by a well-formed one for the case's effective sort, with a key
  derived from the generated text, so paging from arbitrary positions is exercised too. Negative cases
  keep whatever was generated.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import schemathesis
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

PAGED = {"/techniques", "/"}


def _as_text(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass")
    return json.dumps(value, default=str).encode()


@schemathesis.serializer("application/x-bibtex", "text/x-bibtex", "application/x-biblatex")
def bibtex(ctx, value):
    return _as_text(value)


@schemathesis.serializer("application/x-research-info-systems")
def ris(ctx, value):
    return _as_text(value)


def issued_cursor(sort: str, seed: str) -> str:
    """A cursor as the server issues them ([sort, key, slug], base64url without padding; see
    service.catalog.query), with a key of the sort column's type derived from ``seed``."""
    number = int.from_bytes(hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()[:4], "big")
    if sort in ("year", "-year"):
        key: Any = 1990 + number % 40
    elif sort == "relevance":
        key = -(number % 1000) / 100.0
    else:
        key = seed[:40]
    raw = json.dumps([sort, key, seed[:20].lower()], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@schemathesis.hook
def map_case(context, case):
    query = case.query
    meta = case.meta
    if not query or "cursor" not in query or case.operation.path not in PAGED or meta is None:
        return case
    if not meta.generation.mode.is_positive or not isinstance(query["cursor"], str) or not query["cursor"]:
        return case
    q = query.get("q")
    has_q = isinstance(q, str) and q.strip() != ""
    sort = query.get("sort") if case.operation.path == "/techniques" else None
    sort = sort or ("relevance" if has_q else "name")
    if sort == "relevance" and not has_q:
        sort = "slug"  # what the server pages by when there is no search
    query["cursor"] = issued_cursor(str(sort), query["cursor"])
    return case


# --- valid BibTeX and RIS texts for the body formats of POST /references ---------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyzéüøß"
_word = st.text(alphabet=_LETTERS, min_size=1, max_size=10)
_name = _word.map(lambda w: w[0].upper() + w[1:])
_title = st.lists(_word | _name, min_size=1, max_size=8).map(" ".join)
_year = st.integers(1900, 2030).map(str)
_authors = st.lists(st.tuples(_name, _name), min_size=1, max_size=4)


def _key(*parts: str) -> str:
    """The same reference always gets the same key (a re-import is 'unchanged', never a conflict)."""
    return "fuzz" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@st.composite
def bibtex_text(draw) -> str:
    title, year, authors = draw(_title), draw(_year), draw(_authors)
    journal = draw(st.none() | _title)
    names = " and ".join(f"{family}, {given}" for family, given in authors)
    fields = [("title", title), ("author", names), ("year", year)] + ([("journal", journal)] if journal else [])
    body = ",\n".join(f"  {k} = {{{v}}}" for k, v in fields)
    kind = "article" if journal else "misc"
    return f"@{kind}{{{_key(kind, *(v for _, v in fields))},\n{body}\n}}\n"


@st.composite
def ris_text(draw) -> str:
    title, year, authors = draw(_title), draw(_year), draw(_authors)
    lines = ["TY  - JOUR", f"TI  - {title}", *(f"AU  - {family}, {given}" for family, given in authors), f"PY  - {year}"]
    if journal := draw(st.none() | _title):
        lines.append(f"T2  - {journal}")
    return "\r\n".join([*lines, "ER  - ", ""])


schemathesis.openapi.format("bibtex", bibtex_text())
schemathesis.openapi.format("ris", ris_text())


# --- negative cases whose mutation does not survive the trip to the server ----------------------------

def _coerce(text: str, schema: dict[str, Any]) -> Any:
    """A query string value as the type the schema names (a query string only carries text)."""
    types = {b.get("type") for b in schema.get("anyOf", [schema])}
    if "integer" in types and re.fullmatch(r"-?\d+", text):
        return int(text)
    if "boolean" in types and text in ("true", "false"):
        return text == "true"
    return text


def _wire_query_is_valid(case, response) -> bool:
    """Whether the query string the server received satisfies the document (and there was no body)."""
    request = response.request
    if request.body or case.operation.path_parameters:
        return False
    sent = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
    params = {p.name: p.definition for p in case.operation.query}
    if set(sent) - set(params):
        return False
    for name, definition in params.items():
        schema = definition.get("schema", {})
        if name not in sent:
            if definition.get("required"):
                return False
            continue
        values = sent[name]
        is_array = any(b.get("type") == "array" for b in schema.get("anyOf", [schema]))
        if is_array:
            items = next(b for b in schema.get("anyOf", [schema]) if b.get("type") == "array").get("items", {})
            value: Any = [_coerce(v, items) for v in values]
        elif len(values) == 1:
            value = _coerce(values[0], schema)
        else:
            return False
        if not Draft202012Validator(schema).is_valid(value):
            return False
    return True


# --- rules that JSON Schema cannot state -------------------------------------------------------------------

SEARCH_PATHS = {"/", "/techniques", "/export", "/export/notes.zip"}


def _json(response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:
        return None


def _refused_search_syntax(case, response) -> bool:
    """A 400 for the search expression itself: the FTS5 query grammar (quotes, NEAR, prefix*, operators)
    has no JSON Schema; the document describes it in words."""
    if response.status_code != 400 or case.operation.path not in SEARCH_PATHS:
        return False
    body = _json(response)
    if isinstance(body, dict):
        return (body.get("error", {}).get("details") or {}).get("parameter") == "q"
    return case.operation.path == "/" and b"not valid search syntax" in response.content


def _refused_formula(case, response) -> bool:
    """A 422 whose only problems are the formula rules no schema states: LaTeX that parses, legend
    symbols that are distinct (checked against the whole record, after the published schema passed)."""
    if response.status_code != 422 or case.operation.path != "/techniques/{slug}" or case.method.upper() != "PATCH":
        return False
    error = (_json(response) or {}).get("error", {})
    problems = (error.get("details") or {}).get("problems") or []
    return (error.get("message", "").startswith("the change breaks the rules") and bool(problems)
            and all(p.get("field") in ("formula.latex", "formula.legend") for p in problems))


def _refused_comparison_size(case, response) -> bool:
    """/compare takes 2 to 6 techniques across two parameters (slugs and slug): a count over both, which
    no schema of either parameter states."""
    return (case.operation.path == "/compare" and response.status_code == 400
            and b"techniques to compare" in response.content)


@schemathesis.hook
def filter_failure(context, failure, case, response):
    """Keep every failure except
    - ST201 ("schema-violating request accepted") for a request that reached the server valid: a query
      value mutated into an object or a list of one item is the same text on the wire as a valid one,
      so the server cannot (and should not) tell them apart;
    - ST202 ("schema-valid request rejected") when the refusal is one of the rules above that JSON Schema
      cannot express (each is stated in the parameter's or operation's description)."""
    code = getattr(failure, "code", None)
    if code == "ST201":
        return not _wire_query_is_valid(case, response)
    if code == "ST202":
        return not (_refused_search_syntax(case, response) or _refused_formula(case, response)
                    or _refused_comparison_size(case, response))
    return True
