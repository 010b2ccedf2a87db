"""A trained model out of its run folder: what ``infer`` and ``export --format onnx`` both start from.

A run folder (``runs/<name>``, written by ``fit``) holds the config that built it (``config.yaml``)
and its checkpoints; the model is rebuilt from that config exactly as ``fit`` builds it
(``experiments.cli.load_components``) and given the checkpoint's network weights.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.checkpoints import CheckpointNotFoundError, read_checkpoint
from core.errors import CheckpointError, ConfigError, DataNotFoundError
from core.io import shown_path

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["TrainedRun", "find_checkpoint", "load_trained_module", "weights_under"]


def find_checkpoint(run_or_ckpt: str | Path) -> tuple[Path, Path]:
    """``(run folder, checkpoint file)`` of ``--ckpt``: a run folder's ``checkpoints/best.ckpt``,
    else its ``last.ckpt``; a checkpoint file in ``<run>/checkpoints/`` belongs to ``<run>``, any
    other to the folder it lies in. ``CheckpointNotFoundError`` when there is none."""
    path = Path(run_or_ckpt)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / "checkpoints" / name).is_file():
                return path, path / "checkpoints" / name
        raise CheckpointNotFoundError("checkpoint (--ckpt)", path / "checkpoints" / "{best,last}.ckpt",
                                      hint="is it the folder of a run that fit wrote?")
    if not path.is_file():
        raise CheckpointNotFoundError("checkpoint (--ckpt)", path, hint="give a run folder or a .ckpt file")
    return (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path


def weights_under(checkpoint: Any, ckpt: Path, module: str) -> dict[str, Tensor]:
    """The tensors of a Lightning checkpoint's ``state_dict`` under ``module.``, without that prefix
    (``CheckpointError`` when it is no Lightning checkpoint or holds nothing there)."""
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt} is not a Lightning checkpoint (no state_dict)")
    prefix = module.rstrip(".") + "."
    part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not part:
        # The submodules that are there, one level down, so that the right path is one look away.
        tops = sorted({".".join(key.split(".")[:2]) for key in state})
        raise CheckpointError(f"{ckpt} holds no weights under {module!r}; its modules: {', '.join(tops[:12])}")
    return part


def _saved_config(run: Path, config: str | Path | None) -> tuple[Path, str]:
    """The path and YAML text of the run's ``config.yaml`` (or ``config``), less the keys of the
    ``fit`` command itself (``ckpt_path``, ``weights_only``), which the model's parser does not take."""
    import yaml

    path = Path(config) if config else run / "config.yaml"
    if not path.is_file():
        if config:
            raise DataNotFoundError("config (--config)", path)
        raise DataNotFoundError("the run's config.yaml (fit saves it in the run folder; for a checkpoint outside its run give --config)", path)
    saved = yaml.safe_load(path.read_text()) or {}
    if not isinstance(saved, dict) or "model" not in saved:
        raise ConfigError(f"{shown_path(path)} is not a run's config (no model: section)")
    for key in ("ckpt_path", "weights_only"):
        saved.pop(key, None)
    return path, yaml.safe_dump(saved, sort_keys=False)


def _mismatch(expected: dict[str, Any], given: dict[str, Any]) -> str:
    """What keeps ``given`` from loading strictly into a module whose state dict is ``expected``
    ("" when nothing): the missing and unexpected names (the first 3 of each) or the first shape
    that differs."""
    def some(names: set[str]) -> str:
        ordered = sorted(names)
        return ", ".join(ordered[:3]) + (", ..." if len(ordered) > 3 else "")

    missing, unexpected = set(expected) - set(given), set(given) - set(expected)
    parts = [f"{len(missing)} weights missing ({some(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected ({some(unexpected)})"] if unexpected else []
    if parts:
        return "; ".join(parts)
    for name, tensor in expected.items():
        if tuple(tensor.shape) != tuple(given[name].shape):
            return f"{name} is {tuple(given[name].shape)} in the checkpoint, {tuple(tensor.shape)} in the network"
    return ""


@dataclass
class TrainedRun:
    """A run's model (in eval mode, the checkpoint's network weights loaded), its data module, its
    resolved config (a plain dict, as ``fit`` resolved it), its folder and the checkpoint read."""

    model: Any
    datamodule: Any
    config: dict[str, Any]
    run: Path
    checkpoint: Path


def load_trained_module(run_or_ckpt: str | Path, config: str | Path | None = None) -> TrainedRun:
    """The trained model of a run folder or checkpoint (``find_checkpoint``), rebuilt from the run's
    ``config.yaml`` (``config``: another config, for a checkpoint copied out of its run).

    Only ``network.*`` is loaded, strictly: the metrics' and optimiser's states are no part of what
    is run or exported. Raises ``CheckpointNotFoundError``, ``DataNotFoundError`` (no config),
    ``ConfigError`` (not a run's config) or ``CheckpointError`` (weights that do not fit the network
    the config builds)."""
    from experiments.cli import load_components

    # The seed is in config.yaml; its log line would be the first thing the user reads.
    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)
    run, ckpt = find_checkpoint(run_or_ckpt)
    path, text = _saved_config(run, config)
    weights = weights_under(read_checkpoint(ckpt, "checkpoint (--ckpt)", map_location="cpu"), ckpt, "network")
    model, datamodule, resolved = load_components(["--config", text])
    mismatch = _mismatch(model.network.state_dict(), weights)
    if mismatch:
        raise CheckpointError(f"{ckpt} does not fit the network {shown_path(path)} builds: {mismatch}")
    model.network.load_state_dict(weights)
    return TrainedRun(model.eval(), datamodule, resolved, run, ckpt)
