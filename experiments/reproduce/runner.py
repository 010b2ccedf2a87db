"""Train a plan's runs on the slots of ``core.processes.SlotPool``, the one runner of the suite.

Each run is an ordinary ``python -m experiments fit --config <base>... --config <override>
[--ckpt_path last]`` (the latter when it has a checkpoint) in its own process group, on a slot's
GPUs or its share of the CPU cores. A finished run (``result.json``) is never trained again; an interrupted one resumes from its
``checkpoints/last.ckpt``. ``table_run.json`` records every attempt from its start, so an attempt
whose runner died is closed as ``interrupted`` by the next one. A runner killed with SIGKILL leaves
no training process behind: its children stop themselves (``core.processes.watch_parent``).

While runs train, a thread polls each running run's ``metrics.csv`` and shows its epochs validated
and its last validation of the table's first column (or the run's monitor) with
``core.progress.LiveStatus``: one line rewritten in place on a terminal, one line per run per epoch
at most in a log file.
"""
from __future__ import annotations

import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from core.io import read_json, write_atomic, write_json_atomic
from core.locks import FileLock
from core.processes import SlotPool, experiments_command
from core.progress import LiveStatus, epoch_text, eta_seconds, progress_line
from experiments.recipe import get_dotted
from experiments.reproduce.collect import read_validation
from experiments.reproduce.plan import LOG_FILE, RESULT_FILE, STATE_FILE, Plan, PlannedRun
from experiments.reproduce.spec import TableSpecError

__all__ = ["Reproducer", "TableLock", "UserError", "say", "iso_time", "PREFIX"]

PREFIX = "convlab reproduce: "


def say(message: str, stream: Any = None) -> None:
    print(f"{PREFIX}{message}", file=stream or sys.stdout, flush=True)


def iso_time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


class UserError(Exception):
    """Something the user can fix (missing data, a stale run, a foreign directory): one line, exit 2."""


class Reproducer:
    """Runs a plan: finished runs are reused, the others launched ``slots`` at a time.

    Args:
        plan: the composed plan (its ``measured`` parameter counts go into each ``result.json``).
        slots: runs at once.
        timeout: seconds per run attempt before its process group is stopped.
        gpus: GPU indices dealt out to the slots (``None``: the visible ones; none on a CPU).
        status: how the running runs are shown (default: a ``LiveStatus`` on stdout).
        poll: seconds between two looks at the running runs' ``metrics.csv``.
    """

    def __init__(self, plan: Plan, slots: int = 1, timeout: float | None = None, gpus: list[str] | None = None,
                 status: LiveStatus | None = None, poll: float = 2.0) -> None:
        self.plan = plan
        self.status = status or LiveStatus(sys.stdout, prefix=PREFIX)
        self.poll = poll
        self._running: dict[str, tuple[PlannedRun, float]] = {}  # run name -> (run, started)
        self._seen: dict[Path, tuple[tuple[int, int, int], dict[int, dict[str, float]]]] = {}
        try:
            self.pool = SlotPool(max(1, slots), gpus=gpus)
        except ValueError as error:
            raise TableSpecError(f"--slots/--gpus: {error}") from None
        self.timeout = timeout
        self.failures: list[tuple[PlannedRun, str]] = []
        self.trained = 0
        self.durations: list[float] = []  # seconds of the runs this execution finished
        self._todo = 0
        self._lock = threading.Lock()

    def execute(self) -> bool:
        """Train every unfinished run; True when all of them finished. Ctrl-C or SIGTERM stops the
        running children and raises ``KeyboardInterrupt``."""
        todo = [r for r in self.plan.runs if r.status != "finished"]
        for run in self.plan.runs:
            if run.status == "finished":
                self._say(f"reused   {run.name} (finished)")
        if not todo:
            return True
        self._todo = len(todo)
        self._say(f"{len(todo)} run(s) to train, {self.pool.describe(len(todo))}")
        stop = threading.Event()
        watcher = threading.Thread(target=self._watch, args=(stop,), name="reproduce-progress", daemon=True)
        watcher.start()
        try:
            self.pool.map(todo, self._train)
        finally:
            stop.set()
            watcher.join()
            self.status.close()
        return not self.failures

    def _say(self, message: str, stream: Any = None) -> None:
        """``say`` through the status display, so a status line drawn in place stays below."""
        self.status.message(f"{PREFIX}{message}", stream)

    def _watch(self, stop: threading.Event) -> None:
        """Until ``stop``: every ``poll`` seconds, show each running run's progress."""
        warned: set[str] = set()
        while not stop.wait(self.poll):
            with self._lock:
                running = list(self._running.values())
            for run, started in running:
                try:
                    self.show(run, started)
                except Exception as error:  # a display problem must never stop the training, nor flood the log
                    if run.name not in warned:
                        warned.add(run.name)
                        self._say(f"warning: cannot show the progress of {run.name}: {error}", sys.stderr)

    def show(self, run: PlannedRun, started: float) -> None:
        """Show ``run``'s epochs validated and its last validation of the watched metric (its
        ``metrics.csv`` is read again only when it changed)."""
        path = run.directory / "metrics.csv"
        try:
            stat = path.stat()
            signature = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        except OSError:
            signature = (0, 0, 0)
        cached = self._seen.get(path)
        epochs = cached[1] if cached and cached[0] == signature else read_validation(path)
        self._seen[path] = (signature, epochs)
        label, metric, scale, digits = self._watched(run)
        validated = max(epochs) + 1 if epochs else 0
        value = epochs[max(epochs)].get(metric) if epochs and metric else None
        shown = None if value is None else f"{label} {value * scale:.{digits}f}"
        total = get_dotted(self.plan.composed.get(run.config_hash), "trainer.max_epochs")
        total = total if isinstance(total, int) and total > 0 else None
        text = epoch_text(validated, total, shown, time.time() - started)
        self.status.update(run.name, validated, f"{run.key}/seed{run.seed} {text}", f"running  {run.name} {text}")

    def _watched(self, run: PlannedRun) -> tuple[str, str | None, float, int]:
        """``(label, metric, scale, digits)`` shown for ``run``: the table's first column for the
        run's row, else the table's ``select`` or the run's monitor (unscaled), else none."""
        spec = self.plan.spec
        column = next(iter(spec.columns.values()), None)
        try:
            metric = column.metric_for(spec.rows[run.key]) if column is not None else None
        except TableSpecError:  # a derived var of an uncomposed plan
            metric = None
        if metric is not None:
            return column.label or column.name, metric, column.scale, column.digits
        monitor = spec.select or get_dotted(self.plan.composed.get(run.config_hash), "run.monitor")
        return (monitor, monitor, 1.0, 4) if monitor else ("", None, 1.0, 0)

    def _train(self, slot: int, run: PlannedRun) -> None:
        directory = run.directory
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(run.override_path, run.header() + yaml.safe_dump(run.override(), sort_keys=False))
        state = read_json(directory / STATE_FILE) or {}
        attempts = list(state.get("attempts", []))
        if attempts and attempts[-1].get("returncode") is None:  # its runner died: close the record
            last = attempts[-1]
            ended = max((p.stat().st_mtime for p in directory.rglob("*") if p.is_file()), default=time.time())
            last.update({"returncode": "interrupted", "seconds": round(max(0.0, ended - last.get("started_epoch", ended)), 1)})
        resumed = run.resumable
        command = experiments_command(*run.command_args())
        started = time.time()
        attempts.append({"started": iso_time(started), "started_epoch": started, "resumed": resumed, "slot": slot,
                         "returncode": None, "seconds": None})
        state.update({
            "table": run.table, "profile": run.profile, "rows": run.rows, "seed": run.seed, "config_hash": run.config_hash,
            "override": str(run.override_path), "command": command, "attempts": attempts,
        })
        write_json_atomic(directory / STATE_FILE, state)
        self._say(f"{'resume  ' if resumed else 'train   '} {run.name}" + (" from last.ckpt" if resumed else ""))
        with self._lock:
            self._running[run.name] = (run, started)
        try:
            result = self.pool.launch(slot, command, log_path=directory / LOG_FILE, timeout=self.timeout,
                                      extra_env={"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"})
        finally:
            with self._lock:
                self._running.pop(run.name, None)
            self.status.remove(run.name)
        attempts[-1].update({"seconds": round(result.seconds, 1), "returncode": result.returncode, "timed_out": result.timed_out})
        if self.pool.stopping.is_set() and result.returncode != 0:
            attempts[-1]["returncode"] = "interrupted"
        write_json_atomic(directory / STATE_FILE, state)
        if self.pool.stopping.is_set():
            return
        epochs = read_validation(directory / "metrics.csv")
        if result.returncode == 0 and epochs:
            measured = self.plan.measured.get(run.config_hash)
            write_json_atomic(directory / RESULT_FILE, {
                "table": run.table, "profile": run.profile, "rows": run.rows, "seed": run.seed, "config_hash": run.config_hash,
                "returncode": 0, "epochs": max(epochs) + 1, "seconds": round(sum(a["seconds"] or 0 for a in attempts), 1),
                "attempts": len(attempts), "params": measured.params if measured else None, "finished_at": iso_time(time.time()),
            })
            run.status = "finished"
            with self._lock:
                self.trained += 1
                self.durations.append(result.seconds)
                epochs_done = max(epochs) + 1
                line = self._progress(f"finished {run.name} in {result.seconds:.0f}s ({epochs_done} epochs validated)")
            self._say(line)
            return
        reason = "timed out" if result.timed_out else f"exit status {result.returncode}" if result.returncode else "no validation in metrics.csv"
        with self._lock:
            self.failures.append((run, reason))
            line = self._progress(f"FAILED   {run.name}: {reason}; log {directory / LOG_FILE}")
        self._say(f"{line}\n{_tail(directory / LOG_FILE)}", sys.stderr)

    def _progress(self, message: str) -> str:
        """``[done/runs] <message> · ~T left`` (``core.progress``): the plan's runs, the reused ones
        counted done; the time left is the mean duration of the runs finished so far times the runs
        left, over the slots. Call under ``self._lock``."""
        ended = self.trained + len(self.failures)
        total = len(self.plan.runs)
        done = total - self._todo + ended
        return progress_line(done, total, message, eta=eta_seconds(self.durations, self._todo - ended, self.pool.slots))


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in [t for t in text if t.strip()][-lines:])


class TableLock:
    """One ``reproduce`` per table and profile at a time: ``core.locks.FileLock`` on a file in the
    profile's folder, released by the OS when the process dies however it dies."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".reproduce.lock"
        self._lock = FileLock(self.path)

    def __enter__(self) -> "TableLock":
        if not self._lock.acquire(blocking=False):
            holder = self._lock.holder()
            raise UserError(f"another reproduce of this table is running ({holder or 'unknown pid'}); wait for it or stop it")
        return self

    def __exit__(self, *exc: Any) -> None:
        self._lock.release()
