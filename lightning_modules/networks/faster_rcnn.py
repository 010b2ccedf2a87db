"""Faster R-CNN (Ren et al. 2015) with a feature pyramid (Lin et al. 2017): torchvision's model,
its parts configured from YAML.

    backbone + FPN ──► RPN (anchors per level, objectness + box deltas, NMS) ──► proposals
        ──► MultiScaleRoIAlign 7x7 ──► box head ──► class scores + class-specific box deltas

Variants by composition: ``fasterrcnn_resnet50_fpn`` is ``ResNetFPN(50)`` with the default heads;
``_v2`` (Li et al. 2021) is ``ResNetFPN(50, fpn_norm=True)`` with ``rpn_conv_depth: 2`` and a
box head of four 3x3 convolutions with batch norm and one FC of 1,024 (``box_head_convs:
[256, 256, 256, 256]``, ``box_head_fcs: [1024]``, ``box_head_norm: true``); the MobileNetV3
detector is ``MobileNetV3FPN`` with anchors of five sizes at each of its three levels and, at 320,
``min_size: 320, max_size: 640`` and 150 proposals (torchvision's ``..._320_fpn``). The paper's own
VGG-16 detector is ``VGG16C5`` (conv5_3, one stride-16 map, no FPN) with ``anchor_sizes: [[128,
256, 512]]`` (9 anchors at one level) and ``box_head: VGG16BoxHead`` (VGG's fc6 and fc7 with
dropout, initialised from the same ImageNet file).

Losses in train mode: ``loss_objectness``, ``loss_rpn_box_reg`` (RPN), ``loss_classifier``,
``loss_box_reg`` (box head). See ``lightning_modules.networks.detector`` for inputs and outputs.
"""
from __future__ import annotations

from torch import nn
from torchvision.models.detection import faster_rcnn
from torchvision.models.detection.rpn import RPNHead
from torchvision.ops import MultiScaleRoIAlign

from core.errors import ArgumentValueError
from lightning_modules.networks.detector import TorchvisionDetector, anchor_generator

__all__ = ["FasterRCNN", "rcnn_kwargs", "roi_align"]

RPN_DEFAULTS = {
    "rpn_pre_nms_top_n_train": 2000, "rpn_pre_nms_top_n_test": 1000, "rpn_post_nms_top_n_train": 2000,
    "rpn_post_nms_top_n_test": 1000, "rpn_nms_thresh": 0.7, "rpn_fg_iou_thresh": 0.7, "rpn_bg_iou_thresh": 0.3,
    "rpn_batch_size_per_image": 256, "rpn_positive_fraction": 0.5, "rpn_score_thresh": 0.0,
}


class FasterRCNN(TorchvisionDetector):
    """Faster R-CNN with an FPN backbone, or the paper's single-map VGG-16.

    Args:
        backbone: a feature pyramid (``ResNetFPN``, ``MobileNetV3FPN``) or one map (``VGG16C5``)
            with ``out_channels``.
        num_classes: classes with the background (``len(class_names) + 1`` of the data).
        weights: a local checkpoint of the whole detector (see ``TorchvisionDetector``).
        min_size: the shorter image side after the detector's own resize (800 in the paper's
            COCO recipe; the images are resized inside, so the data keeps them as they are).
        max_size: the longer side's limit after that resize.
        anchor_sizes: anchor sizes (pixels) per pyramid level; ``None``: 32, 64, 128, 256, 512,
            one per level (ResNet-FPN) or all five on each of the three levels (MobileNetV3).
        aspect_ratios: anchor aspect ratios (height / width), the same at every level.
        rpn_conv_depth: 3x3 convolutions of the RPN head (1; 2 in the v2 models).
        rpn: overrides of the RPN's parameters, torchvision's names without ``rpn_``
            (``pre_nms_top_n_train``, ``post_nms_top_n_test``, ``batch_size_per_image``,
            ``positive_fraction``, ``fg_iou_thresh``, ``score_thresh``, ...).
        box_head_convs: channels of the 3x3 convolutions of the box head before its FCs ([] for
            the paper's two-FC head).
        box_head_fcs: widths of its fully connected layers ([1024, 1024]: torchvision's
            ``TwoMLPHead``, whose parameter names the COCO checkpoints use).
        box_head_norm: batch norm after the box head's convolutions (v2).
        box_head: a box head module in place of the one ``box_head_convs`` / ``box_head_fcs``
            describe (not with them): it maps the ``(R, out_channels, 7, 7)`` RoI features to
            ``(R, box_head.out_channels)``; ``VGG16BoxHead``: VGG's fc6 and fc7.
        roi_sampling_ratio: RoIAlign's sampling points per bin side, for the box head and the
            mask and keypoint branches (2: four points per bin, as in the paper, which notes the
            results are not sensitive to how many points are sampled; 1 makes RoIAlign's backward,
            single-threaded on a CPU, four times cheaper).
        box_batch_size_per_image: RoIs sampled per image for the box head's loss (512).
        box_positive_fraction: the foreground share of those RoIs (0.25).
        box_score_thresh: detections below this score are dropped at inference (0.05).
        box_nms_thresh: per-class NMS IoU at inference (0.5).
        box_detections_per_img: detections kept per image (100, COCO's maximum).
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        weights: str | None = None,
        min_size: int = 800,
        max_size: int = 1333,
        anchor_sizes: list[list[int]] | None = None,
        aspect_ratios: list[float] | None = None,
        rpn_conv_depth: int = 1,
        rpn: dict[str, int | float] | None = None,
        box_head_convs: list[int] | None = None,
        box_head_fcs: list[int] | None = None,
        box_head_norm: bool = False,
        box_head: nn.Module | None = None,
        roi_sampling_ratio: int = 2,
        box_batch_size_per_image: int = 512,
        box_positive_fraction: float = 0.25,
        box_score_thresh: float = 0.05,
        box_nms_thresh: float = 0.5,
        box_detections_per_img: int = 100,
    ) -> None:
        super().__init__(num_classes, weights)
        object.__setattr__(self, "_backbone", backbone)  # registered once, inside the detector
        if box_head is not None:
            if box_head_convs or box_head_fcs is not None or box_head_norm:
                raise ArgumentValueError.of(self, "box_head", "replaces box_head_convs, box_head_fcs and box_head_norm: give one or the other")
            if not isinstance(getattr(box_head, "out_channels", None), int):
                raise ArgumentValueError.of(self, "box_head", f"({type(box_head).__name__}) needs an int out_channels (its output width)")
            if getattr(box_head, "in_channels", backbone.out_channels) != backbone.out_channels:
                raise ArgumentValueError.of(self, "box_head", f"reads {box_head.in_channels} channels but the backbone gives {backbone.out_channels}")
        if roi_sampling_ratio < 1:
            raise ArgumentValueError.of(self, "roi_sampling_ratio", f"must be >= 1, got {roi_sampling_ratio}")
        unknown = sorted(set(rpn or {}) - {k[len("rpn_"):] for k in RPN_DEFAULTS})
        if unknown:
            raise ArgumentValueError.of(self, "rpn", f"has unknown keys {unknown}; known: {sorted(k[4:] for k in RPN_DEFAULTS)}")
        self.options = {
            "min_size": min_size, "max_size": max_size, "anchor_sizes": anchor_sizes, "aspect_ratios": aspect_ratios or [0.5, 1.0, 2.0],
            "rpn_conv_depth": rpn_conv_depth, "rpn": {f"rpn_{k}": v for k, v in (rpn or {}).items()},
            "box_head_convs": list(box_head_convs or []), "box_head_fcs": list(box_head_fcs or [1024, 1024]), "box_head_norm": box_head_norm,
            "box_head": box_head, "roi_sampling_ratio": roi_sampling_ratio,
            "box": {
                "box_batch_size_per_image": box_batch_size_per_image, "box_positive_fraction": box_positive_fraction,
                "box_score_thresh": box_score_thresh, "box_nms_thresh": box_nms_thresh, "box_detections_per_img": box_detections_per_img,
            },
        }
        self.finish()

    def make(self) -> nn.Module:
        return faster_rcnn.FasterRCNN(self._backbone, num_classes=None, **rcnn_kwargs(self))


def roi_align(output_size: int, options: dict) -> MultiScaleRoIAlign:
    """torchvision's RoIAlign over the pyramid's levels ("0" to "3", those the backbone returns)
    with ``output_size`` bins a side and the configured sampling."""
    return MultiScaleRoIAlign(["0", "1", "2", "3"], output_size, sampling_ratio=options["roi_sampling_ratio"])


def rcnn_kwargs(network: FasterRCNN) -> dict:
    """The keyword arguments of torchvision's R-CNN classes (Faster, Mask, Keypoint) for the
    ``network``'s classes and the options its ``__init__`` collected: anchors, RPN head and
    parameters, box head and predictor, sampling and inference thresholds."""
    backbone, num_classes, options = network._backbone, network.num_classes, network.options
    channels = backbone.out_channels
    anchors = anchor_generator(network, backbone, options["anchor_sizes"], options["aspect_ratios"], default=(32, 64, 128, 256, 512))
    rpn_head = RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=options["rpn_conv_depth"])
    convs, fcs = options["box_head_convs"], options["box_head_fcs"]
    box_head = options.get("box_head")
    if box_head is not None:
        fcs = [box_head.out_channels]  # the predictor reads its output
    elif not convs and len(fcs) == 2 and fcs[0] == fcs[1]:
        box_head = faster_rcnn.TwoMLPHead(channels * 7 * 7, fcs[0])  # torchvision's parameter names (fc6, fc7)
    else:
        norm = nn.BatchNorm2d if options["box_head_norm"] else None
        box_head = faster_rcnn.FastRCNNConvFCHead((channels, 7, 7), convs, fcs, norm_layer=norm)
    return {
        "min_size": options["min_size"], "max_size": options["max_size"],
        "rpn_anchor_generator": anchors, "rpn_head": rpn_head, **options["rpn"],
        "box_roi_pool": roi_align(7, options), "box_head": box_head, "box_predictor": faster_rcnn.FastRCNNPredictor(fcs[-1], num_classes), **options["box"],
    }
