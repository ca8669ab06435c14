"""Content negotiation for citations, in the manner of doi.org: the ``Accept`` header picks the format
(``text/x-bibliography`` may carry ``style`` and ``locale`` parameters), and a ``format`` query
parameter overrides it for clients that cannot set headers."""

from __future__ import annotations

from dataclasses import dataclass

from . import csl, ris


@dataclass(frozen=True)
class Format:
    name: str  # the value of the format= parameter
    media_type: str  # the Content-Type of the response (without charset)
    extension: str  # for the Content-Disposition file name
    description: str


FORMATS: dict[str, Format] = {f.name: f for f in (
    Format("bibtex", "application/x-bibtex", "bib", "BibTeX (classic BibTeX; ASCII with LaTeX accents unless "
                                                    "unicode=true)"),
    Format("biblatex", "application/x-biblatex", "bib", "BibLaTeX (for Biber: date, journaltitle, eprinttype)"),
    Format("ris", ris.MEDIA_TYPE, "ris", "RIS (Reference Manager tagged format)"),
    Format("csl-json", csl.MEDIA_TYPE, "json", "CSL-JSON (Zotero, Pandoc, citeproc)"),
    Format("text", "text/x-bibliography", "txt", "formatted references as plain text (style, locale)"),
    Format("html", "text/html", "html", "formatted references as HTML (style, locale)"),
)}
FORMAT_ALIASES = {"bib": "bibtex", "csljson": "csl-json", "csl": "csl-json", "json": "csl-json", "txt": "text"}

# Accepted media types -> format name (first one listed per format is the canonical type).
# Order matters for wildcards: application/* gives BibTeX, text/* formatted text.
MEDIA_TYPES: dict[str, str] = {
    "application/x-bibtex": "bibtex",
    "application/x-biblatex": "biblatex",
    "application/x-research-info-systems": "ris",
    "application/vnd.citationstyles.csl+json": "csl-json",
    "text/x-bibliography": "text",
    "text/html": "html",
    "text/x-bibtex": "bibtex",
    "application/citeproc+json": "csl-json",
    "application/json": "csl-json",
    "text/plain": "text",
}
DEFAULT_FORMAT = "bibtex"


class NotAcceptable(Exception):
    def __init__(self, accept: str):
        super().__init__(accept)
        self.accept = accept


@dataclass(frozen=True)
class Choice:
    format: Format
    style: str | None = None  # from the media type's parameters, if any
    locale: str | None = None


@dataclass(frozen=True)
class _Range:
    type: str
    subtype: str
    params: dict
    q: float
    order: int

    @property
    def specificity(self) -> int:
        return (self.type != "*") + (self.subtype != "*") + (1 if self.params else 0)


def _parse_accept(header: str) -> list[_Range]:
    ranges = []
    for order, part in enumerate(p for p in header.split(",") if p.strip()):
        pieces = [x.strip() for x in part.split(";")]
        media = pieces[0].lower()
        if media == "*":
            media = "*/*"
        if "/" not in media:
            continue
        type_, subtype = media.split("/", 1)
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            if "=" not in piece:
                continue
            k, v = piece.split("=", 1)
            k, v = k.strip().lower(), v.strip().strip('"')
            if k == "q":
                try:
                    q = max(0.0, min(1.0, float(v)))
                except ValueError:
                    q = 0.0
            else:
                params[k] = v
        ranges.append(_Range(type_, subtype, params, q, order))
    return ranges


def _matches(rng: _Range, media_type: str) -> bool:
    type_, subtype = media_type.split("/", 1)
    return rng.type in ("*", type_) and rng.subtype in ("*", subtype)


def negotiate(accept: str | None, format_param: str | None = None) -> Choice:
    """The format for a request. ``format_param`` wins over ``Accept``; no Accept (or ``*/*``) gives
    BibTeX. Raises :class:`NotAcceptable` when nothing acceptable is offered, :class:`KeyError` for an
    unknown ``format`` value."""
    if format_param:
        name = format_param.strip().lower()
        name = FORMAT_ALIASES.get(name, name)
        if name not in FORMATS:
            raise KeyError(format_param)
        return Choice(FORMATS[name])
    if not accept or not accept.strip():
        return Choice(FORMATS[DEFAULT_FORMAT])
    ranges = _parse_accept(accept)
    if not ranges:
        raise NotAcceptable(accept)
    # Each offered media type gets the quality of the most specific range that matches it.
    best: tuple[float, int, int, int] | None = None
    choice: Choice | None = None
    for offer_index, (media_type, name) in enumerate(MEDIA_TYPES.items()):
        matching = [r for r in ranges if _matches(r, media_type)]
        if not matching:
            continue
        rng = max(matching, key=lambda r: (r.specificity, -r.order))
        if rng.q <= 0:
            continue
        # rank: quality, then explicit over wildcard, then the client's order, then ours
        exact = rng.type != "*" and rng.subtype != "*"
        rank = (rng.q, int(exact), -rng.order, -offer_index)
        if best is None or rank > best:
            best, choice = rank, Choice(FORMATS[name], rng.params.get("style"), rng.params.get("locale"))
    if choice is None:
        raise NotAcceptable(accept)
    return choice


def supported() -> dict[str, object]:
    """What a 406 lists: the media types, the format= values, and the styles."""
    from . import formatted

    return {
        "media_types": list(MEDIA_TYPES),
        "formats": list(FORMATS),
        "styles": formatted.style_names(),
        "example": "Accept: text/x-bibliography; style=apa; locale=en-US",
    }
