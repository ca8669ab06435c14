"""CSL-JSON (the data format of the Citation Style Language, read by Zotero, Pandoc and citeproc)."""

from __future__ import annotations

from typing import Any

from .bibtex import Work
from .richtext import csl_markup

MEDIA_TYPE = "application/vnd.citationstyles.csl+json"

_TYPES = {
    "article": "article-journal", "inproceedings": "paper-conference", "conference": "paper-conference",
    "proceedings": "book", "book": "book", "inbook": "chapter", "incollection": "chapter",
    "phdthesis": "thesis", "mastersthesis": "thesis", "techreport": "report", "manual": "report",
    "unpublished": "manuscript", "online": "webpage", "misc": "document",
}


def _names(people: list[dict[str, str]]) -> list[dict[str, str]]:
    out = []
    for p in people:
        family, given = p.get("family", "").strip(), p.get("given", "").strip()
        if not given and " " in family:
            out.append({"literal": family})
        elif given:
            out.append({"family": family, "given": given})
        else:
            out.append({"family": family})
    return out


def to_csl(work: Work) -> dict[str, Any]:
    """One CSL-JSON item. arXiv-only papers become ``article`` (Zotero: Preprint) with the repository as
    publisher and the arXiv id as number.

    ``note`` carries what Zotero keeps only in Extra, one ``Label: value`` line each: ``Citation Key:
    <key>`` (Zotero's CSL-JSON import ignores ``citation-key`` but reads this line into the item's
    citation key) and, for papers with an arXiv version, ``arXiv: <id>``. Titles keep inline math as
    CSL rich text (``A<sup>2</sup>-Nets``), which Zotero stores and citeproc renders."""
    item: dict[str, Any] = {"id": work.key, "citation-key": work.key,
                            "type": "article" if work.is_preprint else _TYPES.get(work.entry_type, "document")}
    if work.title:
        item["title"] = csl_markup(work.title)
    if work.authors:
        item["author"] = _names(work.authors)
    if work.editors:
        item["editor"] = _names(work.editors)
    container = work.container
    if container and not work.is_preprint:
        item["container-title"] = container
    for csl_name, bib_name in (("collection-title", "series"), ("volume", "volume"), ("issue", "number"),
                               ("publisher", "publisher"), ("publisher-place", "address"), ("edition", "edition"),
                               ("ISBN", "isbn"), ("ISSN", "issn")):
        value = work.text(bib_name)
        if value:
            item[csl_name] = value
    if work.entry_type in ("phdthesis", "mastersthesis") and work.text("school"):
        item["publisher"] = work.text("school")
    if work.entry_type == "techreport" and work.text("institution"):
        item["publisher"] = work.text("institution")
    pages = work.pages
    if pages:
        item["page"] = f"{pages[0]}-{pages[1]}" if pages[1] else pages[0]
    if work.year:
        item["issued"] = {"date-parts": [[work.year, work.month] if work.month else [work.year]]}
    if work.doi:
        item["DOI"] = work.doi
    if work.link:
        item["URL"] = work.link
    note = [f"Citation Key: {work.key}"]
    if work.arxiv_id:
        note.append(f"arXiv: {work.arxiv_id}")
        if work.is_preprint:
            item["publisher"] = "arXiv"
            item["number"] = f"arXiv:{work.arxiv_id}"
    item["note"] = "\n".join(note)
    return item


def to_csl_items(works: list[Work]) -> list[dict[str, Any]]:
    return [to_csl(w) for w in works]
