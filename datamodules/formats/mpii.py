"""MPII Human Pose (Andriluka et al., CVPR 2014) for top-down pose: 16 joints, PCKh@0.5.

Two readers, one per kind of annotation file:

* ``MPII`` reads the JSON files everyone trains from. It takes either of the two common layouts
  and tells them apart by their keys:

  - HRNet / MMPose (``annot/train.json``, ``annot/valid.json``, ``annot/test.json``): a list of
    people ``{"image", "center", "scale", "joints" (16 x [x, y]), "joints_vis" (16)}``, one file
    per split, and the validation head boxes in ``annot/gt_valid.mat``.
  - bearpaw/pytorch-pose (``mpii_annotations.json``, from Wei et al.'s ``genJSON.m``): one list of
    people ``{"img_paths", "objpos", "scale_provided", "joint_self" (16 x [x, y, is_visible]),
    "isValidation"}`` holding both splits; the validation head boxes are in bearpaw's
    ``detections_our_format.mat`` (same variables as ``gt_valid.mat``).

  The validation split is Tompson et al.'s (2958 people); PCKh needs each person's head box, which
  neither JSON carries, so ``head_boxes_file`` is required with a val file.

* ``MPIIRelease`` reads the official ``mpii_human_pose_v1_u12_1.mat`` (the ``RELEASE`` struct):
  head boxes for every annotated person, but no validation split (Tompson's split is not in it),
  so a val split comes from a list of image names.

Coordinates: MPII's files are 1-based MATLAB coordinates; the readers subtract 1 from joints,
centres and head boxes, so records are in 0-based pixel-index coordinates
(``core.geometry``). A joint is ``visible`` (annotated) when the file lists it; joints MPII
marks as occluded but annotated stay visible, as in the MPII evaluation (``jnt_missing``).

Crops follow HRNet's and bearpaw's adjustment of MPII's rough person position: the centre moves
``center_shift * scale`` pixels down (15 x scale) and the scale grows by ``scale_factor`` (1.25)
"to avoid cropping limbs"; both are ``__init__`` arguments.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.skeletons import MPII_SKELETON, PCKH_MPII, PoseProtocol, Skeleton
from datamodules.formats._common import (
    ImageFileSource,
    finite_number,
    load_json,
    load_mat,
    require_dir,
    require_file,
    resolve,
)
from datamodules.pose import PoseRecord

__all__ = ["MPII", "MPIIRelease"]

NUM_JOINTS = 16


class MPII(ImageFileSource):
    """MPII from the HRNet/MMPose or the bearpaw JSON annotations (format detected from the keys).

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        train_file: JSON of the train split. A bearpaw file holds both splits: here only its
            people with ``isValidation == 0`` are used. ``None``: no train split.
        val_file: JSON of the val split (Tompson's 2958 people). For a bearpaw file (usually the
            same file as ``train_file``) only its people with ``isValidation == 1`` are used.
            ``None``: no val split.
        test_file: JSON of the test split, e.g. HRNet's ``annot/test.json`` (centre and scale, no
            joints: every joint unannotated, for ``predict``; a bearpaw file gives its
            ``isValidation == 1`` people). ``None``: no test split; to run
            ``test`` on the val people set the data module's ``test_split: val``.
        head_boxes_file: ``.mat`` with the val people's head boxes in the val file's order:
            ``headboxes_src`` ``(2, 2, N)`` (``[0]`` = top-left, ``[1]`` = bottom-right, 1-based),
            and optionally ``jnt_missing`` ``(16, N)`` and ``pos_gt_src`` ``(16, 2, N)`` as in
            HRNet's ``gt_valid.mat`` and bearpaw's ``detections_our_format.mat``. Where
            ``jnt_missing`` is given it decides which val joints are annotated (it is what the
            official evaluation reads); where ``pos_gt_src`` is given every val person is checked
            against it, so a file in another order fails at once. Required with ``val_file``.
        image_dir: image folder.
        center_shift: the centre moves down by ``center_shift * scale`` pixels (HRNet, bearpaw: 15).
        scale_factor: the file's scale is multiplied by this (HRNet, bearpaw: 1.25).

    Coordinates in the files are 1-based (MATLAB); records are 0-based pixel indices. Annotated
    joints: HRNet's ``joints_vis > 0``; in bearpaw's file a missing joint is ``[0, 0, 0]`` (its
    third value is MPII's ``is_visible`` occlusion flag, which does not make a joint unannotated).
    """

    skeleton: Skeleton = MPII_SKELETON
    protocol: PoseProtocol = PCKH_MPII

    def __init__(
        self,
        root: str = "data/mpii",
        train_file: str | None = "annot/train.json",
        val_file: str | None = "annot/valid.json",
        test_file: str | None = None,
        head_boxes_file: str | None = "annot/gt_valid.mat",
        image_dir: str = "images",
        center_shift: float = 15.0,
        scale_factor: float = 1.25,
    ) -> None:
        if scale_factor <= 0:
            raise ConfigError(f"MPII.scale_factor must be > 0, got {scale_factor}")
        if val_file is not None and head_boxes_file is None:
            raise ConfigError("MPII.head_boxes_file is required with val_file: PCKh needs the val people's head boxes")
        self.root = require_dir("MPII root", Path(root))
        self.image_dir = require_dir("MPII image folder", resolve(self.root, image_dir))
        self.center_shift = center_shift
        self.scale_factor = scale_factor
        files = {"train": train_file, "val": val_file, "test": test_file}
        paths = {split: require_file(f"MPII {split} annotation file", resolve(self.root, name)) for split, name in files.items() if name is not None}
        head_boxes_path = None if val_file is None or head_boxes_file is None else require_file("MPII head-box file", resolve(self.root, head_boxes_file))
        parsed: dict[Path, list[Any]] = {}
        self.splits: dict[str, list[PoseRecord]] = {}
        for split, path in paths.items():
            if path not in parsed:
                parsed[path] = load_json(path)
            self.splits[split] = self._parse(path, parsed[path], split)
        if head_boxes_path is not None:
            self._attach_head_boxes(head_boxes_path, paths["val"], self.splits["val"])

    # ------------------------------------------------------------------ JSON
    def _parse(self, path: Path, entries: Any, split: str) -> list[PoseRecord]:
        if not isinstance(entries, list) or not entries:
            raise AnnotationFormatError(path, "expected a non-empty JSON list of people")
        if not isinstance(entries[0], dict):
            raise AnnotationFormatError(path, f"record 0: expected an object, got {type(entries[0]).__name__}")
        if "joint_self" in entries[0] or "img_paths" in entries[0]:
            bearpaw = True
        elif "image" in entries[0]:
            bearpaw = False
        else:
            raise AnnotationFormatError(
                path,
                f"record 0 has keys {sorted(entries[0])}: neither the HRNet/MMPose format (image, center, scale, "
                "joints, joints_vis) nor bearpaw's (img_paths, objpos, scale_provided, joint_self, isValidation)",
            )
        records = []
        for index, entry in enumerate(entries):
            if bearpaw:
                record = self._bearpaw_record(path, index, entry, split)
            else:
                record = self._hrnet_record(path, index, entry, joints_required=split != "test")
            if record is not None:
                records.append(record)
        return records

    def _hrnet_record(self, path: Path, index: int, entry: Any, joints_required: bool) -> PoseRecord:
        where = _where(index, entry, "image")
        image = _field(path, where, entry, "image")
        if not isinstance(image, str) or not image:
            raise AnnotationFormatError(path, f"{where}: field 'image' must be a file name")
        center = _vector(path, where, _field(path, where, entry, "center"), "center", 2)
        scale = _scale(path, where, _field(path, where, entry, "scale"), "scale")
        if "joints" in entry or joints_required:
            joints = _array(path, where, _field(path, where, entry, "joints"), "joints", (NUM_JOINTS, 2))
            vis = _array(path, where, _field(path, where, entry, "joints_vis"), "joints_vis", (NUM_JOINTS,))
            keypoints, visible = joints - 1.0, vis > 0
        else:
            keypoints, visible = np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS, dtype=bool)
        return self._record(path, where, image, center, scale, keypoints, visible, {"file_index": index})

    def _bearpaw_record(self, path: Path, index: int, entry: Any, split: str) -> PoseRecord | None:
        where = _where(index, entry, "img_paths")
        image = _field(path, where, entry, "img_paths")
        if not isinstance(image, str) or not image:
            raise AnnotationFormatError(path, f"{where}: field 'img_paths' must be a file name")
        is_validation = finite_number(_field(path, where, entry, "isValidation"))
        if is_validation not in (0.0, 1.0):
            raise AnnotationFormatError(path, f"{where}: field 'isValidation' must be 0 or 1")
        if (split == "train") == bool(is_validation):
            return None
        center = _vector(path, where, _field(path, where, entry, "objpos"), "objpos", 2)
        scale = _scale(path, where, _field(path, where, entry, "scale_provided"), "scale_provided")
        joints = _array(path, where, _field(path, where, entry, "joint_self"), "joint_self", (NUM_JOINTS, 3))
        # genJSON.m pads unlisted joints with [0, 0, 0]; the third value is MPII's is_visible.
        visible = ~((joints[:, 0] == 0) & (joints[:, 1] == 0))
        extra = {"file_index": index, "occluded": visible & (joints[:, 2] == 0)}
        for key in ("annolist_index", "people_index"):
            if key in entry:
                extra[key] = entry[key]
        return self._record(path, where, image, center, scale, joints[:, :2] - 1.0, visible, extra)

    def _record(self, path: Path, where: str, image: str, center: np.ndarray, scale: float, keypoints: np.ndarray, visible: np.ndarray, extra: dict) -> PoseRecord:
        if not np.isfinite(keypoints[visible]).all():
            raise AnnotationFormatError(path, f"{where}: an annotated joint is not finite")
        # 1-based -> 0-based, and HRNet's/bearpaw's "avoid cropping limbs" adjustment.
        cx, cy = float(center[0]) - 1.0, float(center[1]) - 1.0 + self.center_shift * scale
        return PoseRecord(
            image=str(self.image_dir / image),
            center=(cx, cy),
            scale=scale * self.scale_factor,
            keypoints=keypoints.astype(np.float32),
            visible=visible.astype(bool),
            head_box=None,
            image_id=image,
            extra=extra,
        )

    # ------------------------------------------------------------------ head boxes
    def _attach_head_boxes(self, path: Path, val_path: Path, records: list[PoseRecord]) -> None:
        content = load_mat(path, ["headboxes_src"])
        boxes = _per_person(path, content["headboxes_src"], "headboxes_src", (2, 2))
        count = boxes.shape[-1]
        if count != len(records):
            raise AnnotationFormatError(path, f"headboxes_src has {count} people but the val file {val_path} has {len(records)}")
        missing = _per_person(path, content["jnt_missing"], "jnt_missing", (NUM_JOINTS,)) if "jnt_missing" in content else None
        positions = _per_person(path, content["pos_gt_src"], "pos_gt_src", (NUM_JOINTS, 2)) if "pos_gt_src" in content else None
        for other, name in ((missing, "jnt_missing"), (positions, "pos_gt_src")):
            if other is not None and other.shape[-1] != count:
                raise AnnotationFormatError(path, f"{name} has {other.shape[-1]} people but headboxes_src has {count}")
        for i, record in enumerate(records):
            (x1, y1), (x2, y2) = boxes[0, :, i] - 1.0, boxes[1, :, i] - 1.0
            if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
                raise AnnotationFormatError(path, f"headboxes_src person {i} (image {record.image_id!r}) is not finite")
            record.head_box = (float(x1), float(y1), float(x2), float(y2))
            if missing is not None:
                record.visible = missing[:, i] == 0
            if positions is not None:
                self._check_same_person(path, i, record, positions[:, :, i] - 1.0)

    @staticmethod
    def _check_same_person(path: Path, index: int, record: PoseRecord, reference: np.ndarray) -> None:
        """The val file and the head-box file must list the same people in the same order: the
        annotated joints of each person must lie within one head size of the file's."""
        both = record.visible & np.isfinite(reference).all(1)
        if not both.any():
            return
        x1, y1, x2, y2 = record.head_box
        head_size = 0.6 * math.hypot(x2 - x1, y2 - y1)
        distance = float(np.linalg.norm(record.keypoints[both] - reference[both], axis=1).mean())
        if distance > max(head_size, 1.0):
            raise AnnotationFormatError(
                path,
                f"person {index} (image {record.image_id!r}): pos_gt_src is {distance:.1f} px from the val file's joints "
                f"(head size {head_size:.1f} px); the head-box file must list the val people in the val file's order",
            )


def _per_person(path: Path, value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as ``(*shape, N)``; ``squeeze_me`` drops the last axis when N is 1."""
    raw = np.asarray(value)
    if not np.issubdtype(raw.dtype, np.number) or raw.shape[: len(shape)] != shape or raw.ndim not in (len(shape), len(shape) + 1):
        raise AnnotationFormatError(path, f"{name} must be numbers of shape {shape + ('N',)}, got {raw.dtype} {raw.shape}")
    array = raw.astype(np.float64)
    return array[..., None] if array.ndim == len(shape) else array


class MPIIRelease(ImageFileSource):
    """MPII from the official ``mpii_human_pose_v1_u12_1.mat`` (``RELEASE`` struct).

    Splits:

    * ``train``: every person with joint annotations (``annopoints``), a position (``objpos``) and
      a ``scale`` in the images with ``img_train == 1``, except the val images;
    * ``val``: the same for the images named in ``val_images`` (only with ``val_images``). The
      Tompson validation split used in papers is not in the ``.mat``: for the standard val
      numbers use ``MPII`` with HRNet's ``valid.json`` and ``gt_valid.mat``;
    * ``test``: every person with ``objpos`` and ``scale`` in the images with ``img_train == 0``
      (MPII's test set: no joints, all unannotated; for ``predict``).

    Each record carries its head box (``x1, y1, x2, y2`` of the annotation), ``image_id`` the image
    name, and ``extra`` the 0-based ``annolist_index`` and ``person_index`` (position in
    ``annorect``) and ``occluded`` (MPII's ``is_visible == 0``).

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        annotation_file: the ``RELEASE`` ``.mat`` file.
        image_dir: image folder.
        val_images: text file with one image name per line (blank lines and ``#`` comments
            skipped) whose people form the val split; ``None``: no val split.
        center_shift: the centre moves down by ``center_shift * scale`` pixels (HRNet, bearpaw: 15).
        scale_factor: the file's scale is multiplied by this (HRNet, bearpaw: 1.25).

    Coordinates in the file are 1-based (MATLAB); records are 0-based pixel indices. A joint is
    annotated when the person's ``annopoints.point`` lists its ``id`` (0 = right ankle ... 15 =
    left wrist, the ``MPII_SKELETON`` order); occluded joints stay annotated.
    """

    skeleton: Skeleton = MPII_SKELETON
    protocol: PoseProtocol = PCKH_MPII

    def __init__(
        self,
        root: str = "data/mpii",
        annotation_file: str = "mpii_human_pose_v1_u12_1.mat",
        image_dir: str = "images",
        val_images: str | None = None,
        center_shift: float = 15.0,
        scale_factor: float = 1.25,
    ) -> None:
        if scale_factor <= 0:
            raise ConfigError(f"MPIIRelease.scale_factor must be > 0, got {scale_factor}")
        self.root = require_dir("MPII root", Path(root))
        self.image_dir = require_dir("MPII image folder", resolve(self.root, image_dir))
        self.path = require_file("MPII annotation file", resolve(self.root, annotation_file))
        val_path = None if val_images is None else require_file("MPII val image list", resolve(self.root, val_images))
        self.center_shift = center_shift
        self.scale_factor = scale_factor
        release = load_mat(self.path, ["RELEASE"])["RELEASE"]
        for name in ("annolist", "img_train"):
            if not hasattr(release, name):
                raise AnnotationFormatError(self.path, f"RELEASE has no field {name!r}")
        annolist = _as_list(release.annolist)
        img_train = np.atleast_1d(np.asarray(release.img_train))
        if len(img_train) != len(annolist):
            raise AnnotationFormatError(self.path, f"RELEASE.img_train has {len(img_train)} entries for {len(annolist)} images in annolist")
        val_names = self._read_names(val_path) if val_path is not None else set()
        self.splits: dict[str, list[PoseRecord]] = {"train": [], "test": []}
        if val_path is not None:
            self.splits["val"] = []
        train_names = set()
        for i, annotation in enumerate(annolist):
            name = _image_name(self.path, i, annotation)
            is_train = finite_number(img_train[i]) == 1.0
            if is_train:
                train_names.add(name)
            split = ("val" if name in val_names else "train") if is_train else "test"
            for p, rect in enumerate(_as_list(getattr(annotation, "annorect", None))):
                record = self._record(i, name, p, rect, with_joints=is_train)
                if record is not None:
                    self.splits[split].append(record)
        unknown = sorted(val_names - train_names)
        if unknown:
            raise AnnotationFormatError(val_path, f"image {unknown[0]!r} is not a training image (img_train == 1) of {self.path} ({len(unknown)} such names)")

    def records(self, split: str) -> list[PoseRecord]:
        if split == "val" and "val" not in self.splits:
            raise ValueError("MPIIRelease has no val split without val_images (the .mat does not carry Tompson's split)")
        return super().records(split)

    @staticmethod
    def _read_names(path: Path) -> set[str]:
        names = set()
        for line in path.read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                names.add(line)
        return names

    def _record(self, i: int, name: str, p: int, rect: Any, with_joints: bool) -> PoseRecord | None:
        where = f"annolist[{i}] (image {name!r}) annorect[{p}]"
        objpos, scale = getattr(rect, "objpos", None), finite_number(getattr(rect, "scale", None))
        x, y = finite_number(getattr(objpos, "x", None)), finite_number(getattr(objpos, "y", None))
        if x is None or y is None or scale is None:
            return None  # people without a rough position and scale cannot be cropped
        if scale <= 0:
            raise AnnotationFormatError(self.path, f"{where}: scale must be > 0, got {scale}")
        keypoints = np.zeros((NUM_JOINTS, 2), dtype=np.float32)
        visible = np.zeros(NUM_JOINTS, dtype=bool)
        occluded = np.zeros(NUM_JOINTS, dtype=bool)
        if with_joints:
            points = _as_list(getattr(getattr(rect, "annopoints", None), "point", None))
            if not points:
                return None  # a training-image person without joints (not one of the single people)
            for k, point in enumerate(points):
                joint = finite_number(getattr(point, "id", None))
                px, py = finite_number(getattr(point, "x", None)), finite_number(getattr(point, "y", None))
                if joint is None or not 0 <= joint < NUM_JOINTS or joint != int(joint):
                    raise AnnotationFormatError(self.path, f"{where}: annopoints.point[{k}] has joint id {getattr(point, 'id', None)!r}, not 0..15")
                if px is None or py is None:
                    raise AnnotationFormatError(self.path, f"{where}: annopoints.point[{k}] (joint {int(joint)}) has no finite x, y")
                keypoints[int(joint)] = (px - 1.0, py - 1.0)
                visible[int(joint)] = True
                occluded[int(joint)] = _is_visible(getattr(point, "is_visible", None)) is False
        box = [finite_number(getattr(rect, key, None)) for key in ("x1", "y1", "x2", "y2")]
        head_box = None if any(v is None for v in box) else tuple(v - 1.0 for v in box)
        return PoseRecord(
            image=str(self.image_dir / name),
            center=(x - 1.0, y - 1.0 + self.center_shift * scale),
            scale=scale * self.scale_factor,
            keypoints=keypoints,
            visible=visible,
            head_box=head_box,
            image_id=name,
            extra={"annolist_index": i, "person_index": p, "occluded": occluded},
        )


def _as_list(value: Any) -> list[Any]:
    """A MATLAB struct array read with ``squeeze_me``: one struct, an array of them, or empty."""
    if value is None:
        return []
    if isinstance(value, np.ndarray):
        return list(value.flat)
    return [value]


def _image_name(path: Path, index: int, annotation: Any) -> str:
    name = getattr(getattr(annotation, "image", None), "name", None)
    if not isinstance(name, str) or not name:
        raise AnnotationFormatError(path, f"annolist[{index}]: image.name is missing")
    return name


def _is_visible(value: Any) -> bool | None:
    """MPII's ``is_visible``: 1, 0, '1', '0', or empty (unknown)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, str):
        value = value.strip()
        return None if value not in ("0", "1") else value == "1"
    number = finite_number(value)
    return None if number is None else number != 0


def _where(index: int, entry: Any, image_key: str) -> str:
    name = entry.get(image_key) if isinstance(entry, dict) else None
    return f"record {index}" + (f" (image {name!r})" if isinstance(name, str) else "")


def _field(path: Path, where: str, entry: Any, key: str) -> Any:
    if not isinstance(entry, dict):
        raise AnnotationFormatError(path, f"{where}: expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise AnnotationFormatError(path, f"{where}: missing field {key!r}")
    return entry[key]


def _array(path: Path, where: str, value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise AnnotationFormatError(path, f"{where}: field {name!r} must be numbers of shape {shape}") from None
    if array.shape != shape:
        raise AnnotationFormatError(path, f"{where}: field {name!r} must have shape {shape}, got {array.shape}")
    return array


def _vector(path: Path, where: str, value: Any, name: str, size: int) -> np.ndarray:
    array = _array(path, where, value, name, (size,))
    if not np.isfinite(array).all():
        raise AnnotationFormatError(path, f"{where}: field {name!r} is not finite")
    return array


def _scale(path: Path, where: str, value: Any, name: str) -> float:
    number = finite_number(value)
    if number is None or number <= 0:
        raise AnnotationFormatError(path, f"{where}: field {name!r} must be a number > 0, got {value!r}")
    return number
