"""The search space: dotted config keys mapped to Optuna distributions.

An entry samples one config value. Its key is the YAML path of that value in the composed config
(``model.init_args.optimizer.init_args.lr``); its Optuna parameter name defaults to the key without
the ``init_args`` segments (``model.optimizer.lr``). An entry with ``when`` is sampled only if the
named earlier entries took one of the given values (a conditional space: ``momentum`` only for SGD).

Sampling happens in the driver alone. The same ``suggest_params`` replayed on a re-attached trial
returns the stored values, so a worker never samples. Sampled values reach the config as dotted
keys through ``experiments.compose.override_tree``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Entry", "suggest_params", "params_to_values", "param_name"]


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
