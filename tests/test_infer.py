"""``python -m experiments infer`` on a folder of image files against ``predict`` on the same images.

For each task's tiny or quick config (pose hourglass, U-Net, localiser, YOLO v1, Faster R-CNN
MobileNet): one short ``fit``, ``predict`` on the first 5 test images, those 5 images written as
lossless PNGs, ``infer`` on the folder: 5 drawn PNGs and records equal to predict's (boxes, scores,
keypoints, RLE masks). Plus the drawing of each record kind, the run/checkpoint/source resolution
and the one-line errors.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.run_fixtures import REPO, TASKS, experiments

QUICK = "experiments/configs"
SHORT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2", "--trainer.limit_val_batches", "1",
         "--trainer.enable_progress_bar", "false", "--run.wandb", "disabled"]
# Each case: a config and the overrides that make it tiny (both fit and predict take them).
CASES = {
    "localization": (TASKS["localization"], []),
    "pose": (TASKS["pose"], ["--data.init_args.source.class_path", "tests.infer_fixtures.WholeImagePose",
                             "--data.init_args.source.init_args.image_size", "64"]),
    "segmentation": (f"{QUICK}/segmentation/unet_synthetic_quick.yaml", [
        "--trainer.precision", "32-true", "--model.init_args.network.init_args.base_channels", "4",
        "--model.init_args.network.init_args.depth", "2", "--data.init_args.source.init_args.image_size", "32",
        "--data.init_args.crop_size", "32", "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]),
    "yolo_v1": (f"{QUICK}/detection/yolo_v1_synthetic_quick.yaml", [
        "--model.init_args.network.init_args.backbone_weights", "", "--model.init_args.network.init_args.width", "0.0625",
        "--model.init_args.network.init_args.fc_width", "16", "--model.init_args.network.init_args.input_size", "64",
        "--model.init_args.network.init_args.score_thresh", "0.0",  # an untrained detector's scores are low
        "--model.init_args.warmup_iters", "1", "--data.init_args.source.init_args.image_size", "64",
        "--data.init_args.batch_size", "2", "--data.init_args.num_workers", "0"]),
    "faster_rcnn": (f"{QUICK}/detection/faster_rcnn_mobilenet_synthetic_quick.yaml", [
        "--data.init_args.source.init_args.image_size", "64", "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0", "--model.init_args.warmup_iters", "1"]),
    "mask_rcnn": (f"{QUICK}/detection/mask_rcnn_mobilenet_synthetic_quick.yaml", [
        "--model.init_args.network.init_args.backbone.init_args.width_mult", "0.25",
        "--model.init_args.network.init_args.min_size", "64", "--model.init_args.network.init_args.max_size", "64",
        "--model.init_args.network.init_args.rpn.score_thresh", "0.0",
        "--data.init_args.source.init_args.image_size", "64", "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0", "--model.init_args.warmup_iters", "1"]),
}
FEW = ["--data.init_args.source.init_args.num_train", "4", "--data.init_args.source.init_args.num_val", "2",
       "--data.init_args.source.init_args.num_test", "5"]


def run_infer(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m experiments infer *args`` from the repository (infer has no ``--run.root``)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "CONVLAB_"))}
    return subprocess.run([sys.executable, "-m", "experiments", "infer", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def write_test_images(config: str, overrides: list[str], folder: Path) -> list[Path]:
    """The first 5 test images of the config's data, as PNG files (lossless: the same pixels)."""
    from experiments.cli import load_components

    _, datamodule, _ = load_components(["--config", config, *overrides])
    source = datamodule.source
    folder.mkdir(parents=True)
    files = []
    for i, record in enumerate(source.records("test")[:5]):
        pixels = source.load(record)[0] if hasattr(source, "load") else source.load_image(record)
        files.append(folder / f"image{i}.png")
        Image.fromarray(pixels.permute(1, 2, 0).numpy()).save(files[-1])
    return files


def assert_same_records(predicted: list[dict], inferred: list[dict]) -> None:
    """The same records per image (by ``index``), numbers within float tolerance, masks equal;
    only the image's name differs (the split's name against the file's)."""
    assert len(predicted) == len(inferred)
    key = lambda r: (r["index"], -r["score"], r.get("category_id", 0), str(r.get("bbox")))  # noqa: E731
    for p, q in zip(sorted(predicted, key=key), sorted(inferred, key=key)):
        assert set(q) - set(p) == {"file"}
        for field in p:
            if field == "image_id":
                continue
            if isinstance(p[field], (list, float)):
                np.testing.assert_allclose(q[field], p[field], atol=2e-3, rtol=1e-4, err_msg=field)
            else:
                assert q[field] == p[field], field


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("infer_runs")


def check_task(task: str, root: Path) -> None:
    config, overrides = CASES[task]
    overrides = [*overrides, *FEW]
    fit = experiments("fit", "--config", config, *SHORT, *overrides, "--run.name", task, root=root)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = root / task
    predict = experiments("predict", "--config", config, *overrides, "--run.wandb", "disabled", "--ckpt_path",
                          str(run / "checkpoints" / "last.ckpt"), "--run.name", f"{task}-predict", root=root)
    assert predict.returncode == 0, predict.stderr[-3000:]
    assert "convlab: predict on the 'test' split" in predict.stdout
    assert "predictions.json" in predict.stdout.split("convlab: outputs")[-1]
    predicted = json.loads((root / f"{task}-predict" / "predictions.json").read_text())
    assert predicted  # else the comparison below would compare nothing

    images = write_test_images(config, overrides, root / f"{task}-images")
    inferred_run = run_infer("--ckpt", str(run / "checkpoints" / "last.ckpt"), "--source", str(images[0].parent), "--batch-size", "2")
    assert inferred_run.returncode == 0, inferred_run.stderr[-3000:]
    out = run / "infer"
    assert sorted(p.name for p in out.glob("*.png")) == [f"image{i}.png" for i in range(5)]
    for png in out.glob("*.png"):
        assert Image.open(png).size[0] >= 64
    inferred = json.loads((out / "predictions.json").read_text())
    assert {r["file"] for r in inferred} <= {str(p) for p in images}
    assert_same_records(predicted, inferred)
    summary = inferred_run.stdout.split("convlab: outputs")[-1]
    assert "5 PNG" in summary and "predictions.json" in summary and "(last)" in summary
    # The validation panels are in the run folder too, not only in W&B's.
    assert list((run / "panels").glob("epoch*.png"))


@pytest.fixture(scope="module")
def localization_run(runs):
    check_task("localization", runs)
    return runs / "localization"


def test_localization_infer_equals_predict(localization_run):
    assert (localization_run / "infer" / "predictions.json").is_file()


def test_predict_leaves_out_records_below_its_score_threshold(localization_run):
    root = localization_run.parent
    config, overrides = CASES["localization"]
    everything = json.loads((root / "localization-predict" / "predictions.json").read_text())
    threshold = sorted(r["score"] for r in everything)[len(everything) // 2]
    predict = experiments("predict", "--config", config, *overrides, *FEW, "--run.wandb", "disabled",
                          "--ckpt_path", str(localization_run / "checkpoints" / "last.ckpt"),
                          "--predictions.score_threshold", str(threshold), "--run.name", "thresholded", root=root)
    assert predict.returncode == 0, predict.stderr[-3000:]
    kept = json.loads((root / "thresholded" / "predictions.json").read_text())
    assert kept == [r for r in everything if r["score"] >= threshold] and 0 < len(kept) < len(everything)


def test_infer_errors_are_one_line(localization_run, tmp_path, capsys):
    from experiments.infer import main

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png")
    assert main(["--ckpt", str(localization_run), "--source", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"convlab: cannot read image {bad / 'broken.png'}: ") and "\n" not in err
    assert main(["--ckpt", str(localization_run), "--source", str(tmp_path / "*.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("convlab: no image (") and err.endswith(f"matched --source {tmp_path / '*.jpg'}")
    lonely = tmp_path / "lonely"
    (lonely / "checkpoints").mkdir(parents=True)
    (lonely / "checkpoints" / "last.ckpt").write_bytes((localization_run / "checkpoints" / "last.ckpt").read_bytes())
    assert main(["--ckpt", str(lonely), "--source", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == ("convlab: the run's config.yaml (fit saves it in the run folder; for a checkpoint outside "
                                               f"its run give --config) not found: {lonely / 'config.yaml'}")
    # A second inference writes beside the first, never over it; a named --out that holds files is refused.
    assert main(["--ckpt", str(localization_run), "--source", str(localization_run.parent / "localization-images" / "image0.png")]) == 0
    assert (localization_run / "infer-2" / "image0.png").is_file() and len(list((localization_run / "infer").iterdir())) == 6
    assert main(["--ckpt", str(localization_run), "--source", str(bad), "--out", str(localization_run / "infer")]) == 2
    assert "already holds files" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("task", ["pose", "segmentation", "yolo_v1", "faster_rcnn", "mask_rcnn"])
def test_infer_equals_predict(task, runs):
    check_task(task, runs)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_image_files_of_any_size_keep_their_own_pixels(task, tmp_path):
    """Each data module's image_files_dataset gives the predict loader's format for a 30x50 file,
    with what maps its predictions back to that file's pixels."""
    from core.geometry import apply_affine
    from experiments.cli import load_components

    _, datamodule, _ = load_components(["--config", TASKS[task]])
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(path)
    image, target = datamodule.image_files_dataset([path])[0]  # a sample, as the predict loader's dataset gives it
    assert int(target["index"]) == 0 and target["image_key"] == "wide.png"
    if task == "detection":
        assert image.shape == (3, 30, 50) and target["size"].tolist() == [30, 50]  # the detector resizes it itself
    elif task == "segmentation":
        assert image.shape[-2:] == (30, 50) and target["labels"].shape == (30, 50) and (target["labels"] == 255).all()
    elif task == "localization":
        assert target["orig_size"].tolist() == [30, 50] and image.shape[-2:] == datamodule.input_size
    else:  # pose: one person, the crop holds the whole image, centred
        matrix = target["crop_matrix"]
        corners = apply_affine(matrix, torch.tensor([[-0.5, -0.5], [49.5, 29.5]], dtype=torch.float64))
        height, width = datamodule.input_size
        assert corners[0, 0] == pytest.approx(-0.5) and corners[1, 0] == pytest.approx(width - 0.5)
        assert corners[0, 1] > -0.5 and corners[1, 1] < height - 0.5
        middle = apply_affine(matrix, torch.tensor([[24.5, 14.5]], dtype=torch.float64))[0]
        assert middle.tolist() == pytest.approx([(width - 1) / 2, (height - 1) / 2])


# ---------------------------------------------------------------------- resolution of --ckpt and --source
def test_a_run_folder_takes_best_else_last_and_a_checkpoint_finds_its_run(tmp_path):
    from core.checkpoints import CheckpointNotFoundError
    from experiments.trained import find_checkpoint as resolve_checkpoint

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointNotFoundError, match="checkpoints/{best,last}.ckpt"):
        resolve_checkpoint(run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert resolve_checkpoint(run) == (run, run / "checkpoints" / "last.ckpt")
    (run / "checkpoints" / "best.ckpt").write_bytes(b"")
    assert resolve_checkpoint(run) == (run, run / "checkpoints" / "best.ckpt")
    assert resolve_checkpoint(run / "checkpoints" / "last.ckpt") == (run, run / "checkpoints" / "last.ckpt")


def test_sources_are_files_folders_and_globs(tmp_path):
    from core.errors import DataNotFoundError
    from experiments.infer import _png_names, find_images

    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.JPG", "notes.txt", "sub/a.png"):
        (tmp_path / name).write_bytes(b"")
    assert find_images(str(tmp_path)) == [tmp_path / "a.JPG", tmp_path / "b.png"]
    assert find_images(str(tmp_path / "**" / "a.*")) == [tmp_path / "a.JPG", tmp_path / "sub" / "a.png"]
    assert find_images(str(tmp_path / "b.png")) == [tmp_path / "b.png"]
    assert _png_names([tmp_path / "a.JPG", tmp_path / "sub" / "a.png"]) == ["a.png", "a-2.png"]
    with pytest.raises(DataNotFoundError, match="no image"):
        find_images(str(tmp_path / "*.bmp"))
    with pytest.raises(DataNotFoundError, match="--source not found"):
        find_images(str(tmp_path / "missing"))


# ---------------------------------------------------------------------- drawing each kind of record
def rle(mask: np.ndarray) -> dict:
    from lightning_modules.segmentation import label_rle

    return label_rle(mask.astype(np.int64), 1)


def test_boxes_are_drawn_in_their_class_colour_on_an_enlarged_image():
    from lightning_modules.visualize import MIN_DRAWN_SIDE, draw_records

    image = torch.zeros(3, 32, 16, dtype=torch.uint8)
    record = {"bbox": [4.0, 4.0, 6.0, 10.0], "category": "circle", "score": 0.9}
    picture = draw_records(image, [record], {"circle": (0, 255, 0)})
    factor = MIN_DRAWN_SIDE // 32
    assert picture.shape == (3, 32 * factor, 16 * factor)
    assert picture[:, 8 * factor, 4 * factor].tolist() == [0, 255, 0]  # on the box's left side
    assert picture[:, 30 * factor, 14 * factor].tolist() == [0, 0, 0]  # far from it


def test_masks_are_coloured_overlays_with_a_legend_and_the_background_is_left_alone():
    from lightning_modules.visualize import draw_records

    image = torch.full((3, 40, 40), 100, dtype=torch.uint8)
    mask = np.zeros((40, 40), bool)
    mask[:, 20:] = True
    records = [{"segmentation": rle(mask), "category": "square", "score": 0.8},
               {"segmentation": rle(~mask), "category": "background", "score": 0.9}]
    picture = draw_records(image, records, {"square": (255, 0, 0), "background": (0, 0, 0)})
    assert picture.shape[-1] == 320 and picture.shape[-2] > 320  # the legend below
    assert picture[:, 100, 300].tolist() == [177, 50, 50]  # half red, half the image
    assert picture[:, 100, 20].tolist() == [100, 100, 100]  # the background: not overlaid
    legend = picture[:, 320:]
    assert ((legend[0] == 255) & (legend[1] == 0)).any()  # the square's colour is in the legend


def test_keypoints_are_drawn_as_a_skeleton():
    from lightning_modules.visualize import draw_records

    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    record = {"keypoints": [10.0, 32.0, 0.9, 50.0, 32.0, 0.8], "score": 0.85}
    joined = draw_records(image, [record], {}, edges=[(0, 1)])
    alone = draw_records(image, [record], {}, edges=[])
    middle = (32 + 0.5) * 5 - 0.5  # the enlarged (x5) pixel centre between the joints
    assert joined[0, round(middle), 150] == 255 and alone[0, round(middle), 150] == 0


def test_detection_panels_draw_ground_truth_beside_predictions():
    from types import SimpleNamespace

    from lightning_modules.detection import DetectionModule

    fake = SimpleNamespace(image_score_threshold=0.5, _class_name=lambda label: f"class{label}")
    batch = {
        "images": [torch.zeros(3, 40, 40)],
        "truths": [{"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0]]), "labels": torch.tensor([1])}],
        "outputs": [{"boxes": torch.tensor([[20.0, 20.0, 30.0, 30.0]]), "labels": torch.tensor([1]), "scores": torch.tensor([0.9])}],
    }
    (panel,) = DetectionModule.draw_images(fake, batch)
    assert panel[:, 8, 2].tolist() == [0, 255, 0]  # the ground truth, lime
    assert panel[:, 25, 20].tolist() == [255, 0, 0]  # the prediction, red
