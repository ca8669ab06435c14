"""Imports that LaTeX must not trust are refused; exports of a hand-picked selection; the citation cache
follows the catalogue version (a write is visible in the next export) and is filled at start."""

from __future__ import annotations

import re
import threading

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.api import citations as citations_api
from service.auth import hash_key
from service.catalog.version import catalogue_version
from service.main import create_app
from tests.conftest import make_settings

WRITE_KEY = "atlas_write-key-for-tests-0123456789abcdef"
WRITE = {"Authorization": f"Bearer {WRITE_KEY}", "Content-Type": "application/x-bibtex"}

ENTRY = """@article{{{key},
  title   = {{{title}}},
  author  = {{Doe, Jane}},
  journal = {{Journal of Tests}},
  year    = {{2021}}{extra}
}}
"""


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("lib"), api_keys=f"editor:write:{hash_key(WRITE_KEY)}",
                             max_field_chars=2000)
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def _library_size(client) -> int:
    return client.get("/export", params={"format": "bibtex"}).text.count("\n@")


@pytest.mark.parametrize("field,value,command", [
    ("title", r"Safe \input{/etc/passwd}", r"\input"),
    ("note", r"\immediate\write18{touch /tmp/owned}", r"\immediate"),
    ("title", r"A \catcode`\@=11 trick", r"\catcode"),
    ("title", r"\def\x{y} text", r"\def"),
    ("title", r"\csname input\endcsname{/etc/passwd}", r"\csname"),
    ("title", r"^^5cinput{/etc/passwd}", "^^"),
    ("publisher", r"\openout1=owned.tex", r"\openout"),
])
def test_dangerous_control_sequences_are_refused(app_client, field, value, command):
    before = _library_size(app_client)
    extra = f",\n  {field} = {{{value}}}" if field != "title" else ""
    title = value if field == "title" else "A Harmless Title"
    bib = ENTRY.format(key="doeHarmlessTitle2021", title=title, extra=extra) + ENTRY.format(
        key="doeFineEntry2021", title="Fine Entry", extra="")
    r = app_client.post("/references", content=bib, headers=WRITE)
    assert r.status_code == 422, r.text
    problems = r.json()["error"]["details"]["problems"]
    assert [(p["key"], p["field"]) for p in problems] == [("doeHarmlessTitle2021", field)]
    assert command in problems[0]["message"]
    assert _library_size(app_client) == before  # nothing written, not even the fine entry


def test_accents_and_math_are_still_welcome(app_client):
    bib = ENTRY.format(key="doeAccentsMath2021", title=r"Gr{\"u}n and $\alpha$-{Nets} \textbf{now}",
                       extra=",\n  note = {50\\% of R\\&D}")
    r = app_client.post("/references?dry_run=true", content=bib, headers=WRITE)
    assert r.status_code == 200, r.text


def test_field_length_is_limited(app_client):
    bib = ENTRY.format(key="doeLongTitle2021", title="word " * 500, extra="")
    r = app_client.post("/references", content=bib, headers=WRITE)
    assert r.status_code == 422
    (problem,) = r.json()["error"]["details"]["problems"]
    assert (problem["key"], problem["field"]) == ("doeLongTitle2021", "title")
    assert "2000" in problem["message"]
    ris = "TY  - JOUR\r\nTI  - " + "x" * 2500 + "\r\nAU  - Doe, Jane\r\nPY  - 2021\r\nER  - \r\n"
    r = app_client.post("/references", content=ris,
                        headers={**WRITE, "Content-Type": "application/x-research-info-systems"})
    assert r.status_code == 422 and r.json()["error"]["details"]["problems"][0]["field"] == "TI"


def test_export_of_a_selection(app_client):
    cbam = app_client.get("/techniques/cbam", params={"fields": "citation"}).json()["citation"]["citekey"]
    se = app_client.get("/techniques/squeeze-and-excitation",
                        params={"fields": "citation"}).json()["citation"]["citekey"]
    r = app_client.get("/export", params=[("slug", "cbam"), ("slug", "squeeze-and-excitation"),
                                          ("format", "csl-json"), ("include_survey", "false")])
    assert r.status_code == 200
    assert sorted(i["id"] for i in r.json()) == sorted([cbam, se])
    with_survey = app_client.get("/export", params=[("slug", "cbam"), ("format", "csl-json")]).json()
    assert len(with_survey) == 2 and "hassaninVisualAttentionMethods2022" in {i["id"] for i in with_survey}
    # filters narrow a selection: CBAM is not a hard-attention technique
    narrowed = app_client.get("/export", params=[("slug", "cbam"), ("category", "hard"), ("format", "csl-json"),
                                                 ("include_survey", "false")]).json()
    assert narrowed == []
    missing = app_client.get("/export", params=[("slug", "cbam"), ("slug", "no-such-technique")])
    assert missing.status_code == 404 and missing.json()["error"]["details"]["unknown"] == ["no-such-technique"]
    too_many = app_client.get("/export", params=[("slug", "cbam")] * (citations_api.MAX_SLUGS + 1))
    assert too_many.status_code == 400
    for bad in ("CBAM", "cbam\x00", "a" * 97, "../etc", ""):
        r = app_client.get("/export", params=[("slug", bad)])
        assert r.status_code == 400 and r.json()["error"]["details"]["parameter"] == "slug", bad


def test_index_offers_the_selection_without_inline_script(app_client):
    from service.api.web import mount_static
    from tests.web.html_tree import parse, submission

    mount_static(app_client.app)
    page = app_client.get("/").text
    doc = parse(page)
    form = doc.find("form", id="selection")
    assert form.attrs["method"] == "get" and form.attrs["action"].endswith("/export")
    boxes = doc.find_all("input", cls="pick")
    slugs = [b.attrs["value"] for b in boxes]
    assert "cbam" in slugs and len(slugs) == len(set(slugs)) == page.count('<li class="technique"')
    assert all(b.attrs["type"] == "checkbox" and b.attrs["name"] == "slug" and b.attrs["form"] == "selection"
               for b in boxes)
    # scripts only from files (a strict Content-Security-Policy allows no inline script)
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert '<script defer src="/static/selection.js"></script>' in page
    js = app_client.get("/static/selection.js")
    assert js.status_code == 200 and "window.AtlasSelection" in js.text
    # the form's own submissions (no JavaScript): each download button is an export of the ticked papers
    # (and the survey, as every export has it)
    ticked = {"cbam", "squeeze-and-excitation"}
    expected = {app_client.get(f"/techniques/{s}", params={"fields": "citation"}).json()["citation"]["citekey"]
                for s in ticked} | {"hassaninVisualAttentionMethods2022"}
    downloads = form.find_all("button", name="format")
    assert sorted(b.attrs["value"] for b in downloads) == ["bibtex", "csl-json", "ris"]
    for button in downloads:
        action, params = submission(doc, "selection", button, ticked)
        r = app_client.get(action, params=params)
        assert r.status_code == 200, (action, params, r.text)
        fmt = button.attrs["value"]
        if fmt == "csl-json":
            assert {i["id"] for i in r.json()} == expected
        elif fmt == "ris":
            assert r.text.count("TY  - ") == len(expected)
        else:
            assert len(re.findall(r"^@\w+\{", r.text, re.M)) == len(expected)


def test_a_write_is_visible_in_the_next_export(app_client):
    with Session(app_client.app.state.engine) as s:
        before = catalogue_version(s)
    first = app_client.get("/export", params={"format": "bibtex"}).text
    assert app_client.get("/export", params={"format": "bibtex"}).text == first  # cached
    citation = app_client.get("/techniques/cbam/citation", params={"format": "text"}).text
    bib = ENTRY.format(key="doeVersionedCache2021", title="Versioned Cache", extra="")
    dry = app_client.post("/references", params={"dry_run": "true"}, content=bib, headers=WRITE)
    assert dry.status_code == 200 and dry.json()["created"] == ["doeVersionedCache2021"]
    with Session(app_client.app.state.engine) as s:
        assert catalogue_version(s) == before  # nothing written, nothing to rebuild
    assert app_client.get("/export", params={"format": "bibtex"}).text == first
    assert app_client.post("/references", content=bib, headers=WRITE).status_code == 200
    with Session(app_client.app.state.engine) as s:
        assert catalogue_version(s) == before + 1  # raised once, with the write
    after = app_client.get("/export", params={"format": "bibtex"}).text
    assert "doeVersionedCache2021" in after and "doeVersionedCache2021" not in first
    assert after.count("\n@") == first.count("\n@") + 1
    assert app_client.get("/techniques/cbam/citation", params={"format": "text"}).text == citation


def test_cache_is_warmed_at_start(tmp_path, monkeypatch):
    from service.citations import formatted

    monkeypatch.setattr(formatted, "style_names", lambda: ["apa", "ieee"])  # every style takes long; two show it
    settings = make_settings(tmp_path, warm_citations=True)
    with TestClient(create_app(settings)) as c:
        lib = citations_api.library_for(c.app)
        for t in [t for t in threading.enumerate() if t.name == "citation-cache-warm"]:
            t.join(timeout=120)
        hits = lib.bodies.hits
        r = c.get("/export", params={"format": "html", "style": "ieee"})
        assert r.status_code == 200
        assert lib.bodies.hits == hits + 1  # rendered before the first request


def test_an_edit_is_visible_in_the_next_note(app_client):
    slug = "squeeze-and-excitation"
    before = app_client.get(f"/techniques/{slug}/note.md").text
    assert app_client.get(f"/techniques/{slug}/note.md").text == before  # cached
    etag = app_client.get(f"/techniques/{slug}").headers["etag"]
    with Session(app_client.app.state.engine) as s:
        version = catalogue_version(s)
    summary = "An edited summary: each channel is squeezed to its mean, then excited through a bottleneck."
    r = app_client.patch(f"/techniques/{slug}", json={"summary": summary},
                         headers={**WRITE, "Content-Type": "application/merge-patch+json", "If-Match": etag})
    assert r.status_code == 200, r.text
    with Session(app_client.app.state.engine) as s:
        assert catalogue_version(s) == version + 1  # raised once, with the edit
    after = app_client.get(f"/techniques/{slug}/note.md").text
    assert summary in after and summary not in before
