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

The classification + localisation reader is ``datamodules.formats.csv_boxes.CSVBoxes``.
"""
from datamodules.formats.camvid import CamVid
from datamodules.formats.cityscapes import Cityscapes
from datamodules.formats.coco_keypoints import COCOKeypoints
from datamodules.formats.coco_semantic import COCOSemantic
from datamodules.formats.flic import FLIC
from datamodules.formats.lsp import LSP
from datamodules.formats.mask_folder import MaskFolder
from datamodules.formats.mpii import MPII, MPIIRelease
from datamodules.formats.voc_segmentation import VOCSegmentation

__all__ = ["MPII", "MPIIRelease", "LSP", "FLIC", "COCOKeypoints", "VOCSegmentation", "CamVid", "Cityscapes", "MaskFolder", "COCOSemantic"]
