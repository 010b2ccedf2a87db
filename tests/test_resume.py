"""A run killed with SIGKILL and resumed with ``--ckpt_path last`` reports the numbers of the run that
never stopped: the same validation numbers every epoch (bit for bit on CPU: the data order and
augmentation are functions of (seed, epoch, sample), the training process's generators are in the
checkpoint), and a ``metrics.csv`` without the killed run's rows past its checkpoint."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from tests.search_fixtures import kill_all, processes_mentioning, wait_no_processes

REPO = Path(__file__).resolve().parents[1]
EPOCHS = 4
BATCHES_PER_EPOCH = 4  # pose_tiny: 32 training crops, batches of 8


def _config(tmp: Path, val_check_interval: int | None) -> Path:
    """pose_tiny with augmentation on, a DataLoader worker, and ``EPOCHS`` epochs."""
    override = {
        "trainer": {"max_epochs": EPOCHS},
        "data": {"init_args": {"num_workers": 1, "augmentation": {"class_path": "datamodules.pose.PoseAugmentation"}}},
        "run": {"root": str(tmp / "runs"), "wandb": "disabled"},
    }
    if val_check_interval is not None:
        # Validation, and so last.ckpt, after batch 3 of every epoch: every checkpoint is mid-epoch.
        override["trainer"]["val_check_interval"] = val_check_interval
    path = tmp / "resume.yaml"
    path.write_text(yaml.safe_dump(override, sort_keys=False))
    return path


def _fit(override: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments", "fit", "--config", "tests/configs/pose_tiny.yaml", "--config", str(override),
            "--run.name", name, *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as file:
        return [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(file)]


def _val_by_epoch(rows: list[dict[str, str]]) -> dict[int, dict[str, float]]:
    out: dict[int, dict[str, float]] = {}
    for row in rows:
        if "val/pckh" in row:
            epoch = int(row["epoch"])
            assert epoch not in out, f"two validation rows for epoch {epoch}"
            out[epoch] = {k: float(v) for k, v in row.items() if k.startswith("val/")}
    return out


def _checkpoint_epoch(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])
    except Exception:  # not there yet (or being replaced)
        return None


@pytest.mark.slow
@pytest.mark.parametrize("val_check_interval", [None, 3], ids=["epoch-end-checkpoints", "mid-epoch-checkpoints"])
def test_a_killed_and_resumed_run_has_the_numbers_of_an_uninterrupted_one(tmp_path, val_check_interval):
    override = _config(tmp_path, val_check_interval)
    runs = tmp_path / "runs"
    try:
        whole = subprocess.run(_fit(override, "whole"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
        assert whole.returncode == 0, whole.stderr[-3000:]

        log = open(tmp_path / "killed.log", "w")
        process = subprocess.Popen(_fit(override, "killed"), cwd=REPO, env=_env(), stdout=log, stderr=subprocess.STDOUT)
        last = runs / "killed" / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while process.poll() is None and time.monotonic() < deadline:
            epoch = _checkpoint_epoch(last) if last.exists() else None
            if epoch is not None and epoch >= 1:  # a checkpoint past epoch 0
                break
            time.sleep(0.05)
        assert process.poll() is None, f"the run ended before it could be killed:\n{(tmp_path / 'killed.log').read_text()[-3000:]}"
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=30) == -signal.SIGKILL
        log.close()
        # The DataLoader worker notices its parent is gone and exits.
        assert wait_no_processes(str(tmp_path), timeout=30) == []
        killed_at = _checkpoint_epoch(last)
        assert killed_at is not None and killed_at < EPOCHS - 1, "the kill must land before the last epoch"
        if val_check_interval is not None:
            step = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
            assert step % BATCHES_PER_EPOCH != 0, f"expected a mid-epoch checkpoint, got global step {step}"

        resumed = subprocess.run(_fit(override, "killed", "--ckpt_path", "last"), cwd=REPO, env=_env(), capture_output=True,
                                 text=True, timeout=300)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "not resumable" not in resumed.stderr  # Lightning knows this loader resumes mid-epoch
    finally:
        kill_all(str(tmp_path))

    expected, got = _rows(runs / "whole"), _rows(runs / "killed")
    # Every epoch's validation numbers, exactly.
    assert sorted(_val_by_epoch(expected)) == list(range(EPOCHS))
    assert _val_by_epoch(got) == _val_by_epoch(expected)
    # Every training step's loss, exactly: the resumed run trained on the same batches, bit for bit.
    steps = lambda rows: {int(r["step"]): float(r["train/loss_step"]) for r in rows if "train/loss_step" in r}  # noqa: E731
    assert steps(got) == steps(expected) and len(steps(expected)) == EPOCHS * BATCHES_PER_EPOCH
    # The killed run's rows past its checkpoint are gone: the same rows as the uninterrupted run's,
    # no (epoch, step) logged twice with the same metrics.
    shape = lambda rows: sorted((r.get("epoch", ""), int(r["step"]), tuple(sorted(r))) for r in rows)  # noqa: E731
    assert len(set(shape(got))) == len(shape(got))
    assert shape(got) == shape(expected)
    assert processes_mentioning(str(tmp_path)) == []
