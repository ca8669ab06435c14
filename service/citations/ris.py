"""RIS export (the tagged format of Reference Manager, read by Zotero, EndNote and Mendeley).

Each record starts with ``TY`` and ends with ``ER``; every line is ``XX  - value`` (tag, two spaces,
hyphen, space) and lines end with CR LF, as the RIS specification asks. Tags are chosen so that
Zotero's RIS import puts each value in the matching Zotero field (see ``ZOTERO_FIELDS``):

* a conference paper's proceedings title goes in ``C3`` only: Zotero reads ``T2`` of a ``CONF`` record
  as the conference name, which these references do not record separately;
* the citation key and the arXiv id go in ``M2`` lines (``Citation Key: <key>``, ``arXiv: <id>``),
  which Zotero appends to Extra; ``DB``/``AN`` would land in Archive / Loc. in Archive instead;
* titles are plain text with Unicode super/subscripts (``A²-Nets``): Zotero strips HTML tags from RIS;
* an arXiv-only paper is ``GEN`` (Zotero: Journal Article; RIS has no preprint type, and ``GEN`` is
  what Zotero's own RIS export writes for a Preprint item) with arXiv as publisher.
"""

from __future__ import annotations

from .bibtex import Work
from .richtext import plain_text

MEDIA_TYPE = "application/x-research-info-systems"
EOL = "\r\n"

_TYPES = {
    "article": "JOUR", "inproceedings": "CONF", "conference": "CONF", "proceedings": "CONF", "book": "BOOK",
    "inbook": "CHAP", "incollection": "CHAP", "phdthesis": "THES", "mastersthesis": "THES",
    "techreport": "RPRT", "manual": "RPRT", "unpublished": "UNPB", "online": "ELEC", "misc": "GEN",
}

# Which Zotero field Zotero's RIS import fills from each tag written here.
ZOTERO_FIELDS = {
    "TY": "Item Type (JOUR: Journal Article, CONF: Conference Paper, BOOK, CHAP: Book Section, ...)",
    "TI": "Title", "AU": "Author (one creator per line)", "A2": "Editor",
    "T2": "Publication (JOUR) / Book Title (CHAP) / Conference Name (CONF, not written)",
    "C3": "Proceedings Title (CONF)", "T3": "Series", "VL": "Volume", "IS": "Issue",
    "SP": "Pages (start)", "EP": "Pages (end)", "PY": "Date (year)", "DA": "Date", "PB": "Publisher",
    "CY": "Place", "C1": "Place (CONF)", "DO": "DOI", "UR": "URL", "SN": "ISBN / ISSN",
    "M2": "Extra (one line per M2 tag)",
}


def _line(tag: str, value: str | None) -> str | None:
    if value is None:
        return None
    value = " ".join(str(value).split())  # one line per tag: no embedded newlines
    return f"{tag}  - {value}" if value else None


def record(work: Work) -> list[str]:
    ty = "GEN" if work.is_preprint else _TYPES.get(work.entry_type, "GEN")
    lines: list[str | None] = [_line("TY", ty), _line("TI", plain_text(work.title))]
    for p in work.authors:
        lines.append(_line("AU", ", ".join(x for x in (p.get("family", ""), p.get("given", "")) if x)))
    for p in work.editors:
        lines.append(_line("A2", ", ".join(x for x in (p.get("family", ""), p.get("given", "")) if x)))
    container = work.container
    if container and not work.is_preprint:
        if ty == "CONF":
            lines.append(_line("C3", container))
        else:
            lines.append(_line("T2", container))
    lines.append(_line("T3", work.text("series")))
    lines.append(_line("VL", work.text("volume")))
    lines.append(_line("IS", work.text("number")))
    pages = work.pages
    if pages:
        lines.append(_line("SP", pages[0]))
        lines.append(_line("EP", pages[1]))
    if work.year:
        lines.append(_line("PY", str(work.year)))
        lines.append(_line("DA", f"{work.year}/{work.month:02d}//" if work.month else f"{work.year}///"))
    publisher = work.text("publisher") or work.text("school") or work.text("institution")
    lines.append(_line("PB", "arXiv" if work.is_preprint and not publisher else publisher))
    lines.append(_line("C1" if ty == "CONF" else "CY", work.text("address")))
    lines.append(_line("SN", work.text("isbn") or work.text("issn")))
    lines.append(_line("DO", work.doi))
    lines.append(_line("UR", work.link))
    lines.append(_line("M2", f"Citation Key: {work.key}"))
    if work.arxiv_id:
        lines.append(_line("M2", f"arXiv: {work.arxiv_id}"))
    lines.append("ER  - ")
    return [x for x in lines if x is not None]


def write(works: list[Work]) -> str:
    return "".join(EOL.join(record(w)) + EOL + EOL for w in works)
