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

Checks, per person (a failure is a bad record, see ``core.records``; ``on_bad_record`` decides):
the fields are there and numbers of the right shape (16 joints: ``keypoint_count``); every joint
coordinate is finite, also those of joints marked unannotated (HRNet's ``joints_vis`` 0, bearpaw's
``[0, 0, 0]`` padding, MPII's test people), since they are numbers in these files and a NaN among
them would reach the loss; ``joints_vis`` is 0 or 1, bearpaw's ``is_visible`` 0 or 1, the .mat's
``is_visible`` 0, 1 or empty; the centre is finite and the scale > 0; head boxes are finite with
positive width and height (MPII's files carry no image size, so they are not checked against the
image); the image name stays inside the image folder and the file is there. MPII has no NaN
convention: a NaN anywhere is a bad record.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_box, check_flags, check_required, finite_array
from core.skeletons import MPII_SKELETON, PCKH_MPII, PoseProtocol, Skeleton
from datamodules.formats.files import load_json, load_mat, resolve
from datamodules.formats.sources import ImageFileSource
from datamodules.formats.validators import finite_number, image_file, joint_array, number, positive_number, record_field
from datamodules.pose import PoseRecord

__all__ = ["MPII", "MPIIRelease"]

NUM_JOINTS = 16
# Keys that tell the two JSON layouts apart.
_BEARPAW_KEYS = ("joint_self", "img_paths")
_HRNET_KEYS = ("image", "joints_vis")


@dataclasses.dataclass
class _People:
    """The people of one split of one file: the records kept, each one's column in the split's
    head-box file (its position among the split's people, bad ones included), and how many people
    the split has in the file."""

    records: list[PoseRecord] = dataclasses.field(default_factory=list)
    columns: list[int] = dataclasses.field(default_factory=list)
    count: int = 0


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
        on_bad_record: ``error`` (stop at the first bad person, naming file and record) or
            ``skip`` (drop it, count it in ``data_report()``); see the module's list of checks. A
            person whose head box is bad is a bad record of the head-box file.

    Coordinates in the files are 1-based (MATLAB); records are 0-based pixel indices. Annotated
    joints: HRNet's ``joints_vis > 0``; in bearpaw's file a missing joint is ``[0, 0, 0]`` (its
    third value is MPII's ``is_visible`` occlusion flag, which does not make a joint unannotated).
    Splits given the same file share its people: each person is checked (and counted) once.
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
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if scale_factor <= 0:
            raise ConfigError(f"MPII.scale_factor must be > 0, got {scale_factor}")
        if val_file is not None and head_boxes_file is None:
            raise ConfigError("MPII.head_boxes_file is required with val_file: PCKh needs the val people's head boxes")
        self.checker = RecordChecker("MPII", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.files = {split: resolve(self.root, name) for split, name in (("train", train_file), ("val", val_file), ("test", test_file)) if name is not None}
        self.head_boxes_path = None if val_file is None or head_boxes_file is None else resolve(self.root, head_boxes_file)
        check_required(self.required_paths(), root=self.root, owner=self)
        self.center_shift = center_shift
        self.scale_factor = scale_factor

        contents: dict[Path, Any] = {}
        parsed: dict[tuple[Path, str], _People] = {}
        self.splits: dict[str, list[PoseRecord]] = {}
        for split, path in self.files.items():
            if path not in contents:
                contents[path] = load_json(path)
            people = self._people(path, contents[path], split, parsed)
            if split == "val" and self.head_boxes_path is not None:
                records = self._attach_head_boxes(self.head_boxes_path, path, people)
            elif split == "test" and self.files.get("val") == path:
                records = self.splits["val"]  # the val people again, head boxes included
            else:
                records = people.records
            # Each parse is counted once: a split that reuses another's people adds nothing.
            if not any(records is other for other in self.splits.values()):
                self.checker.kept(path, len(records), split)
            self.splits[split] = records

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("MPII root", self.root, "root", "folder"), RequiredPath("MPII image folder", self.image_dir, "image_dir", "folder")]
        paths += [RequiredPath(f"MPII {split} annotation file", path, f"{split}_file") for split, path in self.files.items()]
        if self.head_boxes_path is not None:
            paths.append(RequiredPath("MPII head-box file", self.head_boxes_path, "head_boxes_file"))
        return paths

    # ------------------------------------------------------------------ JSON
    def _people(self, path: Path, entries: Any, split: str, parsed: dict[tuple[Path, str], _People]) -> _People:
        """The people of ``split`` in ``path``, parsing each file (and each bearpaw role) once."""
        if not isinstance(entries, list):
            raise AnnotationFormatError(path, f"expected a JSON list of people, got {type(entries).__name__}")
        if not entries:
            return _People()  # checker.kept names the empty file
        layout = _layout(path, entries)
        if layout == "bearpaw":
            # One file, both splits: the train parse and the val/test parse are its two halves.
            if (path, "train") not in parsed:
                parsed[(path, "train")], parsed[(path, "val")] = self._parse_bearpaw(path, entries)
            return parsed[(path, "train" if split == "train" else "val")]
        if (path, "hrnet") not in parsed:
            parsed[(path, "hrnet")] = self._parse_hrnet(path, entries, joints_required=split != "test")
        return parsed[(path, "hrnet")]

    def _parse_hrnet(self, path: Path, entries: list, joints_required: bool) -> _People:
        people = _People(count=len(entries))
        for index, entry in enumerate(entries):
            with self.checker.record(path, _where(index, entry, "image")):
                people.records.append(self._hrnet_record(index, entry, joints_required))
                people.columns.append(index)
        return people

    def _parse_bearpaw(self, path: Path, entries: list) -> tuple[_People, _People]:
        train, val = _People(), _People()
        for index, entry in enumerate(entries):
            with self.checker.record(path, _where(index, entry, "img_paths")):
                is_validation = number(record_field(entry, "isValidation"), "isValidation")
                if is_validation not in (0.0, 1.0):
                    raise RecordProblem("wrong_type", f"field 'isValidation' must be 0 or 1, got {is_validation:g}")
                people = val if is_validation else train
                # The person takes its head-box column now, so that a bad one keeps the others aligned.
                column = people.count
                people.count += 1
                people.records.append(self._bearpaw_record(index, entry))
                people.columns.append(column)
        return train, val

    def _hrnet_record(self, index: int, entry: Any, joints_required: bool) -> PoseRecord:
        name = record_field(entry, "image")
        center = finite_array(record_field(entry, "center"), "center", (2,))
        scale = positive_number(record_field(entry, "scale"), "scale")
        if "joints" in entry or joints_required:
            # Unannotated joints hold numbers too (HRNet writes [-1, -1]): all must be finite.
            joints = joint_array(record_field(entry, "joints"), "joints", (NUM_JOINTS, 2))
            vis = joint_array(record_field(entry, "joints_vis"), "joints_vis", (NUM_JOINTS,))
            check_flags(vis, (0, 1), "joints_vis")
            keypoints, visible = joints - 1.0, vis > 0
        else:
            keypoints, visible = np.zeros((NUM_JOINTS, 2)), np.zeros(NUM_JOINTS, dtype=bool)
        image = image_file(self.image_dir, name, "image")
        return self._record(image, name, center, scale, keypoints, visible, {"file_index": index})

    def _bearpaw_record(self, index: int, entry: Any) -> PoseRecord:
        name = record_field(entry, "img_paths")
        center = finite_array(record_field(entry, "objpos"), "objpos", (2,))
        scale = positive_number(record_field(entry, "scale_provided"), "scale_provided")
        joints = joint_array(record_field(entry, "joint_self"), "joint_self", (NUM_JOINTS, 3))
        check_flags(joints[:, 2], (0, 1), "joint_self is_visible")
        # genJSON.m pads unlisted joints with [0, 0, 0]; the third value is MPII's is_visible.
        visible = ~((joints[:, 0] == 0) & (joints[:, 1] == 0))
        extra = {"file_index": index, "occluded": visible & (joints[:, 2] == 0)}
        for key in ("annolist_index", "people_index"):
            if key in entry:
                extra[key] = entry[key]
        image = image_file(self.image_dir, name, "img_paths")
        return self._record(image, name, center, scale, joints[:, :2] - 1.0, visible, extra)

    def _record(self, image: Path, name: str, center: np.ndarray, scale: float, keypoints: np.ndarray, visible: np.ndarray, extra: dict) -> PoseRecord:
        # 1-based -> 0-based, and HRNet's/bearpaw's "avoid cropping limbs" adjustment.
        cx, cy = float(center[0]) - 1.0, float(center[1]) - 1.0 + self.center_shift * scale
        return PoseRecord(
            image=str(image),
            center=(cx, cy),
            scale=scale * self.scale_factor,
            keypoints=keypoints.astype(np.float32),
            visible=visible.astype(bool),
            head_box=None,
            image_id=name,
            extra=extra,
        )

    # ------------------------------------------------------------------ head boxes
    def _attach_head_boxes(self, path: Path, val_path: Path, people: _People) -> list[PoseRecord]:
        """The val records with their head boxes (copies: another split may share the parse)."""
        content = load_mat(path, ["headboxes_src"])
        boxes = _per_person(path, content["headboxes_src"], "headboxes_src", (2, 2))
        count = boxes.shape[-1]
        if count != people.count:
            raise AnnotationFormatError(path, f"headboxes_src has {count} people but the val file {val_path} has {people.count}")
        missing = _per_person(path, content["jnt_missing"], "jnt_missing", (NUM_JOINTS,)) if "jnt_missing" in content else None
        positions = _per_person(path, content["pos_gt_src"], "pos_gt_src", (NUM_JOINTS, 2)) if "pos_gt_src" in content else None
        for other, name in ((missing, "jnt_missing"), (positions, "pos_gt_src")):
            if other is not None and other.shape[-1] != count:
                raise AnnotationFormatError(path, f"{name} has {other.shape[-1]} people but headboxes_src has {count}")
        records = []
        for column, record in zip(people.columns, people.records):
            with self.checker.record(path, f"person {column} (image {record.image_id!r})"):
                (x1, y1), (x2, y2) = boxes[0, :, column] - 1.0, boxes[1, :, column] - 1.0
                head_box = (float(x1), float(y1), float(x2), float(y2))
                check_box(head_box, None, None, "headboxes_src")
                visible = record.visible
                if missing is not None:
                    check_flags(missing[:, column], (0, 1), "jnt_missing")
                    visible = missing[:, column] == 0
                record = dataclasses.replace(record, head_box=head_box, visible=visible)
                if positions is not None:
                    self._check_same_person(path, column, record, positions[:, :, column] - 1.0)
                records.append(record)
        return records

    @staticmethod
    def _check_same_person(path: Path, index: int, record: PoseRecord, reference: np.ndarray) -> None:
        """The val file and the head-box file must list the same people in the same order: the
        annotated joints of each person must lie within one head size of the file's. A mismatch
        is the files' order, not one bad record, so it stops the reading under either policy."""
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


def _layout(path: Path, entries: list) -> str:
    """``bearpaw`` or ``hrnet``, from the first person whose keys say which (one broken person
    does not decide the layout of the file)."""
    for entry in entries:
        if isinstance(entry, dict):
            if any(key in entry for key in _BEARPAW_KEYS):
                return "bearpaw"
            if any(key in entry for key in _HRNET_KEYS):
                return "hrnet"
    first = entries[0]
    keys = sorted(first) if isinstance(first, dict) else type(first).__name__
    raise AnnotationFormatError(
        path,
        f"record 0 has keys {keys}: neither the HRNet/MMPose format (image, center, scale, "
        "joints, joints_vis) nor bearpaw's (img_paths, objpos, scale_provided, joint_self, isValidation)",
    )


def _per_person(path: Path, value: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as ``(*shape, N)``; ``squeeze_me`` drops the last axis when N is 1."""
    raw = np.asarray(value)
    if not np.issubdtype(raw.dtype, np.number) or raw.shape[: len(shape)] != shape or raw.ndim not in (len(shape), len(shape) + 1):
        raise AnnotationFormatError(path, f"{name} must be numbers of shape {shape + ('N',)}, got {raw.dtype} {raw.shape}")
    array = raw.astype(np.float64)
    return array[..., None] if array.ndim == len(shape) else array


def _where(index: int, entry: Any, image_key: str) -> str:
    name = entry.get(image_key) if isinstance(entry, dict) else None
    return f"record {index}" + (f" (image {name!r})" if isinstance(name, str) else "")


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

    People left out by these rules are counted in ``data_report()`` as filtered: ``no_position``
    (no ``objpos`` or ``scale``: cannot be cropped) and ``no_joints`` (a training-image person
    without ``annopoints``, not one of MPII's annotated single people). An empty field (MATLAB's
    ``[]``) is absent; a NaN or inf is a bad record.

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
        on_bad_record: ``error`` or ``skip`` a bad person (``core.records``); the checks are the
            module's: joint ids 0..15 once each, finite positions, ``is_visible`` 0, 1 or empty,
            ``img_train`` 0 or 1, a head box of positive size, the image inside ``image_dir`` and
            there.

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
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if scale_factor <= 0:
            raise ConfigError(f"MPIIRelease.scale_factor must be > 0, got {scale_factor}")
        self.checker = RecordChecker("MPIIRelease", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.path = resolve(self.root, annotation_file)
        self.val_path = None if val_images is None else resolve(self.root, val_images)
        check_required(self.required_paths(), root=self.root, owner=self)
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
        val_names = self._read_names(self.val_path) if self.val_path is not None else set()
        self.splits: dict[str, list[PoseRecord]] = {"train": [], "test": []}
        if self.val_path is not None:
            self.splits["val"] = []
        train_names = set()
        has_test_images = False
        for i, annotation in enumerate(annolist):
            name = getattr(getattr(annotation, "image", None), "name", None)
            name = name if isinstance(name, str) and name else None  # a missing name is each person's problem
            flag = finite_number(img_train[i])
            is_train = flag == 1.0
            has_test_images |= flag == 0.0
            if is_train and name is not None:
                train_names.add(name)
            split = ("val" if name in val_names else "train") if is_train else "test"
            for p, rect in enumerate(_as_list(getattr(annotation, "annorect", None))):
                where = f"annolist[{i}]" + (f" (image {name!r})" if name is not None else "") + f" annorect[{p}]"
                with self.checker.record(self.path, where):
                    if flag not in (0.0, 1.0):
                        raise RecordProblem("wrong_type", f"RELEASE.img_train[{i}] must be 0 or 1, got {img_train[i]!r}")
                    record = self._record(i, name, p, rect, with_joints=is_train)
                    if record is not None:
                        self.splits[split].append(record)
        if self.val_path is not None:
            unknown = sorted(val_names - train_names)
            if unknown:
                raise AnnotationFormatError(self.val_path, f"image {unknown[0]!r} is not a training image (img_train == 1) of {self.path} ({len(unknown)} such names)")
        self.checker.kept(self.path, len(self.splits["train"]), "train")
        if self.val_path is not None:
            self.checker.kept(self.path, len(self.splits["val"]), "val")
        # The test split is implicit (img_train == 0): a file without test images simply has none.
        if has_test_images:
            self.checker.kept(self.path, len(self.splits["test"]), "test")

    def required_paths(self) -> list[RequiredPath]:
        paths = [
            RequiredPath("MPII root", self.root, "root", "folder"),
            RequiredPath("MPII image folder", self.image_dir, "image_dir", "folder"),
            RequiredPath("MPII annotation file", self.path, "annotation_file"),
        ]
        if self.val_path is not None:
            paths.append(RequiredPath("MPII val image list", self.val_path, "val_images"))
        return paths

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

    def _record(self, i: int, name: str | None, p: int, rect: Any, with_joints: bool) -> PoseRecord | None:
        if name is None:
            raise RecordProblem("missing_field", f"annolist[{i}].image.name is missing")
        objpos = getattr(rect, "objpos", None)
        scale = _mat_number(getattr(rect, "scale", None), "scale")
        x, y = _mat_number(getattr(objpos, "x", None), "objpos.x"), _mat_number(getattr(objpos, "y", None), "objpos.y")
        if x is None or y is None or scale is None:
            self.checker.filtered("no_position", self.path)  # no rough position and scale: cannot be cropped
            return None
        if scale <= 0:
            raise RecordProblem("empty_box", f"field 'scale' must be > 0, got {scale:g}")
        keypoints = np.zeros((NUM_JOINTS, 2), dtype=np.float32)
        visible = np.zeros(NUM_JOINTS, dtype=bool)
        occluded = np.zeros(NUM_JOINTS, dtype=bool)
        if with_joints:
            points = _as_list(getattr(getattr(rect, "annopoints", None), "point", None))
            if not points:
                self.checker.filtered("no_joints", self.path)  # a training-image person without joints (not one of the single people)
                return None
            for k, point in enumerate(points):
                joint = finite_number(getattr(point, "id", None))
                if joint is None or not 0 <= joint < NUM_JOINTS or joint != int(joint):
                    raise RecordProblem("keypoint_count", f"annopoints.point[{k}] has joint id {getattr(point, 'id', None)!r}, not 0..15")
                joint = int(joint)
                if visible[joint]:
                    raise RecordProblem("duplicate", f"annopoints.point[{k}] lists joint {joint} a second time")
                px, py = _mat_number(getattr(point, "x", None), f"annopoints.point[{k}].x"), _mat_number(getattr(point, "y", None), f"annopoints.point[{k}].y")
                if px is None or py is None:
                    raise RecordProblem("missing_field", f"annopoints.point[{k}] (joint {joint}) has no x, y")
                keypoints[joint] = (px - 1.0, py - 1.0)
                visible[joint] = True
                occluded[joint] = _is_visible(getattr(point, "is_visible", None), f"annopoints.point[{k}].is_visible") is False
        corners = [_mat_number(getattr(rect, key, None), key) for key in ("x1", "y1", "x2", "y2")]
        head_box = None
        if all(v is not None for v in corners):
            head_box = tuple(v - 1.0 for v in corners)
            check_box(head_box, None, None, "x1, y1, x2, y2 (head box)")
        image = image_file(self.image_dir, name, "image.name")
        return PoseRecord(
            image=str(image),
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


def _mat_number(value: Any, field: str) -> float | None:
    """A number of the ``.mat``: None where MATLAB left the field empty (``[]``) or it is absent; a
    NaN or inf, or something that is not a number, is a problem."""
    if value is None or (isinstance(value, np.ndarray) and value.size == 0):
        return None
    return number(value, field)


def _is_visible(value: Any, field: str) -> bool | None:
    """MPII's ``is_visible``: 1, 0, '1', '0', or empty (unknown); anything else is a problem."""
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if value is None or (isinstance(value, np.ndarray) and value.size == 0):
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
        if value not in ("0", "1"):
            raise RecordProblem("visibility_flag", f"field {field!r} holds {value!r}, not one of 0, 1")
        return value == "1"
    number_value = finite_number(value)
    if number_value not in (0.0, 1.0):
        raise RecordProblem("visibility_flag", f"field {field!r} holds {value!r}, not one of 0, 1")
    return number_value == 1.0
