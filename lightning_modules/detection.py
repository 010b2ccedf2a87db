"""Object detection, instance segmentation and keypoint detection with torchvision's detectors.

The networks (``lightning_modules.networks.faster_rcnn``, ``mask_rcnn``, ``keypoint_rcnn``,
``retinanet``, ``fcos``, ``ssd``, ``ssdlite``) keep their losses inside (anchor matching needs
their internals) and return a dict of loss terms in train mode; this module sums them, logs each
term, and holds the rest: the optimiser with torchvision's linear warm-up, the official
evaluation (COCO AP for boxes, masks and keypoints through pycocotools, Pascal VOC AP), the
per-class AP table in the run directory, the pictures logged to W&B and the prediction records
(COCO results, RLE masks).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from core.errors import ArgumentValueError, ConfigError
from core.facts import DataFacts
from core.io import write_atomic
from lightning_modules.metrics.detection import COCOEvaluator, CocoBackend, VOCEvaluator, image_record
from lightning_modules.task import TaskModule

__all__ = ["DetectionModule", "detector_targets"]

Batch = tuple[list[Tensor], list[dict[str, Any]]]
# The target fields torchvision's detectors read in training; the others are for evaluation.
DETECTOR_FIELDS = ("boxes", "labels", "masks", "keypoints")
Protocol = Literal["coco", "voc"]


def detector_targets(targets: Sequence[dict[str, Any]], fields: Sequence[str] = DETECTOR_FIELDS) -> list[dict[str, Tensor]]:
    """The targets as torchvision's detectors take them: only the fields they read (``masks`` and
    ``keypoints`` only when present)."""
    return [{key: target[key] for key in fields if key in target} for target in targets]


def fit_to_data(network: nn.Module, facts: DataFacts) -> None:
    """Check that ``network`` (complete after its ``__init__``) predicts the data's classes and
    keypoints: ``num_classes == len(class_names) + 1`` (the background) where the data names its
    classes, and ``num_keypoints`` equal to the data's keypoints where the network predicts
    keypoints. A mismatch is an ``ArgumentValueError`` naming the network's argument and both
    numbers (the CLI turns the argument into its config key)."""
    class_names, keypoints = tuple(facts.class_names), len(facts.keypoint_names)
    num_classes = getattr(network, "num_classes", None)
    if class_names and num_classes != len(class_names) + 1:
        raise ArgumentValueError.of(network, "num_classes", f"is {num_classes} but the data has {len(class_names)} classes (+ background)")
    given = getattr(network, "num_keypoints", 0)
    if given and class_names and keypoints != given:
        detail = "but the data's objects have none" if not keypoints else f"but the data's objects have {keypoints}"
        raise ArgumentValueError.of(network, "num_keypoints", f"is {given} {detail}")


class DetectionModule(TaskModule):
    """Training and official evaluation of a torchvision detector.

    Args:
        network: a ``TorchvisionDetector`` (complete after its ``__init__``); its ``num_classes``
            must be ``len(class_names) + 1`` when the data names its classes (``fit_to_data``).
        optimizer: the optimiser factory (LightningCLI's ``optimizer:``); ``None``: SGD, lr 0.02,
            momentum 0.9, weight decay 1e-4 (torchvision's reference for 16 images per step).
        scheduler: the scheduler factory, stepped per epoch (``MultiStepLR`` at epochs 16, 22 of 26
            in torchvision's 2x recipe); ``None``: constant after the warm-up.
        warmup_iters: linear warm-up of the learning rate over the first steps (torchvision's
            reference: 1,000 steps from ``warmup_factor`` x lr); 0: none.
        warmup_factor: the learning rate's share at the first step of the warm-up.
        protocols: the evaluations run at every validation and test: ``coco`` (pycocotools' AP for
            boxes, and for masks and keypoints when the network predicts them and the data has
            them) and ``voc`` (Pascal VOC AP@0.5, VOC07 11-point and VOC2010+ area, difficult
            objects ignored).
        coco_backend: who computes the ``coco`` protocol's AP: ``pycocotools`` (the reference) or
            ``faster_coco_eval`` (its C++ port: the same numbers, faster on large splits).
        log_images: validation images drawn with their predicted boxes and masks and logged to W&B
            every validation (0: none).
        image_score_threshold: detections drawn in those images score at least this.
        channels_last: keep the network's weights in channels-last memory format (the numbers are
            unchanged; the images stay a list, see ``TaskModule``).
        data_facts: the input size, class names and ids, keypoint names, whether masks are loaded
            and the COCO ground-truth files, linked from the data module's ``facts`` by the CLI.

    Batches are ``(images, targets)`` lists as ``datamodules.detection.DetectionDataModule``
    makes them. Metrics: ``train/loss`` and each term ``train/<term>`` (torchvision's names:
    ``loss_classifier``, ``loss_box_reg``, ``loss_objectness``, ``loss_rpn_box_reg``,
    ``loss_mask``, ``loss_keypoint``, ``classification``, ``bbox_regression``, ``bbox_ctrness``);
    ``val/map`` (COCO box AP@[.5:.95]), ``val/map_best``, and every statistic as
    ``val/<iou type>/<stat>`` (``val/bbox/AP50``, ``val/segm/AP``, ``val/keypoints/AP``,
    ``val/voc07/mAP``, ``val/voc12/mAP``), ``val/images_per_s`` (images through the eval-mode network
    per second, decoding and NMS included, at the loader's batch size, evaluation excluded; under DDP
    the mean of the ranks); the same under ``test/`` without the best. The per-class
    AP of the last validation and of the test are written to ``per_class_ap_<split>.md`` in the run
    directory.
    """

    monitor = "val/map"
    monitor_mode = "max"

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        warmup_iters: int = 1000,
        warmup_factor: float = 0.001,
        protocols: list[Protocol] | None = None,
        coco_backend: CocoBackend = "pycocotools",
        log_images: int = 4,
        image_score_threshold: float = 0.5,
        channels_last: bool = False,
        data_facts: DataFacts | None = None,
    ) -> None:
        # Before the base builds anything: a network that contradicts the data is the first error.
        fit_to_data(network, data_facts or DataFacts())
        super().__init__(network, optimizer, scheduler, log_images, channels_last, data_facts)
        if warmup_iters < 0 or not 0 < warmup_factor <= 1:
            raise ConfigError(f"model.init_args.warmup_iters must be >= 0 and warmup_factor in (0, 1], got {warmup_iters}, {warmup_factor}")
        chosen = list(protocols or ["coco"])
        unknown = sorted(set(chosen) - {"coco", "voc"})
        if unknown or not chosen:
            raise ConfigError(f"model.init_args.protocols must be a non-empty list of coco and voc, got {chosen}")
        facts = self.data_facts
        self.class_names = tuple(facts.class_names)
        self.warmup_iters = warmup_iters
        self.warmup_factor = warmup_factor
        self.protocols = chosen
        self.coco_backend = coco_backend
        self.image_score_threshold = image_score_threshold
        outputs = getattr(network, "outputs", ("boxes",))
        self.iou_types = ["bbox"]
        if "masks" in outputs and facts.masks:
            self.iou_types.append("segm")
        if "keypoints" in outputs and facts.keypoint_names:
            self.iou_types.append("keypoints")
        self.category_ids = tuple(facts.category_ids) or tuple(range(1, len(self.class_names) + 1))
        self.coco_annotations = dict(facts.coco_annotations)
        self.evaluators: dict[str, list[Any]] = {split: self._make_evaluators(split) for split in ("val", "test")}
        self._inference: dict[str, tuple[float, int]] = {}  # split -> (seconds in the network, images)

    def _make_evaluators(self, split: str) -> list[Any]:
        evaluators: list[Any] = []
        if "coco" in self.protocols:
            evaluators.append(COCOEvaluator(
                iou_types=self.iou_types, class_names=self.class_names, category_ids=self.category_ids,
                annotation_file=self.coco_annotations.get(split), backend=self.coco_backend,
            ))
        if "voc" in self.protocols:
            evaluators.append(VOCEvaluator(class_names=self.class_names))
        return evaluators

    # ------------------------------------------------------------------ the task contract
    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        """The network's loss dict for one batch (train mode), in float32; the loss is their sum."""
        images, targets = batch
        terms = self.network(images, detector_targets(targets))
        return {key: value.float() for key, value in terms.items()}

    def prediction_records(self, batch: Batch, outputs: list[dict[str, Tensor]]) -> list[dict[str, Any]]:
        """COCO results, one record per detection: ``image_id`` (the COCO id, else the dataset's
        name of the image), ``category_id`` (the dataset's id), ``category`` (its name), ``bbox``
        ``[x, y, w, h]`` in the image's pixels, ``score``, ``segmentation`` (COCO RLE) for mask
        predictors, ``keypoints`` ``[x1, y1, v1, ...]`` for keypoint predictors, and ``index``
        (the image's position in the split)."""
        _, targets = batch
        records = []
        for prediction, target in zip(outputs, targets):
            detections = image_record(prediction, target, category_ids=self.category_ids, masks="segm" in self.iou_types,
                                      keypoints="keypoints" in self.iou_types, ground_truth=False)["dt"]
            key = int(target["image_id"]) if int(target["image_id"]) >= 0 else target["image_key"]
            for record in detections:
                label = self.category_ids.index(record["category_id"])
                record.update({"image_id": key, "category": self.class_names[label] if label < len(self.class_names) else str(label + 1),
                               "index": int(target["index"])})
                records.append(record)
        return records

    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """SGD, lr 0.02, momentum 0.9, weight decay 1e-4 (torchvision's reference, 16 images a step)."""
        return torch.optim.SGD(params, lr=0.02, momentum=0.9, weight_decay=1e-4)

    def optimized_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (a backbone's frozen stages stay out of the optimiser)."""
        return [p for p in self.network.parameters() if p.requires_grad]

    def step_schedules(self, optimizer: torch.optim.Optimizer) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """torchvision's linear warm-up over the first ``warmup_iters`` steps."""
        if self.warmup_iters == 0:
            return []
        return [torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=self.warmup_factor, total_iters=self.warmup_iters)]

    # ------------------------------------------------------------------ steps
    def evaluate_batch(self, split: str, batch: Batch) -> list[dict[str, Tensor]]:
        """The protocols' evaluators and the eval-mode network's images per second; returns the
        detections (see ``forward``)."""
        images, targets = batch
        start = self._clock()
        outputs = self.network(images)
        seconds, count = self._inference.get(split, (0.0, 0))
        self._inference[split] = (seconds + self._clock() - start, count + len(images))
        for evaluator in self.evaluators[split]:
            evaluator.update(outputs, targets)
        return outputs

    def _clock(self) -> float:
        # A GPU runs asynchronously: wait for its work, or the time is that of the launches.
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Tensor]]:
        """The detections of each image of the batch (see ``forward``)."""
        return self.network(batch[0])

    # ------------------------------------------------------------------ epoch ends
    def log_evaluation(self, split: str) -> Tensor:
        """Every protocol's statistics, ``<split>/map`` (COCO box AP, else VOC2010+ mAP; NaN or
        undefined as 0), images per second and the per-class AP table; returns ``<split>/map``."""
        stats: dict[str, float] = {}
        tables: dict[str, dict[str, float]] = {}
        for evaluator in self.evaluators[split]:
            stats.update(evaluator.compute())
            tables.update(evaluator.per_class())
            evaluator.reset()
        for key, value in stats.items():
            self.log(f"{split}/{key}", float(value))
        value = float(stats.get("bbox/AP", stats.get("voc12/mAP", 0.0)))
        value = 0.0 if math.isnan(value) or value < 0 else value
        self.log(f"{split}/map", value, prog_bar=True)
        seconds, count = self._inference.pop(split, (0.0, 0))
        if seconds > 0:
            # Mean over ranks: each rank times its own share of the images.
            self.log(f"{split}/images_per_s", count / seconds, sync_dist=True)
        self._write_per_class(split, tables)
        return torch.tensor(value)

    def _write_per_class(self, split: str, tables: dict[str, dict[str, float]]) -> None:
        """``per_class_ap_<split>.md``: one row per class, one column per protocol (rank 0)."""
        # Only a run that logs has a run directory (a bare Trainer would write into the cwd).
        if not tables or self._trainer is None or not self.trainer.loggers or self.trainer.sanity_checking:
            return
        # Trainer.log_dir broadcasts rank 0's directory: every rank must ask, or the next
        # collective pairs with this broadcast and DDP hangs.
        directory = self.trainer.log_dir
        if not self.trainer.is_global_zero:
            return
        columns = sorted(tables)
        lines = [f"# Per-class AP ({split}, epoch {self.current_epoch})", "", "| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
        for name in self.class_names:
            cells = [tables[c].get(name, float("nan")) for c in columns]
            lines.append(f"| {name} | " + " | ".join("—" if math.isnan(v) else f"{100 * v:.1f}" for v in cells) + " |")
        lines += ["", "AP in %: COCO's AP@[.5:.95] per iou type, VOC's AP@0.5 (voc07: 11-point, voc12: area); — where a class has no ground truth."]
        write_atomic(Path(directory) / f"per_class_ap_{split}.md", "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ pictures
    def image_batch(self, batch: Batch, outputs: list[dict[str, Tensor]]) -> dict[str, Any]:
        """The first images, their ground-truth boxes and labels, and their detections, on the CPU."""
        k = self.log_images
        return {
            "images": [i.detach().cpu() for i in batch[0][:k]],
            "truths": [{key: t[key].detach().cpu() for key in ("boxes", "labels")} for t in batch[1][:k]],
            "outputs": [{key: v.detach().cpu() for key, v in o.items()} for o in outputs[:k]],
        }

    def draw_images(self, batch: dict[str, Any]) -> list[Tensor]:
        """``(3, H, W)`` uint8 per image: the ground-truth boxes in green, labelled with their
        class, and the detections above ``image_score_threshold`` in red, labelled with class and
        score, with their masks where the network predicts them."""
        from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

        panels = []
        for image, truth, output in zip(batch["images"], batch.get("truths", [None] * len(batch["images"])), batch["outputs"]):
            pixels = (image.float().clamp(0, 1) * 255).to(torch.uint8)
            keep = output["scores"] >= self.image_score_threshold
            if "masks" in output and keep.any():
                pixels = draw_segmentation_masks(pixels, output["masks"][keep, 0] > 0.5, alpha=0.4)
            if truth is not None and len(truth["boxes"]):
                names = [self._class_name(int(label)) for label in truth["labels"]]
                pixels = draw_bounding_boxes(pixels, truth["boxes"], labels=names, colors="lime", width=1)
            labels = [f"{self._class_name(int(label))} {score:.2f}" for label, score in zip(output["labels"][keep], output["scores"][keep])]
            panels.append(draw_bounding_boxes(pixels, output["boxes"][keep], labels=labels, colors="red", width=2))
        return panels

    def _class_name(self, label: int) -> str:
        return self.class_names[label - 1] if 0 < label <= len(self.class_names) else str(label)
