"""Tiny pose datasets in each real on-disk format, written by the tests: the dataset's own file
layout in miniature (JSON lists for MPII in the HRNet/MMPose and bearpaw layouts, ``.mat`` files
with the real variables and struct arrays for MPII ``RELEASE``, LSP ``joints``, FLIC ``examples``
and MPII ``headboxes_src``, COCO keypoint JSON) and small JPEGs. Shared by ``test_pose_formats.py``
(what the readers read) and ``test_bad_records.py`` (what they refuse).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def write_image(path: Path, width: int = 96, height: int = 80, color: tuple[int, int, int] = (200, 40, 40)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (width, height), color).save(path, quality=95)


def write_json(path: Path, content: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content))


def struct_array(rows: list[dict], fields: list[str]) -> np.ndarray:
    """A MATLAB 1 x N struct array for ``savemat``; absent fields are empty ``[]`` as in MATLAB."""
    array = np.empty((1, len(rows)), dtype=[(name, object) for name in fields])
    for i, row in enumerate(rows):
        for name in fields:
            array[0, i][name] = row.get(name, np.zeros((0, 0)))
    return array


def mpii_joints(offset: float) -> list[list[float]]:
    """16 distinct 1-based joint positions."""
    return [[10.0 + 4 * k + offset, 12.0 + 3 * k + offset] for k in range(16)]


def hrnet_mpii(root: Path) -> Path:
    """HRNet's layout: annot/{train,valid,test}.json, annot/gt_valid.mat, images/."""
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_image(root / "images" / name)
    train = []
    for i, name in enumerate(("a.jpg", "b.jpg", "c.jpg")):
        joints = mpii_joints(i)
        vis = [1] * 16
        if i == 0:
            joints[0], vis[0] = [-1.0, -1.0], 0  # HRNet's missing joint
        train.append({"image": name, "center": [41.0 + i, 31.0], "scale": 0.4, "joints": joints, "joints_vis": vis})
    valid = [
        {"image": "c.jpg", "center": [51.0, 41.0], "scale": 0.3, "joints": mpii_joints(10), "joints_vis": [1] * 16},
        {"image": "d.jpg", "center": [45.0, 35.0], "scale": 0.5, "joints": mpii_joints(60), "joints_vis": [1] * 16},
    ]
    write_json(root / "annot" / "train.json", train)
    write_json(root / "annot" / "valid.json", valid)
    write_json(root / "annot" / "test.json", [{"image": "d.jpg", "center": [45.0, 35.0], "scale": 0.5}])
    write_head_boxes(root / "annot" / "gt_valid.mat", valid)
    return root


def write_head_boxes(path: Path, people: list[dict], order: list[int] | None = None, **override) -> None:
    """gt_valid.mat: headboxes_src (2, 2, N), jnt_missing (16, N), pos_gt_src (16, 2, N), 1-based."""
    n = len(people)
    order = order or list(range(n))
    boxes = np.zeros((2, 2, n))
    positions = np.zeros((16, 2, n))
    for column, i in enumerate(order):
        boxes[:, :, column] = [[11.0 + i, 21.0], [41.0 + i, 61.0]]  # 30 x 40 box: head size 0.6 * 50 = 30
        positions[:, :, column] = people[i]["joints"]
    missing = np.zeros((16, n))
    missing[3, 0] = 1  # the official file says joint 3 of person 0 is not annotated
    content = {"headboxes_src": boxes, "jnt_missing": missing, "pos_gt_src": positions, "dataset_joints": np.array(["rank"] * 16, dtype=object)}
    content.update(override)
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, content)


def release_mat(root: Path, point_id: int = 9) -> Path:
    """The official RELEASE struct: annolist(image.name, annorect(x1..y2, annopoints.point(x, y, id,
    is_visible), scale, objpos(x, y))), img_train."""
    rect_fields = ["x1", "y1", "x2", "y2", "annopoints", "scale", "objpos"]
    points = struct_array(
        [
            {"x": 21.0, "y": 31.0, "id": 0, "is_visible": 1},
            {"x": 41.0, "y": 11.0, "id": point_id, "is_visible": "0"},
            {"x": 35.0, "y": 25.0, "id": 7},  # no is_visible at all
        ],
        ["x", "y", "id", "is_visible"],
    )
    annotated = {"x1": 31.0, "y1": 6.0, "x2": 51.0, "y2": 21.0, "annopoints": {"point": points}, "scale": 0.4, "objpos": {"x": 41.0, "y": 31.0}}
    unannotated = {"scale": 0.5, "objpos": {"x": 61.0, "y": 41.0}}  # a training-image person without joints
    single_points = struct_array([{"x": 11.0, "y": 11.0, "id": 15, "is_visible": 1}], ["x", "y", "id", "is_visible"])
    single = {"x1": 1.0, "y1": 1.0, "x2": 11.0, "y2": 11.0, "annopoints": {"point": single_points}, "scale": 0.3, "objpos": {"x": 21.0, "y": 21.0}}
    test_person = {"scale": 0.6, "objpos": {"x": 50.0, "y": 40.0}}
    annolist = struct_array(
        [
            {"image": {"name": "a.jpg"}, "annorect": struct_array([annotated, unannotated], rect_fields)},
            {"image": {"name": "b.jpg"}, "annorect": struct_array([single], rect_fields)},
            {"image": {"name": "c.jpg"}, "annorect": struct_array([test_person], rect_fields)},
            {"image": {"name": "d.jpg"}},  # no people at all
        ],
        ["image", "annorect", "frame_sec", "vididx"],
    )
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "mpii_human_pose_v1_u12_1.mat", {"RELEASE": {"annolist": annolist, "img_train": np.array([[1, 1, 0, 1]]), "version": "12"}})
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(root / "images" / name)
    (root / "val_images.txt").write_text("# Tompson-style val images\nb.jpg\n\n")
    return root


def lsp_joints(count: int) -> np.ndarray:
    """(count, 14, 2) distinct 1-based positions."""
    k = np.arange(14)[None, :]
    i = np.arange(count)[:, None]
    return np.stack([11.0 + 3 * k + i % 5, 21.0 + 4 * k + i % 3], axis=-1)


def write_images(folder: Path, names: list[str], width: int = 100, height: int = 100) -> None:
    """The same small JPEG under every name (LSP's 2000 people each need their image file)."""
    write_image(folder / names[0], width, height)
    data = (folder / names[0]).read_bytes()
    for name in names[1:]:
        (folder / name).write_bytes(data)


def lsp_people() -> np.ndarray:
    """LSP's (2000, 14, 3) people: x, y, occlusion flag (person 1000's joint 5 occluded)."""
    occluded = np.zeros((2000, 14))
    occluded[1000, 5] = 1
    return np.concatenate([lsp_joints(2000), occluded[..., None]], axis=-1)


def lsp_folder(root: Path, people: np.ndarray | None = None) -> Path:
    people = lsp_people() if people is None else people
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "joints.mat", {"joints": people.transpose(2, 1, 0)})  # (3, 14, 2000)
    write_images(root / "images", [f"im{i + 1:04d}.jpg" for i in range(len(people))])
    return root


def lspet_people() -> np.ndarray:
    """LSP-extended's (5, 14, 3) people: x, y, visibility flag (person 2's joint 0 invisible)."""
    visibility = np.ones((5, 14))
    visibility[2, 0] = 0
    return np.concatenate([lsp_joints(5), visibility[..., None]], axis=-1)


def lspet_folder(root: Path, people: np.ndarray | None = None) -> Path:
    people = lspet_people() if people is None else people
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "joints.mat", {"joints": people.transpose(1, 2, 0)})  # (14, 3, N)
    write_images(root / "images", [f"im{i + 1:05d}.jpg" for i in range(len(people))], 96, 80)
    return root


FLIC_FIELDS = ["poselet_hit_idx", "moviename", "coords", "filepath", "imgdims", "currframe", "torsobox", "istrain", "istest", "isbad", "isunchecked"]


FLIC_COLUMNS_1BASED = (1, 2, 3, 4, 5, 6, 7, 10, 13, 14, 17)


def flic_coords(offset: float) -> np.ndarray:
    coords = np.full((2, 29), np.nan)
    for joint, column in enumerate(FLIC_COLUMNS_1BASED):
        coords[:, column - 1] = [21.0 + 5 * joint + offset, 11.0 + 6 * joint]
    return coords


def flic_folder(root: Path, broken: dict | None = None) -> Path:
    rows = []
    for i in range(4):
        coords = flic_coords(i)
        if i == 2:
            coords[:, 16] = np.nan  # nose not annotated
        rows.append({
            "moviename": "movie", "coords": coords, "filepath": f"movie-{i:08d}.jpg", "imgdims": np.array([[80.0, 96.0, 3.0]]),
            "currframe": float(i), "torsobox": np.array([[21.0, 11.0, 61.0, 71.0]]), "istrain": int(i < 2), "istest": int(i >= 2),
            "isbad": 0, "isunchecked": 0,
        })
    rows[1].update(broken or {})
    root.mkdir(parents=True, exist_ok=True)
    savemat(root / "examples.mat", {"examples": struct_array(rows, FLIC_FIELDS)})
    for i in range(4):
        write_image(root / "images" / f"movie-{i:08d}.jpg")
    return root


def coco_keypoints(offset: float, missing: tuple[int, ...] = ()) -> list[float]:
    flat = []
    for k in range(17):
        flat += [0.0, 0.0, 0] if k in missing else [20.0 + 2 * k + offset, 10.0 + 3 * k, 2 if k % 2 else 1]
    return flat


def coco_file(path: Path) -> dict:
    names = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
             "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
    content = {
        "images": [{"id": 1, "file_name": "000001.jpg", "width": 96, "height": 80}, {"id": 2, "file_name": "000002.jpg", "width": 96, "height": 80}],
        "categories": [{"id": 1, "name": "person", "supercategory": "person", "keypoints": names, "skeleton": []}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 1, "bbox": [10.0, 5.0, 30.0, 40.0], "area": 1000.0, "iscrowd": 0,
             "num_keypoints": 15, "keypoints": coco_keypoints(0, missing=(3, 4))},
            {"id": 11, "image_id": 1, "category_id": 1, "bbox": [0.0, 0.0, 50.0, 50.0], "area": 2000.0, "iscrowd": 1,
             "num_keypoints": 0, "keypoints": [0] * 51},
            {"id": 12, "image_id": 2, "category_id": 1, "bbox": [5.0, 5.0, 10.0, 10.0], "area": 80.0, "iscrowd": 0,
             "num_keypoints": 0, "keypoints": [0] * 51},
            {"id": 13, "image_id": 2, "category_id": 1, "bbox": [-0.5, 2.0, 64.0, 20.0], "area": 900.0, "iscrowd": 0,
             "num_keypoints": 17, "keypoints": coco_keypoints(5)},
        ],
    }
    write_json(path, content)
    return content


def coco_folder(root: Path) -> Path:
    coco_file(root / "annotations" / "person_keypoints_train2017.json")
    coco_file(root / "annotations" / "person_keypoints_val2017.json")
    for split in ("train2017", "val2017"):
        for name in ("000001.jpg", "000002.jpg"):
            write_image(root / split / name)
    return root

