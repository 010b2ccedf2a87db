"""``python -m experiments fit|validate|test|predict``: LightningCLI plus convlab's run layout.

Every YAML key is an ``__init__`` argument: ``model`` and ``data`` are ``class_path``/``init_args``
of a LightningModule and a LightningDataModule, ``trainer`` is ``lightning.pytorch.Trainer``'s and
``run`` is ``experiments.runs.RunSpec``'s. Several ``--config`` files compose left to right (a
search trial or a table row is the base config plus a small override file).
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from experiments.runs import RUN_DIR_ENV, RunSpec, write_json_atomic

__all__ = ["ConvlabCLI", "run_cli", "load_components"]


class JsonPredictionWriter(BasePredictionWriter):
    """Writes ``predict`` outputs to ``<run>/predictions.json``: one entry per input with the
    dataset's image id and every tensor the module's ``predict_step`` returned (as lists)."""

    def __init__(self, path: Path) -> None:
        super().__init__(write_interval="epoch")
        self.path = path

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, predictions: Any, batch_indices: Any) -> None:
        datamodule = trainer.datamodule
        records = None
        if hasattr(datamodule, "dataset") and hasattr(datamodule, "test_split"):
            records = datamodule.dataset(datamodule.test_split).records
        rows = []
        for batch in predictions:
            size = len(next(iter(batch.values())))
            for i in range(size):
                row = {key: value[i].tolist() for key, value in batch.items()}
                if records is not None and "index" in row:
                    row["image_id"] = records[int(row["index"])].image_id
                rows.append(row)
        path = self.path if trainer.world_size == 1 else self.path.with_name(f"predictions.rank{trainer.global_rank}.json")
        write_json_atomic(path, rows)


class ConvlabCLI(LightningCLI):
    """LightningCLI that adds the ``run:`` section and builds the loggers and checkpoints from it."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        super().__init__(
            model_class=pl.LightningModule,
            datamodule_class=pl.LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            parser_kwargs={"exit_on_error": False},
            args=args,
            run=run,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunSpec, "run", fail_untyped=False)

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        command = self.subcommand or "fit"
        run: RunSpec = self._get(self.config_init, "run")
        config_files = self._get(self.config, "config") or []
        default_name = Path(str(config_files[0])).stem if config_files else "run"
        ckpt_path = self._get(self.config, "ckpt_path", default=None)
        run.resolve_directory(default_name, command, None if ckpt_path is None else str(ckpt_path))
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = run.loggers(command)
        has_loggers = bool(kwargs.get("logger", trainer_config.get("logger")))
        extra = run.trainer_callbacks(command, has_loggers)
        if command == "predict":
            extra.append(JsonPredictionWriter(run.directory / "predictions.json"))
        kwargs["callbacks"] = list(trainer_config.get("callbacks") or []) + extra
        kwargs.setdefault("default_root_dir", str(run.directory))
        trainer = super().instantiate_trainer(**kwargs)
        _share_cpu_threads(trainer)
        if trainer.is_global_zero:
            print(f"convlab: {command} -> {run.directory}", flush=True)
        return trainer

    def _report(self) -> None:
        if not self.trainer.is_global_zero:
            return
        run: RunSpec = self._get(self.config_init, "run")
        summary = run.summary()
        for checkpoint in self.trainer.checkpoint_callbacks:
            if getattr(checkpoint, "best_model_score", None) is not None:
                summary["best_score"] = f"{checkpoint.monitor} = {float(checkpoint.best_model_score):.4f}"
        print("convlab: outputs", flush=True)
        for key, value in summary.items():
            print(f"  {key:<10} {value}", flush=True)
        if "wandb" in summary and "offline-run" in summary["wandb"]:
            print(f"  sync with: wandb sync {summary['wandb']}", flush=True)

    after_fit = after_validate = after_test = after_predict = _report


def _share_cpu_threads(trainer: pl.Trainer) -> None:
    """Several CPU ranks on one machine each default to one thread per core; their OpenMP threads
    then spin against each other and a step gets many times slower. Give each rank its share,
    unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" in os.environ or trainer.accelerator.__class__.__name__ != "CPUAccelerator":
        return
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or trainer.num_devices
    if local_ranks > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // local_ranks))


class _ComponentsCLI(ConvlabCLI):
    """Parses and instantiates model and data like ``fit`` does, but builds no trainer and so
    creates no run directory."""

    def instantiate_trainer(self, **kwargs: Any) -> None:  # type: ignore[override]
        return None


def load_components(config_args: list[str]) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    """The model, data module and resolved ``fit`` config (as a plain dict) of
    ``--config a.yaml [--config b.yaml] [--key value ...]``, exactly as ``fit`` would build them."""
    cli = _ComponentsCLI(args=config_args, run=False)
    return cli.model, cli.datamodule, cli.config.as_dict()


def run_cli(args: list[str] | None = None) -> int:
    """Run one LightningCLI command (``None``: from ``sys.argv``); configuration errors become one
    line on stderr and exit 2."""
    import logging

    from jsonargparse import ArgumentError

    # The seed is in the saved config.yaml; its log line would precede every error message.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    try:
        ConvlabCLI(args=args)
    except ArgumentError as error:
        print(f"convlab: config error: {_one_line(error)}", file=sys.stderr)
        return 2
    except Exception as error:
        cause = _config_error_in(error)
        if cause is None:
            raise
        print(f"convlab: {cause}", file=sys.stderr)
        return 2
    finally:
        if os.environ.get(RUN_DIR_ENV) and "LOCAL_RANK" not in os.environ:
            os.environ.pop(RUN_DIR_ENV, None)
    return 0


def _config_error_in(error: BaseException) -> BaseException | None:
    """The ``ConfigError`` behind ``error``: jsonargparse wraps exceptions raised while it
    instantiates classes."""
    from core.errors import ConfigError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ConfigError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>", "Parser key", "Problem with given class_path")


def _one_line(error: BaseException) -> str:
    """jsonargparse nests the reason under several lines of context; name the key and the class it
    belongs to, then the innermost reason."""
    text = str(error)
    keys = re.findall(r'Parser key "([^"]+)"', text)
    classes = re.findall(r"Problem with given class_path '([^']+)'", text)
    reasons = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip() and not any(n in line for n in _NOISE)]
    reason = reasons[-1] if reasons else text.strip().splitlines()[0]
    if not keys:
        return reason
    # Every class level below the top adds "init_args" to the dotted key a user would type.
    path = keys[0] + "".join(f".init_args.{k}" for k in keys[1:])
    if len(classes) >= len(keys):
        path += ".init_args"
    owner = f" ({classes[-1]})" if classes else ""
    return f"{path}{owner}: {reason}"
