"""Feature pyramids for torchvision's detectors, built as torchvision's builders build them, from
weights in a local file (never downloaded; ``weights.load_weights_file``).

* ``ResNetFPN``: a ResNet's stages C2..C5 (or a subset) under an FPN of 256 channels, with the
  extra levels of the detector family (max-pool P6 for Faster/Mask/Keypoint R-CNN; P6, P7 for
  RetinaNet and FCOS).
* ``MobileNetV3FPN``: MobileNetV3-Large's last two stages under an FPN (torchvision's
  ``fasterrcnn_mobilenet_v3_large_fpn``), with a width multiplier for CPU-sized runs.
* ``VGG16C5``: the single stride-16 map of VGG-16's conv5_3 (Faster R-CNN as in Ren et al. 2015),
  with ``VGG16BoxHead``, VGG's fc6 and fc7 as the detector's box head.

The first two are torchvision's ``BackboneWithFPN`` with the very parameter names of torchvision's
models, so a checkpoint of a whole torchvision detector loads into the detector that holds them.

Inputs ``(N, 3, H, W)`` normalised images; outputs an ``OrderedDict`` of feature maps
``"0", "1", ... , "pool"|"p6", "p7"`` with ``out_channels`` (256) channels, strides 4..64 (ResNet)
or 16, 32, 64 (MobileNetV3), as the detector heads expect; ``VGG16C5`` one map ``"0"`` of 512
channels at stride 16.

Pretraining follows torchvision: with ``weights`` (a classification checkpoint of the backbone)
batch norms are frozen (``FrozenBatchNorm2d``, the statistics of ImageNet) and only the last
``trainable_layers`` stages train (3 by default); from scratch every stage trains with ordinary
batch norm. VGG-16 has no batch norm: with ``weights`` its first two stages (conv1, conv2) are
fixed, as in the Faster R-CNN paper ("conv3_1 and up" are fine-tuned).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Literal

from torch import Tensor, nn
from torchvision import models
from torchvision.models.detection.backbone_utils import BackboneWithFPN, _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from lightning_modules.networks.weights import load_weights_file

__all__ = ["ResNetFPN", "MobileNetV3FPN", "VGG16C5", "VGG16BoxHead"]

ExtraLevels = Literal["pool", "p6p7", "p6p7_from_c5"]


def _trainable(weights: str | None, trainable_layers: int | None, maximum: int) -> int:
    """torchvision's rule: 3 trainable stages from pretrained weights, all of them from scratch."""
    if trainable_layers is None:
        return 3 if weights else maximum
    if not 0 <= trainable_layers <= maximum:
        raise ValueError(f"trainable_layers must be in [0, {maximum}], got {trainable_layers}")
    return trainable_layers


def _adopt(target: BackboneWithFPN, built: BackboneWithFPN) -> None:
    """Make ``target`` the module ``built`` (same children, same parameter names)."""
    nn.Module.__init__(target)
    target.body = built.body
    target.fpn = built.fpn
    target.out_channels = built.out_channels


class ResNetFPN(BackboneWithFPN):
    """A ResNet under a feature pyramid network.

    Args:
        depth: 18, 34, 50, 101 or 152.
        weights: a local ImageNet checkpoint of the ResNet (torchvision's ``resnet50`` state dict);
            ``None``: random initialisation.
        trainable_layers: stages that train, counted from the top (0-5); ``None``: 3 with
            ``weights``, 5 without.
        frozen_batch_norm: ``FrozenBatchNorm2d`` in the ResNet; ``None``: frozen with ``weights``.
        fpn_norm: batch norm in the FPN's convolutions (the "v2" models of Li et al. 2021).
        returned_layers: the ResNet stages the FPN reads (1 = C2 .. 4 = C5).
        extra_levels: ``pool`` (P6 by max-pooling P5: Faster, Mask, Keypoint R-CNN),
            ``p6p7`` (P6, P7 from P5: torchvision's RetinaNet v1 and FCOS) or ``p6p7_from_c5``
            (from C5: RetinaNet v2 and the paper).
    """

    def __init__(
        self,
        depth: int = 50,
        weights: str | None = None,
        trainable_layers: int | None = None,
        frozen_batch_norm: bool | None = None,
        fpn_norm: bool = False,
        returned_layers: list[int] | None = None,
        extra_levels: ExtraLevels = "pool",
    ) -> None:
        builders = {18: models.resnet18, 34: models.resnet34, 50: models.resnet50, 101: models.resnet101, 152: models.resnet152}
        if depth not in builders:
            raise ValueError(f"ResNetFPN.depth must be one of {sorted(builders)}, got {depth}")
        frozen = bool(weights) if frozen_batch_norm is None else frozen_batch_norm
        resnet = builders[depth](weights=None, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
        if weights:
            resnet.fc = nn.Identity()  # the detector does not use the ImageNet classifier
            load_weights_file(resnet, weights, "ResNetFPN.weights", drop_prefixes=("fc.",))
        returned = list(returned_layers or [1, 2, 3, 4])
        c5 = resnet.inplanes  # 512 (ResNet-18/34) or 2048 channels
        extra = {"pool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(256, 256), "p6p7_from_c5": LastLevelP6P7(c5, 256)}
        if extra_levels not in extra:
            raise ValueError(f"ResNetFPN.extra_levels must be one of {sorted(extra)}, got {extra_levels!r}")
        built = _resnet_fpn_extractor(
            resnet, _trainable(weights, trainable_layers, 5), returned, extra[extra_levels], norm_layer=nn.BatchNorm2d if fpn_norm else None,
        )
        _adopt(self, built)


class MobileNetV3FPN(BackboneWithFPN):
    """MobileNetV3-Large's last two stages (strides 16 and 32) under an FPN, with a max-pooled P6:
    torchvision's ``fasterrcnn_mobilenet_v3_large_fpn`` backbone.

    Args:
        weights: a local ImageNet checkpoint of ``mobilenet_v3_large``; ``None``: random init.
        width_mult: channel multiplier of the network (1.0 for the paper's; 0.5 for CPU runs; the
            ImageNet checkpoints exist for 1.0 only).
        trainable_layers: stages that train, counted from the top (0-6); ``None``: 3 with
            ``weights``, all without.
        frozen_batch_norm: ``FrozenBatchNorm2d`` in the MobileNet; ``None``: frozen with ``weights``.
        fpn_channels: the FPN's width (256 in torchvision; the RPN and RoI heads read it, so a
            narrower pyramid makes the whole detector cheaper on a CPU).
        returned_layers: the MobileNet stages the FPN reads, counted from the stem (0) to the last
            (5); torchvision's detector reads ``[4, 5]``: both end at stride 32, so its finest
            level is stride 32 (10x10 at 320). ``[3, 4, 5]`` adds the stride-16 stage for small
            objects.
    """

    def __init__(
        self,
        weights: str | None = None,
        width_mult: float = 1.0,
        trainable_layers: int | None = None,
        frozen_batch_norm: bool | None = None,
        fpn_channels: int = 256,
        returned_layers: list[int] | None = None,
    ) -> None:
        frozen = bool(weights) if frozen_batch_norm is None else frozen_batch_norm
        mobilenet = models.mobilenet_v3_large(weights=None, width_mult=width_mult, norm_layer=FrozenBatchNorm2d if frozen else nn.BatchNorm2d)
        if weights:
            mobilenet.classifier = nn.Identity()
            load_weights_file(mobilenet, weights, "MobileNetV3FPN.weights", drop_prefixes=("classifier.",))
        built = _mobilenet_extractor(mobilenet, True, _trainable(weights, trainable_layers, 6), returned_layers=returned_layers)
        if fpn_channels != built.out_channels:
            # torchvision's extractor fixes 256 channels: the same pyramid at another width.
            in_channels = [block[0].in_channels for block in built.fpn.inner_blocks]
            built = BackboneWithFPN(mobilenet.features, dict(built.body.return_layers), in_channels, fpn_channels)
        _adopt(self, built)


# --------------------------------------------------------------------------- VGG-16 (Faster R-CNN paper)
VGG16_STAGE_WIDTHS = (64, 128, 256, 512, 512)
VGG16_STAGE_CONVS = (2, 2, 3, 3, 3)


def _vgg_init(module: nn.Module) -> None:
    """torchvision's VGG initialisation: He normal (fan out) convolutions, N(0, 0.01) linear
    layers, zero biases."""
    for layer in module.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        elif isinstance(layer, nn.Linear):
            nn.init.normal_(layer.weight, 0, 0.01)
            nn.init.zeros_(layer.bias)


class VGG16C5(nn.Module):
    """VGG-16's conv1_1 .. conv5_3, the shared convolutions of Faster R-CNN (Ren et al. 2015):
    torchvision's ``vgg16().features`` without its last max-pool, so one map of stride 16.

    Args:
        weights: a local torchvision ``vgg16`` ImageNet state dict (``vgg16-397923af.pth``,
            ``VGG16_Weights.IMAGENET1K_V1``): its ``features.*`` entries fill the 13 convolutions
            (the ``classifier.*`` ones are ``VGG16BoxHead``'s); ``None``: random initialisation
            (torchvision VGG's).
        trainable_layers: VGG stages that train, counted from the top (0-5); ``None``: 3 with
            ``weights`` (conv3_1 and up; conv1 and conv2 fixed, as in the paper), 5 without.
        widths: the five stage widths (64, 128, 256, 512, 512); smaller in tests (the ImageNet
            file needs the default).

    Input ``(N, 3, H, W)`` normalised images; output ``OrderedDict(("0", (N, widths[4], H/16,
    W/16)))`` (the 2x2 max-pools floor), ``out_channels`` = ``widths[4]``. Parameter names are
    torchvision's (``features.0.weight`` .. ``features.28.bias``).
    """

    def __init__(self, weights: str | None = None, trainable_layers: int | None = None, widths: list[int] | None = None) -> None:
        super().__init__()
        widths = tuple(widths or VGG16_STAGE_WIDTHS)
        if len(widths) != 5 or min(widths) < 1:
            raise ValueError(f"VGG16C5.widths must give the 5 VGG-16 stage widths, got {widths}")
        layers: list[nn.Module] = []
        channels = 3
        for stage, (width, convs) in enumerate(zip(widths, VGG16_STAGE_CONVS)):
            if stage:
                layers.append(nn.MaxPool2d(2, stride=2))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
        self.features = nn.Sequential(*layers)  # the indices of torchvision's vgg16.features[:30]
        self.out_channels = channels
        _vgg_init(self)
        if weights:
            load_weights_file(self, weights, "VGG16C5.weights", drop_prefixes=("classifier.",))
        trainable = _trainable(weights, trainable_layers, 5)
        # Each stage starts after a max-pool: [0, 5, 10, 17, 24, 30].
        starts = [0] + [i + 1 for i, layer in enumerate(self.features) if isinstance(layer, nn.MaxPool2d)] + [len(self.features)]
        for parameter in self.features[: starts[5 - trainable]].parameters():
            parameter.requires_grad_(False)

    def forward(self, x: Tensor) -> OrderedDict[str, Tensor]:
        return OrderedDict([("0", self.features(x))])


class VGG16BoxHead(nn.Module):
    """VGG-16's fc6 and fc7 as the box head of Faster R-CNN on ``VGG16C5`` (Ren et al. 2015):
    flatten the ``(R, in_channels, 7, 7)`` RoI features, then ``Linear(in_channels*49, width)``,
    ReLU, dropout, ``Linear(width, width)``, ReLU, dropout: torchvision's ``vgg16().classifier[:6]``
    with its parameter names (``classifier.0``, ``classifier.3``). Output ``(R, width)``,
    ``out_channels`` = ``width``.

    Args:
        weights: a local torchvision ``vgg16`` ImageNet state dict: ``classifier.0`` and
            ``classifier.3`` fill fc6 and fc7 (``features.*`` are ``VGG16C5``'s, the 1000-way
            ``classifier.6`` is left out); ``None``: torchvision VGG's N(0, 0.01).
        in_channels: channels of the RoI features (the backbone's ``out_channels``, 512).
        width: fc6's and fc7's width (4096; the ImageNet file needs it).
        dropout: dropout probability after fc6 and after fc7 (0.5, VGG's).
    """

    resolution = 7  # the RoI pool's output size that fc6 reads (VGG's pool5 on a 224 image)

    def __init__(self, weights: str | None = None, in_channels: int = 512, width: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"VGG16BoxHead.dropout must be in [0, 1), got {dropout}")
        self.in_channels, self.out_channels = in_channels, width
        self.classifier = nn.Sequential(
            nn.Linear(in_channels * self.resolution**2, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(width, width), nn.ReLU(inplace=True), nn.Dropout(dropout),
        )
        _vgg_init(self)
        if weights:
            load_weights_file(self, weights, "VGG16BoxHead.weights", drop_prefixes=("features.", "classifier.6."))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(x.flatten(start_dim=1))
