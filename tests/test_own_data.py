"""README's "Train on your own data", run as written: its commands are read from README.md and run
word for word with ``$DATA`` (the one placeholder the README uses) set to a folder built here, a
COCO folder, an image/mask folder with black 0 / white 255 masks, and a YOLO folder; the mask run
must learn its foreground (IoU above 0: 255 read as ignore would leave it at 0).

The commands run in a fresh folder that holds only a link to ``experiments/`` (the configs the
commands name), so their ``runs/`` are written there, as a user's would be in the clone.
"""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.detection_fixtures import coco_detection_folder, yolo_folder

REPO = Path(__file__).resolve().parents[1]
SECTION = "## Train on your own data"


def readme_blocks() -> dict[str, list[str]]:
    """The ```bash blocks of the README's section, keyed by the data config they name, each as its
    command lines (comments left out, ``\\`` continuations joined)."""
    text = (REPO / "README.md").read_text()
    assert SECTION + "\n" in text, f"README.md has no section {SECTION!r}"
    section = text.split(SECTION + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = {}
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        lines = [line for line in block.replace("\\\n", " ").splitlines() if line.strip() and not line.lstrip().startswith("#")]
        configs = {m for line in lines for m in re.findall(r"experiments/configs/data/(\w+)\.yaml", line)}
        assert len(configs) == 1, f"a README block must name one data config, got {configs}"
        blocks[configs.pop()] = lines
    return blocks


def mask_pairs(root: Path, count: dict[str, int], size: int = 48) -> Path:
    """``{train,val}/images/<name>.png`` (a bright disc on a dark noisy background) and
    ``{train,val}/masks/<name>.png`` with the disc at 255 and the rest 0, as most tools export them."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for split, n in count.items():
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for i in range(n):
            cy, cx, r = rng.uniform(14, size - 14), rng.uniform(14, size - 14), rng.uniform(6, 12)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            image = rng.integers(0, 70, (size, size, 3))
            image[disc] = rng.integers(180, 256, (int(disc.sum()), 3))
            Image.fromarray(image.astype(np.uint8)).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray((disc * 255).astype(np.uint8), mode="L").save(root / split / "masks" / f"{i:03d}.png")
    return root


FOLDERS = {
    "coco_detection": lambda root: coco_detection_folder(root),
    "mask_folder": lambda root: mask_pairs(root, {"train": 32, "val": 4}),
    "yolo": lambda root: yolo_folder(root),
}


def run_readme_block(name: str, tmp_path: Path) -> tuple[Path, list[subprocess.CompletedProcess]]:
    """Build ``name``'s folder, run its README commands in order in a fresh working folder; every
    one must exit 0. Returns the working folder and the results."""
    data = FOLDERS[name](tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    (work / "experiments").symlink_to(REPO / "experiments")
    env = {**os.environ, "DATA": str(data), "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    results = []
    for command in readme_blocks()[name]:
        result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        results.append(result)
    return work, results


def test_the_readme_section_has_a_block_per_folder():
    assert set(readme_blocks()) == set(FOLDERS)
    for lines in readme_blocks().values():
        assert [line.split()[:3] for line in lines] == [["python", "-m", "datamodules"], ["python", "-m", "experiments"],
                                                        ["python", "-m", "experiments"]]


def _fit_run(work: Path) -> Path:
    """The fit's run folder; validate wrote beside it, into ``<name>-validate``."""
    runs = sorted(p.name for p in (work / "runs").iterdir())
    assert len(runs) == 2 and runs[1] == f"{runs[0]}-validate", runs
    return work / "runs" / runs[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["coco_detection", "yolo"])
def test_the_readme_detection_commands_run_as_written(name, tmp_path):
    work, (check, fit, validate) = run_readme_block(name, tmp_path)
    assert check.stdout.startswith(f"check {'COCODetection' if name == 'coco_detection' else 'YOLOText'}: 3 classes")
    run = _fit_run(work)
    assert (run / "checkpoints" / "best.ckpt").is_file() and (run / "data_report.json").is_file()
    assert "val/map" in validate.stdout
    if name == "coco_detection":  # the fixture's toothbrushes are a crowd only: nothing trains on them
        assert "convlab data: warning: COCODetection: class 'toothbrush' never appears in the training labels" in fit.stderr


@pytest.mark.slow
def test_the_readme_mask_commands_learn_the_white_foreground(tmp_path):
    work, (check, fit, validate) = run_readme_block("mask_folder", tmp_path)
    assert "read as mask_values {0: 0, 255: 1}" in check.stdout
    run = _fit_run(work)
    report = json.loads((run / "data_report.json").read_text())
    assert "read as mask_values {0: 0, 255: 1}" in report["sources"][0]["notes"][0]
    with open(run / "metrics.csv") as file:
        ious = [float(row["val/iou/foreground"]) for row in csv.DictReader(file) if row.get("val/iou/foreground")]
    assert ious and max(ious) > 0.0, ious
    assert "val/iou/foreground" in validate.stdout


def test_check_loads_every_sample_and_prints_the_classes_per_split(tmp_path, capsys):
    from datamodules.check import main

    root = mask_pairs(tmp_path / "masks", {"train": 3, "val": 2})
    assert main(["--config", str(REPO / "experiments/configs/data/mask_folder.yaml"), "--data.source.root", str(root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "check MaskFolder: 2 classes: background, foreground"
    assert out[1] == "  train  3 images; images holding each class: background 3, foreground 3"
    assert out[2].startswith("  val    2 images") and "note: the masks in" in out[4]
    # A mask of another size is found only by loading the pixels: one line, exit 2.
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(root / "val" / "masks" / "001.png")
    assert main(["--config", str(REPO / "experiments/configs/data/mask_folder.yaml"), "--data.source.root", str(root)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("convlab: ") and "001.png" in error and "\n" not in error
