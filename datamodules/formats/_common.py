"""What the on-disk readers share: file loading that fails with the file's name (images, label
images, JSON, ``.mat``, list files), the checks of one record's fields, base classes for sources whose
images are files (``ImageFileSource`` for pose, ``MaskFileSource`` for segmentation), the pairing
of image and label files by name, and the box-to-centre/scale rule of the pose readers.

Every reader resolves its paths against its ``root`` (an absolute path is taken as is), lists them
in ``required_paths()`` and checks them first thing in ``__init__``
(``core.records.check_required``), then parses its annotations there, so that a wrong config or a
broken file fails before training starts:

* a missing root, folder or file raises ``DataNotFoundError`` naming it;
* a file that does not parse, or whose layout is not the format's as a whole, raises
  ``AnnotationFormatError`` naming the file;
* a record that fails a check is a *bad record*, handled by the source's ``on_bad_record``
  (``core.records``): ``error`` raises ``BadRecordError`` naming the file and the record, ``skip``
  drops it and counts it in the source's ``data_report()``;
* a record the format's own rules leave out (a COCO crowd, ...) is counted as ``filtered``;
* a split left without records raises ``BadRecordError`` under either policy.

Images are decoded at training time, possibly in DataLoader workers: a missing file raises
``DataNotFoundError("image", path)``, one that cannot be decoded ``ImageReadError``; both are
``ConfigError``s, which the CLI prints as one line, also when a worker raised them. A segmentation
label image is decoded there too: one of another size than its image, or holding a value that is
neither a class nor the ignore index, raises ``BadRecordError`` naming the file (it is found only
once the pixels are read, so it cannot be skipped at parse time).
"""
from __future__ import annotations

import json
import math
import reprlib
from collections.abc import Callable, Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from core.errors import AnnotationFormatError, BadRecordError, DataNotFoundError, ImageReadError
from core.records import RecordChecker, RecordProblem, RequiredPath, finite_array, inside_root
from datamodules.pose import PoseRecord, PoseSource
from datamodules.segmentation import SegmentationRecord, SegmentationSource, check_label_values, check_same_size

__all__ = [
    "ParsedSplits",
    "ImageFileSource",
    "MaskFileSource",
    "IMAGE_SUFFIXES",
    "resolve",
    "load_json",
    "load_mat",
    "load_rgb",
    "load_label_map",
    "COCO_SPLITS",
    "coco_required_paths",
    "read_list",
    "value_table",
    "map_label_values",
    "files_by_key",
    "paired_records",
    "joint_box_center_scale",
    "finite_number",
    "number",
    "positive_number",
    "record_field",
    "joint_array",
    "image_file",
]


def resolve(root: Path, path: str | Path) -> Path:
    """``path`` under ``root``, unless it is absolute."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def load_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AnnotationFormatError(path, f"not valid JSON ({error})") from error


def load_mat(path: Path, variables: Iterable[str]) -> dict[str, Any]:
    """A MATLAB v5 ``.mat`` file through ``scipy.io.loadmat`` with ``squeeze_me`` and structs as
    attribute objects; every name in ``variables`` must be in it."""
    from scipy.io import loadmat

    try:
        content = loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except Exception as error:  # scipy raises ValueError, TypeError, MatReadError... for a bad file
        raise AnnotationFormatError(path, f"not a readable MATLAB .mat file ({type(error).__name__}: {error})") from error
    names = [name for name in content if not name.startswith("__")]
    for name in variables:
        if name not in content:
            raise AnnotationFormatError(path, f"no variable {name!r} (the file has {names})")
    return content


# Image files the readers list from folders. torchvision decodes JPEG and PNG; TIFF and BMP (the
# microscopy datasets') go through PIL.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_PIL_ONLY = (".tif", ".tiff", ".bmp")


def load_rgb(path: str | Path) -> Tensor:
    """``(3, H, W)`` uint8 RGB image. ``DataNotFoundError("image", path)`` when the file is not
    there, ``ImageReadError`` when it cannot be decoded (both one-line messages naming the file)."""
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("image", path)
    try:
        if path.suffix.lower() in _PIL_ONLY:
            from PIL import Image

            with Image.open(path) as image:
                return torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as error:
        # One line: a DataLoader worker's error reaches the user as the last line of its message.
        raise ImageReadError(path, " ".join(str(error).split()) or type(error).__name__) from error


def load_label_map(path: str | Path) -> np.ndarray:
    """The ``(H, W)`` integer values of a label image: the *indices* of a palette PNG (VOC's
    ``SegmentationClass``: the colours are only how viewers show them), the grey values of a
    one-channel image (8 or 16 bit), 0 / 255 for a 1-bit image (as viewers show it). A colour image
    whose channels differ holds colours, not labels: ``BadRecordError`` (``label_format``). A missing
    file raises ``DataNotFoundError("label image", path)``, one that cannot be decoded
    ``ImageReadError``."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("label image", path)
    try:
        with Image.open(path) as image:
            if image.mode == "1":
                image = image.convert("L")
            values = np.array(image)
    except (OSError, ValueError) as error:  # PIL's UnidentifiedImageError and truncated files are OSErrors
        raise ImageReadError(path, " ".join(str(error).split()) or type(error).__name__) from error
    if values.ndim == 3:
        # A grey label image saved as RGB(A) is common; colour-coded labels need a conversion first.
        if values.shape[2] >= 3 and (values[..., 0] == values[..., 1]).all() and (values[..., 0] == values[..., 2]).all():
            values = values[..., 0]
        else:
            raise BadRecordError(path, f"a colour label image ({image.mode}): the reader needs class indices "
                                 "(a palette or grey image)", kind="label_format")
    if values.ndim != 2 or not np.issubdtype(values.dtype, np.integer):
        raise BadRecordError(path, f"a label image must hold one integer per pixel, got {values.dtype} {values.shape}",
                             kind="label_format")
    return values


COCO_SPLITS = ("train", "val")


def coco_required_paths(root: Path, annotation_files: Mapping[str, Path], image_dirs: Mapping[str, Path]) -> list[RequiredPath]:
    """The paths of COCO's 2017 layout (root, then each split's annotation file and image folder),
    named by the readers' common arguments ``{split}_annotations`` and ``{split}_images``."""
    paths = [RequiredPath("COCO root", root, "root", "folder")]
    for split in COCO_SPLITS:
        paths.append(RequiredPath(f"COCO {split} annotation file", annotation_files[split], f"{split}_annotations"))
        paths.append(RequiredPath(f"COCO {split} image folder", image_dirs[split], f"{split}_images", "folder"))
    return paths


def read_list(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank lines of a list file (``ImageSets/Segmentation/train.txt``, SegNet's
    ``train.txt``) as ``(line number, whitespace-separated fields)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise AnnotationFormatError(path, f"not a text list file ({error})") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def value_table(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
    """A lookup table from the values a format stores to training labels: ``table[value]`` is the
    label, -1 for a value the format does not define."""
    table = np.full(max(size, max(mapping, default=0) + 1), -1, dtype=np.int64)
    for value, label in mapping.items():
        table[int(value)] = int(label)
    return table


def map_label_values(values: np.ndarray, table: np.ndarray, file: Any, defined: str) -> np.ndarray:
    """``values`` through ``table`` (``value_table``) as int64 training labels; a value the table does
    not define raises ``BadRecordError`` naming ``file``, the values, and ``defined`` (what the format
    defines, for the message)."""
    # bincount: a full-size Cityscapes map is 2M pixels, and unique() sorts them in every worker.
    present = np.flatnonzero(np.bincount(values.ravel())) if values.dtype.kind == "u" else np.unique(values)
    bad = [int(v) for v in present if not 0 <= v < len(table) or table[int(v)] < 0]
    if bad:
        shown = ", ".join(str(v) for v in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise BadRecordError(file, f"label values {shown} are not values of the format ({defined})", kind="label_value")
    return table[values]


def joint_box_center_scale(keypoints: np.ndarray, visible: np.ndarray, padding: float) -> tuple[tuple[float, float], float] | None:
    """Centre and MPII scale of the box around the annotated joints: ``center`` is the box centre,
    ``200 * scale`` is the box's longer side times ``padding``. None without annotated joints."""
    points = keypoints[visible]
    if len(points) == 0:
        return None
    lo, hi = points.min(0), points.max(0)
    side = float(max(hi - lo))
    # One annotated joint (or all on one spot) still gets a usable crop of 20 pixels.
    side = max(side, 20.0)
    center = (lo + hi) / 2
    return (float(center[0]), float(center[1])), side * padding / 200.0


def finite_number(value: Any) -> float | None:
    """``float(value)`` when it is one finite number (a 0-d or 1-element array counts), else None."""
    array = np.asarray(value)
    if array.size != 1 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        return None
    number = float(array.reshape(()))
    return number if math.isfinite(number) else None


# ---------------------------------------------------------------------------------- one record
def number(value: Any, field: str) -> float:
    """One finite number (a 0-d or 1-element array counts): ``wrong_type`` when it is not a number,
    ``non_finite`` for NaN or inf."""
    array = np.asarray(value)
    if array.size != 1 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise RecordProblem("wrong_type", f"field {field!r} must be a number, got {reprlib.repr(value)}")
    result = float(array.reshape(()))
    if not math.isfinite(result):
        raise RecordProblem("non_finite", f"field {field!r} holds a non-finite number")
    return result


def positive_number(value: Any, field: str) -> float:
    """``number`` that must be > 0 (a person's scale: 0 or less is an ``empty_box``)."""
    result = number(value, field)
    if result <= 0:
        raise RecordProblem("empty_box", f"field {field!r} must be a number > 0, got {result:g}")
    return result


def record_field(entry: Any, key: str) -> Any:
    """``entry[key]`` of a JSON record: ``wrong_type`` when the record is not an object,
    ``missing_field`` when it lacks the key."""
    if not isinstance(entry, dict):
        raise RecordProblem("wrong_type", f"expected an object, got {type(entry).__name__}")
    if key not in entry:
        raise RecordProblem("missing_field", f"missing field {key!r}")
    return entry[key]


def joint_array(value: Any, field: str, shape: tuple[int, ...]) -> np.ndarray:
    """A per-joint field as a float64 array of ``shape`` (joints first), every entry finite, also
    those of joints the format marks unannotated (they would reach the loss): another number of
    joints is a ``keypoint_count`` problem, another layout ``wrong_type``, NaN or inf
    ``non_finite``."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordProblem("wrong_type", f"field {field!r} must be numbers of shape {shape}") from None
    if array.shape != shape:
        kind = "keypoint_count" if array.ndim == len(shape) and array.shape[1:] == shape[1:] else "wrong_type"
        raise RecordProblem(kind, f"field {field!r} must have shape {shape}, got {array.shape}")
    return finite_array(array, field)


def image_file(image_dir: Path, name: Any, field: str, what: str = "image file") -> Path:
    """The image file a record names, checked at parse time: inside ``image_dir``
    (``path_outside_root``: a ``..`` or an absolute path in an annotation could read any file) and
    there (``image_missing``: found now rather than by a worker in the middle of an epoch).
    ``what`` names the file in the message (a segmentation reader's ``label image``)."""
    path = inside_root(image_dir, name, field)
    if not path.is_file():
        raise RecordProblem("image_missing", f"{what} {path} is not there")
    return path


class ParsedSplits:
    """``records(split)`` of a reader that parses every split up front into ``self.splits``."""

    splits: dict[str, list[Any]]

    def records(self, split: str) -> list[Any]:
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__} has splits {sorted(self.splits)}, not {split!r}")
        return list(self.splits[split])


class ImageFileSource(ParsedSplits, PoseSource):
    """A pose source whose records are parsed up front into ``self.splits`` and whose
    ``record.image`` is an image file path."""

    splits: dict[str, list[PoseRecord]]

    def load_image(self, record: PoseRecord) -> Tensor:
        return load_rgb(record.image)


# ---------------------------------------------------------------------------------- segmentation
def files_by_key(folder: Path, suffixes: Iterable[str], key_of: Callable[[Path], str | None] = attrgetter("stem")) -> dict[str, list[Path]]:
    """The files directly in ``folder`` whose name ends in one of ``suffixes`` (case-insensitive),
    grouped by ``key_of(path)`` (the file stem by default; ``None`` passes the file over)."""
    suffixes = tuple(s.lower() for s in suffixes)
    grouped: dict[str, list[Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.name.lower().endswith(suffixes):
            key = key_of(path)
            if key is not None:
                grouped.setdefault(key, []).append(path)
    return grouped


def paired_records(
    checker: RecordChecker, file: Path, images: dict[str, list[Path]], masks: dict[str, list[Path]], mask_dir: Path
) -> list[SegmentationRecord]:
    """One record per key of ``images`` or ``masks`` (sorted), for readers whose image and label
    files are matched by name: a key with several images or several label images is a
    ``duplicate``, an image without its label image or a label image without its image is an
    ``image_missing`` bad record (checked against ``file``, the split's image folder)."""
    records = []
    for key in sorted(set(images) | set(masks)):
        with checker.record(file, key):
            found, labels = images.get(key, []), masks.get(key, [])
            for what, paths in (("images", found), ("label images", labels)):
                if len(paths) > 1:
                    raise RecordProblem("duplicate", f"several {what} for one name: {', '.join(p.name for p in paths)}")
            if not labels:
                raise RecordProblem("image_missing", f"image {found[0]} has no label image in {mask_dir}")
            if not found:
                raise RecordProblem("image_missing", f"label image {labels[0]} has no image")
            records.append(SegmentationRecord(image=str(found[0]), mask=str(labels[0]), image_id=key))
    return records


class MaskFileSource(ParsedSplits, SegmentationSource):
    """A segmentation source whose records are parsed up front into ``self.splits``, whose
    ``record.image`` is an image file and whose labels come from ``label_map(record)``: by default
    the label image ``record.mask``, its values through ``label_table`` (``value_table``; ``None``:
    the values are the training labels already).

    ``load`` checks what only the pixels show, naming the file: a value that is neither a class nor
    the ignore index (``check_label_values``, or ``map_label_values`` with a table, whose labels
    are valid by construction) and a label map of another size than its image
    (``check_same_size``).
    """

    splits: dict[str, list[SegmentationRecord]]
    checker: RecordChecker
    label_table: np.ndarray | None = None
    # What the table maps, for the message of a value outside it.
    label_values_defined: str = ""

    def label_map(self, record: SegmentationRecord) -> np.ndarray:
        """``(H, W)`` training labels of ``record``, every value a class or the ignore index."""
        values = load_label_map(record.mask)
        if self.label_table is None:
            check_label_values(values, len(self.class_names), self.ignore_index, record.mask)
            return values
        return map_label_values(values, self.label_table, record.mask, self.label_values_defined)

    def label_file(self, record: SegmentationRecord) -> str:
        """What an error about ``record``'s labels names: its label image."""
        return str(record.mask)

    def load(self, record: SegmentationRecord) -> tuple[Tensor, Tensor]:
        image = load_rgb(record.image)
        labels = torch.from_numpy(np.ascontiguousarray(self.label_map(record)).astype(np.int64))
        check_same_size(image, labels, record.image, self.label_file(record))
        return image, labels

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()
