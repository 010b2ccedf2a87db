"""FCOS (Tian et al. 2019): anchor-free one-stage detection, torchvision's model.

    ResNet + FPN P3-P7 ──► per position: C class scores (focal loss), 4 distances to the box's
        sides (GIoU loss) and a centre-ness score (BCE) that down-weights off-centre positions

A position is a positive of the ground truth it falls in, within ``center_sampling_radius``
strides of its centre, on the level whose size range holds the box. ``fcos_resnet50_fpn`` is
``ResNetFPN(50, returned_layers: [2, 3, 4], extra_levels: p6p7)``.

Losses in train mode: ``classification``, ``bbox_regression``, ``bbox_ctrness``.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.detection import fcos
from torchvision.models.detection.anchor_utils import AnchorGenerator

from lightning_modules.networks.detector import TorchvisionDetector

__all__ = ["FCOS"]


class FCOS(TorchvisionDetector):
    """FCOS.

    Args:
        backbone: a feature pyramid with ``out_channels`` (``ResNetFPN`` with P6, P7).
        num_classes: classes with the background (``len(class_names) + 1`` of the data).
        weights: a local checkpoint of the whole detector (see ``TorchvisionDetector``).
        min_size: the shorter image side after the detector's own resize (800).
        max_size: the longer side's limit (1333).
        strides: one "anchor" (a point) per position, of this size per level (8 .. 128).
        center_sampling_radius: positives lie within this many strides of a box's centre (1.5).
        score_thresh: detections below this score are dropped (0.2).
        nms_thresh: per-class NMS IoU (0.6).
        detections_per_img: detections kept per image (100).
        topk_candidates: candidates kept per level before NMS (1000).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        weights: str | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        strides: list[int] | None = None,
        center_sampling_radius: float = 1.5,
        score_thresh: float = 0.2,
        nms_thresh: float = 0.6,
        detections_per_img: int = 100,
        topk_candidates: int = 1000,
    ) -> None:
        super().__init__(num_classes, weights)
        object.__setattr__(self, "_backbone", backbone)
        self.strides = list(strides or [8, 16, 32, 64, 128])
        self.kwargs = {
            "min_size": min_size, "max_size": max_size, "center_sampling_radius": center_sampling_radius, "score_thresh": score_thresh,
            "nms_thresh": nms_thresh, "detections_per_img": detections_per_img, "topk_candidates": topk_candidates,
        }
        self.finish()

    def make(self) -> nn.Module:
        num_classes = self.num_classes
        anchors = AnchorGenerator(tuple((s,) for s in self.strides), ((1.0,),) * len(self.strides))
        return fcos.FCOS(self._backbone, num_classes, anchor_generator=anchors, **self.kwargs)
