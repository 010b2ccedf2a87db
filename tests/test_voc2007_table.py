"""The ``voc2007_detectors`` table (YOLO Table 1, SSD Table 1): the spec loads with the papers'
numbers, every row composes in both profiles with its own detector on the profile's common data,
and the paper profile's dry run names the VOC files and the ImageNet weights it lacks."""
from __future__ import annotations

from pathlib import Path

import pytest

from experiments.recipe import get_dotted
from experiments.reproduce import compose_plan, load_table, main_reproduce, plan_runs

REPO = Path(__file__).resolve().parents[1]
NET = "model.init_args.network"
DETECTORS = {
    "yolo": ("lightning_modules.networks.yolo_v1.YOLOv1", "full"),
    "fast_yolo": ("lightning_modules.networks.yolo_v1.YOLOv1", "fast"),
    "faster_rcnn": ("lightning_modules.networks.faster_rcnn.FasterRCNN", None),
}
QUICK_SSD, PAPER_SSD = "lightning_modules.networks.ssdlite.SSDLite320", "lightning_modules.networks.ssd.SSD300"


pytestmark = pytest.mark.usefixtures("in_repo")  # the specs name configs relative to the project


def test_spec_has_the_papers_numbers_and_checks():
    spec = load_table("voc2007_detectors")
    paper = {(r.name, c): cell.value for r in spec.rows.values() for c, cell in r.paper.items()}
    assert paper == {("yolo", "map"): 63.4, ("yolo", "fps"): 45, ("fast_yolo", "map"): 52.7, ("fast_yolo", "fps"): 155,
                     ("faster_rcnn", "map"): 73.2, ("faster_rcnn", "fps"): 7, ("ssd300", "map"): 74.3, ("ssd300", "fps"): 59}
    assert spec.rows["ssd300"].paper["map"].source.paper.startswith("Liu")
    assert spec.rows["yolo"].paper["map"].source.paper.startswith("Redmon")
    assert {c.name: c.metric for c in spec.columns.values()} == {"map": "val/voc07/mAP", "fps": "val/images_per_s"}
    orders = [[str(c) for c in check.comparisons] for check in spec.checks]
    assert orders[0] == ["fast_yolo.map < yolo.map", "yolo.map < faster_rcnn.map", "faster_rcnn.map < ssd300.map"]
    assert orders[1] == ["faster_rcnn.fps < yolo.fps", "yolo.fps < ssd300.fps", "ssd300.fps < fast_yolo.fps"]
    quick, paper_profile = spec.profile("quick"), spec.profile("paper")
    assert quick.seeds >= 2 and quick.slots == 2 and not quick.compare and quick.trained.column == "map"
    assert paper_profile.data.dir == "VOCdevkit" and paper_profile.compare


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_every_row_composes_with_its_detector_on_common_data(profile, composer, tmp_path):
    spec = load_table("voc2007_detectors")
    runs = plan_runs(spec, profile, [0], str(tmp_path), data_root="/datasets" if profile == "paper" else None)
    assert sorted(r.key for r in runs) == ["fast_yolo", "faster_rcnn", "ssd300", "yolo"]
    plan = compose_plan(spec, spec.profile(profile), [0], runs, composer)
    sources = []
    for run in runs:
        composed = plan.composed[run.config_hash]
        expected, variant = DETECTORS.get(run.key, (QUICK_SSD if profile == "quick" else PAPER_SSD, None))
        assert get_dotted(composed, f"{NET}.class_path") == expected, run.key
        if variant:
            assert get_dotted(composed, f"{NET}.init_args.variant") == variant
        assert "voc" in get_dotted(composed, "model.init_args.protocols")
        if profile == "quick" and variant:
            # From scratch as every other row: not the YOLO base's pretrained backbone (make yolo).
            assert get_dotted(composed, f"{NET}.init_args.backbone_weights") is None
            assert get_dotted(composed, f"{NET}.init_args.dropout") == 0.5
        sources.append(get_dotted(composed, "data.init_args.source"))
    # Every row trains and validates on the same data.
    assert sources and all(source == sources[0] for source in sources)
    if profile == "paper":
        assert sources[0]["init_args"]["root"] == "/datasets/VOCdevkit"
        assert sources[0]["init_args"]["splits"] == {"train": ["VOC2007/trainval", "VOC2012/trainval"], "val": "VOC2007/test"}


def test_paper_dry_run_names_the_voc_files_and_the_weights(tmp_path, capsys):
    data, runs = tmp_path / "data", tmp_path / "runs"
    code = main_reproduce(["voc2007_detectors", "--profile", "paper", "--dry-run", "--data-root", str(data), "--root", str(runs)])
    out = capsys.readouterr().out
    assert code == 0
    # The paper topologies: YOLO's 271,703,550 parameters and Fast YOLO's 45,089,374 (the network's docstring).
    assert "[new] tables/voc2007_detectors/paper/yolo/seed0  params 271.70M" in out
    assert "[new] tables/voc2007_detectors/paper/fast_yolo/seed0  params 45.09M" in out
    voc = data / "VOCdevkit"
    for path in ("VOC2007/ImageSets/Main/trainval.txt", "VOC2012/ImageSets/Main/trainval.txt", "VOC2007/ImageSets/Main/test.txt"):
        assert f"missing file   {voc / path}" in out
    assert f"missing folder {voc / 'VOC2007/JPEGImages'}" in out and f"missing folder {voc / 'VOC2012/Annotations'}" in out
    assert "missing file   data/weights/vgg16_features-amdegroot-88682ab5.pth   (model.init_args.network.init_args.backbone_weights; rows ssd300)" in out
    assert "data/weights/fast_yolo_backbone_imagenet.pth" in out
    assert not runs.exists()
