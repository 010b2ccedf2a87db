"""The dataset facts a task's LightningModule is built with.

A data module knows its input size, its classes, its skeleton and protocol, and where its COCO
ground truth lies; its module needs them to build its metrics and its ``example_input_array``.
The data module exposes them as ``facts`` and ``experiments.cli`` hands them to the module's
``data_facts`` argument with LightningCLI's ``link_arguments`` (``apply_on="instantiate"``), so a
module never reaches into ``trainer.datamodule``. A module used on its own takes them as an
ordinary argument.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from core.skeletons import PoseProtocol, Skeleton

__all__ = ["DataFacts"]


@dataclass(frozen=True)
class DataFacts:
    """What a data module tells its module. Fields a task does not use stay at their defaults.

    Attributes:
        input_shape: ``(C, H, W)`` of one network input at the config's size (``None`` when inputs
            vary in size); the module's ``example_input_array`` is one such input.
        class_names: names of the classes, in label order.
        skeleton: the joints of a pose dataset.
        protocol: the protocol pose results are reported under (PCKh@0.5, PCK@0.2).
        coco_annotations: ``{"val": path, "test": path}``: COCO ground truth of the splits that
            validation and test evaluate, when the data has one (then the official COCO AP is
            reported too).
        ignore_index: the label of pixels a segmentation dataset neither trains on nor scores.
        palette: an RGB colour per class, for pictures of label maps.
        category_ids: the dataset's own id of each class (COCO's non-contiguous ids), in label
            order, for results written in the dataset's ids.
        keypoint_names: the keypoints of every object of a detection dataset that has them.
        masks: the data carries instance masks (then mask AP is reported).
    """

    input_shape: tuple[int, ...] | None = None
    class_names: tuple[str, ...] = ()
    skeleton: Skeleton | None = None
    protocol: PoseProtocol | None = None
    coco_annotations: dict[str, str] = field(default_factory=dict)
    ignore_index: int | None = None
    palette: tuple[tuple[int, int, int], ...] | None = None
    category_ids: tuple[int, ...] = ()
    keypoint_names: tuple[str, ...] = ()
    masks: bool = False
