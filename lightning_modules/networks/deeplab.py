"""DeepLab v3 (Chen, Papandreou, Schroff, Adam, "Rethinking Atrous Convolution for Semantic Image
Segmentation", arXiv:1706.05587) through torchvision, and DeepLab v3+ (Chen, Zhu, Papandreou, Schroff,
Adam, "Encoder-Decoder with Atrous Separable Convolution for Semantic Image Segmentation", ECCV 2018,
arXiv:1802.02611) on a torchvision ResNet.

DeepLab v3+ topology:

* backbone: a ResNet-50/101 whose last stride(s) are replaced by dilation, for an output stride (OS) of
  16 (layer4 dilated) or 8 (layer3 and layer4 dilated);
* ASPP on the layer4 features: a 1x1 conv, three 3x3 atrous convs with rates 6/12/18 at OS 16 (doubled
  at OS 8), and image pooling (global average, 1x1 conv, broadcast back), each with 256 channels + BN +
  ReLU; concatenated and projected by a 1x1 conv to 256 channels (+ BN, ReLU, dropout 0.1 as in the
  authors' TensorFlow code). Optionally the atrous 3x3 convs are depthwise-separable (depthwise 3x3 +
  BN + ReLU, pointwise 1x1 + BN + ReLU), as the paper does with Xception;
* decoder: the layer1 features (stride 4) projected to 48 channels (1x1 conv + BN + ReLU), the ASPP
  output upsampled bilinearly to their size and concatenated, two 3x3 convs (256 channels, + BN + ReLU;
  separable with the option above), a 1x1 conv to the classes, and bilinear upsampling to the input size.

The paper's ResNet-101 numbers (VOC 2012 val, 78.85 mIoU at OS 16) are in
shared/reference/PAPER_NUMBERS.md, section 3b; torchvision's DeepLab v3 parameter counts in section 2b
(42,004,074 for ResNet-50 and 60,996,202 for ResNet-101, 21 classes, aux head included).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import segmentation as tv_segmentation
from torchvision.models.resnet import Bottleneck, ResNet

from lightning_modules.networks.fcn import TorchvisionSegmentation
from lightning_modules.networks.weights import load_weights_file

__all__ = [
    "DeepLabV3ResNet", "ResNetBackbone", "ConvBNReLU", "SeparableConvBNReLU", "ImagePooling", "ASPP",
    "DeepLabV3PlusDecoder", "DeepLabV3Plus", "aspp_rates",
]

RESNET_BLOCKS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


# --------------------------------------------------------------------------- DeepLab v3 (torchvision)
class DeepLabV3ResNet(TorchvisionSegmentation):
    """torchvision's DeepLab v3 on a dilated ResNet-50/101 (output stride 8, ASPP rates 12/24/36,
    bilinear upsampling of the logits to the input size).

    Args:
        depth: 50 or 101.
        num_classes: score channels.
        aux_loss: add torchvision's auxiliary FCN head on layer3.
        weights_path: optional local state dict of the whole model.
        backbone_weights_path: optional local torchvision ResNet state dict (ImageNet).

    Input: ``(N, C, H, W)`` float. Output: a dict ``{"out": (N, num_classes, H, W)}`` plus ``"aux"`` of
    the same shape when ``aux_loss`` is on, the same in train and eval mode. The ASPP image-pooling branch
    batch-normalises 1x1 maps, so training needs ``N >= 2``.
    """

    def __init__(
        self,
        depth: Literal[50, 101] = 101,
        num_classes: int = 21,
        aux_loss: bool = True,
        weights_path: str | Path | None = None,
        backbone_weights_path: str | Path | None = None,
    ) -> None:
        builders = {50: tv_segmentation.deeplabv3_resnet50, 101: tv_segmentation.deeplabv3_resnet101}
        if depth not in builders:
            raise ValueError(f"depth must be 50 or 101, got {depth}")
        super().__init__(builders[depth], num_classes, aux_loss, weights_path, backbone_weights_path)


# --------------------------------------------------------------------------- DeepLab v3+ blocks
class ResNetBackbone(nn.Module):
    """A torchvision ResNet (bottleneck blocks) with dilation instead of stride in its last stage(s).

    Args:
        depth: 50 or 101 (block counts (3, 4, 6, 3) and (3, 4, 23, 3)).
        output_stride: 16 (layer4 dilated by 2) or 8 (layer3 by 2, layer4 by 4).
        weights_path: optional local torchvision ``resnet50``/``resnet101`` state dict (ImageNet), loaded
            strictly before the classifier is dropped.
        blocks: block counts per stage, overriding ``depth`` (tests use (1, 1, 1, 1)).
        width_per_group: bottleneck width at the first stage (64); the stage outputs stay 256/512/1024/2048.

    Input ``(N, 3, H, W)``; output ``{"low_level": (N, 256, ceil(H/4), ceil(W/4)),
    "out": (N, 2048, ~H/output_stride, ~W/output_stride)}`` (layer1 and layer4).
    """

    low_level_channels = 256
    out_channels = 2048

    def __init__(
        self,
        depth: Literal[50, 101] = 101,
        output_stride: Literal[8, 16] = 16,
        weights_path: str | Path | None = None,
        blocks: Sequence[int] | None = None,
        width_per_group: int = 64,
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        if blocks is None:
            if depth not in RESNET_BLOCKS:
                raise ValueError(f"depth must be 50 or 101, got {depth}")
            blocks = RESNET_BLOCKS[depth]
        self.output_stride = output_stride
        resnet = ResNet(
            Bottleneck, list(blocks), width_per_group=width_per_group,
            replace_stride_with_dilation=[False, output_stride == 8, True],
        )
        if weights_path is not None:
            load_weights_file(resnet, weights_path, "ResNet backbone")
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def set_output_stride(self, output_stride: int) -> None:
        """Re-dilate the same weights for another output stride (16 <-> 8), as DeepLab evaluates at
        OS 8 a network trained at OS 16: torchvision's geometry for ``replace_stride_with_dilation``
        (a dilated stage keeps stride 1; its first block has the previous dilation, the others the
        stage's)."""
        if output_stride not in (8, 16):
            raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
        dilation = 1
        for layer, dilate in ((self.layer3, output_stride == 8), (self.layer4, True)):
            previous = dilation
            stride = 2
            if dilate:
                dilation, stride = dilation * 2, 1
            for i, block in enumerate(layer):
                d = previous if i == 0 else dilation
                block.conv2.dilation, block.conv2.padding = (d, d), (d, d)
                if i == 0:
                    block.conv2.stride = (stride, stride)
                    block.downsample[0].stride = (stride, stride)
        self.output_stride = output_stride

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        low_level = self.layer1(self.stem(images))
        return {"low_level": low_level, "out": self.layer4(self.layer3(self.layer2(low_level)))}


class ConvBNReLU(nn.Sequential):
    """Bias-free ``kernel_size`` conv (dilated, padded to keep the size) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, dilation=dilation, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SeparableConvBNReLU(nn.Sequential):
    """Atrous depthwise-separable conv: depthwise 3x3 (dilated) + BN + ReLU, pointwise 1x1 + BN + ReLU
    (the paper's "atrous separable convolution"). Keeps the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        padding = dilation * (kernel_size // 2)
        super().__init__(
            nn.Conv2d(in_channels, in_channels, kernel_size, padding=padding, dilation=dilation, groups=in_channels, bias=False),
            nn.BatchNorm2d(in_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ImagePooling(nn.Module):
    """ASPP's image-level branch: global average pool, 1x1 conv + BN + ReLU, broadcast back to ``(H, W)``.

    ``(N, in_channels, H, W) -> (N, out_channels, H, W)``; in train mode its BN sees one value per image
    and channel, so it needs ``N >= 2``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.project = ConvBNReLU(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.project(F.adaptive_avg_pool2d(x, 1))
        return pooled.expand(-1, -1, *x.shape[-2:])  # bilinear upsampling of a 1x1 map is a broadcast


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """ASPP atrous rates: (6, 12, 18) at output stride 16, doubled at 8 (both papers)."""
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    return 96 // output_stride, 192 // output_stride, 288 // output_stride


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 conv, one 3x3 atrous conv per rate and image pooling,
    concatenated and projected by a 1x1 conv + BN + ReLU + dropout.

    ``(N, in_channels, h, w) -> (N, out_channels, h, w)``. Dropout only in train mode.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int = 256,
        rates: Sequence[int] = (6, 12, 18),
        separable: bool = False,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        atrous = SeparableConvBNReLU if separable else ConvBNReLU
        self.branches = nn.ModuleList(
            [ConvBNReLU(in_channels, out_channels, 1)]
            + [atrous(in_channels, out_channels, 3, dilation=rate) for rate in rates]
            + [ImagePooling(in_channels, out_channels)]
        )
        self.project = nn.Sequential(ConvBNReLU((len(rates) + 2) * out_channels, out_channels, 1), nn.Dropout(dropout))

    def set_rates(self, rates: Sequence[int]) -> None:
        """New atrous rates for the same weights (doubled when evaluating at OS 8)."""
        atrous = self.branches[1:-1]
        if len(rates) != len(atrous):
            raise ValueError(f"ASPP has {len(atrous)} atrous branches, got rates {tuple(rates)}")
        for branch, rate in zip(atrous, rates):
            conv = branch[0]  # the 3x3 (or depthwise 3x3) conv of ConvBNReLU / SeparableConvBNReLU
            conv.dilation, conv.padding = (rate, rate), (rate, rate)

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.branches], dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLab v3+ decoder: low-level features projected to ``low_level_projection`` channels, the ASPP
    output bilinearly upsampled to their size and concatenated, two 3x3 convs of ``channels``.

    Input ``features (N, in_channels, h, w)`` and ``low_level (N, low_level_channels, H4, W4)``; output
    ``(N, channels, H4, W4)``.
    """

    def __init__(
        self,
        in_channels: int,
        low_level_channels: int,
        low_level_projection: int = 48,
        channels: int = 256,
        separable: bool = False,
    ) -> None:
        super().__init__()
        conv = SeparableConvBNReLU if separable else ConvBNReLU
        # Few low-level channels, so that the 256 semantic channels are not outweighed (paper, Table 1).
        self.project = ConvBNReLU(low_level_channels, low_level_projection, 1)
        self.refine = nn.Sequential(conv(in_channels + low_level_projection, channels, 3), conv(channels, channels, 3))

    def forward(self, features: Tensor, low_level: Tensor) -> Tensor:
        features = F.interpolate(features, size=low_level.shape[-2:], mode="bilinear", align_corners=False)
        return self.refine(torch.cat([features, self.project(low_level)], dim=1))


# --------------------------------------------------------------------------- DeepLab v3+
class DeepLabV3Plus(nn.Module):
    """DeepLab v3+: backbone, ASPP, decoder, 1x1 classifier, bilinear upsampling to the input size.

    Args:
        backbone: a module mapping images to ``{"low_level": ..., "out": ...}`` with attributes
            ``low_level_channels``, ``out_channels`` and ``output_stride``, e.g. ``ResNetBackbone``.
        num_classes: score channels (21 for PASCAL VOC).
        aspp_channels: channels of every ASPP branch and of its projection (256).
        atrous_rates: ASPP rates; ``None`` takes ``aspp_rates(backbone.output_stride)``.
        separable: depthwise-separable 3x3 convs in ASPP and decoder.
        low_level_projection: channels of the projected layer1 features (48).
        decoder_channels: channels of the decoder's 3x3 convs (256).
        dropout: dropout after the ASPP projection (0.1).
        decoder: ``False`` leaves the decoder out: the classifier runs on the ASPP output, upsampled
            by the output stride at once (DeepLab v3's head: the first rows of the v3+ paper's Table 3).
        eval_output_stride: output stride in eval mode (``None``: the backbone's). The v3+ paper
            trains at OS 16 and evaluates at OS 8 with the same weights: in eval mode the backbone is
            re-dilated (``ResNetBackbone.set_output_stride``) and the ASPP rates follow
            (``aspp_rates``); ``train()`` puts the training stride back. Needs ``atrous_rates`` unset.

    Input: ``(N, 3, H, W)`` float, any size; train mode needs ``N >= 2`` (the image-pooling BN).
    Output: logits ``(N, num_classes, H, W)``, a plain tensor, the same at output stride 8 and 16 (only
    the internal feature maps differ). Train and eval mode differ in the batch norms and the dropout
    (and the output stride, with ``eval_output_stride``).
    Bilinear resizing uses ``align_corners=False`` (the authors' TensorFlow code uses ``True`` with
    input sizes of the form ``k * output_stride + 1``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int = 21,
        aspp_channels: int = 256,
        atrous_rates: Sequence[int] | None = None,
        separable: bool = False,
        low_level_projection: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
        decoder: bool = True,
        eval_output_stride: Literal[8, 16] | None = None,
    ) -> None:
        super().__init__()
        if eval_output_stride is not None:
            if eval_output_stride not in (8, 16):
                raise ValueError(f"eval_output_stride must be 8 or 16, got {eval_output_stride}")
            if atrous_rates is not None or not hasattr(backbone, "set_output_stride"):
                raise ValueError("eval_output_stride needs atrous_rates unset and a backbone with set_output_stride (ResNetBackbone)")
        self.backbone = backbone
        self.num_classes = num_classes
        self.train_output_stride = int(backbone.output_stride)
        self.eval_output_stride = eval_output_stride
        rates = tuple(atrous_rates) if atrous_rates is not None else aspp_rates(backbone.output_stride)
        self.aspp = ASPP(backbone.out_channels, aspp_channels, rates, separable, dropout)
        self.decoder = (
            DeepLabV3PlusDecoder(aspp_channels, backbone.low_level_channels, low_level_projection, decoder_channels, separable)
            if decoder else None
        )
        self.classifier = nn.Conv2d(decoder_channels if decoder else aspp_channels, num_classes, 1)

    def train(self, mode: bool = True) -> DeepLabV3Plus:
        super().train(mode)
        if self.eval_output_stride is not None:
            stride = self.train_output_stride if mode else self.eval_output_stride
            if stride != self.backbone.output_stride:
                self.backbone.set_output_stride(stride)
                self.aspp.set_rates(aspp_rates(stride))
        return self

    def forward(self, images: Tensor) -> Tensor:
        features = self.backbone(images)
        x = self.aspp(features["out"])
        if self.decoder is not None:
            x = self.decoder(x, features["low_level"])
        return F.interpolate(self.classifier(x), size=images.shape[-2:], mode="bilinear", align_corners=False)
