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

Splits, as in the literature: LSP's first 1000 images train, its last 1000 test. Papers report on
the 1000 test images, so ``val`` is the test split unless ``num_val`` holds out training images.
LSP-extended adds its 10000 images to ``train`` only.

LSP has no person box and no head box (``head_box`` None): a person's crop is the box around the
annotated joints, ``center`` its centre and ``200 * scale`` its longer side times ``box_padding``.
The images are roughly person-centred crops, so this box is what a detector would give.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import AnnotationFormatError, ConfigError
from core.skeletons import LSP_SKELETON, PCK_TORSO, PoseProtocol, Skeleton
from datamodules.formats._common import ImageFileSource, joint_box_center_scale, load_mat, require_dir, require_file, resolve
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
    ) -> None:
        if not 0 <= num_val < LSP_TRAIN:
            raise ConfigError(f"LSP.num_val must be in [0, {LSP_TRAIN}), got {num_val}")
        if box_padding <= 0:
            raise ConfigError(f"LSP.box_padding must be > 0, got {box_padding}")
        self.box_padding = box_padding
        lsp = self._read(Path(root), annotation_file, image_dir, extended=False)
        if len(lsp) != 2 * LSP_TRAIN:
            raise AnnotationFormatError(Path(root) / annotation_file, f"LSP has {2 * LSP_TRAIN} people, the file has {len(lsp)}")
        train, test = lsp[:LSP_TRAIN], lsp[LSP_TRAIN:]
        val = test
        if num_val:
            train, val = train[: LSP_TRAIN - num_val], train[LSP_TRAIN - num_val :]
        if extended_root is not None:
            train = train + self._read(Path(extended_root), annotation_file, image_dir, extended=True)
        self.splits: dict[str, list[PoseRecord]] = {"train": train, "val": val, "test": test}

    def _read(self, root: Path, annotation_file: str, image_dir: str, extended: bool) -> list[PoseRecord]:
        name = "LSP-extended" if extended else "LSP"
        require_dir(f"{name} root", root)
        path = require_file(f"{name} annotation file", resolve(root, annotation_file))
        images = require_dir(f"{name} image folder", resolve(root, image_dir))
        joints = _people_joints(path, load_mat(path, ["joints"])["joints"])
        records = []
        for i, person in enumerate(joints):
            image = f"im{i + 1:05d}.jpg" if extended else f"im{i + 1:04d}.jpg"
            finite = np.isfinite(person[:, :2]).all(1)
            flag = person[:, 2]
            if not np.isin(flag[np.isfinite(flag)], (0, 1)).all():
                raise AnnotationFormatError(path, f"person {i} ({image}): the visibility row must be 0 or 1")
            visible = finite & (flag == 1) if extended else finite
            occluded = (flag == 0) if extended else (flag == 1)
            keypoints = np.where(finite[:, None], person[:, :2] - 1.0, 0.0).astype(np.float32)
            box = joint_box_center_scale(keypoints, visible, self.box_padding)
            if box is None:
                if not extended:
                    raise AnnotationFormatError(path, f"person {i} ({image}): no finite joint")
                continue  # an LSP-extended person with no visible joint teaches nothing
            center, scale = box
            records.append(
                PoseRecord(
                    image=str(images / image),
                    center=center,
                    scale=scale,
                    keypoints=keypoints,
                    visible=visible,
                    head_box=None,
                    image_id=image,
                    extra={"dataset": "lspet" if extended else "lsp", "index": i, "occluded": occluded & visible},
                )
            )
        return records


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
