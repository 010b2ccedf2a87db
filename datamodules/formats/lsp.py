"""Leeds Sports Pose (Johnson & Everingham, BMVC 2010) and LSP-extended (CVPR 2011): 14 joints,
PCK@0.2 normalised by the torso.

Files: ``<root>/joints.mat`` and ``<root>/images/im0001.jpg`` ... ``im2000.jpg`` for LSP;
``<extended_root>/joints.mat`` and ``images/im00001.jpg`` ... ``im10000.jpg`` for LSP-extended.

* LSP's ``joints`` is ``3 x 14 x 2000`` (``x``, ``y``, and a flag that is 1 for an *occluded*
  joint, i.e. 1 - visibility). Every joint is annotated (occluded ones at the annotator's
  estimate), so every joint is ``visible`` (annotated) and the flag goes to ``extra["occluded"]``.
* LSP-extended's ``joints`` is ``14 x 3 x 10000`` with a *visibility* flag (1 visible). Its
  crowd-sourced positions of joints flagged invisible are not dependable, so those joints are
  left unannotated (no loss), the conservative reading.

Either layout is accepted in either file (the axis of length 3 holds ``x, y, flag``).
Coordinates are 1-based MATLAB coordinates; records are 0-based pixel indices.

A NaN position is the files' mark of a joint without a position (it occurs in the released
files): such a joint is unannotated, a convention of the format and not a bad record; a NaN flag
goes with it. An infinite coordinate has no such meaning and is a bad record (``non_finite``).

Splits, as in the literature: LSP's first 1000 images train, its last 1000 test. Papers report on
the 1000 test images, so ``val`` is the test split unless ``num_val`` holds out training images.
LSP-extended adds its 10000 images to ``train`` only. The split of a person is its index in
``joints.mat``, so a skipped bad record moves no other person to another split.

LSP has no person box and no head box (``head_box`` None): a person's crop is the box around the
annotated joints, ``center`` its centre and ``200 * scale`` its longer side times ``box_padding``.
The images are roughly person-centred crops, so this box is what a detector would give.

Checks, per person (a failure is a bad record; ``on_bad_record`` decides): no infinite
coordinate; every flag that is not NaN is 0 or 1 (``visibility_flag``); an LSP person has at least
one joint with a position (``no_joints``); the image file is there (``image_missing``; the names
come from the person's index, not from the file, so they cannot leave the folder). An
LSP-extended person without a visible joint teaches nothing and is left out, counted as filtered
(``no_visible_joint``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_flags, check_required
from core.skeletons import LSP_SKELETON, PCK_TORSO, PoseProtocol, Skeleton
from datamodules.formats.files import load_mat, resolve
from datamodules.formats.sources import ImageFileSource, joint_box_center_scale
from datamodules.formats.validators import image_file
from datamodules.pose import PoseRecord

__all__ = ["LSP"]

NUM_JOINTS = 14
LSP_TRAIN = 1000  # images 1..1000 train, 1001..2000 test


class LSP(ImageFileSource):
    """LSP (train 1000 / test 1000 people) with optional LSP-extended training people.

    Args:
        root: LSP folder (``joints.mat``, ``images/im0001.jpg`` ...).
        extended_root: LSP-extended folder (``joints.mat``, ``images/im00001.jpg`` ...); its
            people join the train split. ``None``: LSP only. Relative to the working directory
            (not to ``root``) unless absolute.
        num_val: the last ``num_val`` of LSP's 1000 training people form the val split and
            leave train; 0: val is the 1000 test people (what papers report).
        annotation_file: the joints file in each folder.
        image_dir: the image folder in each folder.
        box_padding: ``200 * scale`` is the annotated joints' box's longer side times this.
        on_bad_record: ``error`` or ``skip`` a bad person (see the module's checks).

    Records: ``image_id`` is the image file name, ``extra`` holds ``dataset`` (``lsp`` or
    ``lspet``), the 0-based ``index`` in its ``joints.mat`` and ``occluded`` (per joint).
    """

    skeleton: Skeleton = LSP_SKELETON
    protocol: PoseProtocol = PCK_TORSO

    def __init__(
        self,
        root: str = "data/lsp",
        extended_root: str | None = None,
        num_val: int = 0,
        annotation_file: str = "joints.mat",
        image_dir: str = "images",
        box_padding: float = 1.25,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if not 0 <= num_val < LSP_TRAIN:
            raise ConfigError(f"LSP.num_val must be in [0, {LSP_TRAIN}), got {num_val}")
        if box_padding <= 0:
            raise ConfigError(f"LSP.box_padding must be > 0, got {box_padding}")
        self.checker = RecordChecker("LSP", on_bad_record)
        self.root = Path(root)
        self.extended_root = None if extended_root is None else Path(extended_root)
        self.annotation_file = annotation_file
        self.image_dir = image_dir
        check_required(self.required_paths(), root=self.root, owner=self)
        self.box_padding = box_padding

        path = resolve(self.root, annotation_file)
        people = self._read(self.root, extended=False)
        first_val = LSP_TRAIN - num_val
        train = [r for r in people if r.extra["index"] < first_val]
        val = [r for r in people if first_val <= r.extra["index"] < LSP_TRAIN]
        test = [r for r in people if r.extra["index"] >= LSP_TRAIN]
        self.checker.kept(path, len(train), "train")
        if num_val:
            self.checker.kept(path, len(val), "val")
        else:
            val = test
        self.checker.kept(path, len(test), "test")
        if self.extended_root is not None:
            extended = self._read(self.extended_root, extended=True)
            self.checker.kept(resolve(self.extended_root, annotation_file), len(extended), "train")
            train = train + extended
        self.splits: dict[str, list[PoseRecord]] = {"train": train, "val": val, "test": test}

    def required_paths(self) -> list[RequiredPath]:
        paths = []
        for name, root, arg in (("LSP", self.root, "root"), ("LSP-extended", self.extended_root, "extended_root")):
            if root is None:
                continue
            paths += [
                RequiredPath(f"{name} root", root, arg, "folder"),
                RequiredPath(f"{name} annotation file", resolve(root, self.annotation_file), "annotation_file"),
                RequiredPath(f"{name} image folder", resolve(root, self.image_dir), "image_dir", "folder"),
            ]
        return paths

    def _read(self, root: Path, extended: bool) -> list[PoseRecord]:
        path = resolve(root, self.annotation_file)
        images = resolve(root, self.image_dir)
        joints = _people_joints(path, load_mat(path, ["joints"])["joints"])
        if not extended and len(joints) != 2 * LSP_TRAIN:
            raise AnnotationFormatError(path, f"LSP has {2 * LSP_TRAIN} people, the file has {len(joints)}")
        records = []
        for i, person in enumerate(joints):
            name = f"im{i + 1:05d}.jpg" if extended else f"im{i + 1:04d}.jpg"
            with self.checker.record(path, f"person {i} ({name})"):
                record = self._record(path, images, name, i, person, extended)
                if record is not None:
                    records.append(record)
        return records

    def _record(self, path: Path, images: Path, name: str, index: int, person: np.ndarray, extended: bool) -> PoseRecord | None:
        xy, flag = person[:, :2], person[:, 2]
        if np.isinf(xy).any():
            raise RecordProblem("non_finite", "field 'joints' holds an infinite coordinate (only NaN marks a joint without a position)")
        # NaN flags go with NaN positions (the files' "no position" mark); the others are 0 or 1.
        check_flags(flag[~np.isnan(flag)], (0, 1), "joints flag")
        finite = ~np.isnan(xy).any(1)
        visible = finite & (flag == 1) if extended else finite
        occluded = (flag == 0) if extended else (flag == 1)
        keypoints = np.where(finite[:, None], xy - 1.0, 0.0).astype(np.float32)
        box = joint_box_center_scale(keypoints, visible, self.box_padding)
        if box is None:
            if not extended:
                raise RecordProblem("no_joints", "no joint has a position")
            self.checker.filtered("no_visible_joint", path)  # an LSP-extended person with no visible joint teaches nothing
            return None
        center, scale = box
        image = image_file(images, name, "image")
        return PoseRecord(
            image=str(image),
            center=center,
            scale=scale,
            keypoints=keypoints,
            visible=visible,
            head_box=None,
            image_id=name,
            extra={"dataset": "lspet" if extended else "lsp", "index": index, "occluded": occluded & visible},
        )


def _people_joints(path: Path, joints: object) -> np.ndarray:
    """``joints`` as ``(N, 14, 3)`` from LSP's ``3 x 14 x N`` or LSP-extended's ``14 x 3 x N``."""
    array = np.asarray(joints)
    if not np.issubdtype(array.dtype, np.number) or array.ndim not in (2, 3):
        raise AnnotationFormatError(path, f"'joints' must be a 3 x 14 x N or 14 x 3 x N number array, got {array.dtype} {array.shape}")
    if array.ndim == 2:  # squeeze_me drops N when it is 1
        array = array[..., None]
    if array.shape[:2] == (3, NUM_JOINTS):
        return array.transpose(2, 1, 0).astype(np.float64)
    if array.shape[:2] == (NUM_JOINTS, 3):
        return array.transpose(2, 0, 1).astype(np.float64)
    raise AnnotationFormatError(path, f"'joints' must be 3 x 14 x N (LSP) or 14 x 3 x N (LSP-extended), got {' x '.join(map(str, array.shape))}")
