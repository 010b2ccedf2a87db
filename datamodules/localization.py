"""Classification + localisation data: one object per image, its class and its box.

A *source* (``datamodules.synthetic.localization.SyntheticLocalization``, the embedded default, or
``datamodules.formats.csv_boxes.CSVBoxes`` for images on disk) lists images as
``LocalizationRecord``s and loads them; this module does the rest the same way for all of them:
training augmentation (torchvision.transforms.v2 with ``tv_tensors.BoundingBoxes``, so the box
moves with the image), a letterbox resize to the network's input size, ImageNet normalisation, and
the targets.

Coordinates. Boxes in records and in ``boxes_xyxy`` are XYXY in continuous pixel coordinates of
the original image (torchvision's convention: the image spans ``[0, W] x [0, H]``). The network's
target ``boxes`` is ``(cx, cy, w, h)`` normalised to ``[0, 1]`` of the (letterboxed) input. The
letterbox maps an original point ``p`` to ``p * scale + offset`` in input pixels.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from core.errors import ConfigError
from core.facts import DataFacts
from core.imaging import IMAGENET_MEAN, IMAGENET_STD
from core.records import RequiredPath
from datamodules.base import SourceDataModule, pair

__all__ = [
    "LocalizationRecord", "LocalizationSource", "LocalizationAugmentation", "LocalizationDataset", "LocalizationDataModule",
    "letterbox", "letterbox_geometry",
]


@dataclass
class LocalizationRecord:
    """One image with one object.

    Attributes:
        image: what the source's ``load_image`` needs: a file path, or ``(split, index)`` for
            generated data.
        box: ``(x1, y1, x2, y2)`` of the object, float, continuous pixel coordinates of the image.
        label: class index into the source's ``class_names``.
        image_id: the dataset's name of the image (file path, ``"val/000012"``); an ``int`` is
            taken as a COCO-style integer id.
        extra: source-specific fields (e.g. the synthetic shape's geometry).
    """

    image: Any
    box: tuple[float, float, float, float]
    label: int
    image_id: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class LocalizationSource(ABC):
    """A classification + localisation dataset: its classes, its records per split, its images,
    the paths it reads and what it skipped."""

    class_names: tuple[str, ...]

    @abstractmethod
    def records(self, split: str) -> list[LocalizationRecord]:
        """Images of ``split`` ("train", "val" or "test"); ``ConfigError`` for a split the source
        does not have."""

    @abstractmethod
    def load_image(self, record: LocalizationRecord) -> Tensor:
        """``(3, H, W)`` uint8 RGB image of ``record``; ``ImageReadError`` naming the file when it
        cannot be decoded."""

    def required_paths(self) -> list[RequiredPath]:
        """Every file or folder the source reads (none for generated data)."""
        return []

    @abstractmethod
    def data_report(self) -> dict[str, Any]:
        """What was read and skipped (``core.records.RecordChecker.report()``)."""


class LocalizationAugmentation:
    """Training augmentation; every geometric step keeps the whole object in the picture.

    Args:
        flip_prob: probability of a horizontal flip.
        crop_prob: probability of a random crop that contains the whole box (a zoom in).
        min_crop: the crop's sides are at least this fraction of the image's (and never smaller
            than the box).
        zoom_out_prob: probability of ``v2.RandomZoomOut`` (the image placed on a larger canvas
            of the mean colour: a zoom out).
        max_zoom_out: largest canvas side as a multiple of the image's.
        brightness: ``v2.ColorJitter`` brightness (and contrast, saturation) strength; 0: none.
        hue: ``v2.ColorJitter`` hue strength.

    ``__call__(image, box)``: ``tv_tensors.Image`` ``(3, H, W)`` uint8 and ``tv_tensors.BoundingBoxes``
    ``(1, 4)`` XYXY -> the same types, transformed together. Randomness comes from torch's global
    generator, which ``EpochSeededDataset`` seeds from ``(seed, epoch, index)`` for each sample.
    """

    def __init__(
        self,
        flip_prob: float = 0.5,
        crop_prob: float = 0.5,
        min_crop: float = 0.6,
        zoom_out_prob: float = 0.3,
        max_zoom_out: float = 1.5,
        brightness: float = 0.3,
        hue: float = 0.05,
    ) -> None:
        if not 0 < min_crop <= 1:
            raise ConfigError(f"LocalizationAugmentation.min_crop must be in (0, 1], got {min_crop}")
        if max_zoom_out < 1:
            raise ConfigError(f"LocalizationAugmentation.max_zoom_out must be >= 1, got {max_zoom_out}")
        self.crop_prob = crop_prob
        self.min_crop = min_crop
        fill = {tv_tensors.Image: tuple(int(round(255 * m)) for m in IMAGENET_MEAN), "others": 0}
        steps: list[Any] = []
        if zoom_out_prob > 0 and max_zoom_out > 1:
            steps.append(v2.RandomZoomOut(fill=fill, side_range=(1.0, max_zoom_out), p=zoom_out_prob))
        if flip_prob > 0:
            steps.append(v2.RandomHorizontalFlip(flip_prob))
        if brightness > 0 or hue > 0:
            steps.append(v2.ColorJitter(brightness=brightness, contrast=brightness, saturation=brightness, hue=hue))
        self.transforms = v2.Compose(steps)

    def _crop_around(self, image: tv_tensors.Image, box: tv_tensors.BoundingBoxes) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
        """A random crop of the image that holds the whole box."""
        height, width = image.shape[-2:]
        x1, y1, x2, y2 = box[0].tolist()
        u = torch.rand(4).tolist()
        # Side lengths between max(box, min_crop * image) and the image; then a position that keeps the box inside.
        crop_w = _lerp(max(x2 - x1, self.min_crop * width), width, u[0])
        crop_h = _lerp(max(y2 - y1, self.min_crop * height), height, u[1])
        left = _lerp(max(0.0, x2 - crop_w), min(x1, width - crop_w), u[2])
        top = _lerp(max(0.0, y2 - crop_h), min(y1, height - crop_h), u[3])
        # Integer pixel crop, grown outwards so rounding never cuts the box.
        left_i, top_i = max(0, math.floor(left)), max(0, math.floor(top))
        right_i, bottom_i = min(width, math.ceil(max(left + crop_w, x2))), min(height, math.ceil(max(top + crop_h, y2)))
        return TF.crop(image, top_i, left_i, bottom_i - top_i, right_i - left_i), TF.crop(box, top_i, left_i, bottom_i - top_i, right_i - left_i)

    def __call__(self, image: tv_tensors.Image, box: tv_tensors.BoundingBoxes) -> tuple[tv_tensors.Image, tv_tensors.BoundingBoxes]:
        if self.crop_prob > 0 and float(torch.rand(())) < self.crop_prob:
            image, box = self._crop_around(image, box)
        return self.transforms(image, box)


def _lerp(low: float, high: float, u: float) -> float:
    return low + (high - low) * u if high > low else low


def letterbox(image: Tensor, input_size: tuple[int, int]) -> tuple[Tensor, tuple[float, float], tuple[float, float]]:
    """Resize ``image`` ``(3, h, w)`` (0-255, any dtype) to fit ``input_size`` ``(H, W)`` keeping
    its aspect, centred on a canvas of the ImageNet mean colour (zero once normalised).

    Returns: the ``(3, H, W)`` float32 canvas (0-255), the per-axis ``scale`` ``(sx, sy)`` and the
    ``offset`` ``(ox, oy)``: an original point ``(x, y)`` (continuous pixels) is at
    ``(x * sx + ox, y * sy + oy)`` on the canvas.
    """
    (new_h, new_w), scale, (left, top) = letterbox_geometry(tuple(image.shape[-2:]), input_size)
    resized = image.float()
    if tuple(image.shape[-2:]) != (new_h, new_w):
        resized = TF.resize(resized, [new_h, new_w], antialias=True)
    canvas = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).mul(255).view(3, 1, 1).repeat(1, *input_size)
    canvas[:, int(top) : int(top) + new_h, int(left) : int(left) + new_w] = resized
    return canvas, scale, (left, top)


def letterbox_geometry(image_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[float, float], tuple[float, float]]:
    """What ``letterbox`` does to an image of ``image_size`` ``(h, w)``, without the pixels: the
    resized ``(h, w)``, the per-axis ``scale`` ``(sx, sy)`` (new / old size: rounding makes them
    differ slightly) and the ``offset`` ``(ox, oy)`` of the resized image on the canvas."""
    height, width = input_size
    h, w = image_size
    s = min(height / h, width / w)
    new_h, new_w = max(1, round(h * s)), max(1, round(w * s))
    return (new_h, new_w), (new_w / w, new_h / h), (float((width - new_w) // 2), float((height - new_h) // 2))


class LocalizationDataset(Dataset):
    """Images of one split as ``(image, target)`` pairs.

    Returns:
        image: ``(3, H, W)`` float32, ImageNet-normalised, letterboxed to ``input_size`` (the
            padding is zero after normalisation, i.e. the mean colour).
        target: dict with
            ``boxes`` ``(4,)`` float32 normalised ``(cx, cy, w, h)`` of the input (after
            augmentation: what the network should output); ``labels`` int64 scalar;
            ``boxes_xyxy`` ``(4,)`` float32 XYXY in original-image pixels (never augmented);
            ``scale`` ``(2,)`` and ``offset`` ``(2,)`` float32: the letterbox of the
            *un-augmented* image, an original point ``p`` is at ``p * scale + offset`` on the
            input (exact at evaluation, where nothing is augmented); ``orig_size`` ``(2,)``
            ``(height, width)`` of the original image; ``index`` (position in the split);
            ``image_id`` int64 (a COCO-style integer id, -1 where ids are not integers);
            ``image_key`` str (the dataset's name of the image).
    """

    def __init__(
        self,
        source: LocalizationSource,
        records: list[LocalizationRecord],
        input_size: tuple[int, int],
        augmentation: LocalizationAugmentation | None = None,
    ) -> None:
        self.source = source
        self.records = records
        self.input_size = input_size
        self.augmentation = augmentation
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        record = self.records[index]
        pixels = self.source.load_image(record)
        orig_h, orig_w = pixels.shape[-2:]
        box_xyxy = torch.tensor(record.box, dtype=torch.float32)
        _, scale, offset = letterbox_geometry((orig_h, orig_w), self.input_size)

        image = tv_tensors.Image(pixels)
        box = tv_tensors.BoundingBoxes(box_xyxy[None], format="XYXY", canvas_size=(orig_h, orig_w))
        if self.augmentation is not None:
            image, box = self.augmentation(image, box)
        canvas, aug_scale, aug_offset = letterbox(image.as_subclass(Tensor), self.input_size)
        canvas = (canvas / 255.0 - self.mean) / self.std

        height, width = self.input_size
        in_input = box.as_subclass(Tensor)[0].float() * torch.tensor(aug_scale * 2) + torch.tensor(aug_offset * 2)
        normalised = (in_input / torch.tensor([width, height, width, height], dtype=torch.float32)).clamp(0, 1)
        target = {
            "boxes": box_convert(normalised[None], "xyxy", "cxcywh")[0],
            "labels": torch.tensor(record.label, dtype=torch.int64),
            "boxes_xyxy": box_xyxy,
            "scale": torch.tensor(scale, dtype=torch.float32),
            "offset": torch.tensor(offset, dtype=torch.float32),
            "orig_size": torch.tensor([orig_h, orig_w], dtype=torch.int64),
            "index": torch.tensor(index),
            "image_id": torch.tensor(record.image_id if isinstance(record.image_id, int) else -1),
            "image_key": str(record.image_id),
        }
        return canvas.float(), target



class LocalizationDataModule(SourceDataModule):
    """Classification + localisation data for any ``LocalizationSource``.

    Args:
        source: where the images come from (``datamodules.synthetic.localization.SyntheticLocalization``,
            ``datamodules.formats.csv_boxes.CSVBoxes``).
        input_size: network input, ``int`` or ``(height, width)``; images are letterboxed to it.
        batch_size: per process (per GPU under DDP).
        num_workers: data-loading processes per training process.
        augmentation: training augmentation; ``None`` trains on plain letterboxed images.
        val_split: the source's split used for validation.
        test_split: the source's split used by ``test`` and ``predict``.
    """

    def __init__(
        self,
        source: LocalizationSource,
        input_size: int | tuple[int, int] = 64,
        batch_size: int = 32,
        num_workers: int = 2,
        augmentation: LocalizationAugmentation | None = None,
        val_split: str = "val",
        test_split: str = "test",
    ) -> None:
        super().__init__(source, batch_size, num_workers, val_split, test_split)
        self.input_size = pair(input_size)
        if min(self.input_size) < 8:
            raise ConfigError(f"LocalizationDataModule.input_size must be at least 8 pixels, got {input_size}")
        self.augmentation = augmentation

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.source.class_names)

    @property
    def facts(self) -> DataFacts:
        """What the localisation module is built with: the input shape and the class names."""
        return DataFacts(input_shape=(3, *self.input_size), class_names=self.class_names)

    def classes_missing_in_training(self) -> list[str]:
        seen = {int(record.label) for record in self.dataset("train", train=True).records}
        return [name for label, name in enumerate(self.source.class_names) if label not in seen]

    def make_dataset(self, split: str, records: list[LocalizationRecord], train: bool) -> LocalizationDataset:
        return LocalizationDataset(self.source, records, self.input_size, self.augmentation if train else None)

    def image_files_dataset(self, files: list[Path]) -> LocalizationDataset:
        """The files as evaluation samples, letterboxed like every image; their target box and
        class are placeholders (``(0, 0, 1, 1)``, class 0) that prediction never reads."""
        records = [LocalizationRecord(image=Path(f), box=(0.0, 0.0, 1.0, 1.0), label=0, image_id=Path(f).name) for f in files]
        return LocalizationDataset(_ImageFiles(self.source), records, self.input_size)


class _ImageFiles(LocalizationSource):
    """Image files without annotations, under the classes of the source a model learnt from."""

    def __init__(self, learnt: LocalizationSource) -> None:
        self.class_names = tuple(learnt.class_names)

    def records(self, split: str) -> list[LocalizationRecord]:
        raise ConfigError("image files have no splits")

    def load_image(self, record: LocalizationRecord) -> Tensor:
        from datamodules.formats.files import load_rgb

        return load_rgb(record.image)

    def data_report(self) -> dict[str, Any]:
        return {"source": "image files"}
