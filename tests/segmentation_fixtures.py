"""Tiny semantic segmentation datasets in each real on-disk format, written by the tests: VOC's
devkit folders with palette PNGs, SegNet's CamVid folders, Cityscapes' city folders with labelIds,
an ISBI-style image/mask folder pair with TIFF images and 0/255 masks, and COCO instance JSON with
polygons, RLE (compressed and not), a crowd and non-contiguous category ids.

Each builder returns the label maps the reader must produce, computed by hand (numpy slices, never
the reader's code), keyed by the record's ``image_id``. Shared by ``test_segmentation_formats.py``
(what the readers read) and ``test_bad_records.py`` (what they refuse).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from core.label_sets import voc_palette

H, W = 10, 12  # every fixture image is 12 wide, 10 high


def write_rgb(path: Path, height: int = H, width: int = W, seed: int = 0) -> np.ndarray:
    """A random RGB image (PNG, JPEG or TIFF by the suffix); returns its pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **({"quality": 95} if path.suffix == ".jpg" else {}))
    return pixels


def write_palette_png(path: Path, labels: np.ndarray) -> None:
    """A VOC-style palette PNG: the pixel values are the indices, shown in the devkit's colours."""
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette([c for color in voc_palette() for c in color])
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def write_grey_png(path: Path, values: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(values.astype(np.uint8), mode="L").save(path)


def blocks(*regions: tuple[int, int, int, int, int], fill: int = 0, height: int = H, width: int = W) -> np.ndarray:
    """A label map of ``fill`` with ``(top, bottom, left, right, value)`` rectangles painted in order."""
    labels = np.full((height, width), fill, dtype=np.int64)
    for top, bottom, left, right, value in regions:
        labels[top:bottom, left:right] = value
    return labels


# ---------------------------------------------------------------------------------------------- VOC
VOC_LABELS = {
    "2007_000032": blocks((2, 6, 3, 9, 15), (2, 6, 2, 3, 255), (2, 6, 9, 10, 255)),  # a person with a border
    "2007_000039": blocks((0, 4, 0, 12, 1), (4, 5, 0, 12, 255)),
    "2007_000063": blocks((5, 10, 4, 8, 20)),
    "2008_000001": blocks((1, 3, 1, 3, 12)),
}


def voc_folder(root: Path, aug: bool = False) -> dict[str, np.ndarray]:
    """``VOC2012`` with train (2 ids) and val (1 id) lists; with ``aug``, ``SegmentationClassAug``
    (grey PNGs, SBD's id 2008_000001 too) and ``train_aug.txt`` in DeepLab's two-path form, which
    also lists the val image."""
    for i, (image_id, labels) in enumerate(VOC_LABELS.items()):
        write_rgb(root / "JPEGImages" / f"{image_id}.jpg", seed=i)
        if image_id != "2008_000001":  # an SBD image: no VOC label
            write_palette_png(root / "SegmentationClass" / f"{image_id}.png", labels)
        if aug:
            write_grey_png(root / "SegmentationClassAug" / f"{image_id}.png", labels)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True, exist_ok=True)
    (lists / "train.txt").write_text("2007_000032\n2007_000039\n")
    (lists / "val.txt").write_text("2007_000063\n")
    (lists / "trainval.txt").write_text("2007_000032\n2007_000039\n2007_000063\n")
    if aug:
        ids = ["2007_000032", "2007_000039", "2007_000063", "2008_000001"]
        (lists / "train_aug.txt").write_text("".join(f"/JPEGImages/{i}.jpg /SegmentationClassAug/{i}.png\n" for i in ids))
    return dict(VOC_LABELS)


# ---------------------------------------------------------------------------------------------- CamVid
def camvid_folder(root: Path) -> dict[str, np.ndarray]:
    """SegNet's folders: train (2), val (1), test (1); raw values 0..10 and 11 void. Returns the
    training labels (void as 255)."""
    raw = {
        ("train", "0001TP_006690"): blocks((0, 3, 0, 12, 0), (3, 6, 0, 12, 1), (6, 10, 0, 12, 3), (7, 9, 2, 4, 11)),
        ("train", "0001TP_006720"): blocks((0, 5, 0, 6, 8), (0, 5, 6, 12, 9), (5, 10, 0, 12, 10)),
        ("val", "0016E5_07959"): blocks((2, 4, 2, 4, 6), fill=11),
        ("test", "0001TP_008550"): blocks((0, 10, 0, 6, 2), (0, 10, 6, 12, 7)),
    }
    expected = {}
    for i, ((split, name), values) in enumerate(raw.items()):
        write_rgb(root / split / f"{name}.png", seed=i)
        write_grey_png(root / f"{split}annot" / f"{name}.png", values)
        expected[name] = np.where(values == 11, 255, values)
    (root / "train.txt").write_text("".join(f"/SegNet/CamVid/train/{n}.png /SegNet/CamVid/trainannot/{n}.png\n"
                                            for (split, n) in raw if split == "train"))
    return expected


# ---------------------------------------------------------------------------------------------- Cityscapes
def cityscapes_folder(root: Path) -> dict[str, np.ndarray]:
    """Two train cities and one val city; labelIds 7 road (train id 0), 26 car (13), 33 bicycle (18),
    0 unlabeled, 4 static and 14 guard rail (not evaluated: 255). Returns the train-id maps."""
    raw = {
        ("train", "aachen", "aachen_000000_000019"): blocks((0, 5, 0, 12, 7), (5, 10, 0, 12, 26), (0, 2, 0, 2, 0)),
        ("train", "bremen", "bremen_000001_000019"): blocks((0, 10, 0, 4, 33), (0, 10, 4, 8, 4), (0, 10, 8, 12, 14)),
        ("val", "lindau", "lindau_000000_000019"): blocks((3, 7, 3, 7, 24), fill=7),
    }
    expected = {}
    train_id = {7: 0, 26: 13, 33: 18, 24: 11, 0: 255, 4: 255, 14: 255}
    for i, ((split, city, name), values) in enumerate(raw.items()):
        write_rgb(root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", seed=i)
        labels = root / "gtFine" / split / city
        write_grey_png(labels / f"{name}_gtFine_labelIds.png", values)
        write_grey_png(labels / f"{name}_gtFine_color.png", values * 3)  # a file the reader must not take
        expected[f"{city}/{name}"] = np.vectorize(train_id.get)(values)
    return expected


# ---------------------------------------------------------------------------------------------- mask folders
def mask_folder(root: Path) -> dict[str, np.ndarray]:
    """ISBI-style: grey TIFF images, 0 / 255 PNG masks (black membrane, white cell); train 2, val 1.
    Returns the labels under ``mask_values {0: 0, 255: 1}``."""
    masks = {
        ("train", "slice_00"): blocks((0, 10, 5, 7, 255)),
        ("train", "slice_01"): blocks((2, 8, 2, 10, 255)),
        ("val", "slice_29"): blocks((0, 1, 0, 12, 255), fill=0),
    }
    expected = {}
    for i, ((split, name), values) in enumerate(masks.items()):
        grey = np.random.default_rng(i).integers(0, 256, (H, W), dtype=np.uint8)
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        Image.fromarray(grey, mode="L").save(root / split / "images" / f"{name}.tif")
        write_grey_png(root / split / "masks" / f"{name}.png", values)
        expected[name] = (values == 255).astype(np.int64)
    return expected


# ---------------------------------------------------------------------------------------------- COCO
COCO_CATEGORIES = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a bool mask, written out by hand: run lengths of the column-major
    pixels, starting with a run of zeros."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, current, run = [], 0, 0
    for value in flat:
        if value == current:
            run += 1
        else:
            counts.append(run)
            current, run = value, 1
    counts.append(run)
    return {"size": list(mask.shape), "counts": [int(c) for c in counts]}


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def rect_polygon(left: int, top: int, right: int, bottom: int) -> list[float]:
    """A rectangle polygon; pycocotools fills rows ``top..bottom-1`` and columns ``left..right-1``."""
    return [left, top, right, top, right, bottom, left, bottom]


def coco_file(path: Path) -> dict:
    """Three images: 1 with a person polygon (two parts), a car as uncompressed RLE overlapping
    the person, and a crowd of people; 2 with a dog as compressed RLE; 3 without annotations."""
    car = blocks((4, 8, 5, 10, 1)).astype(bool)
    dog = blocks((1, 9, 2, 4, 1)).astype(bool)
    content = {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "width": W, "height": H},
            {"id": 2, "file_name": "000000000002.jpg", "width": W, "height": H},
            {"id": 3, "file_name": "000000000003.jpg", "width": W, "height": H},
        ],
        "categories": COCO_CATEGORIES,
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 7, 6], "area": 30.0,
             "segmentation": [rect_polygon(0, 0, 7, 6), rect_polygon(10, 0, 12, 2)]},
            {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 0, "bbox": [5, 4, 5, 4], "area": 20.0,
             "segmentation": uncompressed_rle(car)},
            {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 1, "bbox": [0, 7, 4, 3], "area": 12.0,
             "segmentation": uncompressed_rle(blocks((7, 10, 0, 4, 1)).astype(bool))},
            {"id": 13, "image_id": 2, "category_id": 18, "iscrowd": 0, "bbox": [2, 1, 2, 8], "area": 16.0,
             "segmentation": compressed_rle(dog)},
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))
    return content


# Labels: background 0, person 1, car 2, dog 3 (ids 1, 3, 18). Image 1: the person's two parts,
# the car over it with the overlap ignored, the crowd ignored.
COCO_EXPECTED = {
    1: blocks((0, 6, 0, 7, 1), (0, 2, 10, 12, 1), (4, 8, 5, 10, 2), (4, 6, 5, 7, 255), (7, 10, 0, 4, 255)),
    2: blocks((1, 9, 2, 4, 3)),
    3: blocks(),
}


def coco_semantic_folder(root: Path) -> Path:
    coco_file(root / "annotations" / "instances_train2017.json")
    coco_file(root / "annotations" / "instances_val2017.json")
    for i, split in enumerate(("train2017", "val2017")):
        for image_id in (1, 2, 3):
            write_rgb(root / split / f"{image_id:012d}.jpg", seed=10 * i + image_id)
    return root
