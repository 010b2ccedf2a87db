"""PCK and PCKh: the percentage of correct keypoints under a per-sample normaliser.

torchmetrics has no keypoint metric, so this is ours. One class serves both protocols:

* **PCKh@0.5 (MPII)**: normaliser = head size = 0.6 x the diagonal of the ground-truth head box
  (``SC_BIAS`` in the MPII evaluation code); threshold 0.5; pelvis and thorax excluded from the
  total; unannotated joints excluded everywhere (annotated-but-occluded joints count, as in the
  official code).
* **PCK@0.2 (FLIC, LSP)**: normaliser = torso size (distance between a shoulder and the opposite
  hip); threshold 0.2.

A joint is correct when ``||pred - gt|| <= threshold * normaliser`` (HRNet's ``<=``; bearpaw and
MMPose use ``<``, which differs only on exact ties).

Reported values (fractions in [0, 1]):

* ``joints``: one value per joint;
* ``parts``: the skeleton's part columns (Head, Shoulder, Elbow, ...), each the *unweighted* mean of
  its joints' values (left and right averaged, as in the papers' tables);
* ``mean``: the **count-weighted** mean over the non-excluded joints, i.e. correct / annotated over
  all of them (HRNet's and MMPose's "Mean"; bearpaw's unweighted mean differs by ~0.1 point);
* ``limbs``: count-weighted mean over wrists, elbows, knees and ankles, Newell et al.'s Sec. 4.2
  ablation metric.

Samples whose normaliser is not positive are skipped.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

from core.skeletons import Skeleton

__all__ = ["PCK"]


class PCK(Metric):
    """PCK / PCKh accumulated over batches (sum-reduced across DDP ranks).

    Args:
        skeleton: joint names, part columns, excluded and limb joints.
        threshold: fraction of the normaliser (0.5 for PCKh@0.5, 0.2 for PCK@0.2).

    ``update(pred, target, visible, normaliser)``: ``pred`` and ``target`` ``(N, K, 2)`` in the same
    coordinates (original image pixels for reported numbers), ``visible`` ``(N, K)`` bool (joint
    annotated), ``normaliser`` ``(N,)`` in the same units as the coordinates.
    """

    full_state_update = False
    higher_is_better = True

    def __init__(self, skeleton: Skeleton, threshold: float = 0.5, **kwargs) -> None:
        super().__init__(**kwargs)
        self.skeleton = skeleton
        self.threshold = threshold
        k = skeleton.num_joints
        self.add_state("correct", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total", default=torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, pred: Tensor, target: Tensor, visible: Tensor, normaliser: Tensor) -> None:
        if pred.shape != target.shape or pred.shape[:2] != visible.shape:
            raise ValueError(f"PCK: shapes differ: pred {tuple(pred.shape)}, target {tuple(target.shape)}, visible {tuple(visible.shape)}")
        norm = normaliser.to(torch.float64)
        counted = visible.bool() & (norm > 0).unsqueeze(1)
        dist = torch.linalg.norm(pred.double() - target.double(), dim=-1)
        correct = (dist <= self.threshold * norm.clamp(min=1e-12).unsqueeze(1)) & counted
        self.correct += correct.sum(0).to(self.correct.dtype)
        self.total += counted.sum(0).to(self.total.dtype)

    def _ratio(self, joints: tuple[int, ...] | list[int]) -> Tensor:
        idx = torch.as_tensor(list(joints), dtype=torch.long, device=self.correct.device)
        total = self.total[idx].sum()
        return self.correct[idx].sum() / total if total > 0 else torch.tensor(float("nan"), dtype=torch.float64)

    def compute(self) -> dict[str, Tensor | dict[str, Tensor]]:
        per_joint = torch.where(self.total > 0, self.correct / self.total.clamp(min=1), torch.full_like(self.total, float("nan")))
        counted = [j for j in range(self.skeleton.num_joints) if j not in self.skeleton.excluded]
        parts = {name: torch.nanmean(per_joint[list(idx)]) for name, idx in self.skeleton.parts.items()}
        result: dict[str, Tensor | dict[str, Tensor]] = {
            "mean": self._ratio(counted).float(),
            "joints": {name: per_joint[j].float() for j, name in enumerate(self.skeleton.joints)},
            "parts": {name: v.float() for name, v in parts.items()},
        }
        if self.skeleton.limbs:
            result["limbs"] = self._ratio(self.skeleton.limbs).float()
        return result
