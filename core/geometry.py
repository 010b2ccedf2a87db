"""Geometry shared by data and modules: affine crop maps in pixel-index coordinates.

Coordinates. Points are ``(x, y)`` in *pixel-index* coordinates: 0-based, the centre of pixel
``(i, j)`` at ``(i, j)``. Warps work in *continuous* coordinates, where the image spans
``[0, W] x [0, H]`` and a pixel-index point ``p`` sits at ``p + 0.5``; that is the convention of
``torch.nn.functional.grid_sample(align_corners=False)``, so warps and points agree exactly.

Top-down crops follow MPII's convention: a person is given by a ``center`` and a ``scale`` such that
``200 * scale`` pixels is the side of the box around them.

Boxes use torchvision's conventions and functions (``torchvision.ops.box_convert``, ``box_iou``):
XYXY in absolute pixels, continuous coordinates.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["crop_matrix", "invert_affine", "apply_affine"]


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
