"""Every shipped config parses through the real CLI and its network builds; `bench` runs."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from experiments.recipe import get_dotted, override_tree
from tests.run_fixtures import TASKS

REPO = Path(__file__).resolve().parents[1]
DATA_CONFIGS = sorted((REPO / "experiments" / "configs" / "data").glob("*.yaml"))
# The runnable configs; a data config is a `data:` section that goes after one of them.
CONFIGS = sorted(set((REPO / "experiments" / "configs").rglob("*.yaml")) - set(DATA_CONFIGS))


def build(spec: dict):
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def print_config(*args: str) -> dict:
    """``fit --print_config`` through the real command line."""
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "fit", *args, "--print_config"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


def weights_files(tree: dict, prefix: str) -> dict[str, str]:
    """``{dotted key: path}`` of every pretrained-weights file (an argument named ``*weights``
    holding a path) under ``tree``."""
    found = {}
    for key, value in tree.items():
        dotted = f"{prefix}.{key}"
        if isinstance(value, dict):
            found.update(weights_files(value, dotted))
        elif str(key).endswith("weights") and isinstance(value, str) and value.endswith((".pth", ".pt")):
            found[dotted] = value
    return found


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(REPO / "experiments" / "configs").as_posix())
def test_config_parses_and_builds(config, composer):
    """Every shipped config parses with the CLI's parser and builds its module and network; where
    its data is on disk (the synthetic ones), the data module too, and the network runs on the
    module's example input (what bench and search measure)."""
    from core.errors import DataNotFoundError, error_in_chain

    parsed = composer.parse([str(config.relative_to(REPO))])
    resolved = composer.to_dict(parsed)
    for key in ("trainer", "model", "data", "run"):
        assert key in resolved
    # Pretrained weights the config names (data/weights/... provided by the user, or the file that
    # `make yolo` makes first) are left out when they are not on disk: the network still builds.
    missing = {key: None for key, path in weights_files(resolved["model"], "model").items() if not (REPO / path).exists()}
    if missing:
        parsed = composer.parse([str(config.relative_to(REPO))], override_tree(missing))
    try:
        model, data = composer.instantiate(parsed)
    except Exception as error:
        # The data is not on disk either (a real dataset's config): the model alone.
        assert error_in_chain(error, DataNotFoundError) is not None, f"{config.name}: {error}"
        model, data = composer.instantiate_model_alone(parsed), None
    assert sum(p.numel() for p in model.network.parameters()) > 0
    if data is not None:
        assert model.example_input_array is not None
        with torch.no_grad():
            model.network.eval()(model.example_input_array)


def test_mpii_config_is_the_paper_recipe():
    resolved = print_config("--config", "experiments/configs/pose/hourglass_mpii.yaml")
    net = resolved["model"]["init_args"]["network"]["init_args"]
    assert (net["num_stacks"], net["num_blocks"], net["num_features"], net["num_joints"], net["depth"]) == (8, 1, 256, 16, 4)
    assert sum(p.numel() for p in build(resolved["model"]["init_args"]["network"]).parameters()) == 25_434_112
    opt = resolved["model"]["init_args"]["optimizer"]
    assert opt["class_path"] == "torch.optim.RMSprop" and opt["init_args"]["lr"] == pytest.approx(2.5e-4)
    data = resolved["data"]["init_args"]
    assert (data["input_size"], data["output_size"], data["sigma"]) == (256, 64, 1.0)
    aug = data["augmentation"]["init_args"]
    assert aug["rotation"] == 30.0 and list(aug["scale_range"]) == [0.75, 1.25] and aug["flip_prob"] == 0.5
    assert resolved["model"]["init_args"]["flip_test"] is True


# torchvision's parameter counts of the models whose recipes the configs follow (their COCO
# checkpoints: 91 class slots, 2 for person keypoints; shared/reference/PAPER_NUMBERS.md 2a).
TORCHVISION_PARAMS = {
    "faster_rcnn_resnet50_fpn_coco.yaml": 41_755_286,
    "faster_rcnn_resnet50_fpn_v2_coco.yaml": 43_712_278,
    "faster_rcnn_mobilenet_v3_large_fpn_coco.yaml": 19_386_354,
    "faster_rcnn_mobilenet_v3_large_320_fpn_coco.yaml": 19_386_354,
    "retinanet_resnet50_fpn_coco.yaml": 34_014_999,
    "fcos_resnet50_fpn_coco.yaml": 32_269_600,
    "ssd300_vgg16_coco.yaml": 35_641_826,
    "ssdlite320_mobilenet_v3_large_coco.yaml": 3_440_060,
    "mask_rcnn_resnet50_fpn_coco.yaml": 44_401_393,
    "keypoint_rcnn_resnet50_fpn_coco.yaml": 59_137_258,
}


@pytest.mark.parametrize(("name", "params"), sorted(TORCHVISION_PARAMS.items()))
def test_detection_recipe_configs_build_torchvisions_models(name, params, composer):
    """Each COCO detection config composes exactly torchvision's model: with torchvision's 91 class
    slots (the configs use 81 contiguous labels) its parameter count is torchvision's. The
    ImageNet weights file is left out (it is not shipped); the batch norm it would freeze stays
    frozen, so the count is the pretrained model's."""
    config = f"experiments/configs/detection/{name}"
    resolved = composer.to_dict(composer.parse([config]))
    overrides: dict = {}
    for key in weights_files(resolved["model"], "model"):
        overrides[key] = None
        parent = key.rpartition(".")[0]
        if key.endswith(".init_args.weights") and get_dotted(resolved, f"{parent}.frozen_batch_norm", "absent") is None:
            overrides[f"{parent}.frozen_batch_norm"] = True
    if resolved["model"]["init_args"]["network"]["init_args"]["num_classes"] != 2:  # person keypoints: torchvision's 2
        overrides["model.init_args.network.init_args.num_classes"] = 91
    model = composer.instantiate_model_alone(composer.parse([config], override_tree(overrides)))
    assert sum(p.numel() for p in model.network.parameters()) == params


@pytest.mark.parametrize("config", sorted(TASKS.values()))
def test_bench_reports_through_the_contract_in_channels_last(tmp_path, config, composer):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "bench", "--config", config, "--steps", "3", "--warmup", "1", "--repeats", "2",
         "--loader-batches", "2", "--channels-last", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    model, _ = composer.instantiate(composer.parse([config]))
    assert report["params"] == sum(p.numel() for p in model.network.parameters())
    assert report["input_shape"] == list(model.example_input_array.shape[1:])
    assert report["forward_gflops_per_image"] > 0
    assert report["channels_last"] is True and " channels_last" in result.stdout  # every task takes it (TaskModule)
    assert len(report["ratio_per_repeat"]) == 2 and report["lightning_to_bare_ratio"] > 0
    assert report["train_images_per_s"]["bare"] > 0 and set(report["latency_ms"]) == {"batch1", f"batch{report['batch_size']}"}
    assert report["loader_images_per_s"] > 0 and report["loader_workers"] == 0
    assert "Lightning / bare step" in result.stdout and "data loader images/s" in result.stdout


def quick_config_of(data_module: str) -> Path:
    """The first quick (synthetic) model config whose data module is ``data_module``."""
    for config in CONFIGS:
        tree = yaml.safe_load(config.read_text())
        if "synthetic" in config.stem and tree.get("data", {}).get("class_path") == data_module:
            return config
    raise AssertionError(f"no quick config of {data_module}")


@pytest.mark.parametrize("data_config", DATA_CONFIGS, ids=lambda p: p.name)
def test_a_data_config_replaces_the_source_of_a_model_config_whole(data_config, composer):
    """``--config <quick model> --config <data>``: the source is the data config's class with the data
    config's arguments and the class's own defaults for the rest (nothing of the synthetic source
    carries over, e.g. its ``num_val`` or ``seed``), the model config's loader settings stay, the
    network builds, and the data, not on disk, fails naming its root."""
    from core.errors import DataNotFoundError, error_in_chain
    from experiments.recipe.compose import class_defaults

    given = yaml.safe_load(data_config.read_text())["data"]
    model_config = quick_config_of(given["class_path"])
    parsed = composer.parse([str(model_config.relative_to(REPO)), str(data_config.relative_to(REPO))])
    resolved = composer.to_dict(parsed)["data"]["init_args"]
    source = resolved["source"]
    assert source["class_path"] == given["init_args"]["source"]["class_path"]
    expected = {**class_defaults(source["class_path"]), **given["init_args"]["source"]["init_args"]}
    assert {k: source["init_args"][k] for k in expected} == expected
    assert resolved["batch_size"] == yaml.safe_load(model_config.read_text())["data"]["init_args"]["batch_size"]
    with pytest.raises(Exception) as error:
        composer.instantiate(parsed)
    assert error_in_chain(error.value, DataNotFoundError) is not None
    model = composer.instantiate_model_alone(parsed)
    assert sum(p.numel() for p in model.network.parameters()) > 0


def test_a_root_given_to_a_synthetic_source_says_the_class_must_change():
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "fit", "--config", "experiments/configs/detection/faster_rcnn_mobilenet_synthetic_quick.yaml",
         "--data.source.root", "/nowhere"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "SyntheticDetection has no 'root'" in line and "the source class must change" in line
    assert "--config experiments/configs/data/<coco_detection | csv_detection" in line and "yolo>.yaml" in line
    assert "mask_folder" not in line  # only the readers of the task


def test_a_later_config_naming_another_class_keeps_none_of_the_old_ones_arguments(tmp_path, composer):
    """jsonargparse alone keeps the arguments the new class shares with the old one: the quick
    hourglass's synthetic ``num_val: 400`` would become LSP's hold-out."""
    data = tmp_path / "lsp.yaml"
    data.write_text(yaml.safe_dump({"data": {"class_path": "datamodules.pose.PoseDataModule", "init_args": {
        "source": {"class_path": "datamodules.formats.lsp.LSP", "init_args": {"root": "data/lsp"}}}}}))
    quick = "experiments/configs/pose/hourglass_synthetic_quick.yaml"
    assert yaml.safe_load((REPO / quick).read_text())["data"]["init_args"]["source"]["init_args"]["num_val"] == 400
    resolved = composer.to_dict(composer.parse([quick, str(data)]))
    assert resolved["data"]["init_args"]["source"]["init_args"]["num_val"] == 0  # LSP's default
    assert resolved["data"]["init_args"]["batch_size"] == 16  # the model config's, same data module


def test_replace_classes_cleanly_adds_a_reset_after_the_config_that_changes_a_class(tmp_path):
    from experiments.recipe.compose import replace_classes_cleanly

    quick = "experiments/configs/pose/hourglass_synthetic_quick.yaml"
    data = tmp_path / "lsp.yaml"
    source = {"class_path": "datamodules.formats.lsp.LSP", "init_args": {"root": "x"}}
    data.write_text(yaml.safe_dump({"data": {"init_args": {"source": source}}}))
    same = tmp_path / "same.yaml"
    same.write_text(yaml.safe_dump({"data": {"init_args": {"batch_size": 2}}}))
    args = ["fit", "--config", str(REPO / quick), f"--config={data}", "--config", str(same), "--data.source.root", "/y"]
    out = replace_classes_cleanly(args)
    assert out[:4] == args[:4] and out[6:] == args[4:]  # one reset, right after the config that changed the class
    assert out[4] == "--config"
    reset = json.loads(out[5])["data"]["init_args"]["source"]["init_args"]
    assert reset["num_val"] == 0 and "root" not in reset  # LSP's defaults for what the data config leaves out
    unchanged = ["fit", "--config", str(REPO / quick), "--config", str(same)]
    assert replace_classes_cleanly(unchanged) == unchanged
