"""Detection units and fits: the synthetic scenes (determinism, visible boxes, keypoints), the
augmentation (boxes, masks and keypoints move with the pixels; left and right swap), the list
collate, box conversions, the networks' parameter counts against torchvision's builders, the focal
loss's α and γ, pretrained weights from local files only, the classes linked from the data, and a
``fit`` through the CLI for every detector on tiny synthetic images."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from torchvision.models import detection as tvd
from torchvision.ops import box_convert, sigmoid_focal_loss

from core.errors import CheckpointError, ConfigError, DataNotFoundError
from datamodules.detection import DetectionAugmentation, DetectionDataset, list_collate
from datamodules.synthetic.detection import CLASS_NAMES, KEYPOINT_NAMES, SyntheticDetection
from experiments.cli import load_components, run_cli
from lightning_modules.networks.detection_backbones import MobileNetV3FPN, ResNetFPN
from lightning_modules.networks.faster_rcnn import FasterRCNN
from lightning_modules.networks.keypoint_rcnn import KeypointRCNN
from lightning_modules.networks.mask_rcnn import MaskRCNN
from lightning_modules.networks.retinanet import FocalClassificationHead, RetinaNet
from lightning_modules.networks.ssd import SSD300
from lightning_modules.networks.ssdlite import SSDLite320
from lightning_modules.networks.fcos import FCOS

TINY = "tests/configs/detection_tiny.yaml"


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ---------------------------------------------------------------------- data
def test_synthetic_scenes_are_deterministic_with_visible_boxes_masks_and_keypoints():
    source = SyntheticDetection(num_train=30, num_val=2, num_test=0, image_size=96, seed=3)
    again = SyntheticDetection(num_train=30, num_val=2, num_test=0, image_size=96, seed=3)
    records = source.records("train")
    assert [r.boxes.tolist() for r in records] == [r.boxes.tolist() for r in again.records("train")]
    assert torch.equal(source.load_image(records[5]), again.load_image(again.records("train")[5]))
    assert any(len(r) == 0 for r in records) and any(len(r) >= 4 for r in records)
    for record in records:
        if not len(record):
            continue
        masks = source.load_masks(record, 96, 96).numpy().astype(bool)
        assert masks.shape == (len(record), 96, 96)
        for box, mask, area in zip(record.boxes, masks, record.areas):
            rows, cols = np.nonzero(mask)
            # The box is the tight box of the visible pixels, in continuous coordinates.
            assert box.tolist() == [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]
            assert area == mask.sum()
        assert set(record.labels.tolist()) <= set(range(1, len(CLASS_NAMES) + 1))
        assert record.keypoints.shape == (len(record), len(KEYPOINT_NAMES), 3)
        visible = record.keypoints[..., 2] == 2
        for obj, (kps, mask) in enumerate(zip(record.keypoints, masks)):
            for x, y, flag in kps:
                if flag == 2:
                    assert mask[int(y), int(x)], "a visible keypoint lies on the object's visible pixels"
        assert visible.any() or len(record) == 0


def _one_object_sample():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, 10:20, 5:15] = 255
    masks = torch.zeros(1, 40, 60, dtype=torch.uint8)
    masks[0, 10:20, 5:15] = 1
    target = {
        "boxes": torch.tensor([[5.0, 10.0, 15.0, 20.0]]),
        "labels": torch.tensor([2]),
        "iscrowd": torch.tensor([False]),
        "difficult": torch.tensor([False]),
        "area": torch.tensor([100.0]),
        "masks": masks,
        # top (10, 10), right (15, 15), bottom (10, 20), left (5, 15)
        "keypoints": torch.tensor([[[10.0, 10.0, 2], [15.0, 15.0, 2], [10.0, 20.0, 2], [5.0, 15.0, 1]]]),
    }
    return image, target


def test_flip_moves_boxes_masks_and_keypoints_and_swaps_left_and_right():
    torch.manual_seed(0)
    image, target = _one_object_sample()
    flip = DetectionAugmentation(scale_range=(1.0, 1.0), flip_prob=1.0, brightness=0.0, hue=0.0)
    out_image, out = flip(image, target, flip_pairs=((1, 3),))
    assert out["boxes"].tolist() == [[45.0, 10.0, 55.0, 20.0]]  # x -> 60 - x
    rows, cols = torch.nonzero(out["masks"][0], as_tuple=True)
    assert (int(cols.min()), int(cols.max()) + 1) == (45, 55)
    assert torch.equal(out_image[0].bool(), out["masks"][0].bool())
    # right (15 -> 45) and left (5 -> 55) swap places: "right" is again the right-hand point.
    assert out["keypoints"][0].tolist() == [[50.0, 10.0, 2], [55.0, 15.0, 1], [50.0, 20.0, 2], [45.0, 15.0, 2]]
    assert out["labels"].tolist() == [2] and out["area"].tolist() == [100.0]


def test_rescale_scales_boxes_and_keypoints_and_sanitize_drops_tiny_objects():
    image, target = _one_object_sample()
    torch.manual_seed(0)
    out_image, out = DetectionAugmentation(scale_range=(2.0, 2.0), flip_prob=0.0, brightness=0.0, hue=0.0)(image, target)
    assert out_image.shape[-2:] == (80, 120)
    assert out["boxes"].tolist() == [[10.0, 20.0, 30.0, 40.0]]
    assert out["keypoints"][0, 0].tolist() == [20.0, 20.0, 2]
    _, small = DetectionAugmentation(scale_range=(0.1, 0.1), flip_prob=0.0, brightness=0.0, hue=0.0, min_box_size=2)(image, target)
    assert len(small["boxes"]) == 0 and len(small["labels"]) == 0 and small["keypoints"].shape[0] == 0 and small["masks"].shape[0] == 0


def test_training_samples_leave_out_crowds_and_difficult_objects_and_evaluation_keeps_them():
    source = SyntheticDetection(num_train=12, num_val=1, num_test=0, image_size=64, seed=0, min_objects=3, max_objects=3, crowded_prob=0.0)
    records = source.records("train")
    record = records[0]
    record.iscrowd[0] = True
    record.difficult[1] = True
    _, train = DetectionDataset(source, records, train=True)[0]
    _, evaluation = DetectionDataset(source, records, train=False)[0]
    assert len(train["boxes"]) == len(record) - 2 and len(evaluation["boxes"]) == len(record)
    assert evaluation["iscrowd"].tolist()[:2] == [True, False] and evaluation["difficult"].tolist()[:2] == [False, True]
    assert evaluation["image_key"] == "train/000000" and int(evaluation["image_id"]) == -1
    images, targets = list_collate([DetectionDataset(source, records)[i] for i in range(3)])
    assert isinstance(images, list) and len(images) == 3 and images[0].dtype == torch.float32 and float(images[0].max()) <= 1.0
    assert [len(t["boxes"]) for t in targets] == [len(r) for r in records[:3]]


def test_box_conversions_round_trip():
    boxes = torch.tensor([[1.5, 2.0, 11.0, 7.25], [0.0, 0.0, 320.0, 240.0]])
    for fmt in ("xywh", "cxcywh"):
        assert torch.allclose(box_convert(box_convert(boxes, "xyxy", fmt), fmt, "xyxy"), boxes)
    assert box_convert(boxes, "xyxy", "xywh")[0].tolist() == [1.5, 2.0, 9.5, 5.25]


# ---------------------------------------------------------------------- networks
# torchvision 0.29's weight metadata (PAPER_NUMBERS.md 2a): COCO's 91 classes, 2 for keypoints.
TORCHVISION_PARAMS = {
    "fasterrcnn_r50_fpn": 41_755_286, "fasterrcnn_r50_fpn_v2": 43_712_278, "fasterrcnn_mobilenet_v3_fpn": 19_386_354,
    "maskrcnn_r50_fpn": 44_401_393, "keypointrcnn_r50_fpn": 59_137_258, "retinanet_r50_fpn": 34_014_999,
    "retinanet_r50_fpn_v2": 38_198_935, "fcos_r50_fpn": 32_269_600, "ssd300_vgg16": 35_641_826, "ssdlite320": 3_440_060,
}
ZOO_FROZEN_NORMS = {"fasterrcnn_r50_fpn", "fasterrcnn_mobilenet_v3_fpn", "maskrcnn_r50_fpn", "keypointrcnn_r50_fpn", "retinanet_r50_fpn", "fcos_r50_fpn"}


@pytest.mark.parametrize("ours, builder", [
    (lambda: FasterRCNN(ResNetFPN(50), num_classes=91), lambda: tvd.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)),
    (lambda: FasterRCNN(ResNetFPN(50, fpn_norm=True), num_classes=91, rpn_conv_depth=2, box_head_convs=[256] * 4, box_head_fcs=[1024], box_head_norm=True),
     lambda: tvd.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None)),
    (lambda: FasterRCNN(MobileNetV3FPN(), num_classes=91), lambda: tvd.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)),
    (lambda: MaskRCNN(ResNetFPN(50), num_classes=91), lambda: tvd.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None)),
    (lambda: KeypointRCNN(ResNetFPN(50), num_classes=2, num_keypoints=17), lambda: tvd.keypointrcnn_resnet50_fpn(weights=None, weights_backbone=None)),
    (lambda: RetinaNet(ResNetFPN(50, returned_layers=[2, 3, 4], extra_levels="p6p7"), num_classes=91), lambda: tvd.retinanet_resnet50_fpn(weights=None, weights_backbone=None)),
    (lambda: RetinaNet(ResNetFPN(50, returned_layers=[2, 3, 4], extra_levels="p6p7_from_c5"), num_classes=91, head_norm=True, box_loss="giou"),
     lambda: tvd.retinanet_resnet50_fpn_v2(weights=None, weights_backbone=None)),
    (lambda: FCOS(ResNetFPN(50, returned_layers=[2, 3, 4], extra_levels="p6p7"), num_classes=91), lambda: tvd.fcos_resnet50_fpn(weights=None, weights_backbone=None)),
    (lambda: SSD300(num_classes=91), lambda: tvd.ssd300_vgg16(weights=None, weights_backbone=None)),
    (lambda: SSDLite320(num_classes=91), lambda: tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None)),
], ids=["fasterrcnn_r50_fpn", "fasterrcnn_r50_fpn_v2", "fasterrcnn_mobilenet_v3_fpn", "maskrcnn_r50_fpn", "keypointrcnn_r50_fpn",
        "retinanet_r50_fpn", "retinanet_r50_fpn_v2", "fcos_r50_fpn", "ssd300_vgg16", "ssdlite320"])
def test_networks_equal_torchvision_builders_in_parameters_and_names(ours, builder, request):
    network, reference = ours(), builder()
    assert params(network) == params(reference)
    name = request.node.callspec.id
    # The zoo's builders freeze the backbone's batch norms when they load ImageNet weights
    # (FrozenBatchNorm2d: buffers, not parameters); these were built from scratch.
    body_norms = sum(params(m) for m in network.detector.backbone.body.modules() if isinstance(m, torch.nn.BatchNorm2d)) if name in ZOO_FROZEN_NORMS else 0
    assert params(network) - body_norms == TORCHVISION_PARAMS[name]
    # The very parameter names of torchvision's models: their COCO checkpoints load as they are.
    assert network.detector.state_dict().keys() == reference.state_dict().keys()
    for pool in ("box_roi_pool", "mask_roi_pool", "keypoint_roi_pool"):  # the R-CNNs' RoIAlign as torchvision's
        if hasattr(reference, "roi_heads") and getattr(reference.roi_heads, pool) is not None:
            mine, theirs = getattr(network.detector.roi_heads, pool), getattr(reference.roi_heads, pool)
            assert (mine.featmap_names, mine.output_size, mine.sampling_ratio) == (theirs.featmap_names, theirs.output_size, theirs.sampling_ratio)


def test_roi_sampling_ratio_reaches_every_roialign_and_a_bad_one_is_named():
    network = MaskRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=3, roi_sampling_ratio=1)
    heads = network.detector.roi_heads
    assert heads.box_roi_pool.sampling_ratio == heads.mask_roi_pool.sampling_ratio == 1
    assert KeypointRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=2, num_keypoints=4, roi_sampling_ratio=1).detector.roi_heads.keypoint_roi_pool.sampling_ratio == 1
    with pytest.raises(ConfigError, match="roi_sampling_ratio"):
        FasterRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=3, roi_sampling_ratio=0)


def test_focal_head_with_alpha_025_gamma_2_is_torchvisions_loss_and_gamma_0_is_balanced_cross_entropy():
    torch.manual_seed(0)
    ours = FocalClassificationHead(8, 2, 4, alpha=0.25, gamma=2.0)
    reference = tvd.retinanet.RetinaNetClassificationHead(8, 2, 4)
    reference.load_state_dict(ours.state_dict(), strict=False)
    logits = torch.randn(1, 10, 4)
    targets = [{"labels": torch.tensor([1, 3])}]
    matched = [torch.tensor([0, -1, -2, 1, -1, -1, 0, -2, -1, -1])]
    head_outputs = {"cls_logits": logits}
    assert torch.allclose(ours.compute_loss(targets, head_outputs, matched), reference.compute_loss(targets, head_outputs, matched))
    ce = FocalClassificationHead(8, 2, 4, alpha=0.75, gamma=0.0)
    valid = matched[0] != -2
    expected_targets = torch.zeros(10, 4)
    expected_targets[0, 1] = expected_targets[6, 1] = expected_targets[3, 3] = 1
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[0][valid], expected_targets[valid], reduction="none")
    weights = torch.where(expected_targets[valid] == 1, 0.75, 0.25)
    assert torch.allclose(ce.compute_loss(targets, head_outputs, matched), (weights * bce).sum() / 3)
    assert torch.allclose(sigmoid_focal_loss(logits[0], expected_targets, alpha=0.75, gamma=0.0, reduction="sum"),
                          (torch.where(expected_targets == 1, 0.75, 0.25) * torch.nn.functional.binary_cross_entropy_with_logits(logits[0], expected_targets, reduction="none")).sum())


def test_pretrained_weights_come_only_from_a_local_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="weights"):
        MobileNetV3FPN(weights=str(tmp_path / "missing.pth"), width_mult=0.25)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        FasterRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=3, weights=str(garbage))
    # A whole detector trained on other classes: everything loads but the class-specific layers.
    source = FasterRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=5, box_head_fcs=[16, 16])
    torch.save(source.detector.state_dict(), tmp_path / "coco.pth")
    target = FasterRCNN(MobileNetV3FPN(width_mult=0.25), num_classes=3, box_head_fcs=[16, 16], weights=str(tmp_path / "coco.pth"))
    assert target.skipped_weights == ["roi_heads.box_predictor.bbox_pred.bias", "roi_heads.box_predictor.bbox_pred.weight",
                                      "roi_heads.box_predictor.cls_score.bias", "roi_heads.box_predictor.cls_score.weight"]
    assert torch.equal(target.detector.backbone.fpn.layer_blocks[0][0].weight, source.detector.backbone.fpn.layer_blocks[0][0].weight)


def test_the_yaml_gives_the_classes_and_a_count_that_contradicts_the_data_is_one_line(tmp_path, capsys):
    model, data, _ = load_components(["--config", TINY])
    assert model.network.num_classes == len(CLASS_NAMES) + 1 == len(data.facts.class_names) + 1
    code = run_cli(["fit", "--config", TINY, "--model.init_args.network.init_args.num_classes", "4", "--run.root", str(tmp_path), "--run.wandb", "disabled"])
    assert code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("convlab: model.init_args.network.init_args.num_classes is 4 but the data has 6"), lines


# ---------------------------------------------------------------------- fits through the CLI
MOBILE = {"class_path": "lightning_modules.networks.detection_backbones.MobileNetV3FPN", "init_args": {"width_mult": 0.25}}
RESNET18_P6P7 = {"class_path": "lightning_modules.networks.detection_backbones.ResNetFPN",
                 "init_args": {"depth": 18, "returned_layers": [2, 3, 4], "extra_levels": "p6p7"}}
# Every detector's classes are the synthetic scenes' 6 shapes + background.
SMALL_RCNN = {"num_classes": len(CLASS_NAMES) + 1, "min_size": 64, "max_size": 64, "anchor_sizes": [[16, 32, 64]] * 3, "box_head_fcs": [32, 32], "box_batch_size_per_image": 32}
DETECTORS = {
    "faster_rcnn_mobilenet": {},
    "faster_rcnn_v2_heads": {"model.init_args.network": {"class_path": "lightning_modules.networks.faster_rcnn.FasterRCNN", "init_args": {
        **SMALL_RCNN, "backbone": {"class_path": "lightning_modules.networks.detection_backbones.ResNetFPN", "init_args": {"depth": 18, "fpn_norm": True}},
        "anchor_sizes": [[16], [32], [64], [96], [128]], "rpn_conv_depth": 2, "box_head_convs": [16, 16], "box_head_fcs": [32], "box_head_norm": True}}},
    "mask_rcnn": {"model.init_args.network": {"class_path": "lightning_modules.networks.mask_rcnn.MaskRCNN", "init_args": {
        **SMALL_RCNN, "backbone": MOBILE, "mask_head_layers": [8, 8]}}, "data.init_args.masks": True},
    "keypoint_rcnn": {"model.init_args.network": {"class_path": "lightning_modules.networks.keypoint_rcnn.KeypointRCNN", "init_args": {
        **SMALL_RCNN, "backbone": MOBILE, "num_keypoints": len(KEYPOINT_NAMES), "keypoint_head_layers": [8, 8]}}},
    "retinanet": {"model.init_args.network": {"class_path": "lightning_modules.networks.retinanet.RetinaNet", "init_args": {
        "num_classes": len(CLASS_NAMES) + 1, "backbone": RESNET18_P6P7, "min_size": 64, "max_size": 64, "anchor_sizes": [[16], [24], [32], [48], [64]], "focal_alpha": 0.25, "focal_gamma": 2.0}}},
    "fcos": {"model.init_args.network": {"class_path": "lightning_modules.networks.fcos.FCOS", "init_args": {
        "num_classes": len(CLASS_NAMES) + 1, "backbone": RESNET18_P6P7, "min_size": 64, "max_size": 64}}},
    "ssdlite320": {"model.init_args.network": {"class_path": "lightning_modules.networks.ssdlite.SSDLite320", "init_args": {"num_classes": len(CLASS_NAMES) + 1, "width_mult": 0.25}}},
    "ssd300_vgg16": {"model.init_args.network": {"class_path": "lightning_modules.networks.ssd.SSD300", "init_args": {"num_classes": len(CLASS_NAMES) + 1}},
                     "data.init_args.source.init_args.num_train": 2, "data.init_args.source.init_args.num_val": 2},
    # Regression to k boxes (lightning_modules/networks/box_regressor.py), run as a sliding window.
    "box_regressor": {"model.init_args.network": {"class_path": "lightning_modules.networks.box_regressor.BoxRegressor", "init_args": {
        "num_classes": len(CLASS_NAMES) + 1, "slots": 2, "window": "sliding", "widths": [8, 16, 32], "hidden": 16, "input_size": 64, "nms_thresh": 0.5}}},
}
EXPECTED = {"mask_rcnn": ("val/segm/AP", "train/loss_mask"), "keypoint_rcnn": ("val/keypoints/AP", "train/loss_keypoint"),
            "box_regressor": ("train/loss_classifier", "train/loss_box_reg")}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_every_detector_fits_through_the_cli(name, tmp_path):
    args = ["fit", "--config", TINY, "--trainer.max_epochs", "1", "--run.root", str(tmp_path), "--run.wandb", "disabled", "--run.name", name]
    for key, value in DETECTORS[name].items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, dict) else str(value)]
    assert run_cli(args) == 0
    run_dir = tmp_path / name
    header = (run_dir / "metrics.csv").read_text().splitlines()[0].split(",")
    for key in ("val/map", "val/bbox/AP50", "val/voc07/mAP", "val/images_per_s", "train/loss_epoch", *EXPECTED.get(name, ())):
        assert key in header, (key, header)
    rates = [float(row["val/images_per_s"]) for row in csv.DictReader((run_dir / "metrics.csv").open()) if row["val/images_per_s"]]
    assert len(rates) == 1 and rates[0] > 0
    assert (run_dir / "per_class_ap_val.md").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
