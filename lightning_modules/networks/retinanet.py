"""RetinaNet (Lin et al. 2017, "Focal Loss for Dense Object Detection"): torchvision's model with
the focal loss's α and γ as arguments.

    ResNet + FPN P3-P7 ──► per level, two 4-conv subnets shared across levels:
        classification: A x C sigmoid scores per position (prior 0.01 at initialisation)
        regression:     A x 4 box deltas per position (class-agnostic)

Training: anchors with IoU ≥ 0.5 to a ground truth are its positives, < 0.4 negatives, between
ignored; the classification loss is the focal loss ``-α_t (1 - p_t)^γ log p_t`` summed over
all non-ignored anchors and divided by the number of positives; γ = 0 is the α-balanced
cross-entropy of the paper's Table 1a. ``retinanet_resnet50_fpn`` is ``ResNetFPN(50,
returned_layers: [2, 3, 4], extra_levels: p6p7)``; ``_v2`` is ``extra_levels: p6p7_from_c5`` with
``head_norm: true`` (GroupNorm 32) and ``box_loss: giou``.

Losses in train mode: ``classification``, ``bbox_regression``.
"""
from __future__ import annotations

import math
from functools import partial

import torch
from torch import Tensor, nn
from torchvision.models.detection import retinanet
from torchvision.ops import sigmoid_focal_loss

from core.errors import ArgumentValueError
from lightning_modules.networks.detector import TorchvisionDetector, anchor_generator

__all__ = ["RetinaNet", "FocalClassificationHead", "check_focal"]

# Three scales per octave on P3-P7 (the paper's anchors; torchvision's default).
PAPER_ANCHORS = [[x, int(x * 2 ** (1 / 3)), int(x * 2 ** (2 / 3))] for x in (32, 64, 128, 256, 512)]


def check_focal(alpha: float | None, gamma: float, owner: object = None, names: tuple[str, str] = ("focal_alpha", "focal_gamma")) -> float:
    """``alpha`` as ``sigmoid_focal_loss`` takes it (``None`` and ``-1``: no α-weighting, -1.0),
    or an ``ArgumentValueError`` that names the argument of ``owner`` (``names``: α's, γ's; owner
    ``None``: ``RetinaNet``) whose value the loss cannot use: a γ below 0 or not finite, an α
    outside [0, 1] other than -1."""
    owner = RetinaNet if owner is None else owner
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not math.isfinite(gamma) or gamma < 0:
        raise ArgumentValueError.of(owner, names[1], f"must be a finite number >= 0 (0: the alpha-balanced cross-entropy), got {gamma!r}")
    if alpha is None or (not isinstance(alpha, bool) and isinstance(alpha, (int, float)) and alpha == -1):
        return -1.0
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ArgumentValueError.of(owner, names[0], f"must be in [0, 1], or null or -1 for no alpha-weighting, got {alpha!r}")
    return float(alpha)


class FocalClassificationHead(retinanet.RetinaNetClassificationHead):
    """torchvision's classification subnet with the focal loss's ``alpha`` (``None`` or -1: no
    α-weighting) and ``gamma`` set by the caller instead of fixed at 0.25 and 2.

    Everything else is torchvision's: the subnet, its initialisation (the last convolution's bias
    at the prior π = 0.01, whatever the loss), and the loss's targets, the anchors between the IoU
    thresholds left out, the sum over anchors and classes divided by ``max(1, positives)`` per
    image, then the mean over images. ``gamma = 0`` is the α-balanced cross-entropy."""

    def __init__(self, in_channels: int, num_anchors: int, num_classes: int, alpha: float | None = 0.25, gamma: float = 2.0, **kwargs) -> None:
        super().__init__(in_channels, num_anchors, num_classes, **kwargs)
        self.alpha = check_focal(alpha, gamma, self, names=("alpha", "gamma"))  # -1.0: no weighting
        self.gamma = float(gamma)

    def compute_loss(self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor], matched_idxs: list[Tensor]) -> Tensor:
        # torchvision's RetinaNetClassificationHead.compute_loss line for line, with alpha and gamma
        # passed to sigmoid_focal_loss instead of its defaults (0.25, 2).
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs):
            foreground = matched >= 0
            classes = torch.zeros_like(logits)
            classes[foreground, target["labels"][matched[foreground]]] = 1.0
            valid = matched != self.BETWEEN_THRESHOLDS
            loss = sigmoid_focal_loss(logits[valid], classes[valid], alpha=self.alpha, gamma=self.gamma, reduction="sum")
            losses.append(loss / max(1, int(foreground.sum())))
        return sum(losses) / len(targets)


class RetinaNet(TorchvisionDetector):
    """RetinaNet.

    Args:
        backbone: a feature pyramid with ``out_channels`` (``ResNetFPN`` with P6, P7).
        num_classes: classes with the background (``len(class_names) + 1`` of the data).
        weights: a local checkpoint of the whole detector (see ``TorchvisionDetector``).
        min_size: the shorter image side after the detector's own resize (800).
        max_size: the longer side's limit (1333).
        anchor_sizes: anchor sizes per level; ``None``: ``x, x 2^(1/3), x 2^(2/3)`` for x = 32 ..
            512 (the paper's three scales).
        aspect_ratios: anchor aspect ratios at every level (0.5, 1, 2).
        focal_alpha: the focal loss's α for the positives, 1 - α for the negatives (0.25; ``None``
            or -1: no α-weighting, as in ``torchvision.ops.sigmoid_focal_loss``).
        focal_gamma: the focal loss's γ (2; 0 gives the α-balanced cross-entropy of the paper's
            Table 1a). Both losses start from the same prior (π = 0.01 in the last bias).
        head_norm: GroupNorm(32) in the subnets (v2).
        box_loss: ``l1`` (torchvision v1), ``smooth_l1`` (the paper) or ``giou`` (v2).
        fg_iou_thresh: IoU from which an anchor is a positive (0.5).
        bg_iou_thresh: IoU below which it is a negative (0.4).
        score_thresh: detections below this score are dropped (0.05).
        nms_thresh: per-class NMS IoU (0.5).
        detections_per_img: detections kept per image (300).
        topk_candidates: candidates kept per level before NMS (1000).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        weights: str | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        anchor_sizes: list[list[int]] | None = None,
        aspect_ratios: list[float] | None = None,
        focal_alpha: float | None = 0.25,
        focal_gamma: float = 2.0,
        head_norm: bool = False,
        box_loss: str = "l1",
        fg_iou_thresh: float = 0.5,
        bg_iou_thresh: float = 0.4,
        score_thresh: float = 0.05,
        nms_thresh: float = 0.5,
        detections_per_img: int = 300,
        topk_candidates: int = 1000,
    ) -> None:
        super().__init__(num_classes, weights)
        check_focal(focal_alpha, focal_gamma, self)
        if box_loss not in ("l1", "smooth_l1", "giou"):
            raise ArgumentValueError.of(self, "box_loss", f"must be l1, smooth_l1 or giou, got {box_loss!r}")
        object.__setattr__(self, "_backbone", backbone)
        self.anchor_sizes = anchor_sizes
        self.aspect_ratios = list(aspect_ratios or [0.5, 1.0, 2.0])
        self.focal_alpha, self.focal_gamma = focal_alpha, focal_gamma
        self.head_norm, self.box_loss = head_norm, box_loss
        self.kwargs = {
            "min_size": min_size, "max_size": max_size, "fg_iou_thresh": fg_iou_thresh, "bg_iou_thresh": bg_iou_thresh,
            "score_thresh": score_thresh, "nms_thresh": nms_thresh, "detections_per_img": detections_per_img, "topk_candidates": topk_candidates,
        }
        self.finish()

    def make(self) -> nn.Module:
        num_classes = self.num_classes
        anchors = anchor_generator(self, self._backbone, self.anchor_sizes, self.aspect_ratios, default=PAPER_ANCHORS)
        channels, per_location = self._backbone.out_channels, anchors.num_anchors_per_location()[0]
        norm = partial(nn.GroupNorm, 32) if self.head_norm else None
        head = retinanet.RetinaNetHead(channels, per_location, num_classes, norm_layer=norm)
        head.classification_head = FocalClassificationHead(channels, per_location, num_classes, self.focal_alpha, self.focal_gamma, norm_layer=norm)
        head.regression_head._loss_type = self.box_loss
        return retinanet.RetinaNet(self._backbone, num_classes, anchor_generator=anchors, head=head, **self.kwargs)
