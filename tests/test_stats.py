"""Welch's t-test and the verdict rule of the paper tables, against published table values."""
import math

import pytest

from core.stats import CONTRADICTED, HOLDS, NOT_RESOLVED, student_t_quantile, student_t_sf2, verdict, welch


@pytest.mark.parametrize("df, expected", [(1, 12.7062), (2, 4.3027), (4, 2.7764), (10, 2.2281), (30, 2.0423)])
def test_t_quantiles_match_the_printed_table(df, expected):
    assert student_t_quantile(0.975, df) == pytest.approx(expected, abs=1e-4)


def test_two_sided_tail_probabilities():
    assert student_t_sf2(0.0, 7) == pytest.approx(1.0)
    assert student_t_sf2(2.0, 5) == pytest.approx(0.10194, abs=1e-5)
    # Large df tends to the normal: P(|Z| >= 1.96) = 0.05.
    assert student_t_sf2(1.959964, 1e7) == pytest.approx(0.05, abs=1e-5)


def test_welch_on_a_hand_computed_case():
    # Means 2 and 5, both variances 1: se = sqrt(1/3 + 1/3), t = -3 / se = -3.674, df = 4.
    result = welch([1, 2, 3], [4, 5, 6])
    assert result.difference == -3.0
    assert result.df == pytest.approx(4.0)
    assert result.p == pytest.approx(0.021312, abs=1e-6)  # scipy.stats.ttest_ind(..., equal_var=False)
    half = 2.776445 * math.sqrt(2 / 3)
    assert (result.low, result.high) == pytest.approx((-3 - half, -3 + half), abs=1e-5)


def test_welch_with_unequal_variances_uses_satterthwaite_df():
    a, b = [10.0, 10.5, 11.0, 9.5], [8.0, 12.0, 6.0]
    var_a, var_b = sum((x - 10.25) ** 2 for x in a) / 3, sum((x - 26 / 3) ** 2 for x in b) / 2
    wa, wb = var_a / 4, var_b / 3
    assert welch(a, b).df == pytest.approx((wa + wb) ** 2 / (wa ** 2 / 3 + wb ** 2 / 2))


def test_verdicts():
    apart = welch([1, 2, 3], [4, 5, 6])  # significantly below
    assert verdict(apart, "<") == HOLDS and verdict(apart, "<=") == HOLDS
    assert verdict(apart, ">") == CONTRADICTED and verdict(apart, ">=") == CONTRADICTED
    noisy = welch([1, 5, 3], [2, 6, 4])  # one point apart, spread of two
    assert verdict(noisy, "<") == NOT_RESOLVED and verdict(noisy, ">") == NOT_RESOLVED
    single = welch([1.0], [9.0])  # one seed: no test, whatever the gap
    assert single.p is None and verdict(single, "<") == NOT_RESOLVED
    exact = welch([2.0, 2.0], [2.0, 2.0])  # shared runs: equal and without spread
    assert verdict(exact, ">=") == HOLDS and verdict(exact, ">") == NOT_RESOLVED
    constant = welch([1.0, 1.0], [2.0, 2.0])
    assert constant.p == 0.0 and verdict(constant, "<") == HOLDS
    with pytest.raises(ValueError):
        verdict(apart, "==")
