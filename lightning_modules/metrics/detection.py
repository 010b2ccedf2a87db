"""Detection, instance segmentation and keypoint AP by the official protocols.

* ``COCOEvaluator``: COCO AP/AR through pycocotools' ``COCOeval`` (or, by ``backend``,
  faster-coco-eval's C++ ``COCOeval_faster``: the same numbers, faster on large splits) for
  ``bbox``, ``segm`` and ``keypoints``, against the official annotation file of a real COCO split
  or against a ground truth built in memory from the targets (any other dataset: VOC, YOLO, CSV,
  synthetic).
* ``VOCEvaluator``: Pascal VOC AP@0.5 per class as the VOC devkit's ``VOCevaldet.m`` (and
  py-faster-rcnn's ``voc_eval``) computes it, with both the VOC2007 11-point AP and the VOC2010+
  area under the precision envelope.

Both take what a torchvision detector returns in eval mode and what ``DetectionDataset`` returns
(conventions in ``datamodules/detection.py``)::

    evaluator = COCOEvaluator(("bbox", "segm"), class_names=names, category_ids=ids)
    for images, targets in loader:
        evaluator.update(model(images), targets)
    stats = evaluator.compute()        # {"bbox/AP": 0.37, ..., "segm/ARl": 0.51}
    evaluator.reset()

``update`` turns each image into one plain record (its COCO image entry, ground-truth annotations
and result records; ``image_record``), so nothing stays on the GPU and every rank's records can be
sent with ``torch.distributed.all_gather_object``. ``compute`` gathers them from every rank
(``gather_records``) and keeps one record per image: a ``DistributedSampler`` pads the last
batch by repeating images, which would otherwise count twice. ``compute`` is a collective under
DDP: call it on every rank (every rank gets the same numbers).
"""
from __future__ import annotations

import contextlib
import io
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
from torch import Tensor

from core.coco import load_coco
from core.skeletons import COCO_SKELETON

__all__ = [
    "COCOEvaluator", "VOCEvaluator", "image_record", "gather_records", "voc_ap_07", "voc_ap_area",
    "COCO_PERSON_SIGMAS", "STAT_NAMES", "VOC07_RECALL_THRESHOLDS", "CocoBackend", "COCO_BACKENDS", "coco_api", "coco_of",
]

# Who computes COCO AP: pycocotools (the reference) or faster-coco-eval (its C++ port, equal on
# the suite's cases to 1e-6 and several times faster at COCO scale; BENCHMARKS.md).
CocoBackend = Literal["pycocotools", "faster_coco_eval"]
COCO_BACKENDS: tuple[str, ...] = get_args(CocoBackend)

IOU_TYPES = ("bbox", "segm", "keypoints")
# The order of COCOeval.stats after summarize(), per iou type.
STAT_NAMES = {
    "bbox": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "segm": ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"),
    "keypoints": ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"),
}
# COCO's per-keypoint OKS sigmas of the 17 person keypoints (pycocotools' Params default).
COCO_PERSON_SIGMAS = tuple(s / 10.0 for s in (
    0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89))
# Sigma of every keypoint of a skeleton that is not COCO's and was given none: a middle value of
# COCO's range (0.025 for eyes .. 0.107 for hips). Pass ``keypoint_sigmas`` for a real dataset.
DEFAULT_KEYPOINT_SIGMA = 0.05


def coco_api(backend: str) -> tuple[Any, Any]:
    """``(COCO, COCOeval)``: the classes of ``backend`` (``CocoBackend``), imported on first use.

    Both have pycocotools' interface as this package uses it (``COCO()`` then ``dataset`` and
    ``createIndex()``; ``loadRes``, ``getCatIds``, ``getImgIds``, ``getAnnIds``, ``loadAnns``,
    ``cats``; ``COCOeval(gt, dt, iouType)``, ``params.imgIds``, ``params.kpt_oks_sigmas``,
    ``evaluate()``, ``accumulate()``, ``summarize()``, ``stats``, ``eval["precision"]``). An unknown
    name raises ``ValueError``.
    """
    if backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

        return COCO, COCOeval
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO as FasterCOCO
        from faster_coco_eval import COCOeval_faster

        return FasterCOCO, COCOeval_faster
    raise ValueError(f"COCO backend must be one of {COCO_BACKENDS}, got {backend!r}")


def coco_of(dataset: dict[str, Any], backend: str) -> Any:
    """The ``COCO`` object of ``backend`` indexing ``dataset`` (a COCO JSON dict, not copied: the
    evaluators add fields such as ``ignore`` to its annotations, as pycocotools does)."""
    coco_class, _ = coco_api(backend)
    with contextlib.redirect_stdout(io.StringIO()):  # "creating index..."
        coco = coco_class()
        coco.dataset = dataset
        coco.createIndex()
    return coco


# ------------------------------------------------------------------------------ per-image records
def _scalar(value: Any) -> int:
    return int(value.item()) if isinstance(value, Tensor) else int(value)


def _numpy(value: Any, dtype: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        value = value.detach().cpu()
        if value.dtype in (torch.bfloat16, torch.float16):  # bfloat16 has no numpy dtype
            value = value.float()
        value = value.numpy()
    return np.asarray(value, dtype=dtype)


def _encode_masks(masks: np.ndarray) -> list[dict[str, Any]]:
    """COCO compressed RLEs of ``(N, H, W)`` binary masks, ``counts`` as ``str`` (JSON-able)."""
    from pycocotools import mask as mask_util

    if len(masks) == 0:
        return []
    # pycocotools encodes (H, W, N) Fortran-ordered uint8.
    rles = mask_util.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def _xywh(boxes: np.ndarray) -> list[list[float]]:
    """XYXY -> COCO's ``[x, y, w, h]`` (both in continuous pixel coordinates)."""
    out = boxes.astype(np.float64).copy()
    out[:, 2:] -= out[:, :2]
    return out.tolist()


def image_record(
    prediction: dict[str, Tensor],
    target: dict[str, Any],
    *,
    category_ids: Sequence[int] | None = None,
    masks: bool = False,
    keypoints: bool = False,
    ground_truth: bool = True,
    mask_threshold: float = 0.5,
) -> dict[str, Any]:
    """One image's prediction and target as one JSON-able record in COCO's terms.

    Args:
        prediction: ``boxes (N, 4)`` XYXY, ``labels (N,)`` in ``1 .. C``, ``scores (N,)``, with
            ``masks`` ``masks (N, 1, H, W)`` probabilities and with ``keypoints`` ``keypoints
            (N, J, 3)`` and optional ``keypoints_scores (N, J)``.
        target: ``DetectionDataset``'s target: ``boxes``, ``labels``, ``image_id`` (``-1`` for
            images named by strings), ``index``, ``size`` ``(H, W)``, and ``iscrowd``,
            ``difficult``, ``area`` (each defaults to zeros / box area when missing), ``masks
            (K, H, W)``, ``keypoints (K, J, 3)``.
        category_ids: ``category_ids[label - 1]`` is written as ``category_id``; ``None``: the label.
        masks, keypoints: write the masks (RLE) / keypoints of predictions and ground truth.
        ground_truth: build the ground-truth annotations (not needed against an annotation file).
        mask_threshold: a predicted mask pixel is foreground when its probability is above it.

    Returns:
        ``{"id", "height", "width", "gt": [annotation, ...], "dt": [result, ...]}``. ``id`` is the
        image's COCO id, or its ``index`` in the split when ``image_id`` is ``-1``. An annotation
        has ``bbox`` ``[x, y, w, h]``, ``category_id``, ``area``, ``iscrowd``, ``difficult`` (and
        ``segmentation`` RLE, ``keypoints``, ``num_keypoints``); it has no ``id`` yet (ids are given
        once all ranks' records are joined). A result has ``image_id``, ``category_id``, ``bbox``,
        ``score`` (and ``segmentation`` RLE with ``counts`` a ``str``, ``keypoints`` flat ``[x1, y1,
        s1, ...]`` where ``s`` is the keypoint score when given, else the third column).
    """
    image_id = _scalar(target["image_id"]) if "image_id" in target else -1
    key = image_id if image_id >= 0 else _scalar(target["index"])
    height, width = (int(v) for v in _numpy(target["size"], np.int64).reshape(2))

    def category(labels: np.ndarray, where: str) -> list[int]:
        if category_ids is None:
            if len(labels) and labels.min() < 1:
                raise ValueError(f"{where} labels must be >= 1 (0 is the background), got {labels.min()} in image {key}")
            return labels.tolist()
        if len(labels) and (labels.min() < 1 or labels.max() > len(category_ids)):
            raise ValueError(f"{where} labels must lie in 1..{len(category_ids)}, got {labels.min()}..{labels.max()} in image {key}")
        return [int(category_ids[label - 1]) for label in labels]

    # Detections.
    boxes = _numpy(prediction["boxes"], np.float64).reshape(-1, 4)
    count = len(boxes)
    labels = _numpy(prediction["labels"], np.int64).reshape(-1)
    scores = _numpy(prediction["scores"], np.float64).reshape(-1)
    if len(labels) != count or len(scores) != count:
        raise ValueError(f"prediction of image {key}: {count} boxes, {len(labels)} labels and {len(scores)} scores")
    results = [
        {"image_id": key, "category_id": c, "bbox": b, "score": float(s)}
        for c, b, s in zip(category(labels, "predicted"), _xywh(boxes), scores)
    ]
    if masks and count:
        if "masks" not in prediction:
            raise ValueError(f"prediction of image {key} has no 'masks' (needed for segm)")
        probabilities = prediction["masks"]
        if probabilities.dim() == 4:
            probabilities = probabilities[:, 0]
        if tuple(probabilities.shape) != (count, height, width):
            raise ValueError(f"predicted masks of image {key} are {tuple(probabilities.shape)}, expected "
                             f"({count}, {height}, {width}): paste them at the image's size")
        # Binarise where the masks are (maybe on the GPU): a quarter of the bytes of float32 to move.
        binary = _numpy(probabilities > mask_threshold, np.uint8)
        for result, rle in zip(results, _encode_masks(binary)):
            result["segmentation"] = rle
    if keypoints and count:
        if "keypoints" not in prediction:
            raise ValueError(f"prediction of image {key} has no 'keypoints'")
        points = _numpy(prediction["keypoints"], np.float64).reshape(count, -1, 3).copy()
        if prediction.get("keypoints_scores") is not None:
            # COCOeval reads only x and y; the third number is informative, a per-keypoint score.
            points[:, :, 2] = _numpy(prediction["keypoints_scores"], np.float64).reshape(count, -1)
        for result, row in zip(results, points.reshape(count, -1).tolist()):
            result["keypoints"] = row

    record = {"id": key, "height": height, "width": width, "gt": [], "dt": results}
    if not ground_truth:
        return record

    # Ground truth.
    gt_boxes = _numpy(target["boxes"], np.float64).reshape(-1, 4)
    k = len(gt_boxes)
    gt_labels = _numpy(target["labels"], np.int64).reshape(-1)
    zeros = np.zeros(k, dtype=bool)
    iscrowd = _numpy(target["iscrowd"], bool).reshape(-1) if "iscrowd" in target else zeros
    difficult = _numpy(target["difficult"], bool).reshape(-1) if "difficult" in target else zeros
    if "area" in target:
        area = _numpy(target["area"], np.float64).reshape(-1)
    else:
        area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    annotations = [
        {"category_id": c, "bbox": b, "area": float(a), "iscrowd": int(crowd), "difficult": int(diff)}
        for c, b, a, crowd, diff in zip(category(gt_labels, "ground-truth"), _xywh(gt_boxes), area, iscrowd, difficult)
    ]
    if masks and k:
        if target.get("masks") is None:
            raise ValueError(f"target of image {key} has no 'masks' (segm needs them, or an annotation_file)")
        gt_masks = _numpy(target["masks"], np.uint8).reshape(k, height, width)
        for annotation, rle in zip(annotations, _encode_masks(gt_masks)):
            annotation["segmentation"] = rle
    if keypoints and k:
        if target.get("keypoints") is None:
            raise ValueError(f"target of image {key} has no 'keypoints' (or pass an annotation_file)")
        gt_points = _numpy(target["keypoints"], np.float64).reshape(k, -1, 3)
        for annotation, points in zip(annotations, gt_points):
            annotation["keypoints"] = points.reshape(-1).tolist()
            annotation["num_keypoints"] = int((points[:, 2] > 0).sum())
    record["gt"] = annotations
    return record


def gather_records(records: list[Any]) -> list[Any]:
    """Every rank's ``records`` joined in rank order (``all_gather_object``) when a default process
    group with more than one process is initialised; else ``records`` itself.

    A collective: every rank must call it. With NCCL the objects travel through the current CUDA
    device, which Lightning sets for each rank.
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return records
    world_size = torch.distributed.get_world_size()
    if world_size == 1:
        return records
    gathered: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(gathered, records)
    return [record for rank_records in gathered for record in rank_records]


def _unique_images(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One record per image id, the first seen (a DistributedSampler repeats images to pad)."""
    unique: dict[int, dict[str, Any]] = {}
    for record in records:
        unique.setdefault(record["id"], record)
    return list(unique.values())


class _DetectionEvaluator:
    """What both evaluators share: per-image records kept per process, gathered and de-duplicated."""

    def __init__(self, category_ids: Sequence[int] | None, masks: bool, keypoints: bool, ground_truth: bool,
                 mask_threshold: float = 0.5) -> None:
        self._category_ids = None if category_ids is None else [int(c) for c in category_ids]
        self._masks = masks
        self._keypoints = keypoints
        self._ground_truth = ground_truth
        self.mask_threshold = mask_threshold
        self._records: dict[int, dict[str, Any]] = {}

    def update(self, predictions: list[dict[str, Tensor]], targets: list[dict[str, Any]]) -> None:
        """Add a batch: one prediction dict and one target dict per image (see the module doc).
        An image already added (same id) is skipped: its first record stands."""
        if len(predictions) != len(targets):
            raise ValueError(f"{type(self).__name__}.update: {len(predictions)} predictions for {len(targets)} targets")
        for prediction, target in zip(predictions, targets):
            record = image_record(
                prediction, target, category_ids=self._category_ids, masks=self._masks,
                keypoints=self._keypoints, ground_truth=self._ground_truth, mask_threshold=self.mask_threshold,
            )
            self._records.setdefault(record["id"], record)

    def results(self) -> list[dict]:
        """The COCO result records of this process's images so far, in update order (JSON-able:
        ``bbox`` ``[x, y, w, h]``, RLE ``counts`` as ``str``). Not gathered across ranks."""
        return [result for record in self._records.values() for result in record["dt"]]

    def reset(self) -> None:
        """Forget every image (call after ``compute`` at the end of an epoch)."""
        self._records = {}

    def _gathered(self) -> list[dict[str, Any]]:
        return _unique_images(gather_records(list(self._records.values())))


# ------------------------------------------------------------------------------------------ COCO
class COCOEvaluator(_DetectionEvaluator):
    """COCO AP and AR through pycocotools' ``COCOeval`` or faster-coco-eval's ``COCOeval_faster``.

    Args:
        iou_types: any of ``"bbox"``, ``"segm"``, ``"keypoints"``.
        class_names: the classes in label order (label ``i + 1`` is ``class_names[i]``); names the
            ``per_class`` entries. Empty: the annotation file's names, else the category ids.
        category_ids: the dataset's category id of each label (``category_ids[label - 1]``), as
            written in the results. ``None``: against an ``annotation_file`` the file's category
            ids in sorted order, else ``1 .. len(class_names)`` (the label itself when
            ``class_names`` is empty too).
        annotation_file: the official COCO ground truth of the split (e.g.
            ``instances_val2017.json``). Given: the results are scored against it by ``loadRes``,
            restricted to the images updated. ``None``: the ground truth is built from the targets.
        keypoint_sigmas: the OKS sigma of each keypoint. ``None``: COCO's person sigmas when there
            are 17 keypoints, else ``DEFAULT_KEYPOINT_SIGMA`` (0.05) for every keypoint.
        mask_threshold: a predicted mask pixel is foreground when its probability is above this.
        backend: who computes the AP (``CocoBackend``): ``"pycocotools"`` (the reference) or
            ``"faster_coco_eval"`` (faster-coco-eval's C++ evaluation, package
            ``faster-coco-eval``). Both read the same ground truth and results; on the suite's test
            cases every statistic agrees to 1e-6 (``tests/test_detection_metrics.py``).

    ``update(predictions, targets)``: lists with one dict per image, a torchvision detector's eval
    output and ``DetectionDataset``'s target (``image_record`` lists the fields).

    ``compute()`` returns ``{f"{iou_type}/{stat}": float}`` with the stats of ``STAT_NAMES``: for
    ``bbox`` and ``segm`` ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl``, for
    ``keypoints`` ``AP AP50 AP75 APm APl AR AR50 AR75 ARm ARl``, COCOeval's ``-1`` (no ground truth
    in that area range) kept. An iou type with no detection at all scores 0 everywhere.

    In-memory ground truth. Images get id ``image_id`` (``index`` for images named by strings) and
    their size; every object becomes an annotation with its ``bbox``, ``area``, ``segmentation``
    (RLE of its mask) and ``keypoints``/``num_keypoints`` when those are evaluated. VOC's difficult
    objects are written as ``iscrowd = 1``: ``COCOeval._prepare`` overwrites any ``ignore`` flag of
    the ground truth by ``iscrowd``, so a crowd flag is the only way to make an object ignored (a
    detection on it is neither true nor false positive). Note that COCOeval also measures a crowd
    region's overlap as intersection over the *detection's* area.
    """

    def __init__(
        self,
        iou_types: Sequence[str] = ("bbox",),
        class_names: Sequence[str] = (),
        category_ids: Sequence[int] | None = None,
        annotation_file: str | None = None,
        keypoint_sigmas: Sequence[float] | None = None,
        mask_threshold: float = 0.5,
        backend: CocoBackend = "pycocotools",
    ) -> None:
        coco_api(backend)  # an unknown or missing backend fails here, not at the first compute
        self.backend = backend
        iou_types = tuple(iou_types)
        unknown = [t for t in iou_types if t not in IOU_TYPES]
        if unknown or not iou_types or len(set(iou_types)) != len(iou_types):
            raise ValueError(f"COCOEvaluator: iou_types must be distinct values among {IOU_TYPES}, got {iou_types}")
        self.iou_types = iou_types
        self.annotation_file = annotation_file
        self._coco_gt = None
        if annotation_file is not None:
            self._coco_gt = load_coco(Path(annotation_file))
            if backend != "pycocotools":  # load_coco checked the file; index it for the backend
                self._coco_gt = coco_of(self._coco_gt.dataset, backend)
            if category_ids is None:
                category_ids = sorted(self._coco_gt.getCatIds())
        if category_ids is None and class_names:
            category_ids = range(1, len(class_names) + 1)
        if category_ids is not None and class_names and len(category_ids) != len(class_names):
            raise ValueError(f"COCOEvaluator: {len(class_names)} class names but {len(category_ids)} category ids")
        self.class_names = tuple(class_names)
        self.keypoint_sigmas = None if keypoint_sigmas is None else tuple(float(s) for s in keypoint_sigmas)
        self._per_class: dict[str, dict[str, float]] = {}
        super().__init__(
            category_ids, masks="segm" in iou_types, keypoints="keypoints" in iou_types,
            ground_truth=annotation_file is None, mask_threshold=mask_threshold,
        )

    # ------------------------------------------------------------------------------------ public
    def compute(self) -> dict[str, float]:
        """COCO stats of every image updated on any rank (a collective under DDP)."""
        records = self._gathered()
        coco_gt = self._coco_gt if self._coco_gt is not None else self._memory_ground_truth(records)
        image_ids = sorted(record["id"] for record in records)
        unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
        if unknown:
            raise ValueError(f"COCOEvaluator: image ids {unknown[:5]} are not in {self.annotation_file}")
        names = self._category_names(coco_gt)
        stats: dict[str, float] = {}
        self._per_class = {}
        for iou_type in self.iou_types:
            results = [self._result_for(result, iou_type) for record in records for result in record["dt"]]
            values, per_class = self._evaluate(coco_gt, results, image_ids, iou_type)
            stats.update({f"{iou_type}/{name}": float(v) for name, v in zip(STAT_NAMES[iou_type], values)})
            self._per_class[iou_type] = {names.get(cat, str(cat)): ap for cat, ap in per_class.items()}
        return stats

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{iou_type: {class_name: AP@[.5:.95]}}`` of the last ``compute`` (all areas, the largest
        max-detections setting); NaN for a class without ground truth in the evaluated images."""
        return {iou_type: dict(values) for iou_type, values in self._per_class.items()}

    def reset(self) -> None:
        super().reset()
        self._per_class = {}

    # ---------------------------------------------------------------------------------- internal
    def _category_names(self, coco_gt: Any) -> dict[int, str]:
        if self.class_names and self._category_ids is not None:
            return dict(zip(self._category_ids, self.class_names))
        return {cat: str(info.get("name", cat)) for cat, info in coco_gt.cats.items()}

    @staticmethod
    def _result_for(result: dict[str, Any], iou_type: str) -> dict[str, Any]:
        """The fields of one iou type only: ``loadRes`` picks its branch by the fields of the first
        result (bbox before segmentation before keypoints) and takes ``area`` from that branch, so a
        segm result that kept its box would use the box area for the small/medium/large ranges
        (detectron2 drops the box for the same reason)."""
        fields = {"bbox": "bbox", "segm": "segmentation", "keypoints": "keypoints"}[iou_type]
        out = {"image_id": result["image_id"], "category_id": result["category_id"], "score": result["score"]}
        out[fields] = result[fields]
        return out

    def _memory_ground_truth(self, records: list[dict[str, Any]]) -> Any:
        annotations = []
        for record in records:
            for annotation in record["gt"]:
                annotation = dict(annotation)
                # COCOeval reads only iscrowd as "ignore" (see the class doc).
                difficult = annotation.pop("difficult", 0)
                annotation["iscrowd"] = int(bool(annotation["iscrowd"] or difficult))
                annotation.update(id=len(annotations) + 1, image_id=record["id"])
                annotations.append(annotation)
        if self._category_ids is not None:
            category_ids = list(self._category_ids)
        else:  # labels are the ids: every one seen
            category_ids = sorted({a["category_id"] for a in annotations} | {r["category_id"] for rec in records for r in rec["dt"]})
        names = dict(zip(category_ids, self.class_names)) if self.class_names else {}
        categories = [{"id": c, "name": names.get(c, str(c)), "supercategory": ""} for c in category_ids]
        if "keypoints" in self.iou_types:
            joints = self._num_joints(records)
            keypoint_names = list(COCO_SKELETON.joints) if joints == len(COCO_SKELETON.joints) else [str(j) for j in range(joints)]
            for category in categories:
                category["keypoints"] = keypoint_names
        dataset = {
            "info": {}, "licenses": [], "categories": categories, "annotations": annotations,
            "images": [{"id": r["id"], "height": r["height"], "width": r["width"]} for r in records],
        }
        return coco_of(dataset, self.backend)

    @staticmethod
    def _num_joints(records: list[dict[str, Any]]) -> int:
        for record in records:
            for item in record["gt"] + record["dt"]:
                if "keypoints" in item:
                    return len(item["keypoints"]) // 3
        return 0

    def _sigmas(self, coco_gt: Any, records_joints: int) -> np.ndarray:
        joints = records_joints
        if joints == 0:
            cats = [c for c in coco_gt.cats.values() if c.get("keypoints")]
            joints = len(cats[0]["keypoints"]) if cats else len(COCO_PERSON_SIGMAS)
        if self.keypoint_sigmas is not None:
            if len(self.keypoint_sigmas) != joints:
                raise ValueError(f"COCOEvaluator: {len(self.keypoint_sigmas)} keypoint_sigmas for {joints} keypoints")
            return np.array(self.keypoint_sigmas)
        if joints == len(COCO_PERSON_SIGMAS):
            return np.array(COCO_PERSON_SIGMAS)
        return np.full(joints, DEFAULT_KEYPOINT_SIGMA)

    def _evaluate(self, coco_gt: Any, results: list[dict], image_ids: list[int], iou_type: str) -> tuple[list[float], dict[int, float]]:
        """COCOeval's stats and per-category AP of one iou type."""
        _, COCOeval = coco_api(self.backend)
        category_ids = sorted(coco_gt.getCatIds())
        if not results:
            # loadRes cannot load an empty list; with nothing detected every score is 0.
            with_gt = {a["category_id"] for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=image_ids))}
            return [0.0] * len(STAT_NAMES[iou_type]), {c: 0.0 if c in with_gt else math.nan for c in category_ids}
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
            coco_dt = coco_gt.loadRes(results)
            evaluator = COCOeval(coco_gt, coco_dt, iouType=iou_type)
            evaluator.params.imgIds = image_ids
            if iou_type == "keypoints":
                joints = len(results[0]["keypoints"]) // 3
                evaluator.params.kpt_oks_sigmas = self._sigmas(coco_gt, joints)
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        # precision: (iou thresholds, recall points, categories, area ranges, max dets); -1 where a
        # category has no ground truth. AP@[.5:.95] of a category: all areas, the last maxDets.
        precision = evaluator.eval["precision"]
        # faster-coco-eval leaves out of params.catIds the categories without ground truth for
        # keypoints (pycocotools keeps them at -1): NaN either way.
        per_class = {c: math.nan for c in category_ids}
        for k, category_id in enumerate(evaluator.params.catIds):
            values = precision[:, :, k, 0, -1]
            values = values[values > -1]
            per_class[category_id] = float(values.mean()) if values.size else math.nan
        return [float(v) for v in evaluator.stats[: len(STAT_NAMES[iou_type])]], per_class


# ------------------------------------------------------------------------------------------- VOC
# The devkit's recall thresholds: py-faster-rcnn's voc_eval takes np.arange(0., 1.1, 0.1), whose
# floats hold 0.30000000000000004, 0.6000000000000001 and 0.7000000000000001, so a recall of exactly
# 3/10, 6/10 or 7/10 does not reach its threshold. That is the official number; we keep it.
VOC07_RECALL_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def voc_ap_07(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2007's 11-point AP exactly as the devkit computes it (py-faster-rcnn's ``voc_eval``, the
    loop of ``VOCevaldet.m``): for each ``t`` of ``np.arange(0., 1.1, 0.1)`` the highest precision
    at a recall ``>= t`` (0 where none), each divided by 11 and added in order.

    Args:
        recall, precision: the curve, one point per ranked detection; recall as ``voc_eval``
            computes it, ``tp / positives`` in float64.

    Returns:
        The AP. The float thresholds (see ``VOC07_RECALL_THRESHOLDS``) are the devkit's: a recall of
        exactly 0.3 misses the threshold 0.30000000000000004, and so does the official AP.
    """
    ap = 0.0
    for threshold in VOC07_RECALL_THRESHOLDS:
        reached = recall >= threshold
        ap += (precision[reached].max() if reached.any() else 0.0) / 11.0
    return float(ap)


def voc_ap_area(recall: np.ndarray, precision: np.ndarray) -> float:
    """VOC2010+'s AP: the area under the precision envelope (precision made monotonically
    decreasing, the highest precision at any higher recall), summed where recall changes."""
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    changes = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(((mrec[changes + 1] - mrec[changes]) * mpre[changes + 1]).sum())


class VOCEvaluator(_DetectionEvaluator):
    """Pascal VOC AP per class at one IoU threshold, as the VOC devkit's ``VOCevaldet.m``.

    Args:
        class_names: the classes in label order (label ``i + 1`` is ``class_names[i]``). Empty: the
            classes are ``1 .. the largest label seen``, named by their label.
        iou_threshold: the overlap a true positive needs (VOC: 0.5).

    The protocol, per class over the whole split: detections are sorted by score (stable: equal
    scores keep update order; the devkit's ``sort`` does the same). Each is compared with every
    ground truth of its class in its image and takes the one of highest IoU (the first on ties);
    if that IoU is >= ``iou_threshold``: a difficult ground truth -> the detection is ignored (not
    a false positive); an undetected one -> true positive, now detected; an already detected one
    -> false positive (a duplicate). Below the threshold -> false positive. As in the devkit the
    best ground truth is taken among *all* of them: a duplicate of an object is a false positive
    even when another object it overlaps enough is still unmatched. The positives are the
    non-difficult ground truths. COCO crowd regions (``iscrowd``) are treated as difficult.

    IoU: the devkit adds 1 to widths and heights (integer pixel boxes, inclusive corners); our
    boxes are continuous pixel coordinates (``[0, W]``), so the IoU is the plain continuous one.

    ``compute()`` -> ``{"voc07/mAP": float, "voc12/mAP": float}``: the 11-point AP (VOC2007, with
    the devkit's float recall thresholds: ``voc_ap_07``) and the area AP (VOC2010 onwards), averaged over the classes with at least one non-difficult
    ground truth (NaN when no class has one). ``per_class()`` -> ``{"voc07": {name: ap},
    "voc12": {name: ap}}``, NaN for classes without positives, 0 for a class with positives but
    no detection.
    """

    def __init__(self, class_names: Sequence[str] = (), iou_threshold: float = 0.5) -> None:
        super().__init__(category_ids=None, masks=False, keypoints=False, ground_truth=True)
        self.class_names = tuple(class_names)
        self.iou_threshold = float(iou_threshold)
        self._per_class: dict[str, dict[str, float]] = {}

    def compute(self) -> dict[str, float]:
        """VOC mAP of every image updated on any rank (a collective under DDP)."""
        records = self._gathered()
        num_classes = len(self.class_names) or max(
            [a["category_id"] for r in records for a in r["gt"] + r["dt"]], default=0)
        names = self.class_names or tuple(str(label) for label in range(1, num_classes + 1))
        # One pass over the records: per class, each image's (ground truths, detections) of it.
        per_label: dict[int, list[tuple[list[dict], list[dict]]]] = defaultdict(list)
        for record in records:
            gt_by_label: dict[int, list[dict]] = defaultdict(list)
            dt_by_label: dict[int, list[dict]] = defaultdict(list)
            for annotation in record["gt"]:
                gt_by_label[annotation["category_id"]].append(annotation)
            for result in record["dt"]:
                dt_by_label[result["category_id"]].append(result)
            for label in gt_by_label.keys() | dt_by_label.keys():
                per_label[label].append((gt_by_label.get(label, []), dt_by_label.get(label, [])))
        ap07, ap12 = {}, {}
        for label, name in enumerate(names, start=1):
            ap07[name], ap12[name] = self._class_ap(per_label.get(label, []))
        self._per_class = {"voc07": ap07, "voc12": ap12}

        def mean(values: dict[str, float]) -> float:
            scored = [v for v in values.values() if not math.isnan(v)]
            return float(np.mean(scored)) if scored else math.nan

        return {"voc07/mAP": mean(ap07), "voc12/mAP": mean(ap12)}

    def per_class(self) -> dict[str, dict[str, float]]:
        """``{"voc07": {class_name: AP}, "voc12": {class_name: AP}}`` of the last ``compute``."""
        return {protocol: dict(values) for protocol, values in self._per_class.items()}

    def reset(self) -> None:
        super().reset()
        self._per_class = {}

    def _class_ap(self, images: list[tuple[list[dict], list[dict]]]) -> tuple[float, float]:
        """(11-point AP, area AP) of one class from each image's (ground truths, detections) of it."""
        scores: list[np.ndarray] = []
        outcomes: list[np.ndarray] = []  # per detection: 1 true positive, 0 false positive, -1 ignored
        positives = 0
        for gt, dt in images:
            ignored = np.array([bool(a["difficult"] or a["iscrowd"]) for a in gt], dtype=bool)
            positives += int((~ignored).sum())
            if not dt:
                continue
            det_scores = np.array([r["score"] for r in dt], dtype=np.float64)
            # The matching state (which ground truth is detected) is per image, so matching each
            # image's detections in their score order gives what the devkit's one pass over the
            # class's sorted detections gives.
            order = np.argsort(-det_scores, kind="stable")
            outcome = np.zeros(len(dt), dtype=np.int8)
            if gt:
                overlaps = _iou_xywh(np.array([r["bbox"] for r in dt])[order], np.array([a["bbox"] for a in gt]))
                best = overlaps.argmax(axis=1)  # the first on ties, like the devkit's max
                best_iou = overlaps[np.arange(len(dt)), best]
                detected = np.zeros(len(gt), dtype=bool)
                for i, (j, iou) in enumerate(zip(best.tolist(), best_iou.tolist())):
                    if iou < self.iou_threshold:
                        continue  # false positive: no overlap enough
                    if ignored[j]:
                        outcome[i] = -1
                    elif not detected[j]:
                        outcome[i] = 1
                        detected[j] = True
                    # else: false positive, a duplicate of a detected object
            scores.append(det_scores[order])
            outcomes.append(outcome)
        if positives == 0:
            return math.nan, math.nan
        if not scores:
            return 0.0, 0.0
        # Stable, so detections of equal score keep their update order, whatever images they are in.
        order = np.argsort(-np.concatenate(scores), kind="stable")
        outcome = np.concatenate(outcomes)[order]
        # The devkit keeps an ignored detection as tp = fp = 0: it repeats the previous point of the
        # curve (or adds recall 0, precision 0), which changes neither AP; drop it.
        outcome = outcome[outcome >= 0]
        # As voc_eval: cumulative counts, recall tp / positives and precision in float64.
        true_positives = np.cumsum(outcome == 1).astype(np.float64)
        false_positives = np.cumsum(outcome == 0).astype(np.float64)
        recall = true_positives / float(positives)
        precision = true_positives / np.maximum(true_positives + false_positives, np.finfo(np.float64).eps)
        return voc_ap_07(recall, precision), voc_ap_area(recall, precision)


def _iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` continuous IoU of ``[x, y, w, h]`` boxes (no +1: see ``VOCEvaluator``)."""
    a = a.reshape(-1, 4)
    b = b.reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    width = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, None, 1], b[None, :, 1])
    intersection = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1.0), 0.0)
