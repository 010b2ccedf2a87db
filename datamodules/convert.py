"""Convert detection datasets between COCO, PASCAL VOC and Ultralytics YOLO layouts.

``python -m datamodules convert --from coco --to yolo --src data/coco --dst data/coco_yolo``
reads the source with this package's readers (so every record passes their checks, and
``--on-bad-record skip`` leaves bad ones out, counted) and writes the target layout, which the
matching reader reads back with its defaults:

* COCO: ``annotations/instances_{split}2017.json`` and the images in ``{split}2017/`` (read with
  ``COCODetection(root=dst)``);
* VOC: ``VOC<year>/Annotations/<id>.xml``, ``JPEGImages/``, ``ImageSets/Main/<list>.txt`` with the
  lists of ``--voc-lists`` (default ``train=trainval,val=test``, the reader's default, so
  ``VOCDetection(root=dst)`` reads it), and ``VOC<year>/classes.txt`` (the class names in label
  order: VOC has no class list of its own; the converter reads it back when it is there, else
  VOC's 20 classes);
* YOLO: ``images/<split>/``, ``labels/<split>/<stem>.txt`` and ``data.yaml`` (``names`` as
  ``{index: name}``; ``YOLOText(root=dst)``).

Images are hard-linked into the target (copied where a link is impossible, or with ``--copy``);
every annotation file is written atomically (``core.io.write_atomic``). The image names are kept
(a VOC id is the file's stem), so two images of one split with one name are refused.

What survives (lossless where the target can hold it):

* boxes: to float rounding into COCO (``[x, y, w, h]`` floats) and YOLO (normalised, 8 decimals);
  VOC stores whole 1-based pixels, ``xmin = round(x1) + 1``, ``xmax = round(x2)`` (at least one
  pixel wide and high): exact for boxes on whole pixels (every box that came from VOC), rounded
  otherwise, and each box written with other coordinates than the source's is counted
  (``rounded``);
* class names and their order (labels); the category ids of a COCO target are the source's
  ``category_ids`` (COCO's own ids survive COCO to COCO; VOC and YOLO have no ids, so their
  classes become ``1 .. C``);
* VOC ``difficult`` and ``truncated`` into COCO as the non-standard annotation fields
  ``difficult`` and ``truncated`` (``iscrowd`` stays 0: a difficult object is not a crowd;
  ``COCODetection`` reads them back, pycocotools ignores them); into YOLO, difficult objects are
  left out (as Ultralytics' own VOC conversion does), truncated flags dropped;
* COCO crowd regions, masks and keypoints into COCO only: going to VOC or YOLO, crowd regions are
  left out (Ultralytics' COCO conversion does the same) and masks and keypoints are dropped;
* image ids: a COCO target keeps integer ids (from COCO) and numbers the others ``1 .. N``;
  annotation ids are kept when they are distinct integers.

Each split's report (``convert`` returns them, the CLI prints them) counts the images and objects
written, everything left out or dropped (``dropped``, by what), and the boxes written rounded to
whole pixels (``rounded``: VOC only; 0 for COCO and YOLO).
"""
from __future__ import annotations

import json
import os
import shutil
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from core.errors import ConfigError
from core.io import write_atomic
from datamodules.detection import DetectionRecord, DetectionSource
from datamodules.formats.validators import image_size
from datamodules.formats.coco_detection import COCODetection
from datamodules.formats.voc_detection import DEFAULT_VOC_SPLITS, VOCDetection
from datamodules.formats.yolo_txt import YOLOText, yolo_class_names

__all__ = ["FORMATS", "SPLITS", "convert", "read_source", "write_coco", "write_voc", "write_yolo", "voc_lists_of"]

FORMATS = ("coco", "voc", "yolo")
SPLITS = ("train", "val", "test")
COCO_ANNOTATIONS = "annotations/instances_{split}2017.json"
COCO_IMAGES = "{split}2017"
VOC_CLASSES_FILE = "classes.txt"
# VOC list of each split when --voc-lists does not say: the reader's default, and test.txt for test.
VOC_LISTS = {**DEFAULT_VOC_SPLITS, "test": "test"}


def convert(
    source_format: str,
    target_format: str,
    src: str | Path,
    dst: str | Path,
    splits: Sequence[str] = ("train", "val"),
    *,
    year: str | int = 2007,
    voc_lists: Mapping[str, str] | None = None,
    on_bad_record: str = "error",
    copy: bool = False,
) -> dict[str, dict[str, Any]]:
    """Read ``splits`` of the ``source_format`` dataset at ``src`` and write them in
    ``target_format`` at ``dst``; returns each split's report
    ``{images, objects, dropped, rounded}`` (see the module's docstring).

    ``year`` and ``voc_lists`` (split -> VOC list name) place VOC's folders and lists, for a VOC
    source and a VOC target alike. Errors are ``ConfigError``s naming the file."""
    for name, fmt in (("from", source_format), ("to", target_format)):
        if fmt not in FORMATS:
            raise ConfigError(f"convert --{name} must be one of {', '.join(FORMATS)}, got {fmt!r}")
    splits = list(dict.fromkeys(splits))
    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise ConfigError(f"convert --split must be among {', '.join(SPLITS)}, got {splits}")
    lists = {**VOC_LISTS, **(voc_lists or {})}
    if "voc" in (source_format, target_format):
        chosen = [lists[s] for s in splits]
        if len(set(chosen)) != len(chosen):
            raise ConfigError(f"convert: the splits {splits} would share a VOC list ({dict(zip(splits, chosen))}); "
                              "give --voc-lists, e.g. train=trainval,val=val,test=test")
    src, dst = Path(src), Path(dst)
    if src.resolve() == dst.resolve():
        raise ConfigError(f"convert --dst must differ from --src ({src})")
    source = read_source(source_format, src, splits, year=year, voc_lists=lists, on_bad_record=on_bad_record)
    writer = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}[target_format]
    reports = {}
    for split in splits:
        reports[split] = writer(source, split, source.records(split), dst, copy=copy, year=year, voc_lists=lists)
    if target_format == "voc":
        _write_voc_classes(dst / f"VOC{year}" / VOC_CLASSES_FILE, source.class_names)
    if target_format == "yolo":
        _write_data_yaml(dst, source.class_names, splits)
    return reports


def read_source(fmt: str, src: Path, splits: Sequence[str], *, year: str | int = 2007, voc_lists: Mapping[str, str] = VOC_LISTS,
                on_bad_record: str = "error") -> DetectionSource:
    """The reader of ``fmt`` at ``src`` with exactly ``splits`` (the layouts the writers write)."""
    if fmt == "coco":
        args: dict[str, Any] = {f"{s}_annotations": None for s in SPLITS}
        for split in splits:
            args[f"{split}_annotations"] = COCO_ANNOTATIONS.format(split=split)
            args[f"{split}_images"] = COCO_IMAGES.format(split=split)
        return COCODetection(str(src), **args, keypoints=True, on_bad_record=on_bad_record)
    if fmt == "voc":
        classes = src / f"VOC{year}" / VOC_CLASSES_FILE
        names = [line.strip() for line in classes.read_text(encoding="utf-8").splitlines() if line.strip()] if classes.is_file() else None
        return VOCDetection(str(src), year=year, splits={s: voc_lists.get(s, s) for s in splits}, class_names=names, on_bad_record=on_bad_record)
    images = {f"{s}_images": (f"images/{s}" if s in splits else None) for s in SPLITS}
    return YOLOText(str(src), **images, on_bad_record=on_bad_record)


# ---------------------------------------------------------------------------------------------- COCO
def write_coco(source: DetectionSource, split: str, records: list[DetectionRecord], dst: Path, *, copy: bool = False,
               **_: Any) -> dict[str, Any]:
    """``dst/annotations/instances_{split}2017.json`` and the images in ``dst/{split}2017/``."""
    images_dir = dst / COCO_IMAGES.format(split=split)
    names = _image_names(records, split)
    category_ids = list(source.category_ids)
    keypoint_category = getattr(source, "keypoint_category_id", None)
    categories = []
    for cat_id, name in zip(category_ids, source.class_names):
        category: dict[str, Any] = {"id": int(cat_id), "name": name}
        if source.keypoint_names and keypoint_category in (None, cat_id):
            category["keypoints"] = list(source.keypoint_names)
            category["skeleton"] = [[a + 1, b + 1] for a, b in source.skeleton]  # COCO's are 1-based
        categories.append(category)
    integer_ids = all(isinstance(r.image_id, (int, np.integer)) for r in records) and len({r.image_id for r in records}) == len(records)
    annotation_ids = [i for r in records for i in r.extra.get("annotation_ids", [None] * len(r))]
    keep_ids = all(isinstance(i, int) for i in annotation_ids) and len(set(annotation_ids)) == len(annotation_ids)
    images, annotations, dropped = [], [], Counter()
    next_annotation = 1
    for n, record in enumerate(records, start=1):
        height, width = _size(record)
        image_id = int(record.image_id) if integer_ids else n
        _place(Path(record.image), images_dir / names[n - 1], copy)
        images.append({"id": image_id, "file_name": names[n - 1], "width": width, "height": height})
        truncated = record.extra.get("truncated")
        for k in range(len(record)):
            x1, y1, x2, y2 = (float(v) for v in record.boxes[k])
            label = int(record.labels[k])
            annotation: dict[str, Any] = {
                "id": annotation_ids[next_annotation - 1] if keep_ids else next_annotation,
                "image_id": image_id,
                "category_id": int(category_ids[label - 1]),
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": float(record.areas[k]) if record.areas is not None else (x2 - x1) * (y2 - y1),
                "iscrowd": int(record.iscrowd[k]),
            }
            next_annotation += 1
            if record.masks is not None:
                if isinstance(record.masks[k], (list, dict)):
                    annotation["segmentation"] = record.masks[k]
                else:
                    dropped["masks (not COCO polygons or RLE)"] += 1
            if record.keypoints is not None and keypoint_category in (None, category_ids[label - 1]):
                points = record.keypoints[k]
                annotation["keypoints"] = [float(v) if i % 3 != 2 else int(v) for i, v in enumerate(points.reshape(-1))]
                annotation["num_keypoints"] = int((points[:, 2] > 0).sum())
            if record.difficult[k]:
                annotation["difficult"] = 1
            if truncated is not None:
                annotation["truncated"] = int(truncated[k])
            annotations.append(annotation)
    content = {
        "info": {"description": f"{split} split written by convlab's datamodules.convert from {type(source).__name__}"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    write_atomic(dst / COCO_ANNOTATIONS.format(split=split), json.dumps(content))
    return {"images": len(images), "objects": len(annotations), "dropped": dict(dropped), "rounded": 0}


# ---------------------------------------------------------------------------------------------- VOC
def write_voc(source: DetectionSource, split: str, records: list[DetectionRecord], dst: Path, *, copy: bool = False,
              year: str | int = 2007, voc_lists: Mapping[str, str] = VOC_LISTS, **_: Any) -> dict[str, Any]:
    """``dst/VOC<year>/Annotations/<id>.xml``, the images in ``JPEGImages/`` and the split's list in
    ``ImageSets/Main/``."""
    folder = dst / f"VOC{year}"
    list_name = voc_lists.get(split, split)
    names = _image_names(records, split)
    ids = [Path(name).stem for name in names]
    _distinct(ids, split, "VOC id (the image file's stem)")
    dropped = Counter()
    objects = rounded = 0
    for record, name, image_id in zip(records, names, ids):
        height, width = _size(record)
        _place(Path(record.image), folder / "JPEGImages" / name, copy)
        root = ET.Element("annotation")
        ET.SubElement(root, "folder").text = f"VOC{year}"
        ET.SubElement(root, "filename").text = name
        ET.SubElement(ET.SubElement(root, "source"), "database").text = "convlab convert"
        size = ET.SubElement(root, "size")
        for key, value in (("width", width), ("height", height), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        ET.SubElement(root, "segmented").text = "0"
        truncated = record.extra.get("truncated")
        for k in range(len(record)):
            if record.iscrowd[k]:
                dropped["crowd"] += 1
                continue
            obj = ET.SubElement(root, "object")
            ET.SubElement(obj, "name").text = source.class_names[int(record.labels[k]) - 1]
            ET.SubElement(obj, "pose").text = "Unspecified"
            ET.SubElement(obj, "truncated").text = str(int(truncated[k]) if truncated is not None else 0)
            ET.SubElement(obj, "difficult").text = str(int(record.difficult[k]))
            box = ET.SubElement(obj, "bndbox")
            written = _voc_box(record.boxes[k])
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), written):
                ET.SubElement(box, key).text = str(value)
            # What the VOC reader reads back (xmin - 1, ymin - 1, xmax, ymax) is not the source's box.
            xmin, ymin, xmax, ymax = written
            rounded += int([xmin - 1, ymin - 1, xmax, ymax] != [float(v) for v in record.boxes[k]])
            objects += 1
            _count_dropped(dropped, record, k)
        ET.indent(root)
        write_atomic(folder / "Annotations" / f"{image_id}.xml", ET.tostring(root, encoding="unicode") + "\n")
    write_atomic(folder / "ImageSets" / "Main" / f"{list_name}.txt", "".join(f"{i}\n" for i in ids))
    return {"images": len(records), "objects": objects, "dropped": dict(dropped), "rounded": rounded}


def _voc_box(box: np.ndarray) -> tuple[int, int, int, int]:
    """Continuous XYXY -> VOC's 1-based inclusive pixels (exact for whole-pixel boxes); at least
    one pixel wide and high."""
    x1, y1, x2, y2 = (int(round(float(v))) for v in box)
    return x1 + 1, y1 + 1, max(x2, x1 + 1), max(y2, y1 + 1)


def _write_voc_classes(path: Path, names: Sequence[str]) -> None:
    write_atomic(path, "".join(f"{name}\n" for name in names))


# ---------------------------------------------------------------------------------------------- YOLO
def write_yolo(source: DetectionSource, split: str, records: list[DetectionRecord], dst: Path, *, copy: bool = False,
               **_: Any) -> dict[str, Any]:
    """``dst/images/<split>/`` and ``dst/labels/<split>/<stem>.txt`` (``class cx cy w h``)."""
    names = _image_names(records, split)
    _distinct([Path(n).stem for n in names], split, "label file name (the image file's stem)")
    dropped = Counter()
    objects = 0
    for record, name in zip(records, names):
        height, width = _size(record)
        _place(Path(record.image), dst / "images" / split / name, copy)
        lines = []
        for k in range(len(record)):
            if record.iscrowd[k]:
                dropped["crowd"] += 1
                continue
            if record.difficult[k]:
                dropped["difficult"] += 1
                continue
            x1, y1, x2, y2 = (float(v) for v in record.boxes[k])
            cx, cy, w, h = (x1 + x2) / 2 / width, (y1 + y2) / 2 / height, (x2 - x1) / width, (y2 - y1) / height
            lines.append(f"{int(record.labels[k]) - 1} {cx:.8f} {cy:.8f} {w:.8f} {h:.8f}\n")
            objects += 1
            _count_dropped(dropped, record, k)
        # An empty file for an image without objects: Ultralytics reads it as a background image.
        write_atomic(dst / "labels" / split / f"{Path(name).stem}.txt", "".join(lines))
    return {"images": len(records), "objects": objects, "dropped": dict(dropped), "rounded": 0}


def _write_data_yaml(dst: Path, names: Sequence[str], splits: Sequence[str]) -> None:
    """``data.yaml``: the dataset's absolute ``path``, the split folders, ``names`` and ``nc``; the
    splits of an earlier conversion into ``dst`` are kept when its names agree."""
    path = dst / "data.yaml"
    content: dict[str, Any] = {}
    if path.is_file():
        if yolo_class_names(path) != list(names):
            raise ConfigError(f"{path} lists other class names than the source's {list(names)}; convert into another folder")
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    content.update({"path": str(dst.resolve())})
    content.update({split: f"images/{split}" for split in splits})
    content.update({"nc": len(names), "names": dict(enumerate(names))})
    write_atomic(path, yaml.safe_dump(content, sort_keys=False, allow_unicode=True))


# ---------------------------------------------------------------------------------------------- shared
def _count_dropped(dropped: Counter, record: DetectionRecord, k: int) -> None:
    """What a VOC or YOLO object loses: its mask and its keypoints."""
    if record.masks is not None:
        dropped["masks"] += 1
    if record.keypoints is not None and (record.keypoints[k, :, 2] > 0).any():
        dropped["keypoints"] += 1


def _size(record: DetectionRecord) -> tuple[int, int]:
    """``(height, width)`` of the record's image: the annotation's, else the file's header."""
    if record.size is not None:
        return int(record.size[0]), int(record.size[1])
    return image_size(Path(record.image))


def _image_names(records: list[DetectionRecord], split: str) -> list[str]:
    """The file name of each record's image in the target's one folder per split."""
    names = [Path(r.image).name for r in records]
    _distinct(names, split, "image file name")
    return names


def _distinct(names: list[str], split: str, what: str) -> None:
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in seen:
            raise ConfigError(f"convert: two images of the {split} split have the {what} {name!r}; the target keeps one folder per split")
        seen[name] = k


def _place(src: Path, dst: Path, copy: bool) -> None:
    """``dst`` as a hard link to ``src`` (a copy with ``copy``, or across file systems), replaced
    atomically so a reader never sees half an image."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists() and os.path.samefile(src, dst):
        return
    tmp = dst.with_name(f".{dst.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    try:
        if copy:
            raise OSError("copy asked for")
        os.link(src, tmp)
    except OSError:
        shutil.copy2(src, tmp)
    os.replace(tmp, dst)


def voc_lists_of(text: str) -> dict[str, str]:
    """``train=trainval,val=test`` (``--voc-lists``) as ``{split: list name}``."""
    lists = {}
    for item in text.split(","):
        split, sep, name = (part.strip() for part in item.partition("="))
        if not sep or split not in SPLITS or not name:
            raise ConfigError(f"convert --voc-lists takes split=list pairs of {', '.join(SPLITS)}, e.g. train=trainval,val=test; got {text!r}")
        lists[split] = name
    return lists
