"""Procedurally drawn scenes of objects with boxes, instance masks and keypoints: the embedded default
detection data.

Every image is generated from ``(seed, split, index)`` alone (``SyntheticSplits``): identical on
every machine, in every worker and in every resumed run. A scene is a textured background and
``min_objects..max_objects`` filled shapes of six classes (``circle``, ``square``, ``triangle``,
``star``, ``cross``, ``ring``), drawn back to front in colours that stand out from the background,
so the class is in the outline, never in the colour:

* **scale variety**: an object's size is drawn log-uniformly between ``min_size`` and ``max_size``
  of the image's shorter side (COCO's small, medium and large objects at the default sizes);
* **occlusion**: later objects cover earlier ones; an object keeps at least ``min_visible`` of its
  area visible (positions are redrawn until it does), and its mask, box and area are those of its
  visible pixels (COCO's convention for boxes and areas);
* **crowded and empty images**: with probability ``crowded_prob`` an image holds ``crowded_objects``
  small objects; with ``min_objects: 0`` some images hold none (negatives for the detector);
* **keypoints**: four per object — the outline's vertices nearest to the shape's own top, right,
  bottom and left before rotation (rotations stay within ``max_rotation`` degrees, so "top" stays
  meaningful for every shape); visibility 2 where the point is on a visible pixel of the object, 1
  where a later object hides it, 0 outside the image.

Coordinates follow ``datamodules.detection``: boxes XYXY continuous (``x2 = last column + 1``),
labels ``1..6``, keypoints continuous ``x, y`` (a vertex at ``(x, y)`` lies in pixel
``(floor(y), floor(x))``).
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
from datamodules.base import pair
from datamodules.detection import DetectionRecord, DetectionSource
from datamodules.synthetic.shapes import OUTLINES, textured_background
from datamodules.synthetic.splits import SyntheticSplits, contrasting_color

__all__ = ["SyntheticDetection", "CLASS_NAMES", "KEYPOINT_NAMES"]

CLASS_NAMES = ("circle", "square", "triangle", "star", "cross", "ring")
KEYPOINT_NAMES = ("top", "right", "bottom", "left")
# Directions of the keypoints in the shape's own frame (y down), in KEYPOINT_NAMES order.
_DIRECTIONS = np.array([(0.0, -1.0), (1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)])
# A horizontal flip turns the right keypoint into the left one.
FLIP_PAIRS = ((1, 3),)
_PLACEMENT_TRIES = 20


def _keypoint_vertices(outline: np.ndarray) -> np.ndarray:
    """Index of the outline vertex nearest to each direction (ties: the first vertex)."""
    directions = _DIRECTIONS / np.linalg.norm(_DIRECTIONS, axis=1, keepdims=True)
    return np.argmin(np.linalg.norm(outline[None] - directions[:, None], axis=2), axis=1)


_KEYPOINT_VERTICES = {name: _keypoint_vertices(OUTLINES[name][0]) for name in CLASS_NAMES}


class SyntheticDetection(SyntheticSplits, DetectionSource):
    """Synthetic scenes of shapes with boxes, instance masks and keypoints.

    Args:
        num_train: images in the train split.
        num_val: images in the val split.
        num_test: images in the test split.
        image_size: image side, or ``(height, width)``.
        seed: base seed; every image is a function of ``(seed, split, index)``.
        min_objects: fewest objects in an ordinary image (0 allows empty images).
        max_objects: most objects in an ordinary image.
        crowded_prob: probability that an image is crowded instead.
        crowded_objects: objects in a crowded image (drawn at the small end of the size range).
        min_size: smallest object side as a fraction of the image's shorter side.
        max_size: largest object side, the same way.
        min_visible: the fraction of each object's area that occlusion must leave visible.
        max_rotation: objects are rotated by up to this many degrees either way.
        on_bad_record: the bad-record policy every source takes; generated records are never bad.

    Records: ``image`` is ``(split, index)``; ``extra["scene"]`` the background and the objects
    (polygons in image pixels, back to front), from which ``load_image`` and ``load_masks`` draw.
    """

    class_names = CLASS_NAMES
    keypoint_names = KEYPOINT_NAMES
    skeleton = ((0, 1), (1, 2), (2, 3), (3, 0))
    flip_pairs = FLIP_PAIRS
    has_masks = True

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 200,
        image_size: int | tuple[int, int] = 320,
        seed: int = 0,
        min_objects: int = 0,
        max_objects: int = 6,
        crowded_prob: float = 0.1,
        crowded_objects: int = 12,
        min_size: float = 0.08,
        max_size: float = 0.5,
        min_visible: float = 0.5,
        max_rotation: float = 30.0,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        name = type(self).__name__
        size = pair(image_size)
        if min(size) < 32:
            raise ConfigError(f"{name}.image_size must be >= 32, got {image_size}")
        if not 0 <= min_objects <= max_objects:
            raise ConfigError(f"{name} needs 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
        if not 0 <= crowded_prob <= 1 or crowded_objects < 0:
            raise ConfigError(f"{name} needs 0 <= crowded_prob <= 1 and crowded_objects >= 0, got {crowded_prob}, {crowded_objects}")
        if not 0 < min_size <= max_size <= 1:
            raise ConfigError(f"{name} needs 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
        if not 0 < min_visible <= 1:
            raise ConfigError(f"{name}.min_visible must be in (0, 1], got {min_visible}")
        if not 0 <= max_rotation <= 180:
            raise ConfigError(f"{name}.max_rotation must be in [0, 180] degrees, got {max_rotation}")
        self.init_splits(num_train, num_val, num_test, seed, on_bad_record)
        self.image_size = size
        self.min_objects, self.max_objects = min_objects, max_objects
        self.crowded_prob, self.crowded_objects = crowded_prob, crowded_objects
        self.min_size, self.max_size = min_size, max_size
        self.min_visible = min_visible
        self.max_rotation = max_rotation

    def record(self, split: str, index: int) -> DetectionRecord:
        scene = _sample_scene(self.rng(split, index, 0), self)
        masks = _visible_masks(scene["objects"], self.image_size)
        boxes, areas, keypoints = [], [], []
        for obj, mask in zip(scene["objects"], masks):
            rows, cols = np.nonzero(mask)
            boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
            areas.append(float(len(rows)))
            keypoints.append(_keypoint_visibility(np.array(obj["keypoints"]), mask))
        count = len(boxes)
        return DetectionRecord(
            image=(split, index),
            image_id=f"{split}/{index:06d}",
            size=self.image_size,
            boxes=np.array(boxes, dtype=np.float64).reshape(count, 4),
            labels=np.array([obj["label"] for obj in scene["objects"]], dtype=np.int64),
            masks=[i for i in range(count)],
            keypoints=np.array(keypoints, dtype=np.float64).reshape(count, len(KEYPOINT_NAMES), 3),
            areas=np.array(areas, dtype=np.float64),
            extra={"scene": scene},
        )

    def load_image(self, record: DetectionRecord) -> Tensor:
        split, index = record.image
        return torch.from_numpy(_draw(self.rng(split, index, 1), record.extra["scene"], self.image_size)).permute(2, 0, 1).contiguous()

    def load_masks(self, record: DetectionRecord, height: int, width: int) -> Tensor:
        masks = _visible_masks(record.extra["scene"]["objects"], self.image_size)
        if not masks:
            return torch.zeros(0, height, width, dtype=torch.uint8)
        return torch.from_numpy(np.stack(masks)).to(torch.uint8)


def _sample_scene(rng: np.random.Generator, source: SyntheticDetection) -> dict[str, Any]:
    """Background colour and the objects, back to front: each with its class, polygon (and hole)
    in image pixels, keypoints (before occlusion) and colour. Positions are redrawn (up to
    ``_PLACEMENT_TRIES`` times) until every object already placed keeps ``min_visible`` of its
    area; an object that finds no such place is left out."""
    height, width = source.image_size
    side = min(height, width)
    background = rng.integers(0, 256, 3)
    crowded = rng.random() < source.crowded_prob
    if crowded:
        count = source.crowded_objects
        low, high = source.min_size, min(source.max_size, 2.5 * source.min_size)
    else:
        count = int(rng.integers(source.min_objects, source.max_objects + 1))
        low, high = source.min_size, source.max_size
    objects: list[dict[str, Any]] = []
    full_masks: list[np.ndarray] = []
    for _ in range(count):
        name = CLASS_NAMES[int(rng.integers(len(CLASS_NAMES)))]
        outline, hole = OUTLINES[name]
        color = contrasting_color(rng, background).tolist()
        aspect = math.exp(rng.uniform(-math.log(1.4), math.log(1.4)))
        stretch = np.array([math.sqrt(aspect), 1 / math.sqrt(aspect)])
        angle = math.radians(rng.uniform(-source.max_rotation, source.max_rotation))
        rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
        scale = math.exp(rng.uniform(math.log(low), math.log(high))) * side / 2
        for _ in range(_PLACEMENT_TRIES):
            # The centre stays inside the image, so at least a quarter of every object is in it.
            center = rng.uniform([0.05 * width, 0.05 * height], [0.95 * width, 0.95 * height])
            candidate = {
                "label": CLASS_NAMES.index(name) + 1,
                "outer": _place(outline, stretch, rotation, scale, center),
                "hole": None if hole is None else _place(hole, stretch, rotation, scale, center),
                "keypoints": _place(outline[_KEYPOINT_VERTICES[name]], stretch, rotation, scale, center),
                "color": color,
            }
            mask = _polygon_mask(candidate, source.image_size)
            if mask.sum() >= 4 and _keeps_visible(full_masks, mask, source.min_visible):
                objects.append(candidate)
                full_masks.append(mask)
                break
    return {"background": background.tolist(), "objects": objects}


def _keeps_visible(full_masks: list[np.ndarray], new: np.ndarray, min_visible: float) -> bool:
    """Every earlier object keeps ``min_visible`` of its area once ``new`` is drawn over the scene."""
    covered = new.copy()
    for mask in reversed(full_masks):
        area = mask.sum()
        if area == 0 or (mask & ~covered).sum() < min_visible * area:
            return False
        covered |= mask
    return True


def _place(points: np.ndarray, stretch: np.ndarray, rotation: np.ndarray, scale: float, center: np.ndarray) -> list[list[float]]:
    """A unit outline stretched, rotated, scaled and moved to ``center`` (image pixels)."""
    return ((points * stretch) @ rotation.T * scale + center).tolist()


def _polygon_mask(obj: dict[str, Any], image_size: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool: the object's pixels if nothing covered it (hole excluded)."""
    height, width = image_size
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    draw.polygon([tuple(p) for p in obj["outer"]], fill=1)
    if obj["hole"] is not None:
        draw.polygon([tuple(p) for p in obj["hole"]], fill=0)
    return np.array(mask, dtype=bool)


def _visible_masks(objects: list[dict[str, Any]], image_size: tuple[int, int]) -> list[np.ndarray]:
    """``(H, W)`` bool per object: its pixels that no later object covers."""
    masks = [_polygon_mask(obj, image_size) for obj in objects]
    covered = np.zeros(image_size, dtype=bool)
    visible = [np.zeros(0)] * len(masks)
    for i in range(len(masks) - 1, -1, -1):
        visible[i] = masks[i] & ~covered
        covered |= masks[i]
    return visible


def _keypoint_visibility(points: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """``(J, 3)``: the keypoints with COCO's flag: 2 on a visible pixel of the object, 1 inside the
    image but hidden (by a later object, or off the object's own pixels at an acute vertex), 0
    outside the image (then ``x = y = 0``, as COCO writes unlabelled points)."""
    height, width = visible.shape
    out = np.zeros((len(points), 3))
    for j, (x, y) in enumerate(points):
        if not (0 <= x < width and 0 <= y < height):
            continue
        row, col = min(int(y), height - 1), min(int(x), width - 1)
        out[j] = (x, y, 2 if visible[row, col] else 1)
    return out


def _draw(rng: np.random.Generator, scene: dict[str, Any], image_size: tuple[int, int]) -> np.ndarray:
    """``(H, W, 3)`` uint8 pixels of the scene."""
    image = Image.fromarray(textured_background(rng, image_size, scene["background"]))
    for obj in scene["objects"]:
        image.paste(tuple(int(c) for c in obj["color"]), (0, 0, *image.size), Image.fromarray(_polygon_mask(obj, image_size).astype(np.uint8) * 255))
    return np.array(image)
