"""COCO annotation files through pycocotools, for the readers and for the official evaluation."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

from core.errors import AnnotationFormatError, DataNotFoundError

__all__ = ["load_coco"]


def load_coco(path: str | Path) -> Any:
    """``pycocotools.coco.COCO`` of ``path`` without its progress prints. A missing file raises
    ``DataNotFoundError``, a file that is not COCO JSON ``AnnotationFormatError``."""
    from pycocotools.coco import COCO

    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError("COCO annotation file", path)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, KeyError, TypeError) as error:
        raise AnnotationFormatError(path, f"not a COCO annotation file ({type(error).__name__}: {error})") from error
