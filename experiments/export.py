"""``python -m experiments export``: one part of a trained model, saved alone as a weights file.

    python -m experiments export --ckpt runs/<name>/checkpoints/last.ckpt --module network.backbone \\
        --out runs/<name>/backbone.pt

Some paper recipes pretrain a network's convolutions on one task (ImageNet classification) and then
train another task's network from them. Here a pretraining run is an ordinary ``fit``; this command
takes the state dict of the submodule ``--module`` (a dotted attribute path of the LightningModule,
``network.backbone``) out of its checkpoint, with that prefix removed, so that the file is what a
``*weights`` / ``backbone_weights`` key of another config loads. The file is written atomically; an
existing one is replaced only when ``--force`` is given.
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import torch

from core.checkpoints import read_checkpoint
from core.errors import CheckpointError, DataNotFoundError
from core.io import shown_path, write_atomic

__all__ = ["export_module", "main"]


def export_module(ckpt: str | Path, module: str, out: str | Path, force: bool = False) -> int:
    """Write the tensors of ``ckpt``'s ``state_dict`` under ``module.`` to ``out`` as a plain
    state dict (keys without the prefix); returns how many tensors were written.

    The checkpoint is read by ``core.checkpoints.read_checkpoint``. Raises ``DataNotFoundError``
    (``CheckpointNotFoundError``) for a missing checkpoint, ``CheckpointError`` for a file that cannot
    be read safely, is not a Lightning checkpoint or holds nothing under ``module``, and
    ``FileExistsError`` when ``out`` exists and ``force`` is not set."""
    ckpt, out = Path(ckpt), Path(out)
    checkpoint = read_checkpoint(ckpt, "checkpoint (--ckpt)", map_location="cpu")
    if out.exists() and not force:
        raise FileExistsError(f"{shown_path(out)} exists; give --force to replace it")
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt} is not a Lightning checkpoint (no state_dict)")
    prefix = module.rstrip(".") + "."
    part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    if not part:
        # The submodules that are there, one level down, so that the right path is one look away.
        tops = sorted({".".join(key.split(".")[:2]) for key in state})
        raise CheckpointError(f"{ckpt} holds no weights under {module!r}; its modules: {', '.join(tops[:12])}")
    buffer = io.BytesIO()
    torch.save(part, buffer)
    write_atomic(out, buffer.getvalue())
    return len(part)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments export", description=__doc__.split("\n\n")[1])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by fit (runs/<name>/checkpoints/last.ckpt)")
    parser.add_argument("--module", required=True, help="the LightningModule's submodule to save, e.g. network.backbone")
    parser.add_argument("--out", required=True, help="the weights file to write (a state dict, loadable with weights_only)")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    args = parser.parse_args(argv)
    try:
        count = export_module(args.ckpt, args.module, args.out, args.force)
    except (DataNotFoundError, CheckpointError, FileExistsError) as error:
        print(f"python -m experiments export: {error}", file=sys.stderr)
        return 2
    print(f"convlab export: {count} tensors of {args.module} -> {shown_path(args.out)}")
    return 0
