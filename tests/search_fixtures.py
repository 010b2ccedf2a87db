"""Helpers shared by the search, resume, reproduce and dashboard tests: a tiny pose base config,
specs, running the search driver, and checking that no process of a study is left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]


def tiny_base(tmp: Path, *, max_epochs: int = 3, wandb: str = "disabled", devices: int = 1, strategy: str = "auto",
              callbacks: list[dict[str, Any]] | None = None, precision: str = "32-true") -> Path:
    """A pose config whose trial takes seconds: 16 training crops of 64x64, a 2-stack 8-feature
    hourglass, no flip test, no images."""
    config = {
        "seed_everything": 0,
        "trainer": {
            "accelerator": "cpu", "devices": devices, "strategy": strategy, "max_epochs": max_epochs,
            "precision": precision, "log_every_n_steps": 1, "enable_progress_bar": False,
            "enable_model_summary": False, "num_sanity_val_steps": 0,
        },
        "model": {
            "class_path": "lightning_modules.pose.PoseEstimationModule",
            "init_args": {
                "network": {"class_path": "lightning_modules.networks.hourglass.StackedHourglass",
                            "init_args": {"num_stacks": 2, "num_blocks": 1, "num_features": 8, "num_joints": 16, "depth": 2}},
                "optimizer": {"class_path": "torch.optim.RMSprop", "init_args": {"lr": 0.001}},
                "flip_test": False,
                "log_images": 0,
            },
        },
        "data": {
            "class_path": "datamodules.pose.PoseDataModule",
            "init_args": {
                "source": {"class_path": "datamodules.synthetic.pose.SyntheticPose",
                           "init_args": {"num_train": 16, "num_val": 8, "num_test": 8, "image_size": 64, "seed": 0}},
                "input_size": 64, "output_size": 16, "batch_size": 8, "num_workers": 0,
            },
        },
        "run": {"root": str(tmp / "runs"), "wandb": wandb},
    }
    if callbacks:
        config["run"]["callbacks"] = callbacks
    path = tmp / "base.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def write_spec(tmp: Path, base: Path, name: str = "spec", **fields: Any) -> Path:
    spec = {
        "study": fields.pop("study", "study"),
        "base": str(base),
        "space": fields.pop("space", {
            "model.init_args.optimizer.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
            "model.init_args.network.init_args.num_features": {"type": "categorical", "choices": [4, 8]},
        }),
        "objectives": fields.pop("objectives", [{"metric": "val/pckh", "direction": "maximize"}]),
        "sampler": fields.pop("sampler", {"name": "random", "seed": 0}),
        "pruner": fields.pop("pruner", {"name": "none"}),
        "budget": fields.pop("budget", {"n_trials": 2, "trial_timeout": 180}),
    }
    spec.update(fields)
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def search_command(spec: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "experiments", "search", "--config", str(spec), *extra]


def run_search(spec: Path, *extra: str, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_PORT", "MASTER_ADDR")}
    return subprocess.run(search_command(spec, *extra), cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def start_search(spec: Path, *extra: str, log: Path) -> subprocess.Popen:
    """The driver in its own session, so that a test can SIGKILL it alone. SIGINT is reset to its
    default first: a test session started in the background (``make test &``) inherits SIGINT
    ignored, and so would the driver, which a test's Ctrl-C must reach as it would a user's."""
    handle = open(log, "ab")
    return subprocess.Popen(search_command(spec, *extra), cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def processes_mentioning(text: str) -> list[tuple[int, str]]:
    """Live processes whose command line mentions ``text`` (the test's temporary directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X"):
            found.append((int(entry.name), cmdline))
    return found


def wait_no_processes(text: str, timeout: float = 20.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = processes_mentioning(text)
        if not left:
            return []
        time.sleep(0.5)
    return processes_mentioning(text)


def kill_all(text: str) -> None:
    """Clean-up after a failed test: only the processes this test started (they mention its
    temporary directory)."""
    for pid, _ in processes_mentioning(text):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def load_study(storage: str, name: str = "study") -> Any:
    import optuna

    from search.storage import open_storage

    return optuna.load_study(study_name=name, storage=open_storage(storage))


def wait_for(predicate: Any, timeout: float, interval: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except Exception:
            pass
        time.sleep(interval)
    return False


def postgres_database(prefix: str) -> tuple[str, Any]:
    """A fresh PostgreSQL database on 127.0.0.1:5432; returns its URL and a function dropping it."""
    import uuid

    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {name}")

    def drop() -> None:
        with admin.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()

    return f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}", drop
