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

from core.io import write_atomic
from experiments.recipe import get_dotted, log_summary_run, override_tree, resolve_wandb_mode
from search.space import params_to_values
from search.spec import SearchSpec

__all__ = ["write_outputs", "write_best_config", "write_wandb_summary", "retrain_top_k", "best_trials"]


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


def write_best_config(composer: Any, spec: SearchSpec, trial: Any, path: Path, note: str = "") -> Path:
    """The trial's configuration (base + fixed overrides + its parameters) as one runnable YAML."""
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
        f"# Best configuration of study {spec.study}: trial {trial.number} ({objectives}){note}.\n"
        f"# Base config(s): {', '.join(spec.base)}. Train it again with:\n"
        f"#   python -m experiments fit --config {path}\n"
        f"# Parameters: {json.dumps(trial.params, default=str)}\n"
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
        jobs.append(("pareto_front", "Pareto front", lambda: ovm.plot_pareto_front(study, target_names=names)))
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
    study: Any, spec: SearchSpec, composer: Any, study_dir: Path, retrain: dict[str, Any] | None = None, storage_url: str | None = None
) -> dict[str, str]:
    """Write the best configuration(s), ``trials.csv``, the plots and ``report.md`` of a study;
    returns ``{label: path}`` of what was written."""
    study_dir = Path(study_dir)
    trials = study.get_trials(deepcopy=False)
    best = best_trials(study, spec)
    outputs = _write_best_configs(composer, spec, best, study_dir)
    outputs.update(_write_trials_csv(study, study_dir))
    plots = _plots(study, spec, study_dir / "plots")
    lines = _summary_lines(spec, trials)
    lines += _best_lines(spec, best, outputs)
    lines += _retrain_lines(spec, retrain)
    lines += _pruning_lines(spec, trials, best)
    lines += _failure_lines(trials)
    lines += _trial_lines(spec, trials)
    lines += _plot_lines(plots)
    lines += _open_lines(study, spec, storage_url)
    write_atomic(study_dir / "report.md", "\n".join(lines))
    outputs["report"] = str(study_dir / "report.md")
    outputs["plots"] = str(study_dir / "plots")
    return outputs


def _write_best_configs(composer: Any, spec: SearchSpec, best: list[Any], study_dir: Path) -> dict[str, str]:
    """``<study>_best.yaml`` and, for several objectives, every Pareto trial's under ``pareto/``."""
    outputs: dict[str, str] = {}
    if best:
        outputs["best config"] = str(write_best_config(composer, spec, best[0], study_dir / f"{spec.study}_best.yaml"))
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


def _summary_lines(spec: SearchSpec, trials: list[Any]) -> list[str]:
    """The title and the study's set-up: spec, objectives, sampler and pruner, budget, trial states."""
    states = Counter(t.state.name for t in trials)
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    superseded = _superseded(trials)
    return [
        f"# Study `{spec.study}`",
        "",
        f"- spec: `{spec.path}`; base config(s): {', '.join(f'`{b}`' for b in spec.base)}",
        f"- objectives: {', '.join(f'{o.metric} ({o.direction}, {o.reduce})' for o in spec.objectives)}",
        f"- sampler: `{spec.sampler}`; pruner: `{spec.pruner}`",
        f"- budget: {spec.n_trials} trials" + (f", {spec.timeout:.0f} s" if spec.timeout else "") + f"; slots: {spec.slots}",
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


def _retrain_lines(spec: SearchSpec, retrain: dict[str, Any] | None) -> list[str]:
    """The top configurations trained again over seeds: mean ± std of the first objective."""
    if not retrain:
        return []
    first = spec.objectives[0].metric
    lines = ["## Re-training the top configurations over seeds", ""]
    lines += [f"| trial | search {first} | seeds | {first} mean ± std | runs |", "|---|---|---|---|---|"]
    for row in retrain["rows"]:
        scores = [v for v in row["values"] if v is not None]
        mean = statistics.fmean(scores) if scores else float("nan")
        std = statistics.stdev(scores) if len(scores) > 1 else 0.0
        lines.append(
            f"| {row['trial']} | {_fmt(row['search_value'])} | {', '.join(map(str, row['seeds']))} | "
            f"{mean:.4f} ± {std:.4f} (n={len(scores)}) | {', '.join(f'`{r}`' for r in row['runs'])} |"
        )
    lines.append("")
    return lines


def _pruning_lines(spec: SearchSpec, trials: list[Any], best: list[Any]) -> list[str]:
    """What the study spent, what pruning saved, and the configurations the constraints rejected."""
    from optuna.trial import TrialState

    lines = ["## Pruning", ""]
    launched = [t for t in trials if not t.user_attrs.get("rejected") and t.state != TrialState.RUNNING]
    if launched:
        # What a study spent, to compare the same spec with and without pruning (--pruner none).
        lines.append(
            f"Trial-epochs spent: {sum(len(t.intermediate_values) for t in launched)} over {len(launched)} launched trial(s) "
            f"({sum(t.user_attrs.get('seconds', 0) for t in launched):.0f} s of trial time)"
            + (f"; best {spec.objectives[0].metric} {_fmt(best[0].values[0])}." if best and not spec.multi_objective else ".")
        )
    pruned = [t for t in trials if t.state == TrialState.PRUNED and not t.user_attrs.get("rejected")]
    if pruned:
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        lines += _pruned_savings(pruned, complete)
    else:
        lines.append("No trial was pruned." if spec.pruning else "Pruning is off for this study.")
    rejected = [t for t in trials if t.user_attrs.get("rejected")]
    if rejected:
        lines += ["", "Rejected before launch (constraints " + json.dumps(spec.constraints) + "):"]
        lines += [f"- trial {t.number}: {t.user_attrs['rejected']}" for t in rejected]
    lines.append("")
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


def _open_lines(study: Any, spec: SearchSpec, storage_url: str | None) -> list[str]:
    """Where the study is stored, and how to look at it or extend it."""
    return [
        "## Open the study",
        "",
        f"- storage: `{storage_url or study._storage.__class__.__name__}`",
        f"- dashboard: `pip install optuna-dashboard && optuna-dashboard {storage_url or '<storage>'}`",
        f"- resume or extend: run the same `python -m experiments search --config {spec.path}"
        + (f" --storage {storage_url}" if storage_url and "://" in storage_url else "") + "` again (`--n-trials N` raises the budget)",
        "",
    ]


# ------------------------------------------------------------------------------------- W&B
def write_wandb_summary(study: Any, spec: SearchSpec, base: dict[str, Any], study_dir: Path, study_uuid: str) -> str | None:
    """One run per study (``job_type: study-summary``, same group as the trials) with the trial
    table, the plots and the best values. Offline without an API key; never fails the study."""
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
    return log_summary_run(
        project=get_dotted(base, "run.project") or "convlab", group=spec.study, job_type="study-summary",
        run_id=f"{study_uuid[:8]}-summary", name=f"{spec.study}/summary", directory=Path(study_dir) / "summary",
        mode=resolve_wandb_mode(spec.wandb or get_dotted(base, "run.wandb") or "auto"), config={"spec": spec.raw},
        tables={"trials": (columns, rows)}, images=sorted((Path(study_dir) / "plots").glob("*.png")), summary=summary,
    )


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


# ------------------------------------------------------------------------------------- retrain
def retrain_top_k(driver: Any, study: Any, k: int, seeds: list[int]) -> dict[str, Any]:
    """Train the top-k complete configurations again with each seed (a normal ``fit`` each, on the
    driver's slots) and collect the first objective; results are cached in ``retrain.json`` so
    that running the command again does not repeat finished runs."""
    from core.processes import experiments_command

    spec = driver.spec
    objective = spec.objectives[0]
    complete = [t for t in best_trials(study, spec)] if spec.multi_objective else sorted(
        [t for t in study.trials if t.state.name == "COMPLETE"],
        key=lambda t: -t.values[0] if objective.direction == "maximize" else t.values[0],
    )
    top = complete[:k]
    cache_path = driver.study_dir / "retrain.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    jobs = [(t, seed) for t in top for seed in seeds if cache.get(f"{t.number}/{seed}", {}).get("value") is None]
    lock = threading.Lock()

    def train(slot: int, job: tuple[Any, int]) -> None:
        t, seed = job
        name = f"{spec.study}/retrain/trial-{t.number:04d}-seed{seed}"
        status = driver.study_dir / "attempts" / f"retrain-{t.number:04d}-seed{seed}"
        if status.exists():
            status.rename(status.with_name(f"{status.name}-{int(time.time())}"))
        status.mkdir(parents=True)
        values = params_to_values(t.params, spec.entries)
        override = override_tree({**spec.overrides, **values})
        override["seed_everything"] = seed
        run_dir = driver.study_dir / "retrain" / f"trial-{t.number:04d}-seed{seed}"
        if run_dir.exists():
            run_dir.rename(run_dir.with_name(f"{run_dir.name}-old{len(list(run_dir.parent.glob(run_dir.name + '-old*')))}"))
        override["run"] = {
            **override.get("run", {}),
            "root": str(driver.runs_root),
            "name": name, "group": spec.study, "job_type": "retrain", "wandb_id": f"{driver.uuid[:8]}-r{t.number:04d}s{seed}",
            "config": {**t.params, "trial_number": t.number, "seed": seed, "study": spec.study},
            "callbacks": [{"class_path": "search.trial.ResultCallback", "init_args": {
                "status_dir": str(status), "objectives": [objective.__dict__], "params": t.params}}],
        }
        if spec.wandb:
            override["run"]["wandb"] = spec.wandb
        path = status / "override.yaml"
        write_atomic(path, yaml.safe_dump(override, sort_keys=False))
        args = ["fit", *sum((["--config", b] for b in spec.base), []), "--config", str(path)]
        print(f"convlab search: retraining trial {t.number} with seed {seed}", flush=True)
        result = driver.pool.launch(slot, experiments_command(*args, torchrun_nproc=spec.torchrun), log_path=status / "worker.log", cwd=driver.cwd,
                                    timeout=spec.trial_timeout, extra_env={"WANDB_SILENT": "true"})
        value = None
        result_file = status / "result.json"
        if result.returncode == 0 and result_file.exists():
            value = json.loads(result_file.read_text())["values"][0]
        with lock:
            cache[f"{t.number}/{seed}"] = {"value": value, "run": str(run_dir), "returncode": result.returncode}
            write_atomic(cache_path, json.dumps(cache, indent=2))

    driver.pool.map(jobs, train)
    rows = []
    for t in top:
        entries = [cache.get(f"{t.number}/{s}", {}) for s in seeds]
        rows.append({"trial": t.number, "search_value": t.values[0], "seeds": seeds,
                     "values": [e.get("value") for e in entries], "runs": [e.get("run") for e in entries]})
    return {"metric": objective.metric, "rows": rows}
