"""The write API (needs an API key with the write role):

- ``POST /references``: import a BibTeX or RIS file. The whole file is validated first and every problem
  is reported at once; then all entries are written in one transaction.
- ``PATCH /techniques/{slug}``: change a technique's text fields with a JSON merge patch (RFC 7396),
  under the same rules as the files in data/. A technique changed this way is never overwritten by a sync.
"""

from __future__ import annotations

import logging
from email.utils import format_datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select
from starlette.concurrency import run_in_threadpool

from .. import jsonbody
from ..auth import WriteKey
from ..catalog import edits, query
from ..catalog.latex import check_math
from ..catalog.loader import TechniqueFile
from ..catalog.snapshot import dumps, etag_for
from ..catalog.sync import refresh_search_index
from ..catalog.version import bump
from ..citations.importers import parse_bibtex_upload, parse_ris_upload, plan_import
from ..errors import ERROR_SCHEMA, ApiError, quote
from ..models import Application, Meta, Reference, Technique, TechniqueApplication, utcnow
from .deps import SettingsDep, json_bytes, read_body
from .techniques import SLUG

log = logging.getLogger("service.write")
router = APIRouter(tags=["write"])

BIBTEX_TYPES = ("application/x-bibtex", "text/x-bibtex", "application/x-biblatex")
RIS_TYPES = ("application/x-research-info-systems",)
PATCH_TYPES = ("application/merge-patch+json", "application/json")
EDITABLE = ("name", "aliases", "summary", "strengths", "limitations", "applications", "formula", "complexity",
            "survey_note")
OPTIONAL = ("survey_note",)  # may be removed with null
AUTH_ERRORS = {401: ERROR_SCHEMA, 403: ERROR_SCHEMA}

_BIB_EXAMPLE = """@inproceedings{bahdanauNeuralMachineTranslation2015,
  title         = {Neural Machine Translation by Jointly Learning to Align and Translate},
  author        = {Bahdanau, Dzmitry and Cho, Kyunghyun and Bengio, Yoshua},
  booktitle     = {International Conference on Learning Representations ({ICLR})},
  year          = {2015},
  eprint        = {1409.0473},
  archivePrefix = {arXiv}
}
"""
_RIS_EXAMPLE = """TY  - JOUR
TI  - A model of saliency-based visual attention for rapid scene analysis
AU  - Itti, Laurent
AU  - Koch, Christof
AU  - Niebur, Ernst
T2  - IEEE Transactions on Pattern Analysis and Machine Intelligence
VL  - 20
IS  - 11
SP  - 1254
EP  - 1259
PY  - 1998
DO  - 10.1109/34.730558
ER  - 
"""


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _text(body: bytes) -> str:
    try:
        text = body.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as exc:
        raise ApiError(400, f"the body is not UTF-8 text (byte {exc.start}); save the file as UTF-8",
                       details={"offset": exc.start}) from None
    if "\x00" in text:
        offset = text.index("\x00")
        raise ApiError(400, f"the body holds a NUL character (character {offset}); text files never do",
                       details={"offset": offset})
    return text


# ---------------------------------------------------------------------------------------------------
# POST /references

@router.post(
    "/references", summary="Import references from a BibTeX or RIS file",
    openapi_extra={"requestBody": {"required": True, "content": {
        "application/x-bibtex": {"schema": {"type": "string", "format": "bibtex"}, "example": _BIB_EXAMPLE},
        "application/x-research-info-systems": {"schema": {"type": "string", "format": "ris"},
                                                "example": _RIS_EXAMPLE}}}},
    responses={200: {"content": {"application/json": {"example": {
        "created": ["bahdanauNeuralMachineTranslation2015"], "updated": [],
        "unchanged": ["huSqueezeandExcitationNetworks2018"],
        "skipped": [], "dry_run": False}}}},
        **AUTH_ERRORS, 413: ERROR_SCHEMA, 415: ERROR_SCHEMA,
        422: {"description": "Every problem in the file; nothing was written", "content": {"application/json": {
            "example": {"error": {"code": "invalid", "message": "2 problem(s) in the upload; nothing was written",
                                  "details": {"problems": [
                                      {"key": "smith2020", "field": "year", "message": "required field missing or "
                                       "empty", "line": 12},
                                      {"key": "doeDeepNets2019", "field": "pages", "message": "page range '1-9' must "
                                       "use '--' (e.g. 352--361)", "line": 20}]}}}}}}})
async def import_references(
    request: Request, settings: SettingsDep, key: WriteKey,
    on_conflict: Annotated[Literal["error", "replace", "skip"], Query(
        description="what to do when a key in the file names a stored reference with different content: "
                    "report it (error), overwrite it (replace) or keep the stored one (skip)")] = "error",
    dry_run: Annotated[bool, Query(description="validate and report what would happen, write nothing")] = False,
) -> Response:
    """Send a `.bib` file (`Content-Type: application/x-bibtex`, `text/x-bibtex` or
    `application/x-biblatex`) or an RIS file (`application/x-research-info-systems`), UTF-8.

    The whole file is checked before anything is written: unparseable entries, duplicate keys, missing
    title/author/year, a year that is not four digits, a DOI with a URL prefix, page ranges without `--`, and
    keys that name a stored reference with different content. Every problem comes back in one 422 response
    with its entry key, field and line. Otherwise all entries are written in one transaction, marked as
    imported (a sync from data/ keeps them, unless data/references.bib has the same key).

    BibTeX entries keep their keys. RIS records get Better BibTeX keys (`ittiModelSaliencybasedVisual1998`),
    with a, b, c, ... appended where a different reference already has the key; re-importing the same
    record finds it unchanged."""
    media = _media_type(request)
    if media not in BIBTEX_TYPES + RIS_TYPES:
        raise ApiError(415, f"Content-Type {quote(media or '(none)', 40)} is not supported; send one of "
                            f"{', '.join(BIBTEX_TYPES + RIS_TYPES)}",
                       details={"supported": list(BIBTEX_TYPES + RIS_TYPES)})
    text = _text(await read_body(request, settings.max_import_bytes))
    return await run_in_threadpool(_import, request, text, media in RIS_TYPES, on_conflict, dry_run, key.name)


def _import(request: Request, text: str, ris: bool, on_conflict: str, dry_run: bool, key_name: str) -> Response:
    limit = request.app.state.settings.max_field_chars
    entries, problems = parse_ris_upload(text, limit) if ris else parse_bibtex_upload(text, limit)
    with Session(request.app.state.engine) as session:
        stored = {r.citekey: (r.entry_type, r.fields, r.persons) for r in session.exec(select(Reference)).all()}
        plan = plan_import(entries, stored, on_conflict)  # type: ignore[arg-type]
        problems += plan.problems
        if problems:
            problems.sort(key=lambda p: (p.line or 0))
            raise ApiError(422, f"{len(problems)} problem(s) in the upload; nothing was written",
                           details={"problems": [p.as_dict() for p in problems]})
        result = {"created": [e.citekey for e in plan.create], "updated": [e.citekey for e in plan.update],
                  "unchanged": [e.citekey for e in plan.unchanged], "skipped": [e.citekey for e in plan.skipped],
                  "dry_run": dry_run}
        if dry_run or not (plan.create or plan.update):
            return Response(json_bytes(result), media_type="application/json")
        now = utcnow()
        for e in plan.create:
            session.add(Reference(citekey=e.citekey, entry_type=e.entry_type, fields=e.fields, persons=e.persons,
                                  bibtex=e.bibtex, source="api", updated_at=now))
        for e in plan.update:
            ref = session.get(Reference, e.citekey)
            ref.entry_type, ref.fields, ref.persons, ref.bibtex = e.entry_type, e.fields, e.persons, e.bibtex
            ref.source, ref.updated_at = "api", now
        bump(session)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            raise ApiError(409, "the library changed while this import was checked; nothing was written, send it "
                                "again") from None
    log.info("import by key %s: %d created, %d updated", key_name, len(plan.create), len(plan.update))
    return Response(json_bytes(result), media_type="application/json")


# ---------------------------------------------------------------------------------------------------
# PATCH /techniques/{slug}

def _document(t: Technique, rel: query.Related) -> dict[str, Any]:
    """The technique as a data/techniques/<slug>.yaml document (the shape the validation rules apply to)."""
    return {
        "slug": t.slug, "name": t.name, "aliases": list(t.aliases), "category": t.category_id,
        "subcategory": t.subcategory_id, "also_in": list(t.also_in), "year": t.year, "summary": t.summary,
        "formula": {"latex": t.formula_latex, "legend": [dict(i) for i in t.formula_legend]},
        "strengths": list(t.strengths), "limitations": list(t.limitations),
        "applications": list(rel.applications.get(t.slug, [])), "complexity": dict(t.complexity),
        "citekey": t.citekey, "related": list(rel.related.get(t.slug, [])),
        "implementation": {"scope": t.implementation_scope} if t.implementation_scope else None,
        "verification": [dict(v) for v in t.verification], "survey_note": t.survey_note,
        **({"identification": t.identification} if t.identification else {}),
        "divergences": [dict(d) for d in t.divergences],
    }


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge member by member, null removes a member, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def _check_if_match(request: Request, current_etag: str) -> None:
    header = request.headers.get("if-match")
    if header is None:
        return
    tags = [t.strip() for t in header.split(",") if t.strip()]
    # strong comparison: a weak tag never matches
    if "*" in tags or current_etag in tags:
        return
    raise ApiError(412, "the technique changed since you read it (If-Match does not match its ETag); GET it again "
                        "and reapply your change", code="precondition_failed",
                   details={"etag": current_etag, "if_match": header})


def _patch_problems(doc: dict[str, Any]) -> tuple[TechniqueFile | None, list[dict[str, Any]]]:
    """Every problem of the patched record: the data/ schema, the formula's LaTeX, the legend's symbols."""
    problems: list[dict[str, Any]] = []
    tf = None
    try:
        tf = TechniqueFile.model_validate(doc)
    except ValidationError as exc:
        problems += [{"field": ".".join(str(p) for p in e["loc"]), "problem": e["msg"]} for e in exc.errors()]
    return tf, problems + _formula_problems(doc)


def _formula_problems(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The rules no JSON Schema states: the formula's LaTeX parses, the legend's symbols are distinct."""
    problems: list[dict[str, Any]] = []
    formula = doc.get("formula")
    latex = formula.get("latex") if isinstance(formula, dict) else None
    if isinstance(latex, str):
        problems += [{"field": "formula.latex", "problem": msg} for msg in check_math(latex)]
    legend = formula.get("legend") if isinstance(formula, dict) else None
    if isinstance(legend, list):
        symbols = [i.get("symbol") for i in legend if isinstance(i, dict)]
        if len(set(symbols)) != len(symbols):
            problems.append({"field": "formula.legend", "problem": "a symbol is defined twice"})
    return problems


def _public(session: Session, slug: str) -> tuple[Technique, bytes, str]:
    """The technique as GET /techniques/{slug} serves it (the same bytes, so the same ETag)."""
    t = query.get_technique(session, slug)
    body = dumps(query.to_public(t, query.load_related(session, [slug])))
    return t, body, etag_for(body)


def _respond(t: Technique, body: bytes, etag: str) -> Response:
    headers = {"ETag": etag, "Cache-Control": "no-cache",
               "Last-Modified": format_datetime(query.aware(t.updated_at), usegmt=True)}
    return Response(body, media_type="application/json", headers=headers)


_PATCH_EXAMPLE = {"summary": "A rewritten summary of at least eighty characters that says what the technique "
                             "computes and where it is used.",
                  "applications": ["image-classification", "object-detection"],
                  "formula": {"latex": "s = \\sigma\\big(W_2\\,\\delta(W_1 z)\\big)"},
                  "survey_note": None}


@router.patch(
    "/techniques/{slug}", summary="Edit a technique's text fields (JSON merge patch)",
    openapi_extra={"requestBody": {"required": True, "content": {
        # the schema is filled in from the settings' text limits by service.openapi
        "application/merge-patch+json": {"schema": {"type": "object"}, "example": _PATCH_EXAMPLE},
        "application/json": {"schema": {"type": "object"}, "example": _PATCH_EXAMPLE}}}},
    responses={200: {"content": {"application/json": {"example": {
        "slug": "squeeze-and-excitation", "name": "Squeeze-and-Excitation",
        "applications": ["image-classification", "object-detection"], "updated_at": "2026-11-25T10:00:00"}}}},
        **AUTH_ERRORS, 400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 412: ERROR_SCHEMA, 413: ERROR_SCHEMA,
        415: ERROR_SCHEMA, 422: ERROR_SCHEMA})
async def patch_technique(request: Request, settings: SettingsDep, key: WriteKey,
                          slug: Annotated[str, SLUG]) -> Response:
    """Change any of `name`, `aliases`, `summary`, `strengths`, `limitations`, `applications`, `formula`
    (`latex`, `legend`), `complexity` (`time`, `memory`, `note`) and `survey_note`. Objects merge member by
    member and `null` removes an optional member (RFC 7396); lists are replaced whole.

    The result must satisfy the rules of data/techniques/*.yaml (lengths, application tags, a LaTeX formula
    that parses, a legend without repeated symbols); every problem is reported and nothing is written.
    Send `If-Match` with the ETag of `GET /techniques/{slug}` (without `fields`) to refuse the change (412)
    when someone else changed the technique in between. The response is the technique as GET returns it."""
    media = _media_type(request)
    if media not in PATCH_TYPES:
        raise ApiError(415, f"Content-Type {quote(media or '(none)', 40)} is not supported; send "
                            f"{' or '.join(PATCH_TYPES)}",
                       details={"supported": list(PATCH_TYPES)})
    body = await read_body(request, settings.max_json_body_bytes)
    _text(body)  # a clear 400 for a body that is not UTF-8
    patch = jsonbody.loads(body, what="the merge patch", allow_nonfinite=False)
    if not isinstance(patch, dict):
        raise ApiError(422, "a merge patch is a JSON object of the fields to change",
                       details={"allowed": list(EDITABLE)})
    unknown = sorted(set(patch) - set(EDITABLE))
    if unknown:
        raise ApiError(422, f"field(s) {quote(', '.join(unknown))} cannot be changed here; allowed: "
                            f"{', '.join(EDITABLE)}", details={"unknown": unknown, "allowed": list(EDITABLE)})
    removed = sorted(k for k, v in patch.items() if v is None and k not in OPTIONAL)
    if removed:
        raise ApiError(422, f"field(s) {', '.join(removed)} are required and cannot be removed (null)",
                       details={"problems": [{"field": k, "problem": "required; null would remove it"}
                                             for k in removed]})
    problems = edits.problems(patch, edits.patch_schema(settings))
    if problems:
        if not any(p["field"].startswith("formula") for p in problems):
            problems += _formula_problems(patch)  # every problem at once
        fields = ", ".join(dict.fromkeys(p["field"] for p in problems[:10]))
        raise ApiError(422, f"the patch breaks the rules for technique records ({fields}); nothing was written",
                       details={"problems": problems})
    return await run_in_threadpool(_patch, request, slug, patch, key.name)


_PATCH_ATTEMPTS = 5  # without If-Match: merges onto a record that changed meanwhile before giving up (409)


def _patch(request: Request, slug: str, patch: dict[str, Any], key_name: str) -> Response:
    """Read, merge, validate, then write with a compare-and-swap on the row's version: the UPDATE names the
    version that was read, so a change committed in between (by another request, worker or replica) makes
    it match no row. With If-Match that is a 412; without, the patch is merged again onto the newer record."""
    if_match = request.headers.get("if-match")
    for _ in range(_PATCH_ATTEMPTS):
        with Session(request.app.state.engine) as session:
            t, body, etag = _public(session, slug)
            _check_if_match(request, etag)
            read_version = t.version
            rel = query.load_related(session, [slug])
            current = _document(t, rel)
            tf, problems = _patch_problems(merge_patch(current, patch))
            if problems or tf is None:
                fields = ", ".join(dict.fromkeys(p["field"] for p in problems))
                raise ApiError(422, f"the change breaks the rules for technique records ({fields}); nothing was "
                                    "written", details={"problems": problems})
            values = {"name": tf.name, "aliases": tf.aliases, "summary": tf.summary,
                      "formula_latex": tf.formula.latex, "formula_legend": [i.model_dump() for i in tf.formula.legend],
                      "strengths": tf.strengths, "limitations": tf.limitations,
                      "complexity": tf.complexity.model_dump(exclude_none=True), "survey_note": tf.survey_note}
            changed = {k: v for k, v in values.items() if getattr(t, k) != v}
            apps_changed = tf.applications != current["applications"]
            if not changed and not apps_changed:
                return _respond(t, body, etag)

            now = utcnow()
            swapped = session.execute(
                update(Technique).where(Technique.slug == slug, Technique.version == read_version)
                .values(**changed, edited_via_api=True, updated_at=now, version=read_version + 1)
                .execution_options(synchronize_session=False)).rowcount
            if swapped != 1:
                session.rollback()
                if if_match is not None and if_match.strip() != "*":
                    t, body, etag = _public(session, slug)
                    raise ApiError(412, "the technique changed while this edit was checked (If-Match no longer "
                                        "matches its ETag); GET it again and reapply your change",
                                   code="precondition_failed", details={"etag": etag, "if_match": if_match})
                continue
            session.expire_all()
            if apps_changed:
                _set_applications(session, slug, tf.applications)
            session.flush()
            refresh_search_index(session)
            meta = session.get(Meta, "catalog_updated_at")
            if meta is None:
                session.add(Meta(key="catalog_updated_at", value=now.isoformat()))
            else:
                meta.value = now.isoformat()
            bump(session)
            session.commit()
            log.info("technique %s edited by key %s: %s", slug, key_name,
                     ", ".join(sorted(set(changed) | ({"applications"} if apps_changed else set()))))
            t, body, etag = _public(session, slug)
            return _respond(t, body, etag)
    raise ApiError(409, "the technique kept changing while this edit was applied; send it again",
                   details={"attempts": _PATCH_ATTEMPTS})


def _set_applications(session: Session, slug: str, tags: list[str]) -> None:
    session.exec(delete(TechniqueApplication).where(TechniqueApplication.technique_slug == slug))
    known = set(session.exec(select(Application.tag)).all())
    for tag in tags:
        if tag not in known:
            session.add(Application(tag=tag))
    session.flush()
    for i, tag in enumerate(tags):
        session.add(TechniqueApplication(technique_slug=slug, tag=tag, position=i))
    session.flush()
    used = set(session.exec(select(TechniqueApplication.tag)).all())
    for tag in known - used:
        session.exec(delete(Application).where(Application.tag == tag))

