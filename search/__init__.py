"""convlab's Optuna layer: search specs, the driver that runs one ``fit`` process tree per trial,
the trial-side callback, storages and the study report (docs/search.md).

Its public entry points are the two commands below (``python -m experiments search|dashboard``);
the trial callbacks are reached by class path from a trial's override file
(``search.trial.OptunaTrialCallback``). It builds on ``experiments.recipe`` alone.
"""
from __future__ import annotations

__all__ = ["main", "dashboard"]


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments search``: run, resume or report a study (``search.cli``)."""
    from search.cli import main as search_main

    return search_main(argv)


def dashboard(argv: list[str] | None = None) -> int:
    """``python -m experiments dashboard``: optuna-dashboard on a study (``search.dashboard``)."""
    from search.dashboard import main as dashboard_main

    return dashboard_main(argv)
