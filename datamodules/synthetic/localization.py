"""Procedurally drawn shapes, one per image: the embedded default classification + localisation data.

Every image is generated from ``(seed, split, index)`` alone, so a split is identical on every
machine and in every worker, costs nothing to store, and is drawn only when it is loaded. An image
holds exactly one object of one of the ``CLASS_NAMES`` (circle, square, triangle, star, cross,
ring), filled with a colour that stands out from the background, with a random size (a fraction
of the image side), aspect ratio (stretched up to 1.6 : 1 either way), rotation (polygons, up to
``max_rotation`` degrees) and position (always wholly inside the image). The background is a
colour gradient with noise and, now and then, faint stripes; clutter that is none of the classes
(thin lines, arcs, zigzags and small dots) is drawn under the object.

The box is the tight box of the drawn outline (the shape's polygon), XYXY in continuous pixel
coordinates.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from core.errors import ConfigError
from core.records import OnBadRecord
from datamodules.localization import LocalizationRecord, LocalizationSource
from datamodules.synthetic.shapes import OUTLINES, textured_background
from datamodules.synthetic.splits import SyntheticSplits, contrasting_color

__all__ = ["SyntheticLocalization", "CLASS_NAMES"]

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
class SyntheticLocalization(SyntheticSplits, LocalizationSource):
    """Synthetic shapes, one per image, with their class and box.

    Args:
        num_train: images in the train split.
        num_val: images in the val split.
        num_test: images in the test split.
        image_size: image side, or ``(height, width)``.
        seed: base seed; every image is a function of ``(seed, split, index)``.
        min_size: smallest object (its box's longer side) as a fraction of the image's shorter side.
        max_size: largest object, the same way.
        max_rotation: polygons are rotated uniformly within +-this many degrees (0: upright).
        clutter: number of background distractors, drawn uniformly from ``0..clutter``.
        on_bad_record: the bad-record policy every source takes; generated records are never bad.
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        image_size: int | tuple[int, int] = 64,
        seed: int = 0,
        min_size: float = 0.25,
        max_size: float = 0.75,
        max_rotation: float = 30.0,
        clutter: int = 8,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if clutter < 0:
            raise ConfigError(f"SyntheticLocalization.clutter must be >= 0, got {clutter}")
        size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        if min(size) < 16:
            raise ConfigError(f"SyntheticLocalization.image_size must be >= 16, got {image_size}")
        if not 0 < min_size <= max_size <= 1:
            raise ConfigError(f"SyntheticLocalization needs 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        self.init_splits(num_train, num_val, num_test, seed, on_bad_record)
        self.image_size = size
        self.min_size = min_size
        self.max_size = max_size
        self.max_rotation = max_rotation
        self.clutter = clutter

    def record(self, split: str, index: int) -> LocalizationRecord:
        shape = _sample_shape(self.rng(split, index, 0), self.image_size, self.min_size, self.max_size, self.max_rotation)
        outer = shape["outer"]
        box = (float(outer[:, 0].min()), float(outer[:, 1].min()), float(outer[:, 0].max()), float(outer[:, 1].max()))
        return LocalizationRecord(image=(split, index), box=box, label=shape["label"], image_id=f"{split}/{index:06d}", extra={"shape": shape})

    def load_image(self, record: LocalizationRecord) -> Tensor:
        split, index = record.image
        image = _draw(self.rng(split, index, 1), record.extra["shape"], self.image_size, self.clutter)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()



def _sample_shape(rng: np.random.Generator, image_size: tuple[int, int], min_size: float, max_size: float, max_rotation: float) -> dict[str, Any]:
    """Class, outline (and hole) in image pixels, colours. The outline's box has its longer side
    at a uniform fraction of the image's shorter side and lies wholly inside the image."""
    height, width = image_size
    label = int(rng.integers(len(CLASS_NAMES)))
    outline, hole = OUTLINES[CLASS_NAMES[label]]
    # Aspect variety: stretch one axis by up to 1.6 (log-uniform, so wide and tall are as likely).
    aspect = math.exp(rng.uniform(-math.log(1.6), math.log(1.6)))
    stretch = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)])
    angle = math.radians(rng.uniform(-max_rotation, max_rotation))
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])

    def place(points: np.ndarray) -> np.ndarray:
        return (points * stretch) @ rotation.T

    outer = place(outline)
    lo, hi = outer.min(0), outer.max(0)
    side = rng.uniform(min_size, max_size) * min(height, width)
    scale = side / float(max(hi - lo))
    extent = (hi - lo) * scale
    # Anywhere with the box inside the image, a pixel clear of the border.
    corner = np.array([rng.uniform(1, max(1.0, width - extent[0] - 1)), rng.uniform(1, max(1.0, height - extent[1] - 1))])
    shift = corner - lo * scale
    background = rng.integers(0, 256, 3)
    return {
        "label": label,
        "outer": outer * scale + shift,
        "hole": None if hole is None else place(hole) * scale + shift,
        "color": contrasting_color(rng, background).tolist(),
        "background": background.tolist(),
    }




def _draw(rng: np.random.Generator, shape: dict[str, Any], image_size: tuple[int, int], clutter: int) -> Image.Image:
    height, width = image_size
    image = Image.fromarray(textured_background(rng, image_size, shape["background"]))
    draw = ImageDraw.Draw(image)
    side = min(height, width)
    for _ in range(int(rng.integers(0, clutter + 1))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        kind = int(rng.integers(0, 4))
        if kind == 0:  # a thin straight line
            length, angle = rng.uniform(0.2, 0.8) * side, rng.uniform(0, 2 * math.pi)
            draw.line([x0, y0, x0 + length * math.cos(angle), y0 + length * math.sin(angle)], fill=color, width=int(rng.integers(1, 3)))
        elif kind == 1:  # an open arc
            r = rng.uniform(0.08, 0.3) * side
            start = rng.uniform(0, 360)
            draw.arc([x0 - r, y0 - r, x0 + r, y0 + r], start, start + rng.uniform(60, 200), fill=color, width=int(rng.integers(1, 3)))
        elif kind == 2:  # a zigzag
            steps = rng.uniform(-0.12, 0.12, (int(rng.integers(3, 6)), 2)) * side
            points = np.cumsum(np.vstack([[x0, y0], steps]), axis=0)
            draw.line([tuple(p) for p in points], fill=color, width=1)
        else:  # a dot, far smaller than the smallest object
            r = rng.uniform(0.01, 0.04) * side
            draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=color)

    mask = Image.new("L", (width, height), 0)
    mask_draw = ImageDraw.Draw(mask)
    mask_draw.polygon([tuple(p) for p in shape["outer"]], fill=255)
    if shape["hole"] is not None:
        mask_draw.polygon([tuple(p) for p in shape["hole"]], fill=0)
    image.paste(tuple(int(c) for c in shape["color"]), (0, 0, width, height), mask)
    return image
