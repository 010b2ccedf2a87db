"""Classification + localisation of one object per image (the course notes' first task).

The network (``lightning_modules.networks.localizer.Localizer`` or any ``nn.Module`` with the same
output dict) knows nothing of this file; here live the loss (cross-entropy + weighted box
regression), decoding boxes back to the original image, the metrics (top-1 accuracy, mean IoU,
localisation accuracy), the default optimiser and the images logged to W&B;
``lightning_modules.task.TaskModule`` does the rest.
"""
from __future__ import annotations

from typing import Any, Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy
from torchvision.ops import box_convert

from core.errors import ConfigError
from core.facts import DataFacts
from lightning_modules.metrics.localization import LocalizationAccuracy
from lightning_modules.task import TaskModule

__all__ = ["LocalizationModule", "localization_loss", "select_boxes", "boxes_to_image", "SMOOTH_L1_BETA"]

Batch = tuple[Tensor, dict[str, Any]]
# Smooth-L1's switch point on boxes normalised to [0, 1]: torchvision's and detectron2's 1/9 for box
# regression. With Fast R-CNN's beta = 1 every error here would sit in the quadratic part (half the L2).
SMOOTH_L1_BETA = 1.0 / 9.0


def select_boxes(boxes: Tensor, labels: Tensor) -> Tensor:
    """The box of class ``labels[i]`` for each image: ``(N, C, 4)`` (per-class) -> ``(N, 4)``;
    ``(N, 4)`` (class-agnostic) is returned as is."""
    if boxes.dim() == 2:
        return boxes
    return boxes[torch.arange(boxes.shape[0], device=boxes.device), labels]


def localization_loss(
    outputs: dict[str, Tensor],
    labels: Tensor,
    target_boxes: Tensor,
    box_loss: Literal["l2", "smooth_l1"] = "l2",
    box_weight: float = 1.0,
) -> dict[str, Tensor]:
    """Cross-entropy of the class scores plus ``box_weight`` times the box regression loss.

    Args:
        outputs: the network's ``{"logits": (N, C), "boxes": (N, 4) or (N, C, 4)}``.
        labels: ``(N,)`` ground-truth classes; with per-class boxes the ground-truth class's box
            is the one regressed (the other classes' boxes get no loss, as in R-CNN).
        target_boxes: ``(N, 4)`` normalised ``(cx, cy, w, h)``, like the network's boxes.
        box_loss: ``l2`` (squared error summed over the 4 coordinates, the notes' L2) or
            ``smooth_l1`` (Huber with ``SMOOTH_L1_BETA``, summed over the 4 coordinates).
        box_weight: the box term's weight against the cross-entropy.

    Returns: ``{"loss": total, "loss_cls": mean cross-entropy, "loss_box": mean over images of the
    summed box loss}``, scalars.
    """
    loss_cls = F.cross_entropy(outputs["logits"].float(), labels)
    boxes = select_boxes(outputs["boxes"], labels).float()
    if box_loss == "l2":
        per_coord = F.mse_loss(boxes, target_boxes, reduction="none")
    elif box_loss == "smooth_l1":
        per_coord = F.smooth_l1_loss(boxes, target_boxes, reduction="none", beta=SMOOTH_L1_BETA)
    else:
        raise ValueError(f"box_loss must be l2 or smooth_l1, got {box_loss!r}")
    loss_box = per_coord.sum(-1).mean()
    return {"loss": loss_cls + box_weight * loss_box, "loss_cls": loss_cls, "loss_box": loss_box}


def boxes_to_image(boxes: Tensor, input_size: tuple[int, int], scale: Tensor, offset: Tensor, orig_size: Tensor | None = None) -> Tensor:
    """Normalised input ``(cx, cy, w, h)`` ``(N, 4)`` -> XYXY pixels of the original images.

    Args:
        input_size: ``(H, W)`` of the network input.
        scale, offset: ``(N, 2)`` letterbox maps, original ``p`` -> ``p * scale + offset`` on the input.
        orig_size: ``(N, 2)`` ``(height, width)`` of the originals; boxes are clipped to them.
    """
    height, width = input_size
    xyxy = box_convert(boxes.float(), "cxcywh", "xyxy") * boxes.new_tensor([width, height, width, height], dtype=torch.float32)
    xyxy = (xyxy - offset.float().repeat(1, 2)) / scale.float().repeat(1, 2)
    if orig_size is not None:
        limit = orig_size.flip(-1).to(xyxy.dtype).repeat(1, 2)  # (w, h, w, h)
        xyxy = torch.minimum(xyxy.clamp(min=0), limit)
    return xyxy


class LocalizationModule(TaskModule):
    """Single-object classification + localisation.

    Args:
        network: images ``(N, 3, H, W)`` -> ``{"logits": (N, C), "boxes": (N, 4) | (N, C, 4)}``,
            boxes normalised ``(cx, cy, w, h)`` of the input
            (``lightning_modules.networks.localizer.Localizer``).
        optimizer: optimiser factory; ``None`` is Adam with lr 1e-3.
        scheduler: learning-rate scheduler factory, or ``None``; ``ReduceLROnPlateau`` watches
            ``val/loc_accuracy``.
        box_loss: ``l2`` (the course notes) or ``smooth_l1``; see ``localization_loss``.
        box_weight: weight of the box loss against the cross-entropy.
        iou_threshold: IoU a correct localisation needs (0.5: the ImageNet criterion).
        log_images: validation images drawn with true (green) and predicted (red) boxes and logged
            to W&B every validation (0: none).
        channels_last: keep the network's weights and inputs in channels-last memory format (the
            numbers are unchanged).
        data_facts: the input shape and class names, linked from the data module's ``facts`` by
            the CLI.

    Batches are ``(images, target)`` as ``datamodules.localization.LocalizationDataModule`` makes
    them. Training regresses the ground-truth class's box (per-class boxes); evaluation scores the
    predicted class's box, mapped back to original-image pixels, against the original ground truth.
    Metrics: ``train/loss``, ``train/loss_cls``, ``train/loss_box``; ``val/loss`` (the training
    objective on validation images), ``val/accuracy`` (top-1), ``val/mean_iou``,
    ``val/loc_accuracy`` (class right and IoU >= threshold), ``val/loc_accuracy_best``; the same
    under ``test/`` without the loss and the best.
    """

    monitor = "val/loc_accuracy"
    monitor_mode = "max"

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        box_loss: Literal["l2", "smooth_l1"] = "l2",
        box_weight: float = 5.0,
        iou_threshold: float = 0.5,
        log_images: int = 4,
        channels_last: bool = False,
        data_facts: DataFacts | None = None,
    ) -> None:
        super().__init__(network, optimizer, scheduler, log_images, channels_last, data_facts)
        if box_loss not in ("l2", "smooth_l1"):
            raise ConfigError(f"model.init_args.box_loss must be l2 or smooth_l1, got {box_loss!r}")
        if box_weight < 0:
            raise ConfigError(f"model.init_args.box_weight must be >= 0, got {box_weight}")
        self.box_loss = box_loss
        self.box_weight = box_weight
        self.class_names = tuple(self.data_facts.class_names)
        num_classes = getattr(network, "num_classes", None)
        if num_classes is not None and self.class_names and num_classes != len(self.class_names):
            raise ConfigError(
                f"model.init_args.network.init_args.num_classes is {num_classes} but the data has {len(self.class_names)} classes ({', '.join(self.class_names)})"
            )
        num_classes = num_classes or len(self.class_names)
        if not num_classes:
            raise ConfigError("LocalizationModule needs the number of classes: a network with num_classes, or data_facts with class names")
        self.num_classes = int(num_classes)
        self.val_loss = MeanMetric()
        # Top-1 accuracy over images ("micro"; torchmetrics' default "macro" averages per class).
        self.accuracy = nn.ModuleDict({split: MulticlassAccuracy(self.num_classes, average="micro") for split in ("val", "test")})
        self.localization = nn.ModuleDict({split: LocalizationAccuracy(iou_threshold) for split in ("val", "test")})

    # ------------------------------------------------------------------ the task contract
    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        """``{"loss": cross-entropy + box_weight x box loss, "loss_cls", "loss_box"}`` of one batch
        (see ``localization_loss``)."""
        images, target = batch
        return localization_loss(self(images), target["labels"], target["boxes"], self.box_loss, self.box_weight)

    def prediction_records(self, batch: Batch, outputs: dict[str, Tensor]) -> list[dict[str, Any]]:
        """One result per image, COCO's detection-result fields: ``image_id`` (a COCO integer id,
        else the dataset's name of the image), ``category_id`` (the class index, into the data's
        class names), ``category`` (its name), ``bbox`` ``[x, y, w, h]`` in original-image pixels
        (continuous coordinates, top-left corner), ``score`` (the class's softmax probability)
        and ``index`` (the image's position in the split)."""
        _, target = batch
        records = []
        for i in range(outputs["boxes"].shape[0]):
            coco_id = int(target["image_id"][i])
            x1, y1, x2, y2 = (float(v) for v in outputs["boxes"][i])
            label = int(outputs["labels"][i])
            records.append({
                "image_id": coco_id if coco_id >= 0 else target["image_key"][i],
                "category_id": label,
                "category": self._class_name(label),
                "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
                "score": round(float(outputs["scores"][i]), 5),
                "index": int(target["index"][i]),
            })
        return records

    def _class_name(self, label: int) -> str:
        return self.class_names[label] if label < len(self.class_names) else str(label)

    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """Adam, lr 1e-3."""
        return torch.optim.Adam(params, lr=1e-3)

    # ------------------------------------------------------------------ steps

    def _decode(self, outputs: dict[str, Tensor], images: Tensor, target: dict[str, Any]) -> dict[str, Tensor]:
        """Predicted class, its probability, and its box (the predicted class's, with per-class
        boxes) in original-image XYXY pixels."""
        probabilities = outputs["logits"].float().softmax(-1)
        scores, labels = probabilities.max(-1)
        boxes = select_boxes(outputs["boxes"], labels)
        image_boxes = boxes_to_image(boxes, tuple(images.shape[-2:]), target["scale"], target["offset"], target["orig_size"])
        return {"boxes": image_boxes, "labels": labels, "scores": scores, "input_boxes": boxes}

    def evaluate_batch(self, split: str, batch: Batch) -> dict[str, Tensor]:
        """Top-1 accuracy and localisation of the decoded predictions; at validation also the
        training objective as ``val/loss``. Returns the decoded predictions."""
        images, target = batch
        outputs = self(images)
        decoded = self._decode(outputs, images, target)
        self.accuracy[split].update(outputs["logits"], target["labels"])
        self.localization[split].update(decoded["boxes"], decoded["labels"], target["boxes_xyxy"], target["labels"])
        if split == "val":
            self.val_loss(localization_loss(outputs, target["labels"], target["boxes"], self.box_loss, self.box_weight)["loss"])
            self.log("val/loss", self.val_loss, on_epoch=True, batch_size=images.shape[0])
        return decoded

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """``boxes`` ``(N, 4)`` XYXY in original-image pixels, ``labels`` ``(N,)``, ``scores``
        ``(N,)`` (softmax probability of the predicted class), ``index`` ``(N,)``."""
        images, target = batch
        decoded = self._decode(self(images), images, target)
        return {"boxes": decoded["boxes"], "labels": decoded["labels"], "scores": decoded["scores"], "index": target["index"]}

    # ------------------------------------------------------------------ epoch ends
    def log_evaluation(self, split: str) -> Tensor:
        """Top-1 accuracy, mean IoU and localisation accuracy; returns the localisation accuracy."""
        accuracy = self.accuracy[split].compute()
        localization = self.localization[split].compute()
        self.accuracy[split].reset()
        self.localization[split].reset()
        self.log(f"{split}/accuracy", accuracy.float())
        self.log(f"{split}/mean_iou", localization["mean_iou"].float())
        self.log(f"{split}/loc_accuracy", localization["loc_accuracy"].float(), prog_bar=True)
        return localization["loc_accuracy"].float()

    # ------------------------------------------------------------------ pictures
    def image_batch(self, batch: Batch, outputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Input images with the predicted and the true class and normalised box."""
        (images, target), k = batch, self.log_images
        return {
            "images": images[:k].detach(),
            "pred_boxes": outputs["input_boxes"][:k].detach(),
            "pred_labels": outputs["labels"][:k].detach(),
            "scores": outputs["scores"][:k].detach(),
            "true_boxes": target["boxes"][:k].detach(),
            "true_labels": target["labels"][:k].detach(),
        }

    def draw_images(self, kept: dict[str, Tensor]) -> list[Tensor]:
        return _box_panels(kept, self._class_name)


def _box_panels(batch: dict[str, Tensor], class_name: Any) -> list[Tensor]:
    """``(3, H, W)`` uint8 input images with the true box (green) and the predicted one (red),
    each labelled with its class (the prediction with its probability)."""
    from torchvision.utils import draw_bounding_boxes

    from core.imaging import denormalize

    pixels = denormalize(batch["images"])
    height, width = pixels.shape[-2:]
    size = torch.tensor([width, height, width, height], dtype=torch.float32)
    panels = []
    for i, image in enumerate(pixels):
        boxes = torch.stack([batch["true_boxes"][i].float().cpu(), batch["pred_boxes"][i].float().cpu()])
        boxes = box_convert(boxes, "cxcywh", "xyxy") * size
        labels = [class_name(int(batch["true_labels"][i])), f"{class_name(int(batch['pred_labels'][i]))} {float(batch['scores'][i]):.2f}"]
        panels.append(draw_bounding_boxes(image, boxes, labels=labels, colors=["lime", "red"], width=1))
    return panels
