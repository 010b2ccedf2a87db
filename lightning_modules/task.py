"""The task contract as code: ``TaskModule``, the base of every task's LightningModule.

Its docstring is the authoritative text of the contract between a task and the shared layers
(``experiments/``, ``search/``); ARCHITECTURE.md's table is a summary of it.
"""
from __future__ import annotations

from abc import ABCMeta, abstractmethod
from typing import Any, Iterable, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MaxMetric, MeanMetric, MinMetric

from core.errors import ConfigError
from core.facts import DataFacts
from core.label_sets import palette_for
from lightning_modules.optim import build_optimizers
from lightning_modules.visualize import Color, draw_records, log_panels

__all__ = ["TaskModule"]

# Arguments of every task that are objects, not numbers: they stay out of ``hparams``.
_UNSAVED = ("network", "optimizer", "scheduler", "data_facts")


class TaskModule(pl.LightningModule, metaclass=ABCMeta):
    """A task's LightningModule: what the shared layers may assume of it, and nothing more.

    The shared layers (``experiments/``: cli, runs, bench, predict, reproduce; ``search/``) work for
    every task through this contract alone, without knowing which task it is.

    What a task provides (the abstract members), and who uses it:

    * ``network``: the plain ``nn.Module`` built from the YAML (set here from the ``network``
      argument). bench: parameters, FLOPs, latency.
    * ``example_input_array`` (Lightning's own attribute): one zero input ``(1, *input_shape)`` at
      the config's size, from ``data_facts.input_shape`` (unset when inputs vary in size). bench and
      search: FLOPs, latency, the params/FLOPs constraints; Lightning: the model summary.
    * ``loss(batch) -> Tensor``: the scalar training loss of one batch, which is
      ``total_loss(loss_terms(batch))``: exactly what ``training_step`` computes, backpropagates and
      logs. bench's bare-PyTorch loop, tests. A task writes ``loss_terms``, never ``loss``.
    * ``monitor: str`` and ``monitor_mode: "max" | "min"``: the validation metric that selects the
      best checkpoint (e.g. ``val/miou``, ``val/map``, ``val/pckh``) and whether higher or lower is
      better; class attributes, or properties of the data's facts. ``run.monitor``, search's
      objective, tables' metric when a spec names none.
    * ``prediction_records(batch, outputs) -> list[dict]``: JSON-able records per image of the
      outputs of ``predict_step(batch, batch_idx)``, in the field's own format (COCO results for
      boxes and keypoints, RLE for masks), each with ``image_id``, ``score`` and ``index`` (the
      image's position in the split). ``predict``, ``infer``.
    * ``draw_records(image, records) -> Tensor``: one image's records drawn over it (boxes with
      class and score, masks and label maps as coloured overlays with a legend, skeletons); this
      class draws every record format, with the colours of ``record_colors`` and the data's
      skeleton. ``infer``.
    * the data's facts (``core.facts.DataFacts``: input shape, class names, skeleton, protocol,
      COCO ground truth, ...) come in as the ``data_facts`` argument, which the CLI links from the
      data module's ``facts`` (``link_arguments``, never read from ``trainer.datamodule``); kept
      as ``self.data_facts``.

    What a task writes besides (abstract methods): ``loss_terms``, ``default_optimizer``,
    ``evaluate_batch``, ``log_evaluation``, ``predict_step``, ``image_batch`` and ``draw_images``.

    What this class owns, once for every task:

    * ``save_hyperparameters`` of every argument but the objects (``network``, ``optimizer``,
      ``scheduler``, ``data_facts`` and a task's ``unsaved_arguments``).
    * ``configure_optimizers``: the config's ``optimizer`` (``None``: the task's
      ``default_optimizer``) on ``optimized_parameters()``, the config's ``scheduler`` stepped per
      epoch (``ReduceLROnPlateau`` on ``monitor``) and, inside a Trainer, the task's
      ``step_schedules`` stepped per iteration (``lightning_modules.optim.build_optimizers``).
    * ``training_step``: the loss terms, their total (the task's ``"loss"`` term where it weighs
      them itself, else their sum), a ``FloatingPointError`` naming the step and the terms when the
      total is not finite, ``train/loss`` (a ``MeanMetric``, per step and epoch, on the progress
      bar) and every other term as ``train/<term>`` (epoch mean over all processes).
    * ``validation_step``/``test_step``: the task's ``evaluate_batch(split, batch)``; of the first
      validation batch (not in the sanity check) it keeps ``image_batch(batch, outputs)`` when
      ``log_images`` > 0.
    * ``on_validation_epoch_end``: the task's ``log_evaluation("val")``; then, outside the sanity
      check, the best value as ``<monitor>_best`` (``MaxMetric`` or ``MinMetric`` by
      ``monitor_mode``, saved in checkpoints so that it survives a resume) and the kept images,
      drawn by ``draw_images``, to W&B as ``val/predictions`` and to the run directory as
      ``panels/epoch<NNN>.png`` (``lightning_modules.visualize.log_panels``). ``on_test_epoch_end``:
      ``log_evaluation("test")``.
    * ``channels_last``: the network's weights, and every 4-D tensor given to ``forward``, in
      channels-last memory format (faster convolutions on CPUs and tensor-core GPUs; the numbers
      are the same). A list of images (detectors) is passed as it is: torchvision's detectors
      resize and copy the images into a new padded batch first, so the images' own layout would be
      lost, and a convolution whose weights are channels-last computes channels-last anyway.

    Args:
        network: the task's network (see each task).
        optimizer: optimiser factory; ``None``: the task's ``default_optimizer``.
        scheduler: learning-rate scheduler factory stepped per epoch, or ``None``.
        log_images: items of the first validation batch drawn and logged to W&B at every
            validation (0: none).
        channels_last: keep the network's weights and its 4-D inputs in channels-last memory format.
        data_facts: the data's facts (``None``: the defaults, e.g. a module used on its own).
    """

    #: constructor arguments kept out of ``hparams`` besides the network, factories and facts.
    unsaved_arguments: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # loss() is the function training_step computes; a task that redefined either would let
        # bench and the tests measure something else than what trains.
        for name in ("loss", "training_step"):
            if name in cls.__dict__:
                raise TypeError(f"{cls.__name__} defines {name}(): a task writes loss_terms(batch) and TaskModule derives both")

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        log_images: int = 4,
        channels_last: bool = False,
        data_facts: DataFacts | None = None,
    ) -> None:
        super().__init__()
        # Collects the arguments of the task's __init__ too (Lightning walks the __init__ frames).
        self.save_hyperparameters(ignore=[*_UNSAVED, *self.unsaved_arguments])
        if self.monitor_mode not in ("max", "min"):
            raise ConfigError(f"{type(self).__name__}.monitor_mode must be max or min, got {self.monitor_mode!r}")
        self.network = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.log_images = log_images
        self.channels_last = channels_last
        if channels_last:
            self.network.to(memory_format=torch.channels_last)
        self.data_facts = data_facts or DataFacts()
        if self.data_facts.input_shape is not None:
            self.example_input_array = torch.zeros(1, *self.data_facts.input_shape)
        self.train_loss = MeanMetric()
        self.best = MaxMetric() if self.monitor_mode == "max" else MinMetric()
        self.best.persistent(True)  # so <monitor>_best survives a resume from last.ckpt
        self._image_batch: Any = None

    # ------------------------------------------------------------------ the contract
    @property
    @abstractmethod
    def monitor(self) -> str:
        """The validation metric that selects the best checkpoint, e.g. ``val/miou``."""

    @property
    @abstractmethod
    def monitor_mode(self) -> Literal["max", "min"]:
        """``max`` when a higher ``monitor`` is better, ``min`` when a lower one is."""

    @abstractmethod
    def loss_terms(self, batch: Any) -> dict[str, Tensor]:
        """The loss terms of one training batch, scalars named ``loss_<what>``; a ``"loss"`` term,
        where present, is the total (the task weighs the others itself), else the total is their sum."""

    @abstractmethod
    def prediction_records(self, batch: Any, outputs: Any) -> list[dict[str, Any]]:
        """JSON-able records of ``outputs = predict_step(batch, ...)``, per image, in the field's
        own format, each with ``image_id``, ``score`` and ``index``."""

    @abstractmethod
    def predict_step(self, batch: Any, batch_idx: int) -> Any:
        """The predictions of one batch, in original-image coordinates, with each image's ``index``."""

    @abstractmethod
    def default_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """The paper's optimiser, used when the config names none."""

    @abstractmethod
    def evaluate_batch(self, split: Literal["val", "test"], batch: Any) -> Any:
        """Update ``split``'s metrics (and log a validation loss, if the task has one) with one
        batch; returns the outputs ``image_batch`` draws from."""

    @abstractmethod
    def log_evaluation(self, split: Literal["val", "test"]) -> Tensor | float:
        """Compute, log and reset ``split``'s metrics; returns the value ``<monitor>_best`` tracks
        (the monitored value)."""

    @abstractmethod
    def image_batch(self, batch: Any, outputs: Any) -> Any:
        """What ``draw_images`` needs of the first ``log_images`` items of a validation batch and
        of its ``evaluate_batch`` outputs, detached."""

    @abstractmethod
    def draw_images(self, kept: Any) -> list[Tensor]:
        """uint8 ``(3, H, W)`` pictures of what ``image_batch`` kept."""

    def record_colors(self) -> dict[str, Color]:
        """The colour of each class name in pictures of records: the data's palette (label order),
        else the VOC colour map from its second colour on (its first, black, is a background's)."""
        names = tuple(self.data_facts.class_names)
        palette = self.data_facts.palette or palette_for(len(names) + 1)[1:]
        return {name: tuple(palette[i]) for i, name in enumerate(names) if i < len(palette)}

    def draw_records(self, image: Tensor, records: list[dict[str, Any]]) -> Tensor:
        """uint8 ``(3, H', W')`` picture of ``records`` (``prediction_records``' format, one image's)
        over ``image``, the ``(3, H, W)`` uint8 original their coordinates are in
        (``lightning_modules.visualize.draw_records``)."""
        skeleton = self.data_facts.skeleton
        return draw_records(image, records, self.record_colors(), skeleton.edges if skeleton is not None else ())

    # ------------------------------------------------------------------ loss
    @staticmethod
    def total_loss(terms: dict[str, Tensor]) -> Tensor:
        """The training loss of ``terms``: their ``"loss"`` where the task gives one, else their sum."""
        return terms["loss"] if "loss" in terms else sum(terms.values())

    def loss(self, batch: Any) -> Tensor:
        """The training loss of one batch: ``total_loss(loss_terms(batch))``, what ``training_step``
        minimises."""
        return self.total_loss(self.loss_terms(batch))

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        terms = self.loss_terms(batch)
        loss = self.total_loss(terms)
        if not torch.isfinite(loss):
            values = {key: float(value.detach()) for key, value in terms.items()}
            raise FloatingPointError(f"non-finite training loss {loss.item()} at step {self.global_step}: {values}")
        n = len(batch[0])
        self.train_loss(loss.detach())
        self.log("train/loss", self.train_loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        for key, value in terms.items():
            if key != "loss":
                self.log(f"train/{key}", value.detach(), on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        return loss

    # ------------------------------------------------------------------ optimiser
    def optimized_parameters(self) -> Iterable[nn.Parameter]:
        """The parameters the optimiser holds: all the network's (frozen ones get no gradient)."""
        return self.network.parameters()

    def step_schedules(self, optimizer: torch.optim.Optimizer) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """Schedules stepped every iteration besides the config's (a warm-up, a poly decay); only
        inside a Trainer (bench's bare loop runs the optimiser alone). None by default."""
        return []

    def configure_optimizers(self) -> Any:
        return build_optimizers(self.optimized_parameters(), self.optimizer_factory, self.scheduler_factory,
                                default=self.default_optimizer, monitor=self.monitor,
                                step_schedules=self.step_schedules if self._trainer is not None else None)

    # ------------------------------------------------------------------ steps
    def forward(self, images: Any) -> Any:
        """The network's outputs on ``images`` (a 4-D tensor in channels-last with ``channels_last``)."""
        return self.network(self.memory_format(images))

    def memory_format(self, images: Any) -> Any:
        """``images`` in the module's memory format: a 4-D tensor channels-last with ``channels_last``;
        anything else (a list of images) as it is."""
        if self.channels_last and isinstance(images, Tensor) and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        outputs = self.evaluate_batch("val", batch)
        if batch_idx == 0 and self.log_images and not self.trainer.sanity_checking:
            self._image_batch = self.image_batch(batch, outputs)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluate_batch("test", batch)

    # ------------------------------------------------------------------ epoch ends
    def on_validation_epoch_end(self) -> None:
        value = self.log_evaluation("val")
        if not self.trainer.sanity_checking:
            self.best(torch.as_tensor(value))
            self.log(f"{self.monitor}_best", self.best.compute())
            kept, self._image_batch = self._image_batch, None
            log_panels(self, "val/predictions", kept, self.draw_images)

    def on_test_epoch_end(self) -> None:
        self.log_evaluation("test")
