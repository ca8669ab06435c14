"""GET /taxonomy (the survey's category tree with counts) and GET /applications (tags with counts)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from . import readmodel

router = APIRouter(tags=["taxonomy"])


@router.get("/taxonomy", summary="The survey's taxonomy with technique counts",
            responses={200: {"content": {"application/json": {"example": {"categories": [
                {"id": "soft", "name": "Soft (deterministic) attention", "count": 44, "subcategories": [
                    {"id": "channel", "name": "Channel attention", "count": 11,
                     "techniques": ["cbam", "squeeze-and-excitation"]}]}], "total": 52}}}}})
async def taxonomy(request: Request) -> Response:
    """Categories and subcategories in the survey's order. A subcategory lists its techniques (slugs),
    including those the survey lists under it as a second home (`also_in`)."""
    res = readmodel.snapshot(request).taxonomy
    return readmodel.respond(request, res.etag, res.last_modified_http, lambda: res.body)


@router.get("/applications", summary="Application tags with counts",
            responses={200: {"content": {"application/json": {"example": {"items": [
                {"tag": "image-classification", "count": 30}]}}}}})
async def applications(request: Request) -> Response:
    """Every application tag used in the catalogue, most used first (ties by tag)."""
    res = readmodel.snapshot(request).applications
    return readmodel.respond(request, res.etag, res.last_modified_http, lambda: res.body)
