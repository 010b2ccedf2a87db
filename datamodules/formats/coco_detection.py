"""COCO object detection and instance segmentation (Lin et al., ECCV 2014): boxes, crowd flags,
instance masks and, for files with keypoints, the keypoints of every object.

Files (the 2017 layout, one JSON per split): ``annotations/instances_{train,val}2017.json``
(COCO JSON: ``images``, ``annotations``, ``categories``; or ``person_keypoints_*.json`` with
``keypoints: true``), the images under ``train2017/`` and ``val2017/``; an optional test split
with its own file and folder (``test`` is the val split otherwise). A split whose annotation file
is ``None`` is not read (the reader then has only the other splits).

Conventions (``datamodules.detection``):

* boxes: COCO's ``bbox`` ``[x, y, w, h]`` is already in continuous pixel coordinates (the image
  spans ``[0, W] x [0, H]``); the record's box is ``[x, y, x + w, y + h]``, clipped to the image
  (after the check below), as torchvision's detection reference does;
* labels: the categories sorted by id are the labels ``1 .. C`` (COCO's 80 ids 1..90 have gaps);
  ``category_ids[label - 1]`` is the file's id, used to write and evaluate COCO results;
* ``iscrowd`` is kept as the record's flag: training drops crowd regions, evaluation keeps them as
  ignore regions (pycocotools' ``COCOeval`` on the official file, or on the ground truth built from
  the targets; the VOC protocol ignores them as difficult objects). The crowd annotations of the
  images read are counted in the report, ``filtered["iscrowd"]`` and per split under
  ``filtered_by_split`` (0 for a split without any), with that rule under ``filtered_rules``;
* masks: each object's ``segmentation`` as it is in the file, polygons (one or several parts) or
  RLE (compressed or not); ``load_masks`` decodes them with ``pycocotools.mask`` at the image's
  size, as ``COCO.annToMask``. A file without any segmentation (a box-only COCO file, or one that
  ``python -m datamodules convert`` wrote from VOC or YOLO) has no masks; ``masks: false`` ignores
  them;
* keypoints (``keypoints: true`` and a category that lists ``keypoints``): ``(K, J, 3)``
  ``x, y, v`` as in the file (COCO's 0-based pixel coordinates, kept as torchvision's reference
  keeps them; detectron2 adds 0.5), zeros for objects of the other categories;
  ``keypoint_names`` and ``skeleton`` come from that category, the skeleton converted from COCO's
  1-based to 0-based indices, and ``flip_pairs`` (swapped by a horizontal flip) pair each
  ``left_*`` keypoint with its ``right_*`` one, as detectron2 derives its flip map from the names;
* ``areas``: COCO's ``area`` (the mask's area, which COCO's small/medium/large ranges use), the
  box area where a file has none;
* ``difficult`` and ``truncated``: not COCO fields; ``convert`` writes them for objects that come
  from VOC, and they are read back (pycocotools ignores them).

Images without annotations are kept: they are negatives. With ``skip_empty``, train images without
an object that is not a crowd are left out (counted as filtered, ``no_annotation``), as
detectron2's ``filter_empty_annotations``; val and test keep every image.

Checks, per image (a failure is a bad record, the whole image with its objects: training on an
image with one object dropped would teach that the object is background): the image's ``id``
appears once (else every image of that id is a bad record, ``duplicate_image_id``, left out with
the id's annotations: they cannot be told apart), it has ``file_name``, ``width`` and ``height``
(``missing_field``) of positive integers (``wrong_type``), its file is a relative path inside the
image folder (``path_outside_root``, also for an absolute path) and there (``image_missing``);
each of its annotations has a unique ``id`` (``duplicate``), a ``category_id`` of the file's
categories (``unknown_category``), ``iscrowd`` 0 or 1 (``wrong_type``), a ``bbox`` of four finite
numbers (``wrong_type``, ``non_finite``) with positive width and height (``empty_box``) inside the
image up to a pixel of rounding (``box_outside_image``), a finite ``area``; with masks, a ``segmentation``
(``missing_field``) checked by ``coco_json.coco_segmentation`` (``polygon_points`` for a polygon of
fewer than 3 points, ``size_mismatch`` for an RLE of another size); with keypoints, ``3 * J``
numbers (``keypoint_count``), finite, flags in {0, 1, 2} (``visibility_flag``). An annotation
whose ``image_id`` is not one of the file's images is a bad record of its own
(``unknown_image``). A file that is not COCO JSON, whose categories are not a list of distinct
integer ids with names, or whose categories differ from the first split's, raises
``AnnotationFormatError``. An image that cannot be decoded raises ``ImageReadError`` when loaded;
one of another size than its annotation says raises ``BadRecordError`` (``size_mismatch``) when
its masks are decoded.

Records: ``image`` the file path, ``image_id`` the COCO image id (an ``int``), ``size``
``(height, width)`` from the file; ``extra`` ``file_name``, ``annotation_file`` and
``annotation_ids``, and ``truncated`` where the file has that field.

``annotation_file(split)`` gives the split's JSON for the official evaluation, unless records of
it were skipped (``on_bad_record: skip``): the file then holds images that are not evaluated, and
``None`` makes the evaluation build its ground truth from the records read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_flags, check_required, finite_array
from datamodules.detection import DetectionRecord
from datamodules.formats.coco_json import (
    coco_annotations_by_image,
    coco_content,
    coco_images,
    coco_required_paths,
    coco_segmentation,
    decode_coco_segmentation,
)
from datamodules.formats.files import resolve
from datamodules.formats.sources import DetectionFileSource
from datamodules.formats.validators import clip_box, image_file, known, number, positive_int, problem_at, record_field

__all__ = ["COCODetection"]

# What becomes of the crowd annotations the report counts (``filtered_rules["iscrowd"]``).
CROWD_RULE = ("crowd regions (iscrowd 1): kept in the records; left out of training samples; evaluation keeps them as "
              "ignore regions (COCO protocol: pycocotools' COCOeval, on the official annotation file or on the ground "
              "truth built from the targets; VOC protocol: as difficult objects)")


class COCODetection(DetectionFileSource):
    """COCO instances (boxes, crowds, masks, optionally keypoints) for detection.

    Args:
        root: COCO folder; the other paths are relative to it unless absolute.
        train_annotations: instance annotations of the train split; ``None``: no train split.
        val_annotations: instance annotations of the val split (also ``test`` when no test file is
            given); ``None``: no val split.
        test_annotations: annotations of a test split (with ``test_images``); ``None``: ``test`` is
            the val split.
        train_images: image folder of the train split.
        val_images: image folder of the val split.
        test_images: image folder of the test split.
        masks: keep the objects' segmentations (``has_masks`` when the files have any).
        keypoints: read the keypoints of the category that lists them, when a file has one.
        skip_empty: leave out train images without a non-crowd object (counted as filtered).
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    flip_pairs: tuple[tuple[int, int], ...] = ()

    def __init__(
        self,
        root: str = "data/coco",
        train_annotations: str | None = "annotations/instances_train2017.json",
        val_annotations: str | None = "annotations/instances_val2017.json",
        test_annotations: str | None = None,
        train_images: str = "train2017",
        val_images: str = "val2017",
        test_images: str | None = None,
        masks: bool = True,
        keypoints: bool = False,
        skip_empty: bool = False,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if (test_annotations is None) != (test_images is None):
            raise ConfigError("COCODetection needs test_annotations and test_images together, "
                              f"got test_annotations={test_annotations!r}, test_images={test_images!r}")
        given = {"train": (train_annotations, train_images), "val": (val_annotations, val_images), "test": (test_annotations, test_images)}
        given = {split: pair for split, pair in given.items() if pair[0] is not None}
        if not given:
            raise ConfigError("COCODetection needs at least one annotation file (train_annotations, val_annotations or test_annotations)")
        self.checker = RecordChecker("COCODetection", on_bad_record)
        self.root = Path(root)
        self.annotation_files = {split: resolve(self.root, files) for split, (files, _) in given.items()}
        self.image_dirs = {split: resolve(self.root, images) for split, (_, images) in given.items()}
        check_required(self.required_paths(), root=self.root, owner=self)
        self.skip_empty = skip_empty

        # One read per file: val and test are often the same file.
        contents: dict[Path, dict[str, Any]] = {}
        for path in self.annotation_files.values():
            if path not in contents:
                contents[path] = coco_content(path, "detection")
        first = next(iter(self.annotation_files.values()))
        categories = _categories(first, contents[first])
        names = {cat_id: c["name"] for cat_id, c in categories.items()}
        for path, content in contents.items():
            if {cat_id: c["name"] for cat_id, c in _categories(path, content).items()} != names:
                raise AnnotationFormatError(path, f"its categories differ from those of {first} (the labels would not match)")
        self._category_ids = tuple(sorted(categories))
        self.class_names = tuple(categories[i]["name"] for i in self._category_ids)
        self._labels = {cat_id: label for label, cat_id in enumerate(self._category_ids, start=1)}

        self.keypoint_category_id: int | None = None
        if keypoints:
            self._keypoint_category(first, categories)
        self.has_masks = masks and any(
            bool(a.get("segmentation")) for content in contents.values() for a in content["annotations"] if isinstance(a, dict))

        self.splits: dict[str, list[DetectionRecord]] = {}
        parsed: dict[tuple[Path, Path, bool], list[DetectionRecord]] = {}
        for split, path in self.annotation_files.items():
            images = self.image_dirs[split]
            drop_empty = skip_empty and split == "train"
            key = (path, images, drop_empty)
            if key not in parsed:  # one file for two splits: read (and counted) once
                parsed[key] = self._read(path, contents[path], images, drop_empty)
                self.checker.kept(path, len(parsed[key]), split)
            self.splits[split] = parsed[key]
        if "test" not in self.splits and "val" in self.splits:
            self.splits["test"] = self.splits["val"]
        for (path, _, _), records in parsed.items():
            self.checker.filtered("iscrowd", path, count=sum(int(r.iscrowd.sum()) for r in records), rule=CROWD_RULE,
                                  splits=[split for split, read in self.splits.items() if read is records])

    @property
    def category_ids(self) -> tuple[int, ...]:
        """The file's category id of each label (``category_ids[label - 1]``), sorted."""
        return self._category_ids

    def required_paths(self) -> list[RequiredPath]:
        return coco_required_paths(self.root, self.annotation_files, self.image_dirs)

    def annotation_file(self, split: str) -> str | None:
        """The split's COCO file, for the official evaluation on it; ``None`` when bad records of it
        were skipped (the file holds images that were not read)."""
        if split not in self.splits:
            raise ConfigError(f"COCODetection has splits {sorted(self.splits)}, not {split!r}")
        path = str(self.annotation_files.get(split, self.annotation_files.get("val")))  # test without its own file: val
        return None if self.checker.per_file.get(path, {}).get("skipped", 0) else path

    def load_masks(self, record: DetectionRecord, height: int, width: int) -> Tensor | None:
        """``(K, H, W)`` uint8 masks decoded from the record's polygons and RLEs (``None`` without
        masks); an image of another size than its annotation raises ``BadRecordError``."""
        if record.masks is None:
            return None
        self.check_mask_size(record, height, width, f"{record.extra['annotation_file']} (image {record.image_id!r})")
        masks = np.zeros((len(record.masks), height, width), dtype=np.uint8)
        for k, segmentation in enumerate(record.masks):
            masks[k] = decode_coco_segmentation(segmentation, height, width)
        return torch.from_numpy(masks)

    # ------------------------------------------------------------------ parsing
    def _keypoint_category(self, path: Path, categories: dict[int, dict[str, Any]]) -> None:
        """Take ``keypoint_names`` and the 0-based ``skeleton`` from the category that lists
        keypoints (COCO's ``person``)."""
        listing = [c for c in categories.values() if c.get("keypoints")]
        if not listing:
            return  # a file without keypoints: records carry none
        if len(listing) > 1:
            names = ", ".join(repr(c["name"]) for c in listing)
            raise AnnotationFormatError(path, f"several categories list keypoints ({names}); COCODetection reads one")
        category = listing[0]
        names = category["keypoints"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise AnnotationFormatError(path, f"category {category['name']!r}: 'keypoints' must be a list of names")
        skeleton = category.get("skeleton") or []
        pairs = []
        for pair in skeleton:
            if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(i, int) and 1 <= i <= len(names) for i in pair)):
                raise AnnotationFormatError(path, f"category {category['name']!r}: skeleton entry {pair!r} is not two 1-based "
                                            f"keypoint indices of 1..{len(names)}")
            pairs.append((pair[0] - 1, pair[1] - 1))  # COCO numbers keypoints from 1
        self.keypoint_category_id = category["id"]
        self.keypoint_names = tuple(names)
        self.skeleton = tuple(pairs)
        index = {name: i for i, name in enumerate(names)}
        self.flip_pairs = tuple((i, index["right_" + name[5:]]) for i, name in enumerate(names)
                                if name.startswith("left_") and "right_" + name[5:] in index)

    def _read(self, path: Path, content: dict[str, Any], images: Path, drop_empty: bool) -> list[DetectionRecord]:
        image_ids, by_image = coco_annotations_by_image(path, content, self.checker)  # duplicated image ids are left out there
        seen_annotations: set[Any] = set()
        records = []
        for info, where, objects in coco_images(content, image_ids, by_image):
            with self.checker.record(path, where):
                record = self._record(path, info, images, objects, seen_annotations)
                if drop_empty and not (~record.iscrowd).any():
                    self.checker.filtered("no_annotation", path, splits=["train"])
                    continue
                records.append(record)
        return records

    def _record(self, path: Path, info: Any, images: Path, annotations: list[tuple[int, Any]], seen_annotations: set) -> DetectionRecord:
        image_id = record_field(info, "id")
        if not isinstance(image_id, (int, str)):
            raise RecordProblem("wrong_type", f"field 'id' must be an integer, got {image_id!r}")
        width, height = (positive_int(record_field(info, key), key) for key in ("width", "height"))
        file = image_file(images, record_field(info, "file_name"), "file_name")
        joints = len(self.keypoint_names) if self.keypoint_category_id is not None else 0
        boxes, labels, crowd, difficult, truncated, areas, masks, keypoints, ids = [], [], [], [], [], [], [], [], []
        has_truncated = False
        for index, annotation in annotations:
            where = f"annotation {annotation['id']!r}" if "id" in annotation else f"annotations[{index}]"
            with problem_at(where):
                annotation_id = record_field(annotation, "id")
                if not isinstance(annotation_id, (int, str)):
                    raise RecordProblem("wrong_type", f"field 'id' must be an integer, got {annotation_id!r}")
                if annotation_id in seen_annotations:
                    raise RecordProblem("duplicate", f"annotation id {annotation_id!r} appears more than once in the file")
                seen_annotations.add(annotation_id)
                category = record_field(annotation, "category_id")
                if not known(self._labels, category):
                    raise RecordProblem("unknown_category", f"category_id {category!r} is not one of the file's categories")
                x, y, w, h = (float(v) for v in finite_array(record_field(annotation, "bbox"), "bbox", (4,)))
                check_box((x, y, x + w, y + h), width, height, "bbox")
                boxes.append(clip_box((x, y, x + w, y + h), width, height, "bbox"))
                labels.append(self._labels[category])
                crowd.append(_flag(annotation, "iscrowd"))
                difficult.append(_flag(annotation, "difficult"))
                has_truncated = has_truncated or "truncated" in annotation
                truncated.append(_flag(annotation, "truncated"))
                areas.append(number(annotation["area"], "area") if "area" in annotation else w * h)
                ids.append(annotation_id)
                if self.has_masks:
                    segmentation = annotation.get("segmentation")
                    if not segmentation:
                        raise RecordProblem("missing_field", "no 'segmentation', while the file's other objects have masks "
                                            "(masks: false reads the boxes only)")
                    masks.append(coco_segmentation(segmentation, height, width))
                if joints:
                    keypoints.append(self._keypoints(annotation, category, joints))
        extra: dict[str, Any] = {"file_name": info["file_name"], "annotation_file": str(path), "annotation_ids": ids}
        if has_truncated:
            extra["truncated"] = np.asarray(truncated, dtype=bool)
        return DetectionRecord(
            image=str(file),
            image_id=image_id,
            size=(height, width),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            iscrowd=np.asarray(crowd, dtype=bool),
            difficult=np.asarray(difficult, dtype=bool),
            masks=masks if self.has_masks else None,
            keypoints=np.asarray(keypoints, dtype=np.float64).reshape(-1, joints, 3) if joints else None,
            areas=np.asarray(areas, dtype=np.float64),
            extra=extra,
        )

    def _keypoints(self, annotation: dict[str, Any], category: Any, joints: int) -> np.ndarray:
        """``(J, 3)`` keypoints of an object of the keypoint category; zeros (unlabelled) for the
        objects of other categories."""
        if category != self.keypoint_category_id:
            return np.zeros((joints, 3))
        raw = record_field(annotation, "keypoints")
        if not isinstance(raw, list) or len(raw) != 3 * joints:
            got = len(raw) if isinstance(raw, list) else type(raw).__name__
            raise RecordProblem("keypoint_count", f"field 'keypoints' must hold {3 * joints} numbers ({joints} x [x, y, v]), got {got}")
        # Every entry finite, also those of v = 0 keypoints: a NaN would reach the loss.
        keypoints = finite_array(raw, "keypoints").reshape(joints, 3)
        check_flags(keypoints[:, 2], (0, 1, 2), "keypoints v")
        return keypoints


def _flag(annotation: dict[str, Any], field: str) -> bool:
    """An optional 0/1 field (``iscrowd``, and convert's ``difficult`` and ``truncated``)."""
    value = number(annotation.get(field, 0), field)
    if value not in (0.0, 1.0):
        raise RecordProblem("wrong_type", f"field {field!r} must be 0 or 1, got {value:g}")
    return bool(value)


def _categories(path: Path, content: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """The file's categories by id: a non-empty list of objects with distinct integer ids and
    distinct names."""
    categories = content["categories"]
    valid = all(isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("id"), int) and not isinstance(c["id"], bool)
                for c in categories)
    if not categories or not valid:
        raise AnnotationFormatError(path, "'categories' must be a non-empty list of objects with an integer 'id' and a 'name'")
    by_id = {c["id"]: c for c in categories}
    names = [c["name"] for c in categories]
    if len(by_id) != len(categories) or len(set(names)) != len(names):
        raise AnnotationFormatError(path, f"a category id or name appears twice in 'categories': {sorted(by_id)}, {names}")
    return by_id
