"""HTML pages: the index (``/``) and one page per technique (``/t/{slug}``), plus the static assets.

The pages are rendered on the server and readable without JavaScript. Technique pages carry the original
paper's metadata as Highwire Press ``citation_*`` meta tags and as COinS; the index carries one COinS per
listed technique, so the Zotero Connector offers to save one paper or several.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, FastAPI, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from .. import web
from ..catalog import query
from ..errors import ApiError
from ..web import compare, pages
from .deps import SessionDep, SettingsDep, conditional

router = APIRouter(tags=["pages"])

HTML = "text/html; charset=utf-8"
STATIC_PREFIX = "/static"

_INDEX_EXAMPLE = ('<!doctype html><html lang="en"><head><title>Attention Atlas: visual attention techniques'
                  '</title></head><body><h2>Soft (deterministic) attention</h2><h3>Channel attention</h3><ul>'
                  '<li><a href="/t/squeeze-and-excitation">Squeeze-and-Excitation</a> 2018 <span class="Z3988" '
                  'title="ctx_ver=Z39.88-2004&amp;rft_val_fmt=info%3Aofi%2Ffmt%3Akev%3Amtx%3Abook&amp;'
                  'rft.genre=proceeding&amp;rft.atitle=Squeeze-and-Excitation%20Networks&amp;rft.au=Hu%2C%20Jie'
                  '"></span></li></ul></body></html>')
_TECHNIQUE_EXAMPLE = ('<!doctype html><html lang="en"><head><title>Squeeze-and-Excitation · Attention Atlas</title>'
                      '<meta name="citation_title" content="Squeeze-and-Excitation Networks">'
                      '<meta name="citation_author" content="Hu, Jie">'
                      '<meta name="citation_publication_date" content="2018">'
                      '<meta name="citation_arxiv_id" content="1709.01507"></head><body><h1>Squeeze-and-Excitation'
                      '</h1><pre class="tex-source"><code>s = \\sigma(W_2 \\delta(W_1 z))</code></pre></body></html>')
_NOT_FOUND_EXAMPLE = ('<!doctype html><html lang="en"><head><title>Not found · Attention Atlas</title></head><body>'
                      '<h1>Not found</h1><p class="error">no technique with slug \'squeeze-excitation\'</p>'
                      '</body></html>')


def _root(request: Request) -> str:
    return request.scope.get("root_path", "").rstrip("/")


def _error_page(request: Request, status: int, heading: str, message: str,
                suggestions: list[str] | None = None) -> HTMLResponse:
    body = web.render("error.html", root=_root(request), heading=heading, message=message,
                      suggestions=suggestions or [], survey=None)
    return HTMLResponse(body, status_code=status, media_type=HTML)


def _blank(value: str | None) -> str | None:
    value = (value or "").strip()
    return value or None


@router.get("/", summary="Index page: techniques by the survey's taxonomy, with search and filters",
            response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {"example": _INDEX_EXAMPLE}}},
                       400: {"description": "an invalid search expression or cursor, as an HTML page",
                             "content": {"text/html": {"example": _NOT_FOUND_EXAMPLE}}}})
def index_page(
    request: Request, session: SessionDep, settings: SettingsDep,
    q: Annotated[str | None, Query(max_length=200, description="full-text search (as on GET /techniques); "
                                   "empty means no search; an expression the search cannot read is a 400",
                                   examples=["channel"])] = None,
    category: Annotated[str | None, Query(max_length=64, description="category id; empty means any",
                                          examples=["soft"])] = None,
    subcategory: Annotated[str | None, Query(max_length=64, description="subcategory id; empty means any",
                                             examples=["channel"])] = None,
    application: Annotated[list[str], Query(description="application tag; repeat to require several",
                                            examples=["semantic-segmentation"])] = [],  # noqa: B006
    limit: Annotated[int | None, Query(description="techniques per page (at most the configured maximum)",
                                       examples=[50])] = None,
    cursor: Annotated[str | None, Query(max_length=500, description="the next-page link's cursor (opaque; other "
                                        "values are refused with 400)",
                                        json_schema_extra={"pattern": query.CURSOR_PATTERN})] = None,
) -> Response:
    """The catalogue as a page: techniques grouped by category and subcategory, each with its paper and a
    COinS span (Zotero offers a multiple-item save). Readable without JavaScript."""
    iq = pages.IndexQuery(q=_blank(q), category=_blank(category), subcategory=_blank(subcategory),
                          applications=[a.strip() for a in application if a.strip()],
                          limit=limit, cursor=_blank(cursor))
    size = settings.page_size_max if limit is None else limit
    root = _root(request)
    error = None
    status = 200
    if not 1 <= size <= settings.page_size_max:
        error, status = f"limit={size} is outside 1..{settings.page_size_max} techniques per page", 400
        page = query.Page(items=[], total=0, next_cursor=None, ranks={})
    else:
        try:
            page = query.list_techniques(session, iq.filters(), "relevance" if iq.q else "name", size, iq.cursor)
        except ApiError as exc:
            if exc.status != 400:
                raise
            error, status = exc.message, 400
            page = query.Page(items=[], total=0, next_cursor=None, ranks={})
    context = pages.index_context(session, iq, page, root)
    body = web.render("index.html", error=error, **context).encode()
    if status != 200:
        return Response(body, status_code=status, media_type=HTML)
    return conditional(request, body, HTML, query.catalog_last_modified(session))


@router.get("/t/{slug}", summary="A technique's page, with its paper's citation metadata for Zotero",
            response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {"example": _TECHNIQUE_EXAMPLE}}},
                       404: {"description": "unknown slug, as an HTML page with close matches",
                             "content": {"text/html": {"example": _NOT_FOUND_EXAMPLE}}}})
def technique_page(request: Request, session: SessionDep, settings: SettingsDep,
                   slug: Annotated[str, Path(max_length=200, description="the technique's slug",
                                             examples=["squeeze-and-excitation"])]) -> Response:
    """Name, category, summary, formula (typeset by KaTeX when it is installed, LaTeX source otherwise),
    legend, strengths, limitations, applications, complexity, related techniques and the original paper,
    embedded as Highwire Press meta tags and COinS."""
    try:
        t = query.get_technique(session, slug)
    except ApiError as exc:
        if exc.status != 404:
            raise
        hints = (exc.details or {}).get("did_you_mean", []) if isinstance(exc.details, dict) else []
        return _error_page(request, 404, "Not found", exc.message, hints)
    body = web.render("technique.html", **pages.technique_context(session, t, _root(request)),
                      cost=compare.cost_section(session, t, settings.cost_profile)).encode()
    return conditional(request, body, HTML, query.catalog_last_modified(session))


def mount_static(app: FastAPI) -> None:
    """Serve ``service/web/static/`` (the stylesheet, the script and, once built, KaTeX) under /static.
    Calling it twice mounts once."""
    if any(getattr(r, "path", None) == STATIC_PREFIX for r in app.router.routes):
        return
    app.mount(STATIC_PREFIX, StaticFiles(directory=web.STATIC_DIR), name="static")
