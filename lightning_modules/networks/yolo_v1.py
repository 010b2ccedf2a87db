"""YOLO v1 (Redmon, Divvala, Girshick, Farhadi, "You Only Look Once: Unified, Real-Time Object
Detection", CVPR 2016), written from the paper: one network regresses every box of the image.

    image resized to 448x448, ImageNet-normalised
      ──► backbone: the first 20 convolutions of Fig. 3 (the part pretrained on ImageNet)
      ──► extra: 4 more convolutions (the last one of stride 2)      ──► (N, 1024, 7, 7)
      ──► FC 7*7*1024 → 4096, dropout 0.5 ──► FC 4096 → S*S*(B*5 + C) ──► (N, S, S, B*5 + C)

Every convolution has a bias and no batch norm, padding k // 2, and a leaky ReLU of slope 0.1, as
has the first FC; the last FC is linear. S = 7, B = 2 and C = 20 (VOC) give 271,703,550
parameters (convolutions 60,155,968, FCs 211,547,582).

Output layout, per cell ``(row i, column j)``: B times ``(x, y, √w, √h, confidence)`` then the C
class probabilities ``Pr(class | object)`` (one set per cell). ``x, y`` is the box centre's offset
inside the cell, so the centre is ``((j + x) / S, (i + y) / S)`` of the image; the network predicts
the square root of the width and height (relative to the image), so ``w = (√w)²``. Nothing is
squashed: every output is a raw linear value, as in the paper.

Loss (train mode, the paper's Eq. 3), sum-squared error over the batch divided by the number of
images, returned as four terms:

* ``loss_coord``: λcoord (5) x [(x - x̂)² + (y - ŷ)² + (√w - √ŵ)² + (√h - √ĥ)²] of the responsible
  predictor of each cell that holds an object's centre. The responsible predictor is the one of B
  whose current box has the highest IoU with the ground truth, chosen without gradient (ties, such
  as all IoUs 0 early in training, go to the first predictor; darknet breaks them by the smallest
  squared error, which the paper does not describe);
* ``loss_conf_obj``: (confidence - IoU)² of the responsible predictors, with the IoU of its
  current box (detached) as the target, the paper's ``Pr(Object) x IoU``;
* ``loss_conf_noobj``: λnoobj (0.5) x confidence² of every other predictor, the non-responsible
  ones of an object's cell included;
* ``loss_class``: Σ over the C classes of (p(c) - 1[c = label])², only in cells that hold an
  object's centre.

One object per cell: the paper's model predicts one class per cell, so when several objects'
centres fall in one cell only the largest (by area; the first given among equal areas) is its
ground truth and the others are not learnt (darknet keeps the first after shuffling the boxes, a
random one).

Decoding (eval mode): each of the S*S*B boxes gets C class-specific scores ``Pr(class | object) x
confidence``; those above ``score_thresh`` are kept, boxes are scaled to each image's own size and
clipped to it, per-class NMS at ``nms_thresh`` removes duplicates and the ``detections_per_img``
best remain.

Fast YOLO (``variant: fast``): the paper only says "9 convolutional layers instead of 24 and fewer
filters in those layers", with everything else the same. The layers here are those of darknet's
``yolo-tiny.cfg`` of YOLO v1.0, the Fast YOLO released with the paper: 3x3 convolutions of 16, 32,
64, 128, 256, 512 filters each followed by a 2x2 max-pool, then three 3x3 convolutions of 1024
(no batch norm), and the FC head behind a linear 256-wide FC (7*7*1024 → 256 → 4096 → S*S*30):
45,089,374 parameters for VOC. The part treated as the ImageNet-pretrained backbone is the first
7 convolutions (the paper does not say how Fast YOLO was pretrained).

Inputs and outputs follow ``lightning_modules.networks.detector``: ``forward(images, targets)``
takes a list of ``(3, H, W)`` float images in ``[0, 1]`` of any sizes (or an ``(N, 3, H, W)``
batch) and, in training, targets with ``boxes`` ``(K, 4)`` XYXY in the image's pixels and
``labels`` ``1..C``; it returns the loss dict in train mode and, in eval mode, one dict per image
of ``boxes`` ``(D, 4)`` XYXY in the image's own pixels, ``labels`` ``(D,)`` in ``1..C`` and
``scores`` ``(D,)``. ``YOLODetector.predict(batch)`` gives the raw ``(N, S, S, B*5 + C)`` output.
"""
from __future__ import annotations

from typing import Any, Literal, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_area, box_convert, clip_boxes_to_image, remove_small_boxes

from core.errors import ArgumentValueError, ConfigError
from core.imaging import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.networks.weights import load_weights_file
from lightning_modules.networks.detector import TorchvisionDetector, resize_batch

__all__ = ["YOLOv1", "YOLODetector", "YOLOBackbone", "YOLOHead", "yolo_loss", "decode", "LAYOUTS"]

# A convolution is (kernel, filters, stride); "M" is a 2x2 max-pool of stride 2.
Layer = tuple[int, int, int] | str


class Layout(NamedTuple):
    backbone: list[Layer]  # pretrained on ImageNet
    extra: list[Layer]  # added for detection, randomly initialised
    bottleneck: int  # a linear FC of this width before the 4096-wide one (0: none)


# Fig. 3: the 20 pretrained convolutions, then 4 added ones; 448 / 64 = 7.
YOLO_LAYOUT = Layout(
    backbone=[(7, 64, 2), "M", (3, 192, 1), "M", (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M",
              *[(1, 256, 1), (3, 512, 1)] * 4, (1, 512, 1), (3, 1024, 1), "M",
              *[(1, 512, 1), (3, 1024, 1)] * 2],
    extra=[(3, 1024, 1), (3, 1024, 2), (3, 1024, 1), (3, 1024, 1)],
    bottleneck=0,
)
# darknet's YOLO v1.0 yolo-tiny.cfg (see the module docstring); 448 / 64 = 7.
FAST_YOLO_LAYOUT = Layout(
    backbone=[(3, 16, 1), "M", (3, 32, 1), "M", (3, 64, 1), "M", (3, 128, 1), "M", (3, 256, 1), "M", (3, 512, 1), "M", (3, 1024, 1)],
    extra=[(3, 1024, 1), (3, 1024, 1)],
    bottleneck=256,
)
LAYOUTS = {"full": YOLO_LAYOUT, "fast": FAST_YOLO_LAYOUT}


# ---------------------------------------------------------------------- blocks
def conv_layers(layers: Sequence[Layer], in_channels: int, width: float = 1.0) -> tuple[nn.Sequential, int]:
    """The convolutions (bias, no batch norm, leaky ReLU 0.1) and max-pools of ``layers``, with
    ``width`` x the filters; returns them and their output channels."""
    modules: list[nn.Module] = []
    for layer in layers:
        if layer == "M":
            modules.append(nn.MaxPool2d(2, 2))
            continue
        kernel, filters, stride = layer
        filters = max(1, round(filters * width))
        conv = nn.Conv2d(in_channels, filters, kernel, stride, padding=kernel // 2)
        modules.append(nn.Sequential(conv, nn.LeakyReLU(0.1, inplace=True)))
        in_channels = filters
    return nn.Sequential(*modules), in_channels


def he_init(network: nn.Module) -> None:
    """He initialisation for leaky-ReLU (0.1) layers and zero biases, for every convolution and
    linear layer of ``network``.

    Why not PyTorch's defaults: with them each of the 24 batch-norm-free convolutions shrinks its
    input's variance about six-fold (weights of variance 1/(3 fan_in), then the leaky ReLU halves
    it), so at the head the output no longer depends on the image (two random images give outputs
    2.5e-7 apart) and training from scratch learns nothing. Darknet initialises the same way."""
    for module in network.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, a=0.1, mode="fan_in", nonlinearity="leaky_relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def feature_size(layers: Sequence[Layer], size: int) -> int:
    """The side of the feature map that ``layers`` make of a ``size`` x ``size`` input."""
    for layer in layers:
        # "Same" padding: a stride-s convolution gives ceil(size / s); a 2x2 pool floor(size / 2).
        size = size // 2 if layer == "M" else (size - 1) // layer[2] + 1
    return size


class YOLOBackbone(nn.Sequential):
    """The convolutions of YOLO v1 that the paper pretrains on ImageNet (the first 20 of Fig. 3; the
    first 7 of Fast YOLO), alone, for that pretraining: a classifier is this, a global average pool
    and one FC (the paper's Sec. 2.2), e.g. ``localizer.Localizer(backbone=YOLOBackbone(...))``.

    ``(N, 3, H, W)`` ImageNet-normalised images → ``(N, out_channels, H / 32, W / 32)`` (five
    max-pools of 2 for YOLO, six for Fast YOLO: ``H / 64``; floor division). Its state dict has the
    keys of ``YOLODetector.backbone``, so a trained one saved alone is the detector's
    ``backbone_weights`` file.

    Args:
        variant: ``full`` (YOLO) or ``fast`` (Fast YOLO).
        width: multiplier of every convolution's filters, as the detector's ``width``.
    """

    def __init__(self, variant: Literal["full", "fast"] = "full", width: float = 1.0) -> None:
        if variant not in LAYOUTS:
            raise ArgumentValueError.of(self, "variant", f"must be one of {sorted(LAYOUTS)}, got {variant!r}")
        if width <= 0:
            raise ArgumentValueError.of(self, "width", f"must be > 0, got {width}")
        layers, channels = conv_layers(LAYOUTS[variant].backbone, 3, width)
        super().__init__(*layers)
        self.out_channels = channels
        he_init(self)


class YOLOHead(nn.Sequential):
    """The fully connected part: ``(N, C, h, w)`` features → ``(N, S, S, B*5 + classes)``.

    Flatten ──► [FC → bottleneck, linear] ──► FC → hidden, leaky ReLU 0.1, dropout ──► FC (linear)
    """

    def __init__(self, in_features: int, hidden: int, grid: int, outputs_per_cell: int, dropout: float = 0.5, bottleneck: int = 0) -> None:
        layers: list[nn.Module] = [nn.Flatten()]
        if bottleneck:
            layers.append(nn.Linear(in_features, bottleneck))
            in_features = bottleneck
        layers += [
            nn.Linear(in_features, hidden),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, grid * grid * outputs_per_cell),
            # (N, S*S*D) -> (N, S, S, D): row-major cells, as the paper's S x S x (B*5 + C) tensor.
            nn.Unflatten(1, (grid, grid, outputs_per_cell)),
        ]
        super().__init__(*layers)


# ---------------------------------------------------------------------- boxes of the grid
def cell_boxes(box_outputs: Tensor) -> Tensor:
    """``(N, S, S, B, >=4)`` raw ``(x, y, √w, √h, ...)`` → ``(N, S, S, B, 4)`` XYXY boxes in image
    fractions (``[0, 1]`` inside the image)."""
    grid = box_outputs.shape[1]
    cells = torch.arange(grid, device=box_outputs.device, dtype=box_outputs.dtype)
    cx = (box_outputs[..., 0] + cells.view(1, 1, grid, 1)) / grid  # columns run along dim 2
    cy = (box_outputs[..., 1] + cells.view(1, grid, 1, 1)) / grid  # rows along dim 1
    wh = box_outputs[..., 2:4] ** 2
    return box_convert(torch.cat([cx[..., None], cy[..., None], wh], -1), "cxcywh", "xyxy")


def paired_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """IoU of each box of ``boxes1`` with the box at the same place in ``boxes2`` (broadcast),
    XYXY; ``box_iou`` would compute every pair."""
    top_left = torch.max(boxes1[..., :2], boxes2[..., :2])
    bottom_right = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(-1)
    area1 = (boxes1[..., 2:] - boxes1[..., :2]).clamp(min=0).prod(-1)
    area2 = (boxes2[..., 2:] - boxes2[..., :2]).clamp(min=0).prod(-1)
    return inter / (area1 + area2 - inter).clamp(min=1e-12)


# ---------------------------------------------------------------------- loss
def encode_targets(targets: Sequence[dict[str, Tensor]], image_sizes: Sequence[tuple[int, int]], grid: int, num_classes: int,
                   device: torch.device | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The ground truth per cell: ``objects`` ``(N, S, S)`` bool (an object's centre is in the
    cell), ``boxes`` ``(N, S, S, 4)`` its XYXY box in image fractions, ``classes`` ``(N, S, S, C)``
    one-hot. One object per cell: the largest (the first given among equal areas)."""
    n = len(targets)
    objects = torch.zeros(n, grid, grid, dtype=torch.bool, device=device)
    boxes = torch.zeros(n, grid, grid, 4, device=device)
    classes = torch.zeros(n, grid, grid, num_classes, device=device)
    for index, (target, (height, width)) in enumerate(zip(targets, image_sizes)):
        if not len(target["boxes"]):
            continue
        scale = torch.tensor([width, height, width, height], dtype=torch.float32, device=device)
        xyxy = target["boxes"].to(device, torch.float32) / scale
        centres = (xyxy[:, :2] + xyxy[:, 2:]) / 2
        col, row = (centres * grid).long().clamp(0, grid - 1).unbind(1)
        cell = row * grid + col
        # Largest first, then a stable sort by cell: the first of each cell's run is its largest.
        order = box_area(xyxy).argsort(descending=True, stable=True)
        sorted_cells, by_cell = cell[order].sort(stable=True)
        first = torch.ones_like(sorted_cells, dtype=torch.bool)
        first[1:] = sorted_cells[1:] != sorted_cells[:-1]
        keep = order[by_cell[first]]
        objects[index, row[keep], col[keep]] = True
        boxes[index, row[keep], col[keep]] = xyxy[keep]
        classes[index, row[keep], col[keep], target["labels"].to(device)[keep].long() - 1] = 1.0
    return objects, boxes, classes


def yolo_loss(
    predictions: Tensor,
    targets: Sequence[dict[str, Tensor]],
    image_sizes: Sequence[tuple[int, int]],
    boxes_per_cell: int = 2,
    lambda_coord: float = 5.0,
    lambda_noobj: float = 0.5,
) -> dict[str, Tensor]:
    """The paper's Eq. 3 (see the module docstring) of raw ``(N, S, S, B*5 + C)`` predictions for
    targets with XYXY ``boxes`` in the pixels of images of ``image_sizes`` ``(H, W)`` and
    ``labels`` ``1..C``; each term summed over the batch and divided by the number of images."""
    predictions = predictions.float()
    n, grid, _, depth = predictions.shape
    num_classes = depth - 5 * boxes_per_cell
    box_outputs = predictions[..., : 5 * boxes_per_cell].unflatten(-1, (boxes_per_cell, 5))  # (N, S, S, B, 5)
    probabilities = predictions[..., 5 * boxes_per_cell :]  # (N, S, S, C)
    objects, gt_boxes, gt_classes = encode_targets(targets, image_sizes, grid, num_classes, predictions.device)

    with torch.no_grad():
        # (N, S, S, B): each predictor's current box against its cell's ground truth.
        iou = paired_iou(cell_boxes(box_outputs), gt_boxes[..., None, :])
        responsible = F.one_hot(iou.argmax(-1), boxes_per_cell).bool() & objects[..., None]

    # The regression targets: the centre's offset in its cell and the square roots of the size.
    cells = torch.arange(grid, device=predictions.device, dtype=predictions.dtype)
    centres = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2 * grid
    offsets = centres - torch.stack(torch.meshgrid(cells, cells, indexing="xy"), -1)  # (S, S, 2): (column, row) per cell
    sqrt_sizes = (gt_boxes[..., 2:] - gt_boxes[..., :2]).clamp(min=0).sqrt()
    coords = torch.cat([offsets, sqrt_sizes], -1)[..., None, :]  # (N, S, S, 1, 4), broadcast over B

    confidence = box_outputs[..., 4]
    coord_error = ((box_outputs[..., :4] - coords) ** 2).sum(-1)
    class_error = ((probabilities - gt_classes) ** 2).sum(-1)
    return {
        "loss_coord": lambda_coord * coord_error[responsible].sum() / n,
        "loss_conf_obj": ((confidence - iou) ** 2)[responsible].sum() / n,
        "loss_conf_noobj": lambda_noobj * (confidence**2)[~responsible].sum() / n,
        "loss_class": class_error[objects].sum() / n,
    }


# ---------------------------------------------------------------------- decoding
def decode(
    predictions: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    boxes_per_cell: int = 2,
    score_thresh: float = 0.005,
    nms_thresh: float = 0.5,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """Raw ``(N, S, S, B*5 + C)`` predictions → one dict per image of ``boxes`` (XYXY, in the
    pixels of the image of ``image_sizes`` ``(H, W)``, clipped to it), ``labels`` (``1..C``) and
    ``scores`` (``Pr(class | object) x confidence``) after per-class NMS."""
    box_outputs = predictions[..., : 5 * boxes_per_cell].unflatten(-1, (boxes_per_cell, 5))
    probabilities = predictions[..., 5 * boxes_per_cell :]
    # Every box with every class: (N, S, S, B, 4) and (N, S, S, B, C) -> (N, S*S*B, 4), (N, S*S*B, C).
    boxes = cell_boxes(box_outputs).flatten(1, 3)
    scores = (box_outputs[..., 4, None] * probabilities[..., None, :]).flatten(1, 3)
    results = []
    for boxes_per_image, scores_per_image, (height, width) in zip(boxes, scores, image_sizes):
        boxes_per_image = boxes_per_image * boxes_per_image.new_tensor([width, height, width, height])
        boxes_per_image = clip_boxes_to_image(boxes_per_image, (height, width))
        box_index, class_index = (scores_per_image > score_thresh).nonzero(as_tuple=True)
        candidates, candidate_scores = boxes_per_image[box_index], scores_per_image[box_index, class_index]
        # Boxes clipped away to nothing, as torchvision's detectors drop them.
        visible = remove_small_boxes(candidates, 1e-2)
        candidates, candidate_scores, class_index = candidates[visible], candidate_scores[visible], class_index[visible]
        keep = batched_nms(candidates, candidate_scores, class_index, nms_thresh)[:detections_per_img]
        results.append({"boxes": candidates[keep], "labels": class_index[keep] + 1, "scores": candidate_scores[keep]})
    return results


# ---------------------------------------------------------------------- the model
class YOLODetector(nn.Module):
    """The whole YOLO: resize and normalise, the convolutions, the FC head, then the loss or the
    detections (see the module docstring for the inputs and outputs).

    Args:
        num_classes: object classes C (no background).
        layout: the convolutions and the head's bottleneck (``YOLO_LAYOUT``, ``FAST_YOLO_LAYOUT``).
        width: multiplier of every convolution's filters.
        fc_width: width of the hidden FC (4096).
        grid: cells per side S (7).
        boxes_per_cell: predictors per cell B (2).
        input_size: side of the square the images are resized to (448).
        dropout: after the hidden FC (0.5).
        lambda_coord, lambda_noobj: the loss weights (5, 0.5).
        score_thresh, nms_thresh, detections_per_img: the decoding (0.005, 0.5, 100).
    """

    def __init__(
        self,
        num_classes: int,
        layout: Layout = YOLO_LAYOUT,
        width: float = 1.0,
        fc_width: int = 4096,
        grid: int = 7,
        boxes_per_cell: int = 2,
        input_size: int = 448,
        dropout: float = 0.5,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        score_thresh: float = 0.005,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__()
        side = feature_size([*layout.backbone, *layout.extra], input_size)
        if side < 1:
            raise ConfigError(f"YOLOv1.input_size {input_size} leaves no feature map after the layers' stride of 64")
        self.num_classes, self.grid, self.boxes_per_cell, self.input_size = num_classes, grid, boxes_per_cell, input_size
        self.lambda_coord, self.lambda_noobj = lambda_coord, lambda_noobj
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.backbone, channels = conv_layers(layout.backbone, 3, width)
        self.extra, channels = conv_layers(layout.extra, channels, width)
        self.head = YOLOHead(channels * side * side, fc_width, grid, boxes_per_cell * 5 + num_classes, dropout, layout.bottleneck)
        self.reset_parameters()
        # Not in the state dict: a checkpoint holds only learnt weights.
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def reset_parameters(self) -> None:
        """He initialisation for the leaky-ReLU layers, zero biases (``he_init``)."""
        he_init(self)
        # The last FC is linear and its outputs are regressed to targets in [0, 1]: He weights
        # there start every output at several units and the first epoch goes on shrinking them.
        # Small weights (detectron2's 0.01 for prediction layers) start the outputs near 0.
        last = [module for module in self.head if isinstance(module, nn.Linear)][-1]
        nn.init.normal_(last.weight, std=0.01)

    def predict(self, batch: Tensor) -> Tensor:
        """``(N, 3, input_size, input_size)`` normalised images → ``(N, S, S, B*5 + C)``."""
        return self.head(self.extra(self.backbone(batch)))

    def prepare(self, images: Sequence[Tensor]) -> Tensor:
        """``(3, H, W)`` images in ``[0, 1]`` → one ``(N, 3, input_size, input_size)`` normalised
        batch (bilinear resize, as torchvision's detectors resize)."""
        return resize_batch(images, (self.input_size, self.input_size), self.image_mean, self.image_std)

    def forward(
        self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("YOLO needs targets in train mode")
        image_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        predictions = self.predict(self.prepare(images))
        if self.training:
            return yolo_loss(predictions, targets, image_sizes, self.boxes_per_cell, self.lambda_coord, self.lambda_noobj)
        return decode(predictions, image_sizes, self.boxes_per_cell, self.score_thresh, self.nms_thresh, self.detections_per_img)


class YOLOv1(TorchvisionDetector):
    """YOLO v1 or Fast YOLO.

    Args:
        num_classes: classes with the background (the suite's convention; YOLO predicts
            ``num_classes - 1``): ``len(class_names) + 1`` of the data.
        weights: a local checkpoint of the whole ``YOLODetector``; layers whose shape differs
            (the last FC, for other classes) keep their initialisation.
        backbone_weights: a local state dict of the ImageNet-pretrained convolutions (the keys of
            ``YOLODetector.backbone``: the first 20 convolutions, the first 7 for Fast YOLO);
            ``None``: random initialisation.
        backbone_weights_hint: how to make ``backbone_weights`` when it is missing (e.g. the
            pretraining run that writes it), said in the error; ``None``: that weights are never
            downloaded.
        variant: ``full`` (YOLO, 24 convolutions) or ``fast`` (Fast YOLO, 9).
        width: multiplier of every convolution's filters (1; smaller for tests).
        fc_width: the hidden FC's width (4096).
        grid: cells per side S (7).
        boxes_per_cell: boxes predicted per cell B (2).
        input_size: side of the square every image is resized to (448).
        dropout: dropout after the hidden FC (0.5).
        lambda_coord: weight of the coordinate errors (5).
        lambda_noobj: weight of the confidence errors of predictors without an object (0.5).
        score_thresh: detections scoring below it are dropped (0.005: low, because VOC's AP
            integrates over the whole precision-recall curve; pictures need a higher one).
        nms_thresh: IoU of the per-class NMS (0.5).
        detections_per_img: detections kept per image (100).
    """

    def __init__(
        self,
        num_classes: int,
        weights: str | None = None,
        backbone_weights: str | None = None,
        backbone_weights_hint: str | None = None,
        variant: Literal["full", "fast"] = "full",
        width: float = 1.0,
        fc_width: int = 4096,
        grid: int = 7,
        boxes_per_cell: int = 2,
        input_size: int = 448,
        dropout: float = 0.5,
        lambda_coord: float = 5.0,
        lambda_noobj: float = 0.5,
        score_thresh: float = 0.005,
        nms_thresh: float = 0.5,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__(num_classes, weights)
        if variant not in LAYOUTS:
            raise ArgumentValueError.of(self, "variant", f"must be one of {sorted(LAYOUTS)}, got {variant!r}")
        if width <= 0 or min(fc_width, grid, boxes_per_cell, input_size) < 1 or not 0 <= dropout < 1:
            raise ConfigError("YOLOv1 needs width > 0, fc_width, grid, boxes_per_cell, input_size >= 1 and dropout in [0, 1), "
                              f"got {width}, {fc_width}, {grid}, {boxes_per_cell}, {input_size}, {dropout}")
        self.backbone_weights = backbone_weights
        self.backbone_weights_hint = backbone_weights_hint
        self.layout = LAYOUTS[variant]
        self.kwargs: dict[str, Any] = {
            "width": width, "fc_width": fc_width, "grid": grid, "boxes_per_cell": boxes_per_cell, "input_size": input_size,
            "dropout": dropout, "lambda_coord": lambda_coord, "lambda_noobj": lambda_noobj,
            "score_thresh": score_thresh, "nms_thresh": nms_thresh, "detections_per_img": detections_per_img,
        }
        self.finish()

    def make(self) -> nn.Module:
        detector = YOLODetector(self.num_classes - 1, self.layout, **self.kwargs)
        if self.backbone_weights:
            load_weights_file(detector.backbone, self.backbone_weights, f"{type(self).__name__}.backbone_weights",
                              hint=self.backbone_weights_hint)
        return detector
