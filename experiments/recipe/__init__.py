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
* ``wandb_logging``: the W&B mode (``resolve_wandb_mode``), the training runs' logger and a
  group's summary run (``log_summary_run``).

``search`` imports only the names below; ``experiments`` itself may use the modules.
"""
from experiments.recipe.compose import (
    ConfigComposer, config_key_of, deep_merge, get_dotted, override_tree, replace_classes_cleanly, set_dotted,
)
from experiments.recipe.config_errors import describe_config_error
from experiments.recipe.measure import Measured, forward_latency_ms, measure_network
from experiments.recipe.wandb_logging import log_summary_run, resolve_wandb_mode

__all__ = [
    "ConfigComposer", "override_tree", "get_dotted", "set_dotted", "deep_merge", "config_key_of", "replace_classes_cleanly",
    "describe_config_error",
    "Measured", "measure_network", "forward_latency_ms", "log_summary_run", "resolve_wandb_mode",
]
