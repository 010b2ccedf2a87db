"""Box annotations in CSV, one object per image: the classification + localisation reader.

One file per split, one line per object: ``path,x1,y1,x2,y2,label`` (the layout of
keras-retinanet's CSV format and of most labelling tools' CSV export). ``path`` is the image,
relative to ``root / image_dir``; ``x1 y1 x2 y2`` is the box in absolute pixels, XYXY, continuous
coordinates (the image spans ``[0, W] x [0, H]``, torchvision's convention); ``label`` is the class
name. A first line whose coordinates are not numbers is a header and is skipped.

Class names are ``class_names`` when given (their order is the label order), else the sorted
labels of the training file.

Checks, per image (a failure is a bad record; ``on_bad_record`` decides, ``core.records``): the
line has six fields (``missing_field``); the coordinates are numbers (``wrong_type``) and finite
(``non_finite``); the box has a positive size (``empty_box``) and lies inside the image, one pixel
of slack (``box_outside_image``); the label is a known class (``unknown_category``); the path stays
inside the image folder (``path_outside_root``) and the image is there (``image_missing``); the
image has exactly one object: a line with empty box fields (keras-retinanet's "image without
objects") is ``no_object``, an image listed on several lines ``several_objects`` (this task has one
object per image; the detection readers take several).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from torch import Tensor

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_required
from datamodules.formats.files import load_rgb, read_csv_rows, resolve
from datamodules.formats.validators import image_file, image_size, text_number
from datamodules.localization import LocalizationRecord, LocalizationSource

__all__ = ["CSVBoxes"]

FIELDS = ("path", "x1", "y1", "x2", "y2", "label")


class CSVBoxes(LocalizationSource):
    """Single-object images with their box and class, from one CSV file per split.

    Args:
        root: dataset folder.
        train_file: the training split's CSV, relative to ``root``.
        val_file: the validation split's CSV.
        test_file: the test split's CSV; ``None``: ``test`` is the validation split.
        image_dir: the folder the CSV's image paths are relative to, under ``root``.
        class_names: the classes, in label order; ``None``: the sorted labels of ``train_file``.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).

    Records: ``image_id`` is the CSV's path of the image; ``extra`` holds the ``file`` and ``line``
    the object came from.
    """

    def __init__(
        self,
        root: str = "data/boxes",
        train_file: str = "train.csv",
        val_file: str = "val.csv",
        test_file: str | None = None,
        image_dir: str = ".",
        class_names: Sequence[str] | None = None,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        self.checker = RecordChecker("CSVBoxes", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.files = {"train": resolve(self.root, train_file), "val": resolve(self.root, val_file)}
        if test_file is not None:
            self.files["test"] = resolve(self.root, test_file)
        check_required(self.required_paths(), root=self.root, owner=self)
        lines = {split: read_csv_rows(path) for split, path in self.files.items()}
        if class_names is None:
            class_names = sorted({row[5].strip() for _, row in lines["train"] if len(row) == 6 and row[5].strip()})
            if not class_names:
                raise AnnotationFormatError(self.files["train"], "no labels to take the class names from (give class_names)")
        if len(set(class_names)) != len(class_names):
            raise ConfigError(f"CSVBoxes.class_names holds a name twice: {list(class_names)}")
        self.class_names = tuple(str(c) for c in class_names)
        self._labels = {name: i for i, name in enumerate(self.class_names)}
        self.splits: dict[str, list[LocalizationRecord]] = {}
        for split, rows in lines.items():
            self.splits[split] = self._parse(self.files[split], rows)
            self.checker.kept(self.files[split], len(self.splits[split]), split)
        if "test" not in self.splits:
            self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("CSV dataset root", self.root, "root", "folder"),
                 RequiredPath("CSV image folder", self.image_dir, "image_dir", "folder")]
        paths += [RequiredPath(f"CSV {split} file", path, f"{split}_file") for split, path in self.files.items()]
        return paths

    def _parse(self, path: Path, rows: list[tuple[int, list[str]]]) -> list[LocalizationRecord]:
        by_image: dict[str, list[tuple[int, list[str]]]] = {}
        for line, row in rows:
            by_image.setdefault(row[0].strip(), []).append((line, row))
        records = []
        for name, lines in by_image.items():
            where = f"line {lines[0][0]} ({name or 'no path'})"
            with self.checker.record(path, where):
                if len(lines) > 1:
                    raise RecordProblem("several_objects", f"the image is on lines {', '.join(str(n) for n, _ in lines)}: "
                                        "classification + localisation takes one object per image")
                records.append(self._record(path, name, *lines[0]))
        return records

    def _record(self, path: Path, name: str, line: int, row: list[str]) -> LocalizationRecord:
        if len(row) != len(FIELDS):
            raise RecordProblem("missing_field", f"expected {len(FIELDS)} fields ({','.join(FIELDS)}), got {len(row)}")
        if not any(v.strip() for v in row[1:]):
            raise RecordProblem("no_object", "no box and no label (an image without objects)")
        image = image_file(self.image_dir, name, "path")
        box = tuple(text_number(row[i], FIELDS[i]) for i in range(1, 5))
        height, width = image_size(image)
        check_box(box, width, height, "x1,y1,x2,y2")
        label = row[5].strip()
        if label not in self._labels:
            raise RecordProblem("unknown_category", f"label {label!r} is not one of the classes ({', '.join(self.class_names)})")
        return LocalizationRecord(image=str(image), box=box, label=self._labels[label], image_id=name, extra={"file": str(path), "line": line})

    def records(self, split: str) -> list[LocalizationRecord]:
        if split not in self.splits:
            raise ConfigError(f"CSVBoxes has splits {sorted(self.splits)}, not {split!r}")
        return list(self.splits[split])

    def load_image(self, record: LocalizationRecord) -> Tensor:
        return load_rgb(record.image)

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()

