"""Keypoint R-CNN (He et al. 2017, Mask R-CNN section 5): Faster R-CNN with a keypoint branch,
torchvision's model.

    Faster R-CNN (``lightning_modules.networks.faster_rcnn``) ──► RoIAlign 14x14 per detection
        ──► eight 3x3 convolutions of 512 ──► 2x transposed convolution + 2x bilinear
        ──► one 56x56 heatmap per keypoint (a one-hot target: softmax over the map's pixels)

Losses in train mode: Faster R-CNN's four and ``loss_keypoint``. Eval outputs add ``keypoints``
``(N, J, 3)`` (x, y, 1) and ``keypoints_scores`` ``(N, J)``. Targets need ``keypoints``
``(K, J, 3)``; points with visibility 0 do not train. ``num_keypoints`` is the data's.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.detection import keypoint_rcnn

from core.errors import ArgumentValueError
from lightning_modules.networks.faster_rcnn import FasterRCNN, rcnn_kwargs, roi_align

__all__ = ["KeypointRCNN"]


class KeypointRCNN(FasterRCNN):
    """Keypoint R-CNN: every argument of ``FasterRCNN`` and

    Args:
        num_keypoints: keypoints per object, as many as the data's keypoint names (17 for COCO
            persons).
        keypoint_head_layers: channels of the keypoint head's 3x3 convolutions (eight of 512).
    """

    outputs = ("boxes", "keypoints")

    def __init__(self, *args, num_keypoints: int, keypoint_head_layers: list[int] | None = None, **kwargs) -> None:
        if isinstance(num_keypoints, bool) or not isinstance(num_keypoints, int) or num_keypoints < 1:
            raise ArgumentValueError.of(self, "num_keypoints", f"must be an integer >= 1 (the data's keypoints per object), got {num_keypoints!r}")
        self.num_keypoints = num_keypoints
        self._keypoint_layers = list(keypoint_head_layers or [512] * 8)
        super().__init__(*args, **kwargs)

    def make(self) -> nn.Module:
        layers = self._keypoint_layers
        head = keypoint_rcnn.KeypointRCNNHeads(self._backbone.out_channels, layers)
        predictor = keypoint_rcnn.KeypointRCNNPredictor(layers[-1], self.num_keypoints)
        return keypoint_rcnn.KeypointRCNN(self._backbone, num_classes=None, keypoint_roi_pool=roi_align(14, self.options), keypoint_head=head, keypoint_predictor=predictor,
                                          **rcnn_kwargs(self))
