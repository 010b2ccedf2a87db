"""Kaggle's 2018 Data Science Bowl nuclei (Caicedo et al., Nature Methods 2019): instance
segmentation of cell nuclei, one class, one binary PNG per instance.

Files (``stage1_train`` as Kaggle distributes it): ``stage1_train/<id>/images/<id>.png`` (RGBA,
RGB or grey; read as RGB, the alpha channel dropped) and ``stage1_train/<id>/masks/*.png``, one
binary mask per nucleus (0 background, 255 the nucleus; any value > 0 counts). An image folder
without masks is an image without objects.

Splits: the stage-1 test labels are not part of that folder, so train and val come from
``stage1_train``: from two list files (one image id per line), or by a seeded, deterministic
fraction (``val_fraction`` of the ids, sorted and shuffled by ``numpy.random.default_rng(seed)``:
the same split on every machine); ``test`` is the val split.

Conventions (``datamodules.detection``): one class, ``nucleus`` (label 1); each box is the tight
box of its mask in continuous pixel coordinates, ``x1`` = the first column of the mask, ``x2`` =
its last column + 1 (likewise in y), so a one-pixel nucleus at column 3 spans ``[3, 4]``;
``areas`` is the mask's pixel count (COCO's area); ``record.masks`` holds the mask files, which
``load_masks`` reads into ``(K, H, W)`` uint8. Every mask is read once when the reader is built
(the boxes come from the pixels: some seconds for stage1_train's 670 images and 29,461 masks).

Checks, per image (a failure is a bad record, the whole image: a nucleus dropped would be trained
on as background): a list line holds one id (``wrong_type``) listed once (``duplicate``), the
image's folder and its ``images/<id>.png`` stay inside the data folder (``path_outside_root``) and
are there, and the image and every mask read (``image_missing``); a mask has the image's size
(``size_mismatch``) and at least one pixel (``empty_box``). An image that cannot be decoded
raises ``ImageReadError`` when loaded; a mask of another size than its image ``BadRecordError``.

Records: ``image`` the file path, ``image_id`` the Kaggle id, ``size`` ``(height, width)``,
``masks`` the mask file paths; ``extra`` the image ``folder``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from core.errors import BadRecordError, ConfigError, ImageReadError
from core.records import OnBadRecord, RecordChecker, RecordProblem, RequiredPath, check_required, inside_root
from datamodules.detection import DetectionRecord
from datamodules.formats.files import read_list, resolve
from datamodules.formats.sources import DetectionFileSource
from datamodules.formats.validators import image_file, image_size

__all__ = ["DSB2018"]


class DSB2018(DetectionFileSource):
    """DSB 2018 stage-1 nuclei with per-instance mask PNGs.

    Args:
        root: dataset folder.
        image_dir: the folder of the image id folders, under ``root``.
        train_list: ids of the train split (with ``val_list``); ``None``: split by ``val_fraction``.
        val_list: ids of the val split.
        val_fraction: the share of the ids that are val when no lists are given (at least one id
            when it is > 0).
        seed: the seed of that split.
        on_bad_record: ``error`` or ``skip`` a bad image (see the module's checks).
    """

    class_names: tuple[str, ...] = ("nucleus",)
    has_masks: bool = True

    def __init__(
        self,
        root: str = "data/dsb2018",
        image_dir: str = "stage1_train",
        train_list: str | None = None,
        val_list: str | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        on_bad_record: OnBadRecord = "error",
    ) -> None:
        if (train_list is None) != (val_list is None):
            raise ConfigError(f"DSB2018 needs train_list and val_list together, got train_list={train_list!r}, val_list={val_list!r}")
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"DSB2018.val_fraction must be in [0, 1), got {val_fraction}")
        self.checker = RecordChecker("DSB2018", on_bad_record)
        self.root = Path(root)
        self.image_dir = resolve(self.root, image_dir)
        self.lists = {} if train_list is None else {"train": resolve(self.root, train_list), "val": resolve(self.root, val_list)}
        self.val_fraction = val_fraction
        self.seed = seed
        check_required(self.required_paths(), root=self.root, owner=self)

        if self.lists:
            listed = {split: self._listed(path) for split, path in self.lists.items()}
        else:
            listed = self._fraction_split()
        self.splits: dict[str, list[DetectionRecord]] = {}
        for split, entries in listed.items():
            file = self.lists.get(split, self.image_dir)
            records = []
            for image_id, where in entries:
                # The image's folder names the record; an id that is not a plain folder name (a
                # path leaving the data folder) is named by its list.
                plain = Path(image_id).name == image_id and image_id not in (".", "..")
                with self.checker.record(self.image_dir / image_id if plain else file, where):
                    records.append(self._record(image_id))
            if split == "train" or self.lists or self.val_fraction > 0:
                self.checker.kept(file, len(records), split)
            self.splits[split] = records
        self.splits["test"] = self.splits["val"]

    def required_paths(self) -> list[RequiredPath]:
        paths = [RequiredPath("DSB2018 root", self.root, "root", "folder"),
                 RequiredPath("DSB2018 image folder", self.image_dir, "image_dir", "folder")]
        paths += [RequiredPath(f"DSB2018 {split} list", path, f"{split}_list") for split, path in self.lists.items()]
        return paths

    def load_masks(self, record: DetectionRecord, height: int, width: int) -> Tensor | None:
        """``(K, H, W)`` uint8 masks read from the record's PNGs; a mask of another size than the
        image raises ``BadRecordError`` naming it."""
        masks = np.zeros((len(record.masks), height, width), dtype=np.uint8)
        for k, path in enumerate(record.masks):
            try:
                pixels = _read_mask(Path(path))
            except OSError as error:
                raise ImageReadError(path, " ".join(str(error).split()) or type(error).__name__) from error
            if pixels.shape != (height, width):
                raise BadRecordError(path, f"the mask is {pixels.shape[1]}x{pixels.shape[0]} but its image {record.image} is "
                                     f"{width}x{height}", kind="size_mismatch")
            masks[k] = pixels
        return torch.from_numpy(masks)

    # ------------------------------------------------------------------ splits
    def _listed(self, path: Path) -> list[tuple[str, str]]:
        """``(id, where)`` of a list file's lines; a line that is not one id is a bad record."""
        entries, seen = [], {}
        for line, fields in read_list(path):
            with self.checker.record(path, f"line {line} ({' '.join(fields)})"):
                if len(fields) != 1:
                    raise RecordProblem("wrong_type", f"a line holds one image id, got {len(fields)} fields")
                if fields[0] in seen:
                    raise RecordProblem("duplicate", f"image {fields[0]!r} is listed on line {seen[fields[0]]} already")
                seen[fields[0]] = line
                entries.append((fields[0], f"image {fields[0]!r} (line {line} of {path.name})"))
        return entries

    def _fraction_split(self) -> dict[str, list[tuple[str, str]]]:
        """Every id folder, ``val_fraction`` of them (at least one) to val by a seeded shuffle."""
        ids = sorted(p.name for p in self.image_dir.iterdir() if p.is_dir())
        order = np.random.default_rng(self.seed).permutation(len(ids))
        count = int(round(len(ids) * self.val_fraction))
        if self.val_fraction > 0 and len(ids) > 1:
            count = min(max(count, 1), len(ids) - 1)
        val = {ids[i] for i in order[:count]}
        return {split: [(i, f"image {i!r}") for i in ids if (i in val) == (split == "val")] for split in ("train", "val")}

    # ------------------------------------------------------------------ parsing
    def _record(self, image_id: str) -> DetectionRecord:
        folder = inside_root(self.image_dir, image_id, "image id")
        image = image_file(folder, f"images/{image_id}.png", "image id")
        height, width = image_size(image)
        boxes, areas, masks = [], [], []
        mask_dir = folder / "masks"
        for path in sorted(mask_dir.glob("*.png")) if mask_dir.is_dir() else []:
            try:
                pixels = _read_mask(path)
            except OSError as error:
                raise RecordProblem("image_missing", f"mask {path.name} cannot be read ({' '.join(str(error).split())})") from None
            if pixels.shape != (height, width):
                raise RecordProblem("size_mismatch", f"mask {path.name} is {pixels.shape[1]}x{pixels.shape[0]}, its image {width}x{height}")
            rows, cols = np.nonzero(pixels)
            if len(rows) == 0:
                raise RecordProblem("empty_box", f"mask {path.name} is empty (no pixel > 0)")
            # Tight box in continuous coordinates: pixel column c spans [c, c + 1].
            boxes.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
            areas.append(len(rows))
            masks.append(str(path))
        return DetectionRecord(
            image=str(image),
            image_id=image_id,
            size=(height, width),
            boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            labels=np.ones(len(boxes), dtype=np.int64),
            masks=masks,
            areas=np.asarray(areas, dtype=np.float64),
            extra={"folder": str(folder)},
        )

    def data_report(self) -> dict[str, Any]:
        report = self.checker.report()
        report["split"] = "lists" if self.lists else f"val_fraction {self.val_fraction}, seed {self.seed}"
        return report


def _read_mask(path: Path) -> np.ndarray:
    """``(H, W)`` uint8 0/1 of a mask PNG (grey, 1-bit, or an RGB(A) copy of one)."""
    with Image.open(path) as image:
        return (np.array(image.convert("L")) > 0).astype(np.uint8)
