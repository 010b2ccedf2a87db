"""Label value tables: from the values a segmentation format stores in its label images to
training labels, with the values it does not define named in the error.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from core.errors import BadRecordError

__all__ = ["value_table", "map_label_values"]


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
