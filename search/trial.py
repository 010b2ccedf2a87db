"""The trial side: a Lightning callback that a search trial's ``fit`` carries in ``run.callbacks``.

On every rank it

* writes ``rank<r>.json`` when fit starts (world size, precision, the hyper-parameters it trains
  with) so the driver and the tests can see that every rank runs the same trial;
* on an exception writes ``fail_rank<r>.json`` with its kind (``oom``, ``nonfinite``,
  ``exception``, ``distributed``: a peer died) before Lightning re-raises it.

On global rank 0 it re-attaches to the Optuna trial (only then, lazily), reports the monitored
metric after every validation, asks the pruner, and broadcasts the decision so that all ranks stop
together at the same epoch; after fit it measures the latency if asked and writes ``result.json``
atomically (``status`` complete or pruned, the objective values, the reported curve). It never
tells the study anything: the driver alone marks the trial COMPLETE, PRUNED or FAIL.

No process outlives its trial: the driver launches it through ``core.processes.SlotPool``, whose
children stop themselves when their runner is gone (``core.processes.watch_parent``).
"""
from __future__ import annotations

import json
import math
import os
import traceback
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch

from core.io import write_json_atomic
from experiments.recipe import forward_latency_ms

__all__ = ["ResultCallback", "OptunaTrialCallback", "failure_kind", "default_objectives", "report_and_decide"]


def default_objectives(module: Any) -> list[dict[str, Any]]:
    """The objective a study optimises when its spec names none: the module's ``monitor``."""
    monitor = getattr(module, "monitor", None)
    if not monitor:
        raise ValueError(f"{type(module).__name__} has no monitor: name the objective's metric in the search spec")
    mode = getattr(module, "monitor_mode", "max")
    return [{"metric": monitor, "direction": "maximize" if mode == "max" else "minimize", "reduce": "best"}]


def failure_kind(error: BaseException) -> str:
    """``oom``, ``nonfinite``, ``interrupted``, ``distributed`` (a collective failed, usually because
    a peer died) or ``exception``."""
    if isinstance(error, getattr(torch, "OutOfMemoryError", ())) or isinstance(error, torch.cuda.OutOfMemoryError):
        return "oom"
    text = f"{type(error).__name__}: {error}"
    if "out of memory" in text.lower() and isinstance(error, RuntimeError):
        return "oom"
    if isinstance(error, FloatingPointError) or "non-finite" in text or "nan" in str(error).lower().split():
        return "nonfinite"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    dist_error = getattr(torch.distributed, "DistBackendError", None)
    if (dist_error and isinstance(error, dist_error)) or any(
        s in text for s in ("gloo", "Gloo", "NCCL", "Connection closed by peer", "Connection reset by peer", "ProcessGroup", "Broken pipe")
    ):
        return "distributed"
    return "exception"


def _best(values: list[float], direction: str) -> float:
    return max(values) if direction == "maximize" else min(values)


class ResultCallback(pl.Callback):
    """Writes ``<status_dir>/result.json`` (rank 0) and per-rank start/failure markers.

    Args:
        status_dir: where the markers and the result go (the driver reads them).
        objectives: ``[{metric, direction, reduce}]`` (default: the module's ``monitor``);
            ``latency_ms`` is measured after fit on rank 0, other measured metrics (``params``,
            ``gflops``) come from the driver.
        params: the trial's parameters (recorded in ``rank<r>.json``).
        input_shape: input of the latency measurement (default: the module's
            ``example_input_array``).
        latency: ``{batch_size, warmup, iterations}``.
    """

    def __init__(
        self,
        status_dir: str,
        objectives: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
        input_shape: list[int] | None = None,
        latency: dict[str, int] | None = None,
    ) -> None:
        self.status_dir = Path(status_dir)
        self.objectives = list(objectives or [])
        self.params = dict(params or {})
        self.input_shape = list(input_shape) if input_shape else None
        self.latency = {"batch_size": 1, "warmup": 3, "iterations": 10, **(latency or {})}
        self.history: dict[str, list[float]] = {}
        self.curve: list[tuple[int, float]] = []
        self.status = "complete"
        self.pruned_at: int | None = None
        self._failed = False

    # ------------------------------------------------------------------ checkpointed state
    # The validations a run has made travel in its checkpoint: a trial resumed from a checkpoint
    # written after its last validation (the driver killed between that checkpoint and the
    # result) trains no further and still reports the values it had measured.
    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "curve": self.curve}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = {metric: list(values) for metric, values in state_dict.get("history", {}).items()}
        self.curve = [tuple(point) for point in state_dict.get("curve", [])]

    # ------------------------------------------------------------------ every rank
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.objectives:
            self.objectives = default_objectives(pl_module)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {
            "rank": trainer.global_rank,
            "local_rank": trainer.local_rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "precision": str(trainer.precision),
            "precision_plugin": type(trainer.precision_plugin).__name__,
            "strategy": type(trainer.strategy).__name__,
            "torchelastic": "TORCHELASTIC_RUN_ID" in os.environ,
            "params": self.params,
            "num_parameters": sum(p.numel() for p in pl_module.parameters()),
            "hparams": {k: v for k, v in dict(pl_module.hparams).items() if isinstance(v, (int, float, str, bool, type(None)))},
        }
        write_json_atomic(self.status_dir / f"rank{trainer.global_rank}.json", record)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.status_dir / f"rank{trainer.global_rank}.json"
        record = json.loads(path.read_text())
        record["optimizer_lrs"] = [group["lr"] for opt in trainer.optimizers for group in opt.param_groups]
        write_json_atomic(path, record)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._failed = True
        kind = failure_kind(exception)
        write_json_atomic(
            self.status_dir / f"fail_rank{trainer.global_rank}.json",
            {
                "rank": trainer.global_rank,
                "kind": kind,
                "type": type(exception).__name__,
                "message": str(exception)[:2000],
                "epoch": trainer.current_epoch,
                "traceback": traceback.format_exc()[-4000:],
            },
        )

    # ------------------------------------------------------------------ metrics
    def _validation_step(self, trainer: pl.Trainer) -> int:
        """The resource a validation is reported at: epochs trained (1 after the first epoch), so
        that a pruner's ``min_resource``/``max_resource`` and ``n_warmup_steps`` count epochs; the
        optimiser steps taken when validation runs within epochs."""
        interval = trainer.val_check_interval
        if isinstance(interval, float) and interval == 1.0:
            return int(trainer.current_epoch) + 1
        return int(trainer.global_step)

    def _collect(self, trainer: pl.Trainer) -> None:
        for objective in self.objectives:
            value = trainer.callback_metrics.get(objective["metric"])
            if value is not None:
                self.history.setdefault(objective["metric"], []).append(float(value))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.is_global_zero:
            self._collect(trainer)

    # ------------------------------------------------------------------ result
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        path = self.status_dir / f"rank{trainer.global_rank}.json"
        if path.exists():
            record = json.loads(path.read_text())
            record.update(
                {"ended_epoch": int(trainer.current_epoch), "global_step": int(trainer.global_step), "stopped": bool(trainer.should_stop)}
            )
            write_json_atomic(path, record)
        if not trainer.is_global_zero or self._failed:
            return
        values = []
        missing = []
        for objective in self.objectives:
            metric = objective["metric"]
            if metric == "latency_ms":
                values.append(self._latency(pl_module))
            elif metric in ("params", "gflops"):
                values.append(None)  # filled in by the driver from its measurement
            elif self.history.get(metric):
                series = self.history[metric]
                values.append(series[-1] if objective.get("reduce", "best") == "last" else _best(series, objective["direction"]))
            else:
                values.append(None)
                missing.append(metric)
        write_json_atomic(
            self.status_dir / "result.json",
            {
                "status": self.status,
                "values": values,
                "missing": missing,
                "pruned_at": self.pruned_at,
                "curve": self.curve,
                "history": self.history,
                "epochs": trainer.current_epoch,
                "global_step": trainer.global_step,
                "world_size": trainer.world_size,
                "run_dir": str(trainer.default_root_dir),
                "metrics": sorted(trainer.callback_metrics),
            },
        )

    def _latency(self, pl_module: pl.LightningModule) -> float:
        """Median forward milliseconds of the trained network (``experiments.recipe.forward_latency_ms``)
        on a batch of ``latency.batch_size`` copies of one input, on the module's device."""
        example = pl_module.example_input_array
        if self.input_shape:
            example = torch.randn(self.input_shape)
        if not isinstance(example, torch.Tensor):
            raise ValueError("latency_ms needs an input: the module's example_input_array, or measure.input_shape in the search spec")
        network = getattr(pl_module, "network", pl_module)
        x = example[:1].expand(self.latency["batch_size"], *example.shape[1:]).contiguous().to(pl_module.device)
        return forward_latency_ms(network, x, warmup=self.latency["warmup"], iterations=self.latency["iterations"],
                                  channels_last=pl_module.channels_last)


class OptunaTrialCallback(ResultCallback):
    """A search trial's callback: ``ResultCallback`` plus reporting to the Optuna trial and pruning.

    Args:
        storage: the study's storage (journal path or SQLAlchemy URL).
        study_name: the study.
        trial_id: Optuna's internal trial id (``trial._trial_id`` in the driver).
        trial_number: the trial's number (for messages).
        pruner: the spec's pruner (``{name, ...}``), rebuilt here as in the driver; ``None`` or
            ``{name: none}`` reports but never prunes. Multi-objective trials do not report.
        **kwargs: ``ResultCallback``'s arguments.
    """

    def __init__(
        self,
        storage: str,
        study_name: str,
        trial_id: int,
        status_dir: str,
        trial_number: int | None = None,
        pruner: dict[str, Any] | None = None,
        objectives: list[dict[str, Any]] | None = None,
        params: dict[str, Any] | None = None,
        input_shape: list[int] | None = None,
        latency: dict[str, int] | None = None,
    ) -> None:
        super().__init__(status_dir, objectives, params, input_shape, latency)
        self.storage = storage
        self.study_name = study_name
        self.trial_id = trial_id
        self.trial_number = trial_number
        self.pruner = dict(pruner or {"name": "none"})
        self._trial: Any = None

    @property
    def monitor(self) -> str:
        """The first objective's metric: reported to the trial and watched by the pruner."""
        return self.objectives[0]["metric"]

    def _attach(self) -> Any:
        if self._trial is None:
            import optuna

            from search.spec import build_pruner
            from search.storage import open_storage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            study = optuna.load_study(
                study_name=self.study_name,
                storage=open_storage(self.storage),
                sampler=optuna.samplers.RandomSampler(),
                pruner=build_pruner(self.pruner),
            )
            self._trial = optuna.trial.Trial(study, self.trial_id)
        return self._trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        decision = "continue"
        if trainer.is_global_zero:
            self._collect(trainer)
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and not math.isfinite(float(value)):
                decision = "nonfinite"
            elif value is not None and len(self.objectives) == 1:
                step = self._validation_step(trainer)
                self.curve.append((step, float(value)))
                last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) > 0
                if report_and_decide(self._attach(), float(value), step, prunable=self.pruner.get("name", "none") != "none" and not last):
                    decision = "prune"
        decision = trainer.strategy.broadcast(decision, src=0)
        if decision == "nonfinite":
            raise FloatingPointError(f"non-finite {self.monitor} at epoch {trainer.current_epoch}")
        if decision == "prune":
            self.status = "pruned"
            self.pruned_at = self._validation_step(trainer)
            trainer.should_stop = True


def report_and_decide(trial: Any, value: float, step: int, prunable: bool = True) -> bool:
    """Report ``value`` at ``step`` (epochs trained) to the Optuna ``trial`` and return whether the
    study's pruner stops it there. ``prunable`` is False after the last epoch: a trial that has
    trained its whole budget is worth its value, and stopping it then saves nothing."""
    trial.report(value, step=step)
    return prunable and trial.should_prune()
