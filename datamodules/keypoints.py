"""Gaussian heatmap targets for the pose data module.

Joint positions are in heatmap pixel-index coordinates (``core.geometry`` states the conventions);
skeletons and protocols live in ``core.skeletons``.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["render_heatmaps"]


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
