"""Procedurally drawn scenes with a label per pixel: the embedded default segmentation data.

Every image is generated from ``(seed, split, index)`` alone (``SyntheticSplits``): identical on
every machine and in every worker, free to store, drawn only when loaded. A scene holds a textured
background (label 0) and ``min_objects..max_objects`` objects drawn one over the other, so later
objects occlude earlier ones and the labels follow what is visible:

* filled shapes of five classes (``disc``, ``square``, ``triangle``, ``star``, ``ring`` — the
  ring's hole shows the background), of random size, aspect and rotation, each in a colour that
  stands out from the background; the class is in the outline, never in the colour;
* thin structures of class ``wire``: polylines 1 to ``max_wire_width`` pixels wide, whose labels
  need a fine output stride to be recovered (what FCN's skip connections are for).

Objects may leave the image (partly visible at the borders). Labels are exact: the label map is
drawn with the same polygons and lines as the pixels, without anti-aliasing.
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
from datamodules.segmentation import SegmentationRecord, SegmentationSource
from datamodules.synthetic.shapes import OUTLINES, textured_background
from datamodules.synthetic.splits import SyntheticSplits, contrasting_color

__all__ = ["SyntheticSegmentation", "CLASS_NAMES"]

CLASS_NAMES = ("background", "disc", "square", "triangle", "star", "ring", "wire")
_SHAPES = {"disc": "circle", "square": "square", "triangle": "triangle", "star": "star", "ring": "ring"}
_WIRE = CLASS_NAMES.index("wire")


class SyntheticSegmentation(SyntheticSplits, SegmentationSource):
    """Synthetic scenes of shapes and wires with their label maps.

    Args:
        num_train: images in the train split.
        num_val: images in the val split.
        num_test: images in the test split.
        image_size: image side, or ``(height, width)``.
        seed: base seed; every image is a function of ``(seed, split, index)``.
        min_objects: fewest shapes per image.
        max_objects: most shapes per image.
        max_wires: each image has ``0..max_wires`` wires, drawn among the shapes.
        min_size: smallest shape (its longer side) as a fraction of the image's shorter side.
        max_size: largest shape, the same way.
        max_wire_width: wires are 1 to this many pixels wide.
        on_bad_record: the bad-record policy every source takes; generated records are never bad.

    Records: ``image`` and ``mask`` are ``(split, index)``; ``extra["objects"]`` the scene.
    """

    class_names: tuple[str, ...] = CLASS_NAMES

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 200,
        image_size: int | tuple[int, int] = 64,
        seed: int = 0,
        min_objects: int = 1,
        max_objects: int = 4,
        max_wires: int = 2,
        min_size: float = 0.2,
        max_size: float = 0.6,
        max_wire_width: int = 2,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        name = type(self).__name__
        size = (image_size, image_size) if isinstance(image_size, int) else (int(image_size[0]), int(image_size[1]))
        if min(size) < 16:
            raise ConfigError(f"{name}.image_size must be >= 16, got {image_size}")
        if not 0 <= min_objects <= max_objects:
            raise ConfigError(f"{name} needs 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        if max_wires < 0 or max_wire_width < 1:
            raise ConfigError(f"{name} needs max_wires >= 0 and max_wire_width >= 1, got {max_wires}, {max_wire_width}")
        if not 0 < min_size <= max_size <= 1:
            raise ConfigError(f"{name} needs 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        self.init_splits(num_train, num_val, num_test, seed, on_bad_record)
        self.image_size = size
        self.min_objects, self.max_objects, self.max_wires = min_objects, max_objects, max_wires
        self.min_size, self.max_size, self.max_wire_width = min_size, max_size, max_wire_width

    def record(self, split: str, index: int) -> SegmentationRecord:
        scene = _sample_scene(self.rng(split, index, 0), self)
        return SegmentationRecord(image=(split, index), mask=(split, index), image_id=f"{split}/{index:06d}", extra={"scene": scene})

    def load(self, record: SegmentationRecord) -> tuple[Tensor, Tensor]:
        split, index = record.image
        image, labels = _draw(self.rng(split, index, 1), record.extra["scene"], self.image_size)
        return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(labels).long()


def _sample_scene(rng: np.random.Generator, source: SyntheticSegmentation) -> dict[str, Any]:
    """Background colour and the objects, back to front: shapes as polygons (and holes) in image
    pixels, wires as polylines with a width."""
    height, width = source.image_size
    side = min(height, width)
    background = rng.integers(0, 256, 3)
    objects: list[dict[str, Any]] = []
    num_shapes = int(rng.integers(source.min_objects, source.max_objects + 1))
    num_wires = int(rng.integers(0, source.max_wires + 1))
    kinds = ["shape"] * num_shapes + ["wire"] * num_wires
    rng.shuffle(kinds)
    shape_names = list(_SHAPES)
    for kind in kinds:
        color = contrasting_color(rng, background).tolist()
        if kind == "wire":
            start = rng.uniform([0, 0], [width, height])
            steps = int(rng.integers(2, 5))
            heading = rng.uniform(0, 2 * math.pi)
            points = [start]
            for _ in range(steps):
                heading += rng.uniform(-1.0, 1.0)
                length = rng.uniform(0.15, 0.4) * side
                points.append(points[-1] + length * np.array([math.cos(heading), math.sin(heading)]))
            objects.append({"label": _WIRE, "points": np.array(points).tolist(), "width": int(rng.integers(1, source.max_wire_width + 1)), "color": color})
            continue
        name = shape_names[int(rng.integers(len(shape_names)))]
        outline, hole = OUTLINES[_SHAPES[name]]
        aspect = math.exp(rng.uniform(-math.log(1.5), math.log(1.5)))
        stretch = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)])
        angle = rng.uniform(0, 2 * math.pi)
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        scale = rng.uniform(source.min_size, source.max_size) * side / 2
        center = rng.uniform([0.1 * width, 0.1 * height], [0.9 * width, 0.9 * height])

        objects.append({
            "label": CLASS_NAMES.index(name),
            "outer": _place(outline, stretch, rotation, scale, center),
            "hole": None if hole is None else _place(hole, stretch, rotation, scale, center),
            "color": color,
        })
    return {"background": background.tolist(), "objects": objects}


def _place(points: np.ndarray, stretch: np.ndarray, rotation: np.ndarray, scale: float, center: np.ndarray) -> list[list[float]]:
    """A unit outline stretched, rotated, scaled and moved to ``center`` (image pixels)."""
    return ((points * stretch) @ rotation.T * scale + center).tolist()


def _draw(rng: np.random.Generator, scene: dict[str, Any], image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W, 3)`` uint8 pixels and ``(H, W)`` uint8 labels of the scene."""
    image = Image.fromarray(textured_background(rng, image_size, scene["background"]))
    labels = Image.new("L", image.size, 0)
    draw, label_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    for obj in scene["objects"]:
        color = tuple(int(c) for c in obj["color"])
        if "points" in obj:
            line = [tuple(p) for p in obj["points"]]
            draw.line(line, fill=color, width=obj["width"])
            label_draw.line(line, fill=obj["label"], width=obj["width"])
            continue
        # The hole shows what lies beneath: pixels and labels of the layers below stay.
        mask = Image.new("L", image.size, 0)
        mask_draw = ImageDraw.Draw(mask)
        mask_draw.polygon([tuple(p) for p in obj["outer"]], fill=255)
        if obj["hole"] is not None:
            mask_draw.polygon([tuple(p) for p in obj["hole"]], fill=0)
        image.paste(color, (0, 0, *image.size), mask)
        labels.paste(obj["label"], (0, 0, *image.size), mask)
    return np.array(image), np.array(labels)
