"""A pose source whose people fill their whole image, for comparing ``infer`` (which takes each
image file as one person, the crop holding the whole image) with ``predict`` on the same images."""
from __future__ import annotations

from datamodules.pose import PoseRecord
from datamodules.synthetic.pose import SyntheticPose

__all__ = ["WholeImagePose"]


class WholeImagePose(SyntheticPose):
    """``SyntheticPose`` with every person's box the whole square image: centre ``((S - 1) / 2,
    (S - 1) / 2)`` in pixel-index coordinates, ``200 * scale = S`` (the crop's side)."""

    def record(self, split: str, index: int) -> PoseRecord:
        record = super().record(split, index)
        middle = (self.image_size - 1) / 2.0
        record.center, record.scale = (middle, middle), self.image_size / 200.0
        return record
