"""Top-down human pose data: records from any pose source, cropped by centre and scale, augmented as
in Newell et al., with Gaussian heatmap targets.

A *source* (``datamodules.formats.*`` for MPII, LSP, FLIC and COCO on disk, ``datamodules.synthetic``
for the embedded default) lists people as ``PoseRecord``s and loads their images; this module does
everything else the same way for all of them.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torch.utils.data import Dataset

from core.facts import DataFacts
from core.geometry import apply_affine, crop_matrix, invert_affine
from core.imaging import IMAGENET_MEAN, IMAGENET_STD
from core.records import RecordChecker, RequiredPath
from core.skeletons import PoseProtocol, Skeleton
from datamodules.base import SourceDataModule, pair
from datamodules.keypoints import render_heatmaps

__all__ = ["PoseRecord", "PoseSource", "PoseAugmentation", "TopDownPoseDataset", "PoseDataModule"]

@dataclass
class PoseRecord:
    """One annotated person.

    Attributes:
        image: what the source's ``load_image`` needs: a file path, or an index for generated data.
        center: person centre ``(x, y)``, pixel-index coordinates.
        scale: MPII scale: ``200 * scale`` pixels is the side of the person's box.
        keypoints: ``(K, 2)`` float32 joint positions, pixel-index coordinates.
        visible: ``(K,)`` bool: the joint is annotated (occluded-but-annotated joints are True, as
            in the MPII protocol); False joints get no loss and are left out of every metric.
        head_box: ``(x1, y1, x2, y2)`` of the head, or None where the dataset has none.
        image_id: the dataset's identifier of the image (file name, COCO id), for result files.
        extra: source-specific fields (e.g. the COCO annotation id).
    """

    image: Any
    center: tuple[float, float]
    scale: float
    keypoints: np.ndarray
    visible: np.ndarray
    head_box: tuple[float, float, float, float] | None = None
    image_id: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class PoseSource(ABC):
    """A pose dataset: its skeleton, its protocol, its people per split, and how to load an image.

    Every source takes ``on_bad_record: error | skip`` and keeps its ``checker``
    (``core.records.RecordChecker``): ``data_report()`` is what it read and skipped.
    """

    skeleton: Skeleton
    protocol: PoseProtocol
    checker: RecordChecker | None = None

    @abstractmethod
    def records(self, split: str) -> list[PoseRecord]:
        """People of ``split`` ("train", "val" or "test"). Raises ``ValueError`` for a split the
        source does not have."""

    @abstractmethod
    def load_image(self, record: PoseRecord) -> Tensor:
        """``(3, H, W)`` uint8 RGB image of ``record``."""

    def coco_annotation_file(self, split: str) -> str | None:
        """COCO-format keypoint ground truth of ``split`` when the source has one (then OKS AP is
        reported besides PCK); ``None`` otherwise."""
        return None

    def required_paths(self) -> list[RequiredPath]:
        """The files and folders the source reads (checked before it parses anything); none for
        generated data."""
        return []

    def data_report(self) -> dict[str, Any]:
        """What the source read, skipped (bad records, by kind) and filtered (by its format's
        rules), for ``data_report.json``."""
        return (self.checker or RecordChecker(type(self).__name__)).report()


class PoseAugmentation:
    """Training-time augmentation of Newell et al. Sec. 3.3.

    Args:
        rotation: maximum rotation in degrees, drawn uniformly in ``[-rotation, rotation]``.
        rotation_prob: probability of rotating at all.
        scale_range: multiplier of the person's scale, drawn uniformly (0.75-1.25 in the paper).
        flip_prob: probability of a horizontal flip (left/right joints are swapped with it).
        color_scale: per-channel colour multiplier drawn from ``[1 - c, 1 + c]``.
    """

    def __init__(
        self,
        rotation: float = 30.0,
        rotation_prob: float = 1.0,
        scale_range: tuple[float, float] = (0.75, 1.25),
        flip_prob: float = 0.5,
        color_scale: float = 0.2,
    ) -> None:
        if scale_range[0] <= 0 or scale_range[0] > scale_range[1]:
            raise ValueError(f"PoseAugmentation.scale_range must be 0 < low <= high, got {scale_range}")
        self.rotation = rotation
        self.rotation_prob = rotation_prob
        self.scale_range = scale_range
        self.flip_prob = flip_prob
        self.color_scale = color_scale

    def sample(self, generator: torch.Generator | None = None) -> dict[str, Any]:
        u = torch.rand(5, generator=generator).tolist()
        low, high = self.scale_range
        rotate = u[0] < self.rotation_prob
        return {
            "scale": low + (high - low) * u[1],
            "rotation": (2 * u[2] - 1) * self.rotation if rotate else 0.0,
            "flip": u[3] < self.flip_prob,
            "color": 1.0 + (2 * torch.rand(3, generator=generator) - 1) * self.color_scale,
        }


def warp_image(image: Tensor, matrix: Tensor, output_size: tuple[int, int]) -> Tensor:
    """Warp a ``(3, H, W)`` image with an image-to-crop affine ``matrix`` (pixel-index coordinates)
    into a ``(3, *output_size)`` float crop, bilinear, zero outside the image."""
    height, width = output_size
    src_h, src_w = image.shape[-2:]
    inverse = invert_affine(matrix)
    ys, xs = torch.meshgrid(torch.arange(height, dtype=torch.float64), torch.arange(width, dtype=torch.float64), indexing="ij")
    src = apply_affine(inverse, torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))
    # grid_sample(align_corners=False): normalised -1..1 spans the outer edges of the image.
    grid = torch.stack([(src[:, 0] + 0.5) / src_w * 2 - 1, (src[:, 1] + 0.5) / src_h * 2 - 1], dim=-1)
    grid = grid.reshape(1, height, width, 2).float()
    out = F.grid_sample(image.unsqueeze(0).float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0]


class TopDownPoseDataset(Dataset):
    """People of one split as ``(image, target)`` pairs.

    Returns:
        image: ``(3, H, W)`` float32, ImageNet-normalised crop of the person.
        target: dict with
            ``heatmaps`` ``(K, h, w)`` Gaussian targets (zero for unannotated joints or joints
            outside the crop); ``heatmap_valid`` ``(K,)`` bool, which heatmaps carry loss;
            ``keypoints`` ``(K, 2)`` ground truth in *original image* pixel-index coordinates
            (never augmented); ``visible`` ``(K,)`` bool (annotated); ``crop_matrix`` ``(2, 3)``
            float64 image-to-crop map (with the flip and rotation of this sample);
            ``image_id`` COCO's integer id (-1 elsewhere); ``image_key`` the image's name (str);
            ``head_size`` (0.6 x head-box diagonal, 0 without head box); ``torso_size`` (0 when a
            torso joint is missing); ``center`` ``(2,)``; ``scale``; ``flipped`` bool; ``index``.
    """

    def __init__(
        self,
        source: PoseSource,
        records: list[PoseRecord],
        input_size: tuple[int, int],
        output_size: tuple[int, int],
        sigma: float,
        augmentation: PoseAugmentation | None = None,
    ) -> None:
        self.source = source
        self.records = records
        self.input_size = input_size
        self.output_size = output_size
        self.sigma = sigma
        self.augmentation = augmentation
        self.flip_perm = source.skeleton.flip_permutation()
        self.stride = input_size[0] / output_size[0]
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        record = self.records[index]
        image = self.source.load_image(record)
        aug = self.augmentation.sample() if self.augmentation is not None else {"scale": 1.0, "rotation": 0.0, "flip": False, "color": None}
        matrix = crop_matrix(record.center, record.scale * aug["scale"], self.input_size, aug["rotation"], aug["flip"])
        crop = warp_image(image, matrix, self.input_size) / 255.0
        if aug["color"] is not None:
            crop = (crop * aug["color"].view(3, 1, 1)).clamp(0, 1)
        crop = (crop - self.mean) / self.std

        keypoints = torch.as_tensor(record.keypoints, dtype=torch.float64)
        visible = torch.as_tensor(record.visible, dtype=torch.bool)
        in_crop = apply_affine(matrix, keypoints)
        crop_visible = visible
        if aug["flip"]:
            in_crop, crop_visible = in_crop[self.flip_perm], visible[self.flip_perm]
        on_map = (in_crop + 0.5) / self.stride - 0.5
        h, w = self.output_size
        inside = (on_map[:, 0] > -0.5) & (on_map[:, 0] < w - 0.5) & (on_map[:, 1] > -0.5) & (on_map[:, 1] < h - 0.5)
        valid = crop_visible & inside
        heatmaps = render_heatmaps(on_map, valid, self.output_size, self.sigma)

        target = {
            "heatmaps": heatmaps,
            "heatmap_valid": valid,
            "keypoints": keypoints.float(),
            "visible": visible,
            "crop_matrix": matrix,
            "head_size": torch.tensor(_head_size(record.head_box), dtype=torch.float32),
            "torso_size": torch.tensor(_torso_size(keypoints, visible, self.source.skeleton), dtype=torch.float32),
            "center": torch.tensor(record.center, dtype=torch.float32),
            "scale": torch.tensor(record.scale, dtype=torch.float32),
            "flipped": torch.tensor(aug["flip"]),
            "index": torch.tensor(index),
            # COCO's integer image id for OKS AP result files; -1 where ids are not integers.
            "image_id": torch.tensor(record.image_id if isinstance(record.image_id, int) else -1),
            # The dataset's own name of the image (file name, COCO id) for prediction records.
            "image_key": str(record.image_id),
        }
        return crop.float(), target


def _head_size(head_box: tuple[float, float, float, float] | None) -> float:
    if head_box is None:
        return 0.0
    x1, y1, x2, y2 = head_box
    return 0.6 * math.hypot(x2 - x1, y2 - y1)


def _torso_size(keypoints: Tensor, visible: Tensor, skeleton: Skeleton) -> float:
    if skeleton.torso is None:
        return 0.0
    a, b = skeleton.torso
    if not (visible[a] and visible[b]):
        return 0.0
    return float(torch.linalg.norm(keypoints[a] - keypoints[b]))



class PoseDataModule(SourceDataModule):
    """Top-down pose estimation data for any ``PoseSource``.

    Args:
        source: where the people come from (``datamodules.synthetic.SyntheticPose``,
            ``datamodules.formats.MPII``, ``LSP``, ``FLIC``, ``COCOKeypoints``).
        input_size: crop size, ``int`` or ``(height, width)`` (256 in the paper).
        output_size: heatmap size (64 in the paper: a quarter of the input).
        sigma: heatmap Gaussian standard deviation in heatmap pixels.
        batch_size: per process (per GPU under DDP).
        num_workers: data-loading processes per training process.
        augmentation: training augmentation; ``None`` trains on plain crops.
        val_split: the source's split used for validation.
        test_split: the source's split used by ``test`` and ``predict``.
    """

    def __init__(
        self,
        source: PoseSource,
        input_size: int | tuple[int, int] = 256,
        output_size: int | tuple[int, int] = 64,
        sigma: float = 1.0,
        batch_size: int = 16,
        num_workers: int = 4,
        augmentation: PoseAugmentation | None = None,
        val_split: str = "val",
        test_split: str = "test",
    ) -> None:
        super().__init__(source, batch_size, num_workers, val_split, test_split)
        self.input_size = pair(input_size)
        self.output_size = pair(output_size)
        if self.input_size[0] * self.output_size[1] != self.input_size[1] * self.output_size[0]:
            raise ValueError(f"PoseDataModule: input_size {self.input_size} and output_size {self.output_size} differ in aspect")
        self.sigma = sigma
        self.augmentation = augmentation

    @property
    def skeleton(self) -> Skeleton:
        return self.source.skeleton

    @property
    def protocol(self) -> PoseProtocol:
        return self.source.protocol

    @property
    def facts(self) -> DataFacts:
        """What the pose module is built with: the crop size, the skeleton, the protocol, and the
        COCO ground truth of the validated and tested splits where the source has one."""
        coco = {stage: self.source.coco_annotation_file(split) for stage, split in (("val", self.val_split), ("test", self.test_split))}
        return DataFacts(
            input_shape=(3, *self.input_size),
            skeleton=self.skeleton,
            protocol=self.protocol,
            coco_annotations={stage: path for stage, path in coco.items() if path},
        )

    def make_dataset(self, split: str, records: list[PoseRecord], train: bool) -> TopDownPoseDataset:
        return TopDownPoseDataset(self.source, records, self.input_size, self.output_size, self.sigma, self.augmentation if train else None)

    def image_files_dataset(self, files: list[Path]) -> TopDownPoseDataset:
        """The files as evaluation samples, one person per image: the crop is the whole image
        (``whole_image_box``), with no annotated joint."""
        source = _ImageFiles(self.source)
        records = [source.file_record(Path(f), self.input_size) for f in files]
        return TopDownPoseDataset(source, records, self.input_size, self.output_size, self.sigma)


def whole_image_box(image_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[tuple[float, float], float]:
    """The ``(center, scale)`` of a crop that holds a whole ``(h, w)`` image, centred, at the crop's
    aspect ``input_size`` ``(H, W)``: centre ``((w - 1) / 2, (h - 1) / 2)`` (pixel-index
    coordinates), ``200 * scale = max(h, w * H / W)`` (the crop's height in image pixels)."""
    (h, w), (height, width) = image_size, input_size
    return ((w - 1) / 2.0, (h - 1) / 2.0), max(h, w * height / width) / 200.0


class _ImageFiles(PoseSource):
    """Image files of one person each, without annotations, under the skeleton a model learnt."""

    def __init__(self, learnt: PoseSource) -> None:
        self.skeleton = learnt.skeleton
        self.protocol = learnt.protocol

    def file_record(self, path: Path, input_size: tuple[int, int]) -> PoseRecord:
        from datamodules.formats.files import image_size

        center, scale = whole_image_box(image_size(path), input_size)
        joints = self.skeleton.num_joints
        return PoseRecord(image=path, center=center, scale=scale, keypoints=np.zeros((joints, 2), np.float32),
                          visible=np.zeros(joints, bool), image_id=path.name)

    def records(self, split: str) -> list[PoseRecord]:
        raise ValueError("image files have no splits")

    def load_image(self, record: PoseRecord) -> Tensor:
        from datamodules.formats.files import load_rgb

        return load_rgb(record.image)
