"""Heatmaps back to keypoints: argmax, the paper's quarter-pixel offset, and the flip test.

Conventions are those of ``core.geometry``: pixel-index coordinates, heatmap pixel ``h`` at
input pixel ``(h + 0.5) * stride - 0.5``.
"""
from __future__ import annotations

import torch
from torch import Tensor

from core.geometry import apply_affine, invert_affine

__all__ = ["decode_heatmaps", "heatmap_to_input", "to_image_coordinates", "flip_back"]


def decode_heatmaps(heatmaps: Tensor, quarter_offset: bool = True) -> tuple[Tensor, Tensor]:
    """Peak location of each heatmap.

    The argmax is moved a quarter pixel along each axis towards the higher of its two neighbours
    (Newell et al. Sec. 4: "offset by a quarter of a pixel in the direction of its next highest
    neighbor"); border pixels, which lack a neighbour, are left as they are.

    Args:
        heatmaps: ``(N, K, H, W)``.
        quarter_offset: apply the quarter-pixel refinement.

    Returns:
        coords: ``(N, K, 2)`` float ``(x, y)`` in heatmap pixel-index coordinates.
        scores: ``(N, K)`` peak values (a confidence, not a probability).
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    scores, index = flat.max(dim=-1)
    x = (index % w).long()
    y = torch.div(index, w, rounding_mode="floor").long()
    coords = torch.stack([x, y], dim=-1).to(heatmaps.dtype if heatmaps.is_floating_point() else torch.float32)
    if quarter_offset:
        maps = heatmaps.reshape(n * k, h, w)
        xf, yf = x.reshape(-1), y.reshape(-1)
        rows = torch.arange(n * k, device=heatmaps.device)
        inner_x = (xf > 0) & (xf < w - 1)
        inner_y = (yf > 0) & (yf < h - 1)
        dx = maps[rows, yf, (xf + 1).clamp(max=w - 1)] - maps[rows, yf, (xf - 1).clamp(min=0)]
        dy = maps[rows, (yf + 1).clamp(max=h - 1), xf] - maps[rows, (yf - 1).clamp(min=0), xf]
        offset = torch.stack([torch.sign(dx) * inner_x, torch.sign(dy) * inner_y], dim=-1) * 0.25
        coords = coords + offset.reshape(n, k, 2).to(coords.dtype)
    return coords.float(), scores.float()


def heatmap_to_input(coords: Tensor, stride: float) -> Tensor:
    """Heatmap pixel-index coordinates to network-input pixel-index coordinates."""
    return (coords + 0.5) * stride - 0.5


def to_image_coordinates(coords: Tensor, stride: float, crop_matrices: Tensor) -> Tensor:
    """Map ``(N, K, 2)`` heatmap coordinates back to the original image through the inverse of each
    sample's ``(N, 2, 3)`` image-to-crop matrix (``core.geometry.crop_matrix``)."""
    inputs = heatmap_to_input(coords.double(), stride)
    return apply_affine(invert_affine(crop_matrices.double()), inputs).float()


def flip_back(heatmaps: Tensor, flip_permutation: list[int]) -> Tensor:
    """Heatmaps predicted on a mirrored input, returned to the original frame: mirror the maps and
    swap the left/right channels. ``(N, K, H, W)`` -> ``(N, K, H, W)``."""
    return heatmaps.flip(-1)[:, flip_permutation]
