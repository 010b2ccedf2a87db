"""Readers of the real datasets on disk, one file per format.

Pose, each a ``PoseSource``:

* ``MPII`` (HRNet/MMPose or bearpaw JSON) and ``MPIIRelease`` (official ``RELEASE`` .mat):
  16 joints, PCKh@0.5.
* ``LSP`` (with optional LSP-extended training people): 14 joints, PCK@0.2.
* ``FLIC``: 11 upper-body joints, PCK@0.2.
* ``COCOKeypoints``: 17 joints with ground-truth boxes; COCO's OKS AP is
  ``lightning_modules.metrics.coco_keypoints.COCOKeypointAP``.

All pose records are in 0-based pixel-index coordinates; see each module for its file's conventions.

Semantic segmentation, each a ``SegmentationSource`` whose labels load as training labels with
255 ignored:

* ``VOCSegmentation``: PASCAL VOC 2012 palette PNGs (21 classes), optionally SBD's training images.
* ``CamVid``: SegNet's CamVid folders or list files (11 classes, void ignored).
* ``Cityscapes``: ``gtFine`` labelIds mapped to the 19 train ids.
* ``MaskFolder``: image and mask folders matched by name, with a class list and a value mapping.
* ``COCOSemantic``: COCO instance polygons and RLE painted into label maps.
* ``CVATSegmentation``: CVAT for images 1.1 XML, polygons and boxes painted in ``z_order``.
* ``SIIMPneumothorax``: SIIM-ACR DICOM radiographs with the competition's run-length masks.

Object detection and instance segmentation, each a ``DetectionSource`` (boxes XYXY in continuous
pixels, labels ``1 .. C``, ``category_ids`` mapping them back to the dataset's ids):

* ``COCODetection``: COCO instances JSON (non-contiguous category ids, crowds, polygon and RLE
  masks, keypoints), with the split's file for the official evaluation.
* ``VOCDetection``: PASCAL VOC XML (20 classes, ``difficult`` and ``truncated``, 1-based boxes
  converted), 07+12 list combinations.
* ``YOLOText``: Ultralytics ``images/`` + ``labels/`` txt (normalised boxes or segments) with
  ``data.yaml`` names.
* ``CSVDetection``: keras-retinanet CSV, several lines per image, with an optional class map.
* ``DSB2018``: Kaggle DSB 2018 nuclei, one mask PNG per instance, boxes from the masks.
* ``CVATDetection``: CVAT for images 1.1 XML, boxes and polygons (as instance masks).

``python -m datamodules convert`` converts between COCO, VOC and YOLO (``datamodules.convert``).

The classification + localisation reader is ``datamodules.formats.csv_boxes.CSVBoxes``.
"""
from datamodules.formats.camvid import CamVid
from datamodules.formats.cityscapes import Cityscapes
from datamodules.formats.coco_detection import COCODetection
from datamodules.formats.coco_keypoints import COCOKeypoints
from datamodules.formats.coco_semantic import COCOSemantic
from datamodules.formats.csv_detection import CSVDetection
from datamodules.formats.cvat_xml import CVATDetection, CVATSegmentation
from datamodules.formats.dsb2018 import DSB2018
from datamodules.formats.flic import FLIC
from datamodules.formats.lsp import LSP
from datamodules.formats.mask_folder import MaskFolder
from datamodules.formats.mpii import MPII, MPIIRelease
from datamodules.formats.siim_pneumothorax import SIIMPneumothorax
from datamodules.formats.voc_detection import VOCDetection
from datamodules.formats.voc_segmentation import VOCSegmentation
from datamodules.formats.yolo_txt import YOLOText

__all__ = [
    "MPII", "MPIIRelease", "LSP", "FLIC", "COCOKeypoints", "VOCSegmentation", "CamVid", "Cityscapes", "MaskFolder", "COCOSemantic",
    "COCODetection", "VOCDetection", "YOLOText", "CSVDetection", "DSB2018", "CVATDetection", "CVATSegmentation",
    "SIIMPneumothorax",
]
