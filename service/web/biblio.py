"""The original paper's metadata in the forms reference managers read from a web page.

* Highwire Press ``citation_*`` meta tags (read by Zotero's Embedded Metadata translator, Google Scholar,
  Mendeley and others);
* a COinS ``ContextObject`` (OpenURL 1.0 KEV, Z39.88-2004) for ``<span class="Z3988" title="...">``;
* a plain formatted reference for people.

Everything works from a :class:`~service.models.Reference` row: ``fields`` (Unicode, LaTeX decoded),
``persons`` (``{"author": [{"family", "given"}]}``) and ``bibtex`` (the entry as written).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote

from ..citations.bibtex import work_from
from ..citations.richtext import plain_text
from ..models import Reference

__all__ = ["plain_text"]

ARXIV_ABS = "https://arxiv.org/abs/{}"
ARXIV_PDF = "https://arxiv.org/pdf/{}"
DOI_URL = "https://doi.org/{}"

_PAGE_SPLIT = re.compile(r"\s*(?:--|–|—|-)\s*")
_RAW_URL = re.compile(r"\burl\s*=\s*[{\"]([^}\"]*)[}\"]", re.IGNORECASE)


@dataclass(frozen=True)
class Person:
    family: str
    given: str

    @property
    def inverted(self) -> str:
        """``Family, Given``: the form both Zotero's Highwire and COinS readers split unambiguously."""
        return f"{self.family}, {self.given}" if self.given else self.family

    @property
    def display(self) -> str:
        return f"{self.given} {self.family}".strip()


@dataclass(frozen=True)
class Paper:
    """The fields of one reference that the pages publish, already in plain text."""

    citekey: str
    kind: str  # "article", "conference", "book", "chapter", "other"
    title: str
    authors: tuple[Person, ...]
    year: str | None
    month: int | None
    journal: str | None
    proceedings: str | None  # booktitle of a conference paper or chapter
    volume: str | None
    issue: str | None
    pages: str | None
    first_page: str | None
    last_page: str | None
    publisher: str | None
    place: str | None
    series: str | None
    doi: str | None
    arxiv_id: str | None
    url: str | None
    isbn: str | None
    issn: str | None
    editors: tuple[Person, ...] = ()

    @property
    def date(self) -> str | None:
        """``2018`` or, with the month, ``2018/09`` (Highwire's date form)."""
        if not self.year:
            return None
        return f"{self.year}/{self.month:02d}" if self.month else self.year

    @property
    def doi_url(self) -> str | None:
        return DOI_URL.format(self.doi) if self.doi else None

    @property
    def arxiv_url(self) -> str | None:
        return ARXIV_ABS.format(self.arxiv_id) if self.arxiv_id else None

    @property
    def pdf_url(self) -> str | None:
        """A PDF anyone can download; only arXiv's is known for certain."""
        return ARXIV_PDF.format(self.arxiv_id) if self.arxiv_id else None

    @property
    def venue(self) -> str | None:
        return self.journal or self.proceedings


def split_pages(pages: str | None) -> tuple[str | None, str | None]:
    if not pages:
        return None, None
    parts = [p for p in _PAGE_SPLIT.split(pages.strip()) if p]
    if not parts:
        return None, None
    return parts[0], (parts[1] if len(parts) > 1 else None)


def _raw_url(ref: Reference) -> str | None:
    """The url as written in the entry: LaTeX decoding would turn a ``~`` in a URL into a space."""
    m = _RAW_URL.search(ref.bibtex or "")
    if m and m.group(1).strip().startswith(("http://", "https://")):
        return m.group(1).strip()
    url = (ref.fields.get("url") or "").strip()
    return url if url.startswith(("http://", "https://")) and " " not in url else None


def _kind(ref: Reference) -> str:
    t = ref.entry_type.lower()
    f = ref.fields
    if t == "article" or (t not in ("inproceedings", "conference", "incollection", "inbook") and f.get("journal")):
        return "article"
    if t in ("inproceedings", "conference", "proceedings"):
        return "conference"
    if t in ("incollection", "inbook"):
        return "chapter"
    if t == "book":
        return "book"
    return "conference" if f.get("booktitle") else "other"


def paper_from_reference(ref: Reference) -> Paper:
    """The page's view of a reference. Identifiers, month and link follow the same rules as the exports
    (:class:`service.citations.bibtex.Work`), so a page and an export never disagree."""
    f = ref.fields
    work = work_from(ref)

    def get(name: str) -> str | None:
        return plain_text(f.get(name)) or None

    first, last = split_pages(f.get("pages"))
    doi = (f.get("doi") or "").strip() or None
    if doi:
        doi = re.sub(r"^(?:https?://(?:dx\.)?doi\.org/|doi:)", "", doi, flags=re.IGNORECASE)
    year = (f.get("year") or "").strip() or None
    url = _raw_url(ref) or work.arxiv_url or (DOI_URL.format(doi) if doi else None)
    return Paper(
        citekey=ref.citekey, kind=_kind(ref), title=plain_text(work.title or f.get("title")),
        authors=_people(ref.persons.get("author", [])), editors=_people(ref.persons.get("editor", [])),
        year=year, month=work.month, journal=None if work.is_preprint else get("journal"),
        proceedings=get("booktitle"), volume=get("volume"), issue=get("number"),
        pages=get("pages"), first_page=first, last_page=last, publisher=get("publisher"), place=get("address"),
        series=get("series"), doi=doi, arxiv_id=work.arxiv_id, url=url, isbn=get("isbn"), issn=get("issn"),
    )


def _people(people: list[dict[str, str]]) -> tuple[Person, ...]:
    return tuple(Person(plain_text(p.get("family")), plain_text(p.get("given"))) for p in people)


def highwire_tags(p: Paper) -> list[tuple[str, str]]:
    """``(name, content)`` pairs for ``<meta name=... content=...>``, in the order Google Scholar documents."""
    tags: list[tuple[str, str]] = [("citation_title", p.title)]
    tags += [("citation_author", a.inverted) for a in p.authors]
    tags += [("citation_editor", e.inverted) for e in p.editors]
    if p.date:
        tags.append(("citation_publication_date", p.date))
    if p.kind == "article" and p.journal:
        tags.append(("citation_journal_title", p.journal))
    elif p.kind == "conference" and p.proceedings:
        tags.append(("citation_conference_title", p.proceedings))
    elif p.kind == "chapter" and p.proceedings:
        tags.append(("citation_book_title", p.proceedings))
    for name, value in (("citation_series_title", p.series), ("citation_volume", p.volume),
                        ("citation_issue", p.issue), ("citation_firstpage", p.first_page),
                        ("citation_lastpage", p.last_page), ("citation_publisher", p.publisher),
                        ("citation_isbn", p.isbn), ("citation_issn", p.issn), ("citation_doi", p.doi),
                        ("citation_arxiv_id", p.arxiv_id), ("citation_pdf_url", p.pdf_url),
                        ("citation_public_url", p.url)):
        if value:
            tags.append((name, value))
    return tags


def coins(p: Paper) -> str:
    """The KEV ContextObject for a COinS span's ``title`` (before HTML attribute escaping).

    Journal articles use the journal format; conference papers, books and chapters the book format with
    ``rft.genre`` ``proceeding``, ``book`` or ``bookitem``, which is how Zotero tells them apart."""
    pairs: list[tuple[str, str]] = [("ctx_ver", "Z39.88-2004")]
    if p.kind == "article":
        pairs += [("rft_val_fmt", "info:ofi/fmt:kev:mtx:journal"), ("rft.genre", "article"),
                  ("rft.atitle", p.title)]
        if p.journal:
            pairs.append(("rft.jtitle", p.journal))
    else:
        genre = {"conference": "proceeding", "book": "book", "chapter": "bookitem"}.get(p.kind, "document")
        pairs += [("rft_val_fmt", "info:ofi/fmt:kev:mtx:book"), ("rft.genre", genre)]
        if p.kind == "book":
            pairs.append(("rft.btitle", p.title))
        else:
            pairs.append(("rft.atitle", p.title))
            if p.proceedings:
                pairs.append(("rft.btitle", p.proceedings))
    pairs += [("rft.au", a.inverted) for a in p.authors]
    date = f"{p.year}-{p.month:02d}" if p.year and p.month else p.year
    for key, value in (("rft.date", date), ("rft.volume", p.volume), ("rft.issue", p.issue)):
        if value:
            pairs.append((key, value))
    if p.first_page and p.last_page:
        pairs += [("rft.spage", p.first_page), ("rft.epage", p.last_page)]
    elif p.pages:
        pairs.append(("rft.pages", p.pages))
    for key, value in (("rft.pub", p.publisher), ("rft.place", p.place), ("rft.series", p.series),
                       ("rft.isbn", p.isbn), ("rft.issn", p.issn)):
        if value:
            pairs.append((key, value))
    if p.doi:
        pairs.append(("rft_id", f"info:doi/{p.doi}"))
    if p.arxiv_id:
        pairs.append(("rft_id", f"info:arxiv/{p.arxiv_id}"))
    if p.url:
        pairs.append(("rft_id", p.url))
    return "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs)


def author_list(p: Paper) -> str:
    """``A, B and C`` in display order."""
    names = [a.display for a in p.authors]
    if len(names) <= 2:
        return " and ".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def short_authors(p: Paper) -> str:
    if not p.authors:
        return ""
    if len(p.authors) == 1:
        return p.authors[0].family
    if len(p.authors) == 2:
        return f"{p.authors[0].family} and {p.authors[1].family}"
    return f"{p.authors[0].family} et al."
