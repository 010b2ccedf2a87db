"""Trials through the driver: DDP (Lightning's launcher and torchrun), bf16-mixed, pruning across
ranks, injected faults, constraints, multi-objective studies and W&B runs. CPU, tiny models."""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from core.precision import cpu_has_native_bf16
from tests.search_fixtures import kill_all, load_study, run_search, tiny_base, wait_no_processes, write_spec


def _ranks(attempt: Path) -> list[dict]:
    return [json.loads((attempt / f"rank{r}.json").read_text()) for r in range(2)]


def _offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


@pytest.mark.slow
def test_ddp_trial_lightning_launcher_same_params_and_pruned_together(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, devices=2, strategy="ddp", max_epochs=4, wandb="offline")
    # Prune at the first report after the warm-up (PCKh < 2 always): after epoch 2 of 4 (a step is epochs trained).
    spec = write_spec(tmp_path, base, pruner={"name": "threshold", "lower": 2.0, "n_warmup_steps": 2},
                      budget={"n_trials": 1, "trial_timeout": 240})
    try:
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        study = load_study(str(tmp_path / "runs" / "study" / "journal.log"))
        (trial,) = study.trials
        assert trial.state == TrialState.PRUNED
        assert trial.user_attrs["pruned_at"] == 2 and sorted(trial.intermediate_values) == [1, 2]
        ranks = _ranks(Path(trial.user_attrs["attempt_dir"]))
        assert [r["world_size"] for r in ranks] == [2, 2] and ranks[0]["pid"] != ranks[1]["pid"]
        assert not ranks[0]["torchelastic"] and ranks[0]["strategy"] == "DDPStrategy"
        # Every rank trains with the trial's parameters: same numbers, same model, same lr.
        assert ranks[0]["params"] == ranks[1]["params"] == trial.params
        assert ranks[0]["num_parameters"] == ranks[1]["num_parameters"]
        assert ranks[0]["optimizer_lrs"] == ranks[1]["optimizer_lrs"] == [pytest.approx(trial.params["model.optimizer.lr"])]
        # ... and all ranks stopped together, at the epoch the pruner decided.
        assert ranks[0]["ended_epoch"] == ranks[1]["ended_epoch"] == 2
        # The report counts what the study spent: 2 validated epochs of the 4 a trial would run.
        report = (tmp_path / "runs" / "study" / "report.md").read_text()
        assert "Trial-epochs spent: 2 over 1 launched trial(s)" in report and "1 trial(s) pruned, by epoch: epoch 2: 1." in report
        assert ranks[0]["global_step"] == ranks[1]["global_step"]
        # One W&B run per trial, from rank 0 only, in the study's group.
        runs = _offline_runs(Path(trial.user_attrs["run_dir"]))
        assert len(runs) == 1 and runs[0].name.endswith(f"{study.user_attrs['search:uuid'][:8]}-t0000")
        assert wait_no_processes(str(tmp_path), timeout=10) == []
    finally:
        kill_all(str(tmp_path))


@pytest.mark.slow
def test_ddp_trial_torchrun_bf16_same_params(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, devices=2, strategy="ddp", max_epochs=2, precision="bf16-mixed")
    spec = write_spec(tmp_path, base, torchrun=2, budget={"n_trials": 1, "trial_timeout": 240})
    try:
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        study = load_study(str(tmp_path / "runs" / "study" / "journal.log"))
        (trial,) = study.trials
        assert trial.state == TrialState.COMPLETE, trial.user_attrs
        ranks = _ranks(Path(trial.user_attrs["attempt_dir"]))
        assert len(ranks) == 2 and all(r["torchelastic"] and r["world_size"] == 2 for r in ranks)
        assert ranks[0]["params"] == ranks[1]["params"] == trial.params
        assert ranks[0]["optimizer_lrs"] == ranks[1]["optimizer_lrs"]
        # bf16 where this CPU computes it natively, else fp32 (core.precision).
        native = cpu_has_native_bf16()[0]
        assert [r["precision"] for r in ranks] == ["bf16-mixed" if native else "32-true"] * 2
        assert {r["precision_plugin"] for r in ranks} == {"MixedPrecision" if native else "Precision"}
        assert trial.user_attrs["world_size"] == 2
        assert wait_no_processes(str(tmp_path), timeout=10) == []
    finally:
        kill_all(str(tmp_path))


@pytest.mark.slow
def test_injected_faults_fail_with_their_reason_and_leave_no_process(tmp_path: Path) -> None:
    plan = {"0": "crash", "1": "oom", "2": "nan", "3": "hang"}
    callbacks = [{"class_path": "tests.fault_injection.FaultInjection", "init_args": {"plan": plan, "rank": 1, "at_step": 1}}]
    base = tiny_base(tmp_path, devices=2, strategy="ddp", callbacks=callbacks)
    spec = write_spec(tmp_path, base, slots=2, budget={"n_trials": 4, "trial_timeout": 50})
    try:
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        study = load_study(str(tmp_path / "runs" / "study" / "journal.log"))
        assert [t.state for t in study.trials] == [TrialState.FAIL] * 4
        reasons = {t.number: t.user_attrs["fail_reason"] for t in study.trials}
        assert reasons == {0: "crash", 1: "oom", 2: "nonfinite", 3: "timeout"}, {t.number: t.user_attrs for t in study.trials}
        details = {t.number: t.user_attrs["fail_detail"] for t in study.trials}
        assert "rank(s) [1] died" in details[0]
        assert "rank 1: OutOfMemoryError" in details[1]
        assert "non-finite" in details[2]
        assert "no result after 50 s" in details[3]
        assert wait_no_processes(str(tmp_path), timeout=10) == []
        report = (tmp_path / "runs" / "study" / "report.md").read_text()
        assert "## Failures" in report and "| 3 | timeout |" in report
    finally:
        kill_all(str(tmp_path))


@pytest.mark.slow
def test_multi_objective_pareto_front_constraints_wandb_and_retrain(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, max_epochs=1, wandb="offline")
    space = {
        "model.init_args.optimizer.init_args.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True},
        "model.init_args.network.init_args.num_features": {"type": "categorical", "choices": [4, 8, 64]},
    }
    objectives = [{"metric": "val/pckh", "direction": "maximize"}, {"metric": "params", "direction": "minimize"},
                  {"metric": "latency_ms", "direction": "minimize"}]
    spec = write_spec(tmp_path, base, space=space, objectives=objectives, sampler={"name": "nsga2", "seed": 0, "population_size": 4},
                      constraints={"max_params": 60000}, slots=2, budget={"n_trials": 4, "trial_timeout": 240})
    try:
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        study = load_study(str(tmp_path / "runs" / "study" / "journal.log"))
        assert len(study.trials) == 4
        rejected = [t for t in study.trials if t.user_attrs.get("rejected")]
        launched = [t for t in study.trials if not t.user_attrs.get("rejected")]
        # The seeded sampler draws 64 features at least once and something smaller at least once:
        # both paths are exercised (an empty list would make the checks below vacuous).
        assert rejected and launched, [t.params for t in study.trials]
        assert all(t.params["model.network.num_features"] == 64 and t.state == TrialState.PRUNED for t in rejected)
        assert all("max_params" in t.user_attrs["rejected"] for t in rejected)
        assert all(t.state == TrialState.COMPLETE and len(t.values) == 3 for t in launched), [t.user_attrs for t in launched]
        assert all(t.values[1] == t.user_attrs["params"] and t.values[2] > 0 for t in launched)
        attempts = sorted(p.name for p in (tmp_path / "runs" / "study" / "attempts").iterdir() if p.name.startswith("trial-"))
        assert attempts == [f"trial-{t.number:04d}" for t in launched]  # nothing launched for a rejected one
        front = study.best_trials
        assert front and {t.number for t in front} <= {t.number for t in launched}
        # The progress lines count the Pareto front instead of a best value.
        pareto_line = r"^convlab search: \[[1-4]/4\] trial \d COMPLETE .* · \d+ trials? on the Pareto front"
        assert re.search(pareto_line, result.stdout, re.M), result.stdout
        study_dir = tmp_path / "runs" / "study"
        assert (study_dir / "plots" / "pareto_front.png").stat().st_size > 0
        assert len(list((study_dir / "pareto").glob("*.yaml"))) == len(front)
        report = (study_dir / "report.md").read_text()
        assert "## Pareto front" in report
        # W&B: one offline run per launched trial, plus the study summary.
        for t in launched:
            assert len(_offline_runs(Path(t.user_attrs["run_dir"]))) == 1
        assert len(_offline_runs(study_dir / "summary")) == 1
        # Trial 0 is the default (the base config's values), and it is on the plotted front's figure.
        assert study.trials[0].user_attrs["default"] and study.trials[0].params == {"model.optimizer.lr": 0.001,
                                                                                    "model.network.num_features": 8}
        assert "**No verdict**: pick Pareto-front trials" in report
        # A front member the user picks is retrained beside the default and judged on the trained objective.
        picked = front[0].number
        result = run_search(spec, "--retrain-trials", str(picked), "--retrain-seeds", "1", "2")
        assert result.returncode == 0, result.stdout + result.stderr
        retrain = json.loads((study_dir / "retrain.json").read_text())
        assert sorted(retrain) == ["default/1", "default/2", f"trial-{picked:04d}/1", f"trial-{picked:04d}/2"]
        assert all(len(v["values"]) == 3 and v["values"][1] is not None for v in retrain.values()), retrain
        report = (study_dir / "report.md").read_text()
        assert report.splitlines()[2].startswith(f"**Picked trials against the default (better than the default?): trial {picked} val/pckh: ")
        assert wait_no_processes(str(tmp_path), timeout=10) == []
    finally:
        kill_all(str(tmp_path))


def test_parallel_slots_get_disjoint_devices(tmp_path: Path) -> None:
    from search.driver import SearchDriver
    from search.spec import load_spec

    base = tiny_base(tmp_path)
    spec = load_spec(write_spec(tmp_path, base, slots=2, devices=[0, 1, 2, 3]))
    driver = SearchDriver(spec)
    driver.prepare()
    assert driver.pool.slot_gpus == [["0", "1"], ["2", "3"]]
    assert not (tmp_path / "runs").exists()  # checking a spec creates nothing


def test_the_study_stays_put_while_a_parser_changes_the_working_directory(tmp_path: Path, monkeypatch) -> None:
    """jsonargparse changes the process's working directory while it reads a config, and the
    driver's slot threads read configs while other threads write to the journal and start
    children. With a relative run root (the default ``runs``) the journal's lock was then created
    under experiments/configs/... and failed with FileNotFoundError, killing a slot. Everything the
    driver touches is absolute from the start."""
    import optuna

    from core.processes import launch
    from search.driver import SearchDriver
    from search.spec import load_spec
    from search.storage import absolute_url

    base = tiny_base(tmp_path)
    config = yaml.safe_load(base.read_text())
    config["run"]["root"] = "runs"
    base.write_text(yaml.safe_dump(config))
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    monkeypatch.chdir(project)
    driver = SearchDriver(load_spec(write_spec(tmp_path, base)))
    driver.prepare()
    monkeypatch.chdir(project / "configs")  # what a parse in another thread does for a moment
    study = driver.open_study()
    study.enqueue_trial({"model.init_args.optimizer.init_args.lr": 1e-3})
    assert driver.url == str(project / "runs" / "study" / "journal.log")
    assert len(optuna.load_study(study_name="study", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(driver.url))).trials) == 2  # the default (trial 0) and this one
    assert not (project / "configs" / "runs").exists()
    out = tmp_path / "cwd.txt"
    launch([sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write(os.getcwd())"], cwd=driver.cwd)
    assert out.read_text() == str(project)
    assert absolute_url("sqlite:///a/b.db?timeout=5", project) == f"sqlite:///{project}/a/b.db?timeout=5"
    assert absolute_url("sqlite:////abs.db", project) == "sqlite:////abs.db"
    assert absolute_url("postgresql://u@127.0.0.1/db", project) == "postgresql://u@127.0.0.1/db"
    assert absolute_url("journal:j.log", project) == f"journal:{project}/j.log"


def test_fixed_run_overrides_reach_the_trials(tmp_path: Path) -> None:
    """``--set run.root=...`` (a fixed override of the run section) is where the trials write, not
    the base config's root: the driver's own run keys go on top of the fixed ones, not instead."""
    base = tiny_base(tmp_path, max_epochs=1)
    spec = write_spec(tmp_path, base, budget={"n_trials": 1, "trial_timeout": 180})
    elsewhere = tmp_path / "elsewhere"
    try:
        result = run_search(spec, "--set", f"run.root={elsewhere}")
        assert result.returncode == 0, result.stdout + result.stderr
        study = load_study(str(elsewhere / "study" / "journal.log"))
        (trial,) = study.trials
        assert trial.state == TrialState.COMPLETE, trial.user_attrs
        assert Path(trial.user_attrs["run_dir"]) == elsewhere / "study" / "trial-0000"
        # The progress line: done/budget, the trial's values and duration, the best so far.
        assert re.search(rf"^convlab search: \[1/1\] trial 0 COMPLETE val/pckh=\S+ \(\d+ s\) · best {trial.value:.4g} \(trial 0\)$",
                         result.stdout, re.M), result.stdout
        assert (elsewhere / "study" / "trial-0000" / "metrics.csv").exists()
        assert not (tmp_path / "runs").exists()
    finally:
        kill_all(str(tmp_path))
