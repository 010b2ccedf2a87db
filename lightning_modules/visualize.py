"""Pictures of predictions for loggers: crops with the decoded skeleton beside the heatmaps, and
the one way every task sends its pictures to W&B."""
from __future__ import annotations

from typing import Any, Callable

import lightning.pytorch as pl
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.utils import draw_keypoints, make_grid

from core.imaging import denormalize
from core.skeletons import Skeleton
from lightning_modules.heatmap_decode import decode_heatmaps, heatmap_to_input

__all__ = ["pose_panels", "log_wandb_images"]


def pose_panels(images: Tensor, heatmaps: Tensor, skeleton: Skeleton) -> list[Tensor]:
    """One ``(3, H, 2W)`` uint8 panel per crop: the crop with the predicted skeleton, and the
    maximum over joints of the predicted heatmaps, upsampled to the crop and overlaid on it.

    Args:
        images: ``(N, 3, H, W)`` normalised crops (as the data module returns them).
        heatmaps: ``(N, K, h, w)`` predictions for those crops.
    """
    pixels = denormalize(images)
    heatmaps = heatmaps.detach().float().cpu()
    coords, _ = decode_heatmaps(heatmaps)
    points = heatmap_to_input(coords, images.shape[-1] / heatmaps.shape[-1])
    peak = F.interpolate(heatmaps.amax(1, keepdim=True).clamp(0, 1), size=images.shape[-2:], mode="bilinear")
    panels = []
    for pixel, kp, heat in zip(pixels, points, peak):
        drawn = draw_keypoints(pixel, kp[None], connectivity=list(skeleton.edges), colors="red", radius=2, width=2)
        overlay = (pixel.float() * 0.4 + heat * 255 * 0.6 * torch.tensor([1.0, 0.8, 0.0]).view(3, 1, 1)).clamp(0, 255).to(torch.uint8)
        panels.append(make_grid([drawn, overlay], nrow=2, padding=0))
    return panels


def log_wandb_images(module: pl.LightningModule, key: str, batch: Any, draw: Callable[[Any], list[Tensor]]) -> None:
    """``draw(batch)`` -> uint8 ``(3, H, W)`` panels, logged under ``key`` to the module's W&B
    loggers, from global rank 0 only; nothing is drawn without a W&B logger or a batch."""
    loggers = [lg for lg in module.loggers if isinstance(lg, pl.loggers.WandbLogger)]
    if batch is None or not loggers or not module.trainer.is_global_zero:
        return
    panels = draw(batch)
    for logger in loggers:
        logger.log_image(key=key, images=panels, step=module.global_step)
