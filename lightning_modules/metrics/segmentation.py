"""Semantic segmentation scores from one confusion matrix: mean IoU, pixel accuracy, mean class
accuracy, frequency-weighted IoU and per-class IoU (the four measures of FCN's Table 2, and
per-class IoU as VOC and Cityscapes report it).

The confusion matrix is torchmetrics' ``MulticlassConfusionMatrix`` (accumulated over the whole
split, synchronised across DDP processes, pixels with ``ignore_index`` left out). Every score is a
ratio of sums over *all* pixels of the split (the VOC devkit's and Cityscapes' protocol), not a
mean over images.

Absent classes. A class with no pixel in the ground truth *and* none in the predictions has an
undefined IoU (0 / 0): it is left out of the mean and reported as NaN in the per-class list. A class
absent from the ground truth but predicted somewhere has IoU 0 and counts (its false positives are
real errors). Mean class accuracy leaves out the classes absent from the ground truth.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics.classification import MulticlassConfusionMatrix

__all__ = ["SegmentationScores", "segmentation_scores"]


def segmentation_scores(confusion: Tensor) -> dict[str, Tensor]:
    """Scores of a ``(C, C)`` confusion matrix (rows: ground truth, columns: prediction).

    Returns: ``miou``, ``pixel_accuracy``, ``mean_accuracy``, ``fw_iou`` (scalars, float64) and
    ``iou`` ``(C,)`` (NaN for classes absent from both).
    """
    confusion = confusion.double()
    true_positive = confusion.diag()
    ground_truth = confusion.sum(1)
    predicted = confusion.sum(0)
    union = ground_truth + predicted - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.full_like(union, float("nan")))
    present = union > 0
    total = confusion.sum()
    labelled = ground_truth > 0
    nan = torch.tensor(float("nan"), dtype=torch.float64, device=confusion.device)
    return {
        "miou": iou[present].mean() if present.any() else nan,
        "pixel_accuracy": true_positive.sum() / total if total > 0 else nan,
        "mean_accuracy": (true_positive[labelled] / ground_truth[labelled]).mean() if labelled.any() else nan,
        "fw_iou": (ground_truth[present] / total * iou[present]).sum() if total > 0 else nan,
        "iou": iou,
    }


class SegmentationScores(MulticlassConfusionMatrix):
    """torchmetrics' confusion matrix whose ``compute()`` returns ``segmentation_scores``.

    ``update(preds, target)``: ``preds`` ``(N, H, W)`` class indices (or ``(N, C, H, W)`` scores),
    ``target`` ``(N, H, W)`` with ``ignore_index`` where unscored.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        super().__init__(num_classes=num_classes, ignore_index=ignore_index, validate_args=False)

    def update(self, preds: Tensor, target: Tensor) -> None:
        if preds.dim() == target.dim() + 1:
            preds = preds.argmax(1)
        super().update(preds, target)

    def compute(self) -> dict[str, Tensor]:  # type: ignore[override]
        return segmentation_scores(super().compute())
