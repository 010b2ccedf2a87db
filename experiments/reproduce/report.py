"""The table's report: ``report.md`` (paper | ours | Δ per cell, the checks, the plots, the runs),
``summary.json`` and ``runs.csv`` in the profile's folder, and a copy of the report for the table.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.io import read_json, shown_path, write_atomic, write_json_atomic
from experiments.reproduce.checks import CheckResult, evaluate_checks, power_rule_text, rule_text, under_trained_rows
from experiments.reproduce.collect import Cell, Collected
from experiments.reproduce.plan import table_dir
from experiments.reproduce.plots import make_plots
from experiments.reproduce.spec import Profile, Row

__all__ = ["Report", "build_report"]


def _fmt(value: float | None, digits: int, sign: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def _ours(cell: Cell, digits: int) -> str:
    if cell.mean is None:
        return "—"
    if cell.std is None:
        return f"{cell.mean:.{digits}f} (n={cell.n})"
    return f"{cell.mean:.{digits}f} ± {cell.std:.{digits}f} (n={cell.n})"


def _verdict(cell: Cell, profile: Profile) -> str:
    if cell.paper is None:
        return ""
    if cell.mean is None:
        return "not run"
    if not profile.compare:
        return f"n/a ({profile.name} profile)"
    if cell.paper.tolerance is None:
        return "not judged" + (f" ({cell.paper.note})" if cell.paper.note else "")
    ok = abs(cell.delta) <= cell.paper.tolerance + 1e-9
    return f"{'yes' if ok else 'no'} (±{cell.paper.tolerance:g})"


def _params(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n:,}"


@dataclass
class Report:
    table_dir: Path
    profile_dir: Path
    markdown: str
    summary: dict[str, Any]
    plots: list[Path]
    checks: list[CheckResult]


@dataclass
class _Context:
    """What every section of the report reads: the collected runs, the rows the plan ran, their
    seeds, the finished runs, the checks and the plots."""

    collected: Collected
    command: str
    pdir: Path
    rows: list[Row]
    seeds: list[int]
    checks: list[CheckResult]
    plots: list[Path]

    @property
    def spec(self) -> Any:
        return self.collected.spec

    @property
    def profile(self) -> Profile:
        return self.collected.profile


def build_report(collected: Collected, root: str | Path, command: str) -> Report:
    """Write ``report.md``, ``summary.json``, ``runs.csv`` and the plots; return them."""
    spec, profile = collected.spec, collected.profile
    tdir = table_dir(root, spec.table)
    pdir = tdir / profile.name
    plot_dir = pdir / "plots"
    plot_dir.mkdir(parents=True, exist_ok=True)
    checks = evaluate_checks(collected)
    plots = make_plots(collected, plot_dir)
    planned_rows = {r for run in collected.runs for r in run.rows}
    rows = [r for r in spec.rows_in(profile.name) if r.name in planned_rows]
    seeds = sorted({run.seed for run in collected.runs})
    ctx = _Context(collected, command, pdir, rows, seeds, checks, plots)
    summary = _summary(ctx)
    write_atomic(pdir / "report.md", _markdown(ctx, "plots/"))
    markdown = _markdown(ctx, f"{profile.name}/plots/")
    write_atomic(tdir / "report.md", markdown)
    write_json_atomic(pdir / "summary.json", summary)
    write_atomic(pdir / "runs.csv", _runs_csv(collected))
    return Report(table_dir=tdir, profile_dir=pdir, markdown=markdown, summary=summary, plots=plots, checks=checks)


def _markdown(ctx: _Context, plot_prefix: str) -> str:
    """``report.md``, its plots linked under ``plot_prefix`` (the profile's copy and the table's)."""
    out = _intro_lines(ctx)
    out += _results_lines(ctx)
    out += _paper_lines(ctx)
    out += _claims_lines(ctx)
    out += _plot_lines(ctx, plot_prefix)
    out += _runs_lines(ctx)
    return "\n".join(out)


def _intro_lines(ctx: _Context) -> list[str]:
    """Title, table and profile, the runs and how their values are chosen, and the claims' verdicts."""
    spec, profile, collected = ctx.spec, ctx.profile, ctx.collected
    out = [f"# {spec.title}", ""]
    out.append(f"Table `{spec.table}` ({shown_path(spec.path)}), profile **{profile.name}**. Rebuild: `{ctx.command}`.")
    out.append("")
    if spec.description:
        out += [spec.description, ""]
    if profile.description:
        out += [f"**Profile {profile.name}.** {profile.description}", ""]
    if profile.note:
        out += [profile.note, ""]
    out += _run_facts(ctx)
    out.append("")
    if ctx.checks:
        data = "synthetic data" if not profile.compare else "this profile's data"
        verdicts = "; ".join(f"{c.name}: **{c.status}**" for c in ctx.checks)
        out.append(f"**The paper's claims on {data}** ({len(ctx.seeds)} seed(s) a cell; rule and details under Claims): {verdicts}.")
        out.append("")
    for message in collected.missing_metrics:
        out.append(f"> missing metric: {message}")
    if collected.missing_metrics:
        out.append("")
    return out


def _run_facts(ctx: _Context) -> list[str]:
    """The bullet list under the title: runs and seeds, the last ``reproduce``, shared rows, how the
    values are chosen and compared, and the base configs."""
    spec, profile, collected = ctx.spec, ctx.profile, ctx.collected
    finished = collected.finished
    total_seconds = sum(rv.seconds or 0 for rv in finished)
    unique = {(run.config_hash) for run in collected.runs}
    out = [f"- Runs: {len(unique)} distinct configs x {len(ctx.seeds)} seed(s) ({', '.join(map(str, ctx.seeds))}) = {len(collected.runs)} runs; "
           f"{len(finished)} finished, training time summed over runs {total_seconds / 60:.1f} min."]
    last = read_json(ctx.pdir / "last_reproduce.json")
    if last:
        out.append(f"- Last `reproduce`: {last['training_wall_seconds'] / 60:.1f} min of wall time for {last['trained']} run(s) trained "
                   f"({last['slots']} at a time, {last.get('cpu_count')} CPU cores), {last['reused']} reused, {last['failed']} failed; "
                   f"finished {last['finished_at']}.")
    shared = sorted({tuple(run.rows) for run in collected.runs if len(run.rows) > 1})
    for group in shared:
        out.append(f"- Rows {', '.join(group)} compose to the same config and share one run per seed.")
    select = collected.select or "the run's monitor"
    if spec.epoch == "last":
        out.append("- Values: every column at the **last** validation epoch of each run (all columns of a run from the same epoch).")
    else:
        out.append(f"- Values: every column at the epoch with the **best** `{select}` ({spec.select_mode}) of each run (all columns of a run from that epoch).")
    out.append("- ours = mean ± sample std over seeds (n = finished seeds); Δ = ours − paper; within tolerance = |Δ| ≤ tolerance.")
    if not profile.compare:
        tests = "the trend checks below are what this profile tests" if ctx.checks else "this profile tests the pipeline and the metrics"
        out.append(f"- The {profile.name} profile does not train on the paper's data: the paper numbers are shown for reference and "
                   f"not judged against a tolerance; {tests}.")
    base_list = ", ".join(sorted({b for run in collected.runs for b in run.bases}))
    out.append(f"- Base config(s): {base_list}; each run adds its override file (`{shown_path(ctx.pdir / 'overrides')}`).")
    return out


def _results_lines(ctx: _Context) -> list[str]:
    """The wide table: ours per row x column, and what each column is."""
    collected = ctx.collected
    columns = list(ctx.spec.columns.values())
    out = ["## Results", ""]
    out.append("| row | params | " + " | ".join(c.label for c in columns) + " |")
    out.append("|---|---:|" + "---:|" * len(columns))
    for row in ctx.rows:
        cells = [collected.cells[(row.name, c.name)] for c in columns]
        texts = ["n/a" if cell.metric is None else _ours(cell, c.digits) for cell, c in zip(cells, columns)]
        out.append(f"| {row.label} (`{row.name}`) | {_params(collected.params.get(row.name))} | " + " | ".join(texts) + " |")
    out.append("")
    for c in columns:
        note = f" — {c.note}" if c.note else ""
        scale = f" × {c.scale:g}" if c.scale != 1 else ""
        out.append(f"- {c.label}: `{c.metric}`{scale}{note}")
    out.append("")
    return out


def _paper_lines(ctx: _Context) -> list[str]:
    """The long table: paper | ours | Δ | tolerance per section, for the cells with a paper number;
    then the sources and the notes."""
    collected, profile = ctx.collected, ctx.profile
    columns = list(ctx.spec.columns.values())
    out = ["## Paper vs ours", ""]
    sections: dict[str, list[Row]] = {}
    for row in ctx.rows:
        if row.paper:
            sections.setdefault(row.section, []).append(row)
    if not sections:
        out += ["No cell of these rows has a paper number.", ""]
    for section, members in sections.items():
        if section:
            out.append(f"### {section}")
            out.append("")
        out.append("| row | column | paper | ours (mean ± std, n seeds) | Δ | within tolerance | source |")
        out.append("|---|---|---:|---:|---:|---|---|")
        for row in members:
            for c in columns:
                cell = collected.cells[(row.name, c.name)]
                if cell.metric is None or cell.paper is None:
                    continue
                paper = cell.paper
                source = paper.source.name if paper and paper.source else ""
                out.append(f"| {row.label} | {c.label} | {_fmt(paper.value if paper else None, c.digits)} | {_ours(cell, c.digits)} | "
                           f"{_fmt(cell.delta, c.digits, sign=True)} | {_verdict(cell, profile)} | {source} |")
        out.append("")
    return out + _source_lines(ctx, columns) + _row_note_lines(ctx.rows)


def _source_lines(ctx: _Context, columns: list[Any]) -> list[str]:
    """The paper numbers' sources, and the notes on single paper numbers."""
    collected = ctx.collected
    used = {cell.paper.source.name: cell.paper.source for cell in collected.cells.values() if cell.paper and cell.paper.source}
    if not used:
        return []
    out = ["Sources:", ""]
    for name, source in used.items():
        out.append(f"- `{name}`: {source.describe()}" + (f" — {source.note}" if source.note else ""))
    notes = [(row.label, c.label, cell.paper.note) for row in ctx.rows for c in columns
             for cell in [collected.cells[(row.name, c.name)]] if cell.paper and cell.paper.note]
    for row_label, col_label, note in notes:
        out.append(f"- {row_label} / {col_label}: {note}")
    out.append("")
    return out


def _row_note_lines(rows: list[Row]) -> list[str]:
    """The rows' own notes."""
    row_notes = [row for row in rows if row.note]
    if not row_notes:
        return []
    return ["Notes:", "", *[f"- `{row.name}`: {row.note}" for row in row_notes], ""]


def _claims_lines(ctx: _Context) -> list[str]:
    """The paper's claims checked on our means: the rule, the trained floor, each verdict, the count."""
    checks, profile, spec = ctx.checks, ctx.profile, ctx.spec
    if not checks:
        return []
    out = [f"## Claims ({profile.name} profile)", "", f"How to read a verdict: {rule_text()}", "", power_rule_text(), ""]
    if profile.trained is not None:
        floor = profile.trained
        label = spec.columns[floor.column].label
        under = under_trained_rows(ctx.collected)
        out.append(f"Trained floor of this profile: a row whose {label} is under {floor.min:g} is under-trained, and "
                   "every comparison with it is not resolved, whatever the test says. "
                   + ("Under it: " + "; ".join(under.values()) + "." if under else "Every row is above it."))
        out.append("")
    for result in checks:
        mark = {"holds": "✅ holds", "contradicted": "❌ contradicted", "not resolved": "➖ not resolved at this budget"}.get(
            result.status, f"⚠️ {result.status}")
        paper = f" Paper: {result.paper}." if result.paper else ""
        seeds_text = f" (the claimed order in {result.seeds_holding[0]}/{result.seeds_holding[1]} same-seed pairs)" if result.seeds_holding[1] else ""
        out.append(f"- **{result.name}**: {mark}{seeds_text}.{paper}")
        for index, detail in enumerate(result.details):
            out.append(f"  - {detail}")
            needed = result.comparisons[index].get("seeds_needed") if index < len(result.comparisons) else None
            if needed:
                out.append(f"    - seeds needed: {needed['text']}")
    out.append("")
    counts = {status: sum(r.status == status for r in checks) for status in ("holds", "contradicted", "not resolved")}
    out.append(f"Of {len(checks)} claims: {counts['holds']} hold, {counts['contradicted']} contradicted, "
               f"{counts['not resolved']} not resolved at this budget.")
    out.append("")
    return out


def _plot_lines(ctx: _Context, plot_prefix: str) -> list[str]:
    """The plots, linked under ``plot_prefix``."""
    if not ctx.plots:
        return []
    out = ["## Plots", ""]
    for png in ctx.plots:
        out += [f"![{png.stem}]({plot_prefix}{png.name})", ""]
    return out


def _runs_lines(ctx: _Context) -> list[str]:
    """Every planned run: rows, seed, status, the epoch its values come from, its values, its time."""
    collected, spec = ctx.collected, ctx.spec
    cols = list(spec.columns.values())
    out = ["## Runs", ""]
    out.append("| run | rows | seed | status | epoch used / validated | " + " | ".join(c.label for c in cols) + " | train time |")
    out.append("|---|---|---:|---|---|" + "---:|" * len(cols) + "---:|")
    by_run = {id(rv.run): rv for rv in collected.finished}
    for run in collected.runs:
        rv = by_run.get(id(run))
        values = []
        for c in cols:
            value = None if rv is None else rv.value(c.metric_for(spec.rows[run.key]))
            values.append(_fmt(_scaled(value, c.scale), c.digits))
        epoch = "—" if rv is None or rv.epoch is None else f"{rv.epoch} / {rv.epochs}"
        seconds = "—" if rv is None or rv.seconds is None else f"{rv.seconds:.0f}s"
        out.append(f"| `{run.name}` | {', '.join(run.rows)} | {run.seed} | {run.status} | {epoch} | " + " | ".join(values) + f" | {seconds} |")
    out.append("")
    out.append(f"_Generated {datetime.now(timezone.utc).isoformat(timespec='seconds')}._")
    out.append("")
    return out


def _summary(ctx: _Context) -> dict[str, Any]:
    """``summary.json``: every cell with its paper number and verdict, the checks, the runs, the plots."""
    collected, spec, profile, checks = ctx.collected, ctx.spec, ctx.profile, ctx.checks
    row_names = {r.name for r in ctx.rows}
    return {
        "table": spec.table, "profile": profile.name, "title": spec.title, "epoch": spec.epoch, "select": collected.select,
        "seeds": ctx.seeds, "compare": profile.compare,
        "cells": [_cell_summary(cell, profile) for cell in collected.cells.values() if cell.metric is not None and cell.row in row_names],
        "params": collected.params,
        "rule": rule_text() if checks else None,
        "power_rule": power_rule_text() if checks else None,
        "trained_floor": None if profile.trained is None else {
            "column": profile.trained.column, "min": profile.trained.min, "under": under_trained_rows(collected)},
        "checks": [{"name": c.name, "status": c.status, "details": c.details, "paper": c.paper, "comparisons": c.comparisons}
                   for c in checks],
        "runs": [
            {"name": run.name, "rows": run.rows, "seed": run.seed, "status": run.status, "directory": shown_path(run.directory),
             "config_hash": run.config_hash, "wandb_id": run.wandb_id}
            for run in collected.runs
        ],
        "plots": [str(p) for p in ctx.plots],
    }


def _cell_summary(cell: Cell, profile: Profile) -> dict[str, Any]:
    """One cell of ``summary.json``."""
    return {"row": cell.row, "column": cell.column, "metric": cell.metric, "values": cell.values, "seeds": cell.seeds,
            "mean": cell.mean, "std": cell.std, "n": cell.n,
            "paper": None if cell.paper is None else cell.paper.value,
            "tolerance": None if cell.paper is None else cell.paper.tolerance,
            "source": None if cell.paper is None or cell.paper.source is None else cell.paper.source.describe(),
            "delta": cell.delta, "within_tolerance": _within(cell, profile)}


def _within(cell: Cell, profile: Profile) -> bool | None:
    if cell.paper is None or cell.mean is None or not profile.compare or cell.paper.tolerance is None:
        return None
    return abs(cell.delta) <= cell.paper.tolerance + 1e-9


def _runs_csv(collected: Collected) -> str:
    columns = list(collected.spec.columns.values())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["run", "rows", "seed", "epoch", *[c.name for c in columns], "seconds"])
    for rv in collected.finished:
        row = collected.spec.rows[rv.run.key]
        values = [_scaled(rv.value(c.metric_for(row)), c.scale) for c in columns]
        writer.writerow([rv.run.name, " ".join(rv.run.rows), rv.run.seed, rv.epoch, *["" if v is None else v for v in values], rv.seconds])
    return buffer.getvalue()


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale
