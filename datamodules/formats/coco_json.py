"""COCO's instances and keypoints JSON as the COCO readers share it (detection, keypoints, semantic
maps): the 2017 layout's paths, the file's dictionary, its annotations grouped by image, and the
``segmentation`` field checked and decoded.
"""
from __future__ import annotations

from collections import Counter

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from core.errors import AnnotationFormatError
from core.records import RecordChecker, RecordProblem, RequiredPath, finite_array
from datamodules.formats.files import load_json
from datamodules.formats.validators import known, record_field

__all__ = [
    "COCO_SPLITS", "coco_required_paths", "coco_content", "coco_annotations_by_image", "coco_images",
    "coco_segmentation", "decode_coco_segmentation",
]


COCO_SPLITS = ("train", "val")


def coco_required_paths(root: Path, annotation_files: Mapping[str, Path], image_dirs: Mapping[str, Path]) -> list[RequiredPath]:
    """The paths of COCO's 2017 layout (root, then each split's annotation file and image folder),
    named by the readers' common arguments ``{split}_annotations`` and ``{split}_images``: the
    splits of ``annotation_files`` (``train``, ``val``, and ``test`` where a reader has one)."""
    paths = [RequiredPath("COCO root", root, "root", "folder")]
    for split in annotation_files:
        paths.append(RequiredPath(f"COCO {split} annotation file", annotation_files[split], f"{split}_annotations"))
        paths.append(RequiredPath(f"COCO {split} image folder", image_dirs[split], f"{split}_images", "folder"))
    return paths


def coco_content(path: Path, task: str) -> dict[str, Any]:
    """The COCO dictionary of ``path``: an object with ``images``, ``categories`` and
    ``annotations`` lists, else ``AnnotationFormatError`` (``task`` says who needs the annotations)."""
    content = load_json(path)
    if not isinstance(content, dict) or not isinstance(content.get("images"), list) or not isinstance(content.get("categories"), list):
        raise AnnotationFormatError(path, "not a COCO annotation file (it needs 'images' and 'categories' lists)")
    if not isinstance(content.get("annotations"), list):
        raise AnnotationFormatError(path, f"no 'annotations' list (an image-info file has none; {task} needs one)")
    return content


def _image_id(info: Any) -> Any:
    """An ``images`` entry's ``id`` when it is one (an int or a str), else ``None``."""
    image_id = info.get("id") if isinstance(info, dict) else None
    return image_id if isinstance(image_id, (int, str)) else None


def duplicated_image_ids(path: Path, content: dict[str, Any], checker: RecordChecker) -> set[Any]:
    """The image ids that several ``images`` entries share. Such an id cannot say whose its
    annotations are: every entry of it is a bad record of kind ``duplicate_image_id`` (``checker``'s
    policy: the error names the file, the image and the id), and a reader leaves the id out with
    its annotations, so that no image receives another's objects."""
    entries: dict[Any, list[int]] = {}
    for index, info in enumerate(content["images"]):
        if (image_id := _image_id(info)) is not None:
            entries.setdefault(image_id, []).append(index)
    duplicated = {image_id for image_id, indices in entries.items() if len(indices) > 1}
    orphans = Counter(a.get("image_id") for a in content["annotations"] if isinstance(a, dict) and known(duplicated, a.get("image_id")))
    for image_id in sorted(duplicated, key=repr):
        names = {i: content["images"][i].get("file_name") for i in entries[image_id]}
        for index, name in names.items():
            others = ", ".join(repr(other) for i, other in names.items() if i != index)
            with checker.record(path, _where(index, image_id, name)):
                raise RecordProblem("duplicate_image_id", f"image id {image_id!r} is also the id of {others}: its "
                                    f"{orphans[image_id]} annotation(s) cannot be told apart, so every image of "
                                    "this id is left out with them")
    return duplicated


def coco_annotations_by_image(path: Path, content: dict[str, Any], checker: RecordChecker) -> tuple[set[Any], dict[Any, list[tuple[int, Any]]]]:
    """The ids of the file's images that the readers may read (none of ``duplicated_image_ids``),
    and their annotations grouped by image id, each with its index in the file; ``coco_images``
    yields no entry of a duplicated id. An annotation that is not an object, or whose ``image_id``
    is none of the images', is a bad record (``unknown_image``)."""
    duplicated = duplicated_image_ids(path, content, checker)
    image_ids = {image_id for info in content["images"] if (image_id := _image_id(info)) is not None} - duplicated
    by_image: dict[Any, list[tuple[int, Any]]] = {}
    for index, annotation in enumerate(content["annotations"]):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if known(image_ids, image_id):
            by_image.setdefault(image_id, []).append((index, annotation))
            continue
        if known(duplicated, image_id):
            continue  # counted with its images in duplicated_image_ids
        where = f"annotation {annotation['id']!r}" if isinstance(annotation, dict) and "id" in annotation else f"annotations[{index}]"
        with checker.record(path, where):
            if not isinstance(annotation, dict):
                raise RecordProblem("wrong_type", f"expected an object, got {type(annotation).__name__}")
            raise RecordProblem("unknown_image", f"image_id {image_id!r} is not one of the file's images")
    return image_ids, by_image


def _where(index: int, image_id: Any, name: Any) -> str:
    """``image 7 ('a.jpg')``, or ``images[3]`` for an entry without an id."""
    return f"images[{index}]" if image_id is None else f"image {image_id!r}" + (f" ({name!r})" if isinstance(name, str) else "")


def coco_images(content: dict[str, Any], image_ids: set[Any], by_image: Mapping[Any, list[tuple[int, Any]]]) -> Iterator[tuple[Any, str, list[tuple[int, Any]]]]:
    """Per entry of ``images`` to read: the entry, where it is (``image 7 ('a.jpg')`` or
    ``images[3]``, for the one-line error) and its annotations. ``image_ids`` and ``by_image`` are
    ``coco_annotations_by_image``'s: an entry whose id is valid but not in ``image_ids`` is one of a
    duplicated id, already counted there, and is not yielded; an entry without a valid id is (the
    reader rejects it)."""
    for index, info in enumerate(content["images"]):
        image_id = _image_id(info)
        if image_id is not None and image_id not in image_ids:
            continue
        raw_id = info.get("id") if isinstance(info, dict) else None
        name = info.get("file_name") if isinstance(info, dict) else None
        yield info, _where(index, raw_id, name), (by_image.get(image_id, []) if image_id is not None else [])


def coco_segmentation(value: Any, height: int, width: int) -> Any:
    """A COCO annotation's ``segmentation`` checked against its ``height x width`` image: polygons
    (a list of ``[x1, y1, x2, y2, ...]`` lists, several for an object in parts) as lists of floats,
    or the RLE dict (``counts`` a compressed string or a list of run lengths) as it is.

    Problems: a polygon that is not x, y pairs (``wrong_type``), holds NaN or inf (``non_finite``)
    or has fewer than 3 points (``polygon_points``: pycocotools would read 2 points as a box); an
    RLE of another size (``size_mismatch``) or whose run lengths do not cover the image
    (``wrong_type``)."""
    if isinstance(value, list):
        if not value:
            raise RecordProblem("polygon_points", "'segmentation' holds no polygon")
        polygons = []
        for k, polygon in enumerate(value):
            field = f"segmentation[{k}]"
            if not isinstance(polygon, list):
                raise RecordProblem("wrong_type", f"{field!r} must be a list of x, y numbers")
            coordinates = finite_array(polygon, field)
            if coordinates.ndim != 1 or len(coordinates) % 2:
                raise RecordProblem("wrong_type", f"{field!r} must be x, y pairs, got {coordinates.size} number(s)")
            if len(coordinates) < 6:
                raise RecordProblem("polygon_points", f"{field!r} has {len(coordinates) // 2} point(s), a polygon needs 3")
            polygons.append(coordinates.tolist())
        return polygons
    if isinstance(value, dict):
        size, counts = record_field(value, "size"), record_field(value, "counts")
        if size != [height, width]:
            raise RecordProblem("size_mismatch", f"the RLE's size {size!r} is not the image's [height, width] [{height}, {width}]")
        if isinstance(counts, list):
            if not all(isinstance(c, int) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise RecordProblem("wrong_type", f"the RLE's counts must be run lengths >= 0 adding up to {height} x {width}")
        elif not isinstance(counts, str):
            raise RecordProblem("wrong_type", "the RLE's counts must be a list of run lengths or a compressed string")
        return value
    raise RecordProblem("wrong_type", f"'segmentation' must be polygons or an RLE, got {type(value).__name__}")


def decode_coco_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """``(H, W)`` bool pixels of one ``coco_segmentation`` (polygons, compressed or uncompressed
    RLE) through ``pycocotools.mask``, as ``COCO.annToMask``: the polygons of one object merged."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)
