"""COCO instance annotations (Lin et al., ECCV 2014) as semantic segmentation: every object's
polygons or RLE painted into one label map per image, as torchvision's segmentation reference
trains on COCO.

Files (the 2017 layout): ``annotations/instances_{train,val}2017.json`` (COCO JSON: ``images``,
``annotations`` with ``segmentation``, ``categories``), read through ``core.coco.load_coco``
(pycocotools), and the images under ``train2017/`` and ``val2017/``.

Labels: background is 0; the categories are 1..K in the order of ``categories`` (COCO names), or
of the train file's category ids when ``categories`` is ``None`` (COCO's ids 1..90 have gaps: the
80 classes become 1..80). Annotations of other categories are not painted (their pixels stay
background) and are counted as filtered (``other_category``). Painting, per pixel:

* an object's pixels take its label (polygons and RLE, compressed or not, through
  ``pycocotools.mask``: ``frPyObjects``, ``merge``, ``decode``);
* pixels of objects of *different* classes that overlap are ambiguous and become 255 (ignored;
  torchvision's reference ignores overlaps too);
* crowd regions (``iscrowd: 1``) are 255 where no object lies (``crowd: ignore``, the default), or
  are painted as objects of their class (``crowd: class``).

Images: every image of the file with ``file_name``, ``width`` and ``height``; a train image
without any painted object is left out (counted as filtered, ``no_annotation``; torchvision's
reference does the same) unless ``keep_empty_train_images``; val keeps them all (they count as
background). The label map is rendered in ``load`` (in the DataLoader workers) at the file's
``height x width``; an image file of another size raises ``BadRecordError``.

Checks, per image (a failure is a bad record, the whole image, since a dropped object would leave
its pixels labelled background; ``on_bad_record`` decides): the image's ``id`` appears once
(``duplicate``), it has ``file_name``, ``width`` and ``height`` (``missing_field``) of positive
integers (``wrong_type``), its file is inside the image folder (``path_outside_root``) and there
(``image_missing``); each of its annotations has a unique ``id`` (``duplicate``), a
``category_id`` among the file's categories (``unknown_category``), ``iscrowd`` 0 or 1
(``wrong_type``) and a ``segmentation`` (``missing_field``) that is either polygons of x, y pairs
(``wrong_type``), each finite (``non_finite``) with at least 3 points (``polygon_points``: two
points would be read as a box by pycocotools), or an RLE of the image's size (``size_mismatch``)
whose uncompressed counts cover the image (``wrong_type``). An annotation whose ``image_id`` is
not one of the file's images is a bad record of its own (``unknown_image``). A file that is not
COCO JSON, or that pycocotools cannot index (an annotation without ``id``, ``image_id`` or
``category_id``), raises ``AnnotationFormatError``.

Splits: ``train`` and ``val``; ``test`` is the val split.

Records: ``image`` the file path, ``mask`` the image's objects ``(label, is_crowd, segmentation)``,
``image_id`` the COCO image id (an ``int``), ``extra`` ``file_name``, ``height``, ``width`` and the
``annotation_file``. ``load`` returns ``(3, H, W)`` uint8 RGB and ``(H, W)`` int64 labels.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.label_sets import IGNORE_INDEX
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_required
from datamodules.formats.coco_json import (
    COCO_SPLITS,
    coco_annotations_by_image,
    coco_content,
    coco_images,
    coco_required_paths,
    coco_segmentation,
    decode_coco_segmentation,
)
from datamodules.formats.files import resolve
from datamodules.formats.sources import MaskFileSource
from datamodules.formats.validators import image_file, known, number, positive_int, problem_at, record_field
from datamodules.segmentation import SegmentationRecord

__all__ = ["COCOSemantic"]

SPLITS = COCO_SPLITS


class COCOSemantic(MaskFileSource):
    """COCO instances rendered to semantic label maps: background 0, the categories 1..K.

    Args:
        root: COCO folder; the other paths are relative to it unless absolute.
        train_annotations: instance annotations of the train split.
        val_annotations: instance annotations of the val split (also the ``test`` split).
        train_images: image folder of the train split.
        val_images: image folder of the val split.
        categories: the COCO category names to segment, in label order (1..K); ``None``: every
            category of ``train_annotations``, by id.
        crowd: ``ignore`` crowd regions (255) or paint them as their ``class``.
        keep_empty_train_images: keep train images without a painted object (all background).
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    def __init__(
        self,
        root: str = "data/coco",
        train_annotations: str = "annotations/instances_train2017.json",
        val_annotations: str = "annotations/instances_val2017.json",
        train_images: str = "train2017",
        val_images: str = "val2017",
        categories: Sequence[str] | None = None,
        crowd: Literal["ignore", "class"] = "ignore",
        keep_empty_train_images: bool = False,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if crowd not in ("ignore", "class"):
            raise ConfigError(f"COCOSemantic.crowd must be ignore or class, got {crowd!r}")
        if categories is not None and (not categories or len(set(categories)) != len(categories)):
            raise ConfigError(f"COCOSemantic.categories must be distinct category names, got {list(categories)}")
        self.checker = RecordChecker("COCOSemantic", on_bad_record)
        self.root = Path(root)
        self.annotation_files = {"train": resolve(self.root, train_annotations), "val": resolve(self.root, val_annotations)}
        self.image_dirs = {"train": resolve(self.root, train_images), "val": resolve(self.root, val_images)}
        check_required(self.required_paths(), root=self.root, owner=self)
        self.crowd = crowd
        self.keep_empty_train_images = keep_empty_train_images
        contents = {split: coco_content(path, "segmentation") for split, path in self.annotation_files.items()}
        names = _category_names(self.annotation_files["train"], contents["train"])
        _category_names(self.annotation_files["val"], contents["val"])
        if categories is None:
            categories = names
        unknown = [c for c in categories if c not in names]
        if unknown:
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            raise ConfigError(f"COCOSemantic.categories {unknown} are not categories of {self.annotation_files['train']} (it has {shown})")
        self.class_names = ("background", *categories)
        self._labels = {name: label for label, name in enumerate(self.class_names) if label > 0}
        self.splits: dict[str, list[SegmentationRecord]] = {}
        for split in SPLITS:
            path = self.annotation_files[split]
            keep_empty = split != "train" or keep_empty_train_images
            self.splits[split] = self._read(path, contents[split], self.image_dirs[split], keep_empty)
            self.checker.kept(path, len(self.splits[split]), split)
        self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        return coco_required_paths(self.root, self.annotation_files, self.image_dirs)

    # ------------------------------------------------------------------ parsing
    def _read(self, path: Path, content: dict[str, Any], images: Path, keep_empty: bool) -> list[SegmentationRecord]:
        categories = {c["id"]: c for c in content["categories"] if isinstance(c, dict) and "id" in c}
        labels = {cat_id: self._labels.get(c.get("name")) for cat_id, c in categories.items()}
        image_ids, by_image = coco_annotations_by_image(path, content, self.checker)
        seen_images: set[Any] = set()
        seen_annotations: set[Any] = set()
        records = []
        for info, where, objects in coco_images(content, image_ids, by_image):
            with self.checker.record(path, where):
                record = self._record(path, info, images, objects, labels, seen_images, seen_annotations, keep_empty)
                if record is not None:
                    records.append(record)
        return records

    def _record(self, path: Path, info: Any, images: Path, annotations: list[tuple[int, dict]], labels: dict[Any, int | None],
                seen_images: set, seen_annotations: set, keep_empty: bool) -> SegmentationRecord | None:
        image_id = record_field(info, "id")
        if image_id in seen_images:
            raise RecordProblem("duplicate", f"image id {image_id!r} appears more than once in 'images'")
        seen_images.add(image_id)
        width, height = (positive_int(record_field(info, key), key) for key in ("width", "height"))
        file = image_file(images, record_field(info, "file_name"), "file_name")
        objects = []
        for index, annotation in annotations:
            where = f"annotation {annotation.get('id', index)!r}"
            annotation_id = record_field(annotation, "id")
            if annotation_id in seen_annotations:
                raise RecordProblem("duplicate", f"{where}: annotation id {annotation_id!r} appears more than once in the file")
            seen_annotations.add(annotation_id)
            category = record_field(annotation, "category_id")
            if not known(labels, category):
                raise RecordProblem("unknown_category", f"{where}: category_id {category!r} is not one of the file's categories")
            iscrowd = number(annotation.get("iscrowd", 0), "iscrowd")
            if iscrowd not in (0.0, 1.0):
                raise RecordProblem("wrong_type", f"{where}: field 'iscrowd' must be 0 or 1, got {iscrowd:g}")
            with problem_at(where):
                segmentation = coco_segmentation(record_field(annotation, "segmentation"), height, width)
            if labels[category] is None:
                self.checker.filtered("other_category", path)
                continue
            objects.append((labels[category], bool(iscrowd), segmentation))
        if not keep_empty and not any(not crowd or self.crowd == "class" for _, crowd, _ in objects):
            self.checker.filtered("no_annotation", path)
            return None
        return SegmentationRecord(image=str(file), mask=tuple(objects), image_id=image_id,
                                  extra={"file_name": info["file_name"], "height": height, "width": width, "annotation_file": str(path)})

    # ------------------------------------------------------------------ rendering
    def label_file(self, record: SegmentationRecord) -> str:
        return f"{record.extra['annotation_file']} (image {record.image_id!r})"

    def label_map(self, record: SegmentationRecord) -> np.ndarray:
        """The objects painted in file order: an object's pixels its label, those of objects of
        different classes that overlap 255, crowd regions 255 where no object lies (``crowd:
        ignore``)."""
        height, width = record.extra["height"], record.extra["width"]
        labels = np.zeros((height, width), dtype=np.int64)
        ambiguous = np.zeros((height, width), dtype=bool)
        crowd = np.zeros((height, width), dtype=bool)
        for label, is_crowd, segmentation in record.mask:
            pixels = decode_coco_segmentation(segmentation, height, width)
            if is_crowd and self.crowd == "ignore":
                crowd |= pixels
                continue
            ambiguous |= pixels & (labels > 0) & (labels != label)
            labels[pixels] = label
        labels[crowd & (labels == 0)] = IGNORE_INDEX
        labels[ambiguous] = IGNORE_INDEX
        return labels


def _category_names(path: Path, content: dict[str, Any]) -> list[str]:
    """The file's category names by id."""
    categories = [c for c in content["categories"] if isinstance(c, dict)]
    if not categories or not all(isinstance(c.get("name"), str) and isinstance(c.get("id"), int) for c in categories):
        raise AnnotationFormatError(path, "'categories' must be a non-empty list of objects with an integer 'id' and a 'name'")
    names = [c["name"] for c in sorted(categories, key=lambda c: c["id"])]
    if len(set(names)) != len(names):
        raise AnnotationFormatError(path, f"a category name appears twice in 'categories': {names}")
    return names

