"""Base classes of the sources whose annotations are files on disk, and what they share:
``ParsedSplits`` (every split parsed up front), ``ImageFileSource`` (pose) with the box-to-centre/
scale rule of the pose readers, ``MaskFileSource`` (segmentation) with the pairing of image and
label files by name, and ``DetectionFileSource`` (detection).

Every reader resolves its paths against its ``root`` (an absolute path is taken as is), lists them
in ``required_paths()`` and checks them first thing in ``__init__``
(``core.records.check_required``), then parses its annotations there, so that a wrong config or a
broken file fails before training starts:

* a missing root, folder or file raises ``DataNotFoundError`` naming it;
* a file that does not parse, or whose layout is not the format's as a whole, raises
  ``AnnotationFormatError`` naming the file (``datamodules.formats.files``);
* a record that fails a check (``datamodules.formats.validators``) is a *bad record*, handled by
  the source's ``on_bad_record`` (``core.records``): ``error`` raises ``BadRecordError`` naming the
  file and the record, ``skip`` drops it and counts it in the source's ``data_report()``;
* a record the format's own rules leave out (a COCO crowd, ...) is counted as ``filtered``;
* a split left without records raises ``BadRecordError`` under either policy.

Images are decoded at training time (``files.load_rgb``). A segmentation label image is decoded
there too: one of another size than its image, or holding a value that is neither a class nor the
ignore index, raises ``BadRecordError`` naming the file (it is found only once the pixels are
read, so it cannot be skipped at parse time).
"""
from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from core.errors import BadRecordError, ConfigError
from core.records import RecordChecker, RecordProblem
from datamodules.detection import DetectionRecord, DetectionSource
from datamodules.formats.coco_json import decode_coco_segmentation
from datamodules.formats.files import load_label_map, load_rgb
from datamodules.formats.label_values import map_label_values
from datamodules.pose import PoseRecord, PoseSource
from datamodules.segmentation import SegmentationRecord, SegmentationSource, check_label_values, check_same_size

__all__ = [
    "ParsedSplits", "ImageFileSource", "joint_box_center_scale", "files_by_key", "paired_records", "MaskFileSource",
    "DetectionFileSource",
]


class ParsedSplits:
    """``records(split)`` of a reader that parses every split up front into ``self.splits``."""

    splits: dict[str, list[Any]]

    def records(self, split: str) -> list[Any]:
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__} has splits {sorted(self.splits)}, not {split!r}")
        return list(self.splits[split])


class ImageFileSource(ParsedSplits, PoseSource):
    """A pose source whose records are parsed up front into ``self.splits`` and whose
    ``record.image`` is an image file path."""

    splits: dict[str, list[PoseRecord]]

    def load_image(self, record: PoseRecord) -> Tensor:
        return load_rgb(record.image)


def joint_box_center_scale(keypoints: np.ndarray, visible: np.ndarray, padding: float) -> tuple[tuple[float, float], float] | None:
    """Centre and MPII scale of the box around the annotated joints: ``center`` is the box centre,
    ``200 * scale`` is the box's longer side times ``padding``. None without annotated joints."""
    points = keypoints[visible]
    if len(points) == 0:
        return None
    lo, hi = points.min(0), points.max(0)
    side = float(max(hi - lo))
    # One annotated joint (or all on one spot) still gets a usable crop of 20 pixels.
    side = max(side, 20.0)
    center = (lo + hi) / 2
    return (float(center[0]), float(center[1])), side * padding / 200.0


# ---------------------------------------------------------------------------------- segmentation
def files_by_key(folder: Path, suffixes: Iterable[str], key_of: Callable[[Path], str | None] = attrgetter("stem")) -> dict[str, list[Path]]:
    """The files directly in ``folder`` whose name ends in one of ``suffixes`` (case-insensitive),
    grouped by ``key_of(path)`` (the file stem by default; ``None`` passes the file over)."""
    suffixes = tuple(s.lower() for s in suffixes)
    grouped: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(suffixes):
            key = key_of(path)
            if key is not None:
                grouped.setdefault(key, []).append(path)
    return grouped


def paired_records(
    checker: RecordChecker, file: Path, images: dict[str, list[Path]], masks: dict[str, list[Path]], mask_dir: Path
) -> list[SegmentationRecord]:
    """One record per key of ``images`` or ``masks`` (sorted), for readers whose image and label
    files are matched by name: a key with several images or several label images is a
    ``duplicate``, an image without its label image or a label image without its image is an
    ``image_missing`` bad record (checked against ``file``, the split's image folder)."""
    records = []
    for key in sorted(set(images) | set(masks)):
        with checker.record(file, key):
            found, labels = images.get(key, []), masks.get(key, [])
            for what, paths in (("images", found), ("label images", labels)):
                if len(paths) > 1:
                    raise RecordProblem("duplicate", f"several {what} for one name: {', '.join(p.name for p in paths)}")
            if not labels:
                raise RecordProblem("image_missing", f"image {found[0]} has no label image in {mask_dir}")
            if not found:
                raise RecordProblem("image_missing", f"label image {labels[0]} has no image")
            records.append(SegmentationRecord(image=str(found[0]), mask=str(labels[0]), image_id=key))
    return records


class MaskFileSource(ParsedSplits, SegmentationSource):
    """A segmentation source whose records are parsed up front into ``self.splits``, whose
    ``record.image`` is an image file and whose labels come from ``label_map(record)``: by default
    the label image ``record.mask``, its values through ``label_table`` (``value_table``; ``None``:
    the values are the training labels already).

    ``load`` checks what only the pixels show, naming the file: a value that is neither a class nor
    the ignore index (``check_label_values``, or ``map_label_values`` with a table, whose labels
    are valid by construction) and a label map of another size than its image
    (``check_same_size``).
    """

    splits: dict[str, list[SegmentationRecord]]
    checker: RecordChecker
    label_table: np.ndarray | None = None
    # What the table maps, for the message of a value outside it.
    label_values_defined: str = ""

    def label_map(self, record: SegmentationRecord) -> np.ndarray:
        """``(H, W)`` training labels of ``record``, every value a class or the ignore index."""
        values = load_label_map(record.mask)
        if self.label_table is None:
            check_label_values(values, len(self.class_names), self.ignore_index, record.mask)
            return values
        return map_label_values(values, self.label_table, record.mask, self.label_values_defined)

    def labels(self, record: SegmentationRecord) -> np.ndarray:
        return self.label_map(record)

    def label_file(self, record: SegmentationRecord) -> str:
        """What an error about ``record``'s labels names: its label image."""
        return str(record.mask)

    def load(self, record: SegmentationRecord) -> tuple[Tensor, Tensor]:
        image = load_rgb(record.image)
        labels = torch.from_numpy(np.ascontiguousarray(self.label_map(record)).astype(np.int64))
        check_same_size(image, labels, record.image, self.label_file(record))
        return image, labels

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()


# ---------------------------------------------------------------------------------- detection
class DetectionFileSource(ParsedSplits, DetectionSource):
    """A detection source whose records are parsed up front into ``self.splits``, whose
    ``record.image`` is an image file path, and whose bad records go through ``self.checker``."""

    splits: dict[str, list[DetectionRecord]]
    checker: RecordChecker

    def records(self, split: str) -> list[DetectionRecord]:
        if split not in self.splits:
            raise ConfigError(f"{type(self).__name__} has splits {sorted(self.splits)}, not {split!r}")
        return list(self.splits[split])

    def load_image(self, record: DetectionRecord) -> Tensor:
        return load_rgb(record.image)

    def polygon_masks(self, record: DetectionRecord, height: int, width: int, file: Any) -> Tensor | None:
        """``(K, H, W)`` uint8 masks of a record whose ``masks`` are COCO-style polygons (``None``
        without masks), decoded at the image's size once ``check_mask_size`` has passed."""
        if record.masks is None:
            return None
        self.check_mask_size(record, height, width, file)
        masks = np.zeros((len(record.masks), height, width), dtype=np.uint8)
        for k, polygon in enumerate(record.masks):
            masks[k] = decode_coco_segmentation(polygon, height, width)
        return torch.from_numpy(masks)

    def check_mask_size(self, record: DetectionRecord, height: int, width: int, file: Any) -> None:
        """The image has the size its annotation gave (``record.size``), the size its masks are
        decoded at; else ``BadRecordError`` (``size_mismatch``) naming ``file``."""
        if record.size is not None and tuple(record.size) != (height, width):
            raise BadRecordError(file, f"image {record.image} is {width}x{height} but the annotation gives "
                                 f"{record.size[1]}x{record.size[0]}", kind="size_mismatch")

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()
