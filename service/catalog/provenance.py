"""Where each bibliographic field was confirmed: the source classification and the per-field view.

data/sources.yaml is the one list that says which pages may stand as evidence: `primary` (the
publisher or DOI landing page, a proceedings site, arXiv, DBLP, OpenReview, the authors' own page or
repository), `secondary` (catalogues and indexes that copy those records) and `blocked` (mirrors of
copyrighted PDFs, proxies, summary sites). A page is matched by its host, or by host and path prefix
(`github.com/owner/repo`), the longest match winning; a bare IP address is always blocked and a host
the list does not name is unknown. Both are refused by the loader.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

KINDS = ("primary", "secondary")

# BibTeX fields a source may confirm (lower case; BibTeX field names are case-insensitive)
BIBTEX_FIELDS = frozenset({
    "title", "author", "editor", "booktitle", "journal", "volume", "number", "pages", "year", "month",
    "publisher", "address", "series", "organization", "doi", "url", "eprint", "archiveprefix", "primaryclass",
    "isbn", "issn", "edition", "chapter", "institution", "school", "howpublished", "note",
})


@dataclass(frozen=True)
class Rule:
    host: str
    path: str  # "" or a path prefix starting with "/", lower case
    kind: str  # primary | secondary | blocked
    what: str

    @property
    def pattern(self) -> str:
        return self.host + self.path


@dataclass(frozen=True)
class Classification:
    kind: str  # primary | secondary | blocked | unknown
    what: str
    rule: str | None = None


def _host_path(url: str) -> tuple[str, str]:
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    return host, (parts.path or "/").lower()


def parse_rules(doc: Any) -> tuple[list[Rule], list[str]]:
    """Rules from the parsed sources.yaml, and every problem with its shape."""
    problems: list[str] = []
    rules: list[Rule] = []
    if not isinstance(doc, dict):
        return [], ["expected a mapping with the lists primary, secondary and blocked"]
    unknown = sorted(set(doc) - {"primary", "secondary", "blocked"})
    if unknown:
        problems.append(f"unknown list(s) {unknown}; the lists are primary, secondary and blocked")
    seen: dict[str, str] = {}
    for kind in ("primary", "secondary", "blocked"):
        items = doc.get(kind) or []
        if not isinstance(items, list):
            problems.append(f"{kind}: expected a list")
            continue
        for i, item in enumerate(items):
            if not isinstance(item, dict) or not isinstance(item.get("match"), str) or not item["match"].strip():
                problems.append(f"{kind}[{i}]: each rule is {{match: host[/path], what: ...}}")
                continue
            extra = sorted(set(item) - {"match", "what"})
            if extra:
                problems.append(f"{kind}[{i}]: unknown key(s) {extra}")
            match = item["match"].strip().lower()
            if "://" in match or " " in match:
                problems.append(f"{kind}[{i}]: '{match}' must be a host or host/path, without a scheme")
                continue
            host, _, path = match.partition("/")
            if host.startswith("www."):
                problems.append(f"{kind}[{i}]: write '{host[4:]}' without 'www.' (it is ignored when matching)")
                continue
            pattern = host + ("/" + path.rstrip("/") if path else "")
            if pattern in seen:
                problems.append(f"{kind}[{i}]: '{pattern}' is already listed under {seen[pattern]}")
                continue
            seen[pattern] = kind
            rules.append(Rule(host=host, path=("/" + path.rstrip("/")) if path else "", kind=kind,
                              what=str(item.get("what") or "")))
    return rules, problems


def classify(url: str, rules: list[Rule]) -> Classification:
    host, path = _host_path(url)
    if not host:
        return Classification("unknown", "no host")
    try:
        ipaddress.ip_address(host.strip("[]"))
        return Classification("blocked", "a bare IP address names no publisher or author")
    except ValueError:
        pass
    best: Rule | None = None
    for r in rules:
        if r.host != host:
            continue
        if r.path and not (path == r.path or path.startswith(r.path + "/")):
            continue
        if best is None or len(r.path) > len(best.path):
            best = r
    if best is None:
        return Classification("unknown", f"'{host}' is not in data/sources.yaml")
    return Classification(best.kind, best.what, best.pattern)


def field_provenance(reference_fields: list[str], verification: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """For every field of a reference: the sources that confirmed it, their kind, and whether a primary one did.

    ``verification`` is the stored list of ``{source, kind, fields}``; field names compare case-insensitively.
    """
    out: dict[str, dict[str, Any]] = {}
    for name in reference_fields:
        key = name.lower()
        sources = [{"source": v["source"], "kind": v.get("kind", "unclassified")}
                   for v in verification if key in {f.lower() for f in v.get("fields", [])}]
        out[key] = {"sources": sources, "primary": any(s["kind"] == "primary" for s in sources)}
    return out


def unconfirmed(reference_fields: list[str], verification: list[dict[str, Any]]) -> list[str]:
    """The fields of a reference that no primary source confirmed."""
    return [f for f, p in field_provenance(reference_fields, verification).items() if not p["primary"]]
