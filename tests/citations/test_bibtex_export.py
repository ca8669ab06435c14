"""BibTeX and BibLaTeX exports: round trips through bibtexparser and pybtex, keys, encoding, braces,
arXiv fields, month macros and page ranges."""

from __future__ import annotations

import re

import bibtexparser
import pytest
from pybtex.database import parse_string as pybtex_parse
from pybtex.richtext import Text

from service.catalog.loader import parse_bibtex
from service.citations import bibtex
from service.citations.keys import better_bibtex_key
from service.models import Reference
from service.settings import REPO_DATA

ORIGINAL = (REPO_DATA / "references.bib").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def library_bib(client) -> str:
    r = client.get("/export", params={"format": "bibtex"})
    assert r.status_code == 200
    return r.text


@pytest.fixture(scope="module")
def original():
    entries, problems = parse_bibtex(ORIGINAL, "references.bib")
    assert not problems
    return entries


def _exported_form(entry) -> tuple[str, dict[str, str]]:
    """What the export adds to an entry of data/references.bib, stated independently of the exporter:
    arXiv papers gain ``eprinttype = {arxiv}`` (Zotero reads the id from it), a paper without a URL gets
    its arXiv record, and an arXiv-only ``@article`` (journal "arXiv preprint") becomes ``@misc`` with
    ``howpublished = {arXiv:<id>}`` and no journal."""
    fields = dict(entry.fields)
    entry_type = entry.entry_type
    eprint = fields.get("eprint")
    if eprint:
        fields["eprinttype"] = "arxiv"
        fields.setdefault("url", f"https://arxiv.org/abs/{eprint}")
        if entry_type == "article" and fields.get("journal", "").lower().startswith("arxiv"):
            entry_type = "misc"
            del fields["journal"]
            fields["howpublished"] = f"arXiv:{eprint}"
    return entry_type, fields


def _entries(text: str) -> dict[str, str]:
    """Each entry's text by key."""
    return {m.group(2): m.group(0) for m in re.finditer(r"@(\w+)\{([^,]+),.*?\n\}", text, re.S)}


def test_whole_library_round_trips_through_bibtexparser(library_bib, original):
    exported, problems = parse_bibtex(library_bib, "export.bib")
    assert problems == []
    assert set(exported) == set(original)  # every reference, the survey included
    for key, entry in original.items():
        back = exported[key]
        assert (back.entry_type, back.fields) == _exported_form(entry), key  # decoded values, braces removed
        assert back.persons == entry.persons, key


def _pybtex_view(text: str, decode: bool = False) -> dict[str, tuple]:
    """Entry type, fields and people as pybtex reads them (raw LaTeX, or decoded to Unicode)."""
    db = pybtex_parse(text, "bibtex")

    def plain(value: str) -> str:
        if not decode:
            return value
        return Text.from_latex(value).render_as("text") if "\\" in value else value.replace("{", "").replace("}", "")

    out = {}
    for key, e in db.entries.items():
        fields = {k.lower(): v for k, v in e.fields.items()}
        persons = {role: [(plain(" ".join(p.last_names)), plain(" ".join(p.first_names + p.middle_names)))
                          for p in people] for role, people in e.persons.items()}
        out[key] = (e.type, fields, persons)
    return out


def test_whole_library_round_trips_through_pybtex(library_bib, original):
    exported, source = _pybtex_view(library_bib), _pybtex_view(ORIGINAL)
    assert set(exported) == set(source)
    for key in source:
        entry_type, fields, persons = source[key]
        added_type, added = _exported_form(original[key])
        expected_fields = {**fields, **{k: v for k, v in added.items() if k not in original[key].fields}}
        if added_type != original[key].entry_type:
            entry_type = added_type
            expected_fields.pop("journal")
        if "title" in expected_fields:
            expected_fields["title"] = expected_fields["title"].replace("$A^2$", "$A^{2}$")
        assert exported[key] == (entry_type, expected_fields, persons), key


def test_pybtex_reads_the_same_people_as_the_database(library_bib, original):
    exported = _pybtex_view(library_bib, decode=True)
    for key, entry in original.items():
        people = [(p["family"], p["given"]) for p in entry.persons["author"]]
        assert exported[key][2]["author"] == people, key


def test_unicode_variant_round_trips_and_keeps_utf8(client, original):
    text = client.get("/export", params={"format": "bibtex", "unicode": "true"}).text
    # a non-ASCII initial is one brace group, so that classic BibTeX abbreviates it whole (ieeetr: "Ł.")
    assert "Kaiser, {\\relax Ł}ukasz" in text and "Fleuret, François" in text
    exported, problems = parse_bibtex(text, "export.bib")
    assert problems == []
    for key, entry in original.items():
        assert exported[key].fields == _exported_form(entry)[1], key
        assert exported[key].persons == entry.persons, key


def test_default_output_is_ascii_with_latex_accents(library_bib):
    assert library_bib.isascii()
    assert "Kaiser, {\\L}ukasz" in library_bib
    assert "Fleuret, Fran{\\c{c}}ois" in library_bib


def test_keys_are_better_bibtex_keys_and_unique(client, library_bib):
    keys = list(_entries(library_bib))
    assert len(keys) == len({k.lower() for k in keys})
    lib = bibtexparser.parse_string(library_bib)
    for entry in lib.entries:
        if entry.key == "hassaninVisualAttentionMethods2022":
            continue  # the survey keeps the key of its 2022 preprint, the one its readers already use
        family = entry["author"].split(" and ")[0].split(",")[0]
        assert entry.key == better_bibtex_key(family, entry["title"], entry["year"]), entry.key


def test_colliding_keys_get_better_bibtex_postfixes():
    def ref(key: str, title: str) -> Reference:
        return Reference(citekey=key, entry_type="article", fields={"title": title, "year": "2020"},
                         persons={"author": [{"family": "Li", "given": "A"}]}, bibtex="")

    keys = bibtex.assign_keys([ref("liAttentionNets2020", "x"), ref("LiAttentionNets2020", "y"),
                               ref("bad key!", "Attention Nets Everywhere")])
    assert keys["LiAttentionNets2020"] == "LiAttentionNets2020"
    assert keys["liAttentionNets2020"] == "liAttentionNets2020a"  # same key apart from case
    assert keys["bad key!"] == "liAttentionNetsEverywhere2020"  # rebuilt from the fields


def test_titles_keep_protective_braces_and_math(library_bib):
    entries = _entries(library_bib)
    assert "title         = {{CBAM}: Convolutional Block Attention Module}," in entries["wooCBAMConvolutionalBlock2018"]
    # $A^{2}$ (not $A^2$): Zotero's BibTeX import reads only the braced form as a superscript
    assert "{{$A^{2}$-Nets}: Double Attention Networks}" in entries["chenA2NetsDoubleAttention2018"]
    assert "{Fast {Transformers} with Clustered Attention}" in entries["vyasFastTransformersClustered2020"]


def test_protect_title_braces_unprotected_acronyms_only():
    assert bibtex.protect_title("ResNeSt and 3D Attention for GANs") == "{ResNeSt} and {3D} Attention for {GANs}"
    assert bibtex.protect_title("{CBAM}: Block Attention") == "{CBAM}: Block Attention"
    assert bibtex.protect_title("$A^2$-Nets with {\\L}ukasz") == "$A^2$-Nets with {\\L}ukasz"


def test_latex_and_unicode_conversions():
    assert bibtex.latex_encode("Grün – Zürich") == 'Gr{\\"u}n -- Z{\\"u}rich'
    assert bibtex.latex_encode("R&D 50%", escape_specials=True) == "R{\\&}D 50{\\%}"
    assert bibtex.latex_letters_to_unicode('{CBAM} by Fran{\\c{c}}ois Gr\\"{u}n and {\\L}ukasz') == \
        "{CBAM} by François Grün and Łukasz"


def test_arxiv_doi_url_month_and_pages(library_bib):
    e = _entries(library_bib)
    cbam = e["wooCBAMConvolutionalBlock2018"]
    assert re.search(r"month\s+= sep,", cbam)  # a macro, not a braced string
    assert re.search(r"pages\s+= \{3--19\}", cbam)
    ema = e["liExpectationMaximizationAttentionNetworks2019"]
    assert re.search(r"eprint\s+= \{1907\.13426\}", ema)
    assert re.search(r"archivePrefix = \{arXiv\}", ema)
    gatcluster = e["niuGATClusterSelfSupervisedGaussianAttention2020"]
    assert re.search(r"primaryClass\s+= \{cs\.CV\}", gatcluster)
    axial = e["wangAxialDeepLabStandAloneAxialAttention2020"]
    assert re.search(r"doi\s+= \{10\.1007/978-3-030-58548-8_7\}", axial)
    boosted = e["chenBoostedAttentionLeveraging2018"]
    assert "url           = {https://www-users.cs.umn.edu/~qzhao/captioning.html}" in boosted  # ~ kept


def test_biblatex_variant(client):
    r = client.get("/techniques/cbam/citation", headers={"Accept": "application/x-biblatex"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-biblatex")
    text = r.text
    assert re.search(r"date\s+= \{2018-09\}", text) and "month" not in text and "year " not in text
    ema = client.get("/techniques/expectation-maximization-attention/citation", params={"format": "biblatex"}).text
    assert re.search(r"eprinttype\s+= \{arxiv\}", ema) and "archivePrefix" not in ema
    survey = client.get("/export", params={"format": "biblatex", "category": "hard"}).text
    assert re.search(r"journaltitle\s+= \{Information Fusion\}", survey)
    inverse = client.get("/techniques/inverse-attention/citation", params={"format": "biblatex"}).text
    # an arXiv-only paper: @misc (Zotero: Document, with the id in Extra), not @online (Zotero: Web Page)
    assert inverse.startswith("@misc{sindagiInverseAttentionGuided2019,")
    assert re.search(r"eprint\s+= \{1907\.01193\}", inverse) and "howpublished" not in inverse
    survey_entry = _entries(survey)["hassaninVisualAttentionMethods2022"]
    assert "publisher" not in survey_entry  # not in BibLaTeX's data model for @article
    lib = bibtexparser.parse_string(survey)
    assert not lib.failed_blocks


def test_biblatex_leaves_out_fields_its_data_model_lacks():
    """Biber's --validate-datamodel warns about `publisher` on an @article (an imported journal article
    often has one); classic BibTeX ignores it, RIS and CSL-JSON keep it."""
    ref = Reference(citekey="doeJournalArticle2020", entry_type="article",
                    fields={"title": "Journal Article", "journal": "J", "year": "2020", "publisher": "Elsevier"},
                    persons={"author": [{"family": "Doe", "given": "Jane"}]}, bibtex="")
    work = bibtex.work_from(ref)
    assert "publisher" not in bibtex.bibtex_fields(work, biblatex=True)[1]
    assert bibtex.bibtex_fields(work)[1]["publisher"] == "{Elsevier}"
