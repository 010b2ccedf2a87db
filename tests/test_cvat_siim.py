"""The readers of an annotation tool's and a competition's formats, on fixtures written here: CVAT
for images 1.1 XML (boxes, polygons, the shapes not read) for detection and segmentation, and
SIIM-ACR pneumothorax (DICOM images, run-length masks in a CSV) for binary segmentation; each
under the bad-record policy."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import AnnotationFormatError, BadRecordError, ImageReadError
from datamodules.detection import DetectionDataModule, DetectionDataset
from datamodules.formats.cvat_xml import CVATDetection, CVATSegmentation
from datamodules.formats.siim_pneumothorax import decode_siim_rle, encode_siim_rle
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


def skeleton_xml(images: list[str]) -> str:
    """A project whose <meta> has a class ``car``, a skeleton ``person`` and its three points."""
    meta = ("<label><name>car</name><type>rectangle</type></label>"
            "<label><name>person</name><type>skeleton</type></label>"
            + "".join(f"<label><name>{j}</name><type>points</type><parent>person</parent></label>" for j in ("head", "hand", "foot")))
    return f"<annotations><version>1.1</version><meta><project><labels>{meta}</labels></project></meta>{''.join(images)}</annotations>"


PERSON = ('<skeleton label="person" z_order="0"><points label="hand" occluded="1" outside="0" points="8,12"/>'
          '<points label="head" occluded="0" outside="0" points="10,4"/>'
          '<points label="foot" occluded="0" outside="1" points="0,0"/></skeleton>')


def test_cvat_skeletons_are_objects_with_keypoints(tmp_path):
    root = cvat_folder(tmp_path / "cvat")
    (root / "annotations" / "train.xml").write_text(skeleton_xml([cvat_image(0, "a.jpg", BOX + PERSON)]))
    (root / "annotations" / "val.xml").write_text(skeleton_xml([cvat_image(0, "c.jpg", PERSON)]))
    plain = CVATDetection(str(root))
    assert plain.class_names == ("car", "person")  # the skeleton's points are not classes
    assert len(plain.records("train")[0]) == 1 and plain.data_report()["filtered"] == {"shape_not_read": 2}
    source = CVATDetection(str(root), keypoints=True)
    assert source.keypoint_names == ("head", "hand", "foot")
    record = source.records("train")[0]
    assert record.labels.tolist() == [1, 2]
    np.testing.assert_allclose(record.boxes[1], [8, 4, 10, 12])  # the labelled points' extent
    np.testing.assert_allclose(record.keypoints[1], [[10, 4, 2], [8, 12, 1], [0, 0, 0]])
    assert (record.keypoints[0] == 0).all()  # the box has none
    assert DetectionDataModule(source, batch_size=1, num_workers=0).facts.keypoint_names == ("head", "hand", "foot")
    (root / "annotations" / "val.xml").write_text(skeleton_xml([cvat_image(0, "c.jpg", PERSON.replace('outside="0"', 'outside="1"'))]))
    with pytest.raises(BadRecordError, match="no point inside the image") as error:
        CVATDetection(str(root), keypoints=True)
    assert error.value.kind == "empty_box"


# ---------------------------------------------------------------------------------------------- SIIM-ACR
def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2") -> None:
    """A one-frame grey DICOM file (8 or 16 bit, as ``pixels``' dtype) written with pydicom."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    dataset.Rows, dataset.Columns = pixels.shape
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation, dataset.PixelRepresentation = 1, photometric, 0
    bits = pixels.dtype.itemsize * 8
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = bits, bits, bits - 1
    dataset.PixelData = np.ascontiguousarray(pixels).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.save_as(path, enforce_file_format=True)


SH, SW = 6, 5  # the fixture radiographs: 5 wide, 6 high


def siim_folder(root: Path, rows: list[str], images: dict[str, np.ndarray] | None = None) -> Path:
    """``dicom-images-train/<study>/<series>/<ImageId>.dcm`` and ``train-rle.csv`` with the
    competition's header (a space before EncodedPixels)."""
    images = images if images is not None else {f"1.2.{k}": np.arange(SH * SW, dtype=np.uint8).reshape(SH, SW) * (k + 1) for k in range(4)}
    for k, (image_id, pixels) in enumerate(images.items()):
        write_dicom(root / "dicom-images-train" / f"study{k}" / "series" / f"{image_id}.dcm", pixels)
    (root / "train-rle.csv").write_text("ImageId, EncodedPixels\n" + "".join(f"{row}\n" for row in rows))
    return root


def test_siim_rle_is_relative_and_column_major():
    # Pixels down the first column are 0..5: "1 2" marks (y=1, 2) of x=0; "5 1" skips 5 more to pixel 8: (y=2, x=1).
    mask = decode_siim_rle([1, 2, 5, 1], SH, SW)
    assert sorted(zip(*np.nonzero(mask))) == [(1, 0), (2, 0), (2, 1)]
    assert encode_siim_rle(mask) == "1 2 5 1" and encode_siim_rle(np.zeros((SH, SW))) == "-1"
    rng = np.random.default_rng(0)
    random = rng.random((SH, SW)) > 0.5
    np.testing.assert_array_equal(decode_siim_rle([int(v) for v in encode_siim_rle(random).split()], SH, SW), random)


def test_siim_reads_dicom_and_unites_the_rows_of_an_image(tmp_path):
    from datamodules.formats.siim_pneumothorax import SIIMPneumothorax

    root = siim_folder(tmp_path / "siim", ["1.2.0, 1 2", "1.2.0, 5 1", "1.2.1, -1", "1.2.2, 0 1", "1.2.3, -1"])
    write_dicom(root / "dicom-images-train" / "x" / "unlabelled.dcm", np.zeros((SH, SW), dtype=np.uint8))
    source = SIIMPneumothorax(str(root), val_fraction=0.25)
    assert source.class_names == ("background", "pneumothorax")
    by_id = {r.image_id: r for split in ("train", "val") for r in source.records(split)}
    assert sorted(by_id) == ["1.2.0", "1.2.1", "1.2.2", "1.2.3"] and len(source.records("val")) == 1
    image, labels = source.load(by_id["1.2.0"])
    assert image.shape == (3, SH, SW) and image.dtype == torch.uint8
    np.testing.assert_array_equal(image[0].numpy(), np.arange(SH * SW).reshape(SH, SW))
    # Each row is an encoding of its own, from pixel 0: "5 1" is pixel 5, the bottom of the first column.
    assert sorted(zip(*np.nonzero(labels.numpy()))) == [(1, 0), (2, 0), (5, 0)]
    assert int(source.load(by_id["1.2.1"])[1].sum()) == 0
    report = source.data_report()
    assert report["filtered"] == {"no_annotation": 1} and report["skipped"] == 0


def test_siim_sixteen_bit_and_monochrome1_images_read_as_8_bit_bright_dense(tmp_path):
    from datamodules.formats.siim_pneumothorax import read_dicom

    pixels = np.full((SH, SW), 65535, dtype=np.uint16)
    pixels[0, 0] = 0
    write_dicom(tmp_path / "a.dcm", pixels, photometric="MONOCHROME1")
    image = read_dicom(tmp_path / "a.dcm")
    assert int(image[0, 0, 0]) == 255 and int(image[0, 1, 1]) == 0
    (tmp_path / "b.dcm").write_bytes(b"not dicom")
    with pytest.raises(ImageReadError, match=r"b\.dcm"):
        read_dicom(tmp_path / "b.dcm")


@pytest.mark.parametrize(("row", "kind"), [
    ("1.2.0, 1 2 3", "wrong_type"),
    ("1.2.0, a b", "wrong_type"),
    ("1.2.0, 3 0", "wrong_type"),
    ("1.2.0, 25 10", "mask_outside_image"),
    ("1.2.9, -1", "image_missing"),
    ("1.2.0", "missing_field"),
])
def test_a_bad_siim_row_is_a_bad_record_of_its_image(tmp_path, row, kind):
    from datamodules.formats.siim_pneumothorax import SIIMPneumothorax

    root = siim_folder(tmp_path / "siim", ["1.2.0, 1 2", row, "1.2.1, -1", "1.2.2, -1", "1.2.3, 0 1"])
    with pytest.raises(BadRecordError) as error:
        SIIMPneumothorax(str(root))
    assert error.value.kind == kind and str(root / "train-rle.csv") in str(error.value)
    source = SIIMPneumothorax(str(root), on_bad_record="skip", val_fraction=0.3)
    kept = {r.image_id for split in ("train", "val") for r in source.records(split)}
    bad_image = row.split(",")[0]
    # The whole image is left out, not only its bad row.
    assert bad_image not in kept and {"1.2.0", "1.2.1", "1.2.2", "1.2.3"} - {bad_image} <= kept
    assert source.data_report()["skipped_by_kind"] == {kind: 1}
