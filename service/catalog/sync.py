"""Load data/ into the database: validate everything first, then upsert in one transaction.

Idempotent: a record whose content did not change is not touched (its updated_at stays). A technique
edited through the write API is never overwritten by a sync.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import delete, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from ..costs.profile import load_profiles
from ..costs.store import write_costs
from ..models import (
    Application,
    Category,
    Meta,
    Reference,
    Technique,
    TechniqueApplication,
    TechniqueRelated,
    utcnow,
)
from .loader import Catalog, CatalogInvalid, load_catalog, verification_record
from .version import bump


@dataclass
class SyncReport:
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    kept_edited: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    references: int = 0
    cost_profiles: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{len(self.created)} created, {len(self.updated)} updated, {len(self.unchanged)} unchanged, "
                f"{len(self.kept_edited)} kept (edited through the API), {len(self.deleted)} deleted; "
                f"{self.references} references")


def implemented_slugs() -> set[str]:
    from ..mechanisms.registry import slugs

    return set(slugs())


def _hash(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def sync(engine: Engine, root: Path, implemented: set[str] | None = None) -> SyncReport:
    catalog = load_catalog(root)  # raises CatalogInvalid before anything is written
    cost_profiles, problems = load_profiles(root, set(catalog.techniques))
    if problems:
        raise CatalogInvalid(problems)
    implemented = implemented_slugs() if implemented is None else implemented
    with Session(engine) as session:
        report = _write(session, catalog, implemented)
        report.cost_profiles = write_costs(session, cost_profiles)
        session.commit()
    return report


def _write(session: Session, catalog: Catalog, implemented: set[str]) -> SyncReport:
    report = SyncReport()
    now = utcnow()

    # taxonomy
    wanted_cats: dict[str, Category] = {}
    for i, c in enumerate(catalog.taxonomy.categories):
        wanted_cats[c.id] = Category(id=c.id, name=c.name, description=c.description, parent_id=None, position=i)
        for j, s in enumerate(c.subcategories):
            wanted_cats[s.id] = Category(id=s.id, name=s.name, description=s.description, parent_id=c.id, position=j)
    existing_cats = {c.id: c for c in session.exec(select(Category)).all()}
    for cid, want in wanted_cats.items():
        have = existing_cats.get(cid)
        if have is None:
            session.add(want)
        else:
            for attr in ("name", "description", "parent_id", "position"):
                if getattr(have, attr) != getattr(want, attr):
                    setattr(have, attr, getattr(want, attr))
    session.flush()

    # references (entries imported through the API are left alone unless data/ has the same key)
    existing_refs = {r.citekey: r for r in session.exec(select(Reference)).all()}
    for key, entry in catalog.references.items():
        values = dict(entry_type=entry.entry_type, fields=entry.fields, persons=entry.persons, bibtex=entry.bibtex)
        have = existing_refs.get(key)
        if have is None:
            session.add(Reference(citekey=key, source="data", updated_at=now, **values))
        elif any(getattr(have, k) != v for k, v in values.items()) or have.source != "data":
            for k, v in values.items():
                setattr(have, k, v)
            have.source = "data"
            have.updated_at = now
    report.references = len(catalog.references)
    session.flush()

    # applications
    tags = {tag for t in catalog.techniques.values() for tag in t.applications}
    have_tags = set(session.exec(select(Application.tag)).all())
    for tag in sorted(tags - have_tags):
        session.add(Application(tag=tag))
    session.flush()

    # techniques
    existing = {t.slug: t for t in session.exec(select(Technique)).all()}
    changed: list[str] = []
    for slug, tf in sorted(catalog.techniques.items()):
        values = dict(
            name=tf.name, aliases=tf.aliases, category_id=tf.category, subcategory_id=tf.subcategory,
            also_in=tf.also_in, year=tf.year, summary=tf.summary, formula_latex=tf.formula.latex,
            formula_legend=[i.model_dump() for i in tf.formula.legend], strengths=tf.strengths,
            limitations=tf.limitations, complexity=tf.complexity.model_dump(exclude_none=True), citekey=tf.citekey,
            implementation_scope=tf.implementation.scope if tf.implementation else None,
            has_implementation=slug in implemented,
            verification=[verification_record(v) for v in tf.verification],
            identification=_identification_record(tf), survey_note=tf.survey_note,
            divergences=[d.model_dump(mode="json", exclude_none=True) for d in tf.divergences])
        digest = _hash({**values, "applications": tf.applications, "related": tf.related})
        have = existing.get(slug)
        if have is None:
            session.add(Technique(slug=slug, content_hash=digest, updated_at=now, **values))
            report.created.append(slug)
            changed.append(slug)
        elif have.edited_via_api:
            report.kept_edited.append(slug)
            # the write API cannot change these; they follow data/ even for an edited record
            followed = [k for k in ("has_implementation", "verification", "identification", "divergences")
                        if getattr(have, k) != values[k]]
            for k in followed:
                setattr(have, k, values[k])
            if followed:
                have.version = Technique.version + 1  # a concurrent compare-and-swap on this row now misses
        elif have.content_hash == digest:
            report.unchanged.append(slug)
        else:
            for k, v in values.items():
                setattr(have, k, v)
            have.content_hash = digest
            have.updated_at = now
            have.version = Technique.version + 1  # a concurrent compare-and-swap on this row now misses
            report.updated.append(slug)
            changed.append(slug)
    session.flush()

    for slug in sorted(set(existing) - set(catalog.techniques)):
        if existing[slug].edited_via_api:
            report.kept_edited.append(slug)
            continue
        session.delete(existing[slug])
        report.deleted.append(slug)
    session.flush()

    for slug in changed:
        tf = catalog.techniques[slug]
        session.exec(delete(TechniqueApplication).where(TechniqueApplication.technique_slug == slug))
        session.exec(delete(TechniqueRelated).where(TechniqueRelated.technique_slug == slug))
        session.flush()
        for i, tag in enumerate(tf.applications):
            session.add(TechniqueApplication(technique_slug=slug, tag=tag, position=i))
        for i, rel in enumerate(tf.related):
            session.add(TechniqueRelated(technique_slug=slug, related_slug=rel, position=i))
    session.flush()

    # drop what nothing uses any more
    used_tags = set(session.exec(select(TechniqueApplication.tag)).all())
    for tag in have_tags - used_tags - tags:
        session.exec(delete(Application).where(Application.tag == tag))
    for cid in set(existing_cats) - set(wanted_cats):
        session.exec(delete(Category).where(Category.id == cid))
    cited = set(session.exec(select(Technique.citekey)).all()) | {catalog.taxonomy.survey_citekey}
    for ident in session.exec(select(Technique.identification)).all():
        cited |= {a["citekey"] for a in (ident or {}).get("alternatives", []) if a.get("citekey")}
    for key, ref in existing_refs.items():
        if ref.source == "data" and key not in catalog.references and key not in cited:
            session.delete(ref)
    session.flush()

    if changed or report.deleted or not _fts_populated(session):
        refresh_search_index(session)
    _set_meta(session, "survey_citekey", catalog.taxonomy.survey_citekey)
    _set_meta(session, "survey_verification", json.dumps(catalog.survey_verification))
    if changed or report.deleted:
        _set_meta(session, "catalog_updated_at", now.isoformat())
    bump(session)  # every process rebuilds what it derived from the catalogue
    return report


def _identification_record(tf) -> dict | None:
    ident = tf.identification
    if ident is None:
        return None
    return {"chosen": ident.chosen, "confidence": ident.confidence, "evidence": list(ident.evidence),
            "alternatives": [{"paper": a.paper, "citekey": a.citekey, "reason": a.reason,
                              "verification": [verification_record(v) for v in a.verification]}
                             for a in ident.alternatives]}


def _set_meta(session: Session, key: str, value: str) -> None:
    row = session.get(Meta, key)
    if row is None:
        session.add(Meta(key=key, value=value))
    elif row.value != value:
        row.value = value


def _is_sqlite(session: Session) -> bool:
    return session.get_bind().dialect.name == "sqlite"


def _fts_populated(session: Session) -> bool:
    if not _is_sqlite(session):
        return True
    return bool(session.exec(text("SELECT count(*) FROM technique_fts")).one()[0])


def search_document(t: Technique, tags: list[str]) -> dict[str, str]:
    return {"slug": t.slug, "name": t.name, "aliases": " ".join(t.aliases), "summary": t.summary,
            "strengths": " ".join(t.strengths), "limitations": " ".join(t.limitations),
            "applications": " ".join(tag.replace("-", " ") for tag in tags)}


def refresh_search_index(session: Session) -> None:
    """Rebuild the SQLite FTS5 index (PostgreSQL computes its tsvector in the query)."""
    if not _is_sqlite(session):
        return
    session.exec(text("DELETE FROM technique_fts"))
    tags: dict[str, list[str]] = {}
    for ta in session.exec(select(TechniqueApplication).order_by(TechniqueApplication.position)).all():
        tags.setdefault(ta.technique_slug, []).append(ta.tag)
    for t in session.exec(select(Technique)).all():
        session.exec(text("INSERT INTO technique_fts (slug, name, aliases, summary, strengths, limitations, "
                          "applications) VALUES (:slug, :name, :aliases, :summary, :strengths, :limitations, "
                          ":applications)").bindparams(**search_document(t, tags.get(t.slug, []))))
