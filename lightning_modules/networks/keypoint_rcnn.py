"""Keypoint R-CNN (He et al. 2017, Mask R-CNN section 5): Faster R-CNN with a keypoint branch,
torchvision's model.

    Faster R-CNN (``lightning_modules.networks.faster_rcnn``) ──► RoIAlign 14x14 per detection
        ──► eight 3x3 convolutions of 512 ──► 2x transposed convolution + 2x bilinear
        ──► one 56x56 heatmap per keypoint (a one-hot target: softmax over the map's pixels)

Losses in train mode: Faster R-CNN's four and ``loss_keypoint``. Eval outputs add ``keypoints``
``(N, J, 3)`` (x, y, 1) and ``keypoints_scores`` ``(N, J)``. Targets need ``keypoints``
``(K, J, 3)``; points with visibility 0 do not train. The number of keypoints comes from the data.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.detection import keypoint_rcnn

from core.errors import ConfigError
from lightning_modules.networks.faster_rcnn import FasterRCNN, rcnn_kwargs, roi_align

__all__ = ["KeypointRCNN"]


class KeypointRCNN(FasterRCNN):
    """Keypoint R-CNN: every argument of ``FasterRCNN`` and

    Args:
        num_keypoints: keypoints per object; ``None``: from the data (17 for COCO persons).
        keypoint_head_layers: channels of the keypoint head's 3x3 convolutions (eight of 512).
    """

    outputs = ("boxes", "keypoints")
    uses_keypoints = True

    def __init__(self, *args, num_keypoints: int | None = None, keypoint_head_layers: list[int] | None = None, **kwargs) -> None:
        self._keypoint_layers = list(keypoint_head_layers or [512] * 8)
        self._given_keypoints = num_keypoints
        super().__init__(*args, **kwargs)

    def build(self, num_classes: int, num_keypoints: int = 0) -> None:
        given = self._given_keypoints
        if given is not None and num_keypoints and given != num_keypoints:
            raise ConfigError(f"model.init_args.network.init_args.num_keypoints is {given} but the data's objects have {num_keypoints}")
        super().build(num_classes, num_keypoints or given or 0)

    def built(self, num_classes: int | None) -> None:
        if num_classes is not None and self._given_keypoints is not None:
            self.build(num_classes, self._given_keypoints)

    def make(self, num_classes: int, num_keypoints: int) -> nn.Module:
        layers = self._keypoint_layers
        head = keypoint_rcnn.KeypointRCNNHeads(self._backbone.out_channels, layers)
        predictor = keypoint_rcnn.KeypointRCNNPredictor(layers[-1], num_keypoints)
        return keypoint_rcnn.KeypointRCNN(self._backbone, num_classes=None, keypoint_roi_pool=roi_align(14, self.options), keypoint_head=head, keypoint_predictor=predictor,
                                          **rcnn_kwargs(self._backbone, num_classes, self.options))
