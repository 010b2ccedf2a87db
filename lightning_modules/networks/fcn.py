"""Fully convolutional networks (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic
Segmentation", CVPR 2015, arXiv:1411.4038), on VGG16 as in the paper and on ResNet-50/101 through
torchvision's builders.

VGG16 topology, as in the reference Caffe models ``voc-fcn{32,16,8}s``:

* the 13 VGG16 convolutions in five stages, each stage ending in a 2x2/2 max-pool that rounds up
  (Caffe pooling); conv1_1 pads by 100 pixels so that fc6 sees at least one 7x7 window for any input;
* fc6 and fc7 "convolutionalised": a 7x7 conv (512 -> 4096, no padding) and a 1x1 conv (4096 -> 4096),
  each followed by ReLU and dropout (p = 0.5);
* a 1x1 score layer per class (``score_fr``) on fc7, and one on each pooling output used as a skip;
* skips fuse coarse to fine: the running score map is upsampled 2x by a transposed conv initialised to
  bilinear interpolation (and learned), a crop of the skip's scores is added; after the last skip one
  transposed conv upsamples by the remaining stride (bilinear, fixed as in the paper) and the result is
  cropped to the input size. FCN-32s uses no skip, FCN-16s pool4, FCN-8s pool4 then pool3.

The crop offsets (5 for pool4, 9 for pool3, and 19 / 27 / 31 for the final 32s / 16s / 8s crop) are those
of the Caffe models; ``fcn_crop_offsets`` derives them from the layer geometry, so the output has the
input's size for any input size >= 1.

With 21 classes FCN-8s has 134,489,759 parameters, FCN-16s 134,815,994 and FCN-32s 136,152,917 (all
transposed convs counted, also the fixed final one; shared/reference/PAPER_NUMBERS.md, section 5).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models import segmentation as tv_segmentation

from core.errors import CheckpointError
from lightning_modules.networks.weights import load_weights_file, read_state_dict

__all__ = [
    "Upsampling", "vgg_feature_layers", "bilinear_kernel", "BilinearUpsample", "make_upsampler",
    "fcn_crop_offsets", "VGG16Trunk", "FCN", "fcn32s", "fcn16s", "fcn8s", "TorchvisionSegmentation", "FCNResNet",
]

Upsampling = Literal["transposed", "bilinear"]

VGG16_WIDTHS = (64, 128, 256, 512, 512)
VGG16_CONVS_PER_STAGE = (2, 2, 3, 3, 3)
CAFFE_PADDING = 100


def vgg_feature_layers(state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """The ``features.N.*`` entries of a torchvision VGG state dict, one dict per layer with weights,
    in network order (convs and, for the ``_bn`` models, batch norms; ReLUs and pools hold none)."""
    layers: dict[int, dict[str, Tensor]] = {}
    for key, value in state.items():
        prefix, _, rest = key.partition(".")
        index, _, name = rest.partition(".")
        if prefix == "features" and index.isdigit():
            layers.setdefault(int(index), {})[name] = value
    return [layers[i] for i in sorted(layers)]


def _copy_into(module: nn.Module, tensors: dict[str, Tensor], what: str) -> None:
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{what}: {error}") from error


# --------------------------------------------------------------------------- upsampling
def bilinear_kernel(channels: int, factor: int) -> Tensor:
    """Weights ``(channels, channels, 2*factor, 2*factor)`` that make ``ConvTranspose2d(stride=factor)``
    interpolate each channel bilinearly on its own (Caffe FCN's ``surgery.upsample_filt``)."""
    size = 2 * factor
    center = factor - 0.5  # the kernel is even-sized, so its centre falls between two taps
    taps = 1 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    weight = torch.zeros(channels, channels, size, size, dtype=torch.float64)
    weight[range(channels), range(channels)] = torch.outer(taps, taps)  # no mixing across channels
    return weight.float()


class BilinearUpsample(nn.Module):
    """Fixed bilinear upsampling by an even ``factor`` with the geometry of the bilinear transposed conv.

    ``ConvTranspose2d(kernel=2f, stride=f)`` maps ``(N, C, h, w)`` to ``(N, C, (h+1)f, (w+1)f)`` with input
    index ``j`` centred on output ``j*f + f - 1/2``; ``F.interpolate(scale_factor=f)`` centres it on
    ``j*f + f/2 - 1/2``. Replicate-padding the interpolation by ``f/2`` on every side therefore gives the
    same size and alignment (so the same crop offsets), equal to the transposed conv away from the border.
    No parameters; the same in train and eval mode.
    """

    def __init__(self, factor: int) -> None:
        super().__init__()
        if factor < 2 or factor % 2:
            raise ValueError(f"factor must be an even number >= 2, got {factor}")
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        up = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        half = self.factor // 2
        return F.pad(up, (half, half, half, half), mode="replicate")


def make_upsampler(kind: Upsampling, channels: int, factor: int, learnable: bool) -> nn.Module:
    """``(N, channels, h, w) -> (N, channels, (h+1)*factor, (w+1)*factor)``: a bias-free transposed conv
    initialised to bilinear interpolation (frozen unless ``learnable``; a frozen one still counts among the
    parameters, as in Caffe's ``lr_mult: 0``), or the parameter-free ``BilinearUpsample``."""
    if kind == "bilinear":
        return BilinearUpsample(factor)
    if kind != "transposed":
        raise ValueError(f"upsampling must be 'transposed' or 'bilinear', got {kind!r}")
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        up.weight.copy_(bilinear_kernel(channels, factor))
    up.weight.requires_grad_(learnable)
    return up


# --------------------------------------------------------------------------- geometry
def fcn_crop_offsets(
    num_skips: int, input_padding: int = CAFFE_PADDING, fc6_kernel: int = 7, fc6_padding: int = 0,
) -> tuple[tuple[int, ...], int]:
    """Crop offsets of FCN on VGG16 with ``num_skips`` fused pooling outputs (0: 32s, 1: 16s, 2: 8s),
    conv1_1 padded by ``input_padding`` and a ``fc6_kernel`` x ``fc6_kernel`` fc6 padded by ``fc6_padding``.

    Returns ``(skip_offsets, final_offset)``. A skip offset ``o >= 0``: the score map of skip ``i``
    (pool4, pool3, ...) is cropped from ``o`` to the size of the upsampled coarser map (Caffe's rule; the
    sum keeps the coarser map's grid). ``o < 0``: the upsampled coarser map starts ``-o`` cells before
    the skip's map (a lightly padded trunk), so it is cropped from ``-o`` instead and the sum keeps the
    skip's grid. The final upsampled map is cropped from ``final_offset`` to the input size. For 2 skips
    and the paper's geometry (100, 7, 0) this gives Caffe's ``((5, 9), 31)``. A geometry whose output
    would start inside the image raises ``ValueError``.

    Each map is tracked as (stride, origin): its index ``j`` lies over input pixel ``stride*j + origin``.
    """
    if not 0 <= num_skips <= 4:
        raise ValueError(f"num_skips must be in 0..4 (pool4 down to pool1), got {num_skips}")
    if fc6_kernel < 1 or fc6_kernel % 2 == 0:
        raise ValueError(f"fc6_kernel must be an odd number >= 1, got {fc6_kernel}")
    if not 0 <= fc6_padding <= fc6_kernel // 2:
        raise ValueError(f"fc6_padding must be in 0..{fc6_kernel // 2} for a {fc6_kernel}x{fc6_kernel} fc6, got {fc6_padding}")
    stride, origin = 1, Fraction(1 - input_padding)  # conv1_1: a 3x3 window over the padded input
    pools = []
    for _ in range(5):  # 2x2/2 pool: output j covers inputs 2j and 2j+1
        origin += stride * Fraction(1, 2)
        stride *= 2
        pools.append((stride, origin))
    origin += (fc6_kernel // 2 - fc6_padding) * stride  # fc6's output j is centred on its input j + k//2 - padding
    skip_offsets = []
    for level in range(4, 4 - num_skips, -1):
        # A bilinear transposed conv by f maps output o onto input index (o + 1/2)/f - 1.
        origin += stride * (Fraction(1, 4) - 1)
        stride //= 2
        skip_stride, skip_origin = pools[level - 1]
        offset = (origin - skip_origin) / skip_stride
        assert skip_stride == stride and offset.denominator == 1, (level, offset)
        if offset < 0:
            origin = skip_origin  # the coarser map is cropped instead: the sum is on the skip's grid
        skip_offsets.append(int(offset))
    origin += stride * (Fraction(1, 2 * stride) - 1)  # the final upsampling by the whole remaining stride
    assert origin.denominator == 1, origin
    if origin > 0:
        raise ValueError(f"input_padding {input_padding} with fc6 {fc6_kernel}x{fc6_kernel}/{fc6_padding}: the output would start {origin} "
                         "pixels inside the image; pad conv1_1 more")
    return tuple(skip_offsets), int(-origin)


# --------------------------------------------------------------------------- VGG16 network
class VGG16Trunk(nn.Module):
    """The 13 VGG16 convolutions (3x3, ReLU) in five stages, each ending in a 2x2/2 max-pool that rounds
    up; conv1_1 pads by ``input_padding`` pixels (100 in Caffe FCN), the other convs by 1. With
    ``norm_layer`` (e.g. ``nn.BatchNorm2d``: torchvision's ``vgg16_bn`` layout) a norm follows every conv.

    Input ``(N, in_channels, H, W)``; output the five pooling outputs ``[pool1, ..., pool5]``, pool k with
    ``widths[k-1]`` channels and size ``ceil((H + 2 * input_padding - 2) / 2**k)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        widths: Sequence[int] = VGG16_WIDTHS,
        input_padding: int = CAFFE_PADDING,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"widths must give the 5 VGG16 stage widths, got {tuple(widths)}")
        self.stages = nn.ModuleList()
        channels = in_channels
        for stage, (width, num_convs) in enumerate(zip(widths, VGG16_CONVS_PER_STAGE)):
            layers: list[nn.Module] = []
            for i in range(num_convs):
                padding = input_padding if stage == 0 and i == 0 else 1
                layers.append(nn.Conv2d(channels, width, 3, padding=padding))  # biased even before a norm, as vgg16_bn
                if norm_layer is not None:
                    layers.append(norm_layer(width))
                layers.append(nn.ReLU(inplace=True))
                channels = width
            layers.append(nn.MaxPool2d(2, stride=2, ceil_mode=True))
            self.stages.append(nn.Sequential(*layers))

    def forward(self, x: Tensor) -> list[Tensor]:
        pools = []
        for stage in self.stages:
            x = stage(x)
            pools.append(x)
        return pools


class FCN(nn.Module):
    """FCN on VGG16: images to per-pixel class scores at the input resolution.

    Args:
        num_classes: score channels (21 for PASCAL VOC: 20 classes and background).
        skips: pooling stages fused into the prediction, coarse to fine, each one step finer than the
            last: ``()`` is FCN-32s, ``(4,)`` FCN-16s, ``(4, 3)`` FCN-8s (the paper stops there).
        in_channels: image channels.
        widths: the five VGG16 stage widths (64, 128, 256, 512, 512); smaller in tests.
        fc_channels: width of fc6 and fc7 (4096).
        dropout: dropout probability after fc6 and after fc7 (0.5).
        upsampling: ``"transposed"``: transposed convs initialised to bilinear (the paper's);
            ``"bilinear"``: fixed interpolation with the same geometry, no parameters.
        learn_final_upsampling: train the last transposed conv too (the paper keeps it fixed bilinear;
            the 2x ones are always learned).
        backbone_weights: optional path of a local torchvision ``vgg16`` state dict
            (``vgg16-397923af.pth``): fills the 13 convs and fc6/fc7 (the classifier's first two linear
            layers reshaped to 7x7 and 1x1 convs). Needs the default widths and ``fc6_kernel``.
        input_padding: conv1_1's padding (100 in the paper: enough that pool5 holds a 7x7 window for
            any input). The padded input is ``H + 198`` pixels high, 4.2x the pixels of a 128x128
            image: small-image configs take ``input_padding: 1`` with a padded fc6 (``fc6_kernel: 3``,
            ``fc6_padding: 1``), a trunk padded like any VGG; the crops follow from the same
            construction (``fcn_crop_offsets``), the coarser score map then being the one cropped.
        fc6_kernel: fc6's kernel (7: VGG16's classifier over the 7x7 pool5 map).
        fc6_padding: fc6's padding (0 in the paper).
        norm_layer: a norm after each of the 13 convs and after fc6 and fc7 (not in the paper, which
            starts from ImageNet weights; ``nn.BatchNorm2d`` lets the network train from scratch).
            ``backbone_weights`` then takes a ``vgg16_bn`` state dict (its classifier has no norm: those
            of fc6 and fc7 start fresh).

    Input: ``(N, in_channels, H, W)`` float, any ``H, W >= 1`` with the paper's geometry and with the
    padded one above (tested); a geometry whose output would start inside the image fails when the
    network is built, an input too small for a geometry on the forward, with a ``ValueError``.
    Output: logits ``(N, num_classes, H, W)``, a plain tensor. Train and eval mode differ only in the
    dropout after fc6 and fc7. Score layers start at zero (as in the paper), so the first output is zero.
    """

    def __init__(
        self,
        num_classes: int = 21,
        skips: Sequence[int] = (4, 3),
        in_channels: int = 3,
        widths: Sequence[int] = VGG16_WIDTHS,
        fc_channels: int = 4096,
        dropout: float = 0.5,
        upsampling: Upsampling = "transposed",
        learn_final_upsampling: bool = False,
        backbone_weights: str | Path | None = None,
        input_padding: int = CAFFE_PADDING,
        fc6_kernel: int = 7,
        fc6_padding: int = 0,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        self.skips = tuple(skips)
        if self.skips != tuple(range(4, 4 - len(self.skips), -1)):
            raise ValueError(f"skips must be consecutive pooling stages from pool4 down, e.g. (), (4,), (4, 3); got {self.skips}")
        self.skip_offsets, self.final_offset = fcn_crop_offsets(len(self.skips), input_padding, fc6_kernel, fc6_padding)
        self.output_stride = 32 // 2 ** len(self.skips)

        self.backbone = VGG16Trunk(in_channels, widths, input_padding, norm_layer)
        self.fc6 = nn.Conv2d(widths[4], fc_channels, fc6_kernel, padding=fc6_padding)
        self.fc7 = nn.Conv2d(fc_channels, fc_channels, 1)
        # With a norm in the trunk, fc6 and fc7 get one too: from scratch, their ReLUs die within the first
        # steps otherwise, and FCN-32s, whose only path runs through them, never leaves the class prior.
        self.fc6_norm = norm_layer(fc_channels) if norm_layer is not None else nn.Identity()
        self.fc7_norm = norm_layer(fc_channels) if norm_layer is not None else nn.Identity()
        self.dropout = nn.Dropout(dropout)  # stateless, applied after fc6 and after fc7
        self.score_fr = nn.Conv2d(fc_channels, num_classes, 1)
        self.score_pools = nn.ModuleList(nn.Conv2d(widths[k - 1], num_classes, 1) for k in self.skips)
        self.upscores = nn.ModuleList(make_upsampler(upsampling, num_classes, 2, learnable=True) for _ in self.skips)
        self.final_upscore = make_upsampler(upsampling, num_classes, self.output_stride, learnable=learn_final_upsampling)
        for score in (self.score_fr, *self.score_pools):  # zero-init class scores (paper, Sec. 4.1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
        if backbone_weights is not None:
            self.load_vgg16_weights(backbone_weights)

    def load_vgg16_weights(self, path: str | Path) -> None:
        """Fill the trunk and fc6/fc7 from a local torchvision ``vgg16`` (``vgg16_bn`` with a norm) state dict."""
        state = read_state_dict(path, "VGG16")
        layers = vgg_feature_layers(state)
        weighted = [m for m in self.backbone.modules() if isinstance(m, nn.Conv2d) or any(True for _ in m.parameters(recurse=False))]
        if len(layers) != len(weighted) or "classifier.0.weight" not in state or "classifier.3.weight" not in state:
            name = "vgg16_bn" if len(weighted) > 13 else "vgg16"
            raise CheckpointError(f"VGG16 weights file {path} does not hold torchvision {name} features.* and classifier.0/3")
        for conv, tensors in zip(weighted, layers):
            _copy_into(conv, tensors, f"VGG16 weights file {path}")
        # fc6 saw the flattened (512, 7, 7) pool5 map; fc7 a vector: the same weights as convs.
        _copy_into(self.fc6, {"weight": state["classifier.0.weight"].reshape(self.fc6.weight.shape),
                              "bias": state["classifier.0.bias"]}, f"VGG16 weights file {path} (fc6)")
        _copy_into(self.fc7, {"weight": state["classifier.3.weight"].reshape(self.fc7.weight.shape),
                              "bias": state["classifier.3.bias"]}, f"VGG16 weights file {path} (fc7)")

    def forward(self, images: Tensor) -> Tensor:
        height, width = images.shape[-2:]
        pools = self.backbone(images)
        x = self.dropout(F.relu(self.fc6_norm(self.fc6(pools[-1]))))
        x = self.dropout(F.relu(self.fc7_norm(self.fc7(x))))
        score = self.score_fr(x)
        for level, offset, score_pool, upscore in zip(self.skips, self.skip_offsets, self.score_pools, self.upscores):
            score = upscore(score)
            skip = score_pool(pools[level - 1])
            if offset >= 0:
                if skip.shape[-2] < offset + score.shape[-2] or skip.shape[-1] < offset + score.shape[-1]:
                    raise ValueError(self._too_small(height, width))
                score = score + skip[..., offset:offset + score.shape[-2], offset:offset + score.shape[-1]]
            else:
                if score.shape[-2] < skip.shape[-2] - offset or score.shape[-1] < skip.shape[-1] - offset:
                    raise ValueError(self._too_small(height, width))
                score = skip + score[..., -offset:-offset + skip.shape[-2], -offset:-offset + skip.shape[-1]]
        score = self.final_upscore(score)
        o = self.final_offset
        if score.shape[-2] < o + height or score.shape[-1] < o + width:
            raise ValueError(self._too_small(height, width))
        return score[..., o:o + height, o:o + width]

    def _too_small(self, height: int, width: int) -> str:
        padding, kernel = self.backbone.stages[0][0].padding[0], self.fc6.kernel_size[0]
        return f"input {height}x{width} is too small for conv1_1 padding {padding} and a {kernel}x{kernel} fc6: pad conv1_1 more"


def fcn32s(num_classes: int = 21, **kwargs: Any) -> FCN:
    """FCN-32s: no skip, one fixed bilinear upsampling by 32."""
    return FCN(num_classes, skips=(), **kwargs)


def fcn16s(num_classes: int = 21, **kwargs: Any) -> FCN:
    """FCN-16s: fuses pool4, upsamples by 16."""
    return FCN(num_classes, skips=(4,), **kwargs)


def fcn8s(num_classes: int = 21, **kwargs: Any) -> FCN:
    """FCN-8s: fuses pool4 then pool3, upsamples by 8 (the paper's best)."""
    return FCN(num_classes, skips=(4, 3), **kwargs)


# --------------------------------------------------------------------------- torchvision ResNet FCN
class TorchvisionSegmentation(nn.Module):
    """Base for torchvision segmentation models (FCN, DeepLab v3), built without downloading anything.

    ``builder`` is a torchvision builder such as ``torchvision.models.segmentation.fcn_resnet50``; it is
    called with ``weights=None, weights_backbone=None``. ``weights_path`` optionally names a local state
    dict of the whole model (e.g. torchvision's ``COCO_WITH_VOC_LABELS_V1`` file; its ``aux_classifier.*``
    entries are dropped when ``aux_loss`` is off); ``backbone_weights_path`` a local torchvision ResNet
    state dict for the backbone (its ``fc.*`` entries are dropped). Both load strictly, names and
    shapes (``weights.load_weights_file``); a missing file raises ``DataNotFoundError``.

    Input: ``(N, C, H, W)`` float. Output: a dict ``{"out": (N, num_classes, H, W)}``, plus
    ``"aux": (N, num_classes, H, W)`` (the layer3 head) when ``aux_loss`` is on, the same keys in train
    and eval mode. In train mode the batch norms need ``N >= 2`` when a pooled branch sees 1x1 maps.
    """

    def __init__(
        self,
        builder: Callable[..., nn.Module],
        num_classes: int,
        aux_loss: bool,
        weights_path: str | Path | None,
        backbone_weights_path: str | Path | None,
    ) -> None:
        super().__init__()
        self.aux_loss = aux_loss
        self.model = builder(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux_loss)
        name = getattr(builder, "__name__", "model")
        if backbone_weights_path is not None:
            # The backbone is the ResNet without avgpool/fc (torchvision's IntermediateLayerGetter).
            load_weights_file(self.model.backbone, backbone_weights_path, f"{name} backbone", drop_prefixes=("fc.",))
        if weights_path is not None:
            load_weights_file(self.model, weights_path, name, drop_prefixes=() if aux_loss else ("aux_classifier.",))

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        return dict(self.model(images))  # torchvision returns an OrderedDict; a plain dict is enough


class FCNResNet(TorchvisionSegmentation):
    """torchvision's FCN on a dilated ResNet-50/101 (output stride 8, a 3x3 conv head, bilinear upsampling).

    Args:
        depth: 50 or 101.
        num_classes: score channels.
        aux_loss: add the auxiliary layer3 head (torchvision trains with it, weight 0.5).
        weights_path: optional local state dict of the whole model.
        backbone_weights_path: optional local torchvision ResNet state dict (ImageNet).

    Input/output as ``TorchvisionSegmentation``: a dict with ``"out"`` (and ``"aux"``) at the input size.
    With 21 classes and the aux head: 35,322,218 (ResNet-50) and 54,314,346 (ResNet-101) parameters.
    """

    def __init__(
        self,
        depth: Literal[50, 101] = 50,
        num_classes: int = 21,
        aux_loss: bool = True,
        weights_path: str | Path | None = None,
        backbone_weights_path: str | Path | None = None,
    ) -> None:
        builders = {50: tv_segmentation.fcn_resnet50, 101: tv_segmentation.fcn_resnet101}
        if depth not in builders:
            raise ValueError(f"depth must be 50 or 101, got {depth}")
        super().__init__(builders[depth], num_classes, aux_loss, weights_path, backbone_weights_path)
