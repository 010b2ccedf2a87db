"""COCOEvaluator against pycocotools run directly, VOCEvaluator against hand-computed AP, and the
shared record keeping (empty predictions, images without objects, de-duplication, DDP gathering).

Coordinates are dyadic (multiples of 0.5) and tensors float64, so XYXY <-> XYWH and JSON round
trips are exact and "equal to 1e-6" is in fact exact equality.
"""
from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from pycocotools import mask as mask_util
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from core.skeletons import COCO_SKELETON
from lightning_modules.metrics.coco_keypoints import COCOKeypointAP
from lightning_modules.metrics.detection import (
    COCO_BACKENDS, STAT_NAMES, COCOEvaluator, VOCEvaluator, gather_records, image_record, voc_ap_07, voc_ap_area,
)
from lightning_modules.metrics.detection_bench import synthetic_evaluation

# ------------------------------------------------------------------------------------- fixtures
@pytest.fixture(params=COCO_BACKENDS)
def backend(request) -> str:
    """Each COCO backend: every COCO test runs on both and is checked against pycocotools itself."""
    return request.param


# Non-contiguous COCO category ids; label i + 1 is CATEGORY_IDS[i].
CLASS_NAMES = ("cat", "dog", "bird")
CATEGORY_IDS = (3, 7, 12)


def rect(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [x1, y1, x2, y1, x2, y2, x1, y2]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (``counts`` a list, column-major, starting with a run of zeros), as
    crowd regions are stored in the official files."""
    flat = mask.flatten(order="F")
    counts, current, run = [], 0, 0
    for value in flat.tolist():
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"counts": counts, "size": list(mask.shape)}


def rle_of(segmentation, height: int, width: int) -> dict:
    if isinstance(segmentation, list):
        return mask_util.merge(mask_util.frPyObjects(segmentation, height, width))
    return mask_util.frPyObjects(segmentation, height, width)


def instances_gt() -> dict:
    """A small COCO instances file: 4 images (one without annotations), 3 categories with
    non-contiguous ids, polygons, a crowd RLE region, small, medium and large objects."""
    images = [
        {"id": 42, "height": 40, "width": 64, "file_name": "a.jpg"},
        {"id": 7, "height": 96, "width": 96, "file_name": "b.jpg"},
        {"id": 1000, "height": 32, "width": 32, "file_name": "c.jpg"},
        {"id": 3, "height": 128, "width": 128, "file_name": "d.jpg"},
    ]
    crowd = np.zeros((40, 64), dtype=np.uint8)
    crowd[24:38, 2:26] = 1
    objects = [  # (image id, category id, segmentation, iscrowd)
        (42, 3, [rect(4, 4, 20, 20)], 0),
        (42, 7, [rect(30, 6, 60, 30)], 0),
        (42, 3, [[40, 32, 60, 32, 50, 39]], 0),
        (42, 3, uncompressed_rle(crowd), 1),
        (7, 7, [rect(2, 2, 50, 40)], 0),
        (7, 12, [rect(60, 10, 90, 44)], 0),
        (7, 7, [[5, 60, 45, 60, 25, 90]], 0),
        (3, 12, [rect(8, 10, 120, 110)], 0),
    ]
    sizes = {image["id"]: (image["height"], image["width"]) for image in images}
    annotations = []
    for number, (image_id, category_id, segmentation, iscrowd) in enumerate(objects, start=1):
        rle = rle_of(segmentation, *sizes[image_id])
        if iscrowd:
            bbox = [float(v) for v in mask_util.toBbox(rle)]
        else:
            xs, ys = segmentation[0][0::2], segmentation[0][1::2]
            bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
        annotations.append({
            "id": number * 10, "image_id": image_id, "category_id": category_id, "segmentation": segmentation,
            "area": float(mask_util.area(rle)), "bbox": [float(v) for v in bbox], "iscrowd": iscrowd,
        })
    categories = [{"id": c, "name": n, "supercategory": "thing"} for c, n in zip(CATEGORY_IDS, CLASS_NAMES)]
    return {"info": {}, "images": images, "annotations": annotations, "categories": categories}


# (image id, category id, XYXY box, score); the masks are the boxes filled but for their top-left
# quarter, so a mask's area is not its box's (segm must use the mask area for its area ranges).
DETECTIONS = [
    (42, 3, (4, 4, 20, 20), 0.95),
    (42, 3, (5, 5, 21, 21), 0.62),     # duplicate of the first
    (42, 7, (31, 7, 59, 29), 0.9),
    (42, 3, (42, 32, 58, 39), 0.55),   # the triangle, loosely
    (42, 3, (3, 25, 25, 37), 0.7),     # on the crowd region: ignored
    (42, 12, (30, 6, 60, 30), 0.3),    # wrong class
    (7, 7, (2, 2, 50, 40), 0.85),
    (7, 12, (61, 12, 90, 44), 0.8),
    (7, 7, (8, 62, 42, 88), 0.5),
    (7, 7, (0, 0, 20, 20), 0.4),       # poor overlap
    # On an image without objects, with the score of the triangle's detection: a tie across images,
    # which COCOeval breaks by image id (it sorts params.imgIds itself).
    (1000, 3, (0, 0, 10, 10), 0.55),
    (3, 12, (10, 12, 118, 110), 0.75),
    (3, 3, (8, 10, 120, 110), 0.2),
    (3, 3, (60, 60, 100, 90), 0.45),   # box 1200 px (medium), mask 900 px (small)
]


def box_mask(box, height: int, width: int) -> np.ndarray:
    x1, y1, x2, y2 = (int(v) for v in box)
    mask = np.zeros((height, width), dtype=np.uint8)
    mask[y1:y2, x1:x2] = 1
    mask[y1:(y1 + y2) // 2, x1:(x1 + x2) // 2] = 0
    return mask


def write_json(path, content) -> str:
    path.write_text(json.dumps(content))
    return str(path)


def direct_stats(gt_file: str, results_file: str, iou_type: str) -> list[float]:
    """pycocotools on the files, as its own demo does it."""
    coco_gt = COCO(gt_file)
    coco_dt = coco_gt.loadRes(results_file)
    evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return [float(v) for v in evaluator.stats]


def targets_from(gt: dict, with_masks: bool = False, with_keypoints: bool = False) -> list[dict]:
    """DetectionDataset-style targets of a COCO file's images (labels contiguous)."""
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    category_ids = sorted(coco.getCatIds())
    targets = []
    for index, image in enumerate(gt["images"]):
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image["id"]]))
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
            "labels": torch.tensor([category_ids.index(a["category_id"]) + 1 for a in anns], dtype=torch.int64),
            "iscrowd": torch.tensor([bool(a["iscrowd"]) for a in anns], dtype=torch.bool),
            "difficult": torch.zeros(len(anns), dtype=torch.bool),
            "area": torch.tensor([a["area"] for a in anns], dtype=torch.float64),
            "image_id": torch.tensor(image["id"]),
            "index": torch.tensor(index),
            "size": torch.tensor([image["height"], image["width"]]),
        }
        if with_masks:
            masks = [coco.annToMask(a) for a in anns]
            target["masks"] = torch.from_numpy(np.stack(masks) if masks else np.zeros((0, image["height"], image["width"]), np.uint8))
        if with_keypoints:
            target["keypoints"] = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float64).reshape(len(anns), 17, 3)
        targets.append(target)
    return targets


def predictions_from(gt: dict, detections, keypoints: dict | None = None) -> list[dict]:
    """torchvision-style predictions per image of ``gt["images"]`` (labels contiguous)."""
    category_ids = sorted(c["id"] for c in gt["categories"])
    predictions = []
    for image in gt["images"]:
        mine = [(i, d) for i, d in enumerate(detections) if d[0] == image["id"]]
        height, width = image["height"], image["width"]
        prediction = {
            "boxes": torch.tensor([d[2] for _, d in mine], dtype=torch.float64).reshape(-1, 4),
            "labels": torch.tensor([category_ids.index(d[1]) + 1 for _, d in mine], dtype=torch.int64),
            "scores": torch.tensor([d[3] for _, d in mine], dtype=torch.float64),
            "masks": torch.from_numpy(
                np.stack([box_mask(d[2], height, width) for _, d in mine]) if mine else np.zeros((0, height, width))
            ).double()[:, None] * 0.9,  # probabilities above the 0.5 threshold
        }
        if keypoints is not None:
            prediction["keypoints"] = torch.tensor([keypoints[i] for i, _ in mine], dtype=torch.float64).reshape(len(mine), 17, 3)
            prediction["keypoints_scores"] = prediction["keypoints"][:, :, 2].clone()
        predictions.append(prediction)
    return predictions


def bbox_results(detections) -> list[dict]:
    return [{"image_id": i, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": s}
            for i, c, (x1, y1, x2, y2), s in detections]


def segm_results(gt: dict, detections) -> list[dict]:
    sizes = {image["id"]: (image["height"], image["width"]) for image in gt["images"]}
    results = []
    for i, c, box, s in detections:
        rle = mask_util.encode(np.asfortranarray(box_mask(box, *sizes[i])))
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"image_id": i, "category_id": c, "segmentation": rle, "score": s})
    return results


def assert_stats_equal(ours: dict[str, float], theirs: list[float], iou_type: str) -> None:
    names = STAT_NAMES[iou_type]
    assert len(theirs) == len(names)
    for name, value in zip(names, theirs):
        assert ours[f"{iou_type}/{name}"] == pytest.approx(value, abs=1e-6), (iou_type, name)


# ---------------------------------------------------------------------------- COCO vs pycocotools
def test_coco_bbox_and_segm_equal_pycocotools(tmp_path, backend):
    gt = instances_gt()
    gt_file = write_json(tmp_path / "instances.json", gt)
    direct = {
        "bbox": direct_stats(gt_file, write_json(tmp_path / "bbox.json", bbox_results(DETECTIONS)), "bbox"),
        "segm": direct_stats(gt_file, write_json(tmp_path / "segm.json", segm_results(gt, DETECTIONS)), "segm"),
    }
    # The fixture is not degenerate: AP is strictly between 0 and 1.
    for stats in direct.values():
        assert 0.0 < stats[0] < 1.0

    predictions = predictions_from(gt, DETECTIONS)
    for annotation_file, targets in ((gt_file, targets_from(gt)), (None, targets_from(gt, with_masks=True))):
        evaluator = COCOEvaluator(("bbox", "segm"), class_names=CLASS_NAMES, category_ids=CATEGORY_IDS,
                                  annotation_file=annotation_file, backend=backend)
        # Two batches, as a validation loop feeds them.
        evaluator.update(predictions[:2], targets[:2])
        evaluator.update(predictions[2:], targets[2:])
        stats = evaluator.compute()
        assert stats and all(type(v) is float for v in stats.values())
        assert_stats_equal(stats, direct["bbox"], "bbox")
        assert_stats_equal(stats, direct["segm"], "segm")


def keypoints_gt() -> tuple[dict, dict[int, list[float]], list]:
    """A person-keypoints file (3 images, one without people; a crowd region; a person with no
    labelled keypoint) and detections with keypoints near the ground truth."""
    rng = np.random.default_rng(0)
    images = [
        {"id": 11, "height": 100, "width": 100, "file_name": "p.jpg"},
        {"id": 12, "height": 80, "width": 100, "file_name": "q.jpg"},
        {"id": 13, "height": 64, "width": 64, "file_name": "r.jpg"},
    ]
    people = [(11, (10, 10, 40, 60)), (11, (50, 20, 40, 70)), (12, (5, 5, 30, 50)), (12, (60, 10, 30, 40))]
    annotations, detections, det_keypoints = [], [], {}
    for number, (image_id, (x, y, w, h)) in enumerate(people, start=1):
        points = np.zeros((17, 3))
        points[:, 0] = np.round(rng.uniform(x, x + w, 17) * 2) / 2
        points[:, 1] = np.round(rng.uniform(y, y + h, 17) * 2) / 2
        points[:, 2] = rng.choice([0, 1, 2], 17, p=[0.2, 0.3, 0.5])
        if number == 4:
            points[:, 2] = 0  # no labelled keypoint: COCOeval ignores this person for OKS
        points[points[:, 2] == 0, :2] = 0  # COCO writes unlabelled keypoints as 0, 0, 0
        annotations.append({
            "id": number, "image_id": image_id, "category_id": 1, "bbox": [float(x), float(y), float(w), float(h)],
            "area": float(w * h * 0.5), "iscrowd": 0, "keypoints": points.reshape(-1).tolist(),
            "num_keypoints": int((points[:, 2] > 0).sum()), "segmentation": [rect(x, y, x + w, y + h)],
        })
        noisy = np.round((points[:, :2] + rng.normal(0, 1.5 * number, (17, 2))) * 4) / 4
        predicted = np.concatenate([noisy, np.round(rng.uniform(0, 1, (17, 1)) * 8) / 8], axis=1)
        det_keypoints[len(detections)] = predicted.reshape(-1).tolist()
        detections.append((image_id, 1, (x + 1, y, x + w, y + h - 2), 0.9 - 0.1 * number))
    crowd = np.zeros((80, 100), dtype=np.uint8)
    crowd[50:78, 40:90] = 1
    annotations.append({
        "id": 99, "image_id": 12, "category_id": 1, "bbox": [40.0, 50.0, 50.0, 28.0], "area": float(crowd.sum()),
        "iscrowd": 1, "keypoints": [0] * 51, "num_keypoints": 0, "segmentation": uncompressed_rle(crowd),
    })
    # A false positive person on the image without people, and one on the crowd.
    for image_id, box, score in ((13, (2, 2, 30, 40), 0.85), (12, (45, 52, 85, 76), 0.33)):
        det_keypoints[len(detections)] = (np.round(rng.uniform(box[0], box[2], (17, 3)) * 2) / 2).reshape(-1).tolist()
        detections.append((image_id, 1, box, score))
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(COCO_SKELETON.joints), "skeleton": []}
    gt = {"info": {}, "images": images, "annotations": annotations, "categories": [category]}
    return gt, det_keypoints, detections


def test_coco_keypoints_equal_pycocotools(tmp_path, backend):
    gt, det_keypoints, detections = keypoints_gt()
    gt_file = write_json(tmp_path / "person_keypoints.json", gt)
    kp_results = [{"image_id": d[0], "category_id": d[1], "keypoints": det_keypoints[i], "score": d[3]}
                  for i, d in enumerate(detections)]
    direct = {
        "keypoints": direct_stats(gt_file, write_json(tmp_path / "kp.json", kp_results), "keypoints"),
        "bbox": direct_stats(gt_file, write_json(tmp_path / "bbox.json", bbox_results(detections)), "bbox"),
    }
    assert 0.0 < direct["keypoints"][0] < 1.0

    predictions = predictions_from(gt, detections, det_keypoints)
    for annotation_file in (gt_file, None):
        evaluator = COCOEvaluator(("bbox", "keypoints"), class_names=("person",), annotation_file=annotation_file, backend=backend)
        evaluator.update(predictions, targets_from(gt, with_keypoints=True))
        stats = evaluator.compute()
        assert_stats_equal(stats, direct["keypoints"], "keypoints")
        assert_stats_equal(stats, direct["bbox"], "bbox")
        # The keypoint results hold x, y and the keypoint score, and the person score.
        first = evaluator.results()[0]
        assert first["keypoints"] == det_keypoints[0] and first["score"] == detections[0][3]


def test_keypoint_sigmas_must_match_the_keypoints(backend):
    target = {"boxes": torch.tensor([[0.0, 0.0, 10.0, 10.0]]), "labels": torch.tensor([1]), "area": torch.tensor([100.0]),
              "keypoints": torch.tensor([[[2.0, 2.0, 2.0], [8.0, 8.0, 2.0]]]), "image_id": torch.tensor(1),
              "index": torch.tensor(0), "size": torch.tensor([16, 16])}
    prediction = {"boxes": target["boxes"].clone(), "labels": torch.tensor([1]), "scores": torch.tensor([0.9]),
                  "keypoints": target["keypoints"].clone()}
    # Two keypoints, not COCO's 17: the uniform default sigma; perfect keypoints score 1.
    evaluator = COCOEvaluator(("keypoints",), backend=backend)
    evaluator.update([prediction], [target])
    assert evaluator.compute()["keypoints/AP"] == pytest.approx(1.0)
    evaluator = COCOEvaluator(("keypoints",), keypoint_sigmas=[0.1] * 17, backend=backend)
    evaluator.update([prediction], [target])
    with pytest.raises(ValueError, match="keypoint_sigmas"):
        evaluator.compute()


# ------------------------------------------------------------------------------- COCO behaviour
def simple_target(index: int, boxes, labels, image_id: int = -1, difficult=None, size=(64, 64)) -> dict:
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64),
        "iscrowd": torch.zeros(len(boxes), dtype=torch.bool),
        "difficult": torch.tensor(difficult if difficult is not None else [False] * len(boxes), dtype=torch.bool),
        "area": (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]),
        "image_id": torch.tensor(image_id), "index": torch.tensor(index), "size": torch.tensor(size),
    }


def simple_prediction(boxes, labels, scores) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64), "scores": torch.tensor(scores, dtype=torch.float32)}


def test_coco_empty_predictions_score_zero_and_per_class_names(backend):
    evaluator = COCOEvaluator(("bbox",), class_names=("a", "b"), backend=backend)
    evaluator.update([simple_prediction([], [], [])], [simple_target(0, [[0, 0, 10, 10]], [1])])
    stats = evaluator.compute()
    assert set(stats) == {f"bbox/{name}" for name in STAT_NAMES["bbox"]}
    assert all(v == 0.0 for v in stats.values())
    per_class = evaluator.per_class()["bbox"]
    assert per_class["a"] == 0.0 and math.isnan(per_class["b"])

    # Nothing updated at all: zeros as well, not an exception.
    evaluator.reset()
    assert evaluator.per_class() == {}
    stats = evaluator.compute()
    assert stats and all(v == 0.0 for v in stats.values())


def test_coco_per_class_and_images_without_objects(backend):
    # Image 0: one "a" found perfectly. Image 1: no object, one confident "a" detection on it.
    targets = [simple_target(0, [[0, 0, 10, 10]], [1]), simple_target(1, [], [])]
    predictions = [simple_prediction([[0, 0, 10, 10]], [1], [0.5]), simple_prediction([[20, 20, 30, 30]], [1], [0.9])]
    alone = COCOEvaluator(class_names=("a", "b"), backend=backend)
    alone.update(predictions[:1], targets[:1])
    assert alone.compute()["bbox/AP"] == pytest.approx(1.0)
    both = COCOEvaluator(class_names=("a", "b"), backend=backend)
    both.update(predictions, targets)
    stats = both.compute()
    # The image without objects is still an image: its false positive, ranked first, halves the
    # precision at full recall (101-point interpolation: precision 0.5 at every recall).
    assert stats["bbox/AP"] == pytest.approx(0.5)
    per_class = both.per_class()
    assert list(per_class) == ["bbox"] and per_class["bbox"]["a"] == pytest.approx(0.5)
    assert math.isnan(per_class["bbox"]["b"])  # no ground truth of "b"


def test_coco_difficult_objects_are_ignored(backend):
    # A missed difficult object costs no recall, and a detection on one is neither a true nor a
    # false positive: AP 1 (counted as positives, the missed one would make it 2/3).
    target = simple_target(0, [[0, 0, 10, 10], [30, 30, 50, 50], [0, 40, 20, 60]], [1, 1, 1], difficult=[False, True, True])
    prediction = simple_prediction([[0, 0, 10, 10], [30, 30, 50, 50]], [1, 1], [0.5, 0.9])
    evaluator = COCOEvaluator(class_names=("a",), backend=backend)
    evaluator.update([prediction], [target])
    assert evaluator.compute()["bbox/AP"] == pytest.approx(1.0)


def test_results_are_json_with_rle_masks(backend):
    masks = torch.zeros(2, 1, 16, 20)
    masks[0, 0, 2:6, 3:9] = 0.8
    masks[1, 0, 10:14, 0:5] = 0.6
    masks[1, 0, 0, 0] = 0.4  # below the threshold
    prediction = {"boxes": torch.tensor([[3.0, 2.0, 9.0, 6.0], [0.0, 10.0, 5.0, 14.0]]), "labels": torch.tensor([2, 1]),
                  "scores": torch.tensor([0.75, 0.5]), "masks": masks}
    target = simple_target(0, [[3, 2, 9, 6]], [2], image_id=5, size=(16, 20))
    target["masks"] = (masks[:1, 0] > 0.5).to(torch.uint8)
    evaluator = COCOEvaluator(("bbox", "segm"), class_names=("a", "b"), category_ids=(10, 20), backend=backend)
    evaluator.update([prediction], [target])
    results = json.loads(json.dumps(evaluator.results()))
    assert [r["category_id"] for r in results] == [20, 10]
    assert results[0]["image_id"] == 5 and results[0]["bbox"] == [3.0, 2.0, 6.0, 4.0] and results[0]["score"] == 0.75
    for result, mask in zip(results, masks[:, 0]):
        assert isinstance(result["segmentation"]["counts"], str)
        decoded = mask_util.decode(result["segmentation"])
        assert np.array_equal(decoded, (mask > 0.5).numpy().astype(np.uint8))
    stats = evaluator.compute()
    assert stats["bbox/AP"] == pytest.approx(1.0) and stats["segm/AP"] == pytest.approx(1.0)
    assert evaluator.per_class()["segm"]["b"] == pytest.approx(1.0)


def assert_close_with_nan(ours: dict, theirs: dict, where: str) -> None:
    assert ours.keys() == theirs.keys(), where
    for key in ours:
        if math.isnan(theirs[key]):
            assert math.isnan(ours[key]), (where, key)
        else:
            assert ours[key] == pytest.approx(theirs[key], abs=1e-6), (where, key)


def test_coco_backends_agree_on_a_random_evaluation():
    # 40 synthetic images, 4 classes, boxes and masks: matched, missed, duplicate and false
    # detections, difficult objects (ignored regions), small, medium and large objects.
    predictions, targets = synthetic_evaluation(images=40, classes=4, size=400, masks=True, seed=3)
    names = ("a", "b", "c", "d")
    results = {}
    for backend in COCO_BACKENDS:
        evaluator = COCOEvaluator(("bbox", "segm"), class_names=names, backend=backend)
        for first in range(0, len(predictions), 8):
            evaluator.update(predictions[first:first + 8], targets[first:first + 8])
        results[backend] = (evaluator.compute(), evaluator.per_class())
    (stats, per_class), (fast_stats, fast_per_class) = results["pycocotools"], results["faster_coco_eval"]
    assert len(stats) == 24 and 0.2 < stats["bbox/AP"] < 0.9 and 0.2 < stats["segm/AP"] < 0.9
    assert all(value > 0 for value in stats.values())  # no stat is -1: every area range has objects
    assert_close_with_nan(fast_stats, stats, "stats")
    for iou_type in ("bbox", "segm"):
        assert_close_with_nan(fast_per_class[iou_type], per_class[iou_type], iou_type)


def test_coco_keypoint_ap_backends_equal_pycocotools(tmp_path):
    gt, det_keypoints, detections = keypoints_gt()
    gt_file = write_json(tmp_path / "person_keypoints.json", gt)
    kp_results = [{"image_id": d[0], "category_id": d[1], "keypoints": det_keypoints[i], "score": d[3]}
                  for i, d in enumerate(detections)]
    direct = direct_stats(gt_file, write_json(tmp_path / "kp.json", kp_results), "keypoints")
    points = torch.tensor([det_keypoints[i] for i in range(len(detections))], dtype=torch.float64).reshape(-1, 17, 3)
    for backend in COCO_BACKENDS:
        metric = COCOKeypointAP(gt_file, backend=backend)
        metric.update([d[0] for d in detections], points[:, :, :2], points[:, :, 2], torch.tensor([d[3] for d in detections]))
        stats = metric.compute()
        assert [stats[name].item() for name in ("AP", "AP50", "AP75", "APm", "APl", "AR")] == pytest.approx(direct[:6], abs=1e-6), backend


def test_an_unknown_coco_backend_is_refused(tmp_path):
    with pytest.raises(ValueError, match="COCO backend must be one of"):
        COCOEvaluator(backend="detectron2")
    gt_file = write_json(tmp_path / "person_keypoints.json", keypoints_gt()[0])
    with pytest.raises(ValueError, match="COCO backend must be one of"):
        COCOKeypointAP(gt_file, backend="fast")


def test_detection_module_passes_its_coco_backend_to_the_evaluators():
    from core.facts import DataFacts
    from lightning_modules.detection import DetectionModule
    from lightning_modules.networks.detection_backbones import MobileNetV3FPN
    from lightning_modules.networks.faster_rcnn import FasterRCNN

    network = FasterRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=3, box_head_fcs=[16, 16])
    facts = DataFacts(class_names=("a", "b"))
    default = DetectionModule(network, protocols=["coco", "voc"], data_facts=facts)
    chosen = DetectionModule(network, protocols=["coco", "voc"], coco_backend="faster_coco_eval", data_facts=facts)
    for module, backend in ((default, "pycocotools"), (chosen, "faster_coco_eval")):
        for split in ("val", "test"):
            coco = [e for e in module.evaluators[split] if isinstance(e, COCOEvaluator)]
            assert [e.backend for e in coco] == [backend], (backend, split)


def test_labels_outside_the_classes_are_refused():
    evaluator = COCOEvaluator(class_names=("a",))
    with pytest.raises(ValueError, match="labels must lie in 1..1"):
        evaluator.update([simple_prediction([[0, 0, 5, 5]], [2], [0.5])], [simple_target(0, [], [])])


def test_an_image_updated_twice_counts_once(backend):
    # A DistributedSampler pads with repeated images; the first record of an image stands.
    targets = [simple_target(0, [[0, 0, 10, 10]], [1]), simple_target(1, [[0, 0, 10, 10]], [1])]
    good = [simple_prediction([[0, 0, 10, 10]], [1], [0.9]), simple_prediction([[0, 0, 10, 10]], [1], [0.8])]
    bad = simple_prediction([[20, 20, 30, 30]], [1], [0.95])
    for make in (lambda: COCOEvaluator(class_names=("a",), backend=backend), lambda: VOCEvaluator(class_names=("a",))):
        once, twice = make(), make()
        once.update(good, targets)
        twice.update(good, targets)
        twice.update([bad], targets[1:])  # image 1 again, with another prediction
        stats = twice.compute()
        assert stats == once.compute()
        assert stats[next(iter(stats))] == pytest.approx(1.0)  # bbox/AP, voc07/mAP: the bad one is not there
        assert len(twice.results()) == 2


def test_image_record_uses_index_for_named_images():
    record = image_record(simple_prediction([[1, 2, 4, 8]], [1], [0.5]), simple_target(17, [[0, 0, 2, 2]], [1], image_id=-1),
                          category_ids=(5,))
    assert record["id"] == 17 and (record["height"], record["width"]) == (64, 64)
    assert record["dt"] == [{"image_id": 17, "category_id": 5, "bbox": [1.0, 2.0, 3.0, 6.0], "score": 0.5}]
    assert record["gt"][0]["bbox"] == [0.0, 0.0, 2.0, 2.0] and record["gt"][0]["category_id"] == 5


# -------------------------------------------------------------------------------------- VOC AP
def test_voc_ap_by_hand():
    # Class "a": positives a1, a3 (image 0) and a4 (image 1); a2 (image 0) is difficult.
    # Class "b": one positive b1 (image 1). Class "c": no ground truth at all.
    targets = [
        simple_target(0, [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [1, 1, 1], difficult=[False, True, False]),
        simple_target(1, [[0, 0, 10, 10], [0, 20, 10, 30]], [1, 2]),
    ]
    predictions = [
        simple_prediction(
            [[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 9], [45, 0, 55, 10], [40, 0, 50, 10], [0, 0, 10, 10], [0, 0, 10, 10]],
            [1, 1, 1, 1, 1, 2, 3],
            [0.9, 0.8, 0.7, 0.5, 0.4, 0.3, 0.6],
        ),
        simple_prediction([[0, 0, 10, 8], [0, 20, 10, 30]], [1, 2], [0.6, 0.95]),
    ]
    evaluator = VOCEvaluator(class_names=("a", "b", "c"))
    evaluator.update(predictions, targets)
    stats = evaluator.compute()
    # Class "a", detections by score:
    #   0.9 image 0 (0,0,10,10): IoU 1 with a1                     -> TP
    #   0.8 image 0 (20,0,30,10): best match the difficult a2       -> ignored
    #   0.7 image 0 (0,0,10,9): best a1 (IoU 0.9), already detected -> FP (duplicate)
    #   0.6 image 1 (0,0,10,8): a4 (IoU 0.8)                        -> TP
    #   0.5 image 0 (45,0,55,10): best a3, IoU 50/150 = 1/3 < 0.5   -> FP
    #   0.4 image 0 (40,0,50,10): a3                                -> TP
    # TP/FP: T F T F T; cumulative tp 1 1 2 2 3, fp 0 1 1 2 2; 3 positives:
    #   recall    1/3, 1/3, 2/3, 2/3, 1
    #   precision 1,   1/2, 2/3, 1/2, 3/5
    # 11-point: t = 0, .1, .2, .3 -> max precision at recall >= t = 1 (4 points);
    #           t = .4, .5, .6 -> 2/3 (3 points); t = .7, .8, .9, 1 -> 3/5 (4 points)
    #           AP07 = (4 * 1 + 3 * 2/3 + 4 * 3/5) / 11 = 8.4 / 11
    # area: envelope 1 up to recall 1/3, 2/3 up to 2/3, 3/5 up to 1:
    #           AP12 = 1/3 * 1 + 1/3 * 2/3 + 1/3 * 3/5 = 1/3 + 2/9 + 1/5 = 34/45
    # Class "b": 0.95 image 1 TP (b1), 0.3 image 0 FP -> recall 1, 1; precision 1, 1/2:
    #           AP07 = AP12 = 1 (precision 1 reached at recall 1)
    # Class "c": no positive -> NaN, left out of the mean.
    per_class = evaluator.per_class()
    assert per_class["voc07"]["a"] == pytest.approx(8.4 / 11, abs=1e-12)
    assert per_class["voc12"]["a"] == pytest.approx(34 / 45, abs=1e-12)
    assert per_class["voc07"]["b"] == pytest.approx(1.0) and per_class["voc12"]["b"] == pytest.approx(1.0)
    assert math.isnan(per_class["voc07"]["c"]) and math.isnan(per_class["voc12"]["c"])
    assert stats == {"voc07/mAP": pytest.approx((8.4 / 11 + 1) / 2, abs=1e-12),
                     "voc12/mAP": pytest.approx((34 / 45 + 1) / 2, abs=1e-12)}
    assert all(type(v) is float for v in stats.values())


def test_voc_ap_formulas():
    # 11-point AP at recall exactly 3/10: the devkit's thresholds are arange(0, 1.1, 0.1), whose
    # fourth is 0.30000000000000004, which 0.3 misses: 0, .1 and .2 are reached (3 / 11, not 4 / 11).
    assert voc_ap_07(np.array([3 / 10]), np.array([1.0])) == pytest.approx(3 / 11, abs=1e-15)
    assert voc_ap_07(np.array([3 / 10]), np.array([1.0])) == devkit_ap(np.array([3 / 10]), np.array([1.0]), use_07=True)
    # Area AP: recall .5 at precision 1, then recall 1 at precision 2/3 -> .5 + .5 * 2/3.
    assert voc_ap_area(np.array([0.5, 0.5, 1.0]), np.array([1.0, 0.5, 2 / 3])) == pytest.approx(0.5 + 1 / 3)
    # F T T with 2 positives: recall 0, .5, 1; precision 0, 1/2, 2/3. The envelope lifts the
    # precision at recall .5 to 2/3: area AP = .5 * 2/3 + .5 * 2/3 = 2/3 (without it: .25 + 1/3);
    # 11-point: the best precision at any recall >= t is 2/3 for every t -> 2/3.
    recall, precision = np.array([0.0, 0.5, 1.0]), np.array([0.0, 0.5, 2 / 3])
    assert voc_ap_area(recall, precision) == pytest.approx(2 / 3)
    assert voc_ap_07(recall, precision) == pytest.approx(2 / 3)


# ------------------------------------------------------------------ the devkit, copied for the tests
def devkit_ap(rec: np.ndarray, prec: np.ndarray, use_07: bool) -> float:
    """py-faster-rcnn's ``voc_ap``, line for line (the 11-point loop is also ``VOCevaldet.m``'s)."""
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def devkit_counts(targets: list[dict], predictions: list[dict], label: int) -> tuple[np.ndarray, np.ndarray, int]:
    """py-faster-rcnn's ``voc_eval`` for one class over the images, up to its cumulative true and
    false positive counts: ``(tp, fp, npos)``.

    Two departures, both the evaluator's documented protocol: the IoU is the continuous one (no +1
    on widths and heights), and a match needs ``ovmax >= 0.5`` as in ``VOCevaldet.m`` (voc_eval
    writes ``>``). The sort is stable, as MATLAB's ``sort`` in the devkit.
    """
    class_recs, npos = {}, 0
    for index, target in enumerate(targets):
        keep = (target["labels"] == label).numpy()
        difficult = target["difficult"].numpy()[keep]
        class_recs[index] = {"bbox": target["boxes"].double().numpy()[keep], "difficult": difficult,
                             "det": [False] * int(keep.sum())}
        npos += int((~difficult).sum())
    image_ids, confidence, boxes = [], [], []
    for index, prediction in enumerate(predictions):
        keep = (prediction["labels"] == label).numpy()
        image_ids += [index] * int(keep.sum())
        confidence += prediction["scores"].double().numpy()[keep].tolist()
        boxes += prediction["boxes"].double().numpy()[keep].tolist()
    sorted_ind = np.argsort(-np.array(confidence), kind="stable")
    BB = np.array(boxes).reshape(-1, 4)[sorted_ind]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin, 0.0)
            ih = np.maximum(iymax - iymin, 0.0)
            inters = iw * ih
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (BBGT[:, 3] - BBGT[:, 1]) - inters
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax >= 0.5:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    return np.cumsum(tp), np.cumsum(fp), npos


def devkit_class_ap(targets: list[dict], predictions: list[dict], label: int) -> tuple[float, float]:
    """voc_eval's (11-point AP, area AP) of one class; NaN, NaN for a class without positives."""
    tp, fp, npos = devkit_counts(targets, predictions, label)
    if npos == 0:
        return math.nan, math.nan
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return devkit_ap(rec, prec, use_07=True), devkit_ap(rec, prec, use_07=False)


def exact_threshold_ap(tp: np.ndarray, fp: np.ndarray, npos: int) -> float:
    """The 11-point AP with the thresholds k / 10 meant (``10 tp >= k npos``), not the devkit's."""
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return sum(prec[10 * tp >= k * npos].max() if (10 * tp >= k * npos).any() else 0.0 for k in range(11)) / 11


def grid_scene(rng: np.random.Generator, index: int, positives: dict[int, int], cells: int = 8) -> tuple[dict, dict]:
    """One image of 20 px objects on a grid of ``cells x cells`` 30 px cells: ``positives[label]``
    objects of each label (plus a difficult one now and then); each object found (a box within 2 px,
    IoU > 0.6) with probability 0.6, sometimes twice (a duplicate); false positives on empty cells
    and half-shifted boxes (IoU 1/3). Scores are distinct."""
    slots = rng.permutation(cells * cells)
    boxes, labels, difficult, pred_boxes, pred_labels = [], [], [], [], []

    def cell(slot: int) -> np.ndarray:
        x, y = divmod(int(slot), cells)
        return np.array([30.0 * x, 30.0 * y, 30.0 * x + 20, 30.0 * y + 20])

    used = 0
    for label, count in positives.items():
        for hard in [False] * count + [True] * int(rng.random() < 0.3):
            box = cell(slots[used])
            used += 1
            boxes.append(box)
            labels.append(label)
            difficult.append(hard)
            for _ in range(int(rng.random() < 0.6) + int(rng.random() < 0.1)):
                pred_boxes.append(box + rng.uniform(-2, 2, 4))
                pred_labels.append(label)
            if rng.random() < 0.15:
                pred_boxes.append(box + np.array([10.0, 0.0, 10.0, 0.0]))
                pred_labels.append(label)
    for _ in range(int(rng.integers(0, 4))):
        pred_boxes.append(cell(slots[used]))
        used += 1
        pred_labels.append(int(rng.choice(list(positives))))
    scores = rng.permutation(len(pred_boxes)) / max(len(pred_boxes), 1) * 0.9 + rng.uniform(0, 0.01)
    target = simple_target(index, np.array(boxes).reshape(-1, 4).tolist(), labels, difficult=difficult, size=(256, 256))
    prediction = {"boxes": torch.tensor(np.array(pred_boxes).reshape(-1, 4), dtype=torch.float64),
                  "labels": torch.tensor(pred_labels, dtype=torch.int64), "scores": torch.tensor(scores, dtype=torch.float64)}
    return target, prediction


def test_voc07_recall_exactly_at_a_threshold_is_the_devkits():
    # Class "a": 10 positives, 3 found first, then 2 false positives: recall .1 .2 .3 .3 .3,
    # precision 1 1 1 .75 .6. The devkit's threshold 0.30000000000000004 is missed by recall 0.3:
    # AP = 3 / 11 (the exact threshold 0.3 would give 4 / 11).
    # Class "b": 10 positives, 7 found: recall 0.7 misses 0.7000000000000001 -> 7 / 11 (not 8 / 11).
    a = [[30.0 * i, 0.0, 30.0 * i + 20, 20.0] for i in range(10)]
    b = [[30.0 * i, 60.0, 30.0 * i + 20, 80.0] for i in range(10)]
    target = simple_target(0, a + b, [1] * 10 + [2] * 10, size=(128, 320))
    found_a = a[:3] + [[0.0, 100.0, 20.0, 120.0], [40.0, 100.0, 60.0, 120.0]]
    prediction = {"boxes": torch.tensor(found_a + b[:7], dtype=torch.float64),
                  "labels": torch.tensor([1] * 5 + [2] * 7),
                  "scores": torch.tensor([0.9, 0.8, 0.7, 0.5, 0.4] + [0.9 - 0.05 * i for i in range(7)], dtype=torch.float64)}
    evaluator = VOCEvaluator(class_names=("a", "b"))
    evaluator.update([prediction], [target])
    stats = evaluator.compute()
    voc07 = evaluator.per_class()["voc07"]
    assert voc07["a"] == pytest.approx(3 / 11, abs=1e-12) and voc07["b"] == pytest.approx(7 / 11, abs=1e-12)
    for label, name in ((1, "a"), (2, "b")):
        assert (voc07[name], evaluator.per_class()["voc12"][name]) == devkit_class_ap([target], [prediction], label)
    assert stats["voc07/mAP"] == pytest.approx(5 / 11, abs=1e-12)


def test_voc_ap_equals_the_devkit_on_random_cases():
    rng = np.random.default_rng(7)
    moved = 0  # cases where the devkit's float thresholds differ from the exact k / 10
    for case in range(40):
        images = int(rng.integers(1, 5))
        scenes = [grid_scene(rng, i, {1: int(rng.choice([1, 2, 3, 5])), 2: int(rng.choice([0, 1, 5]))}) for i in range(images)]
        targets, predictions = [s[0] for s in scenes], [s[1] for s in scenes]
        evaluator = VOCEvaluator(class_names=("a", "b"))
        evaluator.update(predictions, targets)
        stats = evaluator.compute()
        per_class = evaluator.per_class()
        expected = {}
        for label, name in ((1, "a"), (2, "b")):
            expected[name] = devkit_class_ap(targets, predictions, label)
            got = (per_class["voc07"][name], per_class["voc12"][name])
            if math.isnan(expected[name][0]):
                assert all(math.isnan(v) for v in got), (case, name)
                continue
            assert got == pytest.approx(expected[name], abs=1e-12), (case, name)
            moved += abs(exact_threshold_ap(*devkit_counts(targets, predictions, label)) - got[0]) > 1e-9
        scored = [v[0] for v in expected.values() if not math.isnan(v[0])]
        assert stats["voc07/mAP"] == pytest.approx(float(np.mean(scored)), abs=1e-12)
    assert moved >= 3, moved  # the cases do test the float thresholds


def test_voc_iou_threshold_is_inclusive():
    # IoU exactly 0.5 (a 10x5 box inside a 10x10 one) is a match, as the devkit's ovmax >= 0.5.
    evaluator = VOCEvaluator(class_names=("a",))
    evaluator.update([simple_prediction([[0, 0, 10, 5]], [1], [0.5])], [simple_target(0, [[0, 0, 10, 10]], [1])])
    assert evaluator.compute() == {"voc07/mAP": pytest.approx(1.0), "voc12/mAP": pytest.approx(1.0)}


def test_voc_empty_predictions_and_no_ground_truth():
    evaluator = VOCEvaluator(class_names=("a",))
    evaluator.update([simple_prediction([], [], [])], [simple_target(0, [[0, 0, 10, 10]], [1])])
    assert evaluator.compute() == {"voc07/mAP": 0.0, "voc12/mAP": 0.0}
    evaluator.reset()
    evaluator.update([simple_prediction([[0, 0, 4, 4]], [1], [0.5])], [simple_target(0, [], [])])
    stats = evaluator.compute()
    assert stats and all(math.isnan(v) for v in stats.values())


# ------------------------------------------------------------------------------------------ DDP
def _ddp_worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        targets, predictions = _ddp_data()
        # Rank 0 gets images 0, 1, 2; rank 1 gets 3 and image 0 again (the sampler's padding).
        mine = [0, 1, 2] if rank == 0 else [3, 0]
        out = {}
        for name, evaluator in (("coco", COCOEvaluator(class_names=("a", "b"))), ("voc", VOCEvaluator(class_names=("a", "b")))):
            evaluator.update([predictions[i] for i in mine], [targets[i] for i in mine])
            out[name] = evaluator.compute()
        out["gathered"] = sorted(r["id"] for r in gather_records([{"id": i} for i in mine]))
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(out, f)
    finally:
        torch.distributed.destroy_process_group()


def _ddp_data() -> tuple[list[dict], list[dict]]:
    targets = [simple_target(i, [[0, 0, 10, 10], [20, 20, 40, 40]], [1, 2]) for i in range(4)]
    predictions = [
        simple_prediction([[0, 0, 10, 10], [22, 20, 40, 40]], [1, 2], [0.9, 0.8]),
        simple_prediction([[0, 0, 12, 10], [50, 50, 60, 60]], [1, 2], [0.7, 0.95]),
        simple_prediction([[30, 30, 40, 40]], [1], [0.6]),
        simple_prediction([[0, 0, 10, 10], [20, 20, 40, 40]], [2, 2], [0.5, 0.4]),
    ]
    return targets, predictions


def test_ddp_gather_joins_ranks_and_drops_padding(tmp_path):
    targets, predictions = _ddp_data()
    expected = {}
    for name, evaluator in (("coco", COCOEvaluator(class_names=("a", "b"))), ("voc", VOCEvaluator(class_names=("a", "b")))):
        evaluator.update(predictions, targets)
        expected[name] = evaluator.compute()
    # Without a process group the helper is the identity.
    assert gather_records([{"id": 1}]) == [{"id": 1}]

    mp.spawn(_ddp_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["gathered"] == [0, 0, 1, 2, 3]  # both ranks' records, padding included
        for name in ("coco", "voc"):
            assert got[name] == pytest.approx(expected[name], abs=1e-12), (rank, name)
    # The padding matters: counting image 0 twice would change the numbers.
    twice = VOCEvaluator(class_names=("a", "b"))
    twice.update(predictions, targets)
    twice.update(predictions[:1], [dict(targets[0], index=torch.tensor(4))])
    assert twice.compute() != pytest.approx(expected["voc"])
