"""Semantic segmentation data: images and per-pixel class labels.

A *source* (``datamodules.synthetic.segmentation.SyntheticSegmentation``, the embedded default, or a
reader in ``datamodules.formats``: ``VOCSegmentation``, ``CamVid``, ``Cityscapes``, ``MaskFolder``,
``COCOSemantic``) lists its images as ``SegmentationRecord``s and loads each one as an image and a
label map in *training labels*: ``0 .. num_classes - 1`` and ``ignore_index`` (255) for pixels that
neither train nor count (VOC's object borders, CamVid's void, Cityscapes' unevaluated classes). This
module does the rest alike for every source: the training augmentation (torchvision.transforms.v2
with ``tv_tensors.Mask``, so the labels move with the pixels and are resized by nearest neighbour),
ImageNet normalisation, and batches.

Sizes. Training samples are crops of ``crop_size``; evaluation takes whole images (the official
protocols score every labelled pixel at the original resolution), and a batch of images of
different sizes is padded to the largest, with ``ignore_index`` in the padded labels, so padding
never counts. ``input_margin`` mirrors ``margin`` pixels around every image for networks whose
output is smaller than their input (the unpadded U-Net's overlap-tile strategy): the labels keep
the image's size and the network's output covers them.
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
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from core.errors import BadRecordError, ConfigError
from core.facts import DataFacts
from core.imaging import IMAGENET_MEAN, IMAGENET_STD
from core.label_sets import IGNORE_INDEX, palette_for
from core.records import RequiredPath
from datamodules.base import SourceDataModule, pair

__all__ = [
    "SegmentationRecord", "SegmentationSource", "SegmentationAugmentation", "SegmentationDataset",
    "SegmentationDataModule", "check_label_values", "pad_collate",
]


@dataclass
class SegmentationRecord:
    """One labelled image.

    Attributes:
        image: what the source's ``load`` needs for the pixels: a file path, or ``(split, index)`` for
            generated data.
        mask: the same for the labels (a file path, an annotation list, ...).
        image_id: the dataset's name of the image (``"2007_000033"``, ``"val/000012"``); an ``int`` is
            a COCO image id.
        extra: source-specific fields.
    """

    image: Any
    mask: Any
    image_id: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


class SegmentationSource(ABC):
    """What the segmentation data module needs of a source.

    Attributes:
        class_names: the classes, in label order (background, if the dataset has one, included).
        ignore_index: the label of pixels that are neither trained on nor scored.
        palette: an RGB colour per class for pictures (``None``: the VOC colour map).
    """

    class_names: tuple[str, ...] = ()
    ignore_index: int = IGNORE_INDEX
    palette: tuple[tuple[int, int, int], ...] | None = None

    @abstractmethod
    def records(self, split: str) -> list[SegmentationRecord]:
        """The split's records (``train``, ``val``, ``test``)."""

    @abstractmethod
    def load(self, record: SegmentationRecord) -> tuple[Tensor, Tensor]:
        """``(image, labels)``: ``(3, H, W)`` uint8 RGB and ``(H, W)`` int64 training labels
        (``0 .. num_classes - 1`` or ``ignore_index``). A label map of another size than the image,
        or a value that is neither a class nor ignored, raises ``BadRecordError`` naming the file."""

    def labels(self, record: SegmentationRecord) -> np.ndarray | Tensor:
        """``(H, W)`` training labels of ``record`` (what ``load`` returns beside the image; a source
        that can read them without the pixels overrides it)."""
        return self.load(record)[1]

    def required_paths(self) -> list[RequiredPath]:
        return []

    def data_report(self) -> dict[str, Any]:
        return {"source": type(self).__name__}


def check_label_values(labels: np.ndarray | Tensor, num_classes: int, ignore_index: int, file: Any, what: str = "label") -> None:
    """Every value of ``labels`` is a class (``0 .. num_classes - 1``) or ``ignore_index``; else
    ``BadRecordError`` naming ``file`` and the first values that are neither."""
    values = np.unique(np.asarray(labels))
    bad = [int(v) for v in values if not (0 <= v < num_classes or v == ignore_index)]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise BadRecordError(file, f"{what} values {shown} are neither one of the {num_classes} classes (0-{num_classes - 1}) "
                             f"nor the ignore index {ignore_index}", kind="label_value")


def check_same_size(image: Tensor, labels: Tensor, image_file: Any, mask_file: Any) -> None:
    """The label map has the image's size; else ``BadRecordError`` naming both files."""
    if tuple(image.shape[-2:]) != tuple(labels.shape[-2:]):
        (h, w), (mh, mw) = image.shape[-2:], labels.shape[-2:]
        raise BadRecordError(mask_file, f"the label map is {mw}x{mh} but its image {image_file} is {w}x{h}", kind="size_mismatch")


class SegmentationAugmentation:
    """The training preset (torchvision's segmentation reference, the DeepLab recipe): random scale,
    crop with ignore padding, horizontal flip, photometric jitter.

    Args:
        crop_size: the training crop, ``int`` or ``(height, width)``; smaller images are padded
            (image: the mean colour, labels: ``ignore_index``) so the crop is always full size.
        scale_range: the image is resized by a factor drawn uniformly from this range (0.5-2.0).
        flip_prob: probability of a horizontal flip.
        brightness: ``v2.ColorJitter`` brightness, contrast and saturation strength (0: none).
        hue: ``v2.ColorJitter`` hue strength.

    ``__call__(image, mask, ignore_index)``: ``tv_tensors.Image`` ``(3, H, W)`` uint8 and
    ``tv_tensors.Mask`` ``(H, W)`` -> the same types of ``crop_size``. Images are resized bilinearly,
    labels by nearest neighbour (no label is invented at a boundary). Randomness comes from torch's
    global generator, which ``EpochSeededDataset`` seeds from ``(seed, epoch, index)`` for each sample.
    """

    def __init__(
        self,
        crop_size: int | tuple[int, int] = 480,
        scale_range: tuple[float, float] = (0.5, 2.0),
        flip_prob: float = 0.5,
        brightness: float = 0.2,
        hue: float = 0.0,
    ) -> None:
        low, high = float(scale_range[0]), float(scale_range[1])
        if not 0 < low <= high:
            raise ConfigError(f"SegmentationAugmentation.scale_range must be 0 < low <= high, got {list(scale_range)}")
        self.crop_size = pair(crop_size)
        self.scale_range = (low, high)
        self.flip = v2.RandomHorizontalFlip(flip_prob) if flip_prob > 0 else None
        self.jitter = v2.ColorJitter(brightness=brightness, contrast=brightness, saturation=brightness, hue=hue) if brightness > 0 or hue > 0 else None

    def __call__(self, image: tv_tensors.Image, mask: tv_tensors.Mask, ignore_index: int = IGNORE_INDEX) -> tuple[tv_tensors.Image, tv_tensors.Mask]:
        low, high = self.scale_range
        if high > low or low != 1.0:
            scale = low + (high - low) * float(torch.rand(()))
            height, width = image.shape[-2:]
            size = [max(1, round(height * scale)), max(1, round(width * scale))]
            image, mask = TF.resize(image, size, antialias=True), TF.resize(mask, size)
        crop_h, crop_w = self.crop_size
        height, width = image.shape[-2:]
        if height < crop_h or width < crop_w:
            padding = [0, 0, max(0, crop_w - width), max(0, crop_h - height)]  # left, top, right, bottom
            mean = [round(255 * m) for m in IMAGENET_MEAN]
            image = TF.pad(image, padding, fill=mean)
            mask = TF.pad(mask, padding, fill=ignore_index)
        top, left, crop_h, crop_w = _crop_params(image, (crop_h, crop_w))
        image, mask = TF.crop(image, top, left, crop_h, crop_w), TF.crop(mask, top, left, crop_h, crop_w)
        if self.flip is not None:
            image, mask = self.flip(image, mask)
        if self.jitter is not None:
            image = self.jitter(image)
        return image, mask


def _crop_params(image: Tensor, size: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = image.shape[-2:]
    top = int(torch.randint(0, height - size[0] + 1, ()))
    left = int(torch.randint(0, width - size[1] + 1, ()))
    return top, left, size[0], size[1]


class SegmentationDataset(Dataset):
    """The images of one split as ``(image, target)`` pairs.

    Returns:
        image: ``(C, H + 2m, W + 2m)`` float32, ImageNet-normalised (``C = 1``: the grey level,
            normalised with the mean of the three means and stds), ``m = input_margin`` pixels
            mirrored on every side.
        target: ``labels`` ``(H, W)`` int64 training labels (``ignore_index`` where unscored);
            ``index`` (position in the split); ``image_id`` int64 (COCO-style id, -1 otherwise);
            ``image_key`` str (the dataset's name of the image); ``size`` ``(2,)`` ``(H, W)`` of the
            unpadded labels (an evaluation batch pads them to its largest).
    """

    def __init__(
        self,
        source: SegmentationSource,
        records: list[SegmentationRecord],
        augmentation: SegmentationAugmentation | None = None,
        channels: int = 3,
        input_margin: int = 0,
    ) -> None:
        self.source = source
        self.records = records
        self.augmentation = augmentation
        self.channels = channels
        self.input_margin = input_margin
        mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        if channels == 1:
            mean, std = mean.mean(0, keepdim=True), std.mean(0, keepdim=True)
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        record = self.records[index]
        pixels, labels = self.source.load(record)
        image, mask = tv_tensors.Image(pixels), tv_tensors.Mask(labels)
        if self.augmentation is not None:
            image, mask = self.augmentation(image, mask, self.source.ignore_index)
        image = image.as_subclass(Tensor).float() / 255.0
        if self.channels == 1:
            image = TF.rgb_to_grayscale(image)
        image = (image - self.mean) / self.std
        if self.input_margin:
            m = self.input_margin
            image = F.pad(image[None], (m, m, m, m), mode="reflect")[0]
        labels = mask.as_subclass(Tensor).long()
        return image.contiguous(), {
            "labels": labels,
            "index": torch.tensor(index),
            "image_id": torch.tensor(record.image_id if isinstance(record.image_id, int) else -1),
            "image_key": str(record.image_id),
            "size": torch.tensor(labels.shape[-2:], dtype=torch.int64),
        }


def pad_collate(ignore_index: int = IGNORE_INDEX):
    """A collate function that stacks samples of different sizes: images padded at the bottom and
    right to the batch's largest with zeros (the mean colour once normalised), labels with
    ``ignore_index``; samples of one size are stacked as they are."""

    def collate(samples: Sequence[tuple[Tensor, dict[str, Any]]]) -> tuple[Tensor, dict[str, Any]]:
        images = [s[0] for s in samples]
        targets = [s[1] for s in samples]
        height = max(i.shape[-2] for i in images)
        width = max(i.shape[-1] for i in images)
        label_h = max(t["labels"].shape[-2] for t in targets)
        label_w = max(t["labels"].shape[-1] for t in targets)
        batch_images = torch.stack([F.pad(i, (0, width - i.shape[-1], 0, height - i.shape[-2])) for i in images])
        labels = torch.stack([F.pad(t["labels"], (0, label_w - t["labels"].shape[-1], 0, label_h - t["labels"].shape[-2]), value=ignore_index) for t in targets])
        return batch_images, {
            "labels": labels,
            "index": torch.stack([t["index"] for t in targets]),
            "image_id": torch.stack([t["image_id"] for t in targets]),
            "image_key": [t["image_key"] for t in targets],
            "size": torch.stack([t["size"] for t in targets]),
        }

    return collate


class SegmentationDataModule(SourceDataModule):
    """Semantic segmentation data for any ``SegmentationSource``.

    Args:
        source: where the images and labels come from.
        crop_size: the training crop ``int`` or ``(height, width)`` when ``augmentation`` is
            ``None`` (then training images are cropped at random or padded to it, so that they stack); with
            an augmentation, its own ``crop_size`` is used. It is also the size of the module's
            ``example_input_array``.
        batch_size: per process (per GPU under DDP).
        num_workers: data-loading processes per training process.
        augmentation: the training preset; ``None`` trains on whole images.
        channels: 3 (RGB) or 1 (grey, for U-Net's one-channel microscopy images).
        input_margin: pixels mirrored around every image (for the unpadded U-Net: 92 turns a 388
            tile into its 572 input).
        val_split: the source's split used for validation.
        test_split: the source's split used by ``test`` and ``predict``.
    """

    def __init__(
        self,
        source: SegmentationSource,
        crop_size: int | tuple[int, int] = 480,
        batch_size: int = 8,
        num_workers: int = 2,
        augmentation: SegmentationAugmentation | None = None,
        channels: int = 3,
        input_margin: int = 0,
        val_split: str = "val",
        test_split: str = "test",
    ) -> None:
        super().__init__(source, batch_size, num_workers, val_split, test_split)
        if channels not in (1, 3):
            raise ConfigError(f"SegmentationDataModule.channels must be 1 or 3, got {channels}")
        if input_margin < 0:
            raise ConfigError(f"SegmentationDataModule.input_margin must be >= 0, got {input_margin}")
        self.crop_size = augmentation.crop_size if augmentation is not None else pair(crop_size)
        if min(self.crop_size) < 8:
            raise ConfigError(f"SegmentationDataModule.crop_size must be at least 8 pixels, got {crop_size}")
        self.augmentation = augmentation
        self.channels = channels
        self.input_margin = input_margin
        self.collate_fn = pad_collate(source.ignore_index)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.source.class_names)

    @property
    def facts(self) -> DataFacts:
        """The input shape (a training crop with its margin), the classes, the ignore index and the
        palette of the pictures."""
        m = 2 * self.input_margin
        return DataFacts(
            input_shape=(self.channels, self.crop_size[0] + m, self.crop_size[1] + m),
            class_names=self.class_names,
            ignore_index=int(self.source.ignore_index),
            palette=tuple(self.source.palette or palette_for(len(self.class_names))),
        )

    def classes_missing_in_training(self) -> list[str]:
        """Classes no training label map holds: the maps are read until every class has been seen
        (a few images, usually), so only a class that is really missing costs a pass over them all."""
        names = self.class_names
        unseen = set(range(len(names)))
        for record in self.dataset("train", train=True).records:
            labels = np.asarray(self.source.labels(record))
            present = np.flatnonzero(np.bincount(labels[labels != self.source.ignore_index].ravel(), minlength=len(names)))
            unseen -= set(present.tolist())
            if not unseen:
                break
        return [names[label] for label in sorted(unseen)]

    def make_dataset(self, split: str, records: list[SegmentationRecord], train: bool) -> SegmentationDataset:
        augmentation = self.augmentation if train else None
        if train and augmentation is None:
            # Whole images do not stack in a shuffled batch unless they share a size: crop or pad to crop_size.
            augmentation = SegmentationAugmentation(self.crop_size, scale_range=(1.0, 1.0), flip_prob=0.0, brightness=0.0)
        return SegmentationDataset(self.source, records, augmentation, self.channels, self.input_margin)

    def image_files_dataset(self, files: list[Path]) -> SegmentationDataset:
        """The files as evaluation samples: whole images, with labels all ``ignore_index`` (their
        size is the grid the predictions are made on)."""
        records = [SegmentationRecord(image=Path(f), mask=None, image_id=Path(f).name) for f in files]
        return SegmentationDataset(_ImageFiles(self.source), records, None, self.channels, self.input_margin)


class _ImageFiles(SegmentationSource):
    """Image files without labels, under the classes of the source a model learnt from."""

    def __init__(self, learnt: SegmentationSource) -> None:
        self.class_names = tuple(learnt.class_names)
        self.ignore_index = learnt.ignore_index
        self.palette = learnt.palette

    def records(self, split: str) -> list[SegmentationRecord]:
        raise ConfigError("image files have no splits")

    def load(self, record: SegmentationRecord) -> tuple[Tensor, Tensor]:
        from datamodules.formats.files import load_rgb

        image = load_rgb(record.image)
        return image, torch.full(tuple(image.shape[-2:]), self.ignore_index, dtype=torch.int64)

