"""U-Net (Ronneberger, Fischer, Brox, "U-Net: Convolutional Networks for Biomedical Image Segmentation",
MICCAI 2015, arXiv:1505.04597).

Topology of the paper's Fig. 1 (``depth`` = 4 poolings, ``base_channels`` = 64):

* contracting path: per level two unpadded 3x3 convs + ReLU (each trims 2 pixels), then a 2x2/2 max-pool;
  the channels double per level, 64 -> 128 -> 256 -> 512 -> 1024 at the bottom;
* dropout at the end of the contracting path (the paper does not give the rate; 0.5 here);
* expanding path: per level a 2x2 "up-convolution" (stride-2 transposed conv) halving the channels, the
  matching contracting feature map centre-cropped and concatenated, two unpadded 3x3 convs + ReLU;
* a 1x1 conv to the classes.

A 572x572 tile gives a 388x388 output (``unet_output_size``); only some input sizes keep every pooled map
even (``unet_next_valid_input_size``). With ``padding=True`` the 3x3 convs are padded and the output has
the input's size for any input at least ``2**depth`` pixels across.

For 1 input channel and 2 classes the paper's network has 31,030,658 parameters
(shared/reference/PAPER_NUMBERS.md, section 5).
"""
from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["unet_output_size", "unet_next_valid_input_size", "DoubleConv", "UpBlock", "UNet"]

Upsampling = Literal["transposed", "bilinear"]


# --------------------------------------------------------------------------- crop arithmetic
def _unpadded_output_size(input_size: int, depth: int) -> int | None:
    """The unpadded output size, or ``None`` when a pooled map would be odd or a size non-positive."""
    size = input_size
    for _ in range(depth):
        size -= 4  # a double conv trims 2 pixels per side
        if size < 2 or size % 2:
            return None
        size //= 2
    size -= 4  # the bottom double conv
    for _ in range(depth):
        if size < 1:
            return None
        size = 2 * size - 4  # 2x up-convolution, then a double conv
    return size if size >= 1 else None


def unet_output_size(input_size: int, depth: int = 4, padding: bool = False) -> int:
    """Output size (one side) of a U-Net of ``depth`` poolings for an input of ``input_size`` pixels.

    Unpadded, each double conv trims 4 pixels and every map entering a pooling must be even ("to allow a
    seamless tiling of the output segmentation map", paper Sec. 2: the 2x up-convolution then lands back
    on the pixel grid of the cropped skip): 572 -> 388 at depth 4.
    Padded, the output has the input's size once the bottom map is at least 1 pixel.
    Raises ``ValueError`` for an input size that does not work, naming the next valid size.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    if padding:
        if input_size < 2**depth:
            raise ValueError(f"a padded U-Net of depth {depth} needs inputs of at least {2**depth} pixels, got {input_size}")
        return input_size
    size = _unpadded_output_size(input_size, depth)
    if size is None:
        raise ValueError(
            f"input size {input_size} does not fit an unpadded U-Net of depth {depth} (every map entering a pooling must be "
            f"even and the output non-empty); the next valid input size is {unet_next_valid_input_size(input_size, depth)}"
        )
    return size


def unet_next_valid_input_size(min_size: int, depth: int = 4) -> int:
    """The smallest input size ``>= min_size`` that an unpadded U-Net of ``depth`` poolings accepts.

    Valid sizes are ``2**depth * b + 4 * (2**depth - 1)``, ``b`` the size of the bottom map before its
    double conv, for ``b`` large enough that the output is not empty: at depth 4 these are
    188, 204, ..., 572, ... in steps of 16.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    step, trimmed = 2**depth, 4 * (2**depth - 1)  # trimmed: the contracting path's crops, seen at the input
    bottom = max(1, math.ceil((min_size - trimmed) / step))
    while _unpadded_output_size(step * bottom + trimmed, depth) is None:
        bottom += 1
    return step * bottom + trimmed


# --------------------------------------------------------------------------- blocks
class DoubleConv(nn.Sequential):
    """Two 3x3 convs, each followed by ``norm_layer`` (if any) and ReLU.

    ``(N, in_channels, H, W) -> (N, out_channels, H - 4, W - 4)`` unpadded, ``(H, W)`` padded.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        padding: bool = False,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        layers: list[nn.Module] = []
        for channels in (in_channels, out_channels):
            # A conv followed by a norm layer does not need a bias: the norm's shift replaces it.
            layers.append(nn.Conv2d(channels, out_channels, 3, padding=int(padding), bias=norm_layer is None))
            if norm_layer is not None:
                layers.append(norm_layer(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _center_crop(x: Tensor, height: int, width: int) -> Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top:top + height, left:left + width]


class UpBlock(nn.Module):
    """One level of the expanding path: 2x upsampling that halves the channels, merge with the skip,
    double conv.

    ``upsampling="transposed"`` is the paper's 2x2 up-convolution (stride-2 transposed conv);
    ``"bilinear"`` is bilinear 2x interpolation followed by a 1x1 conv halving the channels. Unpadded,
    the skip is centre-cropped to the upsampled map (the paper's crop); padded, the upsampled map is
    zero-padded to the skip when an odd size was floored by the pooling.

    Input ``x (N, in_channels, h, w)`` and ``skip (N, in_channels // 2, H_s, W_s)``; output
    ``(N, out_channels, 2h - 4, 2w - 4)`` unpadded, ``(N, out_channels, H_s, W_s)`` padded.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        padding: bool = False,
        upsampling: Upsampling = "transposed",
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        half = in_channels // 2
        if upsampling == "transposed":
            self.up: nn.Module = nn.ConvTranspose2d(in_channels, half, 2, stride=2)
        elif upsampling == "bilinear":
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(in_channels, half, 1))
        else:
            raise ValueError(f"upsampling must be 'transposed' or 'bilinear', got {upsampling!r}")
        self.padding = padding
        self.conv = DoubleConv(2 * half, out_channels, padding, norm_layer)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        if self.padding:
            dh, dw = skip.shape[-2] - x.shape[-2], skip.shape[-1] - x.shape[-1]
            x = F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
        else:
            skip = _center_crop(skip, x.shape[-2], x.shape[-1])
        # Skip first, as in the paper's figure; the order only permutes the next conv's input channels.
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net: images to per-pixel class scores.

    Args:
        in_channels: image channels (1 for the paper's EM and cell images).
        num_classes: score channels (2 in the paper: cell / background, with a softmax).
        base_channels: channels of the first level (64); each pooling doubles them.
        depth: number of poolings (4).
        padding: ``False``: unpadded 3x3 convs as in the paper (the output is smaller than the input);
            ``True``: padded convs, the output has the input's size.
        upsampling: ``"transposed"`` (the paper's 2x2 up-convolution) or ``"bilinear"`` (interpolation
            and a 1x1 conv).
        dropout: dropout probability at the end of the contracting path (on the bottom features).
        norm_layer: optional norm after every 3x3 conv, e.g. ``nn.BatchNorm2d`` (not in the paper; the
            convs then drop their bias).

    Input: ``(N, in_channels, H, W)`` float. Unpadded, ``H`` and ``W`` must be valid sizes
    (``unet_next_valid_input_size``; a ``ValueError`` otherwise) and the output is
    ``(N, num_classes, unet_output_size(H), unet_output_size(W))``, the centre of the input
    (572 -> 388: the input overlaps the output by 92 pixels on every side). Padded, the output is
    ``(N, num_classes, H, W)`` for ``H, W >= 2**depth``. A plain tensor of logits; train and eval mode differ
    only in the dropout (and the norm layers, if any).
    Weights start as in the paper: Gaussian with std ``sqrt(2 / fan_in)``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        base_channels: int = 64,
        depth: int = 4,
        padding: bool = False,
        upsampling: Upsampling = "transposed",
        dropout: float = 0.5,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.depth = depth
        self.padding = padding
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        channels = in_channels
        for width in widths[:-1]:
            self.down.append(DoubleConv(channels, width, padding, norm_layer))
            channels = width
        self.bottom = DoubleConv(widths[-2], widths[-1], padding, norm_layer)
        self.dropout = nn.Dropout(dropout)
        # Expanding path, deepest level first.
        self.up = nn.ModuleList(
            UpBlock(widths[i + 1], widths[i], padding, upsampling, norm_layer) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                # "std sqrt(2/N), N the number of incoming nodes of one neuron": a stride-2 2x2 transposed
                # conv feeds each output pixel from one input pixel, so N = in_channels there.
                k = module.kernel_size[0] * module.kernel_size[1]
                fan_in = module.in_channels * (1 if isinstance(module, nn.ConvTranspose2d) else k)
                nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_in))
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Output ``(H', W')`` for an input ``(height, width)``; ``ValueError`` if it is not valid."""
        return unet_output_size(height, self.depth, self.padding), unet_output_size(width, self.depth, self.padding)

    def forward(self, images: Tensor) -> Tensor:
        self.output_size(*images.shape[-2:])  # fail early, naming the nearest valid size
        skips = []
        x = images
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.dropout(self.bottom(x))
        for block, skip in zip(self.up, reversed(skips)):  # the deepest skip meets the first up block
            x = block(x, skip)
        return self.head(x)
