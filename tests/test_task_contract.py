"""The task contract (ARCHITECTURE.md), tested once for every task: what the shared layers
(``experiments/``, ``search/``) may assume of a LightningModule and its DataModule, and nothing more.

Each task's tiny config is built exactly as ``fit`` builds it (``experiments.cli.load_components``);
then: the plain ``network`` and its parameters, ``example_input_array`` from the linked data facts,
``monitor``/``monitor_mode``, ``loss(batch)`` (the very function ``training_step`` calls, so one
optimiser step on it lowers it on the same batch), ``prediction_records`` as JSON, the data's
``required_paths()`` and ``data_report()``. A new task adds its tiny config to ``TASKS``.
"""
from __future__ import annotations

import json
import math

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import nn

from experiments.cli import load_components

TASKS = {
    "pose": "tests/configs/pose_tiny.yaml",
    "localization": "tests/configs/localization_tiny.yaml",
    "segmentation": "tests/configs/segmentation_tiny.yaml",
    "detection": "tests/configs/detection_tiny.yaml",
}


@pytest.fixture(scope="module", params=sorted(TASKS), ids=sorted(TASKS))
def task(request):
    pl.seed_everything(0, verbose=False)
    model, data, config = load_components(["--config", TASKS[request.param], "--data.init_args.num_workers", "0"])
    data.prepare_data()
    data.setup("fit")
    return request.param, model, data, config


def _batch(data: pl.LightningDataModule, stage: str = "train"):
    loader = data.train_dataloader() if stage == "train" else data.val_dataloader()
    return next(iter(loader))


def test_network_is_a_plain_module_with_parameters(task):
    _, model, _, _ = task
    assert isinstance(model.network, nn.Module) and not isinstance(model.network, pl.LightningModule)
    assert sum(p.numel() for p in model.network.parameters()) > 0
    assert all(p.requires_grad for p in model.network.parameters())


def test_example_input_array_comes_from_the_data(task):
    _, model, data, _ = task
    images, _ = _batch(data, "val")
    example = model.example_input_array
    assert isinstance(example, torch.Tensor), "the data's facts were not linked into the module"
    # A batch is one stacked tensor or, where sizes vary (detection), a list of images.
    assert example.shape[0] == 1 and example.shape[1:] == images[0].shape
    model.eval()
    with torch.no_grad():
        model.network(example)  # what bench and search measure FLOPs and latency on
    model.train()


def test_monitor_is_a_logged_validation_metric(task):
    _, model, data, _ = task
    assert model.monitor.startswith("val/") and model.monitor_mode in ("max", "min")
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1, limit_val_batches=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0)
    trainer.fit(model, datamodule=data)
    assert model.monitor in trainer.callback_metrics
    assert f"{model.monitor}_best" in trainer.callback_metrics
    assert math.isfinite(float(trainer.callback_metrics[model.monitor]))


def test_loss_is_what_training_minimises(task):
    _, model, data, _ = task
    batch = _batch(data)
    model.train()
    loss = model.loss(batch)
    assert loss.dim() == 0 and loss.requires_grad and torch.isfinite(loss)
    configured = model.configure_optimizers()
    # Lightning's return forms: an optimiser, {"optimizer": ...}, or ([optimisers], [schedulers]).
    if isinstance(configured, dict):
        optimizer = configured["optimizer"]
    elif isinstance(configured, (tuple, list)):
        optimizer = configured[0][0] if isinstance(configured[0], (tuple, list)) else configured[0]
    else:
        optimizer = configured
    before = [p.detach().clone() for p in model.network.parameters()]
    # A few steps on one batch: the contract's loss must be what training lowers.
    start = float(loss.detach())
    for _ in range(5):
        optimizer.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.network.parameters()))
    assert float(model.loss(batch).detach()) < start


def test_prediction_records_are_json(task):
    _, model, data, _ = task
    batch = _batch(data, "val")
    model.eval()
    with torch.no_grad():
        outputs = model.predict_step(batch, 0)
    model.train()
    records = model.prediction_records(batch, outputs)
    # One record per image (pose, localisation) or several (one per class or object): every image has some.
    assert all(isinstance(r, dict) for r in records) and len(records) >= len(batch[0])
    targets = batch[1]
    indices = [int(t["index"]) for t in targets] if isinstance(targets, list) else [int(i) for i in targets["index"]]
    assert sorted({r["index"] for r in records}) == sorted(indices)
    assert json.loads(json.dumps(records)) == records
    assert all("image_id" in r and "score" in r for r in records)


def test_data_lists_its_paths_and_reports(task):
    _, _, data, _ = task
    paths = data.required_paths()
    assert isinstance(paths, list) and all(p.exists() for p in paths)
    report = data.data_report()
    assert json.loads(json.dumps(report)) == report
    assert all(source["skipped"] == 0 for source in report["sources"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_two_process_ddp_fit_makes_one_run(name, tmp_path):
    """``fit`` with two DDP processes on the CPU: both ranks finish (a collective one rank skips
    hangs, hence the timeout), write into one run, log one set of metrics and one W&B run."""
    from tests.test_cli_pose import column, experiments, read_metrics, wandb_runs

    model, _, _ = load_components(["--config", TASKS[name]])
    result = experiments(
        "fit", "--config", TASKS[name], "--run.name", "ddp", "--run.wandb", "offline", "--trainer.max_epochs", "2",
        "--trainer.devices", "2", "--trainer.strategy", "ddp", root=tmp_path, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # both ranks wrote into one run
    run = tmp_path / "ddp"
    assert len(column(read_metrics(run), model.monitor)) == 2  # rank 0 logs, once per epoch
    assert len(wandb_runs(run)) == 1
    trainer = yaml.safe_load((run / "config.yaml").read_text())["trainer"]
    assert str(trainer["devices"]) == "2" and trainer["strategy"] == "ddp"
