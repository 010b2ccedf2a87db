"""``TaskModule``, the task contract's base class: what it owns for every task.

A tiny regression task written on it (``TinyTask``: the mean of an image's pixels, its error to
minimise) exercises the base alone: ``monitor_mode: min`` tracks the minimum, the loss is its
terms' sum and every term is logged, the non-finite-loss guard, the images of the first validation
batch, the optimiser's schedules. Then every task module of the suite takes ``channels_last``, and
the detection module fits its network to the data's classes.
"""
from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanSquaredError

from core.errors import ConfigError
from core.facts import DataFacts
from lightning_modules.optim import build_optimizers
from lightning_modules.task import TaskModule


class TinyTask(TaskModule):
    """Predict the mean pixel of a ``(3, 4, 4)`` image; ``val/mse`` is its squared error (lower is better)."""

    monitor = "val/mse"
    monitor_mode = "min"

    def __init__(self, network: nn.Module, lr: float = 0.5, log_images: int = 0, channels_last: bool = False,
                 data_facts: DataFacts | None = None) -> None:
        super().__init__(network, None, None, log_images, channels_last, data_facts)
        self.lr = lr
        self.mse = nn.ModuleDict({split: MeanSquaredError() for split in ("val", "test")})
        self.kept: list[Tensor] = []

    def _predict(self, images: Tensor) -> Tensor:
        return self(images).mean((1, 2, 3))

    def loss_terms(self, batch: list[Tensor]) -> dict[str, Tensor]:
        images, target = batch
        prediction = self._predict(images)
        return {"loss_mse": F.mse_loss(prediction, target), "loss_l1": F.l1_loss(prediction, target)}

    def default_optimizer(self, params):
        return torch.optim.SGD(params, lr=self.lr)

    def evaluate_batch(self, split: str, batch: list[Tensor]) -> Tensor:
        images, target = batch
        prediction = self._predict(images)
        self.mse[split].update(prediction, target)
        return prediction

    def log_evaluation(self, split: str) -> Tensor:
        value = self.mse[split].compute()
        self.mse[split].reset()
        self.log(f"{split}/mse", value)
        return value

    def predict_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return self._predict(batch[0])

    def prediction_records(self, batch: list[Tensor], outputs: Tensor) -> list[dict]:
        return [{"image_id": i, "score": float(v), "index": i} for i, v in enumerate(outputs)]

    def image_batch(self, batch: list[Tensor], outputs: Tensor) -> Tensor:
        self.kept.append(outputs[: self.log_images].detach())
        return batch[0][: self.log_images]

    def draw_images(self, kept: Tensor) -> list[Tensor]:
        return [torch.zeros(3, 4, 4, dtype=torch.uint8) for _ in kept]


def _loader(seed: int) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(16, 3, 4, 4, generator=generator)
    return DataLoader(TensorDataset(images, images.mean((1, 2, 3)) * 2 + 1), batch_size=8)


class _History(pl.Callback):
    def __init__(self) -> None:
        self.values: list[float] = []
        self.best: list[float] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the epoch's validation (a callback's on_validation_epoch_end runs before the module's).
        self.values.append(float(trainer.callback_metrics["val/mse"]))
        self.best.append(float(trainer.callback_metrics["val/mse_best"]))


def _fit(model: TaskModule, epochs: int, **kwargs) -> tuple[pl.Trainer, _History]:
    history = _History()
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[history], **kwargs)
    trainer.fit(model, train_dataloaders=_loader(0), val_dataloaders=_loader(1))
    return trainer, history


def _network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Conv2d(3, 2, 3, padding=1)


def test_monitor_mode_min_tracks_the_minimum_and_saves_it():
    # A learning rate that overshoots: the validation error goes up and down, so the best is
    # neither the first nor the last value, and a maximum would differ from it.
    _, history = _fit(TinyTask(_network(), lr=1.2), epochs=6, num_sanity_val_steps=0)
    assert len(set(history.values)) > 1
    assert history.best == [min(history.values[: i + 1]) for i in range(len(history.values))]
    assert history.best[-1] < max(history.values)
    model = TinyTask(_network())
    assert type(model.best).__name__ == "MinMetric"
    assert "best.min_value" in model.state_dict()  # persistent: a resume keeps the best


def test_monitor_mode_must_be_max_or_min():
    class Sideways(TinyTask):
        monitor_mode = "sideways"

    with pytest.raises(ConfigError, match="monitor_mode must be max or min, got 'sideways'"):
        Sideways(_network())


def test_a_task_writes_loss_terms_not_loss():
    with pytest.raises(TypeError, match="defines loss"):
        class _Own(TinyTask):
            def loss(self, batch):
                return torch.zeros(())


def test_the_loss_is_the_terms_sum_or_the_tasks_own_total():
    assert float(TaskModule.total_loss({"loss_a": torch.tensor(1.5), "loss_b": torch.tensor(2.0)})) == 3.5
    assert float(TaskModule.total_loss({"loss": torch.tensor(7.0), "loss_a": torch.tensor(1.5)})) == 7.0
    model = TinyTask(_network())
    batch = next(iter(_loader(0)))
    terms = model.loss_terms(batch)
    assert torch.equal(model.loss(batch), terms["loss_mse"] + terms["loss_l1"])
    assert torch.equal(model.training_step(batch, 0), model.loss(batch))


def test_training_logs_the_loss_and_every_term_per_epoch():
    trainer, _ = _fit(TinyTask(_network()), epochs=1, num_sanity_val_steps=0)
    logged = trainer.logged_metrics
    assert {"train/loss_step", "train/loss_epoch", "train/loss_mse", "train/loss_l1", "val/mse", "val/mse_best"} <= set(logged)
    assert "train/loss_mse_step" not in logged  # the terms per epoch only
    assert "train/loss_step" in trainer.progress_bar_metrics


def test_a_non_finite_loss_names_the_step_and_the_terms():
    model = TinyTask(_network())
    images, target = next(iter(_loader(0)))
    with pytest.raises(FloatingPointError, match=r"non-finite training loss nan at step 0: \{'loss_mse': nan, 'loss_l1': nan\}"):
        model.training_step([images, target * float("nan")], 0)


def test_images_come_from_the_first_validation_batch_outside_the_sanity_check():
    model = TinyTask(_network(), log_images=2)
    _fit(model, epochs=2, num_sanity_val_steps=1)
    # Two validations of two batches each, and a sanity check: one kept batch per validation.
    assert [tuple(k.shape) for k in model.kept] == [(2,), (2,)]
    assert model._image_batch is None  # handed to the loggers (none here) and let go


def test_example_input_array_comes_from_the_data_facts():
    model = TinyTask(_network(), data_facts=DataFacts(input_shape=(3, 4, 4)))
    assert torch.equal(model.example_input_array, torch.zeros(1, 3, 4, 4))
    assert TinyTask(_network()).example_input_array is None


def test_schedules_per_step_come_before_the_configured_one_and_are_built_after_it():
    built: list[str] = []

    def epoch_schedule(optimizer):
        built.append("epoch")
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1)

    def step_schedules(optimizer):
        built.append("step")
        return [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.5, total_iters=2)]

    params = [nn.Parameter(torch.zeros(1))]
    default = lambda p: torch.optim.SGD(p, lr=1.0)
    optimizers, configs = build_optimizers(params, None, epoch_schedule, default, "val/x", step_schedules)
    assert built == ["epoch", "step"]
    assert [c["interval"] for c in configs] == ["step", "epoch"] and len(optimizers) == 1
    assert optimizers[0].param_groups[0]["lr"] == 0.5  # the warm-up's first step
    one = build_optimizers(params, None, None, default, "val/x", step_schedules)
    assert set(one) == {"optimizer", "lr_scheduler"} and one["lr_scheduler"]["interval"] == "step"
    plateau = build_optimizers(params, None, lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o), default, "val/x")
    assert plateau["lr_scheduler"]["monitor"] == "val/x"
    assert isinstance(build_optimizers(params, None, None, default, "val/x"), torch.optim.SGD)


# ---------------------------------------------------------------------- every task's channels_last
TASKS = {
    "pose": "tests/configs/pose_tiny.yaml",
    "localization": "tests/configs/localization_tiny.yaml",
    "segmentation": "tests/configs/segmentation_tiny.yaml",
    "detection": "tests/configs/detection_tiny.yaml",
}


def _build(name: str, channels_last: bool):
    from experiments.cli import load_components

    pl.seed_everything(0, verbose=False)
    args = ["--config", TASKS[name], "--data.init_args.num_workers", "0", "--model.init_args.channels_last", str(channels_last).lower()]
    model, data, _ = load_components(args)
    return model.eval(), data


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_takes_channels_last_and_its_numbers_stay(name):
    model, data = _build(name, channels_last=True)
    plain, _ = _build(name, channels_last=False)
    assert model.channels_last and model.hparams["channels_last"] is True
    kernels = [p for p in model.network.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    # A 3x3 (or larger) kernel is laid out differently in channels-last: the conversion happened.
    assert any(not p.is_contiguous() for p in kernels if p.shape[-1] > 1 and p.shape[1] > 1)
    data.setup("validate")
    images, _ = next(iter(data.val_dataloader()))
    inputs = list(images[:1]) if name == "detection" else images[:1]
    with torch.no_grad():
        ours, theirs = model(inputs), plain(inputs)
    flatten = lambda out: [t for t in (out if isinstance(out, list) else [out]) for t in (t.values() if isinstance(t, dict) else [t])]
    for a, b in zip(flatten(ours), flatten(theirs)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    if name != "detection":  # a list of images stays a list (see TaskModule); a batch goes channels-last
        assert model.memory_format(images).is_contiguous(memory_format=torch.channels_last)


# ---------------------------------------------------------------------- detection: the data's classes
def test_detection_checks_a_complete_network_against_the_data():
    from lightning_modules.detection import DetectionModule
    from lightning_modules.networks.detection_backbones import MobileNetV3FPN
    from lightning_modules.networks.faster_rcnn import FasterRCNN

    network = FasterRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=3, box_head_fcs=[16, 16])
    DetectionModule(network, data_facts=DataFacts(class_names=("a", "b")))
    with pytest.raises(ConfigError, match=r"^FasterRCNN\.num_classes is 3 but the data has 4 classes"):
        DetectionModule(network, data_facts=DataFacts(class_names=("a", "b", "c", "d")))
    DetectionModule(network, data_facts=DataFacts())  # data without class names: the network's own


def test_detection_refuses_a_keypoint_network_on_data_without_its_keypoints():
    from lightning_modules.detection import DetectionModule
    from lightning_modules.networks.detection_backbones import MobileNetV3FPN
    from lightning_modules.networks.keypoint_rcnn import KeypointRCNN

    network = KeypointRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=2, num_keypoints=4, box_head_fcs=[16, 16], keypoint_head_layers=[8])
    DetectionModule(network, data_facts=DataFacts(class_names=("person",), keypoint_names=("a", "b", "c", "d")))
    with pytest.raises(ConfigError, match=r"^KeypointRCNN\.num_keypoints is 4 but the data's objects have none"):
        DetectionModule(network, data_facts=DataFacts(class_names=("person",)))
    with pytest.raises(ConfigError, match=r"^KeypointRCNN\.num_keypoints is 4 but the data's objects have 17"):
        DetectionModule(network, data_facts=DataFacts(class_names=("person",), keypoint_names=tuple(f"k{i}" for i in range(17))))
