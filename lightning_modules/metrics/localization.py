"""Localisation accuracy of single-object images (the ImageNet classification + localisation criterion).

torchmetrics has top-1 accuracy (``MulticlassAccuracy``) but no single-box localisation metric, so
this is ours; the IoU itself is ``torchvision.ops.box_iou``. An image is correctly localised when
its predicted class is right **and** its predicted box overlaps the ground truth with IoU
``>= iou_threshold`` (0.5 on ImageNet). The mean IoU is over all images, whatever their class.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_iou

__all__ = ["LocalizationAccuracy", "paired_iou"]


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of ``boxes1[i]`` with ``boxes2[i]``: ``(N, 4)``, ``(N, 4)`` XYXY -> ``(N,)``."""
    if boxes1.shape != boxes2.shape:
        raise ValueError(f"paired_iou: shapes differ: {tuple(boxes1.shape)} and {tuple(boxes2.shape)}")
    if boxes1.numel() == 0:
        return boxes1.new_zeros(0)
    return box_iou(boxes1.double(), boxes2.double()).diagonal()


class LocalizationAccuracy(Metric):
    """Mean IoU and localisation accuracy accumulated over batches (sum-reduced across DDP ranks).

    Args:
        iou_threshold: an image counts as localised when its IoU is at least this (``>=``).

    ``update(pred_boxes, pred_labels, target_boxes, target_labels)``: boxes ``(N, 4)`` XYXY in the
    same coordinates (original-image pixels for reported numbers), labels ``(N,)`` class indices.

    ``compute()`` -> ``{"mean_iou", "loc_accuracy"}``, fractions in ``[0, 1]`` (NaN before any image).
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, iou_threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.iou_threshold = iou_threshold
        self.add_state("iou_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("correct", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred_boxes: Tensor, pred_labels: Tensor, target_boxes: Tensor, target_labels: Tensor) -> None:
        iou = paired_iou(pred_boxes, target_boxes)
        if pred_labels.shape != iou.shape or target_labels.shape != iou.shape:
            raise ValueError(f"LocalizationAccuracy: {iou.numel()} boxes but labels {tuple(pred_labels.shape)} and {tuple(target_labels.shape)}")
        correct = (pred_labels == target_labels) & (iou >= self.iou_threshold)
        self.iou_sum += iou.sum()
        self.correct += correct.sum()
        self.total += iou.numel()

    def compute(self) -> dict[str, Tensor]:
        if self.total == 0:
            nan = torch.tensor(float("nan"), dtype=torch.float64, device=self.total.device)
            return {"mean_iou": nan, "loc_accuracy": nan.clone()}
        return {"mean_iou": self.iou_sum / self.total, "loc_accuracy": self.correct / self.total}
