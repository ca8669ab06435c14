"""Server-rendered HTML pages: Jinja2 templates (autoescaped) and static assets.

The pages are complete without JavaScript. When KaTeX has been installed by ``scripts/build-assets.sh``
(into ``static/katex/``) the pages load it from this service and typeset the formulas in the browser;
otherwise the LaTeX source is shown as code.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
STATIC_DIR = PACKAGE_DIR / "static"
KATEX_FILES = ("katex/katex.min.js", "katex/katex.min.css")


@lru_cache(maxsize=1)
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    return env


def katex_available(static_dir: Path = STATIC_DIR) -> bool:
    """Whether the KaTeX build is present to be served under /static/katex/."""
    return all((static_dir / f).is_file() for f in KATEX_FILES)


def render(template: str, **context: Any) -> str:
    context.setdefault("katex", katex_available())
    return environment().get_template(template).render(**context)
