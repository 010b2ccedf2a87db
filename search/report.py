"""What a study leaves behind in ``runs/<study>/``:

* ``<study>_best.yaml``: the best trial's full configuration, runnable with
  ``python -m experiments fit --config runs/<study>/<study>_best.yaml`` (multi-objective: the Pareto
  trial best on the first objective, and every Pareto trial under ``pareto/``);
* ``report.md`` with ``plots/*.png`` (optimisation history, parameter importances, parallel
  coordinates, slices, intermediate values, Pareto front, pruned-trial statistics), the trial
  table, the failures with their reasons, and the re-training of the top-k over seeds;
* ``trials.csv``;
* a W&B summary run (``job_type: study-summary`` in the study's group) with the trial table.
"""
from __future__ import annotations

import json
import math
import statistics
import threading
import time
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from core.io import shown_path, write_atomic
from experiments.recipe import get_dotted, log_summary_run, override_tree, resolve_wandb_mode
from core.stats import LEVEL, rule_text
from search.retrain import summarise
from search.space import params_to_values
from search.spec import SearchSpec

__all__ = ["write_outputs", "write_best_config", "write_wandb_summary", "best_trials", "verdict_lines"]


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def best_trials(study: Any, spec: SearchSpec) -> list[Any]:
    """Single objective: the best trial (or none). Several: the Pareto front, best on the first
    objective first."""
    from optuna.trial import TrialState

    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        return []
    if not spec.multi_objective:
        return [study.best_trial]
    sign = 1 if spec.objectives[0].direction == "maximize" else -1
    return sorted(study.best_trials, key=lambda t: -sign * t.values[0])


class _DefaultTrial:
    """The default configuration where ``write_best_config`` takes a trial: no searched parameter
    set, so the base config's own values (not trial 0's, which may be clipped into the space)."""

    number = "default"
    params: dict[str, Any] = {}
    values: list[float] = []


def write_best_config(composer: Any, spec: SearchSpec, trial: Any, path: Path, note: str = "", judged: str = "") -> Path:
    """The trial's configuration as one runnable YAML: base + the spec's ``overrides`` + its
    parameters, at the base config's budget (the trials' ``trial_overrides`` are not in it).
    ``judged`` is the verdict on it against the default, in words, for the header."""
    values = params_to_values(trial.params, spec.entries)
    config = composer.parse(spec.base, override_tree({**spec.overrides, **values}))
    tree = composer.to_dict(config)
    run = tree.get("run") or {}
    for key in ("callbacks", "wandb_id", "config", "job_type"):
        run.pop(key, None)
    run["name"] = None
    run["group"] = spec.study
    tree["run"] = run
    objectives = ", ".join(f"{o.metric}={_fmt(v)}" for o, v in zip(spec.objectives, trial.values or []))
    header = (
        (f"# Best configuration of study {spec.study}: trial {trial.number} ({objectives}){note}.\n" if trial.params or trial.values else
         f"# Best configuration of study {spec.study}: the default (the base config's own values), which no trial beat.\n")
        + f"# Base config(s): {', '.join(spec.base)}. Train it again with:\n"
        f"#   python -m experiments fit --config {path}\n"
        f"# Parameters: {json.dumps(trial.params, default=str)}\n"
        + (f"# At the base config's budget (without the trials' trial_overrides: {json.dumps(spec.trial_overrides)}).\n"
           if spec.trial_overrides else "")
        + (f"# {judged}\n" if judged else "")
    )
    write_atomic(path, header + yaml.safe_dump(tree, sort_keys=False))
    return path


# ------------------------------------------------------------------------------------- plots
_PLOT_LOCK = threading.Lock()


def _plots(study: Any, spec: SearchSpec, plot_dir: Path) -> dict[str, str]:
    """PNG plots with optuna.visualization.matplotlib; a plot that cannot be drawn yet (too few
    trials) is listed with the reason instead."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as ovm
    from optuna.trial import TrialState

    plot_dir.mkdir(parents=True, exist_ok=True)
    first = spec.objectives[0].metric
    target = (lambda t: t.values[0]) if spec.multi_objective else None
    kwargs = {"target": target, "target_name": first} if spec.multi_objective else {"target_name": first}
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    params = [e.name for e in spec.entries]
    jobs: list[tuple[str, str, Any]] = [
        ("history", "Optimisation history", lambda: ovm.plot_optimization_history(study, **kwargs)),
        ("importances", "Parameter importances (fANOVA)", lambda: ovm.plot_param_importances(study, **kwargs)),
        ("parallel_coordinate", "Parallel coordinates", lambda: ovm.plot_parallel_coordinate(study, params=params, **kwargs)),
        ("slice", "Slices", lambda: ovm.plot_slice(study, params=params, **kwargs)),
    ]
    if not spec.multi_objective:
        jobs.append(("intermediate_values", "Intermediate values (pruning)", lambda: ovm.plot_intermediate_values(study)))
    if spec.multi_objective and len(spec.objectives) in (2, 3):
        names = [o.metric for o in spec.objectives]
        jobs.append(("pareto_front", "Pareto front", lambda: _mark_default(ovm.plot_pareto_front(study, target_names=names), study)))
    jobs.append(("pruned", "Pruned and failed trials", lambda: _pruned_plot(study, plt)))
    out: dict[str, str] = {}
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with _PLOT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for key, title, draw in jobs:
            if key in ("importances",) and len(complete) < 2:
                out[key] = f"{title}: needs at least 2 complete trials"
                continue
            if not complete and key not in ("pruned", "intermediate_values"):
                out[key] = f"{title}: no complete trial yet"
                continue
            try:
                axes = draw()
                figure = _figure_of(axes)
                path = plot_dir / f"{key}.png"
                figure.set_size_inches(max(figure.get_size_inches()[0], 9), max(figure.get_size_inches()[1], 5))
                figure.tight_layout()
                figure.savefig(path, dpi=90)
                plt.close(figure)
                out[key] = str(path)
            except Exception as error:
                out[key] = f"{title}: not drawn ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"
                plt.close("all")
    optuna.logging.set_verbosity(verbosity)
    return out


def _mark_default(axes: Any, study: Any) -> Any:
    """The default trial (the base config's values) as a star on a Pareto-front plot."""
    from optuna.trial import TrialState

    default = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.user_attrs.get("default")]
    if default:
        axes.scatter(*[[v] for v in default[-1].values], marker="*", s=260, c="tab:red", edgecolors="black", zorder=5,
                     label=f"default (trial {default[-1].number})")
        axes.legend(loc="best")
    return axes


def _figure_of(axes: Any) -> Any:
    import numpy as np

    if isinstance(axes, np.ndarray):
        return axes.flat[0].figure
    return axes.figure


def _pruned_plot(study: Any, plt: Any) -> Any:
    from optuna.trial import TrialState

    pruned = [t for t in study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)) if not t.user_attrs.get("rejected")]
    at = Counter(int(t.user_attrs.get("pruned_at", max(t.intermediate_values, default=0))) for t in pruned)
    reasons = Counter(t.user_attrs.get("fail_reason", "unknown") for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    if at:
        epochs = sorted(at)
        left.bar([str(e) for e in epochs], [at[e] for e in epochs], color="tab:orange")
    left.set_title(f"Pruned trials by epoch ({len(pruned)})")
    left.set_xlabel("epoch of the pruning decision")
    left.set_ylabel("trials")
    states = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    rejected = sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("rejected"))
    labels = [s for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING") if states.get(s)]
    counts = [states[s] - (rejected if s == "PRUNED" else 0) for s in labels]
    if rejected:
        labels.append("REJECTED")
        counts.append(rejected)
    labels += [f"FAIL:{r}" for r in reasons]
    counts += list(reasons.values())
    right.barh(labels, counts, color="tab:blue")
    right.set_title("Trial states (and failure reasons)")
    return left


# ------------------------------------------------------------------------------------- report
def write_outputs(
    study: Any, spec: SearchSpec, composer: Any, study_dir: Path, retrained: dict[str, Any] | None = None,
    storage_url: str | None = None, run_budget: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Write the winner's configuration (after the retraining, with its verdict), ``trials.csv``,
    the plots, ``summary.json`` and ``report.md`` of a study; returns ``{label: path}`` of what was
    written. ``retrained`` is ``search.retrain.retrain``'s result with its ``verdict``; ``run_budget``
    the budget this run of the driver had (default: the spec's)."""
    study_dir = Path(study_dir)
    trials = study.get_trials(deepcopy=False)
    best = best_trials(study, spec)
    outputs = _write_best_configs(composer, spec, study, best, study_dir, retrained)
    outputs.update(_write_trials_csv(study, study_dir))
    plots = _plots(study, spec, study_dir / "plots")
    summary = _write_summary(study, spec, trials, best, retrained, study_dir)
    lines = [f"# Study `{spec.study}`", ""]
    lines += verdict_lines(spec, retrained)
    lines += _summary_lines(spec, trials, run_budget)
    lines += _default_lines(study, spec)
    lines += _best_lines(spec, best, outputs)
    lines += _retrain_lines(spec, retrained)
    lines += _pruning_lines(spec, trials, best, summary, study_dir, (run_budget or {}).get("max_epochs"))
    lines += _failure_lines(trials)
    lines += _trial_lines(spec, trials)
    lines += _plot_lines(plots)
    lines += _open_lines(study, spec, storage_url)
    write_atomic(study_dir / "report.md", "\n".join(lines))
    outputs["report"] = str(study_dir / "report.md")
    outputs["plots"] = str(study_dir / "plots")
    return outputs


def _write_best_configs(composer: Any, spec: SearchSpec, study: Any, best: list[Any], study_dir: Path,
                        retrained: dict[str, Any] | None) -> dict[str, str]:
    """``<study>_best.yaml`` (the retrained winner with its verdict, else the best trial) and, for
    several objectives, every Pareto trial's under ``pareto/``."""
    outputs: dict[str, str] = {}
    verdict = (retrained or {}).get("verdict") or {}
    winner = None
    if verdict.get("winner_trial") is not None and not spec.multi_objective:
        winner = study.trials[verdict["winner_trial"]]
    if best and winner is not None and not verdict.get("beats_default"):
        # Nothing found beats the config the user started from: the file to train is the default's.
        outputs["best config"] = str(write_best_config(composer, spec, _DefaultTrial(), study_dir / f"{spec.study}_best.yaml",
                                                       judged=_judged_words(spec, retrained)))
    elif best:
        chosen = winner or best[0]
        judged = _judged_words(spec, retrained) if winner is not None else "Not judged against the default (no retraining)."
        outputs["best config"] = str(write_best_config(composer, spec, chosen, study_dir / f"{spec.study}_best.yaml", judged=judged))
        if spec.multi_objective:
            for t in best:
                write_best_config(composer, spec, t, study_dir / "pareto" / f"{spec.study}_trial-{t.number:04d}.yaml", " (Pareto front)")
            outputs["pareto"] = str(study_dir / "pareto")
    return outputs


def _write_trials_csv(study: Any, study_dir: Path) -> dict[str, str]:
    """``trials.csv`` (Optuna's trials data frame); a failure is said, and the report still written."""
    try:
        frame = study.trials_dataframe(attrs=("number", "state", "values", "params", "user_attrs", "duration"), multi_index=False)
        write_atomic(study_dir / "trials.csv", frame.to_csv(index=False))
        return {"trials": str(study_dir / "trials.csv")}
    except Exception as error:  # the report still gets written; say what is missing from it
        print(f"convlab search: trials.csv not written ({type(error).__name__}: {error})", flush=True)
        return {}


def _superseded(trials: list[Any]) -> set[int]:
    """The numbers of the trials that a retry replaced."""
    return {int(t.user_attrs["retry_of"]) for t in trials if t.user_attrs.get("retry_of") is not None}


def _summary_lines(spec: SearchSpec, trials: list[Any], run_budget: dict[str, Any] | None) -> list[str]:
    """The study's set-up: spec, objectives, sampler and pruner, this run's budget, trial states."""
    states = Counter(t.state.name for t in trials)
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    superseded = _superseded(trials)
    budget = {"n_trials": spec.n_trials, "timeout": spec.timeout, "slots": spec.slots, **(run_budget or {})}
    return [
        "## Set-up",
        "",
        f"- spec: `{spec.path}`; base config(s): {', '.join(f'`{b}`' for b in spec.base)}",
        f"- objectives: {', '.join(f'{o.metric} ({o.direction}, {o.reduce})' for o in spec.objectives)}",
        f"- sampler: `{spec.sampler}`; pruner: `{spec.pruner}`",
        f"- budget of this run: {budget['n_trials'] or 'no count of'} trials" + (f", {budget['timeout']:.0f} s" if budget["timeout"] else "")
        + f"; slots: {budget['slots']}",
        f"- trials: {len(trials)} — " + ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
        + (f" (of the PRUNED, {len(rejected)} rejected before launch by the constraints)" if rejected else "")
        + (f"; {len(superseded)} orphaned trial(s) retried" if superseded else ""),
        "",
    ]


def _best_lines(spec: SearchSpec, best: list[Any], outputs: dict[str, str]) -> list[str]:
    """The best trial (or the Pareto front) with its size and parameters, and how to train it again."""
    if not best:
        return ["No trial has completed yet.", ""]
    names = [o.metric for o in spec.objectives]
    lines = ["## Best" if not spec.multi_objective else "## Pareto front", ""]
    lines += ["| trial | " + " | ".join(names) + " | params (M) | GFLOPs | parameters |", "|---" * (len(names) + 4) + "|"]
    for t in best:
        lines.append(
            f"| {t.number} | " + " | ".join(_fmt(v) for v in t.values) + f" | {_fmt((t.user_attrs.get('params') or 0) / 1e6, 3)} | "
            f"{_fmt(t.user_attrs.get('gflops'), 3)} | `{json.dumps(t.params, default=str)}` |"
        )
    lines += ["", f"Train the best configuration again: `python -m experiments fit --config {outputs['best config']}`", ""]
    return lines


def _mean_std(summary: dict[str, Any], digits: int = 4) -> str:
    if summary["mean"] is None:
        return "no finished run"
    std = f" ± {summary['std']:.{digits}f}" if summary["std"] is not None else ""
    return f"{summary['mean']:.{digits}f}{std} (n={summary['n']})"


def _judged_words(spec: SearchSpec, retrained: dict[str, Any] | None) -> str:
    """The verdict on the winner against the default in one sentence (the first line of the report)."""
    verdict = (retrained or {}).get("verdict") or {}
    comparisons = verdict.get("comparisons") or []
    if not comparisons:
        return "No retrained run finished: no verdict against the default."
    if spec.multi_objective:
        held = [f"trial {c['trial']} {c['metric']}: {c['verdict']}" for c in comparisons]
        return "Picked trials against the default (better than the default?): " + "; ".join(held) + "."
    c = comparisons[0]
    if retrained.get("default_is_best") and c["verdict"] != "holds":
        prefix = "The default (trial 0) is the study's best trial, and the best other trial does not beat it: "
    else:
        prefix = ""
    test = c["test"] or {}
    p = f", p = {test['p']:.3g}" if test.get("p") is not None else ""
    values = f"{c['metric']} {_mean_std(c['candidate'])} against the default's {_mean_std(c['default'])}{p}"
    if prefix:
        return prefix + (f"trial {c['trial']} {values}" if c["verdict"] == "contradicted" else f"trial {c['trial']} (not resolved at this "
                         f"budget) {values}") + ("; the default is better." if c["verdict"] == "contradicted" else ".")
    if c["verdict"] == "holds":
        return f"The winner, trial {c['trial']}, beats the default: {values}."
    if c["verdict"] == "contradicted":
        return f"The winner, trial {c['trial']}, does not beat the default: the default is better, {values}."
    return f"The winner, trial {c['trial']}, does not beat the default (not resolved at this budget): {values}."


def verdict_lines(spec: SearchSpec, retrained: dict[str, Any] | None) -> list[str]:
    """The report's first lines: the default's and the winner's values at the base config's budget
    (mean ± std over seeds), the difference with its interval and p-value, the verdict, and how
    many seeds would resolve it when it is not resolved."""
    if not retrained:
        if spec.multi_objective:
            return ["**No verdict**: pick Pareto-front trials to retrain beside the default with `--retrain-trials N,M` "
                    "(or `retrain: {trials: [...]}` in the spec).", ""]
        return ["**No verdict on the winner**: the study retrains nothing (`retrain: {top_k: 1}` in the spec, or "
                "`--retrain-top-k 1`). The best value below is one run at the trials' budget and seed, not the default's "
                "value at the base config's.", ""]
    lines = [f"**{_judged_words(spec, retrained)}**", ""]
    seeds = ", ".join(map(str, retrained["seeds"]))
    budget = ("the base config's budget, without the trials' `trial_overrides`" if spec.trial_overrides else "the base config's budget")
    lines.append(f"Each configuration trained again with seeds {seeds} at {budget}; the default is the base config with "
                 f"the spec's `overrides`, its own values of the searched parameters.")
    lines.append("")
    for c in retrained["verdict"]["comparisons"]:
        test = c["test"]
        lines.append(f"- {c['metric']}: trial {c['trial']} {_mean_std(c['candidate'])}, default {_mean_std(c['default'])}"
                     + (f"; difference {test['difference']:+.4f}" if test else "")
                     + (f", {LEVEL:g}% interval [{test['low']:+.4f}, {test['high']:+.4f}], p = {test['p']:.3g}"
                        if test and test.get("p") is not None else "")
                     + f": **{c['verdict']}**")
        if c.get("seeds_needed"):
            lines.append(f"  - seeds needed: {c['seeds_needed']['text']}")
    lines += ["", f"The rule: {rule_text()}", ""]
    return lines


def _default_lines(study: Any, spec: SearchSpec) -> list[str]:
    """Which trial is the default, with the values it took, and every value the space could not hold."""
    default = study.user_attrs.get("search:default")
    if default is None:
        return ["No default trial in this study (`default_trial: false`).", ""] if not spec.default_trial else []
    numbers = [t.number for t in study.get_trials(deepcopy=False) if t.user_attrs.get("default")]
    lines = [f"Trial {numbers[0] if numbers else 0} is the default: the base config's values "
             f"`{json.dumps(default['params'], default=str)}`" + (f" (retried as trial(s) {numbers[1:]})" if len(numbers) > 1 else "")
             + "."]
    lines += [f"- {note}" for note in default.get("notes", [])]
    return lines + [""]


def _retrain_lines(spec: SearchSpec, retrained: dict[str, Any] | None) -> list[str]:
    """The retrained configurations: per-seed values and mean ± std of every objective, and their runs."""
    if not retrained:
        return []
    names = [o["metric"] for o in retrained["objectives"]]
    lines = ["## Retrained at the base config's budget", ""]
    lines += ["| configuration | search value | " + " | ".join(f"{n} mean ± std (per seed)" for n in names) + " | runs |",
              "|---" * (len(names) + 3) + "|"]
    for row in retrained["rows"]:
        cells = []
        for index in range(len(names)):
            series = [v[index] for v in row["values"] if v is not None and v[index] is not None]
            per_seed = ", ".join(_fmt(v) for v in series)
            cells.append(f"{_mean_std(summarise(series))} ({per_seed})")
        search_value = ", ".join(_fmt(v) for v in row["search_values"]) if row["search_values"] else "—"
        name = "default" if row["trial"] is None else f"trial {row['trial']}"
        lines.append(f"| {name} | {search_value} | " + " | ".join(cells) + " | " + ", ".join(f"`{r}`" for r in row["runs"] if r) + " |")
    lines.append("")
    return lines


def _spent(trials: list[Any]) -> tuple[list[Any], int, float]:
    """The launched trials that count (a retried orphan's retry carries its curve), their
    trial-epochs (validations reported) and trial-seconds."""
    from optuna.trial import TrialState

    superseded = _superseded(trials)
    launched = [t for t in trials if not t.user_attrs.get("rejected") and t.state != TrialState.RUNNING]
    counted = [t for t in launched if t.number not in superseded]
    return launched, sum(len(t.intermediate_values) for t in counted), float(sum(t.user_attrs.get("seconds", 0) for t in launched))


def _write_summary(study: Any, spec: SearchSpec, trials: list[Any], best: list[Any], retrained: dict[str, Any] | None,
                   study_dir: Path) -> dict[str, Any]:
    """``summary.json``: what the study spent and found, which the report of the same spec run with
    another pruner reads to compare the two."""
    launched, epochs, seconds = _spent(trials)
    verdict = (retrained or {}).get("verdict") or {}
    winner = next(iter(verdict.get("comparisons") or []), None)
    summary = {
        "study": spec.study, "spec": str(Path(spec.path).resolve()), "pruner": spec.pruner, "launched": len(launched),
        "trial_epochs": epochs, "trial_seconds": round(seconds, 1),
        "best": {"trial": best[0].number, "values": list(best[0].values)} if best else None,
        "winner": winner and {"trial": winner["trial"], "metric": winner["metric"], "retrained": winner["candidate"],
                              "default": winner["default"], "verdict": winner["verdict"]},
    }
    write_atomic(study_dir / "summary.json", json.dumps(summary, indent=2))
    return summary


def _rungs(spec: SearchSpec, max_epochs: int | None) -> str:
    """Where the spec's pruner decides, in epochs trained."""
    pruner = spec.pruner
    if pruner["name"] == "successive_halving":
        low, eta, rate = pruner.get("min_resource", "auto"), int(pruner.get("reduction_factor", 4)), int(pruner.get("min_early_stopping_rate", 0))
        if low == "auto" or not max_epochs:
            return f"successive halving (reduction factor {eta}; min_resource {low})"
        rungs = []
        while int(low) * eta ** (rate + len(rungs)) < max_epochs:
            rungs.append(int(low) * eta ** (rate + len(rungs)))
        return (f"successive halving: after epoch {' and after epoch '.join(map(str, rungs))} a trial goes on only when it is in "
                f"the top 1/{eta} of the trials that reached that epoch; the survivors train all {max_epochs} epochs")
    if pruner["name"] == "hyperband":
        return (f"Hyperband: brackets of successive halving between min_resource {pruner.get('min_resource', 1)} and max_resource "
                f"{pruner.get('max_resource', 'auto')} epochs, reduction factor {pruner.get('reduction_factor', 3)}")
    return f"`{pruner}`"


def _pruning_lines(spec: SearchSpec, trials: list[Any], best: list[Any], summary: dict[str, Any], study_dir: Path,
                   max_epochs: int | None = None) -> list[str]:
    """What the study spent, what pruning saved (against the same spec with another pruner, when
    that study is there), and the configurations the constraints rejected."""
    from optuna.trial import TrialState

    lines = ["## Pruning", ""]
    if spec.pruning:
        lines += [f"Pruner: {_rungs(spec, max_epochs)}.", ""]
    launched, epochs, seconds = _spent(trials)
    if launched:
        lines.append(
            f"Trial-epochs spent: {epochs} over {len(launched)} launched trial(s) ({seconds:.0f} s of trial time)"
            + (f"; best {spec.objectives[0].metric} {_fmt(best[0].values[0])}." if best and not spec.multi_objective else ".")
        )
    pruned = [t for t in trials if t.state == TrialState.PRUNED and not t.user_attrs.get("rejected")]
    if pruned:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        lines += _pruned_savings(pruned, complete)
    else:
        lines.append("No trial was pruned." if spec.pruning else "Pruning is off for this study.")
    lines += [""] + _comparison_lines(spec, summary, study_dir)
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    if rejected:
        lines += ["", "Rejected before launch (constraints " + json.dumps(spec.constraints) + "):"]
        lines += [f"- trial {t.number}: {t.user_attrs['rejected']}" for t in rejected]
    lines.append("")
    return lines


def _comparison_lines(spec: SearchSpec, summary: dict[str, Any], study_dir: Path) -> list[str]:
    """This study beside every study of the same spec with another pruner (their ``summary.json``
    in the same runs folder): trial-epochs, trial-seconds and best values."""
    others = []
    for path in sorted(study_dir.parent.glob("*/summary.json")):
        try:
            other = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if other.get("study") != summary["study"] and other.get("spec") == summary["spec"] and other.get("pruner") != summary["pruner"]:
            others.append(other)
    if not others:
        other_name = "none" if spec.pruning else "<name>"
        return [f"What pruning buys: run the same spec with `--pruner {other_name}` (its own study, `{spec.study}-pruner-{other_name}`); "
                "each report then sets the two studies side by side."]
    first = spec.objectives[0].metric
    lines = [f"| study | pruner | launched trials | trial-epochs | trial-seconds | best {first} (search) | winner retrained |",
             "|---|---|---|---|---|---|---|"]
    for s in [summary, *others]:
        best = s.get("best") or {}
        winner = s.get("winner") or {}
        retrained = _mean_std(winner["retrained"]) if winner.get("retrained") else "—"
        lines.append(f"| `{s['study']}` | {s['pruner'].get('name')} | {s['launched']} | {s['trial_epochs']} | {s['trial_seconds']:.0f} | "
                     f"{_fmt((best.get('values') or [None])[0])} (trial {best.get('trial')}) | {retrained} |")
    lines.append("")
    for other in others:
        if not other["trial_epochs"] or not summary["trial_epochs"]:
            continue
        ratio = other["trial_epochs"] / summary["trial_epochs"]
        line = f"`{other['study']}` spent {ratio:.2f}× the trial-epochs of this study ({other['trial_seconds'] / max(summary['trial_seconds'], 1):.2f}× the trial-seconds)"
        spread = next((s["winner"]["retrained"]["std"] for s in (summary, other) if (s.get("winner") or {}).get("retrained", {}).get("std")), None)
        mine, theirs = (summary.get("best") or {}).get("values"), (other.get("best") or {}).get("values")
        if mine and theirs and spread:
            delta = theirs[0] - mine[0]
            inside = "within" if abs(delta) <= 2 * spread else "outside"
            line += (f"; its best {first} differs by {delta:+.4f}, {inside} the seed spread (2 × the retrained winner's SD "
                     f"{spread:.4f})")
        lines.append(line + ".")
    return lines


def _pruned_savings(pruned: list[Any], complete: list[Any]) -> list[str]:
    """The pruned trials by epoch, and the time they would have taken run to the end."""
    at = Counter(t.user_attrs.get("pruned_at") for t in pruned)
    seconds_pruned = sum(t.user_attrs.get("seconds", 0) for t in pruned)
    mean_complete = statistics.fmean([t.user_attrs.get("seconds", 0) for t in complete]) if complete else None
    by_epoch = ", ".join(f"epoch {k}: {v}" for k, v in sorted(at.items(), key=lambda kv: (kv[0] is None, kv[0])))
    lines = [f"{len(pruned)} trial(s) pruned, by epoch: {by_epoch}."]
    if mean_complete and len(pruned) * mean_complete > seconds_pruned:
        saved = len(pruned) * mean_complete - seconds_pruned
        lines.append(
            f"They ran {seconds_pruned:.0f} s in all; run to the end they would have taken about "
            f"{len(pruned) * mean_complete:.0f} s (≈{saved:.0f} s saved)."
        )
    return lines


def _failure_lines(trials: list[Any]) -> list[str]:
    """The failed trials with their reasons."""
    from optuna.trial import TrialState

    failed = [t for t in trials if t.state == TrialState.FAIL]
    if not failed:
        return []
    superseded = _superseded(trials)
    lines = ["## Failures", "", "| trial | reason | detail |", "|---|---|---|"]
    for t in failed:
        reason = t.user_attrs.get("fail_reason") or ("orphaned (retried)" if t.number in superseded else "unknown")
        detail = (t.user_attrs.get("fail_detail") or "").strip().splitlines()
        lines.append(f"| {t.number} | {reason} | {(detail[0] if detail else '')[:160].replace('|', '/')} |")
    lines.append("")
    return lines


def _trial_lines(spec: SearchSpec, trials: list[Any]) -> list[str]:
    """Every trial: state, values, size, epochs, time, parameters and a note."""
    from optuna.trial import TrialState

    names = [o.metric for o in spec.objectives]
    lines = ["## Trials", ""]
    header = ["trial", "state", *names, "params (M)", "GFLOPs", "epochs", "seconds", *[e.name for e in spec.entries], "note"]
    lines += ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for t in trials:
        vals = list(t.values) if t.values else [None] * len(names)
        note = t.user_attrs.get("rejected") or t.user_attrs.get("fail_reason") or ""
        if t.user_attrs.get("retry_of") is not None:
            note = (note + f" retry of {t.user_attrs['retry_of']}").strip()
        if t.state == TrialState.PRUNED and not t.user_attrs.get("rejected"):
            note = f"pruned at epoch {t.user_attrs.get('pruned_at')}"
        row = [str(t.number), t.state.name, *[_fmt(v) for v in vals], _fmt((t.user_attrs.get("params") or 0) / 1e6, 3),
               _fmt(t.user_attrs.get("gflops"), 3), _fmt(t.user_attrs.get("epochs")), _fmt(t.user_attrs.get("seconds"), 3),
               *[_fmt(t.params.get(e.name)) for e in spec.entries], note]
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    return lines


def _plot_lines(plots: dict[str, str]) -> list[str]:
    """The plots drawn, and why the others are not."""
    lines = ["## Plots", ""]
    for key, value in plots.items():
        if value.endswith(".png"):
            lines += [f"![{key}](plots/{Path(value).name})", ""]
        else:
            lines += [f"- {value}", ""]
    return lines


def _study_folder(journal: str | None) -> str:
    """What the README's dashboard command names: the study folder of a journal in one, else the file."""
    if not journal:
        return "<journal>"
    path = Path(journal)
    return shown_path(path.parent if path.name == "journal.log" else path)


def _open_lines(study: Any, spec: SearchSpec, storage_url: str | None) -> list[str]:
    """Where the study is stored, and how to look at it or extend it (the command that made it:
    its spec, study name, pruner and ``--set`` values)."""
    import shlex

    command = ["python", "-m", "experiments", "search", *spec.command_args]
    if storage_url and "://" in storage_url:
        command += ["--storage", storage_url]
    return [
        "## Open the study",
        "",
        f"- storage: `{storage_url or study._storage.__class__.__name__}`",
        f"- dashboard: `python -m experiments dashboard "
        + (f"--storage {storage_url}`" if storage_url and "://" in storage_url else f"--study {_study_folder(storage_url)}`"),
        f"- resume or extend: `{shlex.join(command)}` (`--n-trials N` raises the budget; `--retrain-top-k K` retrains more)",
        "",
    ]


# ------------------------------------------------------------------------------------- W&B
def write_wandb_summary(study: Any, spec: SearchSpec, base: dict[str, Any], study_dir: Path, study_uuid: str,
                        retrained: dict[str, Any] | None = None) -> str | None:
    """One run per study (``job_type: study-summary``, same group as the trials) with the trial
    table, the plots, the best values and the verdict on the winner against the default. Offline
    without an API key; never fails the study."""
    names = [o.metric for o in spec.objectives]
    columns = ["trial", "state", *names, *[e.name for e in spec.entries], "params", "gflops", "seconds", "note"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        vals = list(t.values) if t.values else [None] * len(names)
        rows.append([t.number, t.state.name, *vals, *[_plain(t.params.get(e.name)) for e in spec.entries],
                     t.user_attrs.get("params"), t.user_attrs.get("gflops"), t.user_attrs.get("seconds"),
                     t.user_attrs.get("rejected") or t.user_attrs.get("fail_reason") or ""])
    summary: dict[str, Any] = {}
    best = best_trials(study, spec)
    if best:
        summary["best_trial"] = best[0].number
        summary.update({f"best/{name}": value for name, value in zip(names, best[0].values)})
    for c in ((retrained or {}).get("verdict") or {}).get("comparisons", []):
        key = f"verdict/trial{c['trial']}/{c['metric']}"
        summary.update({key: c["verdict"], f"{key}/mean": c["candidate"]["mean"], f"{key}/std": c["candidate"]["std"],
                        f"verdict/default/{c['metric']}/mean": c["default"]["mean"], f"verdict/default/{c['metric']}/std": c["default"]["std"]})
        if c["test"] and c["test"].get("p") is not None:
            summary[f"{key}/p"] = c["test"]["p"]
    return log_summary_run(
        project=get_dotted(base, "run.project") or "convlab", group=spec.study, job_type="study-summary",
        run_id=f"{study_uuid[:8]}-summary", name=f"{spec.study}/summary", directory=Path(study_dir) / "summary",
        mode=resolve_wandb_mode(spec.wandb or get_dotted(base, "run.wandb") or "auto"), config={"spec": spec.raw},
        tables={"trials": (columns, rows)}, images=sorted((Path(study_dir) / "plots").glob("*.png")), summary=summary,
    )


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
