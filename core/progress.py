"""The progress line of ``reproduce`` and ``search``: ``[done/total] <what finished> · best ... · ~T left``.

Pure functions of numbers, so that the runner and the driver print the same thing and a test can
check them by hand:

* ``eta_seconds``: the time left from the durations of the finished runs, the number left and the
  slots running in parallel;
* ``best_so_far``: the best value of a single-objective study (the objective's direction decides),
  or the size of the Pareto front of a multi-objective one;
* ``progress_line``: the one line.

While work runs, ``LiveStatus`` shows how far each running piece is (``epoch_text``: ``epoch 3/10 ·
Final 45.20 · 2 min``): on a terminal one status line rewritten in place with a carriage return,
below the lines already printed; in a log file (not a TTY) one line per piece when its epoch
advances, at most one per piece every ``log_interval`` seconds, so a log grows by a line per epoch
at most.
"""
from __future__ import annotations

import math
import shutil
import statistics
import sys
import threading
import time
from typing import Callable, Sequence, TextIO

__all__ = [
    "format_duration", "eta_seconds", "pareto_front", "best_so_far", "progress_line", "epoch_text", "LiveStatus", "SEPARATOR",
]

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


def epoch_text(validated: int, epochs: int | None, value: str | None = None, seconds: float | None = None) -> str:
    """``epoch 3/10 · Final 45.20 · 2 min``: the epochs validated so far (of ``epochs`` when known),
    the last validation's value as the caller formats it (left out when there is none yet) and the
    time the work has run."""
    parts = [f"epoch {validated}/{epochs}" if epochs else f"epoch {validated}"]
    if value:
        parts.append(value)
    if seconds is not None:
        parts.append(format_duration(seconds))
    return SEPARATOR.join(parts)


class LiveStatus:
    """The state of the pieces of work running now, and the lines printed around it.

    Args:
        stream: where the status goes (default: ``sys.stdout`` when the status is made).
        prefix: put before every line (``"convlab reproduce: "``).
        tty: draw one status line in place (default: whether ``stream`` is a terminal).
        log_interval: without a terminal, the least seconds between two lines of the same piece.
        clock: seconds, for ``log_interval`` (a test's fake clock).
        width: the terminal's width (default: asked of the terminal); the status line is cut to it,
            since a wrapped line cannot be rewritten with a carriage return.

    ``update(key, step, text, line)`` sets a piece's state: ``text`` for the status line, ``line``
    (default ``text``) for a log, printed when ``step`` (its epochs validated) passed the last one
    printed. ``remove(key)`` when it ends; ``message(line)`` prints a line of its own (the status
    line is cleared first and drawn again below it); ``close()`` clears the status line. Safe to
    call from several threads.
    """

    def __init__(self, stream: TextIO | None = None, prefix: str = "", tty: bool | None = None, log_interval: float = 30.0,
                 clock: Callable[[], float] = time.monotonic, width: int | None = None) -> None:
        self.stream = stream if stream is not None else sys.stdout
        self.prefix = prefix
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.log_interval = log_interval
        self.clock = clock
        self.width = width
        self._texts: dict[str, str] = {}
        self._logged: dict[str, tuple[int, float]] = {}  # key -> (step, clock) of its last log line
        self._drawn = ""
        self._lock = threading.RLock()

    def update(self, key: str, step: int | None, text: str, line: str | None = None) -> None:
        with self._lock:
            self._texts[key] = text
            if self.tty:
                self._draw()
                return
            last_step, last_time = self._logged.get(key, (0, -math.inf))
            if step is not None and step > last_step and self.clock() - last_time >= self.log_interval:
                self._logged[key] = (step, self.clock())
                self._write(self.stream, self.prefix + (line if line is not None else text))

    def remove(self, key: str) -> None:
        with self._lock:
            self._texts.pop(key, None)
            self._logged.pop(key, None)
            if self.tty:
                self._draw()

    def message(self, line: str, stream: TextIO | None = None) -> None:
        """Print ``line`` (to ``stream``, default the status's), above the status line."""
        with self._lock:
            drawn = self._drawn
            self._clear()
            self._write(stream or self.stream, line)
            if drawn:
                self._draw()

    def close(self) -> None:
        with self._lock:
            self._texts.clear()
            self._clear()

    def _draw(self) -> None:
        line = self.prefix + " | ".join(self._texts.values()) if self._texts else ""
        width = self.width or shutil.get_terminal_size(fallback=(100, 24)).columns
        line = line[: max(1, width - 1)]
        if line == self._drawn:
            return
        # Spaces over what is left of a longer line; no escape codes, so any terminal shows it.
        self.stream.write("\r" + line + " " * max(0, len(self._drawn) - len(line)) + ("" if line else "\r"))
        self.stream.flush()
        self._drawn = line

    def _clear(self) -> None:
        if self.tty and self._drawn:
            self.stream.write("\r" + " " * len(self._drawn) + "\r")
            self.stream.flush()
            self._drawn = ""

    @staticmethod
    def _write(stream: TextIO, line: str) -> None:
        print(line, file=stream, flush=True)
