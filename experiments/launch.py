"""Run one training command as its own process tree: the unit of work of ``search`` and ``reproduce``.

A run is ``python -m experiments fit --config <base> --config <override> ...`` in a fresh process
group, with the distributed-launch variables of the caller scrubbed from its environment (Lightning
writes ``MASTER_PORT``/``LOCAL_RANK`` into its own process's environment, and a child that inherits
them believes it was launched as a rank). On timeout or interruption the whole group is killed, so
no rank outlives its run.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["LaunchResult", "launch", "experiments_command", "clean_environment"]

DISTRIBUTED_VARIABLES = (
    "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "LOCAL_WORLD_SIZE",
    "GROUP_RANK", "ROLE_RANK", "TORCHELASTIC_RUN_ID", "PL_GLOBAL_SEED", "PL_TRAINER_GPUS", "CONVLAB_RUN_DIR",
)


@dataclass
class LaunchResult:
    """How a launched run ended: ``returncode`` (negative: killed by that signal), whether it hit
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
    """The caller's environment without distributed-launch variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in DISTRIBUTED_VARIABLES}
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def _kill_group(process: subprocess.Popen, grace: float = 5.0) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def launch(
    command: list[str],
    *,
    env: dict[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout: float | None = None,
    log_path: str | Path | None = None,
    on_start: Callable[[subprocess.Popen], None] | None = None,
) -> LaunchResult:
    """Run ``command`` in a new session and wait for it.

    Args:
        command: argv, e.g. from ``experiments_command``.
        env: environment (``clean_environment()`` when None).
        cwd: working directory.
        timeout: seconds; past it the process group gets SIGTERM, then SIGKILL.
        log_path: file receiving stdout and stderr (inherited from the caller when None).
        on_start: called with the started process (a caller that must stop runs from another
            thread, such as the search driver on Ctrl-C, keeps it to kill the group).
    """
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
        _kill_group(process)
    except BaseException:
        _kill_group(process)
        raise
    finally:
        if log:
            log.close()
    # Ranks that Lightning started are in the same group; make sure none is left behind.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return LaunchResult(process.returncode, timed_out, time.monotonic() - start, Path(log_path) if log_path else None)
