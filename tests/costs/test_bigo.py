"""Stated complexities read as growth exponents: each expected value below is worked out by hand."""

import pytest

from service.costs.bigo import BigOError, growth, inner, symbols

SQUARE_MAP = {"H": 0.5, "W": 0.5}  # H = W, so each grows as the square root of x = H * W


@pytest.mark.parametrize("stated, weights, highest, lowest", [
    ("O(HWC + C^2/r)", SQUARE_MAP, 1.0, 0.0),          # HWC ~ x, C^2/r constant
    ("O(HWC + C^2/r)", {"C": 1.0}, 2.0, 1.0),          # along C: C^2 dominates, HWC is the lower term
    ("O(H W (H + W) d)", SQUARE_MAP, 1.5, 1.5),        # x * sqrt(x)
    ("O(N^2 C'')", {"N": 1.0}, 2.0, 2.0),              # primes belong to the symbol
    ("O(C^2 HW + N C^3)", {"C": 1.0}, 3.0, 2.0),       # N here is an iteration count: not growing
    ("O((HW)^2 C) global; O(HW k^2 C) local", SQUARE_MAP, 2.0, 2.0),   # only the first O(...) is read
    (r"O(hw\,c\,(m + 2n) + hw\,m\,n)", {"h": 0.5, "w": 0.5}, 1.0, 1.0),  # TeX thin spaces are blanks
    ("O(hwC + (hw/M^2) h_a M^4)", {"h": 0.5, "w": 0.5}, 1.0, 1.0),     # h_a is not h
    ("O(N_{I} N_{p} C + (N_{I} + N_{p}) C^2)", {"N_{I}": 1.0}, 1.0, 0.0),
    ("O(n^{2})", {"n": 1.0}, 2.0, 2.0),
])
def test_degrees(stated, weights, highest, lowest):
    g = growth(stated, weights)
    assert g.exponent == pytest.approx(highest)
    assert g.lowest == pytest.approx(lowest)


def test_symbols_are_single_letters_with_subscripts_and_primes():
    assert symbols("N_{I} d_k C'' HWC") == ["N_{I}", "d_k", "C''", "H", "W", "C"]


def test_inner_takes_the_first_balanced_o():
    assert inner("O((N_g + N_o) R d) per question") == "(N_g + N_o) R d"
    assert inner("HW C") == "HW C"


@pytest.mark.parametrize("bad", ["O(N^k)", "O(N / (a + b))", "O(N +)", "O(N $ 2)", "O((N)"])
def test_unreadable_expressions_are_refused(bad):
    with pytest.raises(BigOError):
        growth(bad, {"N": 1.0})
