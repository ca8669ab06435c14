"""Titles with inline math (``{$A^2$-Nets}``) for targets that are not LaTeX.

* :func:`plain_text` for plain-text targets (RIS, page metadata): ``A²-Nets``. Zotero's RIS import
  strips HTML tags, so the superscript must be a Unicode character there.
* :func:`csl_markup` for CSL-JSON, whose strings may carry the rich-text tags ``<sup>``, ``<sub>``,
  ``<i>`` and ``<b>``: ``A<sup>2</sup>-Nets``. Zotero keeps the tags, and citeproc renders them.

Both drop the braces that protect case in BibTeX and the remaining LaTeX commands.
"""

from __future__ import annotations

import re

_SUPERSCRIPT = str.maketrans("0123456789+-=()ni", "⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻⁼⁽⁾ⁿⁱ")
_SUBSCRIPT = str.maketrans("0123456789+-=()", "₀₁₂₃₄₅₆₇₈₉₊₋₌₍₎")
_SCRIPT = re.compile(r"([\^_])(?:\{([^{}]*)\}|([0-9A-Za-z]))")
_MATH = re.compile(r"\$([^$]*)\$")
_COMMAND_ARG = re.compile(r"\\[A-Za-z]+\s*\{([^{}]*)\}")
_COMMAND = re.compile(r"\\[A-Za-z]+\s*")


def _unicode_script(m: re.Match) -> str:
    mark, group, single = m.groups()
    text = group if group is not None else single
    converted = text.translate(_SUPERSCRIPT if mark == "^" else _SUBSCRIPT)
    # keep the TeX form when a character has no Unicode super/subscript
    if all(c != o or c.isspace() for c, o in zip(converted, text, strict=True)):
        return converted
    return f"{mark}{text}"


def _tagged_script(m: re.Match) -> str:
    mark, group, single = m.groups()
    tag = "sup" if mark == "^" else "sub"
    return f"<{tag}>{group if group is not None else single}</{tag}>"


def _math(body: str, script) -> str:
    body = _COMMAND_ARG.sub(r"\1", body)
    body = _SCRIPT.sub(script, body)
    return _COMMAND.sub("", body)


def _flatten(value: str | None, script) -> str:
    """Inline math rendered with ``script``, braces and LaTeX commands dropped, white space collapsed."""
    if not value:
        return ""
    if not any(c in value for c in "${}\\"):
        return " ".join(value.split())
    value = _MATH.sub(lambda m: _math(m.group(1), script), value)
    value = value.replace("{", "").replace("}", "")
    return re.sub(r"\s+", " ", value).strip()


def plain_text(value: str | None) -> str:
    """``$A^2$-Nets`` -> ``A²-Nets``; braces and LaTeX commands dropped, white space collapsed."""
    return _flatten(value, _unicode_script)


def csl_markup(value: str | None) -> str:
    """``$A^2$-Nets`` -> ``A<sup>2</sup>-Nets``; braces and other LaTeX commands dropped."""
    return _flatten(value, _tagged_script)
