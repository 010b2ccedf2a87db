"""The one way a network reads pretrained weights from a local file (never downloaded).

* ``read_state_dict(path, what)``: the state dict in ``path``, for networks that rename or regroup
  its entries themselves (VGG's ``features.N`` into FCN's stages, SegNet's encoder).
* ``load_weights_file(module, path, what, ...)``: the same file loaded into ``module``, with a
  prefix filter (an ImageNet checkpoint's classifier) and detectron2's rule for heads of another
  shape.

``what`` names the config key or the weights' role, so that every error says which file of which
setting is wrong. The file is read by ``core.checkpoints``, the suite's one checkpoint reader: a
missing file is ``DataNotFoundError`` (``CheckpointNotFoundError``); a file that
``torch.load(weights_only=True)`` refuses (pickled code, truncated, not a dict of tensors) or whose
names and shapes do not fit the module, ``CheckpointError``.
"""
from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from core.checkpoints import read_state_dict as read_checkpoint_state
from core.errors import CheckpointError

__all__ = ["read_state_dict", "load_weights_file"]


def read_state_dict(path: str | Path, what: str, hint: str | None = None) -> dict[str, Tensor]:
    """The ``{name: tensor}`` state dict in the local file ``path`` (a Lightning-style
    ``{"state_dict": ...}`` wrapper is unwrapped), read by ``core.checkpoints.read_state_dict``.

    ``hint`` ends the message when the file is missing: how to make it (a network takes it as an
    argument beside the path, so that a config that needs a file made by another run says which);
    by default, that weights are never downloaded."""
    return read_checkpoint_state(path, f"pretrained weights file ({what})", hint=hint or "weights are never downloaded, give a local file")


def load_weights_file(module: nn.Module, path: str | Path, what: str, skip_mismatched: bool = False, drop_prefixes: tuple[str, ...] = (),
                      hint: str | None = None) -> list[str]:
    """Load the state dict in ``path`` into ``module``; entries under ``drop_prefixes`` (an
    ImageNet checkpoint's classifier, ``fc.``) are left out; ``hint``: as ``read_state_dict``'s.

    Errors as ``read_state_dict``, and ``CheckpointError`` when the names or tensor shapes do not
    fit. With ``skip_mismatched`` the entries whose shape differs from the module's are left out (a
    COCO detector's class heads loaded into a detector of other classes, detectron2's rule) and
    their names returned.
    """
    state = read_state_dict(path, what, hint)
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)} if drop_prefixes else state
    own = module.state_dict()
    mismatched = sorted(k for k, v in state.items() if k in own and own[k].shape != v.shape)
    skipped = []
    if skip_mismatched:
        skipped = mismatched
        state = {k: v for k, v in state.items() if k not in skipped}
    elif mismatched:
        first = mismatched[0]
        raise CheckpointError(
            f"the weights file {path} ({what}) does not fit {type(module).__name__}: {len(mismatched)} tensors of another shape "
            f"(e.g. {first}: {tuple(state[first].shape)} in the file, {tuple(own[first].shape)} here)"
        )
    missing, unexpected = module.load_state_dict(state, strict=False)
    missing = [k for k in missing if k not in skipped]
    if unexpected or missing:
        shown = ", ".join((unexpected or missing)[:4])
        raise CheckpointError(
            f"the weights file {path} ({what}) does not fit {type(module).__name__}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected parameter names (e.g. {shown})"
        )
    return skipped
