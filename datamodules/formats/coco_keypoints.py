"""COCO person keypoints (Lin et al., ECCV 2014) for top-down pose with ground-truth boxes:
17 joints, one record per annotated person.

Files (the 2017 layout): ``annotations/person_keypoints_{train,val}2017.json`` read with
``pycocotools.coco.COCO``, images under ``train2017/`` and ``val2017/``.

People: every ``person`` annotation that is not a crowd and has at least ``min_keypoints``
labelled keypoints, and whose box, clipped to the image as in SimpleBaseline/HRNet
(``x1 = max(0, x)``, ``x2 = min(W - 1, x1 + max(0, w - 1))``, likewise in y), has positive area.

Coordinates: COCO's keypoints are already 0-based pixel coordinates and are kept as they are; a
keypoint is ``visible`` (annotated) when its flag ``v > 0`` (1: labelled but occluded, 2: visible),
so occluded-but-labelled keypoints carry loss, as in MPII.

Crop, as SimpleBaseline/HRNet ``_box2cs``: ``center`` is the clipped box's centre; the box is
widened or heightened to the crop's aspect ratio (``aspect_ratio`` = input width / height, 0.75
for 256x192) and ``scale = box height / 200 * scale_factor`` (1.25).

There is no head box (``head_box`` None) and COCO's own metric is OKS-based AP
(``lightning_modules.metrics.coco_keypoints.COCOKeypointAP``); the data module's protocol is PCK@0.2
of the torso (left shoulder to right hip), a quick proxy for checkpoint selection.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.coco import load_coco
from core.errors import AnnotationFormatError, ConfigError
from core.skeletons import COCO_SKELETON, PCK_TORSO, PoseProtocol, Skeleton
from datamodules.formats._common import ImageFileSource, finite_number, require_dir, require_file, resolve
from datamodules.pose import PoseRecord

__all__ = ["COCOKeypoints"]

NUM_JOINTS = 17


class COCOKeypoints(ImageFileSource):
    """COCO person keypoints with ground-truth boxes.

    Args:
        root: COCO folder; the other paths are relative to it unless absolute.
        train_annotations: keypoint annotations of the train split.
        val_annotations: keypoint annotations of the val split; the ``test`` split is the same
            people (test-dev has no public annotations).
        train_images: image folder of the train split.
        val_images: image folder of the val split.
        min_keypoints: people with fewer labelled keypoints (``num_keypoints``) are left out.
        aspect_ratio: crop width / height (the data module's input width / height): the box is
            padded to it before the scale is taken.
        scale_factor: the box is enlarged by this (SimpleBaseline/HRNet: 1.25).

    Records: ``image`` the file path, ``image_id`` the COCO image id, ``extra`` with
    ``annotation_id``, ``image_id``, ``bbox`` (COCO ``[x, y, w, h]`` as in the file) and ``area``.
    """

    skeleton: Skeleton = COCO_SKELETON
    protocol: PoseProtocol = PCK_TORSO

    def __init__(
        self,
        root: str = "data/coco",
        train_annotations: str = "annotations/person_keypoints_train2017.json",
        val_annotations: str = "annotations/person_keypoints_val2017.json",
        train_images: str = "train2017",
        val_images: str = "val2017",
        min_keypoints: int = 1,
        aspect_ratio: float = 0.75,
        scale_factor: float = 1.25,
    ) -> None:
        if min_keypoints < 0:
            raise ConfigError(f"COCOKeypoints.min_keypoints must be >= 0, got {min_keypoints}")
        if aspect_ratio <= 0 or scale_factor <= 0:
            raise ConfigError(f"COCOKeypoints.aspect_ratio and scale_factor must be > 0, got {aspect_ratio}, {scale_factor}")
        self.root = require_dir("COCO root", Path(root))
        self.min_keypoints = min_keypoints
        self.aspect_ratio = aspect_ratio
        self.scale_factor = scale_factor
        self.annotation_files: dict[str, Path] = {}
        self.splits: dict[str, list[PoseRecord]] = {}
        for split, annotations, images in (("train", train_annotations, train_images), ("val", val_annotations, val_images)):
            path = require_file(f"COCO {split} annotation file", resolve(self.root, annotations))
            folder = require_dir(f"COCO {split} image folder", resolve(self.root, images))
            self.annotation_files[split] = path
            self.splits[split] = self._read(path, folder)
        self.splits["test"] = self.splits["val"]

    def coco_annotation_file(self, split: str) -> str | None:
        """The split's keypoint ground truth, so OKS AP is reported (``test`` is the val people)."""
        return str(self.annotation_files["train" if split == "train" else "val"])

    def _read(self, path: Path, images: Path) -> list[PoseRecord]:
        coco = load_coco(path)
        person = coco.getCatIds(catNms=["person"])
        if not person:
            raise AnnotationFormatError(path, "no 'person' category")
        records = []
        for image_id in sorted(coco.getImgIds()):
            info = coco.imgs[image_id]
            file_name = info.get("file_name")
            width, height = finite_number(info.get("width")), finite_number(info.get("height"))
            if not isinstance(file_name, str) or width is None or height is None:
                raise AnnotationFormatError(path, f"image {image_id}: needs 'file_name', 'width' and 'height'")
            for annotation in coco.loadAnns(coco.getAnnIds(imgIds=image_id, catIds=person, iscrowd=None)):
                record = self._record(path, annotation, images / file_name, image_id, file_name, width, height)
                if record is not None:
                    records.append(record)
        return records

    def _record(self, path: Path, annotation: dict, image: Path, image_id: int, file_name: str, width: float, height: float) -> PoseRecord | None:
        where = f"annotation {annotation.get('id')!r} (image {file_name!r})"
        for key in ("id", "keypoints", "num_keypoints", "bbox"):
            if key not in annotation:
                raise AnnotationFormatError(path, f"{where}: missing field {key!r}")
        if annotation.get("iscrowd", 0):
            return None
        num_keypoints = finite_number(annotation["num_keypoints"])
        if num_keypoints is None:
            raise AnnotationFormatError(path, f"{where}: field 'num_keypoints' must be a number")
        if num_keypoints < self.min_keypoints:
            return None
        try:
            keypoints = np.asarray(annotation["keypoints"], dtype=np.float64)
            bbox = np.asarray(annotation["bbox"], dtype=np.float64)
        except (TypeError, ValueError):
            raise AnnotationFormatError(path, f"{where}: 'keypoints' and 'bbox' must be numbers") from None
        if keypoints.shape != (3 * NUM_JOINTS,):
            raise AnnotationFormatError(path, f"{where}: field 'keypoints' must hold {3 * NUM_JOINTS} numbers (17 x [x, y, v]), got {keypoints.size}")
        if bbox.shape != (4,) or not np.isfinite(bbox).all():
            raise AnnotationFormatError(path, f"{where}: field 'bbox' must be 4 finite numbers [x, y, w, h]")
        keypoints = keypoints.reshape(NUM_JOINTS, 3)
        if not np.isfinite(keypoints).all():
            raise AnnotationFormatError(path, f"{where}: field 'keypoints' is not finite")
        # SimpleBaseline/HRNet clip the box to the image and drop empty ones.
        x, y, w, h = bbox
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(width - 1, x1 + max(0.0, w - 1)), min(height - 1, y1 + max(0.0, h - 1))
        if not (x2 >= x1 and y2 >= y1 and (x2 - x1) * (y2 - y1) > 0):
            return None
        center, scale = self._center_scale(x1, y1, x2 - x1, y2 - y1)
        return PoseRecord(
            image=str(image),
            center=center,
            scale=scale,
            keypoints=keypoints[:, :2].astype(np.float32),
            visible=keypoints[:, 2] > 0,
            head_box=None,
            image_id=image_id,
            extra={"annotation_id": annotation["id"], "image_id": image_id, "bbox": [float(v) for v in bbox], "area": annotation.get("area")},
        )

    def _center_scale(self, x: float, y: float, w: float, h: float) -> tuple[tuple[float, float], float]:
        """SimpleBaseline/HRNet ``_box2cs``: pad the box to the crop's aspect ratio, enlarge it."""
        center = (x + w * 0.5, y + h * 0.5)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        return center, h / 200.0 * self.scale_factor
