"""Classification + localisation, unit by unit, on numbers worked out by hand: the letterbox of the
data module, the box decoding back to original pixels, the loss, and the localisation metric."""
from __future__ import annotations

import math

import pytest
import torch

from datamodules.localization import letterbox, letterbox_geometry
from lightning_modules.localization import SMOOTH_L1_BETA, boxes_to_image, localization_loss, select_boxes
from lightning_modules.metrics.localization import LocalizationAccuracy, paired_iou


# ---------------------------------------------------------------------- letterbox
def test_letterbox_of_a_wide_image_is_centred_vertically():
    # 100 x 50 into 64 x 64: s = min(64/50, 64/100) = 0.64 -> 64 x 32, 16 rows of padding above and below.
    (new_h, new_w), scale, offset = letterbox_geometry((50, 100), (64, 64))
    assert (new_h, new_w) == (32, 64) and scale == (0.64, 0.64) and offset == (0.0, 16.0)
    image = torch.full((3, 50, 100), 200, dtype=torch.uint8)
    canvas, scale2, offset2 = letterbox(image, (64, 64))
    assert canvas.shape == (3, 64, 64) and canvas.dtype == torch.float32
    assert (scale2, offset2) == (scale, offset)
    assert torch.allclose(canvas[:, 16:48], torch.tensor(200.0), atol=1e-3)  # resized: float rounding
    mean = torch.tensor([0.485, 0.456, 0.406]) * 255  # the padding: the ImageNet mean colour
    assert torch.allclose(canvas[:, :16], mean.view(3, 1, 1).expand(3, 16, 64))
    assert torch.allclose(canvas[:, 48:], mean.view(3, 1, 1).expand(3, 16, 64))


def test_letterbox_scales_differ_per_axis_after_rounding():
    # 70 wide x 30 high into 64 x 64: s = 64/70; h = round(30 * 64/70) = round(27.43) = 27, so the
    # vertical scale is 27/30 = 0.9 and the horizontal one 64/70; (64 - 27) // 2 = 18 rows above.
    (new_h, new_w), (sx, sy), (ox, oy) = letterbox_geometry((30, 70), (64, 64))
    assert (new_h, new_w) == (27, 64)
    assert sx == pytest.approx(64 / 70) and sy == pytest.approx(0.9)
    assert (ox, oy) == (0.0, 18.0)
    # A tall image pads left and right instead: 20 wide x 40 high -> 32 x 64 at x = 16.
    assert letterbox_geometry((40, 20), (64, 64)) == ((64, 32), (1.6, 1.6), (16.0, 0.0))


# ---------------------------------------------------------------------- boxes back to the image
def test_boxes_to_image_undoes_the_letterbox():
    # The 100 x 50 image above: scale 0.64, offset (0, 16). A centred box of a quarter of the input
    # side is (24, 24, 40, 40) in input pixels, (24, 8, 40, 24) without the offset, and
    # (37.5, 12.5, 62.5, 37.5) once divided by 0.64.
    boxes = torch.tensor([[0.5, 0.5, 0.25, 0.25]])
    scale, offset = torch.tensor([[0.64, 0.64]]), torch.tensor([[0.0, 16.0]])
    out = boxes_to_image(boxes, (64, 64), scale, offset, torch.tensor([[50, 100]]))
    torch.testing.assert_close(out, torch.tensor([[37.5, 12.5, 62.5, 37.5]]))


def test_boxes_to_image_clips_to_the_original_image():
    # (0.95, 0.5, 0.2, 0.9) -> input (54.4, 3.2, 67.2, 60.8) -> original (85, -20, 105, 70), which
    # the 100 x 50 image clips to (85, 0, 100, 50); without a size nothing is clipped.
    boxes = torch.tensor([[0.95, 0.5, 0.2, 0.9]])
    scale, offset = torch.tensor([[0.64, 0.64]]), torch.tensor([[0.0, 16.0]])
    torch.testing.assert_close(boxes_to_image(boxes, (64, 64), scale, offset), torch.tensor([[85.0, -20.0, 105.0, 70.0]]))
    torch.testing.assert_close(boxes_to_image(boxes, (64, 64), scale, offset, torch.tensor([[50, 100]])), torch.tensor([[85.0, 0.0, 100.0, 50.0]]))


def test_boxes_to_image_with_per_axis_scales_and_a_non_square_input():
    # Input 48 high x 96 wide; scale (sx, sy) = (2, 0.5), offset (8, 4). (0.5, 0.5, 0.5, 0.25) is
    # (24, 18, 72, 30) on the input; minus the offset (16, 14, 64, 26); divided by the scales
    # (8, 28, 32, 52).
    out = boxes_to_image(torch.tensor([[0.5, 0.5, 0.5, 0.25]]), (48, 96), torch.tensor([[2.0, 0.5]]), torch.tensor([[8.0, 4.0]]))
    torch.testing.assert_close(out, torch.tensor([[8.0, 28.0, 32.0, 52.0]]))


# ---------------------------------------------------------------------- the loss
def _outputs() -> dict[str, torch.Tensor]:
    # Two images, three classes; every class's box is far off (9) but the true class's, which is
    # off by 0.1 in cx (image 0, class 2) and by (0.2, 0.1) in (cx, cy) (image 1, class 0).
    boxes = torch.full((2, 3, 4), 9.0)
    boxes[0, 2] = torch.tensor([0.1, 0.0, 0.0, 0.0])
    boxes[1, 0] = torch.tensor([0.2, 0.1, 0.0, 0.0])
    return {"logits": torch.zeros(2, 3), "boxes": boxes}


LABELS = torch.tensor([2, 0])
TARGETS = torch.zeros(2, 4)


def test_select_boxes_takes_the_given_class_box():
    boxes = _outputs()["boxes"]
    torch.testing.assert_close(select_boxes(boxes, LABELS), torch.tensor([[0.1, 0.0, 0.0, 0.0], [0.2, 0.1, 0.0, 0.0]]))
    agnostic = torch.rand(2, 4)
    assert select_boxes(agnostic, LABELS) is agnostic


def test_l2_loss_sums_the_coordinates_and_averages_the_images():
    terms = localization_loss(_outputs(), LABELS, TARGETS, "l2", box_weight=5.0)
    # Uniform logits over 3 classes: cross-entropy ln 3. Boxes: (0.01 + 0.05) / 2 = 0.03.
    assert float(terms["loss_cls"]) == pytest.approx(math.log(3))
    assert float(terms["loss_box"]) == pytest.approx(0.03)
    assert float(terms["loss"]) == pytest.approx(math.log(3) + 5 * 0.03)


def test_smooth_l1_loss_is_quadratic_below_beta_and_linear_above():
    assert SMOOTH_L1_BETA == pytest.approx(1 / 9)
    terms = localization_loss(_outputs(), LABELS, TARGETS, "smooth_l1", box_weight=1.0)
    # |d| = 0.1 < 1/9: 0.5 d^2 / beta = 0.045; |d| = 0.2 > 1/9: |d| - beta / 2 = 0.2 - 1/18.
    image0, image1 = 0.045, (0.2 - 1 / 18) + 0.045
    assert float(terms["loss_box"]) == pytest.approx((image0 + image1) / 2)
    assert float(terms["loss"]) == pytest.approx(math.log(3) + (image0 + image1) / 2)


def test_the_loss_regresses_only_the_true_class_box():
    outputs = _outputs()
    outputs["boxes"][0, 0] = 100.0  # another class's box of image 0: no loss
    assert float(localization_loss(outputs, LABELS, TARGETS)["loss_box"]) == pytest.approx(0.03)
    with pytest.raises(ValueError, match="box_loss must be l2 or smooth_l1"):
        localization_loss(outputs, LABELS, TARGETS, "l1")


# ---------------------------------------------------------------------- the metric
def test_localization_accuracy_needs_the_class_and_the_overlap():
    metric = LocalizationAccuracy(iou_threshold=0.5)
    square = [0.0, 0.0, 10.0, 10.0]
    # Image 0: right class, IoU 1. Image 1: right class, IoU 50/150 = 1/3. Image 2: IoU 1, wrong class.
    metric.update(torch.tensor([square, square, square]), torch.tensor([1, 1, 2]),
                  torch.tensor([square, [5.0, 0.0, 15.0, 10.0], square]), torch.tensor([1, 1, 1]))
    result = metric.compute()
    assert float(result["mean_iou"]) == pytest.approx((1 + 1 / 3 + 1) / 3)
    assert float(result["loc_accuracy"]) == pytest.approx(1 / 3)
    # Image 3: IoU exactly 0.5 (the upper half of the square) counts; the totals accumulate.
    metric.update(torch.tensor([square]), torch.tensor([0]), torch.tensor([[0.0, 0.0, 10.0, 5.0]]), torch.tensor([0]))
    result = metric.compute()
    assert float(result["mean_iou"]) == pytest.approx((1 + 1 / 3 + 1 + 0.5) / 4)
    assert float(result["loc_accuracy"]) == pytest.approx(2 / 4)
    metric.reset()
    assert math.isnan(float(metric.compute()["loc_accuracy"]))


def test_localization_accuracy_threshold_and_shapes():
    metric = LocalizationAccuracy(iou_threshold=0.6)
    metric.update(torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.tensor([0]), torch.tensor([[0.0, 0.0, 10.0, 5.0]]), torch.tensor([0]))
    assert float(metric.compute()["loc_accuracy"]) == 0.0
    with pytest.raises(ValueError, match="labels"):
        metric.update(torch.zeros(2, 4), torch.tensor([0]), torch.zeros(2, 4), torch.tensor([0, 0]))
    with pytest.raises(ValueError, match="shapes differ"):
        paired_iou(torch.zeros(2, 4), torch.zeros(3, 4))
