"""What the templates show: plain dictionaries built from the query layer, one function per page."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlmodel import Session

from ..catalog import query
from ..models import Application, Category, Reference, Technique, TechniqueApplication
from . import biblio

_FIRST_SENTENCE = re.compile(r"^(.{40,}?[.!?])(?:\s|$)", re.DOTALL)


def first_sentence(text: str, limit: int = 260) -> str:
    m = _FIRST_SENTENCE.match(text.strip())
    out = m.group(1) if m else text.strip()
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + " …"
    return out


@dataclass
class IndexQuery:
    """The index page's own parameters (the search form, paging); empty form fields mean 'any'."""

    q: str | None = None
    category: str | None = None
    subcategory: str | None = None
    applications: list[str] = field(default_factory=list)
    limit: int | None = None  # as requested; None: the configured maximum
    cursor: str | None = None

    def filters(self) -> query.Filters:
        return query.Filters(category=self.category, subcategory=self.subcategory, applications=self.applications,
                             q=self.q)

    def params(self, **change: Any) -> list[tuple[str, str]]:
        values = {"q": self.q, "category": self.category, "subcategory": self.subcategory,
                  "application": self.applications, "limit": self.limit, "cursor": self.cursor, **change}
        out: list[tuple[str, str]] = []
        for key, value in values.items():
            for v in value if isinstance(value, list) else [value]:
                if v not in (None, ""):
                    out.append((key, str(v)))
        return out

    def url(self, root: str, **change: Any) -> str:
        qs = urlencode(self.params(**change))
        return f"{root}/" + (f"?{qs}" if qs else "")

    @property
    def active(self) -> bool:
        return bool(self.q or self.category or self.subcategory or self.applications)


def taxonomy(session: Session) -> list[dict[str, Any]]:
    """Categories in the survey's order, each with its subcategories."""
    rows = list(session.execute(select(Category).order_by(Category.position, Category.id)).scalars())
    tops = [c for c in rows if c.parent_id is None]
    return [{"id": c.id, "name": c.name, "description": c.description,
             "subcategories": [{"id": s.id, "name": s.name, "description": s.description}
                               for s in rows if s.parent_id == c.id]} for c in tops]


def application_tags(session: Session) -> list[str]:
    used = select(TechniqueApplication.tag).distinct()
    return sorted(session.execute(select(Application.tag).where(Application.tag.in_(used))).scalars())


def paper_for(ref: Reference | None) -> biblio.Paper | None:
    return biblio.paper_from_reference(ref) if ref is not None else None


def index_context(session: Session, iq: IndexQuery, page: query.Page, root: str) -> dict[str, Any]:
    rel = query.load_related(session, [t.slug for t in page.items])
    tax = taxonomy(session)
    names = {c.id: c.name for c in rel.categories.values()}
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in page.items:
        paper = paper_for(rel.references.get(t.citekey))
        groups.setdefault((t.category_id, t.subcategory_id), []).append({
            "slug": t.slug, "name": t.name, "year": t.year, "aliases": t.aliases,
            "summary": first_sentence(t.summary), "has_implementation": t.has_implementation,
            "applications": rel.applications.get(t.slug, []),
            "also_in": [{"id": s, "name": names.get(s, s)} for s in t.also_in],
            "paper": paper, "coins": biblio.coins(paper) if paper else None,
            "authors": biblio.short_authors(paper) if paper else "",
        })
    sections = []
    for cat in tax:
        subs = [{**sub, "items": groups.pop((cat["id"], sub["id"]), [])} for sub in cat["subcategories"]]
        subs = [s for s in subs if s["items"]]
        if subs:
            sections.append({**cat, "subcategories": subs, "count": sum(len(s["items"]) for s in subs)})
    for (cat_id, sub_id), items in groups.items():  # a category the taxonomy no longer lists
        sections.append({"id": cat_id, "name": names.get(cat_id, cat_id), "description": "", "count": len(items),
                         "subcategories": [{"id": sub_id, "name": names.get(sub_id, sub_id), "description": "",
                                            "items": items}]})
    # one COinS per paper, on its first item in page order: Zotero's multiple-item save offers every span,
    # so a second one for a paper that two techniques cite would become a duplicate item
    described: set[str] = set()
    for section in sections:
        for sub in section["subcategories"]:
            for item in sub["items"]:
                if item["paper"] is not None and item["paper"].citekey in described:
                    item["coins"] = None
                elif item["paper"] is not None:
                    described.add(item["paper"].citekey)
    survey_key = query.survey_citekey(session)
    survey = paper_for(session.get(Reference, survey_key)) if survey_key else None
    return {
        "root": root, "iq": iq, "sections": sections, "taxonomy": tax, "applications": application_tags(session),
        "total": page.total, "shown": len(page.items),
        "next_url": iq.url(root, cursor=page.next_cursor) if page.next_cursor else None,
        "first_url": iq.url(root, cursor=None) if iq.cursor else None,
        "reset_url": f"{root}/", "survey": survey,
    }


def technique_context(session: Session, t: Technique, root: str) -> dict[str, Any]:
    rel = query.load_related(session, [t.slug])
    public = query.to_public(t, rel, base_url=root)
    related_slugs = rel.related.get(t.slug, [])
    names = dict(session.execute(select(Technique.slug, Technique.name)
                                 .where(Technique.slug.in_(related_slugs))).all()) if related_slugs else {}
    paper = paper_for(rel.references.get(t.citekey))
    survey_key = query.survey_citekey(session)
    survey = paper_for(session.get(Reference, survey_key)) if survey_key and survey_key != t.citekey else None
    return {
        "root": root, "t": public, "paper": paper,
        "highwire": biblio.highwire_tags(paper) if paper else [],
        "coins": biblio.coins(paper) if paper else None,
        "authors": biblio.author_list(paper) if paper else "",
        "related": [{"slug": s, "name": names.get(s, s)} for s in related_slugs],
        "description": first_sentence(t.summary, 300), "survey": survey,
    }
