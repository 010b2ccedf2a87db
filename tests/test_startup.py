"""What every process pays before it does anything: each command's ``--help`` answers without
importing torch or Lightning (their import alone takes seconds) and lists what that command can run
(the shipped configs, tables or specs); a W&B run starts without importing W&B Launch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import shipped_configs

ROOT = Path(__file__).resolve().parents[1]

# The probe runs the command's main() in a fresh interpreter and then says which heavy packages it
# imported; SystemExit is argparse's way of finishing a --help.
PROBE = """
import sys
from experiments.__main__ import main
sys.argv[0] = "experiments"
try:
    code = main()
except SystemExit as stop:
    code = stop.code
heavy = sorted(name for name in ("torch", "lightning", "torchvision", "wandb") if name in sys.modules)
print("HEAVY:" + ",".join(heavy))
sys.exit(code or 0)
"""


def _help(*argv: str) -> subprocess.CompletedProcess:
    # PYTHONPATH as `python -m` would set it: jsonargparse imports the config's classes by name.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["fit", "validate", "test", "predict", "infer", "bench", "search", "reproduce", "report", "dashboard", "export"])
def test_help_imports_neither_torch_nor_lightning(command):
    result = _help(command, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout
    assert result.stdout.strip().endswith("HEAVY:"), result.stdout.splitlines()[-1]


def test_the_front_door_help_lists_every_command():
    result = _help("--help")
    assert result.returncode == 0
    for command in ("fit", "validate", "test", "predict", "infer", "bench", "search", "reproduce", "report", "dashboard", "export"):
        assert f"\n  {command} " in result.stdout, command


@pytest.mark.parametrize("command", ["fit", "predict", "bench"])
def test_help_lists_the_shipped_configs(command):
    out = _help(command, "--help").stdout
    configs = [path for paths in shipped_configs().values() for path in paths]
    assert len(configs) > 30
    assert all(path in out for path in configs)
    assert (ROOT / configs[0]).is_file()


def test_help_with_a_config_is_lightningclis_own():
    # With a config the help describes that config's classes: LightningCLI's, complete.
    result = _help("fit", "--config", "experiments/configs/pose/hourglass_synthetic_quick.yaml", "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--trainer.max_epochs" in result.stdout
    assert "--model CONFIG" in result.stdout


WANDB_PROBE = """
import sys, tempfile
import wandb
from experiments.recipe.wandb_logging import wandb_settings
run = wandb.init(project="probe", dir=tempfile.mkdtemp(), mode="offline", settings=wandb_settings())
run.log({"x": 1.0})
run.finish()
print("LAUNCH:" + str("wandb.sdk.launch" in sys.modules))
"""


def test_a_wandb_run_starts_without_importing_wandb_launch():
    # wandb.init imports wandb.sdk.launch (seconds) only to apply inputs a Launch job staged; the
    # suite's runs stage none (experiments.recipe.wandb_logging).
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")} | {"PYTHONPATH": str(ROOT), "WANDB_SILENT": "true"}
    result = subprocess.run([sys.executable, "-c", WANDB_PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("LAUNCH:False"), result.stdout
