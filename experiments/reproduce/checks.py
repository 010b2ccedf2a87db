"""The table's checks: orderings the paper reports, evaluated on our means over seeds.

A check is a list of comparisons between cells (``hg2x4.final < hg4x2.final``); each comparison is
evaluated on the cells' means, and also seed by seed where both cells have the same seeds (how many
seeds agree), with the seed-to-seed spread of the difference beside it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from experiments.reproduce.collect import Collected

__all__ = ["CheckResult", "evaluate_checks"]


@dataclass
class CheckResult:
    name: str
    status: str  # holds | fails | not evaluated
    details: list[str]
    paper: str
    seeds_holding: tuple[int, int] = (0, 0)


def evaluate_checks(collected: Collected) -> list[CheckResult]:
    results = []
    profile = collected.profile.name
    for check in collected.spec.checks:
        if not check.applies(profile):
            continue
        details, holds_all, missing = [], True, False
        seed_ok, seed_total = 0, 0
        for comparison in check.comparisons:
            left = collected.cells.get((comparison.left.row, comparison.left.column))
            right = collected.cells.get((comparison.right.row, comparison.right.column))
            if left is None or right is None or left.mean is None or right.mean is None:
                missing = True
                details.append(f"{comparison}: not evaluated (no finished runs for a cell)")
                continue
            holds = comparison.holds(left.mean, right.mean)
            holds_all &= holds
            digits = collected.spec.columns[comparison.left.column].digits
            paired = [(a, b) for a, s in zip(left.values, left.seeds) for b, t in zip(right.values, right.seeds) if s == t]
            per_seed = sum(comparison.holds(a, b) for a, b in paired)
            seed_ok += per_seed
            seed_total += len(paired)
            diffs = [a - b for a, b in paired]
            noise = ""
            if len(diffs) >= 2:
                mean_d = sum(diffs) / len(diffs)
                sd = math.sqrt(sum((d - mean_d) ** 2 for d in diffs) / (len(diffs) - 1))
                noise = f", seed-to-seed std of the difference {sd:.{digits}f}"
            details.append(
                f"{'holds' if holds else 'does not hold'}: {comparison.left} {left.mean:.{digits}f} {comparison.op} "
                f"{comparison.right} {right.mean:.{digits}f} (difference {left.mean - right.mean:+.{digits}f}; "
                f"holds in {per_seed}/{len(paired)} seed(s){noise})"
            )
        status = "not evaluated" if missing and not any(d.startswith(("holds", "does not hold")) for d in details) else (
            "holds" if holds_all and not missing else "fails" if not holds_all else "partly evaluated")
        results.append(CheckResult(name=check.name, status=status, details=details, paper=check.paper, seeds_holding=(seed_ok, seed_total)))
    return results

