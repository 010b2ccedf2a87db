"""COCO keypoint AP (OKS-based), computed by pycocotools' ``COCOeval`` (or faster-coco-eval's
``COCOeval_faster``, by ``backend``) at the end of an epoch.

Predictions are gathered as list states (``dist_reduce_fx="cat"``, so under DDP every rank's
people are joined before ``compute``), turned into a COCO result list and evaluated against the
ground-truth file, restricted to the images that were predicted (a validation subset is then
scored on its own images only).

The person score is given by the caller; SimpleBaseline/HRNet rescore a person as its box score
times the mean of its joint scores above 0.2 and apply OKS-NMS before evaluation, which matters
with detected boxes. With ground-truth boxes (``datamodules.formats.COCOKeypoints``) the default,
the mean joint score, is enough.
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from core.coco import load_coco
from core.errors import AnnotationFormatError, DataNotFoundError
from lightning_modules.metrics.detection import CocoBackend, coco_api, coco_of

__all__ = ["COCOKeypointAP"]

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR")  # COCOeval.stats[0:6] for keypoints


class COCOKeypointAP(Metric):
    """OKS AP and AR of COCO person keypoints.

    Args:
        annotation_file: COCO keypoint ground truth (e.g. ``person_keypoints_val2017.json``).
        backend: who computes the AP: ``"pycocotools"`` (the reference) or ``"faster_coco_eval"``
            (its C++ port; the same numbers to 1e-6 on the suite's test cases).

    ``update(image_ids, keypoints, joint_scores, person_scores=None)``: ``image_ids`` ``(N,)`` COCO
    image ids; ``keypoints`` ``(N, K, 2)`` in original image pixel coordinates (COCO's own, 0-based);
    ``joint_scores`` ``(N, K)`` (e.g. heatmap maxima); ``person_scores`` ``(N,)``, by default the
    mean joint score.

    ``compute()`` returns ``AP`` (OKS 0.50:0.95), ``AP50``, ``AP75``, ``APm``, ``APl`` and ``AR`` as
    float64 tensors in [0, 1]; COCOeval's -1 (no ground truth in an area range) is kept. With no
    prediction at all every value is 0.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, annotation_file: str, backend: CocoBackend = "pycocotools", **kwargs) -> None:
        super().__init__(**kwargs)
        coco_api(backend)  # an unknown or missing backend fails here, not at the first compute
        self.backend = backend
        path = Path(annotation_file)
        if not path.is_file():
            raise DataNotFoundError("COCO annotation file", path)
        self.annotation_file = str(path)
        self._coco = load_coco(path)
        if backend != "pycocotools":  # load_coco checked the file; index it for the backend
            self._coco = coco_of(self._coco.dataset, backend)
        person = self._coco.getCatIds(catNms=["person"])
        if not person:
            raise AnnotationFormatError(path, "no 'person' category")
        self.category_id = person[0]
        self.num_joints = len(self._coco.cats[self.category_id].get("keypoints", [None] * 17))
        self.add_state("image_ids", default=[], dist_reduce_fx="cat")
        self.add_state("keypoints", default=[], dist_reduce_fx="cat")
        self.add_state("joint_scores", default=[], dist_reduce_fx="cat")
        self.add_state("person_scores", default=[], dist_reduce_fx="cat")

    def update(
        self,
        image_ids: Tensor | Sequence[int],
        keypoints: Tensor,
        joint_scores: Tensor,
        person_scores: Tensor | None = None,
    ) -> None:
        image_ids = torch.as_tensor(image_ids, dtype=torch.long, device=self.device).reshape(-1)
        n = image_ids.numel()
        if keypoints.shape != (n, self.num_joints, 2) or joint_scores.shape != (n, self.num_joints):
            raise ValueError(
                f"COCOKeypointAP: expected keypoints ({n}, {self.num_joints}, 2) and joint_scores ({n}, {self.num_joints}), "
                f"got {tuple(keypoints.shape)} and {tuple(joint_scores.shape)}"
            )
        if person_scores is None:
            person_scores = joint_scores.float().mean(dim=1)
        if person_scores.shape != (n,):
            raise ValueError(f"COCOKeypointAP: expected person_scores ({n},), got {tuple(person_scores.shape)}")
        self.image_ids.append(image_ids)
        self.keypoints.append(keypoints.detach().to(torch.float64))
        self.joint_scores.append(joint_scores.detach().to(torch.float64))
        self.person_scores.append(person_scores.detach().to(torch.float64))

    def compute(self) -> dict[str, Tensor]:
        if isinstance(self.image_ids, list) and not self.image_ids:
            return {name: torch.zeros((), dtype=torch.float64) for name in STAT_NAMES}
        image_ids = dim_zero_cat(self.image_ids).cpu().numpy()
        keypoints = dim_zero_cat(self.keypoints).cpu().numpy()
        joint_scores = dim_zero_cat(self.joint_scores).cpu().numpy()
        person_scores = dim_zero_cat(self.person_scores).cpu().numpy()
        unknown = sorted(set(image_ids.tolist()) - set(self._coco.getImgIds()))
        if unknown:
            raise ValueError(f"COCOKeypointAP: image ids {unknown[:5]} are not in {self.annotation_file}")
        # (N, K, 2) + (N, K) -> COCO's flat [x1, y1, s1, x2, y2, s2, ...] per person.
        flat = np.concatenate([keypoints, joint_scores[..., None]], axis=-1).reshape(len(image_ids), -1)
        results = [
            {"image_id": int(i), "category_id": self.category_id, "keypoints": row.tolist(), "score": float(s)}
            for i, row, s in zip(image_ids, flat, person_scores)
        ]
        stats = self._evaluate(results, sorted(set(image_ids.tolist())))
        return {name: torch.tensor(float(value), dtype=torch.float64) for name, value in zip(STAT_NAMES, stats)}

    def _evaluate(self, results: list[dict], image_ids: list[int]) -> np.ndarray:
        _, COCOeval = coco_api(self.backend)
        with contextlib.redirect_stdout(io.StringIO()):  # COCOeval prints its progress and table
            detections = self._coco.loadRes(results)
            evaluator = COCOeval(self._coco, detections, iouType="keypoints")
            evaluator.params.imgIds = image_ids
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        return evaluator.stats[: len(STAT_NAMES)]
