"""PASCAL VOC object detection (Everingham et al., IJCV 2010): boxes of 20 classes with VOC's
``difficult`` and ``truncated`` flags, from one XML file per image.

Files (the devkit's layout, ``root`` = ``VOCdevkit``): ``VOC2007/Annotations/<id>.xml``,
``VOC2007/JPEGImages/<id>.jpg`` and ``VOC2007/ImageSets/Main/{train,val,trainval,test}.txt`` (one
image id per line). ``splits`` maps each split to one list or several: a list name
(``trainval``) is read in the ``VOC<year>`` folder, ``VOC2012/trainval`` in the folder it names,
so the usual 07+12 training set is ``{"train": ["VOC2007/trainval", "VOC2012/trainval"], "val":
"VOC2007/test"}``. The default trains on VOC2007 ``trainval`` and validates on its ``test`` (the
VOC2007 test labels are public); without a ``test`` entry, ``test`` is the val split.

The XML: ``<size>`` gives ``width`` and ``height`` (an XML without a usable size, as some VOC-style
exports write, takes it from the image's header); every ``<object>`` has a ``<name>`` (one of
``class_names``), a ``<bndbox>`` with ``xmin ymin xmax ymax``, and optional ``<difficult>`` and
``<truncated>`` flags (0 or 1, absent is 0). The ``<part>`` boxes inside an object (the head,
hands and feet of VOC's person layout) are not objects and are not read. The image is
``JPEGImages/<id>.jpg`` (the devkit's rule, as torchvision and detectron2 read it), or the XML's
``<filename>`` in ``JPEGImages`` when there is no such file (VOC-style exports of PNG datasets).

Coordinates: VOC's boxes are 1-based pixel indices, both ends included (``xmin = 1, xmax = W`` is
the whole image width); in continuous coordinates (the image spans ``[0, W] x [0, H]``) that box
is ``[xmin - 1, ymin - 1, xmax, ymax]``, the conversion detectron2 makes. Labels are ``1 .. 20`` in
``class_names`` order (VOC's alphabetical list by default); ``difficult`` objects are kept with
their flag (VOC's AP ignores them; training drops them), and the ``truncated`` flags are in
``record.extra["truncated"]``.

Checks (a failure is a bad record; ``on_bad_record`` decides): a list line holds one id
(``wrong_type``), not listed twice in one split (``duplicate``), whose XML and image stay inside
their folders (``path_outside_root``) and are there (``image_missing``). Per XML file, the whole
image is the bad record (an object dropped would be trained on as background): the file parses
(``wrong_type``), every object has a ``name`` and a ``bndbox`` with its four coordinates
(``missing_field``), a known class (``unknown_category``), numbers (``wrong_type``) that are finite
(``non_finite``), a positive size (``empty_box``), inside the image up to a pixel
(``box_outside_image``), and flags 0 or 1 (``wrong_type``). An image that cannot be decoded raises
``ImageReadError`` when loaded.

Records: ``image`` the file path, ``image_id`` the VOC id (``000005``, ``2008_000001``), ``size``
``(height, width)``; ``extra`` ``truncated`` (bool per object), ``annotation_file``, ``list_file``
and ``line``.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from core.errors import ConfigError
from core.label_sets import VOC_CLASSES
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_required, inside_root
from datamodules.detection import DetectionRecord
from datamodules.formats.files import read_list
from datamodules.formats.sources import DetectionFileSource
from datamodules.formats.validators import clip_box, image_size, problem_at, text_number

__all__ = ["VOCDetection", "VOC_DETECTION_CLASSES", "DEFAULT_VOC_SPLITS"]

# The 20 object classes (VOC_CLASSES without its background entry), in the devkit's order.
VOC_DETECTION_CLASSES: tuple[str, ...] = tuple(VOC_CLASSES[1:])
DEFAULT_VOC_SPLITS: dict[str, str] = {"train": "trainval", "val": "test"}


class VOCDetection(DetectionFileSource):
    """PASCAL VOC detection from the devkit's XML files.

    Args:
        root: the ``VOCdevkit`` folder (holding ``VOC2007``, ``VOC2012``).
        year: the folder ``VOC<year>`` that plain list names are read in.
        splits: split -> list name (``trainval``), ``VOC2012/trainval`` for another year's list,
            or several of them; ``None``: train ``trainval`` and val ``test`` of ``VOC<year>``.
        class_names: the classes in label order; ``None``: VOC's 20.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    def __init__(
        self,
        root: str = "data/VOCdevkit",
        year: str | int = 2007,
        splits: Mapping[str, str | Sequence[str]] | None = None,
        class_names: Sequence[str] | None = None,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        splits = dict(DEFAULT_VOC_SPLITS if splits is None else splits)
        if not splits:
            raise ConfigError("VOCDetection.splits must map at least one split to a list")
        class_names = VOC_DETECTION_CLASSES if class_names is None else tuple(str(c) for c in class_names)
        if not class_names or len(set(class_names)) != len(class_names):
            raise ConfigError(f"VOCDetection.class_names must be distinct names, got {list(class_names)}")
        self.class_names = tuple(class_names)
        self._labels = {name: label for label, name in enumerate(self.class_names, start=1)}
        self.checker = RecordChecker("VOCDetection", on_bad_record)
        self.root = Path(root)
        self.year_dir = f"VOC{year}"
        # split -> [(year folder, list file)]
        self.lists: dict[str, list[tuple[Path, Path]]] = {}
        for split, names in splits.items():
            names = [names] if isinstance(names, str) else list(names)
            if not names:
                raise ConfigError(f"VOCDetection.splits[{split!r}] names no list")
            self.lists[split] = [self._list_path(name) for name in names]
        check_required(self.required_paths(), root=self.root, owner=self)

        self.splits: dict[str, list[DetectionRecord]] = {}
        for split, lists in self.lists.items():
            seen: dict[str, str] = {}
            records = []
            for folder, path in lists:
                found = self._parse_list(folder, path, seen)
                self.checker.kept(path, len(found), split)
                records += found
            self.splits[split] = records
        if "test" not in self.splits and "val" in self.splits:
            self.splits["test"] = self.splits["val"]

    def _list_path(self, name: str) -> tuple[Path, Path]:
        """``(year folder, list file)`` of a list name: ``trainval`` or ``VOC2012/trainval``."""
        folder, _, stem = name.rpartition("/")
        year_dir = self.root / (folder or self.year_dir)
        return year_dir, year_dir / "ImageSets" / "Main" / f"{stem}.txt"

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("VOC root (VOCdevkit)", self.root, "root", "folder")]
        folders = list(dict.fromkeys(folder for lists in self.lists.values() for folder, _ in lists))
        for folder in folders:
            paths.append(RequiredPath(f"VOC annotation folder of {folder.name}", folder / "Annotations", "root", "folder"))
            paths.append(RequiredPath(f"VOC image folder of {folder.name}", folder / "JPEGImages", "root", "folder"))
        for split, lists in self.lists.items():
            paths += [RequiredPath(f"VOC {split} list", path, "splits") for _, path in lists]
        return paths

    # ------------------------------------------------------------------ parsing
    def _parse_list(self, folder: Path, path: Path, seen: dict[str, str]) -> list[DetectionRecord]:
        records = []
        for line, fields in read_list(path):
            annotation = None
            with self.checker.record(path, f"line {line} ({' '.join(fields)})"):
                if len(fields) != 1:
                    raise RecordProblem("wrong_type", f"a line of a Main list holds one image id, got {len(fields)} fields "
                                        "(a per-class list such as aeroplane_train.txt is not a split list)")
                image_id = fields[0]
                if image_id in seen:
                    raise RecordProblem("duplicate", f"image {image_id!r} is listed already ({seen[image_id]})")
                seen[image_id] = f"{path.name} line {line}"
                xml = inside_root(folder / "Annotations", f"{image_id}.xml", "image id")
                if not xml.is_file():
                    raise RecordProblem("image_missing", f"annotation file {xml} is not there")
                annotation = xml  # set only once the line passed its checks (skip goes on with the next)
            if annotation is None:
                continue
            with self.checker.record(annotation, f"image {image_id!r}"):
                record = self._parse_xml(annotation, folder / "JPEGImages", image_id)
                record.extra.update({"list_file": str(path), "line": line})
                records.append(record)
        return records

    def _parse_xml(self, path: Path, images: Path, image_id: str) -> DetectionRecord:
        try:
            tree = ET.parse(path).getroot()
        except ET.ParseError as error:
            raise RecordProblem("wrong_type", f"not valid XML ({error})") from None
        image = self._image(images, image_id, tree.findtext("filename"))
        height, width = _size(tree.find("size"), image)
        boxes, labels, difficult, truncated = [], [], [], []
        # Only the direct <object> children of <annotation>, and in each only its own <bndbox>:
        # a <part>'s box is a child of the part.
        for k, obj in enumerate(tree.findall("object")):
            name = (obj.findtext("name") or "").strip()
            with problem_at(f"object {k}" + (f" ({name!r})" if name else "")):
                if not name:
                    raise RecordProblem("missing_field", "no <name>")
                if name not in self._labels:
                    raise RecordProblem("unknown_category", f"class {name!r} is not one of the classes ({', '.join(self.class_names)})")
                bndbox = obj.find("bndbox")
                if bndbox is None:
                    raise RecordProblem("missing_field", "no <bndbox>")
                corners = []
                for key in ("xmin", "ymin", "xmax", "ymax"):
                    text = bndbox.findtext(key)
                    if text is None:
                        raise RecordProblem("missing_field", f"<bndbox> has no <{key}>")
                    corners.append(text_number(text.strip(), key))
                xmin, ymin, xmax, ymax = corners
                # 1-based inclusive pixel indices -> continuous coordinates (detectron2's rule).
                box = (xmin - 1.0, ymin - 1.0, xmax, ymax)
                check_box(box, width, height, "bndbox")
                boxes.append(clip_box(box, width, height, "bndbox"))
                labels.append(self._labels[name])
                difficult.append(_flag(obj, "difficult"))
                truncated.append(_flag(obj, "truncated"))
        return DetectionRecord(
            image=str(image),
            image_id=image_id,
            size=(height, width),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            difficult=np.asarray(difficult, dtype=bool),
            extra={"truncated": np.asarray(truncated, dtype=bool), "annotation_file": str(path)},
        )

    @staticmethod
    def _image(images: Path, image_id: str, filename: str | None) -> Path:
        """``JPEGImages/<id>.jpg``, else the XML's ``<filename>`` there."""
        image = inside_root(images, f"{image_id}.jpg", "image id")
        if image.is_file():
            return image
        if filename and filename.strip():
            other = inside_root(images, filename.strip(), "filename")
            if other.is_file():
                return other
        raise RecordProblem("image_missing", f"image file {image} is not there" + (f" (nor {filename.strip()!r})" if filename and filename.strip() else ""))


def _size(size: ET.Element | None, image: Path) -> tuple[int, int]:
    """``(height, width)`` from ``<size>``, or the image's header where the XML has none (or 0)."""
    if size is not None:
        texts = size.findtext("height"), size.findtext("width")
        if all(t is not None and t.strip() for t in texts):
            height, width = (text_number(t.strip(), key) for t, key in zip(texts, ("height", "width")))
            if height != int(height) or width != int(width) or height < 0 or width < 0:
                raise RecordProblem("wrong_type", f"<size> must hold whole numbers of pixels, got {width:g}x{height:g}")
            if height > 0 and width > 0:
                return int(height), int(width)
    return image_size(image)


def _flag(obj: ET.Element, key: str) -> bool:
    text = obj.findtext(key)
    if text is None or not text.strip():
        return False
    value = text.strip()
    if value not in ("0", "1"):
        raise RecordProblem("wrong_type", f"<{key}> must be 0 or 1, got {value!r}")
    return value == "1"

