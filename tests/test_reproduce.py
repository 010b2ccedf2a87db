"""Paper tables: spec loading and validation, planning (shared rows, data roots, stale runs), the
report from finished runs, the paper profile's dry run without data, and ``reproduce`` end to end on
a two-row, two-seed tiny table that is killed once and resumed."""
from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from core.stats import verdict as claim_verdict, welch

from experiments.recipe import ConfigComposer
from experiments.reproduce import (
    RESULT_FILE,
    STATE_FILE,
    TableSpecError,
    available_tables,
    compose_plan,
    load_table,
    main_report,
    main_reproduce,
    pick_epoch,
    plan_runs,
    read_validation,
)
from experiments.reproduce.runner import TableLock
from tests.search_fixtures import kill_all, processes_mentioning, wait_no_processes

REPO = Path(__file__).resolve().parents[1]
TINY = "tests/configs/table_tiny.yaml"


pytestmark = pytest.mark.usefixtures("in_repo")  # the specs name configs relative to the project


# ==================================================================================== specs
def test_shipped_tables_load():
    assert {"hourglass_stacking", "hourglass_mpii", "localization_box_head"} <= set(available_tables())
    for name in available_tables():
        spec = load_table(name)
        assert "quick" in spec.profiles, name  # every table runs on synthetic data
        if any(row.paper for row in spec.rows.values()):
            assert "paper" in spec.profiles, name  # and one with paper numbers on the paper's data
    stacking = load_table("hourglass_stacking")
    paper = {(r.name, c): cell.value for r in stacking.rows.values() for c, cell in r.paper.items()}
    assert paper == {("hg2x4", "final"): 87.4, ("hg2x4", "halfway"): 84.6, ("hg4x2", "final"): 87.8,
                     ("hg4x2", "halfway"): 86.5, ("hg8x1", "final"): 88.1, ("hg8x1", "halfway"): 87.1}
    assert all(cell.source.split.startswith("MPII validation") for r in stacking.rows.values() for cell in r.paper.values())
    assert stacking.columns["halfway"].metric_for(stacking.rows["s1x1"]) is None  # a 1-stack net has no halfway
    # The number of stacks is derived from each row's composed config, not written in the row.
    plan = compose_plan(stacking, stacking.profile("quick_full"), [0], plan_runs(stacking, "quick_full", [0], "/tmp/unused"), ConfigComposer())
    assert plan.spec.rows["hg8x1"].vars == {"stacks": 8, "half": 4} and plan.spec.rows["s1x1"].vars == {"stacks": 1}
    assert plan.spec.columns["halfway"].metric_for(plan.spec.rows["hg8x1"]) == "val/pckh_limbs_stack4"
    # "final" is the network's last output, whatever comes before it (HG-Int's internal heads).
    assert plan.spec.columns["final"].metric_for(plan.spec.rows["hg_int"]) == "val/pckh_limbs"
    assert plan.spec.columns["halfway"].metric_for(plan.spec.rows["hg_int"]) is None
    mpii = load_table("hourglass_mpii")
    assert mpii.rows["mpii_test_paper"].paper["total"].value == 90.9
    assert mpii.rows["flic"].paper["elbow"].value == 99.0 and mpii.rows["flic"].paper["wrist"].value == 97.0
    assert mpii.columns["elbow"].metric_for(mpii.rows["flic"]) == "val/pck_elbow"
    assert not mpii.rows["flic"].in_profile("quick")


def _tiny_raw() -> dict:
    return yaml.safe_load((REPO / TINY).read_text())


def _set(path: str, value):
    def mutate(raw):
        node = raw
        parts = path.split("/")
        for part in parts[:-1]:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if value is _DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return mutate


_DELETE = object()


@pytest.mark.parametrize("mutate, message", [
    (_set("colums", {}), "colums: unknown field"),
    (_set("rows/two/paper/finall", 3.0), "rows.two.paper.finall: unknown column"),
    (_set("rows/one/paper/halfway", 3.0), "rows.one.paper.halfway: the row has no halfway cell"),
    (_set("rows/two/paper/final", {"value": "high"}), "rows.two.paper.final.value: expected a number"),
    (_set("rows/two/paper/final", {"value": 1.0, "source": "nowhere"}), "rows.two.paper.final.source: 'nowhere' is not one of the sources"),
    (_set("rows/two/overide", {}), "rows.two.overide: unknown field"),
    (_set("rows/two/override", {"model.init_args..x": 1}), "rows.two.override.model.init_args..x: not a dotted config key"),
    (_set("rows/two/override", {"run.name": "x"}), "rows.two.override.run.name: the run section belongs to the runner"),
    (_set("rows/two/profiles", {"gpu": {}}), "rows.two.profiles.gpu: 'gpu' is not a profile"),
    (_set("profiles/quick/base", "tests/configs/nope.yaml"), "profiles.quick.base: config file tests/configs/nope.yaml not found"),
    (_set("profiles/quick/base", _DELETE), "profiles.quick.base: missing"),
    (_set("profiles/quick/seeds", 0), "profiles.quick.seeds: expected an integer >= 1"),
    (_set("columns/final/metric", "val/pckh_stack{stack}"), "columns.final.metric: {stack} is not a var of any row"),
    (_set("epoch", "middle"), "epoch: must be last or best"),
    (_set("checks/0/order", ["one.final", "three.final"]), "checks[0] (two stacks beat one).order[1]: 'three' is not a row"),
    (_set("checks/1/all", ["two.first = two.final"]), "has no comparison operator"),
    (_set("checks/1/all", ["one.halfway < two.final"]), "row one has no halfway cell"),
    (_set("plots/0/metric", "val/pckh_limbs"), "plots.per_output.metric: a per_output plot needs a metric template with {k}"),
    (_set("plots/1/kind", "pie"), "plots.bars.kind: must be one of"),
    (_set("plots/0/count", "depth"), "plots.per_output: row one needs an integer var 'depth'"),
    (_set("derive/stacks", "model..x"), "derive.stacks: 'model..x' is not a dotted config key"),
])
def test_malformed_spec_is_rejected_naming_the_entry(tmp_path, mutate, message):
    raw = _tiny_raw()
    mutate(raw)
    path = tmp_path / "table_tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(TableSpecError) as error:
        load_table(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_table_and_bad_yaml(tmp_path):
    with pytest.raises(TableSpecError, match="table 'hourglass_nope': no .* \\(tables: .*hourglass_stacking"):
        load_table("hourglass_nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("table: x\ncolumns: [unclosed\n")
    with pytest.raises(TableSpecError, match="not valid YAML"):
        load_table(bad)


# =================================================================================== planning
def test_plan_shares_rows_with_identical_configs(tmp_path):
    spec = load_table("hourglass_stacking")
    runs = plan_runs(spec, "quick_full", [0, 1], str(tmp_path))
    assert len(runs) == 18  # 9 distinct configs x 2 seeds, not 11 rows x 2
    by_key = {r.key: r.rows for r in runs if r.seed == 0}
    assert by_key["hg2x4"] == ["hg2x4", "sup_on"]  # sup_on restates the base's intermediate_supervision: true
    assert by_key["hg8x1"] == ["hg8x1", "s8x1"]
    assert set(by_key) == {"hg2x4", "hg4x2", "hg8x1", "hg", "hg_int", "sup_off", "s1x1", "s2x1", "s4x1"}
    assert all(r.status == "new" for r in runs)
    assert len({r.wandb_id for r in runs}) == 18
    assert [r.wandb_id for r in runs] == [r.wandb_id for r in plan_runs(spec, "quick_full", [0, 1], str(tmp_path))]
    # The quick profile (make quick) trains the rows that test a claim of the paper and that its
    # recipe trains (not HG-Int: BENCHMARKS.md), nothing else.
    quick = {r.key: r.rows for r in plan_runs(spec, "quick", [0], str(tmp_path))}
    assert quick == {"hg2x4": ["hg2x4", "sup_on"], "hg4x2": ["hg4x2"], "hg8x1": ["hg8x1"], "hg": ["hg"],
                     "sup_off": ["sup_off"]}
    claimed = {ref.row for check in spec.checks if check.profiles is None for c in check.comparisons
               for ref in (c.left, c.right)}
    assert claimed == {row for rows in quick.values() for row in rows}
    runs = plan_runs(spec, "quick", [0, 1], str(tmp_path))
    run = runs[0]
    override = run.override()
    assert override["seed_everything"] == 0
    assert override["run"]["group"] == "hourglass_stacking" and override["run"]["job_type"] == "hg2x4"
    assert override["run"]["name"] == "tables/hourglass_stacking/quick/hg2x4/seed0"
    # A run resumes its last checkpoint only when it has one (fit --ckpt_path last refuses a run without).
    assert "--ckpt_path" not in run.command_args()
    (run.directory / "checkpoints").mkdir(parents=True)
    (run.directory / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert run.command_args()[-2:] == ["--ckpt_path", "last"]


def test_paper_profile_maps_the_data_root(tmp_path):
    spec = load_table("hourglass_mpii")
    runs = plan_runs(spec, "paper", [0], str(tmp_path / "runs"), data_root="/datasets")
    roots = {r.key: r.dotted["data.init_args.source.init_args.root"] for r in runs}
    assert roots == {"mpii_val_bearpaw": "/datasets/mpii", "flic": "/datasets/flic"}
    assert runs[0].rows == ["mpii_val_bearpaw", "mpii_val_mmpose", "mpii_test_paper"]
    assert runs[1].bases == ["experiments/configs/pose/hourglass_flic.yaml"]
    # Moving the dataset does not make the runs other runs.
    moved = plan_runs(spec, "paper", [0], str(tmp_path / "runs"), data_root="/elsewhere")
    assert [r.config_hash for r in moved] == [r.config_hash for r in runs]


def test_changed_spec_makes_runs_stale_and_foreign_dirs_are_refused(tmp_path):
    spec = load_table(TINY)
    run = plan_runs(spec, "quick", [0], str(tmp_path))[0]
    run.directory.mkdir(parents=True)
    (run.directory / STATE_FILE).write_text(json.dumps({"config_hash": "something-else"}))
    assert plan_runs(spec, "quick", [0], str(tmp_path))[0].status == "stale"
    (run.directory / STATE_FILE).unlink()
    (run.directory / "notes.txt").write_text("mine")
    assert plan_runs(spec, "quick", [0], str(tmp_path))[0].status == "foreign"


# ============================================================================ metrics helpers
def test_read_validation_and_epoch_choice(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(
        "epoch,step,train/loss,val/pckh,val/x\n"
        "0,3,0.5,,\n0,3,,0.2,1\n1,7,,0.6,2\n"
        "1,7,,0.5,3\n"  # a resumed run logged epoch 1 again: the later row wins
        "2,11,,0.4,4\n"
    )
    epochs = read_validation(path)
    assert epochs == {0: {"val/pckh": 0.2, "val/x": 1.0}, 1: {"val/pckh": 0.5, "val/x": 3.0}, 2: {"val/pckh": 0.4, "val/x": 4.0}}
    assert pick_epoch(epochs, "last", "val/pckh", "max") == 2
    assert pick_epoch(epochs, "best", "val/pckh", "max") == 1
    assert pick_epoch(epochs, "best", "val/x", "min") == 0


# ==================================================== report from runs (fabricated, no training)
def _fabricate(root: Path, values: dict[tuple[str, int], list[dict[str, float]]]) -> None:
    """Finished runs of the tiny table: ``{(row, seed): [validation metrics per epoch]}``."""
    spec = load_table(TINY)
    for run in plan_runs(spec, "quick", sorted({s for _, s in values}), str(root)):
        epochs = values.get((run.key, run.seed))
        if epochs is None:
            continue
        run.directory.mkdir(parents=True)
        keys = sorted({k for e in epochs for k in e})
        with open(run.directory / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", *keys])
            for i, e in enumerate(epochs):
                writer.writerow([i, 4 * i + 3, 0.1, *[""] * len(keys)])
                writer.writerow([i, 4 * i + 3, "", *[e.get(k, "") for k in keys]])
        stacks = run.dotted["model.init_args.network.init_args.num_stacks"]
        (run.directory / "config.yaml").write_text(yaml.safe_dump({
            "run": {"monitor": "val/pckh", "wandb": "disabled"},
            "model": {"init_args": {"network": {"class_path": "lightning_modules.networks.hourglass.StackedHourglass",
                                                "init_args": {"num_stacks": stacks, "num_blocks": 1, "num_features": 16, "num_joints": 16, "depth": 2}}}},
        }))
        (run.directory / STATE_FILE).write_text(json.dumps({"config_hash": run.config_hash}))
        (run.directory / RESULT_FILE).write_text(json.dumps({"config_hash": run.config_hash, "seconds": 12.0}))


def _epoch(stack1: float, stack2: float | None = None, total: float = 0.5) -> dict[str, float]:
    out = {"val/pckh": total, "val/pckh_limbs_stack1": stack1}
    if stack2 is not None:
        out["val/pckh_limbs_stack2"] = stack2
    return out


def test_report_from_finished_runs(tmp_path, capsys):
    _fabricate(tmp_path, {
        ("one", 0): [_epoch(0.05), _epoch(0.10)],
        ("one", 1): [_epoch(0.07), _epoch(0.14)],
        ("two", 0): [_epoch(0.02, 0.10), _epoch(0.18, 0.20)],
        ("two", 1): [_epoch(0.03, 0.12), _epoch(0.12, 0.24)],
    })
    assert main_report([TINY, "--root", str(tmp_path), "--wandb", "disabled"]) == 0
    out = tmp_path / "tables" / "table_tiny"
    summary = json.loads((out / "quick" / "summary.json").read_text())
    cells = {(c["row"], c["column"]): c for c in summary["cells"]}
    assert set(cells) == {("one", "final"), ("one", "first"), ("two", "final"), ("two", "first"), ("two", "halfway")}
    final_one = cells[("one", "final")]
    assert final_one["values"] == pytest.approx([10.0, 14.0]) and final_one["mean"] == pytest.approx(12.0)
    assert final_one["std"] == pytest.approx(math.sqrt(8.0)) and final_one["n"] == 2
    assert final_one["delta"] == pytest.approx(2.0)  # paper 10.0
    final_two = cells[("two", "final")]
    assert final_two["mean"] == pytest.approx(22.0) and final_two["delta"] == pytest.approx(2.0)
    assert cells[("two", "halfway")]["mean"] == pytest.approx(15.0) and cells[("two", "halfway")]["delta"] == pytest.approx(10.0)
    # The quick profile of the fixture compares (compare defaults to true): tolerance 50 / 0.001.
    assert final_one["within_tolerance"] is True and final_two["within_tolerance"] is False
    # Welch on 2 seeds a side: one.final [10, 14] against two.final [20, 24] is t = 10 / sqrt(8) with
    # 2 degrees of freedom, two-sided p = 1 - t / sqrt(2 + t^2) = 0.0715: not significant at 0.05.
    checks = {c["name"]: c for c in summary["checks"]}
    assert {name: c["status"] for name, c in checks.items()} == {"two stacks beat one": "not resolved", "first stack below final": "not resolved"}
    t = 10 / math.sqrt(8)
    (beat,) = checks["two stacks beat one"]["comparisons"]
    assert beat["difference"] == pytest.approx(-10.0) and beat["df"] == pytest.approx(2.0)
    assert beat["p"] == pytest.approx(1 - t / math.sqrt(2 + t * t))
    report = (out / "report.md").read_text()
    assert report == (out / "quick" / "report.md").read_text().replace("](plots/", "](quick/plots/")
    assert "| 1 stack | Final | 10.00 | 12.00 ± 2.83 (n=2) | +2.00 | yes (±50) | fixture |" in report
    assert "| 2 stacks | Final | 20.00 | 22.00 ± 2.83 (n=2) | +2.00 | no (±0.001) | fixture |" in report
    assert "| 2 stacks | Halfway | 5.00 | 15.00 ± 4.24 (n=2) | +10.00 | yes (±50) | fixture |" in report
    assert "last** validation epoch" in report
    assert "two stacks beat one**: ➖ not resolved at this budget (the claimed order in 2/2 same-seed pairs)" in report
    assert "not resolved: one.final 12.00 < two.final 22.00; difference -10.00 (95% interval [" in report
    for name in ("per_output", "bars", "curves"):
        assert (out / "quick" / "plots" / f"{name}.png").stat().st_size > 1000
        assert f"](quick/plots/{name}.png)" in report
    assert (out / "quick" / "runs.csv").read_text().count("\n") == 5

    # A run that is not finished (no result.json) is left out: the cell has one seed.
    (tmp_path / "tables/table_tiny/quick/two/seed1" / RESULT_FILE).unlink()
    assert main_report([TINY, "--root", str(tmp_path), "--wandb", "disabled", "--seeds", "2"]) == 0
    summary = json.loads((out / "quick" / "summary.json").read_text())
    cells = {(c["row"], c["column"]): c for c in summary["cells"]}
    assert cells[("two", "final")]["n"] == 1 and cells[("two", "final")]["mean"] == pytest.approx(20.0)
    assert "| `tables/table_tiny/quick/two/seed1` | two | 1 | partial |" in (out / "report.md").read_text()


def test_claims_hold_or_are_contradicted_only_beyond_the_seed_noise(tmp_path):
    # Three seeds a side, spread 1: the stacks differ by 10 (p < 1e-3, holds) and the first stack is
    # 4 points *above* the final one (contradicted); a one-seed cell is never judged.
    _fabricate(tmp_path, {
        **{("one", s): [_epoch(0.10 + 0.01 * s)] for s in range(3)},
        **{("two", s): [_epoch(0.24 + 0.01 * s, 0.20 + 0.01 * s)] for s in range(3)},
    })
    assert main_report([TINY, "--root", str(tmp_path), "--wandb", "disabled", "--seeds", "3"]) == 0
    summary = json.loads((tmp_path / "tables/table_tiny/quick/summary.json").read_text())
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["two stacks beat one"]["status"] == "holds"
    assert checks["two stacks beat one"]["comparisons"][0]["p"] < 1e-3
    assert checks["first stack below final"]["status"] == "contradicted"
    (below,) = checks["first stack below final"]["comparisons"]
    assert below["difference"] == pytest.approx(4.0) and below["low"] > 0
    report = (tmp_path / "tables/table_tiny/report.md").read_text()
    assert "first stack below final**: ❌ contradicted" in report
    # Paths in the report are the project's, not this machine's.
    assert "Table `table_tiny` (tests/configs/table_tiny.yaml)" in report and str(REPO) not in report
    assert "Of 2 claims: 1 hold, 1 contradicted, 0 not resolved at this budget." in report


def test_report_says_how_many_seeds_an_unresolved_claim_needs(tmp_path):
    # one.final 10/12/14 against two.final 13/15/17: difference -3, SD 2 a side (d = 1.5), p = 0.14,
    # not resolved, in the claimed direction: 9 seeds a row give Welch's test 80% power (0.848 at 9,
    # 0.797 at 8). two.first equals two.final in every seed: a difference of 0, which no number of
    # seeds resolves.
    _fabricate(tmp_path, {
        **{("one", s): [_epoch(0.10 + 0.02 * s)] for s in range(3)},
        **{("two", s): [_epoch(0.13 + 0.02 * s, 0.13 + 0.02 * s)] for s in range(3)},
    })
    assert main_report([TINY, "--root", str(tmp_path), "--wandb", "disabled", "--seeds", "3"]) == 0
    summary = json.loads((tmp_path / "tables/table_tiny/quick/summary.json").read_text())
    checks = {c["name"]: c for c in summary["checks"]}
    (beat,) = checks["two stacks beat one"]["comparisons"]
    assert beat["verdict"] == "not resolved" and beat["p"] == pytest.approx(0.14007, abs=1e-4)
    assert beat["seeds_needed"]["per_row"] == 9 and beat["seeds_needed"]["to_contradict"] is None
    (below,) = checks["first stack below final"]["comparisons"]
    assert below["seeds_needed"]["per_row"] is None
    assert "0.01 <= p < 0.05" in summary["power_rule"] and "80% power" in summary["power_rule"]
    report = (tmp_path / "tables/table_tiny/report.md").read_text()
    assert summary["power_rule"] in report
    assert ("    - seeds needed: 9 a row for 80% power (Welch, two-sided p < 0.05, taking the observed difference -3.00 "
            "and SDs 2.00 and 2.00 as true; now 3 and 3)") in report
    assert "    - seeds needed: no number of seeds resolves it in the paper's direction (the observed difference is 0)" in report

    # The first stack 2 points above the final one with a spread of 2: the wrong sign (p = 0.29).
    _fabricate(tmp_path / "wrong", {
        **{("one", s): [_epoch(0.10 + 0.02 * s)] for s in range(3)},
        **{("two", s): [_epoch(0.15 + 0.02 * s, 0.13 + 0.02 * s)] for s in range(3)},
    })
    assert main_report([TINY, "--root", str(tmp_path / "wrong"), "--wandb", "disabled", "--seeds", "3"]) == 0
    summary = json.loads((tmp_path / "wrong/tables/table_tiny/quick/summary.json").read_text())
    (below,) = {c["name"]: c for c in summary["checks"]}["first stack below final"]["comparisons"]
    assert below["verdict"] == "not resolved" and below["difference"] == pytest.approx(2.0)
    # d = 1: 17 seeds a row would find the difference, the other way round.
    assert below["seeds_needed"] == {"per_row": None, "to_contradict": 17, "text": (
        "no number of seeds resolves it in the paper's direction (the observed difference +2.00 has the other sign; "
        "17 a row would contradict it with 80% power)")}
    assert f"    - seeds needed: {below['seeds_needed']['text']}" in (tmp_path / "wrong/tables/table_tiny/report.md").read_text()


def test_seeds_needed_only_under_unresolved_or_fragile_comparisons(tmp_path):
    # one.final 10/12/14 against two.final 15/17/19: p = 0.038, holds but in the fragile band (4
    # seeds a row for 80% power); the first stack 10 points below the final one in every seed:
    # p = 0.004, holds firmly, no line.
    _fabricate(tmp_path, {
        **{("one", s): [_epoch(0.10 + 0.02 * s)] for s in range(3)},
        **{("two", s): [_epoch(0.05 + 0.02 * s, 0.15 + 0.02 * s)] for s in range(3)},
    })
    assert main_report([TINY, "--root", str(tmp_path), "--wandb", "disabled", "--seeds", "3"]) == 0
    summary = json.loads((tmp_path / "tables/table_tiny/quick/summary.json").read_text())
    checks = {c["name"]: c for c in summary["checks"]}
    (beat,) = checks["two stacks beat one"]["comparisons"]
    assert beat["verdict"] == "holds" and 0.01 <= beat["p"] < 0.05 and beat["seeds_needed"]["per_row"] == 4
    (below,) = checks["first stack below final"]["comparisons"]
    assert below["verdict"] == "holds" and below["seeds_needed"] is None
    report = (tmp_path / "tables/table_tiny/report.md").read_text()
    assert report.count("    - seeds needed: ") == 1

    # Under a trained floor no number of seeds helps: a row under it is not resolved whatever the test says.
    raw = _tiny_raw()
    raw["profiles"]["quick"]["trained"] = {"column": "final", "min": 15}
    spec_path = tmp_path / "table_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    assert main_report([str(spec_path), "--root", str(tmp_path), "--wandb", "disabled", "--seeds", "3"]) == 0
    summary = json.loads((tmp_path / "tables/table_tiny/quick/summary.json").read_text())
    (beat,) = {c["name"]: c for c in summary["checks"]}["two stacks beat one"]["comparisons"]
    assert beat["verdict"] == "not resolved" and beat["seeds_needed"]["per_row"] is None
    assert beat["seeds_needed"]["text"].startswith("none would resolve it while a row is under the trained floor")


def test_a_row_under_the_trained_floor_resolves_no_claim(tmp_path):
    # The data of the test above: one.final about 11, two.final about 21, two.first about 25. With a
    # floor of 15 on the final column, "one" is under-trained: its significant difference is not
    # judged, while the check on "two" alone stays contradicted.
    raw = _tiny_raw()
    raw["profiles"]["quick"]["trained"] = {"column": "final", "min": 15}
    spec_path = tmp_path / "table_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    _fabricate(tmp_path, {
        **{("one", s): [_epoch(0.10 + 0.01 * s)] for s in range(3)},
        **{("two", s): [_epoch(0.24 + 0.01 * s, 0.20 + 0.01 * s)] for s in range(3)},
    })
    assert main_report([str(spec_path), "--root", str(tmp_path), "--wandb", "disabled", "--seeds", "3"]) == 0
    summary = json.loads((tmp_path / "tables/table_tiny/quick/summary.json").read_text())
    checks = {c["name"]: c for c in summary["checks"]}
    assert checks["two stacks beat one"]["status"] == "not resolved"
    assert checks["two stacks beat one"]["comparisons"][0]["p"] < 1e-3  # the test itself is unchanged
    assert checks["first stack below final"]["status"] == "contradicted"
    assert summary["trained_floor"] == {"column": "final", "min": 15.0,
                                        "under": {"one": "one is under-trained (final 11.00 < 15, the profile's trained floor)"}}
    report = (tmp_path / "tables/table_tiny/report.md").read_text()
    assert "Trained floor of this profile: a row whose Final is under 15 is under-trained" in report
    assert "Under it: one is under-trained (final 11.00 < 15, the profile's trained floor)." in report
    assert "; one is under-trained (final 11.00 < 15, the profile's trained floor)" in checks["two stacks beat one"]["details"][0]
    for bad, message in (({"column": "finall", "min": 1}, "profiles.quick.trained.column: 'finall' is not a column"),
                         ({"column": "final", "min": "x"}, "profiles.quick.trained.min: expected a number"),
                         ({"column": "final", "min": 1, "max": 2}, "profiles.quick.trained")):
        raw["profiles"]["quick"]["trained"] = bad
        spec_path.write_text(yaml.safe_dump(raw))
        with pytest.raises(TableSpecError, match=re.escape(message)):
            load_table(spec_path)


def test_report_at_the_best_epoch(tmp_path):
    raw = _tiny_raw()
    raw["epoch"] = "best"  # by the runs' monitor, val/pckh
    spec_path = tmp_path / "table_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    load_table(spec_path)  # the modified spec is valid
    # Fabricate with the modified spec's hashes (same configs as the fixture's).
    _fabricate(tmp_path, {("one", 0): [_epoch(0.30, total=0.9), _epoch(0.10, total=0.2)], ("two", 0): [_epoch(0.1, 0.2), _epoch(0.2, 0.4, total=0.7)]})
    assert main_report([str(spec_path), "--root", str(tmp_path), "--wandb", "disabled"]) == 0
    summary = json.loads((tmp_path / "tables/table_tiny/quick/summary.json").read_text())
    cells = {(c["row"], c["column"]): c["mean"] for c in summary["cells"]}
    assert cells[("one", "final")] == pytest.approx(30.0)  # epoch 0 has the best val/pckh
    assert cells[("two", "final")] == pytest.approx(40.0)


def test_report_without_finished_runs_says_so(tmp_path, capsys):
    assert main_report([TINY, "--root", str(tmp_path)]) == 2
    assert "no finished runs of table_tiny (quick)" in capsys.readouterr().err


# ============================================================== paper profile without the data
def test_paper_dry_run_lists_runs_and_names_missing_files(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "mpii" / "annot").mkdir(parents=True)
    (data / "mpii" / "annot" / "train.json").write_text("[]")
    code = main_reproduce(["hourglass_mpii", "--profile", "paper", "--dry-run", "--data-root", str(data), "--root", str(tmp_path / "runs")])
    out = capsys.readouterr().out
    assert code == 0
    assert "[new] tables/hourglass_mpii/paper/mpii_val_bearpaw/seed0  (rows mpii_val_bearpaw, mpii_val_mmpose, mpii_test_paper)" in out
    assert "[new] tables/hourglass_mpii/paper/flic/seed0" in out
    assert "fit --config experiments/configs/pose/hourglass_mpii.yaml --config" in out
    assert "fit --config experiments/configs/pose/hourglass_flic.yaml --config" in out
    assert f"root: {data / 'mpii'}" in out and "params 25.43M" in out
    assert f"missing file   {data / 'mpii/annot/valid.json'}" in out
    assert f"missing file   {data / 'mpii/annot/gt_valid.mat'}" in out
    assert f"missing folder {data / 'mpii/images'}" in out
    assert str(data / "mpii/annot/train.json") not in out  # it is there
    assert f"=> put images/, annot/valid.json, annot/gt_valid.mat under {data / 'mpii'}" in out
    assert f"=> put images/, examples.mat under {data / 'flic'}" in out
    assert not (tmp_path / "runs").exists()  # a dry run writes nothing
    # Without --dry-run it refuses before starting anything.
    code = main_reproduce(["hourglass_mpii", "--profile", "paper", "--data-root", str(data), "--root", str(tmp_path / "runs")])
    assert code == 2
    assert f"missing folder {data / 'flic'}" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_value_the_network_refuses_is_one_line_naming_the_row(tmp_path, capsys):
    raw = _tiny_raw()
    raw["rows"]["one"]["override"]["model.init_args.network.init_args.internal_supervision"] = 5
    spec_path = tmp_path / "table_tiny.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    assert main_reproduce([str(spec_path), "--dry-run", "--root", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["convlab reproduce: error: rows.one (profile quick): internal_supervision must be in [0, depth - 1] = [0, 1], got 5"]


def test_stale_runs_are_refused_and_moved_aside_only_when_asked(tmp_path, capsys):
    from experiments.reproduce.cli import check_directories

    spec = load_table(TINY)
    stale = plan_runs(spec, "quick", [0], str(tmp_path))[0]
    stale.directory.mkdir(parents=True)
    (stale.directory / STATE_FILE).write_text(json.dumps({"config_hash": "an-older-spec"}))
    (stale.directory / "metrics.csv").write_text("epoch,val/pckh\n0,0.5\n")
    assert main_reproduce([TINY, "--root", str(tmp_path), "--seeds", "1"]) == 2
    err = capsys.readouterr().err
    assert "1 run(s) were trained with another config than the spec's now" in err and "--rerun-stale" in err
    assert (stale.directory / "metrics.csv").exists()  # untouched
    runs = plan_runs(spec, "quick", [0], str(tmp_path))
    check_directories(runs, rerun_stale=True)
    moved = list(stale.directory.parent.glob("seed0.stale-*"))
    assert len(moved) == 1 and (moved[0] / "metrics.csv").read_text().startswith("epoch")
    assert runs[0].status == "new" and not stale.directory.exists()


def test_data_root_needs_a_profile_with_data(capsys):
    assert main_reproduce(["hourglass_stacking", "--data-root", "/data", "--dry-run"]) == 2
    assert "--data-root: profile quick of hourglass_stacking reads no dataset" in capsys.readouterr().err


def test_a_second_reproduce_of_the_same_table_is_refused(tmp_path, capsys):
    with TableLock(tmp_path / "tables" / "table_tiny" / "quick"):
        assert main_reproduce([TINY, "--root", str(tmp_path), "--seeds", "1"]) == 2
    assert "another reproduce of this table is running" in capsys.readouterr().err


# ======================================================== end to end: kill, resume, report, W&B
def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "CONVLAB_", "MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    env.update({"WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONUNBUFFERED": "1"})
    return env


def _wait_for(predicate, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if process.poll() is not None:
            raise AssertionError(f"reproduce ended early ({process.returncode}):\n{process.stdout.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for reproduce")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """``reproduce`` of the tiny table (2 rows x 2 seeds, 2 epochs each), SIGKILLed while the second
    run trains (the runner alone: its training child is in a process group of its own, and must stop
    by itself), then run again to the end."""
    root = tmp_path_factory.mktemp("tables")
    base = root / "tables" / "table_tiny" / "quick"
    command = [sys.executable, "-m", "experiments", "reproduce", TINY, "--root", str(root), "--slots", "1"]
    first = subprocess.Popen(command, cwd=REPO, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, start_new_session=True)
    try:
        _wait_for(lambda: (base / "one/seed0" / RESULT_FILE).exists(), first, 400)
        finished = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in
                    [base / "one/seed0" / RESULT_FILE, base / "one/seed0/metrics.csv", base / "one/seed0/checkpoints/last.ckpt"]}
        _wait_for(lambda: (base / "two/seed0/checkpoints/last.ckpt").exists(), first, 400)
        assert processes_mentioning(str(root)), "the second run's training process is not running"
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
        left = wait_no_processes(str(root), timeout=10)
        second = subprocess.run(command, cwd=REPO, env=_environment(), capture_output=True, text=True, timeout=600)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
        first.stdout.close()
        kill_all(str(root))
    return {"root": root, "base": base, "finished_before_kill": finished, "left_after_kill": left, "second": second}


@pytest.mark.slow
def test_killed_reproduce_resumes_without_rerunning_finished_runs(reproduced):
    second, base = reproduced["second"], reproduced["base"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "reused   tables/table_tiny/quick/one/seed0 (finished)" in second.stdout
    assert "train    tables/table_tiny/quick/one/seed0" not in second.stdout
    for path, (mtime, content) in reproduced["finished_before_kill"].items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content, path
    assert len(json.loads((base / "one/seed0" / STATE_FILE).read_text())["attempts"]) == 1
    # The training process of the killed runner stopped within seconds (it watches its runner), and
    # the interrupted run continued from its last.ckpt, in the same directory.
    assert reproduced["left_after_kill"] == []
    assert "resume   tables/table_tiny/quick/two/seed0 from last.ckpt" in second.stdout
    # Progress: the reused runs count as done; the time left until the last run, on one slot.
    finished = r"^convlab reproduce: \[{}/4\] finished tables/table_tiny/quick/\S+ in \d+s \(2 epochs validated\)"
    assert re.search(finished.format("[23]") + r" · ~\d+ (s|min) left$", second.stdout, re.M), second.stdout
    assert re.search(finished.format("4") + "$", second.stdout, re.M), second.stdout
    state = json.loads((base / "two/seed0" / STATE_FILE).read_text())
    assert [a["returncode"] for a in state["attempts"]] == ["interrupted", 0] and state["attempts"][1]["resumed"] is True
    assert sorted(read_validation(base / "two/seed0/metrics.csv")) == [0, 1]
    for run in ("one/seed0", "one/seed1", "two/seed0", "two/seed1"):
        assert (base / run / RESULT_FILE).exists(), run


@pytest.mark.slow
def test_end_to_end_report_has_the_rows_means_and_deltas(reproduced):
    base = reproduced["base"]
    spec = load_table(TINY)
    summary = json.loads((base / "summary.json").read_text())
    cells = {(c["row"], c["column"]): c for c in summary["cells"]}
    report = (base.parent / "report.md").read_text()
    for row, stacks in (("one", 1), ("two", 2)):
        values = []
        for seed in (0, 1):
            epochs = read_validation(base / row / f"seed{seed}" / "metrics.csv")
            values.append(100 * epochs[max(epochs)][f"val/pckh_limbs_stack{stacks}"])
        cell = cells[(row, "final")]
        mean = sum(values) / 2
        std = abs(values[0] - values[1]) / math.sqrt(2)
        paper = spec.rows[row].paper["final"]
        assert cell["values"] == pytest.approx(values) and cell["mean"] == pytest.approx(mean) and cell["n"] == 2
        assert cell["delta"] == pytest.approx(mean - paper.value)
        verdict = "yes" if abs(mean - paper.value) <= paper.tolerance else "no"
        line = f"| {spec.rows[row].label} | Final | {paper.value:.2f} | {mean:.2f} ± {std:.2f} (n=2) | {mean - paper.value:+.2f} | {verdict} (±{paper.tolerance:g}) | fixture |"
        assert line in report
    assert [(c["row"], c["column"]) for c in summary["cells"]] == [("one", "final"), ("one", "first"), ("two", "final"), ("two", "first"), ("two", "halfway")]
    assert {c["name"] for c in summary["checks"]} == {"two stacks beat one", "first stack below final"}
    # Every comparison is judged by the stated rule, Welch's t-test on the two cells' seed values.
    assert "Welch" in summary["rule"] and f"How to read a verdict: {summary['rule']}" in report
    for check in summary["checks"]:
        assert check["status"] in ("holds", "contradicted", "not resolved")
        for comparison in check["comparisons"]:
            left, op, right = comparison["comparison"].split(" ")
            a, b = (cells[tuple(ref.split("."))]["values"] for ref in (left, right))
            test = welch(a, b)
            assert comparison["verdict"] == claim_verdict(test, op)
            assert (comparison["difference"], comparison["p"], comparison["low"]) == pytest.approx((test.difference, test.p, test.low))
    for name in ("per_output", "bars", "curves"):
        assert (base / "plots" / f"{name}.png").exists()


# W&B's offline run files are a LevelDB-style log of protobuf records (wandb/sdk/internal/datastore).
def _wandb_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, pending, records = 7, 32768, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            records.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            records.append(pending + chunk)
    return [wandb_internal_pb2.Record.FromString(r) for r in records]


def _wandb_run(directory: Path) -> tuple[object, set[str]]:
    """The run record of the last attempt in ``directory`` and the history keys of all its attempts:
    a resumed run logs to the same W&B run from a new offline file, and when it was killed after
    its last validation, the new attempt logs no history at all."""
    files = sorted(directory.glob("wandb/offline-run-*/run-*.wandb"))
    assert files, directory
    records = [r for path in files for r in _wandb_records(path)]
    run = [r.run for r in records if r.WhichOneof("record_type") == "run"][-1]
    keys = {item.key or "/".join(item.nested_key) for r in records if r.WhichOneof("record_type") == "history" for item in r.history.item}
    return run, keys


@pytest.mark.slow
def test_wandb_runs_share_the_table_group_and_the_summary_is_logged(reproduced):
    base = reproduced["base"]
    for row in ("one", "two"):
        for seed in (0, 1):
            run, keys = _wandb_run(base / row / f"seed{seed}")
            assert run.run_group == "table_tiny" and run.job_type == row
            assert "val/pckh_limbs_stack1" in keys
    run, keys = _wandb_run(base)
    assert run.run_group == "table_tiny" and run.job_type == "summary"
    for key in ("table", "runs", "curves", "checks", "plots/per_output", "plots/bars", "plots/curves"):
        assert any(k == key or k.startswith(key + "/") for k in keys), (key, sorted(keys))
    table = next(r.summary for r in _wandb_records(sorted(base.glob("wandb/offline-run-*/run-*.wandb"))[-1])
                 if r.WhichOneof("record_type") == "summary" and any(list(u.nested_key)[:2] == ["table", "_type"] for u in r.summary.update))
    assert any(json.loads(u.value_json) == "table-file" for u in table.update if list(u.nested_key)[:2] == ["table", "_type"])


@pytest.mark.slow
def test_report_is_rebuilt_from_finished_runs_alone(reproduced, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(reproduced["root"], root, ignore=shutil.ignore_patterns("*.ckpt", "wandb", "plots", "report.md", "summary.json"))
    base = root / "tables" / "table_tiny" / "quick"
    mtimes = {p: p.stat().st_mtime_ns for p in base.glob("*/seed*/metrics.csv")}
    assert main_report([TINY, "--root", str(root), "--wandb", "disabled"]) == 0
    rebuilt = json.loads((base / "summary.json").read_text())
    original = json.loads((reproduced["base"] / "summary.json").read_text())
    assert rebuilt["cells"] == original["cells"] and rebuilt["checks"] == original["checks"]
    assert (root / "tables" / "table_tiny" / "report.md").exists() and (base / "plots" / "bars.png").exists()
    assert {p: p.stat().st_mtime_ns for p in base.glob("*/seed*/metrics.csv")} == mtimes
    assert not list(base.glob("*/seed*/checkpoints/*.ckpt"))  # nothing trained
