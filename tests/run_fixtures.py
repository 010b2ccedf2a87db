"""Running the front door from tests: the tiny config of every task (``TASKS``), ``python -m
experiments`` in a subprocess with a clean environment (``experiments``), and reading what a run
wrote (``read_metrics``, ``column``, ``wandb_runs``). Shared by ``test_cli.py``,
``test_task_contract.py`` and ``test_configs.py``.
"""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

__all__ = ["REPO", "TASKS", "experiments", "read_metrics", "column", "wandb_runs"]

REPO = Path(__file__).resolve().parents[1]

# One tiny config per task, small enough for a test; a new task adds its own.
TASKS = {
    "pose": "tests/configs/pose_tiny.yaml",
    "localization": "tests/configs/localization_tiny.yaml",
    "segmentation": "tests/configs/segmentation_tiny.yaml",
    "detection": "tests/configs/detection_tiny.yaml",
}


def experiments(*args: str, root: Path, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m experiments *args --run.root root`` from the repository, without the caller's
    W&B, convlab and distributed variables (``env`` adds some back); stdout and stderr as text."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "CONVLAB_", "MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    environment.update({"WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"})
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "experiments", *args, "--run.root", str(root)],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=timeout,
    )


def read_metrics(run_dir: Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv``."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], key: str) -> list[float]:
    """The values of ``key`` in the rows that logged it."""
    return [float(r[key]) for r in rows if r.get(key)]


def wandb_runs(run_dir: Path) -> list[Path]:
    """The offline W&B runs in a run directory."""
    return sorted((run_dir / "wandb").glob("offline-run-*"))
