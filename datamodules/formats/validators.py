"""The checks of one record's fields, for every reader: each returns the field's value in the
form the reader keeps, or raises ``core.records.RecordProblem`` (a bad record, handled by the
source's ``on_bad_record``) whose kind says what is wrong and whose reason names the field.

Numbers (``number``, ``positive_number``, ``positive_int``, ``text_number``, ``finite_number``),
JSON fields (``record_field``, ``known``), per-joint arrays (``joint_array``), the image a record
names (``image_file``, ``image_size``), boxes (``clip_box``), and ``problem_at``, which prefixes a
problem with the part of the record it is in.
"""
from __future__ import annotations

import contextlib
import math
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.records import RecordProblem, finite_array, inside_root

__all__ = [
    "finite_number", "number", "positive_number", "record_field", "joint_array", "image_file", "image_size",
    "text_number", "known", "positive_int", "problem_at", "clip_box",
]


def finite_number(value: Any) -> float | None:
    """``float(value)`` when it is one finite number (a 0-d or 1-element array counts), else None."""
    array = np.asarray(value)
    if array.size != 1 or not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        return None
    number = float(array.reshape(()))
    return number if math.isfinite(number) else None


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
