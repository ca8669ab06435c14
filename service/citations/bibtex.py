"""BibTeX and BibLaTeX export, written with bibtexparser 2.x from the stored references.

Every export reads one reference through :class:`Work`, a view that combines the three things the
database keeps for it: the decoded Unicode fields (display, CSL, RIS), the person lists, and the raw
entry (re-parsed here, so titles keep the braces that protect acronyms and proper nouns, and URLs keep
characters such as ``~`` that LaTeX decoding would mangle).

BibTeX output is pure ASCII by default: non-ASCII letters become LaTeX commands (``{\\"u}``) so that
classic BibTeX works; ``unicode=True`` writes UTF-8 letters instead (for Biber or BibTeX with UTF-8
support), keeping the protective braces either way. Months are written as macros (``month = jun``),
page ranges with ``--``, arXiv papers with ``eprint``/``archivePrefix``/``primaryClass``.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import bibtexparser
from bibtexparser import BibtexFormat
from bibtexparser.library import Library
from bibtexparser.model import Entry, Field
from pylatexenc.latex2text import LatexNodes2Text
from pylatexenc.latexencode import UnicodeToLatexEncoder
from pylatexenc.latexwalker import LatexWalker, get_default_latex_context_db

from ..models import Reference
from .keys import better_bibtex_key, postfixes

logging.getLogger("pylatexenc").setLevel(logging.ERROR)

MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH_NAMES = {name: i + 1 for i, name in enumerate(MONTHS)}
_MONTH_NAMES.update({
    "january": 1, "february": 2, "march": 3, "april": 4, "june": 6, "july": 7, "august": 8,
    "september": 9, "sept": 9, "october": 10, "november": 11, "december": 12,
})

# Fields copied without LaTeX encoding or decoding (identifiers and addresses).
VERBATIM = frozenset({"doi", "url", "eprint", "archiveprefix", "primaryclass", "isbn", "issn", "file"})
PERSON_FIELDS = ("author", "editor")
# Conventional spelling of field names in the output (bibtexparser keeps keys as given).
_CANONICAL = {"archiveprefix": "archivePrefix", "primaryclass": "primaryClass"}
# Output order; fields not listed follow in alphabetical order.
_ORDER = ("title", "author", "editor", "booktitle", "journal", "journaltitle", "series", "volume", "number",
          "pages", "publisher", "address", "location", "month", "year", "date", "doi", "eprint",
          "archiveprefix", "eprinttype", "primaryclass", "eprintclass", "url")
_ARXIV_ID = re.compile(r"^(?:\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?$")
_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_:.\-]*$")


def _strip_enclosing(value: str) -> str:
    """``{x}`` or ``"x"`` -> ``x`` when the delimiters enclose the whole value."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        return value[1:-1]
    if len(value) >= 2 and value[0] == "{" and value[-1] == "}":
        depth = 0
        for i, ch in enumerate(value):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0 and i != len(value) - 1:
                    return value  # "{A} and {B}": the first brace closes early
        return value[1:-1]
    return value


@lru_cache(maxsize=2048)
def raw_fields(bibtex: str) -> dict[str, str]:
    """The fields of one stored entry exactly as written (enclosing delimiters removed)."""
    if not bibtex.strip():
        return {}
    lib = bibtexparser.parse_string(bibtex)
    if not lib.entries:
        return {}
    return {f.key.lower(): _strip_enclosing(str(f.value)) for f in lib.entries[0].fields}


def month_number(value: str | None) -> int | None:
    if not value:
        return None
    v = value.strip().strip("{}").lower().rstrip(".")
    if v.isdigit():
        n = int(v)
        return n if 1 <= n <= 12 else None
    return _MONTH_NAMES.get(v)


def page_range(value: str | None) -> tuple[str, str | None] | None:
    """'3--19' -> ('3', '19'); '102417' -> ('102417', None)."""
    if not value:
        return None
    parts = [p.strip() for p in re.split(r"\s*(?:--+|–|—|-)\s*", value.strip(), maxsplit=1)]
    if len(parts) == 2 and parts[0] and parts[1]:
        return parts[0], parts[1]
    return value.strip(), None


@dataclass
class Work:
    """One reference as the exporters see it."""

    key: str  # the citation key written in exports (unique across the library)
    citekey: str  # the key the catalogue stores it under
    entry_type: str
    fields: dict[str, str]  # decoded Unicode values, braces removed
    raw: dict[str, str]  # values as written in the .bib entry, enclosing braces removed
    persons: dict[str, list[dict[str, str]]] = field(default_factory=dict)

    def text(self, name: str) -> str | None:
        """A field for Unicode targets (CSL, RIS, notes); identifiers come from the raw entry."""
        if name in VERBATIM:
            value = self.raw.get(name) or self.fields.get(name)
            return value.strip().strip("{}") if value else None
        return self.fields.get(name) or None

    @property
    def title(self) -> str:
        return self.text("title") or ""

    @property
    def year(self) -> int | None:
        y = (self.fields.get("year") or self.raw.get("year") or "").strip("{} ")
        return int(y) if y.isdigit() else None

    @property
    def month(self) -> int | None:
        return month_number(self.raw.get("month") or self.fields.get("month"))

    @property
    def pages(self) -> tuple[str, str | None] | None:
        return page_range(self.raw.get("pages") or self.fields.get("pages"))

    @property
    def authors(self) -> list[dict[str, str]]:
        return self.persons.get("author", [])

    @property
    def editors(self) -> list[dict[str, str]]:
        return self.persons.get("editor", [])

    @property
    def container(self) -> str | None:
        return self.text("booktitle") or self.text("journal")

    @property
    def doi(self) -> str | None:
        return self.text("doi")

    @property
    def url(self) -> str | None:
        return self.text("url")

    @property
    def arxiv_id(self) -> str | None:
        prefix = (self.text("archiveprefix") or "").lower()
        eprint = (self.text("eprint") or "").removeprefix("arXiv:").removeprefix("arxiv:")
        if eprint and (prefix == "arxiv" or (not prefix and _ARXIV_ID.match(eprint))):
            return eprint
        return None

    @property
    def arxiv_class(self) -> str | None:
        return self.text("primaryclass") if self.arxiv_id else None

    @property
    def arxiv_url(self) -> str | None:
        return f"https://arxiv.org/abs/{self.arxiv_id}" if self.arxiv_id else None

    @property
    def link(self) -> str | None:
        """The address every format gives for the paper: its own URL, else its arXiv record."""
        return self.url or self.arxiv_url

    @property
    def doi_url(self) -> str | None:
        return f"https://doi.org/{self.doi}" if self.doi else None

    @property
    def is_preprint(self) -> bool:
        """An arXiv-only paper (``@article`` with ``journal = {arXiv preprint}``, or ``@misc`` with an eprint)."""
        journal = (self.fields.get("journal") or "").lower()
        if self.entry_type == "article" and journal.startswith("arxiv"):
            return True
        return self.entry_type in ("misc", "unpublished", "online") and bool(self.arxiv_id)

    def author_names(self) -> list[str]:
        return [f"{p.get('given', '')} {p.get('family', '')}".strip() for p in self.authors]


def work_from(ref: Reference, key: str | None = None) -> Work:
    return Work(key=key or ref.citekey, citekey=ref.citekey, entry_type=ref.entry_type.lower(),
                fields=dict(ref.fields), raw=raw_fields(ref.bibtex or ""), persons=dict(ref.persons))


def usable_key(citekey: str) -> bool:
    """Whether a stored key can be written as a BibTeX key as it is."""
    return bool(_KEY_RE.match(citekey))


def generated_key(ref: Reference) -> str:
    """The Better BibTeX key built from the fields, for a stored key that BibTeX cannot use."""
    authors = ref.persons.get("author") or ref.persons.get("editor") or [{"family": "anon"}]
    return better_bibtex_key(authors[0].get("family", "anon"), raw_fields(ref.bibtex or "").get(
        "title", ref.fields.get("title", "")), ref.fields.get("year", "")) or "ref"


def assign_export_keys(citekeys: Iterable[str], generated: dict[str, str]) -> dict[str, str]:
    """Export keys for a whole library: the stored key when it is a usable BibTeX key, else the
    generated one (``generated[citekey]``); keys that collide (BibTeX compares keys case-insensitively)
    get Better BibTeX's postfix a, b, c, ... in citekey order."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for citekey in sorted(citekeys):
        key = citekey if usable_key(citekey) else generated[citekey]
        base, suffixes = key, postfixes()
        while key.lower() in taken:
            key = base + next(suffixes)
        taken.add(key.lower())
        out[citekey] = key
    return out


def assign_keys(refs: Iterable[Reference]) -> dict[str, str]:
    """:func:`assign_export_keys` for reference rows."""
    refs = list(refs)
    return assign_export_keys([r.citekey for r in refs],
                              {r.citekey: generated_key(r) for r in refs if not usable_key(r.citekey)})


# --- LaTeX encoding and decoding ------------------------------------------------------------------

_ENC_NONASCII = UnicodeToLatexEncoder(non_ascii_only=True, replacement_latex_protection="braces-all",
                                      unknown_char_policy="keep")
_ENC_ALL = UnicodeToLatexEncoder(non_ascii_only=False, replacement_latex_protection="braces-all",
                                 unknown_char_policy="keep")
_DASHES = {"\u2013": "--", "\u2014": "---", "\u00a0": "~"}


_PLAIN_ASCII = re.compile(r"[A-Za-z0-9 .,;:!?()\[\]/'@+=*<>|\-]*")


@lru_cache(maxsize=65536)
def latex_encode(text: str, *, escape_specials: bool = False) -> str:
    """Non-ASCII letters as LaTeX commands (``Grün`` -> ``Gr{\\"u}n``); en and em dashes as ``--``/``---``.

    With ``escape_specials`` (for plain text that never was LaTeX) ``& % # _ $`` are escaped too."""
    if _PLAIN_ASCII.fullmatch(text):
        return text  # nothing to encode: skip pylatexenc, which sets up its state on every call
    text = unicodedata.normalize("NFC", text)
    for ch, rep in _DASHES.items():
        text = text.replace(ch, rep)
    if escape_specials:
        parts = re.split(r"(--+|~)", text)
        return "".join(p if re.fullmatch(r"--+|~", p) else _ENC_ALL.unicode_to_latex(p) for p in parts)
    if text.isascii():
        return text
    return _ENC_NONASCII.unicode_to_latex(text)


_ACCENT = r"\\(?:[`'^\"~=.]|[cvuHkrdbt](?![A-Za-z]))\s*(?:\{\s*(?:\\[ij]|[A-Za-z])?\s*\}|\\[ij](?![A-Za-z])|[A-Za-z])"
_LETTER = r"\\(?:ss|ae|AE|oe|OE|aa|AA|[LlOoij])(?![A-Za-z])(?:\{\})?"
_MACRO_RE = re.compile(r"\{\s*(?:" + _ACCENT + "|" + _LETTER + r")\s*\}|" + _ACCENT + "|" + _LETTER)
_DECODER = LatexNodes2Text()
_WALKER_DB = get_default_latex_context_db()  # built once: LatexWalker would build it on every call


@lru_cache(maxsize=8192)
def _letter(macro: str) -> str:
    """One accent or special-letter command as its Unicode letter (the command itself if it has none)."""
    walker = LatexWalker(macro, latex_context=_WALKER_DB, tolerant_parsing=True)
    decoded = _DECODER.nodelist_to_text(walker.get_latex_nodes()[0])
    return decoded if decoded and not decoded.isspace() else macro


@lru_cache(maxsize=65536)
def latex_letters_to_unicode(text: str) -> str:
    """Turn accent and special-letter commands into Unicode letters, leaving every other brace, math and
    command in place: ``{CBAM}: Fran{\\c{c}}ois`` -> ``{CBAM}: François``. Linear in the length."""
    if "\\" not in text:
        return unicodedata.normalize("NFC", text)
    return unicodedata.normalize("NFC", _MACRO_RE.sub(lambda m: _letter(m.group(0)), text))


def protect_title(title: str) -> str:
    """Brace words that a BibTeX style must not lower-case (``ResNeSt``, ``3D``, ``GANs``) when they are
    not already inside braces; text inside braces and math is left exactly as written."""
    out: list[str] = []
    depth, i, n = 0, 0, len(title)
    in_math = False
    buf: list[str] = []

    def flush() -> None:
        if buf:
            out.append(re.sub(r"(?<![\\\w])(\w*[A-Z]\w*)", _maybe_brace, "".join(buf)))
            buf.clear()

    while i < n:
        ch = title[i]
        if ch == "\\" and i + 1 < n:  # a command or escaped character: copy as is
            flush()
            m = re.match(r"\\[A-Za-z]+|\\.", title[i:])
            out.append(m.group(0))
            i += len(m.group(0))
            continue
        if ch == "$" and depth == 0:
            flush()
            in_math = not in_math
            out.append(ch)
        elif ch == "{":
            flush()
            depth += 1
            out.append(ch)
        elif ch == "}":
            flush()
            depth = max(0, depth - 1)
            out.append(ch)
        elif depth == 0 and not in_math:
            buf.append(ch)
        else:
            out.append(ch)
        i += 1
    flush()
    return "".join(out)


def _maybe_brace(m: re.Match) -> str:
    word = m.group(1)
    if any(c.isupper() for c in word[1:]) or (word[0].isdigit() and any(c.isupper() for c in word)):
        return "{" + word + "}"
    return word


# --- writing -------------------------------------------------------------------------------------

_WORD_START_NON_ASCII = re.compile(r"(?:^|(?<=[\s\-~]))([^\x00-\x7f])")


def protect_initials(name: str) -> str:
    """``Łukasz`` -> ``{\\relax Ł}ukasz``: classic BibTeX counts bytes, so a style that abbreviates given
    names (ieeetr, abbrv) would cut a UTF-8 letter in half; a brace group that starts with a command is one
    "special character" to BibTeX and is kept whole. Biber reads the same text as the plain letter."""
    return _WORD_START_NON_ASCII.sub(lambda m: "{\\relax " + m.group(1) + "}", name)


def _person_list(people: Sequence[dict[str, str]], unicode: bool, biblatex: bool = False) -> str:
    names = []
    for p in people:
        family, given = p.get("family", "").strip(), p.get("given", "").strip()
        if not unicode:
            family, given = latex_encode(family, escape_specials=True), latex_encode(given, escape_specials=True)
        elif not biblatex:
            family, given = protect_initials(unicodedata.normalize("NFC", family)), protect_initials(
                unicodedata.normalize("NFC", given))
        if not given and " " in family:  # an organisation: keep it one name
            names.append("{" + family + "}")
        elif given:
            names.append(f"{family}, {given}")
        else:
            names.append(family)
    return " and ".join(names)


def _text_value(work: Work, name: str, unicode: bool) -> str | None:
    raw = work.raw.get(name)
    if raw is None:  # only the decoded value is known: it is plain text, not LaTeX
        plain = work.fields.get(name)
        if plain is None:
            return None
        return plain if unicode else latex_encode(plain, escape_specials=True)
    return latex_letters_to_unicode(raw) if unicode else latex_encode(raw)


_SCRIPT = re.compile(r"([\^_])([^{\\\s$])")


def brace_scripts(text: str) -> str:
    """``$A^2$`` -> ``$A^{2}$`` inside inline math: Zotero's BibTeX import turns ``$X^{y}$`` into
    ``X<sup>y</sup>`` but keeps ``$A^2$`` as the text ``A^2``; both typeset the same."""
    if "$" not in text:
        return text
    parts = text.split("$")
    for i in range(1, len(parts), 2):  # odd parts are inside $...$
        parts[i] = _SCRIPT.sub(r"\1{\2}", parts[i])
    return "$".join(parts)


def bibtex_fields(work: Work, *, biblatex: bool = False, unicode: bool = False) -> tuple[str, dict[str, str]]:
    """The entry type and the field values (already enclosed in braces, or a bare month macro).

    The same paper gets the same data in every format:

    * arXiv papers carry ``eprint``, ``archivePrefix``, ``primaryClass`` (classic styles and natbib) and
      ``eprinttype = {arxiv}``: Zotero's BibTeX import reads only ``eprint`` with ``eprinttype`` and keeps
      the id in Extra as ``arXiv: <id>``; it ignores ``archivePrefix``.
    * a paper without a page of its own gets its arXiv record as ``url``, as in RIS, CSL-JSON and the pages.
    * an arXiv-only paper is ``@misc`` (what Zotero's own BibTeX export writes for a preprint) with
      ``howpublished = {arXiv:<id>}``, which every classic style prints; BibLaTeX prints the eprint itself.
    """
    entry_type = work.entry_type
    values: dict[str, str] = {}
    names = set(work.raw) | set(work.fields) | set(work.persons)
    for name in names:
        if name in PERSON_FIELDS:
            people = work.persons.get(name)
            if people:
                values[name] = "{" + _person_list(people, unicode, biblatex) + "}"
            continue
        if name in ("month", "pages", "year"):
            continue
        if name in VERBATIM:
            v = work.text(name)
            if v:
                values[name] = "{" + v + "}"
            continue
        v = _text_value(work, name, unicode)
        if v is None or not v.strip():
            continue
        if name == "title":
            v = protect_title(brace_scripts(v))
        values[name] = "{" + v + "}"
    pages = work.pages
    if pages:
        values["pages"] = "{" + (f"{pages[0]}--{pages[1]}" if pages[1] else pages[0]) + "}"
    if work.year:
        values["year"] = "{" + str(work.year) + "}"
    if work.month:
        values["month"] = MONTHS[work.month - 1]
    if work.arxiv_id:
        values.setdefault("archiveprefix", "{arXiv}")
        values["eprinttype"] = "{arxiv}"
    if "url" not in values and work.link:
        values["url"] = "{" + work.link + "}"
    if work.is_preprint:
        entry_type = "misc"
        values.pop("journal", None)
        values["howpublished"] = "{arXiv:" + str(work.arxiv_id) + "}"

    if biblatex:
        entry_type, values = _to_biblatex(work, entry_type, values)
    return entry_type, values


# Fields the BibLaTeX data model does not define for an entry type (``biber --validate-datamodel``).
_NOT_IN_BIBLATEX_MODEL = {"article": ("publisher", "address", "location")}


def _to_biblatex(work: Work, entry_type: str, values: dict[str, str]) -> tuple[str, dict[str, str]]:
    out = dict(values)
    if "journal" in out:
        out["journaltitle"] = out.pop("journal")
    if "address" in out:
        out["location"] = out.pop("address")
    year, month = work.year, work.month
    out.pop("year", None)
    out.pop("month", None)
    if year:
        out["date"] = "{" + (f"{year}-{month:02d}" if month else str(year)) + "}"
    if work.arxiv_id:
        out.pop("archiveprefix", None)
        out["eprinttype"] = "{arxiv}"
        if "primaryclass" in out:
            out["eprintclass"] = out.pop("primaryclass")
    if work.is_preprint:
        out.pop("howpublished", None)  # BibLaTeX prints "arXiv: <id>" from eprint
    for name in _NOT_IN_BIBLATEX_MODEL.get(entry_type, ()):
        out.pop(name, None)
    return entry_type, out


def _ordered(values: dict[str, str]) -> list[tuple[str, str]]:
    rank = {name: i for i, name in enumerate(_ORDER)}
    return sorted(values.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))


def to_entry(work: Work, *, biblatex: bool = False, unicode: bool = False) -> Entry:
    entry_type, values = bibtex_fields(work, biblatex=biblatex, unicode=unicode)
    return Entry(entry_type, work.key, [Field(_CANONICAL.get(k, k), v) for k, v in _ordered(values)])


def write(works: Sequence[Work], *, biblatex: bool = False, unicode: bool = False, preamble: str | None = None) -> str:
    """A .bib file with one entry per work, in the given order."""
    library = Library([to_entry(w, biblatex=biblatex, unicode=unicode) for w in works])
    fmt = BibtexFormat()
    fmt.indent = "  "
    fmt.value_column = "auto"
    fmt.block_separator = "\n"
    text = bibtexparser.write_string(library, unparse_stack=[], bibtex_format=fmt)
    head = "".join(f"% {line}\n" for line in preamble.splitlines()) + "\n" if preamble else ""
    return head + text.strip() + "\n"
