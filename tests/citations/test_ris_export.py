"""RIS export checked against the RIS specification (Research Information Systems tagged format)."""

from __future__ import annotations

import re

import pytest

from service.catalog.loader import parse_bibtex
from service.settings import REPO_DATA

# Reference types and tags defined by the RIS specification.
SPEC_TYPES = set("""ABST ADVS AGGR ANCIENT ART BILL BLOG BOOK CASE CHAP CHART CLSWK COMP CONF CPAPER CTLG DATA
DBASE DICT EBOOK ECHAP EDBOOK EJOUR ELEC ENCYC EQUA FIGURE GEN GOVDOC GRANT HEAR ICOMM INPR JFULL JOUR LEGAL
MANSCPT MAP MGZN MPCT MULTI MUSIC NEWS PAMP PAT PCOMM RPRT SER SLIDE SOUND STAND STAT THES UNBILL UNPB
VIDEO""".split())
SPEC_TAGS = set("""TY A1 A2 A3 A4 AU AB AD AN BT C1 C2 C3 C4 C5 C6 C7 C8 CA CN CY DA DB DO DP ED EP ET ID IS J1
J2 JA JF JO KW L1 L2 L3 L4 LA LB M1 M2 M3 N1 N2 NV OP PB PY RI RN RP SE SN SP ST T1 T2 T3 TA TI TT U1 U2 U3 U4
U5 UR VL Y1 Y2 ER""".split())
LINE = re.compile(r"^([A-Z][A-Z0-9])  - (.*)$")


@pytest.fixture(scope="module")
def ris_text(client) -> str:
    r = client.get("/export", headers={"Accept": "application/x-research-info-systems"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-research-info-systems; charset=utf-8"
    assert r.headers["content-disposition"] == 'attachment; filename="attention-atlas.ris"'
    return r.text


def _records(text: str) -> list[list[tuple[str, str]]]:
    records, current = [], None
    for line in text.split("\r\n"):
        if not line:
            continue
        m = LINE.match(line)
        assert m, f"not a RIS line (tag, two spaces, hyphen, space): {line!r}"
        tag, value = m.groups()
        if tag == "TY":
            assert current is None, "TY before the previous record's ER"
            current = []
        assert current is not None, f"{tag} outside a record"
        current.append((tag, value))
        if tag == "ER":
            records.append(current)
            current = None
    assert current is None, "the last record has no ER"
    return records


def test_every_record_follows_the_spec(ris_text):
    assert "\n" not in ris_text.replace("\r\n", ""), "lines end with CR LF"
    records = _records(ris_text)
    entries, _ = parse_bibtex((REPO_DATA / "references.bib").read_text(encoding="utf-8"), "references.bib")
    assert len(records) == len(entries)
    for rec in records:
        tags = [t for t, _ in rec]
        assert tags[0] == "TY" and tags[-1] == "ER", tags
        assert tags.count("TY") == 1 and tags.count("ER") == 1
        assert rec[-1][1] == ""
        assert rec[0][1] in SPEC_TYPES
        assert set(tags) <= SPEC_TAGS, set(tags) - SPEC_TAGS
        values = dict(rec)
        assert re.fullmatch(r"\d{4}", values["PY"])
        assert re.fullmatch(r"\d{4}/(\d{2})?/(\d{2})?/.*", values["DA"])
        assert "TI" in values and "AU" in values
        for tag in ("TI", "T2", "SP", "EP", "DO", "UR", "PY", "VL"):
            assert tags.count(tag) <= 1, tag


def test_authors_pages_container_doi_and_url_per_record(ris_text):
    entries, _ = parse_bibtex((REPO_DATA / "references.bib").read_text(encoding="utf-8"), "references.bib")
    by_key = {}
    for rec in _records(ris_text):
        extra = [v for t, v in rec if t == "M2" and v.startswith("Citation Key: ")]
        assert len(extra) == 1
        by_key[extra[0].removeprefix("Citation Key: ")] = rec
    assert set(by_key) == set(entries)
    for key, entry in entries.items():
        rec = by_key[key]
        values = dict(rec)
        assert [v for t, v in rec if t == "AU"] == [f"{p['family']}, {p['given']}" for p in entry.persons["author"]]
        assert values["TI"] == entry.fields["title"].replace("$A^2$", "A²")
        assert values["PY"] == entry.fields["year"]
        container = entry.fields.get("booktitle") or entry.fields.get("journal")
        if values["TY"] == "CONF":
            assert values["C3"] == container and "T2" not in values
        elif container and values["TY"] != "GEN":
            assert values["T2"] == container
        if "doi" in entry.raw_fields:
            assert values["DO"] == entry.raw_fields["doi"]
        if "pages" in entry.raw_fields:
            first, _, last = entry.raw_fields["pages"].partition("--")
            assert values["SP"] == first and values.get("EP", "") == last
        if "url" in entry.raw_fields:
            assert values["UR"] == entry.raw_fields["url"]


def test_conference_and_journal_records(client):
    cbam = dict(_records(client.get("/techniques/cbam/citation", params={"format": "ris"}).text)[0])
    assert cbam["TY"] == "CONF"
    assert cbam["C3"] == "Proceedings of the European Conference on Computer Vision (ECCV)"
    assert (cbam["SP"], cbam["EP"], cbam["DA"]) == ("3", "19", "2018/09//")
    ema = _records(client.get("/techniques/expectation-maximization-attention/citation",
                              params={"format": "ris"}).text)[0]
    assert [v for t, v in ema if t == "M2"] == ["Citation Key: liExpectationMaximizationAttentionNetworks2019",
                                                "arXiv: 1907.13426"]
    assert "DB" not in dict(ema) and "AN" not in dict(ema)
    survey = [dict(r) for r in _records(client.get("/export", params={"format": "ris", "category": "hard"}).text)
              if dict(r)["TI"].startswith("Visual Attention Methods")][0]
    assert survey["TY"] == "JOUR"
    assert survey["T2"] == "Information Fusion"
    apcnn = dict(_records(client.get("/techniques/attention-pyramid/citation", params={"format": "ris"}).text)[0])
    assert apcnn["TY"] == "JOUR"
    assert (apcnn["T2"], apcnn["VL"], apcnn["SP"], apcnn["EP"]) == (
        "IEEE Transactions on Image Processing", "30", "2826", "2836")
