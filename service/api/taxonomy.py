"""GET /taxonomy (the survey's category tree with counts) and GET /applications (tags with counts)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy import func, select

from ..catalog import query
from ..models import Category, Technique, TechniqueApplication
from .deps import SessionDep, conditional_json

router = APIRouter(tags=["taxonomy"])


@router.get("/taxonomy", summary="The survey's taxonomy with technique counts",
            responses={200: {"content": {"application/json": {"example": {"categories": [
                {"id": "soft", "name": "Soft (deterministic) attention", "count": 44, "subcategories": [
                    {"id": "channel", "name": "Channel attention", "count": 11,
                     "techniques": ["cbam", "squeeze-and-excitation"]}]}], "total": 52}}}}})
def taxonomy(request: Request, session: SessionDep) -> Response:
    """Categories and subcategories in the survey's order. A subcategory lists its techniques (slugs),
    including those the survey lists under it as a second home (`also_in`)."""
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
    payload = {"survey": query.survey_citekey(session), "categories": out, "total": len(techniques)}
    return conditional_json(request, payload, query.catalog_last_modified(session))


@router.get("/applications", summary="Application tags with counts",
            responses={200: {"content": {"application/json": {"example": {"items": [
                {"tag": "image-classification", "count": 30}]}}}}})
def applications(request: Request, session: SessionDep) -> Response:
    """Every application tag used in the catalogue, most used first (ties by tag)."""
    rows = session.execute(select(TechniqueApplication.tag, func.count().label("n"))
                           .group_by(TechniqueApplication.tag)
                           .order_by(func.count().desc(), TechniqueApplication.tag)).all()
    payload = {"items": [{"tag": tag, "count": n, "techniques": f"/techniques?application={tag}"} for tag, n in rows]}
    return conditional_json(request, payload, query.catalog_last_modified(session))
