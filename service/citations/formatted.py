"""Formatted references (a bibliography in a citation style) rendered by citeproc-py with the CSL styles
bundled in ``styles/``.

citeproc-py implements CSL 1.0.1; the bundled styles use a few CSL 1.0.2 features and locale options it
does not apply. They are applied here so that the output matches what the styles prescribe:

* ``initialize="false"`` on a name (Chicago: full given names in the bibliography) is honoured by
  moving the style-wide ``initialize-with`` onto the names that should be initialised;
* the locale's ``punctuation-in-quote`` (American English: ``“Title,”``) moves commas and periods
  inside the closing quotation mark;
* ``second-field-align`` (IEEE, Vancouver, Nature) separates the citation number from the entry
  (a space in text; ``csl-left-margin`` and ``csl-right-inline`` blocks in HTML, as citeproc-js does);
* a period after italic ``et al.`` is not doubled in HTML.

citeproc-py looks macros up with an XPath query over the whole style on every use, which makes large
styles (Chicago has hundreds of macros) slow; :func:`_indexed_get_macro` replaces that lookup with a
dictionary built once per parsed style (same result, a fraction of the time). Rendered entries are
cached per style, locale, output and item (:func:`render`).
"""

from __future__ import annotations

import html
import io
import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cmp_to_key, lru_cache
from pathlib import Path
from typing import Any, Literal

from citeproc import (
    LOCALES_PATH,
    PRIMARY_DIALECTS,
    Citation,
    CitationItem,
    CitationStylesBibliography,
    CitationStylesStyle,
    formatter,
)
from citeproc import model as _citeproc_model
from citeproc import string as _citeproc_string
from citeproc.source.json import CiteProcJSON
from lxml import etree

STYLES_DIR = Path(__file__).resolve().parent / "styles"
CSL_NS = "http://purl.org/net/xbiblio/csl"
_NS = {"cs": CSL_NS}

# name -> (file, title)
STYLES: dict[str, tuple[str, str]] = {
    "apa": ("apa.csl", "APA 7th edition"),
    "ieee": ("ieee.csl", "IEEE"),
    "chicago-author-date": ("chicago-author-date.csl", "Chicago Manual of Style 18th edition (author-date)"),
    "harvard": ("harvard-cite-them-right.csl", "Harvard (Cite Them Right)"),
    "vancouver": ("nlm-citation-sequence.csl", "Vancouver (NLM Citing Medicine, citation-sequence)"),
    "nature": ("nature.csl", "Nature"),
}
ALIASES = {
    "apa7": "apa", "chicago": "chicago-author-date", "harvard-cite-them-right": "harvard",
    "harvard1": "harvard", "nlm": "vancouver", "nlm-citation-sequence": "vancouver",
}
DEFAULT_STYLE = "apa"
DEFAULT_LOCALE = "en-US"
Output = Literal["text", "html"]

# CSL-JSON variables that are for reference managers, not for the styles.
_NOT_RENDERED = {"note", "citation-key"}


class UnknownStyle(ValueError):
    pass


class UnknownLocale(ValueError):
    pass


def style_names() -> list[str]:
    return list(STYLES)


def resolve_style(name: str | None) -> str:
    key = (name or DEFAULT_STYLE).strip().lower()
    key = ALIASES.get(key, key)
    if key not in STYLES:
        raise UnknownStyle(name)
    return key


@lru_cache(maxsize=1)
def locale_names() -> list[str]:
    return sorted(p.stem.removeprefix("locales-") for p in Path(LOCALES_PATH).glob("locales-*.xml"))


def resolve_locale(name: str | None) -> str:
    """'en-us' -> 'en-US'; a bare language ('de') -> its primary dialect ('de-DE')."""
    if not name:
        return DEFAULT_LOCALE
    wanted = name.strip().replace("_", "-")
    by_lower = {n.lower(): n for n in locale_names()}
    if wanted.lower() in by_lower:
        return by_lower[wanted.lower()]
    primary = PRIMARY_DIALECTS.get(wanted.lower())
    if primary and primary.lower() in by_lower:
        return by_lower[primary.lower()]
    raise UnknownLocale(name)


# --- macro lookup --------------------------------------------------------------------------------

_MACRO_INDEX: dict[int, tuple[Any, dict[str, Any]]] = {}
_MACRO_LOCK = threading.Lock()


def _indexed_get_macro(self, name: str):
    """``cs:macro[@name=...]`` of the style this element belongs to, from a per-style index. The index
    holds the root element, so its id cannot be reused while the entry exists."""
    root = self.get_root()
    entry = _MACRO_INDEX.get(id(root))
    if entry is None or entry[0] is not root:
        macros: dict[str, Any] = {}
        for macro in root.iterchildren(f"{{{CSL_NS}}}macro"):
            macros.setdefault(macro.get("name"), macro)
        entry = (root, macros)
        with _MACRO_LOCK:
            _MACRO_INDEX[id(root)] = entry
    try:
        return entry[1][name]
    except KeyError:
        raise IndexError(f"the style has no macro {name!r}") from None


_citeproc_model.CitationStylesElement.get_macro = _indexed_get_macro


# --- text case as CSL 1.0.2 and citeproc-js apply it ---------------------------------------------

_original_case = _citeproc_model.TextCased.case


def _case(self, text, language=None):
    """citeproc-py skips ``text-case="title"`` unless the item's language is exactly ``en``; labels
    pass no language at all, so APA's "(eds.)" stayed lower case. Title case applies to English
    (any region) and to items without a language in an English style, as in citeproc-js."""
    if language is None:
        language = (self.get_root().get("default-locale") or "en")[:2]
    return _original_case(self, text, "en" if str(language).lower().startswith("en") else language)


def _capitalize_first(self):
    """CSL: capitalize-first changes the first word only when it is all lower case (``arXiv`` stays)."""
    words = self.split()
    if not words or not words[0].islower():
        return self
    return self.__class__(self[0].upper() + self[1:])


_citeproc_model.TextCased.case = _case
_citeproc_string.String.capitalize_first = _capitalize_first


# --- loading styles ----------------------------------------------------------------------------

def _q(tag: str) -> str:
    return f"{{{CSL_NS}}}{tag}"


def _push_down_initialize_with(root: etree._Element) -> None:
    """Honour ``initialize="false"`` (CSL 1.0.2) for a style-wide ``initialize-with``."""
    mark = root.get("initialize-with")
    if mark is None or not root.findall(".//cs:name[@initialize='false']", _NS):
        return
    if any(el.get("initialize-with") is not None for el in root.findall("cs:citation", _NS) +
           root.findall("cs:bibliography", _NS)):
        return  # context-dependent inheritance: leave the style as it is
    del root.attrib["initialize-with"]
    for name in root.iter(_q("name")):
        if name.get("initialize") == "false":
            continue
        if name.get("initialize-with") is None:
            name.set("initialize-with", mark)


@dataclass
class _Loaded:
    style: CitationStylesStyle
    lock: threading.Lock
    label: tuple[str, str] | None  # (prefix, suffix) of the citation number when second-field-align is set
    close_quote: str | None  # the closing quote punctuation moves into, or None
    sort_descending: tuple[bool, ...] | None  # per bibliography sort key; None: no sort (citation order)


@lru_cache(maxsize=64)
def _load(style_name: str, locale: str) -> _Loaded:
    file, _title = STYLES[style_name]
    tree = etree.parse(str(STYLES_DIR / file))
    root = tree.getroot()
    _push_down_initialize_with(root)
    style = CitationStylesStyle(io.BytesIO(etree.tostring(tree)), locale=locale, validate=False)

    label = None
    bib = root.find("cs:bibliography", _NS)
    if bib is not None and bib.get("second-field-align"):
        number = bib.find(".//cs:text[@variable='citation-number']", _NS)
        if number is not None:
            label = (number.get("prefix", ""), number.get("suffix", ""))
    sort = bib.find("cs:sort", _NS) if bib is not None else None
    descending = None if sort is None else tuple(
        k.get("sort", "ascending").lower() == "descending" for k in sort.findall("cs:key", _NS))
    return _Loaded(style=style, lock=threading.Lock(), label=label,
                   close_quote=_punctuation_in_quote(root, locale), sort_descending=descending)


def _punctuation_in_quote(style_root: etree._Element, locale: str) -> str | None:
    """The locale's closing quotation mark when the locale (or the style's own locale section) puts
    punctuation inside quotes, else None."""
    enabled: bool | None = None
    lang = locale.split("-")[0]
    for loc in style_root.findall("cs:locale", _NS):
        xml_lang = loc.get("{http://www.w3.org/XML/1998/namespace}lang")
        if xml_lang in (None, locale, lang):
            opts = loc.find("cs:style-options", _NS)
            if opts is not None and opts.get("punctuation-in-quote") is not None:
                enabled = opts.get("punctuation-in-quote") == "true"
    locale_root = etree.parse(str(Path(LOCALES_PATH) / f"locales-{locale}.xml")).getroot()
    if enabled is None:
        opts = locale_root.find("cs:style-options", _NS)
        enabled = opts is not None and opts.get("punctuation-in-quote") == "true"
    if not enabled:
        return None
    term = locale_root.find(".//cs:term[@name='close-quote']", _NS)
    return term.text if term is not None and term.text else "\u201d"


# --- rendering -----------------------------------------------------------------------------------

# CSL rich text in variables (``A<sup>2</sup>``): citeproc-py would print the tags as text, so they
# travel through it as private-use characters and come out as tags in HTML and as nothing in text,
# which is what citeproc-js does.
_RICH_TAGS = {"<sup>": "\ue000", "</sup>": "\ue001", "<sub>": "\ue002", "</sub>": "\ue003",
              "<i>": "\ue004", "</i>": "\ue005", "<b>": "\ue006", "</b>": "\ue007"}
_RICH_BACK = {v: k for k, v in _RICH_TAGS.items()}
_RICH_RE = re.compile("|".join(re.escape(t) for t in _RICH_TAGS))


def _shield(value: Any) -> Any:
    if isinstance(value, str) and "<" in value:
        return _RICH_RE.sub(lambda m: _RICH_TAGS[m.group(0)], value)
    return value


def _unshield(text: str, output: Output) -> str:
    if not any(c in text for c in _RICH_BACK):
        return text
    return "".join(_RICH_BACK.get(c, c) if output == "html" else ("" if c in _RICH_BACK else c) for c in text)


def _for_citeproc(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _shield(v) for k, v in item.items() if k not in _NOT_RENDERED}


def _fix(text: str, loaded: _Loaded, output: Output) -> str:
    if loaded.close_quote:
        q = re.escape(loaded.close_quote)
        # move the separator inside the quote; in HTML the quote may be followed by closing tags
        text = re.sub(rf"({q})((?:</[a-z]+>)*)([.,])", r"\3\1\2", text)
        text = re.sub(r"([.,])\1(" + q + ")", r"\1\2", text)  # "Title.”" + "." -> one period
    if output == "html":
        text = re.sub(r"\.((?:</[a-z]+>)+)\.", r".\1", text)
    return text


def render(items: list[dict[str, Any]], style: str = DEFAULT_STYLE, locale: str | None = None,
           output: Output = "text") -> list[str]:
    """One formatted entry per CSL-JSON item (text, or an HTML fragment), in the style's bibliography
    order. Without a locale, the style's own default locale is used, else American English.

    Entries come from a cache per (style, locale, output, item): citeproc-py renders every bibliography
    entry from its own item alone (it implements no cross-entry disambiguation, and none of the bundled
    bibliographies substitutes repeated authors), and orders them by per-item sort keys. So an entry and
    its sort keys are computed once, and any set of items is assembled from them: the same text and order
    as rendering the set together (:func:`render_together`), numbered afresh."""
    style_name = resolve_style(style)
    locale = resolve_locale(locale or style_default_locale(style_name) or DEFAULT_LOCALE)
    if not items:
        return []
    loaded = _load(style_name, locale)
    keyed = [((style_name, locale, output, json.dumps(i, sort_keys=True, ensure_ascii=False)), i) for i in items]
    with _ENTRY_LOCK:
        known = {k: _ENTRIES[k] for k, _ in keyed if k in _ENTRIES}
        for k in known:
            _ENTRIES.move_to_end(k)
    missing = {k: i for k, i in keyed if k not in known}
    if missing:
        made = _render_entries(style_name, locale, output, list(missing.values()))
        fresh = dict(zip(missing, made, strict=True))
        known.update(fresh)
        with _ENTRY_LOCK:
            _ENTRIES.update(fresh)
            while len(_ENTRIES) > _ENTRIES_MAX:
                _ENTRIES.popitem(last=False)
    entries = [known[k] for k, _ in keyed]
    if loaded.sort_descending is not None:
        order = sorted(range(len(entries)), key=cmp_to_key(
            lambda x, y: _compare(entries[x].sort_keys, entries[y].sort_keys, loaded.sort_descending)))
        entries = [entries[i] for i in order]
    bodies = [e for e in entries if e.body is not None]
    return [_with_label(e.body, loaded, number, output, e.labelled) for number, e in enumerate(bodies, start=1)]


@dataclass(frozen=True)
class _Entry:
    sort_keys: tuple
    body: str | None  # the entry without its citation-number label; None when the style renders nothing
    labelled: bool


_ENTRIES: OrderedDict[tuple, _Entry] = OrderedDict()
_ENTRIES_MAX = 50_000
_ENTRY_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every rendered entry (the styles stay loaded)."""
    with _ENTRY_LOCK:
        _ENTRIES.clear()


@contextmanager
def _registered(loaded: _Loaded, output: Output, items: list[dict[str, Any]]) -> Iterator[CitationStylesBibliography]:
    """A citeproc-py bibliography of ``items`` in the loaded style, each registered once in order, used while
    holding the style's lock (citeproc-py keeps state on the style)."""
    source = CiteProcJSON([_for_citeproc(i) for i in items])
    fmt = formatter.html if output == "html" else formatter.plain
    with loaded.lock:
        bib = CitationStylesBibliography(loaded.style, source, fmt)
        for item in items:
            bib.register(Citation([CitationItem(item["id"])]))
        yield bib


def _render_entries(style_name: str, locale: str, output: Output, items: list[dict[str, Any]]) -> list[_Entry]:
    """Each item's entry and sort keys, rendered in one bibliography (registration order, no sorting)."""
    loaded = _load(style_name, locale)
    out = []
    with _registered(loaded, output, items) as bib:
        element = loaded.style.root.bibliography
        keys = element.find(f"{{{CSL_NS}}}sort")
        keys = keys.findall(f"{{{CSL_NS}}}key") if keys is not None else []
        for number, cited in enumerate(bib.items, start=1):
            sort_keys = tuple(key.sort_keys([cited], element.layout)[0] for key in keys)
            rendered = element.render([cited])
            if not rendered:
                out.append(_Entry(sort_keys, None, False))
                continue
            text = _unshield(_fix(str(rendered[0]), loaded, output), output)
            body, labelled = _strip_label(text, loaded, number, output)
            out.append(_Entry(sort_keys, body, labelled))
    return out


def _compare(left: tuple, right: tuple, descending: tuple[bool, ...]) -> int:
    """CSL bibliography order as citeproc-py applies it: key by key, case-insensitive, numbers as
    numbers, an item without a value after one with it."""
    for a, b, desc in zip(left, right, descending, strict=True):
        if a is None and b is None:
            continue
        if a is None or b is None:
            return 1 if a is None else -1
        a, b = _comparable(a), _comparable(b)
        try:
            a, b = int(str(a)), int(str(b))
        except ValueError:
            pass
        result = (a > b) - (a < b)
        if result:
            return -result if desc else result
    return 0


def _comparable(value: Any) -> Any:
    try:
        return str(value.lower())
    except AttributeError:
        return value


@lru_cache(maxsize=16)
def style_default_locale(style_name: str) -> str | None:
    root = etree.parse(str(STYLES_DIR / STYLES[style_name][0])).getroot()
    return root.get("default-locale")


def render_together(items: list[dict[str, Any]], style: str = DEFAULT_STYLE, locale: str | None = None,
                    output: Output = "text") -> list[str]:
    """The items rendered as one bibliography by citeproc-py (no entry cache): what :func:`render` must
    equal."""
    style_name = resolve_style(style)
    locale = resolve_locale(locale or style_default_locale(style_name) or DEFAULT_LOCALE)
    loaded = _load(style_name, locale)
    with _registered(loaded, output, items) as bib:
        bib.sort()
        entries = [str(e) for e in bib.bibliography()]
    out = []
    for number, text in enumerate(entries, start=1):
        body, labelled = _strip_label(_unshield(_fix(text, loaded, output), output), loaded, number, output)
        out.append(_with_label(body, loaded, number, output, labelled))
    return out


def _strip_label(text: str, loaded: _Loaded, number: int, output: Output) -> tuple[str, bool]:
    """The entry without the citation-number label it was rendered with (second-field-align styles)."""
    if loaded.label is not None:
        candidate = f"{loaded.label[0]}{number}{loaded.label[1]}"
        if output == "html":
            candidate = html.escape(candidate, quote=False)
        if text.startswith(candidate):
            return text[len(candidate):].lstrip(), True
    return text, False


def _with_label(body: str, loaded: _Loaded, number: int, output: Output, labelled: bool) -> str:
    label = None
    if labelled and loaded.label is not None:
        label = f"{loaded.label[0]}{number}{loaded.label[1]}"
        if output == "html":
            label = html.escape(label, quote=False)
    if output == "text":
        return f"{label} {body}" if label else body
    if label:
        return (f'<div class="csl-entry"><div class="csl-left-margin">{label}</div>'
                f'<div class="csl-right-inline">{body}</div></div>')
    return f'<div class="csl-entry">{body}</div>'


def bibliography(items: list[dict[str, Any]], style: str = DEFAULT_STYLE, locale: str | None = None,
                 output: Output = "text") -> str:
    """The whole bibliography: entries separated by blank lines (text) or a ``csl-bib-body`` block (HTML)."""
    entries = render(items, style, locale, output)
    if output == "html":
        return '<div class="csl-bib-body">\n' + "".join(f"  {e}\n" for e in entries) + "</div>\n"
    return "\n\n".join(entries) + "\n"
