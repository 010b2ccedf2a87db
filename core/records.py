"""The readers' shared rules for what they read: required paths, paths inside the data root, and
one policy for bad records.

**Required paths.** A reader lists every file and folder it will read from its arguments
(``required_paths()``) and checks them before parsing (``check_required``): a missing one raises
``DataNotFoundError`` naming it, with every missing path in ``error.missing`` (a dry run lists them
all). Where the data root itself is missing, only the root is named.

**Bad records.** Every source takes ``on_bad_record: error | skip``. A reader parses each record
inside ``checker.record(file, where)``; anything in it that raises ``RecordProblem(kind, reason)``
is a bad record:

* ``error`` (the default): ``BadRecordError`` at once, one line naming the file, the record and the
  reason;
* ``skip``: the record is dropped, counted by kind, and listed in the source's ``report()``, which
  the CLI prints as a summary and writes to ``runs/<name>/data_report.json``.

A record is never silently trained on or silently dropped. A split left without records raises
``BadRecordError`` with the counts, whatever the policy.

**Filtered records.** A record that is well formed but that the reader leaves out by its format's
documented rules (a COCO crowd annotation, a person below ``min_keypoints``) is not a bad record:
the reader counts it with ``checker.filtered(kind, file)`` under either policy, and the report
lists those counts under ``filtered``; with ``splits`` also under ``filtered_by_split``, and with
``rule`` what becomes of such records under ``filtered_rules`` (a COCO detection crowd is kept for
evaluation as an ignore region and left out of training only).

The kinds the readers use: ``missing_field``, ``wrong_type``, ``non_finite``, ``visibility_flag``,
``box_outside_image``, ``empty_box``, ``unknown_category``, ``unknown_image``, ``keypoint_count``,
``no_joints``, ``image_missing``, ``path_outside_root``, ``duplicate``, ``duplicate_image_id``,
``polygon_points``, ``size_mismatch``. A segmentation label image is checked only when its pixels
are read, in ``load``: ``BadRecordError`` of kind ``size_mismatch``, ``label_value`` or
``label_format``.
"""
from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np

from core.errors import BadRecordError, ConfigError, DataNotFoundError

__all__ = [
    "OnBadRecord", "RequiredPath", "check_required", "RecordProblem", "RecordChecker", "inside_root",
    "finite_array", "check_flags", "check_box",
]

OnBadRecord = Literal["error", "skip"]
# The skipped records kept in a report; the counts are always complete.
REPORT_LIMIT = 1000


@dataclass(frozen=True)
class RequiredPath:
    """A file or folder a reader needs: ``what`` it is (for messages), where it should be, and the
    reader's ``__init__`` argument that names it (so a config key can be given)."""

    what: str
    path: Path
    arg: str
    kind: Literal["file", "folder"] = "file"

    def exists(self) -> bool:
        return self.path.is_dir() if self.kind == "folder" else self.path.is_file()


def check_required(paths: list[RequiredPath], root: Path | None = None, owner: object | None = None) -> None:
    """Raise ``DataNotFoundError`` when a required path is missing: the root alone when it is
    missing (everything under it is), else the first missing path; ``error.missing`` has them all,
    ``error.required`` every path checked, and ``error.owner`` is the class path of ``owner`` (the
    reader whose arguments name them), so that a dry run can give each one's config key."""
    missing = [p for p in paths if not p.exists()]
    if not missing:
        return
    owner_path = None if owner is None else f"{type(owner).__module__}.{type(owner).__qualname__}"
    if root is not None:
        roots = [p for p in missing if p.path == root]
        if roots:
            error = DataNotFoundError(roots[0].what, roots[0].path, missing=missing)
            error.owner, error.required = owner_path, list(paths)
            raise error
    first = missing[0]
    more = f" (and {len(missing) - 1} more: {', '.join(str(p.path) for p in missing[1:3])}{' ...' if len(missing) > 3 else ''})" if len(missing) > 1 else ""
    error = DataNotFoundError(first.what, f"{first.path}{more}", missing=missing)
    error.path = first.path
    error.owner, error.required = owner_path, list(paths)
    raise error


class RecordProblem(Exception):
    """Raised while parsing one record: ``kind`` (a short tag counted in the report) and ``reason``
    (what is wrong, naming the field)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


def inside_root(root: Path, relative: Any, field: str) -> Path:
    """``root / relative`` for a path taken from an annotation: an absolute path (even one that
    points into ``root``: annotation files name their files relative to it, COCO's among them, and
    an absolute one would not survive a move of the data) or a ``..`` that leaves ``root`` is a
    ``path_outside_root`` problem."""
    if not isinstance(relative, str) or not relative:
        raise RecordProblem("wrong_type", f"field {field!r} must be a file name, got {relative!r}")
    if Path(relative).is_absolute():
        raise RecordProblem("path_outside_root", f"field {field!r} = {relative!r} is an absolute path; "
                            f"an annotation names its file relative to {root}")
    candidate = (root / relative).resolve()
    base = root.resolve()
    if not candidate.is_relative_to(base):
        raise RecordProblem("path_outside_root", f"field {field!r} = {relative!r} leaves the data root {root}")
    return root / relative


def finite_array(value: Any, field: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``value`` as a float64 array of ``shape``, every entry finite (NaN and inf are problems, also
    in entries the format marks as unannotated: they would reach the loss)."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise RecordProblem("wrong_type", f"field {field!r} must be numbers") from None
    if shape is not None and array.shape != shape:
        raise RecordProblem("wrong_type", f"field {field!r} must have shape {shape}, got {array.shape}")
    if not np.isfinite(array).all():
        raise RecordProblem("non_finite", f"field {field!r} holds a non-finite number")
    return array


def check_flags(flags: np.ndarray, allowed: tuple[float, ...], field: str) -> None:
    """Every flag in its documented set (e.g. COCO visibility 0, 1, 2)."""
    bad = sorted({float(v) for v in np.asarray(flags).reshape(-1) if not any(v == a for a in allowed)})
    if bad:
        raise RecordProblem("visibility_flag", f"field {field!r} holds {bad[0]:g}, not one of {', '.join(f'{a:g}' for a in allowed)}")


def check_box(box: tuple[float, float, float, float], width: float | None, height: float | None, field: str, slack: float = 1.0) -> None:
    """An ``x1, y1, x2, y2`` box with positive size, inside a ``width x height`` image (``slack``
    pixels allowed past the border for rounding in the annotations)."""
    x1, y1, x2, y2 = box
    if not all(math.isfinite(v) for v in box):
        raise RecordProblem("non_finite", f"field {field!r} holds a non-finite number")
    if x2 <= x1 or y2 <= y1:
        raise RecordProblem("empty_box", f"field {field!r} = {list(box)} has no positive width and height")
    if width is not None and height is not None:
        if x1 < -slack or y1 < -slack or x2 > width + slack or y2 > height + slack:
            raise RecordProblem("box_outside_image", f"field {field!r} = {[round(v, 2) for v in box]} leaves the {width:g}x{height:g} image")


class RecordChecker:
    """Applies a source's ``on_bad_record`` policy and keeps its report.

    Args:
        source: the reader's name, for messages (``MPII``, ``COCOKeypoints``, ...).
        policy: ``error`` or ``skip``.
    """

    def __init__(self, source: str, policy: OnBadRecord = "error") -> None:
        if policy not in ("error", "skip"):
            raise ConfigError(f"{source}.on_bad_record must be error or skip, got {policy!r}")
        self.source = source
        self.policy = policy
        self.counts: Counter[str] = Counter()
        self.per_file: dict[str, dict[str, int]] = {}
        self.skipped: list[dict[str, str]] = []
        self.filtered_counts: Counter[str] = Counter()
        self.filtered_splits: dict[str, Counter[str]] = {}
        self.filtered_rules: dict[str, str] = {}

    @contextlib.contextmanager
    def record(self, file: Path | str, where: str) -> Iterator[None]:
        """Parse one record inside this block; a ``RecordProblem`` ends the block (skip) or the
        reading (error)."""
        try:
            yield
        except RecordProblem as problem:
            self.reject(file, where, problem)

    def reject(self, file: Path | str, where: str, problem: RecordProblem) -> None:
        if self.policy == "error":
            raise BadRecordError(file, f"{where}: {problem.reason} (on_bad_record: skip drops such records)", kind=problem.kind) from None
        self.counts[problem.kind] += 1
        entry = self.per_file.setdefault(str(file), {"read": 0, "skipped": 0})
        entry["skipped"] += 1
        if len(self.skipped) < REPORT_LIMIT:
            self.skipped.append({"file": str(file), "record": where, "kind": problem.kind, "reason": problem.reason})

    def kept(self, file: Path | str, count: int, split: str) -> None:
        """Record that ``count`` records of ``file`` were kept for ``split``; none at all is an error
        under either policy (an empty or missing annotation list cannot train or evaluate)."""
        entry = self.per_file.setdefault(str(file), {"read": 0, "skipped": 0})
        entry["read"] += count
        if count == 0:
            skipped, filtered = entry["skipped"], entry.get("filtered", 0)
            if skipped:
                detail = f"{skipped} bad record(s) skipped: {dict(self.counts)}"
            elif filtered:
                detail = f"all {filtered} record(s) left out by the format's rules: {dict(self.filtered_counts)}"
            else:
                detail = "the annotation list is empty"
            raise BadRecordError(file, f"no usable record for the {split} split ({detail})", kind="empty")

    def filtered(self, kind: str, file: Path | str | None = None, count: int = 1, splits: Sequence[str] = (),
                 rule: str | None = None) -> None:
        """Count ``count`` well-formed records that the reader leaves out by its format's documented
        rules (``kind``: e.g. ``iscrowd``, ``few_keypoints``): the same under either policy, and
        listed in the report, so that nothing is dropped without a word.

        ``file``: its entry in the report's ``files`` counts them too. ``splits``: the splits they
        belong to (a file read for val and test: both), each counting them in the report's
        ``filtered_by_split`` (a count of 0 is kept there: the split was looked at and has none).
        ``rule``: what becomes of such records (the report's ``filtered_rules[kind]``), where more
        happens than the reader leaving them out."""
        self.filtered_counts[kind] += count
        for split in splits:
            self.filtered_splits.setdefault(split, Counter())[kind] += count
        if rule is not None:
            self.filtered_rules[kind] = rule
        if file is not None:
            entry = self.per_file.setdefault(str(file), {"read": 0, "skipped": 0})
            entry["filtered"] = entry.get("filtered", 0) + count

    @property
    def total_skipped(self) -> int:
        return sum(self.counts.values())

    def report(self) -> dict[str, Any]:
        """What was read and skipped, for ``data_report.json``."""
        return {
            "source": self.source,
            "on_bad_record": self.policy,
            "skipped": self.total_skipped,
            "skipped_by_kind": dict(sorted(self.counts.items())),
            "files": self.per_file,
            "skipped_records": self.skipped,
            "skipped_records_listed": len(self.skipped),
            "filtered": dict(sorted(self.filtered_counts.items())),
            "filtered_by_split": {split: dict(sorted(counts.items())) for split, counts in self.filtered_splits.items()},
            "filtered_rules": dict(sorted(self.filtered_rules.items())),
        }

    def summary(self) -> str:
        kinds = ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()))
        return f"{self.source}: skipped {self.total_skipped} bad record(s) ({kinds})" if self.total_skipped else f"{self.source}: no bad record"
