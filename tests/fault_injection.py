"""Test-only faults for search trials, added to a base config's ``run.callbacks``.

``FaultInjection(plan={"0": "crash", "1": "oom"}, rank=1, at_step=1)`` makes trial 0's rank 1
exit abruptly and trial 1's rank 1 raise ``torch.cuda.OutOfMemoryError`` at training step 1. The
trial number is read from the run directory (``.../trial-NNNN``). Faults:

* ``crash``: ``os._exit(3)`` on ``rank`` (no exception, no marker: a segfault or a kill looks so);
* ``oom``: ``torch.cuda.OutOfMemoryError`` raised on ``rank``;
* ``nan``: every weight of the network becomes NaN on every rank, so the loss is NaN;
* ``hang``: ``rank`` (every rank when ``rank`` is -1) sleeps for an hour.

``SignalAt(signum=2, at_step=1)`` sends the process a real signal (Ctrl-C's SIGINT, a runner's
SIGTERM) at a known point: when training step ``at_step`` starts (``when: train``), when the sanity
check starts (``when: sanity``) or when the first validation at or after step ``at_step`` starts
(``when: validation``), or as the callback is built from the config (``when: build``); ``marker`` instead writes that file there and lets a test send the signal.
"""
from __future__ import annotations

import os
import re
import time
from typing import Any

import lightning.pytorch as pl
import torch

__all__ = ["FaultInjection", "SignalAt"]


class FaultInjection(pl.Callback):
    def __init__(self, plan: dict[str, str] | None = None, rank: int = 1, at_step: int = 1) -> None:
        self.plan = {str(k): v for k, v in (plan or {}).items()}
        self.rank = rank
        self.at_step = at_step
        self.fault: str | None = None

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        match = re.search(r"trial-(\d+)", str(trainer.default_root_dir))
        self.fault = self.plan.get(str(int(match.group(1)))) if match else None

    def _mine(self, trainer: pl.Trainer) -> bool:
        return self.rank == -1 or trainer.global_rank == self.rank

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.fault is None or trainer.global_step != self.at_step:
            return
        if self.fault == "crash" and self._mine(trainer):
            os._exit(3)
        if self.fault == "oom" and self._mine(trainer):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected by the test)")
        if self.fault == "nan":
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))
        if self.fault == "hang" and self._mine(trainer):
            time.sleep(3600)


class SignalAt(pl.Callback):
    def __init__(self, signum: int = 2, at_step: int = 1, when: str = "train", marker: str | None = None) -> None:
        self.signum = signum
        self.at_step = at_step
        self.when = when
        if when == "build":
            os.kill(os.getpid(), signum)
        self.marker = marker
        self.done = False

    def _fire(self, trainer: pl.Trainer) -> None:
        if self.done:
            return
        self.done = True
        if not self.marker:
            os.kill(os.getpid(), self.signum)
            return
        with open(self.marker, "w") as handle:
            handle.write(str(os.getpid()))
        # This step runs on until the test's signal has asked the trainer to stop.
        deadline = time.monotonic() + 60
        while not trainer.received_sigterm and time.monotonic() < deadline:
            time.sleep(0.02)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.when == "sanity":
            self._fire(trainer)

    def on_validation_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int,
                                  dataloader_idx: int = 0) -> None:
        if self.when == "validation" and not trainer.sanity_checking and trainer.global_step >= self.at_step:
            self._fire(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self.when == "train" and trainer.global_step == self.at_step:
            self._fire(trainer)
