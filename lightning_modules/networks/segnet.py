"""SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture
for Image Segmentation", TPAMI 2017, arXiv:1511.00561).

Topology (the Caffe ``segnet_train.prototxt`` for VGG16):

* encoder: the 13 convolutions of VGG16 with batch norm (3x3, padded, conv + BN + ReLU) in five stages,
  each ending in a 2x2/2 max-pool that stores the argmax position of every pooled value;
* decoder: the mirror image; each stage first max-unpools with the indices of the matching encoder
  pooling (a sparse map: every value goes back to where its maximum came from, zeros elsewhere), then its
  convs (conv + BN + ReLU) densify it; the last conv of a stage halves the channels where the encoder
  doubled them;
* a final 3x3 conv (no BN) to the classes, followed by the softmax of the loss.

No fully connected layers, so the encoder has 14.7M parameters (VGG16's 134M) and the whole network
29,449,932 for 12 classes (CamVid's 11 plus void): 14,723,136 in the encoder, conv weights, conv biases
and BN scale/shift all counted, BN running statistics not (shared/reference/PAPER_NUMBERS.md, section 5).

The DeconvNet variant (Noh et al. 2015: fc6/fc7 kept, deconvolution layers in the decoder) is not built
here: it shares the unpooling but not the decoder or the size.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import Tensor, nn

from core.errors import CheckpointError
from lightning_modules.networks.fcn import VGG16_CONVS_PER_STAGE, VGG16_WIDTHS, vgg_feature_layers
from lightning_modules.networks.weights import read_state_dict

__all__ = ["ConvBNReLU", "EncoderStage", "DecoderStage", "SegNet"]


class ConvBNReLU(nn.Sequential):
    """3x3 padded conv (with bias, as in VGG16-BN) + BN + ReLU: ``(N, in, H, W) -> (N, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))


class EncoderStage(nn.Module):
    """``num_convs`` conv-BN-ReLU layers and a 2x2/2 max-pool that returns its argmax indices.

    Input ``(N, in_channels, H, W)``; output ``(pooled, indices, size)``: ``pooled`` and ``indices`` are
    ``(N, out_channels, H // 2, W // 2)`` (odd sizes lose their last row/column, as in VGG), ``size`` is the
    pre-pooling ``(H, W)`` that the decoder needs to unpool back to exactly this size.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(*[ConvBNReLU(in_channels if i == 0 else out_channels, out_channels) for i in range(num_convs)])
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, tuple[int, int]]:
        x = self.convs(x)
        pooled, indices = self.pool(x)
        return pooled, indices, (x.shape[-2], x.shape[-1])


class DecoderStage(nn.Module):
    """Max-unpooling with stored indices, then ``num_convs`` conv-BN-ReLU layers, the last one mapping
    ``in_channels`` to ``out_channels``.

    Input ``x (N, in_channels, h, w)``, ``indices`` of the same shape and the encoder's pre-pooling
    ``size (H, W)``; output ``(N, out_channels, H, W)``. No learned upsampling: the unpooling only moves
    values back to their argmax positions.
    """

    def __init__(self, in_channels: int, out_channels: int, num_convs: int) -> None:
        super().__init__()
        self.unpool = nn.MaxUnpool2d(2, stride=2)
        self.convs = nn.Sequential(
            *[ConvBNReLU(in_channels, out_channels if i == num_convs - 1 else in_channels) for i in range(num_convs)]
        )

    def forward(self, x: Tensor, indices: Tensor, size: tuple[int, int]) -> Tensor:
        return self.convs(self.unpool(x, indices, output_size=size))


class SegNet(nn.Module):
    """SegNet with a VGG16-BN encoder: images to per-pixel class scores at the input resolution.

    Args:
        num_classes: score channels (12 for CamVid: 11 classes and void).
        in_channels: image channels.
        widths: the five VGG16 stage widths (64, 128, 256, 512, 512); smaller in tests.
        encoder_weights: optional path of a local torchvision ``vgg16_bn`` state dict
            (``vgg16_bn-6c64b313.pth``) for the encoder, as the paper starts from ImageNet VGG16.
            Needs the default widths and 3 input channels.

    Input: ``(N, in_channels, H, W)`` float, any ``H, W >= 32`` (five poolings; odd sizes are fine, the
    unpooling restores each encoder size exactly).
    Output: logits ``(N, num_classes, H, W)``, a plain tensor. Train and eval mode differ only in the batch
    norms (batch statistics vs running averages).
    """

    def __init__(
        self,
        num_classes: int = 12,
        in_channels: int = 3,
        widths: Sequence[int] = VGG16_WIDTHS,
        encoder_weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must give the 5 VGG16 stage widths, got {tuple(widths)}")
        ins = [in_channels, *widths[:-1]]
        self.encoder = nn.ModuleList(EncoderStage(i, w, n) for i, w, n in zip(ins, widths, VGG16_CONVS_PER_STAGE))
        # Decoder stages mirror the encoder, deepest first; stage k ends at the width of stage k-1, and the
        # shallowest stage's last conv is the classifier below (no BN, no ReLU), so it keeps one fewer.
        outs = [widths[0], *widths[:-1]]
        num_convs = [VGG16_CONVS_PER_STAGE[0] - 1, *VGG16_CONVS_PER_STAGE[1:]]
        self.decoder = nn.ModuleList(DecoderStage(w, o, n) for w, o, n in reversed(list(zip(widths, outs, num_convs))))
        self.classifier = nn.Conv2d(widths[0], num_classes, 3, padding=1)
        if encoder_weights is not None:
            self.load_vgg16_bn_weights(encoder_weights)

    def load_vgg16_bn_weights(self, path: str | Path) -> None:
        """Fill the encoder from a local torchvision ``vgg16_bn`` state dict (convs and batch norms)."""
        layers = vgg_feature_layers(read_state_dict(path, "VGG16-BN"))
        targets = [m for m in self.encoder.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
        if len(layers) != len(targets):
            raise CheckpointError(f"VGG16-BN weights file {path} holds {len(layers)} feature layers, the encoder needs {len(targets)}")
        for module, tensors in zip(targets, layers):
            try:
                module.load_state_dict(tensors, strict=True)
            except RuntimeError as error:
                raise CheckpointError(f"VGG16-BN weights file {path}: {error}") from error

    def forward(self, images: Tensor) -> Tensor:
        if min(images.shape[-2:]) < 32:
            raise ValueError(f"SegNet pools 5 times and needs inputs of at least 32x32, got {tuple(images.shape[-2:])}")
        x = images
        pooled = []
        for stage in self.encoder:
            x, indices, size = stage(x)
            pooled.append((indices, size))
        for stage, (indices, size) in zip(self.decoder, reversed(pooled)):  # the deepest pooling unpools first
            x = stage(x, indices, size)
        return self.classifier(x)
