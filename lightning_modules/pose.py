"""Top-down pose estimation: heatmap regression with intermediate supervision (Newell et al. 2016).

The network (any ``nn.Module`` returning one heatmap tensor per stack) knows nothing of this file;
here live the loss, decoding to image coordinates, the flip test, PCK/PCKh metrics per stack, the
paper's optimiser and the images logged to W&B; ``lightning_modules.task.TaskModule`` does the rest.
"""
from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn
from torchmetrics import MeanMetric

from core.errors import ConfigError
from core.facts import DataFacts
from lightning_modules.heatmap_decode import decode_heatmaps, flip_back, to_image_coordinates
from lightning_modules.metrics.coco_keypoints import COCOKeypointAP
from lightning_modules.metrics.pck import PCK
from lightning_modules.task import TaskModule
from lightning_modules.visualize import pose_panels

__all__ = ["PoseEstimationModule", "heatmap_loss"]


def heatmap_loss(outputs: list[Tensor], heatmaps: Tensor, valid: Tensor, intermediate_supervision: bool = True) -> Tensor:
    """Mean squared error between predicted and target heatmaps, summed over supervised stacks.

    Args:
        outputs: one ``(N, K, h, w)`` prediction per stack.
        heatmaps: ``(N, K, h, w)`` targets (the same for every stack, as in the paper).
        valid: ``(N, K)`` bool; invalid joints (unannotated or off the crop) contribute no loss.
        intermediate_supervision: supervise every stack (True) or the last one only.

    Returns: scalar; per stack the squared error is averaged over the valid heatmaps' pixels.
    """
    weight = valid.to(heatmaps.dtype)[..., None, None]
    pixels = heatmaps.shape[-1] * heatmaps.shape[-2]
    count = (weight.sum() * pixels).clamp(min=1.0)
    supervised = outputs if intermediate_supervision else outputs[-1:]
    return sum(((out.float() - heatmaps) ** 2 * weight).sum() / count for out in supervised)


class PoseEstimationModule(TaskModule):
    """Heatmap-based pose estimation.

    Args:
        network: images ``(N, 3, H, W)`` -> list of ``(N, K, H/s, W/s)`` heatmaps, one per stack
            (``lightning_modules.networks.hourglass.StackedHourglass``).
        optimizer: optimiser factory; ``None`` is the paper's RMSprop with lr 2.5e-4.
        scheduler: learning-rate scheduler factory, or ``None``. ``ReduceLROnPlateau`` watches the
            protocol's validation metric (``val/pckh`` or ``val/pck``).
        intermediate_supervision: apply the loss to every stack's output (the paper) or to the last.
        flip_test: at validation and test, average the heatmaps of the crop and of its mirror.
        quarter_offset: refine the argmax by a quarter pixel towards the higher neighbour.
        log_images: number of validation crops drawn with predictions and logged to W&B (0: none).
        channels_last: keep the network's weights and inputs in channels-last memory format
            (faster convolutions on CPUs and on tensor-core GPUs; the numbers are unchanged).
        data_facts: the data's crop size, skeleton (flip pairs, part columns), protocol (PCKh@0.5
            or PCK@0.2) and COCO ground truth; linked from the data module's ``facts`` by the CLI.

    Batches are ``(images, target)`` as ``datamodules.pose.PoseDataModule`` makes them.
    Metrics: ``train/loss``; ``val/<protocol>`` (final stack), ``val/<protocol>_<part>``,
    ``val/<protocol>_limbs``, ``val/<protocol>_stack<k>`` and ``val/<protocol>_limbs_stack<k>`` for
    every stack, ``val/loss``, ``val/<protocol>_best``; the same under ``test/`` without the loss and
    the best. On COCO, the official OKS AP/AR of the final stack's keypoints too (``val/coco_ap``,
    ``val/coco_ap50``, ..., pycocotools).
    """

    monitor_mode = "max"

    def __init__(
        self,
        network: nn.Module,
        optimizer: OptimizerCallable | None = None,
        scheduler: LRSchedulerCallable | None = None,
        intermediate_supervision: bool = True,
        flip_test: bool = True,
        quarter_offset: bool = True,
        log_images: int = 4,
        channels_last: bool = False,
        data_facts: DataFacts | None = None,
    ) -> None:
        super().__init__(network, optimizer, scheduler, log_images, channels_last, data_facts)
        self.intermediate_supervision = intermediate_supervision
        self.flip_test = flip_test
        self.quarter_offset = quarter_offset
        self.val_loss = MeanMetric()
        self.metrics = nn.ModuleDict()
        self.coco_ap = nn.ModuleDict()
        facts = self.data_facts
        self.skeleton, self.protocol = facts.skeleton, facts.protocol
        if self.skeleton is not None and self.protocol is not None:
            joints = getattr(network, "num_joints", self.skeleton.num_joints)
            if joints != self.skeleton.num_joints:
                raise ConfigError(
                    f"model.init_args.network.init_args.num_joints is {joints} but the {self.skeleton.name} data has {self.skeleton.num_joints} joints"
                )
            # One metric per output of the network (a stack's, or an internal prediction's).
            stacks = getattr(network, "num_outputs", getattr(network, "num_stacks", 1))
            self.metrics = nn.ModuleDict(
                {f"{split}_stack{k}": PCK(self.skeleton, self.protocol.threshold) for split in ("val", "test") for k in range(1, stacks + 1)}
            )
        # Sources with COCO ground truth (COCO keypoints) are also scored by OKS AP, officially.
        for split, ground_truth in facts.coco_annotations.items():
            self.coco_ap[split] = COCOKeypointAP(ground_truth)

    def setup(self, stage: str) -> None:
        if self.protocol is None and stage != "predict":
            raise ConfigError("PoseEstimationModule needs data_facts (skeleton, protocol): build it through the convlab CLI, or pass them")

    # ------------------------------------------------------------------ the task contract
    @property
    def metric_name(self) -> str:
        return self.protocol.name if self.protocol is not None else "pckh"

    @property
    def monitor(self) -> str:
        """The metric that selects the best checkpoint: the protocol's accuracy of the final stack."""
        return f"val/{self.metric_name}"

    def loss_terms(self, batch: tuple[Tensor, dict[str, Tensor]]) -> dict[str, Tensor]:
        """``{"loss": heatmap MSE over the supervised stacks}`` of one batch."""
        images, target = batch
        return {"loss": heatmap_loss(self(images), target["heatmaps"], target["heatmap_valid"], self.intermediate_supervision)}

    def prediction_records(self, batch: tuple[Tensor, dict[str, Tensor]], outputs: dict[str, Tensor]) -> list[dict[str, Any]]:
        """One COCO keypoint result per person: ``image_id`` (COCO's id, else the dataset's image
        name), ``keypoints`` as ``[x1, y1, s1, ...]`` in original-image pixel-index coordinates,
        ``score`` the mean joint score, and ``index`` the person's position in the split."""
        _, target = batch
        records = []
        for i in range(outputs["keypoints"].shape[0]):
            coco_id = int(target["image_id"][i])
            points = torch.cat([outputs["keypoints"][i], outputs["scores"][i, :, None]], dim=-1)
            records.append({
                "image_id": coco_id if coco_id >= 0 else target["image_key"][i],
                "category_id": 1,
                "keypoints": [round(float(v), 3) for v in points.reshape(-1)],
                "score": float(outputs["scores"][i].mean()),
                "index": int(target["index"][i]),
            })
        return records

    def default_optimizer(self, params: Any) -> torch.optim.Optimizer:
        """The paper's RMSprop, lr 2.5e-4."""
        return torch.optim.RMSprop(params, lr=2.5e-4)

    # ------------------------------------------------------------------ steps
    def _predict_heatmaps(self, images: Tensor) -> tuple[list[Tensor], list[Tensor]]:
        """The network's outputs on ``images`` and, with the flip test, their average with the
        outputs on the mirrored images (else the same list twice)."""
        outputs = self(images)
        if not self.flip_test:
            return outputs, outputs
        flipped = self(images.flip(-1))
        perm = self.skeleton.flip_permutation()
        return outputs, [(o + flip_back(f, perm)) / 2 for o, f in zip(outputs, flipped)]

    def _image_keypoints(self, heatmaps: Tensor, images: Tensor, crop_matrices: Tensor) -> tuple[Tensor, Tensor]:
        coords, scores = decode_heatmaps(heatmaps.float(), self.quarter_offset)
        stride = images.shape[-1] / heatmaps.shape[-1]
        return to_image_coordinates(coords, stride, crop_matrices), scores

    def evaluate_batch(self, split: str, batch: tuple[Tensor, dict[str, Tensor]]) -> list[Tensor]:
        """PCK per stack (and COCO's OKS AP) of the (flip-averaged) heatmaps; at validation also
        the training loss of the plain heatmaps as ``val/loss``. Returns the flip-averaged heatmaps."""
        images, target = batch
        raw, outputs = self._predict_heatmaps(images)
        normaliser = target[self.protocol.normaliser]
        for k, heatmaps in enumerate(outputs, start=1):
            keypoints, scores = self._image_keypoints(heatmaps, images, target["crop_matrix"])
            self.metrics[f"{split}_stack{k}"].update(keypoints, target["keypoints"], target["visible"], normaliser)
        if split in self.coco_ap:
            self.coco_ap[split].update(target["image_id"], keypoints, scores)
        if split == "val":
            self.val_loss(heatmap_loss(raw, target["heatmaps"], target["heatmap_valid"], self.intermediate_supervision))
            self.log("val/loss", self.val_loss, on_epoch=True, batch_size=images.shape[0])
        return outputs

    def predict_step(self, batch: tuple[Tensor, dict[str, Tensor]], batch_idx: int) -> dict[str, Tensor]:
        """Keypoints in original-image pixel-index coordinates, ``(N, K, 2)``, with peak scores."""
        images, target = batch
        heatmaps = self._predict_heatmaps(images)[1][-1]
        keypoints, scores = self._image_keypoints(heatmaps, images, target["crop_matrix"])
        return {"keypoints": keypoints, "scores": scores, "index": target["index"]}

    # ------------------------------------------------------------------ epoch ends
    def log_evaluation(self, split: str) -> Tensor:
        """PCK of every stack, of the final stack per part and over the limbs, COCO's AP/AR where
        scored; returns the final stack's mean PCK."""
        name = self.metric_name
        stacks = sum(1 for key in self.metrics if key.startswith(f"{split}_stack"))
        final = None
        for k in range(1, stacks + 1):
            metric = self.metrics[f"{split}_stack{k}"]
            result = metric.compute()
            metric.reset()
            self.log(f"{split}/{name}_stack{k}", result["mean"], sync_dist=False)
            if "limbs" in result:
                self.log(f"{split}/{name}_limbs_stack{k}", result["limbs"], sync_dist=False)
            if k == stacks:
                final = result
        self.log(f"{split}/{name}", final["mean"], prog_bar=True)
        if "limbs" in final:
            self.log(f"{split}/{name}_limbs", final["limbs"])
        for part, value in final["parts"].items():
            self.log(f"{split}/{name}_{part.lower()}", value)
        if split in self.coco_ap:
            stats = self.coco_ap[split].compute()
            self.coco_ap[split].reset()
            for stat, value in stats.items():
                self.log(f"{split}/coco_{stat.lower()}", value.float())
        return final["mean"]

    # ------------------------------------------------------------------ pictures
    def image_batch(self, batch: tuple[Tensor, dict[str, Tensor]], outputs: list[Tensor]) -> dict[str, Tensor]:
        k = self.log_images
        return {"images": batch[0][:k].detach(), "heatmaps": outputs[-1][:k].detach()}

    def draw_images(self, kept: dict[str, Tensor]) -> list[Tensor]:
        return pose_panels(kept["images"], kept["heatmaps"], self.skeleton)
