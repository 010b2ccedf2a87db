"""The ``focal_loss`` table (RetinaNet Table 1a/b): the spec loads with the paper's numbers, every
row composes in both profiles and its loss reaches the classification head, the quick profile's
dry run lists its runs, and the paper profile's dry run names the COCO files it lacks."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from experiments.recipe import get_dotted, override_tree
from experiments.reproduce import compose_plan, load_table, main_reproduce, plan_runs

REPO = Path(__file__).resolve().parents[1]
NET = "model.init_args.network.init_args"
LOSSES = {"alpha_ce": (0.0, 0.75), "focal": (2.0, 0.25)}  # gamma, alpha


pytestmark = pytest.mark.usefixtures("in_repo")  # the specs name configs relative to the project


def test_spec_has_the_papers_numbers_columns_and_check():
    spec = load_table("focal_loss")
    paper = {(r.name, c): cell.value for r in spec.rows.values() for c, cell in r.paper.items()}
    assert paper == {("alpha_ce", "ap"): 31.1, ("focal", "ap"): 34.0, ("focal", "ap50"): 52.5, ("focal", "ap75"): 36.5}
    assert all("minival" in cell.source.split and "600" in cell.source.split for r in spec.rows.values() for cell in r.paper.values())
    # The detection module's logged names (pycocotools' stats as val/bbox/<stat>).
    assert {c.name: c.metric for c in spec.columns.values()} == {"ap": "val/bbox/AP", "ap50": "val/bbox/AP50", "ap75": "val/bbox/AP75"}
    assert all(c.scale == 100 for c in spec.columns.values())
    assert [str(c) for check in spec.checks for c in check.comparisons][0] == "focal.ap > alpha_ce.ap"
    assert spec.checks[0].name == "FL gamma=2 above alpha-balanced CE"
    quick, paper_profile = spec.profile("quick"), spec.profile("paper")
    assert quick.seeds >= 3 and quick.slots == 2 and not quick.compare and quick.data is None
    assert paper_profile.seeds == 1 and paper_profile.compare and paper_profile.data.key == "data.init_args.source.init_args.root"
    assert paper_profile.data.dir == "coco"


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_every_row_composes_with_its_loss(profile, composer, tmp_path):
    spec = load_table("focal_loss")
    runs = plan_runs(spec, profile, [0], str(tmp_path), data_root="/datasets" if profile == "paper" else None)
    assert sorted(r.key for r in runs) == ["alpha_ce", "focal"]  # two distinct configs: no row shares its runs
    plan = compose_plan(spec, spec.profile(profile), [0], runs, composer)
    for run in runs:
        composed = plan.composed[run.config_hash]
        gamma, alpha = LOSSES[run.key]
        assert (get_dotted(composed, f"{NET}.focal_gamma"), get_dotted(composed, f"{NET}.focal_alpha")) == (gamma, alpha)
        assert get_dotted(composed, "model.init_args.network.class_path") == "lightning_modules.networks.retinanet.RetinaNet"
        if profile == "paper":  # the paper's Table 1 setting on top of the COCO recipe
            assert get_dotted(composed, f"{NET}.min_size") == 600
            assert get_dotted(composed, f"{NET}.box_loss") == "smooth_l1"
            assert get_dotted(composed, f"{NET}.backbone.init_args.depth") == 50
            assert get_dotted(composed, f"{NET}.backbone.init_args.extra_levels") == "p6p7_from_c5"
            assert get_dotted(composed, "data.init_args.source.init_args.root") == "/datasets/coco"
            assert get_dotted(composed, "model.init_args.scheduler.init_args.milestones") == [8, 11]
            assert get_dotted(composed, "trainer.max_epochs") == 12
        else:
            assert get_dotted(composed, "data.init_args.source.class_path") == "datamodules.synthetic.detection.SyntheticDetection"


def test_quick_rows_build_heads_with_their_loss(composer, tmp_path):
    spec = load_table("focal_loss")
    for run in plan_runs(spec, "quick", [0], str(tmp_path)):
        model, _ = composer.instantiate(composer.parse(run.bases, override_tree(run.dotted)))
        head = model.network.detector.head.classification_head
        assert (head.gamma, head.alpha) == LOSSES[run.key], run.key


def test_quick_dry_run_lists_the_runs(tmp_path, capsys):
    assert main_reproduce(["focal_loss", "--dry-run", "--root", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    spec = load_table("focal_loss")
    for row in ("alpha_ce", "focal"):
        for seed in range(spec.profile("quick").seeds):
            assert f"[new] tables/focal_loss/quick/{row}/seed{seed}  params" in out
    assert "fit --config experiments/configs/detection/retinanet_synthetic_imbalanced.yaml --config" in out
    assert not (tmp_path / "runs").exists()


def test_paper_dry_run_names_the_missing_coco_files(tmp_path, capsys):
    # The spec as it ships: the base config reads the ImageNet weights from data/weights/, which a
    # test machine does not have; the dry run names that file too and measures the network without it.
    spec_path = REPO / "experiments/tables/focal_loss.yaml"
    data = tmp_path / "data"
    (data / "coco" / "annotations").mkdir(parents=True)
    (data / "coco" / "annotations" / "instances_val2017.json").write_text("{}")
    runs = tmp_path / "runs"
    code = main_reproduce([str(spec_path), "--profile", "paper", "--dry-run", "--data-root", str(data), "--root", str(runs)])
    out = capsys.readouterr().out
    assert code == 0
    # torchvision's retinanet_resnet50_fpn (34,014,999 with 91 class slots) with 81 slots and P6
    # from C5's 2,048 channels instead of P5's 256.
    assert "[new] tables/focal_loss/paper/alpha_ce/seed0  params 37.94M  group focal_loss" in out
    assert "[new] tables/focal_loss/paper/focal/seed0  params 37.94M  group focal_loss" in out
    assert "fit --config experiments/configs/detection/retinanet_resnet50_fpn_coco.yaml --config" in out
    assert ("missing file   data/weights/resnet50-0676ba61.pth   (model.init_args.network.init_args.backbone.init_args.weights; "
            "rows alpha_ce, focal)") in out
    coco = data / "coco"
    assert f"missing file   {coco / 'annotations/instances_train2017.json'}" in out
    assert f"missing folder {coco / 'train2017'}" in out and f"missing folder {coco / 'val2017'}" in out
    assert str(coco / "annotations/instances_val2017.json") not in out  # it is there
    assert f"=> put train2017/, val2017/, annotations/instances_train2017.json under {coco}" in out
    assert not runs.exists()  # a dry run writes nothing
    # Without --dry-run it refuses before training anything.
    assert main_reproduce([str(spec_path), "--profile", "paper", "--data-root", str(data), "--root", str(runs)]) == 2
    err = capsys.readouterr().err
    assert f"missing folder {coco / 'train2017'}" in err and "data/weights/resnet50-0676ba61.pth" in err
    assert not runs.exists()
