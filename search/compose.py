"""Compose, check and measure trial configs in the driver, without training.

The driver parses ``base config(s) + trial override`` with convlab's own LightningCLI parser (no
trainer, no run directory, no seed), so an unknown key or a wrongly typed value in the search
space fails before any trial, and a trial's model can be built to count its parameters and FLOPs
on one input of the data's input size before it costs a GPU hour.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from search.space import Entry, override_tree
from search.spec import SearchSpec, SpecError

__all__ = ["ConfigComposer", "validate_space", "measure_model", "error_reason", "module_objectives"]

_LOCK = threading.Lock()


def error_reason(error: BaseException) -> str:
    """The innermost reason of a jsonargparse error ("Option 'x' is not accepted"); the spec entry
    that caused it is named by the caller."""
    from experiments.cli import describe_config_error

    return describe_config_error(error, with_key=False)


class ConfigComposer:
    """convlab's config parser, reused for every composition (building it imports Lightning)."""

    def __init__(self) -> None:
        from experiments.cli import ConvlabCLI

        class _ParserOnly(ConvlabCLI):
            def parse_arguments(self, parser: Any, args: Any) -> None:
                self.config = None

            def _parse_ckpt_path(self) -> None:
                pass

            def _set_seed(self) -> None:
                pass

            def _add_instantiators(self) -> None:
                pass

            def instantiate_classes(self) -> None:
                pass

        self.parser = _ParserOnly(args=[], run=False).parser

    def parse(self, base: list[str], override: dict[str, Any] | None = None) -> Any:
        args: list[str] = []
        for path in base:
            args += ["--config", str(path)]
        if override:
            args += ["--config", json.dumps(override, default=str)]
        with _LOCK:
            return self.parser.parse_args(args)

    def dump(self, config: Any) -> str:
        with _LOCK:
            return self.parser.dump(config, skip_none=False)

    def to_dict(self, config: Any) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.dump(config))

    def instantiate_model(self, config: Any) -> Any:
        with _LOCK:
            init = self.parser.instantiate_classes(config)
        return init.model, init.data


def _probes(entries: list[Entry]) -> list[dict[str, Any]]:
    """Parameter sets that give every entry each of its candidate values at least once, with
    conditional entries tried where their condition holds."""
    width = max(len(e.candidates()) for e in entries)
    probes = []
    for i in range(width):
        params: dict[str, Any] = {}
        for e in entries:
            if e.active(params):
                c = e.candidates()
                params[e.name] = c[i % len(c)]
        probes.append(params)
    for e in entries:
        if not e.when:
            continue
        for value in e.candidates():
            if any(p.get(e.name) == value for p in probes):
                continue
            params = {}
            for other in entries:
                if other.name in e.when:
                    params[other.name] = e.when[other.name][0]
                elif other is e:
                    params[e.name] = value
                elif other.active(params):
                    params[other.name] = other.candidates()[0]
            if e.active(params):
                probes.append(params)
    return probes


def validate_space(spec: SearchSpec, composer: ConfigComposer) -> Any:
    """Parse the base configs, the fixed overrides and every probe of the space; a failure names
    the spec entry. Returns the config composed with the fixed overrides."""
    try:
        composer.parse(spec.base)
    except Exception as error:
        raise SpecError(f"base: {', '.join(spec.base)} does not parse: {error_reason(error)}") from None
    fixed = override_tree(spec.overrides)
    for key, value in spec.overrides.items():
        try:
            composer.parse(spec.base, override_tree({key: value}))
        except Exception as error:
            raise SpecError(f"overrides.{key}: {error_reason(error)}") from None
    try:
        config = composer.parse(spec.base, fixed)
    except Exception as error:
        raise SpecError(f"overrides: {error_reason(error)}") from None
    fixed_values = dict(spec.overrides)
    for params in _probes(spec.entries):
        values = {e.key: e.config_value(params[e.name]) for e in spec.entries if e.name in params}
        try:
            composer.parse(spec.base, override_tree({**fixed_values, **values}))
            continue
        except Exception as error:
            first_error = error
        # Name the culprit: the first entry that fails with its value alone (parents included).
        for e in spec.entries:
            if e.name not in params:
                continue
            alone = {p.key: p.config_value(params[p.name]) for p in spec.entries if p.name in e.when}
            alone[e.key] = e.config_value(params[e.name])
            try:
                composer.parse(spec.base, override_tree({**fixed_values, **alone}))
            except Exception as error:
                raise SpecError(f"space.{e.key}: {error_reason(error)} (value {params[e.name]!r})") from None
        raise SpecError(f"space: the combination {params} does not parse: {error_reason(first_error)}")
    return config


def measure_model(composer: ConfigComposer, config: Any, shape: tuple[int, ...] | None = None) -> dict[str, float]:
    """Parameter count and forward GFLOPs of the module's network on one input (``shape``, else
    the module's ``example_input_array``), counted on CPU without training."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model, _ = composer.instantiate_model(config)
    out: dict[str, float] = {"params": float(sum(p.numel() for p in model.parameters()))}
    example = torch.zeros(shape) if shape is not None else model.example_input_array
    if example is not None:
        model.eval()
        network = getattr(model, "network", model)
        inputs = example if isinstance(example, tuple) else (example,)
        with _LOCK, torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(*inputs)
        out["gflops"] = counter.get_total_flops() / 1e9
    del model
    return out


def module_objectives(composer: ConfigComposer, config: Any) -> list[dict[str, Any]]:
    """The objective of a spec that names none: the monitor of the config's module."""
    from search.trial import default_objectives

    model, _ = composer.instantiate_model(config)
    return default_objectives(model)
