"""Search specs, the space and the samplers, without training (fast)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import optuna
import pytest
import yaml

from experiments.recipe import ConfigComposer, override_tree
from search.driver import classify_failure
from search.space import Entry, params_to_values, suggest_params
from search.spec import SpecError, build_pruner, build_sampler, load_spec
from search.validate import validate_space
from tests.search_fixtures import REPO, run_search, tiny_base, write_spec

SHIPPED = REPO / "experiments" / "search" / "hourglass_synthetic.yaml"


def _spec(tmp_path: Path, **fields):
    return load_spec(write_spec(tmp_path, tiny_base(tmp_path), **fields))


def test_shipped_spec_checks_against_its_config(composer: ConfigComposer) -> None:
    spec = load_spec(SHIPPED)
    assert spec.study == "hourglass_synthetic"
    assert {e.name for e in spec.entries} >= {"model.optimizer.lr", "model.network.num_features", "model.network.num_stacks"}
    assert spec.pruning and spec.n_trials == 12
    validate_space(spec, composer)


def test_the_pruner_can_be_replaced_by_name_for_the_pruning_comparison() -> None:
    assert load_spec(SHIPPED, pruner="none").pruning is False
    assert load_spec(SHIPPED, pruner="none").pruner == {"name": "none"}
    assert load_spec(SHIPPED, pruner="hyperband").pruner == {"name": "hyperband"}
    with pytest.raises(SpecError, match="pruner.name: unknown pruner 'sometimes'"):
        load_spec(SHIPPED, pruner="sometimes")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"sampler": {"name": "bayesian-magic"}}, "sampler.name: unknown sampler 'bayesian-magic'"),
        ({"pruner": {"name": "median", "n_startup": 3}}, "pruner.n_startup: not an argument of optuna.MedianPruner"),
        ({"space": {"model.init_args.optimizer.init_args.lr": {"type": "float", "low": 0.1, "high": 0.01}}},
         "space.model.init_args.optimizer.init_args.lr: empty range"),
        ({"space": {"trainer.max_epochs": {"type": "categorical", "choices": []}}}, "space.trainer.max_epochs: empty choices"),
        ({"space": {"model.init_args.optimizer.init_args.lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True}}},
         "needs low > 0"),
        ({"sampelr": {"name": "tpe"}}, "sampelr: unknown field"),
        ({"objectives": [{"metric": "val/pckh", "direction": "up"}]}, "objectives[0].direction"),
        ({"objectives": [{"metric": "val/pckh"}, {"metric": "params", "direction": "minimize"}], "pruner": {"name": "median"}},
         "cannot prune a multi-objective study"),
        ({"sampler": {"name": "grid"}}, "the grid sampler needs categorical entries"),
        ({"space": {"a.b": {"type": "int", "low": 1, "high": 3, "when": {"model.nothing": 1}}}}, "not an earlier entry"),
    ],
)
def test_invalid_specs_name_the_entry(tmp_path: Path, fields: dict, message: str) -> None:
    with pytest.raises(SpecError) as error:
        _spec(tmp_path, **fields)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"model.init_args.network.init_args.num_featurez": {"type": "int", "low": 4, "high": 8}},
         "space.model.init_args.network.init_args.num_featurez: Option 'num_featurez' is not accepted"),
        ({"trainer.max_epochz": {"type": "int", "low": 1, "high": 2}},
         "space.trainer.max_epochz: Group 'trainer' does not accept option 'max_epochz'"),
        ({"model.init_args.network.init_args.num_stacks": {"type": "float", "low": 1.0, "high": 2.0}},
         "space.model.init_args.network.init_args.num_stacks: Expected a <class 'int'>"),
    ],
)
def test_unknown_config_keys_fail_before_any_trial(tmp_path: Path, composer: ConfigComposer, space: dict, message: str) -> None:
    spec = _spec(tmp_path, space=space)
    with pytest.raises(SpecError) as error:
        validate_space(spec, composer)
    assert message in str(error.value)


def test_conditional_and_mapping_choices_compose(tmp_path: Path, composer: ConfigComposer) -> None:
    space = {
        "model.init_args.optimizer": {"type": "categorical", "choices": {
            "rmsprop": {"class_path": "torch.optim.RMSprop", "init_args": {"lr": 0.001}},
            "sgd": {"class_path": "torch.optim.SGD", "init_args": {"lr": 0.01}}}},
        "model.init_args.optimizer.init_args.momentum": {"type": "float", "low": 0.5, "high": 0.9, "when": {"model.optimizer": "sgd"}},
        "model.init_args.optimizer.init_args.lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    }
    spec = _spec(tmp_path, space=space)
    validate_space(spec, composer)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        trial = study.ask()
        params = suggest_params(trial, spec.entries)
        assert ("model.optimizer.momentum" in params) == (params["model.optimizer"] == "sgd")
        config = composer.parse(spec.base, override_tree(params_to_values(params, spec.entries)))
        optimizer = config.model.init_args.optimizer
        assert optimizer.class_path == {"sgd": "torch.optim.SGD", "rmsprop": "torch.optim.RMSprop"}[params["model.optimizer"]]
        assert optimizer.init_args.lr == pytest.approx(params["model.optimizer.lr"])
        if "model.optimizer.momentum" in params:
            assert optimizer.init_args.momentum == pytest.approx(params["model.optimizer.momentum"])
        seen.add(params["model.optimizer"])
        study.tell(trial, 0.0)
    assert seen == {"sgd", "rmsprop"}


def test_samplers_and_pruners_are_built(tmp_path: Path) -> None:
    spec = _spec(tmp_path, space={"trainer.max_epochs": {"type": "int", "low": 1, "high": 3},
                                  "model.init_args.flip_test": {"type": "categorical", "choices": [True, False]}})
    assert isinstance(build_sampler({"name": "tpe", "seed": 3}, spec.entries), optuna.samplers.TPESampler)
    assert isinstance(build_sampler({"name": "random"}, spec.entries), optuna.samplers.RandomSampler)
    assert isinstance(build_sampler({"name": "nsga2", "population_size": 4}, spec.entries), optuna.samplers.NSGAIISampler)
    grid = build_sampler({"name": "grid"}, spec.entries)
    assert isinstance(grid, optuna.samplers.GridSampler)
    assert isinstance(build_pruner({"name": "hyperband", "min_resource": 1, "max_resource": 4}), optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner({"name": "none"}), optuna.pruners.NopPruner)
    assert isinstance(build_pruner({"name": "median", "n_startup_trials": 2}), optuna.pruners.MedianPruner)
    if importlib.util.find_spec("cmaes"):
        assert isinstance(build_sampler(_spec(tmp_path, sampler={"name": "cmaes"}).sampler, spec.entries), optuna.samplers.CmaEsSampler)
    else:
        with pytest.raises(SpecError, match="pip install cmaes"):
            _spec(tmp_path, sampler={"name": "cmaes"})
    # The same seed gives the same first suggestions; another driver (ordinal 1) different ones.
    a = optuna.create_study(sampler=build_sampler({"name": "tpe", "seed": 0}, spec.entries)).ask()
    b = optuna.create_study(sampler=build_sampler({"name": "tpe", "seed": 0}, spec.entries)).ask()
    assert suggest_params(a, spec.entries) == suggest_params(b, spec.entries)


def test_failure_classification(tmp_path: Path) -> None:
    status = tmp_path / "attempt"
    status.mkdir()
    assert classify_failure(-9, True, status, None)[0] == "timeout"
    (status / "rank0.json").write_text("{}")
    (status / "rank1.json").write_text("{}")
    assert classify_failure(-9, False, status, None)[0] == "crash"
    (status / "fail_rank0.json").write_text(json.dumps({"rank": 0, "kind": "distributed", "type": "DistBackendError", "message": "gloo"}))
    reason, detail = classify_failure(1, False, status, None)
    assert reason == "crash" and "[1]" in detail
    oom = {"rank": 1, "kind": "oom", "type": "OutOfMemoryError", "message": "CUDA out of memory"}
    (status / "fail_rank1.json").write_text(json.dumps(oom))
    assert classify_failure(-9, False, status, None)[0] == "oom"


def test_invalid_spec_fails_before_any_trial_from_the_command_line(tmp_path: Path) -> None:
    base = tiny_base(tmp_path)
    spec = write_spec(tmp_path, base, space={"model.init_args.network.init_args.num_featurez": {"type": "int", "low": 4, "high": 8}})
    result = run_search(spec)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].endswith("space.model.init_args.network.init_args.num_featurez: Option 'num_featurez' is not accepted (value 4)")
    assert not (tmp_path / "runs" / "study" / "journal.log").exists()
    bad = yaml.safe_load(spec.read_text())
    bad["sampler"] = {"name": "annealing"}
    spec.write_text(yaml.safe_dump(bad))
    result = run_search(spec)
    assert result.returncode == 2 and "sampler.name: unknown sampler 'annealing'" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_entry_candidates_and_distribution() -> None:
    entry = Entry(key="a.b", name="a.b", kind="int", low=1, high=5, step=2)
    assert entry.candidates() == [1, 5]
    assert entry.distribution().step == 2
