"""Imported LaTeX decoded the same way by the fast path (regular expressions for the common constructs)
and by pylatexenc's parser, which the fast path stands in for; long values are cut into pieces only at
places where that does not change the text."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.citations import importers

TOKENS = ["word", "CBAM", "{Gaussian}", "\\'e", "\\'{e}", '{\\"u}', '\\"{o}', "\\c{c}", "\\c c", "{\\L}", "\\ss{}",
          "{\\aa}", "\\v{S}", "\\&", "\\%", "\\#", "\\_", "--", "---", "``", "''", "`", "'", "~", "\\textbf{bold}",
          "\\emph{it}", "{\\em x}", "$A^2$", "$\\alpha$", "$", "\\$", "\\LaTeX{}", "R&D", "50%", " ", " ", "  ", "-", ":"]


def _parser(value: str) -> str:
    text = importers._latex_to_text(importers._BARE_SPECIAL.sub(r"\\\1", value))
    return " ".join(text.replace("{", "").replace("}", "").split())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=30))
def test_fast_path_decodes_like_the_parser(tokens):
    value = "".join(tokens)
    assert importers.decode_latex(value) == _parser(value)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from([t for t in TOKENS if t != "$"]), min_size=200, max_size=600))
def test_pieces_decode_like_the_whole(tokens):
    value = "".join(tokens)  # well-formed: every $ closes (a stray one makes the rest of a value math)
    pieces = importers.latex_chunks(value, size=64)
    assert "".join(pieces) == value
    assert " ".join(" ".join(_parser(p).split()) for p in pieces).split() == _parser(value).split()


def test_long_values_are_cut():
    value = "\\'e " * 5000
    pieces = importers.latex_chunks(value, size=1024)
    assert len(pieces) > 10 and max(map(len, pieces)) <= 1100
    assert importers.decode_latex(value) == " ".join(["é"] * 5000)
