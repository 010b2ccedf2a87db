"""How ``fit`` writes and reads its checkpoints: atomically, and through the one safe reader
(``core.checkpoints``)."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from core.checkpoints import read_checkpoint
from core.io import write_atomic

__all__ = ["SafeCheckpointIO"]


class SafeCheckpointIO(TorchCheckpointIO):
    """Checkpoints that are written atomically and loaded without running pickled code.

    Saving goes through a temporary file and a rename, so a kill during the write leaves the
    previous ``last.ckpt`` whole. Loading is ``core.checkpoints.read_checkpoint``
    (``torch.load(weights_only=True)``): tensors, numbers, strings and containers only; a checkpoint
    that needs anything else (a crafted pickle, or an object saved by other code) is refused with
    ``CheckpointError`` instead of being executed, and a missing one is ``CheckpointNotFoundError``.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        write_atomic(Path(path), buffer.getvalue())

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, "checkpoint", map_location=map_location)
