"""The one reader of checkpoint and weights files: ``torch.load(weights_only=True)``, never pickled code.

Every file a run loads (a ``fit`` checkpoint that training resumes from, a pretrained weights file
a network starts from, a checkpoint ``export`` takes a submodule out of) is read here, so that they
are refused for the same reasons and with the same one-line messages:

* ``read_checkpoint(path, what)``: the object in the file (tensors, numbers, strings and
  containers only);
* ``read_state_dict(path, what)``: the ``{name: tensor}`` state dict in it (a Lightning
  ``{"state_dict": ...}`` wrapper unwrapped).

``what`` names the file's role (``checkpoint``, ``pretrained weights file (VGG16C5.weights)``)
and begins every message, followed by the path. A missing file is ``CheckpointNotFoundError``
(both a ``DataNotFoundError``, so that a dry run lists it with the data, and a
``CheckpointError``); any other failure is ``CheckpointError``.
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from core.errors import CheckpointError, DataNotFoundError

__all__ = ["read_checkpoint", "read_state_dict", "checkpoint_error", "CheckpointNotFoundError", "CHECKPOINT_LOAD_ERRORS"]

# What torch.load(weights_only=True) raises for a crafted, truncated or unreadable file; Lightning's
# own loading (the hyper-parameters LightningCLI reads from --ckpt_path) is caught with these.
CHECKPOINT_LOAD_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError)


class CheckpointNotFoundError(DataNotFoundError, CheckpointError):
    """A checkpoint or weights file that is not on disk: ``"<what> not found: <path>"``, with an
    optional ``hint`` after it (what to do instead)."""

    def __init__(self, what: str, path: object = None, missing: list | None = None, hint: str = "") -> None:
        super().__init__(what, path, missing)
        if hint:
            self.args = (f"{self.args[0]}; {hint}",)


def checkpoint_error(path: Path | str, error: BaseException, what: str = "checkpoint") -> CheckpointError:
    """The one-line error for a file that ``torch.load(weights_only=True)`` refused: pickled objects
    that are not weights are "refused", anything else (truncated, not a torch file) "cannot be read"."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, pickle.UnpicklingError):
        return CheckpointError(f"{what} {path} refused: it holds pickled objects that are not weights ({first})")
    return CheckpointError(f"{what} {path} cannot be read ({type(error).__name__}: {first})")


def read_checkpoint(path: str | Path, what: str = "checkpoint", *, hint: str = "", map_location: Any = None) -> Any:
    """The object saved in the local file ``path``, loaded with ``torch.load(weights_only=True)``
    onto ``map_location`` (default: the CPU).

    Raises ``CheckpointNotFoundError`` when ``path`` is not a file (``hint`` appended to its message)
    and ``CheckpointError`` (``checkpoint_error``) when the file cannot be loaded safely."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(what, path, hint=hint)
    try:
        return torch.load(path, map_location=map_location or (lambda storage, loc: storage), weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure is the same user error
        raise checkpoint_error(path, error, what) from None


def read_state_dict(path: str | Path, what: str, *, hint: str = "") -> dict[str, Any]:
    """The ``{name: tensor}`` state dict in ``path`` (``read_checkpoint``; a Lightning-style
    ``{"state_dict": ...}`` wrapper is unwrapped); ``CheckpointError`` when the file holds anything
    else."""
    from torch import Tensor

    state = read_checkpoint(path, what, hint=hint)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{what} {path} does not hold a state dict of tensors")
    return state
