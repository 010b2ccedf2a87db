"""The search space: dotted config keys mapped to Optuna distributions.

An entry samples one config value. Its key is the YAML path of that value in the composed config
(``model.init_args.optimizer.init_args.lr``); its Optuna parameter name defaults to the key without
the ``init_args`` segments (``model.optimizer.lr``). An entry with ``when`` is sampled only if the
named earlier entries took one of the given values (a conditional space: ``momentum`` only for SGD).

A search spec states each entry as a ``SpaceEntry``; ``make_entries`` checks the ranges, choices
and conditions and gives the ``Entry`` list. The samplers and pruners a spec may name are Optuna's
(``SAMPLERS``, ``PRUNERS``; ``component`` checks one); the driver and every trial build them with
``build_sampler`` and ``build_pruner``.

Sampling happens in the driver alone. The same ``suggest_params`` replayed on a re-attached trial
returns the stored values, so a worker never samples. Sampled values reach the config as dotted
keys through ``experiments.compose.override_tree``.
"""
from __future__ import annotations

import copy
import importlib.util
import inspect
from dataclasses import dataclass, field
from typing import Any, Literal

from core.specs import Flag, Mapping, Number, Schema, SpecError, spec_dataclass
from experiments.recipe import get_dotted

__all__ = [
    "Entry", "suggest_params", "params_to_values", "param_name", "SAMPLERS", "PRUNERS", "build_sampler", "build_pruner",
    "grid_space", "grid_size", "SpaceEntry", "make_entries", "component", "default_params",
]

SAMPLERS = {
    "tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler", "qmc": "QMCSampler", "gp": "GPSampler",
}
PRUNERS = {
    "median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner", "none": "NopPruner",
}
ALIASES = {"nsgaii": "nsga2", "nsga-ii": "nsga2", "cma-es": "cmaes", "cma_es": "cmaes", "nop": "none", "asha": "successive_halving"}


def param_name(key: str) -> str:
    """``model.init_args.optimizer.init_args.lr`` -> ``model.optimizer.lr``."""
    return ".".join(part for part in key.split(".") if part != "init_args")


@dataclass
class Entry:
    """One searched config value.

    Attributes:
        key: dotted config key.
        name: Optuna parameter name.
        kind: ``float``, ``int`` or ``categorical``.
        low, high, step, log: range of a numeric entry.
        choices: categorical choices; ``labels`` are what Optuna stores (the choices themselves,
            or the keys of a mapping whose values are config values such as a whole optimizer).
        when: ``{parameter name: [allowed values]}``; all must hold for the entry to be sampled.
    """

    key: str
    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    labels: list[Any] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    when: dict[str, list[Any]] = field(default_factory=dict)

    def active(self, params: dict[str, Any]) -> bool:
        return all(name in params and params[name] in allowed for name, allowed in self.when.items())

    def suggest(self, trial: Any) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, self.low, self.high, step=self.step or 1, log=self.log)
        return trial.suggest_categorical(self.name, self.labels)

    def config_value(self, label: Any) -> Any:
        """The config value for a sampled parameter (a mapping choice's value, else itself)."""
        if self.kind == "categorical":
            return copy.deepcopy(self.values[self.labels.index(label)])
        return label

    def candidates(self) -> list[Any]:
        """Values that exercise the entry's range when validating a spec (ends and every choice)."""
        if self.kind == "categorical":
            return list(self.labels)
        return [self.low, self.high]

    def distribution(self) -> Any:
        import optuna.distributions as d

        if self.kind == "float":
            return d.FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return d.IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        return d.CategoricalDistribution(self.labels)


def suggest_params(trial: Any, entries: list[Entry]) -> dict[str, Any]:
    """Sample (or, on a re-attached trial, read back) every active entry, in order."""
    params: dict[str, Any] = {}
    for entry in entries:
        if entry.active(params):
            params[entry.name] = entry.suggest(trial)
    return params


_UNSET = object()


def default_params(entries: list[Entry], config: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The base config's own value of every active entry as Optuna parameters (a study's trial 0),
    and one note for each value the space cannot hold as it is: a number outside its range is
    clipped to the bound (and put on the entry's step), a value that is none of the choices, or a key
    the config does not set, is left to the sampler.

    ``config`` is the composed config as a nested dict (``ConfigComposer.to_dict``); a mapping
    choice matches when every key it states has the config's value (the config may say more).
    """
    params: dict[str, Any] = {}
    notes: list[str] = []
    for entry in entries:
        if not entry.active(params):
            continue
        value = get_dotted(config, entry.key, _UNSET)
        if value is _UNSET:
            notes.append(f"{entry.key}: not set in the base config; trial 0 samples it")
            continue
        if entry.kind == "categorical":
            label = next((lab for lab, choice in zip(entry.labels, entry.values) if _matches(choice, value)), _UNSET)
            if label is _UNSET:
                notes.append(f"{entry.key}: the default {value!r} is none of the choices; trial 0 samples it")
                continue
            params[entry.name] = label
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            notes.append(f"{entry.key}: the default {value!r} is not a number; trial 0 samples it")
            continue
        params[entry.name] = held = _held(entry, value)
        if held != value and entry.low <= value <= entry.high:
            notes.append(f"{entry.key}: the default {value!r} is not on the entry's step; trial 0 uses {held!r}, the nearest value on it")
        elif held != value:
            notes.append(f"{entry.key}: the default {value!r} lies outside the space; trial 0 uses {held!r}, "
                         f"its {'low' if value < entry.low else 'high'} bound")
    return params, notes


def _matches(choice: Any, value: Any) -> bool:
    if isinstance(choice, dict):
        return isinstance(value, dict) and all(k in value and _matches(v, value[k]) for k, v in choice.items())
    if isinstance(choice, (list, tuple)):
        return isinstance(value, (list, tuple)) and len(choice) == len(value) and all(map(_matches, choice, value))
    return choice == value and type(choice) is not bool or choice is value


def _held(entry: Entry, value: float) -> float | int:
    """``value`` clipped into ``entry``'s range and put on its step (ints rounded)."""
    held = min(max(value, entry.low), entry.high)
    if entry.step:
        held = entry.low + round((held - entry.low) / entry.step) * entry.step
        held = held if held <= entry.high else held - entry.step
    if entry.kind == "int":
        return int(round(held))
    return round(held, 12) if entry.step else float(held) if held != value else value


def params_to_values(params: dict[str, Any], entries: list[Entry]) -> dict[str, Any]:
    """Optuna parameters -> ``{dotted config key: config value}`` for the active entries."""
    return {e.key: e.config_value(params[e.name]) for e in entries if e.name in params}


def grid_space(entries: list[Entry]) -> dict[str, list[Any]]:
    """Every value of every entry, for Optuna's grid sampler (``SpecError`` for a range it cannot list)."""
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


def grid_size(entries: list[Entry]) -> int:
    n = 1
    for values in grid_space(entries).values():
        n *= len(values)
    return n


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

        return GridSampler(grid_space(entries), **kwargs)
    return getattr(optuna.samplers, SAMPLERS[name])(**kwargs)


def build_pruner(config: dict[str, Any] | None) -> Any:
    """The spec's pruner; the driver and every trial's rank 0 build it identically (Optuna does
    not store pruners)."""
    import optuna

    config = dict(config or {"name": "none"})
    name = config.pop("name", "none")
    return getattr(optuna.pruners, PRUNERS[name])(**config)


@spec_dataclass
class SpaceEntry(Schema):
    """One entry of a spec's ``space`` as the file states it: a ``type`` (categorical when it gives
    ``choices``, a list or a mapping label -> config value), a range ``low``..``high`` (``step``,
    ``log``), ``when`` {earlier entry: allowed value(s)} and an Optuna ``name``."""

    type: Literal["float", "int", "categorical"] | None = None
    low: Number | None = None
    high: Number | None = None
    step: Number | None = None
    log: Flag = False
    choices: Any = None
    when: Mapping[str, Any] = field(default_factory=dict)
    name: str | None = None


def make_entries(space: dict[str, SpaceEntry]) -> list[Entry]:
    """The entries of a spec's ``space`` {dotted key: entry}, in order; ``SpecError`` names the first bad one."""
    entries: dict[str, Entry] = {}
    for key, raw in space.items():
        where = f"space.{key}"
        kind = raw.type or ("categorical" if raw.choices is not None else None)
        if kind is None:
            raise SpecError(f"{where}: type must be float, int or categorical, got None")
        entry = Entry(key=key, name=raw.name or param_name(key), kind=kind)
        if kind == "categorical":
            _choices(where, raw, entry)
        else:
            _range(where, kind, raw, entry)
        for parent, allowed in raw.when.items():
            target = entries.get(parent) or next((e for e in entries.values() if e.key == parent), None)
            if target is None:
                raise SpecError(f"{where}.when: {parent!r} is not an earlier entry of the space")
            entry.when[target.name] = allowed = allowed if isinstance(allowed, list) else [allowed]
            bad = [v for v in allowed if v not in target.labels]
            if target.kind == "categorical" and bad:
                raise SpecError(f"{where}.when: {bad} not among the choices of {target.name} ({target.labels})")
        if entry.name in entries:
            raise SpecError(f"{where}: parameter name {entry.name!r} is used twice; give one a name:")
        entries[entry.name] = entry
    return list(entries.values())


def _choices(where: str, raw: SpaceEntry, entry: Entry) -> None:
    if not isinstance(raw.choices, (dict, list)):
        raise SpecError(f"{where}: choices must be a list or a mapping of label -> value")
    entry.labels = list(raw.choices)
    entry.values = list(raw.choices.values()) if isinstance(raw.choices, dict) else list(raw.choices)
    if not entry.labels:
        raise SpecError(f"{where}: empty choices")
    for label in entry.labels:
        if label is not None and not isinstance(label, (str, int, float, bool)):
            raise SpecError(f"{where}: choice {label!r} is not a scalar; give choices as a mapping label -> value")
    if len(set(map(repr, entry.labels))) != len(entry.labels):
        raise SpecError(f"{where}: duplicate choices")
    if any(v is not None for v in (raw.low, raw.high, raw.step)) or raw.log:
        raise SpecError(f"{where}: low/high/step/log do not apply to a categorical entry")


def _range(where: str, kind: str, raw: SpaceEntry, entry: Entry) -> None:
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


def component(section: str, raw: dict[str, Any] | None, entries: list[Entry], multi_objective: bool) -> dict[str, Any]:
    """A spec's ``sampler`` or ``pruner`` ({name, **Optuna arguments}, name aliases resolved),
    checked against Optuna's class, the space (grid) and the number of objectives."""
    import optuna

    known, module = (SAMPLERS, optuna.samplers) if section == "sampler" else (PRUNERS, optuna.pruners)
    default = "tpe" if section == "sampler" else "none" if multi_objective else "median"
    config = dict(raw or {"name": default})
    name = ALIASES.get(str(config.get("name", default)).lower(), str(config.get("name", default)).lower())
    if name not in known:
        raise SpecError(f"{section}.name: unknown {section} {config.get('name')!r} (known: {', '.join(sorted(known))})")
    config["name"] = name
    cls = getattr(module, known[name])
    for key in config:
        if key != "name" and (key in ("self", "search_space") or key not in inspect.signature(cls.__init__).parameters):
            raise SpecError(f"{section}.{key}: not an argument of optuna.{cls.__name__}")
    if multi_objective and section == "pruner" and name != "none":
        raise SpecError(f"pruner.name: {name} cannot prune a multi-objective study (Optuna reports one value); use none")
    if multi_objective and name in ("cmaes", "gp"):
        raise SpecError(f"sampler.name: {name} is single-objective; use tpe, nsga2, random or qmc")
    needs = {"cmaes": ("cmaes", "the 'cmaes' package (pip install cmaes)"), "gp": ("scipy", "scipy")}.get(name)
    if section == "sampler" and needs is not None and importlib.util.find_spec(needs[0]) is None:
        raise SpecError(f"sampler.name: {name} needs {needs[1]}")
    if name == "grid":
        grid_space(entries)
    if name == "threshold" and "lower" not in config and "upper" not in config:
        raise SpecError("pruner: threshold needs lower and/or upper")
    return config
