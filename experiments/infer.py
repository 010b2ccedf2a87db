"""``python -m experiments infer``: a trained run's predictions on your own images, drawn and as records.

    python -m experiments infer --ckpt runs/<name> --source photos/ [--out DIR] [--score-threshold 0.3]

``--ckpt`` is a run folder (its ``checkpoints/best.ckpt``, else ``last.ckpt``) or a checkpoint file
(one in ``runs/<name>/checkpoints/`` belongs to that run). The run's own ``config.yaml`` (saved by
``fit``) builds the model and the data module exactly as ``fit`` did, with the checkpoint's network
weights (``experiments.trained.load_trained_module``, which ``export --format onnx`` uses too). ``--source`` is an image, a folder of images or a glob.

Everything task-specific goes through the task contract: the data module's ``image_files_dataset``
turns the files into the predict loader's samples (its evaluation transform, so images of any size
map back to their own pixels), a Lightning ``Trainer.predict`` runs the module's ``predict_step``
at the run's precision, the module's ``prediction_records`` make the records (COCO results: boxes
and keypoints; RLE masks) and its ``draw_records`` the pictures. Records scoring below
``--score-threshold`` are left out of both.

Writes, under ``--out`` (default: ``<run>/infer``, or ``infer-2``, ... when that one holds files;
nothing is overwritten): one ``<image name>.png`` per image and ``predictions.json``, every record
with the ``file`` it belongs to.
"""
from __future__ import annotations

import argparse
import glob
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "find_images", "output_folder", "infer"]


def find_images(source: str) -> list[Path]:
    """The image files of ``--source``: the file itself, a folder's images (not its subfolders'),
    or a glob's images (``**`` reaches into subfolders), sorted. ``DataNotFoundError`` when none."""
    from core.errors import DataNotFoundError
    from datamodules.formats.files import IMAGE_SUFFIXES

    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        candidates = list(path.iterdir())
    elif glob.has_magic(source):
        candidates = [Path(p) for p in glob.glob(source, recursive=True)]
    else:
        raise DataNotFoundError("--source", source)
    files = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataNotFoundError(f"no image ({' '.join(IMAGE_SUFFIXES)}) matched --source {source}")
    return files


def output_folder(run: Path, out: str | None) -> Path:
    """``--out`` when given (``ConfigError`` if it already holds files), else the first of
    ``<run>/infer``, ``<run>/infer-2``, ... that is empty or absent."""
    from core.errors import ConfigError

    def holds_files(folder: Path) -> bool:
        return folder.exists() and any(folder.iterdir())

    if out is not None:
        if holds_files(Path(out)):
            raise ConfigError(f"--out {out} already holds files; give another folder (infer overwrites nothing)")
        return Path(out)
    folder, n = run / "infer", 2
    while holds_files(folder):
        folder, n = run / f"infer-{n}", n + 1
    return folder


def _png_names(files: list[Path]) -> list[str]:
    """``<stem>.png`` per file; a stem seen before gets ``-2``, ``-3``, ... (``a.jpg`` and ``a.png``,
    or one name in two folders of a glob)."""
    seen: dict[str, int] = {}
    names = []
    for path in files:
        count = seen.get(path.stem.lower(), 0) + 1
        seen[path.stem.lower()] = count
        names.append(f"{path.stem}.png" if count == 1 else f"{path.stem}-{count}.png")
    return names


def infer(ckpt: str | Path, source: str, out: str | None = None, batch_size: int | None = None,
          score_threshold: float = 0.0, device: str = "auto", precision: str | None = None,
          config: str | None = None, stream: Any = None) -> dict[str, Any]:
    """Run the inference (see the module docstring); returns what it wrote: ``out``, ``pictures``
    (paths), ``predictions`` (the JSON's path), ``records`` (their number), ``checkpoint``."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader

    from core.errors import ConfigError
    from core.io import write_json_atomic
    from core.progress import LiveStatus, progress_line
    from datamodules.formats.files import load_rgb
    from experiments.cli import PredictionRecordWriter
    from experiments.trained import find_checkpoint, load_trained_module
    from lightning_modules.visualize import save_png

    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    find_checkpoint(ckpt)  # a wrong --ckpt is said before the images are looked for
    files = find_images(source)
    trained = load_trained_module(ckpt, config)
    model, datamodule, resolved, run, checkpoint = trained.model, trained.datamodule, trained.config, trained.run, trained.checkpoint
    folder = output_folder(run, out)

    image_files_dataset = getattr(datamodule, "image_files_dataset", None)
    if image_files_dataset is None:
        raise ConfigError(f"{type(datamodule).__name__} cannot read image files (it has no image_files_dataset)")
    dataset = image_files_dataset(files)
    loader = DataLoader(dataset, batch_size=batch_size or getattr(datamodule, "batch_size", 1), shuffle=False,
                        num_workers=0, collate_fn=getattr(datamodule, "collate_fn", None))
    names = _png_names(files)
    status = LiveStatus(stream=stream or sys.stdout, prefix="convlab infer: ", log_interval=10.0)
    records: list[dict[str, Any]] = []
    pictures: list[Path] = []

    class DrawAndCollect(pl.Callback):
        """Each batch's records (above the threshold), each with its file, and its pictures."""

        def on_predict_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                                 batch_idx: int, dataloader_idx: int = 0) -> None:
            kept = PredictionRecordWriter.scoring(pl_module.prediction_records(batch, outputs), score_threshold)
            start, count = len(pictures), len(batch[0])  # a batch is (images, targets); the loader keeps the order
            for index in range(start, start + count):
                mine = [r for r in kept if int(r["index"]) == index]
                for record in mine:
                    record["file"] = str(files[index])
                records.extend(mine)
                pictures.append(save_png(folder / names[index], pl_module.draw_records(load_rgb(files[index]), mine).cpu()))
            status.update("infer", len(pictures), progress_line(len(pictures), len(files), "images"))

    trainer_config = resolved.get("trainer") or {}
    precision = precision or str(trainer_config.get("precision") or "32-true")
    if precision.startswith("16") and (device == "cpu" or (device == "auto" and not torch.cuda.is_available())):
        precision = "32-true"  # a GPU run's float16 autocast has no CPU counterpart in Lightning
    trainer = pl.Trainer(
        accelerator=device, devices=1, precision=precision,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[DrawAndCollect()],
    )
    try:
        trainer.predict(model, dataloaders=loader, return_predictions=False)
    finally:
        status.close()
    predictions = write_json_atomic(folder / "predictions.json", records)
    return {"out": folder, "pictures": pictures, "predictions": predictions, "records": len(records), "checkpoint": checkpoint}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments infer", description=__doc__.split("\n\n")[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="a run folder (runs/<name>: best.ckpt, else last.ckpt) or a checkpoint file")
    parser.add_argument("--source", required=True, help="an image, a folder of images, or a glob ('photos/**/*.jpg')")
    parser.add_argument("--out", help="the folder to write (default: <run>/infer, or infer-2, ... when that one holds files)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: the run's data batch size)")
    parser.add_argument("--score-threshold", type=float, default=0.0, help="leave out records scoring below this (default 0: all)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (Lightning's accelerator; default auto)")
    parser.add_argument("--precision", help="Lightning's precision (default: the run's trainer.precision)")
    parser.add_argument("--config", help="the run's config, for a checkpoint outside its run folder (default: <run>/config.yaml)")
    args = parser.parse_args(argv)

    from core.io import shown_path
    from experiments.recipe.config_errors import OneLineErrors

    # Lightning's lines about the accelerators and the seed would come before every message.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.seed", "lightning.pytorch.accelerators.cuda"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with OneLineErrors() as failed:
        written = infer(args.ckpt, args.source, args.out, args.batch_size, args.score_threshold, args.device,
                        args.precision, args.config)
    if failed.status:
        return failed.status
    checkpoint = written["checkpoint"]
    print("convlab: outputs", flush=True)
    print(f"  {'checkpoint':<11} {shown_path(checkpoint)}" + (f" ({checkpoint.stem})" if checkpoint.stem in ("best", "last") else ""))
    print(f"  {'pictures':<11} {len(written['pictures'])} PNG in {shown_path(written['out'])}")
    threshold = f", score >= {args.score_threshold:g}" if args.score_threshold > 0 else ""
    print(f"  {'predictions':<11} {shown_path(written['predictions'])} ({written['records']} records{threshold})", flush=True)
    return 0
