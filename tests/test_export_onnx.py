"""``python -m experiments export --format onnx``: the quick networks of every task exported from a
run folder (its config.yaml and a checkpoint) and run by onnxruntime within 1e-4 of PyTorch; the
real command on a real fit's run; a network that cannot export (one line, exit 2); and the old
``--format weights`` beside it.

The quick configs are used as shipped (their networks at their input sizes), with small synthetic
splits, since only a few validation images are read."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from torch import nn

from experiments.export import ExportError, check_onnx, export_onnx, export_run_onnx
from experiments.export import main as export_main
from experiments.recipe import override_tree
from tests.run_fixtures import REPO, TASKS, experiments

CONFIGS = "experiments/configs"
SMALL_SPLITS = {f"data.init_args.source.init_args.{split}": 8 for split in ("num_train", "num_val", "num_test")}

# name: (config, overrides, the exporter auto picks)
QUICK = {
    "pose": (f"{CONFIGS}/pose/hourglass_synthetic_quick.yaml", {}, "dynamo"),
    "unet": (f"{CONFIGS}/segmentation/unet_synthetic_quick.yaml", {}, "dynamo"),
    "localizer": (f"{CONFIGS}/localization/localizer_synthetic_quick.yaml", {}, "dynamo"),
    # Its pretrained convolutions come from `make yolo`; the checkpoint holds every weight anyway.
    "yolo_v1": (f"{CONFIGS}/detection/yolo_v1_synthetic_quick.yaml", {"model.init_args.network.init_args.backbone_weights": None},
                "torchscript"),
    "faster_rcnn": (f"{CONFIGS}/detection/faster_rcnn_mobilenet_synthetic_quick.yaml", {}, "torchscript"),
}


def make_run(composer, root: Path, config: str, overrides: dict, prepare=None) -> Path:
    """A run folder as ``fit`` leaves it, without training: the resolved ``config.yaml`` and
    ``checkpoints/last.ckpt`` of a freshly built module (``prepare(module)`` may change it first)."""
    parsed = composer.parse([config], override_tree({**SMALL_SPLITS, **overrides}))
    run = root / Path(config).stem
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(composer.dump(parsed))
    model, _ = composer.instantiate(parsed)
    if prepare is not None:
        prepare(model)
    torch.save({"state_dict": model.state_dict()}, run / "checkpoints" / "last.ckpt")
    return run


def spread_scores(model) -> None:
    """Weights for the classifiers of the RPN and the box head such as training gives, whose
    scores differ from box to box. Untrained (std 0.01), every box scores 0.153 within 4e-6, and
    which of such equal boxes make a top-k cut is arbitrary in any two runtimes (docs/export.md)."""
    generator = torch.Generator().manual_seed(0)
    detector = model.network.detector
    for layer in (detector.rpn.head.cls_logits, detector.roi_heads.box_predictor.cls_score):
        with torch.no_grad():
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))


@pytest.mark.parametrize("name", list(QUICK))
def test_the_quick_networks_export_within_1e_4_of_pytorch(name, composer, tmp_path, in_repo):
    config, overrides, exporter = QUICK[name]
    run = make_run(composer, tmp_path, config, overrides, spread_scores if name == "faster_rcnn" else None)
    export, parities, checked = export_run_onnx(run, None, check_count=3)
    assert checked == 3
    assert export.path == run / "model.onnx" and export.exporter == exporter and not export.failures
    onnx.checker.check_model(str(export.path))
    batch_axis = onnxruntime.InferenceSession(str(export.path)).get_inputs()[0].shape[0]
    if exporter == "dynamo":
        # The batch is dynamic: the check ran a batch of 3 and one image through the same file.
        assert export.dynamic_batch and isinstance(batch_axis, str)
    else:
        # torchvision's detectors loop over the images in Python: one image per run.
        assert export.per_image and batch_axis == 1 and export.output_names == ["boxes", "labels", "scores"]
        assert all(p.rows > 0 for p in parities)
    assert parities and all(p.relative() <= 1e-4 for p in parities), parities
    # Boxes in pixels are the one output above 1e-4 in absolute terms (float32 of values up to 320).
    assert all(p.max_abs <= 1e-4 for p in parities if p.name != "boxes"), parities


def test_a_network_that_cannot_export_is_one_line_and_exit_2(composer, tmp_path, in_repo, capfd):
    run = make_run(composer, tmp_path, f"{CONFIGS}/detection/box_regressor_synthetic.yaml", {})
    code = export_main(["--format", "onnx", "--ckpt", str(run)])
    out, err = capfd.readouterr()
    assert code == 2 and not out
    assert err.count("\n") == 1, err[:2000]  # no traceback, none of the exporter's graph dump
    assert err.startswith("python -m experiments export: BoxRegressor cannot be exported to ONNX (torchscript exporter: ")
    assert "Sort" in err and not (run / "model.onnx").exists()


def test_the_command_exports_a_real_fits_run_and_weights_still_work(tmp_path):
    fit = experiments("fit", "--config", TASKS["localization"], "--run.name", "tiny", "--trainer.max_epochs", "1", root=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    run = tmp_path / "tiny"
    result = export("--format", "onnx", "--ckpt", str(run))
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("convlab export: ") and "(dynamo exporter" in lines[0] and "dynamic batch" in lines[0]
    assert "max |Δ| per output" in lines[1]
    assert [line.split()[0] for line in lines[2:]] == ["logits", "boxes"]
    assert all(float(line.split()[1]) <= 1e-4 for line in lines[2:])
    assert result.stderr == ""  # no warnings, no progress lines of the exporter
    assert (run / "model.onnx").stat().st_size > 0

    # An existing file is kept (a checkpoint names the same run).
    assert export_main(["--format", "onnx", "--ckpt", str(run / "checkpoints" / "last.ckpt")]) == 2

    # --format weights (the default) is what it was: a submodule's state dict.
    weights = tmp_path / "backbone.pt"
    assert export_main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--module", "network.backbone", "--out", str(weights)]) == 0
    state = torch.load(weights, weights_only=True)
    assert state and all(not key.startswith("network.") for key in state)
    assert export_main(["--format", "weights", "--ckpt", str(run / "checkpoints" / "last.ckpt"), "--module", "network.backbone",
                        "--out", str(weights)]) == 2  # exists, no --force


def test_a_tolerance_failure_is_one_line_on_stderr(tmp_path, composer, in_repo, capsys):
    config, overrides, _ = QUICK["localizer"]
    run = make_run(composer, tmp_path, config, overrides)
    assert export_main(["--format", "onnx", "--ckpt", str(run), "--tolerance", "0", "--check-inputs", "random"]) == 1
    out, err = capsys.readouterr()
    assert "max |Δ| per output" in out
    assert err.count("\n") == 1 and err.startswith("python -m experiments export: onnxruntime differs from PyTorch: output ")


def test_missing_run_parts_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert export_main(["--format", "onnx", "--ckpt", str(tmp_path / "empty")]) == 2
    assert "checkpoint (--ckpt) not found" in capsys.readouterr().err
    (tmp_path / "noconfig" / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {"network.w": torch.zeros(1)}}, tmp_path / "noconfig" / "checkpoints" / "last.ckpt")
    assert export_main(["--format", "onnx", "--ckpt", str(tmp_path / "noconfig")]) == 2
    assert "the run's config.yaml (fit saves it in the run folder; for a checkpoint outside its run give --config) not found" in capsys.readouterr().err


def test_weights_that_do_not_fit_the_runs_network_are_one_line(composer, tmp_path, in_repo, capsys):
    config, overrides, _ = QUICK["localizer"]
    run = make_run(composer, tmp_path, config, overrides)
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    torch.save({"state_dict": {"network.backbone.extra.weight": torch.zeros(1)}}, ckpt)
    assert export_main(["--format", "onnx", "--ckpt", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the network" in err
    assert "weights missing (backbone.layers." in err and "1 unexpected (backbone.extra.weight)" in err
    state["network.class_head.fc.bias"] = torch.zeros(3)
    torch.save({"state_dict": state}, ckpt)
    assert export_main(["--format", "onnx", "--ckpt", str(run)]) == 2
    assert "class_head.fc.bias is (3,) in the checkpoint, (6,) in the network" in capsys.readouterr().err


@pytest.mark.parametrize("exporter", ["dynamo", "torchscript"])
def test_either_exporter_keeps_a_dense_networks_batch_dynamic(exporter, tmp_path):
    network = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    images = list(torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
    export = export_onnx(network, torch.stack(images[:2]), tmp_path / "net.onnx", exporter=exporter)
    assert (export.exporter, export.output_names, export.dynamic_batch, export.per_image) == (exporter, ["output"], True, False)
    assert isinstance(onnxruntime.InferenceSession(str(export.path)).get_inputs()[0].shape[0], str)
    (parity,) = check_onnx(export, network, images)  # a batch of 3, then of 1
    assert parity.name == "output" and 0 < parity.scale and parity.max_abs <= 1e-5
    with pytest.raises(FileExistsError, match="give --force"):
        export_onnx(network, torch.stack(images[:2]), export.path, exporter=exporter)


def test_an_output_of_other_things_than_tensors_is_named(tmp_path):
    class Described(nn.Module):
        def forward(self, images):
            return {"boxes": images.mean((1, 2, 3)), "names": ["a"] * len(images)}

    with pytest.raises(ExportError, match=r"Described cannot be exported: its output is a dict of boxes: Tensor, names: list"):
        export_onnx(Described(), torch.rand(2, 3, 8, 8), tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def export(*args: str) -> subprocess.CompletedProcess:
    """``python -m experiments export *args`` from the repository, without the caller's W&B and
    convlab variables, as a user runs it."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "CONVLAB_"))}
    return subprocess.run([sys.executable, "-m", "experiments", "export", *args], check=False, cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)
