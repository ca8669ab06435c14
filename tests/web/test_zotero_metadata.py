"""The original paper's metadata on technique pages (Highwire Press meta tags and COinS) and on the index
(one COinS per item), checked against the references in the database."""

from __future__ import annotations

import re
from urllib.parse import parse_qs

import pytest
from sqlalchemy import select

from service.models import Reference, Technique

from .html_tree import head_meta, parse

# slugs whose papers cover the cases: conference paper with DOI, pages and arXiv id; journal article with
# volume and pages; an EMNLP paper with editors and publisher; a paper without arXiv (no public PDF);
# an LNCS volume; a non-ASCII author; section-numbered pages (18.1--18.13)
PAPERS = ["non-local", "attention-pyramid", "repulsive-attention", "criss-cross-attention", "axial-attention",
          "transformer", "reverse-attention"]
HIGHWIRE = ["citation_title", "citation_author", "citation_editor", "citation_publication_date", "citation_journal_title",
            "citation_conference_title", "citation_volume", "citation_firstpage", "citation_lastpage",
            "citation_doi", "citation_arxiv_id", "citation_pdf_url"]


MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]


def _month(f: dict) -> str | None:
    """The month as two digits, from the BibTeX month macro the reference stores."""
    return f"{MONTHS.index(f['month']) + 1:02d}" if f.get("month") else None


def _reference(db, slug: str) -> Reference:
    t = db.get(Technique, slug)
    assert t is not None, slug
    ref = db.get(Reference, t.citekey)
    assert ref is not None, t.citekey
    return ref


def _expected_highwire(ref: Reference) -> dict[str, list[str]]:
    """What the tags must say, derived from the stored reference independently of the page code."""
    f = ref.fields
    exp: dict[str, list[str]] = {name: [] for name in HIGHWIRE}
    exp["citation_title"] = [f["title"]]
    exp["citation_author"] = [f"{p['family']}, {p['given']}" for p in ref.persons["author"]]
    exp["citation_editor"] = [f"{p['family']}, {p['given']}" for p in ref.persons.get("editor", [])]
    # Highwire dates are YYYY/MM/DD; with the month known it is given (Zotero keeps it as the item's date)
    exp["citation_publication_date"] = [f"{f['year']}/{_month(f)}" if _month(f) else f["year"]]
    if ref.entry_type == "article":
        exp["citation_journal_title"] = [f["journal"]]
    else:
        exp["citation_conference_title"] = [f["booktitle"]]
    if f.get("volume"):
        exp["citation_volume"] = [f["volume"]]
    if f.get("pages"):
        first, *rest = re.split(r"--|–|-", f["pages"])
        exp["citation_firstpage"] = [first]
        exp["citation_lastpage"] = rest[:1]
    if f.get("doi"):
        exp["citation_doi"] = [f["doi"]]
    if f.get("archiveprefix") == "arXiv":
        exp["citation_arxiv_id"] = [f["eprint"]]
        exp["citation_pdf_url"] = [f"https://arxiv.org/pdf/{f['eprint']}"]
    return exp


def _coins_spans(doc):
    return [s.attrs["title"] for s in doc.find_all("span", cls="Z3988")]


@pytest.mark.parametrize("slug", PAPERS)
def test_highwire_tags_match_the_reference(web, db, slug):
    ref = _reference(db, slug)
    doc = parse(web.get(f"/t/{slug}").text)
    tags = head_meta(doc)
    got = {name: [c for n, c in tags if n == name] for name in HIGHWIRE}
    assert got == _expected_highwire(ref)
    # the authors come in the paper's order, all of them
    assert len(got["citation_author"]) == len(ref.persons["author"]) >= 1


def test_highwire_tags_for_known_papers(web):
    """Spot checks against the papers themselves, not only against the database."""
    tags = head_meta(parse(web.get("/t/non-local").text))
    assert ("citation_title", "Non-local Neural Networks") in tags
    assert [c for n, c in tags if n == "citation_author"] == [
        "Wang, Xiaolong", "Girshick, Ross", "Gupta, Abhinav", "He, Kaiming"]
    tags = head_meta(parse(web.get("/t/expectation-maximization-attention").text))
    assert ("citation_firstpage", "9167") in tags and ("citation_lastpage", "9176") in tags
    tags = head_meta(parse(web.get("/t/axial-attention").text))
    assert ("citation_doi", "10.1007/978-3-030-58548-8_7") in tags

    tags = head_meta(parse(web.get("/t/transformer").text))
    assert ("citation_author", "Kaiser, Łukasz") in tags, "non-ASCII names arrive decoded from LaTeX"
    assert ("citation_conference_title", "Advances in Neural Information Processing Systems (NIPS)") in tags

    # the title's inline math becomes plain text a reference manager can store
    tags = head_meta(parse(web.get("/t/double-attention").text))
    assert ("citation_title", "A²-Nets: Double Attention Networks") in tags

    # editors and the month reach Zotero's Embedded Metadata translator
    tags = head_meta(parse(web.get("/t/repulsive-attention").text))
    assert [c for n, c in tags if n == "citation_editor"] == ["Webber, Bonnie", "Cohn, Trevor", "He, Yulan", "Liu, Yang"]
    assert ("citation_publication_date", "2020/11") in tags
    # the page describes the paper only: no <meta name="description"> that Zotero would save as its abstract,
    # and the paper's own address (or its arXiv record) as the item URL, never the Atlas page
    doc = parse(web.get("/t/transformer").text)
    assert not [m for m in doc.find_all("meta") if m.attrs.get("name", "").lower() == "description"]
    assert ("citation_public_url", "https://arxiv.org/abs/1706.03762") in head_meta(doc)

    # no public PDF is claimed where none is known
    tags = dict(head_meta(parse(web.get("/t/criss-cross-attention").text)))
    assert "citation_pdf_url" not in tags and "citation_arxiv_id" not in tags


@pytest.mark.parametrize("slug", PAPERS)
def test_coins_matches_the_reference(web, db, slug):
    ref = _reference(db, slug)
    f = ref.fields
    doc = parse(web.get(f"/t/{slug}").text)
    spans = _coins_spans(doc)
    assert len(spans) == 1
    raw = spans[0]
    # properly URL-encoded: every value percent-encoded, no raw spaces, commas, colons or slashes
    assert re.fullmatch(r"[A-Za-z0-9_.~%=&-]+", raw), raw
    co = parse_qs(raw, keep_blank_values=True, strict_parsing=True)
    assert co["ctx_ver"] == ["Z39.88-2004"]
    assert co["rft.atitle"] == [f["title"]]
    if ref.entry_type == "article":
        assert co["rft_val_fmt"] == ["info:ofi/fmt:kev:mtx:journal"]
        assert co["rft.genre"] == ["article"] and co["rft.jtitle"] == [f["journal"]]
    else:
        assert co["rft_val_fmt"] == ["info:ofi/fmt:kev:mtx:book"]
        # Zotero recognises a conference paper by this exact, unencoded part
        assert "rft.genre=proceeding" in raw.split("&")
        assert co["rft.btitle"] == [f["booktitle"]]
    assert co["rft.au"] == [f"{p['family']}, {p['given']}" for p in ref.persons["author"]]
    assert co["rft.date"] == [f"{f['year']}-{_month(f)}" if _month(f) else f["year"]]
    assert co.get("rft.volume", []) == ([f["volume"]] if f.get("volume") else [])
    if f.get("pages") and re.search(r"--|–", f["pages"]):
        first, last = re.split(r"--|–", f["pages"])
        assert (co["rft.spage"], co["rft.epage"]) == ([first], [last])
    ids = co.get("rft_id", [])
    assert (f"info:doi/{f.get('doi')}" in ids) == bool(f.get("doi"))
    if f.get("archiveprefix") == "arXiv":
        assert f"info:arxiv/{f['eprint']}" in ids


def test_index_lists_one_coins_per_item(web, db):
    doc = parse(web.get("/").text)
    items = doc.find_all("li", cls="technique")
    slugs = [li.attrs["id"] for li in items]
    assert sorted(slugs) == sorted(db.execute(select(Technique.slug)).scalars())
    papers = {db.get(Technique, slug).citekey for slug in slugs}
    # one COinS per paper: Zotero's multiple-item save lists every span, so a second span for a paper that
    # two techniques cite (GATCluster) would save a duplicate item
    assert len(_coins_spans(doc)) == len(papers) < len(items), "the page has no COinS besides the listed papers"
    titles = {}
    seen = set()
    for li in items:
        spans = _coins_spans(li)
        key = db.get(Technique, li.attrs["id"]).citekey
        assert len(spans) == (0 if key in seen else 1), li.attrs["id"]
        seen.add(key)
        if not spans:
            continue
        co = parse_qs(spans[0], strict_parsing=True)
        titles[li.attrs["id"]] = co["rft.atitle"][0]
        assert co["rft.au"], li.attrs["id"]
    # each span describes that item's paper
    for slug in ("non-local", "attention-pyramid", "cbam"):
        ref = _reference(db, slug)
        assert titles[slug] == ref.fields["title"]


def test_index_coins_follow_the_filters(web, db):
    doc = parse(web.get("/", params={"category": "hard"}).text)
    hard = set(db.execute(select(Technique.slug).where(Technique.category_id == "hard")).scalars())
    assert {li.attrs["id"] for li in doc.find_all("li", cls="technique")} == hard
    assert len(_coins_spans(doc)) == len({db.get(Technique, slug).citekey for slug in hard})
