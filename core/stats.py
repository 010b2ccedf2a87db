"""Welch's two-sample t-test, the rule the paper tables judge a claim by.

A table cell is a mean over seeds; a claim of a paper compares two cells ("4 stacks above 2"). The
difference of two means is only evidence when it is large against the seed-to-seed spread, so a
claim is judged by Welch's t-test (unequal variances) on the two cells' per-seed values:

* p < ``alpha`` and the difference has the claimed sign: **holds**;
* p < ``alpha`` and the difference has the other sign: **contradicted**;
* otherwise (including cells with fewer than two seeds): **not resolved at this budget**.

The test itself is standard library only: the Student-t distribution comes from the regularised
incomplete beta function (Numerical Recipes' continued fraction), accurate to ~1e-10 here.

``seeds_to_resolve`` answers the question a "not resolved" raises: how many seeds a row would the
observed spread need? It takes the observed difference of the means and the two sample standard
deviations as the true ones and finds the smallest equal number of seeds per row at which the same
test (Welch, two-sided, p < ``alpha``) finds the difference, with its sign, with the given power
(80% by convention). The Welch statistic is then approximately noncentral t with the
Welch-Satterthwaite degrees of freedom and noncentrality ``difference / se`` (scipy's ``nct``); with
equal spreads this is the textbook two-sample power calculation (d = 1: 17 a group, d = 0.5: 64).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

__all__ = [
    "WelchResult", "welch", "student_t_sf2", "student_t_quantile", "verdict", "welch_power", "seeds_to_resolve",
    "RULE", "HOLDS", "CONTRADICTED", "NOT_RESOLVED", "ALPHA", "LEVEL", "FRAGILE_P", "POWER", "rule_text", "power_rule_text",
    "seeds_needed",
]

HOLDS = "holds"
CONTRADICTED = "contradicted"
NOT_RESOLVED = "not resolved"

RULE = (
    "Welch's two-sample t-test (unequal variances) on the per-seed values of the two cells, two-sided, "
    "at p < {alpha:g}: a claim **holds** when the difference is significant and has the claimed sign, is "
    "**contradicted** when it is significant with the other sign, and is **not resolved at this budget** "
    "otherwise (a difference inside the seed-to-seed noise, or fewer than 2 seeds in a cell). The interval is "
    "the {level:g}% confidence interval of the difference of the means (Welch-Satterthwaite degrees of freedom). "
    "A check of several comparisons holds when all of them hold and is contradicted when any one is."
)


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b), 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def student_t_sf2(t: float, df: float) -> float:
    """Two-sided tail probability P(|T| >= |t|) of Student's t with ``df`` degrees of freedom."""
    if math.isinf(t):
        return 0.0
    return _betainc(df / 2.0, 0.5, df / (df + t * t))


def student_t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (0.5 < q < 1) of Student's t with ``df`` degrees of freedom, by bisection."""
    if not 0.5 < q < 1.0:
        raise ValueError(f"q must be in (0.5, 1), got {q}")
    tail = 2.0 * (1.0 - q)
    low, high = 0.0, 1.0
    while student_t_sf2(high, df) > tail:
        high *= 2.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        if student_t_sf2(mid, df) > tail:
            low = mid
        else:
            high = mid
    return 0.5 * (low + high)


@dataclass(frozen=True)
class WelchResult:
    """``difference`` = mean(a) - mean(b), its ``low``/``high`` confidence bounds, the two-sided ``p``
    and the Welch-Satterthwaite ``df`` (``p`` and the bounds are None when a side has < 2 values)."""

    difference: float
    low: float | None
    high: float | None
    p: float | None
    df: float | None
    n: tuple[int, int]


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    return m, sum((v - m) ** 2 for v in values) / (len(values) - 1)


def welch(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> WelchResult:
    """Welch's t-test of mean(a) against mean(b), two-sided, and the ``level`` interval of the difference.

    Both sides with zero spread: p is 0 for different means and 1 for equal ones (the interval is the
    point itself).
    """
    if not a or not b:
        raise ValueError("welch needs at least one value on each side")
    difference = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return WelchResult(difference, None, None, None, None, (len(a), len(b)))
    (_, var_a), (_, var_b) = _mean_var(a), _mean_var(b)
    wa, wb = var_a / len(a), var_b / len(b)
    se2 = wa + wb
    if se2 == 0.0:
        return WelchResult(difference, difference, difference, 0.0 if difference != 0 else 1.0, math.inf, (len(a), len(b)))
    df = se2 * se2 / ((wa * wa / (len(a) - 1) if wa else 0.0) + (wb * wb / (len(b) - 1) if wb else 0.0))
    se = math.sqrt(se2)
    p = student_t_sf2(difference / se, df)
    half = student_t_quantile(0.5 + level / 2.0, df) * se
    return WelchResult(difference, difference - half, difference + half, p, df, (len(a), len(b)))


def verdict(result: WelchResult, op: str, alpha: float = 0.05) -> str:
    """The verdict on the claim ``a op b`` (op one of ``<``, ``<=``, ``>``, ``>=``) under the rule above."""
    if op not in ("<", "<=", ">", ">="):
        raise ValueError(f"unknown comparison {op!r}")
    if result.p is None:
        return NOT_RESOLVED
    if result.difference == 0.0 and result.df == math.inf:
        # Equal means and no spread on either side: a non-strict claim is true as stated.
        return HOLDS if op in ("<=", ">=") else NOT_RESOLVED
    if result.p >= alpha:
        return NOT_RESOLVED
    claimed_sign = -1.0 if op in ("<", "<=") else 1.0
    return HOLDS if math.copysign(1.0, result.difference) == claimed_sign else CONTRADICTED


def welch_power(difference: float, sd_a: float, sd_b: float, n: int, alpha: float = 0.05) -> float:
    """The probability that Welch's two-sided test at ``alpha``, on ``n`` values a side drawn with
    true means ``difference`` apart and true standard deviations ``sd_a`` and ``sd_b``, is
    significant with the sign of ``difference`` (the other tail, a significant result of the wrong
    sign, is not counted: it would not resolve the claim the right way).

    Noncentral t with the Welch-Satterthwaite degrees of freedom of the true variances at ``n`` and
    noncentrality ``|difference| / sqrt((sd_a^2 + sd_b^2) / n)``. 1 when both spreads are 0 and the
    difference is not (every draw is significant); 0 for a difference of 0.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    if difference == 0.0:
        return 0.0
    var_a, var_b = sd_a * sd_a, sd_b * sd_b
    if var_a + var_b == 0.0:
        return 1.0
    from scipy.stats import nct
    from scipy.stats import t as student_t

    se = math.sqrt((var_a + var_b) / n)
    df = (var_a + var_b) ** 2 * (n - 1) / (var_a * var_a + var_b * var_b)
    critical = float(student_t.isf(alpha / 2.0, df))
    return float(nct.sf(critical, df, abs(difference) / se))


def seeds_to_resolve(difference: float, sd_a: float, sd_b: float, alpha: float = 0.05, power: float = 0.8,
                     max_n: int = 100_000) -> int | None:
    """The smallest number of seeds per row (the same on both sides, at least 2) at which
    ``welch_power`` reaches ``power``: how many seeds the observed difference and spreads would need
    for Welch's two-sided test at ``alpha`` to find the difference, in its observed direction.

    None when no number does: the difference is 0, or more than ``max_n`` seeds would be needed.
    """
    if not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")
    if difference == 0.0:
        return None
    if welch_power(difference, sd_a, sd_b, max_n, alpha) < power:
        return None
    low, high = 1, 2  # welch_power grows with n: double, then bisect between low (too few) and high (enough)
    while welch_power(difference, sd_a, sd_b, high, alpha) < power:
        low, high = high, min(2 * high, max_n)
    while high - low > 1:
        middle = (low + high) // 2
        if welch_power(difference, sd_a, sd_b, middle, alpha) >= power:
            high = middle
        else:
            low = middle
    return high


ALPHA = 0.05
LEVEL = 95.0
FRAGILE_P = 0.01  # a resolved comparison with FRAGILE_P <= p < ALPHA gets the seeds-needed line too
POWER = 0.8

POWER_RULE = (
    "Seeds needed (under every comparison not resolved, and every one resolved with {low:g} <= p < {alpha:g}): the "
    "smallest number of seeds a row, the same in both rows, at which the same test (Welch, two-sided, p < {alpha:g}) "
    "would find the observed difference, with its sign, with {power:g}% power, taking the observed difference of "
    "the means and the two cells' sample standard deviations as the true ones (noncentral t with Welch-Satterthwaite "
    "degrees of freedom). Those are estimates from a few seeds themselves: read the number as an order of magnitude. "
    "A difference of 0, or one with the other sign, is resolved in the paper's direction by no number of seeds."
)


def rule_text() -> str:
    """The rule every verdict of a report is made by, in words."""
    return RULE.format(alpha=ALPHA, level=LEVEL)


def power_rule_text() -> str:
    """How the seeds-needed line under a comparison is computed, and when it is shown, in words."""
    return POWER_RULE.format(low=FRAGILE_P, alpha=ALPHA, power=100 * POWER)


def seeds_needed(test: WelchResult, op: str, outcome: str, sd_left: float | None, sd_right: float | None, digits: int,
                 under_trained: bool = False, claim: str = "the paper's direction") -> dict[str, Any] | None:
    """The seeds-needed entry of a comparison judged ``outcome``: ``{"per_row": n, "to_contradict": m,
    "text": ...}`` (``per_row``: seeds a row for ``POWER`` in the claimed direction, None when no number
    does; ``to_contradict``: the same for the other direction, when the observed difference has it),
    or None for a comparison that is resolved with p < ``FRAGILE_P``. ``claim`` names the direction
    the comparison's ``op`` claims, in the texts."""
    if outcome != NOT_RESOLVED and not (test.p is not None and FRAGILE_P <= test.p < ALPHA):
        return None
    entry: dict[str, Any] = {"per_row": None, "to_contradict": None}
    if under_trained:
        entry["text"] = "none would resolve it while a row is under the trained floor (more seeds do not train a network further)"
        return entry
    if test.p is None or sd_left is None or sd_right is None:
        entry["text"] = "unknown (a cell has fewer than 2 seeds: no spread to plan with)"
        return entry
    difference = test.difference
    if difference == 0.0:
        entry["text"] = f"no number of seeds resolves it in {claim} (the observed difference is 0)"
        return entry
    n = seeds_to_resolve(difference, sd_left, sd_right, alpha=ALPHA, power=POWER)
    count = "more than 100000" if n is None else str(n)
    claimed = -1.0 if op in ("<", "<=") else 1.0
    if (difference > 0) != (claimed > 0):
        entry["to_contradict"] = n
        entry["text"] = (f"no number of seeds resolves it in {claim} (the observed difference {difference:+.{digits}f} "
                         f"has the other sign; {count} a row would contradict it with {100 * POWER:g}% power)")
        return entry
    entry["per_row"] = n
    entry["text"] = (f"{count} a row for {100 * POWER:g}% power (Welch, two-sided p < {ALPHA:g}, taking the observed difference "
                     f"{difference:+.{digits}f} and SDs {sd_left:.{digits}f} and {sd_right:.{digits}f} as true; "
                     f"now {test.n[0]} and {test.n[1]})")
    return entry
