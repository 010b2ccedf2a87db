"""Semantic segmentation units: the scores against a confusion matrix computed by hand (ignore index,
absent classes), Dice, sliding-window inference, the data (synthetic determinism, augmentation keeps
labels on their pixels, padding collate, the U-Net margin), DeepLab v3+ re-dilation, and a
``fit`` through the CLI for every segmentation network on tiny synthetic images."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision import tv_tensors

from core.errors import BadRecordError
from datamodules.segmentation import SegmentationAugmentation, SegmentationDataModule, check_label_values, pad_collate
from datamodules.synthetic.segmentation import CLASS_NAMES, SyntheticSegmentation
from experiments.cli import run_cli
from lightning_modules.metrics.segmentation import SegmentationScores, segmentation_scores
from lightning_modules.networks.deeplab import DeepLabV3Plus, ResNetBackbone
from lightning_modules.segmentation import SlidingWindow, align, dice_loss, label_rle


def test_scores_match_a_confusion_matrix_computed_by_hand():
    # 3 classes; class 2 absent from both ground truth and prediction; 255 ignored.
    target = torch.tensor([[0, 0, 1, 1], [0, 1, 255, 255]])
    preds = torch.tensor([[0, 1, 1, 1], [0, 0, 2, 0]])
    metric = SegmentationScores(num_classes=4, ignore_index=255)
    metric.update(preds[None], target[None])
    scores = metric.compute()
    # Counted pixels: 6. Class 0: gt 3 (cols 0,1 row 0; col 0 row 1), pred at those: 0,1,0 -> TP 2;
    # predicted 0 elsewhere: (1,1) -> pred 0 total 3. IoU0 = 2 / (3 + 3 - 2) = 0.5.
    # Class 1: gt 3, TP 2 ((0,2),(0,3)), predicted 1 at (0,1),(0,2),(0,3) -> 3. IoU1 = 2 / 4 = 0.5.
    # Classes 2 and 3: no gt, no prediction on counted pixels -> NaN, left out of the mean.
    assert scores["iou"][:2].tolist() == [0.5, 0.5]
    assert math.isnan(scores["iou"][2]) and math.isnan(scores["iou"][3])
    assert scores["miou"].item() == pytest.approx(0.5)
    assert scores["pixel_accuracy"].item() == pytest.approx(4 / 6)
    assert scores["mean_accuracy"].item() == pytest.approx((2 / 3 + 2 / 3) / 2)


def test_a_class_predicted_but_absent_from_the_ground_truth_counts_as_zero():
    confusion = torch.tensor([[3, 1], [0, 0]])  # class 1: never true, predicted once
    scores = segmentation_scores(confusion)
    assert scores["iou"].tolist() == [0.75, 0.0]
    assert scores["miou"].item() == pytest.approx(0.375)
    assert scores["mean_accuracy"].item() == pytest.approx(0.75)  # only classes with ground truth
    assert scores["fw_iou"].item() == pytest.approx(0.75)


def test_dice_is_zero_for_a_perfect_prediction_and_ignores_ignored_pixels():
    labels = torch.tensor([[[0, 1], [1, 255]]])
    logits = torch.full((1, 2, 2, 2), -20.0)
    logits[0, 0, 0, 0] = logits[0, 1, 0, 1] = logits[0, 1, 1, 0] = 20.0
    logits[0, 0, 1, 1] = 20.0  # a wrong class on the ignored pixel must not count
    assert dice_loss(logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    # All wrong: per class (0 + 1) / (3 + 1) with eps = 1 (class 0: 2 predicted + 1 true; class 1: 1 + 2).
    assert dice_loss(-logits, labels).item() == pytest.approx(0.75)


def test_sliding_window_equals_whole_image_for_a_pointwise_network():
    conv = torch.nn.Conv2d(3, 4, 1)
    images = torch.randn(2, 3, 37, 53)
    with torch.no_grad():
        whole = conv(images)
        tiled = SlidingWindow(window=16, stride=10)(conv, images, (37, 53), 4)
    assert tiled.shape == (2, 4, 37, 53)
    assert torch.allclose(tiled, whole, atol=1e-5)
    with torch.no_grad():  # an image smaller than the window is padded, and the padding cut off
        small = SlidingWindow(window=64)(conv, images, (37, 53), 4)
    assert torch.allclose(small, whole, atol=1e-5)


def test_sliding_window_with_an_input_margin_crops_each_tile_back():
    conv = torch.nn.Conv2d(3, 2, 1)
    images = torch.randn(1, 3, 30 + 8, 40 + 8)  # a 4-pixel margin around a 30x40 label grid
    with torch.no_grad():
        tiled = SlidingWindow(window=12, stride=7)(conv, images, (30, 40), 2)
        expected = conv(images)[..., 4:34, 4:44]
    assert torch.allclose(tiled, expected, atol=1e-5)


def test_align_crops_logits_or_labels_to_their_common_centre():
    logits, labels = align(torch.zeros(1, 2, 10, 10), torch.arange(36).view(1, 6, 6))
    assert logits.shape[-2:] == (6, 6) and labels.shape[-2:] == (6, 6)
    logits, labels = align(torch.zeros(1, 2, 4, 4), torch.arange(36).view(1, 6, 6))
    assert labels[0, 0].tolist() == [7, 8, 9, 10]


def test_label_rle_round_trips():
    import numpy as np
    from pycocotools import mask as mask_utils

    labels = np.array([[0, 2, 2], [1, 2, 0]])
    rle = label_rle(labels, 2)
    decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
    assert decoded.tolist() == (labels == 2).astype(np.uint8).tolist()


def test_synthetic_scenes_are_deterministic_and_hold_wires():
    a = SyntheticSegmentation(num_train=6, num_val=0, num_test=0, image_size=48, max_wires=3)
    b = SyntheticSegmentation(num_train=6, num_val=0, num_test=0, image_size=48, max_wires=3)
    seen = set()
    for ra, rb in zip(a.records("train"), b.records("train")):
        (ia, la), (ib, lb) = a.load(ra), b.load(rb)
        assert torch.equal(ia, ib) and torch.equal(la, lb)
        assert ia.shape == (3, 48, 48) and la.shape == (48, 48) and la.dtype == torch.int64
        seen |= set(la.unique().tolist())
    assert CLASS_NAMES.index("wire") in seen and 0 in seen
    assert max(seen) < len(CLASS_NAMES)
    other = SyntheticSegmentation(num_train=1, num_val=0, num_test=0, image_size=48, seed=1)
    assert not torch.equal(other.load(other.records("train")[0])[0], a.load(a.records("train")[0])[0])


def test_augmentation_moves_labels_with_pixels_and_pads_with_ignore():
    torch.manual_seed(0)
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    labels = torch.zeros(20, 30, dtype=torch.int64)
    image[:, :, :10] = 200  # the left third is bright and labelled 1
    labels[:, :10] = 1
    augmentation = SegmentationAugmentation(crop_size=(32, 32), scale_range=(0.5, 1.5), flip_prob=0.5, brightness=0.0)
    for _ in range(10):
        out_image, out_labels = augmentation(tv_tensors.Image(image), tv_tensors.Mask(labels), 255)
        assert out_image.shape == (3, 32, 32) and out_labels.shape == (32, 32)
        valid = out_labels != 255
        bright = out_image[0] > 162  # between the dark side (0), the padding's mean colour (124) and the bright side (200)
        # Nearest-neighbour labels follow the bilinear pixels; only the blended boundary column may differ.
        assert (bright[valid] != (out_labels[valid] == 1)).sum() <= out_labels.shape[0]
        assert (out_labels == 1).any() or (out_labels == 0).any()
        assert set(out_labels.unique().tolist()) <= {0, 1, 255}
        assert (out_labels == 255).any()  # the 30-wide image never fills a 32-wide crop


def test_pad_collate_pads_labels_with_the_ignore_index():
    samples = [
        (torch.ones(3, 4, 5), {"labels": torch.zeros(4, 5, dtype=torch.int64), "index": torch.tensor(0), "image_id": torch.tensor(-1), "image_key": "a", "size": torch.tensor([4, 5])}),
        (torch.ones(3, 6, 3), {"labels": torch.ones(6, 3, dtype=torch.int64), "index": torch.tensor(1), "image_id": torch.tensor(-1), "image_key": "b", "size": torch.tensor([6, 3])}),
    ]
    images, target = pad_collate(255)(samples)
    assert images.shape == (2, 3, 6, 5) and target["labels"].shape == (2, 6, 5)
    assert images[0, :, 4:].abs().sum() == 0 and (target["labels"][0, 4:] == 255).all()
    assert (target["labels"][1, :, 3:] == 255).all() and target["size"].tolist() == [[4, 5], [6, 3]]


def test_margin_mirrors_the_image_and_keeps_the_labels():
    source = SyntheticSegmentation(num_train=4, num_val=2, num_test=2, image_size=32)
    data = SegmentationDataModule(source, crop_size=32, batch_size=2, num_workers=0, input_margin=6)
    image, target = data.dataset("val")[0]
    assert image.shape == (3, 44, 44) and target["labels"].shape == (32, 32)
    assert torch.allclose(image[:, 5, 6:38], image[:, 7, 6:38])  # reflected about row 6, the image's first
    assert data.facts.input_shape == (3, 44, 44)


def test_label_values_outside_the_classes_name_the_file():
    with pytest.raises(BadRecordError, match=r"mask\.png.*values 9"):
        check_label_values(torch.tensor([[0, 9], [255, 1]]), 3, 255, "mask.png")
    check_label_values(torch.tensor([[0, 2], [255, 1]]), 3, 255, "mask.png")


def test_deeplab_eval_output_stride_redilates_the_same_weights():
    torch.manual_seed(0)
    train16 = DeepLabV3Plus(ResNetBackbone(blocks=(1, 1, 2, 1), output_stride=16), num_classes=3, aspp_channels=8, decoder_channels=8, eval_output_stride=8)
    built8 = DeepLabV3Plus(ResNetBackbone(blocks=(1, 1, 2, 1), output_stride=8), num_classes=3, aspp_channels=8, decoder_channels=8)
    built8.load_state_dict(train16.state_dict())
    x = torch.randn(1, 3, 49, 49)
    train16.eval()
    built8.eval()
    with torch.no_grad():
        assert torch.allclose(train16(x), built8(x), atol=1e-5)
    assert train16.backbone.output_stride == 8 and train16.aspp.branches[1][0].dilation == (12, 12)
    train16.train()
    assert train16.backbone.output_stride == 16 and train16.aspp.branches[1][0].dilation == (6, 6)


def test_deeplab_without_decoder_has_no_decoder_parameters():
    with_decoder = DeepLabV3Plus(ResNetBackbone(blocks=(1, 1, 1, 1)), num_classes=3, aspp_channels=8, decoder_channels=8)
    without = DeepLabV3Plus(ResNetBackbone(blocks=(1, 1, 1, 1)), num_classes=3, aspp_channels=8, decoder_channels=8, decoder=False)
    assert without.decoder is None
    count = lambda module: sum(p.numel() for p in module.parameters())
    # aspp_channels == decoder_channels, so both classifiers are the same size: the difference is the decoder.
    assert count(with_decoder) - count(without) == count(with_decoder.decoder) > 0
    without.eval()
    assert without(torch.randn(1, 3, 40, 40)).shape == (1, 3, 40, 40)


TINY = "tests/configs/segmentation_tiny.yaml"
NETWORKS = {
    "unet_padded": {},
    "unet_unpadded": {
        "model.init_args.network.init_args.padding": "false",
        "data.init_args.input_margin": "8",  # depth 2: 2 convs x 2 levels x 2 pixels, twice, = 8 per side
    },
    "fcn32s": {"model.init_args.network": '{"class_path": "lightning_modules.networks.fcn.FCN", "init_args": {"num_classes": 7, "skips": [], "widths": [2, 3, 4, 5, 6], "fc_channels": 8}}'},
    "fcn8s": {"model.init_args.network": '{"class_path": "lightning_modules.networks.fcn.FCN", "init_args": {"num_classes": 7, "skips": [4, 3], "widths": [2, 3, 4, 5, 6], "fc_channels": 8}}'},
    "segnet": {"model.init_args.network": '{"class_path": "lightning_modules.networks.segnet.SegNet", "init_args": {"num_classes": 7, "widths": [2, 3, 4, 5, 6]}}'},
    "deeplabv3plus": {"model.init_args.network": '{"class_path": "lightning_modules.networks.deeplab.DeepLabV3Plus", "init_args": {"num_classes": 7, "aspp_channels": 8, "decoder_channels": 8, "eval_output_stride": 8, "backbone": {"class_path": "lightning_modules.networks.deeplab.ResNetBackbone", "init_args": {"blocks": [1, 1, 1, 1], "width_per_group": 4}}}}'},
    "deeplabv3_torchvision": {"model.init_args.network": '{"class_path": "lightning_modules.networks.deeplab.DeepLabV3ResNet", "init_args": {"num_classes": 7, "depth": 50}}',
                              "data.init_args.source.init_args.num_train": "4", "data.init_args.source.init_args.num_val": "2"},
}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_fits_through_the_cli(name, tmp_path):
    args = ["fit", "--config", TINY, "--trainer.max_epochs", "1", "--run.root", str(tmp_path), "--run.wandb", "disabled"]
    for key, value in NETWORKS[name].items():
        args += [f"--{key}", value]
    assert run_cli(args) == 0
    run_dir = next(tmp_path.iterdir())
    metrics = (run_dir / "metrics.csv").read_text()
    assert "val/miou" in metrics and (run_dir / "checkpoints" / "last.ckpt").is_file()
