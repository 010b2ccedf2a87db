"""SIIM-ACR Pneumothorax Segmentation (Kaggle 2019): chest radiographs as DICOM files and the
pneumothorax masks as run-length encodings in a CSV, for binary segmentation (``background``,
``pneumothorax``).

Files: the DICOM images anywhere under ``<root>/<image_dir>`` (the competition nests them as
``dicom-images-train/<study>/<series>/<ImageId>.dcm``), found by their ``.dcm`` suffix, the
``ImageId`` being the file's stem; ``<root>/<rle_file>`` with the columns ``ImageId,
EncodedPixels`` (the competition's header writes `` EncodedPixels`` with a space; cells are
stripped). ``EncodedPixels`` is ``-1`` for an image without pneumothorax; an image with several
regions has several rows, whose masks are united.

The run-length encoding is the competition's own (its ``mask_functions.py``, ``rle2mask``), not
Kaggle's usual one: pairs ``start length`` where ``start`` is *relative*, the number of pixels
skipped after the end of the previous run (the first from pixel 0), and pixels are numbered
*column-major*, down each column then to the next (``index = x * H + y``; ``rle2mask`` returns
``mask.reshape(width, height)`` and the kernels transpose it). ``decode_siim_rle`` returns the
``(H, W)`` mask in image orientation (NumPy ``reshape((H, W), order="F")``).

Images are read with pydicom: the pixel data as stored (8 bit in the competition; more bits are
scaled to 8 by ``BitsStored``), ``MONOCHROME1`` inverted so that bright is dense, repeated to 3
channels. Splits: the CSV covers the training images only, so ``val`` is a seeded fraction of them
(``val_fraction`` of the ids, sorted and shuffled by ``numpy.random.default_rng(seed)``, at least
one), and ``test`` is ``val``.

Checks, per ``ImageId`` (a failure is a bad record; ``on_bad_record`` decides): each row has two
cells (``missing_field``); ``EncodedPixels`` is ``-1`` or pairs of whole numbers, lengths above 0
(``wrong_type``); the ImageId has its DICOM file (``image_missing``), one only (``duplicate``),
whose header gives ``Rows`` and ``Columns`` (``image_missing`` when it does not read); the runs end
inside the image (``mask_outside_image``). A DICOM file without a row is left out, counted as
filtered (``no_annotation``: it is not labelled). A DICOM whose pixels cannot be decoded raises
``ImageReadError`` naming it when it is loaded.
"""
from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from core.errors import AnnotationFormatError, BadRecordError, ConfigError, ImageReadError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_required
from datamodules.formats.files import resolve
from datamodules.formats.sources import MaskFileSource
from datamodules.segmentation import SegmentationRecord

__all__ = ["SIIMPneumothorax", "decode_siim_rle", "encode_siim_rle", "read_dicom"]


def decode_siim_rle(runs: Sequence[int], height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 0/1 mask of the competition's relative, column-major run-length pairs
    ``[start_1, length_1, start_2, ...]`` (see the module's docstring)."""
    flat = np.zeros(height * width, dtype=np.uint8)
    position = 0
    for start, length in zip(runs[0::2], runs[1::2]):
        position += int(start)
        flat[position:position + int(length)] = 1
        position += int(length)
    return flat.reshape((height, width), order="F")


def encode_siim_rle(mask: np.ndarray) -> str:
    """The competition's encoding of a ``(H, W)`` binary mask (``"-1"`` for an empty one): the
    inverse of ``decode_siim_rle``."""
    flat = np.concatenate([[0], np.asarray(mask, dtype=bool).reshape(-1, order="F").astype(np.int8), [0]])
    changes = np.flatnonzero(np.diff(flat))
    starts, ends = changes[0::2], changes[1::2]
    if len(starts) == 0:
        return "-1"
    previous_ends = np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s - p} {e - s}" for s, e, p in zip(starts, ends, previous_ends))


def read_dicom(path: str | Path) -> Tensor:
    """``(3, H, W)`` uint8 of a DICOM image (see the module's docstring); ``ImageReadError`` naming
    the file when pydicom cannot decode it."""
    import pydicom

    try:
        dataset = pydicom.dcmread(str(path))
        pixels = np.asarray(dataset.pixel_array)
    except Exception as error:  # pydicom raises many types: InvalidDicomError, missing pixel data, a codec's
        raise ImageReadError(path, " ".join(str(error).split()) or type(error).__name__) from None
    if pixels.ndim != 2:
        raise ImageReadError(path, f"a one-frame grey image was expected, the pixel data has shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        bits = int(getattr(dataset, "BitsStored", 16))
        pixels = np.clip(pixels.astype(np.float64) * 255.0 / (2 ** bits - 1), 0, 255).round().astype(np.uint8)
    if getattr(dataset, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        pixels = 255 - pixels
    return torch.from_numpy(np.ascontiguousarray(pixels)).expand(3, *pixels.shape).contiguous()


def _dicom_size(path: Path) -> tuple[int, int]:
    import pydicom

    try:
        header = pydicom.dcmread(str(path), stop_before_pixels=True)
        return int(header.Rows), int(header.Columns)
    except Exception as error:  # not DICOM, or no Rows/Columns
        raise RecordProblem("image_missing", f"DICOM file {path} has no readable Rows and Columns ({type(error).__name__})") from None


def _runs(text: str) -> list[int]:
    """The run-length pairs of one ``EncodedPixels`` cell (``[]`` for ``-1``)."""
    if text == "-1":
        return []
    try:
        runs = [int(v) for v in text.split()]
    except ValueError:
        raise RecordProblem("wrong_type", f"EncodedPixels must be -1 or whole numbers, got {text[:40]!r}") from None
    if not runs or len(runs) % 2 or min(runs[1::2]) < 1 or min(runs[0::2]) < 0:
        raise RecordProblem("wrong_type", f"EncodedPixels must be pairs 'start length' (start >= 0, length >= 1), got {text[:40]!r}")
    return runs


class SIIMPneumothorax(MaskFileSource):
    """SIIM-ACR pneumothorax DICOM images with run-length masks (see the module's docstring).

    Args:
        root: dataset folder; the other paths are relative to it unless absolute.
        image_dir: the folder searched (with its sub-folders) for ``<ImageId>.dcm``.
        rle_file: the CSV of ``ImageId, EncodedPixels`` rows.
        val_fraction: the share of the labelled images held out for ``val`` (and ``test``).
        seed: the seed of that split.
        class_names: the two classes, background first.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).

    Records: ``image`` the DICOM path, ``mask`` the run-length pairs of every row of the image,
    ``image_id`` the ImageId, ``extra`` the ``size`` ``(H, W)`` from the DICOM header.
    """

    def __init__(
        self,
        root: str = "data/siim",
        image_dir: str = "dicom-images-train",
        rle_file: str = "train-rle.csv",
        val_fraction: float = 0.1,
        seed: int = 0,
        class_names: Sequence[str] = ("background", "pneumothorax"),
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if not 0 < val_fraction < 1:
            raise ConfigError(f"SIIMPneumothorax.val_fraction must be in (0, 1), got {val_fraction}")
        if len(class_names) != 2 or len(set(class_names)) != 2:
            raise ConfigError(f"SIIMPneumothorax.class_names must be two distinct names, background first, got {list(class_names)}")
        self.class_names = tuple(str(c) for c in class_names)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.rle_file = resolve(self.root, rle_file)
        self.checker = RecordChecker("SIIMPneumothorax", on_bad_record)
        check_required(self.required_paths(), root=self.root, owner=self)
        records = self._read()
        order = np.random.default_rng(seed).permutation(len(records))
        held = set(order[:max(1, int(round(len(records) * val_fraction)))].tolist())
        self.splits = {"train": [r for i, r in enumerate(records) if i not in held], "val": [r for i, r in enumerate(records) if i in held]}
        for split in ("train", "val"):
            self.checker.kept(self.rle_file, len(self.splits[split]), split)
        self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        return [RequiredPath("SIIM dataset root", self.root, "root", "folder"),
                RequiredPath("SIIM DICOM folder", self.image_dir, "image_dir", "folder"),
                RequiredPath("SIIM run-length CSV", self.rle_file, "rle_file")]

    def _rows(self) -> list[tuple[int, list[str]]]:
        try:
            with open(self.rle_file, newline="", encoding="utf-8") as handle:
                rows = [(reader.line_num, [cell.strip() for cell in row]) for reader in [csv.reader(handle)] for row in reader]
        except (UnicodeDecodeError, csv.Error) as error:
            raise AnnotationFormatError(self.rle_file, f"not a readable CSV file ({type(error).__name__}: {error})") from None
        rows = [(n, row) for n, row in rows if any(row)]
        return rows[1:] if rows and rows[0][1][:1] == ["ImageId"] else rows

    def _read(self) -> list[SegmentationRecord]:
        files: dict[str, list[Path]] = {}
        for path in sorted(self.image_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() == ".dcm":
                files.setdefault(path.stem, []).append(path)
        runs: dict[str, list[list[int]]] = {}
        lines: dict[str, int] = {}
        bad: set[str] = set()
        for line, row in self._rows():
            image_id = row[0]
            with self.checker.record(self.rle_file, f"line {line} ({image_id!r})"):
                if len(row) < 2 or not image_id:
                    raise RecordProblem("missing_field", "a row needs ImageId and EncodedPixels")
                lines.setdefault(image_id, line)
                runs.setdefault(image_id, []).append(_runs(row[1]))
                continue
            bad.add(image_id)  # reached only when the row was skipped: the image is left out whole
        records = []
        for image_id in sorted(set(runs) - bad, key=lambda key: lines[key]):
            with self.checker.record(self.rle_file, f"ImageId {image_id!r}"):
                found = files.get(image_id, [])
                if not found:
                    raise RecordProblem("image_missing", f"no {image_id}.dcm under {self.image_dir}")
                if len(found) > 1:
                    raise RecordProblem("duplicate", f"several DICOM files for one ImageId: {', '.join(str(p) for p in found[:3])}")
                height, width = _dicom_size(found[0])
                for pairs in runs[image_id]:
                    if pairs and sum(pairs) > height * width:
                        raise RecordProblem("mask_outside_image", f"its runs end at pixel {sum(pairs)}, past the {width}x{height} image")
                records.append(SegmentationRecord(image=str(found[0]), mask=runs[image_id], image_id=image_id,
                                                  extra={"size": (height, width)}))
        unlabelled = len(set(files) - set(runs))
        if unlabelled:
            self.checker.filtered("no_annotation", self.image_dir, unlabelled,
                                  rule="DICOM files without a row in the CSV are not labelled: left out")
        return records

    def label_map(self, record: SegmentationRecord) -> np.ndarray:
        """``(H, W)`` int64: 1 where any of the image's rows marks pneumothorax."""
        height, width = record.extra["size"]
        labels = np.zeros((height, width), dtype=np.int64)
        for pairs in record.mask:
            labels |= decode_siim_rle(pairs, height, width)
        return labels

    def label_file(self, record: SegmentationRecord) -> str:
        return f"{self.rle_file} (ImageId {record.image_id!r})"

    def load(self, record: SegmentationRecord) -> tuple[Tensor, Tensor]:
        image = read_dicom(record.image)
        labels = torch.from_numpy(self.label_map(record))
        if tuple(image.shape[-2:]) != tuple(record.extra["size"]):
            raise BadRecordError(record.image, f"the pixel data is {image.shape[-1]}x{image.shape[-2]} but the header gives "
                                 f"{record.extra['size'][1]}x{record.extra['size'][0]}", kind="size_mismatch")
        return image, labels

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()
