"""The semantic segmentation readers (``datamodules.formats``) on tiny fixtures written in each
real format (``tests/segmentation_fixtures.py``): the records of every split, the exact training
labels after loading (compared to maps computed by hand), missing paths, and what is refused when
the pixels are read. What the readers refuse at parse time, under both ``on_bad_record`` policies,
is ``test_bad_records.py``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.errors import BadRecordError, ConfigError, DataNotFoundError, ImageReadError
from core.label_sets import CAMVID_CLASSES, CITYSCAPES_CLASSES, VOC_CLASSES, cityscapes_palette
from datamodules.formats import CamVid, Cityscapes, COCOSemantic, MaskFolder, VOCSegmentation
from datamodules.segmentation import SegmentationDataModule
from tests.segmentation_fixtures import (
    COCO_EXPECTED,
    H,
    W,
    blocks,
    camvid_folder,
    cityscapes_folder,
    coco_semantic_folder,
    mask_folder,
    voc_folder,
    write_grey_png,
    write_palette_png,
    write_rgb,
)


def labels_of(source, split: str) -> dict:
    """``{image_id: labels}`` of a split, loaded as the data module loads them."""
    loaded = {}
    for record in source.records(split):
        image, labels = source.load(record)
        assert image.dtype == torch.uint8 and image.shape == (3, H, W), image.shape
        assert labels.dtype == torch.int64 and labels.shape == (H, W), labels.shape
        loaded[record.image_id] = labels.numpy()
    return loaded


def assert_labels(loaded: dict, expected: dict) -> None:
    assert sorted(loaded) == sorted(expected)
    for key, labels in loaded.items():
        np.testing.assert_array_equal(labels, expected[key], err_msg=str(key))


# ---------------------------------------------------------------------------------------------- VOC
def test_voc_reads_palette_indices_and_keeps_the_border_ignored(tmp_path):
    expected = voc_folder(tmp_path / "VOC2012")
    source = VOCSegmentation(str(tmp_path / "VOC2012"))
    assert source.class_names == VOC_CLASSES and source.ignore_index == 255
    assert [r.image_id for r in source.records("train")] == ["2007_000032", "2007_000039"]
    assert [r.image_id for r in source.records("val")] == ["2007_000063"]
    assert [r.image_id for r in source.records("test")] == ["2007_000063"]  # no test list: val
    # Indices (15 person, 20 tvmonitor, 255 border), not the palette's colours.
    assert_labels({**labels_of(source, "train"), **labels_of(source, "val")},
                  {k: v for k, v in expected.items() if k != "2008_000001"})
    assert source.records("train")[0].extra == {"file": str(tmp_path / "VOC2012/ImageSets/Segmentation/train.txt"), "line": 1}
    report = source.data_report()
    assert report["skipped"] == 0 and report["filtered"] == {}


def test_voc_sbd_train_is_the_aug_list_minus_val(tmp_path):
    expected = voc_folder(tmp_path / "VOC2012", aug=True)
    source = VOCSegmentation(str(tmp_path / "VOC2012"), aug_mask_dir="SegmentationClassAug",
                             aug_train_list="ImageSets/Segmentation/train_aug.txt")
    train = source.records("train")
    assert [r.image_id for r in train] == ["2007_000032", "2007_000039", "2008_000001"]  # 2007_000063 is val
    assert {Path(r.mask).parent.name for r in train} == {"SegmentationClassAug"}
    assert Path(source.records("val")[0].mask).parent.name == "SegmentationClass"
    assert source.data_report()["filtered"] == {"in_val": 1}
    assert_labels(labels_of(source, "train"), {k: expected[k] for k in ("2007_000032", "2007_000039", "2008_000001")})
    with pytest.raises(ConfigError, match="aug_mask_dir and aug_train_list together"):
        VOCSegmentation(str(tmp_path / "VOC2012"), aug_mask_dir="SegmentationClassAug")


def test_voc_data_module_yields_batches(tmp_path):
    expected = voc_folder(tmp_path / "VOC2012")
    data = SegmentationDataModule(source=VOCSegmentation(str(tmp_path / "VOC2012")), crop_size=8, batch_size=2, num_workers=0)
    data.setup("fit")
    images, target = next(iter(data.train_dataloader()))
    assert images.shape == (2, 3, 8, 8) and images.dtype == torch.float32
    assert target["labels"].shape == (2, 8, 8) and target["labels"].dtype == torch.int64
    assert set(target["labels"].unique().tolist()) <= {0, 1, 15, 255}  # the train images' labels only
    assert sorted(target["image_key"]) == ["2007_000032", "2007_000039"]
    images, target = next(iter(data.val_dataloader()))  # whole images
    assert images.shape == (1, 3, H, W)
    np.testing.assert_array_equal(target["labels"][0].numpy(), expected["2007_000063"])
    assert data.facts.class_names == VOC_CLASSES and data.facts.ignore_index == 255 and data.facts.input_shape == (3, 8, 8)


# ---------------------------------------------------------------------------------------------- CamVid
def test_camvid_folders_map_void_to_ignore(tmp_path):
    expected = camvid_folder(tmp_path / "CamVid")
    source = CamVid(str(tmp_path / "CamVid"))
    assert source.class_names == CAMVID_CLASSES
    assert [r.image_id for r in source.records("train")] == ["0001TP_006690", "0001TP_006720"]
    assert [r.image_id for r in source.records("val")] == ["0016E5_07959"]
    assert [r.image_id for r in source.records("test")] == ["0001TP_008550"]
    loaded = {}
    for split in ("train", "val", "test"):
        loaded.update(labels_of(source, split))
    assert_labels(loaded, expected)
    assert (loaded["0016E5_07959"] == 255).sum() == H * W - 4  # all void but a 2x2 sign


def test_camvid_segnet_list_file(tmp_path):
    expected = camvid_folder(tmp_path / "CamVid")
    source = CamVid(str(tmp_path / "CamVid"), train_list="train.txt")
    folders = CamVid(str(tmp_path / "CamVid"))
    assert [(r.image, r.mask) for r in source.records("train")] == [(r.image, r.mask) for r in folders.records("train")]
    assert source.records("train")[1].extra["line"] == 2
    assert_labels(labels_of(source, "train"), {k: expected[k] for k in ("0001TP_006690", "0001TP_006720")})
    assert [p.arg for p in source.required_paths()] == ["root", "train_list", "val_dir", "val_dir", "test_dir", "test_dir"]


# ---------------------------------------------------------------------------------------------- Cityscapes
def test_cityscapes_label_ids_become_train_ids(tmp_path):
    expected = cityscapes_folder(tmp_path / "cityscapes")
    source = Cityscapes(str(tmp_path / "cityscapes"))
    assert source.class_names == CITYSCAPES_CLASSES and source.palette == cityscapes_palette()
    assert [r.image_id for r in source.records("train")] == ["aachen/aachen_000000_000019", "bremen/bremen_000001_000019"]
    assert [r.image_id for r in source.records("test")] == ["lindau/lindau_000000_000019"]
    assert all(r.mask.endswith("_gtFine_labelIds.png") for r in source.records("train"))
    assert_labels({**labels_of(source, "train"), **labels_of(source, "val")}, expected)
    assert set(np.unique(expected["bremen/bremen_000001_000019"])) == {18, 255}  # the fixture covers both kinds of id


def test_cityscapes_label_train_ids_are_read_as_they_are(tmp_path):
    root = tmp_path / "cityscapes"
    expected = cityscapes_folder(root)
    for key, labels in expected.items():
        city, name = key.split("/")
        split = "val" if city == "lindau" else "train"
        write_grey_png(root / "gtFine" / split / city / f"{name}_gtFine_labelTrainIds.png", labels)
    source = Cityscapes(str(root), labels="labelTrainIds")
    assert_labels({**labels_of(source, "train"), **labels_of(source, "val")}, expected)


# ---------------------------------------------------------------------------------------------- mask folders
def test_mask_folder_maps_values_and_reads_tiff(tmp_path):
    expected = mask_folder(tmp_path / "isbi")
    source = MaskFolder(str(tmp_path / "isbi"), class_names=["membrane", "cell"], mask_values={0: 0, 255: 1})
    assert source.class_names == ("membrane", "cell")
    assert [r.image_id for r in source.records("train")] == ["slice_00", "slice_01"]
    assert [r.image_id for r in source.records("test")] == ["slice_29"]
    assert_labels({**labels_of(source, "train"), **labels_of(source, "val")}, expected)
    image, _ = source.load(source.records("train")[0])
    grey = np.array(Image.open(tmp_path / "isbi/train/images/slice_00.tif"))
    for channel in image:  # a grey TIFF read as RGB: three equal channels
        np.testing.assert_array_equal(channel.numpy(), grey)


def test_mask_folder_without_mapping_and_with_a_suffix(tmp_path):
    root = tmp_path / "cells"
    for split in ("train", "val"):
        write_rgb(root / split / "images" / "a.png")
        write_grey_png(root / split / "masks" / "a_mask.png", blocks((0, 5, 0, 12, 2), (5, 6, 0, 12, 255)))
        write_grey_png(root / split / "masks" / "notes.png", blocks())  # no "_mask": no image's mask
    source = MaskFolder(str(root), class_names=["bg", "nucleus", "cytoplasm"], mask_suffix="_mask")
    assert [Path(r.mask).name for r in source.records("train")] == ["a_mask.png"]
    assert_labels(labels_of(source, "train"), {"a": blocks((0, 5, 0, 12, 2), (5, 6, 0, 12, 255))})
    with pytest.raises(BadRecordError, match=r"label values 2 are neither one of the 2 classes \(0-1\) nor the ignore index 255") as error:
        labels_of(MaskFolder(str(root), class_names=["bg", "nucleus"], mask_suffix="_mask"), "train")
    assert error.value.kind == "label_value" and str(root / "train/masks/a_mask.png") in str(error.value)
    with pytest.raises(ConfigError, match="mask_values must map"):
        MaskFolder(str(root), class_names=["bg", "fg"], mask_values={255: 2})


# ---------------------------------------------------------------------------------------------- COCO
def test_coco_semantic_renders_polygons_rle_crowds_and_overlaps(tmp_path):
    root = coco_semantic_folder(tmp_path / "coco")
    source = COCOSemantic(str(root))
    assert source.class_names == ("background", "person", "car", "dog")  # ids 1, 3, 18 -> 1, 2, 3
    assert [r.image_id for r in source.records("train")] == [1, 2]  # image 3 has no object
    assert [r.image_id for r in source.records("val")] == [1, 2, 3]
    assert source.data_report()["filtered"] == {"no_annotation": 1}
    assert_labels(labels_of(source, "train"), {1: COCO_EXPECTED[1], 2: COCO_EXPECTED[2]})
    assert_labels(labels_of(source, "val"), COCO_EXPECTED)


def test_coco_semantic_crowd_as_class_and_a_category_subset(tmp_path):
    root = coco_semantic_folder(tmp_path / "coco")
    crowd = labels_of(COCOSemantic(str(root), crowd="class", keep_empty_train_images=True), "train")
    assert sorted(crowd) == [1, 2, 3]
    expected = COCO_EXPECTED[1].copy()
    expected[7:10, 0:4] = 1
    np.testing.assert_array_equal(crowd[1], expected)

    source = COCOSemantic(str(root), categories=["dog", "person"])
    assert source.class_names == ("background", "dog", "person")
    # The car is not painted: the person under it is no longer ambiguous.
    assert_labels(labels_of(source, "val"), {1: blocks((0, 6, 0, 7, 2), (0, 2, 10, 12, 2), (7, 10, 0, 4, 255)), 2: blocks((1, 9, 2, 4, 1)), 3: blocks()})
    assert source.data_report()["filtered"] == {"other_category": 2, "no_annotation": 1}
    with pytest.raises(ConfigError, match=r"categories \['cat'\] are not categories of"):
        COCOSemantic(str(root), categories=["cat"])


# ---------------------------------------------------------------------------------------------- missing paths
BUILDERS = {
    "voc": (voc_folder, lambda r: VOCSegmentation(str(r)), "ImageSets/Segmentation/val.txt", "val_list"),
    "camvid": (camvid_folder, lambda r: CamVid(str(r)), "testannot", "test_dir"),
    "cityscapes": (cityscapes_folder, lambda r: Cityscapes(str(r)), "gtFine/val", "label_dir"),
    "mask_folder": (mask_folder, lambda r: MaskFolder(str(r)), "val/masks", "val_masks"),
    "coco": (coco_semantic_folder, lambda r: COCOSemantic(str(r)), "annotations/instances_val2017.json", "val_annotations"),
}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_missing_root_and_missing_file_name_the_path(tmp_path, name):
    write, build, part, arg = BUILDERS[name]
    with pytest.raises(DataNotFoundError) as error:
        build(tmp_path / "nowhere")
    assert str(error.value).endswith(f"root not found: {tmp_path / 'nowhere'}"), str(error.value)
    root = tmp_path / "data"
    write(root)
    target = root / part
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(DataNotFoundError) as error:
        build(root)
    assert str(target) in str(error.value) and [p.path for p in error.value.missing] == [target]
    assert [p.arg for p in error.value.missing] == [arg]


# ---------------------------------------------------------------------------------------------- refused when loaded
def test_mask_of_another_size_is_a_bad_record_naming_both_files(tmp_path):
    root = tmp_path / "VOC2012"
    voc_folder(root)
    mask = root / "SegmentationClass" / "2007_000063.png"
    write_palette_png(mask, np.zeros((H + 1, W), dtype=np.uint8))
    source = VOCSegmentation(str(root))
    with pytest.raises(BadRecordError) as error:
        source.load(source.records("val")[0])
    assert error.value.kind == "size_mismatch"
    assert str(error.value) == (f"bad record in {mask}: the label map is {W}x{H + 1} but its image "
                                f"{root / 'JPEGImages' / '2007_000063.jpg'} is {W}x{H}")


@pytest.mark.parametrize("name, value, message", [
    ("voc", 21, "label values 21 are neither one of the 21 classes (0-20) nor the ignore index 255"),
    ("camvid", 12, "label values 12 are not values of the format (0-10 the classes, 11 void)"),
    ("cityscapes", 34, "label values 34 are not values of the format (labelIds 0-33 or 255)"),
    ("mask_folder", 128, "label values 128 are not values of the format (mask_values maps 0, 255)"),
])
def test_label_value_outside_the_classes_names_the_file(tmp_path, name, value, message):
    root = tmp_path / "data"
    BUILDERS[name][0](root)
    if name == "mask_folder":
        source = MaskFolder(str(root), class_names=["membrane", "cell"], mask_values={0: 0, 255: 1})
    else:
        source = BUILDERS[name][1](root)
    record = source.records("train")[0]
    labels = np.array(Image.open(record.mask))
    labels[0, 0] = value
    (write_palette_png if name == "voc" else write_grey_png)(Path(record.mask), labels)
    with pytest.raises(BadRecordError) as error:
        source.load(record)
    assert error.value.kind == "label_value"
    assert str(error.value) == f"bad record in {record.mask}: {message}"


def test_coco_image_of_another_size_than_its_annotation(tmp_path):
    root = coco_semantic_folder(tmp_path / "coco")
    write_rgb(root / "train2017" / "000000000002.jpg", height=H, width=W + 2)
    source = COCOSemantic(str(root))
    with pytest.raises(BadRecordError) as error:
        source.load(source.records("train")[1])
    assert error.value.kind == "size_mismatch"
    assert str(error.value).startswith(f"bad record in {root / 'annotations/instances_train2017.json'} (image 2): the label map is {W}x{H} but its image")


def test_files_missing_or_unreadable_when_loaded(tmp_path):
    root = tmp_path / "VOC2012"
    voc_folder(root)
    source = VOCSegmentation(str(root))
    first, second = source.records("train")
    Path(first.image).unlink()
    with pytest.raises(DataNotFoundError, match=f"^image not found: {first.image}$"):
        source.load(first)
    Path(second.image).write_bytes(b"not a jpeg")
    with pytest.raises(ImageReadError, match=f"^cannot read image {second.image}"):
        source.load(second)
    (val,) = source.records("val")
    Path(val.mask).write_bytes(b"not a png")
    with pytest.raises(ImageReadError, match=f"^cannot read image {val.mask}"):
        source.load(val)
    Path(val.mask).unlink()
    with pytest.raises(DataNotFoundError, match=f"^label image not found: {val.mask}$"):
        source.load(val)


def test_a_colour_label_image_is_refused(tmp_path):
    root = tmp_path / "VOC2012"
    voc_folder(root)
    source = VOCSegmentation(str(root))
    record = source.records("train")[0]
    colours = np.zeros((H, W, 3), dtype=np.uint8)
    colours[..., 0] = 128  # VOC's aeroplane colour, as a converted RGB file would hold it
    Image.fromarray(colours).save(record.mask)
    with pytest.raises(BadRecordError, match="a colour label image .RGB.: the reader needs class indices") as error:
        source.load(record)
    assert error.value.kind == "label_format" and record.mask in str(error.value)


def test_coco_rle_fixture_is_column_major(tmp_path):
    """The hand-written uncompressed RLE of the fixture is what COCO means (column-major, zeros
    first): otherwise the rendering test would compare two wrongs."""
    root = coco_semantic_folder(tmp_path / "coco")
    content = json.loads((root / "annotations/instances_train2017.json").read_text())
    car = content["annotations"][1]["segmentation"]
    assert car["counts"][:3] == [4 + 5 * H, 4, H - 4]  # five empty columns and the top 4 rows of column 5


# ---------------------------------------------------------------------------------------------- real-data configs
REPO = Path(__file__).resolve().parents[1]
# config -> (fixture writer, a narrower network so the test builds in a moment, the data's facts)
REAL_CONFIGS = {
    "fcn8s_voc": (voc_folder, {"widths": [4, 4, 4, 4, 4], "fc_channels": 8}, (3, 500, 500), 21),
    "deeplabv3plus_resnet101_voc": (voc_folder, {"backbone": {"init_args": {"blocks": [1, 1, 1, 1], "width_per_group": 4}},
                                                 "aspp_channels": 8, "low_level_projection": 4, "decoder_channels": 8}, (3, 513, 513), 21),
    "segnet_camvid": (camvid_folder, {"widths": [4, 4, 4, 4, 4]}, (3, 360, 480), 11),
    "unet_isbi": (mask_folder, {"base_channels": 2}, (1, 572, 572), 2),
}


@pytest.mark.parametrize("name", sorted(REAL_CONFIGS))
def test_real_data_configs_build_on_their_format(tmp_path, composer, name):
    """Each paper-recipe config's reader reads its format (the fixture in place of the data root),
    and its module agrees with the data on the classes: the CLI's own parse and link."""
    write, network, input_shape, num_classes = REAL_CONFIGS[name]
    write(tmp_path / "data")
    override = {"data": {"init_args": {"source": {"init_args": {"root": str(tmp_path / "data")}}}},
                "model": {"init_args": {"network": {"init_args": network}}}}
    model, data = composer.instantiate(composer.parse([f"experiments/configs/segmentation/{name}.yaml"], override))
    assert data.facts.input_shape == input_shape and len(data.class_names) == num_classes
    assert model.num_classes == num_classes and tuple(model.example_input_array.shape) == (1, *input_shape)
    assert len(data.source.records("train")) >= 2 and data.source.data_report()["skipped"] == 0


# ---------------------------------------------------------------------------------------------- 0/255 masks
def test_black_and_white_masks_without_mask_values_read_255_as_the_foreground(tmp_path):
    """255 is the ignore index: 0/255 masks read as they are would train on background alone."""
    expected = mask_folder(tmp_path / "isbi")
    source = MaskFolder(str(tmp_path / "isbi"), class_names=["background", "cell"])
    assert_labels({**labels_of(source, "train"), **labels_of(source, "val")}, expected)
    notes = source.data_report()["notes"]
    assert len(notes) == 1 and "hold only 0 and 255: read as mask_values {0: 0, 255: 1}" in notes[0]
    assert str(tmp_path / "isbi/train/masks") in notes[0]
    # mask_values given: it is obeyed, 255 ignored as the user asked, and nothing is noted.
    kept = MaskFolder(str(tmp_path / "isbi"), class_names=["background", "cell"], mask_values={0: 0, 255: 255})
    assert set(np.unique(kept.load(kept.records("train")[0])[1].numpy())) == {0, 255}
    assert "notes" not in kept.data_report()


def test_black_and_white_masks_with_more_classes_name_the_key_to_set(tmp_path):
    from core.errors import ArgumentValueError

    mask_folder(tmp_path / "isbi")
    with pytest.raises(ArgumentValueError) as error:
        MaskFolder(str(tmp_path / "isbi"), class_names=["background", "cell", "membrane"])
    message = str(error.value)
    assert message.startswith("MaskFolder.mask_values must say what the values of the masks in")
    assert "hold only 0 and 255" in message and "mask_values: {0: 0, 255: 1}" in message and "\n" not in message


def test_masks_that_use_255_as_ignore_beside_their_classes_are_left_alone(tmp_path):
    root = tmp_path / "cells"
    for split in ("train", "val"):
        write_rgb(root / split / "images" / "a.png")
        write_grey_png(root / split / "masks" / "a.png", blocks((0, 5, 0, 12, 1), (5, 6, 0, 12, 255)))
    source = MaskFolder(str(root), class_names=["bg", "fg"])
    assert set(np.unique(source.load(source.records("train")[0])[1].numpy())) == {0, 1, 255}
    assert "notes" not in source.data_report()


def test_the_data_report_warns_of_a_class_never_in_the_training_labels(tmp_path):
    root = tmp_path / "cells"
    for split in ("train", "val"):
        write_rgb(root / split / "images" / "a.png")
        write_grey_png(root / split / "masks" / "a.png", blocks((0, 5, 0, 12, 2 if split == "val" else 0)))
    source = MaskFolder(str(root), class_names=["bg", "nucleus", "cytoplasm"])
    module = SegmentationDataModule(source, crop_size=8, batch_size=1, num_workers=0)
    report = module.data_report()
    assert report["classes_never_in_training"] == ["nucleus", "cytoplasm"]
    assert report["warnings"] == ["MaskFolder: classes 'nucleus', 'cytoplasm' never appear in the training labels (nothing can learn them)"]
