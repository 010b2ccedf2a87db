"""``python -m experiments reproduce <table>`` and ``python -m experiments report <table>``.

``reproduce`` runs every row x seed of a table spec (``experiments/tables/<table>.yaml``, see
``experiments.table_spec``) as an ordinary ``fit`` in its own process group, then reports the
table: paper | ours (mean +- std over seeds) | delta | within tolerance, the trend checks, plots,
and a W&B summary run in the table's group. ``report`` rebuilds the report from finished runs.

Where things go (``--root runs``)::

    runs/tables/<table>/report.md                  the report built last (a copy, names its profile)
    runs/tables/<table>/<profile>/report.md        the profile's report, summary.json, runs.csv, plots/
    runs/tables/<table>/<profile>/overrides/       one override file per run (base config + this file)
    runs/tables/<table>/<profile>/<row>/seed<k>/   the runs: config.yaml, checkpoints/, metrics.csv,
                                                   wandb/, train.log, table_run.json, result.json

A run is finished when its ``fit`` exited 0 with its validation metrics in ``metrics.csv``; the
runner then writes ``result.json`` (atomically). Finished runs are reused; an interrupted one
restarts from its ``checkpoints/last.ckpt`` (``--ckpt_path last``) and appends to its metrics.
Rows whose composed configs are identical (the 8-stack network of two ablations) share one run.
A run directory whose config no longer matches the spec is never overwritten: the runner stops
and says so (``--rerun-stale`` moves such runs aside and trains them again).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from experiments.table_spec import (
    Profile,
    Row,
    TableSpec,
    TableSpecError,
    deep_merge,
    get_dotted,
    load_table,
    override_tree,
    resolve_config_path,
)

__all__ = [
    "PlannedRun", "plan_runs", "Reproducer", "collect", "build_report", "missing_data", "main_reproduce", "main_report",
    "read_validation", "RESULT_FILE", "STATE_FILE",
]

RESULT_FILE = "result.json"
STATE_FILE = "table_run.json"
PID_FILE = "runner.pid.json"
LOG_FILE = "train.log"


def say(message: str, stream: Any = None) -> None:
    print(f"convlab reproduce: {message}", file=stream or sys.stdout, flush=True)


class UserError(Exception):
    """Something the user can fix (missing data, a stale run, a foreign directory): one line, exit 2."""


# ===================================================================================== plan
@dataclass
class PlannedRun:
    """One training run of a table: a unique config (shared by ``rows``) and a seed."""

    table: str
    profile: str
    key: str  # the first row that composes to this config; names the run directory
    rows: list[str]
    seed: int
    bases: list[str]
    dotted: dict[str, Any]  # profile + row overrides, dotted keys, data root included
    data_key: str | None
    config_hash: str  # of bases + override without the data root and the seed
    name: str  # run.name (relative to root)
    directory: Path
    override_path: Path
    wandb_id: str
    root: str
    wandb_mode: str | None = None
    status: str = "new"  # new | partial | finished | stale | foreign

    def override(self) -> dict[str, Any]:
        """The override file's content: the composed overrides, the seed and the run section."""
        tree = {"seed_everything": self.seed, **override_tree(self.dotted)}
        run = {
            "name": self.name,
            "root": self.root,
            "group": self.table,
            "job_type": self.key,
            "wandb_id": self.wandb_id,
            "tags": ["table", self.table, self.profile, *self.rows, f"seed{self.seed}"],
            "config": {"table": self.table, "profile": self.profile, "rows": self.rows, "seed": self.seed, "config_hash": self.config_hash},
        }
        if self.wandb_mode:
            run["wandb"] = self.wandb_mode
        tree["run"] = run
        return tree

    def command_args(self) -> list[str]:
        args = ["fit"]
        for base in self.bases:
            args += ["--config", base]
        return args + ["--config", str(self.override_path), "--ckpt_path", "last"]

    def header(self) -> str:
        shared = f" (also rows {', '.join(self.rows[1:])})" if len(self.rows) > 1 else ""
        return (
            f"# table {self.table}, profile {self.profile}, row {self.key}{shared}, seed {self.seed}\n"
            f"# written by `python -m experiments reproduce`; config = {' + '.join(self.bases)} + this file\n"
        )


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def _hash(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def row_config(spec: TableSpec, profile: Profile, row: Row, data_root: str | None) -> tuple[list[str], dict[str, Any], str | None]:
    """``(bases, dotted overrides, data key)`` of a row in a profile."""
    row_profile = row.profiles.get(profile.name)
    bases = (row_profile.base if row_profile and row_profile.base else None) or profile.base
    dotted = {**profile.override, **row.override, **(row_profile.override if row_profile else {})}
    data_key = None
    if profile.data is not None:
        data_key = profile.data.key
        if data_root is not None:
            sub = (row_profile.data_dir if row_profile and row_profile.data_dir is not None else None)
            sub = profile.data.dir if sub is None else sub
            dotted[data_key] = str(Path(data_root) / sub) if sub else str(Path(data_root))
    return list(bases), dotted, data_key


def config_identity(bases: list[str], dotted: dict[str, Any], data_key: str | None) -> dict[str, Any]:
    """What makes two rows the same run: the base configs (their content, so that an edited base
    makes its finished runs stale) and the overrides that change them. An override equal to the
    base's own value changes nothing and is left out, and so is the data root (moving a dataset
    does not make a run another run)."""
    merged: dict[str, Any] = {}
    for base in bases:
        try:
            merged = deep_merge(merged, yaml.safe_load(resolve_config_path(base).read_text()) or {})
        except (OSError, yaml.YAMLError):
            pass
    changes = {}
    for key, value in dotted.items():
        if key == data_key:
            continue
        current = get_dotted(merged, key, default=_MISSING)
        if current is not _MISSING and _same(current, value):
            continue
        changes[key] = value
    return {"bases": [str(resolve_config_path(b).resolve()) for b in bases], "base_config": merged, "override": override_tree(changes)}


_MISSING = object()


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and _same(a[k], v) for k, v in b.items())
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b and (type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))))


def table_dir(root: str | Path, table: str) -> Path:
    return Path(root) / "tables" / table


def plan_runs(
    spec: TableSpec,
    profile_name: str,
    seeds: list[int],
    root: str = "runs",
    data_root: str | None = None,
    rows: list[str] | None = None,
    wandb_mode: str | None = None,
) -> list[PlannedRun]:
    """Every run of ``profile`` x ``seeds``, one per distinct config and seed (rows whose composed
    configs are identical share their runs), seed-major in row order."""
    profile = spec.profile(profile_name)
    selected = spec.rows_in(profile_name)
    if rows:
        unknown = [r for r in rows if r not in spec.rows]
        if unknown:
            raise TableSpecError(f"--rows: {unknown[0]!r} is not a row of {spec.table} (rows: {', '.join(spec.rows)})")
        skipped = [r for r in rows if not spec.rows[r].in_profile(profile_name)]
        if skipped:
            raise TableSpecError(f"--rows: row {skipped[0]} skips profile {profile_name}")
        selected = [r for r in selected if r.name in rows]
    configs: dict[str, dict[str, Any]] = {}
    for row in selected:
        bases, dotted, data_key = row_config(spec, profile, row, data_root)
        digest = _hash(config_identity(bases, dotted, data_key))
        if digest in configs:
            configs[digest]["rows"].append(row.name)
        else:
            configs[digest] = {"key": row.name, "rows": [row.name], "bases": bases, "dotted": dotted, "data_key": data_key}
    base_dir = table_dir(root, spec.table) / profile_name
    planned = []
    for seed in seeds:
        for digest, c in configs.items():
            name = f"tables/{spec.table}/{profile_name}/{c['key']}/seed{seed}"
            run_hash = _hash([spec.table, profile_name, c["key"], seed, digest])[:8]
            wandb_id = f"{_slug(spec.table, 24)}-{_slug(profile_name, 8)}-{_slug(c['key'], 16)}-s{seed}-{run_hash}"
            planned.append(PlannedRun(
                table=spec.table, profile=profile_name, key=c["key"], rows=list(c["rows"]), seed=seed, bases=c["bases"],
                dotted=c["dotted"], data_key=c["data_key"], config_hash=digest, name=name, directory=Path(root) / name,
                override_path=base_dir / "overrides" / f"{c['key']}-seed{seed}.yaml", wandb_id=wandb_id, root=str(root),
                wandb_mode=wandb_mode,
            ))
    for run in planned:
        run.status = run_status(run)
    return planned


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _write_json(path: Path, payload: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    tmp.write_text(json.dumps(payload, indent=2, default=str))
    os.replace(tmp, path)


def run_status(run: PlannedRun) -> str:
    directory = run.directory
    if not directory.exists() or not any(directory.iterdir()):
        return "new"
    state = _read_json(directory / STATE_FILE)
    if state is None:
        return "foreign"
    if state.get("config_hash") != run.config_hash:
        return "stale"
    result = _read_json(directory / RESULT_FILE)
    if result is not None and result.get("config_hash") == run.config_hash:
        return "finished"
    return "partial"


# =========================================================================== config checks
class Composer:
    """Parses base config(s) + an override with convlab's own parser, without training."""

    def __init__(self) -> None:
        from search.compose import ConfigComposer

        self.inner = ConfigComposer()

    def compose(self, run: PlannedRun) -> dict[str, Any]:
        from search.compose import error_reason

        tree = override_tree(run.dotted)
        tree["seed_everything"] = run.seed
        try:
            return self.inner.to_dict(self.inner.parse(run.bases, tree))
        except Exception as first:  # name the culprit: the first key that fails alone
            for key, value in run.dotted.items():
                try:
                    self.inner.parse(run.bases, override_tree({key: value}))
                except Exception as error:
                    raise TableSpecError(f"{_where(run, key)}: {error_reason(error)}") from None
            try:
                self.inner.parse(run.bases)
            except Exception as error:
                raise TableSpecError(f"profiles.{run.profile}.base ({', '.join(run.bases)}): {error_reason(error)}") from None
            raise TableSpecError(f"rows.{run.key} (profile {run.profile}): {error_reason(first)}") from None


def _where(run: PlannedRun, key: str) -> str:
    if key == run.data_key:
        return f"profiles.{run.profile}.data.key {key}"
    return f"rows.{run.key} (profile {run.profile}) override {key}"


# ============================================================================== data check
_FOLDER_ARGS = ("root", "extended_root")
_FOLDER_SUFFIXES = ("_dir", "_images", "_folder")
_FILE_SUFFIXES = ("_file", "_annotations")


@dataclass
class MissingData:
    source: str  # reader class
    root: str
    items: list[tuple[str, str, str]]  # (kind, path, config key)
    rows: list[str] = field(default_factory=list)
    error: str = ""


def missing_data(config: dict[str, Any], instantiate: bool = False) -> MissingData | None:
    """What a config's data source needs on disk and lacks. The reader's path arguments are read
    from the composed config (``root`` and ``*_dir``/``*_images`` folders, ``*_file``/
    ``*_annotations`` files, relative to ``root``); with ``instantiate`` the reader itself is built
    when they all exist, so that a check the names miss still reports (``DataNotFoundError``)."""
    source = get_dotted(config, "data.init_args.source")
    if not isinstance(source, dict) or "class_path" not in source:
        return None
    class_path = str(source["class_path"])
    args = source.get("init_args") or {}
    if "synthetic" in class_path.split("."):
        return None
    root_value = args.get("root")
    root = Path(str(root_value)) if root_value else Path(".")
    items: list[tuple[str, str, str]] = []
    prefix = "data.init_args.source.init_args"
    for name, value in args.items():
        if not isinstance(value, str) or not value:
            continue
        if name in _FOLDER_ARGS:
            path, kind = Path(value), "folder"
        elif name.endswith(_FOLDER_SUFFIXES):
            path, kind = (Path(value) if Path(value).is_absolute() else root / value), "folder"
        elif name.endswith(_FILE_SUFFIXES):
            path, kind = (Path(value) if Path(value).is_absolute() else root / value), "file"
        else:
            continue
        exists = path.is_dir() if kind == "folder" else path.is_file()
        if not exists:
            items.append((kind, str(path), f"{prefix}.{name}"))
    result = MissingData(source=class_path.rsplit(".", 1)[-1], root=str(root), items=items)
    if items or not instantiate:
        return result if items else None
    try:
        import importlib

        module, _, cls = class_path.rpartition(".")
        getattr(importlib.import_module(module), cls)(**args)
    except Exception as error:
        from core.errors import ConfigError, DataNotFoundError

        if isinstance(error, DataNotFoundError):
            result.items.append(("path", str(error.path), str(error)))
            return result
        if isinstance(error, ConfigError):
            result.error = str(error)
            return result
        raise
    return None


def describe_missing(missing: list[MissingData], profile: Profile, data_root: str | None) -> str:
    lines = [f"the {profile.name} profile needs data that is not on disk:"]
    for m in missing:
        root = Path(m.root)
        lines.append(f"  {m.source} (rows {', '.join(m.rows)}) under {root}:")
        for kind, path, key in m.items:
            lines.append(f"    missing {kind:<6} {path}   ({key})")
        if m.error:
            lines.append(f"    {m.error}")
        inside = [(kind, Path(path)) for kind, path, _ in m.items if Path(path) != root and Path(path).is_relative_to(root)]
        if inside:
            names = [f"{p.relative_to(root)}/" for kind, p in inside if kind == "folder"]
            names += [str(p.relative_to(root)) for kind, p in inside if kind != "folder"]
            lines.append(f"    => put {', '.join(names)} under {root}")
    if profile.data and profile.data.help:
        lines.append(f"  {profile.data.help}")
    if data_root is None and profile.data is not None:
        lines.append(f"  (no --data-root: the configs' own paths are used; --data-root DIR sets {profile.data.key} to DIR/<dataset>)")
    return "\n".join(lines)


# ============================================================================ metrics I/O
def read_validation(metrics_csv: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` of the validation rows of a run's ``metrics.csv`` (a resumed run
    may have logged an epoch twice: the later row wins)."""
    epochs: dict[int, dict[str, float]] = {}
    if not metrics_csv.is_file():
        return epochs
    with open(metrics_csv, newline="") as handle:
        for record in csv.DictReader(handle):
            values = {}
            for key, value in record.items():
                if key and key.startswith("val/") and value not in (None, ""):
                    try:
                        values[key] = float(value)
                    except ValueError:
                        continue
            if not values or not record.get("epoch"):
                continue
            try:
                epoch = int(float(record["epoch"]))
            except ValueError:
                continue
            epochs.setdefault(epoch, {}).update(values)
    return epochs


def pick_epoch(epochs: dict[int, dict[str, float]], mode: str, select: str | None, select_mode: str) -> int | None:
    """The epoch whose validation a run reports: the last one, or the best by ``select``."""
    if not epochs:
        return None
    if mode == "last" or not select:
        return max(epochs)
    scored = [(values[select], epoch) for epoch, values in epochs.items() if select in values and math.isfinite(values[select])]
    if not scored:
        return max(epochs)
    if select_mode == "max":
        return max(scored, key=lambda t: (t[0], -t[1]))[1]
    return min(scored, key=lambda t: (t[0], t[1]))[1]


# ================================================================================= runner
class Reproducer:
    """Runs a plan: finished runs are reused, the others launched (``slots`` at a time)."""

    def __init__(
        self, spec: TableSpec, profile: Profile, runs: list[PlannedRun], slots: int = 1, timeout: float | None = None,
        gpus: list[str] | None = None,
    ) -> None:
        self.spec = spec
        self.profile = profile
        self.runs = runs
        self.slots = max(1, slots)
        self.timeout = timeout
        # Each slot gets its own GPUs (CUDA_VISIBLE_DEVICES), as the search driver's slots do.
        self.slot_gpus = [gpus[i::self.slots] for i in range(self.slots)] if gpus else None
        self.free_slots: "queue.Queue[int]" = queue.Queue()
        for i in range(self.slots):
            self.free_slots.put(i)
        self.processes: dict[int, subprocess.Popen] = {}
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.failures: list[tuple[PlannedRun, str]] = []

    def execute(self) -> bool:
        todo = [r for r in self.runs if r.status != "finished"]
        for run in self.runs:
            if run.status == "finished":
                say(f"reused   {run.name} (finished)")
        if not todo:
            return True
        threads = None
        if "OMP_NUM_THREADS" not in os.environ:
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = max(1, cores // min(self.slots, len(todo)))
        say(f"{len(todo)} run(s) to train, {min(self.slots, len(todo))} at a time" + (f", {threads} CPU thread(s) each" if threads else ""))
        previous = signal.getsignal(signal.SIGTERM)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _raise_interrupt)
        pool = ThreadPoolExecutor(max_workers=self.slots, thread_name_prefix="table-run")
        try:
            pending = {pool.submit(self._train, run, threads): run for run in todo}
            while pending:
                done, _ = wait(list(pending), timeout=0.5, return_when=FIRST_COMPLETED)
                for future in done:
                    pending.pop(future)
                    future.result()
        except BaseException:
            self.stopping.set()
            self._kill_all()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        finally:
            if threading.current_thread() is threading.main_thread():
                signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True)
        return not self.failures

    def _kill_all(self) -> None:
        with self.lock:
            processes = list(self.processes.values())
        for process in processes:
            _kill_group(process.pid)

    def _train(self, run: PlannedRun, threads: int | None) -> None:
        from experiments.launch import clean_environment, experiments_command, launch

        if self.stopping.is_set():
            return
        directory = run.directory
        directory.mkdir(parents=True, exist_ok=True)
        _stop_orphan(directory, run.override_path)
        run.override_path.parent.mkdir(parents=True, exist_ok=True)
        run.override_path.write_text(run.header() + yaml.safe_dump(run.override(), sort_keys=False))
        state = _read_json(directory / STATE_FILE) or {}
        attempts = list(state.get("attempts", []))
        if attempts and attempts[-1].get("returncode") is None:  # its runner died: close the record
            last = attempts[-1]
            ended = max((p.stat().st_mtime for p in directory.rglob("*") if p.is_file()), default=time.time())
            last.update({"returncode": "interrupted", "seconds": round(max(0.0, ended - last.get("started_epoch", ended)), 1)})
        resumed = (directory / "checkpoints" / "last.ckpt").exists()
        command = experiments_command(*run.command_args())
        started = time.time()
        attempts.append({"started": _iso(started), "started_epoch": started, "resumed": resumed, "returncode": None, "seconds": None})
        state.update({
            "table": run.table, "profile": run.profile, "rows": run.rows, "seed": run.seed, "config_hash": run.config_hash,
            "override": str(run.override_path), "command": command, "attempts": attempts,
        })
        _write_json(directory / STATE_FILE, state)
        say(f"{'resume  ' if resumed else 'train   '} {run.name}" + (" from last.ckpt" if resumed else ""))
        extra = {"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"}
        if threads:
            extra["OMP_NUM_THREADS"] = str(threads)
        slot = self.free_slots.get()
        if self.slot_gpus is not None:
            extra["CUDA_VISIBLE_DEVICES"] = ",".join(self.slot_gpus[slot])

        def on_start(process: subprocess.Popen) -> None:
            with self.lock:
                self.processes[id(run)] = process
            _write_json(directory / PID_FILE, {"pid": process.pid, "runner": os.getpid(), "name": run.name})

        try:
            result = launch(command, env=clean_environment(extra), log_path=directory / LOG_FILE, timeout=self.timeout, on_start=on_start)
        finally:
            with self.lock:
                self.processes.pop(id(run), None)
            self.free_slots.put(slot)
        (directory / PID_FILE).unlink(missing_ok=True)
        attempts[-1].update({"seconds": round(result.seconds, 1), "returncode": result.returncode, "timed_out": result.timed_out})
        state["attempts"] = attempts
        _write_json(directory / STATE_FILE, state)
        if self.stopping.is_set():
            return
        epochs = read_validation(directory / "metrics.csv")
        if result.returncode == 0 and epochs:
            seconds = sum(a["seconds"] or 0 for a in attempts)
            _write_json(directory / RESULT_FILE, {
                "table": run.table, "profile": run.profile, "rows": run.rows, "seed": run.seed, "config_hash": run.config_hash,
                "returncode": 0, "epochs": max(epochs) + 1, "seconds": round(seconds, 1), "attempts": len(attempts),
                "finished_at": _iso(time.time()),
            })
            run.status = "finished"
            say(f"finished {run.name} in {result.seconds:.0f}s ({max(epochs) + 1} epochs validated)")
            return
        reason = "timed out" if result.timed_out else f"exit status {result.returncode}" if result.returncode else "no validation in metrics.csv"
        tail = _tail(directory / LOG_FILE)
        with self.lock:
            self.failures.append((run, reason))
        say(f"FAILED   {run.name}: {reason}; log {directory / LOG_FILE}\n{tail}", sys.stderr)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in [t for t in text if t.strip()][-lines:])


def _kill_group(pid: int, grace: float = 5.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_orphan(directory: Path, override_path: Path) -> None:
    """A runner killed without cleanup (SIGKILL) leaves its training process group running; stop
    it before the run resumes, so that two processes never write one run."""
    info = _read_json(directory / PID_FILE)
    if not info:
        return
    pid = int(info.get("pid") or 0)
    proc = Path(f"/proc/{pid}/cmdline")
    if pid <= 0:
        alive = False
    elif Path("/proc/self").exists():  # Linux: make sure the pid is still that run's process
        try:
            cmdline = proc.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            cmdline = ""
        alive = "experiments" in cmdline and override_path.name in cmdline
    else:
        alive = _alive(pid)
    if alive:
        say(f"stopping process group {pid} of {directory}, left running by an interrupted reproduce")
        _kill_group(pid)
    (directory / PID_FILE).unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# ================================================================================ collect
@dataclass
class RunValues:
    run: PlannedRun
    epoch: int | None
    epochs: int
    curves: dict[int, dict[str, float]]
    seconds: float | None
    params: int | None


@dataclass
class Cell:
    row: str
    column: str
    metric: str | None
    values: list[float]
    seeds: list[int]
    paper: Any = None  # PaperCell

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        if len(self.values) < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (len(self.values) - 1))

    @property
    def delta(self) -> float | None:
        if self.paper is None or self.mean is None:
            return None
        return self.mean - self.paper.value


@dataclass
class Collected:
    spec: TableSpec
    profile: Profile
    runs: list[PlannedRun]
    finished: list[RunValues]
    cells: dict[tuple[str, str], Cell]
    params: dict[str, int | None]
    stack_curves: dict[str, dict[int, list[float]]]  # per plot row: k -> values (scaled later)
    missing_metrics: list[str]
    select: str | None


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def count_parameters(config: dict[str, Any] | None) -> int | None:
    """Parameters of the network of a resolved config (``model.init_args.network``), built on CPU."""
    network = get_dotted(config or {}, "model.init_args.network")
    if not isinstance(network, dict) or "class_path" not in network:
        return None
    import importlib

    try:
        module, _, cls = str(network["class_path"]).rpartition(".")
        args = network.get("init_args") or {}
        if any(isinstance(v, dict) and "class_path" in v for v in args.values()):
            return None
        model = getattr(importlib.import_module(module), cls)(**args)
        return int(sum(p.numel() for p in model.parameters()))
    except Exception:
        return None


def collect(spec: TableSpec, profile: Profile, runs: list[PlannedRun]) -> Collected:
    """Read every finished run's metrics and build the cells (mean and std over seeds)."""
    rows_by_name = spec.rows
    finished: list[RunValues] = []
    params: dict[str, int | None] = {}
    configs_seen: dict[str, int | None] = {}
    monitors: set[str] = set()
    for run in runs:
        if run.status != "finished":
            continue
        directory = run.directory
        epochs = read_validation(directory / "metrics.csv")
        config = None
        try:
            config = yaml.safe_load((directory / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            config = None
        select = spec.select or (get_dotted(config, "run.monitor") if config is not None else None)
        if select:
            monitors.add(select)
        if run.config_hash not in configs_seen:
            configs_seen[run.config_hash] = count_parameters(config)
        for row in run.rows:
            params[row] = configs_seen[run.config_hash]
        epoch = pick_epoch(epochs, spec.epoch, select, spec.select_mode)
        result = _read_json(directory / RESULT_FILE) or {}
        finished.append(RunValues(run=run, epoch=epoch, epochs=len(epochs), curves=epochs,
                                  seconds=result.get("seconds"), params=configs_seen[run.config_hash]))

    cells: dict[tuple[str, str], Cell] = {}
    missing: list[str] = []
    for row in spec.rows_in(profile.name):
        for column in spec.columns.values():
            metric = column.metric_for(row)
            cell = Cell(row=row.name, column=column.name, metric=metric, values=[], seeds=[], paper=row.paper.get(column.name))
            cells[(row.name, column.name)] = cell
            if metric is None:
                continue
            for rv in finished:
                if row.name not in rv.run.rows or rv.epoch is None:
                    continue
                value = rv.curves.get(rv.epoch, {}).get(metric)
                if value is None:
                    logged = ", ".join(sorted(rv.curves.get(rv.epoch, {}))[:12])
                    note = f"columns.{column.name}: metric {metric} not in {rv.run.directory / 'metrics.csv'} (logged: {logged} ...)"
                    if note not in missing:
                        missing.append(note)
                    continue
                cell.values.append(value * column.scale)
                cell.seeds.append(rv.run.seed)
    stack_curves: dict[str, dict[int, list[float]]] = {}
    for plot in spec.plots:
        if plot.kind != "stack_outputs":
            continue
        for row_name in plot.rows or [r.name for r in spec.rows_in(profile.name)]:
            if row_name not in rows_by_name or not rows_by_name[row_name].in_profile(profile.name):
                continue
            row = rows_by_name[row_name]
            n = int(row.vars[plot.stacks])
            per_k: dict[int, list[float]] = {}
            for rv in finished:
                if row_name not in rv.run.rows or rv.epoch is None:
                    continue
                for k in range(1, n + 1):
                    value = rv.curves.get(rv.epoch, {}).get(plot.metric.format(k=k, **row.vars))
                    if value is not None:
                        per_k.setdefault(k, []).append(value * plot.scale)
            stack_curves[f"{plot.name}:{row_name}"] = per_k
    return Collected(spec=spec, profile=profile, runs=runs, finished=finished, cells=cells, params=params,
                     stack_curves=stack_curves, missing_metrics=missing,
                     select=spec.select or (", ".join(sorted(monitors)) if monitors else None))


# ================================================================================= checks
@dataclass
class CheckResult:
    name: str
    status: str  # holds | fails | not evaluated
    details: list[str]
    paper: str
    seeds_holding: tuple[int, int] = (0, 0)


def evaluate_checks(collected: Collected) -> list[CheckResult]:
    results = []
    profile = collected.profile.name
    for check in collected.spec.checks:
        if not check.applies(profile):
            continue
        details, holds_all, missing = [], True, False
        seed_ok, seed_total = 0, 0
        for comparison in check.comparisons:
            left = collected.cells.get((comparison.left.row, comparison.left.column))
            right = collected.cells.get((comparison.right.row, comparison.right.column))
            if left is None or right is None or left.mean is None or right.mean is None:
                missing = True
                details.append(f"{comparison}: not evaluated (no finished runs for a cell)")
                continue
            holds = comparison.holds(left.mean, right.mean)
            holds_all &= holds
            digits = collected.spec.columns[comparison.left.column].digits
            paired = [(a, b) for a, s in zip(left.values, left.seeds) for b, t in zip(right.values, right.seeds) if s == t]
            per_seed = sum(comparison.holds(a, b) for a, b in paired)
            seed_ok += per_seed
            seed_total += len(paired)
            diffs = [a - b for a, b in paired]
            noise = ""
            if len(diffs) >= 2:
                mean_d = sum(diffs) / len(diffs)
                sd = math.sqrt(sum((d - mean_d) ** 2 for d in diffs) / (len(diffs) - 1))
                noise = f", seed-to-seed std of the difference {sd:.{digits}f}"
            details.append(
                f"{'holds' if holds else 'does not hold'}: {comparison.left} {left.mean:.{digits}f} {comparison.op} "
                f"{comparison.right} {right.mean:.{digits}f} (difference {left.mean - right.mean:+.{digits}f}; "
                f"holds in {per_seed}/{len(paired)} seed(s){noise})"
            )
        status = "not evaluated" if missing and not any(d.startswith(("holds", "does not hold")) for d in details) else (
            "holds" if holds_all and not missing else "fails" if not holds_all else "partly evaluated")
        results.append(CheckResult(name=check.name, status=status, details=details, paper=check.paper, seeds_holding=(seed_ok, seed_total)))
    return results


# ================================================================================= report
def _fmt(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _ours(cell: Cell, digits: int) -> str:
    if cell.mean is None:
        return "—"
    if cell.std is None:
        return f"{cell.mean:.{digits}f} (n={cell.n})"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f} (n={cell.n})"


def _verdict(cell: Cell, profile: Profile) -> str:
    if cell.paper is None:
        return ""
    if cell.mean is None:
        return "not run"
    if not profile.compare:
        return f"n/a ({profile.name} profile)"
    if cell.paper.tolerance is None:
        return "not judged" + (f" ({cell.paper.note})" if cell.paper.note else "")
    ok = abs(cell.delta) <= cell.paper.tolerance + 1e-9
    return f"{'yes' if ok else 'no'} (±{cell.paper.tolerance:g})"


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


@dataclass
class Report:
    table_dir: Path
    profile_dir: Path
    markdown: str
    summary: dict[str, Any]
    plots: list[Path]
    checks: list[CheckResult]


def build_report(collected: Collected, root: str | Path, command: str) -> Report:
    """Write ``report.md``, ``summary.json``, ``runs.csv`` and the plots; return them."""
    spec, profile = collected.spec, collected.profile
    tdir = table_dir(root, spec.table)
    pdir = tdir / profile.name
    plot_dir = pdir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    checks = evaluate_checks(collected)
    plots = make_plots(collected, plot_dir)
    rows = spec.rows_in(profile.name)
    planned_rows = {r for run in collected.runs for r in run.rows}
    rows = [r for r in rows if r.name in planned_rows]
    seeds = sorted({run.seed for run in collected.runs})
    finished = collected.finished
    total_seconds = sum(rv.seconds or 0 for rv in finished)

    def body(plot_prefix: str) -> str:
        out: list[str] = []
        out.append(f"# {spec.title}")
        out.append("")
        out.append(f"Table `{spec.table}` ({spec.path}), profile **{profile.name}**. Rebuild: `{command}`.")
        out.append("")
        if spec.description:
            out += [spec.description, ""]
        if profile.description:
            out += [f"**Profile {profile.name}.** {profile.description}", ""]
        if profile.note:
            out += [profile.note, ""]
        unique = {(run.config_hash) for run in collected.runs}
        out.append(f"- Runs: {len(unique)} distinct configs x {len(seeds)} seed(s) ({', '.join(map(str, seeds))}) = {len(collected.runs)} runs; "
                   f"{len(finished)} finished, training time summed over runs {total_seconds / 60:.1f} min.")
        last = _read_json(pdir / "last_reproduce.json")
        if last:
            out.append(f"- Last `reproduce`: {last['training_wall_seconds'] / 60:.1f} min of wall time for {last['trained']} run(s) trained "
                       f"({last['slots']} at a time, {last.get('cpu_count')} CPU cores), {last['reused']} reused, {last['failed']} failed; "
                       f"finished {last['finished_at']}.")
        shared = sorted({tuple(run.rows) for run in collected.runs if len(run.rows) > 1})
        for group in shared:
            out.append(f"- Rows {', '.join(group)} compose to the same config and share one run per seed.")
        select = collected.select or "the run's monitor"
        if spec.epoch == "last":
            out.append("- Values: every column at the **last** validation epoch of each run (all columns of a run from the same epoch).")
        else:
            out.append(f"- Values: every column at the epoch with the **best** `{select}` ({spec.select_mode}) of each run (all columns of a run from that epoch).")
        out.append("- ours = mean ± sample std over seeds (n = finished seeds); Δ = ours − paper; within tolerance = |Δ| ≤ tolerance.")
        if not profile.compare:
            tests = "the trend checks below are what this profile tests" if checks else "this profile tests the pipeline and the metrics"
            out.append(f"- The {profile.name} profile does not train on the paper's data: the paper numbers are shown for reference and "
                       f"not judged against a tolerance; {tests}.")
        base_list = ", ".join(sorted({b for run in collected.runs for b in run.bases}))
        out.append(f"- Base config(s): {base_list}; each run adds its override file (`{pdir / 'overrides'}`).")
        out.append("")
        if checks:
            data = "synthetic data" if not profile.compare else "this profile's data"
            verdicts = "; ".join(f"{c.name}: **{'holds' if c.status == 'holds' else 'does not hold' if c.status == 'fails' else c.status}**" for c in checks)
            out.append(f"**Orderings on {data}** (means over {len(seeds)} seed(s); details under Trend checks): {verdicts}.")
            out.append("")
        for message in collected.missing_metrics:
            out.append(f"> missing metric: {message}")
        if collected.missing_metrics:
            out.append("")

        # -- wide table: ours per row x column
        columns = list(spec.columns.values())
        out.append("## Results")
        out.append("")
        out.append("| row | params | " + " | ".join(c.label for c in columns) + " |")
        out.append("|---|---:|" + "---:|" * len(columns))
        for row in rows:
            cells = [collected.cells[(row.name, c.name)] for c in columns]
            texts = ["n/a" if cell.metric is None else _ours(cell, c.digits) for cell, c in zip(cells, columns)]
            out.append(f"| {row.label} (`{row.name}`) | {_params(collected.params.get(row.name))} | " + " | ".join(texts) + " |")
        out.append("")
        for c in columns:
            note = f" — {c.note}" if c.note else ""
            scale = f" × {c.scale:g}" if c.scale != 1 else ""
            out.append(f"- {c.label}: `{c.metric}`{scale}{note}")
        out.append("")

        # -- long table: paper | ours | delta | tolerance, per section, the cells with a paper number
        out.append("## Paper vs ours")
        out.append("")
        sections: dict[str, list[Row]] = {}
        for row in rows:
            if row.paper:
                sections.setdefault(row.section, []).append(row)
        if not sections:
            out += ["No cell of these rows has a paper number.", ""]
        for section, members in sections.items():
            if section:
                out.append(f"### {section}")
                out.append("")
            out.append("| row | column | paper | ours (mean ± std, n seeds) | Δ | within tolerance | source |")
            out.append("|---|---|---:|---:|---:|---|---|")
            for row in members:
                for c in columns:
                    cell = collected.cells[(row.name, c.name)]
                    if cell.metric is None or cell.paper is None:
                        continue
                    paper = cell.paper
                    source = paper.source.name if paper and paper.source else ""
                    out.append(f"| {row.label} | {c.label} | {_fmt(paper.value if paper else None, c.digits)} | {_ours(cell, c.digits)} | "
                               f"{_fmt(cell.delta, c.digits, sign=True)} | {_verdict(cell, profile)} | {source} |")
            out.append("")
        used = {cell.paper.source.name: cell.paper.source for cell in collected.cells.values() if cell.paper and cell.paper.source}
        if used:
            out.append("Sources:")
            out.append("")
            for name, source in used.items():
                out.append(f"- `{name}`: {source.describe()}" + (f" — {source.note}" if source.note else ""))
            notes = [(row.label, c.label, cell.paper.note) for row in rows for c in columns
                     for cell in [collected.cells[(row.name, c.name)]] if cell.paper and cell.paper.note]
            for row_label, col_label, note in notes:
                out.append(f"- {row_label} / {col_label}: {note}")
            out.append("")
        row_notes = [row for row in rows if row.note]
        if row_notes:
            out += ["Notes:", ""]
        for row in row_notes:
            out.append(f"- `{row.name}`: {row.note}")
        if row_notes:
            out.append("")

        # -- checks
        if checks:
            out.append(f"## Trend checks ({profile.name} profile)")
            out.append("")
            for result in checks:
                mark = {"holds": "✅ holds", "fails": "❌ does not hold"}.get(result.status, f"⚠️ {result.status}")
                paper = f" Paper: {result.paper}." if result.paper else ""
                seeds_text = f" (per seed: {result.seeds_holding[0]}/{result.seeds_holding[1]} comparisons hold)" if result.seeds_holding[1] else ""
                out.append(f"- **{result.name}**: {mark} on our means{seeds_text}.{paper}")
                for detail in result.details:
                    out.append(f"  - {detail}")
            out.append("")
            held = sum(r.status == "holds" for r in checks)
            out.append(f"{held} of {len(checks)} checked orderings hold in this profile's means. A difference smaller than its "
                       "seed-to-seed spread is not resolved by this many seeds.")
            out.append("")

        # -- plots
        if plots:
            out.append("## Plots")
            out.append("")
            for png in plots:
                out.append(f"![{png.stem}]({plot_prefix}{png.name})")
                out.append("")

        # -- runs
        out.append("## Runs")
        out.append("")
        cols = [c for c in columns]
        out.append("| run | rows | seed | status | epoch used / validated | " + " | ".join(c.label for c in cols) + " | train time |")
        out.append("|---|---|---:|---|---|" + "---:|" * len(cols) + "---:|")
        by_run = {id(rv.run): rv for rv in finished}
        for run in collected.runs:
            rv = by_run.get(id(run))
            values = []
            for c in cols:
                metric = c.metric_for(spec.rows[run.key])
                value = None if rv is None or metric is None or rv.epoch is None else rv.curves.get(rv.epoch, {}).get(metric)
                values.append(_fmt(_scaled(value, c.scale), c.digits))
            epoch = "—" if rv is None or rv.epoch is None else f"{rv.epoch} / {rv.epochs}"
            seconds = "—" if rv is None or rv.seconds is None else f"{rv.seconds:.0f}s"
            out.append(f"| `{run.name}` | {', '.join(run.rows)} | {run.seed} | {run.status} | {epoch} | " + " | ".join(values) + f" | {seconds} |")
        out.append("")
        out.append(f"_Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}._")
        out.append("")
        return "\n".join(out)

    summary = {
        "table": spec.table, "profile": profile.name, "title": spec.title, "epoch": spec.epoch, "select": collected.select,
        "seeds": seeds, "compare": profile.compare,
        "cells": [
            {"row": cell.row, "column": cell.column, "metric": cell.metric, "values": cell.values, "seeds": cell.seeds,
             "mean": cell.mean, "std": cell.std, "n": cell.n,
             "paper": None if cell.paper is None else cell.paper.value,
             "tolerance": None if cell.paper is None else cell.paper.tolerance,
             "source": None if cell.paper is None or cell.paper.source is None else cell.paper.source.describe(),
             "delta": cell.delta, "within_tolerance": _within(cell, profile)}
            for cell in collected.cells.values() if cell.metric is not None and cell.row in {r.name for r in rows}
        ],
        "params": collected.params,
        "checks": [{"name": c.name, "status": c.status, "details": c.details, "paper": c.paper} for c in checks],
        "runs": [
            {"name": run.name, "rows": run.rows, "seed": run.seed, "status": run.status, "directory": str(run.directory),
             "config_hash": run.config_hash, "wandb_id": run.wandb_id}
            for run in collected.runs
        ],
        "plots": [str(p) for p in plots],
    }
    _write_text(pdir / "report.md", body("plots/"))
    markdown = body(f"{profile.name}/plots/")
    _write_text(tdir / "report.md", markdown)
    _write_json(pdir / "summary.json", summary)
    _write_runs_csv(pdir / "runs.csv", collected)
    return Report(table_dir=tdir, profile_dir=pdir, markdown=markdown, summary=summary, plots=plots, checks=checks)


def _within(cell: Cell, profile: Profile) -> bool | None:
    if cell.paper is None or cell.mean is None or not profile.compare or cell.paper.tolerance is None:
        return None
    return abs(cell.delta) <= cell.paper.tolerance + 1e-9


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_runs_csv(path: Path, collected: Collected) -> None:
    columns = list(collected.spec.columns.values())
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", "rows", "seed", "epoch", *[c.name for c in columns], "seconds"])
        for rv in collected.finished:
            row = collected.spec.rows[rv.run.key]
            values = []
            for c in columns:
                metric = c.metric_for(row)
                value = None if metric is None or rv.epoch is None else rv.curves.get(rv.epoch, {}).get(metric)
                values.append("" if value is None else value * c.scale)
            writer.writerow([rv.run.name, " ".join(rv.run.rows), rv.run.seed, rv.epoch, *values, rv.seconds])
    os.replace(tmp, path)


# ================================================================================== plots
def make_plots(collected: Collected, plot_dir: Path) -> list[Path]:
    """The spec's plots as PNGs (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, profile = collected.spec, collected.profile
    planned_rows = {r for run in collected.runs for r in run.rows}
    # The paper's numbers are drawn where they are comparable; on synthetic data (compare: false)
    # they would only squash our curves against the bottom of the axes (they are in the tables).
    show_paper = profile.compare
    written: list[Path] = []
    for plot in spec.plots:
        rows = [spec.rows[r] for r in (plot.rows or [r.name for r in spec.rows_in(profile.name)])
                if spec.rows[r].in_profile(profile.name) and r in planned_rows]
        if not rows:
            continue
        fig = None
        try:
            if plot.kind == "stack_outputs":
                fig, ax = plt.subplots(figsize=(6.4, 4.2))
                drew = False
                for i, row in enumerate(rows):
                    per_k = collected.stack_curves.get(f"{plot.name}:{row.name}", {})
                    n = int(row.vars[plot.stacks])
                    ks = [k for k in range(1, n + 1) if per_k.get(k)]
                    if not ks:
                        continue
                    color = f"C{i}"
                    means = [sum(per_k[k]) / len(per_k[k]) for k in ks]
                    spread = [_std(per_k[k]) for k in ks]
                    x = [k / n for k in ks]
                    ax.errorbar(x, means, yerr=spread, marker="o", color=color, capsize=3, label=f"{row.label} (ours)")
                    drew = True
                    paper_x, paper_y = [], []
                    for k in range(1, n + 1):
                        target = plot.metric.format(k=k, **row.vars)
                        for column in spec.columns.values():
                            cell = row.paper.get(column.name)
                            if cell is not None and column.metric_for(row) == target:
                                paper_x.append(k / n)
                                paper_y.append(cell.value)
                    if paper_x and show_paper:
                        ax.plot(paper_x, paper_y, linestyle="--", marker="D", color=color, alpha=0.6, label=f"{row.label} (paper)")
                if not drew:
                    plt.close(fig)
                    continue
                ax.set_xlabel("position of the stack's output in the network (k / number of stacks)")
                ax.set_ylabel(plot.ylabel or plot.metric.replace("{k}", "k"))
                ax.set_xlim(0, 1.05)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
            elif plot.kind == "bars":
                columns = [spec.columns[c] for c in (plot.columns or list(spec.columns))]
                fig, ax = plt.subplots(figsize=(min(13.0, max(6.4, 0.6 * len(rows) * len(columns) + 2.0)), 4.6))
                width = 0.8 / len(columns)
                for j, column in enumerate(columns):
                    xs, means, stds, paper_x, paper_y = [], [], [], [], []
                    for i, row in enumerate(rows):
                        cell = collected.cells.get((row.name, column.name))
                        if cell is None or cell.mean is None:
                            continue
                        x = i + (j - (len(columns) - 1) / 2) * width
                        xs.append(x)
                        means.append(cell.mean)
                        stds.append(cell.std or 0.0)
                        if cell.paper is not None:
                            paper_x.append(x)
                            paper_y.append(cell.paper.value)
                    if xs:
                        ax.bar(xs, means, width=width * 0.9, yerr=stds, capsize=3, color=f"C{j}", label=f"{column.label} (ours)")
                    if paper_x and show_paper:
                        ax.scatter(paper_x, paper_y, marker="D", color="black", zorder=3, s=18, label="paper" if j == 0 else None)
                ax.set_xticks(range(len(rows)))
                ax.set_xticklabels([r.label for r in rows], rotation=20, ha="right", fontsize=8)
                ax.set_ylabel(plot.ylabel or ", ".join(c.label for c in columns))
                ax.grid(axis="y", alpha=0.3)
                ax.legend(fontsize=7)
            elif plot.kind == "curves":
                columns = [spec.columns[c] for c in (plot.columns or list(spec.columns)[:1])]
                fig, axes = plt.subplots(1, len(columns), figsize=(6.4 * len(columns), 4.2), squeeze=False)
                for ax, column in zip(axes[0], columns):
                    for i, row in enumerate(rows):
                        metric = column.metric_for(row)
                        if metric is None:
                            continue
                        per_epoch: dict[int, list[float]] = {}
                        for rv in collected.finished:
                            if row.name not in rv.run.rows:
                                continue
                            for epoch, values in rv.curves.items():
                                if metric in values:
                                    per_epoch.setdefault(epoch, []).append(values[metric] * column.scale)
                        if not per_epoch:
                            continue
                        epochs = sorted(per_epoch)
                        means = [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
                        ax.plot([e + 1 for e in epochs], means, marker=".", color=f"C{i % 10}", label=row.label)
                        lows = [min(per_epoch[e]) for e in epochs]
                        highs = [max(per_epoch[e]) for e in epochs]
                        ax.fill_between([e + 1 for e in epochs], lows, highs, color=f"C{i % 10}", alpha=0.15)
                    ax.set_xlabel("epoch")
                    ax.set_ylabel(column.label)
                    ax.grid(alpha=0.3)
                    ax.legend(fontsize=7)
            if fig is None:
                continue
            title = plot.title or f"{spec.table}: {plot.name}"
            if not show_paper and plot.kind != "curves":
                title += f"\n({profile.name} profile: the paper's numbers are in the report's tables, not drawn)"
            fig.suptitle(title, fontsize=10)
            fig.text(0.99, 0.01, f"{spec.table} / {profile.name}", ha="right", va="bottom", fontsize=6, alpha=0.6)
            fig.tight_layout()
            path = plot_dir / f"{plot.name}.png"
            fig.savefig(path, dpi=110)
            written.append(path)
        finally:
            if fig is not None:
                plt.close(fig)
    return written


def _std(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


# ============================================================================= W&B summary
def write_wandb_summary(report: Report, collected: Collected, mode_request: str | None) -> str | None:
    """One W&B run per table and profile (``job_type: summary``, the table's group) with the report
    table, the checks, the per-run values and curves, and the plots. Never fails the reproduce."""
    try:
        from experiments.runs import _wandb_settings, resolve_wandb_mode

        requested = mode_request
        if requested is None:
            requested = next((r.wandb_mode for r in collected.runs if r.wandb_mode), None)
        if requested is None:
            requested = _base_wandb_mode(collected.runs)
        mode = resolve_wandb_mode(requested or "auto")
        if mode == "disabled":
            return None
        import wandb

        spec, profile = collected.spec, collected.profile
        directory = report.profile_dir
        summary = report.summary
        project = _base_project(collected.runs)
        table_columns = ["row", "column", "metric", "paper", "ours_mean", "ours_std", "n", "delta", "tolerance", "within_tolerance", "source"]
        table_rows = [[c["row"], c["column"], c["metric"], c["paper"], c["mean"], c["std"], c["n"], c["delta"], c["tolerance"],
                       None if c["within_tolerance"] is None else str(c["within_tolerance"]), c["source"]] for c in summary["cells"]]
        run_columns = ["run", "rows", "seed", "epoch", *spec.columns, "seconds"]
        run_rows, curve_rows = [], []
        for rv in collected.finished:
            row = spec.rows[rv.run.key]
            values = []
            for column in spec.columns.values():
                metric = column.metric_for(row)
                value = None if metric is None or rv.epoch is None else rv.curves.get(rv.epoch, {}).get(metric)
                values.append(None if value is None else value * column.scale)
            run_rows.append([rv.run.name, " ".join(rv.run.rows), rv.run.seed, rv.epoch, *values, rv.seconds])
            for epoch, metrics in sorted(rv.curves.items()):
                for column in spec.columns.values():
                    metric = column.metric_for(row)
                    if metric is not None and metric in metrics:
                        curve_rows.append([rv.run.key, rv.run.seed, epoch, column.name, metrics[metric] * column.scale])
        digest = _hash([spec.table, profile.name, str(report.table_dir.resolve())])[:8]
        run = wandb.init(
            project=project, group=spec.table, job_type="summary", id=f"{_slug(spec.table, 24)}-{_slug(profile.name, 8)}-summary-{digest}",
            name=f"tables/{spec.table}/{profile.name}/summary", dir=str(directory), mode=mode, resume="allow",
            settings=_wandb_settings(), tags=["table", spec.table, profile.name, "summary"],
            config={"table": spec.table, "profile": profile.name, "spec": spec.raw, "seeds": summary["seeds"], "epoch": spec.epoch},
        )
        try:
            payload: dict[str, Any] = {
                "table": wandb.Table(columns=table_columns, data=table_rows),
                "runs": wandb.Table(columns=run_columns, data=run_rows),
                "curves": wandb.Table(columns=["row", "seed", "epoch", "column", "value"], data=curve_rows),
                "checks": wandb.Table(columns=["check", "status", "details", "paper"],
                                      data=[[c.name, c.status, "; ".join(c.details), c.paper] for c in report.checks]),
            }
            for png in report.plots:
                payload[f"plots/{png.stem}"] = wandb.Image(str(png))
            run.log(payload)
            for c in summary["cells"]:
                if c["mean"] is not None:
                    run.summary[f"{c['row']}/{c['column']}"] = c["mean"]
            for c in report.checks:
                run.summary[f"checks/{c.name}"] = c.status
        finally:
            run.finish()
        _write_json(directory / "wandb_summary.json", {"mode": mode, "id": run.id, "group": spec.table, "job_type": "summary", "dir": str(directory / "wandb")})
        return str(directory / "wandb")
    except Exception as error:  # a dashboard is a convenience: never fail a reproduced table on it
        say(f"W&B summary not written ({type(error).__name__}: {error})")
        return None


def _base_wandb_mode(runs: list[PlannedRun]) -> str | None:
    for run in runs:
        config = _run_config(run)
        mode = get_dotted(config, "run.wandb") if config else None
        if mode:
            return str(mode)
    for run in runs:
        for base in run.bases:
            try:
                mode = get_dotted(yaml.safe_load(resolve_config_path(base).read_text()) or {}, "run.wandb")
            except (OSError, yaml.YAMLError):
                mode = None
            if mode:
                return str(mode)
    return None


def _base_project(runs: list[PlannedRun]) -> str:
    for run in runs:
        config = _run_config(run)
        project = get_dotted(config, "run.project") if config else None
        if project:
            return str(project)
    return "convlab"


def _run_config(run: PlannedRun) -> dict[str, Any] | None:
    try:
        return yaml.safe_load((run.directory / "config.yaml").read_text())
    except (OSError, yaml.YAMLError):
        return None


# ==================================================================================== CLI
def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments {command}",
        description=(
            "Run a paper table's rows x seeds and report paper | ours | delta." if command == "reproduce"
            else "Rebuild a table's report from its finished runs, without training."
        ),
    )
    parser.add_argument("table", help="a table in experiments/tables (e.g. hourglass_stacking) or a path to a spec")
    parser.add_argument("--profile", default=None, help="quick (synthetic, CPU minutes) or paper (real data); default: quick")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the profile's)")
    parser.add_argument("--root", default="runs", help="folder of all runs (default: runs)")
    parser.add_argument("--data-root", default=None, help="dataset folder for the paper profile (each row's data under DIR/<dir>)")
    parser.add_argument("--wandb", choices=("auto", "online", "offline", "disabled"), default=None,
                        help="W&B mode for the runs and the summary (default: the base config's run.wandb)")
    if command == "reproduce":
        parser.add_argument("--rows", default=None, help="comma-separated rows to run (default: all rows of the profile)")
        parser.add_argument("--slots", type=int, default=None, help="runs at once (default: the profile's slots)")
        parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is stopped (default: none)")
        parser.add_argument("--gpus", default=None, help="comma-separated GPU indices shared out between the slots (CUDA_VISIBLE_DEVICES per run)")
        parser.add_argument("--dry-run", action="store_true", help="list the runs and their configs; train nothing")
        parser.add_argument("--rerun-stale", action="store_true",
                            help="move runs whose config no longer matches the spec aside (<dir>.stale-<time>) and train them again")
        parser.add_argument("--no-report", action="store_true", help="train only")
    return parser


def _setup(args: argparse.Namespace) -> tuple[TableSpec, Profile, list[int]]:
    spec = load_table(args.table)
    name = args.profile or ("quick" if "quick" in spec.profiles else next(iter(spec.profiles)))
    profile = spec.profile(name)
    if args.seeds is not None and args.seeds < 1:
        raise TableSpecError(f"--seeds: must be >= 1, got {args.seeds}")
    if args.data_root is not None and profile.data is None:
        raise TableSpecError(f"--data-root: profile {profile.name} of {spec.table} reads no dataset (it has no data section); use --profile paper")
    if getattr(args, "slots", None) is not None and args.slots < 1:
        raise TableSpecError(f"--slots: must be >= 1, got {args.slots}")
    if getattr(args, "gpus", None) and len([g for g in args.gpus.split(",") if g.strip()]) < (args.slots or profile.slots):
        raise TableSpecError(f"--gpus: {args.gpus} cannot give {args.slots or profile.slots} slots a GPU each")
    return spec, profile, list(range(args.seeds if args.seeds is not None else profile.seeds))


def main_reproduce(argv: list[str]) -> int:
    args = _parser("reproduce").parse_args(argv)
    try:
        spec, profile, seeds = _setup(args)
        rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
        runs = plan_runs(spec, profile.name, seeds, args.root, args.data_root, rows, args.wandb)
        say(f"table {spec.table}, profile {profile.name}: {len({r.config_hash for r in runs})} distinct configs x {len(seeds)} seed(s) = {len(runs)} runs")
        composer = Composer()
        composed = {}
        for run in runs:
            if run.config_hash not in composed:
                composed[run.config_hash] = composer.compose(run)
        missing = _check_data(runs, composed, instantiate=args.dry_run)
        if args.dry_run:
            _print_plan(spec, profile, runs, composed)
            if missing:
                print(describe_missing(missing, profile, args.data_root), flush=True)
            return 0
        if missing:
            raise UserError(describe_missing(missing, profile, args.data_root))
        reused = 0
        reproducer = Reproducer(spec, profile, runs, slots=args.slots or profile.slots, timeout=args.timeout,
                                gpus=[g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None)
        started = time.monotonic()
        with _TableLock(table_dir(args.root, spec.table) / profile.name):
            for run in runs:  # again, under the lock: another reproduce may have moved on
                run.status = run_status(run)
            _check_directories(runs, args.rerun_stale)
            reused = sum(1 for r in runs if r.status == "finished")
            try:
                ok = reproducer.execute()
            except KeyboardInterrupt:
                done = sum(r.status == "finished" for r in runs)
                say(f"interrupted: {done}/{len(runs)} runs finished; run the same command again to resume", sys.stderr)
                return 130
        wall = time.monotonic() - started
        say(f"training done in {wall / 60:.1f} min")
        pdir = table_dir(args.root, spec.table) / profile.name
        pdir.mkdir(parents=True, exist_ok=True)
        _write_json(pdir / "last_reproduce.json", {
            "finished_at": _iso(time.time()), "training_wall_seconds": round(wall, 1), "slots": reproducer.slots,
            "trained": sum(1 for r in runs if r.status == "finished") - reused, "reused": reused, "failed": len(reproducer.failures),
            "seeds": seeds, "cpu_count": os.cpu_count(),
        })
        if not args.no_report:
            _report(spec, profile, runs, args, command=_rebuild_command(args, profile))
        if not ok:
            for run, reason in reproducer.failures:
                say(f"failed: {run.name}: {reason} (log {run.directory / LOG_FILE}); rerun to retry", sys.stderr)
            return 1
        return 0
    except (TableSpecError, UserError) as error:
        say(f"error: {error}", sys.stderr)
        return 2


def main_report(argv: list[str]) -> int:
    args = _parser("report").parse_args(argv)
    try:
        spec, profile, seeds = _setup(args)
        if args.seeds is None:  # every finished seed on disk
            seeds = _seeds_on_disk(spec, profile, args.root) or seeds
        runs = plan_runs(spec, profile.name, seeds, args.root, args.data_root, None, args.wandb)
        if not any(r.status == "finished" for r in runs):
            raise UserError(f"no finished runs of {spec.table} ({profile.name}) under {table_dir(args.root, spec.table) / profile.name}; "
                            f"run `python -m experiments reproduce {spec.table} --profile {profile.name}` first")
        for run in runs:
            if run.status == "stale":
                say(f"skipped  {run.name}: trained with another config than the spec's")
        _report(spec, profile, runs, args, command=_rebuild_command(args, profile))
        return 0
    except (TableSpecError, UserError) as error:
        say(f"error: {error}", sys.stderr)
        return 2


def _rebuild_command(args: argparse.Namespace, profile: Profile) -> str:
    parts = ["python -m experiments report", args.table, f"--profile {profile.name}"]
    if args.root != "runs":
        parts.append(f"--root {args.root}")
    return " ".join(parts)


def _report(spec: TableSpec, profile: Profile, runs: list[PlannedRun], args: argparse.Namespace, command: str) -> Report:
    collected = collect(spec, profile, runs)
    report = build_report(collected, args.root, command)
    for message in collected.missing_metrics:
        say(f"warning: {message}", sys.stderr)
    wandb_dir = write_wandb_summary(report, collected, args.wandb)
    say(f"report: {report.profile_dir / 'report.md'} (copy: {report.table_dir / 'report.md'})")
    for check in report.checks:
        say(f"check  {check.status:<13} {check.name}")
    if wandb_dir:
        say(f"W&B summary run (group {spec.table}, job_type summary) under {wandb_dir}")
    return report


def _seeds_on_disk(spec: TableSpec, profile: Profile, root: str) -> list[int]:
    base = table_dir(root, spec.table) / profile.name
    seeds = set()
    for result in base.glob(f"*/seed*/{RESULT_FILE}"):
        match = re.fullmatch(r"seed(\d+)", result.parent.name)
        if match:
            seeds.add(int(match.group(1)))
    return sorted(seeds)


def _check_data(runs: list[PlannedRun], composed: dict[str, dict[str, Any]], instantiate: bool) -> list[MissingData]:
    found: dict[tuple[str, str], MissingData] = {}
    for run in runs:
        m = missing_data(composed[run.config_hash], instantiate=instantiate)
        if m is None:
            continue
        key = (m.source, m.root)
        if key not in found:
            found[key] = m
        for row in run.rows:
            if row not in found[key].rows:
                found[key].rows.append(row)
    return list(found.values())


def _check_directories(runs: list[PlannedRun], rerun_stale: bool) -> None:
    foreign = [r for r in runs if r.status == "foreign"]
    if foreign:
        raise UserError(f"{foreign[0].directory} holds files the table runner did not write; move it away (nothing was touched)")
    stale = [r for r in runs if r.status == "stale"]
    if stale and not rerun_stale:
        names = ", ".join(str(r.directory) for r in stale[:3]) + (" ..." if len(stale) > 3 else "")
        raise UserError(f"{len(stale)} run(s) were trained with another config than the spec's now ({names}); "
                        "restore the spec, or pass --rerun-stale to move them aside and train again")
    for run in stale:
        target = run.directory.with_name(f"{run.directory.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        _stop_orphan(run.directory, run.override_path)
        shutil.move(str(run.directory), str(target))
        say(f"moved stale run {run.directory} -> {target}")
        run.status = "new"


def _print_plan(spec: TableSpec, profile: Profile, runs: list[PlannedRun], composed: dict[str, dict[str, Any]]) -> None:
    from experiments.launch import experiments_command

    print(f"# {spec.table} ({spec.title}), profile {profile.name}" + (f": {profile.description}" if profile.description else ""))
    params_seen: dict[str, int | None] = {}
    for run in runs:
        if run.config_hash not in params_seen:
            params_seen[run.config_hash] = count_parameters(composed.get(run.config_hash))
        shared = f"  (rows {', '.join(run.rows)})" if len(run.rows) > 1 else ""
        params = params_seen[run.config_hash]
        print(f"\n[{run.status}] {run.name}{shared}  params {_params(params)}  group {run.table}  job_type {run.key}  wandb_id {run.wandb_id}")
        print("  $ " + " ".join(experiments_command(*run.command_args())).replace(sys.executable, "python"))
        print(f"  {run.override_path}:")
        text = yaml.safe_dump(run.override(), sort_keys=False).rstrip()
        print("\n".join("    " + line for line in text.splitlines()))
    print()


class _TableLock:
    """One reproduce per table and profile at a time (an advisory lock, released by the OS when
    the process dies however it dies)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / ".reproduce.lock"
        self.handle = None

    def __enter__(self) -> "_TableLock":
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip()
            self.handle.close()
            raise UserError(f"another reproduce of this table is running ({holder or 'unknown pid'}); wait for it or stop it") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}")
        self.handle.flush()
        return self

    def __exit__(self, *exc: Any) -> None:
        import fcntl

        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
