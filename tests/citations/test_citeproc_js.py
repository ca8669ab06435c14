"""The service's formatted references against citeproc-js, the CSL processor of Zotero and Mendeley.

One node process renders the whole CSL-JSON export with the bundled APA and IEEE styles (the same
style and locale files the service uses), as text and as HTML; the service's own output for the same
export must be the same entry for entry. The only allowed differences are listed in
``CITEPROC_JS_DIFFERENCES`` with the reason; a listed difference that no longer occurs fails the test,
so the list cannot go stale.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest
from citeproc import LOCALES_PATH

from service.citations import formatted

from .tools import CITEPROC_DIR, need_citeproc_js

STYLES = ("apa", "ieee")
FORMATS = ("text", "html")

# (citation key, style) -> why citeproc-js prints something else.
CITEPROC_JS_DIFFERENCES = {
    ("huangSemanticSegmentationReverse2017", style): (
        "BMVC page numbers are section.page ('18.1-18.13'). citeproc-js treats a range whose ends are not "
        "integers as one opaque locator: singular 'p.' and the hyphen kept; the service prints 'pp. 18.1–18.13' "
        "as the styles prescribe for a range.") for style in STYLES
}



@pytest.fixture(scope="module")
def backend() -> str:
    """One database is enough here: the exports are the same text on SQLite and PostgreSQL (the export
    tests run on both), and these external programs take seconds per run."""
    return "sqlite"

@pytest.fixture(scope="module")
def items(client) -> list[dict]:
    return client.get("/export", params={"format": "csl-json"}).json()


@pytest.fixture(scope="module")
def citeproc_js(items) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(style, format) -> [(id, entry)] in citeproc-js's bibliography order."""
    node = need_citeproc_js()
    jobs = [{"style": str(formatted.STYLES_DIR / formatted.STYLES[s][0]), "locale": "en-US", "format": f}
            for s in STYLES for f in FORMATS]
    done = subprocess.run([node, str(CITEPROC_DIR / "render.js")], capture_output=True, text=True, timeout=120,
                          input=json.dumps({"items": items, "locales_dir": str(LOCALES_PATH), "jobs": jobs}),
                          check=False)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    return {(job_style, job_fmt): list(zip(r["ids"], r["entries"], strict=True))
            for (job_style, job_fmt), r in zip(((s, f) for s in STYLES for f in FORMATS), results, strict=True)}


def _service_entries(client, style: str, fmt: str) -> list[str]:
    body = client.get("/export", params={"format": fmt, "style": style, "locale": "en-US"}).text
    if fmt == "text":
        return body.strip().split("\n\n")
    assert body.startswith('<div class="csl-bib-body">\n') and body.endswith("</div>\n")
    return [line[2:] for line in body.splitlines()[1:-1]]


def _same_markup(entry: str) -> str:
    """citeproc-js writes '&#38;' where the service writes '&amp;' and indents nested blocks; neither
    changes the document."""
    entry = re.sub(r">\s+<", "><", entry.strip())
    return entry.replace("&#38;", "&amp;").replace("&#60;", "&lt;").replace("&#62;", "&gt;")


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_entry_matches_citeproc_js(client, items, citeproc_js, style, fmt):
    theirs = citeproc_js[(style, fmt)]
    ours = _service_entries(client, style, fmt)
    assert len(ours) == len(theirs) == len(items)
    mismatches, expected_but_equal = [], []
    for (key, their_entry), our_entry in zip(theirs, ours, strict=True):
        same = _same_markup(our_entry) == _same_markup(their_entry)
        if (key, style) in CITEPROC_JS_DIFFERENCES:
            if same:
                expected_but_equal.append(key)
            continue
        if not same:
            mismatches.append(f"{key}\n  service:     {our_entry}\n  citeproc-js: {their_entry}")
    assert not mismatches, "\n".join(mismatches)
    assert not expected_but_equal, f"listed as different but now identical: {expected_but_equal}"


def test_rich_text_title_renders_like_citeproc_js(client, citeproc_js):
    """The A²-Nets title is CSL rich text (A<sup>2</sup>): HTML keeps the superscript, text drops the tag."""
    key = "chenA2NetsDoubleAttention2018"
    html = dict(citeproc_js[("apa", "html")])[key]
    text = dict(citeproc_js[("apa", "text")])[key]
    assert "A<sup>2</sup>-Nets" in html and "A2-Nets" in text and "$" not in text
    ours = client.get("/export", params={"format": "html", "style": "apa", "q": "A2-Nets"}).text
    assert "A<sup>2</sup>-Nets" in ours
