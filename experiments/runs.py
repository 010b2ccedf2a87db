"""The run directory: ``runs/<name>/`` with the resolved ``config.yaml``,
``checkpoints/{last,best}.ckpt``, ``metrics.csv`` (``experiments.resume.ResumableCSVLogger``) and
``wandb/`` (``experiments.recipe.wandb_logging.SafeWandbLogger``), decided once per run by
``RunSpec``, the ``run:`` section of every config.

A name is never reused over a run that holds a checkpoint (resume it, or pick another name); a
folder whose run saved no checkpoint (it crashed or was stopped before its first one) is reused,
its earlier files kept in ``attempt-<k>/`` inside it. ``fit --ckpt_path last`` resumes the newest
``checkpoints/last*.ckpt`` and refuses a run that has none. docs/runs.md is the user's page.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import Logger

from core.errors import CheckpointError, RunExistsError
from core.io import write_atomic, write_json_atomic
from experiments.recipe.wandb_logging import SafeWandbLogger, WandbMode, resolve_wandb_mode, wandb_settings
from experiments.resume import LastCheckpoint, ResumableCSVLogger, ResumeState

__all__ = ["RunSpec", "RUN_DIR_ENV", "BestCheckpoint", "FIT_OUTPUTS", "best_metrics_table", "wandb_run_folders"]

# Set by the process that resolved the run directory, so that the DDP ranks Lightning launches by
# re-running the command line write into the same directory instead of resolving their own.
RUN_DIR_ENV = "CONVLAB_RUN_DIR"

# What a `fit` writes into its run directory: an attempt that saved no checkpoint has these moved
# into attempt-<k>/ when its name is used again (a runner's own files there, such as reproduce's
# table_run.json and train.log, stay).
FIT_OUTPUTS = ("config.yaml", "metrics.csv", "data_report.json", "wandb_id", "wandb", "checkpoints", "hparams.yaml", "panels")


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
        """Decide (once per run, shared with launched ranks) the run directory.

        A fresh ``fit`` never writes over a run that holds a checkpoint: a named one raises
        ``RunExistsError``, an unnamed one gets ``-2``, ``-3``, ...; a folder whose earlier run saved
        no checkpoint is reused, its files moved into ``attempt-<k>/`` (said in one line).
        ``fit --ckpt_path last`` with no ``checkpoints/last*.ckpt`` in the run raises
        ``CheckpointError`` instead of starting afresh. ``validate``, ``test`` and ``predict`` write
        into ``<name>-<command>`` when no name is given or when ``<name>`` holds a trained run."""
        inherited = os.environ.get(RUN_DIR_ENV)
        if inherited:
            self.directory = Path(inherited)
            return self.directory
        root = Path(self.root)
        if ckpt_path and ckpt_path not in ("last", "best", "hpc") and Path(ckpt_path).parent.name == "checkpoints" and command == "fit":
            # Resuming from a run's own checkpoint: keep writing into that run.
            directory = Path(ckpt_path).parent.parent
        else:
            name = self.name or default_name
            if command != "fit" and (self.name is None or _checkpoints(root / name)):
                # An evaluation writes beside its training run, never over it: `validate --config
                # runs/<name>/config.yaml` names the trained run itself.
                name = f"{name}-{command}"
            directory = root / name
            if command == "fit" and ckpt_path == "last" and not _last_checkpoints(directory):
                raise CheckpointError(
                    f"nothing to resume in {directory}: it holds no checkpoints/last.ckpt "
                    f"({'no such run folder' if not directory.exists() else 'the run saved no checkpoint'}); "
                    "drop --ckpt_path last to start it afresh"
                )
            fresh_fit = command == "fit" and ckpt_path is None
            if fresh_fit and not _externally_launched():
                if _checkpoints(directory):
                    if self.name is not None:
                        resume = "resume it with --ckpt_path last, or " if _last_checkpoints(directory) else ""
                        raise RunExistsError(f"{directory} already holds a run with checkpoints; {resume}give another --run.name")
                    n = 2
                    while _checkpoints(root / f"{name}-{n}"):
                        n += 1
                    directory = root / f"{name}-{n}"
                kept = _set_attempt_aside(directory)
                if kept is not None:
                    print(f"convlab: {directory} held a run that saved no checkpoint; its files are kept in {kept}, "
                          f"this run starts afresh in {directory}", file=sys.stderr, flush=True)
        self.directory = directory
        os.environ[RUN_DIR_ENV] = str(directory)
        return directory

    def resume_command(self, argv: list[str] | None = None) -> str:
        """The command line that resumes this run: the one that started it (``argv``, default
        ``sys.argv[1:]``) with ``--ckpt_path last`` and the run's name (also one picked as
        ``-2``, ``-3``, ...)."""
        args = list(sys.argv[1:] if argv is None else argv)
        out: list[str] = []
        skip = False
        for arg in args:
            if skip:
                skip = False
                continue
            key = arg.split("=", 1)[0]
            if key in ("--ckpt_path", "--run.name"):
                skip = "=" not in arg
                continue
            out.append(arg)
        return shlex.join(["python", "-m", "experiments", *out, "--run.name", self.run_name, "--ckpt_path", "last"])

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

    def trainer_callbacks(self, command: str, has_loggers: bool, argv: list[str] | None = None) -> list[Callback]:
        """The callbacks a ``command`` adds to the trainer's own; ``argv``: the run's command line
        (default ``sys.argv[1:]``), which the resume command printed on Ctrl-C or SIGTERM repeats."""
        callbacks: list[Callback] = list(self.callbacks)
        if command == "fit":
            assert self.directory is not None, "resolve_directory first"
            checkpoints = str(self.directory / "checkpoints")
            callbacks.append(ResumeState())
            callbacks.append(BestCheckpoint(dirpath=checkpoints, filename="best", monitor=self.monitor, mode=self.mode,
                                            save_top_k=1, auto_insert_metric_name=False))
            # last.ckpt after every validation (every epoch; mid-epoch with val_check_interval < 1),
            # whether or not the monitor improved (Lightning's save_last=True on the monitored
            # checkpoint above writes it only when best.ckpt is written, so a resume would go back
            # to the best epoch), and when Ctrl-C or SIGTERM stops the run.
            callbacks.append(LastCheckpoint(checkpoints, resume_command=self.resume_command(argv)))
            if has_loggers:
                callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        return callbacks

    def summary(self) -> dict[str, Any]:
        """What the run wrote, for the closing message and for tools that collect runs: paths, and
        under ``wandb`` every offline or online W&B folder of the run, oldest first (a resumed run
        has one per process that logged to it)."""
        d = self.directory
        out: dict[str, Any] = {"run_dir": str(d)}
        for label, rel in (("config", "config.yaml"), ("metrics", "metrics.csv"), ("last", "checkpoints/last.ckpt"), ("best", "checkpoints/best.ckpt"),
                           ("predictions", "predictions.json")):
            if (d / rel).exists():
                out[label] = str(d / rel)
        wandb_runs = wandb_run_folders(d)
        if wandb_runs:
            out["wandb"] = [str(p) for p in wandb_runs]
        return out


def wandb_run_folders(directory: Path) -> list[Path]:
    """The W&B run folders under ``<directory>/wandb`` (``offline-run-<time>-<id>``, ``run-...``),
    oldest first: the names begin with their start time."""
    folder = directory / "wandb"
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and re.match(r"(offline-)?run-\d", p.name)),
                  key=lambda p: p.name.removeprefix("offline-"))


class BestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` that also keeps the validation metrics of the checkpoint it
    keeps (``best_metrics``: every ``val/*`` value of that validation, and ``epoch``/``step``),
    saved in the callback's state so that a resumed run still knows them; ``fit``'s closing table.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.best_metrics: dict[str, float] = {}

    def _save_checkpoint(self, trainer: Any, filepath: str) -> None:
        # Every save of ModelCheckpoint ends here, after it made ``filepath`` the best one: the
        # metrics go into the very checkpoint they describe.
        if filepath == self.best_model_path:
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") and not k.endswith("_best")}
            self.best_metrics = {"epoch": trainer.current_epoch, "step": trainer.global_step, **metrics}
        super()._save_checkpoint(trainer, filepath)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_metrics": dict(self.best_metrics)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_metrics = dict(state_dict.get("best_metrics") or {})


def best_metrics_table(checkpoint: BestCheckpoint) -> list[str]:
    """The closing table of ``fit``: the best checkpoint, its epoch and step, the monitored metric
    and every other ``val/*`` metric of that validation; one line saying so when no validation
    gave the monitored metric."""
    metrics = dict(checkpoint.best_metrics)
    if checkpoint.best_model_score is None or not metrics:
        return [f"convlab: no best checkpoint: no validation logged {checkpoint.monitor}"] if checkpoint.monitor else []
    epoch, step = metrics.pop("epoch", "?"), metrics.pop("step", "?")
    monitor = str(checkpoint.monitor)
    names = [monitor] + sorted(k for k in metrics if k != monitor)
    width = max(len(n) for n in names)
    lines = [f"convlab: best checkpoint {checkpoint.best_model_path} (epoch {epoch}, step {step})"]
    for name in names:
        value = metrics.get(name, float(checkpoint.best_model_score) if name == monitor else float("nan"))
        note = f"   <- monitored ({checkpoint.mode})" if name == monitor else ""
        lines.append(f"  {name:<{width}}  {value:.4f}{note}")
    return lines


def _checkpoints(directory: Path) -> list[Path]:
    folder = directory / "checkpoints"
    return sorted(folder.glob("*.ckpt")) if folder.is_dir() else []


def _last_checkpoints(directory: Path) -> list[Path]:
    """The files ``--ckpt_path last`` would resume from (Lightning's ``last`` and ``last-v<k>``)."""
    return [p for p in _checkpoints(directory) if re.fullmatch(r"last(-v?\d+)?", p.stem)]


def _set_attempt_aside(directory: Path) -> Path | None:
    """Move the ``FIT_OUTPUTS`` of an earlier run without checkpoints into ``<directory>/attempt-<k>/``
    (nothing is deleted); returns that folder, or None when there was nothing to move."""
    present = [directory / name for name in FIT_OUTPUTS if (directory / name).exists()]
    if not present:
        return None
    k = 1
    while (directory / f"attempt-{k}").exists():
        k += 1
    kept = directory / f"attempt-{k}"
    kept.mkdir()
    for path in present:
        path.rename(kept / path.name)
    return kept
