"""YOLO text labels in the Ultralytics layout: one ``.txt`` per image with one object per line.

Files: the images of a split under ``images/<split>/`` (sub-folders included) and their labels at
the same relative path under ``labels/<split>/`` with the suffix ``.txt`` (Ultralytics' rule: the
last ``images`` folder of the image's path becomes ``labels``; an image folder without an
``images`` component has its labels beside the images). The class names come from an Ultralytics
``data.yaml`` (``names:`` a list, or a dict ``{0: name, ...}``; ``nc`` when given must match), or
from ``class_names``. Only ``names`` (and ``nc``, ``kpt_shape``) is read from the yaml: the split
folders are this reader's arguments.

A label line is ``class cx cy w h``: the class index from 0, the box centre and size normalised
by the image's width and height (the image spans ``[0, 1] x [0, 1]``). A line of a class and 3 or
more ``x y`` pairs is a segment (Ultralytics' segmentation labels), a polygon normalised the same
way: its box is the polygon's bounding box (Ultralytics' ``segments2boxes``). An image without a
label file, or with an empty one, is an image without objects (a negative). A label file without
an image is counted as filtered (``label_without_image``). Pose labels (``kpt_shape`` in the yaml)
are not read: ``AnnotationFormatError``.

Conventions (``datamodules.detection``): boxes XYXY in continuous pixels of the image,
``(cx - w / 2) * W`` etc., clipped to the image after the check below; labels ``class + 1``
(``1 .. C``); the image's size is read from its header (as stored, without EXIF rotation, as
``load_rgb`` decodes it). Masks: when every object of every split is a segment, ``has_masks`` and
``record.masks`` holds each object's polygon in pixels as a COCO polygon list (``[[x1, y1, ...]]``),
decoded by ``load_masks`` with pycocotools; when boxes and segments are mixed, the segments give
boxes only (``data_report()["masks"]`` says so).

Checks, per image (a failure is a bad record, the whole image: an object dropped would be trained
on as background): the image's header reads (``image_missing``); each line has at least 5 fields
(``missing_field``) and 5, or an odd number of 7 or more (``wrong_type``); the class is a whole
number (``wrong_type``) of ``0 .. C - 1`` (``unknown_category``); the values are numbers
(``wrong_type``), finite (``non_finite``), with a positive width and height (``empty_box``), and the
box or polygon lies inside the image up to a pixel of rounding (``box_outside_image``; values
outside ``[0, 1]``); two images with one label file (``a.jpg`` and ``a.png``) are a ``duplicate``.
An image that cannot be decoded raises ``ImageReadError`` when loaded.

Records: ``image`` the file path, ``image_id`` the image's path under the split folder without its
suffix (``000012``, ``sub/000012``), ``size`` ``(height, width)``; ``extra`` the ``label_file``
(``None`` for an image without one).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import Tensor

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_required
from datamodules.detection import DetectionRecord
from datamodules.formats.files import IMAGE_SUFFIXES, resolve
from datamodules.formats.sources import DetectionFileSource
from datamodules.formats.validators import clip_box, image_size, problem_at, text_number

__all__ = ["YOLOText", "yolo_label_dir", "yolo_class_names"]


class YOLOText(DetectionFileSource):
    """Ultralytics YOLO detection (and segment) labels.

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        data_yaml: the Ultralytics dataset yaml with the class ``names`` (read when
            ``class_names`` is not given).
        class_names: the classes in label order (index 0 first); ``None``: the yaml's ``names``.
        train_images: image folder of the train split; ``None``: no train split.
        val_images: image folder of the val split (also ``test`` when no test folder is given);
            ``None``: no val split.
        test_images: image folder of the test split.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    def __init__(
        self,
        root: str = "data/yolo",
        data_yaml: str | None = "data.yaml",
        class_names: Sequence[str] | None = None,
        train_images: str | None = "images/train",
        val_images: str | None = "images/val",
        test_images: str | None = None,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if class_names is None and data_yaml is None:
            raise ConfigError("YOLOText needs class_names or a data_yaml with the class names")
        given = {"train": train_images, "val": val_images, "test": test_images}
        self.image_dirs = {split: resolve(Path(root), folder) for split, folder in given.items() if folder is not None}
        if not self.image_dirs:
            raise ConfigError("YOLOText needs at least one image folder (train_images, val_images or test_images)")
        self.checker = RecordChecker("YOLOText", on_bad_record)
        self.root = Path(root)
        self.data_yaml = None if class_names is not None else resolve(self.root, data_yaml)
        self.label_dirs = {split: yolo_label_dir(folder) for split, folder in self.image_dirs.items()}
        check_required(self.required_paths(), root=self.root, owner=self)
        if class_names is None:
            class_names = yolo_class_names(self.data_yaml)
        if not class_names or len(set(class_names)) != len(class_names):
            raise ConfigError(f"YOLOText.class_names must be distinct names, got {list(class_names)}")
        self.class_names = tuple(str(c) for c in class_names)

        self.splits: dict[str, list[DetectionRecord]] = {}
        segments = boxes = 0
        for split, folder in self.image_dirs.items():
            records = self._read(folder, self.label_dirs[split])
            self.checker.kept(folder, len(records), split)
            self.splits[split] = records
            for record in records:
                segments += sum(m is not None for m in record.masks)
                boxes += sum(m is None for m in record.masks)
        # Masks only when every object has its polygon: a box line has no mask to give.
        self.has_masks = segments > 0 and boxes == 0
        self._masks_note = ("every object is a segment: masks kept" if self.has_masks else
                            f"boxes and segments mixed ({boxes} boxes, {segments} segments): segments give boxes only" if segments else
                            "boxes only")
        for records in self.splits.values():
            for record in records:
                if not self.has_masks:
                    record.masks = None
        if "test" not in self.splits and "val" in self.splits:
            self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("YOLO dataset root", self.root, "root", "folder")]
        if self.data_yaml is not None:
            paths.append(RequiredPath("YOLO data.yaml", self.data_yaml, "data_yaml"))
        for split, folder in self.image_dirs.items():
            paths.append(RequiredPath(f"YOLO {split} image folder", folder, f"{split}_images", "folder"))
            if self.label_dirs[split] != folder:
                paths.append(RequiredPath(f"YOLO {split} label folder", self.label_dirs[split], f"{split}_images", "folder"))
        return paths

    def load_masks(self, record: DetectionRecord, height: int, width: int) -> Tensor | None:
        """``(K, H, W)`` uint8 masks of the record's segments (``None`` for box labels)."""
        return self.polygon_masks(record, height, width, record.extra["label_file"])

    def data_report(self) -> dict[str, Any]:
        return {**self.checker.report(), "masks": self._masks_note}

    # ------------------------------------------------------------------ parsing
    def _read(self, images: Path, labels: Path) -> list[DetectionRecord]:
        by_key: dict[str, list[Path]] = {}
        for path in sorted(p for p in images.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            by_key.setdefault(path.relative_to(images).with_suffix("").as_posix(), []).append(path)
        if labels != images:
            for label in sorted(labels.rglob("*.txt")):
                if label.relative_to(labels).with_suffix("").as_posix() not in by_key:
                    self.checker.filtered("label_without_image", label)
        records = []
        for key, found in by_key.items():
            label = labels / f"{key}.txt"
            with self.checker.record(label if label.is_file() else found[0], f"image {key!r}"):
                if len(found) > 1:
                    raise RecordProblem("duplicate", f"several images share the label file {label.name}: {', '.join(p.name for p in found)}")
                records.append(self._record(found[0], key, label if label.is_file() else None))
        return records

    def _record(self, image: Path, key: str, label: Path | None) -> DetectionRecord:
        height, width = image_size(image)
        boxes, labels, polygons = [], [], []
        lines = _label_lines(label) if label is not None else []
        for number, fields in lines:
            with problem_at(f"line {number}"):
                box, polygon, cls = self._object(fields, width, height)
                boxes.append(box)
                labels.append(cls + 1)
                polygons.append(polygon)
        return DetectionRecord(
            image=str(image),
            image_id=key,
            size=(height, width),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            masks=polygons,  # None entries for box lines; dropped unless every object is a segment
            extra={"label_file": None if label is None else str(label)},
        )

    def _object(self, fields: list[str], width: int, height: int) -> tuple[tuple[float, ...], list[list[float]] | None, int]:
        """``(box, polygon or None, class index)`` of one label line."""
        if len(fields) < 5:
            raise RecordProblem("missing_field", f"expected 5 fields (class cx cy w h), got {len(fields)}")
        if len(fields) > 5 and (len(fields) < 7 or len(fields) % 2 == 0):
            raise RecordProblem("wrong_type", f"expected 5 fields (class cx cy w h) or a class and 3 or more x y pairs "
                                f"(a segment), got {len(fields)}")
        value = text_number(fields[0], "class")
        if value != int(value):
            raise RecordProblem("wrong_type", f"field 'class' must be a whole number, got {fields[0]!r}")
        cls = int(value)
        if not 0 <= cls < len(self.class_names):
            raise RecordProblem("unknown_category", f"class {cls} is not one of 0..{len(self.class_names) - 1} ({len(self.class_names)} names)")
        values = [text_number(text, "x" if k % 2 == 0 else "y") for k, text in enumerate(fields[1:])]
        if len(fields) == 5:
            cx, cy, w, h = values
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            check_box(box, width, height, "cx cy w h")
            return clip_box(box, width, height, "cx cy w h"), None, cls
        points = np.asarray(values).reshape(-1, 2) * (width, height)
        box = (*points.min(0).tolist(), *points.max(0).tolist())
        check_box(box, width, height, "polygon")
        points = points.clip(0, (width, height))  # the slack of check_box, as the boxes are clipped
        return clip_box(box, width, height, "polygon"), [points.reshape(-1).tolist()], cls


def yolo_label_dir(images: Path) -> Path:
    """The label folder of an image folder by Ultralytics' rule (``img2label_paths``): the last
    ``images`` component becomes ``labels``; without one, the labels are beside the images."""
    parts = list(images.parts)
    for k in range(len(parts) - 1, -1, -1):
        if parts[k] == "images":
            parts[k] = "labels"
            return Path(*parts)
    return images


def yolo_class_names(path: Path) -> list[str]:
    """The class names of an Ultralytics dataset yaml: ``names`` as a list, or a dict whose keys
    are the class indices ``0 .. nc - 1``."""
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise AnnotationFormatError(path, f"not a readable YAML file ({' '.join(str(error).split())})") from None
    if not isinstance(content, dict) or "names" not in content:
        raise AnnotationFormatError(path, "no 'names' (the class names) in the dataset yaml")
    if content.get("kpt_shape") is not None:
        raise AnnotationFormatError(path, "a pose dataset (kpt_shape): YOLOText reads detection and segment labels")
    names = content["names"]
    if isinstance(names, dict):
        if sorted(names) != list(range(len(names))):
            raise AnnotationFormatError(path, f"'names' keys must be the class indices 0..{len(names) - 1}, got {sorted(names, key=str)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not names or not all(isinstance(n, (str, int)) for n in names):
        raise AnnotationFormatError(path, "'names' must be a non-empty list of class names or a dict {index: name}")
    if "nc" in content and content["nc"] != len(names):
        raise AnnotationFormatError(path, f"'nc' is {content['nc']!r} but 'names' holds {len(names)} names")
    return [str(n) for n in names]


def _label_lines(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank lines of a label file as ``(line number, fields)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecordProblem("wrong_type", "not a text label file") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
