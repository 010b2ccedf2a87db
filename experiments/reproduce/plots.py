"""The table's plots, as PNGs (matplotlib without a display), each kind generic over the task:

* ``per_output``: a metric template with ``{k}`` at every output ``k = 1..count`` of each row (the
  outputs of a multi-output network, e.g. the heads of a cascade),
  against ``k / count``, mean ± std over seeds;
* ``against_var``: columns against a numeric row var (network size, number of objects, ...), one
  line per section;
* ``bars``: mean ± std per row and column, the paper's numbers as marks where comparable;
* ``curves``: a column per validation epoch, mean over seeds with the min-max band.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.reproduce.collect import Collected, std

__all__ = ["make_plots"]


def make_plots(collected: Collected, plot_dir: Path) -> list[Path]:
    """The spec's plots as PNGs (matplotlib, no display); a plot with nothing to draw is left out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec, profile = collected.spec, collected.profile
    planned_rows = {r for run in collected.runs for r in run.rows}
    written: list[Path] = []
    for plot in spec.plots:
        rows = [spec.rows[r] for r in (plot.rows or [r.name for r in spec.rows_in(profile.name)])
                if spec.rows[r].in_profile(profile.name) and r in planned_rows]
        if not rows:
            continue
        draw = _KINDS.get(plot.kind)
        fig = None
        try:
            fig = draw(plt, collected, plot, rows) if draw is not None else None
            if fig is None:
                continue
            written.append(_save(fig, collected, plot, plot_dir))
        finally:
            if fig is not None:
                plt.close(fig)
    return written


def _show_paper(collected: Collected) -> bool:
    # The paper's numbers are drawn where they are comparable; on synthetic data (compare: false)
    # they would only squash our curves against the bottom of the axes (they are in the tables).
    return collected.profile.compare


def _save(fig: Any, collected: Collected, plot: Any, plot_dir: Path) -> Path:
    """Title and footer the figure and write ``<plot_dir>/<plot name>.png``."""
    spec, profile = collected.spec, collected.profile
    title = plot.title or f"{spec.table}: {plot.name}"
    if not _show_paper(collected) and plot.kind != "curves":
        title += f"\n({profile.name} profile: the paper's numbers are in the report's tables, not drawn)"
    fig.suptitle(title, fontsize=10)
    fig.text(0.99, 0.01, f"{spec.table} / {profile.name}", ha="right", va="bottom", fontsize=6, alpha=0.6)
    fig.tight_layout()
    path = plot_dir / f"{plot.name}.png"
    fig.savefig(path, dpi=110)
    return path


def _per_output(plt: Any, collected: Collected, plot: Any, rows: list[Any]) -> Any:
    """Each row's metric at output ``k`` against ``k / count``, mean ± std over seeds (None when no
    row has a value)."""
    spec = collected.spec
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drew = False
    for i, row in enumerate(rows):
        per_k = collected.outputs.get(f"{plot.name}:{row.name}", {})
        n = int(row.vars.get(plot.count, 0) or 0)
        ks = [k for k in range(1, n + 1) if per_k.get(k)]
        if not ks:
            continue
        color = f"C{i}"
        means = [sum(per_k[k]) / len(per_k[k]) for k in ks]
        spread = [std(per_k[k]) or 0.0 for k in ks]
        ax.errorbar([k / n for k in ks], means, yerr=spread, marker="o", color=color, capsize=3, label=f"{row.label} (ours)")
        drew = True
        paper_x, paper_y = [], []
        for k in range(1, n + 1):
            target = plot.metric.format(k=k, **row.vars)
            for column in spec.columns.values():
                cell = row.paper.get(column.name)
                if cell is not None and column.metric_for(row) == target:
                    paper_x.append(k / n)
                    paper_y.append(cell.value)
        if paper_x and _show_paper(collected):
            ax.plot(paper_x, paper_y, linestyle="--", marker="D", color=color, alpha=0.6, label=f"{row.label} (paper)")
    if not drew:
        plt.close(fig)
        return None
    ax.set_xlabel(plot.xlabel or f"output k / {plot.count} (position of the output in the network)")
    ax.set_ylabel(plot.ylabel or plot.metric.replace("{k}", "k"))
    ax.set_xlim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _against_var(plt: Any, collected: Collected, plot: Any, rows: list[Any]) -> Any:
    """Columns against a numeric row var, one line per column and section (None when no point)."""
    spec = collected.spec
    columns = [spec.columns[c] for c in (plot.columns or list(spec.columns)[:1])]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    sections: dict[str, list] = {}
    for row in rows:
        sections.setdefault(row.section, []).append(row)
    drew = False
    for j, column in enumerate(columns):
        for i, (section, members) in enumerate(sections.items()):
            points = []
            for row in members:
                cell = collected.cells.get((row.name, column.name))
                x = row.vars.get(plot.var)
                if cell is not None and cell.mean is not None and isinstance(x, (int, float)):
                    points.append((float(x), cell.mean, cell.std or 0.0))
            if not points:
                continue
            points.sort()
            label = " / ".join(part for part in (column.label, section) if part)
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        capsize=3, color=f"C{(j * len(sections) + i) % 10}", label=label)
            drew = True
    if not drew:
        plt.close(fig)
        return None
    ax.set_xlabel(plot.xlabel or plot.var)
    ax.set_ylabel(plot.ylabel or ", ".join(c.label for c in columns))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _bars(plt: Any, collected: Collected, plot: Any, rows: list[Any]) -> Any:
    """Mean ± std per row and column, the paper's numbers as marks where comparable."""
    spec = collected.spec
    columns = [spec.columns[c] for c in (plot.columns or list(spec.columns))]
    fig, ax = plt.subplots(figsize=(min(13.0, max(6.4, 0.6 * len(rows) * len(columns) + 2.0)), 4.6))
    width = 0.8 / len(columns)
    for j, column in enumerate(columns):
        xs, means, stds, paper_x, paper_y = [], [], [], [], []
        for i, row in enumerate(rows):
            cell = collected.cells.get((row.name, column.name))
            if cell is None or cell.mean is None:
                continue
            x = i + (j - (len(columns) - 1) / 2) * width
            xs.append(x)
            means.append(cell.mean)
            stds.append(cell.std or 0.0)
            if cell.paper is not None:
                paper_x.append(x)
                paper_y.append(cell.paper.value)
        if xs:
            ax.bar(xs, means, width=width * 0.9, yerr=stds, capsize=3, color=f"C{j}", label=f"{column.label} (ours)")
        if paper_x and _show_paper(collected):
            ax.scatter(paper_x, paper_y, marker="D", color="black", zorder=3, s=18, label="paper" if j == 0 else None)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r.label for r in rows], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(plot.ylabel or ", ".join(c.label for c in columns))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def _curves(plt: Any, collected: Collected, plot: Any, rows: list[Any]) -> Any:
    """A column per validation epoch, one axis per column: mean over seeds with the min-max band."""
    spec = collected.spec
    columns = [spec.columns[c] for c in (plot.columns or list(spec.columns)[:1])]
    fig, axes = plt.subplots(1, len(columns), figsize=(6.4 * len(columns), 4.2), squeeze=False)
    for ax, column in zip(axes[0], columns):
        for i, row in enumerate(rows):
            per_epoch = _per_epoch(collected, row, column)
            if not per_epoch:
                continue
            epochs = sorted(per_epoch)
            means = [sum(per_epoch[e]) / len(per_epoch[e]) for e in epochs]
            ax.plot([e + 1 for e in epochs], means, marker=".", color=f"C{i % 10}", label=row.label)
            lows = [min(per_epoch[e]) for e in epochs]
            highs = [max(per_epoch[e]) for e in epochs]
            ax.fill_between([e + 1 for e in epochs], lows, highs, color=f"C{i % 10}", alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(column.label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def _per_epoch(collected: Collected, row: Any, column: Any) -> dict[int, list[float]]:
    """``{epoch: [scaled value of each finished run of the row]}`` of one column."""
    metric = column.metric_for(row)
    per_epoch: dict[int, list[float]] = {}
    if metric is None:
        return per_epoch
    for rv in collected.finished:
        if row.name not in rv.run.rows:
            continue
        for epoch, values in rv.curves.items():
            if metric in values:
                per_epoch.setdefault(epoch, []).append(values[metric] * column.scale)
    return per_epoch


_KINDS: dict[str, Callable[..., Any]] = {"per_output": _per_output, "against_var": _against_var, "bars": _bars, "curves": _curves}
