"""Measured cost curves: GET /techniques/{slug}/cost, GET /costs (several techniques on one axis),
GET /costs/profiles, and the compare page GET /compare.

The figures come from data/costs/<profile>.json (loaded by ``db sync``); nothing is measured while a
request waits. Every answer names the machine profile it was measured on.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import HTMLResponse
from sqlalchemy import select

from .. import web
from ..catalog import query
from ..costs import store
from ..errors import ERROR_SCHEMA, ApiError
from ..models import CostProfile, Technique
from ..web import compare as compare_page
from .deps import SessionDep, SettingsDep, conditional, conditional_json

router = APIRouter(tags=["costs"])

_SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
MAX_SLUGS = 12
COMPARE_MIN, COMPARE_MAX = 2, 6
HTML = "text/html; charset=utf-8"

ProfileQuery = Annotated[str | None, Query(max_length=64, description="machine profile (default: the "
                                           "configured one, see GET /costs/profiles)", examples=["cpu"])]
_CURVE_EXAMPLE = {
    "technique": "non-local", "axis": "positions", "x": "H × W",
    "fits": {"time": {"exponent": 1.84, "stated": "N^2 C'", "stated_exponent": 2.0, "verdict": "matches"}},
    "points": [{"x": 1024, "shapes": {"x": [1, 64, 32, 32]}, "latency_s": 0.02, "peak_bytes": 8650752,
                "parameters": 6208, "flops": 71303168, "repeats": 10, "spread": 0.04}],
}


def _profile(session, settings, name: str | None) -> CostProfile:
    name = name or settings.cost_profile
    prof = store.get_profile(session, name)
    if prof is None:
        available = [p.name for p in store.profiles(session)]
        raise ApiError(404, f"no cost profile named '{name}'", details={"available": available})
    return prof


def _slug_list(low: int, high: int) -> dict:
    """The list as the OpenAPI document states it: distinct slugs, one per repetition of the parameter
    (the server also reads comma-separated ones)."""
    return {"minItems": low, "maxItems": high, "uniqueItems": True,
            "items": {"type": "string", "maxLength": 96, "pattern": _SLUG_RE.pattern}}


def parse_slugs(values: list[str]) -> list[str]:
    """Comma-separated and/or repeated slugs, in order, without repeats; malformed ones are refused."""
    out: list[str] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if len(part) > 96 or not _SLUG_RE.match(part):
                raise ApiError(400, f"'{part[:100]}' is not a technique slug",
                               details={"parameter": "slugs", "expected": "lowercase words joined by hyphens"})
            if part not in out:
                out.append(part)
    return out


def known_techniques(session, slugs: list[str]) -> dict[str, Technique]:
    found = {t.slug: t for t in session.execute(select(Technique).where(Technique.slug.in_(slugs))).scalars()}
    unknown = [s for s in slugs if s not in found]
    if unknown:
        raise ApiError(404, f"unknown technique(s): {', '.join(unknown)}",
                       details={"parameter": "slugs", "unknown": unknown, "list": "/techniques"})
    return found


@router.get("/costs/profiles", summary="The machine profiles cost curves were measured on",
            responses={200: {"content": {"application/json": {"example": {"default": "cpu", "items": [
                {"name": "cpu", "device": "cpu", "machine": {"cpu_model": "AMD EPYC", "torch_threads": 1}}]}}}}})
def list_profiles(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    """Each profile with its machine (CPU model, threads, torch; GPU and CUDA version on a GPU), the
    load on the machine while it was measured, and the method."""
    profs = store.profiles(session)
    payload = {"default": settings.cost_profile, "items": [store.profile_public(p) for p in profs]}
    stamp = max((query.aware(p.updated_at) for p in profs), default=None)
    return conditional_json(request, payload, stamp)


@router.get("/techniques/{slug}/cost", summary="A technique's measured cost curves and fitted exponents",
            responses={200: {"content": {"application/json": {"example": {
                "technique": "non-local", "profile": {"name": "cpu", "device": "cpu"},
                "stated": {"time": "O(N^2 C'')", "memory": "O(N^2)"}, "curves": [_CURVE_EXAMPLE]}}}},
                       404: ERROR_SCHEMA})
def technique_cost(request: Request, session: SessionDep, settings: SettingsDep,
                   slug: Annotated[str, Path(max_length=96, pattern=r"^[a-z0-9]+(?:-[a-z0-9]+)*$",
                                             description="the technique's slug", examples=["non-local"])],
                   profile: ProfileQuery = None) -> Response:
    """Forward latency, peak memory, parameters and FLOPs of the reference implementation as its input
    grows along each axis its complexity names, with the log-log slope over the upper half of each
    curve and the verdict against the stated complexity."""
    t = query.get_technique(session, slug)
    prof = _profile(session, settings, profile)
    rows = store.curves(session, prof.name, [t.slug])
    if not rows:
        raise ApiError(404, f"no cost curves for '{slug}' in the profile '{prof.name}'",
                       details={"profile": prof.name})
    payload = {"technique": t.slug, "name": t.name, "profile": store.profile_public(prof),
               "stated": t.complexity, "curves": [store.curve_public(c) for c in rows]}
    return conditional_json(request, payload, query.aware(prof.updated_at))


@router.get("/costs", summary="Several techniques' cost curves on one axis, for comparison",
            responses={200: {"content": {"application/json": {"example": {
                "profile": {"name": "cpu"}, "axis": "positions", "series": [_CURVE_EXAMPLE], "missing": []}}}},
                       400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 422: ERROR_SCHEMA})
def compare_costs(request: Request, session: SessionDep, settings: SettingsDep,
                  slugs: Annotated[list[str], Query(description=f"technique slugs, comma-separated or "
                                                    f"repeated (1 to {MAX_SLUGS})",
                                                    examples=["squeeze-and-excitation,cbam"],
                                                    json_schema_extra=_slug_list(1, MAX_SLUGS))],
                  axis: Annotated[Literal["positions", "channels", "batch"], Query(
                      description="the growing input size")] = "positions",
                  profile: ProfileQuery = None) -> Response:
    """The curves of each named technique along one axis, measured on the same machine. Techniques
    without a curve on that axis are listed under `missing`."""
    wanted = parse_slugs(slugs)
    if not 1 <= len(wanted) <= MAX_SLUGS:
        raise ApiError(400, f"name 1 to {MAX_SLUGS} techniques, not {len(wanted)}",
                       details={"parameter": "slugs", "maximum": MAX_SLUGS})
    known_techniques(session, wanted)
    prof = _profile(session, settings, profile)
    rows = {c.technique_slug: c for c in store.curves(session, prof.name, wanted, axis)}
    payload = {"profile": store.profile_public(prof), "axis": axis,
               "series": [store.curve_public(rows[s]) for s in wanted if s in rows],
               "missing": [s for s in wanted if s not in rows]}
    return conditional_json(request, payload, query.aware(prof.updated_at))


def _error_page(request: Request, status: int, message: str) -> Response:
    body = web.render("error.html", root=request.scope.get("root_path", "").rstrip("/"), heading="Cannot compare",
                      message=message, suggestions=[], survey=None)
    return HTMLResponse(body, status_code=status, media_type=HTML)


@router.get("/compare", summary="Compare 2 to 6 techniques side by side (HTML page)", tags=["pages"],
            response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {"example": "<!doctype html><html lang=\"en\">...</html>"}}},
                       400: {"description": "too few or too many techniques, as an HTML page"},
                       404: {"description": "an unknown technique or profile, as an HTML page",
                             "content": {"text/html": {"schema": {"type": "string"}}}}})
def compare(request: Request, session: SessionDep, settings: SettingsDep,
            slugs: Annotated[list[str], Query(description=f"{COMPARE_MIN} to {COMPARE_MAX} technique slugs, "
                                              "comma-separated or repeated",
                                              examples=["squeeze-and-excitation,cbam"],
                                              json_schema_extra=_slug_list(0, COMPARE_MAX))] = [],  # noqa: B006
            slug: Annotated[list[str], Query(description="one technique slug; repeatable (as the index's "
                                             "selection sends them), combined with slugs",
                                             json_schema_extra=_slug_list(0, COMPARE_MAX))] = [],  # noqa: B006
            profile: ProfileQuery = None) -> Response:
    """Formulas, strengths and limitations, year and original paper of each technique, and their
    measured cost curves on shared axes. Readable without JavaScript."""
    try:
        wanted = parse_slugs([*slugs, *slug])
        if not COMPARE_MIN <= len(wanted) <= COMPARE_MAX:
            raise ApiError(400, f"choose {COMPARE_MIN} to {COMPARE_MAX} techniques to compare "
                                f"(got {len(wanted)})")
        found = known_techniques(session, wanted)
        prof = store.get_profile(session, profile or settings.cost_profile)
        if prof is None and profile:
            raise ApiError(404, f"no cost profile named '{profile}'")
    except ApiError as exc:
        return _error_page(request, exc.status, exc.message)
    root = request.scope.get("root_path", "").rstrip("/")
    context = compare_page.compare_context(session, [found[s] for s in wanted], prof, root)
    body = web.render("compare.html", **context).encode()
    return conditional(request, body, HTML, query.catalog_last_modified(session))
