"""Reading the files of an annotation format, failing with the file's name: paths under a reader's
root, JSON, MATLAB ``.mat``, list files, CSV rows, RGB images and label images.

A file that does not parse raises ``AnnotationFormatError`` naming it. Images are decoded at
training time, possibly in DataLoader workers: a missing file raises ``DataNotFoundError("image",
path)``, one that cannot be decoded ``ImageReadError``; both are ``ConfigError``s, which the CLI
prints as one line, also when a worker raised them.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import Tensor

from core.errors import AnnotationFormatError, BadRecordError, DataNotFoundError, ImageReadError

__all__ = ["resolve", "load_json", "load_mat", "IMAGE_SUFFIXES", "load_rgb", "image_size", "load_label_map", "read_list", "read_csv_rows"]


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


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, from its header (PIL); the same errors as ``load_rgb``."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("image", path)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (OSError, ValueError) as error:
        raise ImageReadError(path, " ".join(str(error).split()) or type(error).__name__) from error
    return height, width


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
