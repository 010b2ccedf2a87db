"""``python -m experiments reproduce <table>`` and ``python -m experiments report <table>``.

``reproduce`` runs every row x seed of a table spec (``experiments/tables/<table>.yaml``) as an
ordinary ``fit`` in its own process group, then reports the table. ``report`` rebuilds the report
from finished runs. Where things go (``--root runs``)::

    runs/tables/<table>/report.md                  the report built last (a copy, names its profile)
    runs/tables/<table>/<profile>/report.md        the profile's report, summary.json, runs.csv, plots/
    runs/tables/<table>/<profile>/overrides/       one override file per run (base config + this file)
    runs/tables/<table>/<profile>/<row>/seed<k>/   the runs: config.yaml, checkpoints/, metrics.csv,
                                                   wandb/, train.log, table_run.json, result.json

A run is finished when its ``fit`` exited 0 with its validation metrics in ``metrics.csv``; the
runner then writes ``result.json``. Finished runs are reused; an interrupted one restarts from its
``checkpoints/last.ckpt``. A run directory whose config no longer matches the spec is never
overwritten: the runner stops and says so (``--rerun-stale`` moves such runs aside).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import time
from pathlib import Path

import yaml

from core.io import shown_path, write_json_atomic
from core.processes import experiments_command
from experiments.recipe import ConfigComposer
from experiments.reproduce.collect import collect
from experiments.reproduce.plan import RESULT_FILE, Plan, PlannedRun, compose_plan, describe_missing, plan_runs, run_status, table_dir
from experiments.reproduce.report import Report, build_report
from experiments.reproduce.runner import Reproducer, TableLock, UserError, iso_time, say
from experiments.reproduce.spec import TABLES_DIR, Profile, TableSpec, TableSpecError, available_tables, load_table
from experiments.reproduce.wandb_summary import write_wandb_summary

__all__ = ["main_reproduce", "main_report", "check_directories"]


def _epilog() -> str:
    lines = ["tables that ship (experiments/tables/<table>.yaml):"]
    for name in available_tables():
        try:
            spec = load_table(name)
            lines.append(f"  {name:<24} {spec.title}  (profiles: {', '.join(spec.profiles)})")
        except TableSpecError as error:
            lines.append(f"  {name:<24} (does not load: {error})")
    return "\n".join(lines)


def _parser(command: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"python -m experiments {command}",
        description=(
            "Run a paper table's rows x seeds and report paper | ours | delta." if command == "reproduce"
            else "Rebuild a table's report from its finished runs, without training."
        ),
        epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("table", help=f"a table in {TABLES_DIR.relative_to(TABLES_DIR.parents[1])} (listed below) or a path to a spec")
    parser.add_argument("--profile", default=None, help="quick (synthetic, CPU minutes) or paper (real data); default: quick")
    parser.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the profile's)")
    parser.add_argument("--root", default="runs", help="folder of all runs (default: runs)")
    parser.add_argument("--data-root", default=None, help="dataset folder for the paper profile (each row's data under DIR/<dir>)")
    parser.add_argument("--wandb", choices=("auto", "online", "offline", "disabled"), default=None,
                        help="W&B mode for the runs and the summary (default: the base config's run.wandb)")
    if command == "reproduce":
        parser.add_argument("--rows", default=None, help="comma-separated rows to run (default: all rows of the profile)")
        parser.add_argument("--slots", type=int, default=None, help="runs at once (default: the profile's slots)")
        parser.add_argument("--timeout", type=float, default=None, help="seconds per run before it is stopped (default: none)")
        parser.add_argument("--gpus", default=None, help="comma-separated GPU indices shared out between the slots (default: the visible ones)")
        parser.add_argument("--dry-run", action="store_true", help="list the runs, their configs and the missing data; train nothing")
        parser.add_argument("--rerun-stale", action="store_true",
                            help="move runs whose config no longer matches the spec aside (<dir>.stale-<time>) and train them again")
        parser.add_argument("--no-report", action="store_true", help="train only")
    return parser


def _setup(args: argparse.Namespace) -> tuple[TableSpec, Profile, list[int]]:
    spec = load_table(args.table)
    name = args.profile or ("quick" if "quick" in spec.profiles else next(iter(spec.profiles)))
    profile = spec.profile(name)
    if args.seeds is not None and args.seeds < 1:
        raise TableSpecError(f"--seeds: must be >= 1, got {args.seeds}")
    if args.data_root is not None and profile.data is None:
        raise TableSpecError(f"--data-root: profile {profile.name} of {spec.table} reads no dataset (it has no data section); use --profile paper")
    if getattr(args, "slots", None) is not None and args.slots < 1:
        raise TableSpecError(f"--slots: must be >= 1, got {args.slots}")
    return spec, profile, list(range(args.seeds if args.seeds is not None else profile.seeds))


def main_reproduce(argv: list[str]) -> int:
    args = _parser("reproduce").parse_args(argv)
    try:
        spec, profile, seeds = _setup(args)
        rows = [r.strip() for r in args.rows.split(",") if r.strip()] if args.rows else None
        runs = plan_runs(spec, profile.name, seeds, args.root, args.data_root, rows, args.wandb)
        say(f"table {spec.table}, profile {profile.name}: {len({r.config_hash for r in runs})} distinct configs x {len(seeds)} seed(s) = {len(runs)} runs")
        plan = compose_plan(spec, profile, seeds, runs, ConfigComposer(), measure=True)
        missing = describe_missing(plan, args.data_root)
        if args.dry_run:
            _print_plan(plan)
            if missing:
                print(missing, flush=True)
            return 0
        if missing:
            raise UserError(missing)
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()] if args.gpus else None
        reproducer = Reproducer(plan, slots=args.slots or profile.slots, timeout=args.timeout, gpus=gpus)
        started = time.monotonic()
        with TableLock(table_dir(args.root, spec.table) / profile.name):
            for run in runs:  # again, under the lock: another reproduce may have moved on
                run.status = run_status(run)
            check_directories(runs, args.rerun_stale)
            reused = sum(1 for r in runs if r.status == "finished")
            try:
                ok = reproducer.execute()
            except KeyboardInterrupt:
                done = sum(r.status == "finished" for r in runs)
                say(f"interrupted: {done}/{len(runs)} runs finished; run the same command again to resume", sys.stderr)
                return 130
        wall = time.monotonic() - started
        say(f"training done in {wall / 60:.1f} min")
        write_json_atomic(table_dir(args.root, spec.table) / profile.name / "last_reproduce.json", {
            "finished_at": iso_time(time.time()), "training_wall_seconds": round(wall, 1), "slots": reproducer.pool.slots,
            "trained": reproducer.trained, "reused": reused, "failed": len(reproducer.failures), "seeds": seeds, "cpu_count": os.cpu_count(),
        })
        if not args.no_report:
            _report(plan, args)
        if not ok:
            for run, reason in reproducer.failures:
                say(f"failed: {run.name}: {reason} (log {run.directory / 'train.log'}); rerun to retry", sys.stderr)
            return 1
        return 0
    except (TableSpecError, UserError) as error:
        say(f"error: {error}", sys.stderr)
        return 2


def main_report(argv: list[str]) -> int:
    args = _parser("report").parse_args(argv)
    try:
        spec, profile, seeds = _setup(args)
        if args.seeds is None:  # every finished seed on disk
            seeds = _seeds_on_disk(spec, profile, args.root) or seeds
        runs = plan_runs(spec, profile.name, seeds, args.root, args.data_root, None, args.wandb)
        if not any(r.status == "finished" for r in runs):
            raise UserError(f"no finished runs of {spec.table} ({profile.name}) under {table_dir(args.root, spec.table) / profile.name}; "
                            f"run `python -m experiments reproduce {spec.table} --profile {profile.name}` first")
        for run in runs:
            if run.status == "stale":
                say(f"skipped  {run.name}: trained with another config than the spec's")
        _report(compose_plan(spec, profile, seeds, runs, ConfigComposer()), args)
        return 0
    except (TableSpecError, UserError) as error:
        say(f"error: {error}", sys.stderr)
        return 2


def _report(plan: Plan, args: argparse.Namespace) -> Report:
    table = shown_path(args.table) if Path(args.table).suffix in (".yaml", ".yml") else args.table
    command = " ".join(["python -m experiments report", table, f"--profile {plan.profile.name}"]
                       + ([f"--root {shown_path(args.root)}"] if args.root != "runs" else []))
    collected = collect(plan)
    report = build_report(collected, args.root, command)
    for message in collected.missing_metrics:
        say(f"warning: {message}", sys.stderr)
    wandb_dir = write_wandb_summary(report, collected, args.wandb)
    say(f"report: {report.profile_dir / 'report.md'} (copy: {report.table_dir / 'report.md'})")
    for check in report.checks:
        say(f"check  {check.status:<13} {check.name}")
    if wandb_dir:
        say(f"W&B summary run (group {plan.spec.table}, job_type summary) under {wandb_dir}")
    return report


def _seeds_on_disk(spec: TableSpec, profile: Profile, root: str) -> list[int]:
    seeds = set()
    for result in (table_dir(root, spec.table) / profile.name).glob(f"*/seed*/{RESULT_FILE}"):
        match = re.fullmatch(r"seed(\d+)", result.parent.name)
        if match:
            seeds.add(int(match.group(1)))
    return sorted(seeds)


def check_directories(runs: list[PlannedRun], rerun_stale: bool) -> None:
    """Refuse foreign run directories; refuse stale ones unless ``rerun_stale`` (then move them
    aside, ``<dir>.stale-<time>``, and mark the runs new)."""
    foreign = [r for r in runs if r.status == "foreign"]
    if foreign:
        raise UserError(f"{foreign[0].directory} holds files the table runner did not write; move it away (nothing was touched)")
    stale = [r for r in runs if r.status == "stale"]
    if stale and not rerun_stale:
        names = ", ".join(str(r.directory) for r in stale[:3]) + (" ..." if len(stale) > 3 else "")
        raise UserError(f"{len(stale)} run(s) were trained with another config than the spec's now ({names}); "
                        "restore the spec, or pass --rerun-stale to move them aside and train again")
    for run in stale:
        target = run.directory.with_name(f"{run.directory.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.move(str(run.directory), str(target))
        say(f"moved stale run {run.directory} -> {target}")
        run.status = "new"


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


def _print_plan(plan: Plan) -> None:
    spec, profile = plan.spec, plan.profile
    print(f"# {spec.table} ({spec.title}), profile {profile.name}" + (f": {profile.description}" if profile.description else ""))
    for run in plan.runs:
        shared = f"  (rows {', '.join(run.rows)})" if len(run.rows) > 1 else ""
        measured = plan.measured.get(run.config_hash)
        print(f"\n[{run.status}] {run.name}{shared}  params {_params(measured.params if measured else None)}  "
              f"group {run.table}  job_type {run.key}  wandb_id {run.wandb_id}")
        print("  $ " + " ".join(experiments_command(*run.command_args())).replace(sys.executable, "python"))
        print(f"  {run.override_path}:")
        text = yaml.safe_dump(run.override(), sort_keys=False).rstrip()
        print("\n".join("    " + line for line in text.splitlines()))
    print()
