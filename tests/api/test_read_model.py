"""Catalogue reads from the in-memory read model through the real app: validators answer conditional
requests before any other work, and every write is seen by the next read."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service.catalog import query
from service.main import create_app
from tests.conftest import make_settings

KEY = "read-model-key"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/merge-patch+json"}


@pytest.fixture
def app_client(tmp_path, backend):
    settings = make_settings(tmp_path, backend, api_keys=f"t:write:{hashlib.sha256(KEY.encode()).hexdigest()}")
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def test_a_current_etag_gets_304_without_a_search(app_client, monkeypatch):
    url = "/techniques?q=attention&limit=5&fields=slug,name"
    first = app_client.get(url)
    assert first.status_code == 200 and first.json()["items"]

    def no_search(*_a, **_k):
        raise AssertionError("the engine was asked although the client's copy is current")

    monkeypatch.setattr(app_client.app.state.catalogue, "search", no_search)
    monkeypatch.setattr(query, "search_ranks", no_search)
    again = app_client.get(url, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert again.headers["last-modified"] == first.headers["last-modified"]
    metrics = app_client.get("/metrics").text
    assert 'atlas_http_requests_total{method="GET",route="/techniques",status="304"}' in metrics


def test_validators_per_request(app_client):
    full = app_client.get("/techniques/cbam")
    part = app_client.get("/techniques/cbam", params={"fields": "name,year"})
    assert part.json() == {k: full.json()[k] for k in ("name", "year")}
    assert part.headers["etag"] != full.headers["etag"]
    assert app_client.get("/techniques/cbam", params={"fields": "name,year"},
                          headers={"If-None-Match": part.headers["etag"]}).status_code == 304
    # another request's ETag is not this one's
    assert app_client.get("/techniques/cbam", headers={"If-None-Match": part.headers["etag"]}).status_code == 200
    a = app_client.get("/techniques", params={"subcategory": "channel"})
    b = app_client.get("/techniques", params={"subcategory": "spatial"})
    assert a.headers["etag"] != b.headers["etag"]
    assert app_client.get("/techniques", params={"subcategory": "spatial"},
                          headers={"If-None-Match": a.headers["etag"]}).status_code == 200
    since = app_client.get("/techniques", params={"subcategory": "channel"},
                           headers={"If-Modified-Since": a.headers["last-modified"]})
    assert since.status_code == 304


def test_a_wildcard_or_an_etag_never_hides_a_bad_request(app_client):
    etag = app_client.get("/techniques").headers["etag"]
    for headers in ({"If-None-Match": "*"}, {"If-None-Match": etag}):
        assert app_client.get("/techniques", params={"limit": 0}, headers=headers).status_code in (400, 422)
        assert app_client.get("/techniques", params={"colour": "red"}, headers=headers).status_code == 400
        assert app_client.get("/techniques/no-such-technique", headers=headers).status_code == 404
    assert app_client.get("/taxonomy", params={"x": "1"},
                          headers={"If-None-Match": app_client.get("/taxonomy").headers["etag"]}).status_code == 400


def test_a_write_is_read_at_once_and_old_validators_stop_matching(app_client):
    listing = app_client.get("/techniques", params={"fields": "slug,name", "limit": 100})
    tax = app_client.get("/taxonomy")
    one = app_client.get("/techniques/cbam")
    r = app_client.patch("/techniques/cbam", content=json.dumps({"name": "CBAM (renamed)"}), headers=AUTH)
    assert r.status_code == 200, r.text
    after = app_client.get("/techniques", params={"fields": "slug,name", "limit": 100},
                           headers={"If-None-Match": listing.headers["etag"]})
    assert after.status_code == 200
    assert {t["slug"]: t["name"] for t in after.json()["items"]}["cbam"] == "CBAM (renamed)"
    got = app_client.get("/techniques/cbam", headers={"If-None-Match": one.headers["etag"]})
    assert got.status_code == 200 and got.json()["name"] == "CBAM (renamed)"
    assert got.headers["etag"] == r.headers["etag"]
    # the taxonomy does not name techniques by name: its content and so its ETag stay
    assert app_client.get("/taxonomy").headers["etag"] == tax.headers["etag"]
    names = [t["name"] for t in app_client.get("/techniques", params={"limit": 100}).json()["items"]]
    assert names == sorted(names) and "CBAM (renamed)" in names


def test_search_syntax_errors_are_400s(app_client, backend):
    for q in ('"unterminated', "*", "NOT attention"):
        r = app_client.get("/techniques", params={"q": q})
        if backend == "sqlite":  # FTS5 refuses these; PostgreSQL's websearch syntax accepts any text
            assert r.status_code == 400 and r.json()["error"]["details"]["parameter"] == "q", (q, r.text)
        else:
            assert r.status_code == 200
    assert app_client.get("/techniques", params={"q": "attention"}).json()["items"]  # the connection survives


def test_an_import_is_read_at_once(app_client):
    before = app_client.get("/techniques/cbam")
    citekey = before.json()["citation"]["citekey"]
    with app_client.app.state.engine.connect() as conn:
        bib = conn.execute(text('SELECT bibtex FROM "references" WHERE citekey = :k'), {"k": citekey}).scalar_one()
    title = before.json()["citation"]["title"]
    line = next(x for x in bib.splitlines() if x.strip().startswith("title"))
    changed = bib.replace(line, line.rstrip().removesuffix(",").removesuffix("}") + " Revisited},", 1)
    assert changed != bib
    r = app_client.post("/references", params={"on_conflict": "replace"}, content=changed.encode(),
                        headers={**AUTH, "Content-Type": "application/x-bibtex"})
    assert r.status_code == 200 and r.json()["updated"] == [citekey], r.text
    after = app_client.get("/techniques/cbam", headers={"If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.json()["citation"]["title"] == title + " Revisited"


def _count_pages(monkeypatch) -> list[int]:
    from service.api import techniques

    calls = [0]
    real = techniques.select_page

    def counted(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    monkeypatch.setattr(techniques, "select_page", counted)
    return calls


def test_a_repeated_request_is_answered_from_the_body_built_for_it(app_client, monkeypatch):
    calls = _count_pages(monkeypatch)
    url = "/techniques?q=attention&limit=5&fields=slug,name"
    first = app_client.get(url)
    assert first.status_code == 200 and calls[0] == 1

    def no_search(*_a, **_k):
        raise AssertionError("the engine was asked for a request whose answer is held")

    monkeypatch.setattr(app_client.app.state.catalogue, "search", no_search)
    again = app_client.get(url, headers={"If-None-Match": '"another"'})  # a stale tag does not matter
    assert calls[0] == 1, "the route built the page again"
    assert again.status_code == 200 and again.content == first.content
    for h in ("etag", "last-modified", "cache-control", "content-type", "content-length",
              "x-content-type-options", "content-security-policy"):
        assert again.headers[h] == first.headers[h], h
    # another query string is another request: built by the route, and a bad one is still refused
    assert app_client.get("/techniques?limit=5&fields=slug,name").status_code == 200 and calls[0] == 2
    assert app_client.get(url + "&colour=red").status_code == 400
    # If-Modified-Since alone is compared by the route: 304 for a current copy
    since = app_client.get(url, headers={"If-Modified-Since": first.headers["last-modified"]})
    assert since.status_code == 304
    assert app_client.get(url, headers={"If-None-Match": "*"}).status_code == 304
    metrics = app_client.get("/metrics").text
    assert 'atlas_http_requests_total{method="GET",route="/techniques",status="200"} 3' in metrics


def test_a_write_drops_the_held_bodies(app_client, monkeypatch):
    url = "/techniques?fields=slug,name&limit=100"
    assert {t["slug"]: t["name"] for t in app_client.get(url).json()["items"]}["cbam"] != "CBAM (held?)"
    r = app_client.patch("/techniques/cbam", content=json.dumps({"name": "CBAM (held?)"}), headers=AUTH)
    assert r.status_code == 200, r.text
    assert {t["slug"]: t["name"] for t in app_client.get(url).json()["items"]}["cbam"] == "CBAM (held?)"
    got = app_client.get("/techniques/cbam?fields=name")
    assert got.json() == {"name": "CBAM (held?)"}


def test_no_body_is_held_with_a_zero_budget(tmp_path, monkeypatch):
    settings = make_settings(tmp_path, "sqlite", catalog_response_cache_bytes=0)
    with TestClient(create_app(settings)) as c:
        calls = _count_pages(monkeypatch)
        for _ in range(3):
            assert c.get("/techniques?limit=3").status_code == 200
        assert calls[0] == 3
        assert not c.app.state.catalogue.current().responses.bodies


def test_held_bodies_stay_within_their_budget():
    from service.catalog.snapshot import ResponseCache

    cache, budget = ResponseCache(), 8000
    for i in range(100):
        cache.keep(("/techniques", f"limit={i}".encode()), f'"{i}"', None, b"x" * 700, budget)
        assert cache.size <= budget
        assert cache.get(("/techniques", f"limit={i}".encode())) == (f'"{i}"', None, b"x" * 700)
    assert cache.size == sum(700 + len("/techniques") + len(k[1]) + 200 for k in cache.bodies)
    cache.keep(("/techniques", b"big"), '"b"', None, b"x" * (budget // 8), budget)  # over an eighth: not kept
    assert cache.get(("/techniques", b"big")) is None
