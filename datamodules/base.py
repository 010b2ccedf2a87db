"""What every task's DataModule does the same way: a *source* (a reader of a format on disk, or a
synthetic generator) with named splits, one dataset per split built on first use, and the loaders.

A task's DataModule subclasses ``SourceDataModule`` and says how a split becomes a dataset
(``make_dataset``) and what its module is told (``facts``); the source's ``required_paths()`` and
``data_report()`` are the DataModule's (the task contract: the CLI checks the first when the config
loads and writes the second to ``runs/<name>/data_report.json``).
"""
from __future__ import annotations

from abc import abstractmethod
from typing import Any, Callable

import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset

from core.errors import ConfigError
from core.facts import DataFacts
from core.records import RecordChecker, RequiredPath

__all__ = ["SourceDataModule", "pair"]


def pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``int`` or ``(height, width)`` -> ``(height, width)``."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class SourceDataModule(pl.LightningDataModule):
    """Splits of one source as train / val / test / predict loaders.

    Args:
        source: an object with ``records(split)`` and, optionally, ``required_paths()`` and
            ``data_report()`` (every reader and synthetic source of the suite has all three).
        batch_size: per process (per GPU under DDP).
        num_workers: data-loading processes per training process.
        val_split: the source's split used for validation.
        test_split: the source's split used by ``test`` and ``predict``.

    ``train_dataloader`` shuffles and drops the last incomplete batch (when there is more than one
    batch); the others keep the order and every sample. ``collate_fn`` (``None``: PyTorch's
    default) is the hook for tasks whose samples do not stack.
    """

    collate_fn: Callable[[list[Any]], Any] | None = None

    def __init__(self, source: Any, batch_size: int, num_workers: int, val_split: str = "val", test_split: str = "test") -> None:
        super().__init__()
        name = type(self).__name__
        if batch_size < 1:
            raise ConfigError(f"{name}.batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ConfigError(f"{name}.num_workers must be >= 0, got {num_workers}")
        self.source = source
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.val_split = val_split
        self.test_split = test_split
        self.datasets: dict[str, Dataset] = {}

    @abstractmethod
    def make_dataset(self, split: str, records: list[Any], train: bool) -> Dataset:
        """The dataset of ``records`` (the source's ``split``), with training augmentation when
        ``train``."""

    @property
    @abstractmethod
    def facts(self) -> DataFacts:
        """What the task's module is built with (linked into its ``data_facts`` by the CLI)."""

    def required_paths(self) -> list[RequiredPath]:
        """The source's files and folders (none for generated data)."""
        return list(getattr(self.source, "required_paths", lambda: [])())

    def data_report(self) -> dict[str, Any]:
        """The source's report of what it read, skipped and filtered; the CLI writes it to
        ``runs/<name>/data_report.json``."""
        report = getattr(self.source, "data_report", None)
        return {"sources": [report() if report else RecordChecker(type(self.source).__name__).report()]}

    def dataset(self, split: str, train: bool = False) -> Dataset:
        key = f"{split}:{train}"
        if key not in self.datasets:
            self.datasets[key] = self.make_dataset(split, self.source.records(split), train)
        return self.datasets[key]

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,
            collate_fn=self.collate_fn,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train", train=True), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.val_split), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.test_split), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
