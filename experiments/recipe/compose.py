"""Compose and check configs without training: base config(s) + a small override, parsed by
convlab's own LightningCLI parser.

A search trial and a table row are both *base config(s) + a small override* (dotted keys such as
``model.init_args.optimizer.init_args.lr``). ``ConfigComposer`` parses such a composition with
convlab's own LightningCLI parser (no trainer, no run directory, no seed), so that an unknown key
or a wrongly typed value fails before anything is launched, and builds the model and data exactly
as ``fit`` would, to measure the network through the task contract (``network`` and
``example_input_array``, ``experiments.recipe.measure``) and to list the data files a config reads
(``required_paths()``).

The dotted-key helpers (``override_tree``, ``get_dotted``, ``deep_merge``) work on plain YAML
trees; composition follows jsonargparse's rule that a mapping naming another ``class_path``
replaces the old one whole.

One rule jsonargparse lacks: when a later ``--config`` names another ``class_path`` for an object
(a data config's ``COCODetection`` over a quick config's ``SyntheticDetection``), jsonargparse
keeps every earlier argument the new class also accepts, defaults included (the synthetic
``num_val: 400`` would become LSP's hold-out). ``replace_classes_cleanly`` makes such a config
replace the object whole, as ``deep_merge`` does: ``fit`` and ``ConfigComposer`` both pass their
arguments through it.
"""
from __future__ import annotations

import copy
import json
from typing import Any, Iterable

from experiments.recipe.measure import BUILD_LOCK, Measured, measure_network

__all__ = [
    "ConfigComposer", "config_key_of", "override_tree", "set_dotted", "get_dotted", "deep_merge", "replace_classes_cleanly",
    "class_defaults", "import_class",
]


# ------------------------------------------------------------------------------ dotted trees
def set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested mapping, creating the parents; a mapping value is merged into an
    existing mapping (``deep_merge``)."""
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = deep_merge(node[last], value)
    else:
        node[last] = copy.deepcopy(value)


def get_dotted(tree: Any, key: str, default: Any = None) -> Any:
    """The value at ``a.b.c`` of a nested mapping, or ``default``."""
    node = tree
    for part in key.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return default
    return node


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` over ``base``; a mapping that names another ``class_path`` replaces the old one
    whole (init_args of one class are meaningless for another), as jsonargparse does."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        old = out.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "class_path" in value and old.get("class_path") not in (None, value["class_path"]):
                out[key] = copy.deepcopy(value)
            else:
                out[key] = deep_merge(old, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def override_tree(values: dict[str, Any]) -> dict[str, Any]:
    """``{dotted key: value}`` -> nested YAML mapping, applied in order (parents before children)."""
    tree: dict[str, Any] = {}
    for key in sorted(values, key=lambda k: k.count(".")):
        set_dotted(tree, key, values[key])
    return tree


def config_key_of(tree: dict[str, Any], class_path: str, argument: str, within: str = "") -> str | None:
    """The dotted config key of ``argument`` of the object of class ``class_path`` in a composed
    config (``data.init_args.source.init_args.root``), searched under ``within``; None when no
    object of that class is in the config."""
    start = get_dotted(tree, within) if within else tree

    def walk(node: Any, path: list[str]) -> str | None:
        if isinstance(node, dict):
            if node.get("class_path") == class_path:
                return ".".join([*path, "init_args", argument])
            for key, child in node.items():
                found = walk(child, [*path, str(key)])
                if found:
                    return found
        elif isinstance(node, list):
            for i, child in enumerate(node):
                found = walk(child, [*path, str(i)])
                if found:
                    return found
        return None

    return walk(start, [within] if within else [])


# ------------------------------------------------------------------- replacing a class cleanly
def import_class(class_path: str) -> type | None:
    """The class a config's ``class_path`` names, or None when it does not import (the parser
    names that error itself)."""
    import importlib

    module, _, name = class_path.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    return found if isinstance(found, type) else None


def class_defaults(class_path: str) -> dict[str, Any]:
    """The ``__init__`` defaults of ``class_path`` that a config can hold (tuples as lists; a default
    that is an object, not a YAML value, is left out); ``{}`` for a class that cannot be imported
    (the parser names it)."""
    import inspect

    cls = import_class(class_path)
    try:
        signature = inspect.signature(cls.__init__) if cls is not None else None
    except (ValueError, TypeError):
        signature = None
    if signature is None:
        return {}
    defaults = {}
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.default is inspect.Parameter.empty or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        value = _yaml_value(parameter.default)
        if value is not _NOT_YAML:
            defaults[parameter.name] = value
    return defaults


_NOT_YAML = object()


def _yaml_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (tuple, list)):
        items = [_yaml_value(v) for v in value]
        return _NOT_YAML if any(v is _NOT_YAML for v in items) else items
    if isinstance(value, dict):
        items = {k: _yaml_value(v) for k, v in value.items()}
        return _NOT_YAML if any(v is _NOT_YAML for v in items.values()) else items
    return _NOT_YAML


def _resets(before: Any, update: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """``{dotted key: value}`` that makes every object whose ``class_path`` ``update`` changes from
    ``before``'s hold exactly ``update``'s arguments: the new class's defaults for those it leaves out."""
    resets: dict[str, Any] = {}
    if not isinstance(before, dict) or not isinstance(update, dict):
        return resets
    new, old = update.get("class_path"), before.get("class_path")
    if new is not None and old is not None and new != old:
        given = update.get("init_args") or {}
        for name, value in class_defaults(str(new)).items():
            if name not in given:
                resets[".".join((*path, "init_args", name))] = value
        return resets
    for key, child in update.items():
        resets.update(_resets(before.get(key), child, (*path, str(key))))
    return resets


def _config_tree(value: str) -> dict[str, Any] | None:
    """The mapping of a ``--config`` value (a YAML file, or YAML/JSON text), None when it is neither."""
    from pathlib import Path

    import yaml

    try:
        is_file = Path(value).is_file()
    except (OSError, ValueError):  # JSON text longer than a file name may be
        is_file = False
    try:
        tree = yaml.safe_load(Path(value).read_text() if is_file else value)
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return tree if isinstance(tree, dict) else None


def replace_classes_cleanly(args: list[str]) -> list[str]:
    """``args`` of a LightningCLI command, with a ``--config`` (JSON text) added after every
    ``--config`` that names another ``class_path`` for an object an earlier one configured: it sets
    the new class's arguments that the later config leaves out to their defaults, so that nothing of
    the old class carries over. ``--config a.yaml --config b.yaml`` then means what ``deep_merge``
    means. Other arguments pass unchanged (a ``--data.source.root`` after them still applies)."""
    out: list[str] = []
    composed: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        value = None
        if arg == "--config" and i + 1 < len(args):
            value = args[i + 1]
            out += [arg, value]
            i += 2
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
            out.append(arg)
            i += 1
        else:
            out.append(arg)
            i += 1
            continue
        tree = _config_tree(value)
        if tree is None:
            continue
        resets = _resets(composed, tree)
        if resets:
            out += ["--config", json.dumps(override_tree(resets))]
        composed = deep_merge(composed, tree)
    return out


# ------------------------------------------------------------------------------- composing
class ConfigComposer:
    """convlab's config parser, built once and reused for every composition (building it imports
    Lightning and resolves every class the configs name)."""

    def __init__(self) -> None:
        from experiments.cli import ConvlabCLI

        class _ParserOnly(ConvlabCLI):
            """Builds the parser; parses, seeds and instantiates nothing."""

            def parse_arguments(self, parser: Any, args: Any) -> None:
                self.config = None

            def _parse_ckpt_path(self) -> None:
                return None

            def _set_seed(self) -> None:
                return None

            def _add_instantiators(self) -> None:
                return None

            def instantiate_classes(self) -> None:
                return None

        self.parser = _ParserOnly(args=[], run=False).parser

    def parse(self, base: Iterable[str], override: dict[str, Any] | None = None) -> Any:
        """The namespace of ``--config b1 [--config b2 ...] --config <override>`` (a nested mapping)."""
        args: list[str] = []
        for path in base:
            args += ["--config", str(path)]
        if override:
            args += ["--config", json.dumps(override, default=str)]
        with BUILD_LOCK:
            return self.parser.parse_args(replace_classes_cleanly(args))

    def culprit(self, base: Iterable[str], dotted: dict[str, Any]) -> tuple[str, BaseException] | None:
        """When ``base + dotted`` does not parse: the first dotted key that fails alone, with its
        error (None when each key parses alone, or the base fails by itself)."""
        base = list(base)
        for key, value in dotted.items():
            try:
                self.parse(base, override_tree({key: value}))
            except Exception as error:
                return key, error
        return None

    def dump(self, config: Any) -> str:
        with BUILD_LOCK:
            return self.parser.dump(config, skip_none=False)

    def to_dict(self, config: Any) -> dict[str, Any]:
        import yaml

        return yaml.safe_load(self.dump(config))

    def instantiate(self, config: Any) -> tuple[Any, Any]:
        """``(model, data module)`` built from a parsed config as ``fit`` builds them (the data's
        facts linked into the model)."""
        with BUILD_LOCK:
            init = self.parser.instantiate_classes(config)
        return init.model, init.data

    def instantiate_model_alone(self, config: Any) -> Any:
        """The model of a config whose data cannot be built (its files are missing): built with a
        bare data module, so it has no data facts, but its ``network`` is the config's."""
        import lightning.pytorch as pl

        alone = copy.deepcopy(config)
        alone.data = type(config)(class_path=f"{pl.LightningDataModule.__module__}.LightningDataModule", init_args=type(config)())
        with BUILD_LOCK:
            return self.parser.instantiate_classes(alone).model

    def measure(self, config: Any) -> Measured:
        """Build the config's model and data and measure them; a data module whose files are
        missing is reported in ``missing`` (every missing path, not only the first) and the network
        is still measured. A pretrained weights file that is missing (a paper profile's ImageNet
        weights) is reported in ``weights_missing`` as ``(config key, path)``, and the network is
        measured without it, built as it would be with it."""
        from core.errors import DataNotFoundError, error_in_chain

        config = copy.deepcopy(config)
        weights_missing: list[tuple[str, str]] = []
        while True:
            try:
                measured = self._measure(config)
            except Exception as error:
                cause = error_in_chain(error, DataNotFoundError)
                key = None if cause is None else _key_holding(self.to_dict(config), str(cause.path))
                if key is None or not key.rsplit(".", 1)[-1].endswith("weights") or any(k == key for k, _ in weights_missing):
                    raise
                weights_missing.append((key, str(cause.path)))
                config[key] = None
                # The backbones freeze their batch norm when given weights (frozen_batch_norm: None
                # follows them): keep it frozen, so the network measured is the one that would run.
                frozen = key.rsplit(".", 1)[0] + ".frozen_batch_norm"
                if frozen in config and config[frozen] is None:
                    config[frozen] = True
                continue
            measured.weights_missing = weights_missing
            return measured

    def _measure(self, config: Any) -> Measured:
        from core.errors import DataNotFoundError, error_in_chain

        try:
            model, data = self.instantiate(config)
        except Exception as error:
            cause = error_in_chain(error, DataNotFoundError)
            if cause is None:
                raise
            measured = measure_network(self.instantiate_model_alone(config))
            measured.missing = list(cause.missing) or [_lone_path(cause)]
            measured.required = list(cause.required) or list(measured.missing)
            measured.owner = cause.owner
            return measured
        measured = measure_network(model)
        measured.required = list(getattr(data, "required_paths", lambda: [])())
        measured.missing = [p for p in measured.required if not p.exists()]
        del model, data
        return measured


def _key_holding(tree: Any, value: str, path: tuple[str, ...] = ()) -> str | None:
    """The dotted key of the first string ``value`` in a composed config, or None."""
    if isinstance(tree, dict):
        for key, child in tree.items():
            found = _key_holding(child, value, (*path, str(key)))
            if found:
                return found
    elif isinstance(tree, str) and tree == value:
        return ".".join(path)
    return None


def _lone_path(error: Any) -> Any:
    """A ``DataNotFoundError`` raised without its list of missing paths, as a ``RequiredPath``."""
    from pathlib import Path

    from core.records import RequiredPath

    return RequiredPath(str(error), Path(str(error.path)), "", "file")
