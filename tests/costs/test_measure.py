"""The measurements themselves: peak memory of a call, the median timer, FLOP counting, the slope fit."""

import math
import sys

import pytest
import torch

from service.costs import fit, measure

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux") or not measure.rss_peak_supported(),
                                reason="peak resident memory is read from /proc (Linux)")


@linux_only
def test_peak_memory_sees_a_known_allocation():
    size = 48 << 20

    def allocate():
        t = torch.ones(size // 4)  # touched pages, freed when the function returns
        return float(t[-1])

    peaks = [measure.peak_rss_delta(allocate) for _ in range(3)]
    for peak in peaks:
        assert size * 0.95 <= peak <= size + (16 << 20), peaks


@linux_only
def test_peak_memory_counts_what_is_freed_before_returning():
    # two 24 MiB tensors alive together, then dropped: the peak is the sum, the result is small
    def two_at_once():
        a = torch.ones(6 << 20)
        b = torch.ones(6 << 20)
        return float(a[0] + b[0])

    assert measure.peak_rss_delta(two_at_once) >= (48 << 20) * 0.95


@linux_only
def test_peak_memory_of_nothing_is_small():
    assert measure.peak_rss_delta(lambda: None) < (4 << 20)


def test_timer_takes_the_median_of_warm_calls():
    calls = []

    def f():
        calls.append(1)

    t = measure.time_forward(f, torch.device("cpu"), min_repeats=7, min_total_s=0.0, warmup=2)
    assert t.repeats == 7 and len(calls) == 9
    assert 0 < t.median_s < 0.01


def test_flops_of_a_matrix_product():
    def forward(device):
        a = torch.empty(3, 5, device=device)
        b = torch.empty(5, 7, device=device)
        return a @ b

    assert measure.count_flops(forward) == 2 * 3 * 5 * 7


def test_slope_over_the_upper_half():
    xs = [1, 2, 4, 8, 16, 32, 64, 128]
    # flat (fixed overhead) below, then y = x^1.5 above: the fit reads only the upper half
    ys = [100.0, 100.0, 100.0, 100.0] + [x ** 1.5 for x in xs[4:]]
    e, n = fit.exponent(xs, ys)
    assert n == 4
    assert e == pytest.approx(1.5)


def test_slope_matches_an_independent_least_squares():
    xs = [10, 20, 40, 80, 160, 320]
    ys = [3.0, 7.0, 11.0, 29.0, 50.0, 130.0]
    pts = list(zip(xs, ys, strict=True))[3:]
    lx = [math.log(x) for x, _ in pts]
    ly = [math.log(y) for _, y in pts]
    n = len(pts)
    sxy = sum(a * b for a, b in zip(lx, ly, strict=True))
    expected = (n * sxy - sum(lx) * sum(ly)) / (n * sum(a * a for a in lx) - sum(lx) ** 2)
    assert fit.exponent(xs, ys)[0] == pytest.approx(expected)


@pytest.mark.parametrize("measured, escape, verdict", [
    (2.1, None, fit.MATCHES),
    (2.5, None, fit.FASTER),
    (2.5, "caches", fit.FASTER),      # nothing excuses growing faster than stated
    (1.2, None, fit.SLOWER),
    (1.2, "the MLP is small", fit.CONSTANTS),
    (None, None, fit.UNRESOLVED),
])
def test_verdicts(measured, escape, verdict):
    assert fit.judge(measured, 3, "N^2", 2.0, 2.0, 0.35, escape).verdict == verdict


def test_memory_fit_needs_three_points_above_the_resolution():
    xs = [1, 2, 4, 8]
    assert fit.exponent(xs, [None, None, 5.0, 10.0], min_points=3) == (None, 0)
    e, n = fit.exponent(xs, [None, 2.5, 5.0, 10.0], min_points=3)
    assert e == pytest.approx(1.0) and n == 2
