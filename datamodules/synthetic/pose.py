"""Procedurally drawn people with MPII's 16 joints: the embedded default pose dataset.

Every person is generated from ``(seed, split, index)`` alone, so a split is identical on every
machine and in every worker, and any size costs nothing to store. A figure has a torso, a head
with a face (front-facing) or hair (back-facing), two-segment arms and legs of random widths and
clothing colours, a random posture (lean, head tilt, arm and leg angles and bends), a random
in-plane rotation, scale and position, and is drawn over a cluttered background with random
occluders. Left and right are anatomical, as in MPII: on a front-facing figure the person's right
side is on the image's left, so only the facing tells the two apart (the face, and the placket down a front-facing
shirt), and a mirrored figure is again a
valid figure (the flip augmentation stays consistent).

Joints that fall outside the image are unannotated (``visible`` False); occluded joints stay
annotated, as in MPII. The head box is the square around the upper-neck-to-head-top segment.

Generated records cannot be bad and there are no files (``required_paths()`` is empty); the source
still takes ``on_bad_record`` and has a ``data_report()``, so that every pose source is configured
and reported the same way.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor

from core.errors import ConfigError
from core.records import OnBadRecord
from core.skeletons import MPII_SKELETON, PCKH_MPII, PoseProtocol, Skeleton
from datamodules.pose import PoseRecord, PoseSource
from datamodules.synthetic.splits import SyntheticSplits, contrasting_color

__all__ = ["SyntheticPose"]

# MPII indices
R_ANK, R_KNE, R_HIP, L_HIP, L_KNE, L_ANK, PELVIS, THORAX, NECK, HEAD, R_WRI, R_ELB, R_SHO, L_SHO, L_ELB, L_WRI = range(16)


def _rot(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _limb(start: np.ndarray, down: np.ndarray, outward: np.ndarray, angle: float, bend: float, lengths: tuple[float, float]):
    """Two-segment limb from ``start``: the first segment leaves ``angle`` radians from ``down``
    towards ``outward``; the second turns by ``bend``."""
    d1 = math.cos(angle) * down + math.sin(angle) * outward
    mid = start + lengths[0] * d1
    end = mid + lengths[1] * _rot(d1, bend)
    return mid, end


class SyntheticPose(SyntheticSplits, PoseSource):
    """Synthetic people, MPII joints and protocol (PCKh@0.5 with a head box per figure).

    Args:
        num_train: people in the train split.
        num_val: people in the val split.
        num_test: people in the test split.
        image_size: side of the square image each person is drawn in.
        seed: base seed; splits and indices are derived from it.
        clutter: number of background distractor shapes (upper bound, drawn uniformly).
        occlusion_prob: probability of an occluding rectangle over part of the figure.
        on_bad_record: ``error`` or ``skip``, as for every source; a generated record is never bad.
    """

    skeleton: Skeleton = MPII_SKELETON
    protocol: PoseProtocol = PCKH_MPII

    def __init__(
        self,
        num_train: int = 4000,
        num_val: int = 500,
        num_test: int = 500,
        image_size: int = 128,
        seed: int = 0,
        clutter: int = 12,
        occlusion_prob: float = 0.3,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if image_size < 32:
            raise ConfigError(f"SyntheticPose.image_size must be >= 32, got {image_size}")
        self.init_splits(num_train, num_val, num_test, seed, on_bad_record)
        self.image_size = image_size
        self.clutter = clutter
        self.occlusion_prob = occlusion_prob

    def record(self, split: str, index: int) -> PoseRecord:
        rng = self.rng(split, index, 0)
        figure = _sample_figure(rng, self.image_size)
        kp = figure["keypoints"]
        size = self.image_size
        visible = (kp[:, 0] >= 0) & (kp[:, 0] <= size - 1) & (kp[:, 1] >= 0) & (kp[:, 1] <= size - 1)
        lo, hi = kp.min(0), kp.max(0)
        center = ((lo + hi) / 2).tolist()
        scale = float(max(hi - lo) * 1.25 / 200.0)
        return PoseRecord(
            image=(split, index),
            center=(center[0], center[1]),
            scale=scale,
            keypoints=kp.astype(np.float32),
            visible=visible,
            head_box=figure["head_box"],
            image_id=f"{split}/{index:06d}",
            extra={"figure": figure},
        )

    def load_image(self, record: PoseRecord) -> Tensor:
        split, index = record.image
        image = _draw(self.rng(split, index, 1), record.extra["figure"], self.image_size, self.clutter, self.occlusion_prob)
        return torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()


def _sample_figure(rng: np.random.Generator, size: int) -> dict:
    torso = 1.0
    front = bool(rng.random() < 0.5)
    # The person's right is on the image's left for a front-facing figure.
    side = -1.0 if front else 1.0
    lean = rng.normal(0.0, 0.12)
    up = np.array([math.sin(lean), -math.cos(lean)])
    across = np.array([-up[1], up[0]])  # towards image right when upright
    pelvis = np.zeros(2)
    thorax = pelvis + torso * up
    neck = thorax + 0.22 * torso * _rot(up, rng.normal(0.0, 0.15))
    head_len = 0.48 * torso * rng.uniform(0.9, 1.1)
    head_dir = _rot(up, rng.normal(0.0, 0.25))
    head = neck + head_len * head_dir
    shoulder_w = 0.36 * torso * rng.uniform(0.75, 1.15)
    hip_w = 0.2 * torso * rng.uniform(0.8, 1.2)
    kp = np.zeros((16, 2))
    kp[PELVIS], kp[THORAX], kp[NECK], kp[HEAD] = pelvis, thorax, neck, head
    kp[R_SHO] = thorax + side * shoulder_w * across
    kp[L_SHO] = thorax - side * shoulder_w * across
    kp[R_HIP] = pelvis + side * hip_w * across
    kp[L_HIP] = pelvis - side * hip_w * across
    down = -up
    arm = (0.55 * torso * rng.uniform(0.9, 1.1), 0.5 * torso * rng.uniform(0.9, 1.1))
    leg = (0.75 * torso * rng.uniform(0.9, 1.1), 0.72 * torso * rng.uniform(0.9, 1.1))
    for sho, elb, wri, sgn in ((R_SHO, R_ELB, R_WRI, side), (L_SHO, L_ELB, L_WRI, -side)):
        outward = sgn * across
        angle = rng.uniform(-0.5, 2.9)
        bend = rng.uniform(-2.4, 2.4)
        kp[elb], kp[wri] = _limb(kp[sho], down, outward, angle, bend, arm)
    for hip, kne, ank, sgn in ((R_HIP, R_KNE, R_ANK, side), (L_HIP, L_KNE, L_ANK, -side)):
        outward = sgn * across
        angle = rng.uniform(-0.35, 1.2)
        bend = -sgn * rng.uniform(0.0, 1.8) * (1 if rng.random() < 0.8 else -0.3)
        kp[kne], kp[ank] = _limb(kp[hip], down, outward, angle, bend, leg)

    # Place: rotate in-plane, fit the figure's height to a random fraction of the image, translate.
    rotation = float(np.clip(rng.normal(0.0, 0.35), -1.2, 1.2))
    kp = np.stack([_rot(p, rotation) for p in kp])
    lo, hi = kp.min(0), kp.max(0)
    extent = max(hi - lo)
    target = size * rng.uniform(0.55, 0.85)
    s = target / extent
    kp = (kp - (lo + hi) / 2) * s
    margin = (size - (hi - lo) * s) / 2
    shift = np.array([size / 2, size / 2]) + rng.uniform(-1, 1, 2) * np.maximum(margin, 0) * 0.9
    # Now and then a figure is cut by the border, which leaves some joints unannotated.
    if rng.random() < 0.08:
        shift = shift + rng.choice([-1, 1], 2) * size * 0.2
    kp = kp + shift
    head_len_px = head_len * s
    head_center = (kp[NECK] + kp[HEAD]) / 2
    half = 0.55 * head_len_px
    background = rng.integers(0, 256, 3)
    palette = np.stack([contrasting_color(rng, background) for _ in range(6)])
    return {
        "keypoints": kp,
        "head_box": (float(head_center[0] - half), float(head_center[1] - half), float(head_center[0] + half), float(head_center[1] + half)),
        "front": front,
        "limb_width": float(rng.uniform(0.1, 0.2) * torso * s),
        "head_radius": float(0.42 * head_len_px),
        "colors": palette.tolist(),
        "background": background.tolist(),
    }




def _draw(rng: np.random.Generator, figure: dict, size: int, clutter: int, occlusion_prob: float) -> Image.Image:
    base = np.array(figure["background"])
    grad = np.linspace(0, 1, size)[None, :, None] * rng.integers(-80, 80, 3)[None, None, :]
    canvas = np.clip(base[None, None, :] + grad + rng.normal(0, 8, (size, size, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, clutter + 1))):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0 = rng.uniform(-0.1, 1.0, 2) * size
        w, h = rng.uniform(0.05, 0.35, 2) * size
        kind = rng.integers(0, 3)
        if kind == 0:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=color)
        elif kind == 1:
            draw.rectangle([x0, y0, x0 + w, y0 + h], fill=color)
        else:
            draw.line([x0, y0, x0 + w * rng.choice([-1, 1]), y0 + h], fill=color, width=int(rng.integers(1, 4)))

    kp = [tuple(float(v) for v in p) for p in figure["keypoints"]]
    width = max(2, int(round(figure["limb_width"])))
    shirt, pants, skin, sleeve, hair, shoe = (tuple(c) for c in figure["colors"])

    def segment(a: int, b: int, color: tuple, w: int) -> None:
        draw.line([kp[a], kp[b]], fill=color, width=w)
        for j in (a, b):
            r = w / 2
            draw.ellipse([kp[j][0] - r, kp[j][1] - r, kp[j][0] + r, kp[j][1] + r], fill=color)

    leg_w = int(width * 1.3)
    for hip, kne, ank in ((R_HIP, R_KNE, R_ANK), (L_HIP, L_KNE, L_ANK)):
        segment(hip, kne, pants, leg_w)
        segment(kne, ank, pants, leg_w)
        r = leg_w * 0.6
        draw.ellipse([kp[ank][0] - r, kp[ank][1] - r, kp[ank][0] + r, kp[ank][1] + r], fill=shoe)
    draw.polygon([kp[R_SHO], kp[L_SHO], kp[L_HIP], kp[R_HIP]], fill=shirt)
    if figure["front"]:
        # The shirt's front (a placket from neck to waist) shows the facing from afar. The face
        # alone is a few pixels at small image sizes, and without the facing left and right
        # joints are a coin toss. It is mirror-symmetric, so a flipped figure stays valid.
        placket = (235, 235, 235) if sum(shirt) < 384 else (20, 20, 20)
        draw.line([kp[THORAX], kp[PELVIS]], fill=placket, width=max(2, int(round(figure["limb_width"] * 0.6))))
    segment(THORAX, NECK, skin, max(2, width))
    for sho, elb, wri in ((R_SHO, R_ELB, R_WRI), (L_SHO, L_ELB, L_WRI)):
        segment(sho, elb, sleeve, width)
        segment(elb, wri, skin, max(2, int(width * 0.8)))
    hx, hy = (np.array(kp[NECK]) + np.array(kp[HEAD])) / 2
    r = figure["head_radius"]
    if figure["front"]:
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=skin)
        # Eyes sit towards the head top: the face gives the figure its facing (and so its sides).
        up = (np.array(kp[HEAD]) - np.array(kp[NECK]))
        up = up / (np.linalg.norm(up) + 1e-6)
        across = np.array([-up[1], up[0]])
        for s in (-1, 1):
            ex, ey = np.array([hx, hy]) + up * r * 0.25 + across * s * r * 0.4
            er = max(1.0, r * 0.18)
            draw.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(20, 20, 20))
        mx, my = np.array([hx, hy]) - up * r * 0.4
        draw.line([mx - across[0] * r * 0.3, my - across[1] * r * 0.3, mx + across[0] * r * 0.3, my + across[1] * r * 0.3], fill=(150, 30, 30), width=max(1, int(r * 0.15)))
    else:
        draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=hair)

    if rng.random() < occlusion_prob:
        pts = np.array(kp)
        cx, cy = pts[int(rng.integers(0, 16))]
        w, h = rng.uniform(0.1, 0.3, 2) * size
        draw.rectangle([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    return image
