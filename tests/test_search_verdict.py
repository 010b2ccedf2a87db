"""Searches that earn their keep: the default as trial 0, successive halving at its rungs, the
verdict on the winner against the default, the front with the default marked, the comparison with
an unpruned study, and a retraining that survives ``kill -9``."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from search.space import SpaceEntry, default_params, make_entries
from tests.search_fixtures import kill_all, load_study, run_search, start_search, tiny_base, wait_for, wait_no_processes, write_spec


# ------------------------------------------------------------------------------------- trial 0
def test_default_params_are_the_base_values_clipped_into_the_space_with_a_note():
    entries = make_entries({
        "m.lr": SpaceEntry(type="float", low=1e-3, high=1e-2, log=True),
        "m.stacks": SpaceEntry(type="int", low=1, high=4),
        "m.width": SpaceEntry(choices=[32, 64]),
        "m.opt": SpaceEntry(choices={"sgd": {"class_path": "torch.optim.SGD"}, "adam": {"class_path": "torch.optim.Adam"}}),
        "m.share": SpaceEntry(type="float", low=0.0, high=1.0, step=0.25),
        "m.momentum": SpaceEntry(type="float", low=0.5, high=0.99, when={"m.opt": "sgd"}),
    })
    inside = {"m": {"lr": 0.006, "stacks": 2, "width": 64, "opt": {"class_path": "torch.optim.Adam", "init_args": {"lr": 0.006}},
                    "share": 0.5, "momentum": 0.9}}
    params, notes = default_params(entries, inside)
    # A mapping choice matches when the keys it states agree (the config says more); momentum is
    # inactive for Adam, as the sampler would have it.
    assert params == {"m.lr": 0.006, "m.stacks": 2, "m.width": 64, "m.opt": "adam", "m.share": 0.5} and notes == []
    outside = {"m": {"lr": 0.05, "stacks": 0, "width": 48, "opt": {"class_path": "torch.optim.SGD"}, "share": 0.3}}
    params, notes = default_params(entries, outside)
    assert params == {"m.lr": 0.01, "m.stacks": 1, "m.opt": "sgd", "m.share": 0.25}
    assert notes == [
        "m.lr: the default 0.05 lies outside the space; trial 0 uses 0.01, its high bound",
        "m.stacks: the default 0 lies outside the space; trial 0 uses 1, its low bound",
        "m.width: the default 48 is none of the choices; trial 0 samples it",
        "m.share: the default 0.3 is not on the entry's step; trial 0 uses 0.25, the nearest value on it",
        "m.momentum: not set in the base config; trial 0 samples it",
    ]


# ------------------------------------------------------------------------------------- halving
def test_successive_halving_stops_trials_at_its_rungs_on_known_curves():
    """Nine trials one after another, each with the curve quality * (1 - 2^-epoch) over 9 epochs, so
    that every rung ranks them by quality. Successive halving (min_resource 1, reduction factor 3)
    decides after epochs 1 and 3: a trial goes on only when it is in the top third of the values
    recorded at that rung (the best one while fewer than three are), worked out by hand below.
    After the last epoch nothing is stopped (``report_and_decide``'s ``prunable``)."""
    import optuna
    from optuna.trial import TrialState

    from search.space import build_pruner
    from search.trial import report_and_decide

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize",
                                pruner=build_pruner({"name": "successive_halving", "min_resource": 1, "reduction_factor": 3}))
    qualities = [0.5, 0.9, 0.3, 0.7, 0.1, 0.8, 0.95, 0.2, 0.6]
    stopped_at = []
    for quality in qualities:
        trial = study.ask()
        for epoch in range(1, 10):
            value = quality * (1 - 0.5 ** epoch)
            if report_and_decide(trial, value, epoch, prunable=epoch < 9):
                study.tell(trial, state=TrialState.PRUNED)
                stopped_at.append(epoch)
                break
        else:
            study.tell(trial, value)
            stopped_at.append(None)
    # Rung 1: 0.5 (alone) and 0.9 (best of two) go on; 0.3, 0.7, 0.1 lose to 0.9 (fewer than 6 values:
    # only the best goes on); 0.8 is second of 6 and 0.95 first of 7 (top 2); 0.2 and 0.6 (top 3 of 9
    # is 0.8 and above) stop. Rung 3: 0.5 alone, 0.9 best of two go on; 0.8 is not above 0.9 (3
    # values: the best only); 0.95 is the best of four and trains to the end.
    assert stopped_at == [None, None, 1, 1, 1, 3, None, 1, 1]
    assert sum(epoch or 9 for epoch in stopped_at) == 35  # trial-epochs, against 81 unpruned


def test_a_multi_fidelity_pruner_must_fit_the_trials_epochs(tmp_path):
    from search.driver import SearchDriver
    from search.spec import SpecError, load_spec

    base = tiny_base(tmp_path, max_epochs=3)
    for pruner, message in (({"name": "hyperband", "min_resource": 1, "max_resource": 9}, "pruner.max_resource: 9 epochs, but a trial trains 3"),
                            ({"name": "successive_halving", "min_resource": 3}, "pruner.min_resource: 3 epochs, but a trial trains 3")):
        with pytest.raises(SpecError, match=message):
            SearchDriver(load_spec(write_spec(tmp_path, base, pruner=pruner))).prepare()


def test_retraining_needs_two_seeds_and_trial_overrides_cannot_fix_a_searched_key(tmp_path):
    from search.spec import SpecError, load_spec

    base = tiny_base(tmp_path)
    with pytest.raises(SpecError, match="retrain.seeds: give at least 2 integer seeds"):
        load_spec(write_spec(tmp_path, base, retrain={"top_k": 1, "seeds": [1]}))
    with pytest.raises(SpecError, match="space.model.init_args.optimizer.init_args.lr: also fixed in trial_overrides"):
        load_spec(write_spec(tmp_path, base, trial_overrides={"model.init_args.optimizer.init_args.lr": 0.1}))
    spec = load_spec(write_spec(tmp_path, base, trial_overrides={"trainer.max_epochs": 1}), pruner="none")
    assert spec.study == "study-pruner-none" and spec.trial_fixed["trainer.max_epochs"] == 1
    assert "trainer.max_epochs" not in spec.overrides  # the retraining trains the base config's epochs
    # A --set on the command line wins over the spec's trial budget, for the trials and the retraining.
    spec = load_spec(write_spec(tmp_path, base, trial_overrides={"trainer.max_epochs": 1, "trainer.limit_val_batches": 2}),
                     overrides={"trainer.max_epochs": 3})
    assert spec.trial_fixed["trainer.max_epochs"] == 3 and spec.overrides["trainer.max_epochs"] == 3
    assert spec.trial_fixed["trainer.limit_val_batches"] == 2


# ------------------------------------------------------------------------------------- verdict
def _retrained(default, candidates, direction="maximize"):
    rows = [{"label": "default", "trial": None, "values": [[v] for v in default]}]
    rows += [{"label": f"trial-{n:04d}", "trial": n, "values": [[v] for v in values]} for n, values in candidates.items()]
    return {"objectives": [{"metric": "val/pckh", "direction": direction, "reduce": "best"}], "seeds": [1, 2, 3], "rows": rows}


def test_the_winner_is_judged_against_the_default_by_the_tables_rule():
    from core.stats import welch
    from search.retrain import judge

    # The winner is the best mean over seeds (trial 7), not the best search value.
    verdict = judge(_retrained([0.70, 0.71, 0.69], {3: [0.75, 0.76, 0.74], 7: [0.80, 0.81, 0.79]}))
    (c,) = verdict["comparisons"]
    assert verdict["winner_trial"] == 7 and c["verdict"] == "holds" and verdict["beats_default"]
    # difference 0.1, both SDs 0.01, 3 seeds each: t = 0.1 / sqrt(2 * 0.0001 / 3) = 12.25 on 4 df.
    assert c["test"]["difference"] == pytest.approx(0.1) and c["test"]["df"] == pytest.approx(4.0)
    assert c["test"]["p"] == pytest.approx(welch([0.80, 0.81, 0.79], [0.70, 0.71, 0.69]).p) and c["test"]["p"] < 3e-4
    assert c["seeds_needed"] is None  # resolved with p far below the fragile band
    # A difference of half an SD is not resolved; the textbook two-sample count for d = 0.5 is 64 a group.
    c = judge(_retrained([0.69, 0.71, 0.73], {2: [0.70, 0.72, 0.74]}))["comparisons"][0]
    assert c["verdict"] == "not resolved" and c["seeds_needed"]["per_row"] == 64
    # A loss (minimised) where the default is lower: contradicted.
    c = judge(_retrained([0.10, 0.11, 0.12], {1: [0.20, 0.21, 0.22]}, direction="minimize"))["comparisons"][0]
    assert c["op"] == "<" and c["verdict"] == "contradicted"


def test_the_report_opens_with_both_values_and_the_verdict():
    from search.report import verdict_lines
    from search.retrain import judge
    from search.spec import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "experiments" / "search" / "hourglass_synthetic.yaml")
    retrained = _retrained([0.70, 0.71, 0.69], {7: [0.80, 0.81, 0.79]})
    retrained["verdict"] = judge(retrained)
    first = verdict_lines(spec, retrained)[0]
    assert first.startswith("**The winner, trial 7, beats the default: val/pckh 0.8000 ± 0.0100 (n=3) against the default's "
                            "0.7000 ± 0.0100 (n=3), p = ")
    retrained = _retrained([0.69, 0.71, 0.73], {2: [0.70, 0.72, 0.74]})
    retrained["verdict"] = judge(retrained)
    lines = verdict_lines(spec, retrained)
    assert lines[0].startswith("**The winner, trial 2, does not beat the default (not resolved at this budget)")
    assert any(line.startswith("  - seeds needed: 64 a row for 80% power") for line in lines)
    assert verdict_lines(spec, None)[0].startswith("**No verdict on the winner**")


def test_the_pareto_front_marks_the_default(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import optuna
    import optuna.visualization.matplotlib as ovm

    from search.report import _mark_default

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.enqueue_trial({"x": 0.5}, user_attrs={"default": True})
    for _ in range(6):
        trial = study.ask()
        x = trial.suggest_float("x", 0, 1)
        study.tell(trial, [x, x * x + 0.1])
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        axes = _mark_default(ovm.plot_pareto_front(study, target_names=["a", "b"]), study)
    (star,) = [c for c in axes.collections if c.get_label() == "default (trial 0)"]
    assert [list(p) for p in star.get_offsets()] == [[0.5, pytest.approx(0.35)]]


def test_the_report_sets_the_unpruned_study_beside_the_pruned_one(tmp_path):
    from search.report import _comparison_lines
    from search.spec import load_spec

    spec = load_spec(write_spec(tmp_path, tiny_base(tmp_path), pruner={"name": "successive_halving", "min_resource": 1}))
    runs = tmp_path / "runs"
    pruned = {"study": "study", "spec": str(spec.path.resolve()), "pruner": {"name": "successive_halving"}, "launched": 12,
              "trial_epochs": 40, "trial_seconds": 1300.0, "best": {"trial": 5, "values": [0.80]},
              "winner": {"retrained": {"mean": 0.79, "std": 0.02, "n": 3}}}
    unpruned = {**pruned, "study": "study-pruner-none", "pruner": {"name": "none"}, "trial_epochs": 108, "trial_seconds": 3510.0,
                "best": {"trial": 9, "values": [0.82]}, "winner": None}
    for summary in (pruned, unpruned):
        (runs / summary["study"]).mkdir(parents=True)
        (runs / summary["study"] / "summary.json").write_text(json.dumps(summary))
    lines = _comparison_lines(spec, pruned, runs / "study")
    assert "| `study-pruner-none` | none | 12 | 108 | 3510 | 0.82 (trial 9) | — |" in lines
    assert lines[-1] == ("`study-pruner-none` spent 2.70× the trial-epochs of this study (2.70× the trial-seconds); its best val/pckh "
                         "differs by +0.0200, within the seed spread (2 × the retrained winner's SD 0.0200).")


# ------------------------------------------------------------------------------------- kill -9
@pytest.mark.slow
def test_a_study_killed_during_the_retraining_resumes_without_retraining_finished_seeds(tmp_path):
    base = tiny_base(tmp_path, max_epochs=2)
    spec = write_spec(tmp_path, base, budget={"n_trials": 2, "trial_timeout": 240}, retrain={"top_k": 1, "seeds": [1, 2]},
                      trial_overrides={"trainer.max_epochs": 1})
    study_dir = tmp_path / "runs" / "study"
    cache = study_dir / "retrain.json"
    driver = start_search(spec, log=tmp_path / "driver1.log")
    try:
        def one_run_retrained() -> bool:
            try:
                return any(v.get("values") for v in json.loads(cache.read_text()).values())
            except (OSError, json.JSONDecodeError):
                return False

        assert wait_for(one_run_retrained, timeout=300), (tmp_path / "driver1.log").read_text()[-3000:]
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        assert wait_no_processes(str(tmp_path), timeout=20) == []
        finished = {k: v for k, v in json.loads(cache.read_text()).items() if v.get("values")}
        assert 1 <= len(finished) < 4
        result = run_search(spec)
        assert result.returncode == 0, result.stdout + result.stderr
        after = json.loads(cache.read_text())
        # Trial 0 is the default, so the only other trial is the one retrained beside it.
        assert sorted(after) == ["default/1", "default/2", "trial-0001/1", "trial-0001/2"]
        assert all(v["values"] for v in after.values()), after
        for key, entry in finished.items():  # kept as they were, and not run again
            assert after[key] == entry
            label, seed = key.split("/")
            what = "the default" if label == "default" else f"trial {int(label[6:])}"
            assert f"retraining {what} with seed {seed} " not in result.stdout
            assert Path(entry["run"]).is_dir() and not list(Path(entry["run"]).parent.glob(Path(entry["run"]).name + "-old*"))
        # The retraining trained the base config's 2 epochs, not the trials' 1.
        for key in after:
            result_json = study_dir / "attempts" / f"retrain-{key.replace('/', '-seed')}" / "result.json"
            assert json.loads(result_json.read_text())["epochs"] == 2
        study = load_study(str(study_dir / "journal.log"))
        assert study.trials[0].user_attrs["default"] and study.trials[0].params == {"model.optimizer.lr": 0.001,
                                                                                    "model.network.num_features": 8}
        report = (study_dir / "report.md").read_text().splitlines()
        assert report[2].startswith(("**The winner, trial ", "**The default (trial 0) is the study's best trial")), report[2]
        assert "against the default's" in report[2]
        # The config to train is written after the verdict, with it, at the base config's 2 epochs:
        # the winner's when it beats the default, else the default's.
        best = (study_dir / "study_best.yaml").read_text()
        assert f"# {report[2].strip('*')}" in best and "max_epochs: 2" in best
    finally:
        if driver.poll() is None:
            driver.kill()
        kill_all(str(tmp_path))
