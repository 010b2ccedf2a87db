"""Child processes: one runner for every command that trains several runs (``reproduce``, ``search``
and its re-training of the best trials).

``SlotPool`` runs work in N parallel *slots*. Each slot has its own GPUs (the visible ones, or the
given ones, dealt out in contiguous blocks) or, on a CPU, its share of the cores; each launched
child gets a fresh process group (so its DDP ranks and data-loader workers can be stopped as one)
and the distributed-launch variables of the caller scrubbed from its environment (Lightning writes
``MASTER_PORT``/``LOCAL_RANK`` into its own process's environment, and a child that inherits them
believes it was launched as a rank).

No orphan outlives its runner. A child carries ``CONVLAB_PARENT=<pid>:<start time>`` of the runner;
``watch_parent()``, started by ``python -m experiments`` in every process of the child's tree, kills
the child's process group within a second once that runner is gone, also when the runner was
killed with SIGKILL and could clean nothing up. Ctrl-C or SIGTERM of the runner stops the children
(SIGTERM, then SIGKILL after a grace period) before the runner exits.
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

__all__ = [
    "LaunchResult", "SlotPool", "launch", "experiments_command", "clean_environment", "kill_group",
    "process_alive", "process_start", "watch_parent", "cpu_cores", "PARENT_ENV", "CPU_CORES_ENV",
]

T = TypeVar("T")

# The runner a child belongs to ("<pid>:<start>"); the child's tree dies with it.
PARENT_ENV = "CONVLAB_PARENT"
# The CPU cores a slot may use; a training process splits them between its local ranks.
CPU_CORES_ENV = "CONVLAB_CPU_CORES"
DISTRIBUTED_VARIABLES = (
    "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "LOCAL_WORLD_SIZE",
    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", "PL_GLOBAL_SEED", "PL_TRAINER_GPUS", "CONVLAB_RUN_DIR",
)


# ------------------------------------------------------------------------------------- processes
def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (so a reused pid is not mistaken for
    it), or None where /proc is not available."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def process_alive(pid: int, start: str | None = None) -> bool:
    """Alive and not a zombie, and (when ``start`` is given) the same process that had that pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    return start is None or fields[19] == start


def kill_group(pgid: int, grace: float = 5.0) -> None:
    """SIGTERM to the process group, then SIGKILL to whatever is left after ``grace`` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return


def cpu_cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def watch_parent(interval: float = 0.5) -> threading.Thread | None:
    """In a runner's child (``CONVLAB_PARENT`` set): a daemon thread that kills this process group
    when the runner is gone. Started once per process; returns None outside a runner."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or getattr(watch_parent, "_started", False):
        return None
    pid_text, _, start = parent.partition(":")
    try:
        pid = int(pid_text)
    except ValueError:
        return None
    watch_parent._started = True  # type: ignore[attr-defined]

    def watch() -> None:
        while process_alive(pid, start or None):
            time.sleep(interval)
        print(f"convlab: the runner (pid {pid}) that started this process is gone; stopping (pid {os.getpid()})", file=sys.stderr, flush=True)
        try:
            os.killpg(os.getpgrp(), signal.SIGKILL)
        finally:
            os._exit(137)

    thread = threading.Thread(target=watch, daemon=True, name="convlab-parent-watch")
    thread.start()
    return thread


# --------------------------------------------------------------------------------------- launch
@dataclass
class LaunchResult:
    """How a launched child ended: ``returncode`` (negative: killed by that signal), whether it hit
    its timeout, its wall time in seconds, and where its output went."""

    returncode: int
    timed_out: bool
    seconds: float
    log_path: Path | None


def experiments_command(*args: str, torchrun_nproc: int | None = None) -> list[str]:
    """``python -m experiments <args>``, or the same under ``torchrun --standalone`` with N ranks."""
    if torchrun_nproc:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={torchrun_nproc}", "-m", "experiments", *args]
    return [sys.executable, "-m", "experiments", *args]


def clean_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without distributed-launch variables, with this process as the
    child's runner, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env[PARENT_ENV] = f"{os.getpid()}:{process_start(os.getpid()) or ''}"
    env.update(extra or {})
    return env


def launch(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    log_path: str | Path | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> LaunchResult:
    """Run ``command`` in a new process group and wait for it; on timeout or on an exception in the
    caller (Ctrl-C) the whole group is stopped. ``log_path`` receives stdout and stderr (inherited
    when None); ``on_start`` gets the started process."""
    log = open(log_path, "ab") if log_path else None
    start = time.monotonic()
    process = subprocess.Popen(
        command,
        env=env if env is not None else clean_environment(),
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT if log else None,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    if on_start is not None:
        on_start(process)
    timed_out = False
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(process.pid)
        process.wait()
    except BaseException:
        kill_group(process.pid)
        process.wait()
        raise
    finally:
        if log:
            log.close()
    # Ranks and workers the child started share its group; none may outlive it.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return LaunchResult(process.returncode, timed_out, time.monotonic() - start, Path(log_path) if log_path else None)


# ----------------------------------------------------------------------------------------- slots
class SlotPool:
    """N parallel slots of child processes.

    Args:
        slots: children at once.
        gpus: GPU indices dealt out to the slots in contiguous blocks (``None``: the visible GPUs,
            none on a CPU machine). A slot's children see only its GPUs (``CUDA_VISIBLE_DEVICES``).
        processes_per_slot: processes one child runs on its own (``torchrun`` ranks): the CPU
            share of a slot is split between them.

    ``run(work)`` calls ``work(slot)`` in one thread per slot; ``map(items, fn)`` calls
    ``fn(slot, item)`` for every item on the first free slot. A child is started with
    ``launch(slot, command, ...)``. Ctrl-C or SIGTERM sets ``stopping``, stops every running child
    and re-raises ``KeyboardInterrupt`` once the slot threads have returned.
    """

    def __init__(self, slots: int, gpus: Sequence[int | str] | None = None, processes_per_slot: int = 1, grace: float = 10.0) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        if gpus is None:
            gpus = _visible_gpus()
        gpus = [str(g) for g in gpus]
        if gpus and len(gpus) < slots:
            raise ValueError(f"{slots} slots need at least as many GPUs, {len(gpus)} given ({','.join(gpus)})")
        per = len(gpus) // slots if gpus else 0
        self.slots = slots
        self.slot_gpus: list[list[str]] | None = [gpus[i * per:(i + 1) * per] for i in range(slots)] if gpus else None
        self.processes_per_slot = max(1, processes_per_slot)
        self.grace = grace
        self.stopping = threading.Event()
        self._active = slots
        self._children: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()

    def describe(self, count: int | None = None) -> str:
        """How ``count`` pieces of work (default: one per slot) will run, e.g. "2 at a time, 1 CPU
        core(s) each" or "2 at a time, GPUs 0,1 | 2,3"."""
        active = max(1, min(self.slots, count or self.slots))
        if self.slot_gpus is not None:
            return f"{active} at a time, GPUs " + " | ".join(",".join(g) for g in self.slot_gpus[:active])
        return f"{active} at a time, {max(1, cpu_cores() // (active * self.processes_per_slot))} CPU core(s) each"

    def slot_env(self, slot: int) -> dict[str, str]:
        """The environment entries that give a child its slot's devices."""
        if self.slot_gpus is not None:
            return {"CUDA_VISIBLE_DEVICES": ",".join(self.slot_gpus[slot])}
        return {CPU_CORES_ENV: str(max(1, cpu_cores() // self._active))}

    def launch(self, slot: int, command: list[str], *, log_path: str | Path | None = None, timeout: float | None = None,
               extra_env: dict[str, str] | None = None, cwd: str | Path | None = None) -> LaunchResult:
        """Run one child on ``slot`` and wait for it (see ``launch``)."""
        env = clean_environment({**self.slot_env(slot), **(extra_env or {})})
        if self.stopping.is_set():
            return LaunchResult(returncode=-signal.SIGTERM, timed_out=False, seconds=0.0, log_path=Path(log_path) if log_path else None)

        def register(process: subprocess.Popen) -> None:
            with self._lock:
                self._children[process.pid] = process
            if self.stopping.is_set():  # stopped while it was starting
                kill_group(process.pid, self.grace)

        try:
            return launch(command, env=env, cwd=cwd, timeout=timeout, log_path=log_path, on_start=register)
        finally:
            with self._lock:
                self._children = {pid: p for pid, p in self._children.items() if p.poll() is None}

    def stop_children(self) -> None:
        with self._lock:
            pids = list(self._children)
        threads = [threading.Thread(target=kill_group, args=(pid, self.grace), daemon=True) for pid in pids]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def run(self, work: Callable[[int], None], slots: int | None = None) -> None:
        """``work(slot)`` in one thread per slot until every one returns. An exception in a slot is
        re-raised here after the others finished; Ctrl-C or SIGTERM stops everything."""
        self._active = max(1, min(self.slots, slots or self.slots))
        errors: list[BaseException] = []
        done = [threading.Event() for _ in range(self._active)]

        def body(slot: int) -> None:
            try:
                work(slot)
            except BaseException as error:  # re-raised in the calling thread
                errors.append(error)
                self.stopping.set()
                self.stop_children()
            finally:
                done[slot].set()

        threads = [threading.Thread(target=body, args=(i,), name=f"slot-{i}", daemon=True) for i in range(self._active)]
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
        try:
            for thread in threads:
                thread.start()
            # Polled events, not Thread.join: a join interrupted by Ctrl-C can mark a running thread
            # as finished (Python < 3.13).
            while not all(e.wait(0.2) for e in done):
                pass
        except KeyboardInterrupt:
            self.stopping.set()
            self.stop_children()
            deadline = time.monotonic() + 4 * self.grace
            while not all(e.is_set() for e in done) and time.monotonic() < deadline:
                time.sleep(0.1)
            raise
        finally:
            if main:
                signal.signal(signal.SIGTERM, previous)
        if errors:
            raise errors[0]

    def map(self, items: Iterable[T], fn: Callable[[int, T], None]) -> None:
        """``fn(slot, item)`` for every item, each on the first free slot."""
        pending: "queue.Queue[T]" = queue.Queue()
        count = 0
        for item in items:
            pending.put(item)
            count += 1
        if not count:
            return

        def work(slot: int) -> None:
            while not self.stopping.is_set():
                try:
                    item = pending.get_nowait()
                except queue.Empty:
                    return
                fn(slot, item)

        self.run(work, slots=count)


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g.strip() for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, or a broken driver: a CPU machine as far as the slots are concerned
        return []


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
