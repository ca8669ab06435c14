"""The whole BibTeX and BibLaTeX exports compiled with TeX Live: zero errors and zero warnings.

Classic BibTeX with the standard styles plain, ieeetr, alpha, unsrt and abbrv, for the ASCII export
(LaTeX accent commands) and the UTF-8 export (``unicode=true``); BibLaTeX through Biber with the default
(numeric) and authoryear styles; and Biber's data-model check of the BibLaTeX export. Every entry is
cited (``\\nocite{*}``), so every entry passes through every style.

Needs pdflatex, bibtex and biber (Debian: texlive-latex-base, texlive-latex-recommended,
texlive-bibtex-extra, biber; .ci/run installs them). Skips locally without them; fails in CI.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .tools import need_programs

CLASSIC_STYLES = ("plain", "ieeetr", "alpha", "unsrt", "abbrv")
BIBLATEX_STYLES = {"default": "numeric", "authoryear": "authoryear"}
# LaTeX's and packages' warnings, and overfull/underfull boxes are not counted (layout, not data).
LATEX_WARNING = re.compile(r"^(?:LaTeX|Package \w+|Class \w+) Warning:.*$|^! .*$", re.M)



@pytest.fixture(scope="module")
def backend() -> str:
    """One database is enough here: the exports are the same text on SQLite and PostgreSQL (the export
    tests run on both), and these external programs take seconds per run."""
    return "sqlite"

@pytest.fixture(scope="module")
def tex() -> dict[str, str]:
    return need_programs("pdflatex", "bibtex", "biber")


@pytest.fixture(scope="module")
def exports(client) -> dict[str, str]:
    out = {}
    for name, params in (("ascii", {"format": "bibtex"}), ("utf8", {"format": "bibtex", "unicode": "true"}),
                         ("biblatex", {"format": "biblatex"})):
        r = client.get("/export", params=params)
        assert r.status_code == 200
        out[name] = r.text
    return out


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, errors="replace", timeout=120, check=False)


def _latex(tex: dict[str, str], cwd: Path, job: str) -> str:
    done = _run([tex["pdflatex"], "-interaction=nonstopmode", "-halt-on-error", job], cwd)
    log = (cwd / f"{job}.log").read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, f"pdflatex {job} failed:\n" + "\n".join(re.findall(r"^!.*$", log, re.M))
    return log


@pytest.mark.parametrize("encoding", ["ascii", "utf8"])
@pytest.mark.parametrize("style", CLASSIC_STYLES)
def test_classic_bibtex(tex, exports, tmp_path, style, encoding):
    (tmp_path / "library.bib").write_text(exports[encoding], encoding="utf-8")
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\begin{document}\n\\nocite{*}\n"
        f"\\bibliographystyle{{{style}}}\n\\bibliography{{library}}\n\\end{{document}}\n", encoding="utf-8")
    _latex(tex, tmp_path, "doc")
    done = _run([tex["bibtex"], "doc"], tmp_path)
    blg = (tmp_path / "doc.blg").read_text(encoding="utf-8", errors="replace")
    assert done.returncode == 0, blg
    assert not re.findall(r"^Warning--.*$|error message", blg, re.M), blg
    assert "(There were" not in blg, blg  # BibTeX's summary line of warnings or errors
    _latex(tex, tmp_path, "doc")
    log = _latex(tex, tmp_path, "doc")
    assert LATEX_WARNING.findall(log) == []
    bbl = (tmp_path / "doc.bbl").read_text(encoding="utf-8", errors="replace")
    assert bbl.count("\\bibitem") == exports[encoding].count("\n@")
    # the arXiv-only paper is identified by its arXiv id, not just "arXiv preprint, 2019"
    inverse = bbl[bbl.index("{sindagiInverseAttentionGuided2019}"):].split("\\bibitem")[0]
    assert "arXiv:1907.01193" in " ".join(inverse.split())
    # initials of non-ASCII given names stay whole letters (ieeetr and abbrv abbreviate them)
    if encoding == "utf8" and style in ("ieeetr", "abbrv"):
        assert "{\\relax Ł}." in " ".join(bbl.split())


@pytest.mark.parametrize("style", list(BIBLATEX_STYLES))
def test_biblatex_with_biber(tex, exports, tmp_path, style):
    (tmp_path / "library.bib").write_text(exports["biblatex"], encoding="utf-8")
    (tmp_path / "doc.tex").write_text(
        "\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n"
        f"\\usepackage[backend=biber,style={BIBLATEX_STYLES[style]}]{{biblatex}}\n"
        "\\addbibresource{library.bib}\n\\begin{document}\n\\nocite{*}\n\\printbibliography\n\\end{document}\n",
        encoding="utf-8")
    _latex(tex, tmp_path, "doc")
    done = _run([tex["biber"], "doc"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not re.findall(r"^(?:WARN|ERROR) - .*$", done.stdout, re.M), done.stdout
    _latex(tex, tmp_path, "doc")
    log = _latex(tex, tmp_path, "doc")
    assert LATEX_WARNING.findall(log) == []
    bbl = (tmp_path / "doc.bbl").read_text(encoding="utf-8")
    assert bbl.count("\\entry{") == exports["biblatex"].count("\n@")


def test_biber_validates_the_data_model(tex, exports, tmp_path):
    (tmp_path / "library.bib").write_text(exports["biblatex"], encoding="utf-8")
    done = _run([tex["biber"], "--tool", "--validate-datamodel", "library.bib"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not re.findall(r"^(?:WARN|ERROR) - .*$", done.stdout, re.M), done.stdout
    assert "Invalid field" not in done.stdout
