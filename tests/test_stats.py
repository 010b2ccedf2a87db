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


# ------------------------------------------------------------------------- seeds to resolve a claim
@pytest.mark.parametrize("d, n", [(0.5, 64), (0.8, 26), (1.0, 17)])
def test_seeds_for_80_percent_power_match_the_textbook(d, n):
    # Cohen (1988), Table 2.4.1: the two-sample t-test, two-sided alpha 0.05, power 0.80, n per group.
    # With equal spreads Welch's degrees of freedom are the pooled test's, 2n - 2.
    from core.stats import seeds_to_resolve, welch_power

    assert seeds_to_resolve(d, 1.0, 1.0) == n
    assert seeds_to_resolve(-d, 1.0, 1.0) == n  # the direction is the observed one
    assert seeds_to_resolve(10 * d, 10.0, 10.0) == n  # only d = difference / SD matters
    assert welch_power(d, 1.0, 1.0, n) >= 0.8 > welch_power(d, 1.0, 1.0, n - 1)


def test_power_at_d_1_with_17_a_group():
    from core.stats import welch_power

    assert welch_power(1.0, 1.0, 1.0, 17) == pytest.approx(0.8070, abs=5e-4)  # G*Power 3.1: 0.8070367
    # The normal approximation n = 2 (z_.975 + z_.8)^2 / d^2 = 15.7 is the large-sample limit: at
    # d = 0.1 the t-test needs 1571 a group against 1570 by the formula.
    from core.stats import seeds_to_resolve

    assert seeds_to_resolve(0.1, 1.0, 1.0) in (1571, 1572)


def test_welch_power_with_unequal_spreads_agrees_with_simulation():
    # 20000 simulated experiments of n = 6 a side, SDs 1 and 3, means 2.5 apart: the share in which
    # Welch's test is significant with the right sign is the computed power (to the simulation's
    # standard error, about 0.0035).
    import numpy as np
    from scipy.stats import ttest_ind

    from core.stats import seeds_to_resolve, welch_power

    rng = np.random.default_rng(0)
    a = rng.normal(2.5, 1.0, size=(20000, 6))
    b = rng.normal(0.0, 3.0, size=(20000, 6))
    result = ttest_ind(a, b, axis=1, equal_var=False)
    simulated = float(np.mean((result.pvalue < 0.05) & (result.statistic > 0)))
    assert welch_power(2.5, 1.0, 3.0, 6) == pytest.approx(simulated, abs=0.015)
    n = seeds_to_resolve(2.5, 1.0, 3.0)
    assert welch_power(2.5, 1.0, 3.0, n) >= 0.8 > welch_power(2.5, 1.0, 3.0, n - 1)


def test_seeds_to_resolve_edge_cases():
    from core.stats import seeds_to_resolve, welch_power

    assert seeds_to_resolve(0.0, 1.0, 2.0) is None and welch_power(0.0, 1.0, 1.0, 10) == 0.0  # no difference
    assert seeds_to_resolve(1.0, 0.0, 0.0) == 2  # no spread: two seeds a side are significant
    assert seeds_to_resolve(1e-6, 1.0, 1.0) is None  # beyond any budget
    assert seeds_to_resolve(1.0, 0.0, 1.0) == seeds_to_resolve(1.0, 1.0, 0.0)  # which side is noisy does not matter
    with pytest.raises(ValueError):
        welch_power(1.0, 1.0, 1.0, 1)
    with pytest.raises(ValueError):
        seeds_to_resolve(1.0, 1.0, 1.0, power=1.0)
