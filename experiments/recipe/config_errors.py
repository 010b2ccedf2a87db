"""One line for a config error: the dotted key a user would type, its class, and the reason.

jsonargparse nests the reason of a failed parse under several lines of context; ``fit`` prints
this line and exits 2, and ``search`` and ``reproduce`` name the spec entry or the table row that
composed the failing key beside it. An argument that the configured class lacks but the readers of
its kind take (``--data.source.root`` given to a synthetic source) adds that the class must change,
and the shipped data configs that change it.
"""
from __future__ import annotations

import abc
import inspect
import re
import sys
from pathlib import Path
from typing import Any

from core.errors import ArgumentValueError, config_error_in, error_in_chain, user_message
from experiments.recipe.compose import config_key_of, import_class

__all__ = ["describe_config_error", "name_argument_in_config", "OneLineErrors", "DATA_CONFIGS"]

# The shipped data configs (a reader + its folder layout), each a `data:` section that goes after a
# model config: `--config <model>.yaml --config experiments/configs/data/<format>.yaml`.
DATA_CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "data"

_NOISE = ("Does not validate", "Subtypes:", "Errors:", "Given value", "Expected a <class 'NoneType'>", "Parser key", "Problem with given class_path")


def describe_config_error(error: BaseException, with_key: bool = True) -> str:
    """One line for a jsonargparse error, which nests the reason under several lines of context:
    the dotted key a user would type and the class it belongs to (``with_key``), then the innermost
    reason ("Option 'x' is not accepted")."""
    text = str(error)
    keys = re.findall(r'Parser key "([^"]+)"', text)
    classes = re.findall(r"Problem with given class_path '([^']+)'", text)
    reasons = [line.strip().lstrip("- ").strip() for line in text.splitlines() if line.strip() and not any(n in line for n in _NOISE)]
    reason = reasons[-1] if reasons else (text.strip().splitlines() or [type(error).__name__])[0]
    if not keys or not with_key:
        return reason
    # Every class level below the top adds "init_args" to the dotted key a user would type.
    path = keys[0] + "".join(f".init_args.{k}" for k in keys[1:])
    if len(classes) >= len(keys):
        path += ".init_args"
    owner = f" ({classes[-1]})" if classes else ""
    return f"{path}{owner}: {reason}{_class_hint(classes[-1] if classes else None, reason)}"


def _class_hint(owner: str | None, reason: str) -> str:
    """For an argument ``owner`` does not accept but the readers of its kind do (``root`` given to a
    synthetic source): that the class must change, and the data configs that change it."""
    match = re.search(r"Option '([^']+)' is not accepted", reason)
    if owner is None or match is None:
        return ""
    option = match.group(1)
    owner_class = import_class(owner)
    if owner_class is None:
        return ""
    # A reader of the same kind shares a base class with the owner (DetectionSource, ...).
    bases = set(owner_class.__mro__[1:]) - {object, abc.ABC}
    configs = []
    for path in sorted(DATA_CONFIGS.glob("*.yaml")):
        source = _data_source(path)
        source_class = import_class(source) if source else None
        if source_class is not None and bases & set(source_class.__mro__) and _accepts(source_class, option):
            configs.append(path.stem)
    if not configs:
        return ""
    return (f"; {owner.rpartition('.')[2]} has no {option!r}: to read your own data the source class must change, "
            f"so add a data config after the model config: --config {DATA_CONFIGS.relative_to(DATA_CONFIGS.parents[2]).as_posix()}/"
            f"<{' | '.join(configs)}>.yaml (docs/own_data.md)")


def _accepts(cls: type, option: str) -> bool:
    try:
        return option in inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return False


def _data_source(path: Path) -> str | None:
    """The ``class_path`` of the source of a data config (``data.init_args.source``)."""
    import yaml

    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return None
    source = ((tree.get("data") or {}).get("init_args") or {}).get("source") or {}
    return source.get("class_path") if isinstance(source, dict) else None


def name_argument_in_config(error: BaseException | None, config: dict[str, Any]) -> None:
    """A class names its own bad argument (``ArgumentValueError``: ``FasterRCNN.num_classes ...``)
    because it does not know the config it is built from; where ``error``'s chain holds one, its
    message is rewritten to name the key of the composed ``config`` instead
    (``model.init_args.network.init_args.num_classes ...``). Left as it is when no object of that
    class is in ``config``."""
    cause = error_in_chain(error, ArgumentValueError)
    if cause is None or cause.owner is None or cause.argument is None:
        return
    key = config_key_of(config, cause.owner, cause.argument)
    if key:
        cause.args = (cause.named(key),)


class OneLineErrors:
    """A command's configuration and data errors, jsonargparse's included (also one raised in a
    DataLoader worker), as one line on stderr, ``<prefix>: <reason>``; the block ends there and
    ``status`` is 2 (0 when nothing failed). ``what`` names the config read when it is not the user's
    own (``"the run's config.yaml: "``). Anything else is a bug and propagates.

        with OneLineErrors() as failed:
            written = infer(...)
        if failed.status:
            return failed.status
    """

    def __init__(self, prefix: str = "convlab", what: str = "") -> None:
        self.prefix, self.what, self.status = prefix, what, 0

    def __enter__(self) -> "OneLineErrors":
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: Any) -> bool:
        if error is None:
            return False
        from jsonargparse import ArgumentError

        if isinstance(error, ArgumentError):
            line = f"config error: {self.what}{describe_config_error(error)}"
        else:
            cause = config_error_in(error) if isinstance(error, Exception) else None
            if cause is None:
                return False
            line = user_message(cause)
        print(f"{self.prefix}: {line}", file=sys.stderr)
        self.status = 2
        return True
