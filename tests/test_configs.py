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

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "experiments" / "configs").rglob("*.yaml"))


def build(spec: dict):
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def print_config(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "fit", *args, "--print_config"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return yaml.safe_load(result.stdout)


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.relative_to(REPO / "experiments" / "configs").as_posix())
def test_config_parses_and_its_network_builds(config):
    resolved = print_config("--config", str(config.relative_to(REPO)))
    for key in ("trainer", "model", "data", "run"):
        assert key in resolved
    network = build(resolved["model"]["init_args"]["network"])
    size = resolved["data"]["init_args"]["input_size"]
    h, w = (size, size) if isinstance(size, int) else size
    with torch.no_grad():
        outputs = network.eval()(torch.zeros(1, 3, h, w))
    out = resolved["data"]["init_args"]["output_size"]
    assert outputs[-1].shape[-2:] == ((out, out) if isinstance(out, int) else tuple(out))


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


def test_bench_reports_the_step_ratio(tmp_path):
    out = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "bench", "--config", "tests/configs/pose_tiny.yaml",
         "--steps", "3", "--warmup", "1", "--repeats", "2", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["params"] == sum(p.numel() for p in build({"class_path": "lightning_modules.networks.hourglass.StackedHourglass", "init_args": {"num_stacks": 2, "num_blocks": 1, "num_features": 16, "num_joints": 16, "depth": 2}}).parameters())
    assert report["forward_gflops_per_image"] > 0
    assert len(report["ratio_per_repeat"]) == 2 and report["lightning_to_bare_ratio"] > 0
    assert report["train_images_per_s"]["bare"] > 0 and set(report["latency_ms"]) == {"batch1", "batch8"}
    assert "Lightning / bare step" in result.stdout
