"""What every torchvision detector of the suite shares: its classes given like any other
argument, its pretrained weights from a local file, and it is called the torchvision way.

A detector is complete after its ``__init__``: the YAML gives ``num_classes`` (background
included: ``len(class_names) + 1`` of the data) and, for keypoint detectors, ``num_keypoints``;
the weights are loaded there too. The detection module checks them against the data's facts.

Inputs and outputs are torchvision's: ``forward(images, targets=None)`` takes a list of
``(3, H, W)`` float images in ``[0, 1]`` of any sizes (or one ``(N, 3, H, W)`` batch), and their
targets in training (``boxes`` XYXY absolute pixels, ``labels`` ``1..C``, ``masks``,
``keypoints``); it returns a dict of losses in train mode and, in eval mode, one dict per image
of ``boxes``, ``labels``, ``scores`` (and ``masks`` ``(N, 1, H, W)`` probabilities,
``keypoints`` ``(N, J, 3)``, ``keypoints_scores``), in the input images' own coordinates.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator

from core.errors import ArgumentValueError
from lightning_modules.networks.weights import load_weights_file

__all__ = ["TorchvisionDetector", "anchor_generator"]


class TorchvisionDetector(nn.Module):
    """Base of the detector networks: the torchvision model in ``self.detector``.

    Args (of every subclass):
        num_classes: classes with the background (``len(class_names) + 1`` of the data).
        weights: a local checkpoint of the whole torchvision detector (e.g. the COCO-trained
            ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``); the class-specific head layers whose
            shape differs from this detector's are left at their initialisation (fine-tuning on
            other classes). ``None``: the backbone's own ``weights`` or random initialisation.

    A subclass stores its options, then calls ``finish()`` as the last line of its ``__init__``.
    """

    num_keypoints = 0  # keypoints per object the detector predicts (keypoint detectors set it)

    def __init__(self, num_classes: int, weights: str | None = None) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ArgumentValueError.of(self, "num_classes", f"counts the background too and must be an integer >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.weights = weights
        self.skipped_weights: list[str] = []

    def finish(self) -> None:
        """Build the torchvision model (``make``) and load ``weights`` into it."""
        self.detector = self.make()
        if self.weights:
            self.skipped_weights = load_weights_file(self.detector, self.weights, f"{type(self).__name__}.weights", skip_mismatched=True)

    @abstractmethod
    def make(self) -> nn.Module:
        """The torchvision model of this architecture for ``num_classes`` (and ``num_keypoints``)."""

    def forward(self, images: list[Tensor] | Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        return self.detector(list(images), targets)


def resize_batch(images: Sequence[Tensor], size: tuple[int, int], mean: Tensor, std: Tensor) -> Tensor:
    """``(3, H, W)`` images in ``[0, 1]`` -> one ``(N, 3, *size)`` batch, resized bilinearly (as
    torchvision's detectors resize) and normalised by ``mean`` and ``std`` (broadcastable), for the
    detectors of a fixed input size (YOLO v1, the box regressor)."""
    resized = [image[None] if tuple(image.shape[-2:]) == tuple(size) else
               torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False) for image in images]
    return (torch.cat(resized) - mean) / std


def anchor_generator(owner: nn.Module, backbone: nn.Module, sizes: list[list[int]] | None, ratios: list[float],
                     default: tuple[int, ...] | list[list[int]]) -> AnchorGenerator:
    """One anchor set per feature map of ``backbone`` (counted on a tiny forward): ``sizes`` per
    level, or else ``default``: a list per level, or a tuple of sizes spread one per level when the
    backbone has as many levels, else all on every level (torchvision's MobileNetV3 detector).
    ``owner``: the detector whose ``anchor_sizes`` an error names."""
    was_training = backbone.training
    backbone.eval()
    with torch.no_grad():
        levels = len(backbone(torch.zeros(1, 3, 64, 64)))
    backbone.train(was_training)
    if sizes is None:
        if isinstance(default, list):
            sizes = default
        else:
            sizes = [[s] for s in default] if levels == len(default) else [list(default)] * levels
    if len(sizes) != levels:
        raise ArgumentValueError.of(owner, "anchor_sizes", f"has {len(sizes)} levels but the backbone gives {levels} feature maps")
    return AnchorGenerator(tuple(tuple(int(s) for s in level) for level in sizes), (tuple(ratios),) * levels)
