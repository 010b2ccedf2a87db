"""What every task's DataModule does the same way: a *source* (a reader of a format on disk, or a
synthetic generator) with named splits, one dataset per split built on first use, and the loaders.

A task's DataModule subclasses ``SourceDataModule`` and says how a split becomes a dataset
(``make_dataset``), how a user's own image files become one (``image_files_dataset``, for
``python -m experiments infer``) and what its module is told (``facts``); the source's ``required_paths()`` and
``data_report()`` are the DataModule's (the task contract: the CLI checks the first when the config
loads and writes the second to ``runs/<name>/data_report.json``).

Training randomness is a function of ``(seed, epoch, sample)`` only, so that a run killed and resumed
from a checkpoint sees the same batches as one that never stopped: the order of an epoch comes from
``seed + epoch`` (``EpochSampler``), and every training sample is drawn with torch's, NumPy's and
Python's global generators seeded from ``(seed, epoch, index)`` (``EpochSeededDataset``), whatever
process or worker loads it and whatever that process drew before.
"""
from __future__ import annotations

import os
import random
from abc import abstractmethod
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from core.errors import ConfigError
from core.facts import DataFacts
from core.records import RecordChecker, RequiredPath

__all__ = ["SourceDataModule", "EpochSampler", "EpochSeededDataset", "pair"]


def pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``int`` or ``(height, width)`` -> ``(height, width)``."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


@contextmanager
def seeded_global_rngs(*entropy: int) -> Iterator[None]:
    """Seed torch's (CPU), NumPy's and Python's global generators from ``entropy`` for the block, and
    give them back their previous states afterwards (so a sample loaded in the main process leaves
    the training's own draws untouched)."""
    words = np.random.SeedSequence([int(e) & 0xFFFFFFFFFFFFFFFF for e in entropy]).generate_state(4, np.uint32)
    torch_state, numpy_state, python_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    torch.default_generator.manual_seed(int(words[0]) << 32 | int(words[1]))
    np.random.seed(words[2])
    random.seed(int(words[3]))
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
        random.setstate(python_state)


class EpochSeededDataset(Dataset):
    """A training dataset read with keys ``(epoch, index)`` (what ``EpochSampler`` yields): sample
    ``index`` is made with the global generators seeded from ``(seed, epoch, index)``, so its
    augmentation does not depend on the loading process, its worker or the samples before it. A
    plain ``int`` key reads as epoch 0."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int] | int) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        with seeded_global_rngs(self.seed, epoch, index):
            return self.dataset[index]


class EpochSampler(DistributedSampler):
    """The training order: a permutation drawn from ``seed + epoch`` alone (PyTorch's
    ``DistributedSampler``, which Lightning would otherwise put in place under DDP, so this one is
    kept there), yielding ``(epoch, index)`` keys for ``EpochSeededDataset``.

    ``position`` (``None``: ``(self.epoch, 0)``) tells, when an epoch's iterator starts, which
    epoch it is and how many of its batches are already trained: a run resumed from a mid-epoch
    checkpoint then continues with the rest of the very epoch it stopped in. (Lightning calls
    ``set_epoch`` too, but only after the first iterator of a resumed run has been made, and it
    neither skips the trained batches of a plain DataLoader nor restores its order.)
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, num_replicas: int = 1, rank: int = 0,
                 position: Callable[[], tuple[int, int]] | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.batch_size = batch_size
        self.position = position

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        epoch, trained_batches = self.position() if self.position is not None else (self.epoch, 0)
        self.set_epoch(epoch)
        indices = list(super().__iter__())[trained_batches * self.batch_size:]
        return iter([(epoch, index) for index in indices])


class _EpochDataLoader(DataLoader):
    """The training loader: it resumes mid-epoch by itself (``EpochSampler`` asks the trainer where
    the epoch stands), so it answers Lightning's stateful-loader protocol with an empty state rather
    than have Lightning warn that a mid-epoch resume is unreliable."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore: ``EpochSampler`` reads the resume position from the trainer."""


def _training_position(trainer: pl.Trainer | None) -> tuple[int, int]:
    """``(epoch, batches already trained in it)`` of ``trainer``'s fit loop: the epoch Lightning
    passes to ``set_epoch``, and, when a restored epoch has started but not finished, the batches its
    checkpoint had trained (0 at the start of every epoch, whose counters are reset before its
    iterator is made)."""
    if trainer is None:
        return 0, 0
    fit_loop = trainer.fit_loop
    epochs = fit_loop.epoch_progress.current
    in_epoch = epochs.started > epochs.processed
    return epochs.processed, fit_loop.epoch_loop.batch_progress.current.processed if in_epoch else 0


def _global_seed() -> int:
    """The run's seed (``seed_everything``; Lightning's own distributed sampler uses the same)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


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

    The training order and augmentation depend on the run's seed, the epoch and the sample only
    (see the module's docstring); the seed is kept in the checkpoint (``state_dict``), so a resumed
    run continues with the seed it started with.
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
        self.data_seed: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return {"data_seed": self.data_seed} if self.data_seed is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("data_seed") is not None:
            self.data_seed = int(state_dict["data_seed"])

    @abstractmethod
    def make_dataset(self, split: str, records: list[Any], train: bool) -> Dataset:
        """The dataset of ``records`` (the source's ``split``), with training augmentation when
        ``train``."""

    @abstractmethod
    def image_files_dataset(self, files: list[Path]) -> Dataset:
        """Image files without annotations as the samples of the predict loader: the same
        evaluation transform, the same ``(image, target)`` format (batched by ``collate_fn``), so
        that ``predict_step`` and ``prediction_records`` map them back to each file's own pixels.
        Sample ``i`` is ``files[i]`` (its ``index``), named by the file's name (``image_key``); an
        unreadable file raises ``ImageReadError`` naming it when the sample is loaded."""

    @property
    @abstractmethod
    def facts(self) -> DataFacts:
        """What the task's module is built with (linked into its ``data_facts`` by the CLI)."""

    def required_paths(self) -> list[RequiredPath]:
        """The source's files and folders (none for generated data)."""
        return list(getattr(self.source, "required_paths", lambda: [])())

    def data_report(self) -> dict[str, Any]:
        """The source's report of what it read, skipped and filtered, and ``warnings``: a class
        that never appears in the training labels (it cannot be learnt, and its score is 0 or
        undefined); the CLI writes it to ``runs/<name>/data_report.json`` and prints each warning."""
        report = getattr(self.source, "data_report", None)
        out: dict[str, Any] = {"sources": [report() if report else RecordChecker(type(self.source).__name__).report()]}
        missing = self.classes_missing_in_training()
        if missing:
            out["classes_never_in_training"] = missing
            out["warnings"] = [f"{type(self.source).__name__}: class{'es' if len(missing) > 1 else ''} "
                               f"{', '.join(repr(name) for name in missing)} never appear{'' if len(missing) > 1 else 's'} "
                               f"in the training labels (nothing can learn {'them' if len(missing) > 1 else 'it'})"]
        return out

    def classes_missing_in_training(self) -> list[str]:
        """The names of the classes that no training label holds, in label order; ``[]`` for a
        task without classes. The tasks with classes override it (from the training dataset, which
        is then built once for the run)."""
        return []

    def dataset(self, split: str, train: bool = False) -> Dataset:
        key = f"{split}:{train}"
        if key not in self.datasets:
            self.datasets[key] = self.make_dataset(split, self.source.records(split), train)
        return self.datasets[key]

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        if self.data_seed is None:
            self.data_seed = _global_seed()
        sampler = None
        if shuffle:
            trainer = self.trainer
            sampler = EpochSampler(
                dataset, self.batch_size, self.data_seed,
                num_replicas=trainer.world_size if trainer is not None else 1,
                rank=trainer.global_rank if trainer is not None else 0,
                position=(lambda: _training_position(trainer)) if trainer is not None else None,
            )
            dataset = EpochSeededDataset(dataset, self.data_seed)
        return (_EpochDataLoader if shuffle else DataLoader)(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            drop_last=shuffle and len(dataset) > self.batch_size,
            collate_fn=self.collate_fn,
            # Its own generator: making an iterator (a worker's base seed) never draws from, and so
            # never shifts, the global generator the training step draws from.
            generator=torch.Generator().manual_seed(self.data_seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("train", train=True), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.val_split), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset(self.test_split), shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
