"""Read BibTeX and RIS uploads into references, and plan how they enter the library.

Nothing here touches the database: :func:`parse_bibtex_upload` and :func:`parse_ris_upload` turn text
into :class:`ImportedEntry` objects (the shape of :class:`service.models.Reference`: citekey, entry_type,
Unicode ``fields``, ``persons`` and the BibTeX text) and collect *every* problem with its entry key,
field and line; :func:`plan_import` then compares the entries with the references already stored and
decides, again listing every problem, what would be created, updated, left unchanged or skipped.

The same field rules apply as to data/references.bib: title, author (or editor) and a four-digit year
are required, a DOI is bare (``10.NNNN/suffix``), and page ranges use ``--``. RIS records get Better
BibTeX keys (:func:`service.citations.keys.better_bibtex_key`), made unique with a, b, c, ... suffixes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import bibtexparser
import pylatexenc.latex2text
import pylatexenc.latexwalker
from bibtexparser.middlewares.names import InvalidNameError, parse_single_name_into_parts, split_multiple_persons_names
from bibtexparser.model import DuplicateBlockKeyBlock, Entry, ParsingFailedBlock
from pylatexenc.latex2text import MacroTextSpec
from pylatexenc.latexencode import UnicodeToLatexEncoder

from .bibtex import latex_letters_to_unicode
from .keys import better_bibtex_key, postfixes

OnConflict = Literal["error", "replace", "skip"]

CITEKEY_RE = re.compile(r"^[A-Za-z0-9_:.\-+/@!?&*<>|\[\]]{1,128}$")
YEAR_RE = re.compile(r"^\d{4}$")
DOI_RE = re.compile(r"^10\.\d{4,9}/\S+$")
SINGLE_HYPHEN_RANGE = re.compile(r"\d\s*-\s*\d")
# values kept exactly as written (no LaTeX decoding: a '%' in a URL is not a comment)
VERBATIM_FIELDS = frozenset({"url", "doi", "eprint", "file", "isbn", "issn"})
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


# TeX control sequences that read or write files, run programs, or redefine what other text means. A .bib
# value reaches LaTeX through the exports, so an imported field must not carry them.
FORBIDDEN_COMMANDS = (
    "input", "include", "includeonly", "InputIfFileExists", "IfFileExists", "openin", "openout", "read",
    "readline", "closein", "closeout", "newread", "newwrite", "write", "immediate", "special",
    "shipout", "catcode", "def", "edef", "gdef", "xdef", "let", "futurelet", "global", "csname", "endcsname",
    "expandafter", "scantokens", "everyeof", "everypar", "newcommand", "renewcommand", "providecommand",
    "DeclareRobustCommand", "DeclareTextCommand", "usepackage", "RequirePackage", "documentclass", "endinput",
    "directlua", "latelua", "luaexec", "ShellEscape", "pdfshellescape", "makeatletter", "output",
    "afterassignment", "makeatother",
)
_FORBIDDEN_RE = re.compile(r"\\(" + "|".join(sorted(FORBIDDEN_COMMANDS, key=len, reverse=True))
                           + r")(?![A-Za-z])|\\write\d+|\^\^")
DEFAULT_MAX_FIELD_CHARS = 10_000


def unsafe_latex(value: str) -> str | None:
    """The first control sequence in ``value`` that LaTeX must not see from a bibliography field
    (``\\input``, ``\\write18``, ``\\catcode``, ...; also ``^^`` escapes, which spell any character), or None."""
    m = _FORBIDDEN_RE.search(value)
    return m.group(0) if m else None


@dataclass
class ImportProblem:
    key: str | None
    field: str | None
    message: str
    line: int | None = None  # 1-based line in the uploaded file

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, "field": self.field, "message": self.message, "line": self.line}


@dataclass
class ImportedEntry:
    citekey: str
    entry_type: str
    fields: dict[str, str]
    persons: dict[str, list[dict[str, str]]]
    bibtex: str
    line: int | None = None
    generated_key: bool = False  # True when the key was made here (RIS), not chosen by the client

    def content(self) -> tuple[str, dict[str, str], dict[str, list[dict[str, str]]]]:
        return self.entry_type, self.fields, self.persons


# ---------------------------------------------------------------------------------------------------
# LaTeX <-> Unicode

def _make_decoder() -> pylatexenc.latex2text.LatexNodes2Text:
    db = pylatexenc.latex2text.get_default_latex_context_db()
    db.add_context_category("atlas-bibtex", prepend=True, macros=[MacroTextSpec("url", simplify_repl="%s")])
    return pylatexenc.latex2text.LatexNodes2Text(latex_context=db, keep_braced_groups=False, math_mode="verbatim")


_DECODER = _make_decoder()
# The parser's own table of macros, built once: LatexWalker builds its default table on every call,
# which costs more than decoding a short value.
_WALKER_DB = pylatexenc.latexwalker.get_default_latex_context_db()


def _latex_to_text(latex: str) -> str:
    walker = pylatexenc.latexwalker.LatexWalker(latex, latex_context=_WALKER_DB, tolerant_parsing=True)
    return _DECODER.nodelist_to_text(walker.get_latex_nodes()[0])


_NEEDS_LATEX = re.compile(r"[\\$~]|``|''")
_BARE_SPECIAL = re.compile(r"(?<!\\)([&%#])")
_NEEDS_ENCODING = re.compile(r"[^A-Za-z0-9 .,;:!?()\[\]/'\-+=*@<>|]")
_ENCODER = UnicodeToLatexEncoder(non_ascii_only=False, replacement_latex_protection="braces-all",
                                 unknown_char_policy="keep", unknown_char_warning=False)


_CHUNK = 1024  # characters handed to the LaTeX parser at a time
_ENDS_WITH_COMMAND = re.compile(r"\\(?:[A-Za-z]+|[^A-Za-z])$")


def latex_chunks(value: str, size: int = _CHUNK) -> list[str]:
    """``value`` cut into pieces of about ``size`` characters at places where LaTeX text can be split
    without changing its meaning: white space outside braces and math that does not follow a command
    (whose argument may come after the space). The parser's cost grows faster than the length of its
    input, so decoding piece by piece keeps the whole decoding linear. A piece without such a place is
    kept whole only up to 16 times ``size``, then cut at a brace group's end."""
    if len(value) <= size:
        return [value]
    pieces: list[str] = []
    start = depth = 0
    in_math = False
    last_cut = None  # the best cut seen in the current piece
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(0, depth - 1)
            if depth == 0 and not in_math and i + 1 - start >= 16 * size and value[i + 1:i + 2] not in ("{", "["):
                last_cut = i + 1
        elif ch == "$":
            in_math = not in_math
        elif ch.isspace() and depth == 0 and not in_math and not _ENDS_WITH_COMMAND.search(value[max(start, i - 40):i]):
            last_cut = i
        if last_cut is not None and i - start >= size:
            pieces.append(value[start:last_cut])
            start, last_cut = last_cut, None
        i += 1
    pieces.append(value[start:])
    return pieces


_ESCAPED = re.compile(r"\\([&%#_$])")
_FORMATTING = re.compile(r"\\(?:textbf|textit|emph|textsc|texttt|textrm|textsf|textup|textmd|textsl|url|mbox)\s*(?=\{)")
_TEXT_SPECIALS = (("---", "\u2014"), ("--", "\u2013"), ("``", "\u201c"), ("''", "\u201d"), ("!`", "\u00a1"),
                  ("?`", "\u00bf"), ("~", " "))


_MATH_SPAN = re.compile(r"(?<!\\)(\$[^$]*(?<!\\)\$)")


def _decode_common(value: str) -> str | None:
    """The constructs nearly every .bib file uses, decoded with regular expressions in one pass each:
    accent and special-letter commands, escaped specials, font commands (their text is kept), dashes
    and quotes; inline math is kept as written, as the parser is set up to do. None when something
    else is left (other commands): then the LaTeX parser runs."""
    if "$$" in value:
        return None  # display math or an empty formula: the parser decides
    parts = _MATH_SPAN.split(value) if "$" in value else [value]
    # math stays as the parser leaves it: verbatim, with bare & % # escaped as for the parser's input
    decoded = [_BARE_SPECIAL.sub(r"\\\1", part) if i % 2 else _decode_text(part) for i, part in enumerate(parts)]
    return None if any(d is None for d in decoded) else "".join(decoded)


def _decode_text(value: str) -> str | None:
    """:func:`_decode_common` for text without math (None if a ``$`` or an unknown command is left)."""
    value = latex_letters_to_unicode(value)
    value = _FORMATTING.sub("", value)
    if "\\" in _ESCAPED.sub("", value) or "$" in _ESCAPED.sub("", value):
        return None
    value = _ESCAPED.sub(r"\1", value)
    for latex, text in _TEXT_SPECIALS:
        value = value.replace(latex, text)
    return value


def decode_latex(value: str) -> str:
    """A BibTeX value as Unicode text: LaTeX accents and escapes decoded, protective braces removed,
    ``--``/``---`` as dashes, whitespace collapsed. Plain values skip the (slow) LaTeX parser; long
    values go through it in pieces (:func:`latex_chunks`), so the time is linear in the length."""
    common = _decode_common(value) if _NEEDS_LATEX.search(value) else None
    if common is not None:
        value = common
    elif _NEEDS_LATEX.search(value):
        out = []
        for piece in latex_chunks(value):
            try:
                out.append(_latex_to_text(_BARE_SPECIAL.sub(r"\\\1", piece)))
            except Exception:  # noqa: BLE001 - an odd construct keeps its source text rather than failing
                out.append(piece)
        value = " ".join(out)
    else:
        value = value.replace("---", "\u2014").replace("--", "\u2013")
    return " ".join(value.replace("{", "").replace("}", "").split())


def encode_latex(value: str, *, protect_case: bool = False) -> str:
    """Unicode text as a BibTeX value (LaTeX escapes for non-ASCII and special characters). With
    ``protect_case``, words with capitals after their first letter (acronyms, proper nouns such as
    ResNeSt) are wrapped in braces so that bibliography styles keep their case."""
    words = []
    for word in value.split():
        encoded = _ENCODER.unicode_to_latex(word) if _NEEDS_ENCODING.search(word) else word
        if protect_case and any(re.search(r".[A-Z]", re.sub(r"[^A-Za-z]", "", part))
                                for part in re.split(r"[-/]", word)):
            encoded = "{" + encoded + "}"
        words.append(encoded)
    return " ".join(words)


def _verbatim(value: str) -> str:
    return " ".join(value.split())


def _persons(raw: str, errors: list[str]) -> list[dict[str, str]]:
    """A BibTeX name list as [{family, given}] (particles such as 'van der' go with the given names, as
    in data/); a name that cannot be split is added to ``errors``."""
    out = []
    for name in split_multiple_persons_names(raw):
        try:
            parts = parse_single_name_into_parts(name, strict=True)
        except InvalidNameError as exc:
            errors.append(str(exc))
            continue
        family = decode_latex(" ".join(parts.last))
        if not family:
            errors.append(f"the name {name!r} has no family name")
            continue
        out.append({"family": family, "given": decode_latex(" ".join(parts.first + parts.von))})
    return out


# ---------------------------------------------------------------------------------------------------
# validation shared by both formats

def _check_fields(key: str | None, raw: Mapping[str, str], problems: list[ImportProblem], line: int | None,
                  names: Mapping[str, str] | None = None) -> None:
    """The data/ rules. ``raw`` holds BibTeX field names; ``names`` maps them to what the client wrote."""
    def where(f: str) -> str:
        return (names or {}).get(f, f)

    if not raw.get("title", "").strip("{} \t\n"):
        problems.append(ImportProblem(key, where("title"), "required field missing or empty", line))
    if not raw.get("author", "").strip("{} \t\n") and not raw.get("editor", "").strip("{} \t\n"):
        problems.append(ImportProblem(key, where("author"), "required field missing or empty (author, or editor "
                                      "for an edited volume)", line))
    year = raw.get("year", "").strip().strip("{}").strip()
    if not year:
        problems.append(ImportProblem(key, where("year"), "required field missing or empty", line))
    elif not YEAR_RE.match(year):
        problems.append(ImportProblem(key, where("year"), f"year must be four digits, not {year!r}", line))
    doi = raw.get("doi", "").strip().strip("{}").strip()
    if "doi" in raw and not DOI_RE.match(doi):
        hint = " (drop the https://doi.org/ prefix)" if "doi.org/" in doi.lower() else ""
        problems.append(ImportProblem(key, where("doi"), f"DOI {doi!r} must look like 10.NNNN/suffix{hint}", line))
    pages = raw.get("pages", "")
    if pages and SINGLE_HYPHEN_RANGE.search(pages.replace("--", "\u2013")):
        problems.append(ImportProblem(key, where("pages"), f"page range {pages!r} must use '--' (e.g. 352--361)",
                                      line))


def _check_key(key: str, problems: list[ImportProblem], line: int | None) -> bool:
    if not CITEKEY_RE.match(key):
        problems.append(ImportProblem(key, None, "a citation key is 1 to 128 characters without spaces, commas, "
                                      "braces, quotes, '#', '%', '=' or '\\'", line))
        return False
    return True


# ---------------------------------------------------------------------------------------------------
# BibTeX

_KEY_IN_RAW = re.compile(r"@\s*\w+\s*[{(]\s*([^,\s{}()=]+)")


def _entry_from_bibtex(entry: Entry, problems: list[ImportProblem]) -> ImportedEntry:
    raw_fields = {f.key.lower(): str(f.value) for f in entry.fields}
    fields: dict[str, str] = {}
    persons: dict[str, list[dict[str, str]]] = {}
    line = entry.start_line + 1 if entry.start_line is not None else None
    for name, value in raw_fields.items():
        if name in ("author", "editor"):
            errors: list[str] = []
            persons[name] = _persons(value, errors)
            problems.extend(ImportProblem(entry.key, name, e, line) for e in errors)
        elif name in VERBATIM_FIELDS:
            fields[name] = _verbatim(value.replace("{", "").replace("}", ""))
        else:
            fields[name] = decode_latex(value)
    return ImportedEntry(citekey=entry.key, entry_type=entry.entry_type.lower(), fields=fields, persons=persons,
                         bibtex=entry.raw.strip(), line=line)


def _check_values(key: str | None, values: list[tuple[str, str]], problems: list[ImportProblem], line: int | None,
                  max_chars: int) -> bool:
    """Length limits and forbidden control sequences, checked before any decoding; False on a problem."""
    ok = True
    for name, value in values:
        if len(value) > max_chars:
            problems.append(ImportProblem(key, name, f"{len(value)} characters; a field holds at most {max_chars}",
                                          line))
            ok = False
        elif (bad := unsafe_latex(value)) is not None:
            problems.append(ImportProblem(key, name, f"the control sequence '{bad}' is not allowed in a "
                                          "bibliography field (it reads or writes files, runs programs or "
                                          "redefines commands)", line))
            ok = False
    return ok


def parse_bibtex_upload(text: str, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS
                        ) -> tuple[list[ImportedEntry], list[ImportProblem]]:
    """Every entry of a .bib text, and every problem (unparseable blocks, duplicate keys, field rules,
    field lengths, control sequences that LaTeX must not run)."""
    problems: list[ImportProblem] = []
    library = bibtexparser.parse_string(text)
    first_line: dict[str, int] = {}
    for e in library.entries:
        first_line.setdefault(e.key.lower(), e.start_line + 1)
    for block in library.failed_blocks:
        line = block.start_line + 1 if block.start_line is not None else None
        if isinstance(block, DuplicateBlockKeyBlock):
            problems.append(ImportProblem(block.key, None, f"duplicate citation key: already used by the entry on "
                                          f"line {first_line.get(block.key.lower())}", line))
            continue
        m = _KEY_IN_RAW.search(block.raw or "")
        reason = getattr(getattr(block, "error", None), "abort_reason", None) if isinstance(
            block, ParsingFailedBlock) else None
        reason = reason or str(getattr(block, "error", "")) or type(block).__name__
        problems.append(ImportProblem(m.group(1) if m else None, None,
                                      f"not valid BibTeX: {reason.strip()} (near {(block.raw or '')[:60]!r})", line))

    entries: list[ImportedEntry] = []
    seen: dict[str, ImportedEntry] = {}
    for e in library.entries:
        line = e.start_line + 1
        if not _check_key(e.key, problems, line):
            continue
        other = seen.get(e.key.lower())
        if other is not None:  # bibtexparser catches exact duplicates; BibTeX also ignores letter case
            problems.append(ImportProblem(e.key, None, f"duplicate citation key: '{other.citekey}' on line "
                                          f"{other.line} differs only in letter case", line))
            continue
        if not _check_values(e.key, [(f.key, str(f.value)) for f in e.fields], problems, line, max_field_chars):
            continue
        raw = {f.key.lower(): str(f.value) for f in e.fields}
        _check_fields(e.key, raw, problems, line)
        imported = _entry_from_bibtex(e, problems)
        seen[e.key.lower()] = imported
        entries.append(imported)
    if not entries and not problems:
        problems.append(ImportProblem(None, None, "no BibTeX entries found (an entry starts with @type{key, ...})"))
    return entries, problems


# ---------------------------------------------------------------------------------------------------
# RIS

RIS_TYPES = {
    "JOUR": "article", "JFULL": "article", "EJOUR": "article", "MGZN": "article", "NEWS": "article",
    "CONF": "inproceedings", "CPAPER": "inproceedings", "BOOK": "book", "EBOOK": "book", "EDBOOK": "book",
    "CHAP": "incollection", "ECHAP": "incollection", "THES": "phdthesis", "RPRT": "techreport",
    "UNPB": "unpublished",
}
_RIS_LINE = re.compile(r"^([A-Z][A-Z0-9])  ?-(?: (.*))?$")
_ARXIV_URL = re.compile(r"arxiv\.org/(?:abs|pdf)/([0-9]{4}\.[0-9]{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/[0-9]{7})", re.I)
_ARXIV_DOI = re.compile(r"^10\.48550/arxiv\.(.+)$", re.I)
# the order in which BibTeX fields are written
_ORDER = ("title", "author", "editor", "journal", "booktitle", "school", "institution", "volume", "number",
          "pages", "publisher", "address", "month", "year", "doi", "eprint", "archiveprefix", "url", "isbn", "issn",
          "language", "keywords", "abstract")
_BIBTEX_NAMES = {"archiveprefix": "archivePrefix"}


@dataclass
class _Record:
    line: int
    tags: list[tuple[str, str, int]] = field(default_factory=list)  # (tag, value, line)
    closed: bool = False

    def all(self, *tags: str) -> list[str]:
        return [v for t, v, _ in self.tags if t in tags and v]

    def first(self, *tags: str) -> str:
        for tag in tags:  # preference order
            for t, v, _ in self.tags:
                if t == tag and v:
                    return v
        return ""


def _ris_records(text: str, problems: list[ImportProblem]) -> list[_Record]:
    records: list[_Record] = []
    current: _Record | None = None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        m = _RIS_LINE.match(line.rstrip())
        if m is None:
            if current is not None and current.tags:  # a wrapped long value continues the previous tag
                tag, value, at = current.tags[-1]
                current.tags[-1] = (tag, f"{value} {line.strip()}".strip(), at)
            else:
                problems.append(ImportProblem(None, None, f"not an RIS line (expected 'XX  - value'): {line[:60]!r}",
                                              n))
            continue
        tag, value = m.group(1), (m.group(2) or "").strip()
        if tag == "TY":
            if current is not None and not current.closed:
                problems.append(ImportProblem(None, "ER", f"the record starting on line {current.line} has no "
                                              "'ER  - ' line before the next 'TY'", current.line))
            current = _Record(line=n, tags=[("TY", value, n)])
            records.append(current)
        elif current is None or current.closed:
            problems.append(ImportProblem(None, tag, "a tag outside a record: records start with 'TY  - <type>'", n))
        elif tag == "ER":
            current.closed = True
        else:
            current.tags.append((tag, value, n))
    if current is not None and not current.closed:
        problems.append(ImportProblem(None, "ER", f"the record starting on line {current.line} has no 'ER  - ' line",
                                      current.line))
    return records


def _ris_name(value: str) -> str:
    """An RIS name ('Family, Given[, Suffix]'; a name without a comma is one field, such as an
    organisation) in BibTeX's 'Family, Given' form, LaTeX-encoded."""
    parts = [p.strip() for p in value.split(",")]
    if len(parts) >= 2 and parts[0]:
        family, given, suffix = parts[0], parts[1], ", ".join(p for p in parts[2:] if p)
        family = encode_latex(family)
        family = "{" + family + "}" if " " in family and not family[:1].islower() else family
        return ", ".join(p for p in (family, encode_latex(suffix) if suffix else "", encode_latex(given)) if p)
    return "{" + encode_latex(value.strip()) + "}"


def render_bibtex(citekey: str, entry_type: str, fields: Mapping[str, str], persons: Mapping[str, str]) -> str:
    """A BibTeX entry for Unicode ``fields`` and BibTeX name lists ``persons`` ('Family, Given and ...'):
    LaTeX-encoded, acronyms in the title braced, month as a macro, page ranges with --."""
    lines = []
    for name in sorted(set(fields) | set(persons), key=lambda f: (_ORDER.index(f) if f in _ORDER else len(_ORDER), f)):
        if name in persons:
            value = "{" + persons[name] + "}"
        elif name == "month" and fields[name] in MONTHS:
            value = fields[name]
        elif name in VERBATIM_FIELDS:
            value = "{" + fields[name] + "}"
        elif name == "pages":
            value = "{" + fields[name].replace("\u2013", "--") + "}"
        else:
            value = "{" + encode_latex(fields[name], protect_case=name == "title") + "}"
        lines.append(f"  {_BIBTEX_NAMES.get(name, name):<13} = {value}")
    return f"@{entry_type}{{{citekey},\n" + ",\n".join(lines) + "\n}"


def _ris_entry(rec: _Record, problems: list[ImportProblem]) -> ImportedEntry | None:
    ty = rec.first("TY").upper()
    entry_type = RIS_TYPES.get(ty, "misc")
    fields: dict[str, str] = {}
    title = rec.first("TI", "T1") or (rec.first("BT") if entry_type == "book" else "")
    if title:
        fields["title"] = " ".join(title.split())
    names: dict[str, str] = {}  # BibTeX name lists
    if authors := rec.all("AU", "A1"):
        names["author"] = " and ".join(_ris_name(a) for a in authors)
    editors = rec.all("ED") + (rec.all("A2") if ty in ("CHAP", "ECHAP", "CONF", "CPAPER") else [])
    if editors:
        names["editor"] = " and ".join(_ris_name(e) for e in editors)
    errors: list[str] = []
    persons = {role: _persons(value, errors) for role, value in names.items()}
    container = rec.first("T2", "JF", "JO", "JA", "J2") if entry_type == "article" else rec.first("T2", "BT", "C3")
    if container and entry_type == "article":
        fields["journal"] = container
    elif container and entry_type in ("inproceedings", "incollection"):
        fields["booktitle"] = container
    date = rec.first("PY", "Y1", "DA")
    year_match = re.match(r"^\s*(\d{4})", date)
    if year_match:
        fields["year"] = year_match.group(1)
    month_match = re.match(r"^\s*\d{4}[/-](\d{1,2})", rec.first("DA") or date)
    if month_match and 1 <= int(month_match.group(1)) <= 12:
        fields["month"] = MONTHS[int(month_match.group(1)) - 1]
    for tag, name in (("VL", "volume"), ("IS", "number"), ("PB", "publisher"), ("CY", "address"),
                      ("LA", "language"), ("AB", "abstract")):
        if value := rec.first(tag):
            fields[name] = " ".join(value.split())
    start, end = rec.first("SP"), rec.first("EP")
    if start and not end and re.fullmatch(r"\s*\w+\s*[-\u2013]+\s*\w+\s*", start):  # "SP  - 12-20"
        start, end = (p.strip() for p in re.split(r"[-\u2013]+", start, maxsplit=1))
    if start:
        fields["pages"] = f"{start}\u2013{end}" if end and end != start else start
    if doi := rec.first("DO"):
        fields["doi"] = doi.strip()
    if url := rec.first("UR", "L2"):
        fields["url"] = url.strip()
    if sn := rec.first("SN"):
        fields["isbn" if entry_type in ("book", "incollection") else "issn"] = sn.strip()
    if kws := rec.all("KW"):
        fields["keywords"] = ", ".join(k.strip() for k in kws)
    arxiv = _ARXIV_DOI.match(fields.get("doi", "")) or _ARXIV_URL.search(fields.get("url", ""))
    if arxiv:
        fields["eprint"] = arxiv.group(1)
        fields["archiveprefix"] = "arXiv"

    where = {"title": "TI", "author": "AU", "year": "PY", "doi": "DO", "pages": "SP"}
    raw = dict(fields)
    if persons.get("author"):
        raw["author"] = "x"
    if persons.get("editor"):
        raw["editor"] = "x"
    if "pages" in raw:
        raw["pages"] = raw["pages"].replace("\u2013", "--")
    if date and not year_match:
        raw["year"] = date
    n_before = len(problems)
    problems.extend(ImportProblem(None, "AU", e, rec.line) for e in errors)
    _check_fields(None, raw, problems, rec.line, where)
    first = (persons.get("author") or persons.get("editor") or [{"family": ""}])[0]["family"]
    key = None
    if title and first and year_match:
        key = better_bibtex_key(first, title, fields["year"])
        if not CITEKEY_RE.match(key) or not re.search(r"[A-Za-z]", key):
            problems.append(ImportProblem(key, "AU", "could not make a citation key from the first author, title and "
                                          "year; send this record as BibTeX with a key of your choice", rec.line))
            key = None
    for p in problems[n_before:]:
        p.key = key
    if key is None or len(problems) > n_before:
        return None
    return ImportedEntry(citekey=key, entry_type=entry_type, fields=fields, persons=persons,
                         bibtex=render_bibtex(key, entry_type, fields, names), line=rec.line, generated_key=True)


def parse_ris_upload(text: str, max_field_chars: int = DEFAULT_MAX_FIELD_CHARS
                     ) -> tuple[list[ImportedEntry], list[ImportProblem]]:
    """Every record of an RIS text as an entry with a Better BibTeX base key (not yet made unique). RIS
    values are plain text (LaTeX-escaped on the way into BibTeX); only their length is limited."""
    problems: list[ImportProblem] = []
    records = _ris_records(text.lstrip("\ufeff"), problems)
    checked = []
    for rec in records:
        long = [(t, v) for t, v, _ in rec.tags if len(v) > max_field_chars]
        for tag, value in long:
            problems.append(ImportProblem(None, tag, f"{len(value)} characters; a field holds at most "
                                          f"{max_field_chars}", rec.line))
        if not long:
            checked.append(rec)
    entries = [e for e in (_ris_entry(r, problems) for r in checked) if e is not None]
    if not records and not problems:
        problems.append(ImportProblem(None, "TY", "no RIS records found (a record starts with 'TY  - ' and ends "
                                      "with 'ER  - ')"))
    return entries, problems


# ---------------------------------------------------------------------------------------------------
# planning against the stored library

@dataclass
class ImportPlan:
    create: list[ImportedEntry] = field(default_factory=list)
    update: list[ImportedEntry] = field(default_factory=list)
    unchanged: list[ImportedEntry] = field(default_factory=list)
    skipped: list[ImportedEntry] = field(default_factory=list)
    problems: list[ImportProblem] = field(default_factory=list)


_MAX_SUFFIXES = 26 + 26 * 26  # a ... z, aa ... zz


def plan_import(entries: list[ImportedEntry], existing: Mapping[str, tuple[str, dict, dict]],
                on_conflict: OnConflict = "error") -> ImportPlan:
    """Decide what each entry does to a library whose references are ``existing`` (key -> content).

    A client's key that names a stored reference with different content is a problem unless
    ``on_conflict`` is ``replace`` (overwrite) or ``skip`` (keep the stored one). A generated key
    (RIS) never conflicts: like Better BibTeX, it gets the first free suffix a, b, c, ... unless the
    stored reference under a candidate key is identical (then that one is reused, unchanged)."""
    plan = ImportPlan()
    lower = {k.lower(): k for k in existing}
    taken: dict[str, ImportedEntry] = {}  # lower-cased keys assigned in this upload
    by_content: dict[str, ImportedEntry] = {}
    for e in entries:
        if e.generated_key:
            digest = repr((e.entry_type, sorted(e.fields.items()), sorted((k, v) for k, v in e.persons.items())))
            twin = by_content.get(digest)
            if twin is not None:
                plan.problems.append(ImportProblem(e.citekey, None, f"the same reference as the record on line "
                                                   f"{twin.line}", e.line))
                continue
            by_content[digest] = e
            base = e.citekey
            for candidate in itertools.chain([base], (base + s for s in itertools.islice(postfixes(), _MAX_SUFFIXES))):
                if candidate.lower() in taken:
                    continue
                stored = lower.get(candidate.lower())
                if stored is None:
                    e.citekey = candidate
                    plan.create.append(e)
                    break
                if stored == candidate and existing[stored] == e.content():
                    e.citekey = candidate
                    plan.unchanged.append(e)
                    break
            else:
                plan.problems.append(ImportProblem(base, None, "no free key with a suffix a to zz", e.line))
                continue
            if e.citekey != base:
                e.bibtex = e.bibtex.replace("{" + base + ",", "{" + e.citekey + ",", 1)
            taken[e.citekey.lower()] = e
            continue

        taken[e.citekey.lower()] = e
        stored = lower.get(e.citekey.lower())
        if stored is None:
            plan.create.append(e)
        elif stored != e.citekey:
            plan.problems.append(ImportProblem(e.citekey, None, f"differs only in letter case from the stored key "
                                               f"'{stored}'; BibTeX treats keys case-insensitively", e.line))
        elif existing[stored] == e.content():
            plan.unchanged.append(e)
        elif on_conflict == "replace":
            plan.update.append(e)
        elif on_conflict == "skip":
            plan.skipped.append(e)
        else:
            plan.problems.append(ImportProblem(e.citekey, None, "a different reference with this key is already "
                                               "stored; send on_conflict=replace to overwrite it or "
                                               "on_conflict=skip to keep it", e.line))
    return plan
