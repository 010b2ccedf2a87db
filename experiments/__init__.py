"""convlab's front door: ``python -m experiments <command>``."""
import os

# CPU runs here are often several processes on few cores (data-loader workers, DDP ranks, search
# and table slots). With OpenMP's default busy-waiting their threads spin against each other and a
# training step gets tens of times slower; passive waiting keeps contention graceful. It must be
# set before torch loads its OpenMP runtime; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CONFIGS_DIR = "experiments/configs"


def shipped_configs() -> dict[str, list[str]]:
    """The shipped configs by folder (a task, or ``data`` for the data configs), as paths from the
    repository root, where the commands run."""
    from pathlib import Path

    found: dict[str, list[str]] = {}
    for path in sorted((Path(__file__).parent / "configs").glob("*/*.yaml")):
        found.setdefault(path.parent.name, []).append(f"{CONFIGS_DIR}/{path.parent.name}/{path.name}")
    return found


def shipped_configs_text() -> str:
    """``shipped_configs`` as the closing block of a command's ``--help``."""
    lines = [f"shipped configs ({CONFIGS_DIR}):"]
    for folder, paths in shipped_configs().items():
        lines.append(f"  {folder}:")
        lines.extend(f"    {path}" for path in paths)
    return "\n".join(lines)
