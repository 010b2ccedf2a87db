"""Check a dataset before training on it: ``python -m datamodules check --config <data config>``.

The data config is a ``data:`` section (``experiments/configs/data/<format>.yaml``), composed
with later ``--config`` files and dotted keys as ``fit`` composes it (``--data.source.root
/my/folder``). The data module is built as ``fit`` builds it (so every required path, every
record and every class list is checked), then every sample of every split is loaded as evaluation
loads it (so what only the pixels show is found too: an unreadable image, a mask of another size or
holding a value that is not a class). Printed: the classes, per split the images and objects (or
labelled pixels' classes), the data report's notes and warnings (a class never in the training
labels), and the bad records skipped. A user error is one line naming the file, exit status 2.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

import torch

__all__ = ["check_data", "main"]


def _labels_of(target: Any) -> list[int]:
    """The distinct labels a sample's target holds: its objects' (detection), its object's
    (localisation) or its pixels' (segmentation); ``[]`` for a target without ``labels`` (pose)."""
    if isinstance(target, dict) and "labels" in target:
        return [int(v) for v in torch.unique(torch.as_tensor(target["labels"])).tolist()]
    return []


def check_data(data: Any, splits: tuple[str, ...] = ("train", "val", "test"), limit: int | None = None) -> dict[str, Any]:
    """Load every sample (the first ``limit`` of each split) of ``data`` (a ``SourceDataModule``)
    without augmentation. Returns ``{"classes": [...], "splits": {split: {"images": n, "labels":
    {class name: samples holding it}}}, "report": data.data_report()}``; a bad sample raises the
    reader's one-line error (``BadRecordError``, ``ImageReadError``)."""
    names = list(getattr(data, "facts").class_names or ())
    out: dict[str, Any] = {"classes": names, "splits": {}}
    for split in splits:
        try:
            dataset = data.dataset(split)
        except (ValueError, KeyError) as error:  # a source without this split
            if split == "train":
                raise
            out["splits"][split] = {"absent": str(error)}
            continue
        count = len(dataset) if limit is None else min(limit, len(dataset))
        held: Counter[str] = Counter()
        for index in range(count):
            _, target = dataset[index]
            for label in _labels_of(target):
                held[_name(names, label, data)] += 1
        out["splits"][split] = {"images": count, "labels": dict(sorted(held.items()))}
    out["report"] = data.data_report()
    return out


def _name(names: list[str], label: int, data: Any) -> str:
    from datamodules.detection import DetectionDataModule

    # Detection labels are 1 .. C (0 is the background); segmentation and localisation 0 .. C - 1.
    index = label - 1 if isinstance(data, DetectionDataModule) else label
    ignore = getattr(getattr(data, "source", None), "ignore_index", None)
    return names[index] if 0 <= index < len(names) else ("ignored" if label == ignore else str(label))


def main(argv: list[str]) -> int:
    """``check --config <data.yaml> [--config ...] [--data.<key> value ...] [--limit N]``."""
    import sys

    import lightning.pytorch as pl
    from jsonargparse import ActionConfigFile, ArgumentParser

    parser = ArgumentParser(prog="python -m datamodules check", exit_on_error=False,
                            description="Build a data config's data module and load every sample of its splits.")
    parser.add_argument("--config", action=ActionConfigFile, help="a data config (experiments/configs/data/<format>.yaml)")
    parser.add_argument("--limit", type=int | None, default=None, help="load only the first N samples of each split")
    parser.add_subclass_arguments(pl.LightningDataModule, "data", required=True)
    from experiments.recipe.config_errors import OneLineErrors

    with OneLineErrors() as failed:
        config = parser.parse_args(argv)
        data = parser.instantiate_classes(config).data
        result = check_data(data, limit=config.limit)
    if failed.status:
        return failed.status
    source = type(data.source).__name__
    print(f"check {source}: {len(result['classes'])} classes: {', '.join(result['classes'])}")
    for split, counts in result["splits"].items():
        if "absent" in counts:
            print(f"  {split:<5}  none ({counts['absent']})")
            continue
        held = ", ".join(f"{name} {n}" for name, n in counts["labels"].items()) or "no labels"
        print(f"  {split:<5}  {counts['images']} images; images holding each class: {held}")
    for entry in result["report"].get("sources", []):
        for note in entry.get("notes", []):
            print(f"  note: {note}")
        if entry.get("skipped"):
            print(f"  skipped {entry['skipped']} bad record(s): {entry.get('skipped_by_kind')}")
    for warning in result["report"].get("warnings", []):
        print(f"  warning: {warning}")
    return 0
