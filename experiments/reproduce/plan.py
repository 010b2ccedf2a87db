"""The runs of a table: one per distinct composed config and seed, their directories and status,
and the composition that checks them before anything is launched.

``plan_runs`` is pure: it composes the override trees of every row of a profile and gives rows whose
configs are identical (the same network in two ablations) one shared run per seed. ``compose_plan``
then parses every distinct config with convlab's parser (a wrong key fails here, naming the row and
the key), reads the table's derived vars out of each row's config (checking those a row also
states), and, when asked, builds each config's model and data to count the network's parameters
and to list the data files that are missing (``required_paths()`` of the data, through the reader's
``DataNotFoundError``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from core.io import read_json
from experiments.recipe import ConfigComposer, Measured, config_key_of, deep_merge, get_dotted, override_tree
from experiments.reproduce.spec import Profile, Row, TableSpec, TableSpecError, resolve_config_path

__all__ = [
    "PlannedRun", "Plan", "plan_runs", "compose_plan", "run_status", "row_config", "config_identity", "table_dir",
    "describe_missing", "slug", "stable_hash", "RESULT_FILE", "STATE_FILE", "LOG_FILE",
]

RESULT_FILE = "result.json"
STATE_FILE = "table_run.json"
LOG_FILE = "train.log"


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
        """``fit`` of the run, resuming its ``last.ckpt`` when it has one (``fit --ckpt_path last``
        refuses a run without one)."""
        args = ["fit"]
        for base in self.bases:
            args += ["--config", base]
        args += ["--config", str(self.override_path)]
        return args + (["--ckpt_path", "last"] if self.resumable else [])

    @property
    def resumable(self) -> bool:
        """Whether the run saved a checkpoint to resume from (``last.ckpt``, or Lightning's ``last-v1.ckpt``)."""
        return any((self.directory / "checkpoints").glob("last*.ckpt"))

    def header(self) -> str:
        shared = f" (also rows {', '.join(self.rows[1:])})" if len(self.rows) > 1 else ""
        return (
            f"# table {self.table}, profile {self.profile}, row {self.key}{shared}, seed {self.seed}\n"
            f"# written by `python -m experiments reproduce`; config = {' + '.join(self.bases)} + this file\n"
        )


@dataclass
class Plan:
    """A profile's runs, composed: ``spec`` has every row's derived vars filled in (for this
    profile), ``composed`` maps a config hash to its composed config, ``measured`` to what its model
    and data are (parameters, missing data files) when measured."""

    spec: TableSpec
    profile: Profile
    seeds: list[int]
    runs: list[PlannedRun]
    composed: dict[str, dict[str, Any]] = field(default_factory=dict)
    measured: dict[str, Measured] = field(default_factory=dict)


def slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "x"


def stable_hash(payload: Any) -> str:
    return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def table_dir(root: str | Path, table: str) -> Path:
    return Path(root) / "tables" / table


def row_config(spec: TableSpec, profile: Profile, row: Row, data_root: str | None) -> tuple[list[str], dict[str, Any], str | None]:
    """``(bases, dotted overrides, data key)`` of a row in a profile."""
    row_profile = row.profiles.get(profile.name)
    bases = (row_profile.base if row_profile and row_profile.base else None) or profile.base
    dotted = {**profile.override, **row.override, **(row_profile.override if row_profile else {})}
    data_key = None
    if profile.data is not None:
        data_key = profile.data.key
        if data_root is not None:
            sub = row_profile.data_dir if row_profile and row_profile.data_dir is not None else None
            sub = profile.data.dir if sub is None else sub
            dotted[data_key] = str(Path(data_root) / sub) if sub else str(Path(data_root))
    return list(bases), dotted, data_key


_MISSING = object()


def config_identity(bases: list[str], dotted: dict[str, Any], data_key: str | None) -> dict[str, Any]:
    """What makes two rows the same run: the base configs (their content, so that an edited base
    makes its finished runs stale) and the overrides that change them. An override equal to the
    base's own value changes nothing and is left out, and so is the data root (moving a dataset
    does not make a run another run). A base that cannot be read is composed (and its error
    reported) by ``compose_plan``; here it contributes its path alone."""
    merged: dict[str, Any] = {}
    for base in bases:
        try:
            merged = deep_merge(merged, yaml.safe_load(resolve_config_path(base).read_text()) or {})
        except (OSError, yaml.YAMLError):
            continue
    changes = {}
    for key, value in dotted.items():
        if key == data_key:
            continue
        current = get_dotted(merged, key, default=_MISSING)
        if current is not _MISSING and _same(current, value):
            continue
        changes[key] = value
    return {"bases": [str(resolve_config_path(b).resolve()) for b in bases], "base_config": merged, "override": override_tree(changes)}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return all(k in a and _same(a[k], v) for k, v in b.items())
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return a == b and (type(a) is type(b) or (isinstance(a, (int, float)) and isinstance(b, (int, float))))


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
        digest = stable_hash(config_identity(bases, dotted, data_key))
        if digest in configs:
            configs[digest]["rows"].append(row.name)
        else:
            configs[digest] = {"key": row.name, "rows": [row.name], "bases": bases, "dotted": dotted, "data_key": data_key}
    base_dir = table_dir(root, spec.table) / profile_name
    planned = []
    for seed in seeds:
        for digest, c in configs.items():
            name = f"tables/{spec.table}/{profile_name}/{c['key']}/seed{seed}"
            run_hash = stable_hash([spec.table, profile_name, c["key"], seed, digest])[:8]
            wandb_id = f"{slug(spec.table, 24)}-{slug(profile_name, 8)}-{slug(c['key'], 16)}-s{seed}-{run_hash}"
            planned.append(PlannedRun(
                table=spec.table, profile=profile_name, key=c["key"], rows=list(c["rows"]), seed=seed, bases=c["bases"],
                dotted=c["dotted"], data_key=c["data_key"], config_hash=digest, name=name, directory=Path(root) / name,
                override_path=base_dir / "overrides" / f"{c['key']}-seed{seed}.yaml", wandb_id=wandb_id, root=str(root),
                wandb_mode=wandb_mode,
            ))
    for run in planned:
        run.status = run_status(run)
    return planned


def run_status(run: PlannedRun) -> str:
    """``new`` (nothing there), ``foreign`` (files the runner did not write), ``stale`` (trained
    with another config), ``finished`` (its result is there) or ``partial`` (interrupted)."""
    directory = run.directory
    if not directory.exists() or not any(directory.iterdir()):
        return "new"
    state = read_json(directory / STATE_FILE)
    if state is None:
        return "foreign"
    if state.get("config_hash") != run.config_hash:
        return "stale"
    result = read_json(directory / RESULT_FILE)
    if result is not None and result.get("config_hash") == run.config_hash:
        return "finished"
    return "partial"


# ------------------------------------------------------------------------------ composition
def compose_plan(spec: TableSpec, profile: Profile, seeds: list[int], runs: list[PlannedRun], composer: ConfigComposer,
                 measure: bool = False) -> Plan:
    """Parse every distinct config of ``runs`` (a key that fails names its row and key), derive the
    rows' vars from their configs, and with ``measure`` build each config's model and data (the
    network's parameters; the data files that are missing)."""
    from experiments.recipe import describe_config_error

    plan = Plan(spec=spec, profile=profile, seeds=seeds, runs=runs)
    resolved: dict[str, dict[str, Any]] = {}
    for run in runs:
        if run.config_hash in plan.composed:
            continue
        tree = override_tree(run.dotted)
        tree["seed_everything"] = run.seed
        try:
            config = composer.parse(run.bases, tree)
        except Exception as error:
            culprit = composer.culprit(run.bases, run.dotted)
            if culprit is not None:
                raise TableSpecError(f"{_where(run, culprit[0])}: {describe_config_error(culprit[1], with_key=False)}") from None
            try:
                composer.parse(run.bases)
            except Exception as base_error:
                raise TableSpecError(f"profiles.{run.profile}.base ({', '.join(run.bases)}): {describe_config_error(base_error, with_key=False)}") from None
            raise TableSpecError(f"rows.{run.key} (profile {run.profile}): {describe_config_error(error, with_key=False)}") from None
        plan.composed[run.config_hash] = composer.to_dict(config)
        if measure:
            try:
                plan.measured[run.config_hash] = composer.measure(config)
            except Exception as error:  # a value the parser accepts but the network refuses
                raise TableSpecError(f"rows.{run.key} (profile {run.profile}): {describe_config_error(error, with_key=False)}") from None
        for row in run.rows:
            resolved[row] = _row_vars(spec, spec.rows[row], profile, plan.composed[run.config_hash])
    rows = {name: dataclasses.replace(row, vars=resolved.get(name, row.vars)) for name, row in spec.rows.items()}
    plan.spec = dataclasses.replace(spec, rows=rows)
    return plan


def _row_vars(spec: TableSpec, row: Row, profile: Profile, composed: dict[str, Any]) -> dict[str, Any]:
    variables = dict(row.vars)
    for var, key in spec.derive.items():
        value = get_dotted(composed, key, default=_MISSING)
        if value is _MISSING:
            raise TableSpecError(f"derive.{var}: the config of row {row.name} (profile {profile.name}) has no {key}")
        if var in row.vars and not _same(row.vars[var], value):
            raise TableSpecError(f"rows.{row.name}.vars.{var}: {row.vars[var]!r}, but the row's config (profile {profile.name}) builds {key} = {value!r}")
        variables[var] = value
    return variables


def _where(run: PlannedRun, key: str) -> str:
    if key == run.data_key:
        return f"profiles.{run.profile}.data.key {key}"
    return f"rows.{run.key} (profile {run.profile}) override {key}"


# ------------------------------------------------------------------------------- missing data
def describe_missing(plan: Plan, data_root: str | None) -> str | None:
    """What the profile's data lacks on disk, per reader: every missing file and folder with the
    config key that names it, and where to put them; None when nothing is missing."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    weights: dict[tuple[str, str], list[str]] = {}
    for run in plan.runs:
        for key, path in getattr(plan.measured.get(run.config_hash), "weights_missing", []):
            rows = weights.setdefault((path, key), [])
            rows += [r for r in run.rows if r not in rows]
    for run in plan.runs:
        measured = plan.measured.get(run.config_hash)
        if measured is None or not measured.missing:
            continue
        owner = measured.owner or "the data"
        root = next((p.path for p in measured.required if p.arg == "root"), None) or _common_root(measured.missing)
        group = groups.setdefault((owner, str(root)), {"rows": [], "measured": measured, "composed": plan.composed[run.config_hash], "root": root})
        group["rows"] += [r for r in run.rows if r not in group["rows"]]
    if not groups and not weights:
        return None
    profile = plan.profile
    lines = [f"the {profile.name} profile needs data that is not on disk:"]
    if weights:
        lines.append("  pretrained weights (the networks start from them; set the key to another local file, or to null to train from scratch):")
        for (path, key), rows in weights.items():
            lines.append(f"    missing file   {path}   ({key}; rows {', '.join(rows)})")
    for (owner, _), group in groups.items():
        root: Path = group["root"]
        reader = owner.rsplit(".", 1)[-1]
        lines.append(f"  {reader} (rows {', '.join(group['rows'])}) under {root}:")
        for path in group["measured"].missing:
            key = config_key_of(group["composed"], owner, path.arg, within="data") if path.arg else None
            lines.append(f"    missing {path.kind:<6} {path.path}" + (f"   ({key})" if key else ""))
        inside = [p for p in group["measured"].missing if p.path != root and Path(p.path).is_relative_to(root)]
        if inside:
            names = [f"{Path(p.path).relative_to(root)}/" for p in inside if p.kind == "folder"]
            names += [str(Path(p.path).relative_to(root)) for p in inside if p.kind != "folder"]
            lines.append(f"    => put {', '.join(names)} under {root}")
    if profile.data and profile.data.help:
        lines.append(f"  {profile.data.help}")
    if data_root is None and profile.data is not None:
        lines.append(f"  (no --data-root: the configs' own paths are used; --data-root DIR sets {profile.data.key} to DIR/<dataset>)")
    return "\n".join(lines)


def _common_root(paths: list[Any]) -> Path:
    parts = [Path(p.path).parts for p in paths]
    common = []
    for items in zip(*parts):
        if len(set(items)) != 1:
            break
        common.append(items[0])
    return Path(*common) if common else Path(".")


def finished_result(run: PlannedRun) -> dict[str, Any]:
    """The run's ``result.json`` (empty when there is none)."""
    return read_json(run.directory / RESULT_FILE) or {}
