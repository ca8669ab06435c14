"""External programs some citation tests drive (node with citeproc-js, TeX Live's BibTeX and Biber).

Locally a test skips when its program is missing. In CI (``CI=true``, which CI services set, or
``ATLAS_TEST_TOOLS=require``, which .ci/run sets) a missing program fails the test instead, so a
broken installation step cannot pass unnoticed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

CITEPROC_DIR = Path(__file__).parent / "citeproc"


def required() -> bool:
    return os.environ.get("ATLAS_TEST_TOOLS") == "require" or os.environ.get("CI", "").lower() == "true"


def missing(what: str) -> None:
    message = f"{what} is not installed"
    if required():
        pytest.fail(message + " (required in CI: .ci/run installs it)")
    pytest.skip(message)


def need_programs(*names: str) -> dict[str, str]:
    found = {name: shutil.which(name) for name in names}
    absent = [n for n, p in found.items() if p is None]
    if absent:
        missing(", ".join(absent))
    return {n: p for n, p in found.items() if p}


def need_citeproc_js() -> str:
    """The node binary, once citeproc-js is installed in tests/citations/citeproc (``npm ci`` there)."""
    node = need_programs("node")["node"]
    if not (CITEPROC_DIR / "node_modules" / "citeproc").is_dir():
        missing("citeproc-js (run `npm ci` in tests/citations/citeproc)")
    return node
