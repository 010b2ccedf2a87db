"""Shapes and backgrounds the synthetic sources draw: class outlines in ``[-1, 1]^2`` (y down) and
a textured background. Shared so that every synthetic task draws the same objects the same way."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["OUTLINES", "circle", "star", "cross", "textured_background"]

CIRCLE_POINTS = 48
RING_HOLE = 0.55  # inner radius / outer radius


def circle(radius: float = 1.0) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, CIRCLE_POINTS, endpoint=False)
    return radius * np.stack([np.cos(t), np.sin(t)], axis=1)


def star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    t = -math.pi / 2 + np.arange(2 * points) * math.pi / points
    r = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def cross(arm: float = 0.34) -> np.ndarray:
    a = arm
    return np.array([(-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a), (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a)], dtype=np.float64)


# Each class as an outline in [-1, 1]^2 (y down) and an optional hole.
OUTLINES: dict[str, tuple[np.ndarray, np.ndarray | None]] = {
    "circle": (circle(), None),
    "square": (np.array([(-1, -1), (1, -1), (1, 1), (-1, 1)], dtype=np.float64), None),
    "triangle": (np.array([(0, -1), (1, 1), (-1, 1)], dtype=np.float64), None),
    "star": (star(), None),
    "cross": (cross(), None),
    "ring": (circle(), circle(RING_HOLE)),
}


def textured_background(rng: np.random.Generator, image_size: tuple[int, int], base: list[int] | np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: the ``base`` colour with a gradient in a random direction, pixel noise
    and, now and then, faint stripes: texture that a network must learn to ignore."""
    height, width = image_size
    theta = rng.uniform(0, 2 * math.pi)
    ys, xs = np.mgrid[0:height, 0:width] / max(height, width)
    ramp = (np.cos(theta) * xs + np.sin(theta) * ys)[..., None] * rng.integers(-90, 90, 3)
    canvas = np.asarray(base, dtype=np.float64) + ramp + rng.normal(0, 10, (height, width, 3))
    if rng.random() < 0.4:
        period = rng.uniform(4, 12)
        phi = rng.uniform(0, math.pi)
        stripes = np.sin(2 * math.pi * (np.cos(phi) * xs + np.sin(phi) * ys) * max(height, width) / period)
        canvas = canvas + stripes[..., None] * rng.uniform(10, 30)
    return np.clip(canvas, 0, 255).astype(np.uint8)
