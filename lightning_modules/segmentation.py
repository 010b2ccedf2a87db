"""Semantic segmentation: per-pixel classification with any network that maps images to class scores.

The networks (``lightning_modules.networks.fcn``, ``unet``, ``segnet``, ``deeplab``) know nothing of
this file. Here live the loss (cross-entropy with an ignore index, optional Dice, the auxiliary
head's loss of torchvision's models), the poly learning-rate schedule, inference on whole images or
by sliding windows, the metrics (``lightning_modules.metrics.segmentation``), prediction records and
the pictures logged to W&B.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torch.nn import functional as F
from torchmetrics import MeanMetric

from core.errors import ConfigError
from core.facts import DataFacts
from core.label_sets import IGNORE_INDEX, palette_for
from lightning_modules.metrics.segmentation import SegmentationScores
from lightning_modules.task import TaskModule

__all__ = ["SegmentationModule", "SlidingWindow", "dice_loss", "split_outputs", "center_crop_to", "align", "label_rle"]

Batch = tuple[Tensor, dict[str, Any]]


def split_outputs(outputs: Tensor | dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
    """A network's output as ``(logits, aux_logits or None)``: a plain tensor (FCN, U-Net, SegNet,
    DeepLab v3+) or torchvision's ``{"out": ..., "aux": ...}``."""
    if isinstance(outputs, Tensor):
        return outputs, None
    return outputs["out"], outputs.get("aux")


def center_crop_to(labels: Tensor, size: tuple[int, int]) -> Tensor:
    """The centre ``size`` of ``(..., H, W)`` labels: what a network whose output is smaller than its
    input (the unpadded U-Net) predicts when the data adds no margin."""
    height, width = labels.shape[-2:]
    top, left = (height - size[0]) // 2, (width - size[1]) // 2
    if top < 0 or left < 0:
        raise ValueError(f"the network's output {tuple(size)} is larger than the labels {(height, width)}")
    return labels[..., top : top + size[0], left : left + size[1]]


def align(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Logits ``(N, K, h, w)`` and labels ``(N, H, W)`` cut to their common centre: a network fed a
    mirrored margin predicts it too (crop the logits); one whose output is the centre of its input
    predicts less than the labels (crop the labels)."""
    size = (min(logits.shape[-2], labels.shape[-2]), min(logits.shape[-1], labels.shape[-1]))
    if tuple(logits.shape[-2:]) != size:
        logits = center_crop_to(logits, size)
    if tuple(labels.shape[-2:]) != size:
        labels = center_crop_to(labels, size)
    return logits, labels


def dice_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> Tensor:
    """Soft Dice loss, ``1 - mean_c (2 |P_c ∩ G_c| + eps) / (|P_c| + |G_c| + eps)`` over the classes
    present in the batch's ground truth or predictions, with ``P`` the softmax probabilities and
    ``G`` one-hot labels; ignored pixels are left out of both. ``logits (N, C, H, W)``, ``labels
    (N, H, W)``."""
    num_classes = logits.shape[1]
    valid = (labels != ignore_index).unsqueeze(1)
    probabilities = logits.float().softmax(1) * valid
    one_hot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    intersection = (probabilities * one_hot).sum(dims)
    cardinality = probabilities.sum(dims) + one_hot.sum(dims)
    dice = (2 * intersection + eps) / (cardinality + eps)
    return 1 - dice.mean()


class SlidingWindow:
    """Inference by overlapping windows, for images larger than the network sees in training.

    Args:
        window: window side (or ``(height, width)``) in output (label) pixels.
        stride: step between windows (``None``: two thirds of the window, so windows overlap by a
            third).

    ``__call__(predict, images, output_size, num_classes)``: ``images (N, C, H + 2m, W + 2m)`` where
    ``m`` is the data's input margin (``(images - output_size) / 2``); every window of the label grid
    ``output_size = (H, W)`` is cut from the images with its margin, ``predict`` maps it to logits of
    the window's size (or the tile's, whose margin is then cut off), and overlapping logits are
    averaged. Windows that would leave the image are
    moved back inside (the last row and column end at the border); an image smaller than a window is
    padded with zeros (the mean colour) and the padding's logits dropped. Returns ``(N, num_classes,
    H, W)`` float32.
    """

    def __init__(self, window: int | tuple[int, int] = 512, stride: int | tuple[int, int] | None = None) -> None:
        self.window = (window, window) if isinstance(window, int) else (int(window[0]), int(window[1]))
        if min(self.window) < 1:
            raise ConfigError(f"SlidingWindow.window must be >= 1, got {window}")
        stride = stride if stride is not None else tuple(max(1, (2 * w) // 3) for w in self.window)
        self.stride = (stride, stride) if isinstance(stride, int) else (int(stride[0]), int(stride[1]))
        if min(self.stride) < 1:
            raise ConfigError(f"SlidingWindow.stride must be >= 1, got {stride}")

    @staticmethod
    def _starts(size: int, window: int, stride: int) -> list[int]:
        if size <= window:
            return [0]
        starts = list(range(0, size - window, stride))
        return starts + [size - window]

    def __call__(self, predict: Any, images: Tensor, output_size: tuple[int, int], num_classes: int) -> Tensor:
        height, width = output_size
        margin_h, margin_w = (images.shape[-2] - height) // 2, (images.shape[-1] - width) // 2
        win_h, win_w = min(self.window[0], height), min(self.window[1], width)
        pad_h, pad_w = max(0, self.window[0] - height), max(0, self.window[1] - width)
        if pad_h or pad_w:
            # Small images: pad so every window has the trained size; the padding is cropped off below.
            images = F.pad(images, (0, pad_w, 0, pad_h))
            win_h, win_w = self.window
        total = images.new_zeros((images.shape[0], num_classes, height + pad_h, width + pad_w), dtype=torch.float32)
        count = images.new_zeros((1, 1, height + pad_h, width + pad_w), dtype=torch.float32)
        for top in self._starts(height + pad_h, win_h, self.stride[0]):
            for left in self._starts(width + pad_w, win_w, self.stride[1]):
                tile = images[..., top : top + win_h + 2 * margin_h, left : left + win_w + 2 * margin_w]
                logits = predict(tile).float()
                if logits.shape[-2:] != (win_h, win_w):
                    logits = center_crop_to(logits, (win_h, win_w))  # a padded network predicts the margin too
                total[..., top : top + win_h, left : left + win_w] += logits
                count[..., top : top + win_h, left : left + win_w] += 1
        return (total / count)[..., :height, :width]


def label_rle(labels: np.ndarray, label: int) -> dict[str, Any]:
    """COCO run-length encoding (pycocotools, column-major) of ``labels == label``; ``counts`` as
    a string so that the record is JSON."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray((labels == label).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


class SegmentationModule(TaskModule):
    """Semantic segmentation with cross-entropy (+ Dice), poly schedule and mIoU.

    Args:
        network: images ``(N, C, H, W)`` -> logits ``(N, K, h, w)``, or torchvision's
            ``{"out": logits, "aux": logits}``; ``h, w`` are the input's size, or smaller for networks
            that predict the centre of their input (the unpadded U-Net: the labels are centre-cropped
            to the output, or the data mirrors a margin around the image so that the output covers it).
        optimizer: optimiser factory; ``None`` is SGD with lr 0.01, momentum 0.9, weight decay 1e-4
            (torchvision's segmentation reference).
        scheduler: learning-rate scheduler factory stepped once per epoch; ``None`` is the poly
            schedule ``lr (1 - step / total_steps) ** poly_power`` stepped every iteration over the
            whole run (DeepLab, torchvision's reference).
        poly_power: the poly schedule's power (0.9); 0 keeps the learning rate constant.
        dice_weight: weight of the soft Dice loss added to the cross-entropy (0: cross-entropy only).
        aux_weight: weight of the auxiliary head's cross-entropy where the network has one (0.5, as
            in torchvision's reference).
        class_weights: per-class weights of the cross-entropy (e.g. SegNet's median-frequency
            balancing on CamVid); ``None``: all 1.
        inference: ``None``: whole images at evaluation; a ``SlidingWindow`` for large images.
        log_images: validation images drawn as image | ground truth | prediction and logged to
            W&B every validation (0: none).
        channels_last: keep the network's weights and inputs in channels-last memory format (the
            numbers are unchanged).
        data_facts: the input shape, class names, ignore index and palette, linked from the data
            module's ``facts`` by the CLI.

    Batches are ``(images, target)`` as ``datamodules.segmentation.SegmentationDataModule`` makes
    them (``target["labels"] (N, H, W)``, ``ignore_index`` where unscored). Metrics:
    ``train/loss`` (+ ``train/loss_ce``, ``train/loss_dice``, ``train/loss_aux`` where used);
    ``val/loss``, ``val/miou``, ``val/pixel_accuracy``, ``val/mean_accuracy``, ``val/fw_iou``,
    ``val/iou/<class>``, ``val/miou_best``; the same under ``test/`` without the loss and the best.
    See ``lightning_modules.metrics.segmentation`` for the protocol and for classes absent from
    both prediction and ground truth.
    """

    monitor = "val/miou"
    monitor_mode = "max"
    unsaved_arguments = ("inference",)

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        poly_power: float = 0.9,
        dice_weight: float = 0.0,
        aux_weight: float = 0.5,
        class_weights: list[float] | None = None,
        inference: SlidingWindow | None = None,
        log_images: int = 4,
        channels_last: bool = False,
        data_facts: DataFacts | None = None,
    ) -> None:
        super().__init__(network, optimizer, scheduler, log_images, channels_last, data_facts)
        for name, value in (("poly_power", poly_power), ("dice_weight", dice_weight), ("aux_weight", aux_weight)):
            if value < 0:
                raise ConfigError(f"model.init_args.{name} must be >= 0, got {value}")
        self.poly_power = poly_power
        self.dice_weight = dice_weight
        self.aux_weight = aux_weight
        self.inference = inference
        facts = self.data_facts
        self.class_names = tuple(facts.class_names)
        num_classes = getattr(network, "num_classes", None) or self._infer_num_classes(network)
        if num_classes is not None and self.class_names and num_classes != len(self.class_names):
            raise ConfigError(
                f"model.init_args.network.init_args.num_classes is {num_classes} but the data has "
                f"{len(self.class_names)} classes ({', '.join(self.class_names)})"
            )
        num_classes = num_classes or len(self.class_names)
        if not num_classes:
            raise ConfigError("SegmentationModule needs the number of classes: data_facts with class names, or a network with num_classes")
        self.num_classes = int(num_classes)
        self.ignore_index = IGNORE_INDEX if facts.ignore_index is None else int(facts.ignore_index)
        self.palette = tuple(facts.palette or palette_for(self.num_classes))
        if class_weights is not None and len(class_weights) != self.num_classes:
            raise ConfigError(f"model.init_args.class_weights has {len(class_weights)} weights for {self.num_classes} classes")
        self.register_buffer("class_weights", None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32), persistent=False)
        self.val_loss = MeanMetric()
        self.scores = nn.ModuleDict({split: SegmentationScores(self.num_classes, self.ignore_index) for split in ("val", "test")})

    @staticmethod
    def _infer_num_classes(network: nn.Module) -> int | None:
        """The output channels of the network's last convolution (the classifier)."""
        convs = [m for m in network.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        return convs[-1].out_channels if convs else None

    # ------------------------------------------------------------------ the task contract
    def loss_terms(self, batch: Batch) -> dict[str, Tensor]:
        """``{"loss": total, "loss_ce": ..., ["loss_dice": ...], ["loss_aux": ...]}`` of one batch:
        the network's outputs against ``target["labels"] (N, H, W)`` (centre-cropped to the output
        when it is smaller); the total is ``loss_ce + dice_weight loss_dice + aux_weight loss_aux``."""
        images, target = batch
        logits, aux = split_outputs(self(images))
        logits, labels = align(logits, target["labels"])
        if aux is not None:
            aux = align(aux, labels)[0]
        weight = self.class_weights
        terms = {"loss_ce": F.cross_entropy(logits.float(), labels, weight=weight, ignore_index=self.ignore_index)}
        total = terms["loss_ce"]
        if self.dice_weight > 0:
            terms["loss_dice"] = dice_loss(logits, labels, self.ignore_index)
            total = total + self.dice_weight * terms["loss_dice"]
        if aux is not None and self.aux_weight > 0:
            terms["loss_aux"] = F.cross_entropy(aux.float(), labels, weight=weight, ignore_index=self.ignore_index)
            total = total + self.aux_weight * terms["loss_aux"]
        # A crop of nothing but ignored pixels gives NaN cross-entropy: it carries no gradient, so no loss.
        terms["loss"] = torch.nan_to_num(total, nan=0.0) if (labels != self.ignore_index).sum() == 0 else total
        return terms

    def prediction_records(self, batch: Batch, outputs: dict[str, Tensor]) -> list[dict[str, Any]]:
        """COCO's stuff-segmentation results: per image, one record per predicted class with
        ``image_id`` (a COCO id, else the dataset's name of the image), ``category_id`` (the class
        index into the data's class names), ``category`` (its name), ``segmentation`` (COCO RLE of
        the class's pixels at the image's own size), ``score`` (the mean probability of the class on
        those pixels) and ``index`` (the image's position in the split)."""
        _, target = batch
        records = []
        for i, labels in enumerate(outputs["labels"]):
            height, width = (int(v) for v in target["size"][i])
            array = labels[:height, :width].cpu().numpy()
            probabilities = outputs["scores"][i, :height, :width].float().cpu().numpy()
            coco_id = int(target["image_id"][i])
            for label in np.unique(array):
                records.append({
                    "image_id": coco_id if coco_id >= 0 else target["image_key"][i],
                    "category_id": int(label),
                    "category": self._class_name(int(label)),
                    "segmentation": label_rle(array, int(label)),
                    "score": round(float(probabilities[array == label].mean()), 5),
                    "index": int(target["index"][i]),
                })
        return records

    def _class_name(self, label: int) -> str:
        return self.class_names[label] if label < len(self.class_names) else str(label)

    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """SGD, lr 0.01, momentum 0.9, weight decay 1e-4 (torchvision's segmentation reference)."""
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)

    def step_schedules(self, optimizer: torch.optim.Optimizer) -> list[torch.optim.lr_scheduler.LRScheduler]:
        """Without a configured scheduler, the poly schedule stepped per iteration over the
        Trainer's estimated steps."""
        if self.scheduler_factory is not None or self.poly_power == 0:
            return []
        total = max(1, int(self.trainer.estimated_stepping_batches))
        return [torch.optim.lr_scheduler.PolynomialLR(optimizer, total_iters=total, power=self.poly_power)]

    # ------------------------------------------------------------------ steps
    def predict_logits(self, images: Tensor, output_size: tuple[int, int]) -> Tensor:
        """Evaluation logits ``(N, K, H, W)`` for the label grid ``output_size``: the whole image at
        once, or by ``inference``'s sliding windows."""
        if self.inference is not None:
            return self.inference(lambda tile: split_outputs(self(tile))[0], images, output_size, self.num_classes)
        return split_outputs(self(images))[0].float()

    def evaluate_batch(self, split: str, batch: Batch) -> tuple[Tensor, Tensor]:
        """The scores of the predicted classes; at validation also the cross-entropy as
        ``val/loss`` (weighted by scored pixels). Returns the logits and labels, aligned."""
        images, target = batch
        labels = target["labels"]
        logits, labels = align(self.predict_logits(images, tuple(labels.shape[-2:])), labels)
        self.scores[split].update(logits.argmax(1), labels)
        if split == "val":
            valid = labels != self.ignore_index
            if valid.any():
                self.val_loss(F.cross_entropy(logits, labels, weight=self.class_weights, ignore_index=self.ignore_index), weight=int(valid.sum()))
            self.log("val/loss", self.val_loss, on_epoch=True, batch_size=images.shape[0])
        return logits, labels

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Tensor]:
        """``labels`` ``(N, H, W)`` predicted classes on the batch's label grid (padded images: crop
        each to ``size``), ``scores`` ``(N, H, W)`` their softmax probabilities, ``index`` ``(N,)``."""
        images, target = batch
        probabilities = align(self.predict_logits(images, tuple(target["labels"].shape[-2:])), target["labels"])[0].softmax(1)
        scores, labels = probabilities.max(1)
        return {"labels": labels, "scores": scores, "index": target["index"]}

    # ------------------------------------------------------------------ epoch ends
    def log_evaluation(self, split: str) -> Tensor:
        """Pixel accuracy, mean accuracy, frequency-weighted IoU, IoU per class and mIoU; returns
        the mIoU, NaN (nothing scored) as 0."""
        scores = self.scores[split].compute()
        self.scores[split].reset()
        for key in ("pixel_accuracy", "mean_accuracy", "fw_iou"):
            self.log(f"{split}/{key}", scores[key].float())
        for name, iou in zip(self.class_names or [str(i) for i in range(self.num_classes)], scores["iou"]):
            if not math.isnan(float(iou)):
                self.log(f"{split}/iou/{_metric_name(name)}", iou.float())
        self.log(f"{split}/miou", scores["miou"].float(), prog_bar=True)
        return torch.nan_to_num(scores["miou"].float(), nan=0.0)

    # ------------------------------------------------------------------ pictures
    def image_batch(self, batch: Batch, outputs: tuple[Tensor, Tensor]) -> dict[str, Tensor]:
        """The images cut to the label grid (without the data's margin), labels and predictions."""
        images, (logits, labels), k = batch[0], outputs, self.log_images
        margin_h, margin_w = (images.shape[-2] - labels.shape[-2]) // 2, (images.shape[-1] - labels.shape[-1]) // 2
        shown = images[:k, :, margin_h : margin_h + labels.shape[-2], margin_w : margin_w + labels.shape[-1]]
        return {"images": shown.detach(), "labels": labels[:k].detach(), "predictions": logits[:k].argmax(1).detach()}

    def draw_images(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """``(3, H, 3W)`` uint8 per image: the image, the ground truth over it, the prediction over
        it (palette colours at 60%; ignored pixels show the image)."""
        from torchvision.utils import make_grid

        from core.imaging import denormalize

        images = batch["images"].float().cpu()
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        pixels = denormalize(images)
        palette = torch.tensor(self.palette[: self.num_classes], dtype=torch.float32)
        panels = []
        for pixel, truth, prediction in zip(pixels, batch["labels"].cpu(), batch["predictions"].cpu()):
            overlays = [pixel]
            for labels in (truth, prediction):
                valid = (labels != self.ignore_index) & (labels < len(palette))
                colors = palette[labels.clamp(0, len(palette) - 1)].permute(2, 0, 1)
                blended = torch.where(valid, 0.4 * pixel.float() + 0.6 * colors, pixel.float())
                overlays.append(blended.clamp(0, 255).to(torch.uint8))
            panels.append(make_grid(overlays, nrow=3, padding=0))
        return panels


def _metric_name(name: str) -> str:
    """A class name as a metric key (``traffic light`` -> ``traffic_light``)."""
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "class"
