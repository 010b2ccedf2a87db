"""YOLO v1: the paper's loss (Eq. 3) on hand-computed cases, the decoding and per-class NMS on
hand-made outputs, the 448 network's output shape and parameter count against the paper's Fig. 3,
Fast YOLO's count, local backbone weights, and a ``fit`` through the CLI on tiny synthetic images."""
from __future__ import annotations

import json

import pytest
import torch

from core.errors import CheckpointError, DataNotFoundError
from experiments.cli import run_cli
from experiments.export import export_module
from experiments.export import main as export_main
from lightning_modules.networks.localizer import Localizer
from lightning_modules.networks.yolo_v1 import YOLOBackbone, YOLOv1, decode, encode_targets, yolo_loss

TINY = "tests/configs/detection_tiny.yaml"
# S = 2 cells per side, B = 2 boxes per cell, C = 2 classes: 12 outputs per cell.
S, B, C = 2, 2, 2


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def outputs(cells: dict[tuple[int, int], tuple[list[tuple[float, ...]], tuple[float, float]]]) -> torch.Tensor:
    """``(1, S, S, B*5 + C)`` raw outputs from ``{(row, col): ([(x, y, √w, √h, conf)] * B, (p1, p2))}``."""
    out = torch.zeros(1, S, S, 5 * B + C)
    for (row, col), (boxes, probs) in cells.items():
        out[0, row, col] = torch.tensor([v for box in boxes for v in box] + list(probs))
    return out


# ---------------------------------------------------------------------- the loss, by hand
# One 100x100 image, one object of class 1 with box [7, 22, 43, 38]: centre (25, 30) -> in image
# fractions (0.25, 0.30), size 0.36 x 0.16. Its centre is in cell (row 0, col 0), at offset
# (0.25 * 2 - 0, 0.30 * 2 - 0) = (0.5, 0.6); √w = 0.6, √h = 0.4.
IMAGE_SIZE = (100, 100)
TARGET = {"boxes": torch.tensor([[7.0, 22.0, 43.0, 38.0]]), "labels": torch.tensor([1])}
# Cell (0, 0):
#   predictor 0: (0.5, 0.5, √w 0.2, √h 0.2), confidence 0.9: centre (0.25, 0.25), 0.04 x 0.04, inside
#                the object's box: IoU = 0.0016 / 0.0576 = 1/36;
#   predictor 1: (0.4, 0.6, √w 0.5, √h 0.4), confidence 0.5: centre (0.2, 0.3), 0.25 x 0.16, inside
#                the box too: IoU = 0.04 / 0.0576 = 25/36 -> predictor 1 is responsible, though it
#                comes second and is the less confident;
#   class probabilities (0.7, 0.1).
# Cells without an object: confidences (0.2, 0) in (0, 1) and (0, 0.4) in (1, 0); their boxes and
# class probabilities must not count.
CELLS = {
    (0, 0): ([(0.5, 0.5, 0.2, 0.2, 0.9), (0.4, 0.6, 0.5, 0.4, 0.5)], (0.7, 0.1)),
    (0, 1): ([(0.3, 0.3, 0.3, 0.3, 0.2), (0.7, 0.7, 0.7, 0.7, 0.0)], (0.5, 0.5)),
    (1, 0): ([(0.3, 0.3, 0.3, 0.3, 0.0), (0.7, 0.7, 0.7, 0.7, 0.4)], (0.3, 0.9)),
}
EXPECTED = {
    # λcoord [(0.4 - 0.5)² + (0.6 - 0.6)² + (0.5 - √0.36)² + (0.4 - √0.16)²] = 5 x 0.02. (On w
    # itself instead of √w the width term would be (0.25 - 0.36)² = 0.0121.)
    "loss_coord": 5 * (0.01 + 0.0 + 0.01 + 0.0),
    # (0.5 - IoU 25/36)²
    "loss_conf_obj": (7 / 36) ** 2,
    # λnoobj (0.9² of the non-responsible predictor 0 + 0.2² + 0.4² of the empty cells)
    "loss_conf_noobj": 0.5 * (0.81 + 0.04 + 0.16),
    # only cell (0, 0), class 1: (0.7 - 1)² + (0.1 - 0)²
    "loss_class": 0.09 + 0.01,
}


def assert_terms(terms: dict[str, torch.Tensor], expected: dict[str, float]) -> None:
    assert set(terms) == set(expected)
    for key, value in expected.items():
        assert terms[key].item() == pytest.approx(value, abs=1e-6), key


def test_loss_by_hand_responsible_by_iou_square_roots_noobj_weight_and_class_only_with_objects():
    assert_terms(yolo_loss(outputs(CELLS), [TARGET], [IMAGE_SIZE]), EXPECTED)


def test_loss_picks_the_predictor_by_iou_not_by_position():
    (first, second), probs = CELLS[(0, 0)]
    swapped = {**CELLS, (0, 0): ([second, first], probs)}
    assert_terms(yolo_loss(outputs(swapped), [TARGET], [IMAGE_SIZE]), EXPECTED)


def test_loss_is_divided_by_the_number_of_images():
    # A second image without objects and with all-zero outputs adds nothing: every term halves.
    predictions = torch.cat([outputs(CELLS), torch.zeros(1, S, S, 5 * B + C)])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
    terms = yolo_loss(predictions, [TARGET, empty], [IMAGE_SIZE, (50, 80)])
    assert_terms(terms, {key: value / 2 for key, value in EXPECTED.items()})


def test_the_confidence_target_iou_carries_no_gradient():
    predictions = outputs(CELLS).requires_grad_()
    terms = yolo_loss(predictions, [TARGET], [IMAGE_SIZE])
    (grad,) = torch.autograd.grad(terms["loss_conf_obj"], predictions)
    expected = torch.zeros_like(grad)
    expected[0, 0, 0, 9] = 2 * (0.5 - 25 / 36)  # only the responsible confidence (predictor 1's 5th value)
    torch.testing.assert_close(grad, expected)


def test_one_object_per_cell_keeps_the_largest():
    # Two centres at (20, 20) of a 100x100 image, in cell (0, 0): the small one (class 2) is given
    # first, the large one (class 1) is kept; a third object lies in cell (1, 1).
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0], [0.0, 0.0, 40.0, 40.0], [60.0, 60.0, 100.0, 100.0]]),
              "labels": torch.tensor([2, 1, 2])}
    objects, boxes, classes = encode_targets([target], [(100, 100)], grid=2, num_classes=2)
    assert objects[0].tolist() == [[True, False], [False, True]]
    torch.testing.assert_close(boxes[0, 0, 0], torch.tensor([0.0, 0.0, 0.4, 0.4]))
    assert classes[0, 0, 0].tolist() == [1.0, 0.0] and classes[0, 1, 1].tolist() == [0.0, 1.0]


# ---------------------------------------------------------------------- decoding, by hand
# A 100 (H) x 200 (W) image. √w = 0.8, √h = 0.6 give boxes of 0.64 x 0.36 of the image.
# Cell (0, 0) predictor 0 at (0.9, 0.5): centre (0.45, 0.25) -> [0.13, 0.07, 0.77, 0.43]
#   -> pixels [26, 7, 154, 43]; cell (0, 1) predictor 0 at (0.1, 0.5): centre (0.55, 0.25)
#   -> [46, 7, 174, 43]. Their IoU is 108 / 148 = 0.73 > 0.5.
DECODE_SIZE = (100, 200)
BOX_A, BOX_B = [26.0, 7.0, 154.0, 43.0], [46.0, 7.0, 174.0, 43.0]


def overlapping(probs_b: tuple[float, float]) -> torch.Tensor:
    return outputs({
        (0, 0): ([(0.9, 0.5, 0.8, 0.6, 0.8), (0.0,) * 5], (1.0, 0.0)),
        (0, 1): ([(0.1, 0.5, 0.8, 0.6, 0.5), (0.0,) * 5], probs_b),
    })


def test_decode_two_overlapping_boxes_of_one_class_keeps_the_better():
    (result,) = decode(overlapping((0.6, 0.0)), [DECODE_SIZE])
    torch.testing.assert_close(result["boxes"], torch.tensor([BOX_A]))
    assert result["labels"].tolist() == [1] and result["scores"].tolist() == pytest.approx([0.8])


def test_decode_two_overlapping_boxes_of_two_classes_keeps_both_scored_prob_times_confidence():
    (result,) = decode(overlapping((0.0, 0.6)), [DECODE_SIZE])
    torch.testing.assert_close(result["boxes"], torch.tensor([BOX_A, BOX_B]))
    # class 1: 1.0 x 0.8; class 2: 0.6 x 0.5
    assert result["labels"].tolist() == [1, 2] and result["scores"].tolist() == pytest.approx([0.8, 0.3])
    (high,) = decode(overlapping((0.0, 0.6)), [DECODE_SIZE], score_thresh=0.5)
    assert high["labels"].tolist() == [1]
    (one,) = decode(overlapping((0.0, 0.6)), [DECODE_SIZE], detections_per_img=1)
    assert one["scores"].tolist() == pytest.approx([0.8])


def test_decode_clips_to_the_image_and_forward_scales_to_each_image():
    # Cell (1, 1) at (0.9, 0.9): centre (0.95, 0.95), 0.64 x 0.36 -> [0.63, 0.77, 1.27, 1.13]
    # -> pixels [126, 77, 254, 113], clipped to the 200 x 100 image: [126, 77, 200, 100].
    predictions = outputs({(1, 1): ([(0.9, 0.9, 0.8, 0.6, 0.9), (0.0,) * 5], (0.0, 0.5))})
    (result,) = decode(predictions, [DECODE_SIZE])
    torch.testing.assert_close(result["boxes"], torch.tensor([[126.0, 77.0, 200.0, 100.0]]))
    assert result["labels"].tolist() == [2] and result["scores"].tolist() == pytest.approx([0.45])
    # Through the network: images of any size come back in their own pixels.
    network = YOLOv1(num_classes=C + 1, grid=S, width=1 / 16, fc_width=8, input_size=64).eval()
    network.detector.predict = lambda batch: predictions.expand(len(batch), -1, -1, -1)
    small, large = network([torch.rand(3, *DECODE_SIZE), torch.rand(3, 200, 400)])
    torch.testing.assert_close(small["boxes"], result["boxes"])
    torch.testing.assert_close(large["boxes"], 2 * result["boxes"])


# ---------------------------------------------------------------------- the networks
def test_full_network_448_is_the_papers_fig3():
    """24 convolutions with bias and no batch norm + FC 50176 -> 4096 -> 1470: 271,703,550
    parameters for the 20 VOC classes (shared/reference/PAPER_NUMBERS.md section 5)."""
    network = YOLOv1(num_classes=21)  # 20 classes + background
    detector = network.detector.eval()
    assert params(detector.backbone) + params(detector.extra) == 60_155_968
    assert params(detector.head) == 211_547_582
    assert params(network) == 271_703_550
    assert sum(isinstance(m, torch.nn.Conv2d) for m in detector.modules()) == 24
    assert sum(isinstance(m, torch.nn.Conv2d) for m in detector.backbone.modules()) == 20
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in detector.modules())
    with torch.no_grad():
        assert detector.predict(torch.zeros(1, 3, 448, 448)).shape == (1, 7, 7, 30)


def test_fast_yolo_count():
    """Fast YOLO as darknet's v1.0 yolo-tiny.cfg, 9 convolutions (3x3, bias, no batch norm):
    3->16: 448, 16->32: 4,640, 32->64: 18,496, 64->128: 73,856, 128->256: 295,168, 256->512:
    1,180,160, 512->1024: 4,719,616, 2 x 1024->1024: 9,438,208 each = 25,168,800; FCs 7*7*1024 ->
    256: 12,845,312, 256 -> 4096: 1,052,672, 4096 -> 1470: 6,022,590 = 19,920,574; 45,089,374."""
    with torch.device("meta"):  # counting needs no memory
        network = YOLOv1(num_classes=21, variant="fast")
    detector = network.detector
    assert sum(isinstance(m, torch.nn.Conv2d) for m in detector.modules()) == 9
    assert params(detector.backbone) + params(detector.extra) == 25_168_800
    assert params(detector.head) == 19_920_574
    assert params(network) == 45_089_374
    assert detector.predict(torch.zeros(1, 3, 448, 448, device="meta")).shape == (1, 7, 7, 30)


@pytest.mark.parametrize("variant", ["full", "fast"])
def test_the_output_depends_on_the_image_at_initialisation(variant):
    """24 convolutions without batch norm at PyTorch's default initialisation pass next to nothing
    of the image to the head (outputs 2.5e-7 apart, relative, for two random images), and the
    network learns nothing; with He initialisation the signal reaches the head."""
    torch.manual_seed(0)
    detector = YOLOv1(num_classes=21, variant=variant, width=0.25, fc_width=256, input_size=224).detector.eval()
    with torch.no_grad():
        outputs = detector.predict(torch.randn(2, 3, 224, 224))
    gap = (outputs[0] - outputs[1]).norm() / outputs.norm()
    assert gap > 0.05
    assert detector.backbone[0][0].bias.abs().sum() == 0


@pytest.mark.parametrize("variant", ["full", "fast"])
def test_narrow_network_trains_every_parameter_and_detects_in_each_images_pixels(variant):
    network = YOLOv1(num_classes=4, variant=variant, width=1 / 16, fc_width=16, input_size=64)
    images = [torch.rand(3, 48, 80), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [50.0, 10.0, 78.0, 20.0]]), "labels": torch.tensor([1, 3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}]
    terms = network.train()(images, targets)
    assert set(terms) == {"loss_coord", "loss_conf_obj", "loss_conf_noobj", "loss_class"}
    sum(terms.values()).backward()
    parameters = list(network.parameters())
    assert parameters and all(p.grad is not None and p.grad.abs().sum() > 0 for p in parameters)
    with torch.no_grad():
        results = network.eval()(images)
    for result, image in zip(results, images):
        height, width = image.shape[-2:]
        assert (result["boxes"][:, 2] <= width).all() and (result["boxes"][:, 3] <= height).all()
        assert set(result["labels"].tolist()) <= {1, 2, 3} and len(result["boxes"]) <= 100


def test_backbone_weights_come_from_a_local_file(tmp_path):
    tiny = {"num_classes": 3, "width": 1 / 16, "fc_width": 8, "input_size": 64}
    source = YOLOv1(**tiny)
    path = tmp_path / "backbone.pth"
    torch.save(source.detector.backbone.state_dict(), path)
    loaded = YOLOv1(**tiny, backbone_weights=str(path))
    for ours, theirs in zip(loaded.detector.backbone.parameters(), source.detector.backbone.parameters()):
        assert torch.equal(ours, theirs)
    with pytest.raises(DataNotFoundError):
        YOLOv1(**tiny, backbone_weights=str(tmp_path / "absent.pth"))


def test_narrow_yolo_fits_through_the_cli(tmp_path):
    network = {"class_path": "lightning_modules.networks.yolo_v1.YOLOv1",
               "init_args": {"num_classes": 7, "width": 0.0625, "fc_width": 32, "input_size": 64}}  # the synthetic 6 + background
    args = ["fit", "--config", TINY, "--trainer.max_epochs", "1", "--run.root", str(tmp_path), "--run.wandb", "disabled",
            "--run.name", "yolo", "--model.init_args.network", json.dumps(network)]
    assert run_cli(args) == 0
    header = (tmp_path / "yolo" / "metrics.csv").read_text().splitlines()[0].split(",")
    terms = ("train/loss_coord", "train/loss_conf_obj", "train/loss_conf_noobj", "train/loss_class")
    for key in ("val/map", "val/voc07/mAP", "train/loss_epoch", *terms):
        assert key in header, (key, header)


@pytest.mark.parametrize("variant", ["full", "fast"])
def test_the_first_predictions_start_near_zero(variant):
    # The last FC regresses targets in [0, 1]; with He weights there the first predictions are
    # several units and the first epoch is spent shrinking them (a mean loss of 104 against 11 per
    # image in the first epoch of yolo_v1_synthetic_quick.yaml).
    torch.manual_seed(0)
    detector = YOLOv1(num_classes=5, variant=variant, width=0.0625, fc_width=64, input_size=64).detector.eval()
    with torch.no_grad():
        out = detector.predict(torch.randn(2, 3, 64, 64))
    assert out.abs().mean() < 0.1


# ---------------------------------------------------------------------- pretraining, as the paper's Sec. 2.2
@pytest.mark.parametrize("variant", ["full", "fast"])
def test_the_pretraining_backbone_is_the_detectors_backbone(variant):
    backbone = YOLOBackbone(variant, width=1 / 16)
    detector = YOLOv1(num_classes=3, variant=variant, width=1 / 16, fc_width=8, input_size=64).detector
    ours, theirs = backbone.state_dict(), detector.backbone.state_dict()
    assert ours and list(ours) == list(theirs)
    assert all(ours[key].shape == theirs[key].shape for key in ours)
    # A classifier on it, as the paper pretrains: 64 / 32 (YOLO) or 64 / 64 (Fast YOLO) per side.
    out = Localizer(6, backbone=backbone, pool_size=2, hidden=8)(torch.randn(2, 3, 64, 64))
    assert out["logits"].shape == (2, 6) and out["boxes"].shape == (2, 4)
    assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, backbone.out_channels, *(2 * [2 if variant == "full" else 1]))


def test_a_pretrained_backbone_is_exported_from_its_fit_and_trains_the_detector(tmp_path):
    backbone = {"class_path": "lightning_modules.networks.yolo_v1.YOLOBackbone", "init_args": {"variant": "fast", "width": 0.0625}}
    args = ["fit", "--config", "tests/configs/localization_tiny.yaml", "--trainer.max_epochs", "1", "--run.root", str(tmp_path),
            "--run.wandb", "disabled", "--run.name", "pretrain", "--model.init_args.network.init_args.backbone", json.dumps(backbone),
            "--data.init_args.input_size", "64", "--data.init_args.source.init_args.image_size", "64"]
    assert run_cli(args) == 0
    ckpt, out = tmp_path / "pretrain" / "checkpoints" / "last.ckpt", tmp_path / "backbone.pt"
    assert export_main(["--ckpt", str(ckpt), "--module", "network.backbone", "--out", str(out)]) == 0
    trained = torch.load(ckpt, weights_only=True)["state_dict"]
    detector = YOLOv1(num_classes=3, variant="fast", width=0.0625, fc_width=8, input_size=64, backbone_weights=str(out)).detector
    for key, value in detector.backbone.state_dict().items():
        assert torch.equal(value, trained[f"network.backbone.{key}"]), key
    # What the user made stays: no silent overwrite, and clear errors naming the file or module.
    with pytest.raises(FileExistsError, match="--force"):
        export_module(ckpt, "network.backbone", out)
    assert export_module(ckpt, "network.backbone", out, force=True) == len(detector.backbone.state_dict())
    with pytest.raises(CheckpointError, match="network.backbone"):
        export_module(ckpt, "network.trunk", tmp_path / "other.pt")
    with pytest.raises(DataNotFoundError, match="absent.ckpt"):
        export_module(tmp_path / "absent.ckpt", "network.backbone", tmp_path / "other.pt")
    assert not (tmp_path / "other.pt").exists()
    assert export_main(["--ckpt", str(ckpt), "--module", "network.trunk", "--out", str(tmp_path / "other.pt")]) == 2
