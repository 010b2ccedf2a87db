"""The verdict on a study's winner: the chosen trials and the default trained again, at the full
budget of the base config, over seeds, and judged by the tables' rule.

What is trained:

* the **candidates**: single objective, the ``top_k`` best complete trials that are not the default
  trial (``retrain.top_k``, ``--retrain-top-k``); several objectives, the trials the user picks from
  the Pareto front (``retrain.trials``, ``--retrain-trials 3,7``);
* the **default**: the base config with the spec's ``overrides``, i.e. its own values of the
  searched parameters (not clipped into the space as trial 0's may be).

Every run is base config + the spec's ``overrides`` (+ the candidate's parameters) + a seed, without
the trials' ``trial_overrides``: the base config's own budget, the one a user would train the
winner at. Each finished run is recorded in ``<study>/retrain.json`` the moment it ends (an atomic
write): the same command again, after a crash or ``kill -9``, trains only the seeds without a value.

The verdict (``judge``): the winner is the candidate with the best mean over its seeds; "the winner
beats the default" is judged on the two sets of per-seed values by ``core.stats`` (Welch's t-test,
two-sided, p < 0.05, with the 95% interval of the difference), with the seeds-needed line when it is
not resolved or resolved with p near the threshold. Several objectives: every picked trial against
the default on every trained objective.
"""
from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from core.io import write_atomic
from core.processes import experiments_command
from core.stats import ALPHA, HOLDS, LEVEL, NOT_RESOLVED, seeds_needed, verdict, welch
from experiments.recipe import override_tree
from search.space import params_to_values
from search.spec import SearchSpec, SpecError

__all__ = ["DEFAULT", "candidates", "retrain", "judge", "summarise"]

DEFAULT = "default"


def _label(trial: Any | None) -> str:
    return DEFAULT if trial is None else f"trial-{trial.number:04d}"


def candidates(study: Any, spec: SearchSpec, top_k: int = 0, numbers: list[int] | None = None) -> list[Any]:
    """The trials to train again: ``numbers`` (each a complete trial; ``SpecError`` names one that
    is not), else the ``top_k`` best complete trials other than the default trial (single
    objective)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    if numbers:
        by_number = {t.number: t for t in trials}
        bad = [n for n in numbers if n not in by_number or by_number[n].state != TrialState.COMPLETE]
        if bad:
            raise SpecError(f"retrain.trials: trial {bad[0]} is not a complete trial of study {spec.study!r}")
        return [by_number[n] for n in numbers]
    if spec.multi_objective or top_k <= 0:
        return []
    sign = -1.0 if spec.objectives[0].direction == "maximize" else 1.0
    complete = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("default")]
    return sorted(complete, key=lambda t: (sign * t.values[0], t.number))[:top_k]


def retrain(driver: Any, study: Any, chosen: list[Any], seeds: list[int], timeout: float | None = None,
            train: bool = True) -> dict[str, Any]:
    """Train ``chosen`` and the default with every seed on the driver's slots (runs already in
    ``retrain.json`` are not trained again; ``train`` False trains none: the report of what is there) and return ``{"objectives", "seeds", "rows"}``: a row
    per configuration (the default first) with its per-seed values of every objective and its runs."""
    spec = driver.spec
    cache_path = driver.study_dir / "retrain.json"
    cache = json.loads(cache_path.read_text()) if cache_path.exists() else {}
    configs: list[Any | None] = [None, *chosen]
    # Seed-major, so that an interrupted retraining has given every configuration its first seeds.
    jobs = [(trial, seed) for seed in seeds for trial in configs if train and not _finished(cache.get(f"{_label(trial)}/{seed}"))]
    lock = threading.Lock()
    measured = _measured(driver, chosen) if jobs else {}

    def train(slot: int, job: tuple[Any | None, int]) -> None:
        trial, seed = job
        entry = _train_one(driver, slot, trial, seed, timeout)
        for index, objective in enumerate(spec.objectives):
            if objective.metric in ("params", "gflops") and entry["values"] is not None:
                entry["values"][index] = measured[_label(trial)].get(objective.metric)
        with lock:
            cache[f"{_label(trial)}/{seed}"] = entry
            write_atomic(cache_path, json.dumps(cache, indent=2))

    if jobs:
        driver.pool.map(jobs, train)
    rows = []
    for trial in configs:
        entries = [cache.get(f"{_label(trial)}/{seed}", {}) for seed in seeds]
        rows.append({
            "label": _label(trial),
            "trial": None if trial is None else trial.number,
            "params": dict(study.user_attrs.get("search:default", {}).get("params", {})) if trial is None else dict(trial.params),
            "search_values": None if trial is None else list(trial.values),
            "seeds": list(seeds),
            "values": [e.get("values") for e in entries],
            "runs": [e.get("run") for e in entries],
        })
    return {"objectives": [o.__dict__ for o in spec.objectives], "seeds": list(seeds), "rows": rows}


def _finished(entry: dict[str, Any] | None) -> bool:
    return bool(entry) and entry.get("values") is not None


def _measured(driver: Any, chosen: list[Any]) -> dict[str, dict[str, float]]:
    """``params``/``gflops`` of each configuration (the trials' from their attributes, the default's
    measured here), for objectives that are measured rather than trained."""
    out = {_label(t): {k: t.user_attrs[k] for k in ("params", "gflops") if k in t.user_attrs} for t in chosen}
    out[DEFAULT] = {}
    if any(o.measured and o.metric != "latency_ms" for o in driver.spec.objectives):
        out[DEFAULT] = driver._measure(driver.composer.parse(driver.spec.base, override_tree(dict(driver.spec.overrides))))
    return out


def _train_one(driver: Any, slot: int, trial: Any | None, seed: int, timeout: float | None) -> dict[str, Any]:
    """One ``fit`` of a configuration with a seed; its ``retrain.json`` entry (``values`` None when
    it did not finish)."""
    spec = driver.spec
    label = _label(trial)
    name = f"{spec.study}/retrain/{label}-seed{seed}"
    status = driver.study_dir / "attempts" / f"retrain-{label}-seed{seed}"
    if status.exists():  # an interrupted attempt: keep its files aside
        status.rename(status.with_name(f"{status.name}-{int(time.time())}"))
    status.mkdir(parents=True)
    run_dir = driver.study_dir / "retrain" / f"{label}-seed{seed}"
    if run_dir.exists():
        run_dir.rename(run_dir.with_name(f"{run_dir.name}-old{len(list(run_dir.parent.glob(run_dir.name + '-old*')))}"))
    params = {} if trial is None else dict(trial.params)
    override = override_tree({**spec.overrides, **params_to_values(params, spec.entries)})
    override["seed_everything"] = seed
    override["run"] = {
        **override.get("run", {}),
        "root": str(driver.runs_root),
        "name": name, "group": spec.study, "job_type": "retrain",
        "wandb_id": f"{driver.uuid[:8]}-r{'def' if trial is None else trial.number}s{seed}",
        "config": {**params, "trial_number": None if trial is None else trial.number, "default": trial is None,
                   "seed": seed, "study": spec.study},
        "callbacks": [{"class_path": "search.trial.ResultCallback", "init_args": {
            "status_dir": str(status), "objectives": [o.__dict__ for o in spec.objectives], "params": params}}],
    }
    if spec.wandb:
        override["run"]["wandb"] = spec.wandb
    path = status / "override.yaml"
    write_atomic(path, yaml.safe_dump(override, sort_keys=False))
    args = ["fit", *sum((["--config", b] for b in spec.base), []), "--config", str(path)]
    what = "the default" if trial is None else f"trial {trial.number}"
    print(f"convlab search: retraining {what} with seed {seed} at the base config's budget -> {run_dir}", flush=True)
    result = driver.pool.launch(slot, experiments_command(*args, torchrun_nproc=spec.torchrun), log_path=status / "worker.log",
                                cwd=driver.cwd, timeout=timeout, extra_env={"WANDB_SILENT": "true", "WANDB_CONSOLE": "off"})
    values = None
    result_file = status / "result.json"
    if result.returncode == 0 and result_file.exists():
        values = json.loads(result_file.read_text())["values"]
    shown = "failed" if values is None else ", ".join(f"{o.metric}={v:.4g}" for o, v in zip(spec.objectives, values) if v is not None)
    print(f"convlab search: retrained {what} with seed {seed}: {shown} ({result.seconds:.0f} s)", flush=True)
    return {"values": values, "run": str(run_dir), "returncode": result.returncode, "seconds": round(result.seconds, 2)}


# ------------------------------------------------------------------------------------- verdict
def summarise(values: list[float]) -> dict[str, Any]:
    """Mean, sample standard deviation (None below 2 values) and count of per-seed values."""
    return {"mean": statistics.fmean(values) if values else None, "std": statistics.stdev(values) if len(values) > 1 else None,
            "n": len(values)}


def _series(row: dict[str, Any], index: int) -> list[float]:
    return [v[index] for v in row["values"] if v is not None and v[index] is not None]


def judge(retrained: dict[str, Any], digits: int = 4) -> dict[str, Any]:
    """The verdicts of a retraining (``retrain``'s result): ``{"winner": row label, "comparisons":
    [...]}``, each comparison a candidate against the default on one trained objective with both
    summaries, the Welch test, the verdict on "candidate better than default" and the seeds-needed
    entry. Single objective: only the winner's comparison; several: every candidate's."""
    objectives = retrained["objectives"]
    rows = retrained["rows"]
    default, others = rows[0], rows[1:]
    trained = [i for i, o in enumerate(objectives) if o["metric"] not in ("params", "gflops", "latency_ms")]
    first = trained[0] if trained else 0
    sign = 1.0 if objectives[first]["direction"] == "maximize" else -1.0
    scored = [r for r in others if _series(r, first)]
    winner = max(scored, key=lambda r: sign * statistics.fmean(_series(r, first))) if scored else None
    judged = others if len(objectives) > 1 else [winner] if winner else []
    comparisons = []
    for row in judged:
        for index in trained:
            objective = objectives[index]
            op = ">" if objective["direction"] == "maximize" else "<"
            mine, theirs = _series(row, index), _series(default, index)
            entry: dict[str, Any] = {"label": row["label"], "trial": row["trial"], "metric": objective["metric"], "op": op,
                                     "candidate": summarise(mine), "default": summarise(theirs)}
            if not mine or not theirs:
                entry.update(verdict=NOT_RESOLVED, test=None, seeds_needed=None)
                comparisons.append(entry)
                continue
            test = welch(mine, theirs, level=LEVEL / 100.0)
            outcome = verdict(test, op, ALPHA)
            entry.update(verdict=outcome, test=test.__dict__,
                         seeds_needed=seeds_needed(test, op, outcome, entry["candidate"]["std"], entry["default"]["std"], digits,
                                                   claim="the claimed direction (better than the default)"))
            comparisons.append(entry)
    return {"winner": winner["label"] if winner else None, "winner_trial": winner["trial"] if winner else None,
            "comparisons": comparisons, "beats_default": bool(comparisons) and all(c["verdict"] == HOLDS for c in comparisons)}
