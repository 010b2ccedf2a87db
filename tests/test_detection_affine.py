"""DetectionAugmentation's YOLO scale and translation (a canvas of the image's own size) and its
separate contrast and saturation: hand-computed boxes and keypoints under a fixed draw, objects
leaving the image dropped, masks moving with the pixels, the draw's ranges, the defaults leaving
the preset as it was, and bad arguments."""
from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from core.errors import ConfigError
from datamodules.detection import AFFINE_FILL, DetectionAugmentation, affine_objects

# A 100 (H) x 100 (W) image; its centre is (50, 50). Under scale s and shift (tx, ty) a point goes to
# (50 + s (x - 50) + tx, 50 + s (y - 50) + ty). With s = 1.5, (tx, ty) = (10, -20):
#   box [40, 40, 60, 50] -> x: 50 - 15 + 10 = 45, 50 + 15 + 10 = 75; y: 50 - 15 - 20 = 15, 50 + 0 - 20 = 30
#   keypoint (60, 50) -> (75, 30), still inside: keeps v = 2;
#   keypoint (10, 10) -> (50 - 60 + 10, 50 - 60 - 20) = (0, -30): outside -> (0, 0, 0);
#   keypoint (40, 45) v = 1 (hidden) -> (45, 22.5), keeps v = 1;
#   an unlabelled keypoint (7, 7, 0) stays as it is.
SIZE = 100
SCALE, SHIFT = 1.5, (10.0, -20.0)


def sample(boxes: list[list[float]], keypoints: list[list[list[float]]] | None = None):
    """A black image with each box filled white, the boxes' masks, labels 1.. and keypoints."""
    image = torch.zeros(3, SIZE, SIZE, dtype=torch.uint8)
    masks = torch.zeros(len(boxes), SIZE, SIZE, dtype=torch.uint8)
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        image[:, int(y1):int(y2), int(x1):int(x2)] = 255
        masks[index, int(y1):int(y2), int(x1):int(x2)] = 1
    target = {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.arange(1, len(boxes) + 1),
        "area": torch.ones(len(boxes)),
        "masks": masks,
    }
    if keypoints is not None:
        target["keypoints"] = torch.tensor(keypoints, dtype=torch.float32)
    return image, target


def fixed(monkeypatch, augmentation: DetectionAugmentation, tx: float, ty: float, scale: float) -> DetectionAugmentation:
    """The augmentation with its random scale and translation fixed to this draw."""
    monkeypatch.setattr(augmentation, "sample_affine", lambda height, width, generator=None: (tx, ty, scale))
    return augmentation


def only_affine(**kwargs) -> DetectionAugmentation:
    return DetectionAugmentation(flip_prob=0.0, brightness=0.0, hue=0.0, **kwargs)


def mask_extent(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """XYXY extent (continuous, ``x2 = last column + 1``) of a binary mask's pixels."""
    rows, cols = torch.nonzero(mask, as_tuple=True)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def test_a_box_and_keypoints_under_a_known_scale_and_translation(monkeypatch):
    image, target = sample([[40.0, 40.0, 60.0, 50.0]], [[[60.0, 50.0, 2], [10.0, 10.0, 2], [40.0, 45.0, 1], [7.0, 7.0, 0]]])
    augmentation = fixed(monkeypatch, only_affine(translate=0.2, affine_scale=(0.8, 1.6)), *SHIFT, SCALE)
    out_image, out = augmentation(image, target)
    assert out_image.shape == image.shape and out_image.dtype == torch.uint8  # the canvas keeps its size
    assert out["boxes"].tolist() == [[45.0, 15.0, 75.0, 30.0]]
    assert out["keypoints"][0].tolist() == [[75.0, 30.0, 2], [0.0, 0.0, 0], [45.0, 22.5, 1], [7.0, 7.0, 0]]
    # The pixels and the mask moved with the box.
    assert mask_extent(out["masks"][0]) == (45, 15, 75, 30)
    assert mask_extent(out_image[0] > 127) == (45, 15, 75, 30)
    assert out["labels"].tolist() == [1]


def test_the_functional_form_is_the_same_transform():
    image, target = sample([[40.0, 40.0, 60.0, 50.0]])
    boxes = tv_tensors.BoundingBoxes(target["boxes"], format="XYXY", canvas_size=(SIZE, SIZE))
    _, moved, masks, keypoints = affine_objects(image, boxes, tv_tensors.Mask(target["masks"]), None, SHIFT, SCALE)
    assert moved.tolist() == [[45.0, 15.0, 75.0, 30.0]] and keypoints is None
    assert mask_extent(masks[0]) == (45, 15, 75, 30)


def test_a_shift_moves_masks_exactly_and_fills_the_uncovered_border_with_grey(monkeypatch):
    image, target = sample([[20.0, 10.0, 30.0, 20.0]])
    out_image, out = fixed(monkeypatch, only_affine(translate=0.3), 25.0, -3.0, 1.0)(image, target)
    expected = torch.zeros(SIZE, SIZE, dtype=torch.uint8)
    expected[7:17, 45:55] = 1
    assert torch.equal(out["masks"][0], expected)
    assert out["boxes"].tolist() == [[45.0, 7.0, 55.0, 17.0]]
    # The 25 leftmost columns and the 3 bottom rows show nothing of the image.
    assert (out_image[:, :, :25] == AFFINE_FILL).all() and (out_image[:, -3:, :] == AFFINE_FILL).all()
    assert (out_image[:, 3:-3, 30:40] == 0).all()


def test_objects_pushed_out_of_the_image_are_dropped_with_their_fields(monkeypatch):
    # Shifted 40 pixels left: the box at x 10..30 leaves the image and is dropped; the one at x
    # 60..90 goes to 20..50; the one at x 38..60 goes to -2..20, clipped to 0..20.
    image, target = sample([[10.0, 10.0, 30.0, 30.0], [60.0, 60.0, 90.0, 90.0], [38.0, 40.0, 60.0, 50.0]],
                           [[[20.0, 20.0, 2]], [[70.0, 70.0, 2]], [[39.0, 45.0, 2]]])
    _, out = fixed(monkeypatch, only_affine(translate=0.5), -40.0, 0.0, 1.0)(image, target)
    assert out["labels"].tolist() == [2, 3]
    assert out["boxes"].tolist() == [[20.0, 60.0, 50.0, 90.0], [0.0, 40.0, 20.0, 50.0]]
    assert out["masks"].shape == (2, SIZE, SIZE) and out["area"].shape == (2,)
    # The third object's keypoint went to x = -1: outside, so unlabelled; the object itself stays.
    assert out["keypoints"].tolist() == [[[30.0, 70.0, 2]], [[0.0, 0.0, 0]]]
    # A zoom-in by 3 about the centre (50, 50): x -> 50 + 3 (x - 50). The first box goes to x -70..-10
    # (dropped), the second to 80..170 (clipped to 80..100), the third to x 14..80, y 20..50.
    _, zoomed = fixed(monkeypatch, only_affine(affine_scale=(3.0, 3.0)), 0.0, 0.0, 3.0)(image, target)
    assert zoomed["labels"].tolist() == [2, 3]
    assert zoomed["boxes"].tolist() == [[80.0, 80.0, 100.0, 100.0], [14.0, 20.0, 80.0, 50.0]]
    assert zoomed["keypoints"].tolist() == [[[0.0, 0.0, 0]], [[17.0, 35.0, 2]]]


def test_the_draw_covers_the_ranges_and_a_seeded_generator_repeats_it():
    augmentation = only_affine(translate=0.2, affine_scale=(0.8, 1.2))
    draws = torch.tensor([augmentation.sample_affine(50, 200, torch.Generator().manual_seed(seed)) for seed in range(400)])
    assert draws[:, 0].abs().max() <= 40 and draws[:, 0].abs().max() > 35  # 0.2 x width 200
    assert draws[:, 1].abs().max() <= 10 and draws[:, 1].abs().max() > 8.5  # 0.2 x height 50
    assert draws[:, 2].min() >= 0.8 and draws[:, 2].max() <= 1.2 and draws[:, 2].max() - draws[:, 2].min() > 0.35
    first = augmentation.sample_affine(50, 200, torch.Generator().manual_seed(7))
    assert augmentation.sample_affine(50, 200, torch.Generator().manual_seed(7)) == first
    # End to end under a seed: the same output twice.
    image, target = sample([[30.0, 30.0, 70.0, 60.0]])
    torch.manual_seed(3)
    a_image, a = augmentation(image, target)
    torch.manual_seed(3)
    b_image, b = augmentation(image, target)
    assert torch.equal(a_image, b_image) and torch.equal(a["boxes"], b["boxes"])


def test_the_defaults_leave_the_preset_as_it_was():
    """No scale or translation by default, and no draw for them: a seeded run of the default
    preset is the flip and jitter alone; contrast and saturation follow brightness."""
    augmentation = DetectionAugmentation()
    assert not augmentation.affine
    jitter = augmentation.jitter
    assert jitter.brightness == jitter.contrast == jitter.saturation == pytest.approx((0.8, 1.2))
    image, target = sample([[10.0, 30.0, 40.0, 60.0]])
    torch.manual_seed(0)
    out_image, out = augmentation(image, target)
    torch.manual_seed(0)
    flipped = float(torch.rand(())) < 0.5
    expected_image = jitter(torch.flip(image, [-1]) if flipped else image)
    assert torch.equal(out_image, expected_image)
    assert out["boxes"].tolist() == ([[60.0, 30.0, 90.0, 60.0]] if flipped else [[10.0, 30.0, 40.0, 60.0]])


def test_yolo_photometric_jitter_exposure_and_saturation_without_contrast():
    jitter = DetectionAugmentation(brightness=0.5, contrast=0.0, saturation=0.5, hue=0.0).jitter
    assert jitter.brightness == pytest.approx((0.5, 1.5)) and jitter.saturation == pytest.approx((0.5, 1.5))
    assert jitter.contrast is None and jitter.hue is None
    assert DetectionAugmentation(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0).jitter is None
    assert DetectionAugmentation(brightness=0.0, contrast=0.3, hue=0.0).jitter.contrast == pytest.approx((0.7, 1.3))


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"translate": -0.1}, "translate"),
    ({"translate": 1.0}, "translate"),
    ({"affine_scale": (1.2, 0.8)}, "affine_scale"),
    ({"affine_scale": (0.0, 1.0)}, "affine_scale"),
    ({"affine_scale": (1.0,)}, "affine_scale"),
    ({"contrast": -0.5}, "contrast"),
    ({"saturation": -1.0}, "saturation"),
    ({"brightness": -0.2}, "brightness"),
    ({"hue": 0.6}, "hue"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    with pytest.raises(ConfigError, match=rf"DetectionAugmentation\.{name}\b"):
        DetectionAugmentation(**kwargs)
