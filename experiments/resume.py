"""What a resumed ``fit`` needs besides Lightning's own checkpoint state: a CSV logger whose
``metrics.csv`` survives the resume, and ``ResumeState`` (the random generators, and the rows a
killed run logged past its checkpoint).
"""
from __future__ import annotations

import csv
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from core.io import write_atomic

__all__ = ["ResumableCSVLogger", "ResumeState"]


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run must append to it.
    The existing header seeds the known keys, so new keys merge into it. Every rewrite of the file
    (a new key, a resume's trim) is atomic, so a kill never leaves it half written."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            rows = list(csv.DictReader(file))
        self._write_rows(fieldnames, rows)

    def _write_rows(self, fieldnames: list[str], rows: list[dict[str, Any]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)
        write_atomic(Path(self.metrics_file_path), text.getvalue())

    def drop_rows_from_step(self, step: int) -> int:
        """Drop the rows logged at ``step`` or later: what a killed run wrote after the checkpoint
        (of global step ``step``) that its resumed run continues from, and logs again. Returns how
        many rows were dropped."""
        if not self._fs.isfile(self.metrics_file_path):
            return 0
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            reader = csv.DictReader(file)
            rows = list(reader)
            fieldnames = list(reader.fieldnames or [])
        kept = [row for row in rows if not (str(row.get("step") or "").isdigit() and int(row["step"]) >= step)]
        if len(kept) < len(rows):
            self._write_rows(fieldnames, kept)
        return len(rows) - len(kept)


class ResumableCSVLogger(CSVLogger):
    """CSVLogger whose ``metrics.csv`` survives a resume (rows are appended; only a killed run's rows
    past the checkpoint it resumes from are dropped, by ``ResumeState``)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment


class ResumeState(Callback):
    """What a resumed ``fit`` needs besides Lightning's own checkpoint state to continue exactly as
    the run that never stopped (the data's order and augmentation come from ``(seed, epoch,
    sample)``, see ``datamodules.base``):

    * the global random generators of the training process (torch's CPU and CUDA, NumPy's,
      Python's), saved with every checkpoint and restored when training restarts (after the
      sanity check, which is not part of the run's history), so draws inside the training step
      (dropout, sampling inside a loss) continue where they were;
    * ``metrics.csv``: flushed at every checkpoint and epoch start, so rows up to a checkpoint are on
      disk, and on resume trimmed of the rows a killed run logged at or past the checkpoint's
      global step (the resumed run logs them again).

    Under DDP the checkpoint holds rank 0's generator states, which every rank restores.
    """

    def __init__(self) -> None:
        self._rng_to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        version, keys, position, has_gauss, gauss = np.random.get_state()
        state: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "numpy": [version, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(position), int(has_gauss), float(gauss)],
            "python": random.getstate(),
        }
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return {"rng": state}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._rng_to_restore = state_dict.get("rng")

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        state, self._rng_to_restore = self._rng_to_restore, None
        if not state:
            return
        torch.set_rng_state(state["torch"])
        version, keys, position, has_gauss, gauss = state["numpy"]
        np.random.set_state((version, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
        random.setstate(_as_tuples(state["python"]))
        if "cuda" in state and torch.cuda.is_available():
            cuda_states = list(state["cuda"])
            if len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if not trainer.is_global_zero:
            return
        step = int(checkpoint.get("global_step", 0))
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.experiment.drop_rows_from_step(step)

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        _flush_csv(trainer)

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # The previous epoch's train/*_epoch row is logged after its checkpoint, and not again by a
        # run resumed from that checkpoint: on disk before this epoch can be killed.
        _flush_csv(trainer)


def _flush_csv(trainer: Trainer) -> None:
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            if isinstance(logger, ResumableCSVLogger):
                logger.save()


def _as_tuples(value: Any) -> Any:
    """Python's ``random.getstate()`` as saved (a loader may hand tuples back as lists)."""
    return tuple(_as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
