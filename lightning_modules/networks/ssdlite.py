"""SSDlite320 with MobileNetV3-Large (Howard et al. 2019): torchvision's
``ssdlite320_mobilenet_v3_large``.

    MobileNetV3-Large (C4 expansion layer and C5, reduced tail from scratch) + four extra
    depthwise-separable blocks ──► six maps ──► depthwise-separable prediction heads

Images are resized to 320x320 inside and scaled to ``[-1, 1]``. Default boxes: 6 per position
(ratios 2, 3), scales 0.2 .. 0.95.

Losses in train mode: ``bbox_regression``, ``classification``.
"""
from __future__ import annotations

from functools import partial

from torch import nn
from torchvision import models
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection import ssd, ssdlite
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator

from lightning_modules.networks.detection_backbones import _trainable
from lightning_modules.networks.weights import load_weights_file
from lightning_modules.networks.detector import TorchvisionDetector

__all__ = ["SSDLite320"]


class SSDLite320(TorchvisionDetector):
    """SSDlite320-MobileNetV3-Large.

    Args:
        num_classes: classes with the background (``len(class_names) + 1`` of the data).
        weights: a local checkpoint of the whole detector (see ``TorchvisionDetector``).
        backbone_weights: a local ImageNet checkpoint of ``mobilenet_v3_large``; ``None``: random
            (then the tail is reduced, MobileNetV3 paper Table 6, as torchvision does).
        width_mult: channel multiplier of the MobileNet (1.0; smaller for CPU tests).
        trainable_layers: MobileNet stages that train (0-6; all by default).
        score_thresh: detections below this score are dropped (0.001).
        nms_thresh: per-class NMS IoU (0.55).
        detections_per_img: detections kept per image (300).
        topk_candidates: candidates kept per class before NMS (300).
    """

    def __init__(
        self,
        num_classes: int,
        weights: str | None = None,
        backbone_weights: str | None = None,
        width_mult: float = 1.0,
        trainable_layers: int | None = None,
        score_thresh: float = 0.001,
        nms_thresh: float = 0.55,
        detections_per_img: int = 300,
        topk_candidates: int = 300,
    ) -> None:
        super().__init__(num_classes, weights)
        self.backbone_weights = backbone_weights
        self.width_mult = width_mult
        self.trainable_layers = 6 if trainable_layers is None else _trainable(backbone_weights, trainable_layers, 6)
        self.kwargs = {
            "score_thresh": score_thresh, "nms_thresh": nms_thresh, "detections_per_img": detections_per_img, "topk_candidates": topk_candidates,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
        }
        self.finish()

    def make(self) -> nn.Module:
        num_classes = self.num_classes
        norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.03)
        mobilenet = models.mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=not self.backbone_weights, width_mult=self.width_mult)
        if self.backbone_weights:
            mobilenet.classifier = nn.Identity()
            load_weights_file(mobilenet, self.backbone_weights, f"{type(self).__name__}.backbone_weights", drop_prefixes=("classifier.",))
        else:
            ssdlite._normal_init(mobilenet)
        backbone = ssdlite._mobilenet_extractor(mobilenet, self.trainable_layers, norm)
        size = (320, 320)
        anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
        channels = det_utils.retrieve_out_channels(backbone, size)
        head = ssdlite.SSDLiteHead(channels, anchors.num_anchors_per_location(), num_classes, norm)
        return ssd.SSD(backbone, anchors, size, num_classes, head=head, **self.kwargs)
