"""The query layer: filters, full-text search (SQLite FTS5 or PostgreSQL tsvector), stable sorting,
keyset paging with opaque cursors, and the public representation of a technique."""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, String, and_, cast, exists, func, literal_column, or_, select, text
from sqlalchemy.exc import DatabaseError
from sqlmodel import Session

from ..errors import ApiError, quote
from ..models import Category, Meta, Reference, Technique, TechniqueApplication, TechniqueRelated
from .provenance import field_provenance

SORTS = {"name", "-name", "year", "-year", "slug", "relevance"}
FIELDS = ("slug", "name", "aliases", "category", "subcategory", "also_in", "year", "summary", "formula",
          "strengths", "limitations", "applications", "complexity", "citation", "related", "has_implementation",
          "implementation_scope", "survey_note", "verification", "provenance", "identification", "divergences",
          "links", "updated_at")


@dataclass
class Filters:
    category: str | None = None
    subcategory: str | None = None
    applications: list[str] = field(default_factory=list)
    year_min: int | None = None
    year_max: int | None = None
    has_implementation: bool | None = None
    q: str | None = None


@dataclass
class Page:
    items: list[Technique]
    total: int
    next_cursor: str | None
    ranks: dict[str, float]


def _encode_cursor(sort: str, key: Any, slug: str) -> str:
    raw = json.dumps([sort, key, slug], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


CURSOR_PATTERN = r"^[A-Za-z0-9_-]*$"  # unpadded base64url (empty: the first page); the OpenAPI document states it


def _key_fits(sort: str, key: Any) -> bool:
    """The key a cursor carries has the type of the sort column (a forged cursor cannot reach SQL)."""
    if sort in ("year", "-year"):
        return isinstance(key, int) and not isinstance(key, bool) and abs(key) < 1 << 31
    if sort == "relevance":
        return isinstance(key, (int, float)) and not isinstance(key, bool) and key == key and abs(key) < 1e300
    return isinstance(key, str) and len(key) <= 500


def _decode_cursor(cursor: str, sort: str) -> tuple[Any, str]:
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        c_sort, key, slug = json.loads(raw)
        if not isinstance(slug, str) or not isinstance(c_sort, str) or len(slug) > 200:
            raise ValueError
        if c_sort == sort and not _key_fits(sort, key):
            raise ValueError
    except (ValueError, TypeError, binascii.Error, json.JSONDecodeError):
        raise ApiError(400, "malformed cursor: pass back the next_cursor value of a previous page unchanged",
                       details={"parameter": "cursor"}) from None
    if c_sort != sort:
        raise ApiError(400, f"this cursor belongs to sort={c_sort[:20]}, not sort={sort}",
                       details={"parameter": "cursor"})
    return key, slug


_BARE = re.compile(r'"[^"]*"?|\S+')
_PLAIN = re.compile(r"^[\w*()^+]+$")


def fts5_query(q: str) -> str:
    """Quote bare terms that FTS5 would read as syntax (``criss-cross``, ``re-id``, ``c++``) as phrases;
    quoted phrases, AND/OR/NOT/NEAR and prefix* terms pass through unchanged."""
    out = []
    for token in _BARE.findall(q):
        if token.startswith('"') or token in ("AND", "OR", "NOT") or token.startswith("NEAR(") or _PLAIN.match(token):
            out.append(token)
        else:
            out.append('"' + token.replace('"', "") + '"')
    return " ".join(out)


# column weights: slug (unindexed), name, aliases, summary, strengths, limitations, applications
_BM25 = "bm25(technique_fts, 0.0, 10.0, 6.0, 2.0, 1.0, 1.0, 2.0)"


def _fts_rank(session: Session, q: str):
    """A selectable (slug, rank) for the search; lower rank is a better match."""
    check_search_text(q)
    if session.get_bind().dialect.name == "sqlite":
        return (text(f"SELECT slug, {_BM25} AS rank FROM technique_fts WHERE technique_fts MATCH :q")
                .bindparams(q=fts5_query(q))
                .columns(slug=String, rank=Float).subquery("fts"))
    doc = func.concat_ws(" ", Technique.name, cast(Technique.aliases, String), Technique.summary,
                         cast(Technique.strengths, String), cast(Technique.limitations, String),
                         func.coalesce(select(func.string_agg(TechniqueApplication.tag, " "))
                                       .where(TechniqueApplication.technique_slug == Technique.slug)
                                       .scalar_subquery(), ""))
    weighted = func.setweight(func.to_tsvector("english", Technique.name), literal_column("'A'")).op("||")(
        func.setweight(func.to_tsvector("english", func.replace(doc, "-", " ")), literal_column("'B'")))
    # the document is indexed with hyphens as spaces; do the same inside words of the query ("-x" stays NOT x)
    query = func.websearch_to_tsquery("english", re.sub(r"(?<=\w)-(?=\w)", " ", q))
    # ts_rank is float4; as float8 the rank survives the JSON round trip of a cursor exactly
    rank = cast(-func.ts_rank(weighted, query), Float(precision=53))
    return (select(Technique.slug.label("slug"), rank.label("rank"))
            .where(weighted.op("@@")(query)).subquery("fts"))


_SEARCH_ERRORS = ("fts5", "syntax", "unknown special query", "unterminated", "expected integer", "no such column",
                  "tsquery")


def check_search_text(q: str) -> None:
    """A NUL character cannot be searched for (PostgreSQL refuses it in any string); a 400, on both engines."""
    if "\x00" in q:
        raise ApiError(400, "the search query q contains a NUL character, which cannot be searched for",
                       details={"parameter": "q"})


def search_syntax_error(q: str, exc: DatabaseError) -> ApiError | None:
    """The 400 for a search the engine refused as syntax (the client's mistake); None when the failure
    is something else."""
    reason = str(getattr(exc, "orig", exc)).lower()
    if any(w in reason for w in _SEARCH_ERRORS):
        return ApiError(400, f"the search query q={quote(q)} is not valid search syntax: use words, "
                             "\"quoted phrases\", OR, NOT, and prefix* terms",
                        details={"parameter": "q", "reason": str(exc.orig)[:200]})
    return None


_SQLITE_SEARCH = f"SELECT slug, {_BM25} AS rank FROM technique_fts WHERE technique_fts MATCH ?"


def search_ranks(engine, q: str, connection=None) -> dict[str, float]:
    """Every technique the engine's full-text search matches, with its rank (lower is better), exactly as
    ``list_techniques`` ranks them. ``connection``: a ``version.DedicatedConnection`` to run SQLite's
    statement on (no pool, no ORM)."""
    check_search_text(q)
    try:
        if engine.dialect.name == "sqlite" and connection is not None:
            try:
                rows = connection.fetchall(_SQLITE_SEARCH, (fts5_query(q),), retry=False)
            except engine.dialect.dbapi.Error as exc:
                raise DatabaseError(_SQLITE_SEARCH, None, exc) from exc
            return {slug: float(rank) for slug, rank in rows}
        with Session(engine) as session:
            fts = _fts_rank(session, q)
            return {slug: float(rank) for slug, rank in session.execute(select(fts.c.slug, fts.c.rank)).all()}
    except DatabaseError as exc:
        if bad := search_syntax_error(q, exc):
            raise bad from None
        raise


def list_techniques(session: Session, flt: Filters, sort: str, limit: int, cursor: str | None) -> Page:
    if sort == "relevance" and not flt.q:
        raise ApiError(400, "sort=relevance needs a search query q", details={"parameter": "sort"})
    conds = []
    if flt.category:
        conds.append(Technique.category_id == flt.category)
    if flt.subcategory:
        conds.append(or_(Technique.subcategory_id == flt.subcategory,
                         cast(Technique.also_in, String).like(f'%"{flt.subcategory}"%')))
    for tag in flt.applications:
        conds.append(exists().where(and_(TechniqueApplication.technique_slug == Technique.slug,
                                         TechniqueApplication.tag == tag)))
    if flt.year_min is not None:
        conds.append(Technique.year >= flt.year_min)
    if flt.year_max is not None:
        conds.append(Technique.year <= flt.year_max)
    if flt.has_implementation is not None:
        conds.append(Technique.has_implementation == flt.has_implementation)

    rank_col = None
    base = select(Technique)
    if flt.q:
        fts = _fts_rank(session, flt.q)
        rank_col = fts.c.rank
        base = select(Technique, rank_col).join(fts, fts.c.slug == Technique.slug)
    base = base.where(*conds)

    key_col, descending = {
        "name": (Technique.name, False), "-name": (Technique.name, True), "year": (Technique.year, False),
        "-year": (Technique.year, True), "slug": (Technique.slug, False), "relevance": (rank_col, False),
    }[sort]
    try:
        total = session.execute(select(func.count()).select_from(base.subquery())).scalar_one()
        paged = base
        if cursor:
            key, slug = _decode_cursor(cursor, sort)
            after = key_col < key if descending else key_col > key
            paged = paged.where(or_(after, and_(key_col == key, Technique.slug > slug)))
        paged = paged.order_by(key_col.desc() if descending else key_col.asc(), Technique.slug.asc()).limit(limit + 1)
        rows = session.execute(paged).all()
    except DatabaseError as exc:
        session.rollback()
        if flt.q and (bad := search_syntax_error(flt.q, exc)):
            raise bad from None
        raise
    items = [r[0] for r in rows[:limit]]
    ranks = {r[0].slug: float(r[1]) for r in rows[:limit]} if rank_col is not None else {}
    next_cursor = None
    if len(rows) > limit:
        last = items[-1]
        key = ranks[last.slug] if sort == "relevance" else getattr(last, key_col.key)
        next_cursor = _encode_cursor(sort, key, last.slug)
    return Page(items=items, total=total, next_cursor=next_cursor, ranks=ranks)


def get_technique(session: Session, slug: str) -> Technique:
    t = session.get(Technique, slug)
    if t is None:
        slugs = list(session.execute(select(Technique.slug)).scalars())
        close = difflib.get_close_matches(slug, slugs, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ApiError(404, f"no technique with slug {quote(slug)}{hint}",
                       details={"did_you_mean": close, "list": "/techniques"})
    return t


def aware(stamp: datetime) -> datetime:
    """SQLite hands timestamps back without a zone; they are stored in UTC."""
    return stamp.astimezone(UTC) if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def catalog_last_modified(session: Session) -> datetime | None:
    latest = session.execute(select(func.max(Technique.updated_at))).scalar_one_or_none()
    ref_latest = session.execute(select(func.max(Reference.updated_at))).scalar_one_or_none()
    stamps = [aware(s) for s in (latest, ref_latest) if s is not None]
    return max(stamps) if stamps else None


def survey_citekey(session: Session) -> str | None:
    row = session.get(Meta, "survey_citekey")
    return row.value if row else None


@dataclass
class Related:
    categories: dict[str, Category]
    applications: dict[str, list[str]]
    related: dict[str, list[str]]
    references: dict[str, Reference]


def load_related(session: Session, slugs: list[str]) -> Related:
    cats = {c.id: c for c in session.execute(select(Category)).scalars()}
    apps: dict[str, list[str]] = {s: [] for s in slugs}
    for ta in session.execute(select(TechniqueApplication).where(TechniqueApplication.technique_slug.in_(slugs))
                              .order_by(TechniqueApplication.position)).scalars():
        apps[ta.technique_slug].append(ta.tag)
    rel: dict[str, list[str]] = {s: [] for s in slugs}
    for tr in session.execute(select(TechniqueRelated).where(TechniqueRelated.technique_slug.in_(slugs))
                              .order_by(TechniqueRelated.position)).scalars():
        rel[tr.technique_slug].append(tr.related_slug)
    keys = {t for t in session.execute(select(Technique.citekey).where(Technique.slug.in_(slugs))).scalars()}
    refs = {r.citekey: r for r in session.execute(select(Reference).where(Reference.citekey.in_(keys))).scalars()}
    return Related(categories=cats, applications=apps, related=rel, references=refs)


def citation_summary(ref: Reference | None, citekey: str) -> dict[str, Any]:
    if ref is None:
        return {"citekey": citekey}
    f = ref.fields
    out: dict[str, Any] = {
        "citekey": ref.citekey, "type": ref.entry_type, "title": f.get("title"),
        "authors": [f"{p['given']} {p['family']}".strip() for p in ref.persons.get("author", [])],
        "venue": f.get("booktitle") or f.get("journal"), "year": int(f["year"]) if f.get("year", "").isdigit() else None,
    }
    for k in ("volume", "number", "pages", "doi", "url", "eprint", "publisher"):
        if f.get(k):
            out[k] = f[k]
    if f.get("doi"):
        out["doi_url"] = f"https://doi.org/{f['doi']}"
    if f.get("eprint") and f.get("archiveprefix", "").lower() == "arxiv":
        out["arxiv_url"] = f"https://arxiv.org/abs/{f['eprint']}"
    return out


def provenance(ref: Reference | None, citekey: str, verification: list[dict[str, Any]]) -> dict[str, Any]:
    """Per field of the technique's reference: the pages that confirmed it and their kind."""
    names = [*(ref.persons if ref else {}), *(ref.fields if ref else {})]
    per_field = field_provenance(names, verification)
    return {"citekey": citekey, "fields": per_field,
            "unconfirmed": [f for f, p in per_field.items() if not p["primary"]]}


def to_public(t: Technique, rel: Related, fields: list[str] | None = None, rank: float | None = None,
              base_url: str = "") -> dict[str, Any]:
    def cat(cid: str) -> dict[str, str]:
        c = rel.categories.get(cid)
        return {"id": cid, "name": c.name if c else cid}

    full: dict[str, Any] = {
        "slug": t.slug, "name": t.name, "aliases": t.aliases, "category": cat(t.category_id),
        "subcategory": cat(t.subcategory_id), "also_in": [cat(c) for c in t.also_in], "year": t.year,
        "summary": t.summary, "formula": {"latex": t.formula_latex, "legend": t.formula_legend},
        "strengths": t.strengths, "limitations": t.limitations, "applications": rel.applications.get(t.slug, []),
        "complexity": t.complexity, "citation": citation_summary(rel.references.get(t.citekey), t.citekey),
        "related": rel.related.get(t.slug, []), "has_implementation": t.has_implementation,
        "implementation_scope": t.implementation_scope, "survey_note": t.survey_note,
        "verification": t.verification,
        "provenance": provenance(rel.references.get(t.citekey), t.citekey, t.verification),
        "identification": t.identification, "divergences": t.divergences,
        "links": {"self": f"{base_url}/techniques/{t.slug}", "html": f"{base_url}/t/{t.slug}",
                  "citation": f"{base_url}/techniques/{t.slug}/citation",
                  "note": f"{base_url}/techniques/{t.slug}/note.md",
                  **({"implementation": f"{base_url}/techniques/{t.slug}/implementation",
                      "run": f"{base_url}/techniques/{t.slug}/run"} if t.has_implementation else {})},
        "updated_at": t.updated_at.isoformat() if t.updated_at else None,
    }
    out = {k: full[k] for k in fields} if fields else full
    if rank is not None:
        out["score"] = round(-rank, 6)
    return out


def taxonomy_payload(session: Session) -> dict[str, Any]:
    """GET /taxonomy: categories and subcategories in the survey's order, with counts and member slugs."""
    cats = list(session.execute(select(Category).order_by(Category.position)).scalars())
    techniques = list(session.execute(select(Technique.slug, Technique.category_id, Technique.subcategory_id,
                                             Technique.also_in).order_by(Technique.slug)).all())
    out = []
    for top in (c for c in cats if c.parent_id is None):
        subs = []
        for sub in (c for c in cats if c.parent_id == top.id):
            members = [t.slug for t in techniques if t.subcategory_id == sub.id or sub.id in (t.also_in or [])]
            subs.append({"id": sub.id, "name": sub.name, "description": sub.description, "count": len(members),
                         "techniques": members})
        out.append({"id": top.id, "name": top.name, "description": top.description,
                    "count": sum(1 for t in techniques if t.category_id == top.id), "subcategories": subs})
    return {"survey": survey_citekey(session), "categories": out, "total": len(techniques)}


def applications_payload(session: Session) -> dict[str, Any]:
    """GET /applications: every application tag in use, most used first (ties by tag)."""
    rows = session.execute(select(TechniqueApplication.tag, func.count().label("n"))
                           .group_by(TechniqueApplication.tag)
                           .order_by(func.count().desc(), TechniqueApplication.tag)).all()
    return {"items": [{"tag": tag, "count": n, "techniques": f"/techniques?application={tag}"} for tag, n in rows]}
