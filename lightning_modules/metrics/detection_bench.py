"""Time the detection evaluators on a synthetic evaluation.

    python -m lightning_modules.metrics.detection_bench --images 5000
    python -m lightning_modules.metrics.detection_bench --images 500 --masks
    python -m lightning_modules.metrics.detection_bench --backends faster_coco_eval

Every image gets 1..8 ground-truth boxes of ``--classes`` classes; each object is detected with
probability 0.8 by a jittered box, and 0..4 random false positives are added, with scores higher
for the true detections. The table gives the seconds of ``update`` (all images, one call per batch
of 8 as a validation loop makes them) and of ``compute``, for COCOEvaluator with each of
``--backends`` (bbox, and with ``--masks`` bbox + segm on ``--mask-size`` images, ``--mask-images``
of them) and VOCEvaluator. ``update`` builds the per-image records (RLE-encoding the masks) and
does not depend on the backend; ``compute`` is the backend's evaluation.
"""
from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np
import torch

from lightning_modules.metrics.detection import COCO_BACKENDS, COCOEvaluator, VOCEvaluator


def synthetic_evaluation(images: int, classes: int, size: int, masks: bool, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(predictions, targets) of ``images`` square images of side ``size``."""
    rng = np.random.default_rng(seed)
    predictions, targets = [], []
    for index in range(images):
        count = int(rng.integers(1, 9))
        xy = rng.uniform(0, size * 0.7, (count, 2))
        wh = rng.uniform(size * 0.05, size * 0.3, (count, 2))
        boxes = np.concatenate([xy, np.minimum(xy + wh, size)], axis=1)
        labels = rng.integers(1, classes + 1, count)
        found = rng.random(count) < 0.8
        jitter = rng.normal(0, 0.08, (int(found.sum()), 4)) * np.repeat(wh[found], 2, axis=0).reshape(-1, 4)
        false = int(rng.integers(0, 5))
        fxy = rng.uniform(0, size * 0.8, (false, 2))
        false_boxes = np.concatenate([fxy, np.minimum(fxy + rng.uniform(size * 0.05, size * 0.2, (false, 2)), size)], axis=1)
        pred_boxes = np.concatenate([np.clip(boxes[found] + jitter, 0, size), false_boxes])
        pred_boxes[:, 2:] = np.maximum(pred_boxes[:, 2:], pred_boxes[:, :2] + 1)
        pred_labels = np.concatenate([labels[found], rng.integers(1, classes + 1, false)])
        scores = np.concatenate([rng.uniform(0.3, 1.0, int(found.sum())), rng.uniform(0.0, 0.7, false)])
        target: dict[str, Any] = {
            "boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels),
            "iscrowd": torch.zeros(count, dtype=torch.bool), "difficult": torch.tensor(rng.random(count) < 0.05),
            "area": torch.tensor(wh.prod(axis=1), dtype=torch.float32),
            "image_id": torch.tensor(-1), "index": torch.tensor(index), "size": torch.tensor([size, size]),
        }
        prediction: dict[str, Any] = {
            "boxes": torch.tensor(pred_boxes, dtype=torch.float32), "labels": torch.tensor(pred_labels),
            "scores": torch.tensor(scores, dtype=torch.float32),
        }
        if masks:
            target["masks"] = _fill(boxes, size).to(torch.uint8)
            target["area"] = target["masks"].flatten(1).sum(1).float()
            prediction["masks"] = (_fill(pred_boxes, size) * 0.9)[:, None]
        predictions.append(prediction)
        targets.append(target)
    return predictions, targets


def _fill(boxes: np.ndarray, size: int) -> torch.Tensor:
    """``(N, size, size)`` float masks of the boxes filled."""
    grid = torch.arange(size, dtype=torch.float32) + 0.5
    b = torch.tensor(boxes, dtype=torch.float32)
    inside_x = (grid[None] >= b[:, 0:1]) & (grid[None] < b[:, 2:3])
    inside_y = (grid[None] >= b[:, 1:2]) & (grid[None] < b[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).float()


def time_evaluator(evaluator: Any, predictions: list[dict], targets: list[dict], batch: int = 8) -> tuple[float, float, dict]:
    """(seconds of every ``update``, seconds of ``compute``, the stats) of one evaluator."""
    start = time.perf_counter()
    for first in range(0, len(predictions), batch):
        evaluator.update(predictions[first:first + batch], targets[first:first + batch])
    updated = time.perf_counter()
    stats = evaluator.compute()
    return updated - start, time.perf_counter() - updated, stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--classes", type=int, default=5)
    parser.add_argument("--size", type=int, default=640, help="image side for boxes")
    parser.add_argument("--masks", action="store_true", help="also time segm (on --mask-size images)")
    parser.add_argument("--mask-size", type=int, default=128)
    parser.add_argument("--mask-images", type=int, default=None, help="images for segm (default: --images)")
    parser.add_argument("--backends", nargs="+", choices=COCO_BACKENDS, default=list(COCO_BACKENDS),
                        help="COCOEvaluator backends to time (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    class_names = tuple(f"class{i}" for i in range(1, args.classes + 1))

    rows = []
    predictions, targets = synthetic_evaluation(args.images, args.classes, args.size, masks=False, seed=args.seed)
    detections = sum(len(p["boxes"]) for p in predictions)
    evaluators = [(f"COCO bbox {backend}", COCOEvaluator(("bbox",), class_names=class_names, backend=backend), "bbox/AP")
                  for backend in args.backends]
    for name, evaluator, key in evaluators + [("VOCEvaluator", VOCEvaluator(class_names=class_names), "voc12/mAP")]:
        update, compute, stats = time_evaluator(evaluator, predictions, targets)
        rows.append((name, args.images, args.size, update, compute, key, stats[key]))
    if args.masks:
        mask_images = args.mask_images or args.images
        predictions, targets = synthetic_evaluation(mask_images, args.classes, args.mask_size, masks=True, seed=args.seed)
        for backend in args.backends:
            evaluator = COCOEvaluator(("bbox", "segm"), class_names=class_names, backend=backend)
            update, compute, stats = time_evaluator(evaluator, predictions, targets)
            rows.append((f"COCO bbox+segm {backend}", mask_images, args.mask_size, update, compute, "segm/AP", stats["segm/AP"]))

    print(f"{args.images} images, {detections} detections, {args.classes} classes (seconds)")
    print(f"{'evaluator':<34}{'images':>7}{'size':>6}{'update':>9}{'compute':>9}{'total':>9}   score")
    for name, images, size, update, compute, key, value in rows:
        print(f"{name:<34}{images:>7}{size:>6}{update:>9.2f}{compute:>9.2f}{update + compute:>9.2f}   {key} {value:.6f}")


if __name__ == "__main__":
    main()
