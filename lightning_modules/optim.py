"""Optimiser and schedule from a config's factories: what every task's ``configure_optimizers`` does.

The YAML gives ``optimizer`` and ``scheduler`` as class paths with their arguments (LightningCLI
turns them into factories); a task module passes them here with its own default optimiser (the
paper's) and its monitored metric, which ``ReduceLROnPlateau`` watches.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

__all__ = ["build_optimizers"]


def build_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerCallable | None,
    scheduler: LRSchedulerCallable | None,
    default: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    monitor: str,
) -> Any:
    """The optimiser (``default(params)`` when the config names none) alone, or with its scheduler
    stepped once per epoch (``ReduceLROnPlateau`` on ``monitor``), as Lightning's
    ``configure_optimizers`` returns them."""
    built = optimizer(params) if optimizer is not None else default(params)
    if scheduler is None:
        return built
    schedule = scheduler(built)
    config: dict[str, Any] = {"scheduler": schedule, "interval": "epoch"}
    if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
        config["monitor"] = monitor
    return {"optimizer": built, "lr_scheduler": config}
