"""Read the finished runs of a plan back into cells: one per row x column, the values of every
finished seed at the epoch the table reports (``epoch: last`` or the best by ``select``), and the
per-output series of the ``per_output`` plots.

Everything comes from each run's own files (``metrics.csv``, ``config.yaml``, ``result.json``), so
a report can be rebuilt from the runs alone, without W&B and without training.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core.io import read_json
from experiments.recipe import get_dotted

__all__ = ["read_validation", "pick_epoch", "RunValues", "Cell", "Collected", "collect", "std"]


def read_validation(metrics_csv: Path) -> dict[int, dict[str, float]]:
    """``{epoch: {metric: value}}`` of the validation rows of a run's ``metrics.csv`` (a resumed run
    may have logged an epoch twice: the later row wins)."""
    epochs: dict[int, dict[str, float]] = {}
    if not metrics_csv.is_file():
        return epochs
    with open(metrics_csv, newline="") as handle:
        for record in csv.DictReader(handle):
            values = {}
            for key, value in record.items():
                if key and key.startswith("val/") and value not in (None, ""):
                    try:
                        values[key] = float(value)
                    except ValueError:
                        continue
            if not values or not record.get("epoch"):
                continue
            try:
                epoch = int(float(record["epoch"]))
            except ValueError:
                continue
            epochs.setdefault(epoch, {}).update(values)
    return epochs


def pick_epoch(epochs: dict[int, dict[str, float]], mode: str, select: str | None, select_mode: str) -> int | None:
    """The epoch whose validation a run reports: the last one, or the best by ``select``."""
    if not epochs:
        return None
    if mode == "last" or not select:
        return max(epochs)
    scored = [(values[select], epoch) for epoch, values in epochs.items() if select in values and math.isfinite(values[select])]
    if not scored:
        return max(epochs)
    if select_mode == "max":
        return max(scored, key=lambda t: (t[0], -t[1]))[1]
    return min(scored, key=lambda t: (t[0], t[1]))[1]


def std(values: list[float]) -> float | None:
    """Sample standard deviation, None for fewer than two values."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


@dataclass
class RunValues:
    """A finished run as the report sees it: the epoch it reports, how many it validated, every
    validation (``curves``), its training time and its network's parameter count."""

    run: Any  # PlannedRun
    epoch: int | None
    epochs: int
    curves: dict[int, dict[str, float]]
    seconds: float | None
    params: int | None

    def value(self, metric: str | None) -> float | None:
        if metric is None or self.epoch is None:
            return None
        return self.curves.get(self.epoch, {}).get(metric)


@dataclass
class Cell:
    row: str
    column: str
    metric: str | None
    values: list[float]
    seeds: list[int]
    paper: Any = None  # PaperCell

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return std(self.values)

    @property
    def delta(self) -> float | None:
        if self.paper is None or self.mean is None:
            return None
        return self.mean - self.paper.value


@dataclass
class Collected:
    spec: Any  # TableSpec, its rows' vars resolved
    profile: Any  # Profile
    runs: list[Any]  # PlannedRun
    finished: list[RunValues]
    cells: dict[tuple[str, str], Cell]
    params: dict[str, int | None]
    outputs: dict[str, dict[int, list[float]]]  # "<plot>:<row>" -> output k -> values (scaled)
    missing_metrics: list[str]
    select: str | None


def collect(plan: Any) -> Collected:
    """Read every finished run of ``plan`` (``experiments.reproduce.plan.Plan``) and build the
    cells (mean and std over seeds)."""
    spec, profile, runs = plan.spec, plan.profile, plan.runs
    finished: list[RunValues] = []
    params: dict[str, int | None] = {}
    monitors: set[str] = set()
    for run in runs:
        if run.status != "finished":
            continue
        epochs = read_validation(run.directory / "metrics.csv")
        try:
            config = yaml.safe_load((run.directory / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            config = None
        select = spec.select or (get_dotted(config, "run.monitor") if isinstance(config, dict) else None)
        if select:
            monitors.add(select)
        result = read_json(run.directory / "result.json") or {}
        measured = plan.measured.get(run.config_hash)
        count = result.get("params") if result.get("params") is not None else (measured.params if measured else None)
        for row in run.rows:
            params[row] = count
        finished.append(RunValues(run=run, epoch=pick_epoch(epochs, spec.epoch, select, spec.select_mode), epochs=len(epochs),
                                  curves=epochs, seconds=result.get("seconds"), params=count))

    cells: dict[tuple[str, str], Cell] = {}
    missing: list[str] = []
    for row in spec.rows_in(profile.name):
        for column in spec.columns.values():
            metric = column.metric_for(row)
            cell = Cell(row=row.name, column=column.name, metric=metric, values=[], seeds=[], paper=row.paper.get(column.name))
            cells[(row.name, column.name)] = cell
            if metric is None:
                continue
            for rv in finished:
                if row.name not in rv.run.rows or rv.epoch is None:
                    continue
                value = rv.value(metric)
                if value is None:
                    logged = ", ".join(sorted(rv.curves.get(rv.epoch, {}))[:12])
                    note = f"columns.{column.name}: metric {metric} not in {rv.run.directory / 'metrics.csv'} (logged: {logged} ...)"
                    if note not in missing:
                        missing.append(note)
                    continue
                cell.values.append(value * column.scale)
                cell.seeds.append(rv.run.seed)

    outputs: dict[str, dict[int, list[float]]] = {}
    for plot in spec.plots:
        if plot.kind != "per_output":
            continue
        for name in plot.rows or [r.name for r in spec.rows_in(profile.name)]:
            row = spec.rows.get(name)
            if row is None or not row.in_profile(profile.name) or plot.count not in row.vars:
                continue
            per_k: dict[int, list[float]] = {}
            for rv in finished:
                if name not in rv.run.rows:
                    continue
                for k in range(1, int(row.vars[plot.count]) + 1):
                    value = rv.value(plot.metric.format(k=k, **row.vars))
                    if value is not None:
                        per_k.setdefault(k, []).append(value * plot.scale)
            outputs[f"{plot.name}:{name}"] = per_k
    return Collected(spec=spec, profile=profile, runs=runs, finished=finished, cells=cells, params=params, outputs=outputs,
                     missing_metrics=missing, select=spec.select or (", ".join(sorted(monitors)) if monitors else None))
