"""``python -m experiments fit|validate|test|predict``: LightningCLI plus convlab's run layout.

Every YAML key is an ``__init__`` argument: ``model`` and ``data`` are ``class_path``/``init_args``
of a LightningModule and a LightningDataModule, ``trainer`` is ``lightning.pytorch.Trainer``'s and
``run`` is ``experiments.runs.RunSpec``'s. Several ``--config`` files compose left to right (a
search trial or a table row is the base config plus a small override file).

What this layer assumes of a task is the task contract (docs/task_contract.md): the data
module's ``facts`` are linked into the module's ``data_facts`` argument; the module's ``monitor``
and ``monitor_mode`` select the best checkpoint unless ``run.monitor`` says otherwise; its
``prediction_records`` make ``predictions.json``; the data module's ``data_report()`` becomes
``data_report.json``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from core.checkpoints import CHECKPOINT_LOAD_ERRORS, checkpoint_error
from core.io import write_json_atomic
from core.precision import PrecisionChoice, cpu_precision
from core.processes import CPU_CORES_ENV, cpu_cores
from experiments.checkpoint_io import SafeCheckpointIO
from experiments.recipe.compose import replace_classes_cleanly
from experiments.recipe.config_errors import name_argument_in_config
from experiments.runs import RUN_DIR_ENV, BestCheckpoint, RunSpec, best_metrics_table

__all__ = ["ConvlabCLI", "PredictionRecordWriter", "run_cli", "load_components"]


class PredictionRecordWriter(pl.Callback):
    """Writes ``predict`` outputs to ``<run>/predictions.json``: the records the module's
    ``prediction_records(batch, outputs)`` makes of every batch, in the field's own format (one
    file per rank under DDP: ``predictions.rank<r>.json``). The ``predictions:`` section of a
    ``predict`` config (``--predictions.score_threshold 0.3``) holds its arguments.

    Args:
        score_threshold: records whose ``score`` is below this are left out (0: all are kept).
        path: the file written; the CLI sets ``<run>/predictions.json``.
    """

    def __init__(self, score_threshold: float = 0.0, path: Path | None = None) -> None:
        self.score_threshold = score_threshold
        self.path = path
        self.records: list[dict[str, Any]] = []

    @staticmethod
    def scoring(records: list[dict[str, Any]], threshold: float) -> list[dict[str, Any]]:
        """The records whose ``score`` is at least ``threshold`` (all of them when it is 0)."""
        return [r for r in records if threshold <= 0 or float(r.get("score", 0.0)) >= threshold]

    def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self.records.extend(self.scoring(pl_module.prediction_records(batch, outputs), self.score_threshold))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        assert self.path is not None, "the CLI sets the path"
        path = self.path if trainer.world_size == 1 else self.path.with_name(f"predictions.rank{trainer.global_rank}.json")
        write_json_atomic(path, self.records)


def _facts(datamodule: pl.LightningDataModule) -> Any:
    return getattr(datamodule, "facts", None)


class ConvlabCLI(LightningCLI):
    """LightningCLI that adds the ``run:`` section, links the data's facts into the module, and
    builds the loggers, checkpoints and run directory."""

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        # The command line this run was started with (the resume command repeats it).
        self.command_line = list(sys.argv[1:] if args is None else args)
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

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # A later --config that names another class (a data config's reader over a quick config's
        # synthetic source) replaces that object whole (experiments.recipe.compose).
        if args is None or isinstance(args, (list, tuple)):
            self.config = parser.parse_args(replace_classes_cleanly(list(sys.argv[1:] if args is None else args)))
        else:
            super().parse_arguments(parser, args)

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads the checkpoint's hyper-parameters (weights_only) before anything else;
        # a file it refuses is the same one-line error as when the trainer loads it.
        try:
            super()._parse_ckpt_path()
        except CHECKPOINT_LOAD_ERRORS as error:
            raise checkpoint_error(self.config[self.config.subcommand].get("ckpt_path"), error) from None

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except Exception as error:
            # A class names its bad argument; the composed config says which key set it.
            config = self.config[self.subcommand] if self.subcommand else self.config
            name_argument_in_config(error, config.as_dict())
            raise

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            # Only predict has a predictions: section (a fit's saved config stays one every command reads).
            parser.add_class_arguments(PredictionRecordWriter, "predictions", skip={"path"})
        return parser

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_class_arguments(RunSpec, "run", fail_untyped=False)
        # A module whose __init__ has no data_facts argument is left alone.
        parser.link_arguments("data", "model.init_args.data_facts", compute_fn=_facts, apply_on="instantiate")

    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        command = self.subcommand or "fit"
        run: RunSpec = self._get(self.config_init, "run")
        run.adopt_monitor(self.model)
        config_files = self._get(self.config, "config") or []
        default_name = Path(str(config_files[0])).stem if config_files else "run"
        ckpt_path = self._get(self.config, "ckpt_path", default=None)
        run.resolve_directory(default_name, command, None if ckpt_path is None else str(ckpt_path))
        trainer_config = self._get(self.config_init, "trainer", default={})
        if trainer_config.get("logger") in (None, True):
            kwargs["logger"] = run.loggers(command)
        has_loggers = bool(kwargs.get("logger", trainer_config.get("logger")))
        extra = run.trainer_callbacks(command, has_loggers, self.command_line)
        if command == "predict":
            writer: PredictionRecordWriter = self._get(self.config_init, "predictions")
            writer.path = run.directory / "predictions.json"
            extra.append(writer)
        kwargs["callbacks"] = list(trainer_config.get("callbacks") or []) + extra
        if not trainer_config.get("plugins"):
            kwargs["plugins"] = [SafeCheckpointIO()]
        self.precision_choice = _precision_choice(trainer_config)
        if self.precision_choice is not None and self.precision_choice.changed:
            kwargs["precision"] = self.precision_choice.precision
        kwargs.setdefault("default_root_dir", str(run.directory))
        trainer = super().instantiate_trainer(**kwargs)
        _share_cpu_threads(trainer)
        if trainer.is_global_zero:
            print(f"convlab: {command} -> {run.directory}", flush=True)
            if command == "predict" and getattr(self.datamodule, "test_split", None) is not None:
                # predict_dataloader is test_dataloader (datamodules.base.SourceDataModule).
                print(f"convlab: predict on the {self.datamodule.test_split!r} split (data.init_args.test_split)", flush=True)
            run.write_data_report(getattr(self.datamodule, "data_report", lambda: None)())
        return trainer

    def _report(self) -> None:
        if not self.trainer.is_global_zero:
            return
        run: RunSpec = self._get(self.config_init, "run")
        summary = run.summary()
        choice = getattr(self, "precision_choice", None)
        if choice is not None:
            summary["precision"] = choice.describe()
        print("convlab: outputs", flush=True)
        for key, value in summary.items():
            for i, item in enumerate(value if isinstance(value, list) else [value]):
                print(f"  {key if i == 0 else '':<10} {item}", flush=True)
        offline = [folder for folder in summary.get("wandb", []) if Path(folder).name.startswith("offline-run-")]
        if offline:
            print(f"  sync with: wandb sync {' '.join(offline)}", flush=True)
        for checkpoint in self.trainer.checkpoint_callbacks:
            if isinstance(checkpoint, BestCheckpoint):
                print("\n".join(best_metrics_table(checkpoint)), flush=True)

    after_fit = after_validate = after_test = after_predict = _report


def _precision_choice(trainer_config: dict[str, Any]) -> PrecisionChoice | None:
    """The precision of a run on the CPU (``core.precision``: bf16 only where the CPU computes it
    natively); ``None`` when the run is on an accelerator."""
    accelerator = str(trainer_config.get("accelerator") or "auto")
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    return cpu_precision(trainer_config.get("precision")) if on_cpu else None


def _share_cpu_threads(trainer: pl.Trainer) -> None:
    """Several CPU processes on one machine (DDP ranks, or the slots of a table or a study) each
    default to one thread per core; their OpenMP threads then spin against each other and a step
    gets many times slower. Each rank takes its share of the cores its runner gave it
    (``CONVLAB_CPU_CORES``, else all), unless the user set ``OMP_NUM_THREADS``."""
    if "OMP_NUM_THREADS" in os.environ or trainer.accelerator.__class__.__name__ != "CPUAccelerator":
        return
    cores = int(os.environ.get(CPU_CORES_ENV, 0)) or cpu_cores()
    local_ranks = int(os.environ.get("LOCAL_WORLD_SIZE", 0)) or trainer.num_devices
    if local_ranks > 1 or CPU_CORES_ENV in os.environ:
        torch.set_num_threads(max(1, cores // max(1, local_ranks)))


class _ComponentsCLI(ConvlabCLI):
    """Parses and instantiates model and data like ``fit`` does, but builds no trainer and so
    creates no run directory."""

    def instantiate_trainer(self, **kwargs: Any) -> None:  # type: ignore[override]
        return None


def load_components(config_args: list[str]) -> tuple[pl.LightningModule, pl.LightningDataModule, dict[str, Any]]:
    """The model, data module and resolved ``fit`` config (as a plain dict) of
    ``--config a.yaml [--config b.yaml] [--key value ...]``, exactly as ``fit`` would build them."""
    import warnings

    with warnings.catch_warnings():
        # The caller's own command line (bench's, a test runner's) is not this config's.
        warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter is intended to run from within Python.*")
        cli = _ComponentsCLI(args=config_args, run=False)
    return cli.model, cli.datamodule, cli.config.as_dict()


def run_cli(args: list[str] | None = None) -> int:
    """Run one LightningCLI command (``None``: from ``sys.argv``); configuration and data errors
    (also those raised in a DataLoader worker) become one line on stderr and exit 2."""
    import logging

    from experiments.recipe.config_errors import OneLineErrors
    from experiments.recipe.quiet import silence_third_party_tips

    # The seed is in the saved config.yaml; its log line would precede every error message.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    silence_third_party_tips()

    try:
        with OneLineErrors() as failed:
            ConvlabCLI(args=args)
        return failed.status
    except KeyboardInterrupt:
        # Ctrl-C while the config, model or data are built (from the trainer's start on, the
        # checkpoint callback answers it: experiments.resume.LastCheckpoint).
        print("convlab: stopped (Ctrl-C) before the trainer started; nothing was saved", file=sys.stderr)
        return 130
    finally:
        if os.environ.get(RUN_DIR_ENV) and "LOCAL_RANK" not in os.environ:
            os.environ.pop(RUN_DIR_ENV, None)
