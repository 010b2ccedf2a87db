"""Search specs: ``experiments/search/<name>.yaml`` (docs/search.md, "The spec"), checked before any trial runs.

The format is ``SearchSpec``: its fields are the keys (a space entry: ``search.space.SpaceEntry``).
Every mistake raises ``SpecError`` with one line that names the entry.
"""
from __future__ import annotations

import json
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, with_config
from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

from core.specs import (
    CONFIG, Count, Flag, Integer, Mapping, Name, Number, OneOrMore, OverrideKey, Overrides, Schema, SpecError, check, computed,
    config_files, load_yaml, shorthand, spec_dataclass, validate,
)
from search.space import Entry, SpaceEntry, build_pruner, build_sampler, component, grid_size, make_entries

__all__ = ["SpecError", "SearchSpec", "Objective", "load_spec", "build_sampler", "build_pruner", "grid_size", "MEASURED_METRICS"]

MEASURED_METRICS = ("params", "gflops", "latency_ms")
Positive = Annotated[Number, check(lambda v: v > 0, "must be > 0 seconds")]
Direction = Annotated[Literal["maximize", "minimize"],
                      BeforeValidator(lambda v: {"max": "maximize", "min": "minimize"}.get(str(v).lower(), str(v).lower()))]


@spec_dataclass
class Objective(Schema):  # what a trial reports (a bare string: its metric)
    metric: Annotated[str, check(bool, "missing")]
    direction: Direction = "maximize"
    reduce: Literal["best", "last"] = "best"  # the best or the last validation's value

    @property
    def measured(self) -> bool:
        return self.metric in MEASURED_METRICS


@with_config(CONFIG)
class Budget(TypedDict, total=False):
    n_trials: Count | None
    timeout: Positive | None
    trial_timeout: Positive | None


@with_config(CONFIG)
class Retrain(TypedDict, total=False):
    top_k: Integer  # the k best trials (single objective)
    trials: Annotated[list[Integer], check(bool, "give a list of trial numbers")]  # chosen trials (a Pareto front's)
    seeds: Annotated[list[Integer], check(lambda v: len(v) >= 2, "give at least 2 integer seeds (a verdict needs a spread)")]


Objectives = Annotated[OneOrMore[Annotated[Objective, shorthand("metric")]], check(bool, "give a list of {{metric, direction}}"),
                       check(lambda v: len({o.metric for o in v}) == len(v), "a metric appears twice"),
                       check(lambda v: len(v) > 1 or not v[0].measured, "{value[0].metric} alone needs no training; add a trained metric")]
Component = Annotated[Mapping[str, Any] | None, shorthand("name")]  # {name, **Optuna arguments} or the name
MEASURE = Literal["input_shape", "latency_batch_size", "latency_warmup", "latency_iterations", "enabled"]


@spec_dataclass
class SearchSpec(Schema):
    base: config_files(Path)
    space: Annotated[Mapping[OverrideKey, SpaceEntry], check(bool, "the search space is empty")]
    study: Name = ""  # default: the file's stem
    overrides: Overrides = field(default_factory=dict)  # fixed values of the trials and of the retraining
    trial_overrides: Overrides = field(default_factory=dict)  # the trials' smaller budget; the retraining drops them
    default_trial: Flag = True  # enqueue the base config's own values as trial 0
    objectives: Objectives | None = None  # one (pruning allowed) or several (Pareto front); default: the module's monitor
    objective: Objectives | None = None  # the same, for one
    sampler: Component = None  # tpe | random | grid | cmaes | nsga2 | nsga3 | qmc | gp; the {name, ...} mapping once loaded
    pruner: Component = None  # median | percentile | hyperband | successive_halving | threshold | none
    budget: Budget = field(default_factory=dict)
    slots: Count = 1  # trials at once; each slot gets its own devices
    devices: list[Integer] | None = None
    torchrun: Count | None = None  # processes per trial
    constraints: Mapping[Literal["max_params", "max_gflops"], Number] = field(default_factory=dict)  # checked before launch (PRUNED)
    measure: Mapping[MEASURE, Any] = field(default_factory=dict)
    storage: Mapping[Literal["url", "heartbeat_interval", "grace_period", "max_retry"], Any] = field(default_factory=dict)
    wandb: Literal["auto", "online", "offline", "disabled"] | None = None
    retrain: Retrain = field(default_factory=dict)
    description: str = ""
    path: Path = computed(None)
    entries: list[Entry] = computed(factory=list)
    n_trials: int | None = computed(None)
    timeout: float | None = computed(None)
    trial_timeout: float | None = computed(None)
    raw: dict[str, Any] = computed(factory=dict)
    command_args: list[str] = computed(factory=list)  # the search arguments that make this study (for its report)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def pruning(self) -> bool:
        return self.pruner.get("name", "none") != "none"

    @property
    def trial_fixed(self) -> dict[str, Any]:
        """The fixed values a search trial trains with: ``overrides`` and the trials' own budget."""
        return {**self.overrides, **self.trial_overrides}


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None, study: str | None = None,
              pruner: str | None = None) -> SearchSpec:
    """Read and check a spec. ``overrides`` are extra fixed dotted keys (the CLI's ``--set``),
    ``study`` replaces the spec's study name, ``pruner`` its pruner (by name, with the pruner's
    defaults: ``none`` runs the same study without pruning)."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such search spec")
    raw = load_yaml(path) or {}
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a search spec is a mapping")
    if pruner is not None:
        raw["pruner"] = {"name": pruner}
        # Another pruner is another study (what pruning buys is measured by comparing the two).
        study = study or f"{raw.get('study') or path.stem}-pruner-{pruner}"
    spec = validate(SearchSpec, {**raw, "study": str(study or raw.get("study") or path.stem)})
    spec.command_args = ["--config", str(path)] + (["--study-name", spec.study] if study else [])
    spec.command_args += ["--pruner", pruner] if pruner is not None else []
    spec.command_args += [arg for key, value in (overrides or {}).items() for arg in ("--set", f"{key}={json.dumps(value)}")]
    extra = validate(Overrides, overrides or {}, where="overrides")
    spec.overrides.update(extra)
    # The command line wins over the spec's file, the trials' budget included.
    for key in extra:
        spec.trial_overrides.pop(key, None)
    # What the study stores (its attribute, spec.yaml, the W&B config) is the file with the numbers as checked.
    spec.raw = {**raw, **{key: getattr(spec, key) for key in ("constraints", "retrain") if raw.get(key)}}
    spec.path, spec.entries = path, make_entries(spec.space)
    also_fixed = [key for key in spec.space if key in spec.trial_fixed]
    if also_fixed:
        raise SpecError(f"space.{also_fixed[0]}: also fixed in {'overrides' if also_fixed[0] in spec.overrides else 'trial_overrides'}")
    spec.objectives = spec.objectives or spec.objective or []
    spec.sampler = component("sampler", spec.sampler, spec.entries, spec.multi_objective)
    spec.pruner = component("pruner", spec.pruner, spec.entries, spec.multi_objective)
    spec.n_trials, spec.timeout, spec.trial_timeout = (spec.budget.get(k) for k in ("n_trials", "timeout", "trial_timeout"))
    if spec.n_trials is None and spec.timeout is None and spec.sampler["name"] != "grid":
        raise SpecError("budget: give n_trials and/or timeout")
    if spec.devices is not None and len(spec.devices) < spec.slots:
        raise SpecError(f"devices: {len(spec.devices)} device(s) cannot give {spec.slots} slots disjoint devices")
    if spec.retrain and "trials" not in spec.retrain:
        spec.retrain.setdefault("top_k", 1)
    if spec.retrain.get("trials") and spec.retrain.get("top_k"):
        raise SpecError("retrain: give top_k (the k best trials) or trials (chosen ones), not both")
    return spec
