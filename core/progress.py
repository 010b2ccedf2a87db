"""The progress line of ``reproduce`` and ``search``: ``[done/total] <what finished> · best ... · ~T left``.

Pure functions of numbers, so that the runner and the driver print the same thing and a test can
check them by hand:

* ``eta_seconds``: the time left from the durations of the finished runs, the number left and the
  slots running in parallel;
* ``best_so_far``: the best value of a single-objective study (the objective's direction decides),
  or the size of the Pareto front of a multi-objective one;
* ``progress_line``: the one line.
"""
from __future__ import annotations

import math
import statistics
from typing import Sequence

__all__ = ["format_duration", "eta_seconds", "pareto_front", "best_so_far", "progress_line", "SEPARATOR"]

SEPARATOR = " · "


def format_duration(seconds: float) -> str:
    """``41 s``, ``4 min``, ``2 h 05 min``: seconds below 90 s, whole minutes below 90 min."""
    seconds = max(0.0, float(seconds))
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def eta_seconds(durations: Sequence[float], remaining: int | None, slots: int = 1, deadline_left: float | None = None) -> float | None:
    """Seconds until the last of ``remaining`` runs ends, ``slots`` of them at a time, each taking
    the mean of ``durations`` (the finished runs): ``mean * remaining / min(slots, remaining)``.

    ``deadline_left`` (a driver's ``--timeout``: no run starts after it) caps the estimate, and is
    the estimate when the number left is unknown. ``None`` when nothing can be said (no finished run
    yet and no deadline); ``0`` when nothing is left.
    """
    estimate = None
    if remaining is not None:
        if remaining <= 0:
            return 0.0
        finite = [float(d) for d in durations if d is not None and math.isfinite(d) and d >= 0]
        if finite:
            estimate = statistics.fmean(finite) * remaining / max(1, min(int(slots), remaining))
    if deadline_left is not None:
        deadline_left = max(0.0, float(deadline_left))
        estimate = deadline_left if estimate is None else min(estimate, deadline_left)
    return estimate


def _dominates(a: Sequence[float], b: Sequence[float], signs: Sequence[int]) -> bool:
    """``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, s in zip(a, b, signs):
        if s * x < s * y:
            return False
        if s * x > s * y:
            better = True
    return better


def _signs(directions: Sequence[str]) -> list[int]:
    signs = []
    for d in directions:
        name = str(getattr(d, "name", d)).lower()
        if name not in ("maximize", "minimize"):
            raise ValueError(f"direction {d!r}: expected maximize or minimize")
        signs.append(1 if name == "maximize" else -1)
    return signs


def pareto_front(points: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str]) -> list[int]:
    """The numbers of the points no other point dominates (equal points are all kept, as Optuna's
    ``study.best_trials`` keeps them), in the order given."""
    signs = _signs(directions)
    return [n for n, v in points if not any(_dominates(w, v, signs) for _, w in points)]


def best_so_far(points: Sequence[tuple[int, Sequence[float]]], directions: Sequence[str], fmt: str = "{:.4g}") -> str | None:
    """``best 0.455 (trial 1)`` for one objective (the first trial to reach the best value wins a
    tie, as in Optuna), ``3 trials on the Pareto front`` for several; ``None`` before any point.

    ``points``: ``(trial number, values)`` of the complete trials.
    """
    points = [(int(n), [float(x) for x in v]) for n, v in points]
    if not points:
        return None
    signs = _signs(directions)
    if len(signs) == 1:
        number, values = min(points, key=lambda p: (-signs[0] * p[1][0], p[0]))
        return f"best {fmt.format(values[0])} (trial {number})"
    front = pareto_front(points, directions)
    return f"{len(front)} trial{'s' if len(front) != 1 else ''} on the Pareto front"


def progress_line(done: int, total: int | None, message: str, *, best: str | None = None, eta: float | None = None) -> str:
    """``[3/12] <message> · best 0.455 (trial 1) · ~4 min left`` (``[3]`` when the total is unknown;
    no ETA part when it is unknown or nothing is left)."""
    parts = [f"[{done}/{total}] {message}" if total is not None else f"[{done}] {message}"]
    if best:
        parts.append(best)
    if eta is not None and eta > 0 and (total is None or done < total):
        parts.append(f"~{format_duration(eta)} left")
    return SEPARATOR.join(parts)
