"""Image normalisation shared by data (which normalises) and modules (which draw predictions)."""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "denormalize"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def denormalize(images: Tensor) -> Tensor:
    """ImageNet-normalised ``(N, 3, H, W)`` floats back to ``(N, 3, H, W)`` uint8 pixels."""
    images = images.detach().float().cpu()
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return ((images * std + mean).clamp(0, 1) * 255).to(torch.uint8)
