"""Text from the database is escaped everywhere it appears: element text, attributes, meta tags, COinS.

A fresh app's database is patched with markup (as a write through the API or a hostile .bib could do)."""

from __future__ import annotations

from urllib.parse import parse_qs

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.api.web import mount_static
from service.main import create_app
from service.models import Reference, Technique
from tests.conftest import make_settings

from .html_tree import head_meta, parse

HOSTILE = '<script>alert("x")</script>&amp; "quoted" \'single\''


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A fresh app whose database has a technique and a reference patched with markup (and a technique
    without an implementation)."""
    app = create_app(make_settings(tmp_path_factory.mktemp("hostile")))
    mount_static(app)
    with TestClient(app, raise_server_exceptions=False) as c:
        with Session(app.state.engine) as s:
            t = s.get(Technique, "cbam")
            t.name = "CBAM " + HOSTILE
            t.summary = "Summary " + HOSTILE + " <img src=x onerror=alert(1)>"
            t.formula_latex = r"x < y \\ </code></pre><script>alert(1)</script>"
            t.formula_legend = [{"symbol": "<b>x</b>", "meaning": HOSTILE}]
            t.strengths = [HOSTILE]
            ref = s.get(Reference, t.citekey)
            ref.fields = {**ref.fields, "title": "Paper " + HOSTILE, "booktitle": 'Conf "><script>1</script>'}
            ref.persons = {"author": [{"family": 'O"Brien <i>', "given": "Ann & Bob"}, *ref.persons["author"]]}
            plain = s.get(Technique, "double-attention")
            plain.has_implementation = False
            s.add_all([t, ref, plain])
            s.commit()
        yield c


@pytest.mark.parametrize("url", ["/t/cbam", "/", "/?q=CBAM"])
def test_hostile_text_is_escaped(hostile, url):
    r = hostile.get(url)
    assert r.status_code == 200
    doc = parse(r.text)
    # the only elements are the page's own: no script without src, no img, no <b>/<i> from the data
    assert all(s.attrs.get("src", "").startswith("/static/") for s in doc.find_all("script"))
    assert not doc.find_all("img") and not doc.find_all("b") and not doc.find_all("i")
    assert not [n for n in doc.find_all() if any(k.startswith("on") for k in n.attrs)], "no event handlers"
    assert HOSTILE in doc.find("main").text(), "the text is shown as text"
    item = doc.find_all("li", id="cbam")
    span = (item[0] if item else doc).find("span", cls="Z3988")
    co = parse_qs(span.attrs["title"])
    assert co["rft.atitle"] == ["Paper " + HOSTILE]
    assert co["rft.au"][0] == 'O"Brien <i>, Ann & Bob'


def test_hostile_text_in_meta_tags_round_trips(hostile):
    doc = parse(hostile.get("/t/cbam").text)
    tags = head_meta(doc)
    assert ("citation_title", "Paper " + HOSTILE) in tags
    assert ("citation_author", 'O"Brien <i>, Ann & Bob') in tags
    assert ("citation_conference_title", 'Conf "><script>1</script>') in tags
    code = doc.find("pre", cls="tex-source").find("code")
    assert code.text() == r"x < y \\ </code></pre><script>alert(1)</script>"
    assert doc.find("title").text().startswith("CBAM " + HOSTILE)


def test_implementation_link_only_with_an_implementation(hostile):
    doc = parse(hostile.get("/t/double-attention").text)
    hrefs = [a.attrs.get("href", "") for a in doc.find_all("a")]
    assert not [h for h in hrefs if h.endswith("/implementation")] and not doc.find_all("section", id="implementation")
    doc = parse(hostile.get("/t/non-local").text)
    assert "/techniques/non-local/implementation" in [a.attrs.get("href") for a in doc.find_all("a")]
