"""Keypoint conventions shared by the pose readers, the pose DataModule and the pose module.

Coordinates. Keypoints are ``(x, y)`` in *pixel-index* coordinates: 0-based, the centre of pixel
``(i, j)`` at ``(i, j)``. Readers convert from their file's convention (MPII and LSP are 1-based).
Geometry (crops, warps, heatmaps) works in *continuous* coordinates, where the image spans
``[0, W] x [0, H]`` and a pixel-index point ``p`` sits at ``p + 0.5``; that is the convention of
``torch.nn.functional.grid_sample(align_corners=False)`` so warps and points agree exactly.

Top-down crops follow MPII's convention: a person is given by a ``center`` and a ``scale`` such that
``200 * scale`` pixels is the side of the box around them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

__all__ = [
    "Skeleton",
    "MPII_SKELETON",
    "LSP_SKELETON",
    "FLIC_SKELETON",
    "COCO_SKELETON",
    "crop_matrix",
    "invert_affine",
    "apply_affine",
    "render_heatmaps",
]


@dataclass(frozen=True)
class Skeleton:
    """The joints of a dataset and how its protocol reads them.

    Attributes:
        name: dataset family, for messages.
        joints: joint names in the dataset's order (the heatmap channel order).
        flip_pairs: (left, right) index pairs swapped by a horizontal flip.
        parts: reported part columns, each the joints it averages (e.g. "Elbow": (11, 14)).
        excluded: joints left out of the total (pelvis and thorax in MPII's PCKh).
        limbs: the joints of the stacking ablation's metric (wrists, elbows, knees, ankles).
        torso: (shoulder, opposite hip) pair whose distance normalises PCK (FLIC, LSP); ``None``
            when the dataset has no torso normaliser.
        edges: joint pairs drawn in visualisations.
    """

    name: str
    joints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    parts: dict[str, tuple[int, ...]] = field(default_factory=dict)
    excluded: tuple[int, ...] = ()
    limbs: tuple[int, ...] = ()
    torso: tuple[int, int] | None = None
    edges: tuple[tuple[int, int], ...] = ()

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def flip_permutation(self) -> list[int]:
        """Index map such that ``flipped[:, perm]`` relabels left as right and right as left."""
        perm = list(range(self.num_joints))
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm


MPII_SKELETON = Skeleton(
    name="mpii",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "pelvis", "thorax",
        "upper_neck", "head_top", "r_wrist", "r_elbow", "r_shoulder", "l_shoulder", "l_elbow", "l_wrist",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13)),
    parts={
        "Head": (9,), "Shoulder": (12, 13), "Elbow": (11, 14), "Wrist": (10, 15),
        "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
    },
    excluded=(6, 7),
    limbs=(10, 15, 11, 14, 1, 4, 0, 5),
    torso=(13, 2),
    edges=((0, 1), (1, 2), (2, 6), (6, 3), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
           (10, 11), (11, 12), (12, 7), (7, 13), (13, 14), (14, 15)),
)

# LSP / LSP-extended joints.mat order (14 joints, person-centric left/right).
LSP_SKELETON = Skeleton(
    name="lsp",
    joints=(
        "r_ankle", "r_knee", "r_hip", "l_hip", "l_knee", "l_ankle", "r_wrist", "r_elbow",
        "r_shoulder", "l_shoulder", "l_elbow", "l_wrist", "neck", "head_top",
    ),
    flip_pairs=((0, 5), (1, 4), (2, 3), (6, 11), (7, 10), (8, 9)),
    parts={
        "Head": (13,), "Shoulder": (8, 9), "Elbow": (7, 10), "Wrist": (6, 11),
        "Hip": (2, 3), "Knee": (1, 4), "Ankle": (0, 5),
    },
    limbs=(6, 11, 7, 10, 1, 4, 0, 5),
    # PCK on LSP is normalised by the torso: left shoulder to right hip (Yang & Ramanan's PCP/PCK).
    torso=(9, 2),
    edges=((0, 1), (1, 2), (3, 4), (4, 5), (2, 3), (6, 7), (7, 8), (9, 10), (10, 11),
           (8, 9), (8, 2), (9, 3), (12, 13), (8, 12), (9, 12)),
)

# FLIC's 11 annotated upper-body joints, taken from the 29 columns of examples.mat's `coords`.
FLIC_SKELETON = Skeleton(
    name="flic",
    joints=(
        "l_shoulder", "l_elbow", "l_wrist", "r_shoulder", "r_elbow", "r_wrist",
        "l_hip", "r_hip", "l_eye", "r_eye", "nose",
    ),
    flip_pairs=((0, 3), (1, 4), (2, 5), (6, 7), (8, 9)),
    parts={"Shoulder": (0, 3), "Elbow": (1, 4), "Wrist": (2, 5), "Hip": (6, 7), "Head": (8, 9, 10)},
    limbs=(1, 4, 2, 5),
    # FLIC's observer-centric PCK normalises by the torso: left shoulder to right hip.
    torso=(0, 7),
    edges=((0, 1), (1, 2), (3, 4), (4, 5), (0, 3), (0, 6), (3, 7), (6, 7), (8, 10), (9, 10)),
)

COCO_SKELETON = Skeleton(
    name="coco",
    joints=(
        "nose", "l_eye", "r_eye", "l_ear", "r_ear", "l_shoulder", "r_shoulder", "l_elbow", "r_elbow",
        "l_wrist", "r_wrist", "l_hip", "r_hip", "l_knee", "r_knee", "l_ankle", "r_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    parts={
        "Head": (0, 1, 2, 3, 4), "Shoulder": (5, 6), "Elbow": (7, 8), "Wrist": (9, 10),
        "Hip": (11, 12), "Knee": (13, 14), "Ankle": (15, 16),
    },
    limbs=(7, 8, 9, 10, 13, 14, 15, 16),
    torso=(5, 12),
    edges=((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7),
           (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)),
)


def crop_matrix(
    center: tuple[float, float] | Tensor,
    scale: float,
    output_size: tuple[int, int],
    rotation: float = 0.0,
    flip: bool = False,
) -> Tensor:
    """The 2x3 affine map from image to crop, in pixel-index coordinates (see module docstring).

    Args:
        center: person centre ``(x, y)`` in the image, pixel-index coordinates.
        scale: MPII scale; the crop's height covers ``200 * scale`` image pixels.
        output_size: crop ``(height, width)``; the width covers ``200 * scale * width / height``.
        rotation: degrees, counter-clockwise in the image as seen (the paper's ±30° augmentation).
        flip: mirror horizontally about the centre (the caller swaps left/right joint labels).

    Returns: ``(2, 3)`` float64 tensor ``M`` with ``crop_point = M @ [x, y, 1]``.
    """
    cx, cy = (float(v) for v in center)
    height, width = output_size
    s = height / (200.0 * scale)
    theta = math.radians(rotation)
    cos, sin = math.cos(theta) * s, math.sin(theta) * s
    fx = -1.0 if flip else 1.0
    # continuous: q = s * R(theta) * F * (p - c) + size / 2, with p = index + 0.5 and q = index + 0.5.
    # Image y points down, so a counter-clockwise turn as seen is R = [[cos, sin], [-sin, cos]].
    a = torch.tensor([[fx * cos, sin], [-fx * sin, cos]], dtype=torch.float64)
    shift = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float64) - a @ torch.tensor([cx + 0.5, cy + 0.5], dtype=torch.float64)
    # Back to index coordinates on both sides: q_idx = A p_idx + (A 0.5 + shift - 0.5).
    t = shift + a @ torch.tensor([0.5, 0.5], dtype=torch.float64) - 0.5
    return torch.cat([a, t[:, None]], dim=1)


def invert_affine(matrix: Tensor) -> Tensor:
    """Inverse of a ``(..., 2, 3)`` affine map."""
    a = matrix[..., :2]
    t = matrix[..., 2:]
    a_inv = torch.linalg.inv(a)
    return torch.cat([a_inv, -a_inv @ t], dim=-1)


def apply_affine(matrix: Tensor, points: Tensor) -> Tensor:
    """Map ``(..., K, 2)`` points through ``(..., 2, 3)`` affine maps (batched alike)."""
    return points @ matrix[..., :2].transpose(-1, -2) + matrix[..., 2].unsqueeze(-2)


def render_heatmaps(
    points: Tensor, valid: Tensor, size: tuple[int, int], sigma: float
) -> Tensor:
    """Unnormalised Gaussian heatmaps, peak 1, centred at sub-pixel joint positions.

    Args:
        points: ``(K, 2)`` joint positions in heatmap pixel-index coordinates.
        valid: ``(K,)`` bool; invalid joints (unannotated, or off the map) get an all-zero heatmap.
        size: heatmap ``(height, width)``.
        sigma: standard deviation in heatmap pixels (1 in the paper for 64x64 maps).

    Returns: ``(K, height, width)`` float32.
    """
    height, width = size
    ys = torch.arange(height, dtype=torch.float32).view(1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, width)
    px = points[:, 0].float().view(-1, 1, 1)
    py = points[:, 1].float().view(-1, 1, 1)
    maps = torch.exp(-((xs - px) ** 2 + (ys - py) ** 2) / (2.0 * sigma**2))
    return maps * valid.view(-1, 1, 1).float()
