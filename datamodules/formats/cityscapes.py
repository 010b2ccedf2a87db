"""Cityscapes (Cordts et al., CVPR 2016), fine annotations: 19 evaluated classes, 2,975 train and
500 val images of 1024x2048.

Files (the official layout): ``<root>/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png``
and ``<root>/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png``; an image and its
label image are paired by city and name, one without the other is a bad record. The other files
of ``gtFine`` (``_color``, ``_instanceIds``, ``_polygons.json``) are not read.

Labels: ``labelIds`` (0..33, the official ``cityscapesscripts/helpers/labels.py`` ids) become the
19 ``trainId``s through ``core.label_sets.CITYSCAPES_LABEL_TO_TRAIN``; every other id (unlabeled,
ego vehicle, ..., the classes not evaluated) becomes the ignore index 255, and so does 255 itself.
With ``labels: labelTrainIds`` the reader takes the files ``createTrainIdLabelImgs.py`` writes
(``_gtFine_labelTrainIds.png``, values 0..18 and 255) as they are. Any other value (an
``instanceIds`` or colour file given by mistake) raises ``BadRecordError`` naming the file when it
is loaded.

Splits: ``train`` and ``val``; ``test`` is the val split (the test labels are not public; papers
report val, or the server's test numbers).

Checks, per image (a failure is a bad record; ``on_bad_record`` decides): the image and its label
image are both there (``image_missing``) and neither is there twice (``duplicate``).

Records: ``image`` and ``mask`` are the file paths, ``image_id`` ``<city>/<city>_<seq>_<frame>``;
``load`` returns ``(3, H, W)`` uint8 RGB and ``(H, W)`` int64 labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from core.errors import ConfigError
from core.label_sets import CITYSCAPES_CLASSES, CITYSCAPES_LABEL_TO_TRAIN, IGNORE_INDEX, cityscapes_palette
from core.records import OnBadRecord, RecordChecker, RequiredPath, check_required
from datamodules.formats.files import resolve
from datamodules.formats.label_values import value_table
from datamodules.formats.sources import MaskFileSource, files_by_key, paired_records
from datamodules.segmentation import SegmentationRecord

__all__ = ["Cityscapes"]

SPLITS = ("train", "val")
NUM_LABEL_IDS = 34
IMAGE_SUFFIX = "_leftImg8bit.png"


class Cityscapes(MaskFileSource):
    """Cityscapes fine: 19 train ids, everything else 255.

    Args:
        root: the Cityscapes folder (``leftImg8bit``, ``gtFine``).
        image_dir: the image folder under ``root``.
        label_dir: the annotation folder under ``root``; its name is also in the label files' names
            (``gtFine`` -> ``_gtFine_labelIds.png``).
        labels: ``labelIds`` (the released files, mapped to train ids here) or ``labelTrainIds``
            (files already mapped by ``cityscapesscripts``).
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    class_names: tuple[str, ...] = CITYSCAPES_CLASSES
    palette = cityscapes_palette()

    def __init__(
        self,
        root: str = "data/cityscapes",
        image_dir: str = "leftImg8bit",
        label_dir: str = "gtFine",
        labels: Literal["labelIds", "labelTrainIds"] = "labelIds",
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if labels not in ("labelIds", "labelTrainIds"):
            raise ConfigError(f"Cityscapes.labels must be labelIds or labelTrainIds, got {labels!r}")
        self.checker = RecordChecker("Cityscapes", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.label_dir = resolve(self.root, label_dir)
        self.label_suffix = f"_{self.label_dir.name}_{labels}.png"
        if labels == "labelIds":
            mapping = {label_id: CITYSCAPES_LABEL_TO_TRAIN.get(label_id, IGNORE_INDEX) for label_id in range(NUM_LABEL_IDS)}
            self.label_table = value_table({**mapping, IGNORE_INDEX: IGNORE_INDEX})
            self.label_values_defined = f"labelIds 0-{NUM_LABEL_IDS - 1} or {IGNORE_INDEX}"
        check_required(self.required_paths(), root=self.root, owner=self)
        self.splits: dict[str, list[SegmentationRecord]] = {}
        for split in SPLITS:
            images, masks = self.image_dir / split, self.label_dir / split
            found = _by_city(images, IMAGE_SUFFIX), _by_city(masks, self.label_suffix)
            self.splits[split] = paired_records(self.checker, images, *found, masks)
            self.checker.kept(images, len(self.splits[split]), split)
        self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("Cityscapes root", self.root, "root", "folder")]
        for split in SPLITS:
            paths.append(RequiredPath(f"Cityscapes {split} image folder", self.image_dir / split, "image_dir", "folder"))
            paths.append(RequiredPath(f"Cityscapes {split} label folder", self.label_dir / split, "label_dir", "folder"))
        return paths


def _by_city(folder: Path, suffix: str) -> dict[str, list[Path]]:
    """The files ``<city>/<name><suffix>`` under ``folder`` by ``<city>/<name>``."""
    found: dict[str, list[Path]] = {}
    for city in sorted(p for p in folder.iterdir() if p.is_dir()):
        key = lambda path, city=city.name: f"{city}/{path.name[: -len(suffix)]}"
        for name, paths in files_by_key(city, [suffix], key).items():
            found.setdefault(name, []).extend(paths)
    return found
