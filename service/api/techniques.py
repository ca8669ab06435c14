"""GET /techniques (filter, search, sort, page, select fields) and GET /techniques/{slug}."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, get_origin

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError, create_model
from starlette.concurrency import run_in_threadpool

from ..catalog import query
from ..catalog.snapshot import derived_etag, dumps, select_page
from ..errors import ERROR_SCHEMA, ApiError, quote
from . import readmodel
from .deps import SettingsDep, query_params, refuse_unknown_query

router = APIRouter(tags=["techniques"])

SLUG = Path(description="the technique's slug", examples=["squeeze-and-excitation"],
            pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$", max_length=96)

_LIST_EXAMPLE = {
    "items": [{"slug": "squeeze-and-excitation", "name": "Squeeze-and-Excitation", "year": 2018,
               "category": {"id": "soft", "name": "Soft (deterministic) attention"},
               "subcategory": {"id": "channel", "name": "Channel attention"}}],
    "total": 11, "limit": 1, "next_cursor": "WyJuYW1lIiwiRWZmaWNpZW50IENoYW5uZWwgQXR0ZW50aW9uIiwi...",
}


_PROVENANCE_EXAMPLE = {
    "citekey": "huSqueezeandExcitationNetworks2018",
    "fields": {"title": {"sources": [{"source": "https://arxiv.org/abs/1709.01507", "kind": "primary"}],
                         "primary": True},
               "booktitle": {"sources": [{"source": "https://openaccess.thecvf.com/content_cvpr_2018/html/"
                                                    "Hu_Squeeze-and-Excitation_Networks_CVPR_2018_paper.html",
                                          "kind": "primary"}], "primary": True}},
    "unconfirmed": [],
}


_FIELD = "(?:" + "|".join(query.FIELDS) + ")"
FIELDS_PATTERN = f"^(?:{_FIELD}(?:,{_FIELD})*)?$"  # what the OpenAPI document promises, checked as such
_FIELDS_RE = re.compile(FIELDS_PATTERN)


def fields_query(example: str) -> Any:
    return Query(description="comma-separated names of the fields to return (no spaces): "
                 + ", ".join(query.FIELDS), examples=[example], json_schema_extra={"pattern": FIELDS_PATTERN})


def _fields(fields: str | None) -> list[str] | None:
    if not fields:
        return None
    if not _FIELDS_RE.fullmatch(fields):
        unknown = [f for f in fields.split(",") if f not in query.FIELDS]
        raise ApiError(400, f"unknown field(s) {quote(','.join(unknown))}; fields is a comma-separated list of "
                            "field names without spaces",
                       details={"parameter": "fields", "allowed": list(query.FIELDS)})
    return list(dict.fromkeys(fields.split(",")))


async def filters_dep(
    category: Annotated[str | None, Query(description="category id (soft, hard)", examples=["soft"])] = None,
    subcategory: Annotated[str | None, Query(description="subcategory id; also matches techniques the survey "
                                             "lists under it as well", examples=["channel"])] = None,
    application: Annotated[list[str], Query(description="application tag; repeat to require several",
                                            examples=["semantic-segmentation"])] = [],  # noqa: B006
    year_min: Annotated[int | None, Query(ge=1900, le=2100, description="earliest year", examples=[2018])] = None,
    year_max: Annotated[int | None, Query(ge=1900, le=2100, description="latest year (before year_min: nothing "
                                          "matches)", examples=[2021])] = None,
    has_implementation: Annotated[bool | None, Query(description="only techniques with (true) or without (false) "
                                                     "a runnable implementation")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=200, description=(
        "full-text search over name, aliases, summary, strengths, limitations and applications; words, "
        "\"phrases\", OR, NOT and prefix* terms; an expression the search cannot read (q=*) is a 400"),
        examples=["channel gate"])] = None,
) -> query.Filters:
    # year_min > year_max is an empty range: it matches nothing (a 200 with no items), as any SQL range would
    return query.Filters(category=category, subcategory=subcategory, applications=application, year_min=year_min,
                         year_max=year_max, has_implementation=has_implementation, q=q)


FiltersDep = Annotated[query.Filters, Depends(filters_dep)]
CURSOR = Query(max_length=500, description="next_cursor of the previous page, passed back unchanged (an opaque "
               "token: other values are refused with 400)", json_schema_extra={"pattern": query.CURSOR_PATTERN})


class _ListRoute(APIRoute):
    """GET /techniques with its eleven query parameters checked in one pass: the route's own parameter
    declarations (the ones the OpenAPI document shows) are compiled once into one pydantic model, so a request
    costs one validation instead of FastAPI's per-parameter resolution. Unknown parameters are refused first,
    as ``forbid_unknown_query`` does for every other route; validation errors are FastAPI's, located in the
    query."""

    def get_route_handler(self):
        declared = query_params(self.dependant)  # in FastAPI's order, so errors come in the same order
        model = create_model("TechniqueListQuery",
                             **{alias: (p.field_info.annotation, p.field_info) for alias, p in declared.items()})
        many = frozenset(a for a, p in declared.items() if get_origin(p.field_info.annotation) is list)
        allowed = frozenset(declared)

        async def handler(request: Request) -> Response:
            refuse_unknown_query(request, allowed)
            params = request.query_params
            raw = {k: (params.getlist(k) if k in many else params[k]) for k in params}
            try:
                v = model.model_validate(raw)
            except ValidationError as exc:
                raise RequestValidationError([{**e, "loc": ("query", *e["loc"])}
                                              for e in exc.errors(include_url=False)]) from None
            flt = await filters_dep(category=v.category, subcategory=v.subcategory, application=v.application,
                                    year_min=v.year_min, year_max=v.year_max,
                                    has_implementation=v.has_implementation, q=v.q)
            return await list_techniques(request, request.app.state.settings, flt, v.sort, v.limit, v.cursor,
                                         v.fields)

        return handler


async def list_techniques(
    request: Request, settings: SettingsDep, flt: FiltersDep,
    sort: Annotated[Literal["name", "-name", "year", "-year", "slug", "relevance"] | None, Query(
        description="order; default: relevance with q, else name. Ties are broken by slug, so paging is stable "
                    "(relevance without q is therefore slug order)")] = None,
    limit: Annotated[int | None, Query(ge=1, description="page size (at most the configured maximum, default 100)",
                                       examples=[20])] = None,
    cursor: Annotated[str | None, CURSOR] = None,
    fields: Annotated[str | None, fields_query("slug,name,year")] = None,
) -> Response:
    """Techniques matching every given filter, one page at a time.

    Paging is by keyset: pass `next_cursor` back as `cursor` to get the next page; pages never repeat or
    skip a technique while the catalogue is unchanged. `total` counts all matches."""
    if limit is not None and limit > settings.page_size_max:
        raise ApiError(400, f"limit={limit} is over the maximum page size {settings.page_size_max}",
                       details={"parameter": "limit", "maximum": settings.page_size_max})
    limit = limit or settings.page_size_default
    sort = sort or ("relevance" if flt.q else "name")
    selected = _fields(fields)
    if sort == "relevance" and not flt.q:
        sort = "slug"  # without a search every technique is equally relevant: the tie-break order (slug) remains
    snap = readmodel.snapshot(request)
    etag = readmodel.list_etag(request.app.state, snap, request.scope["path"], request.scope["query_string"])

    def body() -> bytes:
        page = select_page(snap, flt, sort, limit, cursor, ranks)
        rows = b",".join([e.row(selected, page.ranks.get(e.slug)) for e in page.entries])
        return b"".join((b'{"items":[', rows, b'],"total":', str(page.total).encode(), b',"limit":',
                         str(limit).encode(), b',"sort":"', sort.encode(), b'","next_cursor":',
                         dumps(page.next_cursor), b"}"))

    ranks = None
    if flt.q and not readmodel.not_modified(request, etag, snap.last_modified_http):
        store = request.app.state.catalogue
        ranks = snap.searches.get(flt.q)
        if ranks is None:  # the engine ranks: SQLite in microseconds, a server in a round trip (off the loop)
            ranks = (store.search(snap, flt.q) if request.app.state.engine.dialect.name == "sqlite"
                     else await run_in_threadpool(store.search, snap, flt.q))
    return readmodel.respond(request, etag, snap.last_modified_http, body)


router.add_api_route("/techniques", list_techniques, methods=["GET"], summary="List, filter and search techniques",
                     responses={200: {"content": {"application/json": {"example": _LIST_EXAMPLE}}},
                                400: ERROR_SCHEMA, 422: ERROR_SCHEMA}, route_class_override=_ListRoute)


@router.get("/techniques/{slug}", summary="One technique",
            responses={200: {"content": {"application/json": {"example": {
                "slug": "squeeze-and-excitation", "name": "Squeeze-and-Excitation", "year": 2018,
                "formula": {"latex": "s = \\sigma(W_2 \\delta(W_1 z))", "legend": []},
                "provenance": _PROVENANCE_EXAMPLE, "identification": None}}}},
                       400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 422: ERROR_SCHEMA})
async def get_technique(request: Request, slug: Annotated[str, SLUG],
                        fields: Annotated[str | None, fields_query("name,formula,citation")] = None) -> Response:
    """Everything the catalogue knows about one technique. Unknown slugs get 404 with close matches.

    `provenance` says, for every field of the cited reference (`title`, `author`, `booktitle`, `pages`, ...),
    which pages confirmed it (`sources`, each with its `kind`: `primary` for a publisher, DOI, proceedings,
    arXiv, DBLP, OpenReview or author page; `secondary` for an index that copies such records) and whether a
    primary page did (`primary`); `unconfirmed` lists the fields no primary page confirmed.

    `identification` is present (else null) where the survey's entry could mean more than one paper:
    `chosen` (the citekey cited), `confidence` (`high`, `medium`, `low`), `alternatives` (each with
    `paper`, `citekey` when its BibTeX is in the catalogue, `reason` and the pages that confirm it) and
    `evidence` for the choice."""
    entry = readmodel.snapshot(request).entry(slug)
    selected = _fields(fields)
    res = entry.resource
    if selected is None and not request.scope["query_string"]:
        return readmodel.respond(request, res.etag, res.last_modified_http, lambda: res.body)
    etag = derived_etag(res.etag, request.scope["query_string"].decode("latin-1"))
    return readmodel.respond(request, etag, res.last_modified_http, lambda: entry.row(selected))
