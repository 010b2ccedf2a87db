"""The table's checks: claims of the paper about orderings (``hg2x4.final < hg4x2.final``), judged
on our per-seed values by one stated rule (``core.stats``: Welch's t-test at p < 0.05).

Each comparison of a check gets both means, their difference, the 95% interval of the difference,
the p-value and a verdict: **holds**, **contradicted** or **not resolved** (at this budget). A check
holds when all its comparisons hold, is contradicted when any one is, and is not resolved otherwise.
A profile may set a trained floor (``trained: {column: final, min: 60}``): a comparison with a cell
of a row under it is not resolved whatever the test says, because an under-trained network tells
how fast it learns, not what it reaches.

Under a comparison that is not resolved, or resolved with p in the fragile band (``FRAGILE_P`` <= p
< ``ALPHA``), the report says how many seeds a row the observed spread would need
(``core.stats.seeds_to_resolve``: 80% power for the same test, the observed difference and standard
deviations taken as the true ones), or that no number of seeds resolves it in the paper's direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from core.stats import (
    ALPHA, CONTRADICTED, FRAGILE_P, HOLDS, LEVEL, NOT_RESOLVED, POWER, power_rule_text, rule_text, seeds_needed, verdict, welch,
)
from experiments.reproduce.collect import Collected

__all__ = ["ALPHA", "LEVEL", "FRAGILE_P", "POWER", "CheckResult", "evaluate_checks", "rule_text", "power_rule_text",
           "seeds_needed", "under_trained_rows"]

NOT_EVALUATED = "not evaluated"


@dataclass
class CheckResult:
    name: str
    status: str  # holds | contradicted | not resolved | not evaluated
    details: list[str]
    paper: str
    seeds_holding: tuple[int, int] = (0, 0)
    comparisons: list[dict[str, Any]] = field(default_factory=list)


def _combine(verdicts: list[str]) -> str:
    if not verdicts or all(v == NOT_EVALUATED for v in verdicts):
        return NOT_EVALUATED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return NOT_RESOLVED


def _under_trained(collected: Collected, row: str) -> str | None:
    """Why ``row`` is too little trained to be judged under the profile's floor, or None."""
    floor = collected.profile.trained
    if floor is None:
        return None
    cell = collected.cells.get((row, floor.column))
    if cell is None or cell.mean is None or cell.mean >= floor.min:
        return None
    digits = collected.spec.columns[floor.column].digits
    return f"{row} is under-trained ({floor.column} {cell.mean:.{digits}f} < {floor.min:g}, the profile's trained floor)"


def under_trained_rows(collected: Collected) -> dict[str, str]:
    """Every row of the profile under its trained floor, with the reason."""
    found = {row.name: _under_trained(collected, row.name) for row in collected.spec.rows_in(collected.profile.name)}
    return {row: text for row, text in found.items() if text}


def evaluate_checks(collected: Collected) -> list[CheckResult]:
    results = []
    profile = collected.profile.name
    for check in collected.spec.checks:
        if not check.applies(profile):
            continue
        details, verdicts, rows = [], [], []
        seed_ok, seed_total = 0, 0
        for comparison in check.comparisons:
            left = collected.cells.get((comparison.left.row, comparison.left.column))
            right = collected.cells.get((comparison.right.row, comparison.right.column))
            if left is None or right is None or not left.values or not right.values:
                verdicts.append(NOT_EVALUATED)
                details.append(f"{comparison}: not evaluated (no finished runs for a cell)")
                rows.append({"comparison": str(comparison), "verdict": NOT_EVALUATED})
                continue
            digits = collected.spec.columns[comparison.left.column].digits
            test = welch(left.values, right.values, level=LEVEL / 100.0)
            outcome = verdict(test, comparison.op, ALPHA)
            under = [text for text in (_under_trained(collected, comparison.left.row), _under_trained(collected, comparison.right.row)) if text]
            if under:
                outcome = NOT_RESOLVED  # an under-trained cell says "we did not train", not "the claim fails"
            verdicts.append(outcome)
            paired = [(a, b) for a, s in zip(left.values, left.seeds) for b, t in zip(right.values, right.seeds) if s == t]
            per_seed = sum(comparison.holds(a, b) for a, b in paired)
            seed_ok += per_seed
            seed_total += len(paired)
            if test.p is None:
                stats = f"no test: n = {test.n[0]} and {test.n[1]} seeds, at least 2 a side are needed"
            else:
                stats = (f"{LEVEL:g}% interval [{test.low:+.{digits}f}, {test.high:+.{digits}f}], "
                         f"p = {test.p:.3g}, n = {test.n[0]} and {test.n[1]}")
            details.append(
                f"{outcome}: {comparison.left} {left.mean:.{digits}f} {comparison.op} {comparison.right} {right.mean:.{digits}f}; "
                f"difference {test.difference:+.{digits}f} ({stats}; the claimed order in {per_seed}/{len(paired)} seed(s))"
                + "".join(f"; {text}" for text in dict.fromkeys(under))
            )
            rows.append({"comparison": str(comparison), "verdict": outcome, "left": left.mean, "right": right.mean,
                         "difference": test.difference, "low": test.low, "high": test.high, "p": test.p,
                         "df": test.df, "n": list(test.n),
                         "seeds_needed": seeds_needed(test, comparison.op, outcome, left.std, right.std, digits, bool(under))})
        status = _combine(verdicts)
        results.append(CheckResult(name=check.name, status=status, details=details, paper=check.paper,
                                   seeds_holding=(seed_ok, seed_total), comparisons=rows))
    return results
