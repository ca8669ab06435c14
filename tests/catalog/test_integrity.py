"""The knowledge in data/ is complete and consistent."""

from __future__ import annotations

import re

import pytest

from service.catalog.latex import check_math
from service.catalog.loader import load_catalog
from service.citations.keys import better_bibtex_key


@pytest.fixture(scope="module")
def catalog(knowledge_dir):
    return load_catalog(knowledge_dir)  # raises with every problem listed if anything is invalid


def test_every_survey_technique_is_present(catalog):
    # the survey reviews 50 techniques; the catalogue keeps every one it lists (see README)
    assert len(catalog.techniques) >= 50
    subcats = {t.subcategory for t in catalog.techniques.values()}
    declared = {s.id for c in catalog.taxonomy.categories for s in c.subcategories}
    assert subcats == declared, "every subcategory of the taxonomy has techniques and no other is used"


def test_every_technique_is_complete(catalog):
    for slug, t in catalog.techniques.items():
        assert t.summary.count(" ") >= 25, f"{slug}: summary too short for a paragraph"
        assert 2 <= len(t.strengths) <= 6 and 2 <= len(t.limitations) <= 6, slug
        assert t.applications and t.complexity.time.startswith("O(") and t.complexity.memory.startswith("O("), slug
        assert len(set(t.strengths)) == len(t.strengths) and len(set(t.limitations)) == len(t.limitations), slug
        # every technique records where its citation was confirmed, or its fields are reported unconfirmed
        # (tests/catalog/test_provenance.py keeps that list)
        assert t.verification or t.citekey in {"sindagiInverseAttentionGuided2019",
                                               "faraziReciprocalAttentionFusion2018"}, f"{slug}: no source recorded"


def test_strengths_and_limitations_are_not_shared_between_techniques(catalog):
    seen: dict[str, str] = {}
    for slug, t in catalog.techniques.items():
        for point in [*t.strengths, *t.limitations]:
            key = re.sub(r"\W+", " ", point.lower()).strip()
            assert key not in seen, f"'{point}' appears in both {seen.get(key)} and {slug}"
            seen[key] = slug


def test_citekeys_resolve_and_follow_better_bibtex(catalog):
    for slug, t in catalog.techniques.items():
        assert t.citekey in catalog.references, slug
    assert catalog.taxonomy.survey_citekey in catalog.references
    for key, entry in catalog.references.items():
        family = entry.persons["author"][0]["family"]
        years = {entry.fields["year"]}
        if entry.fields.get("eprint", "")[:2].isdigit():
            years.add("20" + entry.fields["eprint"][:2])  # arXiv first version, as Zotero records it
        assert key in {better_bibtex_key(family, entry.fields["title"], y) for y in years}, (
            key, [better_bibtex_key(family, entry.fields["title"], y) for y in years])


def test_every_reference_is_cited(catalog):
    cited = {t.citekey for t in catalog.techniques.values()} | {catalog.taxonomy.survey_citekey}
    assert set(catalog.references) == cited


def test_related_slugs_exist(catalog):
    for slug, t in catalog.techniques.items():
        assert t.related, f"{slug}: relate it to at least one technique"
        assert all(r in catalog.techniques and r != slug for r in t.related), slug


def test_formulas_are_well_formed_and_legend_covers_symbols(catalog):
    for slug, t in catalog.techniques.items():
        assert check_math(t.formula.latex) == [], slug
        for item in t.formula.legend:
            assert check_math(item.symbol) == [], (slug, item.symbol)


def test_bibliographic_fields_are_well_formed(catalog):
    for key, e in catalog.references.items():
        raw = e.raw_fields
        if "pages" in raw:
            assert re.fullmatch(r"\d+(\.\d+)?(--\d+(\.\d+)?)?", raw["pages"]), (key, raw["pages"])
        if "doi" in raw:
            assert re.fullmatch(r"10\.\d{4,9}/\S+", raw["doi"]), key
        if "eprint" in raw:
            assert re.fullmatch(r"\d{4}\.\d{4,5}", raw["eprint"]), key
            assert raw.get("archiveprefix") == "arXiv", key
        if "month" in raw:
            assert raw["month"] in {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                    "dec"}, key
        assert e.entry_type in {"article", "inproceedings", "incollection", "misc", "book"}, key
        assert ("booktitle" in raw) == (e.entry_type == "inproceedings"), key
        assert all(ord(ch) < 128 for ch in e.bibtex), f"{key}: non-ASCII must be LaTeX-encoded in references.bib"


@pytest.mark.parametrize("src,problem", [
    (r"\frac{a}{b", "unclosed"), (r"a}", "unbalanced"), (r"\softmax(x)", "unknown command"),
    (r"\left( x", "do not pair"), (r"\begin{aligned} x \end{cases}", "without matching"), ("$x$", "$"),
])
def test_latex_checker_catches_broken_formulas(src, problem):
    assert any(problem in p for p in check_math(src))


def test_latex_checker_accepts_real_math():
    assert check_math(r"\operatorname{softmax}\left(\frac{QK^\top}{\sqrt{d_k}}\right)V \\ "
                      r"\begin{aligned} a &= \sum_{i=1}^{N} x_i \end{aligned}") == []
