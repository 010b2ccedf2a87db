"""COCO person keypoints (Lin et al., ECCV 2014) for top-down pose with ground-truth boxes:
17 joints, one record per annotated person.

Files (the 2017 layout): ``annotations/person_keypoints_{train,val}2017.json`` (COCO JSON:
``images``, ``annotations``, ``categories``), images under ``train2017/`` and ``val2017/``.

People: every ``person`` annotation that is not a crowd and has at least ``min_keypoints``
labelled keypoints (``num_keypoints``). Crowd annotations, people below ``min_keypoints`` and
annotations of another known category are left out by these rules, as in SimpleBaseline/HRNet,
and counted as filtered in ``data_report()`` (``iscrowd``, ``few_keypoints``, ``not_person``).

Coordinates: COCO's keypoints are already 0-based pixel coordinates and are kept as they are; a
keypoint is ``visible`` (annotated) when its flag ``v > 0`` (1: labelled but occluded, 2: visible),
so occluded-but-labelled keypoints carry loss, as in MPII.

Crop, as SimpleBaseline/HRNet ``_box2cs``: the box is clipped to the image (``x1 = max(0, x)``,
``x2 = min(W - 1, x1 + max(0, w - 1))``, likewise in y), ``center`` is the clipped box's centre;
the box is widened or heightened to the crop's aspect ratio (``aspect_ratio`` = input width /
height, 0.75 for 256x192) and ``scale = box height / 200 * scale_factor`` (1.25).

Checks, per annotation (a failure is a bad record; ``on_bad_record`` decides): the fields are
there (``id``, ``image_id``, ``category_id``, ``num_keypoints``, ``keypoints``, ``bbox``) and the
id is not repeated (``duplicate``); ``image_id`` is one of the file's ``images`` (``unknown_image``;
such an orphan has no image to train on) and that image has ``file_name``, ``width``, ``height``;
no other image shares its id (``duplicate_image_id``: every image of the id is left out with its
annotations, which cannot be told apart);
``category_id`` is one of the file's ``categories`` (``unknown_category``); ``keypoints`` holds
17 x ``[x, y, v]`` (``keypoint_count``), every number finite, also for ``v = 0`` keypoints (COCO
writes numbers there, and a NaN would reach the loss), and every ``v`` in {0, 1, 2}
(``visibility_flag``); ``bbox`` is four finite numbers with positive width and height
(``empty_box``), inside the image up to a pixel of rounding (``box_outside_image``) and not empty
once clipped; ``file_name`` stays inside the image folder (``path_outside_root``) and the file is
there (``image_missing``). A file without a ``person`` category, with a person category that does
not list 17 keypoints, or that is not COCO JSON at all raises ``AnnotationFormatError``; a file
without annotations raises ``BadRecordError`` (nothing to train or evaluate on).

There is no head box (``head_box`` None) and COCO's own metric is OKS-based AP
(``lightning_modules.metrics.coco_keypoints.COCOKeypointAP``); the data module's protocol is PCK@0.2
of the torso (left shoulder to right hip), a quick proxy for checkpoint selection.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_flags, check_required, finite_array
from core.skeletons import COCO_SKELETON, PCK_TORSO, PoseProtocol, Skeleton
from datamodules.formats.coco_json import COCO_SPLITS, coco_required_paths, duplicated_image_ids
from datamodules.formats.files import load_json, resolve
from datamodules.formats.sources import ImageFileSource
from datamodules.formats.validators import image_file, known, number, record_field
from datamodules.pose import PoseRecord

__all__ = ["COCOKeypoints"]

NUM_JOINTS = 17
SPLITS = COCO_SPLITS


class COCOKeypoints(ImageFileSource):
    """COCO person keypoints with ground-truth boxes.

    Args:
        root: COCO folder; the other paths are relative to it unless absolute.
        train_annotations: keypoint annotations of the train split.
        val_annotations: keypoint annotations of the val split; the ``test`` split is the same
            people (test-dev has no public annotations).
        train_images: image folder of the train split.
        val_images: image folder of the val split.
        min_keypoints: people with fewer labelled keypoints (``num_keypoints``) are left out
            (counted as filtered).
        aspect_ratio: crop width / height (the data module's input width / height): the box is
            padded to it before the scale is taken.
        scale_factor: the box is enlarged by this (SimpleBaseline/HRNet: 1.25).
        on_bad_record: ``error`` or ``skip`` a bad annotation (see the module's checks).

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
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if min_keypoints < 0:
            raise ConfigError(f"COCOKeypoints.min_keypoints must be >= 0, got {min_keypoints}")
        if aspect_ratio <= 0 or scale_factor <= 0:
            raise ConfigError(f"COCOKeypoints.aspect_ratio and scale_factor must be > 0, got {aspect_ratio}, {scale_factor}")
        self.checker = RecordChecker("COCOKeypoints", on_bad_record)
        self.root = Path(root)
        self.annotation_files = {"train": resolve(self.root, train_annotations), "val": resolve(self.root, val_annotations)}
        self.image_dirs = {"train": resolve(self.root, train_images), "val": resolve(self.root, val_images)}
        check_required(self.required_paths(), root=self.root, owner=self)
        self.min_keypoints = min_keypoints
        self.aspect_ratio = aspect_ratio
        self.scale_factor = scale_factor
        self.splits: dict[str, list[PoseRecord]] = {}
        for split in SPLITS:
            path, images = self.annotation_files[split], self.image_dirs[split]
            if split == "val" and (path, images) == (self.annotation_files["train"], self.image_dirs["train"]):
                self.splits[split] = self.splits["train"]  # one file for both: read (and counted) once
                continue
            self.splits[split] = self._read(path, images)
            self.checker.kept(path, len(self.splits[split]), split)
        self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        return coco_required_paths(self.root, self.annotation_files, self.image_dirs)

    def coco_annotation_file(self, split: str) -> str | None:
        """The split's keypoint ground truth, so OKS AP is reported (``test`` is the val people)."""
        return str(self.annotation_files["train" if split == "train" else "val"])

    def _read(self, path: Path, images: Path) -> list[PoseRecord]:
        content = load_json(path)
        if not isinstance(content, dict) or not isinstance(content.get("images"), list) or not isinstance(content.get("categories"), list):
            raise AnnotationFormatError(path, "not a COCO annotation file (it needs 'images' and 'categories' lists)")
        if "annotations" not in content:  # a COCO test-set "image info" file: nothing to train or score on
            raise AnnotationFormatError(path, "no 'annotations' list (an image-info file has none; keypoint training and evaluation need one)")
        annotations = content["annotations"]
        if not isinstance(annotations, list):
            raise AnnotationFormatError(path, f"'annotations' must be a list, got {type(annotations).__name__}")
        categories = {c.get("id"): c for c in content["categories"] if isinstance(c, dict)}
        person = [c for c in categories.values() if c.get("name") == "person"]
        if not person:
            raise AnnotationFormatError(path, "no 'person' category")
        names = person[0].get("keypoints")
        if names is not None and len(names) != NUM_JOINTS:
            raise AnnotationFormatError(path, f"the person category lists {len(names)} keypoints, not COCO's {NUM_JOINTS}")
        duplicated = duplicated_image_ids(path, content, self.checker)
        image_info = {info.get("id"): info for info in content["images"] if isinstance(info, dict) and not known(duplicated, info.get("id"))}
        seen: set[Any] = set()
        records = []
        for index, annotation in enumerate(annotations):
            if isinstance(annotation, dict) and known(duplicated, annotation.get("image_id")):
                continue  # counted with its images in duplicated_image_ids
            with self.checker.record(path, _where(index, annotation, image_info)):
                record = self._record(path, annotation, images, image_info, categories, person[0].get("id"), seen)
                if record is not None:
                    records.append(record)
        return records

    def _record(self, path: Path, annotation: Any, images: Path, image_info: dict, categories: dict, person: Any, seen: set) -> PoseRecord | None:
        annotation_id = record_field(annotation, "id")
        if not isinstance(annotation_id, (int, str)):
            raise RecordProblem("wrong_type", f"field 'id' must be a number, got {annotation_id!r}")
        if annotation_id in seen:
            raise RecordProblem("duplicate", f"annotation id {annotation_id!r} appears more than once in the file")
        seen.add(annotation_id)
        image_id = record_field(annotation, "image_id")
        info = _lookup(image_info, image_id)
        if info is None:
            raise RecordProblem("unknown_image", f"image_id {image_id!r} is not one of the file's images")
        for key in ("file_name", "width", "height"):
            if key not in info:
                raise RecordProblem("missing_field", f"its image {image_id!r} has no field {key!r}")
        width, height = number(info["width"], "width"), number(info["height"], "height")
        category = _lookup(categories, record_field(annotation, "category_id"))
        if category is None:
            raise RecordProblem("unknown_category", f"category_id {annotation['category_id']!r} is not one of the file's categories")

        # The format's own rules: left out, and counted.
        if category.get("id") != person:
            self.checker.filtered("not_person", path)
            return None
        iscrowd = number(annotation.get("iscrowd", 0), "iscrowd")
        if iscrowd not in (0.0, 1.0):
            raise RecordProblem("wrong_type", f"field 'iscrowd' must be 0 or 1, got {iscrowd:g}")
        if iscrowd:
            self.checker.filtered("iscrowd", path)
            return None
        if number(record_field(annotation, "num_keypoints"), "num_keypoints") < self.min_keypoints:
            self.checker.filtered("few_keypoints", path)
            return None

        raw = record_field(annotation, "keypoints")
        if not isinstance(raw, list) or len(raw) != 3 * NUM_JOINTS:
            got = len(raw) if isinstance(raw, list) else type(raw).__name__
            raise RecordProblem("keypoint_count", f"field 'keypoints' must hold {3 * NUM_JOINTS} numbers (17 x [x, y, v]), got {got}")
        # Every entry finite, also those of v = 0 keypoints: they are numbers in the file and
        # would reach the loss.
        keypoints = finite_array(raw, "keypoints").reshape(NUM_JOINTS, 3)
        check_flags(keypoints[:, 2], (0, 1, 2), "keypoints v")
        bbox = finite_array(record_field(annotation, "bbox"), "bbox", (4,))
        x, y, w, h = (float(v) for v in bbox)
        check_box((x, y, x + w, y + h), width, height, "bbox")
        # SimpleBaseline/HRNet clip the box to the image; a sub-pixel box at the border is empty then.
        x1, y1 = max(0.0, x), max(0.0, y)
        x2, y2 = min(width - 1, x1 + max(0.0, w - 1)), min(height - 1, y1 + max(0.0, h - 1))
        if not (x2 > x1 and y2 > y1):
            raise RecordProblem("empty_box", f"field 'bbox' = {[round(v, 2) for v in bbox]} is empty once clipped to the {width:g}x{height:g} image")
        image = image_file(images, info["file_name"], "file_name")
        center, scale = self._center_scale(x1, y1, x2 - x1, y2 - y1)
        return PoseRecord(
            image=str(image),
            center=center,
            scale=scale,
            keypoints=keypoints[:, :2].astype(np.float32),
            visible=keypoints[:, 2] > 0,
            head_box=None,
            image_id=image_id,
            extra={"annotation_id": annotation_id, "image_id": image_id, "bbox": [float(v) for v in bbox], "area": annotation.get("area")},
        )

    def _center_scale(self, x: float, y: float, w: float, h: float) -> tuple[tuple[float, float], float]:
        """SimpleBaseline/HRNet ``_box2cs``: pad the box to the crop's aspect ratio, enlarge it."""
        center = (x + w * 0.5, y + h * 0.5)
        if w > self.aspect_ratio * h:
            h = w / self.aspect_ratio
        return center, h / 200.0 * self.scale_factor


def _lookup(table: dict, key: Any) -> dict | None:
    """``table[key]``, None for an absent or unhashable key (a list where an id should be)."""
    try:
        return table.get(key)
    except TypeError:
        return None


def _where(index: int, annotation: Any, image_info: dict) -> str:
    """``annotation 13 (image '000002.jpg')``, or as much of it as the annotation allows."""
    if not isinstance(annotation, dict):
        return f"annotations[{index}]"
    where = f"annotation {annotation['id']!r}" if "id" in annotation else f"annotations[{index}]"
    info = _lookup(image_info, annotation.get("image_id"))
    if info is not None and isinstance(info.get("file_name"), str):
        return f"{where} (image {info['file_name']!r})"
    return where + (f" (image_id {annotation['image_id']!r})" if "image_id" in annotation else "")
