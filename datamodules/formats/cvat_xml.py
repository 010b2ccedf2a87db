"""CVAT's own XML export, "CVAT for images 1.1": boxes, polygons and skeletons (points) for
detection (``CVATDetection``) and polygons and boxes painted into label maps for semantic
segmentation (``CVATSegmentation``).

Files: one ``annotations.xml`` per split (CVAT exports one per task or per subset: ``train_file``,
``val_file``, optional ``test_file``), the images under ``image_dir`` at the path each ``<image
name=...>`` gives (CVAT's export writes them to ``images/``). The layout of a file::

    <annotations>
      <version>1.1</version>
      <meta><task>...<labels><label><name>car</name>...</label>...</labels></task></meta>
      <image id="0" name="a.jpg" width="640" height="480">
        <box label="car" xtl="10.5" ytl="20" xbr="110" ybr="90.25" occluded="0" z_order="0"/>
        <polygon label="road" points="0,300;640,300;640,480;0,480" occluded="0" z_order="0"/>
        <points label="wheel" points="30,85;95,85" occluded="0"/>
      </image>
    </annotations>

Coordinates are CVAT's: absolute pixels of the image, continuous (the image spans ``[0, W] x [0,
H]``; ``xtl ytl xbr ybr`` is an XYXY box), the convention of ``datamodules.detection``, so they are
taken as they are (a box is clipped to the image after the check below). Classes: ``class_names``
(their order is the label order) or, when not given, the ``<labels>`` of the train file's
``<meta>`` (``<project>`` or ``<task>``), in their order; the segmentation reader puts
``background`` (label 0) first.

What each reader takes: ``CVATDetection``, every ``<box>`` and ``<polygon>`` as an object (a
polygon's box is its extent); with ``masks`` and every object a polygon, ``has_masks`` and the
polygons as instance masks (COCO polygon lists, decoded with pycocotools; with boxes mixed in,
polygons give boxes only, said in ``data_report()["masks"]``); with ``keypoints``, every
``<skeleton>`` too, as an object with keypoints: CVAT's skeleton is a label whose sub-labels
(``<parent>`` in ``<meta>``) are its points, in their ``<meta>`` order (``keypoint_names``); each
``<points>`` child gives one point, visibility 2, 1 when ``occluded``, and 0 (unlabelled, at 0, 0)
when ``outside`` or absent; the box is the extent of the labelled points (none: ``empty_box``);
boxes and polygons then have every keypoint unlabelled. ``CVATSegmentation``, every
``<polygon>`` and ``<box>`` painted with its class in ``z_order`` (then document) order, so the
shape on top wins, over ``background``. ``<points>``, ``<polyline>``, ``<ellipse>``, ``<mask>``,
``<cuboid>``, ``<tag>`` (and ``<skeleton>`` without ``keypoints``) are not read: counted as
filtered (``shape_not_read``) in the report; a label that is a skeleton's point is not a class.

Checks, per ``<image>`` (a failure is a bad record, the whole image: an object dropped would be
trained on as background): the name stays inside ``image_dir`` (``path_outside_root``) and the
image is there (``image_missing``); ``width`` and ``height`` are positive integers
(``missing_field``, ``wrong_type``); each shape's ``label`` is a class (``unknown_category``); box
coordinates are numbers (``wrong_type``), finite (``non_finite``), with positive size
(``empty_box``) and inside the image up to a pixel (``box_outside_image``); polygon points are
``x,y`` pairs separated by ``;`` (``wrong_type``), at least 3 (``polygon_points``), inside the
image up to a pixel (``box_outside_image``); a name given twice in a file is a ``duplicate``. A file
that does not parse, or whose root is not ``<annotations>``, raises ``AnnotationFormatError``
naming it. The image's real size is checked against ``width``/``height`` when it is loaded.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_required
from datamodules.detection import DetectionRecord
from datamodules.formats.coco_json import decode_coco_segmentation
from datamodules.formats.files import resolve
from datamodules.formats.sources import DetectionFileSource, MaskFileSource
from datamodules.formats.validators import clip_box, image_file, positive_int, problem_at, text_number
from datamodules.segmentation import SegmentationRecord

__all__ = ["CVATDetection", "CVATSegmentation", "CVATShape", "read_cvat_file", "cvat_labels", "cvat_skeleton_points"]

READ_SHAPES = ("box", "polygon")
OTHER_SHAPES = ("points", "polyline", "ellipse", "mask", "cuboid", "tag", "skeleton")
# CVAT's point flags -> COCO's keypoint visibility.
VISIBLE, OCCLUDED, UNLABELLED = 2.0, 1.0, 0.0


@dataclass
class CVATShape:
    """One ``<box>`` or ``<polygon>``: ``points`` ``(N, 2)`` float64 pixels (a box: its two corners
    ``(xtl, ytl), (xbr, ybr)``), ``label`` the class index into the reader's class names."""

    kind: str
    label: int
    points: np.ndarray
    z_order: int = 0
    occluded: bool = False
    keypoints: np.ndarray | None = None  # a skeleton's (J, 3) x, y, visibility

    @property
    def box(self) -> tuple[float, float, float, float]:
        lo, hi = self.points.min(0), self.points.max(0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def _parse(path: Path) -> ET.Element:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as error:
        raise AnnotationFormatError(path, f"not XML ({error})") from None
    if root.tag != "annotations":
        raise AnnotationFormatError(path, f"the root element is <{root.tag}>, CVAT for images 1.1 has <annotations>")
    return root


def cvat_labels(path: Path) -> list[str]:
    """The class names of a CVAT file's ``<meta>`` (``<project>`` or ``<task>``), in their order: its
    labels less the points of a skeleton (the labels with a ``<parent>``)."""
    names = [(label.findtext("name") or "").strip() for label in _parse(path).iterfind("meta//labels/label")
             if not (label.findtext("parent") or "").strip()]
    names = [n for n in names if n]
    if not names:
        raise AnnotationFormatError(path, "its <meta> lists no <labels>: give the reader's class_names")
    return list(dict.fromkeys(names))


def cvat_skeleton_points(path: Path) -> dict[str, list[str]]:
    """``{skeleton label: its point labels in <meta> order}`` of a CVAT file."""
    skeletons: dict[str, list[str]] = {}
    for label in _parse(path).iterfind("meta//labels/label"):
        parent = (label.findtext("parent") or "").strip()
        if parent:
            skeletons.setdefault(parent, []).append((label.findtext("name") or "").strip())
    return skeletons


def _attribute(element: ET.Element, key: str) -> str:
    value = element.get(key)
    if value is None:
        raise RecordProblem("missing_field", f"<{element.tag}> has no {key!r}")
    return value


def _points(text: str, field: str) -> np.ndarray:
    try:
        pairs = [tuple(part.split(",")) for part in text.strip().split(";") if part.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError
    except ValueError:
        raise RecordProblem("wrong_type", f"field {field!r} must be x,y pairs separated by ';', got {text[:40]!r}") from None
    return np.array([[text_number(x, field), text_number(y, field)] for x, y in pairs], dtype=np.float64).reshape(-1, 2)


def _shape(element: ET.Element, labels: dict[str, int], width: int, height: int) -> CVATShape:
    """One ``<box>`` or ``<polygon>``, checked (see the module's docstring)."""
    name = _attribute(element, "label")
    if name not in labels:
        raise RecordProblem("unknown_category", f"label {name!r} is not one of the classes {list(labels)}")
    if element.tag == "box":
        box = tuple(text_number(_attribute(element, k), k) for k in ("xtl", "ytl", "xbr", "ybr"))
        check_box(box, width, height, "box")
        x1, y1, x2, y2 = clip_box(box, width, height, "box")
        points = np.array([[x1, y1], [x2, y2]])
    else:
        points = _points(_attribute(element, "points"), "points")
        if len(points) < 3:
            raise RecordProblem("polygon_points", f"field 'points' has {len(points)} point(s), a polygon needs 3")
        lo, hi = points.min(0), points.max(0)
        if lo[0] < -1 or lo[1] < -1 or hi[0] > width + 1 or hi[1] > height + 1:
            extent = [round(float(v), 2) for v in (*lo, *hi)]
            raise RecordProblem("box_outside_image", f"polygon {extent} leaves the {width}x{height} image")
        points = np.clip(points, 0, [width, height])
    z_order = int(text_number(element.get("z_order", "0"), "z_order"))
    return CVATShape(element.tag, labels[name], points, z_order, element.get("occluded", "0") == "1")


def _skeleton(element: ET.Element, labels: dict[str, int], joints: list[str], width: int, height: int) -> CVATShape:
    """One ``<skeleton>`` as an object with keypoints (see the module's docstring)."""
    name = _attribute(element, "label")
    if name not in labels:
        raise RecordProblem("unknown_category", f"label {name!r} is not one of the classes {list(labels)}")
    keypoints = np.zeros((len(joints), 3), dtype=np.float64)
    for point in element.iter("points"):
        joint = _attribute(point, "label")
        if joint not in joints:
            raise RecordProblem("unknown_category", f"point {joint!r} is not one of the skeleton's points {joints}")
        if point.get("outside", "0") == "1":
            continue
        xy = _points(_attribute(point, "points"), "points")
        if len(xy) != 1:
            raise RecordProblem("wrong_type", f"point {joint!r} must be one x,y pair, got {len(xy)}")
        x, y = xy[0]
        if not (-1 <= x <= width + 1 and -1 <= y <= height + 1):
            raise RecordProblem("box_outside_image", f"point {joint!r} ({x:g}, {y:g}) leaves the {width}x{height} image")
        keypoints[joints.index(joint)] = (min(max(x, 0.0), width), min(max(y, 0.0), height),
                                          OCCLUDED if point.get("occluded", "0") == "1" else VISIBLE)
    labelled = keypoints[keypoints[:, 2] > UNLABELLED, :2]
    if len(labelled) == 0:
        raise RecordProblem("empty_box", "the skeleton has no point inside the image")
    lo, hi = labelled.min(0), labelled.max(0)
    # A box of at least a pixel: one labelled point (or points in a line) still makes an object.
    corners = np.array([lo, np.maximum(hi, lo + 1.0)])
    corners = np.minimum(corners, [width, height])
    z_order = int(text_number(element.get("z_order", "0"), "z_order"))
    return CVATShape("skeleton", labels[name], corners, z_order, False, keypoints)


# What read_cvat_file gives of one <image>: the image file, its name, (height, width), its shapes.
CVATImage = tuple[Path, str, tuple[int, int], list[CVATShape]]


def read_cvat_file(path: Path, image_dir: Path, labels: dict[str, int], checker: RecordChecker,
                   splits: Sequence[str], joints: list[str] | None = None) -> list[CVATImage]:
    """``(image file, name, (height, width), shapes)`` of every good ``<image>`` of ``path``, in the
    file's order; bad ones go to ``checker`` and shapes this format's readers do not take are
    counted as filtered (``shape_not_read``). ``joints``: the skeleton's point labels, to read
    ``<skeleton>`` shapes (``None``: they are not read)."""
    root = _parse(path)
    out = []
    seen: set[str] = set()
    for index, element in enumerate(root.iter("image")):
        name = element.get("name")
        with checker.record(path, f"image {index} ({name!r})"):
            if name is None:
                raise RecordProblem("missing_field", "<image> has no 'name'")
            if name in seen:
                raise RecordProblem("duplicate", f"image {name!r} is listed twice")
            seen.add(name)
            file = image_file(image_dir, name, "name")
            width = positive_int(text_number(_attribute(element, "width"), "width"), "width")
            height = positive_int(text_number(_attribute(element, "height"), "height"), "height")
            shapes = []
            for k, child in enumerate(element):
                if child.tag in READ_SHAPES:
                    with problem_at(f"<{child.tag}> {k}"):
                        shapes.append(_shape(child, labels, width, height))
                elif child.tag == "skeleton" and joints is not None:
                    with problem_at(f"<skeleton> {k}"):
                        shapes.append(_skeleton(child, labels, joints, width, height))
            others = sum(child.tag in OTHER_SHAPES and not (child.tag == "skeleton" and joints is not None) for child in element)
            if others:
                checker.filtered("shape_not_read", path, others, splits,
                                 rule="CVAT shapes other than <box>, <polygon> and (with keypoints) <skeleton> are not read")
            out.append((file, name, (height, width), shapes))
    return out


class _CVATFiles:
    """The arguments and required paths the two CVAT readers share."""

    checker: RecordChecker

    def _files(self, name: str, root: str, train_file: str | None, val_file: str | None, test_file: str | None, image_dir: str) -> None:
        given = {"train": train_file, "val": val_file, "test": test_file}
        self.root = Path(root)
        self.files = {split: resolve(self.root, file) for split, file in given.items() if file is not None}
        if "train" not in self.files and "val" not in self.files:
            raise ConfigError(f"{name} needs train_file or val_file")
        self.image_dir = resolve(self.root, image_dir)
        self.name = name
        check_required(self.required_paths(), root=self.root, owner=self)

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("CVAT dataset root", self.root, "root", "folder"),
                 RequiredPath("CVAT image folder", self.image_dir, "image_dir", "folder")]
        return paths + [RequiredPath(f"CVAT {split} annotation file", path, f"{split}_file") for split, path in self.files.items()]

    def _class_names(self, class_names: Sequence[str] | None) -> list[str]:
        names = list(class_names) if class_names is not None else cvat_labels(next(iter(self.files.values())))
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"{self.name}.class_names must be distinct names, got {names}")
        return [str(n) for n in names]

    def _read_splits(self, labels: dict[str, int], joints: list[str] | None = None) -> dict[str, list[CVATImage]]:
        read = {}
        for split, path in self.files.items():
            # The val file is also the test split when there is no test file.
            counted = [split, "test"] if split == "val" and "test" not in self.files else [split]
            read[split] = read_cvat_file(path, self.image_dir, labels, self.checker, counted, joints)
            self.checker.kept(path, len(read[split]), split)
        return read


class CVATDetection(_CVATFiles, DetectionFileSource):
    """Boxes and polygons of CVAT for images 1.1 XML as detection objects (and instance masks).

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        train_file: the train split's CVAT XML; ``None``: no train split.
        val_file: the val split's (also ``test`` when no ``test_file`` is given).
        test_file: the test split's.
        image_dir: the folder the ``<image name>`` paths are relative to.
        class_names: the classes in label order (label ``i + 1``); ``None``: the train file's
            ``<meta>`` labels.
        masks: polygons as instance masks when every object is a polygon.
        keypoints: read ``<skeleton>`` shapes as objects with keypoints (the train file's
            ``<meta>`` must define one skeleton; its points are ``keypoint_names``).
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    def __init__(
        self,
        root: str = "data/cvat",
        train_file: str | None = "annotations/train.xml",
        val_file: str | None = "annotations/val.xml",
        test_file: str | None = None,
        image_dir: str = "images",
        class_names: Sequence[str] | None = None,
        masks: bool = True,
        keypoints: bool = False,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        self.checker = RecordChecker("CVATDetection", on_bad_record)
        self._files("CVATDetection", root, train_file, val_file, test_file, image_dir)
        self.class_names = tuple(self._class_names(class_names))
        labels = {name: i for i, name in enumerate(self.class_names)}
        joints = None
        if keypoints:
            skeletons = cvat_skeleton_points(next(iter(self.files.values())))
            if len(skeletons) != 1:
                raise ConfigError(f"CVATDetection.keypoints needs one skeleton label in the <meta> of {next(iter(self.files.values()))}, "
                                  f"found {len(skeletons)}: {sorted(skeletons)}")
            joints = next(iter(skeletons.values()))
            self.keypoint_names = tuple(joints)
        read = self._read_splits(labels, joints)
        shapes = [shape for images in read.values() for *_, found in images for shape in found]
        polygons = sum(s.kind == "polygon" for s in shapes)
        self.has_masks = masks and polygons > 0 and polygons == len(shapes)
        self._masks_note = ("every object is a polygon: masks kept" if self.has_masks else
                            "masks: false" if not masks else
                            f"boxes and polygons mixed ({len(shapes) - polygons} boxes, {polygons} polygons): polygons give boxes only"
                            if polygons else "boxes only")
        self.splits = {split: [self._record(*image) for image in images] for split, images in read.items()}
        if "test" not in self.splits:
            self.splits["test"] = self.splits.get("val", self.splits.get("train", []))

    def _record(self, file: Path, name: str, size: tuple[int, int], shapes: list[CVATShape]) -> DetectionRecord:
        polygons = [[s.points.reshape(-1).tolist()] for s in shapes] if self.has_masks else None
        keypoints = None
        if self.keypoint_names:
            joints = len(self.keypoint_names)
            keypoints = np.stack([s.keypoints if s.keypoints is not None else np.zeros((joints, 3)) for s in shapes]) if shapes \
                else np.zeros((0, joints, 3))
        return DetectionRecord(
            image=str(file), image_id=name, size=size,
            boxes=np.array([s.box for s in shapes], dtype=np.float64).reshape(-1, 4),
            labels=np.array([s.label + 1 for s in shapes], dtype=np.int64), masks=polygons, keypoints=keypoints,
            extra={"occluded": [s.occluded for s in shapes]},
        )

    def load_masks(self, record: DetectionRecord, height: int, width: int) -> Tensor | None:
        """``(K, H, W)`` uint8 masks of the record's polygons (``None`` without masks)."""
        return self.polygon_masks(record, height, width, record.image)

    def data_report(self) -> dict[str, Any]:
        return {**self.checker.report(), "masks": self._masks_note}


class CVATSegmentation(_CVATFiles, MaskFileSource):
    """Polygons and boxes of CVAT for images 1.1 XML painted into semantic label maps.

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        train_file: the train split's CVAT XML; ``None``: no train split.
        val_file: the val split's (also ``test`` when no ``test_file`` is given).
        test_file: the test split's.
        image_dir: the folder the ``<image name>`` paths are relative to.
        class_names: the classes in label order, ``background`` (what no shape covers) first;
            ``None``: ``background`` and the train file's ``<meta>`` labels.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).

    Records: ``image`` the file, ``mask`` the image's shapes (``CVATShape``), ``extra`` the
    annotation ``file`` and the ``size`` ``(height, width)`` the maps are painted at.
    """

    def __init__(
        self,
        root: str = "data/cvat",
        train_file: str | None = "annotations/train.xml",
        val_file: str | None = "annotations/val.xml",
        test_file: str | None = None,
        image_dir: str = "images",
        class_names: Sequence[str] | None = None,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        self.checker = RecordChecker("CVATSegmentation", on_bad_record)
        self._files("CVATSegmentation", root, train_file, val_file, test_file, image_dir)
        names = self._class_names(class_names) if class_names is not None else ["background", *self._class_names(None)]
        self.class_names = tuple(names)
        # A shape's label is its index in the class list (background is never a shape's).
        read = self._read_splits({name: i for i, name in enumerate(self.class_names) if i > 0})
        self.splits = {
            split: [SegmentationRecord(image=str(file), mask=shapes, image_id=name, extra={"file": str(self.files[split]), "size": size})
                    for file, name, size, shapes in images]
            for split, images in read.items()
        }
        if "test" not in self.splits:
            self.splits["test"] = self.splits.get("val", self.splits.get("train", []))

    def label_map(self, record: SegmentationRecord) -> np.ndarray:
        """``(H, W)`` int64 labels: background, then each shape painted in ``z_order`` order."""
        height, width = record.extra["size"]
        labels = np.zeros((height, width), dtype=np.int64)
        for shape in sorted(record.mask, key=lambda s: s.z_order):  # stable: document order within a z level
            if shape.kind == "box":
                x1, y1, x2, y2 = shape.box
                polygon = [[x1, y1, x2, y1, x2, y2, x1, y2]]
            else:
                polygon = [shape.points.reshape(-1).tolist()]
            labels[decode_coco_segmentation(polygon, height, width).astype(bool)] = shape.label
        return labels

    def label_file(self, record: SegmentationRecord) -> str:
        return f"{record.extra['file']} (image {record.image_id!r})"
