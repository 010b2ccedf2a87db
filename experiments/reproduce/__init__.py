"""Paper tables as runnable, checked objects: ``python -m experiments reproduce|report <table>``.

One job per file:

* ``spec``: table specs (``experiments/tables/<table>.yaml``), loaded and checked, one-line errors;
* ``plan``: the runs (one per distinct config and seed), their status, the composition that checks
  them and derives the rows' vars, and the missing data;
* ``runner``: trains the runs on ``core.processes.SlotPool``'s slots, resumably;
* ``collect``: reads the finished runs back into cells;
* ``checks``: the paper's orderings on our means;
* ``report`` and ``plots``: ``report.md``, ``summary.json``, ``runs.csv`` and the PNGs;
* ``wandb_summary``: the table's summary run in its W&B group;
* ``cli``: the two commands.
"""
from experiments.reproduce.cli import main_report, main_reproduce
from experiments.reproduce.collect import pick_epoch, read_validation
from experiments.reproduce.plan import RESULT_FILE, STATE_FILE, compose_plan, plan_runs
from experiments.reproduce.spec import TableSpecError, available_tables, load_table

__all__ = [
    "main_reproduce", "main_report", "plan_runs", "compose_plan", "read_validation", "pick_epoch", "load_table",
    "available_tables", "TableSpecError", "RESULT_FILE", "STATE_FILE",
]
