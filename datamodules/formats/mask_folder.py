"""Images and label masks in two folders per split, matched by file name: the generic layout of
medical and microscopy datasets (ISBI 2012 EM, cell tracking, Kaggle-style exports).

Files: per split an image folder and a mask folder (defaults ``<root>/{train,val}/images`` and
``<root>/{train,val}/masks``); image ``<name>.<ext>`` goes with mask ``<name><mask_suffix>.<ext>``
(extensions ``.png .jpg .jpeg .tif .tiff .bmp``, any of them on either side; only files directly in
the folder). ISBI 2012's ``train-volume.tif`` and ``train-labels.tif`` are multi-page TIFFs: save
their 30 pages as files first (``PIL.ImageSequence``), and hold some out for val.

Images are read as RGB (8 bit; TIFF and BMP through PIL); the data module turns them grey with
``channels: 1``. Masks are one value per pixel (grey, palette or 1-bit images; a 1-bit mask reads
0 / 255, as viewers show it):

* without ``mask_values`` the values are the training labels: ``0 .. len(class_names) - 1``, and
  255 ignored; except for the usual black-and-white masks: when the training masks hold only 0
  and 255 (checked on up to 16 of them, spread over the split), 255 cannot mean "ignored" (nothing
  would be learnt), so with two classes it is read as class 1 (``{0: 0, 255: 1}``, said in the
  data report's ``notes``), and with another number of classes it is an error asking for
  ``mask_values``;
* with ``mask_values`` each stored value is mapped to its label (ISBI: ``{0: 0, 255: 1}``, black
  membrane 0 and white cell 1; map a value to 255 to ignore it), and a value not in the mapping
  is an error.

A mask value that is neither raises ``BadRecordError`` naming the mask when it is loaded (a lossy
JPEG mask shows up so). Splits: ``train`` and ``val``; ``test`` from ``test_images`` /
``test_masks``, else the val split.

Checks, per name (a failure is a bad record; ``on_bad_record`` decides): the image has its mask
and the mask its image (``image_missing``), and a name has one image and one mask
(``duplicate``: ``a.png`` and ``a.tif`` side by side).

Records: ``image`` and ``mask`` are the file paths, ``image_id`` the image's file stem; ``load``
returns ``(3, H, W)`` uint8 RGB and ``(H, W)`` int64 labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import ArgumentValueError, ConfigError
from core.label_sets import IGNORE_INDEX
from core.records import OnBadRecord, RecordChecker, RequiredPath, check_required
from datamodules.formats.files import IMAGE_SUFFIXES, load_label_map, resolve
from datamodules.formats.label_values import value_table
from datamodules.formats.sources import MaskFileSource, files_by_key, paired_records
from datamodules.segmentation import SegmentationRecord

__all__ = ["MaskFolder"]

# Training masks looked at to tell black-and-white 0/255 masks from labels with an ignore index.
BINARY_MASKS_CHECKED = 16


class MaskFolder(MaskFileSource):
    """Image / mask folder pairs with a class list and an optional value mapping.

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        train_images: the train split's image folder.
        train_masks: the train split's mask folder.
        val_images: the val split's image folder.
        val_masks: the val split's mask folder.
        test_images: the test split's image folder; ``None`` (with ``test_masks``): the val split.
        test_masks: the test split's mask folder.
        class_names: the classes, in label order.
        mask_values: stored mask value -> label (a class or 255); ``None``: the values are the labels.
        mask_suffix: what a mask's stem adds to its image's (``"_mask"``: ``a.png`` ->
            ``a_mask.png``).
        on_bad_record: ``error`` or ``skip`` a bad name (see the module's checks).
    """

    def __init__(
        self,
        root: str = "data/masks",
        train_images: str = "train/images",
        train_masks: str = "train/masks",
        val_images: str = "val/images",
        val_masks: str = "val/masks",
        test_images: str | None = None,
        test_masks: str | None = None,
        class_names: Sequence[str] = ("background", "foreground"),
        mask_values: dict[int, int] | None = None,
        mask_suffix: str = "",
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if (test_images is None) != (test_masks is None):
            raise ConfigError(f"MaskFolder needs test_images and test_masks together, got {test_images!r}, {test_masks!r}")
        if len(class_names) < 1 or len(set(class_names)) != len(class_names):
            raise ConfigError(f"MaskFolder.class_names must be distinct names, got {list(class_names)}")
        self.class_names = tuple(str(c) for c in class_names)
        if mask_values is not None:
            labels = {*range(len(self.class_names)), IGNORE_INDEX}
            bad = {v: label for v, label in mask_values.items() if int(label) not in labels or int(v) < 0}
            if bad:
                raise ConfigError(f"MaskFolder.mask_values must map values >= 0 to a class 0-{len(self.class_names) - 1} "
                                  f"or {IGNORE_INDEX}, got {bad}")
            self.label_table = value_table({int(v): int(label) for v, label in mask_values.items()})
            self.label_values_defined = f"mask_values maps {', '.join(str(int(v)) for v in sorted(mask_values))}"
        self.checker = RecordChecker("MaskFolder", on_bad_record)
        self.root = Path(root)
        self.mask_suffix = mask_suffix
        folders = {"train": (train_images, train_masks), "val": (val_images, val_masks)}
        if test_images is not None and test_masks is not None:
            folders["test"] = (test_images, test_masks)
        self.folders = {split: (resolve(self.root, i), resolve(self.root, m)) for split, (i, m) in folders.items()}
        check_required(self.required_paths(), root=self.root, owner=self)
        self.splits: dict[str, list[SegmentationRecord]] = {}
        for split, (images, masks) in self.folders.items():
            found = files_by_key(images, IMAGE_SUFFIXES), files_by_key(masks, IMAGE_SUFFIXES, self._image_stem)
            self.splits[split] = paired_records(self.checker, images, *found, masks)
            self.checker.kept(images, len(self.splits[split]), split)
        if "test" not in self.splits:
            self.splits["test"] = self.splits["val"]
        self.notes: list[str] = []
        if mask_values is None:
            self._read_binary_masks()

    def _read_binary_masks(self) -> None:
        """0/255 masks without ``mask_values``: 255 as class 1 with two classes, else a
        ``ConfigError`` naming the key to set (see the module's docstring)."""
        records = self.splits["train"]
        step = max(1, len(records) // BINARY_MASKS_CHECKED)
        seen: set[int] = set()
        for record in records[::step][:BINARY_MASKS_CHECKED]:
            seen.update(np.unique(load_label_map(record.mask)).tolist())
        if IGNORE_INDEX not in seen or not seen <= {0, IGNORE_INDEX}:
            return
        folder = self.folders["train"][1]
        if len(self.class_names) != 2:
            raise ArgumentValueError.of(self, "mask_values", (
                f"must say what the values of the masks in {folder} are: they hold only 0 and 255, and 255 is the "
                f"ignore index (nothing would be learnt), e.g. mask_values: {{0: 0, 255: 1}} (stored value: label; "
                f"a value mapped to 255 is ignored)"))
        self.label_table = value_table({0: 0, IGNORE_INDEX: 1})
        self.label_values_defined = "0/255 masks read as mask_values {0: 0, 255: 1}"
        self.notes.append(f"the masks in {folder} hold only 0 and 255: read as mask_values {{0: 0, 255: 1}} "
                          f"({self.class_names[0]!r} 0, {self.class_names[1]!r} 255); set mask_values to read them otherwise")

    def data_report(self) -> dict[str, Any]:
        report = super().data_report()
        if self.notes:
            report["notes"] = list(self.notes)
        return report

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("mask dataset root", self.root, "root", "folder")]
        for split, (images, masks) in self.folders.items():
            paths.append(RequiredPath(f"{split} image folder", images, f"{split}_images", "folder"))
            paths.append(RequiredPath(f"{split} mask folder", masks, f"{split}_masks", "folder"))
        return paths

    def _image_stem(self, mask: Path) -> str | None:
        """The stem of the image a mask belongs to; a file without ``mask_suffix`` is none's mask
        (with a suffix, the mask folder may hold other files)."""
        if not self.mask_suffix:
            return mask.stem
        return mask.stem[: -len(self.mask_suffix)] if mask.stem.endswith(self.mask_suffix) else None
