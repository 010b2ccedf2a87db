"""Pictures of predictions: crops with the decoded skeleton beside the heatmaps, prediction records
drawn over their image (``draw_records``: what ``infer`` writes), and the one way every task sends
its validation pictures to W&B and to the run directory (``log_panels``)."""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision.utils import draw_keypoints, make_grid

from core.imaging import denormalize
from core.skeletons import Skeleton
from lightning_modules.heatmap_decode import decode_heatmaps, heatmap_to_input

__all__ = ["pose_panels", "log_panels", "draw_records", "save_png", "MIN_DRAWN_SIDE"]

Color = tuple[int, int, int]
# Records are drawn on an image enlarged (nearest neighbour, by a whole factor) to at least this
# long side, so that labels stay readable on the small images of the quick configs.
MIN_DRAWN_SIDE = 320


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


def log_panels(module: pl.LightningModule, key: str, batch: Any, draw: Callable[[Any], list[Tensor]]) -> Path | None:
    """``draw(batch)`` -> uint8 ``(3, H, W)`` panels, logged under ``key`` to the module's W&B
    loggers and saved as one grid, ``<run>/panels/epoch<NNN>.png`` (``trainer.log_dir``: the run
    directory), from global rank 0 only. Nothing is drawn without a batch, or without a logger
    (a bare Trainer has no run directory). Returns the PNG's path, or ``None``."""
    if batch is None or not module.trainer.loggers:
        return None
    # Trainer.log_dir broadcasts rank 0's directory: every rank asks, or DDP pairs it with the next collective.
    directory = module.trainer.log_dir
    if not module.trainer.is_global_zero:
        return None
    panels = draw(batch)
    for logger in module.loggers:
        if isinstance(logger, pl.loggers.WandbLogger):
            logger.log_image(key=key, images=panels, step=module.global_step)
    if directory is None or not panels:
        return None
    return save_png(Path(directory) / "panels" / f"epoch{module.current_epoch:03d}.png", _grid(panels))


def _grid(panels: list[Tensor]) -> Tensor:
    """Panels of different sizes side by side in rows of up to 4, padded with white."""
    height = max(p.shape[-2] for p in panels)
    width = max(p.shape[-1] for p in panels)
    padded = [F.pad(p, (0, width - p.shape[-1], 0, height - p.shape[-2]), value=255) for p in panels]
    return make_grid(padded, nrow=min(4, len(panels)), padding=2, pad_value=255)


def save_png(path: Path, picture: Tensor) -> Path:
    """A uint8 ``(3, H, W)`` picture as a PNG file, written atomically."""
    from PIL import Image

    from core.io import write_atomic

    buffer = io.BytesIO()
    Image.fromarray(picture.permute(1, 2, 0).contiguous().numpy()).save(buffer, format="PNG")
    return write_atomic(path, buffer.getvalue())


def draw_records(image: Tensor, records: Sequence[dict[str, Any]], colors: dict[str, Color],
                 edges: Sequence[tuple[int, int]] = ()) -> Tensor:
    """The records of one image (``TaskModule.prediction_records``' format) drawn over it.

    Args:
        image: ``(3, H, W)`` uint8, the original image the records' coordinates are in.
        records: COCO results: ``segmentation`` (RLE) as a coloured overlay, ``bbox`` ``[x, y, w,
            h]`` as a box labelled ``"<category> <score>"``, ``keypoints`` ``[x1, y1, s1, ...]``
            as points joined by ``edges`` (joint index pairs).
        colors: RGB per ``category``; a class coloured black (a background) is not overlaid.

    Returns: ``(3, H', W')`` uint8: the image enlarged by a whole factor to a long side of at least
    ``MIN_DRAWN_SIDE``, with, when any record has a mask, a legend of the masks' classes below it.
    """
    from pycocotools import mask as mask_utils
    from torchvision.utils import draw_bounding_boxes, draw_keypoints, draw_segmentation_masks

    factor = max(1, math.ceil(MIN_DRAWN_SIDE / max(image.shape[-2:])))
    pixels = image.repeat_interleave(factor, -2).repeat_interleave(factor, -1)

    def color(record: dict[str, Any]) -> Color:
        return tuple(colors.get(str(record.get("category")), (255, 0, 0)))  # type: ignore[return-value]

    masked = [r for r in records if "segmentation" in r and color(r) != (0, 0, 0)]
    if masked:
        masks = torch.stack([torch.from_numpy(mask_utils.decode(r["segmentation"])).bool() for r in masked])
        masks = masks.repeat_interleave(factor, -2).repeat_interleave(factor, -1)
        pixels = draw_segmentation_masks(pixels, masks, alpha=0.5, colors=[color(r) for r in masked])
    boxed = [r for r in records if "bbox" in r]
    if boxed:
        boxes = torch.tensor([r["bbox"] for r in boxed], dtype=torch.float32) * factor
        boxes[:, 2:] += boxes[:, :2]
        labels = [f"{r.get('category', r.get('category_id'))} {float(r['score']):.2f}" for r in boxed]
        pixels = draw_bounding_boxes(pixels, boxes, labels=labels, colors=[color(r) for r in boxed], width=2)
    posed = [r for r in records if "keypoints" in r]
    if posed:
        # COCO keypoints are pixel-index coordinates: a pixel's centre enlarged is at (x + 0.5) * factor - 0.5.
        points = torch.tensor([r["keypoints"] for r in posed], dtype=torch.float32).view(len(posed), -1, 3)[..., :2]
        points = (points + 0.5) * factor - 0.5
        pixels = draw_keypoints(pixels, points, connectivity=[tuple(e) for e in edges] or None, colors="red", radius=3, width=2)
    if masked:
        pixels = _with_legend(pixels, {str(r.get("category")): color(r) for r in masked})
    return pixels


def _with_legend(pixels: Tensor, entries: dict[str, Color]) -> Tensor:
    """``pixels`` with a white strip below: a coloured square and the name of each entry."""
    from PIL import Image, ImageDraw

    row, width = 14, pixels.shape[-1]
    per_line = max(1, width // 110)
    lines = math.ceil(len(entries) / per_line)
    strip = Image.new("RGB", (width, 4 + row * lines), "white")
    pen = ImageDraw.Draw(strip)
    for n, (name, rgb) in enumerate(sorted(entries.items())):
        x, y = 4 + (n % per_line) * 110, 3 + (n // per_line) * row
        pen.rectangle([x, y, x + 10, y + 10], fill=tuple(rgb), outline="black")
        pen.text((x + 14, y), name[:16], fill="black")
    legend = torch.from_numpy(np.array(strip)).permute(2, 0, 1)
    return torch.cat([pixels, legend], dim=-2)
