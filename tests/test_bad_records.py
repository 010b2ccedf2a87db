"""The bad-record policy, reader by reader: every kind of bad record each reader checks, under
``on_bad_record: error`` (one line naming the file, the record and the reason) and ``skip`` (the
record dropped, counted by kind, listed in the report, the other records kept); and through the
CLI, with DataLoader workers: the same one-line error and exit code, and ``data_report.json``."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml

from core.errors import AnnotationFormatError, BadRecordError
from datamodules.formats import FLIC, LSP, MPII, CamVid, Cityscapes, COCOKeypoints, COCOSemantic, MaskFolder, MPIIRelease, VOCSegmentation
from datamodules.formats import COCODetection, CSVDetection, DSB2018, VOCDetection, YOLOText
from datamodules.formats.csv_boxes import CSVBoxes
from tests.detection_fixtures import (
    DSB_MASKS,
    block,
    coco_detection_folder,
    csv_folder,
    dsb_folder,
    voc_detection_folder,
    write_mask,
    yolo_folder,
)
from tests.pose_fixtures import (
    coco_folder,
    flic_coords,
    flic_folder,
    hrnet_mpii,
    lsp_folder,
    lsp_people,
    release_mat,
    write_head_boxes,
    write_image,
    write_json,
)
from tests.segmentation_fixtures import (
    camvid_folder,
    cityscapes_folder,
    coco_semantic_folder,
    mask_folder,
    voc_folder,
    write_grey_png,
    write_rgb,
)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------ the datasets
def _mpii(root: Path, mutate: Callable[[list[dict]], None] | None = None) -> Callable[[str], Any]:
    """HRNet-layout MPII whose train list is ``mutate``d (person 1 unless the case says)."""
    hrnet_mpii(root)
    path = root / "annot" / "train.json"
    people = json.loads(path.read_text())
    if mutate:
        mutate(people)
    path.write_text(json.dumps(people))  # json writes NaN and Infinity, as numpy-made files do
    return lambda policy: MPII(str(root), on_bad_record=policy)


def _bearpaw(root: Path, flag: float) -> Callable[[str], Any]:
    for name in ("a.jpg", "b.jpg"):
        write_image(root / "images" / name)
    people = []
    for i in range(3):
        joints = [[10.0 + 4 * k + i, 12.0 + 3 * k, 1.0] for k in range(16)]
        if i == 1:
            joints[4][2] = flag
        people.append({"isValidation": 0.0, "img_paths": "a.jpg", "objpos": [40.0, 30.0], "scale_provided": 0.4, "joint_self": joints})
    write_json(root / "mpii_annotations.json", people)
    return lambda policy: MPII(str(root), train_file="mpii_annotations.json", val_file=None, head_boxes_file=None, on_bad_record=policy)


def _lsp(root: Path, person: int, joint: int, column: int, value: float) -> Callable[[str], Any]:
    people = lsp_people()
    people[person, joint, column] = value
    lsp_folder(root, people)
    return lambda policy: LSP(str(root), on_bad_record=policy)


def _lsp_no_image(root: Path) -> Callable[[str], Any]:
    lsp_folder(root)
    (root / "images" / "im0002.jpg").unlink()
    return lambda policy: LSP(str(root), on_bad_record=policy)


def _flic(root: Path, broken: dict) -> Callable[[str], Any]:
    flic_folder(root, broken)
    return lambda policy: FLIC(str(root), on_bad_record=policy)


def _coco(root: Path, mutate: Callable[[dict], None]) -> Callable[[str], Any]:
    coco_folder(root)
    path = root / "annotations" / "person_keypoints_train2017.json"
    content = json.loads(path.read_text())
    mutate(content)
    path.write_text(json.dumps(content))
    return lambda policy: COCOKeypoints(str(root), on_bad_record=policy)


def _set_annotation(index: int, **fields: Any) -> Callable[[dict], None]:
    def mutate(content: dict) -> None:
        content["annotations"][index].update(fields)
    return mutate


def _coco_keypoint(index: int, joint: int, offset: int, value: float) -> Callable[[dict], None]:
    def mutate(content: dict) -> None:
        content["annotations"][index]["keypoints"][3 * joint + offset] = value
    return mutate


def _csv(root: Path, lines: list[str]) -> Callable[[str], Any]:
    """Three good images in train.csv (and one in val.csv), then ``lines`` appended to train.csv."""
    for name in ("a.png", "b.png", "c.png", "d.png"):
        write_image(root / "images" / name, 64, 48)
    good = ["path,x1,y1,x2,y2,label", "images/a.png,4,4,30,40,circle", "images/b.png,10,2,60,20,square", "images/c.png,0,0,64,48,circle"]
    (root / "train.csv").write_text("\n".join(good + lines) + "\n")
    (root / "val.csv").write_text("images/d.png,5,5,20,20,square\n")
    return lambda policy: CSVBoxes(str(root), class_names=["circle", "square"], on_bad_record=policy)


def _duplicate_csv(root: Path) -> Callable[[str], Any]:
    return _csv(root, ["images/d.png,1,1,10,10,circle", "images/d.png,20,20,30,30,square"])


def _voc(root: Path, lines: list[str] = (), remove: str | None = None) -> Callable[[str], Any]:
    """The VOC fixture (train: 2007_000032, 2007_000039) with ``lines`` appended to train.txt and
    the file ``remove`` (relative to the root) deleted."""
    voc_folder(root)
    with open(root / "ImageSets" / "Segmentation" / "train.txt", "a") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    if remove:
        (root / remove).unlink()
    return lambda policy: VOCSegmentation(str(root), on_bad_record=policy)


def _camvid(root: Path, train_list: list[str] | None = None, remove: str | None = None) -> Callable[[str], Any]:
    """SegNet's CamVid fixture; with ``train_list``, train is read from a list of these lines (the
    fixture's two images first)."""
    camvid_folder(root)
    if remove:
        (root / remove).unlink()
    if train_list is None:
        return lambda policy: CamVid(str(root), on_bad_record=policy)
    good = ["/SegNet/CamVid/train/0001TP_006690.png /SegNet/CamVid/trainannot/0001TP_006690.png",
            "train/0001TP_006720.png trainannot/0001TP_006720.png"]
    (root / "list.txt").write_text("\n".join(good + train_list) + "\n")
    return lambda policy: CamVid(str(root), train_list="list.txt", on_bad_record=policy)


def _cityscapes(root: Path, remove: str) -> Callable[[str], Any]:
    cityscapes_folder(root)
    (root / remove).unlink()
    return lambda policy: Cityscapes(str(root), on_bad_record=policy)


def _mask_folder(root: Path, image: str | None = None, mask: str | None = None) -> Callable[[str], Any]:
    """The ISBI-style fixture with one more train image and/or mask file."""
    mask_folder(root)
    if image:
        write_rgb(root / "train" / "images" / image)
    if mask:
        write_grey_png(root / "train" / "masks" / mask, np.zeros((10, 12)))
    return lambda policy: MaskFolder(str(root), class_names=["membrane", "cell"], mask_values={0: 0, 255: 1}, on_bad_record=policy)


def _coco_semantic(root: Path, mutate: Callable[[dict], None]) -> Callable[[str], Any]:
    """The COCO fixture's train file (images 1 and 2 kept) ``mutate``d."""
    coco_semantic_folder(root)
    path = root / "annotations" / "instances_train2017.json"
    content = json.loads(path.read_text())
    mutate(content)
    path.write_text(json.dumps(content))
    return lambda policy: COCOSemantic(str(root), on_bad_record=policy)


def _segmentation(index: int, value: Any) -> Callable[[dict], None]:
    def mutate(content: dict) -> None:
        content["annotations"][index]["segmentation"] = value
    return mutate


def _coco_det(root: Path, mutate: Callable[[dict], None]) -> Callable[[str], Any]:
    """The COCO detection fixture's train file ``mutate``d: images 1 (annotations 0-2: person with
    keypoints, crowd, airplane) and 2 (annotation 3), and 3 without annotations."""
    coco_detection_folder(root)
    path = root / "annotations" / "instances_train2017.json"
    content = json.loads(path.read_text())
    mutate(content)
    path.write_text(json.dumps(content))  # json writes NaN, as numpy-made files do
    return lambda policy: COCODetection(str(root), keypoints=True, on_bad_record=policy)


def _det_annotation(index: int, **fields: Any) -> Callable[[dict], None]:
    def mutate(content: dict) -> None:
        content["annotations"][index].update(fields)
    return mutate


def _voc_det(root: Path, replace: tuple[str, str] | None = None, lines: list[str] = (), remove: str | None = None) -> Callable[[str], Any]:
    """The VOC detection fixture with ``replace`` (old, new) applied to 000007.xml, ``lines``
    appended to the trainval list and ``remove`` (relative to VOC2007) deleted."""
    voc_detection_folder(root)
    year = root / "VOC2007"
    if replace:
        xml = year / "Annotations" / "000007.xml"
        text = xml.read_text()
        assert replace[0] in text
        xml.write_text(text.replace(*replace))
    with open(year / "ImageSets" / "Main" / "trainval.txt", "a") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
    if remove:
        (year / remove).unlink()
    return lambda policy: VOCDetection(str(root), on_bad_record=policy)


def _yolo(root: Path, line: str | None = None, image: tuple[str, bytes | None] | None = None) -> Callable[[str], Any]:
    """The YOLO fixture with ``line`` appended to a.txt, and ``image`` (name, bytes; ``None``: a
    good image) added to images/train."""
    yolo_folder(root)
    if line is not None:
        with open(root / "labels" / "train" / "a.txt", "a") as handle:
            handle.write(line + "\n")
    if image is not None:
        name, data = image
        if data is None:
            write_rgb(root / "images" / "train" / name, 24, 32)
        else:
            (root / "images" / "train" / name).write_bytes(data)
    return lambda policy: YOLOText(str(root), on_bad_record=policy)


def _csv_det(root: Path, lines: list[str]) -> Callable[[str], Any]:
    """The CSV detection fixture (train: a.png with two objects, b.png empty, c.png) with
    ``lines`` appended to train.csv."""
    csv_folder(root, lines)
    return lambda policy: CSVDetection(str(root), class_names=["cat", "dog"], on_bad_record=policy)


def _dsb(root: Path, mutate: Callable[[Path], None] | None = None, lists: bool = False, extra_line: str | None = None) -> Callable[[str], Any]:
    """The DSB 2018 fixture (4 images) with ``mutate(image folder of the second id)``; with
    ``lists``, train lists the first three ids (and ``extra_line``), val the fourth."""
    dsb_folder(root)
    ids = sorted(DSB_MASKS)
    if mutate:
        mutate(root / "stage1_train" / ids[1])
    if not lists:
        return lambda policy: DSB2018(str(root), val_fraction=0.25, on_bad_record=policy)
    (root / "train.txt").write_text("".join(f"{i}\n" for i in [*ids[:3], *([extra_line] if extra_line else [])]))
    (root / "val.txt").write_text(f"{ids[3]}\n")
    return lambda policy: DSB2018(str(root), train_list="train.txt", val_list="val.txt", on_bad_record=policy)


def _remove_image(folder: Path) -> None:
    (folder / "images" / f"{folder.name}.png").unlink()


# (case id, dataset builder, the kind it must be refused as, how many records the skip drops)
CASES: list[tuple[str, Callable[[Path], Callable[[str], Any]], str, int]] = [
    # MPII (HRNet JSON): a NaN among an unannotated joint's numbers (person 0, joint 0 has
    # joints_vis 0) reaches the loss as surely as an annotated one's.
    ("mpii-nan-unannotated-joint", lambda r: _mpii(r, lambda p: p[0]["joints"][0].__setitem__(0, math.nan)), "non_finite", 1),
    ("mpii-inf-center", lambda r: _mpii(r, lambda p: p[1]["center"].__setitem__(1, math.inf)), "non_finite", 1),
    ("mpii-visibility-flag", lambda r: _mpii(r, lambda p: p[1]["joints_vis"].__setitem__(3, 2)), "visibility_flag", 1),
    ("mpii-keypoint-count", lambda r: _mpii(r, lambda p: p[1]["joints"].pop()), "keypoint_count", 1),
    ("mpii-zero-scale", lambda r: _mpii(r, lambda p: p[1].__setitem__("scale", 0.0)), "empty_box", 1),
    ("mpii-missing-field", lambda r: _mpii(r, lambda p: p[1].pop("center")), "missing_field", 1),
    ("mpii-image-missing", lambda r: _mpii(r, lambda p: p[1].__setitem__("image", "zz.jpg")), "image_missing", 1),
    ("mpii-path-outside-root", lambda r: _mpii(r, lambda p: p[1].__setitem__("image", "../../outside.jpg")), "path_outside_root", 1),
    ("mpii-absolute-path", lambda r: _mpii(r, lambda p: p[1].__setitem__("image", "/etc/passwd")), "path_outside_root", 1),
    # MPII (bearpaw JSON)
    ("bearpaw-visibility-flag", lambda r: _bearpaw(r, 3.0), "visibility_flag", 1),
    ("bearpaw-nan-flag", lambda r: _bearpaw(r, math.nan), "non_finite", 1),
    # MPII RELEASE .mat: a joint id outside 0..15
    ("release-joint-id", lambda r: (release_mat(r, point_id=20), lambda policy: MPIIRelease(str(r), on_bad_record=policy))[1], "keypoint_count", 1),
    # LSP: flags are 0 or 1; only NaN marks a joint without a position; a person needs a joint
    ("lsp-inf-coordinate", lambda r: _lsp(r, 3, 2, 0, math.inf), "non_finite", 1),
    ("lsp-visibility-flag", lambda r: _lsp(r, 3, 2, 2, 2.0), "visibility_flag", 1),
    ("lsp-image-missing", _lsp_no_image, "image_missing", 1),
    # FLIC
    ("flic-inf-coordinate", lambda r: _flic(r, {"coords": _flic_coords(inf_at=0)}), "non_finite", 1),
    ("flic-image-missing", lambda r: _flic(r, {"filepath": "gone.jpg"}), "image_missing", 1),
    ("flic-path-outside-root", lambda r: _flic(r, {"filepath": "../../x.jpg"}), "path_outside_root", 1),
    # COCO keypoints (annotation 0 is a kept person; 3 is the other)
    ("coco-unknown-category", lambda r: _coco(r, _set_annotation(3, category_id=7)), "unknown_category", 1),
    ("coco-unknown-image", lambda r: _coco(r, _set_annotation(3, image_id=99)), "unknown_image", 1),
    ("coco-visibility-flag", lambda r: _coco(r, _coco_keypoint(3, 4, 2, 3)), "visibility_flag", 1),
    ("coco-nan-unlabelled-joint", lambda r: _coco(r, _coco_keypoint(0, 3, 0, math.nan)), "non_finite", 1),
    ("coco-keypoint-count", lambda r: _coco(r, _set_annotation(3, keypoints=[1.0] * 50)), "keypoint_count", 1),
    ("coco-box-outside-image", lambda r: _coco(r, _set_annotation(3, bbox=[50.0, 5.0, 80.0, 10.0])), "box_outside_image", 1),
    ("coco-empty-box", lambda r: _coco(r, _set_annotation(3, bbox=[5.0, 5.0, 0.0, 10.0])), "empty_box", 1),
    ("coco-duplicate-id", lambda r: _coco(r, _set_annotation(3, id=10)), "duplicate", 1),
    ("coco-image-missing", lambda r: _coco(r, lambda c: c["images"][1].__setitem__("file_name", "gone.jpg")), "image_missing", 1),
    ("coco-path-outside-root", lambda r: _coco(r, lambda c: c["images"][1].__setitem__("file_name", "../../annotations/x.jpg")), "path_outside_root", 1),
    ("coco-duplicate-image", lambda r: _coco(r, lambda c: c["images"].append(dict(c["images"][1]))), "duplicate_image_id", 2),
    # CSV boxes (classification + localisation)
    ("csv-nan-coordinate", lambda r: _csv(r, ["images/d.png,nan,1,10,10,circle"]), "non_finite", 1),
    ("csv-text-coordinate", lambda r: _csv(r, ["images/d.png,one,1,10,10,circle"]), "wrong_type", 1),
    ("csv-empty-box", lambda r: _csv(r, ["images/d.png,10,1,10,10,circle"]), "empty_box", 1),
    ("csv-box-outside-image", lambda r: _csv(r, ["images/d.png,10,1,90,10,circle"]), "box_outside_image", 1),
    ("csv-unknown-category", lambda r: _csv(r, ["images/d.png,1,1,10,10,star"]), "unknown_category", 1),
    ("csv-missing-field", lambda r: _csv(r, ["images/d.png,1,1,10,10"]), "missing_field", 1),
    ("csv-image-missing", lambda r: _csv(r, ["images/zz.png,1,1,10,10,circle"]), "image_missing", 1),
    ("csv-path-outside-root", lambda r: _csv(r, ["../d.png,1,1,10,10,circle"]), "path_outside_root", 1),
    ("csv-no-object", lambda r: _csv(r, ["images/d.png,,,,,"]), "no_object", 1),
    ("csv-several-objects", _duplicate_csv, "several_objects", 1),
    # VOC segmentation: list lines
    ("voc-image-missing", lambda r: _voc(r, remove="JPEGImages/2007_000039.jpg"), "image_missing", 1),
    ("voc-label-missing", lambda r: _voc(r, remove="SegmentationClass/2007_000039.png"), "image_missing", 1),
    ("voc-duplicate", lambda r: _voc(r, ["2007_000032"]), "duplicate", 1),
    ("voc-path-outside-root", lambda r: _voc(r, ["../../2007_000032"]), "path_outside_root", 1),
    ("voc-three-fields", lambda r: _voc(r, ["2007_000063 a b"]), "wrong_type", 1),
    # CamVid: folders and SegNet's list file
    ("camvid-label-missing", lambda r: _camvid(r, remove="trainannot/0001TP_006720.png"), "image_missing", 1),
    ("camvid-image-missing", lambda r: _camvid(r, remove="train/0001TP_006720.png"), "image_missing", 1),
    ("camvid-list-image-missing", lambda r: _camvid(r, ["train/gone.png trainannot/0001TP_006690.png"]), "image_missing", 1),
    ("camvid-list-other-prefix", lambda r: _camvid(r, ["/data/CamVid/train/0001TP_006690.png /data/CamVid/trainannot/0001TP_006690.png"]), "path_outside_root", 1),
    ("camvid-list-one-path", lambda r: _camvid(r, ["train/0001TP_006690.png"]), "missing_field", 1),
    ("camvid-list-duplicate", lambda r: _camvid(r, ["train/0001TP_006690.png trainannot/0001TP_006690.png"]), "duplicate", 1),
    # Cityscapes
    ("cityscapes-label-missing", lambda r: _cityscapes(r, "gtFine/train/bremen/bremen_000001_000019_gtFine_labelIds.png"), "image_missing", 1),
    ("cityscapes-image-missing", lambda r: _cityscapes(r, "leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png"), "image_missing", 1),
    # Image / mask folders
    ("mask-folder-no-mask", lambda r: _mask_folder(r, image="slice_02.png"), "image_missing", 1),
    ("mask-folder-no-image", lambda r: _mask_folder(r, mask="slice_03.png"), "image_missing", 1),
    ("mask-folder-two-images", lambda r: _mask_folder(r, image="slice_00.png"), "duplicate", 1),
    # COCO semantic (train images 1 and 2; annotation 3 is image 2's dog)
    ("coco-sem-unknown-category", lambda r: _coco_semantic(r, lambda c: c["annotations"][3].__setitem__("category_id", 2)), "unknown_category", 1),
    ("coco-sem-unknown-image", lambda r: _coco_semantic(r, lambda c: c["annotations"].append({**c["annotations"][3], "id": 99, "image_id": 7})), "unknown_image", 1),
    ("coco-sem-two-point-polygon", lambda r: _coco_semantic(r, _segmentation(3, [[1, 1, 5, 5]])), "polygon_points", 1),
    ("coco-sem-no-polygon", lambda r: _coco_semantic(r, _segmentation(3, [])), "polygon_points", 1),
    ("coco-sem-odd-polygon", lambda r: _coco_semantic(r, _segmentation(3, [[1, 1, 5, 5, 3, 7, 2]])), "wrong_type", 1),
    ("coco-sem-nan-polygon", lambda r: _coco_semantic(r, _segmentation(3, [[1, 1, 5, math.nan, 3, 7]])), "non_finite", 1),
    ("coco-sem-rle-size", lambda r: _coco_semantic(r, _segmentation(3, {"size": [5, 5], "counts": [25]})), "size_mismatch", 1),
    ("coco-sem-rle-counts", lambda r: _coco_semantic(r, _segmentation(3, {"size": [10, 12], "counts": [100]})), "wrong_type", 1),
    ("coco-sem-no-segmentation", lambda r: _coco_semantic(r, lambda c: c["annotations"][3].pop("segmentation")), "missing_field", 1),
    ("coco-sem-iscrowd", lambda r: _coco_semantic(r, lambda c: c["annotations"][3].__setitem__("iscrowd", 2)), "wrong_type", 1),
    ("coco-sem-duplicate-annotation", lambda r: _coco_semantic(r, lambda c: c["annotations"][3].__setitem__("id", 10)), "duplicate", 1),
    # an image id twice: both entries left out (their annotations cannot be told apart)
    ("coco-sem-duplicate-image", lambda r: _coco_semantic(r, lambda c: c["images"].append(dict(c["images"][1]))), "duplicate_image_id", 2),
    ("coco-sem-image-missing", lambda r: _coco_semantic(r, lambda c: c["images"][1].__setitem__("file_name", "gone.jpg")), "image_missing", 1),
    ("coco-sem-path-outside-root", lambda r: _coco_semantic(r, lambda c: c["images"][1].__setitem__("file_name", "../val2017/000000000002.jpg")), "path_outside_root", 1),
    ("coco-sem-no-width", lambda r: _coco_semantic(r, lambda c: c["images"][1].pop("width")), "missing_field", 1),
    # COCO detection: a bad annotation drops its whole image (an object dropped alone would be
    # trained on as background); annotation 3 is image 2's airplane.
    ("coco-det-box-outside-image", lambda r: _coco_det(r, _det_annotation(2, bbox=[28, 2, 6, 6])), "box_outside_image", 1),
    ("coco-det-zero-size", lambda r: _coco_det(r, _det_annotation(3, bbox=[4, 4, 0, 6])), "empty_box", 1),
    ("coco-det-negative-size", lambda r: _coco_det(r, _det_annotation(3, bbox=[4, 4, 5, -2])), "empty_box", 1),
    ("coco-det-nan-box", lambda r: _coco_det(r, _det_annotation(3, bbox=[4, math.nan, 5, 2])), "non_finite", 1),
    ("coco-det-unknown-category", lambda r: _coco_det(r, _det_annotation(3, category_id=2)), "unknown_category", 1),
    ("coco-det-unknown-image", lambda r: _coco_det(r, lambda c: c["annotations"].append({**c["annotations"][3], "id": 999, "image_id": 7})),
     "unknown_image", 1),
    ("coco-det-keypoint-count", lambda r: _coco_det(r, _det_annotation(0, keypoints=[1.0] * 6)), "keypoint_count", 1),
    ("coco-det-visibility-flag", lambda r: _coco_det(r, _det_annotation(0, keypoints=[4, 5, 2, 6, 7, 3, 0, 0, 0])), "visibility_flag", 1),
    ("coco-det-two-point-polygon", lambda r: _coco_det(r, _det_annotation(3, segmentation=[[0, 0, 5, 5]])), "polygon_points", 1),
    ("coco-det-rle-size", lambda r: _coco_det(r, _det_annotation(3, segmentation={"size": [5, 5], "counts": [25]})), "size_mismatch", 1),
    ("coco-det-no-segmentation", lambda r: _coco_det(r, lambda c: c["annotations"][3].pop("segmentation")), "missing_field", 1),
    ("coco-det-duplicate-annotation", lambda r: _coco_det(r, _det_annotation(3, id=101)), "duplicate", 1),
    ("coco-det-iscrowd", lambda r: _coco_det(r, _det_annotation(3, iscrowd=2)), "wrong_type", 1),
    ("coco-det-image-missing", lambda r: _coco_det(r, lambda c: c["images"][1].__setitem__("file_name", "gone.jpg")), "image_missing", 1),
    ("coco-det-path-outside-root", lambda r: _coco_det(r, lambda c: c["images"][1].__setitem__("file_name", "../val2017/000000000002.jpg")),
     "path_outside_root", 1),
    ("coco-det-absolute-path", lambda r: _coco_det(r, lambda c: c["images"][1].__setitem__("file_name", str(r / "train2017" / "000000000002.jpg"))),
     "path_outside_root", 1),
    ("coco-det-duplicate-image", lambda r: _coco_det(r, lambda c: c["images"][2].__setitem__("id", 1)), "duplicate_image_id", 2),
    # VOC detection: objects of 000007.xml, and trainval list lines
    ("voc-det-box-outside-image", lambda r: _voc_det(r, ("<xmax>25</xmax>", "<xmax>40</xmax>")), "box_outside_image", 1),
    ("voc-det-zero-size", lambda r: _voc_det(r, ("<xmax>25</xmax>", "<xmax>4</xmax>")), "empty_box", 1),
    ("voc-det-negative-size", lambda r: _voc_det(r, ("<ymax>20</ymax>", "<ymax>2</ymax>")), "empty_box", 1),
    ("voc-det-unknown-class", lambda r: _voc_det(r, ("<name>car</name>", "<name>dragon</name>")), "unknown_category", 1),
    ("voc-det-text-coordinate", lambda r: _voc_det(r, ("<xmin>5</xmin>", "<xmin>five</xmin>")), "wrong_type", 1),
    ("voc-det-no-bndbox", lambda r: _voc_det(r, ("<bndbox><xmin>5</xmin><ymin>5</ymin><xmax>25</xmax><ymax>20</ymax></bndbox>", "")),
     "missing_field", 1),
    ("voc-det-difficult-flag", lambda r: _voc_det(r, ("<difficult>0</difficult>", "<difficult>2</difficult>")), "wrong_type", 1),
    ("voc-det-broken-xml", lambda r: _voc_det(r, ("</annotation>", "")), "wrong_type", 1),
    ("voc-det-image-missing", lambda r: _voc_det(r, remove="JPEGImages/000007.jpg"), "image_missing", 1),
    ("voc-det-xml-missing", lambda r: _voc_det(r, lines=["000011"]), "image_missing", 1),
    ("voc-det-duplicate", lambda r: _voc_det(r, lines=["000005"]), "duplicate", 1),
    ("voc-det-path-outside-root", lambda r: _voc_det(r, lines=["../../VOC2012/Annotations/2008_000001"]), "path_outside_root", 1),
    # YOLO: lines of a.txt, images of images/train
    ("yolo-unknown-class", lambda r: _yolo(r, "3 0.5 0.5 0.1 0.1"), "unknown_category", 1),
    ("yolo-negative-class", lambda r: _yolo(r, "-1 0.5 0.5 0.1 0.1"), "unknown_category", 1),
    ("yolo-fractional-class", lambda r: _yolo(r, "1.5 0.5 0.5 0.1 0.1"), "wrong_type", 1),
    ("yolo-box-outside-image", lambda r: _yolo(r, "0 1.2 0.5 0.2 0.2"), "box_outside_image", 1),
    ("yolo-zero-size", lambda r: _yolo(r, "0 0.5 0.5 0 0.2"), "empty_box", 1),
    ("yolo-negative-size", lambda r: _yolo(r, "0 0.5 0.5 0.2 -0.2"), "empty_box", 1),
    ("yolo-nan", lambda r: _yolo(r, "0 nan 0.5 0.2 0.2"), "non_finite", 1),
    ("yolo-four-fields", lambda r: _yolo(r, "0 0.5 0.5 0.2"), "missing_field", 1),
    ("yolo-six-fields", lambda r: _yolo(r, "0 0.5 0.5 0.2 0.2 0.1"), "wrong_type", 1),
    ("yolo-segment-outside-image", lambda r: _yolo(r, "0 0.1 0.1 1.5 0.1 0.5 0.5"), "box_outside_image", 1),
    ("yolo-unreadable-image", lambda r: _yolo(r, image=("z.jpg", b"not a jpeg" * 10)), "image_missing", 1),
    ("yolo-two-images-one-label", lambda r: _yolo(r, image=("a.png", None)), "duplicate", 1),
    # keras-retinanet CSV (train: a.png with two objects, b.png, c.png; lines add to an image)
    ("csv-det-box-outside-image", lambda r: _csv_det(r, ["images/a.png,10,1,40,10,cat"]), "box_outside_image", 1),
    ("csv-det-zero-size", lambda r: _csv_det(r, ["images/c.png,10,1,10,10,cat"]), "empty_box", 1),
    ("csv-det-negative-size", lambda r: _csv_det(r, ["images/d.png,10,10,20,5,cat"]), "empty_box", 1),
    ("csv-det-nan", lambda r: _csv_det(r, ["images/d.png,nan,1,10,10,cat"]), "non_finite", 1),
    ("csv-det-unknown-category", lambda r: _csv_det(r, ["images/a.png,1,1,10,10,star"]), "unknown_category", 1),
    ("csv-det-missing-field", lambda r: _csv_det(r, ["images/d.png,1,1,10,10"]), "missing_field", 1),
    ("csv-det-image-missing", lambda r: _csv_det(r, ["images/zz.png,1,1,10,10,cat"]), "image_missing", 1),
    ("csv-det-path-outside-root", lambda r: _csv_det(r, ["../csv/images/d.png,1,1,10,10,cat"]), "path_outside_root", 1),
    # DSB 2018 (the second id's folder changed)
    ("dsb-empty-mask", lambda r: _dsb(r, lambda f: write_mask(f / "masks" / "mask09.png", block(0, 0, 0, 0))), "empty_box", 1),
    ("dsb-mask-size", lambda r: _dsb(r, lambda f: write_mask(f / "masks" / "mask09.png", np.ones((5, 5), dtype=bool))), "size_mismatch", 1),
    ("dsb-unreadable-mask", lambda r: _dsb(r, lambda f: (f / "masks" / "mask09.png").write_bytes(b"not a png")), "image_missing", 1),
    ("dsb-image-missing", lambda r: _dsb(r, _remove_image), "image_missing", 1),
    ("dsb-unreadable-image", lambda r: _dsb(r, lambda f: (f / "images" / f"{f.name}.png").write_bytes(b"not a png")), "image_missing", 1),
    ("dsb-list-path-outside-root", lambda r: _dsb(r, lists=True, extra_line="../../outside"), "path_outside_root", 1),
    ("dsb-list-duplicate", lambda r: _dsb(r, lists=True, extra_line=sorted(DSB_MASKS)[0]), "duplicate", 1),
]


def _flic_coords(inf_at: int) -> np.ndarray:
    coords = flic_coords(1)
    coords[0, inf_at] = np.inf
    return coords


def _total(source: Any) -> int:
    return sum(len(records) for records in source.splits.values())


@pytest.mark.parametrize("name, build, kind, dropped", CASES, ids=[c[0] for c in CASES])
def test_bad_record_is_an_error_or_a_counted_skip(tmp_path, name, build, kind, dropped):
    reader = build(tmp_path / "data")
    with pytest.raises(BadRecordError) as error:
        reader("error")
    message = str(error.value)
    assert error.value.kind == kind, message
    assert "\n" not in message and "bad record in " in message and str(tmp_path) in message, message
    assert "on_bad_record: skip" in message  # the way out is named

    source = reader("skip")
    report = source.data_report()
    assert report["skipped_by_kind"] == {kind: dropped}, report
    assert report["skipped"] == dropped and report["skipped_records"][0]["kind"] == kind
    assert report["on_bad_record"] == "skip"


@pytest.mark.parametrize("name, build", [
    ("mpii", lambda r: _mpii(r)), ("lsp", lambda r: _lsp(r, 0, 0, 0, 11.0)), ("flic", lambda r: _flic(r, {})),
    ("coco", lambda r: _coco(r, lambda c: None)), ("csv", lambda r: _csv(r, [])),
    ("voc", lambda r: _voc(r)), ("camvid", lambda r: _camvid(r)), ("camvid-list", lambda r: _camvid(r, [])),
    ("cityscapes", lambda r: (cityscapes_folder(r), lambda policy: Cityscapes(str(r), on_bad_record=policy))[1]),
    ("mask-folder", lambda r: _mask_folder(r)), ("coco-semantic", lambda r: _coco_semantic(r, lambda c: None)),
    ("coco-detection", lambda r: _coco_det(r, lambda c: None)), ("voc-detection", lambda r: _voc_det(r)),
    ("yolo", lambda r: _yolo(r)), ("csv-detection", lambda r: _csv_det(r, [])), ("dsb2018", lambda r: _dsb(r)),
])
def test_skip_keeps_every_good_record(tmp_path, name, build):
    """One bad record less, nothing else: the same readers on their good fixtures read the same
    records under both policies, and skip nothing."""
    reader = build(tmp_path / "data")
    strict, lenient = reader("error"), reader("skip")
    assert _total(strict) == _total(lenient) > 0
    assert lenient.data_report()["skipped"] == 0


def test_skipped_record_leaves_the_others(tmp_path):
    good = _total(_mpii(tmp_path / "good")("error"))
    source = _mpii(tmp_path / "bad", lambda p: p[1]["joints_vis"].__setitem__(3, 2))("skip")
    assert _total(source) == good - 1
    assert [r.image_id for r in source.records("train")] == ["a.jpg", "c.jpg"]


def test_filtered_records_are_counted_not_dropped_silently(tmp_path):
    # The fixture's COCO file has a crowd annotation and a person without keypoints.
    report = COCOKeypoints(str(coco_folder(tmp_path / "coco"))).data_report()
    assert report["filtered"] == {"few_keypoints": 2, "iscrowd": 2}  # in train and in val
    assert report["skipped"] == 0


def test_an_empty_split_is_an_error_under_either_policy(tmp_path):
    root = hrnet_mpii(tmp_path / "mpii")
    (root / "annot" / "train.json").write_text("[]")
    for policy in ("error", "skip"):
        with pytest.raises(BadRecordError, match="no usable record for the train split .the annotation list is empty"):
            MPII(str(root), on_bad_record=policy)
    coco = coco_folder(tmp_path / "coco")
    path = coco / "annotations" / "person_keypoints_val2017.json"
    content = json.loads(path.read_text())
    content["annotations"] = []
    path.write_text(json.dumps(content))
    with pytest.raises(BadRecordError, match="no usable record for the val split .the annotation list is empty"):
        COCOKeypoints(str(coco))
    del content["annotations"]
    path.write_text(json.dumps(content))
    with pytest.raises(AnnotationFormatError, match="no 'annotations' list"):
        COCOKeypoints(str(coco))


def test_head_box_with_nan_is_a_bad_val_record(tmp_path):
    root = hrnet_mpii(tmp_path / "mpii")
    valid = json.loads((root / "annot" / "valid.json").read_text())
    boxes = np.zeros((2, 2, 2))
    boxes[:, :, 0] = [[11.0, 21.0], [41.0, 61.0]]
    boxes[:, :, 1] = [[math.nan, 21.0], [42.0, 61.0]]
    write_head_boxes(root / "annot" / "gt_valid.mat", valid, headboxes_src=boxes)
    with pytest.raises(BadRecordError) as error:
        MPII(str(root))
    assert error.value.kind == "non_finite" and "gt_valid.mat" in str(error.value)
    source = MPII(str(root), on_bad_record="skip")
    assert len(source.records("val")) == 1


# ---------------------------------------------------------------------- through the real CLI
def _pose_config(tmp_path: Path, root: Path, policy: str, workers: int) -> Path:
    config = yaml.safe_load((REPO / "tests" / "configs" / "pose_tiny.yaml").read_text())
    config["data"]["init_args"]["source"] = {"class_path": "datamodules.formats.MPII",
                                            "init_args": {"root": str(root), "on_bad_record": policy}}
    config["data"]["init_args"]["num_workers"] = workers
    # One image a batch: no incomplete batch is dropped, so one epoch reads every training image,
    # whatever the seed's order.
    config["data"]["init_args"]["batch_size"] = 1
    config["trainer"]["max_epochs"] = 1
    config["run"] = {"root": str(tmp_path / "runs"), "wandb": "disabled"}
    path = tmp_path / f"mpii_{policy}_{workers}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _fit(config: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments", "fit", "--config", str(config), *extra],
                          cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_cli_bad_record_error_and_skip_with_four_workers(tmp_path):
    root = tmp_path / "mpii"
    _mpii(root, lambda p: p[1]["joints"][0].__setitem__(1, math.nan))
    result = _fit(_pose_config(tmp_path, root, "error", 4))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-2000:]
    assert lines == [f"convlab: bad record in {root / 'annot' / 'train.json'}: record 1 (image 'b.jpg'): field 'joints' holds a non-finite number"
                     " (on_bad_record: skip drops such records)"], lines
    result = _fit(_pose_config(tmp_path, root, "skip", 4), "--run.name", "skip")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "convlab data: MPII: skipped 1 bad record(s) (1 non_finite)" in result.stderr
    report = json.loads((tmp_path / "runs" / "skip" / "data_report.json").read_text())
    (source,) = report["sources"]
    assert source["skipped_by_kind"] == {"non_finite": 1} and source["skipped_records"][0]["record"] == "record 1 (image 'b.jpg')"


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 4])
def test_cli_image_error_in_a_worker_is_one_line(tmp_path, workers):
    root = tmp_path / "mpii"
    _mpii(root)
    (root / "images" / "b.jpg").write_bytes(b"not a jpeg" * 10)  # found at parse time, unreadable at load time
    result = _fit(_pose_config(tmp_path, root, "error", workers))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    # Lightning's start-up lines come first; the error is the last line, with no worker traceback.
    assert lines[-1].startswith(f"convlab: cannot read image {root / 'images' / 'b.jpg'}"), lines
    assert "Traceback" not in result.stderr and "DataLoader worker" not in result.stderr, result.stderr[-3000:]
