"""Classification + localisation of one object per image: a CNN with a class head and a box head.

The first task of the course notes (CS231n, "Classification + Localization"): treat localisation
as regression. A convolutional backbone turns the image into a feature map; one linear head scores
the ``C`` classes from its global average (what is there does not depend on where), another
regresses the object's box from the map pooled to a small ``pool_size x pool_size`` grid (where it
is does: a global average would throw the position away, which is why the classic localisation
networks regress from fully connected layers over the spatial map). Two variants of the box head:

* **class-agnostic**: one box per image, 4 outputs (whatever the class, the box is the same);
* **per-class** (the notes' "k boxes", as in Overfeat and R-CNN's per-class regressors): one box
  per class, ``C x 4`` outputs ("the output size multiplies by k"); the box of the class that is
  (or is predicted to be) present is used.

Box convention. Boxes are ``(cx, cy, w, h)`` of the network *input*, normalised to ``[0, 1]``:
``cx = 0`` is the input's left edge and ``1`` its right edge (continuous coordinates, the input
spans ``[0, W] x [0, H]``), ``w = 1`` is the input's full width. A sigmoid keeps every output in
``[0, 1]``. Mapping back to the original image (undoing the letterbox) is the task module's job.

Top-down: ``conv_bn_relu`` -> ``VGGBackbone`` / ``ResNet18Backbone`` (any module with
``out_channels`` will do) -> ``ClassHead``, ``BoxHead`` -> ``Localizer``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import Tensor, nn

__all__ = ["Localizer", "VGGBackbone", "ResNet18Backbone", "ClassHead", "BoxHead", "conv_bn_relu"]

BoxHeadKind = Literal["class_agnostic", "per_class"]


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution (padding 1, no bias: BatchNorm follows), BatchNorm, ReLU; keeps ``H x W``."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class VGGBackbone(nn.Module):
    """VGG-style trunk: stages of ``convs_per_stage`` 3x3 conv-BN-ReLU layers, each stage followed
    by 2x2 max-pooling.

    ``(N, 3, H, W)`` -> ``(N, widths[-1], H / 2**S, W / 2**S)`` with ``S = len(widths)`` stages
    (floor division when ``H`` or ``W`` is not a multiple). ``out_channels`` is ``widths[-1]``.
    """

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), convs_per_stage: int = 2) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if not widths or min(widths) < 1 or convs_per_stage < 1:
            raise ValueError(f"VGGBackbone needs positive widths and convs_per_stage, got {widths}, {convs_per_stage}")
        layers: list[nn.Module] = []
        channels = 3
        for width in widths:
            for _ in range(convs_per_stage):
                layers.append(conv_bn_relu(channels, width))
                channels = width
            layers.append(nn.MaxPool2d(2))
        self.layers = nn.Sequential(*layers)
        self.out_channels = channels

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


class ResNet18Backbone(nn.Module):
    """torchvision's ResNet-18 without its pooling and classifier, built with ``weights=None``
    (random initialisation; no download). ``(N, 3, H, W)`` -> ``(N, 512, H / 32, W / 32)``."""

    def __init__(self) -> None:
        super().__init__()
        from torchvision.models import resnet18

        net = resnet18(weights=None)
        self.layers = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3, net.layer4)
        self.out_channels = 512

    def forward(self, images: Tensor) -> Tensor:
        return self.layers(images)


class ClassHead(nn.Module):
    """Pooled features ``(N, F)`` -> class scores ``(N, C)`` (raw logits)."""

    def __init__(self, in_features: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, features: Tensor) -> Tensor:
        return self.fc(self.dropout(features))


class BoxHead(nn.Module):
    """Flattened grid features ``(N, F)`` -> ``num_boxes`` boxes ``(N, num_boxes, 4)``,
    normalised ``(cx, cy, w, h)`` in ``[0, 1]`` (sigmoid).

    ``hidden > 0`` puts one hidden fully connected layer (ReLU) before the output layer: position
    and size are spread over the grid cells and channels, and a hidden layer combines them better
    than one linear map.
    """

    def __init__(self, in_features: int, num_boxes: int = 1, hidden: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.num_boxes = num_boxes
        layers: list[nn.Module] = []
        if hidden > 0:
            layers += [nn.Linear(in_features, hidden), nn.ReLU(inplace=True)]
            in_features = hidden
        layers += [nn.Dropout(dropout), nn.Linear(in_features, num_boxes * 4)]
        self.layers = nn.Sequential(*layers)

    def forward(self, features: Tensor) -> Tensor:
        return torch.sigmoid(self.layers(features)).view(-1, self.num_boxes, 4)


class Localizer(nn.Module):
    """Class scores and box(es) of the single object in each image.

    Args:
        num_classes: ``C``, the number of object classes.
        backbone: images ``(N, 3, H, W)`` -> features ``(N, F, h, w)``, with ``out_channels = F``
            (``VGGBackbone`` by default, ``ResNet18Backbone``, or any such module).
        box_head: ``class_agnostic`` (one box, 4 outputs) or ``per_class`` (one box per class,
            ``C x 4`` outputs).
        pool_size: side of the grid the feature map is average-pooled to for the box head.
        hidden: width of the box head's hidden layer (0: a single linear layer).
        dropout: dropout before both heads' last linear layer (training only).

    Input: ``(N, 3, H, W)`` normalised images, any size (both heads pool to a fixed size first).

    Output: ``{"logits": (N, C), "boxes": (N, 4)}`` (class-agnostic) or ``(N, C, 4)`` (per-class):
    raw class scores, and boxes as normalised ``(cx, cy, w, h)`` in ``[0, 1]`` of the input (see
    the module docstring). Train and eval modes differ only by BatchNorm and dropout.
    """

    def __init__(
        self,
        num_classes: int,
        backbone: nn.Module | None = None,
        box_head: BoxHeadKind = "class_agnostic",
        pool_size: int = 4,
        hidden: int = 256,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"Localizer.num_classes must be >= 1, got {num_classes}")
        if box_head not in ("class_agnostic", "per_class"):
            raise ValueError(f"Localizer.box_head must be class_agnostic or per_class, got {box_head!r}")
        if pool_size < 1:
            raise ValueError(f"Localizer.pool_size must be >= 1, got {pool_size}")
        self.num_classes = num_classes
        self.box_head_kind = box_head
        self.backbone = backbone if backbone is not None else VGGBackbone()
        features = int(self.backbone.out_channels)
        self.grid = nn.AdaptiveAvgPool2d(pool_size)
        self.class_head = ClassHead(features, num_classes, dropout)
        # The per-class variant is the same head with C boxes instead of one.
        self.box_head = BoxHead(features * pool_size * pool_size, num_classes if box_head == "per_class" else 1, hidden, dropout)

    @property
    def per_class_boxes(self) -> bool:
        return self.box_head_kind == "per_class"

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        features = self.backbone(images)
        logits = self.class_head(features.mean(dim=(2, 3)))
        boxes = self.box_head(self.grid(features).flatten(1))  # (N, F * p * p) -> (N, k, 4)
        return {"logits": logits, "boxes": boxes if self.per_class_boxes else boxes[:, 0]}
