"""SSD300 (Liu et al. 2016) with its VGG-16 trunk: torchvision's ``ssd300_vgg16``.

    VGG-16 conv1-conv5 (pool5 3x3/1, conv6 dilated, conv7 1x1; conv4_3 L2-normalised) + extra
    layers ──► six maps (38, 19, 10, 5, 3, 1) ──► per position and default box: C + 1 scores and
    4 offsets (3x3 convolutions)

Images are resized to 300x300 inside. Default boxes: scales 0.07 .. 1.05, aspect ratios {1, 2, 1/2}
(+ {3, 1/3} on the middle maps). Training matches default boxes to ground truth at IoU ≥ 0.5 (and
each ground truth to its best box), hard-negative mining at 3:1, Smooth-L1 + cross-entropy.

Losses in train mode: ``bbox_regression``, ``classification``.
"""
from __future__ import annotations

from torch import nn
from torchvision import models
from torchvision.models.detection import ssd
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from lightning_modules.networks.detection_backbones import _trainable
from lightning_modules.networks.weights import load_weights_file
from lightning_modules.networks.detector import TorchvisionDetector

__all__ = ["SSD300"]


class SSD300(TorchvisionDetector):
    """SSD300-VGG16.

    Args:
        num_classes: classes with the background (``len(class_names) + 1`` of the data).
        weights: a local checkpoint of the whole detector (see ``TorchvisionDetector``).
        backbone_weights: a local ImageNet checkpoint of ``vgg16`` (torchvision's
            ``vgg16_features`` weights are the ones its SSD was trained from); ``None``: random.
        trainable_layers: VGG stages that train (0-5); ``None``: 4 with weights, 5 without.
        score_thresh: detections below this score are dropped (0.01).
        nms_thresh: per-class NMS IoU (0.45).
        detections_per_img: detections kept per image (200).
        iou_thresh: IoU from which a default box is a positive (0.5).
        topk_candidates: candidates kept per class before NMS (400).
        positive_fraction: positives per hard-mined sample (0.25: 3 negatives per positive).
    """

    def __init__(
        self,
        num_classes: int,
        weights: str | None = None,
        backbone_weights: str | None = None,
        trainable_layers: int | None = None,
        score_thresh: float = 0.01,
        nms_thresh: float = 0.45,
        detections_per_img: int = 200,
        iou_thresh: float = 0.5,
        topk_candidates: int = 400,
        positive_fraction: float = 0.25,
    ) -> None:
        super().__init__(num_classes, weights)
        self.backbone_weights = backbone_weights
        # torchvision trains 4 of VGG's 5 stages from ImageNet weights (3 for its other detectors).
        self.trainable_layers = _trainable(backbone_weights, 4 if backbone_weights and trainable_layers is None else trainable_layers, 5)
        self.kwargs = {
            "score_thresh": score_thresh, "nms_thresh": nms_thresh, "detections_per_img": detections_per_img,
            "iou_thresh": iou_thresh, "topk_candidates": topk_candidates, "positive_fraction": positive_fraction,
            # The VGG weights expect 0-255 pixels minus the ImageNet mean (Caffe's convention).
            "image_mean": [0.48235, 0.45882, 0.40784], "image_std": [1.0 / 255.0] * 3,
        }
        self.finish()

    def make(self) -> nn.Module:
        num_classes = self.num_classes
        vgg = models.vgg16(weights=None)
        if self.backbone_weights:
            vgg.classifier = nn.Identity()
            load_weights_file(vgg, self.backbone_weights, f"{type(self).__name__}.backbone_weights", drop_prefixes=("classifier.",))
        backbone = ssd._vgg_extractor(vgg, False, self.trainable_layers)
        anchors = DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]], scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05], steps=[8, 16, 32, 64, 100, 300])
        return ssd.SSD(backbone, anchors, (300, 300), num_classes, **self.kwargs)
