"""The recipe layer: what ``reproduce`` (experiments/reproduce) and ``search`` both build on.

A table row and a search trial are both a recipe, *base config(s) + a small override*; this
package composes and checks such a recipe without training, measures the network it builds, and
writes the W&B run that sums up a group of runs. One module per job:

* ``compose``: ``ConfigComposer`` (convlab's own LightningCLI parser, reused) and the dotted-key
  helpers on plain YAML trees (``override_tree``, ``get_dotted``, ``set_dotted``, ``deep_merge``,
  ``config_key_of``), and ``replace_classes_cleanly`` (a later ``--config`` that names another
  class replaces the object whole, in ``fit`` as in a composition);
* ``config_errors``: ``describe_config_error``, one line for a jsonargparse error;
* ``measure``: parameters and FLOPs (``measure_network``), forward latency
  (``forward_latency_ms``), through the task contract;
* ``throughput``: ``run_bench``, the training-step, loader and latency measurements of ``bench``;
* ``wandb_logging``: the W&B mode (``resolve_wandb_mode``), the training runs' logger and a
  group's summary run (``log_summary_run``).

``search`` imports only the names below; ``experiments`` itself may use the modules.
"""
from __future__ import annotations

import importlib
from typing import Any

# Each name's module, imported on first use: ``measure`` and ``wandb_logging`` import torch and
# Lightning (seconds), which a command's ``--help`` or a spec check does not need.
_HOME = {
    "ConfigComposer": "compose", "override_tree": "compose", "get_dotted": "compose", "set_dotted": "compose",
    "deep_merge": "compose", "config_key_of": "compose", "replace_classes_cleanly": "compose", "describe_config_error": "config_errors",
    "Measured": "measure", "measure_network": "measure", "forward_latency_ms": "measure",
    "log_summary_run": "wandb_logging", "resolve_wandb_mode": "wandb_logging",
}

__all__ = list(_HOME)


def __getattr__(name: str) -> Any:
    if name not in _HOME:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOME[name]}"), name)
