"""Citation keys in Better BibTeX's default pattern: ``[auth:lower][shorttitle3_3][year]``.

The first author's family name in lower case with accents folded, the first three title words that are
not function words (each with its first letter capitalised and punctuation removed), and the year.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

# Better BibTeX's skip words (words left out of short titles).
SKIP_WORDS = frozenset("""
a ab aboard about above across after against al along amid among an and anti around as at before behind
below beneath beside besides between beyond but by d da das de del dell dello dei degli della delle dem den
der des despite die do down du during ein eine einem einen einer eines el en et except for from gli i il in
inside into is l la las le les like lo los near nor of off on onto or over past per plus round save since so
some sur than the through to toward towards un una unas uno unos under underneath une unlike until up upon
versus via von while with within without yet zu zum
""".split())


def fold(text: str) -> str:
    """Strip accents and LaTeX braces/accents: 'Gr{\\"u}n' and 'Grün' both give 'Grun'."""
    text = re.sub(r"\\[a-zA-Z]+\s*|\\.", "", text)  # LaTeX commands such as \"  \'  \textbf
    text = text.replace("{", "").replace("}", "")
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def short_title(title: str, words: int = 3) -> str:
    picked: list[str] = []
    for raw in fold(title).split():
        word = re.sub(r"[^0-9A-Za-z]", "", raw)
        if not word or word.lower() in SKIP_WORDS:
            continue
        picked.append(word[0].upper() + word[1:])
        if len(picked) == words:
            break
    return "".join(picked)


def author_part(family: str) -> str:
    # particles written in lower case before the family name ("van der") are not part of the key
    parts = [p for p in fold(family).split() if not p[:1].islower()] or fold(family).split()
    return re.sub(r"[^0-9a-z]", "", "".join(parts).lower())


def better_bibtex_key(first_author_family: str, title: str, year: str | int) -> str:
    return f"{author_part(first_author_family)}{short_title(title)}{year}"


def postfixes() -> Iterator[str]:
    """Better BibTeX's postfixes for keys that would collide: a, b, ..., z, aa, ab, ..., zz, aaa, ..."""
    n = 0
    while True:
        letters, m = "", n + 1
        while m:
            m, rem = divmod(m - 1, 26)
            letters = chr(ord("a") + rem) + letters
        yield letters
        n += 1
