"""Markdown literature notes (Obsidian): front matter parsed as YAML, sections, display math,
wikilinks, and the zip of notes for a filtered set."""

from __future__ import annotations

import io
import re
import zipfile

import pytest
import yaml

from service.citations import markdown


def _split(note: str) -> tuple[dict, str]:
    assert note.startswith("---\n")
    head, _, body = note[4:].partition("\n---\n")
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def cbam(client) -> tuple[dict, str]:
    r = client.get("/techniques/cbam/note.md")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/markdown; charset=utf-8"
    assert r.headers["content-disposition"] == 'inline; filename="cbam.md"'
    return _split(r.text)


def test_front_matter(client, cbam):
    meta, _ = cbam
    tech = client.get("/techniques/cbam").json()
    assert meta["title"] == tech["name"] == "Convolutional Block Attention Module"
    assert meta["citekey"] == "wooCBAMConvolutionalBlock2018"
    assert meta["authors"] == ["Sanghyun Woo", "Jongchan Park", "Joon-Young Lee", "In So Kweon"]
    assert meta["year"] == 2018 and isinstance(meta["year"], int)
    assert meta["venue"] == "Proceedings of the European Conference on Computer Vision (ECCV)"
    assert meta["category"] == "soft" and meta["subcategory"] == tech["subcategory"]["id"]
    assert meta["zotero"] == "zotero://select/items/@wooCBAMConvolutionalBlock2018"
    assert "arxiv" not in meta  # no arXiv id confirmed for CBAM
    ema, _ = _split(client.get("/techniques/expectation-maximization-attention/note.md").text)
    assert ema["arxiv"] == "1907.13426" and ema["arxiv_url"] == "https://arxiv.org/abs/1907.13426"
    assert meta["aliases"] == tech["aliases"]
    assert "attention/soft" in meta["tags"]
    assert {f"application/{a}" for a in tech["applications"]} <= set(meta["tags"])
    assert all(" " not in tag for tag in meta["tags"])  # Obsidian tags have no spaces
    assert meta["source"].endswith("/t/cbam")


def test_doi_links_when_the_paper_has_a_doi(client):
    meta, body = _split(client.get("/techniques/axial-attention/note.md").text)
    assert meta["doi"] == "10.1007/978-3-030-58548-8_7"
    assert meta["doi_url"] == "https://doi.org/10.1007/978-3-030-58548-8_7"
    assert "[DOI](https://doi.org/10.1007/978-3-030-58548-8_7)" in body


def test_sections_formula_and_wikilinks(client, cbam):
    _, body = cbam
    tech = client.get("/techniques/cbam").json()
    headings = re.findall(r"^## (.+)$", body, re.M)
    for section in ("Summary", "Formula", "Strengths", "Limitations", "Applications", "Related techniques"):
        assert section in headings
    assert headings.index("Summary") < headings.index("Formula") < headings.index("Related techniques")
    math = re.search(r"^\$\$\n(.*?)\n\$\$$", body, re.S | re.M)
    assert math and tech["formula"]["latex"].strip() in math.group(1)
    for point in tech["strengths"] + tech["limitations"]:
        assert f"- {point}" in body
    links = re.findall(r"\[\[([a-z0-9-]+)\|([^\]]+)\]\]", body)
    assert [slug for slug, _ in links] == tech["related"]
    for slug, name in links:
        assert client.get(f"/techniques/{slug}").json()["name"] == name
    assert "[Zotero](zotero://select/items/@wooCBAMConvolutionalBlock2018)" in body


def test_multiline_formula_is_gathered():
    assert markdown.display_math("a = b \\\\\nc = d") == "$$\n\\begin{gathered}\na = b \\\\\nc = d\n\\end{gathered}\n$$"
    assert markdown.display_math("a = b") == "$$\na = b\n$$"


def test_every_note_has_valid_front_matter(client):
    slugs = [t["slug"] for t in client.get("/techniques", params={"limit": 100, "fields": "slug"}).json()["items"]]
    data = client.get("/export/notes.zip").content
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        for slug in slugs:
            meta, _ = _split(zf.read(f"attention-atlas/{slug}.md").decode())
            assert meta["citekey"] and meta["zotero"].endswith("@" + meta["citekey"])


def test_notes_zip_for_a_filtered_set(client):
    r = client.get("/export/notes.zip", params={"category": "hard"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == 'attachment; filename="attention-atlas-notes.zip"'
    hard = [t["slug"] for t in client.get("/techniques", params={"category": "hard", "limit": 100}).json()["items"]]
    assert hard
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        names = set(zf.namelist())
        assert names == {f"attention-atlas/{s}.md" for s in hard} | {f"attention-atlas/{markdown.INDEX_NAME}"}
        for slug in hard:
            single = client.get(f"/techniques/{slug}/note.md").text
            assert zf.read(f"attention-atlas/{slug}.md").decode() == single
        index = zf.read(f"attention-atlas/{markdown.INDEX_NAME}").decode()
        assert set(re.findall(r"\[\[([a-z0-9-]+)\|", index)) == set(hard)
    assert client.get("/export/notes.zip", params={"category": "hard"}).content == r.content  # deterministic
    empty = client.get("/export/notes.zip", params={"q": "nosuchwordanywhere"})
    with zipfile.ZipFile(io.BytesIO(empty.content)) as zf:
        assert zf.namelist() == [f"attention-atlas/{markdown.INDEX_NAME}"]
