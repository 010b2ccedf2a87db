"""The real-dataset pose readers (``datamodules.formats``) on tiny fixtures written in each real
format, the COCO keypoint AP metric, and the paper-recipe configs.

Each fixture (``tests/pose_fixtures.py``) is the dataset's own file layout in miniature. What the
readers refuse (bad records, both ``on_bad_record`` policies) is ``test_bad_records.py``.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.io import savemat

from core.errors import AnnotationFormatError, BadRecordError, ConfigError, DataNotFoundError, ImageReadError
from core.skeletons import PCK_TORSO, PCKH_MPII
from datamodules.formats import FLIC, LSP, MPII, COCOKeypoints, MPIIRelease
from datamodules.pose import PoseDataModule
from lightning_modules.metrics.coco_keypoints import COCOKeypointAP
from tests.pose_fixtures import (
    coco_file,
    coco_folder,
    flic_folder,
    hrnet_mpii,
    lsp_folder,
    lsp_joints,
    lspet_folder,
    mpii_joints,
    release_mat,
    write_head_boxes,
    write_image,
    write_json,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "experiments" / "configs" / "pose"


# ---------------------------------------------------------------------------------------------- helpers


def datamodule(source, input_size=64, output_size=16) -> PoseDataModule:
    return PoseDataModule(source=source, input_size=input_size, output_size=output_size, batch_size=2, num_workers=0)


def first_val_batch(source, **kwargs):
    images, target = next(iter(datamodule(source, **kwargs).val_dataloader()))
    return images, target


# ---------------------------------------------------------------------------------------------- MPII (JSON)


def test_mpii_hrnet_json_records(tmp_path):
    source = MPII(str(hrnet_mpii(tmp_path / "mpii")), test_file="annot/test.json")
    assert source.skeleton.num_joints == 16 and source.protocol == PCKH_MPII
    train, val, test = source.records("train"), source.records("val"), source.records("test")
    assert (len(train), len(val), len(test)) == (3, 2, 1)
    first = train[0]
    # 1-based -> 0-based
    np.testing.assert_allclose(first.keypoints[1], [10.0 + 4 - 1, 12.0 + 3 - 1])
    assert first.visible.dtype == bool and not first.visible[0] and first.visible[1:].all()
    # HRNet's crop adjustment: centre 15 x scale lower, scale x 1.25; then 0-based.
    assert first.center == pytest.approx((40.0, 30.0 + 15 * 0.4))
    assert first.scale == pytest.approx(0.5)
    assert first.image == str(tmp_path / "mpii" / "images" / "a.jpg") and first.image_id == "a.jpg"
    assert first.head_box is None
    # Val head boxes from gt_valid.mat, 0-based; jnt_missing decides what is annotated.
    assert val[0].head_box == pytest.approx((10.0, 20.0, 40.0, 60.0))
    assert val[1].head_box == pytest.approx((11.0, 20.0, 41.0, 60.0))
    assert not val[0].visible[3] and val[0].visible.sum() == 15 and val[1].visible.all()
    # The test file has no joints: every joint unannotated.
    assert not test[0].visible.any() and test[0].center == pytest.approx((44.0, 34.0 + 7.5))
    with pytest.raises(ValueError, match="splits"):
        MPII(str(tmp_path / "mpii")).records("test")


def test_mpii_center_shift_and_scale_factor_are_arguments(tmp_path):
    source = MPII(str(hrnet_mpii(tmp_path / "mpii")), center_shift=0.0, scale_factor=1.0)
    assert source.records("train")[0].center == pytest.approx((40.0, 30.0))
    assert source.records("train")[0].scale == pytest.approx(0.4)


def test_mpii_batch_carries_the_records(tmp_path):
    source = MPII(str(hrnet_mpii(tmp_path / "mpii")))
    images, target = first_val_batch(source)
    val = source.records("val")
    assert images.shape == (2, 3, 64, 64) and target["heatmaps"].shape == (2, 16, 16, 16)
    expected = torch.stack([torch.as_tensor(r.keypoints) for r in val])
    torch.testing.assert_close(target["keypoints"], expected)
    assert target["visible"].tolist() == [r.visible.tolist() for r in val]
    torch.testing.assert_close(target["head_size"], torch.full((2,), 30.0))
    assert torch.isfinite(images).all()


def test_mpii_bearpaw_json(tmp_path):
    root = tmp_path / "mpii"
    for name in ("a.jpg", "b.jpg"):
        write_image(root / "images" / name)
    people = []
    for i in range(4):
        joints = [[x, y, 1.0] for x, y in mpii_joints(i)]
        joints[2] = [0.0, 0.0, 0.0]  # genJSON.m's padding: not annotated
        joints[5][2] = 0.0  # annotated but occluded (MPII is_visible = 0)
        people.append({
            "dataset": "MPI", "isValidation": float(i >= 2), "img_paths": "ab"[i % 2] + ".jpg",
            "objpos": [40.0 + i, 30.0], "scale_provided": 0.4, "joint_self": joints,
            "annolist_index": 7 + i, "people_index": 1,
        })
    write_json(root / "mpii_annotations.json", people)
    savemat(root / "detections_our_format.mat", {"headboxes_src": np.stack([[[11.0, 11.0], [21.0, 21.0]], [[41.0, 41.0], [61.0, 61.0]]])})
    source = MPII(str(root), train_file="mpii_annotations.json", val_file="mpii_annotations.json", head_boxes_file="detections_our_format.mat")
    train, val = source.records("train"), source.records("val")
    assert len(train) == 2 and len(val) == 2
    assert [r.extra["annolist_index"] for r in train] == [7, 8] and [r.extra["annolist_index"] for r in val] == [9, 10]
    assert not train[0].visible[2] and train[0].visible[5] and train[0].visible.sum() == 15
    assert train[0].extra["occluded"][5] and not train[0].extra["occluded"][4]
    np.testing.assert_allclose(train[1].keypoints[0], [10.0, 12.0])  # (11, 13) 1-based
    assert val[0].head_box == pytest.approx((10.0, 20.0, 40.0, 60.0))
    images, target = first_val_batch(source)
    torch.testing.assert_close(target["keypoints"], torch.stack([torch.as_tensor(r.keypoints) for r in val]))


def test_mpii_missing_paths_raise_data_not_found(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(DataNotFoundError, match="MPII root") as info:
        MPII(str(missing))
    assert info.value.path == missing and str(missing) in str(info.value)
    root = hrnet_mpii(tmp_path / "mpii")
    with pytest.raises(DataNotFoundError, match="image folder") as info:
        MPII(str(root), image_dir="imgs")
    assert str(root / "imgs") in str(info.value)
    with pytest.raises(DataNotFoundError, match="val annotation file") as info:
        MPII(str(root), val_file="annot/val.json")
    assert str(root / "annot" / "val.json") in str(info.value)
    with pytest.raises(DataNotFoundError, match="head-box file"):
        MPII(str(root), head_boxes_file="annot/gt_val.mat")
    with pytest.raises(ConfigError, match="head_boxes_file"):
        MPII(str(root), head_boxes_file=None)


def test_mpii_missing_image_at_load_time(tmp_path):
    root = hrnet_mpii(tmp_path / "mpii")
    source = MPII(str(root))
    (root / "images" / "a.jpg").unlink()
    with pytest.raises(DataNotFoundError, match="image") as info:
        source.load_image(source.records("train")[0])
    assert str(root / "images" / "a.jpg") in str(info.value)
    image = source.load_image(source.records("train")[1])
    assert image.dtype == torch.uint8 and image.shape == (3, 80, 96)
    # There when the annotations were read, but not an image: one line naming the file.
    (root / "images" / "b.jpg").write_bytes(b"not a jpeg" * 10)
    with pytest.raises(ImageReadError, match="cannot read image") as info:
        source.load_image(source.records("train")[1])
    assert str(root / "images" / "b.jpg") in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda people: people[1].pop("joints"), ["record 1", "'b.jpg'", "'joints'"]),
        (lambda people: people[0].__setitem__("joints", people[0]["joints"][:15]), ["record 0", "'joints'", "(16, 2)", "(15, 2)"]),
        (lambda people: people[2].__setitem__("joints_vis", [1] * 14), ["record 2", "'joints_vis'"]),
        (lambda people: people[2].__setitem__("scale", -1), ["record 2", "'scale'"]),
        (lambda people: people[1].__setitem__("center", "middle"), ["record 1", "'center'"]),
    ],
)
def test_mpii_malformed_json_names_file_and_record(tmp_path, mutate, expected):
    root = hrnet_mpii(tmp_path / "mpii")
    path = root / "annot" / "train.json"
    people = json.loads(path.read_text())
    mutate(people)
    write_json(path, people)
    with pytest.raises(BadRecordError) as info:
        MPII(str(root))
    message = str(info.value)
    assert str(path) in message
    for part in expected:
        assert part in message, message


def test_mpii_unknown_or_broken_json(tmp_path):
    root = hrnet_mpii(tmp_path / "mpii")
    path = root / "annot" / "train.json"
    write_json(path, [{"file": "a.jpg"}])
    with pytest.raises(AnnotationFormatError, match="neither the HRNet"):
        MPII(str(root))
    path.write_text("[{")
    with pytest.raises(AnnotationFormatError, match="not valid JSON") as info:
        MPII(str(root))
    assert str(path) in str(info.value)


def test_mpii_head_box_file_must_match_the_val_file(tmp_path):
    root = hrnet_mpii(tmp_path / "mpii")
    valid = json.loads((root / "annot" / "valid.json").read_text())
    mat = root / "annot" / "gt_valid.mat"
    savemat(mat, {"jnt_missing": np.zeros((16, 2))})
    with pytest.raises(AnnotationFormatError, match="headboxes_src") as info:
        MPII(str(root))
    assert str(mat) in str(info.value)
    savemat(mat, {"headboxes_src": np.zeros((2, 2, 3))})
    with pytest.raises(AnnotationFormatError, match="3 people"):
        MPII(str(root))
    write_head_boxes(mat, valid, order=[1, 0])  # another order than valid.json
    with pytest.raises(AnnotationFormatError, match="person 0 .*'c.jpg'.*order"):
        MPII(str(root))


# ---------------------------------------------------------------------------------------------- MPII RELEASE .mat


def test_mpii_release_mat(tmp_path):
    root = release_mat(tmp_path / "mpii")
    source = MPIIRelease(str(root), val_images="val_images.txt")
    train, val, test = source.records("train"), source.records("val"), source.records("test")
    assert (len(train), len(val), len(test)) == (1, 1, 1)
    person = train[0]
    np.testing.assert_allclose(person.keypoints[0], [20.0, 30.0])
    np.testing.assert_allclose(person.keypoints[9], [40.0, 10.0])
    assert person.visible.tolist() == [k in (0, 7, 9) for k in range(16)]
    assert person.extra["occluded"].tolist() == [k == 9 for k in range(16)]
    assert person.head_box == pytest.approx((30.0, 5.0, 50.0, 20.0))
    assert person.center == pytest.approx((40.0, 30.0 + 15 * 0.4)) and person.scale == pytest.approx(0.5)
    assert person.extra["annolist_index"] == 0 and person.extra["person_index"] == 0
    assert val[0].image_id == "b.jpg" and val[0].visible.tolist() == [k == 15 for k in range(16)]
    assert test[0].image_id == "c.jpg" and not test[0].visible.any() and test[0].head_box is None
    images, target = first_val_batch(source)
    torch.testing.assert_close(target["keypoints"][0], torch.as_tensor(val[0].keypoints))
    torch.testing.assert_close(target["head_size"], torch.tensor([0.6 * math.hypot(10, 10)]))
    with pytest.raises(ValueError, match="val_images"):
        MPIIRelease(str(root)).records("val")


def test_mpii_release_errors(tmp_path):
    root = release_mat(tmp_path / "mpii", point_id=16)
    path = root / "mpii_human_pose_v1_u12_1.mat"
    with pytest.raises(AnnotationFormatError) as info:
        MPIIRelease(str(root))
    assert str(path) in str(info.value) and "annolist[0] (image 'a.jpg') annorect[0]" in str(info.value) and "joint id" in str(info.value)
    savemat(path, {"annolist": np.zeros(3)})
    with pytest.raises(AnnotationFormatError, match="RELEASE"):
        MPIIRelease(str(root))
    path.write_text("not a mat file")
    with pytest.raises(AnnotationFormatError, match="MATLAB"):
        MPIIRelease(str(root))
    release_mat(root)
    (root / "val_images.txt").write_text("c.jpg\n")  # a test image
    with pytest.raises(AnnotationFormatError, match="'c.jpg' is not a training image"):
        MPIIRelease(str(root), val_images="val_images.txt")
    with pytest.raises(DataNotFoundError, match="annotation file"):
        MPIIRelease(str(root), annotation_file="release.mat")


# ---------------------------------------------------------------------------------------------- LSP


def test_lsp_records_and_splits(tmp_path):
    source = LSP(str(lsp_folder(tmp_path / "lsp")))
    assert source.protocol == PCK_TORSO and source.skeleton.num_joints == 14 and source.skeleton.torso == (9, 2)
    train, val, test = source.records("train"), source.records("val"), source.records("test")
    assert (len(train), len(val), len(test)) == (1000, 1000, 1000)
    assert val[0].image_id == "im1001.jpg" and train[0].image == str(tmp_path / "lsp" / "images" / "im0001.jpg")
    first = test[0]
    expected = lsp_joints(2000)[1000] - 1.0
    np.testing.assert_allclose(first.keypoints, expected)
    assert first.visible.all()  # every LSP joint is annotated; the flag is occlusion
    assert first.extra["occluded"].tolist() == [k == 5 for k in range(14)]
    lo, hi = expected.min(0), expected.max(0)
    assert first.center == pytest.approx(tuple((lo + hi) / 2))
    assert first.scale == pytest.approx(max(hi - lo) * 1.25 / 200)
    assert first.head_box is None
    held_out = LSP(str(tmp_path / "lsp"), num_val=100)
    assert len(held_out.records("train")) == 900 and held_out.records("val")[0].image_id == "im0901.jpg"
    images, target = first_val_batch(source)
    torch.testing.assert_close(target["keypoints"], torch.as_tensor(np.stack([val[0].keypoints, val[1].keypoints])))
    assert target["visible"].all() and (target["torso_size"] > 0).all()


def test_lsp_extended_adds_training_people(tmp_path):
    source = LSP(str(lsp_folder(tmp_path / "lsp")), extended_root=str(lspet_folder(tmp_path / "lspet")))
    train = source.records("train")
    assert len(train) == 1005 and len(source.records("val")) == 1000
    extended = train[1000:]
    assert extended[0].image == str(tmp_path / "lspet" / "images" / "im00001.jpg")
    assert extended[2].extra["dataset"] == "lspet" and not extended[2].visible[0] and extended[2].visible[1:].all()
    np.testing.assert_allclose(extended[1].keypoints, lsp_joints(5)[1] - 1.0)


def test_lsp_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="LSP root") as info:
        LSP(str(tmp_path / "nope"))
    assert str(tmp_path / "nope") in str(info.value)
    root = lsp_folder(tmp_path / "lsp")
    with pytest.raises(DataNotFoundError, match="LSP-extended root"):
        LSP(str(root), extended_root=str(tmp_path / "lspet"))
    savemat(root / "joints.mat", {"points": np.zeros((3, 14, 2000))})
    with pytest.raises(AnnotationFormatError, match="no variable 'joints'") as info:
        LSP(str(root))
    assert str(root / "joints.mat") in str(info.value)
    savemat(root / "joints.mat", {"joints": np.zeros((3, 13, 2000))})
    with pytest.raises(AnnotationFormatError, match="3 x 13 x 2000"):
        LSP(str(root))
    savemat(root / "joints.mat", {"joints": np.zeros((3, 14, 1500))})
    with pytest.raises(AnnotationFormatError, match="2000 people"):
        LSP(str(root))
    bad = np.ones((3, 14, 2000))
    bad[2, 4, 7] = 3
    savemat(root / "joints.mat", {"joints": bad})
    with pytest.raises(AnnotationFormatError, match=r"person 7 \(im0008.jpg\)"):
        LSP(str(root))


# ---------------------------------------------------------------------------------------------- FLIC


def test_flic_records(tmp_path):
    source = FLIC(str(flic_folder(tmp_path / "flic")))
    assert source.skeleton.num_joints == 11 and source.protocol == PCK_TORSO
    train, val, test = source.records("train"), source.records("val"), source.records("test")
    assert (len(train), len(val), len(test)) == (2, 2, 2) and val[0].image_id == test[0].image_id == "movie-00000002.jpg"
    person = train[1]
    # Column 10 (1-based) is the right hip, the skeleton's joint 7; 1-based -> 0-based.
    np.testing.assert_allclose(person.keypoints[7], [21.0 + 35 + 1 - 1, 11.0 + 42 - 1])
    np.testing.assert_allclose(person.keypoints[0], [21.0 + 1 - 1, 11.0 - 1])
    assert person.visible.all() and person.head_box is None
    assert person.extra["torsobox"] == pytest.approx((20.0, 10.0, 60.0, 70.0))
    assert val[0].visible.tolist() == [k != 10 for k in range(11)]  # NaN nose
    points = person.keypoints
    lo, hi = points.min(0), points.max(0)
    assert person.center == pytest.approx(tuple((lo + hi) / 2)) and person.scale == pytest.approx(max(hi - lo) * 1.25 / 200)
    assert len(FLIC(str(tmp_path / "flic"), num_val=1).records("train")) == 1
    images, target = first_val_batch(source)
    torch.testing.assert_close(target["keypoints"], torch.as_tensor(np.stack([r.keypoints for r in val])))
    assert target["visible"][0].tolist() == val[0].visible.tolist() and (target["torso_size"] > 0).all()


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ({"coords": np.zeros((2, 28))}, "'coords' must be 2 x 29"),
        ({"istrain": 5}, "'istrain' must be 0 or 1"),
        ({"coords": np.full((2, 29), np.nan)}, "none of the 11 FLIC joints"),
    ],
)
def test_flic_malformed_record_names_it(tmp_path, broken, expected):
    root = flic_folder(tmp_path / "flic", broken)
    with pytest.raises(AnnotationFormatError) as info:
        FLIC(str(root))
    message = str(info.value)
    assert str(root / "examples.mat") in message and "examples[1] ('movie-00000001.jpg')" in message and expected in message


def test_flic_missing_variable_and_paths(tmp_path):
    root = flic_folder(tmp_path / "flic")
    savemat(root / "examples.mat", {"frames": np.zeros(2)})
    with pytest.raises(AnnotationFormatError, match="no variable 'examples'"):
        FLIC(str(root))
    with pytest.raises(DataNotFoundError, match="FLIC root"):
        FLIC(str(tmp_path / "nope"))
    with pytest.raises(DataNotFoundError, match="FLIC image folder"):
        FLIC(str(root), image_dir="frames")


# ---------------------------------------------------------------------------------------------- COCO


def test_coco_keypoints_records(tmp_path):
    root = coco_folder(tmp_path / "coco")
    source = COCOKeypoints(str(root))
    assert source.skeleton.num_joints == 17 and source.protocol == PCK_TORSO
    val = source.records("val")
    assert [r.extra["annotation_id"] for r in val] == [10, 13]  # no crowd, no person without keypoints
    # ... left out by COCO's rules, and counted (train and val files alike), not silently dropped.
    report = source.data_report()
    assert report["filtered"] == {"few_keypoints": 2, "iscrowd": 2} and report["skipped"] == 0
    assert len(source.records("train")) == 2 and source.records("test") == val
    first, second = val
    np.testing.assert_allclose(first.keypoints[0], [20.0, 10.0])  # COCO's coordinates are kept
    assert first.visible.tolist() == [k not in (3, 4) for k in range(17)]
    assert first.image == str(root / "val2017" / "000001.jpg") and first.image_id == 1
    assert first.extra == {"annotation_id": 10, "image_id": 1, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 1000.0}
    # Clipped box (10, 5)-(39, 44): 29 x 39, taller than 3:4, so scale = 39 / 200 * 1.25.
    assert first.center == pytest.approx((10 + 29 / 2, 5 + 39 / 2)) and first.scale == pytest.approx(39 / 200 * 1.25)
    # Clipped as HRNet does, x1 = max(0, -0.5) = 0 and x2 = x1 + (64 - 1): 63 x 19, wider than 3:4,
    # so the height becomes 63 / 0.75.
    assert second.center == pytest.approx((63 / 2, 2 + 19 / 2)) and second.scale == pytest.approx(63 / 0.75 / 200 * 1.25)
    assert first.head_box is None
    assert [r.extra["annotation_id"] for r in COCOKeypoints(str(root), min_keypoints=16).records("val")] == [13]
    images, target = first_val_batch(source, input_size=(64, 48), output_size=(16, 12))
    assert images.shape == (2, 3, 64, 48) and target["heatmaps"].shape == (2, 17, 16, 12)
    torch.testing.assert_close(target["keypoints"], torch.as_tensor(np.stack([r.keypoints for r in val])))


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda ann: ann.pop("keypoints"), "missing field 'keypoints'"),
        (lambda ann: ann.__setitem__("keypoints", ann["keypoints"][:48]), "17 x [x, y, v]"),
        (lambda ann: ann.__setitem__("bbox", [1, 2, 3]), "'bbox'"),
    ],
)
def test_coco_malformed_annotation_names_it(tmp_path, mutate, expected):
    root = coco_folder(tmp_path / "coco")
    path = root / "annotations" / "person_keypoints_val2017.json"
    content = json.loads(path.read_text())
    mutate(content["annotations"][3])
    write_json(path, content)
    with pytest.raises(AnnotationFormatError) as info:
        COCOKeypoints(str(root))
    message = str(info.value)
    assert str(path) in message and "annotation 13 (image '000002.jpg')" in message and expected in message


def test_coco_missing_paths_and_broken_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="COCO root"):
        COCOKeypoints(str(tmp_path / "nope"))
    root = coco_folder(tmp_path / "coco")
    with pytest.raises(DataNotFoundError, match="COCO val image folder") as info:
        COCOKeypoints(str(root), val_images="val2014")
    assert str(root / "val2014") in str(info.value)
    (root / "annotations" / "person_keypoints_train2017.json").write_text("[1, 2]")
    with pytest.raises(AnnotationFormatError, match="not a COCO annotation file"):
        COCOKeypoints(str(root))


# ---------------------------------------------------------------------------------------------- COCO AP
def ap_ground_truth(path: Path) -> list[dict]:
    """Two images with a large and a medium person, all 17 keypoints labelled."""
    content = coco_file(path)
    content["images"] = [{"id": 1, "file_name": "1.jpg", "width": 640, "height": 480}, {"id": 2, "file_name": "2.jpg", "width": 640, "height": 480}]
    people = []
    for annotation_id, image_id, x, y, w, h in ((1, 1, 100, 50, 120, 260), (2, 2, 300, 200, 40, 70)):
        keypoints = []
        for k in range(17):
            keypoints += [x + w * (0.2 + 0.6 * (k % 4) / 3), y + h * (k + 1) / 18, 2]
        people.append({"id": annotation_id, "image_id": image_id, "category_id": 1, "bbox": [x, y, w, h], "area": float(w * h),
                       "iscrowd": 0, "num_keypoints": 17, "keypoints": keypoints})
    content["annotations"] = people
    write_json(path, content)
    return people


def ap_update(metric: COCOKeypointAP, people: list[dict], shift: float) -> None:
    keypoints = torch.tensor(np.stack([np.reshape(p["keypoints"], (17, 3))[:, :2] for p in people]), dtype=torch.float32) + shift
    metric.update(torch.tensor([p["image_id"] for p in people]), keypoints, torch.ones(len(people), 17))


def test_coco_keypoint_ap_perfect_and_far_off(tmp_path):
    path = tmp_path / "person_keypoints_val.json"
    people = ap_ground_truth(path)
    metric = COCOKeypointAP(str(path))
    ap_update(metric, people[:1], 0.0)
    ap_update(metric, people[1:], 0.0)
    result = metric.compute()
    assert set(result) == {"AP", "AP50", "AP75", "APm", "APl", "AR"}
    for name in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
        assert result[name].item() == pytest.approx(1.0), name
    metric.reset()
    ap_update(metric, people, 150.0)
    far = metric.compute()
    assert far["AP"].item() == pytest.approx(0.0, abs=1e-6) and far["AR"].item() == pytest.approx(0.0, abs=1e-6)


def test_coco_keypoint_ap_is_restricted_to_predicted_images(tmp_path):
    path = tmp_path / "gt.json"
    people = ap_ground_truth(path)
    metric = COCOKeypointAP(str(path))
    ap_update(metric, people[:1], 0.0)  # image 2 not predicted: not counted as missed
    assert metric.compute()["AP"].item() == pytest.approx(1.0)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert COCOKeypointAP(str(path)).compute()["AP"].item() == 0.0
    metric.reset()
    metric.update(torch.tensor([99]), torch.zeros(1, 17, 2), torch.ones(1, 17))
    with pytest.raises(ValueError, match="99"):
        metric.compute()
    with pytest.raises(ValueError, match="keypoints"):
        metric.update(torch.tensor([1]), torch.zeros(1, 16, 2), torch.ones(1, 16))
    with pytest.raises(DataNotFoundError):
        COCOKeypointAP(str(tmp_path / "missing.json"))


# ---------------------------------------------------------------------------------------------- configs
def test_missing_data_root_fails_at_once_with_one_line(tmp_path):
    """``fit`` on the MPII paper config with no data: exit 2 and one stderr line naming the path."""
    missing = tmp_path / "nope"
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "CONVLAB_", "MASTER_", "LOCAL_RANK", "RANK", "WORLD_SIZE"))}
    environment.update({"WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"})
    result = subprocess.run(
        [sys.executable, "-m", "experiments", "fit", "--config", str(CONFIGS / "hourglass_mpii.yaml"),
         "--data.init_args.source.init_args.root", str(missing), "--run.root", str(tmp_path / "runs")],
        cwd=REPO, env=environment, capture_output=True, text=True, timeout=300,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and str(missing) in lines[0], result.stderr[-3000:]
    assert not (tmp_path / "runs").exists()


def test_coco_validation_reports_oks_ap_through_the_pose_module(tmp_path):
    # The pose module scores COCO sources with pycocotools' OKS AP besides PCK; a network that
    # outputs the ground-truth heatmaps must score AP = 1 (up to heatmap quantisation).
    import lightning.pytorch as pl
    from torch import nn

    from lightning_modules.pose import PoseEstimationModule

    root = coco_folder(tmp_path / "coco")
    # People whose joints all lie inside their boxes (so inside their crops).
    content = coco_file(root / "annotations" / "person_keypoints_val2017.json")
    content["annotations"] = [
        {"id": 20 + i, "image_id": i, "category_id": 1, "bbox": [20.0, 8.0, 40.0, 64.0], "area": 2000.0, "iscrowd": 0,
         "num_keypoints": 17, "keypoints": [v for k in range(17) for v in (25.0 + 2 * k + i, 12.0 + 3 * k, 2)]}
        for i in (1, 2)
    ]
    write_json(root / "annotations" / "person_keypoints_val2017.json", content)
    datamodule = PoseDataModule(COCOKeypoints(str(root)), input_size=(64, 48), output_size=(64, 48), sigma=1.0, batch_size=2, num_workers=0)

    class Oracle(nn.Module):
        """Returns the batch's target heatmaps (set by the test) as its only stack."""

        num_stacks, num_joints = 1, 17

        def __init__(self) -> None:
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))
            self.heatmaps = None

        def forward(self, images):
            return [self.heatmaps + 0 * self.dummy]

    class FeedTargets(pl.Callback):
        def on_validation_batch_start(self, trainer, module, batch, batch_idx, dataloader_idx=0):
            module.network.heatmaps = batch[1]["heatmaps"]

    module = PoseEstimationModule(Oracle(), flip_test=False, log_images=0, data_facts=datamodule.facts)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[FeedTargets()])
    trainer.validate(module, datamodule=datamodule)
    metrics = trainer.callback_metrics
    assert metrics["val/coco_ap"].item() == pytest.approx(1.0)
    assert metrics["val/pck"].item() == pytest.approx(1.0)
