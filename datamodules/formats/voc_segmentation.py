"""PASCAL VOC 2012 semantic segmentation (Everingham et al., IJCV 2010), with the optional SBD
training images (Hariharan et al., ICCV 2011) in their PNG form.

Files (the devkit's layout, ``root`` = ``VOCdevkit/VOC2012``): ``JPEGImages/<id>.jpg``,
``SegmentationClass/<id>.png`` and ``ImageSets/Segmentation/{train,val,trainval}.txt`` (one image
id per line: 1,464 train and 1,449 val images).

Labels: ``SegmentationClass`` PNGs are palette images whose pixel *indices* are the labels
(0 background, 1..20 the classes of ``core.label_sets.VOC_CLASSES``, 255 object borders and
difficult regions): they are read as indices, never as their RGB colours, and 255 stays the ignore
index, so borders neither train nor count. A label image whose values are anything else raises
``BadRecordError`` naming it when it is loaded.

SBD ("train_aug"): ``aug_mask_dir`` (e.g. ``SegmentationClassAug``: grey PNGs of the same labels
for VOC and SBD images, as DeepLab distributes them) and ``aug_train_list`` (e.g.
``ImageSets/Segmentation/train_aug.txt``). Then the train split is every image of
``aug_train_list`` that is not in the val list (the usual rule: SBD's images overlap VOC val, and
those must not train; each one left out is counted as filtered, ``in_val``), and every training
label comes from ``aug_mask_dir``. The list may hold ids, or DeepLab's lines of two paths
(``/JPEGImages/<id>.jpg /SegmentationClassAug/<id>.png``): the id is the first path's file stem,
and the files are looked up in ``image_dir`` and ``aug_mask_dir`` as for ids.

Splits: ``train`` and ``val`` from their lists; ``test`` from ``test_list``, else the val split
(VOC's test labels are not public; papers report val).

Checks, per list line (a failure is a bad record; ``on_bad_record`` decides): the id names a jpg
and a png that are there (``image_missing``; found now rather than in a worker mid-epoch), stays
inside its folder (``path_outside_root``), is not listed twice in one list (``duplicate``) and the
line has one id or two paths (``wrong_type``).

Records: ``image`` and ``mask`` are the file paths, ``image_id`` the VOC id (``2007_000033``),
``extra`` the ``file`` and ``line`` it was listed on. ``load`` returns ``(3, H, W)`` uint8 RGB and
``(H, W)`` int64 labels.
"""
from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError
from core.label_sets import VOC_CLASSES
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_required
from datamodules.formats.files import read_list, resolve
from datamodules.formats.sources import MaskFileSource
from datamodules.formats.validators import image_file
from datamodules.segmentation import SegmentationRecord

__all__ = ["VOCSegmentation"]


class VOCSegmentation(MaskFileSource):
    """PASCAL VOC 2012 segmentation: 21 classes (background included), 255 ignored.

    Args:
        root: the ``VOC2012`` folder; the other paths are relative to it unless absolute.
        image_dir: the JPEG folder.
        mask_dir: the label PNG folder of the VOC lists.
        train_list: ids of the train split (used when ``aug_train_list`` is not given).
        val_list: ids of the val split.
        test_list: ids of the test split; ``None``: the val split.
        aug_mask_dir: the SBD-augmented label folder (``SegmentationClassAug``); with
            ``aug_train_list``, the training labels come from here.
        aug_train_list: the augmented training list (``train_aug.txt``); its images minus the val
            images are the train split.
        on_bad_record: ``error`` or ``skip`` a bad list line (see the module's checks).
    """

    class_names: tuple[str, ...] = VOC_CLASSES

    def __init__(
        self,
        root: str = "data/VOCdevkit/VOC2012",
        image_dir: str = "JPEGImages",
        mask_dir: str = "SegmentationClass",
        train_list: str = "ImageSets/Segmentation/train.txt",
        val_list: str = "ImageSets/Segmentation/val.txt",
        test_list: str | None = None,
        aug_mask_dir: str | None = None,
        aug_train_list: str | None = None,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if (aug_mask_dir is None) != (aug_train_list is None):
            raise ConfigError("VOCSegmentation needs aug_mask_dir and aug_train_list together (SBD's labels and its list), "
                              f"got aug_mask_dir={aug_mask_dir!r}, aug_train_list={aug_train_list!r}")
        self.checker = RecordChecker("VOCSegmentation", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.mask_dir = resolve(self.root, mask_dir)
        self.aug_mask_dir = None if aug_mask_dir is None else resolve(self.root, aug_mask_dir)
        self.lists = {"train": resolve(self.root, train_list if aug_train_list is None else aug_train_list),
                      "val": resolve(self.root, val_list)}
        if test_list is not None:
            self.lists["test"] = resolve(self.root, test_list)
        check_required(self.required_paths(), root=self.root, owner=self)

        lines = {split: read_list(path) for split, path in self.lists.items()}
        val_ids = {_line_id(fields) for _, fields in lines["val"]}
        self.splits: dict[str, list[SegmentationRecord]] = {}
        for split in ("val", "train", "test"):
            if split not in self.lists:
                continue
            augmented = split == "train" and self.aug_mask_dir is not None
            masks = self.aug_mask_dir if augmented else self.mask_dir
            self.splits[split] = self._parse(self.lists[split], lines[split], masks, val_ids if augmented else set())
            self.checker.kept(self.lists[split], len(self.splits[split]), split)
        if "test" not in self.splits:
            self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("VOC root", self.root, "root", "folder"),
                 RequiredPath("VOC image folder", self.image_dir, "image_dir", "folder"),
                 RequiredPath("VOC label folder", self.mask_dir, "mask_dir", "folder")]
        if self.aug_mask_dir is not None:
            paths.append(RequiredPath("SBD (augmented) label folder", self.aug_mask_dir, "aug_mask_dir", "folder"))
        for split, path in self.lists.items():
            arg = "aug_train_list" if split == "train" and self.aug_mask_dir is not None else f"{split}_list"
            paths.append(RequiredPath(f"VOC {split} list", path, arg))
        return paths

    def _parse(self, path: Path, lines: list[tuple[int, list[str]]], masks: Path, leave_out: set[str | None]) -> list[SegmentationRecord]:
        seen: dict[str, int] = {}
        records = []
        for line, fields in lines:
            image_id = _line_id(fields)
            with self.checker.record(path, f"line {line} ({' '.join(fields)})"):
                if image_id is None:
                    raise RecordProblem("wrong_type", f"a line holds an image id or two paths (image, labels), got {len(fields)} fields")
                if image_id in seen:
                    raise RecordProblem("duplicate", f"image {image_id!r} is listed on line {seen[image_id]} already")
                seen[image_id] = line
                if image_id in leave_out:
                    self.checker.filtered("in_val", path)
                    continue
                image = image_file(self.image_dir, f"{image_id}.jpg", "image id")
                mask = image_file(masks, f"{image_id}.png", "image id", "label image")
                extra = {"file": str(path), "line": line}
                records.append(SegmentationRecord(image=str(image), mask=str(mask), image_id=image_id, extra=extra))
        return records


def _line_id(fields: list[str]) -> str | None:
    """The image id of a list line: the line itself, or the stem of DeepLab's first path."""
    if len(fields) == 1:
        return fields[0]
    if len(fields) == 2:
        return Path(fields[0]).stem
    return None
