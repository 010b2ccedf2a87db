"""W&B for every run of the suite: the mode a run logs in, the logger of a training run, and the
summary run of a group (a study or a table).

W&B is offline unless an API key is configured (``WANDB_API_KEY`` or a ``~/.netrc`` entry for
api.wandb.ai), and an online run that cannot reach the server falls back to offline instead of
failing or hanging the run.
"""
from __future__ import annotations

import netrc
import os
import sys
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_warn

__all__ = ["WandbMode", "resolve_wandb_mode", "wandb_settings", "SafeWandbLogger", "log_summary_run"]

WandbMode = Literal["auto", "online", "offline", "disabled"]


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Lightning passes wandb.init(anonymous=None) on every run; wandb then warns on every run
        # that the setting "has no effect and will be removed". Not passing it changes nothing else.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

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


def wandb_settings() -> Any:
    """The settings of every W&B run the suite starts (training runs and summary runs)."""
    import wandb

    _skip_unstaged_launch_inputs()
    # console="off": DDP children and search workers must not have their stdout wrapped;
    # init_timeout bounds an unreachable server (the default waits 90 s).
    return wandb.Settings(init_timeout=30, silent=True, console="off")


def _skip_unstaged_launch_inputs() -> None:
    """``wandb.init`` (0.31) imports ``wandb.sdk.launch`` at every start, only to apply inputs that a
    W&B Launch job staged in this process through ``wandb.launch.manage_*``: that import alone takes
    3-5 s on a 2-core CPU with torch loaded (pydantic reading docstrings), paid by every run, trial and
    test. Inputs can only have been staged when that package is already imported, so the import is
    skipped otherwise; a Launch job (which imports it first) is served as before."""
    from wandb.sdk import wandb_run

    apply_inputs = getattr(wandb_run.Run, "_detect_and_apply_job_inputs", None)
    if apply_inputs is None or getattr(apply_inputs, "skips_unstaged", False):
        return

    def detect_and_apply_job_inputs(run: Any) -> None:
        if "wandb.sdk.launch" in sys.modules:
            apply_inputs(run)

    detect_and_apply_job_inputs.skips_unstaged = True  # type: ignore[attr-defined]
    wandb_run.Run._detect_and_apply_job_inputs = detect_and_apply_job_inputs


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
