"""The pages work under their Content-Security-Policy in a real browser: headless Chromium loads /docs
(Swagger UI must list the operations) and a technique page (KaTeX must typeset the formula), and its
console must report no policy violation. Skipped when Chromium or the front-end assets
(scripts/build-assets.sh) are not installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import pytest

from service.api.health import _SWAGGER
from service.web import katex_available
from tests.fuzz.run import serve

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)

pytestmark = pytest.mark.skipif(CHROMIUM is None or not katex_available() or
                                not (_SWAGGER / "swagger-ui-bundle.js").exists(),
                                reason="needs Chromium and the assets of scripts/build-assets.sh")


def _load(url: str, profile: str) -> tuple[str, str]:
    """The DOM after scripts ran, and the browser's console log."""
    proc = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                           "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", "--dump-dom", url],
                          capture_output=True, text=True, timeout=120)
    console = "\n".join(line for line in proc.stderr.splitlines() if ":CONSOLE" in line)
    return proc.stdout, console


def test_docs_and_formulas_render_without_policy_violations():
    with tempfile.TemporaryDirectory(prefix="atlas-csp-") as tmp, serve(tmp) as (base, _env, _log):
        docs, console = _load(f"{base}/docs", f"{tmp}/profile")
        assert "Content Security Policy" not in console, console
        assert docs.count('class="opblock ') >= 15  # Swagger UI rendered the operations
        page, console = _load(f"{base}/t/squeeze-and-excitation", f"{tmp}/profile")
        assert "Content Security Policy" not in console, console
        assert 'class="katex-display"' in page and page.count('class="katex"') >= 2
