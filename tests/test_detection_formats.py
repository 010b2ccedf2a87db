"""The detection readers (``COCODetection``, ``VOCDetection``, ``YOLOText``, ``CSVDetection``,
``DSB2018``) on tiny fixtures in each real format (``tests/detection_fixtures.py``): the exact
boxes, labels, flags, masks and keypoints of every split, the category id mapping both ways, the
required paths, what is refused when pixels are read; and the converter (``datamodules.convert``,
``python -m datamodules convert``) through round trips that must give the original records back.
What the readers refuse at parse time, under both ``on_bad_record`` policies, is in
``test_bad_records.py``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from core.errors import BadRecordError, ConfigError, DataNotFoundError, ImageReadError
from datamodules.__main__ import main as datamodules_main
from datamodules.convert import convert
from datamodules.detection import DetectionRecord
from datamodules.formats import COCODetection, CSVDetection, DSB2018, VOCDetection, YOLOText
from datamodules.formats.voc_detection import VOC_DETECTION_CLASSES
from tests.detection_fixtures import (
    COCO_CLASSES,
    COCO_IDS,
    CSV_EXPECTED,
    DSB_MASKS,
    PERSON_KEYPOINTS,
    VOC_EXPECTED,
    YOLO_CLASSES,
    YOLO_EXPECTED,
    YOLO_SEGMENTS,
    H,
    W,
    coco_detection_folder,
    coco_expected,
    csv_folder,
    dsb_expected,
    dsb_folder,
    voc_detection_folder,
    write_mask,
    yolo_folder,
)
from tests.segmentation_fixtures import write_rgb

REPO = Path(__file__).resolve().parents[1]


def by_id(records: list[DetectionRecord]) -> dict:
    return {r.image_id: r for r in records}


def assert_boxes(record: DetectionRecord, expected, atol: float = 0.0) -> None:
    np.testing.assert_allclose(record.boxes, np.asarray(expected, dtype=np.float64).reshape(-1, 4), atol=atol, rtol=0,
                               err_msg=str(record.image_id))


# ---------------------------------------------------------------------------------------------- COCO
def test_coco_boxes_labels_crowds_areas_and_masks(tmp_path):
    root = coco_detection_folder(tmp_path / "coco")
    source = COCODetection(str(root))
    # Sorted ids -> contiguous labels, and back.
    assert source.class_names == COCO_CLASSES and source.category_ids == COCO_IDS
    assert [source.category_ids[label - 1] for label in (1, 2, 3)] == [1, 5, 90]
    assert source.has_masks and source.keypoint_names == () and source.skeleton == ()
    for split in ("train", "val", "test"):
        records = by_id(source.records(split))
        assert sorted(records) == [1, 2, 3]  # image 3 has no annotation: kept, a negative
        for image_id, expected in coco_expected().items():
            record = records[image_id]
            assert record.size == (H, W) and record.image == str(root / f"{'val' if split == 'test' else split}2017" / f"{image_id:012d}.jpg")
            assert_boxes(record, expected["boxes"])
            assert record.labels.tolist() == expected["labels"]
            assert record.iscrowd.tolist() == expected["iscrowd"]
            assert record.difficult.tolist() == [False] * len(record)
            assert record.areas.tolist() == expected["areas"]
            assert record.keypoints is None
            masks = source.load_masks(record, H, W)
            assert masks.dtype == torch.uint8 and masks.shape == (len(record), H, W)
            assert masks.sum((1, 2)).tolist() == expected["mask_pixels"]
            assert set(masks.unique().tolist()) <= {0, 1}
    record = by_id(source.records("train"))[1]
    masks = source.load_masks(record, H, W)
    # The person's second polygon part (rows 10..14, columns 9..11) is part of its one mask.
    assert masks[0, 10:15, 9:12].all() and not masks[0, 9, 9] and masks[0, 3:9, 2:8].all()
    assert record.extra["annotation_ids"] == [101, 102, 103] and record.extra["file_name"] == "000000000001.jpg"
    assert source.annotation_file("train") == str(root / "annotations/instances_train2017.json")
    assert source.annotation_file("test") == str(root / "annotations/instances_val2017.json")
    image = source.load_image(record)
    assert image.dtype == torch.uint8 and image.shape == (3, H, W)
    assert source.data_report()["skipped"] == 0


def test_coco_keypoints_names_and_zero_based_skeleton(tmp_path):
    source = COCODetection(str(coco_detection_folder(tmp_path / "coco")), keypoints=True)
    assert source.keypoint_names == ("nose", "left_eye", "right_eye")
    assert source.skeleton == ((0, 1), (0, 2))  # COCO's [[1, 2], [1, 3]] is 1-based
    assert source.flip_pairs == ((1, 2),)  # left_eye <-> right_eye
    record = by_id(source.records("train"))[1]
    assert record.keypoints.shape == (3, 3, 3)
    np.testing.assert_array_equal(record.keypoints[0], np.reshape(PERSON_KEYPOINTS, (3, 3)))
    assert not record.keypoints[1:].any()  # the toothbrush crowd and the airplane have none
    assert by_id(source.records("train"))[3].keypoints.shape == (0, 3, 3)


def test_coco_skip_empty_box_only_files_and_one_split(tmp_path):
    root = coco_detection_folder(tmp_path / "coco")
    source = COCODetection(str(root), skip_empty=True)
    assert [r.image_id for r in source.records("train")] == [1, 2]  # image 3 left out of train only
    assert [r.image_id for r in source.records("val")] == [1, 2, 3]
    report = source.data_report()
    assert report["filtered"] == {"iscrowd": 2, "no_annotation": 1}  # image 1's crowd, in train and in val
    assert report["filtered_by_split"] == {"train": {"iscrowd": 1, "no_annotation": 1}, "val": {"iscrowd": 1}, "test": {"iscrowd": 1}}
    assert not COCODetection(str(root), masks=False).has_masks
    assert COCODetection(str(root), masks=False).records("train")[0].masks is None

    # A box-only file (segmentation missing or [] everywhere): no masks, no error.
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        content = json.loads(path.read_text())
        for annotation in content["annotations"]:
            annotation["segmentation"] = [] if annotation["id"] % 2 else None
            if annotation["id"] == 104:
                del annotation["segmentation"]
        path.write_text(json.dumps(content))
    source = COCODetection(str(root))
    assert not source.has_masks and source.records("train")[0].masks is None
    assert source.load_masks(source.records("train")[0], H, W) is None

    only_val = COCODetection(str(root), train_annotations=None)
    assert sorted(only_val.splits) == ["test", "val"]
    with pytest.raises(ConfigError, match="not 'train'"):
        only_val.records("train")


def test_coco_required_paths_and_missing_files(tmp_path):
    root = coco_detection_folder(tmp_path / "coco")
    # Without a test file, test is the val split, and no test path is required.
    assert [p.arg for p in COCODetection(str(root)).required_paths()] == ["root", "train_annotations", "train_images", "val_annotations", "val_images"]
    source = COCODetection(str(root), test_annotations="annotations/instances_val2017.json", test_images="val2017")
    assert [(p.arg, p.path) for p in source.required_paths()] == [
        ("root", root),
        ("train_annotations", root / "annotations/instances_train2017.json"), ("train_images", root / "train2017"),
        ("val_annotations", root / "annotations/instances_val2017.json"), ("val_images", root / "val2017"),
        ("test_annotations", root / "annotations/instances_val2017.json"), ("test_images", root / "val2017"),
    ]
    with pytest.raises(DataNotFoundError) as error:
        COCODetection(str(root), val_annotations="annotations/nope.json", val_images="nope")
    assert [p.arg for p in error.value.missing] == ["val_annotations", "val_images"] and "nope.json" in str(error.value)
    with pytest.raises(DataNotFoundError, match="COCO root not found"):
        COCODetection(str(tmp_path / "absent"))


def test_coco_annotation_file_only_when_every_record_was_read(tmp_path):
    root = coco_detection_folder(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    content = json.loads(path.read_text())
    content["annotations"][3]["category_id"] = 2  # image 2 is a bad record
    path.write_text(json.dumps(content))
    source = COCODetection(str(root), on_bad_record="skip")
    assert [r.image_id for r in source.records("val")] == [1, 3]
    # The official file holds image 2, which is not evaluated: the ground truth comes from the records.
    assert source.annotation_file("val") is None and source.annotation_file("test") is None
    assert source.annotation_file("train") == str(root / "annotations" / "instances_train2017.json")


def test_coco_categories_must_agree_between_splits(tmp_path):
    root = coco_detection_folder(tmp_path / "coco")
    path = root / "annotations" / "instances_val2017.json"
    content = json.loads(path.read_text())
    content["categories"][0]["name"] = "hairbrush"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match="instances_val2017.json.*categories differ"):
        COCODetection(str(root))


def test_coco_unreadable_image_and_size_mismatch_at_load(tmp_path):
    root = coco_detection_folder(tmp_path / "coco")
    (root / "train2017" / "000000000002.jpg").write_bytes(b"not a jpeg" * 20)
    write_rgb(root / "train2017" / "000000000001.jpg", H + 2, W, seed=1)  # the annotation says 32x24
    source = COCODetection(str(root))
    records = by_id(source.records("train"))
    with pytest.raises(ImageReadError) as error:
        source.load_image(records[2])
    assert str(root / "train2017" / "000000000002.jpg") in str(error.value) and "\n" not in str(error.value)
    image = source.load_image(records[1])
    with pytest.raises(BadRecordError) as error:
        source.load_masks(records[1], *image.shape[-2:])
    assert error.value.kind == "size_mismatch" and "instances_train2017.json" in str(error.value) and "32x26" in str(error.value)


# ---------------------------------------------------------------------------------------------- VOC
def test_voc_boxes_flags_parts_and_splits(tmp_path):
    root = voc_detection_folder(tmp_path / "VOCdevkit")
    source = VOCDetection(str(root))
    assert source.class_names == VOC_DETECTION_CLASSES and len(source.class_names) == 20
    assert source.category_ids == tuple(range(1, 21)) and not source.has_masks
    train, val = by_id(source.records("train")), by_id(source.records("val"))
    assert list(train) == ["000005", "000007"] and list(val) == ["000009"]
    assert [r.image_id for r in source.records("test")] == ["000009"]  # no test list given: val
    for image_id, record in {**train, **val}.items():
        expected = VOC_EXPECTED[image_id]
        assert_boxes(record, expected["boxes"])  # the <part> boxes of 000005's person are not objects
        assert record.labels.tolist() == expected["labels"]
        assert record.difficult.tolist() == expected["difficult"]
        assert record.extra["truncated"].tolist() == expected["truncated"]
        assert record.iscrowd.tolist() == [False] * len(record)
        assert record.size == (H, W) and record.image == str(root / "VOC2007" / "JPEGImages" / f"{image_id}.jpg")
    assert train["000007"].extra["annotation_file"] == str(root / "VOC2007/Annotations/000007.xml")
    assert train["000007"].extra["line"] == 2
    assert [(p.arg, p.path.relative_to(root).as_posix() if p.path != root else ".") for p in source.required_paths()] == [
        ("root", "."), ("root", "VOC2007/Annotations"), ("root", "VOC2007/JPEGImages"),
        ("splits", "VOC2007/ImageSets/Main/trainval.txt"), ("splits", "VOC2007/ImageSets/Main/test.txt"),
    ]
    assert source.load_masks(train["000007"], H, W) is None


def test_voc_07_plus_12_and_own_classes(tmp_path):
    root = voc_detection_folder(tmp_path / "VOCdevkit")
    source = VOCDetection(str(root), splits={"train": ["VOC2007/trainval", "VOC2012/trainval"], "val": "VOC2007/test",
                                             "test": "test"})
    assert [r.image_id for r in source.records("train")] == ["000005", "000007", "2008_000001"]
    assert_boxes(source.records("train")[2], VOC_EXPECTED["2008_000001"]["boxes"])
    assert source.records("train")[2].image == str(root / "VOC2012" / "JPEGImages" / "2008_000001.jpg")
    names = ["person", "chair", "dog", "car", "bird", "cat"]
    own = VOCDetection(str(root), class_names=names)
    assert own.class_names == tuple(names) and by_id(own.records("train"))["000005"].labels.tolist() == [1, 2, 3]
    with pytest.raises(DataNotFoundError, match="VOC train list not found: .*VOC2007/ImageSets/Main/trainaug.txt"):
        VOCDetection(str(root), splits={"train": "trainaug"})


def test_voc_size_from_the_image_and_filename_fallback(tmp_path):
    root = voc_detection_folder(tmp_path / "VOCdevkit")
    xml = root / "VOC2007" / "Annotations" / "000007.xml"
    text = xml.read_text()
    start, end = text.index("<size>"), text.index("</size>") + len("</size>")
    xml.write_text(text[:start] + text[end:])  # no <size>: read the image's header
    image = root / "VOC2007" / "JPEGImages" / "000009.jpg"
    image.rename(image.with_suffix(".png"))  # <filename> names a .jpg that is not there...
    (root / "VOC2007" / "Annotations" / "000009.xml").write_text(
        (root / "VOC2007" / "Annotations" / "000009.xml").read_text().replace("000009.jpg", "000009.png"))
    source = VOCDetection(str(root))
    assert by_id(source.records("train"))["000007"].size == (H, W)
    assert source.records("val")[0].image == str(image.with_suffix(".png"))  # ...and the XML's <filename> is used


# ---------------------------------------------------------------------------------------------- YOLO
@pytest.mark.parametrize("names_as", ["dict", "list"])
def test_yolo_boxes_negatives_and_names(tmp_path, names_as):
    root = yolo_folder(tmp_path / "yolo", names_as)
    source = YOLOText(str(root))
    assert source.class_names == YOLO_CLASSES and not source.has_masks
    records = {**by_id(source.records("train")), **by_id(source.records("val"))}
    assert list(by_id(source.records("train"))) == ["a", "b", "c", "d"]
    assert [r.image_id for r in source.records("test")] == ["e"]
    for key, expected in YOLO_EXPECTED.items():
        assert_boxes(records[key], expected["boxes"], atol=1e-9)
        assert records[key].labels.tolist() == expected["labels"]
        assert records[key].size == (H, W) and records[key].masks is None
    assert records["c"].extra["label_file"] is None  # no label file: an image without objects
    assert records["d"].extra["label_file"] == str(root / "labels/train/d.txt")
    assert [(p.arg, p.path) for p in source.required_paths()] == [
        ("root", root), ("data_yaml", root / "data.yaml"),
        ("train_images", root / "images/train"), ("train_images", root / "labels/train"),
        ("val_images", root / "images/val"), ("val_images", root / "labels/val"),
    ]
    assert source.data_report()["masks"] == "boxes only"
    # class_names instead of the yaml (which is then not needed)
    (root / "data.yaml").unlink()
    assert YOLOText(str(root), class_names=["x", "y", "z"]).class_names == ("x", "y", "z")
    with pytest.raises(DataNotFoundError, match="YOLO data.yaml not found"):
        YOLOText(str(root))


def test_yolo_segments_are_masks_and_stray_labels_are_counted(tmp_path):
    root = yolo_folder(tmp_path / "yolo", labels=YOLO_SEGMENTS)
    (root / "labels" / "train" / "orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    source = YOLOText(str(root))
    assert source.has_masks
    records = {**by_id(source.records("train")), **by_id(source.records("val"))}
    assert_boxes(records["s1"], [[8, 6, 24, 18]], atol=1e-9)
    assert_boxes(records["s2"], [[0, 0, 16, 12]], atol=1e-9)
    assert_boxes(records["s3"], [[16, 12, 32, 24]], atol=1e-9)
    assert records["s1"].masks == [[[8.0, 6.0, 24.0, 6.0, 24.0, 18.0, 8.0, 18.0]]]
    masks = source.load_masks(records["s1"], H, W)
    assert masks.shape == (1, H, W) and int(masks.sum()) == 16 * 12 and masks[0, 6:18, 8:24].all()
    assert int(source.load_masks(records["s3"], H, W).sum()) == 16 * 12
    assert source.data_report()["filtered"] == {"label_without_image": 1}

    # A box line among segments: the segments give boxes only.
    (root / "labels" / "val" / "s3.txt").write_text("2 0.75 0.75 0.5 0.5\n")
    mixed = YOLOText(str(root))
    mixed_records = mixed.records("train")
    assert not mixed.has_masks and mixed_records and all(r.masks is None for r in mixed_records)
    assert mixed.data_report()["masks"].startswith("boxes and segments mixed (1 boxes, 2 segments)")


def test_yolo_yaml_names_must_be_indices_and_pose_is_refused(tmp_path):
    root = yolo_folder(tmp_path / "yolo")
    (root / "data.yaml").write_text("names:\n  0: cat\n  2: dog\n")
    with pytest.raises(ConfigError, match="data.yaml.*'names' keys must be the class indices 0..1"):
        YOLOText(str(root))
    (root / "data.yaml").write_text("names: [person]\nkpt_shape: [17, 3]\n")
    with pytest.raises(ConfigError, match="a pose dataset"):
        YOLOText(str(root))
    (root / "data.yaml").write_text("names: [a, b, c]\nnc: 4\n")
    with pytest.raises(ConfigError, match="'nc' is 4 but 'names' holds 3"):
        YOLOText(str(root))


# ---------------------------------------------------------------------------------------------- CSV
def test_csv_several_objects_negatives_and_class_map(tmp_path):
    root = csv_folder(tmp_path / "csv")
    for kwargs, names in (({}, ("cat", "dog")), ({"classes_file": "classes.csv"}, ("dog", "cat")),
                          ({"class_names": ["dog", "bird", "cat"]}, ("dog", "bird", "cat"))):
        source = CSVDetection(str(root), **kwargs)
        assert source.class_names == names, kwargs
        records = {**by_id(source.records("train")), **by_id(source.records("val"))}
        assert list(by_id(source.records("train"))) == ["images/a.png", "images/b.png", "images/c.png"]
        for key, expected in CSV_EXPECTED.items():
            assert_boxes(records[key], expected["boxes"])
            assert [names[label - 1] for label in records[key].labels] == expected["names"]
            assert records[key].size == (H, W)
    assert records["images/a.png"].extra == {"file": str(root / "train.csv"), "lines": [2, 3]}
    assert [(p.arg, p.path) for p in CSVDetection(str(root), classes_file="classes.csv").required_paths()] == [
        ("root", root), ("image_dir", root), ("classes_file", root / "classes.csv"),
        ("train_file", root / "train.csv"), ("val_file", root / "val.csv"),
    ]
    (root / "classes.csv").write_text("dog,0\ncat,0\n")
    with pytest.raises(ConfigError, match="classes.csv: line 2: class names and ids must be distinct"):
        CSVDetection(str(root), classes_file="classes.csv")


# ---------------------------------------------------------------------------------------------- DSB 2018
def test_dsb2018_boxes_from_masks_and_rgba_images(tmp_path):
    root = dsb_folder(tmp_path / "dsb")
    ids = sorted(DSB_MASKS)
    (root / "train.txt").write_text("\n".join(ids[:3]) + "\n")
    (root / "val.txt").write_text(ids[3] + "\n")
    source = DSB2018(str(root), train_list="train.txt", val_list="val.txt")
    assert source.class_names == ("nucleus",) and source.has_masks and source.category_ids == (1,)
    assert [r.image_id for r in source.records("train")] == ids[:3] and [r.image_id for r in source.records("val")] == ids[3:]
    expected = dsb_expected()
    for record in source.records("train") + source.records("val"):
        assert_boxes(record, expected[record.image_id]["boxes"])
        assert record.labels.tolist() == [1] * len(record)
        assert record.areas.tolist() == expected[record.image_id]["pixels"]
        image = source.load_image(record)  # RGBA on disk
        assert image.shape == (3, H, W) and image.dtype == torch.uint8
        masks = source.load_masks(record, H, W)
        assert masks.dtype == torch.uint8 and masks.sum((1, 2)).tolist() == expected[record.image_id]["pixels"]
    # The one-pixel nucleus at row 1, column 1 spans [1, 2] x [1, 2].
    assert_boxes(by_id(source.records("val"))[ids[3]], [[1, 1, 2, 2]])
    assert [p.arg for p in source.required_paths()] == ["root", "image_dir", "train_list", "val_list"]

    # A mask replaced after parsing by one of another size: refused when the masks are read.
    record = source.records("val")[0]
    write_mask(Path(record.masks[0]), np.ones((5, 5), dtype=bool))
    with pytest.raises(BadRecordError) as error:
        source.load_masks(record, H, W)
    assert error.value.kind == "size_mismatch" and record.masks[0] in str(error.value)


def test_dsb2018_seeded_fraction_split(tmp_path):
    root = dsb_folder(tmp_path / "dsb")
    first = DSB2018(str(root), val_fraction=0.25, seed=3)
    again = DSB2018(str(root), val_fraction=0.25, seed=3)
    train, val = [r.image_id for r in first.records("train")], [r.image_id for r in first.records("val")]
    assert len(val) == 1 and len(train) == 3 and sorted(train + val) == sorted(DSB_MASKS)
    assert val == [r.image_id for r in again.records("val")]  # deterministic
    others = {DSB2018(str(root), val_fraction=0.25, seed=s).records("val")[0].image_id for s in range(12)}
    assert len(others) > 1  # the seed decides
    assert first.data_report()["split"] == "val_fraction 0.25, seed 3"


# ---------------------------------------------------------------------------------------------- converter
def comparable(record: DetectionRecord, names: tuple[str, ...], crowd: bool = True, difficult: bool = True) -> dict:
    """What a conversion must keep of a record: its image's name and size, and its objects (class
    names, boxes, flags), crowds and difficult objects left out where the target drops them."""
    keep = np.ones(len(record), dtype=bool)
    if not crowd:
        keep &= ~record.iscrowd
    if not difficult:
        keep &= ~record.difficult
    truncated = record.extra.get("truncated", np.zeros(len(record), dtype=bool))
    return {
        "image": Path(record.image).name, "size": tuple(record.size),
        "names": [names[label - 1] for label in record.labels[keep]],
        "boxes": record.boxes[keep], "iscrowd": record.iscrowd[keep].tolist(), "difficult": record.difficult[keep].tolist(),
        "truncated": np.asarray(truncated)[keep].tolist(),
    }


def assert_same(before: list[dict], after: list[dict], atol: float = 0.0) -> None:
    assert [r["image"] for r in after] == [r["image"] for r in before]
    for old, new in zip(before, after):
        old, new = dict(old), dict(new)
        np.testing.assert_allclose(new.pop("boxes"), old.pop("boxes"), atol=atol, rtol=0, err_msg=old["image"])
        assert new == old


def test_convert_coco_to_yolo_and_back(tmp_path):
    src = coco_detection_folder(tmp_path / "coco")
    original = COCODetection(str(src))
    reports = convert("coco", "yolo", src, tmp_path / "yolo")
    # Image 1's crowd is left out; the masks of the 3 objects kept and the person's keypoints are dropped.
    assert reports["train"] == {"images": 3, "objects": 3, "dropped": {"crowd": 1, "masks": 3, "keypoints": 1}, "rounded": 0}
    data = yaml.safe_load((tmp_path / "yolo" / "data.yaml").read_text())
    assert data["names"] == {0: "person", 1: "airplane", 2: "toothbrush"} and data["nc"] == 3 and data["val"] == "images/val"
    assert (tmp_path / "yolo" / "labels" / "train" / "000000000003.txt").read_text() == ""  # a negative keeps its empty file
    yolo = YOLOText(str(tmp_path / "yolo"))
    convert("yolo", "coco", tmp_path / "yolo", tmp_path / "back")
    back = COCODetection(str(tmp_path / "back"))
    assert back.class_names == original.class_names
    assert back.category_ids == (1, 2, 3)  # YOLO has no category ids: 1..C
    for split in ("train", "val"):
        before = [comparable(r, COCO_CLASSES, crowd=False) for r in original.records(split)]
        assert_same(before, [comparable(r, COCO_CLASSES) for r in yolo.records(split)], atol=1e-6)
        assert_same(before, [comparable(r, COCO_CLASSES) for r in back.records(split)], atol=1e-6)
    # The images are hard links of the source's.
    assert os.path.samefile(src / "train2017" / "000000000001.jpg", tmp_path / "back" / "train2017" / "000000000001.jpg")


def test_convert_coco_to_voc_and_back_with_integer_boxes(tmp_path):
    src = coco_detection_folder(tmp_path / "coco", integer_boxes=True)
    original = COCODetection(str(src))
    reports = convert("coco", "voc", src, tmp_path / "voc")
    assert reports["val"] == {"images": 3, "objects": 3, "dropped": {"crowd": 1, "masks": 3, "keypoints": 1}, "rounded": 0}
    voc_root = tmp_path / "voc" / "VOC2007"
    assert (voc_root / "ImageSets/Main/trainval.txt").read_text() == "000000000001\n000000000002\n000000000003\n"
    assert (voc_root / "classes.txt").read_text() == "person\nairplane\ntoothbrush\n"
    voc = VOCDetection(str(tmp_path / "voc"), class_names=COCO_CLASSES)
    convert("voc", "coco", tmp_path / "voc", tmp_path / "back")
    back = COCODetection(str(tmp_path / "back"))
    assert back.class_names == COCO_CLASSES
    for split in ("train", "val"):
        before = [comparable(r, COCO_CLASSES, crowd=False) for r in original.records(split)]
        for converted in (voc, back):
            # Whole-pixel boxes: exact through VOC's 1-based integers.
            assert_same(before, [comparable(r, COCO_CLASSES) for r in converted.records(split)])


def test_convert_voc_to_coco_and_back_keeps_difficult_and_truncated(tmp_path):
    src = voc_detection_folder(tmp_path / "VOCdevkit")
    original = VOCDetection(str(src))
    convert("voc", "coco", src, tmp_path / "coco")
    coco = COCODetection(str(tmp_path / "coco"))
    assert coco.class_names == VOC_DETECTION_CLASSES and coco.category_ids == tuple(range(1, 21))
    annotations = json.loads((tmp_path / "coco/annotations/instances_train2017.json").read_text())["annotations"]
    chair = [a for a in annotations if a["category_id"] == 9][0]
    assert chair["iscrowd"] == 0 and chair["difficult"] == 1 and chair["bbox"] == [11.0, 4.0, 9.0, 11.0]
    convert("coco", "voc", tmp_path / "coco", tmp_path / "back")
    back = VOCDetection(str(tmp_path / "back"))
    for split in ("train", "val", "test"):
        before = [comparable(r, VOC_DETECTION_CLASSES) for r in original.records(split)]
        assert_same(before, [comparable(r, VOC_DETECTION_CLASSES) for r in coco.records(split)])
        after = back.records(split)
        assert_same(before, [comparable(r, VOC_DETECTION_CLASSES) for r in after])
        assert [r.image_id for r in after] == [r.image_id for r in original.records(split)]
    # The XML written is VOC's: 1-based whole pixels.
    text = (tmp_path / "back/VOC2007/Annotations/000005.xml").read_text()
    assert "<xmin>12</xmin>" in text and "<difficult>1</difficult>" in text and "<truncated>1</truncated>" in text


def test_convert_refuses_clashes_and_reports_one_line(tmp_path, capsys):
    src = voc_detection_folder(tmp_path / "VOCdevkit")
    with pytest.raises(ConfigError, match="would share a VOC list"):
        convert("voc", "coco", src, tmp_path / "out", ["val", "test"])
    code = datamodules_main(["convert", "--from", "coco", "--to", "yolo", "--src", str(tmp_path / "missing"), "--dst", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("convlab: COCO root not found: ") and str(tmp_path / "missing") in err


def test_convert_cli_voc_to_yolo(tmp_path):
    src = voc_detection_folder(tmp_path / "VOCdevkit")
    result = subprocess.run([sys.executable, "-m", "datamodules", "convert", "--from", "voc", "--to", "yolo", "--src", str(src),
                             "--dst", str(tmp_path / "yolo"), "--split", "train", "--copy"],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"convert voc -> yolo train: 2 images, 3 objects -> {tmp_path / 'yolo'} (left out: 1 difficult)"
    yolo = YOLOText(str(tmp_path / "yolo"), val_images=None)
    assert sorted(yolo.splits) == ["train"]
    records = by_id(yolo.records("train"))
    # The difficult chair is left out (as Ultralytics' VOC conversion does); the boxes are exact.
    assert [VOC_DETECTION_CLASSES[label - 1] for label in records["000005"].labels] == ["person", "dog"]
    assert_boxes(records["000005"], [[0, 0, 10, 20], [20, 9, 32, 24]], atol=1e-6)
    assert not os.path.samefile(src / "VOC2007/JPEGImages/000005.jpg", tmp_path / "yolo/images/train/000005.jpg")  # --copy


# ---------------------------------------------------------------------------------------------- into the data module
@pytest.mark.parametrize("name", ["coco", "voc", "yolo-segments", "csv", "dsb2018"])
def test_every_reader_feeds_the_detection_dataset(tmp_path, name):
    """Each reader's records through ``DetectionDataset``: evaluation targets equal the records
    (masks at the image's size), and a training sample goes through the augmentation."""
    from datamodules.detection import DetectionAugmentation, DetectionDataset

    source = {
        "coco": lambda: COCODetection(str(coco_detection_folder(tmp_path / "d")), keypoints=True),
        "voc": lambda: VOCDetection(str(voc_detection_folder(tmp_path / "d"))),
        "yolo-segments": lambda: YOLOText(str(yolo_folder(tmp_path / "d", labels=YOLO_SEGMENTS))),
        "csv": lambda: CSVDetection(str(csv_folder(tmp_path / "d"))),
        "dsb2018": lambda: DSB2018(str(dsb_folder(tmp_path / "d"))),
    }[name]()
    records = source.records("train")
    evaluation = DetectionDataset(source, records, train=False)
    for k, record in enumerate(records):
        image, target = evaluation[k]
        assert image.shape == (3, H, W) and image.dtype == torch.float32
        np.testing.assert_allclose(target["boxes"].numpy(), record.boxes, atol=1e-5)
        assert target["labels"].tolist() == record.labels.tolist()
        assert target["iscrowd"].tolist() == record.iscrowd.tolist() and target["difficult"].tolist() == record.difficult.tolist()
        assert ("masks" in target) == source.has_masks
        if source.has_masks:
            assert target["masks"].shape == (len(record), H, W)
        if record.keypoints is not None:
            assert target["keypoints"].shape == (len(record), 3, 3)
    torch.manual_seed(0)
    training = DetectionDataset(source, records, train=True, augmentation=DetectionAugmentation(min_box_size=1))
    for k in range(len(records)):
        image, target = training[k]
        assert image.shape[0] == 3 and target["boxes"].shape[1:] == (4,)
        assert not target["iscrowd"].any() and not target["difficult"].any()  # training drops crowds and difficult objects
