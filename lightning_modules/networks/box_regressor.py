"""Detection as regression to k boxes, and the same regressor run as a sliding window.

The course notes' path from classification + localisation to detection (lecture 002):

* **regression to k boxes** (``window: image``, the default; "Obiecte multiple – k obiecte": the
  output size multiplies by k): the localisation network of ``lightning_modules.networks.localizer``
  (its VGG-style trunk, its last feature map pooled to a small grid, fully connected layers over
  it) with ``k = slots`` output slots instead of one box. The window is the whole image: whatever
  it holds, the network says at most ``k`` things about it, and with ``n > k`` objects ``n - k``
  can never be found (recall <= k / n);
* **sliding window** (``window: sliding``; "Fereastră glisantă": run the classification +
  regression network at many locations): the same slots predicted at every position of the
  feature map by the head made convolutional (Overfeat's dense evaluation), each position a
  window of ``slots`` boxes. The number of outputs is ``slots x G x G`` with ``G = input_size /
  2^stages``: it grows with the input, and a window has to hold only the objects centred in it.

::

    image resized to input_size x input_size, ImageNet-normalised
      ──► VGGBackbone (localizer.py)                                 ──► (N, F, G, G)
    image:   pooled to pool_size x pool_size, flattened
             ──► FC → hidden, ReLU, dropout ──► FC → k * (C + 1 + 4)   ──► k slots
    sliding: 3x3 conv → hidden, ReLU, dropout ──► 1x1 conv → k * (C + 1 + 4) per position
                                                                      ──► G * G * k slots

Each slot predicts ``C + 1`` class scores (index 0 = "no object", the suite's background label;
``1..C`` the classes) and one box.

Box convention. A slot's box is ``(cx, cy, w, h)`` of the image normalised to ``[0, 1]``: ``cx =
0`` is the left edge, ``1`` the right one, ``w = 1`` the full width (continuous coordinates, the
image spans ``[0, W] x [0, H]``), as the localizer's. The width and height are sigmoids; the
centre is a sigmoid offset inside the slot's window, ``cx = (column + sigmoid(tx)) / G`` (``G =
1`` for ``window: image``: the centre is anywhere in the image). The network sees every image
resized to a square, so the same numbers map back to each image's own ``W x H``.

Training (``slot_loss``). Slots are unordered, so each image's ground-truth objects are first
assigned to slots: every object goes to the window that holds its centre (the only window for
``window: image``), then in each window ``assign`` finds the exact assignment of ``min(n_w, k)``
of its ``n_w`` objects to distinct slots that minimises the image's loss, by dynamic programming
over the subsets of used slots (``O(n_w * k * 2^k)``: an exhaustive search of every assignment
that does not repeat work; it is why ``k`` is capped at ``MAX_SLOTS``). The loss of an image is

    Σ over slots s of  -log p_s(class of s's object, or "no object" when s has none)
  + box_weight x Σ over assigned slots s of  d(box_s, its object's box)

returned as ``loss_classifier`` and ``loss_box_reg`` (torchvision's names), each summed over the
batch's images and divided by their number. The matching cost of slot ``s`` and object ``j`` is
this loss's change when ``s`` takes ``j`` instead of "no object": ``-log p_s(c_j) + log p_s(0)
+ box_weight x d(box_s, box_j)``, so the assignment is the one of least loss (computed without
gradient, then the loss is taken through it). Objects beyond a window's ``k`` slots are not
learnt at all: the limit the ``image`` window exists to show. ``d`` is summed over the four
normalised coordinates, in the matching as in the loss: L1 (``box_loss: l1``, the default, as in
DETR's set prediction: its gradient does not shrink with the error, so a slot keeps tightening a
nearly right box, where L2's gradient fades with the residual) or L2 (``box_loss: l2``, the
notes' and the localisation task's squared error). Only L1 was measured in the table.

Evaluation. Every slot gives one detection: its box in the image's pixels (XYXY, clipped to the
image), the label of its most probable class other than "no object", and that class's
probability as the score; slots scoring ``score_thresh`` or less are dropped (0 keeps them all).
``nms_thresh``: per-class NMS at that IoU (``None``: none, the default: the assignment already
teaches the slots of one window not to duplicate an object; neighbouring sliding windows do see
the same object, and their duplicates are removed by NMS as in Overfeat and YOLO), then the
``detections_per_img`` best are kept.

Inputs and outputs follow ``lightning_modules.networks.detector``: ``forward(images, targets)``
takes a list of ``(3, H, W)`` float images in ``[0, 1]`` of any sizes (or one ``(N, 3, H, W)``
batch) and, in train mode, targets with ``boxes`` ``(K, 4)`` XYXY in the image's pixels and
``labels`` ``1..C``; it returns ``{"loss_classifier", "loss_box_reg"}`` in train mode and, in eval
mode, one dict per image of ``boxes`` ``(D, 4)`` XYXY in the image's own pixels, ``labels``
``(D,)`` in ``1..C`` and ``scores`` ``(D,)``. ``SlotDetector.predict(batch)`` gives the raw
``(N, S, C + 1)`` logits and ``(N, S, 4)`` normalised boxes of the ``S = G² k`` slots,
window-major (slot ``(row * G + column) * k + i``), and ``G``.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms, box_convert, clip_boxes_to_image

from core.errors import ArgumentValueError, ConfigError
from core.imaging import IMAGENET_MEAN, IMAGENET_STD
from lightning_modules.networks.detector import TorchvisionDetector, resize_batch
from lightning_modules.networks.localizer import VGGBackbone

__all__ = ["BoxRegressor", "SlotDetector", "assign", "slot_loss", "decode_slots", "MAX_SLOTS"]

# The exact assignment visits up to 2^k subsets of slots per object: small k only (the model's
# point is a small fixed k; many outputs are assigned by position, the sliding window's way).
MAX_SLOTS = 6
BoxLoss = Literal["l1", "l2"]
Window = Literal["image", "sliding"]


# ---------------------------------------------------------------------- assignment
def assign(cost: Tensor) -> tuple[Tensor, Tensor]:
    """The exact minimum-cost assignment of ``min(k, n)`` objects to distinct slots.

    ``cost`` is ``(k, n)``: ``cost[s, j]`` the cost of slot ``s`` taking object ``j``. Returns
    ``(slots, objects)``, two ``(min(k, n),)`` int64 tensors: slot ``slots[i]`` takes object
    ``objects[i]``, ordered by object. With ``n <= k`` every object gets a slot; with ``n > k``
    every slot gets an object and ``n - k`` objects get none.

    Dynamic programming over the objects in order, keeping for every subset of used slots the
    cheapest way to reach it (each object either takes a free slot or, while enough objects remain
    to fill the slots, none): exact, ``O(n * k * 2^k)``. Ties go to the first found (lower slots
    for earlier objects), so the result is deterministic.
    """
    if cost.dim() != 2:
        raise ValueError(f"assign takes a (slots, objects) cost matrix, got shape {tuple(cost.shape)}")
    slots, objects = _assign(cost.detach().double().cpu().tolist(), *cost.shape)
    return torch.tensor(slots, dtype=torch.int64), torch.tensor(objects, dtype=torch.int64)


def _assign(cost: list[list[float]], k: int, n: int) -> tuple[list[int], list[int]]:
    """``assign`` on a ``k x n`` nested list (plain Python: the matrices are tiny and many)."""
    if k > MAX_SLOTS:
        raise ConfigError(f"assign: {k} slots is more than MAX_SLOTS = {MAX_SLOTS} (the exact assignment visits 2^k subsets)")
    m = min(k, n)
    if m == 0:
        return [], []
    # used-slot mask -> (total cost, slot of each object so far, -1: none)
    best: dict[int, tuple[float, tuple[int, ...]]] = {0: (0.0, ())}
    for j in range(n):
        later = n - j - 1
        reached: dict[int, tuple[float, tuple[int, ...]]] = {}
        for mask, (total, choice) in best.items():
            used = mask.bit_count()
            options = [(mask, total, choice + (-1,))] if m - used <= later else []  # j left out: later objects can still fill m slots
            if used < m:
                options += [(mask | 1 << s, total + cost[s][j], choice + (s,)) for s in range(k) if not mask >> s & 1]
            for key, value, path in options:
                if key not in reached or value < reached[key][0]:
                    reached[key] = (value, path)
        best = reached
    _, choice = min((value for mask, value in best.items() if mask.bit_count() == m), key=lambda value: value[0])
    objects = [j for j, s in enumerate(choice) if s >= 0]
    return [choice[j] for j in objects], objects


# ---------------------------------------------------------------------- loss
def _distance(boxes: Tensor, targets: Tensor, box_loss: BoxLoss) -> Tensor:
    """Box distance summed over the 4 coordinates, broadcast over the leading dims."""
    difference = boxes - targets
    return difference.abs().sum(-1) if box_loss == "l1" else (difference**2).sum(-1)


def normalised_boxes(boxes: Tensor, image_size: tuple[int, int]) -> Tensor:
    """``(K, 4)`` XYXY pixels of an ``(H, W)`` image -> ``(K, 4)`` ``(cx, cy, w, h)`` in ``[0, 1]``."""
    height, width = image_size
    scale = boxes.new_tensor([width, height, width, height])
    return box_convert(boxes.float() / scale, "xyxy", "cxcywh")


def slot_loss(
    logits: Tensor,
    boxes: Tensor,
    targets: Sequence[dict[str, Tensor]],
    image_sizes: Sequence[tuple[int, int]],
    box_loss: BoxLoss = "l1",
    box_weight: float = 5.0,
    grid: int = 1,
) -> dict[str, Tensor]:
    """The assignment and the loss of the module docstring.

    Args:
        logits: ``(N, S, C + 1)`` raw class scores, index 0 = "no object".
        boxes: ``(N, S, 4)`` normalised ``(cx, cy, w, h)`` of the image.
        targets: per image ``boxes`` ``(K, 4)`` XYXY pixels and ``labels`` ``(K,)`` in ``1..C``.
        image_sizes: ``(H, W)`` of each image.
        box_loss, box_weight: the distance ``d`` and its weight.
        grid: ``G``, windows per side; the ``S`` slots are ``G x G`` windows of ``S / G²``,
            window-major. 1: one window, the image (regression to ``S`` boxes).

    Returns ``loss_classifier`` (cross-entropy summed over every slot) and ``loss_box_reg``
    (``box_weight`` x ``d`` summed over the assigned slots), each divided by the number of images.
    """
    n, slots, _ = logits.shape
    if slots % (grid * grid):
        raise ValueError(f"slot_loss: {slots} slots do not split into {grid} x {grid} windows")
    per_window = slots // (grid * grid)
    logits, boxes = logits.float(), boxes.float()
    target_classes = torch.zeros(n, slots, dtype=torch.int64, device=logits.device)
    image_index, slot_index, gt_boxes = [], [], []
    log_probs = logits.detach().log_softmax(-1)
    for index, (target, size) in enumerate(zip(targets, image_sizes)):
        labels = target["labels"].to(logits.device).long()
        if not len(labels):
            continue
        gt = normalised_boxes(target["boxes"].to(logits.device), size)
        column, row = (gt[:, :2] * grid).long().clamp(0, grid - 1).unbind(1)
        windows = (row * grid + column).tolist()
        with torch.no_grad():
            # (S, K): the loss's change when slot s takes object j instead of "no object".
            cost = (-log_probs[index][:, labels] + log_probs[index][:, :1]
                    + box_weight * _distance(boxes[index, :, None].detach(), gt[None], box_loss)).double().cpu().tolist()
        chosen, objects = [], []
        for window in sorted(set(windows)):
            members = [j for j, w in enumerate(windows) if w == window]
            first = window * per_window
            window_cost = [[line[j] for j in members] for line in cost[first : first + per_window]]
            window_slots, window_objects = _assign(window_cost, per_window, len(members))
            chosen += [first + s for s in window_slots]
            objects += [members[j] for j in window_objects]
        chosen_t = torch.tensor(chosen, dtype=torch.int64, device=logits.device)
        objects_t = torch.tensor(objects, dtype=torch.int64, device=logits.device)
        target_classes[index, chosen_t] = labels[objects_t]
        image_index += [index] * len(chosen)
        slot_index.append(chosen_t)
        gt_boxes.append(gt[objects_t])
    classifier = F.cross_entropy(logits.flatten(0, 1), target_classes.flatten(), reduction="sum") / n
    if image_index:
        assigned = boxes[torch.tensor(image_index, device=boxes.device), torch.cat(slot_index)]
        box_reg = box_weight * _distance(assigned, torch.cat(gt_boxes), box_loss).sum() / n
    else:
        box_reg = boxes.sum() * 0.0
    return {"loss_classifier": classifier, "loss_box_reg": box_reg}


# ---------------------------------------------------------------------- decoding
def decode_slots(
    logits: Tensor,
    boxes: Tensor,
    image_sizes: Sequence[tuple[int, int]],
    score_thresh: float = 0.0,
    nms_thresh: float | None = None,
    detections_per_img: int = 100,
) -> list[dict[str, Tensor]]:
    """``(N, S, C + 1)`` logits and ``(N, S, 4)`` normalised boxes -> one dict per image of
    ``boxes`` (XYXY pixels of the image of ``image_sizes`` ``(H, W)``, clipped to it), ``labels``
    (``1..C``: the most probable class other than "no object") and ``scores`` (its probability):
    slots scoring ``score_thresh`` or less dropped, per-class NMS at ``nms_thresh`` (``None``:
    none), the ``detections_per_img`` best kept, best first."""
    probabilities = logits.float().softmax(-1)
    scores, labels = probabilities[..., 1:].max(-1)
    xyxy = box_convert(boxes.float(), "cxcywh", "xyxy")
    results = []
    for index, (height, width) in enumerate(image_sizes):
        pixels = clip_boxes_to_image(xyxy[index] * xyxy.new_tensor([width, height, width, height]), (height, width))
        keep = (scores[index] > score_thresh).nonzero().flatten()
        if nms_thresh is not None:
            keep = keep[batched_nms(pixels[keep], scores[index, keep], labels[index, keep], nms_thresh)]
        else:
            keep = keep[scores[index, keep].argsort(descending=True, stable=True)]
        keep = keep[:detections_per_img]
        results.append({"boxes": pixels[keep], "labels": labels[index, keep] + 1, "scores": scores[index, keep]})
    return results


# ---------------------------------------------------------------------- the model
class SlotDetector(nn.Module):
    """Resize and normalise, the trunk, the slot head of the ``window`` kind, then the loss or the
    detections (see the module docstring). ``num_classes`` counts "no object" (``C + 1``);
    ``slots`` is ``k``, per window."""

    def __init__(
        self,
        num_classes: int,
        slots: int,
        window: Window,
        widths: Sequence[int],
        convs_per_stage: int,
        pool_size: int,
        hidden: int,
        dropout: float,
        input_size: int,
        box_loss: BoxLoss,
        box_weight: float,
        score_thresh: float,
        nms_thresh: float | None,
        detections_per_img: int,
    ) -> None:
        super().__init__()
        self.num_classes, self.slots, self.window, self.input_size = num_classes, slots, window, input_size
        self.box_loss, self.box_weight = box_loss, box_weight
        self.score_thresh, self.nms_thresh, self.detections_per_img = score_thresh, nms_thresh, detections_per_img
        self.backbone = VGGBackbone(widths, convs_per_stage)
        channels, outputs = self.backbone.out_channels, slots * (num_classes + 4)
        if window == "image":
            self.head = nn.Sequential(
                nn.AdaptiveAvgPool2d(pool_size), nn.Flatten(),
                nn.Linear(channels * pool_size * pool_size, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Linear(hidden, outputs), nn.Unflatten(1, (outputs, 1, 1)),
            )
        else:  # the same hidden layer and outputs as convolutions: one window per position
            self.head = nn.Sequential(
                nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(inplace=True), nn.Dropout(dropout),
                nn.Conv2d(hidden, outputs, 1),
            )
        # Not in the state dict: a checkpoint holds only learnt weights.
        self.register_buffer("image_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("image_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def predict(self, batch: Tensor) -> tuple[Tensor, Tensor, int]:
        """``(N, 3, input_size, input_size)`` normalised images -> ``(N, S, C + 1)`` logits,
        ``(N, S, 4)`` normalised ``(cx, cy, w, h)`` and ``G``, the windows per side (``S = G² k``)."""
        out = self.head(self.backbone(batch))  # (N, k * (C + 5), G, G); G = 1 for one window
        n, _, grid, _ = out.shape
        out = out.permute(0, 2, 3, 1).reshape(n, grid, grid, self.slots, self.num_classes + 4)
        cells = torch.arange(grid, device=out.device, dtype=out.dtype)
        offsets = torch.sigmoid(out[..., self.num_classes : self.num_classes + 2])
        cx = (offsets[..., 0] + cells.view(1, 1, grid, 1)) / grid  # columns along dim 2
        cy = (offsets[..., 1] + cells.view(1, grid, 1, 1)) / grid  # rows along dim 1
        boxes = torch.cat([cx[..., None], cy[..., None], torch.sigmoid(out[..., self.num_classes + 2 :])], -1)
        return out[..., : self.num_classes].reshape(n, -1, self.num_classes), boxes.reshape(n, -1, 4), grid

    def prepare(self, images: Sequence[Tensor]) -> Tensor:
        """``(3, H, W)`` images in ``[0, 1]`` -> one ``(N, 3, input_size, input_size)`` normalised batch."""
        return resize_batch(images, (self.input_size, self.input_size), self.image_mean, self.image_std)

    def forward(
        self, images: Sequence[Tensor] | Tensor, targets: Sequence[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("BoxRegressor needs targets in train mode")
        image_sizes = [(int(image.shape[-2]), int(image.shape[-1])) for image in images]
        logits, boxes, grid = self.predict(self.prepare(images))
        if self.training:
            return slot_loss(logits, boxes, targets, image_sizes, self.box_loss, self.box_weight, grid)
        return decode_slots(logits, boxes, image_sizes, self.score_thresh, self.nms_thresh, self.detections_per_img)


class BoxRegressor(TorchvisionDetector):
    """Regression to ``k`` boxes (``window: image``) or its sliding window (``window: sliding``).

    Args:
        num_classes: classes with "no object" (the suite's background): ``len(class_names) + 1``
            of the data.
        weights: a local checkpoint of the whole ``SlotDetector``.
        slots: ``k``, boxes per window, ``1..MAX_SLOTS`` (with ``window: image``, 1 is the
            localisation network and ``k`` the notes' k boxes).
        window: ``image`` (one window, an FC head) or ``sliding`` (a window per position of the
            trunk's last feature map, the head as convolutions).
        widths: channels of the VGG trunk's stages (``localizer.VGGBackbone``), each ending in a
            2x2 max-pool: the sliding windows are ``2^len(widths)`` pixels of the input apart.
        convs_per_stage: 3x3 conv-BN-ReLU layers per stage.
        pool_size: ``window: image``: side of the grid the last feature map is average-pooled to
            before the FC head (a global average would lose where the objects are).
        hidden: width of the hidden layer (FC, or 3x3 convolution for ``sliding``).
        dropout: after the hidden layer (training only).
        input_size: side of the square every image is resized to.
        box_loss: ``l1`` or ``l2`` (see the module docstring).
        box_weight: weight of the box term, against the cross-entropy.
        score_thresh: slots scoring this or less are not returned (0: all).
        nms_thresh: IoU of the per-class NMS of the detections; ``None``: no NMS.
        detections_per_img: detections kept per image, best first.
    """

    def __init__(
        self,
        num_classes: int,
        weights: str | None = None,
        slots: int = 2,
        window: Window = "image",
        widths: Sequence[int] = (16, 32, 64, 128),
        convs_per_stage: int = 1,
        pool_size: int = 4,
        hidden: int = 256,
        dropout: float = 0.0,
        input_size: int = 64,
        box_loss: BoxLoss = "l1",
        box_weight: float = 5.0,
        score_thresh: float = 0.0,
        nms_thresh: float | None = None,
        detections_per_img: int = 100,
    ) -> None:
        super().__init__(num_classes, weights)
        name = type(self).__name__
        if isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= MAX_SLOTS:
            raise ArgumentValueError.of(self, "slots", f"must be an integer in 1..{MAX_SLOTS} (the exact assignment visits 2^k subsets of slots), "
                                                       f"got {slots!r}")
        if window not in ("image", "sliding"):
            raise ArgumentValueError.of(self, "window", f"must be image or sliding, got {window!r}")
        if not widths or min(widths) < 1 or min(convs_per_stage, pool_size, hidden, detections_per_img) < 1:
            raise ConfigError(f"{name}: widths, convs_per_stage, pool_size, hidden and detections_per_img must be >= 1, "
                              f"got {list(widths)}, {convs_per_stage}, {pool_size}, {hidden}, {detections_per_img}")
        if input_size < 2 ** len(widths):
            raise ArgumentValueError.of(self, "input_size", f"{input_size} leaves no feature map after {len(widths)} stages of 2x2 pooling")
        if box_loss not in ("l1", "l2"):
            raise ArgumentValueError.of(self, "box_loss", f"must be l1 or l2, got {box_loss!r}")
        if not 0 <= dropout < 1 or box_weight < 0 or not 0 <= score_thresh < 1 or (nms_thresh is not None and not 0 < nms_thresh <= 1):
            raise ConfigError(f"{name}: dropout in [0, 1), box_weight >= 0, score_thresh in [0, 1) and nms_thresh in (0, 1] or null needed, "
                              f"got {dropout}, {box_weight}, {score_thresh}, {nms_thresh}")
        self.slots, self.window = slots, window
        self.kwargs = {
            "slots": slots, "window": window, "widths": [int(w) for w in widths], "convs_per_stage": convs_per_stage,
            "pool_size": pool_size, "hidden": hidden, "dropout": dropout, "input_size": input_size, "box_loss": box_loss,
            "box_weight": box_weight, "score_thresh": score_thresh, "nms_thresh": nms_thresh, "detections_per_img": detections_per_img,
        }
        self.finish()

    def make(self) -> nn.Module:
        return SlotDetector(self.num_classes, **self.kwargs)
