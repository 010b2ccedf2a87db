"""Third-party messages that every run would print and that say nothing about the run, silenced at
their source, one by one (never all warnings, never a whole logger):

* Lightning's "💡 Tip" lines advertising litlogger and litmodels (``rank_zero_info`` records of the
  ``lightning.pytorch.utilities.rank_zero`` logger that begin with the tip marker);
* the deprecation of ``isinstance(treespec, LeafSpec)`` that Lightning's own ``_pytree`` triggers
  in torch on every fit (Lightning's code, nothing a config can change);
* Lightning's "Received SIGTERM" line: ``experiments.resume.LastCheckpoint`` says what stopped the
  run (Ctrl-C too, which it hands to Lightning as a SIGTERM) and what it saved.

W&B's "anonymous setting" warning is avoided where the W&B run is made
(``experiments.recipe.wandb_logging.SafeWandbLogger``).
"""
from __future__ import annotations

import logging
import warnings

__all__ = ["silence_third_party_tips"]

TIP_MARKER = "💡 Tip:"


def _not_a_tip(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith(TIP_MARKER)


def _not_sigterm_received(record: logging.LogRecord) -> bool:
    return "Received SIGTERM" not in str(record.msg)


def silence_third_party_tips() -> None:
    """Install the filters above (idempotent)."""
    for name, keep in (("lightning.pytorch.utilities.rank_zero", _not_a_tip), ("lightning.fabric.utilities.rank_zero", _not_a_tip),
                       ("lightning.pytorch.trainer.connectors.signal_connector", _not_sigterm_received)):
        logger = logging.getLogger(name)
        if keep not in logger.filters:
            logger.addFilter(keep)
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
