"""Resumable studies: ``kill -9`` of the driver mid-trial, then the same command again (journal
file and PostgreSQL), and two drivers sharing one PostgreSQL study and its budget."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from optuna.trial import TrialState

from tests.search_fixtures import (
    REPO,
    kill_all,
    load_study,
    postgres_database,
    run_search,
    start_search,
    tiny_base,
    wait_for,
    wait_no_processes,
    write_spec,
)


def _kill_mid_trial(tmp_path: Path, spec: Path, storage: str, extra: list[str]) -> dict:
    """Start the driver, SIGKILL it while trial 1 runs (after its first checkpoint), check that no
    process of the study is left, and return what the study held at that moment."""
    driver = start_search(spec, *extra, log=tmp_path / "driver1.log")
    try:
        def trial_one_checkpointed() -> bool:
            study = load_study(storage)
            if len(study.trials) < 2 or study.trials[0].state != TrialState.COMPLETE or study.trials[1].state != TrialState.RUNNING:
                return False
            run_dir = study.trials[1].user_attrs.get("run_dir")
            return bool(run_dir) and (Path(run_dir) / "checkpoints" / "last.ckpt").exists()

        assert wait_for(trial_one_checkpointed, timeout=240), (tmp_path / "driver1.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        # The trial's processes notice that their driver is gone and end their process group.
        assert wait_no_processes(str(tmp_path), timeout=20) == []
        study = load_study(storage)
        assert study.trials[1].state == TrialState.RUNNING  # nobody told it anything
        return {"value0": study.trials[0].value, "params1": study.trials[1].params}
    finally:
        if driver.poll() is None:
            driver.kill()


def _check_resumed(storage: str, before: dict, n_trials: int) -> None:
    study = load_study(storage)
    trials = study.trials
    assert trials[0].state == TrialState.COMPLETE and trials[0].value == before["value0"]  # kept as it was
    # Trial 0 is the default (the base config's values), enqueued once when the study was created.
    assert trials[0].user_attrs["default"] and trials[0].params == {"model.optimizer.lr": 0.001, "model.network.num_features": 8}
    assert [t.number for t in trials if t.user_attrs.get("default")] == [0]
    orphan = trials[1]
    assert orphan.state == TrialState.FAIL and orphan.user_attrs["fail_reason"].startswith("orphaned: driver")
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == 1]
    assert retry.params == before["params1"]
    assert retry.state == TrialState.COMPLETE, (retry.user_attrs.get("fail_reason"), retry.user_attrs.get("fail_detail"))
    # The retry resumed the interrupted run from its last checkpoint, in the same run directory.
    assert retry.user_attrs["resumed_from"].endswith("trial-0001/checkpoints/last.ckpt")
    assert retry.user_attrs["run_dir"] == orphan.user_attrs["run_dir"]
    assert sorted(retry.intermediate_values) == [1, 2, 3]  # steps are epochs trained
    # The budget: every trial counts once, the orphan's retry instead of the orphan.
    assert len(trials) == n_trials + 1
    assert [t.state for t in trials].count(TrialState.COMPLETE) == n_trials


@pytest.mark.slow
def test_kill9_driver_then_resume_journal(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, max_epochs=3, wandb="offline")
    spec = write_spec(tmp_path, base, budget={"n_trials": 2, "trial_timeout": 240})
    storage = str(tmp_path / "runs" / "study" / "journal.log")
    try:
        before = _kill_mid_trial(tmp_path, spec, storage, [])
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        _check_resumed(storage, before, n_trials=2)
        study = load_study(storage)
        retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
        # The resumed trial continues its W&B run: the same id as the interrupted attempt.
        offline = (Path(retry.user_attrs["run_dir"]) / "wandb").glob("offline-run-*")
        ids = {p.name.rsplit("-", 2)[-2] + "-" + p.name.rsplit("-", 1)[-1] for p in offline}
        assert ids == {f"{study.user_attrs['search:uuid'][:8]}-t0001"}
        # Outputs, and the best configuration trains again with a plain fit.
        study_dir = tmp_path / "runs" / "study"
        assert (study_dir / "report.md").exists() and (study_dir / "plots" / "history.png").exists()
        fit = subprocess.run([sys.executable, "-m", "experiments", "fit", "--config", str(study_dir / "study_best.yaml"),
                              "--trainer.max_epochs", "1"], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert fit.returncode == 0, fit.stderr[-3000:]
        # Running the finished study's command again runs nothing more.
        again = run_search(spec)
        assert again.returncode == 0 and "started" not in again.stdout
        assert len(load_study(storage).trials) == 3
        assert wait_no_processes(str(tmp_path), timeout=10) == []
    finally:
        kill_all(str(tmp_path))


@pytest.mark.slow
def test_kill9_driver_then_resume_postgres(tmp_path: Path) -> None:
    url, drop = postgres_database("search_kill9")
    base = tiny_base(tmp_path, max_epochs=3)
    spec = write_spec(tmp_path, base, budget={"n_trials": 2, "trial_timeout": 240}, storage={"heartbeat_interval": 2, "grace_period": 6})
    try:
        before = _kill_mid_trial(tmp_path, spec, url, ["--storage", url])
        result = run_search(spec, "--storage", url)
        assert result.returncode == 0, result.stdout + result.stderr
        _check_resumed(url, before, n_trials=2)
        assert wait_no_processes(str(tmp_path), timeout=10) == []
    finally:
        kill_all(str(tmp_path))
        drop()


@pytest.mark.slow
def test_two_drivers_share_one_postgres_study(tmp_path: Path) -> None:
    url, drop = postgres_database("search_two")
    base = tiny_base(tmp_path, max_epochs=2)
    spec = write_spec(tmp_path, base, budget={"n_trials": 4, "trial_timeout": 240})
    try:
        drivers = [start_search(spec, "--storage", url, log=tmp_path / f"driver{i}.log") for i in range(2)]
        for d in drivers:
            assert d.wait(timeout=400) == 0
        study = load_study(url)
        assert len(study.trials) == 4  # the budget of the study, not of each driver
        assert all(t.state == TrialState.COMPLETE for t in study.trials)
        owners = {t.system_attrs["search:driver"]["pid"] for t in study.trials}
        assert owners == {d.pid for d in drivers}
        assert study.user_attrs["search:drivers"] == 2
        # Different sampler seeds per driver: the first two trials differ.
        assert study.trials[0].params != study.trials[1].params
        assert wait_no_processes(str(tmp_path), timeout=10) == []
    finally:
        kill_all(str(tmp_path))
        drop()


@pytest.mark.slow
def test_ctrl_c_fails_the_running_trial_and_the_next_run_retries_it(tmp_path: Path) -> None:
    base = tiny_base(tmp_path, max_epochs=2)
    spec = write_spec(tmp_path, base, budget={"n_trials": 1, "trial_timeout": 240})
    storage = str(tmp_path / "runs" / "study" / "journal.log")
    log = tmp_path / "driver1.log"
    try:
        driver = start_search(spec, log=log)
        assert wait_for(lambda: "trial 0 started" in log.read_text(), timeout=120), log.read_text()
        driver.send_signal(signal.SIGINT)
        assert driver.wait(timeout=60) == 130
        assert wait_no_processes(str(tmp_path), timeout=10) == []
        study = load_study(storage)
        assert study.trials[0].state == TrialState.FAIL and study.trials[0].user_attrs["fail_reason"] == "interrupted"
        assert study.trials[1].state == TrialState.WAITING and study.trials[1].user_attrs["retry_of"] == 0
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        trials = load_study(storage).trials
        assert len(trials) == 2 and trials[1].state == TrialState.COMPLETE and trials[1].params == trials[0].params
    finally:
        kill_all(str(tmp_path))


def test_a_trial_resumed_after_its_last_validation_still_reports_its_values(tmp_path: Path) -> None:
    """The driver can be killed after a trial's final checkpoint and before its result: the retry
    resumes from that checkpoint, trains no further, and must still report what was measured (the
    validations travel in the checkpoint)."""
    import json

    def fit(status: str, *extra: str) -> dict:
        callback = {"class_path": "search.trial.ResultCallback", "init_args": {"status_dir": str(tmp_path / status)}}
        base = tiny_base(tmp_path, max_epochs=2, callbacks=[callback])
        done = subprocess.run([sys.executable, "-m", "experiments", "fit", "--config", str(base), "--run.name", "trial", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads((tmp_path / status / "result.json").read_text())

    first = fit("first")
    assert first["values"][0] is not None and len(first["history"]["val/pckh"]) == 2
    last = tmp_path / "runs" / "trial" / "checkpoints" / "last.ckpt"
    resumed = fit("resumed", "--ckpt_path", str(last))
    assert resumed["missing"] == [] and resumed["values"] == first["values"]
    assert resumed["history"] == first["history"]
