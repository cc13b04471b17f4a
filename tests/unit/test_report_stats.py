"""Confidence intervals and Welch's test (report/stats.py) against values worked out by hand."""

from __future__ import annotations

import math
import statistics

import pytest

from distinfer.report.stats import difference, estimate, t975


def test_confidence_interval_is_student_t_on_the_sample_spread() -> None:
    values = [10.0, 12.0, 11.0, 13.0]
    e = estimate(values)
    assert e is not None and e.n == 4 and e.mean == 11.5
    assert e.std == pytest.approx(statistics.stdev(values))
    # t(0.975, 3) = 3.182: 3.182 * 1.291 / 2
    assert e.half_width == pytest.approx(3.182 * statistics.stdev(values) / 2)
    assert e.text(1) == "11.5 ± 2.1"
    single = estimate([7.0])
    assert single is not None and single.half_width is None and single.text(1) == "7.0"
    assert t975(1) == 12.706 and t975(30) == 2.042 and t975(500) == 1.96 and math.isinf(t975(0))


def test_welch_says_which_differences_beat_the_noise() -> None:
    a = estimate([1.0, 2.0, 3.0, 4.0, 5.0])
    close = estimate([3.0, 4.0, 5.0, 6.0, 7.0])  # t = -2 with 8 degrees of freedom (limit 2.306)
    far = estimate([4.0, 5.0, 6.0, 7.0, 8.0])  # t = -3
    assert a and close and far
    near = difference(a, close)
    assert near.t == pytest.approx(-2.0) and near.df == pytest.approx(8.0) and near.beyond_noise == "no"
    assert difference(a, far).beyond_noise == "yes"
    assert difference(a, far).delta_percent == pytest.approx(-50.0)
    one, other = estimate([3.0]), estimate([30.0])
    assert one and other and difference(one, other).beyond_noise == "unknown"  # no repeats at all
    # one side repeated: its spread stands in for both (se = 1.58 * sqrt(1/5 + 1), 4 df)
    borrowed = difference(a, other)
    assert borrowed.df == 4 and borrowed.beyond_noise == "yes"
    assert borrowed.t == pytest.approx(
        (3.0 - 30.0) / (statistics.stdev([1, 2, 3, 4, 5]) * math.sqrt(1 / 5 + 1))
    )
