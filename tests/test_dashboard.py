"""``python -m experiments dashboard``: optuna-dashboard served on a study's journal, checked over
its JSON API (``/api/studies``, ``/api/studies/<id>``, as in optuna_dashboard/_app.py), and the
one-line errors (package missing, storage missing)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from tests.search_fixtures import REPO, processes_mentioning, wait_no_processes


def _finished_study(journal: Path, name: str = "tiny") -> list[tuple[int, float, float]]:
    """A study of four finished trials written with Optuna directly (no training): three COMPLETE
    with values, one PRUNED. Returns ``(number, lr, value)`` of the complete ones."""
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val/score"])
    expected = []
    for lr, value in ((1e-3, 0.41), (3e-3, 0.455), (1e-2, 0.30)):
        study.enqueue_trial({"lr": lr})
        trial = study.ask()
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        study.tell(trial, value)
        expected.append((trial.number, lr, value))
    study.enqueue_trial({"lr": 5e-2})
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return expected


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def test_dashboard_serves_the_trials_of_a_finished_study(tmp_path: Path) -> None:
    pytest.importorskip("optuna_dashboard")
    study_dir = tmp_path / "runs" / "tiny"
    study_dir.mkdir(parents=True)
    expected = _finished_study(study_dir / "journal.log")
    port = _free_port()
    log = open(tmp_path / "dashboard.log", "w+")
    process = subprocess.Popen(
        [sys.executable, "-m", "experiments", "dashboard", "--study", str(study_dir), "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                listing = _get_json(f"{base}/api/studies")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                log.seek(0)
                assert process.poll() is None, f"the dashboard exited ({process.returncode}):\n{log.read()}"
                assert time.monotonic() < deadline, "the dashboard did not answer within 60 s"
                time.sleep(0.3)
        (summary,) = listing["study_summaries"]
        assert summary["study_name"] == "tiny" and summary["directions"] == ["maximize"]
        detail = _get_json(f"{base}/api/studies/{summary['study_id']}")
        trials = {t["number"]: t for t in detail["trials"]}
        assert sorted(trials) == [0, 1, 2, 3]
        for number, lr, value in expected:
            assert trials[number]["state"] == "Complete"
            assert trials[number]["values"] == [pytest.approx(value)]
            (param,) = trials[number]["params"]
            assert param["name"] == "lr" and float(param["param_external_value"]) == pytest.approx(lr)
        assert trials[3]["state"] == "Pruned"
        assert [t["number"] for t in detail["best_trials"]] == [1]
        assert detail["objective_names"] == ["val/score"]
        # The page itself is served too (the browser's entry point).
        with urllib.request.urlopen(f"{base}/dashboard", timeout=5) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
        log.seek(0)
        assert f"http://127.0.0.1:{port}/dashboard" in log.read()
    finally:
        if process.poll() is None:
            process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)
        log.close()
    assert wait_no_processes(str(tmp_path), timeout=10) == []
    assert processes_mentioning(str(study_dir)) == []


def test_dashboard_names_the_missing_package(monkeypatch, capsys) -> None:
    from search.dashboard import main

    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # import fails as if not installed
    assert main(["--study", "runs/anything"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "convlab dashboard: optuna-dashboard is not installed (an optional extra): pip install -r requirements-dashboard.txt"


def test_dashboard_names_the_missing_storage(tmp_path: Path, capsys) -> None:
    pytest.importorskip("optuna_dashboard")
    from search.dashboard import main

    assert main(["--study", str(tmp_path / "runs" / "nope")]) == 2
    assert f"{tmp_path / 'runs' / 'nope'} does not exist" in capsys.readouterr().err
    (tmp_path / "runs" / "empty").mkdir(parents=True)
    assert main(["--study", str(tmp_path / "runs" / "empty")]) == 2
    assert f"{tmp_path / 'runs' / 'empty' / 'journal.log'} does not exist" in capsys.readouterr().err
    assert main(["--storage", str(tmp_path / "other.log")]) == 2
    assert f"{tmp_path / 'other.log'} does not exist" in capsys.readouterr().err
    assert main(["--storage", f"sqlite:///{tmp_path / 'study.db'}"]) == 2
    assert f"{tmp_path / 'study.db'} does not exist" in capsys.readouterr().err
    assert not (tmp_path / "other.log").exists() and not (tmp_path / "study.db").exists()  # nothing created


def test_the_reports_dashboard_command_names_the_study_folder_as_the_readme_does(tmp_path):
    from search.dashboard import resolve_storage
    from search.report import _study_folder

    journal = tmp_path / "runs" / "tiny" / "journal.log"
    journal.parent.mkdir(parents=True)
    _finished_study(journal)
    folder = _study_folder(str(journal))
    assert Path(folder) == journal.parent or Path(folder).resolve() == journal.parent
    # What the report prints opens the same storage as the journal itself.
    assert resolve_storage(folder, None) == resolve_storage(None, str(journal))
    assert _study_folder(None) == "<journal>"
