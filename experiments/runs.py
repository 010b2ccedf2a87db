"""Where a run writes and how it logs: ``runs/<name>/`` with the resolved ``config.yaml``,
``checkpoints/{last,best}.ckpt``, ``metrics.csv`` (CSVLogger) and ``wandb/`` (WandbLogger).

W&B is offline unless an API key is configured (``WANDB_API_KEY`` or a ``~/.netrc`` entry for
api.wandb.ai), and an online run that cannot reach the server falls back to offline instead of
failing or hanging the run.
"""
from __future__ import annotations

import csv
import io
import netrc
import os
import pickle
import random
import re
import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_warn

from core.errors import CheckpointError, RunExistsError
from core.io import write_atomic, write_json_atomic

__all__ = [
    "RunSpec", "resolve_wandb_mode", "wandb_settings", "log_summary_run", "SafeWandbLogger", "ResumableCSVLogger",
    "SafeCheckpointIO", "checkpoint_error", "CHECKPOINT_LOAD_ERRORS", "RUN_DIR_ENV", "ResumeState",
]

# Set by the process that resolved the run directory, so that the DDP ranks Lightning launches by
# re-running the command line write into the same directory instead of resolving their own.
RUN_DIR_ENV = "CONVLAB_RUN_DIR"
WandbMode = Literal["auto", "online", "offline", "disabled"]


def _externally_launched() -> bool:
    """True under torchrun/SLURM, where all ranks start at once and must agree without talking."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "LOCAL_RANK" in os.environ and RUN_DIR_ENV not in os.environ)


def resolve_wandb_mode(requested: WandbMode = "auto") -> str:
    """``online`` only when asked for, or when ``auto`` finds an API key; ``WANDB_MODE`` wins over
    ``auto``."""
    if requested != "auto":
        return requested
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("offline", "dryrun"):
        return "offline"
    if env in ("disabled", "online"):
        return env
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


class SafeWandbLogger(WandbLogger):
    """WandbLogger that never fails a run: if an online run cannot start (no key, no network), it
    warns and starts an offline run with the same id instead."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        try:
            return WandbLogger.experiment.fget(self)
        except Exception as error:  # wandb raises UsageError, CommError, ... depending on the cause
            if self._wandb_init.get("mode") == "offline":
                raise
            rank_zero_warn(f"W&B online run could not start ({type(error).__name__}: {error}); logging offline instead")
            self._wandb_init["mode"] = "offline"
            self._experiment = None
            return WandbLogger.experiment.fget(self)


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


class RunSpec:
    """The ``run:`` section of a config: where the run writes and how it is logged.

    Args:
        name: directory under ``root`` and the W&B run name. ``None``: the first config file's
            stem (``-<command>`` appended for validate/test/predict); a fresh ``fit`` whose default
            directory already holds a run gets ``-2``, ``-3``, ... so nothing is overwritten.
        root: the folder that holds every run.
        monitor: metric that selects ``checkpoints/best.ckpt``; ``None``: the module's ``monitor``.
        mode: ``max`` or ``min`` for ``monitor``; ``None``: the module's ``monitor_mode``.
        project: W&B project.
        group: W&B group (a study or a table shares one, so an ablation is one dashboard).
        job_type: W&B job type (``train``, ``trial``, a table row).
        tags: W&B tags.
        wandb: ``auto`` (online with an API key, else offline), ``online``, ``offline``, ``disabled``.
        wandb_id: W&B run id; ``None`` keeps one per run directory, so a resumed run continues.
        config: extra entries for the W&B run config (e.g. a trial's parameters).
        callbacks: callbacks added to the trainer's own (the search layer adds its trial callback
            here, so an override file does not replace the base config's ``trainer.callbacks``).
    """

    def __init__(
        self,
        name: str | None = None,
        root: str = "runs",
        monitor: str | None = None,
        mode: Literal["max", "min"] | None = None,
        project: str = "convlab",
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        wandb: WandbMode = "auto",
        wandb_id: str | None = None,
        config: dict[str, Any] | None = None,
        callbacks: list[Callback] | None = None,
    ) -> None:
        if name is not None and (not name or name.startswith("/") or ".." in Path(name).parts):
            raise ValueError(f"run.name must be a relative name inside run.root, got {name!r}")
        self.name = name
        self.root = root
        self.monitor = monitor
        self.mode = mode
        self.project = project
        self.group = group
        self.job_type = job_type
        self.tags = list(tags or [])
        self.wandb = wandb
        self.wandb_id = wandb_id
        self.config = dict(config or {})
        self.callbacks = list(callbacks or [])
        self.directory: Path | None = None

    def adopt_monitor(self, module: Any) -> None:
        """Take the module's ``monitor`` and ``monitor_mode`` where the config gives none."""
        if self.monitor is None:
            self.monitor = getattr(module, "monitor", None)
        if self.mode is None:
            self.mode = getattr(module, "monitor_mode", None) or "max"

    # ------------------------------------------------------------------ directory
    def resolve_directory(self, default_name: str, command: str, ckpt_path: str | None) -> Path:
        """Decide (once per run, shared with launched ranks) the run directory."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited:
            self.directory = Path(inherited)
            return self.directory
        root = Path(self.root)
        if ckpt_path and ckpt_path not in ("last", "best", "hpc") and Path(ckpt_path).parent.name == "checkpoints" and command == "fit":
            # Resuming from a run's own checkpoint: keep writing into that run.
            directory = Path(ckpt_path).parent.parent
        else:
            name = self.name or (default_name if command == "fit" else f"{default_name}-{command}")
            directory = root / name
            fresh_fit = command == "fit" and ckpt_path is None
            if fresh_fit and _holds_run(directory) and not _externally_launched():
                if self.name is not None:
                    raise RunExistsError(
                        f"{directory} already holds a run; resume it with --ckpt_path last, or give another --run.name"
                    )
                n = 2
                while _holds_run(root / f"{name}-{n}"):
                    n += 1
                directory = root / f"{name}-{n}"
        self.directory = directory
        os.environ[RUN_DIR_ENV] = str(directory)
        return directory

    @property
    def run_name(self) -> str:
        assert self.directory is not None
        return self.directory.relative_to(self.root).as_posix() if self.directory.is_relative_to(self.root) else self.directory.name

    # ------------------------------------------------------------------ loggers and callbacks
    def loggers(self, command: str) -> list[Logger]:
        assert self.directory is not None, "resolve_directory first"
        self.directory.mkdir(parents=True, exist_ok=True)
        # version="" puts metrics.csv straight into runs/<name>/ (no version_N folder); the CSV
        # logger is first so that trainer.log_dir (where config.yaml goes) is the run directory.
        loggers: list[Logger] = [ResumableCSVLogger(save_dir=str(self.directory.parent), name=self.directory.name, version="")]
        mode = resolve_wandb_mode(self.wandb)
        if mode != "disabled":
            loggers.append(
                SafeWandbLogger(
                    name=self.run_name,
                    save_dir=str(self.directory),
                    project=self.project,
                    id=self.wandb_id or self._persistent_wandb_id(),
                    group=self.group,
                    job_type=self.job_type or command,
                    tags=self.tags or None,
                    config=self.config or None,
                    mode=mode,
                    resume="allow",
                    settings=wandb_settings(),
                )
            )
        return loggers

    def _persistent_wandb_id(self) -> str:
        path = self.directory / "wandb_id"
        if path.exists():
            return path.read_text().strip()
        run_id = re.sub(r"[^a-z0-9-]", "-", self.run_name.lower())[-40:].strip("-") + "-" + os.urandom(4).hex()
        write_atomic(path, run_id)
        return run_id

    def write_data_report(self, report: dict[str, Any] | None) -> None:
        """``data_report.json``: what the data's readers read and the bad records they skipped; a
        summary line per source that skipped records goes to stderr."""
        if report is None or self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / "data_report.json", report)
        for source in report.get("sources", []):
            if source.get("skipped"):
                kinds = ", ".join(f"{n} {k}" for k, n in source.get("skipped_by_kind", {}).items())
                print(f"convlab data: {source.get('source')}: skipped {source['skipped']} bad record(s) ({kinds}); "
                      f"see {self.directory / 'data_report.json'}", file=sys.stderr, flush=True)

    def trainer_callbacks(self, command: str, has_loggers: bool) -> list[Callback]:
        callbacks: list[Callback] = list(self.callbacks)
        if command == "fit":
            callbacks.append(ResumeState())
            callbacks.append(
                ModelCheckpoint(
                    dirpath=str(self.directory / "checkpoints"),
                    filename="best",
                    monitor=self.monitor,
                    mode=self.mode,
                    save_top_k=1,
                    auto_insert_metric_name=False,
                )
            )
            # last.ckpt after every validation (every epoch; mid-epoch with val_check_interval < 1),
            # whether or not the monitor improved: Lightning's save_last=True on the monitored
            # checkpoint above writes it only when best.ckpt is written, so a resume would go back
            # to the best epoch.
            callbacks.append(
                ModelCheckpoint(dirpath=str(self.directory / "checkpoints"), filename="last", save_top_k=1, auto_insert_metric_name=False)
            )
            if has_loggers:
                callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        return callbacks

    def summary(self) -> dict[str, Any]:
        """What the run wrote, for the closing message and for tools that collect runs."""
        d = self.directory
        out: dict[str, Any] = {"run_dir": str(d)}
        for label, rel in (("config", "config.yaml"), ("metrics", "metrics.csv"), ("last", "checkpoints/last.ckpt"), ("best", "checkpoints/best.ckpt")):
            if (d / rel).exists():
                out[label] = str(d / rel)
        wandb_runs = sorted((d / "wandb").glob("*run-*")) if (d / "wandb").exists() else []
        if wandb_runs:
            out["wandb"] = str(wandb_runs[-1])
        return out


def _holds_run(directory: Path) -> bool:
    return directory.exists() and any(directory.iterdir())


def wandb_settings() -> Any:
    import wandb

    # console="off": DDP children and search workers must not have their stdout wrapped;
    # init_timeout bounds an unreachable server (the default waits 90 s).
    return wandb.Settings(init_timeout=30, silent=True, console="off")


def log_summary_run(
    *, project: str, group: str, job_type: str, run_id: str, name: str, directory: Path, mode: str,
    config: dict[str, Any], tables: dict[str, tuple[list[str], list[list[Any]]]], images: list[Path] | None = None,
    summary: dict[str, Any] | None = None, tags: list[str] | None = None,
) -> str | None:
    """One W&B run that sums up a group (a study or a table): its ``tables`` (name -> columns,
    rows), its plot ``images`` (logged as ``plots/<stem>``) and ``summary`` values, in the group's
    dashboard. Offline without an API key; ``mode`` disabled writes nothing. Never fails its caller:
    a problem is printed and None returned; else the run's directory."""
    if mode == "disabled":
        return None
    try:
        import wandb

        directory.mkdir(parents=True, exist_ok=True)
        run = wandb.init(
            project=project, group=group, job_type=job_type, id=run_id, name=name, dir=str(directory), mode=mode,
            resume="allow", settings=wandb_settings(), tags=tags, config=config,
        )
        try:
            payload: dict[str, Any] = {key: wandb.Table(columns=columns, data=rows) for key, (columns, rows) in tables.items()}
            for png in images or []:
                payload[f"plots/{Path(png).stem}"] = wandb.Image(str(png))
            run.log(payload)
            for key, value in (summary or {}).items():
                run.summary[key] = value
        finally:
            run.finish()
        return str(directory / "wandb")
    except Exception as error:  # a dashboard is a convenience: never fail a finished study or table on it
        print(f"convlab: W&B summary run not written ({type(error).__name__}: {error})", file=sys.stderr, flush=True)
        return None


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints that are written atomically and loaded without running pickled code.

    Saving goes through a temporary file and a rename, so a kill during the write leaves the
    previous ``last.ckpt`` whole. Loading uses ``torch.load(weights_only=True)``: tensors, numbers,
    strings and containers only; a checkpoint that needs anything else (a crafted pickle, or an
    object saved by other code) is refused with ``CheckpointError`` instead of being executed.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(Path(path), buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        try:
            return torch.load(path, map_location=map_location or (lambda storage, loc: storage), weights_only=True)
        except CHECKPOINT_LOAD_ERRORS as error:
            raise checkpoint_error(path, error) from None


# What torch.load(weights_only=True) raises for a crafted, truncated or unreadable file.
CHECKPOINT_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError)


def checkpoint_error(path: Path | str, error: BaseException) -> CheckpointError:
    """The one-line error for a checkpoint that ``torch.load(weights_only=True)`` refused."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointError(f"checkpoint {path} refused: it holds pickled objects that are not weights ({first})")
    return CheckpointError(f"checkpoint {path} cannot be read ({type(error).__name__}: {first})")
