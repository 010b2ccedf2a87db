"""Optimiser and schedules from a config's factories: what every task's ``configure_optimizers`` does.

The YAML gives ``optimizer`` and ``scheduler`` as class paths with their arguments (LightningCLI
turns them into factories); ``TaskModule.configure_optimizers`` passes them here with the task's own
default optimiser (the paper's), its monitored metric (which ``ReduceLROnPlateau`` watches) and the
schedules the task steps every iteration (a warm-up, a poly decay), if any.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable

__all__ = ["build_optimizers"]

StepSchedules = Callable[[torch.optim.Optimizer], list[torch.optim.lr_scheduler.LRScheduler]]


def build_optimizers(
    params: Iterable[torch.nn.Parameter],
    optimizer: OptimizerCallable | None,
    scheduler: LRSchedulerCallable | None,
    default: Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer],
    monitor: str,
    step_schedules: StepSchedules | None = None,
) -> Any:
    """The optimiser and its schedules, as Lightning's ``configure_optimizers`` returns them.

    Args:
        params: the parameters to optimise.
        optimizer: the config's optimiser factory; ``None``: ``default(params)``.
        scheduler: the config's scheduler factory, stepped once per epoch (``ReduceLROnPlateau``
            on ``monitor``), or ``None``.
        default: the task's own optimiser.
        monitor: the metric a ``ReduceLROnPlateau`` watches.
        step_schedules: ``optimizer -> schedulers`` stepped every iteration, listed before the
            configured one; they are built after it, so a warm-up starts from the learning rate the
            configured scheduler has already set.

    Returns: the optimiser alone (no schedule), ``{"optimizer", "lr_scheduler"}`` (one schedule), or
    ``([optimizer], [schedule configs])`` (several).
    """
    built = optimizer(params) if optimizer is not None else default(params)
    configs: list[dict[str, Any]] = []
    if scheduler is not None:
        schedule = scheduler(built)
        config: dict[str, Any] = {"scheduler": schedule, "interval": "epoch"}
        if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = monitor
        configs.append(config)
    if step_schedules is not None:
        configs = [{"scheduler": schedule, "interval": "step"} for schedule in step_schedules(built)] + configs
    if not configs:
        return built
    if len(configs) == 1:
        return {"optimizer": built, "lr_scheduler": configs[0]}
    return [built], configs
