"""Read and validate data/: taxonomy.yaml, techniques/*.yaml and references.bib.

Every problem is collected with its file and field, so one run reports all of them; nothing is
written to the database unless the whole knowledge folder is valid.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bibtexparser
import yaml
from bibtexparser import middlewares as mw
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, ValidationError, field_validator

from .latex import check_math
from .provenance import BIBTEX_FIELDS, Rule, classify, parse_rules

_VERBATIM = {"url", "doi", "eprint", "archiveprefix", "primaryclass", "isbn", "issn"}
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the C parser when libyaml is present
SLUG_RE = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
TAG_RE = SLUG_RE


class Problem(BaseModel):
    file: str
    field: str | None = None
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.field + ': ' if self.field else ''}{self.message}"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class LegendItem(_Strict):
    symbol: str = Field(min_length=1)
    meaning: str = Field(min_length=3)


class Formula(_Strict):
    latex: str = Field(min_length=3)
    legend: list[LegendItem] = Field(min_length=1)


class Complexity(_Strict):
    time: str = Field(min_length=3)
    memory: str = Field(min_length=3)
    note: str | None = None


class Implementation(_Strict):
    scope: str | None = None


class Verification(_Strict):
    """One page that confirmed some fields of a reference, and its kind (as data/sources.yaml classifies it)."""

    source: HttpUrl
    kind: Literal["primary", "secondary"]
    fields: list[str] = Field(min_length=1)
    note: str | None = None

    @field_validator("fields")
    @classmethod
    def _bibtex_fields(cls, v: list[str]) -> list[str]:
        names = [f.strip().lower() for f in v]
        bad = [f for f in names if f not in BIBTEX_FIELDS]
        if bad:
            raise ValueError(f"not BibTeX field names: {bad}; known: {sorted(BIBTEX_FIELDS)}")
        if len(set(names)) != len(names):
            raise ValueError("a field is listed twice")
        return names


class Alternative(_Strict):
    """Another paper the survey may mean by this technique's name."""

    paper: str = Field(min_length=10)  # authors, title, venue and year as prose
    citekey: str | None = None  # its key in references.bib, where its fields are verified
    reason: str = Field(min_length=15)  # why it is plausible, and why it was not chosen
    verification: list[Verification] = Field(default_factory=list)


class Identification(_Strict):
    """Which paper the survey's entry is taken to mean, how sure that is, and what else it could be."""

    chosen: str = Field(min_length=4)  # the technique's citekey
    confidence: Literal["high", "medium", "low"]
    alternatives: list[Alternative] = Field(default_factory=list)
    evidence: list[str] = Field(min_length=1)


class Divergence(_Strict):
    """One place where the authors' released code computes something other than the paper says."""

    what: str = Field(min_length=5)
    paper: str = Field(min_length=5)
    released_code: str = Field(min_length=5)
    evidence: HttpUrl  # the released file, pinned to a commit
    reproduce_with: dict[str, str | int | float | bool] | None = None  # hyper-parameters giving the released form

    @field_validator("evidence")
    @classmethod
    def _pinned(cls, v: HttpUrl) -> HttpUrl:
        if not re.search(r"/(blob|tree|commit)/[0-9a-f]{40}(/|$|#)", v.path or ""):
            raise ValueError("evidence must link to a file at a full commit hash (.../blob/<40 hex>/path)")
        return v


class TechniqueFile(_Strict):
    slug: str
    name: str = Field(min_length=2)
    aliases: list[str] = Field(default_factory=list)
    category: str
    subcategory: str
    also_in: list[str] = Field(default_factory=list)
    year: int = Field(ge=1990, le=2030)
    summary: str = Field(min_length=80)
    formula: Formula
    strengths: list[str] = Field(min_length=2)
    limitations: list[str] = Field(min_length=2)
    applications: list[str] = Field(min_length=1)
    complexity: Complexity
    citekey: str = Field(min_length=4)
    related: list[str] = Field(default_factory=list)
    implementation: Implementation | None = None
    # the pages that confirmed the citation's fields; empty only while no admissible page is known
    verification: list[Verification] = Field(default_factory=list)
    identification: Identification | None = None
    survey_note: str | None = None
    divergences: list[Divergence] = Field(default_factory=list)

    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        if not SLUG_RE.match(v):
            raise ValueError("slugs are lowercase words joined by single hyphens")
        return v

    @field_validator("applications")
    @classmethod
    def _tags(cls, v: list[str]) -> list[str]:
        bad = [t for t in v if not TAG_RE.match(t)]
        if bad:
            raise ValueError(f"application tags must be lowercase-hyphenated: {bad}")
        if len(set(v)) != len(v):
            raise ValueError("duplicate application tags")
        return v

    @field_validator("strengths", "limitations")
    @classmethod
    def _points(cls, v: list[str]) -> list[str]:
        if any(len(p.strip()) < 15 for p in v):
            raise ValueError("each point must be a concrete sentence (15 characters or more)")
        return v


class SurveyVerificationFile(_Strict):
    note: str | None = None
    verification: list[Verification] = Field(min_length=1)


class SubcategoryFile(_Strict):
    id: str
    name: str
    description: str = ""


class CategoryFile(_Strict):
    id: str
    name: str
    description: str = ""
    subcategories: list[SubcategoryFile] = Field(min_length=1)


class TaxonomyFile(_Strict):
    survey_citekey: str
    categories: list[CategoryFile] = Field(min_length=1)


@dataclass
class BibEntry:
    citekey: str
    entry_type: str
    fields: dict[str, str]  # Unicode values (LaTeX decoded, braces removed), for display and CSL
    raw_fields: dict[str, str]  # the values exactly as written in the .bib file
    persons: dict[str, list[dict[str, str]]]  # author/editor -> [{family, given}]
    bibtex: str


@dataclass
class Catalog:
    taxonomy: TaxonomyFile
    techniques: dict[str, TechniqueFile]
    references: dict[str, BibEntry]
    survey_verification: list[dict[str, Any]] = field(default_factory=list)
    source_rules: list[Rule] = field(default_factory=list)

    def technique_hash(self, slug: str) -> str:
        t = self.techniques[slug]
        payload = json.dumps(t.model_dump(mode="json"), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()


class CatalogInvalid(Exception):
    def __init__(self, problems: list[Problem]):
        super().__init__(f"{len(problems)} problem(s) in the knowledge folder")
        self.problems = problems


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"])


def _read_yaml(path: Path, rel: str, problems: list[Problem]) -> Any:
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        problems.append(Problem(file=rel, message=f"not valid YAML: {exc}"))
    except OSError as exc:
        problems.append(Problem(file=rel, message=f"cannot read: {exc}"))
    return None


def parse_bibtex(text: str, origin: str) -> tuple[dict[str, BibEntry], list[Problem]]:
    """Parse BibTeX text; return entries by key and every problem found (with entry key and field)."""
    problems: list[Problem] = []
    raw = bibtexparser.parse_string(text)
    for block in raw.failed_blocks:
        key = getattr(block, "key", None)
        problems.append(Problem(file=origin, field=key, message=f"unparseable BibTeX block: {type(block).__name__}: "
                                f"{str(getattr(block, 'error', ''))[:200]} near {block.raw[:80]!r}"))
    decoded = bibtexparser.parse_string(text, append_middleware=[
        mw.LatexDecodingMiddleware(), mw.SeparateCoAuthors(), mw.SplitNameParts()])
    decoded_by_key = {e.key: e for e in decoded.entries}
    entries: dict[str, BibEntry] = {}
    for entry in raw.entries:
        if entry.key in entries:
            problems.append(Problem(file=origin, field=entry.key, message="duplicate citation key"))
            continue
        d = decoded_by_key[entry.key]
        raw_fields = {f.key.lower(): str(f.value) for f in entry.fields}
        fields: dict[str, str] = {}
        persons: dict[str, list[dict[str, str]]] = {}
        for f in d.fields:
            k = f.key.lower()
            if k in ("author", "editor"):
                persons[k] = [{"family": " ".join(p.last).replace("{", "").replace("}", ""),
                               "given": " ".join(p.first + p.von).replace("{", "").replace("}", "")}
                              for p in f.value]
            elif k in _VERBATIM:
                fields[k] = raw_fields[k].strip().strip("{}")  # URLs and identifiers are not LaTeX
            else:
                fields[k] = str(f.value).replace("{", "").replace("}", "").strip()
        for required in ("title", "year"):
            if required not in raw_fields:
                problems.append(Problem(file=origin, field=f"{entry.key}.{required}", message="required field missing"))
        if "author" not in raw_fields:
            problems.append(Problem(file=origin, field=f"{entry.key}.author", message="required field missing"))
        if "year" in raw_fields and not re.fullmatch(r"\d{4}", raw_fields["year"].strip("{}")):
            problems.append(Problem(file=origin, field=f"{entry.key}.year", message="year must be four digits"))
        if "doi" in raw_fields and not re.fullmatch(r"10\.\d{4,9}/\S+", raw_fields["doi"]):
            problems.append(Problem(file=origin, field=f"{entry.key}.doi",
                                    message="DOI must look like 10.NNNN/suffix, without a URL prefix"))
        if "pages" in raw_fields and re.search(r"\d-\d", raw_fields["pages"]):
            problems.append(Problem(file=origin, field=f"{entry.key}.pages", message="page ranges use '--'"))
        entries[entry.key] = BibEntry(citekey=entry.key, entry_type=entry.entry_type.lower(), fields=fields,
                                      raw_fields=raw_fields, persons=persons, bibtex=entry.raw.strip())
    return entries, problems


def load_catalog(root: Path) -> Catalog:
    """Load and validate everything under ``root``; raise :class:`CatalogInvalid` listing all problems."""
    problems: list[Problem] = []
    tax_raw = _read_yaml(root / "taxonomy.yaml", "taxonomy.yaml", problems)
    taxonomy = None
    if tax_raw is not None:
        try:
            taxonomy = TaxonomyFile.model_validate(tax_raw)
        except ValidationError as exc:
            problems += [Problem(file="taxonomy.yaml", field=_loc(e), message=e["msg"]) for e in exc.errors()]

    bib_path = root / "references.bib"
    references: dict[str, BibEntry] = {}
    if bib_path.exists():
        references, bib_problems = parse_bibtex(bib_path.read_text(encoding="utf-8"), "references.bib")
        problems += bib_problems
    else:
        problems.append(Problem(file="references.bib", message="missing"))

    techniques: dict[str, TechniqueFile] = {}
    for path in sorted((root / "techniques").glob("*.yaml")):
        rel = f"techniques/{path.name}"
        raw = _read_yaml(path, rel, problems)
        if raw is None:
            continue
        try:
            t = TechniqueFile.model_validate(raw)
        except ValidationError as exc:
            problems += [Problem(file=rel, field=_loc(e), message=e["msg"]) for e in exc.errors()]
            continue
        if t.slug != path.stem:
            problems.append(Problem(file=rel, field="slug", message=f"slug '{t.slug}' differs from the file name"))
        for msg in check_math(t.formula.latex):
            problems.append(Problem(file=rel, field="formula.latex", message=msg))
        techniques[t.slug] = t

    if taxonomy is not None:
        cats = {c.id: {s.id for s in c.subcategories} for c in taxonomy.categories}
        all_subs = {s for subs in cats.values() for s in subs}
        if taxonomy.survey_citekey not in references and references:
            problems.append(Problem(file="taxonomy.yaml", field="survey_citekey",
                                    message=f"'{taxonomy.survey_citekey}' is not in references.bib"))
        for slug, t in techniques.items():
            rel = f"techniques/{slug}.yaml"
            if t.category not in cats:
                problems.append(Problem(file=rel, field="category",
                                        message=f"unknown category '{t.category}'; known: {sorted(cats)}"))
            elif t.subcategory not in cats[t.category]:
                problems.append(Problem(file=rel, field="subcategory", message=(
                    f"'{t.subcategory}' is not a subcategory of '{t.category}'; known: {sorted(cats[t.category])}")))
            for extra in t.also_in:
                if extra not in all_subs:
                    problems.append(Problem(file=rel, field="also_in", message=f"unknown subcategory '{extra}'"))
    for slug, t in techniques.items():
        rel = f"techniques/{slug}.yaml"
        if references and t.citekey not in references:
            problems.append(Problem(file=rel, field="citekey", message=f"'{t.citekey}' is not in references.bib"))
        for r in t.related:
            if r == slug:
                problems.append(Problem(file=rel, field="related", message="a technique cannot relate to itself"))
            elif r not in techniques:
                problems.append(Problem(file=rel, field="related", message=f"unknown slug '{r}'"))
        symbols = {item.symbol for item in t.formula.legend}
        if len(symbols) != len(t.formula.legend):
            problems.append(Problem(file=rel, field="formula.legend", message="a symbol is defined twice"))

    rules: list[Rule] = []
    rules_doc = None
    if (root / "sources.yaml").exists():
        rules_doc = _read_yaml(root / "sources.yaml", "sources.yaml", problems)
    else:
        problems.append(Problem(file="sources.yaml", message="missing: the classification of source hosts"))
    if rules_doc is not None:
        rules, rule_problems = parse_rules(rules_doc)
        problems += [Problem(file="sources.yaml", message=m) for m in rule_problems]

    survey_verification: list[dict[str, Any]] = []
    sv = root / "survey-verification.yaml"
    survey_sources: list[Verification] = []
    if sv.exists():
        raw = _read_yaml(sv, sv.name, problems)
        try:
            svf = SurveyVerificationFile.model_validate(raw)
            survey_sources = svf.verification
            survey_verification = [verification_record(v) for v in svf.verification]
        except ValidationError as exc:
            problems += [Problem(file=sv.name, field=_loc(e), message=e["msg"]) for e in exc.errors()]

    for slug, t in techniques.items():
        rel = f"techniques/{slug}.yaml"
        problems += _source_problems(rel, "verification", t.verification, rules)
        ident = t.identification
        if ident is None:
            continue
        if ident.chosen != t.citekey:
            problems.append(Problem(file=rel, field="identification.chosen",
                                    message=f"'{ident.chosen}' is not this technique's citekey '{t.citekey}'"))
        for i, alt in enumerate(ident.alternatives):
            where = f"identification.alternatives.{i}"
            if alt.citekey is not None:
                if references and alt.citekey not in references:
                    problems.append(Problem(file=rel, field=f"{where}.citekey",
                                            message=f"'{alt.citekey}' is not in references.bib"))
                if alt.citekey == t.citekey:
                    problems.append(Problem(file=rel, field=f"{where}.citekey",
                                            message="an alternative cannot be the chosen paper"))
                if not alt.verification:
                    problems.append(Problem(file=rel, field=f"{where}.verification",
                                            message="an alternative with a citekey names the pages that confirm "
                                                    "its fields"))
            problems += _source_problems(rel, f"{where}.verification", alt.verification, rules)
    problems += _source_problems(sv.name, "verification", survey_sources, rules)

    if problems or taxonomy is None:
        raise CatalogInvalid(problems)
    return Catalog(taxonomy=taxonomy, techniques=techniques, references=references,
                   survey_verification=survey_verification, source_rules=rules)


def verification_record(v: Verification) -> dict[str, Any]:
    """A verification source as it is stored and served."""
    out: dict[str, Any] = {"source": str(v.source), "kind": v.kind, "fields": list(v.fields)}
    if v.note:
        out["note"] = v.note
    return out


def _source_problems(rel: str, where: str, sources: list[Verification], rules: list[Rule]) -> list[Problem]:
    """Every source must be on a host that data/sources.yaml classifies, as the kind the file states."""
    problems: list[Problem] = []
    for i, v in enumerate(sources):
        c = classify(str(v.source), rules)
        loc = f"{where}.{i}.source"
        if c.kind == "blocked":
            problems.append(Problem(file=rel, field=loc, message=f"{v.source} is a blocked source ({c.what})"))
        elif c.kind == "unknown":
            problems.append(Problem(file=rel, field=loc, message=(
                f"{v.source}: unknown host; add it to data/sources.yaml as primary or secondary if it is a "
                f"publisher, proceedings, index or author page ({c.what})")))
        elif c.kind != v.kind:
            problems.append(Problem(file=rel, field=f"{where}.{i}.kind", message=(
                f"{v.source} is {c.kind} (data/sources.yaml: {c.rule}), not {v.kind}")))
    return problems
