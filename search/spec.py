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

Every mistake a user can fix raises ``SpecError`` with one line that names the entry.
"""
from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from search.space import Entry, param_name

__all__ = ["SpecError", "SearchSpec", "Objective", "load_spec", "build_sampler", "build_pruner", "grid_size", "MEASURED_METRICS"]

MEASURED_METRICS = ("params", "gflops", "latency_ms")
TOP_LEVEL = {
    "study", "base", "overrides", "space", "objectives", "objective", "sampler", "pruner", "budget", "slots",
    "devices", "torchrun", "constraints", "measure", "storage", "wandb", "retrain", "description",
}
SAMPLERS = {
    "tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler", "qmc": "QMCSampler", "gp": "GPSampler",
}
PRUNERS = {
    "median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner", "none": "NopPruner",
}
ALIASES = {"nsgaii": "nsga2", "nsga-ii": "nsga2", "cma-es": "cmaes", "cma_es": "cmaes", "nop": "none", "asha": "successive_halving"}


class SpecError(ValueError):
    """A search spec the user has to fix; the message names the entry."""


@dataclass
class Objective:
    metric: str
    direction: str = "maximize"
    reduce: str = "best"

    @property
    def measured(self) -> bool:
        return self.metric in MEASURED_METRICS


@dataclass
class SearchSpec:
    path: Path
    study: str
    base: list[str]
    overrides: dict[str, Any]
    entries: list[Entry]
    objectives: list[Objective]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    n_trials: int | None = None
    timeout: float | None = None
    trial_timeout: float | None = None
    slots: int = 1
    devices: list[int] | None = None
    torchrun: int | None = None
    constraints: dict[str, float] = field(default_factory=dict)
    measure: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, Any] = field(default_factory=dict)
    wandb: str | None = None
    retrain: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

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


def _number(where: str, value: Any, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, str):  # YAML reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise SpecError(f"{where}: expected a number, got {value!r}") from None
        else:
            raise SpecError(f"{where}: expected a number, got {value!r}")
    if not math.isfinite(value):
        raise SpecError(f"{where}: expected a finite number, got {value!r}")
    if integer:
        if float(value) != int(value):
            raise SpecError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    return float(value)


def _mapping(where: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _entry(key: str, raw: Any, earlier: dict[str, Entry]) -> Entry:
    where = f"space.{key}"
    if not isinstance(key, str) or not _KEY.match(key):
        raise SpecError(f"{where}: not a dotted config key")
    if not isinstance(raw, dict):
        raise SpecError(f"{where}: expected a mapping such as {{type: float, low: 0.1, high: 1.0}}")
    unknown = set(raw) - {"type", "low", "high", "step", "log", "choices", "when", "name"}
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {sorted(unknown)}")
    kind = raw.get("type") or ("categorical" if "choices" in raw else None)
    if kind not in ("float", "int", "categorical"):
        raise SpecError(f"{where}: type must be float, int or categorical, got {kind!r}")
    name = raw.get("name") or param_name(key)
    entry = Entry(key=key, name=str(name), kind=kind)
    if kind == "categorical":
        choices = raw.get("choices")
        if isinstance(choices, dict):
            entry.labels, entry.values = list(choices.keys()), list(choices.values())
        elif isinstance(choices, list):
            entry.labels, entry.values = list(choices), list(choices)
        else:
            raise SpecError(f"{where}: choices must be a list or a mapping of label -> value")
        if not entry.labels:
            raise SpecError(f"{where}: empty choices")
        for label in entry.labels:
            if label is not None and not isinstance(label, (str, int, float, bool)):
                raise SpecError(f"{where}: choice {label!r} is not a scalar; give choices as a mapping label -> value")
        if len(set(map(repr, entry.labels))) != len(entry.labels):
            raise SpecError(f"{where}: duplicate choices")
        if any(k in raw for k in ("low", "high", "step", "log")):
            raise SpecError(f"{where}: low/high/step/log do not apply to a categorical entry")
    else:
        if "choices" in raw:
            raise SpecError(f"{where}: choices only apply to type categorical")
        if "low" not in raw or "high" not in raw:
            raise SpecError(f"{where}: a {kind} entry needs low and high")
        integer = kind == "int"
        entry.low = _number(f"{where}.low", raw["low"], integer)
        entry.high = _number(f"{where}.high", raw["high"], integer)
        entry.log = bool(raw.get("log", False))
        if raw.get("step") is not None:
            entry.step = _number(f"{where}.step", raw["step"], integer)
            if entry.step <= 0:
                raise SpecError(f"{where}.step: must be > 0, got {entry.step}")
            if entry.log:
                raise SpecError(f"{where}: step and log cannot be combined")
        if entry.low >= entry.high:
            raise SpecError(f"{where}: empty range: low={entry.low} must be below high={entry.high}")
        if entry.log and entry.low <= 0:
            raise SpecError(f"{where}: a log range needs low > 0, got low={entry.low}")
    when = _mapping(f"{where}.when", raw.get("when"))
    for parent, allowed in when.items():
        target = earlier.get(parent) or next((e for e in earlier.values() if e.key == parent), None)
        if target is None:
            raise SpecError(f"{where}.when: {parent!r} is not an earlier entry of the space")
        allowed = allowed if isinstance(allowed, list) else [allowed]
        if target.kind == "categorical":
            bad = [v for v in allowed if v not in target.labels]
            if bad:
                raise SpecError(f"{where}.when: {bad} not among the choices of {target.name} ({target.labels})")
        entry.when[target.name] = allowed
    return entry


def _component(section: str, raw: Any, table: dict[str, str], default: str) -> dict[str, Any]:
    if raw is None:
        raw = {"name": default}
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = dict(_mapping(section, raw))
    name = str(raw.get("name", default)).lower()
    name = ALIASES.get(name, name)
    if name not in table:
        raise SpecError(f"{section}.name: unknown {section} {raw.get('name')!r} (known: {', '.join(sorted(table))})")
    raw["name"] = name
    return raw


def _check_kwargs(section: str, cls: Any, kwargs: dict[str, Any], reserved: tuple[str, ...] = ()) -> None:
    parameters = inspect.signature(cls.__init__).parameters
    for key in kwargs:
        if key in reserved or key not in parameters or key == "self":
            raise SpecError(f"{section}.{key}: not an argument of optuna.{cls.__name__}")


def load_spec(path: str | Path, overrides: dict[str, Any] | None = None, study: str | None = None,
              pruner: str | None = None) -> SearchSpec:
    """Read and check a spec. ``overrides`` are extra fixed dotted keys (the CLI's ``--set``),
    ``study`` replaces the spec's study name, ``pruner`` its pruner (by name, with the pruner's
    defaults: ``none`` runs the same study without pruning)."""
    path = Path(path)
    if not path.exists():
        raise SpecError(f"{path}: no such search spec")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML ({str(error).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a search spec is a mapping")
    unknown = sorted(set(raw) - TOP_LEVEL)
    if unknown:
        raise SpecError(f"{unknown[0]}: unknown spec entry (known: {', '.join(sorted(TOP_LEVEL))})")

    if pruner is not None:
        raw["pruner"] = {"name": pruner}
    study = str(study or raw.get("study") or path.stem)
    if not re.match(r"^[A-Za-z0-9_.-]+$", study):
        raise SpecError(f"study: {study!r} may only hold letters, digits, '_', '-' and '.'")
    base = raw.get("base")
    base = [base] if isinstance(base, str) else base
    if not base or not all(isinstance(b, str) for b in base):
        raise SpecError("base: give the base config path (or a list of them)")
    for b in base:
        if not Path(b).exists():
            raise SpecError(f"base: {b}: no such config file")

    fixed = dict(_mapping("overrides", raw.get("overrides")))
    fixed.update(overrides or {})
    for key in fixed:
        if not isinstance(key, str) or not _KEY.match(key):
            raise SpecError(f"overrides.{key}: not a dotted config key")

    space = _mapping("space", raw.get("space"))
    if not space:
        raise SpecError("space: the search space is empty")
    entries: dict[str, Entry] = {}
    for key, value in space.items():
        entry = _entry(key, value, entries)
        if entry.name in entries:
            raise SpecError(f"space.{key}: parameter name {entry.name!r} is used twice; give one a name:")
        if key in fixed:
            raise SpecError(f"space.{key}: also fixed in overrides")
        entries[entry.name] = entry

    objectives_raw = raw.get("objectives", raw.get("objective"))
    if objectives_raw is None:  # the module's monitor, filled in by the driver once it built the model
        objectives_raw = []
    if isinstance(objectives_raw, dict):
        objectives_raw = [objectives_raw]
    if not isinstance(objectives_raw, list) or (not objectives_raw and "objectives" in raw):
        raise SpecError("objectives: give a list of {metric, direction}")
    objectives = []
    for i, o in enumerate(objectives_raw):
        where = f"objectives[{i}]"
        if isinstance(o, str):
            o = {"metric": o}
        o = _mapping(where, o)
        bad = set(o) - {"metric", "direction", "reduce"}
        if bad:
            raise SpecError(f"{where}: unknown field(s) {sorted(bad)}")
        if not o.get("metric"):
            raise SpecError(f"{where}.metric: missing")
        direction = str(o.get("direction", "maximize")).lower()
        direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
        if direction not in ("maximize", "minimize"):
            raise SpecError(f"{where}.direction: must be maximize or minimize, got {o.get('direction')!r}")
        reduce = str(o.get("reduce", "best"))
        if reduce not in ("best", "last"):
            raise SpecError(f"{where}.reduce: must be best or last, got {reduce!r}")
        objectives.append(Objective(str(o["metric"]), direction, reduce))
    if objectives and objectives[0].measured and len(objectives) == 1:
        raise SpecError(f"objectives[0].metric: {objectives[0].metric} alone needs no training; add a trained metric")
    if len({o.metric for o in objectives}) != len(objectives):
        raise SpecError("objectives: a metric appears twice")

    multi = len(objectives) > 1
    sampler = _component("sampler", raw.get("sampler"), SAMPLERS, "tpe")
    pruner = _component("pruner", raw.get("pruner"), PRUNERS, "none" if multi else "median")
    if multi and pruner["name"] != "none":
        raise SpecError(f"pruner.name: {pruner['name']} cannot prune a multi-objective study (Optuna reports one value); use none")
    if multi and sampler["name"] in ("cmaes", "gp"):
        raise SpecError(f"sampler.name: {sampler['name']} is single-objective; use tpe, nsga2, random or qmc")
    _validate_component("sampler", sampler, entries=list(entries.values()))
    _validate_component("pruner", pruner)

    budget = _mapping("budget", raw.get("budget"))
    bad = set(budget) - {"n_trials", "timeout", "trial_timeout"}
    if bad:
        raise SpecError(f"budget.{sorted(bad)[0]}: unknown field (n_trials, timeout, trial_timeout)")
    n_trials = budget.get("n_trials")
    n_trials = None if n_trials is None else _number("budget.n_trials", n_trials, integer=True)
    if n_trials is not None and n_trials < 1:
        raise SpecError("budget.n_trials: must be >= 1")
    timeout = None if budget.get("timeout") is None else _number("budget.timeout", budget["timeout"])
    trial_timeout = None if budget.get("trial_timeout") is None else _number("budget.trial_timeout", budget["trial_timeout"])
    for label, value in (("budget.timeout", timeout), ("budget.trial_timeout", trial_timeout)):
        if value is not None and value <= 0:
            raise SpecError(f"{label}: must be > 0 seconds")
    if n_trials is None and timeout is None and sampler["name"] != "grid":
        raise SpecError("budget: give n_trials and/or timeout")

    slots = _number("slots", raw.get("slots", 1), integer=True)
    if slots < 1:
        raise SpecError("slots: must be >= 1")
    devices = raw.get("devices")
    if devices is not None:
        if not isinstance(devices, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in devices):
            raise SpecError("devices: give a list of GPU indices")
        if len(devices) < slots:
            raise SpecError(f"devices: {len(devices)} device(s) cannot give {slots} slots disjoint devices")
    torchrun = raw.get("torchrun")
    if torchrun is not None:
        torchrun = _number("torchrun", torchrun, integer=True)
        if torchrun < 1:
            raise SpecError("torchrun: number of processes per trial must be >= 1")

    constraints = _mapping("constraints", raw.get("constraints"))
    for key, value in constraints.items():
        if key not in ("max_params", "max_gflops"):
            raise SpecError(f"constraints.{key}: unknown constraint (max_params, max_gflops)")
        constraints[key] = _number(f"constraints.{key}", value)
    measure = _mapping("measure", raw.get("measure"))
    bad = set(measure) - {"input_shape", "latency_batch_size", "latency_warmup", "latency_iterations", "enabled"}
    if bad:
        raise SpecError(f"measure.{sorted(bad)[0]}: unknown field")
    storage = _mapping("storage", raw.get("storage"))
    bad = set(storage) - {"url", "heartbeat_interval", "grace_period", "max_retry"}
    if bad:
        raise SpecError(f"storage.{sorted(bad)[0]}: unknown field (url, heartbeat_interval, grace_period, max_retry)")
    wandb = raw.get("wandb")
    if wandb is not None and wandb not in ("auto", "online", "offline", "disabled"):
        raise SpecError(f"wandb: must be auto, online, offline or disabled, got {wandb!r}")
    retrain = _mapping("retrain", raw.get("retrain"))
    bad = set(retrain) - {"top_k", "seeds"}
    if bad:
        raise SpecError(f"retrain.{sorted(bad)[0]}: unknown field (top_k, seeds)")
    if retrain:
        retrain["top_k"] = _number("retrain.top_k", retrain.get("top_k", 1), integer=True)
        seeds = retrain.get("seeds", [1, 2, 3])
        if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
            raise SpecError("retrain.seeds: give a list of integer seeds")

    return SearchSpec(
        path=path, study=study, base=list(base), overrides=fixed, entries=list(entries.values()),
        objectives=objectives, sampler=sampler, pruner=pruner, n_trials=n_trials, timeout=timeout,
        trial_timeout=trial_timeout, slots=slots, devices=devices, torchrun=torchrun, constraints=constraints,
        measure=measure, storage=storage, wandb=wandb, retrain=retrain, raw=raw,
    )


def _grid_space(entries: list[Entry]) -> dict[str, list[Any]]:
    space = {}
    for e in entries:
        if e.kind == "categorical":
            space[e.name] = list(e.labels)
        elif e.kind == "int" and not e.log:
            space[e.name] = list(range(int(e.low), int(e.high) + 1, int(e.step or 1)))
        elif e.kind == "float" and e.step and not e.log:
            n = int(round((e.high - e.low) / e.step))
            space[e.name] = [round(e.low + i * e.step, 12) for i in range(n + 1)]
        else:
            raise SpecError(f"space.{e.key}: the grid sampler needs categorical entries, int ranges or float ranges with a step")
    return space


def _validate_component(section: str, config: dict[str, Any], entries: list[Entry] | None = None) -> None:
    import optuna

    kwargs = {k: v for k, v in config.items() if k != "name"}
    if section == "sampler":
        name = config["name"]
        cls = getattr(optuna.samplers, SAMPLERS[name])
        _check_kwargs(section, cls, kwargs, reserved=("search_space",))
        if name == "grid":
            _grid_space(entries or [])
        if name == "cmaes":
            try:
                import cmaes  # noqa: F401
            except ImportError:
                raise SpecError("sampler.name: cmaes needs the 'cmaes' package (pip install cmaes)") from None
        if name == "gp":
            try:
                import scipy  # noqa: F401
            except ImportError:
                raise SpecError("sampler.name: gp needs scipy") from None
    else:
        cls = getattr(optuna.pruners, PRUNERS[config["name"]])
        _check_kwargs(section, cls, kwargs)
        if config["name"] == "threshold" and "lower" not in kwargs and "upper" not in kwargs:
            raise SpecError("pruner: threshold needs lower and/or upper")


def build_sampler(config: dict[str, Any], entries: list[Entry], seed_offset: int = 0) -> Any:
    """The spec's sampler. Several drivers on one study get seeds ``seed + driver ordinal`` so that
    their random start-up trials differ; one uninterrupted driver uses the seed as written."""
    import optuna

    name = config["name"]
    kwargs = {k: v for k, v in config.items() if k != "name"}
    if kwargs.get("seed") is None and name not in ("grid",):
        kwargs["seed"] = 0
    if "seed" in kwargs and kwargs["seed"] is not None:
        kwargs["seed"] = int(kwargs["seed"]) + seed_offset
    if name == "grid":

        class GridSampler(optuna.samplers.GridSampler):
            # Optuna's GridSampler calls study.stop() when the grid is exhausted, which only works
            # inside study.optimize; the driver bounds the trial count by the grid size instead.
            def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
                return None

        return GridSampler(_grid_space(entries), **kwargs)
    return getattr(optuna.samplers, SAMPLERS[name])(**kwargs)


def grid_size(entries: list[Entry]) -> int:
    n = 1
    for values in _grid_space(entries).values():
        n *= len(values)
    return n


def build_pruner(config: dict[str, Any] | None) -> Any:
    """The spec's pruner; the driver and every trial's rank 0 build it identically (Optuna does
    not store pruners)."""
    import optuna

    config = dict(config or {"name": "none"})
    name = config.pop("name", "none")
    return getattr(optuna.pruners, PRUNERS[name])(**config)
