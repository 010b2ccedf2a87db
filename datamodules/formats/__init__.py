"""Readers of the real pose datasets on disk, one file per format, each a ``PoseSource``.

* ``MPII`` (HRNet/MMPose or bearpaw JSON) and ``MPIIRelease`` (official ``RELEASE`` .mat):
  16 joints, PCKh@0.5.
* ``LSP`` (with optional LSP-extended training people): 14 joints, PCK@0.2.
* ``FLIC``: 11 upper-body joints, PCK@0.2.
* ``COCOKeypoints``: 17 joints with ground-truth boxes; COCO's OKS AP is
  ``lightning_modules.metrics.coco_keypoints.COCOKeypointAP``.

All records are in 0-based pixel-index coordinates; see each module for its file's conventions.
"""
from datamodules.formats.coco_keypoints import COCOKeypoints
from datamodules.formats.flic import FLIC
from datamodules.formats.lsp import LSP
from datamodules.formats.mpii import MPII, MPIIRelease

__all__ = ["MPII", "MPIIRelease", "LSP", "FLIC", "COCOKeypoints"]
