"""What the on-disk pose readers share: file loading that fails with the file's name, the checks of
one record's fields, a base class for sources whose images are files, and the box-to-centre/scale
rule.

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
``ConfigError``s, which the CLI prints as one line, also when a worker raised them.
"""
from __future__ import annotations

import json
import math
import reprlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from torch import Tensor

from core.errors import AnnotationFormatError, DataNotFoundError, ImageReadError
from core.records import RecordProblem, finite_array, inside_root
from datamodules.pose import PoseRecord, PoseSource

__all__ = [
    "ImageFileSource",
    "resolve",
    "load_json",
    "load_mat",
    "load_rgb",
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


def load_rgb(path: str | Path) -> Tensor:
    """``(3, H, W)`` uint8 RGB image. ``DataNotFoundError("image", path)`` when the file is not
    there, ``ImageReadError`` when it cannot be decoded (both one-line messages naming the file)."""
    from torchvision.io import ImageReadMode, decode_image

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("image", path)
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError, OSError) as error:
        # One line: a DataLoader worker's error reaches the user as the last line of its message.
        raise ImageReadError(path, " ".join(str(error).split()) or type(error).__name__) from error


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


def image_file(image_dir: Path, name: Any, field: str) -> Path:
    """The image file a record names, checked at parse time: inside ``image_dir``
    (``path_outside_root``: a ``..`` or an absolute path in an annotation could read any file) and
    there (``image_missing``: found now rather than by a worker in the middle of an epoch)."""
    path = inside_root(image_dir, name, field)
    if not path.is_file():
        raise RecordProblem("image_missing", f"image file {path} is not there")
    return path


class ImageFileSource(PoseSource):
    """A pose source whose records are parsed up front into ``self.splits`` and whose
    ``record.image`` is an image file path."""

    splits: dict[str, list[PoseRecord]]

    def records(self, split: str) -> list[PoseRecord]:
        if split not in self.splits:
            raise ValueError(f"{type(self).__name__} has splits {sorted(self.splits)}, not {split!r}")
        return list(self.splits[split])

    def load_image(self, record: PoseRecord) -> Tensor:
        return load_rgb(record.image)
