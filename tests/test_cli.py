"""The front door end to end: ``python -m experiments fit|validate|test|predict`` on tiny pose runs,
resume, bf16 on CPU, and configuration errors as one line naming the config key (the DDP fit of
every task is ``test_task_contract.py``'s)."""
from __future__ import annotations

import json
import math

import torch

from tests.run_fixtures import TASKS, column, experiments, read_metrics, wandb_runs

TINY = TASKS["pose"]


def test_fit_writes_the_run_layout(tmp_path):
    result = experiments("fit", "--config", TINY, "--run.name", "tiny", root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "tiny"
    assert (run / "config.yaml").exists()
    assert (run / "checkpoints" / "last.ckpt").exists()
    assert (run / "checkpoints" / "best.ckpt").exists()
    rows = read_metrics(run)
    for key in ("val/pckh", "val/pckh_stack1", "val/pckh_stack2", "val/pckh_limbs_stack1", "val/pckh_best", "val/pckh_wrist", "val/loss", "train/loss_step"):
        values = column(rows, key)
        assert values and all(math.isfinite(v) for v in values), key
    assert len(column(rows, "val/pckh")) == 2  # one per epoch
    assert len(wandb_runs(run)) == 1
    assert f"convlab: fit -> {run}" in result.stdout
    assert "sync with: wandb sync" in result.stdout
    # Prediction images went to W&B (media files in the offline run).
    assert list(wandb_runs(run)[0].rglob("*.png"))


def test_resume_from_last_checkpoint_continues_the_run(tmp_path):
    first = experiments("fit", "--config", TINY, "--run.name", "r", "--trainer.max_epochs", "1", root=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "r"
    wandb_id = (run / "wandb_id").read_text()
    step_1 = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"]
    second = experiments("fit", "--config", TINY, "--run.name", "r", "--trainer.max_epochs", "3", "--ckpt_path", "last", root=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    rows = read_metrics(run)
    epochs = sorted({int(float(r["epoch"])) for r in rows if r.get("val/pckh")})
    assert epochs == [0, 1, 2]  # the CSV was appended, not restarted
    # Training continued where it stopped: every optimiser step once, none repeated or skipped.
    steps = [int(float(r["step"])) for r in rows if r.get("train/loss_step")]
    assert steps == list(range(3 * step_1))
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] > step_1
    assert (run / "wandb_id").read_text() == wandb_id  # same W&B run id, resumed
    runs = wandb_runs(run)
    assert runs and all(wandb_id in p.name for p in runs)


def test_fresh_fit_never_overwrites_a_run(tmp_path):
    args = ("fit", "--config", TINY, "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1")
    assert experiments(*args, root=tmp_path).returncode == 0
    assert experiments(*args, root=tmp_path).returncode == 0
    assert (tmp_path / "pose_tiny" / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "pose_tiny-2" / "checkpoints" / "last.ckpt").exists()
    named = experiments(*args, "--run.name", "pose_tiny", root=tmp_path)
    assert named.returncode == 2
    assert named.stderr.strip().count("\n") == 0 and "already holds a run" in named.stderr


def test_bf16_mixed_on_cpu(tmp_path):
    # Forced "native": the run keeps bf16 whatever this CPU is (core.precision).
    result = experiments("fit", "--config", TINY, "--run.name", "bf16", "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1",
                         root=tmp_path, env={"CONVLAB_CPU_BF16": "native"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "precision: bf16-mixed" in (tmp_path / "bf16" / "config.yaml").read_text()
    assert "  precision  bf16-mixed\n" in result.stdout
    losses = column(read_metrics(tmp_path / "bf16"), "train/loss_step")
    assert losses and all(math.isfinite(v) for v in losses)


def test_bf16_on_a_cpu_without_native_bf16_trains_in_fp32_and_says_so(tmp_path):
    result = experiments("fit", "--config", TINY, "--run.name", "fp32", "--trainer.precision", "bf16-mixed", "--trainer.max_epochs", "1",
                         root=tmp_path, env={"CONVLAB_CPU_BF16": "none"})
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if "precision" in line]
    assert lines == ["  precision  32-true (the config asks bf16-mixed; this CPU has no native bf16: CONVLAB_CPU_BF16=none)"], result.stdout
    # The weights stay fp32 and bf16 autocast never ran: the same run in 32-true gives the same loss.
    same = experiments("fit", "--config", TINY, "--run.name", "fp32b", "--trainer.precision", "32-true", "--trainer.max_epochs", "1", root=tmp_path)
    assert same.returncode == 0, same.stderr[-3000:]
    assert column(read_metrics(tmp_path / "fp32"), "train/loss_step") == column(read_metrics(tmp_path / "fp32b"), "train/loss_step")


def test_validate_test_predict_from_a_checkpoint(tmp_path):
    assert experiments("fit", "--config", TINY, "--run.name", "p", "--trainer.max_epochs", "1", root=tmp_path).returncode == 0
    ckpt = str(tmp_path / "p" / "checkpoints" / "best.ckpt")
    for command in ("validate", "test", "predict"):
        result = experiments(command, "--config", TINY, "--ckpt_path", ckpt, root=tmp_path)
        assert result.returncode == 0, (command, result.stderr[-3000:])
    assert column(read_metrics(tmp_path / "pose_tiny-validate"), "val/pckh")
    assert column(read_metrics(tmp_path / "pose_tiny-test"), "test/pckh_stack2")
    predictions = json.loads((tmp_path / "pose_tiny-predict" / "predictions.json").read_text())
    # COCO keypoint results: [x1, y1, s1, ...] for the 16 MPII joints.
    assert len(predictions) == 16 and len(predictions[0]["keypoints"]) == 3 * 16
    assert predictions[0]["image_id"] == "test/000000"
    # The run's own config names the run: the evaluation writes beside it, never over it.
    saved = (tmp_path / "p" / "config.yaml").read_text()
    result = experiments("validate", "--config", str(tmp_path / "p" / "config.yaml"), "--ckpt_path", ckpt, root=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"convlab: validate -> {tmp_path / 'p-validate'}" in result.stdout
    assert (tmp_path / "p" / "config.yaml").read_text() == saved
    assert column(read_metrics(tmp_path / "p-validate"), "val/pckh")


def test_unknown_config_key_fails_at_once_with_one_line(tmp_path):
    result = experiments("fit", "--config", TINY, "--model.init_args.num_stakcs", "3", root=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "num_stakcs" in lines[0], result.stderr
    assert not (tmp_path / "pose_tiny").exists()


def test_bad_value_names_the_key(tmp_path):
    result = experiments("fit", "--config", TINY, "--data.init_args.source.init_args.num_train", "-5", root=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "num_train" in lines[0], result.stderr


def test_a_networks_bad_argument_is_named_by_its_config_key(tmp_path):
    # The network raises "FasterRCNN.num_classes ..." (it does not know the YAML it is built
    # from); the CLI names the key of the composed config that set it.
    detection = TASKS["detection"]
    result = experiments("fit", "--config", detection, "--model.init_args.network.init_args.num_classes", "1", root=tmp_path, timeout=120)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("convlab: model.init_args.network.init_args.num_classes counts the background"), lines[0]
    assert "FasterRCNN." not in lines[0]
    # A class nested deeper (a backbone inside the network) is found at its own depth.
    backbone = {"class_path": "lightning_modules.networks.yolo_v1.YOLOBackbone", "init_args": {"variant": "fast", "width": -1}}
    nested = experiments("fit", "--config", TASKS["localization"], "--model.init_args.network.init_args.backbone", json.dumps(backbone),
                         root=tmp_path, timeout=120)
    assert nested.returncode == 2
    assert nested.stderr.strip() == "convlab: model.init_args.network.init_args.backbone.init_args.width must be > 0, got -1.0", nested.stderr
    assert not list(tmp_path.iterdir())  # both failed before making a run directory
