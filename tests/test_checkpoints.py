"""Checkpoints: written atomically (a failed write leaves the previous file whole), loaded with
``weights_only=True`` (a crafted pickle is refused with one line, and its code never runs)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.errors import CheckpointError
from experiments.checkpoint_io import SafeCheckpointIO

REPO = Path(__file__).resolve().parents[1]


class _Payload:
    """Unpickling this runs ``os.system``: what a crafted checkpoint would do to a plain ``torch.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 0, "surprise": _Payload(marker)}, path)
    return path


def test_a_crafted_pickle_is_refused_and_never_run(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} refused: it holds pickled objects that are not weights"):
        SafeCheckpointIO().load_checkpoint(path)
    assert not marker.exists()
    # The same file through plain pickle-loading would have run it: the test's payload is real.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_truncated_or_missing_checkpoint_is_one_clear_error(tmp_path):
    io = SafeCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 2}, tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        io.load_checkpoint(tmp_path / "cut.ckpt")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        io.load_checkpoint(tmp_path / "nope.ckpt")
    assert io.load_checkpoint(tmp_path / "good.ckpt")["epoch"] == 2


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tmp_path, monkeypatch):
    io = SafeCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, path)
    before = path.read_bytes()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed during the write")

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, path)
    assert path.read_bytes() == before
    assert io.load_checkpoint(path)["epoch"] == 1


def test_validate_with_a_crafted_checkpoint_fails_with_one_line(tmp_path):
    marker = tmp_path / "pwned"
    path = _malicious_checkpoint(tmp_path / "evil.ckpt", marker)
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "validate", "--config", "tests/configs/localization_tiny.yaml", "--ckpt_path", str(path),
         "--run.root", str(tmp_path / "runs"), "--run.wandb", "disabled"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(f"convlab: checkpoint {path} refused"), lines
    assert "Traceback" not in result.stderr
    assert not marker.exists()
