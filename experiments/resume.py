"""What a resumed ``fit`` needs besides Lightning's own checkpoint state: a CSV logger whose
``metrics.csv`` survives the resume, ``ResumeState`` (the random generators, and the rows a
killed run logged past its checkpoint), and ``LastCheckpoint``, the ``last.ckpt`` that a resume
starts from, also written when Ctrl-C or SIGTERM stops the run.
"""
from __future__ import annotations

import csv
import io
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities.exceptions import SIGTERMException

from core.io import write_atomic

__all__ = ["ResumableCSVLogger", "ResumeState", "LastCheckpoint"]


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


class LastCheckpoint(ModelCheckpoint):
    """``<dirpath>/last.ckpt``, the checkpoint ``fit --ckpt_path last`` resumes from: written after
    every validation (whether or not the monitor improved), and when Ctrl-C or SIGTERM stops ``fit``,
    so that an interrupted run resumes from the training step it stopped at, also before its first
    epoch ends.

    Stopping: the first Ctrl-C or SIGTERM asks Lightning to stop (its own SIGTERM handling) at the end
    of the current training step, or at the end of the validation that is running (a validation
    stopped half way would leave its metrics half computed); the checkpoint is then saved atomically
    (``SafeCheckpointIO``) and one line on stderr says how to resume (``resume_command``), or that
    nothing can be resumed (stopped before the first training step). A second Ctrl-C stops at once,
    without a new checkpoint (the state in the middle of a step is not one to resume from); the last
    one saved stays. The process exits with status 128 + the signal's number (130 for Ctrl-C, 143
    for SIGTERM), so a runner sees that the run did not finish.

    Args:
        dirpath: the run's ``checkpoints/`` folder.
        resume_command: the command line that resumes the run (``RunSpec.resume_command``), printed
            when the run stops.
    """

    def __init__(self, dirpath: str, resume_command: str = "") -> None:
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, auto_insert_metric_name=False)
        self.resume_command = resume_command
        self.stop_signal: int | None = None
        self._trainer: Trainer | None = None
        self._forward_stop: Callable[[int, Any], Any] | None = None
        self._stop_pending = False
        self._resumed_step = 0
        self._saved_at: tuple[int, int] | None = None  # (epoch, global step) of the last save

    @property
    def path(self) -> Path:
        return Path(str(self.dirpath)) / f"{self.filename}{self.FILE_EXTENSION}"

    # ------------------------------------------------------------------ signals
    def _install_handlers(self, trainer: Trainer) -> None:
        """After Lightning installed its SIGTERM handler (just before the sanity check or training
        starts): ours go in front of it. Lightning restores the handlers it found when fit ends."""
        if self._forward_stop is not None or threading.current_thread() is not threading.main_thread():
            return
        lightning_handler = signal.getsignal(signal.SIGTERM)
        if not callable(lightning_handler):
            return
        self._trainer = trainer
        self._forward_stop = lightning_handler
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        trainer = self._trainer
        assert trainer is not None and self._forward_stop is not None
        if self.stop_signal is None:
            self.stop_signal = signum
            # A second Ctrl-C is Python's KeyboardInterrupt again: it stops at once.
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if trainer.is_global_zero:
                name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
                print(f"convlab: {name}: stopping after this training step to save a checkpoint "
                      f"(Ctrl-C again stops at once)", file=sys.stderr, flush=True)
        if trainer.validating:
            self._stop_pending = True  # on_validation_end passes it on
        else:
            self._forward_stop(signal.SIGTERM, frame)

    def on_sanity_check_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install_handlers(trainer)

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._install_handlers(trainer)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._stop_pending and self._forward_stop is not None:
            self._stop_pending = False
            self._forward_stop(signal.SIGTERM, None)

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        self._resumed_step = int(checkpoint.get("global_step", 0))

    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        # Every save of ModelCheckpoint ends here: what the file holds, for the closing line.
        self._saved_at = (trainer.current_epoch, trainer.global_step)
        super()._save_checkpoint(trainer, filepath)

    # ------------------------------------------------------------------ stopping
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or not isinstance(exception, (SIGTERMException, KeyboardInterrupt)):
            return
        step = trainer.global_step
        saved_step = self._saved_at[1] if self._saved_at else None
        # Lightning raises SIGTERMException between two training steps (or after a whole validation):
        # a state to resume from. A KeyboardInterrupt (a second Ctrl-C, or one before training) may
        # land inside a step.
        if isinstance(exception, SIGTERMException) and step not in (0, self._resumed_step, saved_step):
            # The saved state names this file as the callback's own, so the resumed run overwrites
            # it instead of writing last-v1.ckpt beside it.
            self.best_model_path = self.last_model_path = str(self.path)
            self._save_checkpoint(trainer, str(self.path))
        # (Also when the validation that just ended saved this very step.)
        saved = isinstance(exception, SIGTERMException) and self._saved_at is not None and self._saved_at[1] == step
        if isinstance(exception, SIGTERMException):  # SystemExit(None) would exit 0, as if the run had finished
            exception.code = 128 + int(self.stop_signal or signal.SIGTERM)
        if not trainer.is_global_zero:
            return
        exists = self.path.exists()
        if saved:
            assert self._saved_at is not None
            head = f"stopped at epoch {self._saved_at[0]}, step {step}; checkpoint saved: {self.path}"
        elif exists:
            head = f"stopped without saving this step; the last checkpoint saved is {self.path}"
        else:
            print("convlab: stopped before the first training step: nothing to resume; run the same command again to start over",
                  file=sys.stderr, flush=True)
            return
        print(f"convlab: {head}; resume with: {self.resume_command or 'fit ... --ckpt_path last'}", file=sys.stderr, flush=True)
