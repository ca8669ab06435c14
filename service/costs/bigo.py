"""Read a stated complexity such as ``HWC + C^2/r`` as growth exponents along a swept axis.

The catalogue writes complexities for people: ``O(N^2 C'')``, ``O(hw\\,c\\,(m + 2n) + hw\\,m\\,n)``.
This module parses the expression inside ``O(...)`` (sums, products, quotients, integer or fractional
powers, parentheses, juxtaposition as product) into monomials. Every symbol is a single letter with an
optional subscript (``d_k``, ``N_{I}``) and primes (``C''``); adjacent letters multiply (``HWC`` is
H * W * C). Given how fast each symbol grows with the swept size x (its weight: H grows as x^0.5 when
H = W and x = H * W), each monomial has a degree in x; the stated growth is the largest degree, the
smallest degree is that of the lowest-order term.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_TOKEN = re.compile(r"""
    (?P<space>\s+|\\[,;:!\ ])                   # blanks and TeX spacing
  | (?P<num>\d+(?:\.\d+)?)
  | (?P<sym>[A-Za-z](?:_\{[^}]*\}|_[A-Za-z0-9]+)?'*)
  | (?P<op>[-+*/^(){}])
""", re.VERBOSE)


class BigOError(ValueError):
    pass


@dataclass(frozen=True)
class Growth:
    """Degrees of the monomials of a stated expression in the swept size."""

    degrees: tuple[float, ...]

    @property
    def exponent(self) -> float:
        """The asymptotic growth: the largest degree."""
        return max(self.degrees)

    @property
    def lowest(self) -> float:
        return min(self.degrees)


def tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise BigOError(f"cannot read {text[pos:]!r} in {text!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group(kind)))
    return out


def inner(stated: str) -> str:
    """The expression inside the first ``O(...)`` of a stated complexity, or the text itself."""
    start = stated.find("O(")
    if start < 0:
        return stated
    depth, i = 0, start + 1
    for i in range(start + 1, len(stated)):
        if stated[i] == "(":
            depth += 1
        elif stated[i] == ")":
            depth -= 1
            if depth == 0:
                return stated[start + 2:i]
    raise BigOError(f"unbalanced parentheses in {stated!r}")


class _Parser:
    """Recursive descent over sums of products; a value is a list of monomial degrees.

    A number is a monomial of degree 0. Subtraction is read as addition (``N - 1`` grows as N);
    division subtracts degrees, which is only defined for a single-monomial divisor."""

    def __init__(self, toks: list[tuple[str, str]], weight: Mapping[str, float]):
        self.toks, self.i, self.weight = toks, 0, weight

    def peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def parse(self) -> list[float]:
        value = self.sum()
        if self.peek() is not None:
            raise BigOError(f"unexpected {self.peek()[1]!r}")
        return value

    def sum(self) -> list[float]:
        terms = self.product()
        while (tok := self.peek()) is not None and tok[1] in "+-":
            self.take()
            terms = terms + self.product()
        return terms

    def product(self) -> list[float]:
        value = self.power()
        while (tok := self.peek()) is not None and (tok[1] in "*/" or tok[0] in ("sym", "num") or tok[1] == "("):
            if tok[1] == "/":
                self.take()
                divisor = self.power()
                if len(divisor) != 1:
                    raise BigOError("division by a sum is not a polynomial growth")
                value = [d - divisor[0] for d in value]
                continue
            if tok[1] == "*":
                self.take()
            factor = self.power()
            value = [a + b for a in value for b in factor]
        return value

    def power(self) -> list[float]:
        base = self.atom()
        if (tok := self.peek()) is not None and tok[1] == "^":
            self.take()
            kind, text = self.take()
            if kind == "op" and text in "({":
                close = ")" if text == "(" else "}"
                kind, text = self.take()
                if self.peek() is None or self.take()[1] != close:
                    raise BigOError("an exponent in parentheses must be a single number")
            if kind != "num":
                raise BigOError(f"exponent {text!r} is not a number")
            if len(base) != 1:
                # (a + b)^k grows as its largest term to the k; keep every term's own power
                return [d * float(text) for d in base]
            return [base[0] * float(text)]
        return base

    def atom(self) -> list[float]:
        if self.peek() is None:
            raise BigOError("expression ends too early")
        kind, text = self.take()
        if kind == "num":
            return [0.0]
        if kind == "sym":
            return [float(self.weight.get(text, 0.0))]
        if text == "(":
            value = self.sum()
            if self.peek() is None or self.take()[1] != ")":
                raise BigOError("missing ')'")
            return value
        raise BigOError(f"unexpected {text!r}")


def symbols(expression: str) -> list[str]:
    return [text for kind, text in tokens(expression) if kind == "sym"]


def growth(expression: str, weight: Mapping[str, float]) -> Growth:
    """Degrees of ``expression`` (the inside of O(...), or a stated text containing it) in the swept
    size, where ``weight[symbol]`` is d log(symbol) / d log(x); symbols not named do not grow."""
    toks = tokens(inner(expression))
    if not toks:
        raise BigOError("empty expression")
    return Growth(tuple(_Parser(toks, weight).parse()))
