"""What the README says is counted, counted (issue #30), on tiny COCO folders written here: the crowd
annotations of every split in the data report with what becomes of them, images sharing an id as
counted bad records that take nobody's annotations, an absolute ``file_name`` as a bad record
(even one pointing into the image folder), and the boxes that a conversion to VOC rounds to whole
pixels in the converter's report and its one-line summary.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core.errors import BadRecordError
from datamodules.convert import convert
from datamodules.detection import DetectionDataModule, DetectionDataset
from datamodules.formats import COCODetection, VOCDetection
from tests.segmentation_fixtures import write_rgb

REPO = Path(__file__).resolve().parents[1]
W, H = 40, 30
CATEGORIES = [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]


def image(image_id: int, name: str) -> dict[str, Any]:
    return {"id": image_id, "file_name": name, "width": W, "height": H}


def box(annotation_id: int, image_id: int, bbox: list[float], crowd: int = 0, category: int = 3) -> dict[str, Any]:
    return {"id": annotation_id, "image_id": image_id, "category_id": category, "bbox": bbox,
            "area": float(bbox[2] * bbox[3]), "iscrowd": crowd}


def coco_folder(root: Path, splits: dict[str, tuple[list[dict], list[dict]]]) -> Path:
    """COCO's 2017 layout under ``root``: per split its ``images`` and ``annotations`` in
    ``annotations/instances_{split}2017.json`` and a real JPEG for every relative ``file_name``."""
    for split, (images, annotations) in splits.items():
        path = root / "annotations" / f"instances_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
        (root / f"{split}2017").mkdir(parents=True, exist_ok=True)
        for seed, info in enumerate(images):
            if not Path(info["file_name"]).is_absolute():
                write_rgb(root / f"{split}2017" / info["file_name"], H, W, seed=seed)
    return root


# ---------------------------------------------------------------------------------------------- crowds
def crowd_folder(root: Path) -> Path:
    """train: 2 crowds (one image all crowd, one image with a crowd and a car); val: 1 crowd;
    test (its own file): none."""
    return coco_folder(root, {
        "train": ([image(1, "a.jpg"), image(2, "b.jpg")],
                  [box(10, 1, [1, 1, 8, 8]), box(11, 1, [12, 2, 10, 9], crowd=1), box(12, 2, [3, 4, 20, 15], crowd=1)]),
        "val": ([image(5, "c.jpg")], [box(20, 5, [2, 2, 6, 6], crowd=1), box(21, 5, [20, 10, 9, 9], category=7)]),
        "test": ([image(8, "d.jpg")], [box(30, 8, [5, 5, 10, 10])]),
    })


def test_crowds_are_counted_per_split_with_what_becomes_of_them(tmp_path):
    root = crowd_folder(tmp_path / "coco")
    source = COCODetection(str(root), test_annotations="annotations/instances_test2017.json", test_images="test2017")
    module = DetectionDataModule(source, batch_size=1, num_workers=0)
    report = module.data_report()["sources"][0]  # what the CLI writes to data_report.json
    assert report["filtered"] == {"iscrowd": 3}
    assert report["filtered_by_split"] == {"train": {"iscrowd": 2}, "val": {"iscrowd": 1}, "test": {"iscrowd": 0}}
    rule = report["filtered_rules"]["iscrowd"]
    assert "left out of training" in rule and "ignore regions" in rule and "COCOeval" in rule
    assert report["files"][str(root / "annotations/instances_train2017.json")]["filtered"] == 2
    assert report["skipped"] == 0

    # What the rule says: training samples drop the crowds, evaluation targets keep them flagged, and
    # the official file (whose crowds pycocotools reads as ignore regions) is the ground truth.
    records = source.records("train")
    assert [int(r.iscrowd.sum()) for r in records] == [1, 1]
    training = DetectionDataset(source, records, train=True)
    assert [training[k][1]["boxes"].shape[0] for k in range(2)] == [1, 0]
    evaluation = DetectionDataset(source, source.records("val"))
    assert evaluation[0][1]["iscrowd"].tolist() == [True, False]
    assert module.facts.coco_annotations == {"val": str(root / "annotations/instances_val2017.json"),
                                             "test": str(root / "annotations/instances_test2017.json")}


def test_crowds_of_a_file_read_for_two_splits_count_once_in_total(tmp_path):
    source = COCODetection(str(crowd_folder(tmp_path / "coco")))  # test is the val file
    report = source.data_report()
    assert report["filtered"] == {"iscrowd": 3}
    assert report["filtered_by_split"] == {"train": {"iscrowd": 2}, "val": {"iscrowd": 1}, "test": {"iscrowd": 1}}


# ---------------------------------------------------------------------------------------------- duplicate image ids
def duplicate_folder(root: Path) -> Path:
    """train: a.jpg and c.jpg both id 1 (annotations 10, 11 and 13 name id 1), b.jpg id 2."""
    content = ([image(1, "a.jpg"), image(2, "b.jpg"), image(1, "c.jpg")],
               [box(10, 1, [1, 1, 8, 8]), box(11, 1, [12, 2, 10, 9]), box(12, 2, [3, 4, 20, 15]), box(13, 1, [20, 10, 9, 9])])
    return coco_folder(root, {"train": content, "val": ([image(5, "e.jpg")], [box(20, 5, [2, 2, 6, 6])])})


def test_a_duplicate_image_id_is_an_error_naming_the_file_and_the_id(tmp_path):
    root = duplicate_folder(tmp_path / "coco")
    with pytest.raises(BadRecordError) as error:
        COCODetection(str(root))
    message = str(error.value)
    assert error.value.kind == "duplicate_image_id"
    assert str(root / "annotations/instances_train2017.json") in message and "image 1 ('a.jpg')" in message
    assert "image id 1 is also the id of 'c.jpg'" in message and "3 annotation(s)" in message and "\n" not in message


def test_skip_leaves_out_every_image_of_a_duplicate_id_and_moves_no_annotation(tmp_path):
    root = duplicate_folder(tmp_path / "coco")
    source = COCODetection(str(root), on_bad_record="skip")
    records = source.records("train")
    assert [(r.image_id, Path(r.image).name, r.extra["annotation_ids"]) for r in records] == [(2, "b.jpg", [12])]
    report = source.data_report()
    assert report["skipped_by_kind"] == {"duplicate_image_id": 2} and report["skipped"] == 2
    assert [(s["record"], s["kind"]) for s in report["skipped_records"]] == [
        ("image 1 ('a.jpg')", "duplicate_image_id"), ("image 1 ('c.jpg')", "duplicate_image_id")]
    # No unknown_image for the id's annotations: they are left out with its images, said in the reason.
    assert "3 annotation(s) cannot be told apart" in report["skipped_records"][1]["reason"]
    # The file holds images that were not read: evaluation builds its ground truth from the records.
    assert source.annotation_file("train") is None and source.annotation_file("val") is not None


# ---------------------------------------------------------------------------------------------- absolute file names
@pytest.mark.parametrize("where", ["inside", "outside"])
def test_an_absolute_file_name_is_a_bad_record(tmp_path, where):
    root = coco_folder(tmp_path / "coco", {
        "train": ([image(1, "a.jpg"), image(2, "b.jpg")], [box(10, 1, [1, 1, 8, 8]), box(11, 2, [2, 2, 5, 5])]),
        "val": ([image(5, "e.jpg")], [box(20, 5, [2, 2, 6, 6])]),
    })
    target = root / "train2017" / "b.jpg" if where == "inside" else tmp_path / "elsewhere.jpg"
    write_rgb(target, H, W)
    path = root / "annotations/instances_train2017.json"
    content = json.loads(path.read_text())
    content["images"][1]["file_name"] = str(target)
    path.write_text(json.dumps(content))
    with pytest.raises(BadRecordError) as error:
        COCODetection(str(root))
    assert error.value.kind == "path_outside_root" and f"{str(target)!r} is an absolute path" in str(error.value)
    source = COCODetection(str(root), on_bad_record="skip")
    assert [r.image_id for r in source.records("train")] == [1]
    assert source.data_report()["skipped_by_kind"] == {"path_outside_root": 1}


# ---------------------------------------------------------------------------------------------- the converter's rounding
def off_grid_folder(root: Path) -> Path:
    """One box on whole pixels, one off the grid, one narrower than a pixel (VOC widens it to one)."""
    content = ([image(1, "a.jpg")], [box(10, 1, [2, 3, 10, 12]), box(11, 1, [14.5, 2.25, 6.0, 5.5]), box(12, 1, [20.2, 5, 0.3, 4])])
    return coco_folder(root, {"train": content, "val": ([image(5, "e.jpg")], [box(20, 5, [2, 2, 6, 6])])})


def test_converting_to_voc_counts_the_boxes_it_rounds(tmp_path):
    src = off_grid_folder(tmp_path / "coco")
    reports = convert("coco", "voc", src, tmp_path / "voc")
    assert reports == {"train": {"images": 1, "objects": 3, "dropped": {}, "rounded": 2},
                       "val": {"images": 1, "objects": 1, "dropped": {}, "rounded": 0}}
    # The count is what the VOC reader reads back differently from the source.
    before = COCODetection(str(src)).records("train")[0].boxes
    after = VOCDetection(str(tmp_path / "voc"), class_names=("car", "dog")).records("train")[0].boxes
    assert [bool((b != a).any()) for b, a in zip(before, after)] == [False, True, True]
    # COCO and YOLO keep the floats: nothing is rounded to whole pixels.
    assert convert("coco", "yolo", src, tmp_path / "yolo")["train"]["rounded"] == 0
    assert convert("coco", "coco", src, tmp_path / "coco2")["train"]["rounded"] == 0


def test_the_convert_cli_line_says_how_many_boxes_were_rounded(tmp_path):
    src = off_grid_folder(tmp_path / "coco")
    result = subprocess.run([sys.executable, "-m", "datamodules", "convert", "--from", "coco", "--to", "voc", "--src", str(src),
                             "--dst", str(tmp_path / "voc")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        f"convert coco -> voc train: 1 images, 3 objects -> {tmp_path / 'voc'} (2 box(es) rounded to whole pixels)",
        f"convert coco -> voc val: 1 images, 1 objects -> {tmp_path / 'voc'}",
    ]


# ---------------------------------------------------------------------------------------------- classes never trained on
def test_a_class_without_a_training_object_is_a_warning_in_the_report(tmp_path):
    """'dog' has an object in val only; train's crowd regions do not count (training drops them)."""
    root = crowd_folder(tmp_path / "coco")
    module = DetectionDataModule(COCODetection(str(root)), batch_size=1, num_workers=0)
    report = module.data_report()
    assert report["classes_never_in_training"] == ["dog"]
    assert report["warnings"] == ["COCODetection: class 'dog' never appears in the training labels (nothing can learn it)"]
    path = root / "annotations/instances_train2017.json"
    content = json.loads(path.read_text())
    content["annotations"].append(box(13, 2, [1, 1, 5, 5], category=7))
    path.write_text(json.dumps(content))
    assert "warnings" not in DetectionDataModule(COCODetection(str(root)), batch_size=1, num_workers=0).data_report()


def test_the_run_prints_each_note_and_warning_of_the_report_once(tmp_path, capsys):
    from experiments.runs import RunSpec

    run = RunSpec(root=str(tmp_path))
    run.directory = tmp_path / "run"
    report = {"sources": [{"source": "MaskFolder", "skipped": 0, "notes": ["the masks in x hold only 0 and 255: read as ..."]}],
              "warnings": ["MaskFolder: class 'cell' never appears in the training labels (nothing can learn it)"]}
    run.write_data_report(report)
    assert json.loads((tmp_path / "run" / "data_report.json").read_text()) == report
    assert capsys.readouterr().err.splitlines() == [
        "convlab data: MaskFolder: the masks in x hold only 0 and 255: read as ...",
        "convlab data: warning: MaskFolder: class 'cell' never appears in the training labels (nothing can learn it)",
    ]
