"""Search specs: ``experiments/search/<name>.yaml``, loaded and checked before any trial runs.

A spec names the base config(s), the fixed overrides, the search space, the objective(s), the
sampler and pruner, the trial budget and the parallel slots::

    study: my_study                             # default: the spec file's stem
    base: experiments/configs/<task>/<config>.yaml   # or a list, composed in order
    overrides: {trainer.max_epochs: 4}          # dotted keys fixed for every trial
    space:
      model.init_args.optimizer.init_args.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.init_args.network.init_args.depth: {type: int, low: 1, high: 3}
      model.init_args.network.init_args.width: {type: categorical, choices: [32, 64]}
      model.init_args.optimizer:                # a mapping of choices: label -> config value
        type: categorical
        choices: {rmsprop: {class_path: torch.optim.RMSprop}, sgd: {class_path: torch.optim.SGD}}
      model.init_args.optimizer.init_args.momentum:
        {type: float, low: 0.0, high: 0.95, when: {model.optimizer: sgd}}   # conditional entry
    objectives:                                 # one (pruning allowed) or several (Pareto front);
      - {metric: val/accuracy, direction: maximize}      # default: the module's monitor
                                                         # reduce: best (default) or last
      - {metric: params, direction: minimize}            # measured: params, gflops, latency_ms
    sampler: {name: tpe, seed: 0}               # tpe | random | grid | cmaes | nsga2 | qmc
    pruner: {name: median, n_startup_trials: 3} # median | percentile | hyperband | successive_halving | threshold | none
    budget: {n_trials: 12, timeout: null, trial_timeout: 1800}
    slots: 1                                    # trials at once; each slot gets its own devices
    constraints: {max_params: 5.0e6, max_gflops: 20}   # checked before launch (rejected = PRUNED)

``SearchSpec`` is this format (its fields are the keys above, checked by ``core.specs.validate``)
plus what ``load_spec`` makes of them: the space's ``entries``, the budget's numbers. Every mistake
a user can fix raises ``SpecError`` with one line that names the entry.
"""
from __future__ import annotations

import importlib.util
import inspect
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal

from typing_extensions import TypedDict  # pydantic reads typing.TypedDict only from Python 3.12

from pydantic import AfterValidator, BeforeValidator, with_config

from core.specs import (
    CONFIG, Count, Flag, Integer, Mapping, Name, Number, OneOrMore, OverrideKey, Overrides, Schema, SpecError, check, computed,
    load_yaml, shorthand, spec_dataclass, validate,
)
from search.space import PRUNERS, SAMPLERS, Entry, build_pruner, build_sampler, grid_size, grid_space, param_name

__all__ = ["SpecError", "SearchSpec", "Objective", "load_spec", "build_sampler", "build_pruner", "grid_size", "MEASURED_METRICS"]

MEASURED_METRICS = ("params", "gflops", "latency_ms")
ALIASES = {"nsgaii": "nsga2", "nsga-ii": "nsga2", "cma-es": "cmaes", "cma_es": "cmaes", "nop": "none", "asha": "successive_halving"}
Positive = Annotated[Number, check(lambda v: v > 0, "must be > 0 seconds")]


def _bases(paths: list[str]) -> list[str]:
    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        raise ValueError(f"{missing[0]}: no such config file")
    return paths


@spec_dataclass
class Objective(Schema):
    metric: Annotated[str, check(bool, "missing")]
    direction: Annotated[Literal["maximize", "minimize"],
                         BeforeValidator(lambda v: {"max": "maximize", "min": "minimize"}.get(str(v).lower(), str(v).lower()))] = "maximize"
    reduce: Literal["best", "last"] = "best"

    @property
    def measured(self) -> bool:
        return self.metric in MEASURED_METRICS


@spec_dataclass
class SpaceEntry(Schema):
    """One entry of ``space`` as the file states it (``load_spec`` makes it a ``search.space.Entry``)."""

    type: Literal["float", "int", "categorical"] | None = None
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    log: Flag = False
    choices: Any = None
    when: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None


@with_config(CONFIG)
class Budget(TypedDict, total=False):
    n_trials: Count | None
    timeout: Positive | None
    trial_timeout: Positive | None


@with_config(CONFIG)
class Constraints(TypedDict, total=False):
    max_params: Number
    max_gflops: Number


@with_config(CONFIG)
class Measure(TypedDict, total=False):
    input_shape: Any
    latency_batch_size: Any
    latency_warmup: Any
    latency_iterations: Any
    enabled: Any


@with_config(CONFIG)
class Storage(TypedDict, total=False):
    url: Any
    heartbeat_interval: Any
    grace_period: Any
    max_retry: Any


@with_config(CONFIG)
class Retrain(TypedDict, total=False):
    top_k: Integer
    seeds: Annotated[list[Integer], check(bool, "give a list of integer seeds")]


Component = Annotated[Mapping[str, Any] | None, shorthand("name")]  # a sampler or pruner: {name, **arguments} or its name
Objectives = OneOrMore[Annotated[Objective, shorthand("metric")]]


@spec_dataclass
class SearchSpec(Schema):
    base: Annotated[OneOrMore[str], check(bool, "give the base config path (or a list of them)"), AfterValidator(_bases)]
    space: Annotated[Mapping[OverrideKey, SpaceEntry], check(bool, "the search space is empty")]
    study: Annotated[Name, check(lambda v: "/" not in v, "{value!r} may only hold letters, digits, '_', '-' and '.'")] = ""
    overrides: Overrides = field(default_factory=dict)
    objectives: Objectives | None = None  # default: the module's monitor, filled in by the driver once it built the model
    objective: Objectives | None = None  # the same, for one
    sampler: Component = None
    pruner: Component = None
    budget: Budget = field(default_factory=dict)
    slots: Count = 1
    devices: list[Integer] | None = None
    torchrun: Count | None = None
    constraints: Constraints = field(default_factory=dict)
    measure: Measure = field(default_factory=dict)
    storage: Storage = field(default_factory=dict)
    wandb: Literal["auto", "online", "offline", "disabled"] | None = None
    retrain: Retrain = field(default_factory=dict)
    description: str = ""
    path: Path = computed(None)
    entries: list[Entry] = computed(factory=list)
    n_trials: int | None = computed(None)
    timeout: float | None = computed(None)
    trial_timeout: float | None = computed(None)
    raw: dict[str, Any] = computed(factory=dict)

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def pruning(self) -> bool:
        return self.pruner.get("name", "none") != "none"

    def entry(self, name: str) -> Entry:
        return next(e for e in self.entries if e.name == name)


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
    fixed = {**(raw.get("overrides") or {}), **(overrides or {})}
    spec = validate(SearchSpec, {**raw, "study": str(study or raw.get("study") or path.stem), "overrides": fixed})
    spec.path, spec.raw = path, raw
    for key, value in spec.space.items():
        entry = _entry(f"space.{key}", key, value, {e.name: e for e in spec.entries})
        if any(e.name == entry.name for e in spec.entries):
            raise SpecError(f"space.{key}: parameter name {entry.name!r} is used twice; give one a name:")
        if key in fixed:
            raise SpecError(f"space.{key}: also fixed in overrides")
        spec.entries.append(entry)
    _check_objectives(spec, raw)
    _check_components(spec)
    spec.n_trials, spec.timeout, spec.trial_timeout = (spec.budget.get(k) for k in ("n_trials", "timeout", "trial_timeout"))
    if spec.n_trials is None and spec.timeout is None and spec.sampler["name"] != "grid":
        raise SpecError("budget: give n_trials and/or timeout")
    if spec.devices is not None and len(spec.devices) < spec.slots:
        raise SpecError(f"devices: {len(spec.devices)} device(s) cannot give {spec.slots} slots disjoint devices")
    if spec.retrain:
        spec.retrain.setdefault("top_k", 1)
    return spec


def _entry(where: str, key: str, raw: SpaceEntry, earlier: dict[str, Entry]) -> Entry:
    """The space entry at ``key``, its range or choices checked; ``earlier``: the entries before it."""
    kind = raw.type or ("categorical" if raw.choices is not None else None)
    if kind is None:
        raise SpecError(f"{where}: type must be float, int or categorical, got None")
    entry = Entry(key=key, name=raw.name or param_name(key), kind=kind)
    if kind == "categorical":
        if not isinstance(raw.choices, (dict, list)):
            raise SpecError(f"{where}: choices must be a list or a mapping of label -> value")
        entry.labels, entry.values = list(raw.choices), list(raw.choices.values() if isinstance(raw.choices, dict) else raw.choices)
        if not entry.labels:
            raise SpecError(f"{where}: empty choices")
        if any(label is not None and not isinstance(label, (str, int, float, bool)) for label in entry.labels):
            raise SpecError(f"{where}: a choice is not a scalar; give choices as a mapping label -> value")
        if len(set(map(repr, entry.labels))) != len(entry.labels):
            raise SpecError(f"{where}: duplicate choices")
        if any(v is not None for v in (raw.low, raw.high, raw.step)) or raw.log:
            raise SpecError(f"{where}: low/high/step/log do not apply to a categorical entry")
    else:
        _range(where, kind, raw, entry)
    for parent, allowed in raw.when.items():
        target = earlier.get(parent) or next((e for e in earlier.values() if e.key == parent), None)
        if target is None:
            raise SpecError(f"{where}.when: {parent!r} is not an earlier entry of the space")
        allowed = allowed if isinstance(allowed, list) else [allowed]
        bad = [v for v in allowed if v not in target.labels]
        if target.kind == "categorical" and bad:
            raise SpecError(f"{where}.when: {bad} not among the choices of {target.name} ({target.labels})")
        entry.when[target.name] = allowed
    return entry


def _range(where: str, kind: str, raw: SpaceEntry, entry: Entry) -> None:
    """A numeric entry's low, high, step and log (integers for an int entry)."""
    if raw.choices is not None:
        raise SpecError(f"{where}: choices only apply to type categorical")
    if raw.low is None or raw.high is None:
        raise SpecError(f"{where}: a {kind} entry needs low and high")
    for name in ("low", "high", "step"):
        value = getattr(raw, name)
        if kind == "int" and value is not None and not float(value).is_integer():
            raise SpecError(f"{where}.{name}: expected an integer, got {value!r}")
        setattr(entry, name, None if value is None else int(value) if kind == "int" else value)
    entry.log = raw.log
    if entry.step is not None and entry.step <= 0:
        raise SpecError(f"{where}.step: must be > 0, got {entry.step}")
    if entry.step is not None and entry.log:
        raise SpecError(f"{where}: step and log cannot be combined")
    if entry.low >= entry.high:
        raise SpecError(f"{where}: empty range: low={entry.low} must be below high={entry.high}")
    if entry.log and entry.low <= 0:
        raise SpecError(f"{where}: a log range needs low > 0, got low={entry.low}")


def _check_objectives(spec: SearchSpec, raw: dict[str, Any]) -> None:
    if spec.objectives == [] and "objectives" in raw:
        raise SpecError("objectives: give a list of {metric, direction}")
    spec.objectives = spec.objectives if spec.objectives is not None else spec.objective or []
    if len(spec.objectives) == 1 and spec.objectives[0].measured:
        raise SpecError(f"objectives[0].metric: {spec.objectives[0].metric} alone needs no training; add a trained metric")
    if len({o.metric for o in spec.objectives}) != len(spec.objectives):
        raise SpecError("objectives: a metric appears twice")


def _check_components(spec: SearchSpec) -> None:
    """The sampler and pruner: known names (aliases resolved), Optuna's arguments, fit for the objectives."""
    import optuna

    multi = spec.multi_objective
    spec.sampler = _component("sampler", spec.sampler, SAMPLERS, "tpe")
    spec.pruner = _component("pruner", spec.pruner, PRUNERS, "none" if multi else "median")
    if multi and spec.pruner["name"] != "none":
        raise SpecError(f"pruner.name: {spec.pruner['name']} cannot prune a multi-objective study (Optuna reports one value); use none")
    if multi and spec.sampler["name"] in ("cmaes", "gp"):
        raise SpecError(f"sampler.name: {spec.sampler['name']} is single-objective; use tpe, nsga2, random or qmc")
    for section, config, module, known in (("sampler", spec.sampler, optuna.samplers, SAMPLERS), ("pruner", spec.pruner, optuna.pruners, PRUNERS)):
        cls = getattr(module, known[config["name"]])
        parameters = inspect.signature(cls.__init__).parameters
        for key in config:
            if key != "name" and (key in ("self", "search_space") or key not in parameters):
                raise SpecError(f"{section}.{key}: not an argument of optuna.{cls.__name__}")
    if spec.sampler["name"] == "grid":
        grid_space(spec.entries)
    needs = {"cmaes": ("cmaes", "the 'cmaes' package (pip install cmaes)"), "gp": ("scipy", "scipy")}.get(spec.sampler["name"])
    if needs is not None and importlib.util.find_spec(needs[0]) is None:
        raise SpecError(f"sampler.name: {spec.sampler['name']} needs {needs[1]}")
    if spec.pruner["name"] == "threshold" and "lower" not in spec.pruner and "upper" not in spec.pruner:
        raise SpecError("pruner: threshold needs lower and/or upper")


def _component(section: str, raw: dict[str, Any] | None, known: dict[str, str], default: str) -> dict[str, Any]:
    config = dict(raw or {"name": default})
    name = str(config.get("name", default)).lower()
    if ALIASES.get(name, name) not in known:
        raise SpecError(f"{section}.name: unknown {section} {config.get('name')!r} (known: {', '.join(sorted(known))})")
    return {**config, "name": ALIASES.get(name, name)}
