"""What the synthetic sources share: a size per split, one base seed, and one random generator per
``(seed, split, index, stream)``, so that every sample is a function of those alone: identical on
every machine, in every DataLoader worker and in every resumed run, and free to store.

``stream`` separates what a sample draws for its annotation (0) from what it draws for its pixels
(1), so that listing the records never has to draw the images.
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any

import numpy as np

from core.errors import ConfigError
from core.records import OnBadRecord, RecordChecker

__all__ = ["SyntheticSplits", "SPLITS", "contrasting_color"]

SPLITS = {"train": 0, "val": 1, "test": 2}


class SyntheticSplits:
    """Base of the generated sources (mixed in before the task's source class).

    The source still takes ``on_bad_record`` and keeps a checker, so that every source of a task is
    configured and reported alike; a generated record is never bad, and the report lists how many
    records each split has (an empty split is a choice here, e.g. ``num_test: 0``, not an error).
    """

    def init_splits(self, num_train: int, num_val: int, num_test: int, seed: int, on_bad_record: OnBadRecord) -> None:
        name = type(self).__name__
        for arg, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 0:
                raise ConfigError(f"{name}.{arg} must be >= 0, got {value}")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed = seed
        self.checker = RecordChecker(name, on_bad_record)
        for split, count in self.sizes.items():
            if count:
                self.checker.kept(f"synthetic:{split}", count, split)

    def rng(self, split: str, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[split], index, stream])

    def records(self, split: str) -> list[Any]:
        if split not in SPLITS:
            raise ConfigError(f"{type(self).__name__} has splits {sorted(SPLITS)}, not {split!r}")
        return [self.record(split, i) for i in range(self.sizes[split])]

    @abstractmethod
    def record(self, split: str, index: int) -> Any:
        """The annotation of sample ``index`` of ``split`` (drawn from stream 0)."""

    def data_report(self) -> dict[str, Any]:
        return self.checker.report()


def contrasting_color(rng: np.random.Generator, background: np.ndarray, distance: int = 160) -> np.ndarray:
    """A colour that stands out from the background's base colour (L1 distance ``distance`` or
    more): what makes the task hard is clutter and shape, not camouflage."""
    for _ in range(32):
        color = rng.integers(0, 256, 3)
        if np.abs(color - background).sum() >= distance:
            return color
    return 255 - background
