"""The readers of an annotation tool's and a competition's formats, on fixtures written here: CVAT
for images 1.1 XML (boxes, polygons, the shapes not read) for detection and segmentation, and
SIIM-ACR pneumothorax (DICOM images, run-length masks in a CSV) for binary segmentation; each
under the bad-record policy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import AnnotationFormatError, BadRecordError
from datamodules.detection import DetectionDataModule, DetectionDataset
from datamodules.formats.cvat_xml import CVATDetection, CVATSegmentation
from tests.segmentation_fixtures import write_rgb

W, H = 40, 30


# ---------------------------------------------------------------------------------------------- CVAT
def cvat_xml(images: list[str], labels: tuple[str, ...] = ("car", "road")) -> str:
    meta = "".join(f"<label><name>{name}</name><color>#ff0000</color><attributes/></label>" for name in labels)
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task><id>1</id><name>t</name>'
            f"<labels>{meta}</labels></task></meta>{''.join(images)}</annotations>")


def cvat_image(index: int, name: str, shapes: str, width: int = W, height: int = H) -> str:
    return f'<image id="{index}" name="{name}" width="{width}" height="{height}">{shapes}</image>'


BOX = '<box label="car" occluded="0" source="manual" xtl="2.5" ytl="3" xbr="12" ybr="10.5" z_order="0"></box>'
# The road: the bottom half; a car polygon over it (z_order 1), a triangle.
ROAD = '<polygon label="road" occluded="0" source="manual" points="0,15;40,15;40,30;0,30" z_order="0"></polygon>'
CAR = '<polygon label="car" occluded="1" source="manual" points="20,10;30,10;30,20;20,20" z_order="1"></polygon>'
POINTS = '<points label="car" occluded="0" source="manual" points="5,5;6,6" z_order="0"></points>'


def cvat_folder(root: Path, train: list[str] | None = None, val: list[str] | None = None) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    train = train if train is not None else [cvat_image(0, "a.jpg", BOX + POINTS), cvat_image(1, "sub/b.jpg", CAR + ROAD)]
    val = val if val is not None else [cvat_image(0, "c.jpg", ROAD + CAR)]
    (root / "annotations" / "train.xml").write_text(cvat_xml(train))
    (root / "annotations" / "val.xml").write_text(cvat_xml(val))
    for seed, name in enumerate(("a.jpg", "sub/b.jpg", "c.jpg")):
        write_rgb(root / "images" / name, H, W, seed=seed)
    return root


def test_cvat_detection_reads_boxes_and_polygons_and_counts_the_points(tmp_path):
    source = CVATDetection(str(cvat_folder(tmp_path / "cvat")))
    assert source.class_names == ("car", "road")
    a, b = source.records("train")
    assert (a.image_id, b.image_id) == ("a.jpg", "sub/b.jpg")
    np.testing.assert_allclose(a.boxes, [[2.5, 3, 12, 10.5]])
    np.testing.assert_allclose(b.boxes, [[20, 10, 30, 20], [0, 15, 40, 30]])
    assert a.labels.tolist() == [1] and b.labels.tolist() == [1, 2] and b.extra["occluded"] == [True, False]
    # A box among the polygons: polygons give boxes only, and the report says so.
    assert not source.has_masks and "boxes and polygons mixed" in source.data_report()["masks"]
    report = source.data_report()
    assert report["filtered"] == {"shape_not_read": 1} and "not read" in report["filtered_rules"]["shape_not_read"]
    assert [r.image_id for r in source.records("test")] == ["c.jpg"]
    module = DetectionDataModule(source, batch_size=1, num_workers=0)
    assert module.facts.class_names == ("car", "road")


def test_cvat_polygons_become_instance_masks_when_every_object_is_one(tmp_path):
    root = cvat_folder(tmp_path / "cvat", train=[cvat_image(0, "sub/b.jpg", CAR + ROAD)])
    source = CVATDetection(str(root))
    assert source.has_masks
    image, target = DetectionDataset(source, source.records("train"))[0]
    assert target["masks"].shape == (2, H, W)
    assert target["masks"][0].sum() == 100 and target["masks"][1].sum() == 15 * W  # 10 x 10 car, the bottom half


def test_cvat_segmentation_paints_shapes_in_z_order_over_background(tmp_path):
    source = CVATSegmentation(str(cvat_folder(tmp_path / "cvat")))
    assert source.class_names == ("background", "car", "road")
    _, labels = source.load(source.records("train")[1])  # the road (z 0) listed after the car (z 1): the car stays on top
    labels = labels.numpy()
    assert (labels[10:20, 20:30] == 1).all() and int((labels == 1).sum()) == 100
    assert (labels[15:, :20] == 2).all() and (labels[20:, 30:] == 2).all() and (labels[:10] == 0).all()
    _, box_labels = source.load(source.records("train")[0])
    assert int((box_labels.numpy() == 1).sum()) > 0 and set(np.unique(box_labels.numpy())) == {0, 1}


@pytest.mark.parametrize(("shape", "kind"), [
    ('<box label="bus" xtl="1" ytl="1" xbr="5" ybr="5"/>', "unknown_category"),
    ('<box label="car" xtl="1" ytl="1" xbr="50" ybr="5"/>', "box_outside_image"),
    ('<box label="car" xtl="5" ytl="1" xbr="5" ybr="5"/>', "empty_box"),
    ('<box label="car" xtl="x" ytl="1" xbr="5" ybr="5"/>', "wrong_type"),
    ('<polygon label="car" points="1,1;5,5"/>', "polygon_points"),
    ('<polygon label="car" points="1,1;5;5,9"/>', "wrong_type"),
])
def test_a_bad_cvat_shape_is_a_bad_record_of_its_image(tmp_path, shape, kind):
    root = cvat_folder(tmp_path / "cvat", train=[cvat_image(0, "a.jpg", shape), cvat_image(1, "c.jpg", BOX)])
    with pytest.raises(BadRecordError) as error:
        CVATDetection(str(root))
    assert error.value.kind == kind and str(root / "annotations/train.xml") in str(error.value) and "image 0 ('a.jpg')" in str(error.value)
    source = CVATDetection(str(root), on_bad_record="skip")
    assert [r.image_id for r in source.records("train")] == ["c.jpg"]
    assert source.data_report()["skipped_by_kind"] == {kind: 1}


def test_cvat_images_missing_outside_or_twice_are_bad_records(tmp_path):
    root = cvat_folder(tmp_path / "cvat", train=[cvat_image(0, "a.jpg", BOX), cvat_image(1, "nothere.jpg", BOX),
                                                 cvat_image(2, "../x.jpg", BOX), cvat_image(3, "a.jpg", BOX)])
    source = CVATDetection(str(root), on_bad_record="skip")
    assert [r.image_id for r in source.records("train")] == ["a.jpg"]
    assert source.data_report()["skipped_by_kind"] == {"duplicate": 1, "image_missing": 1, "path_outside_root": 1}


def test_a_file_that_is_not_cvat_xml_is_named(tmp_path):
    root = cvat_folder(tmp_path / "cvat")
    (root / "annotations" / "val.xml").write_text("<annotation><object/></annotation>")
    with pytest.raises(AnnotationFormatError, match=r"val\.xml: the root element is <annotation>"):
        CVATDetection(str(root))
    (root / "annotations" / "val.xml").write_text("<annotations><image")
    with pytest.raises(AnnotationFormatError, match="not XML"):
        CVATSegmentation(str(root))
