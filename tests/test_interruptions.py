"""Interruptions and the end of ``fit`` (docs/runs.md): Ctrl-C or SIGTERM saves a checkpoint to resume
from, also before the first epoch ends, and says how to resume; the resumed run has the numbers of
one that never stopped; ``--ckpt_path last`` with nothing to resume, and a name whose run saved no
checkpoint; the ``wandb sync`` line after a resume; the best checkpoint's metric table; the missing
pretraining file of the YOLO quick config; and third-party tips kept off stderr.

The signals are real: ``tests.fault_injection.SignalAt`` sends one to the training process at a
known step, or lets the test send it from outside."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from experiments.runs import RunSpec
from tests.run_fixtures import REPO, TASKS, experiments, read_metrics, wandb_runs

TINY = TASKS["pose"]  # 32 training crops in batches of 8: 4 steps per epoch, 2 epochs
# One training and one validation batch (an integer 1 would read as 1.0: all of them).
SHORT = ("--trainer.max_epochs", "1", "--trainer.limit_train_batches", "0.25", "--trainer.limit_val_batches", "0.5")


def _signal_config(tmp: Path, **init_args: object) -> str:
    path = tmp / f"signal-{len(list(tmp.glob('signal-*')))}.yaml"
    path.write_text(yaml.safe_dump({"run": {"callbacks": [{"class_path": "tests.fault_injection.SignalAt", "init_args": init_args}]}}))
    return str(path)


def _step(checkpoint: Path) -> tuple[int, int]:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    return int(state["epoch"]), int(state["global_step"])


def _rows(run: Path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if v != ""} for row in read_metrics(run)]


def _resume_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("convlab: stopped")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


@pytest.mark.slow
def test_sigterm_in_the_first_epoch_saves_a_checkpoint_and_the_resumed_run_is_bit_identical(tmp_path):
    whole = experiments("fit", "--config", TINY, "--run.name", "whole", root=tmp_path)
    assert whole.returncode == 0, whole.stderr[-3000:]
    stop = _signal_config(tmp_path, signum=int(signal.SIGTERM), at_step=1)
    stopped = experiments("fit", "--config", TINY, "--config", stop, "--run.name", "stopped", root=tmp_path)
    assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
    run = tmp_path / "stopped"
    # Lightning stops after the step that was running when the signal came: step 1 -> 2 steps done.
    assert _step(run / "checkpoints" / "last.ckpt") == (0, 2)
    assert not (run / "checkpoints" / "best.ckpt").exists()  # no validation yet
    line = _resume_line(stopped.stderr)
    assert f"checkpoint saved: {run / 'checkpoints' / 'last.ckpt'}" in line
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "experiments"] and command[-2:] == ["--ckpt_path", "last"]

    # The printed command, word for word (the signal's step is behind the resumed run).
    resumed = subprocess.run([sys.executable, *command[1:]], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "WANDB_SILENT": "true"})
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]  # no last-v1.ckpt
    expected, got = _rows(tmp_path / "whole"), _rows(run)
    validations = lambda rows: {r["epoch"]: r for r in rows if "val/pckh" in r}  # noqa: E731
    assert len(validations(expected)) == 2 and validations(got) == validations(expected)
    losses = lambda rows: {int(r["step"]): r["train/loss_step"] for r in rows if "train/loss_step" in r}  # noqa: E731
    assert len(losses(expected)) == 8 and losses(got) == losses(expected)
    shape = lambda rows: sorted((r.get("epoch", ""), int(r["step"]), tuple(sorted(r))) for r in rows)  # noqa: E731
    assert shape(got) == shape(expected)

    # The sync line names both halves of the run, oldest first.
    halves = wandb_runs(run)
    assert len(halves) == 2
    assert f"sync with: wandb sync {halves[0]} {halves[1]}" in resumed.stdout


@pytest.mark.slow
def test_ctrl_c_from_outside_saves_a_checkpoint_and_the_run_resumes_from_it(tmp_path):
    marker = tmp_path / "training"
    stop = _signal_config(tmp_path, at_step=1, marker=str(marker))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "CONVLAB_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments", "fit", "--config", TINY, "--config", stop, "--trainer.max_epochs", "1", "--run.name", "c",
         "--run.root", str(tmp_path)],
        cwd=REPO, env={**environment, "WANDB_SILENT": "true"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), process.communicate(timeout=60)[1][-3000:]
        os.kill(process.pid, signal.SIGINT)  # Ctrl-C while step 1 is running
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + signal.SIGINT, stderr[-3000:]
    assert "convlab: Ctrl-C: stopping after this training step" in stderr
    assert "Traceback" not in stderr and "Received SIGTERM" not in stderr
    run = tmp_path / "c"
    assert _step(run / "checkpoints" / "last.ckpt") == (0, 2)
    assert _resume_line(stderr).endswith("--run.name c --ckpt_path last")

    resumed = experiments("fit", "--config", TINY, "--trainer.max_epochs", "1", "--run.name", "c", "--ckpt_path", "last", root=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    steps = sorted(int(r["step"]) for r in _rows(run) if "train/loss_step" in r)
    assert steps == list(range(4))  # every step once: the resumed run went on from step 2
    # The end of fit: the best checkpoint's validation, as in metrics.csv.
    best = max((r for r in _rows(run) if "val/pckh" in r), key=lambda r: float(r["val/pckh"]))
    table = resumed.stdout[resumed.stdout.index("convlab: best checkpoint"):].splitlines()
    epoch, step = _step(run / "checkpoints" / "best.ckpt")
    assert str(epoch) == best["epoch"]
    assert table[0] == f"convlab: best checkpoint {run / 'checkpoints' / 'best.ckpt'} (epoch {epoch}, step {step})"
    shown = {line.split()[0]: line.split()[1] for line in table[1:] if line.startswith("  val/")}
    assert table[1].split()[0] == "val/pckh" and "monitored (max)" in table[1]
    assert shown == {k: f"{float(v):.4f}" for k, v in best.items() if k.startswith("val/") and not k.endswith("_best")}
    assert len(shown) > 5


def test_a_signal_before_the_first_step_says_there_is_nothing_to_resume(tmp_path):
    stop = _signal_config(tmp_path, signum=int(signal.SIGTERM), when="sanity")
    result = experiments("fit", "--config", TINY, "--config", stop, "--run.name", "early", root=tmp_path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    assert "convlab: stopped before the first training step: nothing to resume" in result.stderr
    assert not list((tmp_path / "early").glob("checkpoints/*.ckpt"))
    # ... and the name can be used again at once.
    again = experiments("fit", "--config", TINY, *SHORT, "--run.name", "early", root=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]


def test_ctrl_c_while_the_run_is_built_is_one_line(tmp_path):
    stop = _signal_config(tmp_path, signum=int(signal.SIGINT), when="build")
    result = experiments("fit", "--config", TINY, "--config", stop, "--run.name", "built", root=tmp_path, timeout=120)
    assert result.returncode == 128 + signal.SIGINT
    assert [line for line in result.stderr.splitlines() if line.strip()] == [
        "convlab: stopped (Ctrl-C) before the trainer started; nothing was saved"], result.stderr


def test_a_signal_during_validation_lets_the_validation_finish_before_stopping(tmp_path):
    # A validation stopped half way would leave half-computed metrics in the checkpoint's state.
    stop = _signal_config(tmp_path, signum=int(signal.SIGTERM), when="validation", at_step=1)
    result = experiments("fit", "--config", TINY, "--config", stop, "--run.name", "v", root=tmp_path)
    assert result.returncode == 128 + signal.SIGTERM, result.stderr[-3000:]
    run = tmp_path / "v"
    assert _step(run / "checkpoints" / "last.ckpt") == _step(run / "checkpoints" / "best.ckpt") == (0, 4)
    validations = [r for r in _rows(run) if "val/pckh" in r]
    assert len(validations) == 1 and "val/pckh_wrist" in validations[0]
    assert f"stopped at epoch 0, step 4; checkpoint saved: {run / 'checkpoints' / 'last.ckpt'}" in _resume_line(result.stderr)


def test_ckpt_path_last_with_nothing_to_resume_is_one_line(tmp_path):
    result = experiments("fit", "--config", TINY, "--run.name", "never", "--ckpt_path", "last", root=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [f"convlab: nothing to resume in {tmp_path / 'never'}: it holds no checkpoints/last.ckpt (no such run folder); "
                     "drop --ckpt_path last to start it afresh"]
    assert not (tmp_path / "never").exists()


def test_a_name_whose_run_saved_no_checkpoint_is_reused_and_its_files_kept(tmp_path):
    crashed = tmp_path / "crashed"
    (crashed / "wandb" / "offline-run-20260101_000000-crashed-x").mkdir(parents=True)
    (crashed / "checkpoints").mkdir()
    (crashed / "metrics.csv").write_text("epoch,step,train/loss_step\n0,0,1.0\n")
    (crashed / "wandb_id").write_text("crashed-x")
    (crashed / "notes.txt").write_text("mine")  # not a fit output: stays where it is
    result = experiments("fit", "--config", TINY, *SHORT, "--run.name", "crashed", root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    kept = crashed / "attempt-1"
    assert (f"convlab: {crashed} held a run that saved no checkpoint; its files are kept in {kept}, "
            f"this run starts afresh in {crashed}") in result.stderr
    assert sorted(p.name for p in kept.iterdir()) == ["checkpoints", "metrics.csv", "wandb", "wandb_id"]
    assert (crashed / "notes.txt").read_text() == "mine"
    losses = [(r["step"], r["train/loss_step"]) for r in read_metrics(crashed) if r.get("train/loss_step")]
    assert len(losses) == 1 and losses[0][1] != "1.0"  # a fresh metrics.csv, not the old one appended to
    assert (crashed / "wandb_id").read_text() != "crashed-x" and len(wandb_runs(crashed)) == 1
    assert (crashed / "checkpoints" / "last.ckpt").exists()
    # Third-party tips and deprecation notices are not printed (the run's own warnings still are).
    for noise in ("💡", "litlogger", "litmodels", "anonymous setting", "LeafSpec", "weights_only"):
        assert noise not in result.stderr, noise
    # Now it holds a checkpoint: the name is refused again.
    refused = experiments("fit", "--config", TINY, *SHORT, "--run.name", "crashed", root=tmp_path)
    assert refused.returncode == 2 and "already holds a run with checkpoints; resume it with --ckpt_path last" in refused.stderr


def test_the_yolo_quick_config_names_make_yolo_when_its_pretrained_backbone_is_missing(tmp_path):
    missing = tmp_path / "backbone.pt"
    result = experiments("fit", "--config", "experiments/configs/detection/yolo_v1_synthetic_quick.yaml",
                         "--model.init_args.network.init_args.backbone_weights", str(missing), root=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"not found: {missing}" in lines[0] and "`make yolo`" in lines[0], result.stderr


def test_resume_command_keeps_the_command_line_and_names_the_run(tmp_path):
    spec = RunSpec(root=str(tmp_path))
    spec.directory = tmp_path / "pose_tiny-2"
    argv = ["fit", "--config", "a.yaml", "--run.name=old", "--ckpt_path", "x.ckpt", "--trainer.max_epochs", "3", "--run.root", str(tmp_path)]
    assert spec.resume_command(argv) == shlex.join(["python", "-m", "experiments", "fit", "--config", "a.yaml", "--trainer.max_epochs", "3",
                                                    "--run.root", str(tmp_path), "--run.name", "pose_tiny-2", "--ckpt_path", "last"])
