"""What the on-disk readers share: file loading that fails with the file's name (images, label
images, JSON, ``.mat``, list files, CSV rows, image sizes from the header), the checks of one
record's fields, COCO segmentations (checked and decoded), base classes for sources whose images
are files (``ImageFileSource`` for pose, ``MaskFileSource`` for segmentation,
``DetectionFileSource`` for detection), the pairing of image and label files by name, and the
box-to-centre/scale rule of the pose readers.

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

import contextlib
import csv
import json
import math
import reprlib
from collections.abc import Callable, Mapping
from operator import attrgetter
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import Tensor

from core.errors import AnnotationFormatError, BadRecordError, ConfigError, DataNotFoundError, ImageReadError
from core.records import RecordChecker, RecordProblem, RequiredPath, finite_array, inside_root
from datamodules.detection import DetectionRecord, DetectionSource
from datamodules.pose import PoseRecord, PoseSource
from datamodules.segmentation import SegmentationRecord, SegmentationSource, check_label_values, check_same_size

__all__ = [
    "ParsedSplits",
    "ImageFileSource",
    "MaskFileSource",
    "DetectionFileSource",
    "IMAGE_SUFFIXES",
    "resolve",
    "load_json",
    "load_mat",
    "load_rgb",
    "load_label_map",
    "COCO_SPLITS",
    "coco_required_paths",
    "coco_content",
    "coco_annotations_by_image",
    "coco_images",
    "read_list",
    "read_csv_rows",
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
    "image_size",
    "text_number",
    "known",
    "positive_int",
    "problem_at",
    "coco_segmentation",
    "decode_coco_segmentation",
    "clip_box",
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
    named by the readers' common arguments ``{split}_annotations`` and ``{split}_images``: the
    splits of ``annotation_files`` (``train``, ``val``, and ``test`` where a reader has one)."""
    paths = [RequiredPath("COCO root", root, "root", "folder")]
    for split in annotation_files:
        paths.append(RequiredPath(f"COCO {split} annotation file", annotation_files[split], f"{split}_annotations"))
        paths.append(RequiredPath(f"COCO {split} image folder", image_dirs[split], f"{split}_images", "folder"))
    return paths


def coco_content(path: Path, task: str) -> dict[str, Any]:
    """The COCO dictionary of ``path``: an object with ``images``, ``categories`` and
    ``annotations`` lists, else ``AnnotationFormatError`` (``task`` says who needs the annotations)."""
    content = load_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) or not isinstance(content.get("categories"), list):
        raise AnnotationFormatError(path, "not a COCO annotation file (it needs 'images' and 'categories' lists)")
    if not isinstance(content.get("annotations"), list):
        raise AnnotationFormatError(path, f"no 'annotations' list (an image-info file has none; {task} needs one)")
    return content


def coco_annotations_by_image(path: Path, content: dict[str, Any], checker: RecordChecker) -> tuple[set[Any], dict[Any, list[tuple[int, Any]]]]:
    """The file's image ids, and its annotations grouped by image id, each with its index in the
    file. An annotation that is not an object, or whose ``image_id`` is none of the images', is a
    bad record (``checker``'s policy)."""
    image_ids = {info["id"] for info in content["images"] if isinstance(info, dict) and isinstance(info.get("id"), (int, str))}
    by_image: dict[Any, list[tuple[int, Any]]] = {}
    for index, annotation in enumerate(content["annotations"]):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if known(image_ids, image_id):
            by_image.setdefault(image_id, []).append((index, annotation))
            continue
        where = f"annotation {annotation['id']!r}" if isinstance(annotation, dict) and "id" in annotation else f"annotations[{index}]"
        with checker.record(path, where):
            if not isinstance(annotation, dict):
                raise RecordProblem("wrong_type", f"expected an object, got {type(annotation).__name__}")
            raise RecordProblem("unknown_image", f"image_id {image_id!r} is not one of the file's images")
    return image_ids, by_image


def coco_images(content: dict[str, Any], image_ids: set[Any], by_image: Mapping[Any, list[tuple[int, Any]]]) -> Iterator[tuple[Any, str, list[tuple[int, Any]]]]:
    """Per entry of ``images``: the entry, where it is (``image 7 ('a.jpg')`` or ``images[3]``, for
    the one-line error) and its annotations (``coco_annotations_by_image``)."""
    for index, info in enumerate(content["images"]):
        image_id = info.get("id") if isinstance(info, dict) else None
        name = info.get("file_name") if isinstance(info, dict) else None
        where = f"images[{index}]" if image_id is None else f"image {image_id!r}" + (f" ({name!r})" if isinstance(name, str) else "")
        yield info, where, (by_image.get(image_id, []) if known(image_ids, image_id) else [])


def read_list(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank lines of a list file (``ImageSets/Segmentation/train.txt``, SegNet's
    ``train.txt``) as ``(line number, whitespace-separated fields)``."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise AnnotationFormatError(path, f"not a text list file ({error})") from None
    return [(n, line.split()) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]


def read_csv_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV file with their line numbers, a header line left out (a first
    row whose second cell is not a number: ``path,x1,...`` rather than a first object)."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = [(reader.line_num, row) for reader in [csv.reader(handle)] for row in reader]
    except (UnicodeDecodeError, csv.Error) as error:
        raise AnnotationFormatError(path, f"not a readable CSV file ({type(error).__name__}: {error})") from None
    rows = [(n, row) for n, row in rows if any(cell.strip() for cell in row)]
    if rows and len(rows[0][1]) >= 2 and rows[0][1][1].strip():
        try:
            float(rows[0][1][1])
        except ValueError:
            rows = rows[1:]
    return rows


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


def image_size(path: Path, what: str = "image file") -> tuple[int, int]:
    """``(height, width)`` of an image from its header (PIL reads no pixels), for formats whose
    annotations do not give it (YOLO's normalised boxes need it). A file that cannot be read is an
    ``image_missing`` problem: it could never be trained on. The size is the stored one, without
    EXIF rotation, as ``load_rgb`` decodes the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as error:  # a missing file, PIL's UnidentifiedImageError, a truncated header
        detail = " ".join(str(error).split()) or type(error).__name__
        raise RecordProblem("image_missing", f"{what} {path} cannot be read ({detail})") from None
    return height, width


def text_number(text: str, field: str) -> float:
    """One finite number written as text (a CSV cell, an XML element, a YOLO field): ``wrong_type``
    when it is not a number, ``non_finite`` for NaN or inf."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise RecordProblem("wrong_type", f"field {field!r} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise RecordProblem("non_finite", f"field {field!r} holds a non-finite number")
    return value


def known(table: Mapping | set, key: Any) -> bool:
    """``key in table``, False for an unhashable key (a list where an id should be)."""
    try:
        return key in table
    except TypeError:
        return False


def positive_int(value: Any, field: str) -> int:
    """A positive integer (an image's ``width``), else ``wrong_type``."""
    size = number(value, field)
    if size < 1 or size != int(size):
        raise RecordProblem("wrong_type", f"field {field!r} must be a positive integer, got {size:g}")
    return int(size)


@contextlib.contextmanager
def problem_at(where: str) -> Iterator[None]:
    """Prefix the reason of a ``RecordProblem`` raised in this block with ``where`` (``object 2``,
    ``line 7``), so that the one-line error names the part of the record that is wrong."""
    try:
        yield
    except RecordProblem as problem:
        raise RecordProblem(problem.kind, f"{where}: {problem.reason}") from None


def clip_box(box: tuple[float, float, float, float], width: float, height: float, field: str) -> tuple[float, float, float, float]:
    """``box`` clipped to the ``width x height`` image (a box ``check_box`` let through with its
    pixel of slack), as torchvision's detection reference clamps COCO boxes; a box left without
    area is an ``empty_box`` problem."""
    x1, y1, x2, y2 = box
    clipped = (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))
    if not (clipped[2] > clipped[0] and clipped[3] > clipped[1]):
        raise RecordProblem("empty_box", f"field {field!r} = {[round(v, 2) for v in box]} is empty once clipped to the {width:g}x{height:g} image")
    return clipped


def coco_segmentation(value: Any, height: int, width: int) -> Any:
    """A COCO annotation's ``segmentation`` checked against its ``height x width`` image: polygons
    (a list of ``[x1, y1, x2, y2, ...]`` lists, several for an object in parts) as lists of floats,
    or the RLE dict (``counts`` a compressed string or a list of run lengths) as it is.

    Problems: a polygon that is not x, y pairs (``wrong_type``), holds NaN or inf (``non_finite``)
    or has fewer than 3 points (``polygon_points``: pycocotools would read 2 points as a box); an
    RLE of another size (``size_mismatch``) or whose run lengths do not cover the image
    (``wrong_type``)."""
    if isinstance(value, list):
        if not value:
            raise RecordProblem("polygon_points", "'segmentation' holds no polygon")
        polygons = []
        for k, polygon in enumerate(value):
            field = f"segmentation[{k}]"
            if not isinstance(polygon, list):
                raise RecordProblem("wrong_type", f"{field!r} must be a list of x, y numbers")
            coordinates = finite_array(polygon, field)
            if coordinates.ndim != 1 or len(coordinates) % 2:
                raise RecordProblem("wrong_type", f"{field!r} must be x, y pairs, got {coordinates.size} number(s)")
            if len(coordinates) < 6:
                raise RecordProblem("polygon_points", f"{field!r} has {len(coordinates) // 2} point(s), a polygon needs 3")
            polygons.append(coordinates.tolist())
        return polygons
    if isinstance(value, dict):
        size, counts = record_field(value, "size"), record_field(value, "counts")
        if size != [height, width]:
            raise RecordProblem("size_mismatch", f"the RLE's size {size!r} is not the image's [height, width] [{height}, {width}]")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise RecordProblem("wrong_type", f"the RLE's counts must be run lengths >= 0 adding up to {height} x {width}")
        elif not isinstance(counts, str):
            raise RecordProblem("wrong_type", "the RLE's counts must be a list of run lengths or a compressed string")
        return value
    raise RecordProblem("wrong_type", f"'segmentation' must be polygons or an RLE, got {type(value).__name__}")


def decode_coco_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool pixels of one ``coco_segmentation`` (polygons, compressed or uncompressed
    RLE) through ``pycocotools.mask``, as ``COCO.annToMask``: the polygons of one object merged."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


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


# ---------------------------------------------------------------------------------- detection
class DetectionFileSource(ParsedSplits, DetectionSource):
    """A detection source whose records are parsed up front into ``self.splits``, whose
    ``record.image`` is an image file path, and whose bad records go through ``self.checker``."""

    splits: dict[str, list[DetectionRecord]]
    checker: RecordChecker

    def records(self, split: str) -> list[DetectionRecord]:
        if split not in self.splits:
            raise ConfigError(f"{type(self).__name__} has splits {sorted(self.splits)}, not {split!r}")
        return list(self.splits[split])

    def load_image(self, record: DetectionRecord) -> Tensor:
        return load_rgb(record.image)

    def check_mask_size(self, record: DetectionRecord, height: int, width: int, file: Any) -> None:
        """The image has the size its annotation gave (``record.size``), the size its masks are
        decoded at; else ``BadRecordError`` (``size_mismatch``) naming ``file``."""
        if record.size is not None and tuple(record.size) != (height, width):
            raise BadRecordError(file, f"image {record.image} is {width}x{height} but the annotation gives "
                                 f"{record.size[1]}x{record.size[0]}", kind="size_mismatch")

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()
