"""Tiny object detection datasets in each real on-disk format, written by the tests: COCO instances
JSON (non-contiguous category ids listed out of order, a crowd as compressed RLE, an object in two
polygon parts, an uncompressed RLE, keypoints, an image without annotations), the VOC devkit
(difficult, truncated and ``<part>`` boxes, a second year folder), Ultralytics YOLO (boxes, an
empty label file, an image without one, segments), keras-retinanet CSV (several lines per image,
an image without objects, a class map) and DSB 2018 (RGBA images, one mask PNG per nucleus).

Each builder returns what the reader must produce, written by hand (never the reader's code):
per image, the boxes in continuous XYXY pixels, the labels and flags, and the mask pixel counts.
Shared by ``test_detection_formats.py`` (what the readers read, and the converter) and
``test_bad_records.py`` (what they refuse).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from tests.segmentation_fixtures import compressed_rle, rect_polygon, uncompressed_rle, write_rgb

W, H = 32, 24  # every fixture image is 32 wide, 24 high


def block(top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """A ``H x W`` bool mask with rows ``top..bottom-1`` and columns ``left..right-1`` set."""
    mask = np.zeros((H, W), dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# ---------------------------------------------------------------------------------------------- COCO
# Listed out of id order: the labels follow the sorted ids, 1 person, 5 airplane, 90 toothbrush.
COCO_CATEGORIES = [
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
    {"id": 1, "name": "person", "supercategory": "person", "keypoints": ["nose", "left_eye", "right_eye"], "skeleton": [[1, 2], [1, 3]]},
    {"id": 5, "name": "airplane", "supercategory": "vehicle"},
]
COCO_CLASSES = ("person", "airplane", "toothbrush")
COCO_IDS = (1, 5, 90)
PERSON_KEYPOINTS = [4, 5, 2, 6, 7, 1, 0, 0, 0]


def coco_content(integer_boxes: bool = False) -> dict:
    """Image 1: a person in two polygon parts (with keypoints), a crowd of toothbrushes (compressed
    RLE) and an airplane (uncompressed RLE; a box off the pixel grid unless ``integer_boxes``);
    image 2: an airplane filling the image (polygon); image 3: no annotation."""
    plane_box = [15, 2, 5, 6] if integer_boxes else [14.5, 2.25, 6.0, 5.5]
    return {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "width": W, "height": H},
            {"id": 2, "file_name": "000000000002.jpg", "width": W, "height": H},
            {"id": 3, "file_name": "000000000003.jpg", "width": W, "height": H},
        ],
        "categories": COCO_CATEGORIES,
        "annotations": [
            {"id": 101, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [2, 3, 10, 12], "area": 51.0,
             "segmentation": [rect_polygon(2, 3, 8, 9), rect_polygon(9, 10, 12, 15)], "keypoints": PERSON_KEYPOINTS, "num_keypoints": 2},
            {"id": 102, "image_id": 1, "category_id": 90, "iscrowd": 1, "bbox": [20, 18, 10, 4], "area": 40.0,
             "segmentation": compressed_rle(block(18, 22, 20, 30))},
            {"id": 103, "image_id": 1, "category_id": 5, "iscrowd": 0, "bbox": plane_box, "area": 30.0,
             "segmentation": uncompressed_rle(block(2, 8, 15, 20))},
            {"id": 104, "image_id": 2, "category_id": 5, "iscrowd": 0, "bbox": [0, 0, W, H], "area": float(W * H),
             "segmentation": [rect_polygon(0, 0, W, H)]},
        ],
    }


def coco_expected(integer_boxes: bool = False) -> dict:
    """Per image id: boxes (XYXY), labels, iscrowd, areas and mask pixel counts, as the reader
    must give them."""
    plane = [15, 2, 20, 8] if integer_boxes else [14.5, 2.25, 20.5, 7.75]
    return {
        1: {"boxes": [[2, 3, 12, 15], [20, 18, 30, 22], plane], "labels": [1, 3, 2], "iscrowd": [False, True, False],
            "areas": [51.0, 40.0, 30.0], "mask_pixels": [36 + 15, 40, 30]},
        2: {"boxes": [[0, 0, W, H]], "labels": [2], "iscrowd": [False], "areas": [float(W * H)], "mask_pixels": [W * H]},
        3: {"boxes": np.zeros((0, 4)), "labels": [], "iscrowd": [], "areas": [], "mask_pixels": []},
    }


def coco_detection_folder(root: Path, integer_boxes: bool = False) -> Path:
    """COCO's 2017 layout with the same three images in train and val."""
    for split in ("train", "val"):
        path = root / "annotations" / f"instances_{split}2017.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(coco_content(integer_boxes)))
        for image_id in (1, 2, 3):
            write_rgb(root / f"{split}2017" / f"{image_id:012d}.jpg", H, W, seed=image_id)
    return root


# ---------------------------------------------------------------------------------------------- VOC
def voc_xml(filename: str, objects: list[dict], size: tuple[int, int] | None = (W, H)) -> str:
    """A devkit-style XML; each object ``{name, box: (xmin, ymin, xmax, ymax), difficult, truncated,
    parts: [(name, box)]}``."""
    lines = ["<annotation>", "  <folder>VOC2007</folder>", f"  <filename>{filename}</filename>",
             "  <source><database>The VOC2007 Database</database></source>"]
    if size is not None:
        lines.append(f"  <size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    lines.append("  <segmented>0</segmented>")
    for obj in objects:
        lines += ["  <object>", f"    <name>{obj['name']}</name>", "    <pose>Left</pose>",
                  f"    <truncated>{obj.get('truncated', 0)}</truncated>", f"    <difficult>{obj.get('difficult', 0)}</difficult>"]
        xmin, ymin, xmax, ymax = obj["box"]
        lines.append(f"    <bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox>")
        for part, (a, b, c, d) in obj.get("parts", []):
            lines.append(f"    <part><name>{part}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{c}</xmax><ymax>{d}</ymax></bndbox></part>")
        lines.append("  </object>")
    lines.append("</annotation>")
    return "\n".join(lines) + "\n"


VOC_OBJECTS = {
    ("VOC2007", "000005"): [
        {"name": "person", "box": (1, 1, 10, 20), "parts": [("head", (2, 2, 5, 5)), ("hand", (8, 10, 9, 12))]},
        {"name": "chair", "box": (12, 5, 20, 15), "difficult": 1},
        {"name": "dog", "box": (21, 10, 32, 24), "truncated": 1},
    ],
    ("VOC2007", "000007"): [{"name": "car", "box": (5, 5, 25, 20)}],
    ("VOC2007", "000009"): [{"name": "bird", "box": (3, 4, 9, 10), "difficult": 1, "truncated": 1}],
    ("VOC2012", "2008_000001"): [{"name": "cat", "box": (1, 1, 12, 12)}],
}
VOC_LISTS = {("VOC2007", "trainval"): ["000005", "000007"], ("VOC2007", "test"): ["000009"], ("VOC2012", "trainval"): ["2008_000001"]}

# VOC's 1-based inclusive boxes in continuous coordinates: (xmin - 1, ymin - 1, xmax, ymax).
VOC_EXPECTED = {
    "000005": {"boxes": [[0, 0, 10, 20], [11, 4, 20, 15], [20, 9, 32, 24]], "labels": [15, 9, 12],
               "difficult": [False, True, False], "truncated": [False, False, True]},
    "000007": {"boxes": [[4, 4, 25, 20]], "labels": [7], "difficult": [False], "truncated": [False]},
    "000009": {"boxes": [[2, 3, 9, 10]], "labels": [3], "difficult": [True], "truncated": [True]},
    "2008_000001": {"boxes": [[0, 0, 12, 12]], "labels": [8], "difficult": [False], "truncated": [False]},
}


def voc_detection_folder(root: Path) -> Path:
    """``VOCdevkit`` with VOC2007 (trainval: 000005, 000007; test: 000009) and VOC2012
    (trainval: 2008_000001)."""
    for i, ((year, image_id), objects) in enumerate(VOC_OBJECTS.items()):
        write_rgb(root / year / "JPEGImages" / f"{image_id}.jpg", H, W, seed=i)
        path = root / year / "Annotations" / f"{image_id}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(voc_xml(f"{image_id}.jpg", objects))
    for (year, name), ids in VOC_LISTS.items():
        path = root / year / "ImageSets" / "Main" / f"{name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(f"{i}\n" for i in ids))
    return root


# ---------------------------------------------------------------------------------------------- YOLO
YOLO_CLASSES = ("cat", "dog", "bird")
YOLO_LABELS = {
    ("train", "a.jpg"): "0 0.5 0.5 0.25 0.5\n2 0.125 0.25 0.25 0.5\n",
    ("train", "b.png"): "1 0.75 0.5 0.5 1.0\n",
    ("train", "c.jpg"): None,  # no label file: no objects
    ("train", "d.jpg"): "",  # an empty label file: no objects
    ("val", "e.jpg"): "\n1 0.25 0.5 0.5 0.5\n",
}
YOLO_EXPECTED = {
    "a": {"boxes": [[12, 6, 20, 18], [0, 0, 8, 12]], "labels": [1, 3]},
    "b": {"boxes": [[16, 0, 32, 24]], "labels": [2]},
    "c": {"boxes": np.zeros((0, 4)), "labels": []},
    "d": {"boxes": np.zeros((0, 4)), "labels": []},
    "e": {"boxes": [[0, 6, 16, 18]], "labels": [2]},
}


def yolo_folder(root: Path, names_as: str = "dict", labels: dict | None = None) -> Path:
    """Ultralytics layout, ``data.yaml`` with ``names`` as a ``dict`` or a ``list``."""
    for i, ((split, name), text) in enumerate((labels or YOLO_LABELS).items()):
        write_rgb(root / "images" / split / name, H, W, seed=i)
        if text is not None:
            path = root / "labels" / split / f"{Path(name).stem}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(YOLO_CLASSES)) if names_as == "dict" else "".join(f"  - {n}\n" for n in YOLO_CLASSES)
    (root / "data.yaml").write_text(f"path: ../datasets/tiny\ntrain: images/train\nval: images/val\nnc: {len(YOLO_CLASSES)}\nnames:\n{names}")
    return root


# A square polygon (8, 6) (24, 6) (24, 18) (8, 18): box [8, 6, 24, 18], 16 x 12 = 192 mask pixels;
# a triangle over the left half of the image's top row band.
YOLO_SEGMENTS = {
    ("train", "s1.jpg"): "0 0.25 0.25 0.75 0.25 0.75 0.75 0.25 0.75\n",
    ("train", "s2.jpg"): "1 0 0 0.5 0 0.5 0.5\n",
    ("val", "s3.jpg"): "2 0.5 0.5 1 0.5 1 1 0.5 1\n",
}


# ---------------------------------------------------------------------------------------------- CSV
CSV_TRAIN = [
    "path,x1,y1,x2,y2,label",
    "images/a.png,2,3,10,12,cat",
    "images/a.png,12,4,30.5,20,dog",
    "images/b.png,,,,,",
    "images/c.png,0,0,32,24,dog",
]
CSV_EXPECTED = {
    "images/a.png": {"boxes": [[2, 3, 10, 12], [12, 4, 30.5, 20]], "names": ["cat", "dog"]},
    "images/b.png": {"boxes": np.zeros((0, 4)), "names": []},
    "images/c.png": {"boxes": [[0, 0, 32, 24]], "names": ["dog"]},
    "images/d.png": {"boxes": [[5, 5, 15, 15]], "names": ["cat"]},
}


def csv_folder(root: Path, extra_lines: list[str] = ()) -> Path:
    """train.csv (three images, one without objects; ``extra_lines`` appended), val.csv (one
    image) and keras-retinanet's class map (``dog,0`` then ``cat,1``)."""
    for i, name in enumerate(("a.png", "b.png", "c.png", "d.png")):
        write_rgb(root / "images" / name, H, W, seed=i)
    (root / "train.csv").write_text("\n".join([*CSV_TRAIN, *extra_lines]) + "\n")
    (root / "val.csv").write_text("images/d.png,5,5,15,15,cat\n")
    (root / "classes.csv").write_text("dog,0\ncat,1\n")
    return root


# ---------------------------------------------------------------------------------------------- DSB 2018
# id -> masks as (top, bottom, left, right) blocks; "ccc" has no masks folder entries.
DSB_MASKS = {
    "0a7d30b252359a10fd298b638b90cb9ada3acced4e0c0e5a3692013f432ee4e9": [(2, 6, 3, 9), (10, 12, 20, 21)],
    "1b44d22643830cd4f23c9deadb0bd499fb392fb2cd9526d81547d93077d983df": [(0, 24, 0, 32)],
    "4ca5081854df7bbcaa4934fcf34318f82733a0f8c05b942c2265eea75419d62f": [(5, 7, 5, 7), (6, 10, 6, 12), (20, 24, 28, 32)],
    "a102535b0e88374bea4a1cfd9ee7cb3822ff54f4ab2a9845d428ec22f9ee2288": [(1, 2, 1, 2)],
}


def dsb_expected() -> dict:
    """Per id: tight boxes ``[left, top, right, bottom]`` (continuous: the last column + 1) and
    pixel counts."""
    return {image_id: {"boxes": [[l, t, r, b] for t, b, l, r in blocks], "pixels": [(b - t) * (r - l) for t, b, l, r in blocks]}
            for image_id, blocks in DSB_MASKS.items()}


def dsb_folder(root: Path, masks: dict | None = None) -> Path:
    """``stage1_train/<id>/images/<id>.png`` (RGBA, as Kaggle's) and ``masks/<n>.png`` (0 / 255)."""
    for i, (image_id, blocks) in enumerate((masks or DSB_MASKS).items()):
        folder = root / "stage1_train" / image_id
        (folder / "images").mkdir(parents=True, exist_ok=True)
        (folder / "masks").mkdir(parents=True, exist_ok=True)
        rgba = np.random.default_rng(i).integers(0, 256, (H, W, 4), dtype=np.uint8)
        rgba[..., 3] = 255
        Image.fromarray(rgba, mode="RGBA").save(folder / "images" / f"{image_id}.png")
        for k, (top, bottom, left, right) in enumerate(blocks):
            write_mask(folder / "masks" / f"mask{k:02d}.png", block(top, bottom, left, right))
    return root


def write_mask(path: Path, mask: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(path)
