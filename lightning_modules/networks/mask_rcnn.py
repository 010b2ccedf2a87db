"""Mask R-CNN (He et al. 2017): Faster R-CNN with RoIAlign and a mask branch, torchvision's model.

    Faster R-CNN (``lightning_modules.networks.faster_rcnn``) ──► RoIAlign 14x14 per detection
        ──► four 3x3 convolutions ──► 2x transposed convolution ──► one 28x28 mask per class

The mask of a detection is its class's 28x28 map, pasted into the box and thresholded by the
caller (0.5). ``maskrcnn_resnet50_fpn`` is ``ResNetFPN(50)`` with the defaults; ``_v2`` adds batch
norm to the mask head (``mask_head_norm: true``) and the v2 Faster R-CNN options.

Losses in train mode: Faster R-CNN's four and ``loss_mask`` (per-pixel sigmoid cross-entropy of
the ground-truth class's map only). Eval outputs add ``masks`` ``(N, 1, H, W)`` probabilities.
Targets need ``masks`` ``(K, H, W)`` uint8.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.detection import mask_rcnn

from lightning_modules.networks.faster_rcnn import FasterRCNN, rcnn_kwargs, roi_align

__all__ = ["MaskRCNN"]


class MaskRCNN(FasterRCNN):
    """Mask R-CNN: every argument of ``FasterRCNN`` and

    Args:
        mask_head_layers: channels of the mask head's 3x3 convolutions (four of 256).
        mask_head_norm: batch norm after them (v2).
    """

    outputs = ("boxes", "masks")

    def __init__(self, *args, mask_head_layers: list[int] | None = None, mask_head_norm: bool = False, **kwargs) -> None:
        self._mask_options = {"layers": list(mask_head_layers or [256, 256, 256, 256]), "norm": mask_head_norm}
        super().__init__(*args, **kwargs)

    def make(self) -> nn.Module:
        layers = self._mask_options["layers"]
        norm = nn.BatchNorm2d if self._mask_options["norm"] else None
        head = mask_rcnn.MaskRCNNHeads(self._backbone.out_channels, layers, 1, norm_layer=norm)
        predictor = mask_rcnn.MaskRCNNPredictor(layers[-1], layers[-1], self.num_classes)
        return mask_rcnn.MaskRCNN(self._backbone, num_classes=None, mask_roi_pool=roi_align(14, self.options), mask_head=head, mask_predictor=predictor,
                                  **rcnn_kwargs(self))
