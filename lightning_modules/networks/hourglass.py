"""Stacked Hourglass network (Newell, Yang, Deng, "Stacked Hourglass Networks for Human Pose
Estimation", ECCV 2016, arXiv:1603.06937).

The topology follows the authors' Torch code as ported by bearpaw/pytorch-pose and
princeton-vl/pytorch_stacked_hourglass (see shared/reference/PAPER_NUMBERS.md, 1d):

* stem: 7x7/2 conv (3 -> 64) + BN + ReLU, Residual(64 -> 128), 2x2 max-pool,
  Residual(128 -> 128), Residual(128 -> F): a 256x256 crop becomes F x 64 x 64 features;
* each stack: a recursive hourglass of ``depth`` levels (``num_blocks`` residual modules per branch),
  ``num_blocks`` residual modules, 1x1 conv + BN + ReLU, a 1x1 score conv to ``num_joints`` heatmaps;
* between stacks: the features and the heatmaps are each mapped back to F channels by a 1x1 conv and
  added to the stack's input (the paper's Fig. 4 merge).

With 8 stacks, F = 256, 1 block and 16 joints this has 25,434,112 parameters.
"""
from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["Residual", "Hourglass", "StackedHourglass"]


class Residual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1x1 -> BN-ReLU-3x3 -> BN-ReLU-1x1, plus an identity skip
    (a 1x1 conv when the channel count changes).

    Input ``(N, in_channels, H, W)`` -> output ``(N, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid = out_channels // 2
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, mid, 1)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, out_channels, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + self.skip(x)


def _residuals(channels: int, num_blocks: int) -> nn.Sequential:
    return nn.Sequential(*[Residual(channels, channels) for _ in range(num_blocks)])


class Hourglass(nn.Module):
    """One hourglass of ``depth`` levels, built recursively.

    At each level the input goes two ways: an upper branch at the same resolution, and a lower
    branch that max-pools by 2, runs the next level (or ``num_blocks`` residuals at the bottom),
    and is upsampled back with nearest-neighbour interpolation; the two are summed.
    Input and output are ``(N, channels, H, W)`` with ``H`` and ``W`` divisible by ``2**depth``
    (a 64x64 map goes down to 4x4 with depth 4, the paper's lowest resolution).
    """

    def __init__(self, depth: int, channels: int, num_blocks: int = 1) -> None:
        super().__init__()
        self.upper = _residuals(channels, num_blocks)
        self.down = _residuals(channels, num_blocks)
        self.inner = Hourglass(depth - 1, channels, num_blocks) if depth > 1 else _residuals(channels, num_blocks)
        self.up = _residuals(channels, num_blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_levels(x)[0]

    def forward_levels(self, x: Tensor) -> list[Tensor]:
        """The output at this level's resolution first, then the outputs of the inner hourglasses
        (the upsampling path at 1/2, 1/4, ... of the resolution), ``depth`` tensors in all."""
        lower = self.down(F.max_pool2d(x, 2))
        inner = self.inner.forward_levels(lower) if isinstance(self.inner, Hourglass) else [self.inner(lower)]
        lower = self.up(inner[0])
        levels = [self.upper(x) + F.interpolate(lower, scale_factor=2, mode="nearest")]
        return levels + (inner if isinstance(self.inner, Hourglass) else [])


class StackedHourglass(nn.Module):
    """Stacked Hourglass: images to one heatmap prediction per stack.

    Args:
        num_stacks: number of hourglasses in sequence (the paper's 8; 2/4 for the ablation).
        num_blocks: residual modules per hourglass branch and after each hourglass (1 in the paper's
            8-stack network; 4 and 2 for the equal-size 2- and 4-stack ablation variants).
        num_features: channels F carried through every hourglass (256 in the paper).
        num_joints: heatmaps per stack (16 for MPII, 14 for LSP, 17 for COCO).
        depth: hourglass levels; the lowest resolution is the output resolution / 2**depth.
        in_channels: image channels.
        stem_channels: width of the stem's middle residuals; ``None`` means ``min(128, num_features)``
            (128 in the paper's F = 256 network).
        internal_supervision: lower resolutions of each hourglass's upsampling path that also predict
            heatmaps (a 1x1 conv each, upsampled bilinearly to the output size): the paper's HG-Int
            (Sec. 4.2, Fig. 8) is one hourglass of 8 modules with 2, "after upsampling at the next two
            highest resolutions before the final output resolution". Those predictions are not merged
            back into the network. 0 (default): none.

    Input: ``(N, in_channels, H, W)`` float images, ``H`` and ``W`` divisible by ``4 * 2**depth``.
    Output: a list of ``num_outputs`` tensors ``(N, num_joints, H/4, W/4)``: per stack, its internal
    predictions from the coarsest up, then the stack's own; the final prediction last. The same in
    train and eval mode (intermediate supervision applies the loss to every entry, inference usually
    keeps the last).
    """

    def __init__(
        self,
        num_stacks: int = 8,
        num_blocks: int = 1,
        num_features: int = 256,
        num_joints: int = 16,
        depth: int = 4,
        in_channels: int = 3,
        stem_channels: int | None = None,
        internal_supervision: int = 0,
    ) -> None:
        super().__init__()
        if num_stacks < 1 or num_blocks < 1 or depth < 1:
            raise ValueError(f"num_stacks, num_blocks and depth must be >= 1, got {num_stacks}, {num_blocks}, {depth}")
        if not 0 <= internal_supervision < depth:
            raise ValueError(f"internal_supervision must be in [0, depth - 1] = [0, {depth - 1}], got {internal_supervision}")
        if num_features % 2:
            raise ValueError(f"num_features must be even (the bottleneck halves it), got {num_features}")
        self.num_stacks = num_stacks
        self.internal_supervision = internal_supervision
        self.num_joints = num_joints
        self.depth = depth
        stem_mid = stem_channels or min(128, num_features)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            Residual(64, stem_mid),
            nn.MaxPool2d(2),
            Residual(stem_mid, stem_mid),
            Residual(stem_mid, num_features),
        )
        self.hourglasses = nn.ModuleList(Hourglass(depth, num_features, num_blocks) for _ in range(num_stacks))
        self.features = nn.ModuleList(
            nn.Sequential(
                _residuals(num_features, num_blocks),
                nn.Conv2d(num_features, num_features, 1),
                nn.BatchNorm2d(num_features),
                nn.ReLU(inplace=True),
            )
            for _ in range(num_stacks)
        )
        self.scores = nn.ModuleList(nn.Conv2d(num_features, num_joints, 1) for _ in range(num_stacks))
        # The merge back into the next stack exists only between stacks, not after the last one.
        self.merge_features = nn.ModuleList(nn.Conv2d(num_features, num_features, 1) for _ in range(num_stacks - 1))
        self.merge_scores = nn.ModuleList(nn.Conv2d(num_joints, num_features, 1) for _ in range(num_stacks - 1))
        self.internal_scores = nn.ModuleList(
            nn.ModuleList(nn.Conv2d(num_features, num_joints, 1) for _ in range(internal_supervision)) for _ in range(num_stacks)
        )

    @property
    def num_outputs(self) -> int:
        """Length of the output list: every stack's prediction and its internal ones."""
        return self.num_stacks * (1 + self.internal_supervision)

    @property
    def stride(self) -> int:
        """Input pixels per heatmap pixel."""
        return 4

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.stem(images)
        outputs = []
        for i in range(self.num_stacks):
            levels = self.hourglasses[i].forward_levels(x)
            for head, level in reversed(list(zip(self.internal_scores[i], levels[1:]))):
                outputs.append(F.interpolate(head(level), size=x.shape[-2:], mode="bilinear", align_corners=False))
            features = self.features[i](levels[0])
            score = self.scores[i](features)
            outputs.append(score)
            if i < self.num_stacks - 1:
                x = x + self.merge_features[i](features) + self.merge_scores[i](score)
        return outputs
