"""Box annotations in keras-retinanet's CSV format: several objects per image.

Files: one CSV per split with one object per line, ``path,x1,y1,x2,y2,label``; an image with
several objects is on several lines, and a line ``path,,,,,`` (empty box and label) lists an image
without objects (a negative). ``path`` is relative to ``root / image_dir``; ``x1 y1 x2 y2`` is
the box in absolute pixels, XYXY, continuous coordinates (the image spans ``[0, W] x [0, H]``,
torchvision's convention; ``csv_boxes.CSVBoxes`` reads the same lines for one object per image);
``label`` is a class name. A first line whose coordinates are not numbers is a header and is
skipped.

Classes: keras-retinanet's class-map CSV (``classes_file``, lines ``name,id``) gives the names in
the order of their ids; else ``class_names`` (their order is the label order); else the sorted
labels of the train file. Labels are ``1 .. C`` in that order (``category_ids`` the default
``1 .. C``; the class map's ids only fix the order).

Checks, per image (a failure is a bad record, the whole image: an object dropped would be trained
on as background): each line has six fields (``missing_field`` for fewer, ``wrong_type`` for
more); the coordinates are numbers (``wrong_type``) and finite (``non_finite``); the box has a
positive size (``empty_box``) and lies inside the image, one pixel of slack
(``box_outside_image``; then clipped to it); the label is a known class (``unknown_category``);
the path stays inside the image folder (``path_outside_root``) and the image is there and its
header reads (``image_missing``). A class map that is not ``name,id`` lines with distinct names and
integer ids raises ``AnnotationFormatError``. An image that cannot be decoded raises
``ImageReadError`` when loaded.

Records: ``image`` the file path, ``image_id`` the CSV's path of the image, ``size``
``(height, width)`` from the image's header; ``extra`` the ``file`` and the ``lines`` the image is
on.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_required
from datamodules.detection import DetectionRecord
from datamodules.formats.files import read_csv_rows, resolve
from datamodules.formats.sources import DetectionFileSource
from datamodules.formats.validators import clip_box, image_file, image_size, problem_at, text_number

__all__ = ["CSVDetection"]

FIELDS = ("path", "x1", "y1", "x2", "y2", "label")


class CSVDetection(DetectionFileSource):
    """Images with any number of boxes, from keras-retinanet CSV files.

    Args:
        root: dataset folder.
        train_file: the train split's CSV, relative to ``root``.
        val_file: the val split's CSV (also ``test`` when no test file is given); ``None``: no
            val split.
        test_file: the test split's CSV.
        image_dir: the folder the CSV's image paths are relative to, under ``root``.
        classes_file: keras-retinanet's class map (``name,id`` lines); ``None``: ``class_names``.
        class_names: the classes in label order; ``None``: the sorted labels of ``train_file``.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    def __init__(
        self,
        root: str = "data/csv",
        train_file: str = "train.csv",
        val_file: str | None = "val.csv",
        test_file: str | None = None,
        image_dir: str = ".",
        classes_file: str | None = None,
        class_names: Sequence[str] | None = None,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if classes_file is not None and class_names is not None:
            raise ConfigError("CSVDetection takes classes_file or class_names, not both")
        self.checker = RecordChecker("CSVDetection", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        given = {"train": train_file, "val": val_file, "test": test_file}
        self.files = {split: resolve(self.root, name) for split, name in given.items() if name is not None}
        self.classes_file = None if classes_file is None else resolve(self.root, classes_file)
        check_required(self.required_paths(), root=self.root, owner=self)
        rows = {split: read_csv_rows(path) for split, path in self.files.items()}
        if self.classes_file is not None:
            class_names = _class_map(self.classes_file)
        elif class_names is None:
            class_names = sorted({row[5].strip() for _, row in rows["train"] if len(row) == 6 and row[5].strip()})
            if not class_names:
                raise AnnotationFormatError(self.files["train"], "no labels to take the class names from (give class_names or classes_file)")
        if len(set(class_names)) != len(class_names):
            raise ConfigError(f"CSVDetection.class_names holds a name twice: {list(class_names)}")
        self.class_names = tuple(str(c) for c in class_names)
        self._labels = {name: label for label, name in enumerate(self.class_names, start=1)}
        self.splits: dict[str, list[DetectionRecord]] = {}
        for split, lines in rows.items():
            self.splits[split] = self._parse(self.files[split], lines)
            self.checker.kept(self.files[split], len(self.splits[split]), split)
        if "test" not in self.splits and "val" in self.splits:
            self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("CSV dataset root", self.root, "root", "folder"),
                 RequiredPath("CSV image folder", self.image_dir, "image_dir", "folder")]
        if self.classes_file is not None:
            paths.append(RequiredPath("CSV class map", self.classes_file, "classes_file"))
        paths += [RequiredPath(f"CSV {split} file", path, f"{split}_file") for split, path in self.files.items()]
        return paths

    def _parse(self, path: Path, rows: list[tuple[int, list[str]]]) -> list[DetectionRecord]:
        by_image: dict[str, list[tuple[int, list[str]]]] = {}
        for line, row in rows:
            by_image.setdefault(row[0].strip(), []).append((line, row))
        records = []
        for name, lines in by_image.items():
            with self.checker.record(path, f"image {name!r}" if name else "an image without a path"):
                records.append(self._record(path, name, lines))
        return records

    def _record(self, path: Path, name: str, lines: list[tuple[int, list[str]]]) -> DetectionRecord:
        with problem_at(f"line {lines[0][0]}"):
            image = image_file(self.image_dir, name, "path")
            height, width = image_size(image)
        boxes, labels = [], []
        for line, row in lines:
            with problem_at(f"line {line}"):
                if len(row) != len(FIELDS):
                    kind = "missing_field" if len(row) < len(FIELDS) else "wrong_type"
                    raise RecordProblem(kind, f"expected {len(FIELDS)} fields ({','.join(FIELDS)}), got {len(row)}")
                if not any(v.strip() for v in row[1:]):
                    continue  # keras-retinanet's line of an image without objects
                box = tuple(text_number(row[i].strip(), FIELDS[i]) for i in range(1, 5))
                check_box(box, width, height, "x1,y1,x2,y2")
                label = row[5].strip()
                if label not in self._labels:
                    raise RecordProblem("unknown_category", f"label {label!r} is not one of the classes ({', '.join(self.class_names)})")
                boxes.append(clip_box(box, width, height, "x1,y1,x2,y2"))
                labels.append(self._labels[label])
        return DetectionRecord(
            image=str(image),
            image_id=name,
            size=(height, width),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            extra={"file": str(path), "lines": [line for line, _ in lines]},
        )


def _class_map(path: Path) -> list[str]:
    """The class names of keras-retinanet's ``name,id`` class map, in the order of their ids."""
    ids: dict[str, int] = {}
    for line, row in read_csv_rows(path):
        if len(row) != 2:
            raise AnnotationFormatError(path, f"line {line}: expected 'name,id', got {len(row)} fields")
        name, text = row[0].strip(), row[1].strip()
        try:
            class_id = int(text)
        except ValueError:
            raise AnnotationFormatError(path, f"line {line}: the id of {name!r} must be an integer, got {text!r}") from None
        if not name or name in ids or class_id in ids.values():
            raise AnnotationFormatError(path, f"line {line}: class names and ids must be distinct and not empty, got {name!r}, {class_id}")
        ids[name] = class_id
    if not ids:
        raise AnnotationFormatError(path, "no class in the class map")
    return sorted(ids, key=ids.get)
