"""What the on-disk pose readers share: path checks, file loading that fails with the file's name,
a base class for sources whose images are files, and the box-to-centre/scale rule.

Every reader resolves its paths against its ``root`` (an absolute path is taken as is), checks
them in ``__init__`` and parses its annotations there, so a wrong config fails before training
starts: a missing folder or file raises ``DataNotFoundError``, a file or record that breaks its
format raises ``AnnotationFormatError`` naming the file and the record.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from torch import Tensor

from core.errors import AnnotationFormatError, DataNotFoundError
from datamodules.pose import PoseRecord, PoseSource

__all__ = [
    "ImageFileSource",
    "resolve",
    "require_dir",
    "require_file",
    "load_json",
    "load_mat",
    "load_rgb",
    "joint_box_center_scale",
    "finite_number",
]


def resolve(root: Path, path: str | Path) -> Path:
    """``path`` under ``root``, unless it is absolute."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def require_dir(what: str, path: Path) -> Path:
    if not path.is_dir():
        raise DataNotFoundError(what, path)
    return path


def require_file(what: str, path: Path) -> Path:
    if not path.is_file():
        raise DataNotFoundError(what, path)
    return path


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
    """``(3, H, W)`` uint8 RGB image; ``DataNotFoundError`` when the file is not there."""
    from torchvision.io import ImageReadMode, decode_image

    if not Path(path).is_file():
        raise DataNotFoundError("image", path)
    try:
        return decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as error:
        raise RuntimeError(f"cannot decode image {path}: {error}") from error


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
