"""Malformed requests get a 4xx in the error shape, never a 5xx, and the OpenAPI document states what
the server accepts: the requests that once failed (search syntax, deep JSON, oversize texts, an empty
Bearer token, long client values quoted back, 405 without PATCH in Allow, schema-valid values refused),
and the security headers of every page. The run API has its own file (test_malformed_runs.py)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from service.auth import hash_key
from service.main import create_app
from tests.conftest import make_settings

KEY = "atlas_malformed-requests-key-0123456789"
WRITE = {"Authorization": f"Bearer {KEY}"}
MERGE = {**WRITE, "Content-Type": "application/merge-patch+json"}
SLUG = "squeeze-and-excitation"
LIMITS = {"max_name_chars": 60, "max_item_chars": 300, "max_text_chars": 1200, "max_list_items": 6}
DEEP = "[" * 1100 + "]" * 1100


@pytest.fixture(scope="module")
def app_client(tmp_path_factory, backend):
    settings = make_settings(tmp_path_factory.mktemp("malformed"), backend, api_keys=f"editor:write:{hash_key(KEY)}",
                             **LIMITS)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text[:500]
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    return body["error"]


def _operation(client, path: str, method: str) -> dict:
    return client.get("/openapi.json").json()["paths"][path][method]


def _param_schema(client, path: str, method: str, name: str) -> dict:
    return next(p["schema"] for p in _operation(client, path, method)["parameters"] if p["name"] == name)


def _valid(schema: dict, value) -> bool:
    return Draft202012Validator(schema).is_valid(value)


# --- search syntax -----------------------------------------------------------------------------------

@pytest.mark.parametrize("q", ["*", "*a", "^", "(", "a OR", "NEAR(", "AND", "\x00"])
@pytest.mark.parametrize("path", ["/techniques", "/export", "/export/notes.zip"])
def test_search_syntax_errors_are_400(app_client, backend, path, q):
    resp = app_client.get(path, params={"q": q})
    if backend == "postgresql":  # websearch_to_tsquery reads any text; there is no syntax to refuse
        assert resp.status_code in (200, 400), resp.text[:300]
        return
    err = _error(resp, 400)
    assert err["details"]["parameter"] == "q" and "search" in err["message"]


def test_search_syntax_error_on_the_index_page_is_an_html_400(app_client, backend):
    resp = app_client.get("/", params={"q": "*"})
    if backend == "postgresql":
        assert resp.status_code == 200
        return
    assert resp.status_code == 400 and resp.headers["content-type"].startswith("text/html")
    assert "not valid search syntax" in resp.text


# --- PATCH bodies -------------------------------------------------------------------------------------

def test_deeply_nested_patch_is_400(app_client):
    err = _error(app_client.patch(f"/techniques/{SLUG}", content='{"summary": ' + DEEP + "}", headers=MERGE), 400)
    assert "deeper" in err["message"] or "depth" in err["message"]


@pytest.mark.parametrize("body,status,mentions", [
    (b"null", 422, "JSON object"),
    (b"[]", 422, "JSON object"),
    (b'{"colour": "blue"}', 422, "colour"),
    (b'{"summary": ', 400, "JSON"),
    (b"\xff\xfe", 400, "UTF-8"),
    (b'{"name": "\\ud800x"}', 400, "JSON"),  # a lone surrogate cannot be stored
    (b'{"summary": NaN}', 400, "JSON"),
    (b'{"name": null}', 422, "name"),
])
def test_malformed_patch_bodies(app_client, body, status, mentions):
    err = _error(app_client.patch(f"/techniques/{SLUG}", content=body, headers=MERGE), status)
    assert mentions in err["message"] + json.dumps(err["details"])


def _patch_limit_cases():
    summary = "A summary long enough for the record rules, " * 3
    return [
        ({"name": "N" * (LIMITS["max_name_chars"] + 1)}, "name"),
        ({"summary": "s" * (LIMITS["max_text_chars"] + 1)}, "summary"),
        ({"strengths": ["a concrete strength of it " * 20, "x" * (LIMITS["max_item_chars"] + 1)]}, "strengths.1"),
        ({"aliases": ["alias"] * (LIMITS["max_list_items"] + 1)}, "aliases"),
        ({"formula": {"latex": "x" * (LIMITS["max_text_chars"] + 1)}}, "formula.latex"),
        ({"formula": {"legend": [{"symbol": "x", "meaning": "m" * (LIMITS["max_item_chars"] + 1)}]}},
         "formula.legend.0.meaning"),
        ({"complexity": {"note": "n" * (LIMITS["max_text_chars"] + 1)}}, "complexity.note"),
        ({"survey_note": "n" * (LIMITS["max_text_chars"] + 1)}, "survey_note"),
        ({"applications": ["a" * 97]}, "applications.0"),
        ({"summary": " " + summary}, "summary"),  # would be stripped below its minimum length
        ({"summary": summary + "\x00"}, "summary"),  # PostgreSQL text cannot hold NUL
        ({"formula": {"colour": "red"}}, "formula.colour"),
    ]


@pytest.mark.parametrize("patch,field", _patch_limit_cases())
def test_text_limits_and_shapes_are_422_and_nothing_is_written(app_client, patch, field):
    before = app_client.get(f"/techniques/{SLUG}").json()
    err = _error(app_client.patch(f"/techniques/{SLUG}", json=patch, headers=WRITE), 422)
    assert field in [p["field"] for p in err["details"]["problems"]]
    assert len(err["message"]) < 500
    assert app_client.get(f"/techniques/{SLUG}").json() == before


def test_the_published_patch_schema_is_the_one_enforced(app_client):
    """The same patches that the server refuses are refused by the schema in the OpenAPI document, and a
    patch at the limits is accepted by both."""
    op = _operation(app_client, "/techniques/{slug}", "patch")
    schema = op["requestBody"]["content"]["application/merge-patch+json"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["summary"]["maxLength"] == LIMITS["max_text_chars"]
    for patch, _ in _patch_limit_cases():
        assert not _valid(schema, patch), patch
    at_limit = {"summary": "s" * LIMITS["max_text_chars"], "name": "N" * LIMITS["max_name_chars"]}
    assert _valid(schema, at_limit)
    resp = app_client.patch(f"/techniques/{SLUG}", json=at_limit, headers=WRITE)
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["summary"] == at_limit["summary"]


def test_a_10mb_summary_is_refused_and_listing_stays_small(app_client):
    size_before = len(app_client.get("/techniques", params={"limit": 100}).content)
    big = app_client.patch("/techniques/cbam", json={"summary": "x" * 10_000_000}, headers=WRITE)
    assert big.status_code in (413, 422) and len(big.content) < 4000  # over the body limit, or over the text limit
    err = _error(app_client.patch("/techniques/cbam", json={"summary": "x" * 2_000_000}, headers=WRITE), 422)
    assert len(json.dumps(err)) < 4000 and err["details"]["problems"][0]["field"] == "summary"
    assert len(app_client.get("/techniques", params={"limit": 100}).content) == size_before


# --- authentication, quoting, Allow ----------------------------------------------------------------------

@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer    "])
def test_empty_bearer_token_says_so(app_client, header):
    err = _error(app_client.patch(f"/techniques/{SLUG}", json={}, headers={"Authorization": header}), 401)
    assert "empty" in err["message"] and "unsupported" not in err["message"]


def test_unsupported_scheme_is_named_shortly(app_client):
    err = _error(app_client.patch(f"/techniques/{SLUG}", json={}, headers={"Authorization": "Basic" + "A" * 5000}),
                 401)
    assert "unsupported authorization scheme" in err["message"] and len(err["message"]) < 200


@pytest.mark.parametrize("method,path,kwargs", [
    ("get", "/techniques", {"params": {"x" * 20_000: "1"}}),
    ("get", "/techniques", {"params": {"fields": "slug," + "y" * 20_000}}),
    ("get", "/techniques/" + "a" * 90, {}),
    ("get", "/t/" + "b" * 190, {}),
    ("get", "/export", {"params": {"locale": "l" * 16, "format": "text"}}),
    ("get", "/techniques/cbam/citation", {"headers": {"Accept": "application/x-" + "z" * 6000}}),
    ("patch", f"/techniques/{SLUG}", {"json": {"k" * 100_000: 1}, "headers": WRITE}),
    ("patch", f"/techniques/{SLUG}", {"content": b"{}", "headers": {**WRITE, "Content-Type": "text/" + "p" * 3000}}),
    ("post", "/techniques/cbam/run", {"json": {"inputs": {}, "hyperparameters": {"h" * 10_000_000: 1}}}),
])
def test_errors_quote_only_a_short_prefix_of_client_input(app_client, method, path, kwargs):
    resp = getattr(app_client, method)(path, **kwargs)
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert len(resp.content) < 8000, len(resp.content)
    if resp.headers["content-type"].startswith("application/json"):
        err = resp.json()["error"]
        assert len(err["message"]) <= 403
        assert not re.search(r"([a-z])\1{250}", json.dumps(err))  # no long run of the sent value


def test_405_allow_lists_every_method_of_the_path(app_client):
    for method in ("put", "delete", "options"):
        resp = app_client.request(method.upper(), f"/techniques/{SLUG}")
        err = _error(resp, 405)
        assert set(resp.headers["allow"].replace(" ", "").split(",")) == {"GET", "PATCH"}
        assert err["details"]["allow"] == ["GET", "PATCH"]
    assert _error(app_client.delete("/references"), 405)["details"]["allow"] == ["POST"]
    static = app_client.post("/static/atlas.css")
    assert _error(static, 405)["details"]["allow"] == ["GET", "HEAD"] and static.headers["allow"] == "GET, HEAD"


# --- what the OpenAPI document says matches what the server does ----------------------------------------

def test_every_operation_documents_400_and_error_bodies_have_a_schema(app_client):
    doc = app_client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            assert "400" in op["responses"], (method, path)
            assert "application/json" in op["responses"]["400"]["content"], (method, path)
    schema = doc["paths"]["/techniques"]["get"]["responses"]["400"]["content"]["application/json"]["schema"]
    assert _valid(schema, app_client.get("/techniques", params={"colour": "x"}).json())


def test_limit_bounds_are_documented_and_enforced(app_client):
    for path in ("/techniques", "/"):
        schema = _param_schema(app_client, path, "get", "limit")
        integer = next(b for b in schema["anyOf"] if b.get("type") == "integer")
        assert integer["minimum"] == 1 and integer["maximum"] == app_client.app.state.settings.page_size_max
    assert app_client.get("/", params={"limit": -608}).status_code == 400
    assert app_client.get("/", params={"limit": 1}).status_code == 200
    assert app_client.get("/techniques", params={"limit": 101}).status_code == 400


def test_fields_pattern_is_documented_and_enforced(app_client):
    schema = _param_schema(app_client, "/techniques/{slug}", "get", "fields")
    for value, ok in [("name,formula", True), ("", True), ("colour", False), ("name, year", False),
                      ("name,", False)]:
        assert _valid(schema, value) == ok, value
        resp = app_client.get(f"/techniques/{SLUG}", params={"fields": value})
        assert resp.status_code == (200 if ok else 400), (value, resp.text[:200])


def _cursor(parts) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")


@pytest.mark.parametrize("cursor,sort", [
    ("abc!", "name"), ("A", "name"), (_cursor(["name", {"a": 1}, "x"]), "name"), (_cursor(["name", "x", 5]), "name"),
    (_cursor(["name", "x"]), "name"), (_cursor(["name", ["x"], "x"]), "name"),
    (_cursor(["year", "nineteen", "x"]), "year"), (_cursor(["year", 10**30, "x"]), "year"),
    (_cursor(["year", True, "x"]), "year"), (_cursor(["year", 2019.5, "x"]), "year"),
])
def test_forged_cursors_are_400_not_500(app_client, cursor, sort):
    err = _error(app_client.get("/techniques", params={"cursor": cursor, "sort": sort}), 400)
    assert err["details"]["parameter"] == "cursor"
    if sort == "name":  # the index page pages by name
        assert app_client.get("/", params={"cursor": cursor}).status_code == 400


def test_cursor_pattern_is_documented(app_client):
    for path in ("/techniques", "/"):
        schema = _param_schema(app_client, path, "get", "cursor")
        assert _valid(schema, "WyJuYW1lIiwiQSIsImEiXQ") and not _valid(schema, "abc!")


def test_citation_parameter_values_are_documented(app_client):
    for name, good, bad in [("locale", "en-GB", "xx-YY"), ("style", "ieee", "fancy"), ("format", "ris", "docx")]:
        schema = _param_schema(app_client, "/techniques/{slug}/citation", "get", name)
        assert _valid(schema, good) and not _valid(schema, bad)
        params = {name: good, **({"format": "text"} if name != "format" else {})}
        assert app_client.get("/techniques/cbam/citation", params=params).status_code == 200
        assert app_client.get("/techniques/cbam/citation", params={**params, name: bad}).status_code == 400


def test_the_documented_run_examples_work(app_client):
    for path in ("/run", "/techniques/{slug}/run"):
        example = _operation(app_client, path, "post")["requestBody"]["content"]["application/json"]["example"]
        resp = app_client.post(path.replace("{slug}", SLUG), json=example)
        assert resp.status_code == 200, (path, resp.text[:300])


def test_nul_in_an_import_is_400(app_client):
    body = b"@misc{k, title={A\x00B}, author={X, Y}, year={2020}}"
    err = _error(app_client.post("/references", content=body,
                                 headers={**WRITE, "Content-Type": "application/x-bibtex"}), 400)
    assert "NUL" in err["message"]


# --- security headers ----------------------------------------------------------------------------------

class _Inline(HTMLParser):
    """Collects what a strict Content-Security-Policy would block: inline scripts, styles, handlers."""

    def __init__(self):
        super().__init__()
        self.blocked: list[str] = []
        self._script = False

    def handle_starttag(self, tag, attrs):
        names = {k for k, _ in attrs}
        if tag == "script":
            self._script = "src" not in names
        if tag == "style":
            self.blocked.append("<style>")
        if "style" in names:
            self.blocked.append(f"style attribute on <{tag}>")
        self.blocked += [f"{k} on <{tag}>" for k in names if k.startswith("on")]
        self.blocked += [f"javascript: URL on <{tag}>" for k, v in attrs if v and v.strip().lower().startswith("javascript:")]

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = False

    def handle_data(self, data):
        if self._script and data.strip():
            self.blocked.append("inline <script>")


@pytest.mark.parametrize("path", ["/", f"/t/{SLUG}", "/t/no-such-technique", "/docs", "/?q=*"])
def test_pages_carry_security_headers_and_nothing_inline(app_client, path):
    resp = app_client.get(path)
    assert resp.headers["content-type"].startswith("text/html")
    csp = {d.split()[0]: d.split()[1:] for d in resp.headers["content-security-policy"].split("; ")}
    assert csp["default-src"] == ["'self'"] and csp["script-src"] == ["'self'"] and csp["style-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"] and csp["object-src"] == ["'none'"]
    assert resp.headers["x-content-type-options"] == "nosniff"
    assert resp.headers["x-frame-options"] == "DENY"
    assert resp.headers["referrer-policy"] == "no-referrer"
    parser = _Inline()
    parser.feed(resp.text)
    assert parser.blocked == []
    for src in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', resp.text):
        assert src.startswith("/"), src  # nothing from another origin
