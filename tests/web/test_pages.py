"""The HTML pages through the real app: index filters, search and paging, technique content, the no-JS
formula fallback, local assets only, 404 pages and conditional requests."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import select

import service.web
from service.models import Technique, TechniqueApplication

from .html_tree import parse

HTML = "text/html; charset=utf-8"


def _slugs(doc) -> list[str]:
    return [li.attrs["id"] for li in doc.find_all("li", cls="technique")]


def _index(web, **params):
    r = web.get("/", params=params)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"] == HTML
    return parse(r.text)


# ---------------------------------------------------------------- index


def test_index_groups_every_technique_by_the_taxonomy(web, db):
    doc = _index(web)
    techniques = {t.slug: t for t in db.execute(select(Technique)).scalars()}
    assert sorted(_slugs(doc)) == sorted(techniques)
    # each item sits in the section of its category and subcategory, in the taxonomy's order
    seen_categories = []
    for li in doc.find_all("li", cls="technique"):
        sections = [a.attrs.get("id", "") for a in li.ancestors() if a.tag == "section"]
        t = techniques[li.attrs["id"]]
        assert sections[:2] == [f"sub-{t.subcategory_id}", f"cat-{t.category_id}"]
        if not seen_categories or seen_categories[-1] != t.category_id:
            seen_categories.append(t.category_id)
    assert seen_categories == ["soft", "hard"], "categories appear once each, in the survey's order"
    # links to each technique's page
    for li in doc.find_all("li", cls="technique"):
        assert li.find("a", cls="name").attrs["href"] == f"/t/{li.attrs['id']}"


def test_index_filters_match_the_database(web, db):
    subs = set(db.execute(select(Technique.slug).where(Technique.subcategory_id == "spatial")).scalars())
    subs |= {t.slug for t in db.execute(select(Technique)).scalars() if "spatial" in t.also_in}
    assert set(_slugs(_index(web, subcategory="spatial"))) == subs and "cbam" in subs

    seg = set(db.execute(select(TechniqueApplication.technique_slug)
                         .where(TechniqueApplication.tag == "semantic-segmentation")).scalars())
    assert set(_slugs(_index(web, application="semantic-segmentation"))) == seg

    soft_seg = set(db.execute(select(Technique.slug).where(Technique.category_id == "soft")).scalars()) & seg
    got = _index(web, category="soft", application="semantic-segmentation")
    assert set(_slugs(got)) == soft_seg and soft_seg != seg
    # the form shows the active choices
    assert "selected" in got.find("option", value="soft").attrs
    assert "selected" in got.find("option", value="semantic-segmentation").attrs
    assert "selected" not in got.find("option", value="hard").attrs


def test_index_search_agrees_with_the_api(web):
    for q in ("channel", "transformer OR segmentation", '"non-local"'):
        api = web.get("/techniques", params={"q": q, "limit": 100}).json()["items"]
        doc = _index(web, q=q)
        assert set(_slugs(doc)) == {t["slug"] for t in api}, q
        assert doc.find("input", id="q").attrs["value"] == q
    assert _slugs(_index(web, q="zzzyyyxxx")) == []


def test_empty_form_fields_mean_any(web):
    doc = _index(web, q="", category="", subcategory="", application="")
    assert len(_slugs(doc)) == len(_slugs(_index(web)))


def test_index_pages_have_no_gaps_or_repeats(web):
    everything = _slugs(_index(web))
    seen, url, pages = [], "/?limit=10", 0
    while url:
        r = web.get(url)
        assert r.status_code == 200
        doc = parse(r.text)
        page = _slugs(doc)
        assert 0 < len(page) <= 10
        seen += page
        pages += 1
        nxt = doc.find_all("a", rel="next")
        url = nxt[0].attrs["href"] if nxt else None
        if url:
            assert parse_qs(urlsplit(url).query)["limit"] == ["10"], "the next page keeps the page size"
    assert pages == -(-len(everything) // 10)
    assert sorted(seen) == sorted(everything) and len(seen) == len(set(seen))


@pytest.mark.parametrize("params, fragment", [
    ({"cursor": "not-a-cursor"}, "malformed cursor"),
    ({"q": "attention AND"}, "not valid search syntax"),
    ({"limit": "0"}, "limit=0"),
    ({"limit": "100000"}, "limit=100000"),
])
def test_index_reports_bad_parameters_as_a_page(web, backend, params, fragment):
    if backend == "postgresql" and "q" in params:
        # PostgreSQL's websearch syntax accepts any text, so there is no search error to report
        assert web.get("/", params=params).status_code == 200
        return
    r = web.get("/", params=params)
    assert r.status_code == 400 and r.headers["content-type"] == HTML
    doc = parse(r.text)
    assert fragment in doc.find("p", cls="error").text()
    assert doc.find("form", cls="filters"), "the search form stays usable"


def test_unknown_query_parameters_are_rejected(web):
    r = web.get("/", params={"categroy": "soft"})
    assert r.status_code == 400 and r.json()["error"]["details"]["unknown"] == ["categroy"]


# ---------------------------------------------------------------- technique page


def test_technique_page_shows_the_record(web, db):
    t = db.get(Technique, "squeeze-and-excitation")
    r = web.get("/t/squeeze-and-excitation")
    assert r.status_code == 200 and r.headers["content-type"] == HTML
    doc = parse(r.text)
    assert doc.find("h1").text() == t.name
    assert "Soft (deterministic) attention" in doc.find("p", cls="facts").text()
    assert "Channel attention" in doc.find("p", cls="facts").text()
    assert doc.find("section", id="summary").find("p").text() == t.summary
    assert [li.text() for li in doc.find("section", id="strengths").find_all("li")] == t.strengths
    assert [li.text() for li in doc.find("section", id="limitations").find_all("li")] == t.limitations
    legend = doc.find("table", cls="legend")
    assert [c.text() for c in legend.find_all("code", cls="tex-inline")] == [i["symbol"] for i in t.formula_legend]
    tags = [a.text() for a in doc.find("section", id="applications").find_all("a")]
    apps = list(db.execute(select(TechniqueApplication.tag).where(TechniqueApplication.technique_slug == t.slug)
                           .order_by(TechniqueApplication.position)).scalars())
    assert tags == apps
    complexity = doc.find("dl", cls="complexity").text()
    assert t.complexity["time"] in complexity and t.complexity["memory"] in complexity
    related = {a.attrs["href"]: a.text() for a in doc.find("section", id="related").find_all("a")}
    for slug in ("efficient-channel-attention", "cbam"):
        assert related[f"/t/{slug}"] == db.get(Technique, slug).name
    links = {a.attrs["href"] for a in doc.find("section", id="links").find_all("a")}
    assert {"/techniques/squeeze-and-excitation", "/techniques/squeeze-and-excitation/citation?format=bibtex",
            "/techniques/squeeze-and-excitation/note.md",
            "/techniques/squeeze-and-excitation/implementation"} <= links
    cite = doc.find("section", id="citation")
    assert "Squeeze-and-Excitation Networks" in cite.find("p", cls="reference").text()
    assert "Jie Hu, Li Shen and Gang Sun" in cite.find("p", cls="reference").text()
    assert "https://arxiv.org/abs/1709.01507" in {a.attrs["href"] for a in cite.find_all("a")}


def test_doi_link(web):
    doc = parse(web.get("/t/axial-attention").text)
    assert "https://doi.org/10.1007/978-3-030-58548-8_7" in {a.attrs["href"] for a in doc.find_all("a")}


def test_formula_source_is_readable_without_javascript(web, db):
    for slug in ("transformer", "cbam", "dual-attention"):
        t = db.get(Technique, slug)
        doc = parse(web.get(f"/t/{slug}").text)
        figure = doc.find("figure", cls="formula")
        # the LaTeX source, exactly, as code: what a reader sees when KaTeX is absent or scripts are off
        assert figure.find("pre", cls="tex-source").find("code").text() == t.formula_latex
        # the element KaTeX fills stays hidden until the script has typeset the formula
        assert "hidden" in figure.find("div", cls="tex-display").attrs


def test_etag_and_304(web):
    for url in ("/t/cbam", "/?category=hard"):
        r = web.get(url)
        assert r.status_code == 200 and r.headers["etag"] and r.headers["last-modified"]
        again = web.get(url, headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert web.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200
    assert web.get("/", headers={"If-None-Match": web.get("/t/cbam").headers["etag"]}).status_code == 200


# ---------------------------------------------------------------- 404


@pytest.mark.parametrize("slug", ["squeeze-excitation", "No_Such_Thing", "x" * 150])
def test_unknown_slug_is_an_html_404(web, slug):
    r = web.get(f"/t/{slug}")
    assert r.status_code == 404 and r.headers["content-type"] == HTML
    doc = parse(r.text)
    assert doc.find("h1").text() == "Not found"
    message = doc.find("p", cls="error").text()
    assert slug[:60] in message and len(message) < 200  # a long slug is quoted by its prefix
    if slug == "squeeze-excitation":
        assert "/t/squeeze-and-excitation" in {a.attrs["href"] for a in doc.find_all("a")}


# ---------------------------------------------------------------- assets


def _asset_urls(doc) -> list[str]:
    urls = [s.attrs["src"] for s in doc.find_all("script") if s.attrs.get("src")]
    urls += [link.attrs["href"] for link in doc.find_all("link") if link.attrs.get("href")]
    return urls


@pytest.mark.parametrize("katex", [False, True])
def test_scripts_and_stylesheets_are_local(web, monkeypatch, katex):
    monkeypatch.setattr(service.web, "katex_available", lambda *a: katex)
    for url in ("/", "/t/transformer", "/t/no-such-technique"):
        doc = parse(web.get(url).text)
        assets = _asset_urls(doc)
        assert assets
        for a in assets:
            assert a.startswith("/") and not a.startswith("//") and "://" not in a, a
        scripts = [s.attrs.get("src") for s in doc.find_all("script")]
        assert all(scripts), "no inline scripts"
        assert ("/static/katex/katex.min.js" in scripts) is katex
        assert ("/static/katex/katex.min.css" in assets) is katex
        assert "/static/atlas.js" in scripts


def test_every_referenced_asset_is_served(web):
    """Without a KaTeX build the pages do not ask for it; with one, it is served from this app."""
    doc = parse(web.get("/t/transformer").text)
    for a in _asset_urls(doc):
        if a.startswith("/static/"):
            r = web.get(a)
            assert r.status_code == 200, a
            assert b"http://" not in r.content and b"https://" not in r.content or a.endswith(".min.js"), a
    css = web.get("/static/atlas.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_api_docs_page_uses_local_swagger_assets_when_built(client):
    from service.api.health import _SWAGGER

    page = client.get("/docs")
    assert page.status_code == 200 and "/openapi.json" in page.text
    if not (_SWAGGER / "swagger-ui-bundle.js").exists():
        assert "scripts/build-assets.sh" in page.text and "<script" not in page.text
        pytest.skip("scripts/build-assets.sh has not installed Swagger UI; /docs says how to install it")
    assert "cdn." not in page.text and "/static/swagger/swagger-ui-bundle.js" in page.text
    assert client.get("/static/swagger/swagger-ui-bundle.js").status_code == 200
