"""bench/percentiles.py: linear interpolation between closest ranks, checked by hand and
against the standard library's ``statistics.quantiles(method="inclusive")``."""

from __future__ import annotations

import random
import statistics

import pytest

from bench.percentiles import percentile


def test_hand_computed_values() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # h = 4 q / 100
    assert percentile(values, 0) == 15.0
    assert percentile(values, 25) == 20.0  # h = 1
    assert percentile(values, 40) == pytest.approx(29.0)  # h = 1.6: 20 + 0.6 * 15
    assert percentile(values, 50) == 35.0
    assert percentile(values, 90) == pytest.approx(46.0)  # h = 3.6: 40 + 0.6 * 10
    assert percentile(values, 99) == pytest.approx(49.6)  # h = 3.96
    assert percentile(values, 100) == 50.0


def test_order_of_the_input_does_not_matter_and_it_is_not_changed() -> None:
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    copy = list(values)
    assert percentile(values, 50) == pytest.approx(3.5)  # the mean of the middle two
    assert percentile(reversed(values), 50) == pytest.approx(3.5)
    assert values == copy


def test_a_hundred_values_put_p99_between_the_two_largest() -> None:
    values = [float(i) for i in range(1, 101)]  # 1..100: h = 99 * 0.99 = 98.01
    assert percentile(values, 99) == pytest.approx(99.01)
    assert percentile(values, 50) == pytest.approx(50.5)


def test_agrees_with_the_standard_librarys_inclusive_quantiles_and_median() -> None:
    rng = random.Random(7)
    for n in (2, 3, 20, 300, 1001):
        values = [rng.lognormvariate(0, 1) for _ in range(n)]
        cuts = statistics.quantiles(values, n=100, method="inclusive")  # p1 .. p99
        for q in (1, 10, 50, 90, 99):
            assert percentile(values, q) == pytest.approx(cuts[q - 1], rel=1e-12)
        assert percentile(values, 50) == pytest.approx(statistics.median(values), rel=1e-12)


def test_one_sample_is_every_percentile() -> None:
    assert [percentile([7.5], q) for q in (0, 50, 99, 100)] == [7.5] * 4


def test_no_samples_or_a_failed_one_or_a_bad_q_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="p99 of no samples"):
        percentile([], 99)
    with pytest.raises(ValueError, match="1 of 3 samples are NaN"):
        percentile([1.0, float("nan"), 2.0], 50)
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        percentile([1.0], 101)
    with pytest.raises(ValueError, match=r"outside 0\.\.100"):
        percentile([1.0], -1)
