"""Content negotiation on /techniques/{slug}/citation and /export: every Accept type, every format
value, the format parameter over Accept, 406 with the supported list, file names and ETags."""

from __future__ import annotations

import re

import pytest

from service.citations import negotiation

CITATION = "/techniques/cbam/citation"
EXPORT = "/export"

# Accept header -> (Content-Type, start of the body)
ACCEPT_MATRIX = {
    "application/x-bibtex": ("application/x-bibtex; charset=utf-8", "@inproceedings{wooCBAM"),
    "text/x-bibtex": ("application/x-bibtex; charset=utf-8", "@inproceedings{wooCBAM"),
    "application/x-biblatex": ("application/x-biblatex; charset=utf-8", "@inproceedings{wooCBAM"),
    "application/x-research-info-systems": ("application/x-research-info-systems; charset=utf-8", "TY  - CONF"),
    "application/vnd.citationstyles.csl+json": ("application/vnd.citationstyles.csl+json", "["),
    "application/citeproc+json": ("application/vnd.citationstyles.csl+json", "["),
    "application/json": ("application/vnd.citationstyles.csl+json", "["),
    "text/x-bibliography": ("text/x-bibliography; charset=utf-8", "Woo, S., Park, J."),
    "text/x-bibliography; style=apa; locale=en-US": ("text/x-bibliography; charset=utf-8", "Woo, S., Park, J."),
    "text/x-bibliography; style=ieee": ("text/x-bibliography; charset=utf-8", "[1] S. Woo, J. Park"),
    "text/x-bibliography; style=nature; locale=en-GB": ("text/x-bibliography; charset=utf-8", "1. Woo, S., Park, J."),
    "text/plain": ("text/x-bibliography; charset=utf-8", "Woo, S., Park, J."),
    "text/html": ("text/html; charset=utf-8", '<div class="csl-bib-body">'),
    "*/*": ("application/x-bibtex; charset=utf-8", "@inproceedings"),
    "application/*": ("application/x-bibtex; charset=utf-8", "@inproceedings"),
    "text/*": ("text/x-bibliography; charset=utf-8", "Woo, S."),
    # a browser: HTML first
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8": ("text/html; charset=utf-8", "<div"),
    # quality values decide, not the order
    "application/x-bibtex;q=0.5, application/x-research-info-systems": (
        "application/x-research-info-systems; charset=utf-8", "TY  - "),
    # q=0 refuses a type that a wildcard would otherwise allow
    "application/x-bibtex;q=0, application/*;q=0.8": ("application/x-biblatex; charset=utf-8", "@inproceedings"),
    "image/png, application/vnd.citationstyles.csl+json;q=0.1": ("application/vnd.citationstyles.csl+json", "["),
}
FORMATS = {
    "bibtex": ("application/x-bibtex; charset=utf-8", "bib"),
    "biblatex": ("application/x-biblatex; charset=utf-8", "bib"),
    "ris": ("application/x-research-info-systems; charset=utf-8", "ris"),
    "csl-json": ("application/vnd.citationstyles.csl+json", "json"),
    "text": ("text/x-bibliography; charset=utf-8", "txt"),
    "html": ("text/html; charset=utf-8", "html"),
    "bib": ("application/x-bibtex; charset=utf-8", "bib"),
    "json": ("application/vnd.citationstyles.csl+json", "json"),
}
NOT_ACCEPTABLE = ["image/png", "application/pdf", "text/csv", "application/x-bibtex;q=0", "nonsense",
                  "text/*;q=0, application/*;q=0"]


def test_matrix_covers_every_media_type_and_format():
    assert set(negotiation.MEDIA_TYPES) <= {a.split(";")[0] for a in ACCEPT_MATRIX}
    assert set(negotiation.FORMATS) <= set(FORMATS)


@pytest.mark.parametrize("path", [CITATION, EXPORT])
@pytest.mark.parametrize("accept", list(ACCEPT_MATRIX))
def test_accept(client, path, accept):
    params = {"q": "CBAM", "include_survey": "false"} if path == EXPORT else {}
    r = client.get(path, headers={"Accept": accept}, params=params)
    assert r.status_code == 200, r.text
    content_type, start = ACCEPT_MATRIX[accept]
    assert r.headers["content-type"] == content_type
    if path == CITATION:
        assert r.text.startswith(start), r.text[:200]
    else:  # several papers mention CBAM; its entry is one of them (numbered by position)
        assert re.sub(r"^(\[1\] |1\. )", "", start) in r.text
    assert "Accept" in r.headers["vary"]


def test_no_accept_header_gives_bibtex(client):
    r = client.get(CITATION, headers={"Accept": ""})
    assert r.headers["content-type"] == "application/x-bibtex; charset=utf-8"


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_format_parameter_overrides_accept(client, fmt):
    content_type, ext = FORMATS[fmt]
    r = client.get(CITATION, params={"format": fmt}, headers={"Accept": "image/png"})
    assert r.status_code == 200
    assert r.headers["content-type"] == content_type
    disposition = "inline" if ext in ("txt", "html") else "attachment"
    assert r.headers["content-disposition"] == f'{disposition}; filename="wooCBAMConvolutionalBlock2018.{ext}"'
    e = client.get(EXPORT, params={"format": fmt, "category": "hard"})
    assert e.headers["content-disposition"] == f'{disposition}; filename="attention-atlas.{ext}"'


@pytest.mark.parametrize("path", [CITATION, EXPORT])
@pytest.mark.parametrize("accept", NOT_ACCEPTABLE)
def test_406_lists_what_is_supported(client, path, accept):
    r = client.get(path, headers={"Accept": accept})
    assert r.status_code == 406
    err = r.json()["error"]
    assert err["code"] == "not_acceptable"
    assert "application/x-bibtex" in err["details"]["media_types"]
    assert "text/x-bibliography" in err["details"]["media_types"]
    assert set(err["details"]["formats"]) == set(negotiation.FORMATS)
    assert "apa" in err["details"]["styles"]


def test_unknown_style_in_accept_is_406_but_in_the_query_400(client):
    r = client.get(CITATION, headers={"Accept": "text/x-bibliography; style=chicago-notes"})
    assert r.status_code == 406 and "ieee" in r.json()["error"]["details"]["styles"]
    r = client.get(CITATION, headers={"Accept": "text/x-bibliography; locale=tlh"})
    assert r.status_code == 406
    r = client.get(CITATION, params={"style": "chicago-notes"})
    assert r.status_code == 400 and r.json()["error"]["details"]["parameter"] == "style"
    r = client.get(CITATION, params={"format": "pdf"})
    assert r.status_code == 400 and r.json()["error"]["details"]["parameter"] == "format"


def test_query_style_overrides_the_accept_parameter(client):
    r = client.get(CITATION, params={"style": "ieee"}, headers={"Accept": "text/x-bibliography; style=apa"})
    assert r.text.startswith("[1] S. Woo")


def test_unknown_query_parameter_and_unknown_slug(client):
    assert client.get(CITATION, params={"styel": "apa"}).status_code == 400
    r = client.get("/techniques/squeeze-excitation/citation")
    assert r.status_code == 404 and "squeeze-and-excitation" in r.json()["error"]["details"]["did_you_mean"]
    assert client.get(EXPORT, params={"year_min": "recent"}).status_code == 422


@pytest.mark.parametrize("path,params", [(CITATION, {}), (CITATION, {"format": "text"}), (EXPORT, {}),
                                         (EXPORT, {"format": "ris", "category": "soft"}),
                                         ("/techniques/cbam/note.md", {}), ("/export/notes.zip", {"category": "hard"})])
def test_etag_and_304(client, path, params):
    first = client.get(path, params=params)
    assert first.status_code == 200 and first.headers["etag"]
    again = client.get(path, params=params, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    stale = client.get(path, params=params, headers={"If-None-Match": '"stale"'})
    assert stale.status_code == 200


def test_each_format_has_its_own_etag(client):
    tags = {client.get(CITATION, params={"format": f}).headers["etag"] for f in negotiation.FORMATS}
    assert len(tags) == len(negotiation.FORMATS)


def test_openapi_documents_the_media_types(client):
    spec = client.get("/openapi.json").json()
    content = spec["paths"]["/techniques/{slug}/citation"]["get"]["responses"]["200"]["content"]
    assert {"application/x-bibtex", "application/x-research-info-systems", "text/x-bibliography"} <= set(content)
    assert "406" in spec["paths"]["/export"]["get"]["responses"]
    names = {p["name"] for p in spec["paths"]["/export"]["get"]["parameters"]}
    assert {"format", "style", "locale", "unicode", "include_survey", "category", "q"} <= names
