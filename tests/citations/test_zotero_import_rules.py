"""What Zotero's import translators do with the exports, encoded as checks of the exported text.

The rules come from Zotero's translators (zotero/translators: BibTeX.js, RIS.js; the CSL-JSON import
goes through Zotero's itemFromCSLJSON) and from importing the exports into Zotero. Each test names the
translator behaviour it relies on, so that a change in the exports that Zotero would silently drop
fails here. Where Zotero cannot keep a datum from some format, the test says so and checks the best the
format allows.
"""

from __future__ import annotations

import re

import bibtexparser
import pytest

ARXIV_ONLY = "sindagiInverseAttentionGuided2019"
A2NETS = "chenA2NetsDoubleAttention2018"


@pytest.fixture(scope="module")
def bib(client) -> dict[str, object]:
    lib = bibtexparser.parse_string(client.get("/export", params={"format": "bibtex"}).text)
    assert not lib.failed_blocks
    return {e.key: e for e in lib.entries}


@pytest.fixture(scope="module")
def biblatex(client) -> dict[str, object]:
    lib = bibtexparser.parse_string(client.get("/export", params={"format": "biblatex"}).text)
    return {e.key: e for e in lib.entries}


@pytest.fixture(scope="module")
def ris(client) -> dict[str, list[tuple[str, str]]]:
    out = {}
    for block in client.get("/export", params={"format": "ris"}).text.split("\r\n\r\n"):
        rec = [(line[:2], line[6:]) for line in block.split("\r\n") if line]
        if rec:
            key = next(v for t, v in rec if t == "M2" and v.startswith("Citation Key: "))
            out[key.removeprefix("Citation Key: ")] = rec
    return out


@pytest.fixture(scope="module")
def csl(client) -> dict[str, dict]:
    return {i["id"]: i for i in client.get("/export", params={"format": "csl-json"}).json()}


def _value(entry, name: str) -> str | None:
    field = entry.fields_dict.get(name) or next((f for f in entry.fields if f.key.lower() == name), None)
    return str(field.value).strip("{}") if field is not None else None


def _tags(rec, tag: str) -> list[str]:
    return [v for t, v in rec if t == tag]


def test_every_format_exports_the_same_papers(bib, biblatex, ris, csl):
    assert set(bib) == set(biblatex) == set(ris) == set(csl)
    assert len(bib) == 52


# --- 1. arXiv ids --------------------------------------------------------------------------------

def test_bibtex_arxiv_ids_use_eprinttype(bib):
    """BibTeX.js: ``eprint`` is kept only together with ``eprinttype`` (then Extra gets "arXiv: <id>");
    ``archivePrefix`` is not read at all."""
    arxiv = [e for e in bib.values() if _value(e, "eprint")]
    assert len(arxiv) >= 20
    for e in arxiv:
        assert _value(e, "eprinttype") == "arxiv", e.key
        assert _value(e, "archivePrefix") == "arXiv", e.key  # what natbib and classic styles use


def test_ris_arxiv_ids_go_to_extra(ris, csl):
    """RIS.js: M2 -> Extra, one line per tag (appended with a newline); DB -> Archive and AN -> Loc. in
    Archive, which Zotero does not read as identifiers."""
    for key, rec in ris.items():
        tags = [t for t, _ in rec]
        assert "DB" not in tags and "AN" not in tags, key
        arxiv = [v for v in _tags(rec, "M2") if v.startswith("arXiv: ")]
        expected = [line for line in csl[key]["note"].split("\n") if line.startswith("arXiv: ")]
        assert arxiv == expected, key


def test_csl_arxiv_ids_in_note(csl, bib):
    """itemFromCSLJSON: ``note`` -> Extra, where "arXiv: <id>" lines are kept."""
    for key, item in csl.items():
        eprint = _value(bib[key], "eprint")
        lines = item["note"].split("\n")
        assert (f"arXiv: {eprint}" in lines) == bool(eprint), key


# --- 2. citation keys ----------------------------------------------------------------------------

def test_citation_keys_reach_extra(ris, csl):
    """CSL-JSON: Zotero ignores ``citation-key`` but reads a "Citation Key: <key>" line in Extra into the
    item's citation key. RIS: the same line in M2. BibTeX: Zotero keeps no key on import (Better BibTeX
    rebuilds the same key from its default pattern, which these keys follow)."""
    for key, item in csl.items():
        assert item["citation-key"] == key
        assert item["note"].split("\n")[0] == f"Citation Key: {key}"
        assert _tags(ris[key], "M2")[0] == f"Citation Key: {key}"


# --- 3. conference names -------------------------------------------------------------------------

def test_ris_proceedings_title_only_in_c3(ris):
    """RIS.js: for CONF, T2 -> Conference Name and C3 -> Proceedings Title. The references record the
    proceedings title only, so T2 stays empty."""
    conferences = {k: r for k, r in ris.items() if _tags(r, "TY") == ["CONF"]}
    assert len(conferences) >= 40
    for key, rec in conferences.items():
        assert _tags(rec, "C3") and not _tags(rec, "T2"), key


# --- 4. inline math in titles --------------------------------------------------------------------

ZOTERO_BIBTEX_SUP = re.compile(r"\$([^{$]*)\^\{([^}]+)\}\$")  # BibTeX.js mapTeXmarkup, superscript


def test_titles_with_math(bib, ris, csl):
    """BibTeX.js turns ``$X^{y}$`` (braced exponent) into ``X<sup>y</sup>``, but keeps ``$A^2$`` as text.
    RIS.js strips HTML tags, so RIS carries the Unicode superscript. CSL-JSON rich text is kept as is."""
    for key, e in bib.items():
        title = _value(e, "title")
        for math in re.findall(r"\$[^$]*\$", title):
            if "^" in math:
                assert ZOTERO_BIBTEX_SUP.fullmatch(math), (key, math)
        assert "$" not in _tags(ris[key], "TI")[0] and "<" not in _tags(ris[key], "TI")[0], key
        assert "$" not in csl[key]["title"], key
    assert ZOTERO_BIBTEX_SUP.search(_value(bib[A2NETS], "title"))
    assert _tags(ris[A2NETS], "TI")[0].startswith("A²-Nets")
    assert csl[A2NETS]["title"].startswith("A<sup>2</sup>-Nets")


# --- 5. the arXiv-only paper ---------------------------------------------------------------------

def test_arxiv_only_paper_types(bib, biblatex, ris, csl):
    """Zotero has a Preprint type, but only its CSL-JSON import creates it (CSL ``article``). BibTeX.js
    has no preprint type: ``@misc`` -> Document (``@online`` would be Web Page, ``@article`` Journal
    Article); ``@misc`` is also what Zotero's own BibTeX export writes for a preprint. RIS has no preprint
    type either: GEN (what Zotero's RIS export writes for a preprint) -> Journal Article. The arXiv id
    reaches Extra in every format."""
    assert bib[ARXIV_ONLY].entry_type == "misc" and biblatex[ARXIV_ONLY].entry_type == "misc"
    assert _value(bib[ARXIV_ONLY], "howpublished") == "arXiv:1907.01193"  # printed by classic styles
    assert _value(bib[ARXIV_ONLY], "journal") is None
    assert _tags(ris[ARXIV_ONLY], "TY") == ["GEN"] and _tags(ris[ARXIV_ONLY], "PB") == ["arXiv"]
    assert csl[ARXIV_ONLY]["type"] == "article" and csl[ARXIV_ONLY]["number"] == "arXiv:1907.01193"
    assert all(e.entry_type != "online" for e in biblatex.values())


# --- 6. URLs -------------------------------------------------------------------------------------

def test_every_format_gives_the_same_url(bib, biblatex, ris, csl):
    """BibTeX.js and RIS.js copy ``url``/UR into URL; itemFromCSLJSON copies ``URL``."""
    with_url = 0
    for key in bib:
        url = _value(bib[key], "url")
        ris_url = (_tags(ris[key], "UR") or [None])[0]
        assert url == _value(biblatex[key], "url") == ris_url == csl[key].get("URL"), key
        with_url += url is not None
        if _value(bib[key], "eprint"):
            assert url, key  # at least the arXiv record
    assert with_url >= len(bib) // 2


# --- 9. the survey -------------------------------------------------------------------------------

def test_survey_entry(bib, biblatex, csl):
    key = "hassaninVisualAttentionMethods2022"
    assert bib[key].entry_type == biblatex[key].entry_type == "article"
    assert (_value(bib[key], "journal"), _value(bib[key], "year")) == ("Information Fusion", "2024")
    assert _value(biblatex[key], "journaltitle") == "Information Fusion"
    assert _value(biblatex[key], "publisher") is None  # not a BibLaTeX @article field: biber warns
    assert csl[key]["type"] == "article-journal" and csl[key]["container-title"] == "Information Fusion"
