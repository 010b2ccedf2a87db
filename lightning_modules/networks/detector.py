"""What every torchvision detector of the suite shares: its classes come from the data, its
pretrained weights from a local file, and it is called the torchvision way.

torchvision's detectors need the number of classes when they are built, and the suite's data
knows it (``len(class_names) + 1`` with the background). A detector of the suite is therefore built
in two steps: the YAML gives its architecture (``num_classes`` may be left out), and the
detection module calls ``build(num_classes, num_keypoints)`` with the data's numbers when it
receives the data's facts. A ``num_classes`` written in the YAML must agree with the data.

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

from core.errors import ConfigError
from lightning_modules.networks.weights import load_weights_file

__all__ = ["TorchvisionDetector", "anchor_generator"]


class TorchvisionDetector(nn.Module):
    """Base of the detector networks: a torchvision model in ``self.detector`` once built.

    Args (of every subclass):
        num_classes: classes with the background; ``None``: from the data (``build``).
        weights: a local checkpoint of the whole torchvision detector (e.g. the COCO-trained
            ``fasterrcnn_resnet50_fpn_coco-258fb6c6.pth``); the class-specific head layers whose
            shape differs from this detector's are left at their initialisation (fine-tuning on
            other classes). ``None``: the backbone's own ``weights`` or random initialisation.
    """

    uses_keypoints = False

    def __init__(self, num_classes: int | None = None, weights: str | None = None) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 2:
            raise ConfigError(f"{type(self).__name__}.num_classes counts the background too and must be >= 2, got {num_classes}")
        self.num_classes = num_classes
        self.num_keypoints = 0
        self.weights = weights
        self.skipped_weights: list[str] = []
        self.detector: nn.Module | None = None

    def build(self, num_classes: int, num_keypoints: int = 0) -> None:
        """Build the torchvision model for ``num_classes`` (background included) and, for keypoint
        detectors, ``num_keypoints``; then load ``weights``."""
        name = type(self).__name__
        if self.detector is not None:
            if num_classes != self.num_classes:
                raise ConfigError(f"model.init_args.network.init_args.num_classes is {self.num_classes} but the data has {num_classes - 1} classes (+ background)")
            return
        if self.uses_keypoints and num_keypoints < 1:
            raise ConfigError(f"{name} needs data with keypoints (the data's source has none)")
        self.num_classes, self.num_keypoints = num_classes, num_keypoints
        self.detector = self.make(num_classes, num_keypoints)
        if self.weights:
            self.skipped_weights = load_weights_file(self.detector, self.weights, "model.init_args.network.init_args.weights", skip_mismatched=True)

    def built(self, num_classes: int | None) -> None:
        """Subclasses call this at the end of ``__init__``: build now when the YAML gave the classes."""
        if num_classes is not None:
            self.build(num_classes, self.num_keypoints)

    @abstractmethod
    def make(self, num_classes: int, num_keypoints: int) -> nn.Module:
        """The torchvision model of this architecture for ``num_classes`` classes."""

    def forward(self, images: list[Tensor] | Tensor, targets: list[dict[str, Any]] | None = None) -> Any:
        if self.detector is None:
            raise RuntimeError(f"{type(self).__name__} is not built: call build(num_classes) or give num_classes")
        return self.detector(list(images), targets)


def resize_batch(images: Sequence[Tensor], size: tuple[int, int], mean: Tensor, std: Tensor) -> Tensor:
    """``(3, H, W)`` images in ``[0, 1]`` -> one ``(N, 3, *size)`` batch, resized bilinearly (as
    torchvision's detectors resize) and normalised by ``mean`` and ``std`` (broadcastable), for the
    detectors of a fixed input size (YOLO v1, the box regressor)."""
    resized = [image[None] if tuple(image.shape[-2:]) == tuple(size) else
               torch.nn.functional.interpolate(image[None], size=size, mode="bilinear", align_corners=False) for image in images]
    return (torch.cat(resized) - mean) / std


def anchor_generator(backbone: nn.Module, sizes: list[list[int]] | None, ratios: list[float], default: tuple[int, ...] | list[list[int]]) -> AnchorGenerator:
    """One anchor set per feature map of ``backbone`` (counted on a tiny forward): ``sizes`` per
    level, or else ``default``: a list per level, or a tuple of sizes spread one per level when the
    backbone has as many levels, else all on every level (torchvision's MobileNetV3 detector)."""
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
        raise ConfigError(f"model.init_args.network.init_args.anchor_sizes has {len(sizes)} levels but the backbone gives {levels} feature maps")
    return AnchorGenerator(tuple(tuple(int(s) for s in level) for level in sizes), (tuple(ratios),) * levels)
