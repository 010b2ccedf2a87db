"""The run directory: ``runs/<name>/`` with the resolved ``config.yaml``,
``checkpoints/{last,best}.ckpt``, ``metrics.csv`` (``experiments.resume.ResumableCSVLogger``) and
``wandb/`` (``experiments.recipe.wandb_logging.SafeWandbLogger``), decided once per run by
``RunSpec``, the ``run:`` section of every config.
"""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from core.errors import RunExistsError
from core.io import write_atomic, write_json_atomic
from experiments.recipe.wandb_logging import SafeWandbLogger, WandbMode, resolve_wandb_mode, wandb_settings
from experiments.resume import ResumableCSVLogger, ResumeState

__all__ = ["RunSpec", "RUN_DIR_ENV"]

# Set by the process that resolved the run directory, so that the DDP ranks Lightning launches by
# re-running the command line write into the same directory instead of resolving their own.
RUN_DIR_ENV = "CONVLAB_RUN_DIR"


def _externally_launched() -> bool:
    """True under torchrun/SLURM, where all ranks start at once and must agree without talking."""
    return "TORCHELASTIC_RUN_ID" in os.environ or ("RANK" in os.environ and "LOCAL_RANK" in os.environ and RUN_DIR_ENV not in os.environ)


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
        summary line per source that skipped records, each note of a source (how it read its
        values) and each warning (a class never in the training labels) go to stderr."""
        if report is None or self.directory is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.directory / "data_report.json", report)
        for source in report.get("sources", []):
            for note in source.get("notes", []):
                print(f"convlab data: {source.get('source')}: {note}", file=sys.stderr, flush=True)
            if source.get("skipped"):
                kinds = ", ".join(f"{n} {k}" for k, n in source.get("skipped_by_kind", {}).items())
                print(f"convlab data: {source.get('source')}: skipped {source['skipped']} bad record(s) ({kinds}); "
                      f"see {self.directory / 'data_report.json'}", file=sys.stderr, flush=True)
        for warning in report.get("warnings", []):
            print(f"convlab data: warning: {warning}", file=sys.stderr, flush=True)

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
        for label, rel in (("config", "config.yaml"), ("metrics", "metrics.csv"), ("last", "checkpoints/last.ckpt"), ("best", "checkpoints/best.ckpt"),
                           ("predictions", "predictions.json")):
            if (d / rel).exists():
                out[label] = str(d / rel)
        wandb_runs = sorted((d / "wandb").glob("*run-*")) if (d / "wandb").exists() else []
        if wandb_runs:
            out["wandb"] = str(wandb_runs[-1])
        return out


def _holds_run(directory: Path) -> bool:
    return directory.exists() and any(directory.iterdir())
