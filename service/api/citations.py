"""Citations and exports: one technique's paper, any filtered set, or the whole library, as BibTeX,
BibLaTeX, RIS, CSL-JSON or formatted references (content negotiation as doi.org does it), plus Markdown
literature notes for Obsidian."""

from __future__ import annotations

import json
import re
import threading
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, FastAPI, Query, Request, Response
from sqlalchemy import select
from sqlmodel import Session

from ..catalog import query
from ..catalog.version import catalogue_version
from ..citations import bibtex, csl, formatted, markdown, negotiation, ris
from ..citations.bibtex import Work
from ..citations.library import KeyMap, Library, warm
from ..errors import ERROR_SCHEMA, ApiError, quote
from ..models import Reference, Technique
from .deps import SessionDep, conditional
from .techniques import SLUG, FiltersDep

router = APIRouter(tags=["citations"])

EXPORT_BASENAME = "attention-atlas"

# --- query parameters ----------------------------------------------------------------------------

# the values each parameter takes, as the OpenAPI document lists them (the server also accepts them in any
# letter case); an empty value means "not given"
FORMAT_VALUES = [*negotiation.FORMATS, *negotiation.FORMAT_ALIASES, ""]
STYLE_VALUES = [*formatted.style_names(), *formatted.ALIASES, ""]
LOCALE_VALUES = [*sorted({*formatted.locale_names(), *(k for k, v in formatted.PRIMARY_DIALECTS.items()
                                                         if v in formatted.locale_names())}), ""]

FormatQ = Annotated[str | None, Query(
    alias="format", description="output format, overriding the Accept header: " + ", ".join(
        f"`{f.name}` ({f.description})" for f in negotiation.FORMATS.values()), examples=["bibtex"],
    json_schema_extra={"enum": FORMAT_VALUES})]
StyleQ = Annotated[str | None, Query(
    max_length=64, description="citation style for formatted references (text, html): "
    + ", ".join(formatted.STYLES) + "; default apa. Overrides a style parameter in Accept.",
    examples=["ieee"], json_schema_extra={"enum": STYLE_VALUES})]
LocaleQ = Annotated[str | None, Query(
    max_length=16, description="locale for formatted references (terms, quotes, dates), e.g. en-US, en-GB, "
    "de-DE, fr-FR, or a bare language (de); default: the style's own locale, else en-US. Overrides a locale "
    "parameter in Accept.", examples=["en-GB"], json_schema_extra={"enum": LOCALE_VALUES})]
UnicodeQ = Annotated[bool, Query(description="BibTeX/BibLaTeX: write UTF-8 letters instead of LaTeX accent "
                                             "commands (protective braces are kept either way)")]

# --- examples for the OpenAPI document ------------------------------------------------------------

_BIB_EXAMPLE = """@inproceedings{wooCBAMConvolutionalBlock2018,
  title         = {{CBAM}: Convolutional Block Attention Module},
  author        = {Woo, Sanghyun and Park, Jongchan and Lee, Joon-Young and Kweon, In So},
  booktitle     = {Proceedings of the European Conference on Computer Vision ({ECCV})},
  pages         = {3--19},
  month         = sep,
  year          = {2018},
  eprint        = {1807.06521},
  archivePrefix = {arXiv},
  url           = {https://openaccess.thecvf.com/content_ECCV_2018/html/Sanghyun_Woo_Convolutional_Block_Attention_ECCV_2018_paper.html}
}
"""
_BIBLATEX_EXAMPLE = """@inproceedings{wooCBAMConvolutionalBlock2018,
  title       = {{CBAM}: Convolutional Block Attention Module},
  author      = {Woo, Sanghyun and Park, Jongchan and Lee, Joon-Young and Kweon, In So},
  booktitle   = {Proceedings of the European Conference on Computer Vision ({ECCV})},
  pages       = {3--19},
  date        = {2018-09},
  eprint      = {1807.06521},
  eprinttype  = {arxiv}
}
"""
_RIS_EXAMPLE = ("TY  - CONF\r\nTI  - CBAM: Convolutional Block Attention Module\r\nAU  - Woo, Sanghyun\r\n"
                "AU  - Park, Jongchan\r\nT2  - Proceedings of the European Conference on Computer Vision (ECCV)\r\n"
                "SP  - 3\r\nEP  - 19\r\nPY  - 2018\r\nDA  - 2018/09//\r\nER  - \r\n")
_CSL_EXAMPLE = [{"id": "wooCBAMConvolutionalBlock2018", "type": "paper-conference",
                 "title": "CBAM: Convolutional Block Attention Module",
                 "author": [{"family": "Woo", "given": "Sanghyun"}, {"family": "Park", "given": "Jongchan"}],
                 "container-title": "Proceedings of the European Conference on Computer Vision (ECCV)",
                 "page": "3-19", "issued": {"date-parts": [[2018, 9]]}}]
_TEXT_EXAMPLE = ("Woo, S., Park, J., Lee, J.-Y., & Kweon, I. S. (2018). CBAM: Convolutional Block Attention Module. "
                 "Proceedings of the European Conference on Computer Vision (ECCV), 3–19. https://openaccess.thecvf.com/"
                 "content_ECCV_2018/html/Sanghyun_Woo_Convolutional_Block_Attention_ECCV_2018_paper.html\n")
_HTML_EXAMPLE = ('<div class="csl-bib-body">\n  <div class="csl-entry">Woo, S., Park, J., Lee, J.-Y., &amp; Kweon, '
                 'I. S. (2018). CBAM: Convolutional Block Attention Module. <i>Proceedings of the European Conference '
                 'on Computer Vision (ECCV)</i>, 3–19.</div>\n</div>\n')
_NEGOTIATED = {
    200: {"description": "The citation in the negotiated format", "content": {
        "application/x-bibtex": {"example": _BIB_EXAMPLE},
        "application/x-biblatex": {"example": _BIBLATEX_EXAMPLE},
        "application/x-research-info-systems": {"example": _RIS_EXAMPLE},
        csl.MEDIA_TYPE: {"example": _CSL_EXAMPLE},
        "text/x-bibliography": {"example": _TEXT_EXAMPLE},
        "text/html": {"example": _HTML_EXAMPLE},
    }},
    304: {"description": "Not modified (If-None-Match matched the ETag)"},
    400: ERROR_SCHEMA, 404: ERROR_SCHEMA, 406: ERROR_SCHEMA, 422: ERROR_SCHEMA,
}
_NOTE_EXAMPLE = """---
title: Convolutional Block Attention Module
citekey: wooCBAMConvolutionalBlock2018
authors: [Sanghyun Woo, Jongchan Park, Joon-Young Lee, In So Kweon]
year: 2018
zotero: zotero://select/items/@wooCBAMConvolutionalBlock2018
---

# Convolutional Block Attention Module

## Formula

$$
M_c(F) = \\sigma(\\mathrm{MLP}(\\mathrm{AvgPool}(F)) + \\mathrm{MLP}(\\mathrm{MaxPool}(F)))
$$

## Related techniques

- [[squeeze-and-excitation|Squeeze-and-Excitation]]
"""


# --- helpers -------------------------------------------------------------------------------------

_LIBRARY_LOCK = threading.Lock()
MAX_SLUGS = 200
_SLUG_RE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def library_for(app) -> Library:
    """The app's citation library state (export keys and the body cache), made on first use."""
    lib = getattr(app.state, "citation_library", None)
    if lib is None:
        with _LIBRARY_LOCK:
            lib = getattr(app.state, "citation_library", None)
            if lib is None:
                lib = Library(app.state.settings.citation_cache_bytes)
                app.state.citation_library = lib
    return lib


def _choose(request: Request, fmt: str | None, style: str | None, locale: str | None
            ) -> tuple[negotiation.Format, str, str | None]:
    """Pick the format (format= over Accept), style and locale; every value is checked."""
    accept = request.headers.get("accept")
    try:
        choice = negotiation.negotiate(accept, fmt)
    except KeyError:
        raise ApiError(400, f"unknown format {quote(fmt, 30)}; use one of {', '.join(negotiation.FORMATS)}",
                       details={"parameter": "format", "allowed": list(negotiation.FORMATS),
                                "aliases": negotiation.FORMAT_ALIASES}) from None
    except negotiation.NotAcceptable:
        raise ApiError(406, f"none of the media types in Accept {quote(accept)} can be produced; send one of "
                            f"{', '.join(list(negotiation.MEDIA_TYPES)[:6])} or use the format parameter",
                       details=negotiation.supported()) from None

    def bad(kind: str, value: str, allowed: list[str], from_accept: bool) -> ApiError:
        if from_accept:
            return ApiError(406, f"the {kind} {quote(value, 30)} asked for in Accept is not available; use one of "
                                 f"{', '.join(allowed[:12])}{' ...' if len(allowed) > 12 else ''}",
                            details={**negotiation.supported(), f"{kind}s": allowed})
        return ApiError(400, f"unknown {kind} {quote(value, 30)}; use one of {', '.join(allowed[:12])}"
                             f"{' ...' if len(allowed) > 12 else ''}",
                        details={"parameter": kind, "allowed": allowed})

    style_value = style if style is not None else choice.style
    try:
        style_name = formatted.resolve_style(style_value)
    except formatted.UnknownStyle:
        raise bad("style", style_value or "", formatted.style_names() + sorted(formatted.ALIASES),
                  style is None) from None
    locale_value = locale if locale is not None else choice.locale
    locale_name = None
    if locale_value:
        try:
            locale_name = formatted.resolve_locale(locale_value)
        except formatted.UnknownLocale:
            raise bad("locale", locale_value, formatted.locale_names(), locale is None) from None
    return choice.format, style_name, locale_name


def _body(fmt: negotiation.Format, works: list[Work], style: str, locale: str | None, unicode: bool,
          preamble: str | None) -> bytes:
    if fmt.name in ("bibtex", "biblatex"):
        text = bibtex.write(works, biblatex=fmt.name == "biblatex", unicode=unicode, preamble=preamble)
    elif fmt.name == "ris":
        text = ris.write(works)
    elif fmt.name == "csl-json":
        return json.dumps(csl.to_csl_items(works), ensure_ascii=False, indent=2).encode() + b"\n"
    else:
        text = formatted.bibliography(csl.to_csl_items(works), style, locale, "html" if fmt.name == "html" else "text")
    return text.encode("utf-8")


def _respond(request: Request, fmt: negotiation.Format, body: bytes, basename: str,
             last_modified: datetime | None) -> Response:
    disposition = "inline" if fmt.name in ("text", "html") else "attachment"
    headers = {"Content-Disposition": f'{disposition}; filename="{basename}.{fmt.extension}"', "Vary": "Accept"}
    media = fmt.media_type if fmt.name == "csl-json" else f"{fmt.media_type}; charset=utf-8"
    return conditional(request, body, media, last_modified, headers=headers)


def _matching(session: Session, flt: query.Filters) -> list[Technique]:
    return query.list_techniques(session, flt, "slug", 1_000_000, None).items


def _is_whole_library(flt: query.Filters) -> bool:
    return flt == query.Filters()


def _newest(*stamps: datetime | None) -> datetime | None:
    present = [query.aware(s) for s in stamps if s is not None]
    return max(present) if present else None


# --- routes --------------------------------------------------------------------------------------

@router.get("/techniques/{slug}/citation", summary="Citation of a technique's original paper",
            response_class=Response, responses=_NEGOTIATED)
def technique_citation(request: Request, session: SessionDep, slug: Annotated[str, SLUG],
                       fmt: FormatQ = None, style: StyleQ = None, locale: LocaleQ = None,
                       unicode: UnicodeQ = False) -> Response:
    """The original paper of one technique, negotiated like doi.org: `Accept: application/x-bibtex`,
    `application/x-biblatex`, `application/x-research-info-systems`, `application/vnd.citationstyles.csl+json`,
    `text/x-bibliography; style=apa; locale=en-US` or `text/html`; `format=` overrides the header. No Accept
    (or `*/*`) gives BibTeX. Anything else is answered with 406 and the list of what is available."""
    fmt_, style_name, locale_name = _choose(request, fmt, style, locale)
    t = query.get_technique(session, slug)
    ref = session.get(Reference, t.citekey)
    if ref is None:
        raise ApiError(404, f"the technique '{slug}' cites '{t.citekey}', which is not in the library",
                       details={"citekey": t.citekey})
    lib = library_for(request.app)
    keymap = lib.keymap(session)
    cache_key = (keymap.version, (t.citekey,), fmt_.name, style_name, locale_name, unicode, False)
    body = lib.bodies.get_or_make(cache_key, lambda: _body(
        fmt_, lib.works(session, [t.citekey], keymap), style_name, locale_name, unicode, None))
    return _respond(request, fmt_, body, keymap.keys.get(t.citekey, t.citekey), _newest(t.updated_at, ref.updated_at))


SlugsQ = Annotated[list[str], Query(
    alias="slug", description=f"technique slugs to export (repeat the parameter, at most {MAX_SLUGS}); "
    "combined with the other filters", examples=["cbam"],
    json_schema_extra={"maxItems": MAX_SLUGS, "items": {"type": "string", "maxLength": 96,
                                                        "pattern": f"^{_SLUG_RE.pattern}$"}})]


def _selected(session: Session, slugs: list[str]) -> list[Technique]:
    if len(slugs) > MAX_SLUGS:
        raise ApiError(400, f"{len(slugs)} slugs given; at most {MAX_SLUGS} per request",
                       details={"parameter": "slug", "maximum": MAX_SLUGS})
    malformed = [s for s in slugs if len(s) > 96 or not _SLUG_RE.fullmatch(s)]
    if malformed:
        raise ApiError(400, f"{malformed[0][:100]!r} is not a slug (lower-case letters and digits joined by "
                            "hyphens, at most 96 characters)", details={"parameter": "slug"})
    wanted = set(slugs)
    found = list(session.execute(select(Technique).where(Technique.slug.in_(wanted))).scalars())
    unknown = sorted(wanted - {t.slug for t in found})
    if unknown:
        raise ApiError(404, f"no technique with the slug(s) {', '.join(unknown)}", details={"unknown": unknown})
    return found


def export_citekeys(session: Session, flt: query.Filters, slugs: list[str], include_survey: bool
                    ) -> tuple[str, ...] | None:
    """The references an export covers (None: every reference in the library)."""
    survey = query.survey_citekey(session)
    if slugs:
        techniques = _selected(session, slugs)
        if not _is_whole_library(flt):
            matching = {t.slug for t in _matching(session, flt)}
            techniques = [t for t in techniques if t.slug in matching]
        citekeys = {t.citekey for t in techniques}
    elif _is_whole_library(flt):
        if include_survey or not survey:
            return None
        return tuple(sorted(set(session.execute(select(Reference.citekey)).scalars()) - {survey}))
    else:
        citekeys = {t.citekey for t in _matching(session, flt)}
    if survey and include_survey:
        citekeys.add(survey)
    return tuple(sorted(citekeys))


@router.get("/export", summary="Export the library or a filtered set of papers",
            response_class=Response, responses=_NEGOTIATED)
def export(request: Request, session: SessionDep, flt: FiltersDep, fmt: FormatQ = None, style: StyleQ = None,
           locale: LocaleQ = None, unicode: UnicodeQ = False, slugs: SlugsQ = [],  # noqa: B006
           include_survey: Annotated[bool, Query(description="also include the survey the catalogue follows "
                                                             "(Hassanin et al.)")] = True) -> Response:
    """The original papers of every technique matching the filters (the same filters as `GET /techniques`,
    plus `slug` for a hand-picked selection; without filters: every reference in the library), with the same
    formats and negotiation as `/techniques/{slug}/citation`. Keys are Better BibTeX keys, unique across the
    library."""
    fmt_, style_name, locale_name = _choose(request, fmt, style, locale)
    lib = library_for(request.app)
    keymap = lib.keymap(session)
    citekeys = export_citekeys(session, flt, slugs, include_survey)
    body = lib.bodies.get_or_make((keymap.version, citekeys, fmt_.name, style_name, locale_name, unicode, True),
                                  lambda: _export_body(session, lib, keymap, citekeys, fmt_, style_name, locale_name,
                                                       unicode))
    return _respond(request, fmt_, body, EXPORT_BASENAME, keymap.last_modified)


def _export_body(session: Session, lib: Library, keymap: KeyMap, citekeys: tuple[str, ...] | None,
                 fmt: negotiation.Format, style: str, locale: str | None, unicode: bool) -> bytes:
    works = lib.works(session, citekeys, keymap)
    preamble = f"Attention Atlas: {len(works)} reference(s)." if fmt.name in ("bibtex", "biblatex") else None
    return _body(fmt, works, style, locale, unicode, preamble)


def _note_contexts(request: Request, session: Session, techniques: list[Technique]) -> list[markdown.NoteContext]:
    slugs = [t.slug for t in techniques]
    rel = query.load_related(session, slugs)
    related = {s for values in rel.related.values() for s in values}
    names = dict(session.execute(select(Technique.slug, Technique.name).where(Technique.slug.in_(related))).all()
                 ) if related else {}
    keys = library_for(request.app).keymap(session).keys
    base = str(request.base_url).rstrip("/")
    out = []
    for t in techniques:
        ref = rel.references.get(t.citekey)
        work = bibtex.work_from(ref, keys.get(ref.citekey)) if ref else None
        cat, sub = rel.categories.get(t.category_id), rel.categories.get(t.subcategory_id)
        out.append(markdown.NoteContext(
            technique=t, work=work, category_name=cat.name if cat else t.category_id,
            subcategory_name=sub.name if sub else t.subcategory_id, applications=rel.applications.get(t.slug, []),
            related=[(s, names.get(s, s)) for s in rel.related.get(t.slug, [])], source_url=f"{base}/t/{t.slug}"))
    return out


@router.get("/techniques/{slug}/note.md", summary="Markdown literature note for Obsidian",
            response_class=Response,
            responses={200: {"description": "The note", "content": {"text/markdown": {"example": _NOTE_EXAMPLE}}},
                       304: {"description": "Not modified"}, 404: ERROR_SCHEMA})
def technique_note(request: Request, session: SessionDep, slug: Annotated[str, SLUG]) -> Response:
    """A literature note: YAML front matter (title, citekey, authors, year, venue, category, tags, a
    `zotero://select/items/@citekey` link, DOI and arXiv links), then summary, formula (`$$` display math),
    strengths, limitations, applications and related techniques as `[[wikilinks]]` (notes are named
    `<slug>.md`, as in `/export/notes.zip`)."""
    t = query.get_technique(session, slug)
    lib = library_for(request.app)
    version = catalogue_version(session)
    body = lib.bodies.get_or_make((version, "note", slug, str(request.base_url)), lambda: markdown.note(
        _note_contexts(request, session, [t])[0]).encode("utf-8"))
    ref = session.get(Reference, t.citekey)
    return conditional(request, body, "text/markdown; charset=utf-8",
                       _newest(t.updated_at, ref.updated_at if ref else None),
                       headers={"Content-Disposition": f'inline; filename="{t.slug}.md"'})


@router.get("/export/notes.zip", summary="Zip of Markdown notes for a filtered set",
            response_class=Response,
            responses={200: {"description": "A zip with one `<slug>.md` note per technique and an index note, "
                                            "in the folder `attention-atlas/`",
                             "content": {"application/zip": {"schema": {"type": "string", "format": "binary"},
                                                             "example": "PK\u0003\u0004..."}}},
                       304: {"description": "Not modified"}, 400: ERROR_SCHEMA, 422: ERROR_SCHEMA})
def export_notes(request: Request, session: SessionDep, flt: FiltersDep) -> Response:
    """Notes for every technique matching the filters (same filters as `GET /techniques`), ready to unzip
    into an Obsidian vault: the `[[wikilinks]]` between them resolve, and `Attention Atlas.md` lists them
    by category."""
    techniques = _matching(session, flt)
    contexts = _note_contexts(request, session, techniques)
    notes = {f"{c.technique.slug}.md": markdown.note(c) for c in contexts}
    index = markdown.index_note([(c.technique.slug, c.technique.name, c.category_name) for c in contexts])
    body = markdown.notes_zip(notes, index)
    return conditional(request, body, "application/zip", library_for(request.app).keymap(session).last_modified,
                       headers={"Content-Disposition": f'attachment; filename="{EXPORT_BASENAME}-notes.zip"'})


# --- warming -------------------------------------------------------------------------------------

def _warm_bodies(app: FastAPI):
    def render(session: Session, keymap: KeyMap) -> None:
        lib = library_for(app)
        for fmt in negotiation.FORMATS.values():
            styles = formatted.style_names() if fmt.name in ("text", "html") else [formatted.DEFAULT_STYLE]
            for style in styles:
                lib.bodies.get_or_make((keymap.version, None, fmt.name, style, None, False, True), lambda: _export_body(
                    session, lib, keymap, None, fmt, style, None, False))  # noqa: B023 - called at once
    return render


def start_warming(app: FastAPI) -> threading.Thread | None:
    """Fill the citation cache for the whole library in every format and style, in the background."""
    if not app.state.settings.warm_citations:
        return None
    thread = threading.Thread(target=warm, args=(app.state.engine, library_for(app), _warm_bodies(app)),
                              name="citation-cache-warm", daemon=True)
    thread.start()
    return thread
