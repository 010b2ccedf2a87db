"""Object detection and instance segmentation data: images with a variable number of objects.

A *source* (``datamodules.synthetic.detection.SyntheticDetection``, the embedded default, or a
reader in ``datamodules.formats``: ``COCODetection``, ``VOCDetection``, ``YOLOText``,
``CSVDetection``, ``DSB2018``) lists its images as ``DetectionRecord``s and loads their pixels and
instance masks; this module does the rest alike for every source: the training augmentation
(torchvision.transforms.v2 with ``tv_tensors``, so boxes, masks and keypoints move with the
pixels, ending with ``SanitizeBoundingBoxes``), and batches as lists (images differ in size and
in their number of objects).

Conventions (torchvision's detection models and references):

* boxes are XYXY in continuous pixel coordinates of the image (it spans ``[0, W] x [0, H]``);
* labels are contiguous, ``1 .. len(class_names)``; 0 is the background, so a detector has
  ``len(class_names) + 1`` classes; ``category_ids[label - 1]`` is the dataset's own category id
  (COCO's non-contiguous ids), used to write and evaluate COCO results;
* keypoints are ``(K, J, 3)``: ``x, y`` in the same continuous pixel coordinates, and COCO's
  visibility flag (0 unlabelled, 1 labelled but hidden, 2 visible);
* instance masks are ``(K, H, W)`` uint8 at the image's size.

Crowd regions (COCO ``iscrowd``) and VOC's ``difficult`` objects are kept in the targets with
their flags: evaluation ignores them (COCO and VOC protocols), and training drops them (a crowd
box is not one object; a difficult one is neither a positive nor a negative), as detectron2 and
MMDetection do. ``COCODetection`` counts the crowd regions in its report (``filtered["iscrowd"]``,
per split under ``filtered_by_split``, this rule under ``filtered_rules``).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from core.errors import BadRecordError, ConfigError
from core.facts import DataFacts
from core.records import RequiredPath
from datamodules.base import SourceDataModule, pair

__all__ = [
    "DetectionRecord", "DetectionSource", "DetectionAugmentation", "DetectionDataset", "DetectionDataModule",
    "affine_objects", "list_collate",
]


@dataclass
class DetectionRecord:
    """One image and its objects, as a reader parsed them (pixels and masks are read by ``load``).

    Attributes:
        image: what the source's ``load_image`` needs: a file path, or ``(split, index)``.
        image_id: the dataset's id of the image: COCO's ``int`` id, else a name (``"000005"``,
            ``"train/000012"``).
        size: ``(height, width)`` of the image when the annotation gives it (else ``None``: read
            from the file when loaded).
        boxes: ``(K, 4)`` float64 XYXY, continuous pixel coordinates.
        labels: ``(K,)`` int64 contiguous labels ``1 .. len(class_names)``.
        iscrowd: ``(K,)`` bool, COCO's crowd regions (ignored by evaluation, dropped from training).
        difficult: ``(K,)`` bool, VOC's difficult objects (the same).
        masks: ``None`` (no instance masks in this format), or one entry per object that the
            source's ``load_masks`` turns into a binary mask: a COCO polygon list, a COCO RLE dict,
            a mask file path, ...
        keypoints: ``None`` or ``(K, J, 3)`` float64 ``x, y, visibility``.
        areas: ``None`` or ``(K,)`` float64: the annotation's own object area (COCO ``area``: the
            mask area, which COCO's small/medium/large ranges use); ``None``: box area.
        extra: source-specific fields (the annotation file and record, the ``truncated`` flags, ...).
    """

    image: Any
    image_id: Any
    size: tuple[int, int] | None
    boxes: np.ndarray
    labels: np.ndarray
    iscrowd: np.ndarray | None = None
    difficult: np.ndarray | None = None
    masks: list[Any] | None = None
    keypoints: np.ndarray | None = None
    areas: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        count = len(self.boxes)
        if len(self.labels) != count:
            raise ValueError(f"DetectionRecord {self.image_id!r}: {count} boxes but {len(self.labels)} labels")
        self.iscrowd = np.zeros(count, dtype=bool) if self.iscrowd is None else np.asarray(self.iscrowd, dtype=bool).reshape(-1)
        self.difficult = np.zeros(count, dtype=bool) if self.difficult is None else np.asarray(self.difficult, dtype=bool).reshape(-1)
        if self.keypoints is not None:
            keypoints = np.asarray(self.keypoints, dtype=np.float64)
            self.keypoints = keypoints.reshape(count, keypoints.shape[-2] if keypoints.ndim == 3 else -1, 3)
        if self.areas is not None:
            self.areas = np.asarray(self.areas, dtype=np.float64).reshape(-1)
        if self.masks is not None and len(self.masks) != count:
            raise ValueError(f"DetectionRecord {self.image_id!r}: {count} boxes but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.boxes)


class DetectionSource(ABC):
    """What the detection data module needs of a source.

    Attributes:
        class_names: the object classes in label order (label ``i + 1`` is ``class_names[i]``; no
            background entry).
        category_ids: the dataset's category id of each class (COCO's non-contiguous ids); by
            default ``1 .. len(class_names)``.
        keypoint_names: the names of the ``J`` keypoints of every object, for datasets with
            keypoints (empty otherwise).
        skeleton: pairs of 0-based keypoint indices drawn as limbs.
        has_masks: the records carry instance masks.
    """

    class_names: tuple[str, ...] = ()
    keypoint_names: tuple[str, ...] = ()
    skeleton: tuple[tuple[int, int], ...] = ()
    has_masks: bool = False

    @property
    def category_ids(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.class_names) + 1))

    @abstractmethod
    def records(self, split: str) -> list[DetectionRecord]:
        """The split's records (``train``, ``val``, ``test``); ``ConfigError`` for a split the source
        does not have."""

    @abstractmethod
    def load_image(self, record: DetectionRecord) -> Tensor:
        """``(3, H, W)`` uint8 RGB; ``ImageReadError`` naming the file when it cannot be decoded."""

    def load_masks(self, record: DetectionRecord, height: int, width: int) -> Tensor | None:
        """``(K, H, W)`` uint8 binary instance masks of ``record`` at the image's size, or ``None``
        when the source has no masks; a mask of another size raises ``BadRecordError`` naming its
        file."""
        return None

    def annotation_file(self, split: str) -> str | None:
        """A COCO ground-truth file of ``split`` that evaluation may use as it is (the official
        protocol on the official file); ``None``: evaluation builds the ground truth from the
        targets."""
        return None

    def required_paths(self) -> list[RequiredPath]:
        return []

    def data_report(self) -> dict[str, Any]:
        return {"source": type(self).__name__}


class DetectionAugmentation:
    """The training preset of torchvision's detection references: random rescale (scale jitter),
    horizontal flip, photometric jitter; objects that leave the image or shrink below
    ``min_box_size`` are dropped (``v2.SanitizeBoundingBoxes``). Optionally YOLO's random scaling and
    translation inside a canvas of the image's own size (Redmon et al. 2016: "random scaling and
    translations of up to 20% of the original image size").

    Args:
        scale_range: the image is resized by a factor drawn uniformly from this range (``(1, 1)``:
            no resize). torchvision's detectors resize every image to their own ``min_size`` (SSD:
            a fixed size) inside, which undoes this rescale: it matters only for a network that
            takes images at their size; for those detectors keep ``(1, 1)``.
        flip_prob: probability of a horizontal flip; keypoints named as a left/right pair by the
            source's ``flip_pairs`` swap with it.
        brightness: ``v2.ColorJitter`` brightness strength (a factor in ``[max(0, 1 - b), 1 + b]``:
            the exposure, HSV's value, up to clipping); also the contrast and saturation strength
            when those are ``None`` (0: none).
        hue: ``v2.ColorJitter`` hue strength, in ``[0, 0.5]``.
        min_box_size: boxes smaller than this (pixels, either side) after the transforms are dropped.
        contrast: ``v2.ColorJitter`` contrast strength; ``None``: ``brightness``'s (0: none).
        saturation: ``v2.ColorJitter`` saturation strength; ``None``: ``brightness``'s (0: none).
        translate: the image content is shifted by up to this fraction of the image's width and
            height, each drawn uniformly in ``[-translate, translate]`` (0: none; YOLO: 0.2).
        affine_scale: the content is scaled about the image centre by a factor drawn uniformly from
            this range (``(1, 1)``: none; YOLO: ``(0.8, 1.2)``). Unlike ``scale_range`` the image
            keeps its size: what leaves the canvas is cut off, what it uncovers is filled with grey
            (114, as Ultralytics' affine), so a network that resizes every image to a fixed input
            does not undo it. Boxes, masks and keypoints (``v2.functional.affine``) move with the
            pixels; labelled keypoints pushed outside the image become unlabelled (``x = y = v =
            0``, COCO's convention).

    The transforms run in this order: rescale, scale and translation, flip, photometric jitter,
    sanitize. ``__call__(image, target, flip_pairs)``: ``(3, H, W)`` uint8 and a target dict with
    ``boxes`` ``(K, 4)``, ``labels``, optional ``masks`` ``(K, H, W)`` and ``keypoints``
    ``(K, J, 3)`` -> the same, transformed. Randomness comes from torch's global generator, which
    ``EpochSeededDataset`` seeds from ``(seed, epoch, index)`` for each sample; ``sample_affine`` draws the scale and translation, which
    ``affine_objects`` applies.
    """

    def __init__(
        self,
        scale_range: tuple[float, float] = (1.0, 1.0),
        flip_prob: float = 0.5,
        brightness: float = 0.2,
        hue: float = 0.02,
        min_box_size: float = 2.0,
        contrast: float | None = None,
        saturation: float | None = None,
        translate: float = 0.0,
        affine_scale: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        low, high = float(scale_range[0]), float(scale_range[1])
        if not 0 < low <= high:
            raise ConfigError(f"DetectionAugmentation.scale_range must be 0 < low <= high, got {list(scale_range)}")
        if not 0 <= flip_prob <= 1:
            raise ConfigError(f"DetectionAugmentation.flip_prob must be in [0, 1], got {flip_prob}")
        if min_box_size < 1:
            raise ConfigError(f"DetectionAugmentation.min_box_size must be >= 1 pixel, got {min_box_size}")
        contrast = brightness if contrast is None else contrast
        saturation = brightness if saturation is None else saturation
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if not value >= 0:
                raise ConfigError(f"DetectionAugmentation.{name} must be >= 0 (a factor in [max(0, 1 - {name}), 1 + {name}]), got {value}")
        if not 0 <= hue <= 0.5:
            raise ConfigError(f"DetectionAugmentation.hue must be in [0, 0.5], got {hue}")
        if not 0 <= translate < 1:
            raise ConfigError(f"DetectionAugmentation.translate must be in [0, 1) (a fraction of the image size), got {translate}")
        if len(affine_scale) != 2 or not 0 < float(affine_scale[0]) <= float(affine_scale[1]):
            raise ConfigError(f"DetectionAugmentation.affine_scale must be 0 < low <= high, got {list(affine_scale)}")
        self.scale_range = (low, high)
        self.flip_prob = flip_prob
        self.translate = float(translate)
        self.affine_scale = (float(affine_scale[0]), float(affine_scale[1]))
        self.jitter = (v2.ColorJitter(brightness=brightness, contrast=contrast, saturation=saturation, hue=hue)
                       if max(brightness, contrast, saturation, hue) > 0 else None)
        # Keypoints and the per-object flags follow the boxes that survive.
        self.sanitize = v2.SanitizeBoundingBoxes(min_size=min_box_size, labels_getter=_per_object_fields)

    @property
    def affine(self) -> bool:
        """Whether the scale and translation run (they draw from the generator only then, so the
        other transforms' draws are those of a preset without them)."""
        return self.translate > 0 or self.affine_scale != (1.0, 1.0)

    def sample_affine(self, height: int, width: int, generator: torch.Generator | None = None) -> tuple[float, float, float]:
        """A random ``(tx, ty, scale)``: the shift in pixels, uniform in ``[-translate * width,
        translate * width]`` and ``[-translate * height, translate * height]``, and the factor,
        uniform in ``affine_scale``."""
        u = torch.rand(3, generator=generator, dtype=torch.float64).tolist()
        low, high = self.affine_scale
        return (2 * u[0] - 1) * self.translate * width, (2 * u[1] - 1) * self.translate * height, low + (high - low) * u[2]

    def __call__(self, image: Tensor, target: dict[str, Any], flip_pairs: Sequence[tuple[int, int]] = ()) -> tuple[Tensor, dict[str, Any]]:
        height, width = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(height, width))
        masks = tv_tensors.Mask(target["masks"]) if "masks" in target else None
        keypoints = target.get("keypoints")
        low, high = self.scale_range
        if high > low or low != 1.0:
            scale = low + (high - low) * float(torch.rand(()))
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            image = TF.resize(image, size, antialias=True)
            boxes = TF.resize(boxes, size)
            if masks is not None:
                masks = TF.resize(masks, size)
            if keypoints is not None:
                # Continuous coordinates scale with the image; the flag stays.
                factor = torch.tensor([size[1] / width, size[0] / height, 1.0], dtype=keypoints.dtype)
                keypoints = keypoints * factor
            height, width = size
        if self.affine:
            tx, ty, scale = self.sample_affine(height, width)
            image, boxes, masks, keypoints = affine_objects(image, boxes, masks, keypoints, (tx, ty), scale)
        if self.flip_prob > 0 and float(torch.rand(())) < self.flip_prob:
            image, boxes = TF.horizontal_flip(image), TF.horizontal_flip(boxes)
            if masks is not None:
                masks = TF.horizontal_flip(masks)
            if keypoints is not None:
                keypoints = _flip_keypoints(keypoints, width, flip_pairs)
        if self.jitter is not None:
            image = self.jitter(image)
        out = dict(target, boxes=boxes)
        if masks is not None:
            out["masks"] = masks
        if keypoints is not None:
            out["keypoints"] = keypoints
        image, out = self.sanitize(image, out)
        out["boxes"] = out["boxes"].as_subclass(Tensor)
        if "masks" in out:
            out["masks"] = out["masks"].as_subclass(Tensor)
        return image, out


# The grey that the scale and translation uncover (Ultralytics' border value).
AFFINE_FILL = 114


def affine_objects(
    image: Tensor,
    boxes: tv_tensors.BoundingBoxes,
    masks: tv_tensors.Mask | None,
    keypoints: Tensor | None,
    translate: tuple[float, float],
    scale: float,
) -> tuple[Tensor, tv_tensors.BoundingBoxes, tv_tensors.Mask | None, Tensor | None]:
    """Scale the content of an image about its centre by ``scale``, then shift it by ``translate``
    ``(tx, ty)`` pixels, on a canvas of the same size: a point ``(x, y)`` in continuous pixel
    coordinates goes to ``(W/2 + scale (x - W/2) + tx, H/2 + scale (y - H/2) + ty)``.

    The image is resampled bilinearly (grey where nothing maps), the masks by nearest neighbour;
    the boxes are the transformed boxes clipped to the image (``SanitizeBoundingBoxes`` drops those
    left empty); labelled keypoints (``v > 0``) move like the boxes' corners and those that land
    outside ``[0, W) x [0, H)`` become ``(0, 0, 0)``; unlabelled ones stay as they are.
    """
    height, width = image.shape[-2:]
    args = {"angle": 0.0, "translate": [float(translate[0]), float(translate[1])], "scale": float(scale), "shear": [0.0, 0.0]}
    image = TF.affine(image, **args, interpolation=v2.InterpolationMode.BILINEAR, fill=AFFINE_FILL)
    boxes = TF.affine(boxes, **args)
    if masks is not None:
        masks = TF.affine(masks, **args)  # nearest neighbour, 0 where nothing maps
    if keypoints is not None and keypoints.numel():
        moved, _ = TF.affine_keypoints(keypoints[..., :2], canvas_size=(height, width), **args)
        labelled = keypoints[..., 2] > 0
        inside = (moved[..., 0] >= 0) & (moved[..., 0] < width) & (moved[..., 1] >= 0) & (moved[..., 1] < height)
        keypoints = torch.where(labelled[..., None], torch.cat([moved, keypoints[..., 2:]], -1), keypoints)
        keypoints = torch.where((labelled & ~inside)[..., None], torch.zeros_like(keypoints), keypoints)
    return image, boxes, masks, keypoints


def _per_object_fields(inputs: Any) -> tuple[Tensor, ...]:
    """The target fields with one entry per object, besides the boxes and masks that
    ``SanitizeBoundingBoxes`` filters by itself."""
    target = inputs[1]
    return tuple(target[key] for key in ("labels", "iscrowd", "difficult", "area", "keypoints") if key in target)


def _flip_keypoints(keypoints: Tensor, width: int, flip_pairs: Sequence[tuple[int, int]]) -> Tensor:
    """Keypoints of a horizontally flipped image: ``x -> W - x`` in continuous coordinates (the
    boxes' convention), unlabelled points stay at 0, and each left/right pair swaps places."""
    flipped = keypoints.clone()
    labelled = flipped[..., 2] > 0
    flipped[..., 0] = torch.where(labelled, width - flipped[..., 0], flipped[..., 0])
    order = list(range(keypoints.shape[-2]))
    for a, b in flip_pairs:
        order[a], order[b] = b, a
    return flipped[:, order]


class DetectionDataset(Dataset):
    """The images of one split as ``(image, target)`` pairs.

    Returns:
        image: ``(3, H, W)`` float32 in ``[0, 1]``: torchvision's detectors normalise and resize
            inside (their ``GeneralizedRCNNTransform`` / SSD transform), so the data does neither.
        target: ``boxes`` ``(K, 4)`` float32 XYXY, ``labels`` ``(K,)`` int64 ``1..C``, ``iscrowd``
            and ``difficult`` ``(K,)`` bool, ``area`` ``(K,)`` float32 (the annotation's area, else
            the box's), ``masks`` ``(K, H, W)`` uint8 when masks are loaded, ``keypoints``
            ``(K, J, 3)`` float32 when the source has them, ``image_id`` int64 (a COCO id, -1
            otherwise), ``image_key`` str (the dataset's name of the image), ``index`` int64
            (position in the split), ``size`` ``(2,)`` int64 ``(H, W)`` of the image returned.

    Training samples (``augmentation`` given or ``train=True``) leave out crowd regions and
    difficult objects, then are augmented; evaluation samples keep every object with its flags and
    the image at its own size (predictions come back in its coordinates).
    """

    def __init__(
        self,
        source: DetectionSource,
        records: list[DetectionRecord],
        train: bool = False,
        augmentation: DetectionAugmentation | None = None,
        masks: bool = True,
    ) -> None:
        self.source = source
        self.records = records
        self.train = train
        self.augmentation = augmentation
        self.masks = masks and source.has_masks

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        record = self.records[index]
        image = self.source.load_image(record)
        height, width = image.shape[-2:]
        if record.size is not None and tuple(record.size) != (height, width):
            raise BadRecordError(record.image, f"the annotation gives the image as {record.size[1]}x{record.size[0]} but it is {width}x{height}", kind="size_mismatch")
        boxes = torch.from_numpy(record.boxes).float()
        areas = record.areas if record.areas is not None else (record.boxes[:, 2] - record.boxes[:, 0]) * (record.boxes[:, 3] - record.boxes[:, 1])
        target: dict[str, Any] = {
            "boxes": boxes,
            "labels": torch.from_numpy(record.labels),
            "iscrowd": torch.from_numpy(record.iscrowd),
            "difficult": torch.from_numpy(record.difficult),
            "area": torch.as_tensor(areas, dtype=torch.float32),
        }
        if self.masks:
            target["masks"] = self.source.load_masks(record, height, width)
        if record.keypoints is not None:
            target["keypoints"] = torch.from_numpy(record.keypoints).float()
        if self.train:
            keep = ~(target["iscrowd"] | target["difficult"])
            if not bool(keep.all()):
                target = {key: value[keep] for key, value in target.items()}
            if self.augmentation is not None:
                image, target = self.augmentation(image, target, getattr(self.source, "flip_pairs", ()))
        target.update({
            "image_id": torch.tensor(record.image_id if isinstance(record.image_id, int) else -1),
            "image_key": str(record.image_id),
            "index": torch.tensor(index),
            "size": torch.tensor(image.shape[-2:], dtype=torch.int64),
        })
        return image.float().div_(255.0), target


class _ImageFiles(DetectionSource):
    """Image files without annotations, under the classes of the source a model learnt from."""

    def __init__(self, learnt: DetectionSource) -> None:
        self.class_names = tuple(learnt.class_names)
        self.keypoint_names = tuple(learnt.keypoint_names)

    def file_records(self, files: list[Path]) -> list[DetectionRecord]:
        return [DetectionRecord(image=Path(f), image_id=Path(f).name, size=None, boxes=np.zeros((0, 4)), labels=np.zeros(0)) for f in files]

    def records(self, split: str) -> list[DetectionRecord]:
        raise ConfigError("image files have no splits")

    def load_image(self, record: DetectionRecord) -> Tensor:
        from datamodules.formats.files import load_rgb

        return load_rgb(record.image)


def list_collate(samples: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[list[Tensor], list[dict[str, Any]]]:
    """Images and targets as lists: images differ in size and targets in their number of objects
    (torchvision's detectors take lists and batch inside)."""
    return [sample[0] for sample in samples], [sample[1] for sample in samples]


class DetectionDataModule(SourceDataModule):
    """Detection and instance segmentation data for any ``DetectionSource``.

    Args:
        source: where the images and annotations come from.
        batch_size: images per batch per process (per GPU under DDP).
        num_workers: data-loading processes per training process.
        augmentation: the training preset; ``None``: training images as they are.
        masks: load instance masks when the source has them (needed by Mask R-CNN and by mask AP;
            a box detector's training is faster without).
        input_size: ``(height, width)`` of the module's ``example_input_array`` (what ``bench``
            measures FLOPs and latency on); ``None``: the source's ``image_size`` when it has one.
        val_split: the source's split used for validation.
        test_split: the source's split used by ``test`` and ``predict``.
    """

    collate_fn = staticmethod(list_collate)

    def __init__(
        self,
        source: DetectionSource,
        batch_size: int = 4,
        num_workers: int = 2,
        augmentation: DetectionAugmentation | None = None,
        masks: bool = True,
        input_size: int | tuple[int, int] | None = None,
        val_split: str = "val",
        test_split: str = "test",
    ) -> None:
        super().__init__(source, batch_size, num_workers, val_split, test_split)
        self.augmentation = augmentation
        self.masks = masks
        size = input_size if input_size is not None else getattr(source, "image_size", None)
        self.input_size = None if size is None else pair(size)

    def classes_missing_in_training(self) -> list[str]:
        """Classes without a training object (crowds and difficult ones, which training drops, do
        not count)."""
        seen: set[int] = set()
        for record in self.dataset("train", train=True).records:
            seen.update(record.labels[~(record.iscrowd | record.difficult)].tolist())
        return [name for label, name in enumerate(self.source.class_names, start=1) if label not in seen]

    def make_dataset(self, split: str, records: list[DetectionRecord], train: bool) -> Dataset:
        return DetectionDataset(self.source, records, train=train, augmentation=self.augmentation if train else None, masks=self.masks)

    def image_files_dataset(self, files: list[Path]) -> Dataset:
        """The files as evaluation samples: each image at its own size, no objects."""
        source = _ImageFiles(self.source)
        return DetectionDataset(source, source.file_records(files), train=False, masks=False)

    @property
    def facts(self) -> DataFacts:
        """The input shape, the classes and their dataset ids, the keypoint names and skeleton,
        whether masks are loaded, and the COCO ground-truth files of the evaluated splits."""
        files = {stage: self.source.annotation_file(split) for stage, split in (("val", self.val_split), ("test", self.test_split))}
        return DataFacts(
            input_shape=None if self.input_size is None else (3, *self.input_size),
            class_names=tuple(self.source.class_names),
            category_ids=tuple(self.source.category_ids),
            keypoint_names=tuple(self.source.keypoint_names),
            masks=self.masks and self.source.has_masks,
            coco_annotations={stage: str(path) for stage, path in files.items() if path},
        )
