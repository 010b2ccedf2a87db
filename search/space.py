"""The search space: dotted config keys mapped to Optuna distributions.

An entry samples one config value. Its key is the YAML path of that value in the composed config
(``model.init_args.optimizer.init_args.lr``); its Optuna parameter name defaults to the key without
the ``init_args`` segments (``model.optimizer.lr``). An entry with ``when`` is sampled only if the
named earlier entries took one of the given values (a conditional space: ``momentum`` only for SGD).

The samplers and pruners a spec may name are Optuna's (``SAMPLERS``, ``PRUNERS``); the driver and
every trial build them with ``build_sampler`` and ``build_pruner``. Sampling happens in the driver alone. The same ``suggest_params`` replayed on a re-attached trial
returns the stored values, so a worker never samples. Sampled values reach the config as dotted
keys through ``experiments.compose.override_tree``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from core.specs import SpecError

__all__ = [
    "Entry", "suggest_params", "params_to_values", "param_name", "SAMPLERS", "PRUNERS", "build_sampler", "build_pruner",
    "grid_space", "grid_size",
]

SAMPLERS = {
    "tpe": "TPESampler", "random": "RandomSampler", "grid": "GridSampler", "cmaes": "CmaEsSampler",
    "nsga2": "NSGAIISampler", "nsga3": "NSGAIIISampler", "qmc": "QMCSampler", "gp": "GPSampler",
}
PRUNERS = {
    "median": "MedianPruner", "percentile": "PercentilePruner", "hyperband": "HyperbandPruner",
    "successive_halving": "SuccessiveHalvingPruner", "threshold": "ThresholdPruner", "none": "NopPruner",
}


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
