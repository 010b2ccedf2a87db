"""FLIC, Frames Labeled In Cinema (Sapp & Taskar, CVPR 2013): 11 upper-body joints, PCK@0.2
normalised by the torso (the observer-centric evaluation of Tompson et al. and Newell et al.).

Files: ``<root>/examples.mat`` holding the struct array ``examples`` (5003 frames) with fields
``coords`` (``2 x 29``: ``x``/``y`` of 29 joint slots, NaN where not annotated), ``filepath``
(image name under ``<root>/images``), ``istrain``, ``istest``, ``torsobox`` (``x1 y1 x2 y2``) and
``imgdims``. Eleven of the 29 slots are annotated; in 1-based MATLAB columns they are
1 lsho, 2 lelb, 3 lwri, 4 rsho, 5 relb, 6 rwri, 7 lhip, 10 rhip, 13 leye, 14 reye, 17 nose, the
order of ``FLIC_SKELETON``. Coordinates are 1-based MATLAB coordinates; records are 0-based pixel
indices.

NaN is FLIC's documented mark of a joint that is not annotated: such a joint becomes unannotated
(``visible`` False, no loss), a convention of the format and not a bad record. An infinite
coordinate has no such meaning and is a bad record (``non_finite``).

Splits: ``istrain`` frames train (3987), ``istest`` frames test (1016, the frames papers report
on); ``val`` is the test split unless ``num_val`` holds out training frames. A frame in neither
is left out and counted as filtered (``no_split``).

FLIC has no head box (``head_box`` None). A person's crop is the box around the annotated joints
(shoulders to hips, eyes and nose, arms): ``center`` its centre, ``200 * scale`` its longer side
times ``box_padding``. The torso box is kept in ``extra["torsobox"]`` as it is (None where it is not
four finite numbers); nothing here uses it (PCK's torso is the shoulder-to-hip distance), so it is
not checked.

Checks, per frame (a failure is a bad record; ``on_bad_record`` decides): ``coords`` is 2 x 29
numbers with no infinite value among the 11 used slots; ``istrain``/``istest`` are 0 or 1; at
least one of the 11 joints is annotated (``no_joints``); ``filepath`` stays inside the image
folder (``path_outside_root``) and the file is there (``image_missing``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_required
from core.skeletons import FLIC_SKELETON, PCK_TORSO, PoseProtocol, Skeleton
from datamodules.formats.files import load_mat, resolve
from datamodules.formats.sources import ImageFileSource, joint_box_center_scale
from datamodules.formats.validators import finite_number, image_file
from datamodules.pose import PoseRecord

__all__ = ["FLIC", "FLIC_COLUMNS"]

# 0-based columns of examples.mat's 29 coords for lsho, lelb, lwri, rsho, relb, rwri, lhip, rhip,
# leye, reye, nose (1-based: 1, 2, 3, 4, 5, 6, 7, 10, 13, 14, 17).
FLIC_COLUMNS = (0, 1, 2, 3, 4, 5, 6, 9, 12, 13, 16)
NUM_SLOTS = 29


class FLIC(ImageFileSource):
    """FLIC frames as people (one annotated person per frame).

    Args:
        root: FLIC folder (``examples.mat``, ``images/``).
        annotation_file: the ``examples`` file.
        image_dir: image folder.
        num_val: the last ``num_val`` training frames form the val split and leave train; 0: val
            is the test split (what papers report).
        box_padding: ``200 * scale`` is the annotated joints' box's longer side times this.
        on_bad_record: ``error`` or ``skip`` a bad frame (see the module's checks).

    Records: ``image_id`` is ``filepath``; ``extra`` holds the 0-based ``index`` in ``examples``
    and ``torsobox`` (0-based ``x1, y1, x2, y2``, or None).
    """

    skeleton: Skeleton = FLIC_SKELETON
    protocol: PoseProtocol = PCK_TORSO

    def __init__(
        self,
        root: str = "data/flic",
        annotation_file: str = "examples.mat",
        image_dir: str = "images",
        num_val: int = 0,
        box_padding: float = 1.25,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if num_val < 0:
            raise ConfigError(f"FLIC.num_val must be >= 0, got {num_val}")
        if box_padding <= 0:
            raise ConfigError(f"FLIC.box_padding must be > 0, got {box_padding}")
        self.checker = RecordChecker("FLIC", on_bad_record)
        self.root = Path(root)
        self.path = resolve(self.root, annotation_file)
        self.image_dir = resolve(self.root, image_dir)
        check_required(self.required_paths(), root=self.root, owner=self)
        self.box_padding = box_padding
        examples = load_mat(self.path, ["examples"])["examples"]
        examples = list(examples.flat) if isinstance(examples, np.ndarray) else [examples]
        # A struct array's fields are the same in every element: a missing one is the file's layout.
        if examples and not hasattr(examples[0], "coords"):
            raise AnnotationFormatError(self.path, "examples[0] has no field 'coords' (is 'examples' a FLIC struct array?)")
        train: list[PoseRecord] = []
        test: list[PoseRecord] = []
        for i, example in enumerate(examples):
            filepath = getattr(example, "filepath", None)
            where = f"examples[{i}]" + (f" ({filepath!r})" if isinstance(filepath, str) else "")
            with self.checker.record(self.path, where):
                record, is_train, is_test = self._record(i, example)
                if is_train:
                    train.append(record)
                if is_test:
                    test.append(record)
                if not (is_train or is_test):
                    self.checker.filtered("no_split", self.path)
        if num_val >= len(train) and num_val:
            raise ConfigError(f"FLIC.num_val is {num_val} but there are only {len(train)} training frames")
        val = test
        if num_val:
            train, val = train[: len(train) - num_val], train[len(train) - num_val :]
        self.checker.kept(self.path, len(train), "train")
        if num_val:
            self.checker.kept(self.path, len(val), "val")
        self.checker.kept(self.path, len(test), "test")
        self.splits: dict[str, list[PoseRecord]] = {"train": train, "val": val, "test": test}

    def required_paths(self) -> list[RequiredPath]:
        return [
            RequiredPath("FLIC root", self.root, "root", "folder"),
            RequiredPath("FLIC annotation file", self.path, "annotation_file"),
            RequiredPath("FLIC image folder", self.image_dir, "image_dir", "folder"),
        ]

    def _record(self, index: int, example: Any) -> tuple[PoseRecord, bool, bool]:
        filepath = getattr(example, "filepath", None)
        if not isinstance(filepath, str) or not filepath:
            raise RecordProblem("wrong_type", "field 'filepath' must be an image name")
        coords = np.asarray(example.coords)
        if not np.issubdtype(coords.dtype, np.number) or coords.shape != (2, NUM_SLOTS):
            raise RecordProblem("wrong_type", f"field 'coords' must be 2 x {NUM_SLOTS} numbers, got {coords.dtype} {coords.shape}")
        flags = {}
        for name in ("istrain", "istest"):
            value = finite_number(getattr(example, name, None))
            if value not in (0.0, 1.0):
                raise RecordProblem("wrong_type", f"field {name!r} must be 0 or 1")
            flags[name] = bool(value)
        points = coords[:, list(FLIC_COLUMNS)].T.astype(np.float64)  # (2, 29) -> (11, 2)
        if np.isinf(points).any():
            raise RecordProblem("non_finite", "field 'coords' holds an infinite coordinate (only NaN marks an unannotated joint)")
        visible = ~np.isnan(points).any(1)  # NaN: FLIC's "not annotated"
        keypoints = np.where(visible[:, None], points - 1.0, 0.0).astype(np.float32)
        box = joint_box_center_scale(keypoints, visible, self.box_padding)
        if box is None:
            raise RecordProblem("no_joints", "none of the 11 FLIC joints is annotated")
        center, scale = box
        image = image_file(self.image_dir, filepath, "filepath")
        torso = np.asarray(getattr(example, "torsobox", np.zeros(0)), dtype=object)
        torsobox = None
        if torso.size == 4 and all(finite_number(v) is not None for v in torso.flat):
            torsobox = tuple(float(v) - 1.0 for v in torso.flat)
        record = PoseRecord(
            image=str(image),
            center=center,
            scale=scale,
            keypoints=keypoints,
            visible=visible,
            head_box=None,
            image_id=filepath,
            extra={"index": index, "torsobox": torsobox},
        )
        return record, flags["istrain"], flags["istest"]
