"""Check a search spec against its config before any trial: every entry of the space, at each of
its candidate values, must compose with the base config(s) and the fixed overrides, and a failure
names the spec entry. The objective of a spec that names none is the module's ``monitor``.

Composition is ``experiments.recipe.ConfigComposer``'s, the same as ``reproduce``'s.
"""
from __future__ import annotations

from typing import Any

from experiments.recipe import ConfigComposer, describe_config_error, override_tree
from search.space import Entry
from search.spec import SearchSpec, SpecError

__all__ = ["validate_space", "module_objectives"]


def _reason(error: BaseException) -> str:
    """The innermost reason of a jsonargparse error; the caller names the spec entry."""
    return describe_config_error(error, with_key=False)


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
    """Parse the base configs, the fixed overrides (``overrides`` and ``trial_overrides``) and every
    probe of the space; a failure names the spec entry. Returns the config a trial composes before
    its parameters: base + ``overrides`` + ``trial_overrides``."""
    try:
        composer.parse(spec.base)
    except Exception as error:
        raise SpecError(f"base: {', '.join(spec.base)} does not parse: {_reason(error)}") from None
    fixed_values = spec.trial_fixed
    try:
        config = composer.parse(spec.base, override_tree(fixed_values))
    except Exception as error:
        culprit = composer.culprit(spec.base, fixed_values)
        if culprit is not None:
            section = "overrides" if culprit[0] in spec.overrides else "trial_overrides"
            raise SpecError(f"{section}.{culprit[0]}: {_reason(culprit[1])}") from None
        raise SpecError(f"overrides: {_reason(error)}") from None
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
                raise SpecError(f"space.{e.key}: {_reason(error)} (value {params[e.name]!r})") from None
        raise SpecError(f"space: the combination {params} does not parse: {_reason(first_error)}")
    return config


def module_objectives(composer: ConfigComposer, config: Any) -> list[dict[str, Any]]:
    """The objective of a spec that names none: the monitor of the config's module."""
    from search.trial import default_objectives

    model, _ = composer.instantiate(config)
    return default_objectives(model)
