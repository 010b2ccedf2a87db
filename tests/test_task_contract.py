"""The task contract (ARCHITECTURE.md), tested once for every task: what the shared layers
(``experiments/``, ``search/``) may assume of a LightningModule and its DataModule, and nothing more.

Each task's tiny config is built exactly as ``fit`` builds it (``experiments.cli.load_components``);
then: the plain ``network`` and its parameters, ``example_input_array`` from the linked data facts,
``monitor``/``monitor_mode``, ``loss(batch)`` (the very function ``training_step`` calls, so one
optimiser step on it lowers it on the same batch), ``prediction_records`` as JSON. The data's
``required_paths()`` and ``data_report()`` are tested on the same configs reading a real format
folder each (``FILE_SOURCES``: generated data reads no file). A new task adds its tiny config to
``tests.run_fixtures.TASKS`` and a real-file source to ``FILE_SOURCES``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import pytest
import torch
import yaml
from torch import nn

from experiments.cli import load_components
from tests.detection_fixtures import COCO_CATEGORIES, coco_detection_folder
from tests.pose_fixtures import hrnet_mpii, write_image
from tests.run_fixtures import TASKS, column, experiments, read_metrics, wandb_runs
from tests.segmentation_fixtures import mask_folder


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
    assert len(records) >= len(batch[0]) > 0 and all(isinstance(r, dict) for r in records)
    targets = batch[1]
    indices = [int(t["index"]) for t in targets] if isinstance(targets, list) else [int(i) for i in targets["index"]]
    assert sorted({r["index"] for r in records}) == sorted(indices)
    assert json.loads(json.dumps(records)) == records
    assert all("image_id" in r and "score" in r for r in records)


def _csv_boxes_folder(root: Path) -> Path:
    """A CSV boxes folder (``datamodules.formats.csv_boxes``): two train images, one val image."""
    for name in ("a.png", "b.png", "c.png"):
        write_image(root / "images" / name, 64, 48)
    (root / "train.csv").write_text("path,x1,y1,x2,y2,label\nimages/a.png,4,4,30,40,circle\nimages/b.png,10,2,60,20,square\n")
    (root / "val.csv").write_text("images/c.png,5,5,20,20,square\n")
    return root


def _written(writer: Callable[[Path], Any], root: Path) -> Path:
    """``root`` once ``writer`` has written its folder there (for writers that return something else)."""
    writer(root)
    return root


def _source(class_path: str, **init_args: Any) -> dict[str, Any]:
    return {"data.init_args.source": {"class_path": class_path, "init_args": init_args}}


# Per task: the overrides that make its tiny config read a real format folder written under a root
# (the tests' fixture writers), the network sized to that data's classes.
FILE_SOURCES: dict[str, Callable[[Path], dict[str, Any]]] = {
    "pose": lambda root: _source("datamodules.formats.mpii.MPII", root=str(hrnet_mpii(root))),
    "localization": lambda root: {**_source("datamodules.formats.csv_boxes.CSVBoxes", root=str(_csv_boxes_folder(root)),
                                            class_names=["circle", "square"]),
                                  "model.init_args.network.init_args.num_classes": 2},
    "segmentation": lambda root: {**_source("datamodules.formats.mask_folder.MaskFolder", root=str(_written(mask_folder, root)),
                                            mask_values={0: 0, 255: 1}),
                                  "model.init_args.network.init_args.num_classes": 2},
    "detection": lambda root: {**_source("datamodules.formats.coco_detection.COCODetection", root=str(coco_detection_folder(root))),
                               "model.init_args.network.init_args.num_classes": len(COCO_CATEGORIES) + 1},
}


@pytest.fixture(scope="module", params=sorted(FILE_SOURCES), ids=sorted(FILE_SOURCES))
def file_task(request, tmp_path_factory):
    """Task ``request.param``'s tiny config reading real files: ``(name, root, data module)``."""
    root = tmp_path_factory.mktemp(request.param)
    args = ["--config", TASKS[request.param], "--data.init_args.num_workers", "0"]
    for key, value in FILE_SOURCES[request.param](root).items():
        args += [f"--{key}", json.dumps(value)]
    _, data, _ = load_components(args)
    return request.param, root, data


def test_every_task_has_a_real_file_source():
    assert sorted(FILE_SOURCES) == sorted(TASKS)


def test_data_lists_its_paths_and_reports(file_task):
    _, root, data = file_task
    paths = data.required_paths()
    # A reader lists what it reads: its root and the files under it, every one there.
    assert paths and all(p.exists() for p in paths), paths
    assert any(p.path == root for p in paths) and all(p.path == root or root in p.path.parents for p in paths), paths
    report = data.data_report()
    assert json.loads(json.dumps(report)) == report
    assert report["sources"] and all(source["skipped"] == 0 for source in report["sources"])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(TASKS))
def test_two_process_ddp_fit_makes_one_run(name, tmp_path):
    """``fit`` with two DDP processes on the CPU: both ranks finish (a collective one rank skips
    hangs, hence the timeout), write into one run, log one set of metrics and one W&B run."""
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
