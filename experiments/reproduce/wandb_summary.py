"""The table's W&B summary run: one per table and profile (``job_type: summary``, in the table's
group beside its runs), holding the report table, the checks, the per-run values and curves, and
the plots. Written by ``experiments.recipe.log_summary_run``, as a study's summary is; offline
without an API key, and never able to fail a reproduced table.
"""
from __future__ import annotations

from typing import Any

import yaml

from core.io import write_json_atomic
from experiments.recipe import get_dotted
from experiments.reproduce.collect import Collected
from experiments.reproduce.plan import slug, stable_hash
from experiments.reproduce.report import Report
from experiments.reproduce.spec import resolve_config_path

__all__ = ["write_wandb_summary"]


def write_wandb_summary(report: Report, collected: Collected, mode_request: str | None) -> str | None:
    """Log the summary run; returns its directory, or None when W&B is disabled or failed."""
    # Imported here: W&B and Lightning take seconds, which `reproduce --help` need not wait for.
    from experiments.recipe import log_summary_run, resolve_wandb_mode

    spec, profile, summary = collected.spec, collected.profile, report.summary
    mode = resolve_wandb_mode(mode_request or next((r.wandb_mode for r in collected.runs if r.wandb_mode), None)
                              or _configured(collected, "run.wandb") or "auto")
    cells = [[c["row"], c["column"], c["metric"], c["paper"], c["mean"], c["std"], c["n"], c["delta"], c["tolerance"],
              None if c["within_tolerance"] is None else str(c["within_tolerance"]), c["source"]] for c in summary["cells"]]
    run_rows, curve_rows = [], []
    for rv in collected.finished:
        row = spec.rows[rv.run.key]
        values = [rv.value(column.metric_for(row)) for column in spec.columns.values()]
        run_rows.append([rv.run.name, " ".join(rv.run.rows), rv.run.seed, rv.epoch,
                         *[None if v is None else v * c.scale for v, c in zip(values, spec.columns.values())], rv.seconds])
        for epoch, metrics in sorted(rv.curves.items()):
            for column in spec.columns.values():
                metric = column.metric_for(row)
                if metric is not None and metric in metrics:
                    curve_rows.append([rv.run.key, rv.run.seed, epoch, column.name, metrics[metric] * column.scale])
    tables = {
        "table": (["row", "column", "metric", "paper", "ours_mean", "ours_std", "n", "delta", "tolerance", "within_tolerance", "source"], cells),
        "runs": (["run", "rows", "seed", "epoch", *spec.columns, "seconds"], run_rows),
        "curves": (["row", "seed", "epoch", "column", "value"], curve_rows),
        "checks": (["check", "status", "details", "paper"], [[c.name, c.status, "; ".join(c.details), c.paper] for c in report.checks]),
    }
    values = {f"{c['row']}/{c['column']}": c["mean"] for c in summary["cells"] if c["mean"] is not None}
    values.update({f"checks/{c.name}": c.status for c in report.checks})
    digest = stable_hash([spec.table, profile.name, str(report.table_dir.resolve())])[:8]
    run_id = f"{slug(spec.table, 24)}-{slug(profile.name, 8)}-summary-{digest}"
    written = log_summary_run(
        project=_configured(collected, "run.project") or "convlab", group=spec.table, job_type="summary", run_id=run_id,
        name=f"tables/{spec.table}/{profile.name}/summary", directory=report.profile_dir, mode=mode,
        config={"table": spec.table, "profile": profile.name, "spec": spec.raw, "seeds": summary["seeds"], "epoch": spec.epoch},
        tables=tables, images=report.plots, summary=values, tags=["table", spec.table, profile.name, "summary"],
    )
    if written:
        write_json_atomic(report.profile_dir / "wandb_summary.json", {"mode": mode, "id": run_id, "group": spec.table, "job_type": "summary", "dir": written})
    return written


def _configured(collected: Collected, key: str) -> Any:
    """``key`` as the table's runs were configured: from a finished run's saved config, else from
    the base configs."""
    for run in collected.runs:
        try:
            value = get_dotted(yaml.safe_load((run.directory / "config.yaml").read_text()) or {}, key)
        except (OSError, yaml.YAMLError):
            value = None
        if value:
            return value
    for run in collected.runs:
        for base in run.bases:
            try:
                value = get_dotted(yaml.safe_load(resolve_config_path(base).read_text()) or {}, key)
            except (OSError, yaml.YAMLError):
                value = None
            if value:
                return value
    return None
