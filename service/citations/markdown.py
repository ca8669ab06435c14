"""Markdown literature notes for an Obsidian vault: YAML front matter, the knowledge of one technique,
the citation of its original paper (with a ``zotero://`` link to the item in a Zotero library that uses
Better BibTeX keys) and ``[[wikilinks]]`` to related techniques. Notes are named ``<slug>.md`` so the
links resolve when all notes of the catalogue sit in one folder."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import yaml

from ..models import Technique
from .bibtex import Work

ZIP_FOLDER = "attention-atlas"
INDEX_NAME = "Attention Atlas.md"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)  # fixed, so the same notes give byte-identical archives


@dataclass
class NoteContext:
    technique: Technique
    work: Work | None  # the original paper, when the catalogue has its reference
    category_name: str
    subcategory_name: str
    applications: list[str]
    related: list[tuple[str, str]]  # (slug, name)
    source_url: str | None = None  # the technique in this service


def zotero_link(citekey: str) -> str:
    return f"zotero://select/items/@{citekey}"


def display_math(latex: str) -> str:
    """The formula as a ``$$`` block. Several top-level lines (``\\\\``) go into ``gathered`` so that
    MathJax (Obsidian) and KaTeX both break them as written."""
    body = latex.strip()
    if "\\\\" in body and not body.startswith("\\begin"):
        body = "\\begin{gathered}\n" + body + "\n\\end{gathered}"
    return "$$\n" + body + "\n$$"


def front_matter(ctx: NoteContext) -> dict:
    t, w = ctx.technique, ctx.work
    key = w.key if w else t.citekey
    meta: dict = {
        "title": t.name,
        "aliases": list(t.aliases),
        "citekey": key,
        "paper": w.title if w else None,
        "authors": w.author_names() if w else [],
        "year": (w.year if w and w.year else t.year),
        "venue": (w.container if w else None),
        "category": t.category_id,
        "subcategory": t.subcategory_id,
        "tags": ["attention-atlas", f"attention/{t.category_id}", f"attention/{t.subcategory_id}",
                 *[f"application/{a}" for a in ctx.applications]],
        "zotero": zotero_link(key),
    }
    if w:
        for name, value in (("doi", w.doi), ("doi_url", w.doi_url), ("arxiv", w.arxiv_id),
                            ("arxiv_url", w.arxiv_url), ("url", w.url)):
            if value:
                meta[name] = value
    if ctx.source_url:
        meta["source"] = ctx.source_url
    return {k: v for k, v in meta.items() if v is not None}


def _md_escape(text: str) -> str:
    return text.replace("*", "\\*").replace("_", "\\_") if text else text


def _authors_line(names: list[str]) -> str:
    if not names:
        return ""
    if len(names) == 1:
        return names[0]
    return ", ".join(names[:-1]) + " and " + names[-1]


def note(ctx: NoteContext) -> str:
    t, w = ctx.technique, ctx.work
    meta = front_matter(ctx)
    out: list[str] = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000).rstrip(),
                      "---", "", f"# {t.name}", ""]

    out.append("> [!info] Original paper")
    if w:
        parts = [p for p in (_authors_line(w.author_names()), f"({w.year})" if w.year else None) if p]
        cite = " ".join(parts) + ". " if parts else ""
        cite += f"*{_md_escape(w.title)}*."
        if w.container:
            cite += f" {_md_escape(w.container)}."
        out.append(f"> {cite}")
    links = [f"[Zotero]({meta['zotero']})"]
    if w and w.doi_url:
        links.append(f"[DOI]({w.doi_url})")
    if w and w.arxiv_url:
        links.append(f"[arXiv]({w.arxiv_url})")
    if w and w.url and w.url not in (w.arxiv_url, w.doi_url):
        links.append(f"[Paper page]({w.url})")
    out.append("> " + " · ".join(links) + f" · citekey `{meta['citekey']}`")
    out += ["", f"**Category:** {ctx.category_name} › {ctx.subcategory_name} · **Year:** {t.year}"
            + (f" · **Also known as:** {', '.join(t.aliases)}" if t.aliases else ""), ""]

    out += ["## Summary", "", t.summary.strip(), ""]
    out += ["## Formula", "", display_math(t.formula_latex), ""]
    if t.formula_legend:
        out.append("where")
        out.append("")
        out += [f"- ${item['symbol']}$: {item['meaning']}" for item in t.formula_legend]
        out.append("")
    if t.complexity:
        out += ["## Complexity", ""]
        if t.complexity.get("time"):
            out.append(f"- Time: `{t.complexity['time']}`")
        if t.complexity.get("memory"):
            out.append(f"- Memory: `{t.complexity['memory']}`")
        if t.complexity.get("note"):
            out.append(f"- {t.complexity['note']}")
        out.append("")
    out += ["## Strengths", "", *[f"- {s}" for s in t.strengths], ""]
    out += ["## Limitations", "", *[f"- {s}" for s in t.limitations], ""]
    out += ["## Applications", "", *[f"- {a}" for a in ctx.applications], ""]
    out += ["## Related techniques", ""]
    out += [f"- [[{slug}|{name}]]" for slug, name in ctx.related] or ["- (none listed)"]
    out.append("")
    if t.survey_note:
        out += ["## Survey note", "", t.survey_note.strip(), ""]
    return "\n".join(out)


def index_note(entries: list[tuple[str, str, str]]) -> str:
    """A map of content linking every note in the archive: (slug, name, category name)."""
    lines = ["---", "title: Attention Atlas", "tags: [attention-atlas]", "---", "", "# Attention Atlas", ""]
    by_category: dict[str, list[tuple[str, str]]] = {}
    for slug, name, category in entries:
        by_category.setdefault(category, []).append((slug, name))
    for category in sorted(by_category):
        lines += [f"## {category}", ""]
        lines += [f"- [[{slug}|{name}]]" for slug, name in sorted(by_category[category], key=lambda x: x[1].lower())]
        lines.append("")
    return "\n".join(lines)


def notes_zip(notes: dict[str, str], index: str | None = None) -> bytes:
    """A zip of ``<slug>.md`` notes in one folder (deterministic: sorted names, fixed timestamps)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        files = dict(sorted(notes.items()))
        if index is not None:
            files[INDEX_NAME] = index
        for name, text in files.items():
            info = zipfile.ZipInfo(f"{ZIP_FOLDER}/{name}", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, text.encode("utf-8"))
    return buf.getvalue()
