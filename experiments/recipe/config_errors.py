"""One line for a config error: the dotted key a user would type, its class, and the reason.

jsonargparse nests the reason of a failed parse under several lines of context; ``fit`` prints
this line and exits 2, and ``search`` and ``reproduce`` name the spec entry or the table row that
composed the failing key beside it.
"""
from __future__ import annotations

import re
from typing import Any

from core.errors import ArgumentValueError, error_in_chain
from experiments.recipe.compose import config_key_of

__all__ = ["describe_config_error", "name_argument_in_config"]

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
    return f"{path}{owner}: {reason}"


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
