"""Faster R-CNN on VGG-16 as in Ren et al. 2015 (``VGG16C5`` + ``VGG16BoxHead``): the parameter
count against a count by hand, output shapes and loss terms in train and eval mode, the ImageNet
weights from a local file (which layers they fill, which stay fixed), clear errors for a wrong
file, and the VOC 07+12 configs of the paper profile (Faster R-CNN VGG-16, SSD300).

The shape and weights tests use a VGG-16 of small widths (the same topology); the count and the
config tests build the full network (137M parameters, about 550 MB)."""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from torchvision import models

from core.errors import CheckpointError, ConfigError, DataNotFoundError
from experiments.recipe import override_tree
from lightning_modules.networks.detection_backbones import VGG16BoxHead, VGG16C5
from lightning_modules.networks.faster_rcnn import FasterRCNN

TINY_WIDTHS = [4, 6, 8, 8, 8]
TINY_FC = 16
LOSS_TERMS = {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision's vgg16.features


def params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def paper_count(num_classes: int, objectness_logits_per_anchor: int = 1) -> int:
    """Faster R-CNN VGG-16 counted layer by layer (weights + biases)."""
    widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256),
              (256, 512), (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
    convs = sum(cin * cout * 9 + cout for cin, cout in widths)
    assert convs == 14_714_688  # PAPER_NUMBERS.md 5: "VGG16 conv layers only"
    anchors = 3 * 3
    logits = anchors * objectness_logits_per_anchor
    rpn = (512 * 512 * 9 + 512) + (512 * logits + logits) + (512 * 4 * anchors + 4 * anchors)  # 3x3 conv, objectness, deltas
    fc6 = 512 * 7 * 7 * 4096 + 4096  # 25088 x 4096
    fc7 = 4096 * 4096 + 4096
    cls = 4096 * num_classes + num_classes
    box = 4096 * 4 * num_classes + 4 * num_classes
    return convs + rpn + fc6 + fc7 + cls + box


def tiny_detector(weights: str | None = None, **kwargs) -> FasterRCNN:
    options = {
        "num_classes": 4, "min_size": 64, "max_size": 96, "anchor_sizes": [[16, 32, 64]],
        "rpn": {"post_nms_top_n_train": 50, "post_nms_top_n_test": 20}, "box_batch_size_per_image": 16, **kwargs,
    }
    return FasterRCNN(
        VGG16C5(weights=weights, widths=TINY_WIDTHS),
        box_head=VGG16BoxHead(weights=weights, in_channels=TINY_WIDTHS[-1], width=TINY_FC), **options,
    )


def fake_vgg16_file(path, widths=TINY_WIDTHS, fc=TINY_FC) -> dict[str, torch.Tensor]:
    """A torchvision ``vgg16`` state dict (features.N, classifier.0/3/6) of the given widths, random
    values, saved at ``path``."""
    torch.manual_seed(1)
    state: dict[str, torch.Tensor] = {}
    cin = 3
    for index, cout in zip(CONV_INDICES, [w for w, n in zip(widths, (2, 2, 3, 3, 3)) for _ in range(n)]):
        state[f"features.{index}.weight"] = torch.randn(cout, cin, 3, 3)
        state[f"features.{index}.bias"] = torch.randn(cout)
        cin = cout
    for index, (cout, cin_fc) in zip((0, 3, 6), ((fc, widths[-1] * 49), (fc, fc), (1000, fc))):
        state[f"classifier.{index}.weight"] = torch.randn(cout, cin_fc)
        state[f"classifier.{index}.bias"] = torch.randn(cout)
    torch.save(state, path)
    return state


# ---------------------------------------------------------------------- topology
def test_parameter_count_is_the_papers_topology_counted_by_hand():
    # torchvision's RPN scores each anchor with ONE sigmoid logit (9 per position); the paper's RPN
    # has two softmax logits per anchor (18): 4,617 parameters more.
    assert paper_count(21) == 137_073_622
    assert paper_count(21, objectness_logits_per_anchor=2) - paper_count(21) == 512 * 9 + 9
    network = FasterRCNN(VGG16C5(), num_classes=21, anchor_sizes=[[128, 256, 512]], box_head=VGG16BoxHead())
    detector = network.detector
    assert params(network) == paper_count(21) == 137_073_622
    assert params(detector.backbone) == 14_714_688
    assert detector.rpn.head.cls_logits.out_channels == 9 and detector.rpn.head.bbox_pred.out_channels == 36
    assert detector.rpn.anchor_generator.num_anchors_per_location() == [9]
    fc6, fc7 = detector.roi_heads.box_head.classifier[0], detector.roi_heads.box_head.classifier[3]
    assert (fc6.in_features, fc6.out_features, fc7.out_features) == (25088, 4096, 4096)
    assert [m.p for m in detector.roi_heads.box_head.modules() if isinstance(m, nn.Dropout)] == [0.5, 0.5]
    predictor = detector.roi_heads.box_predictor
    assert (predictor.cls_score.out_features, predictor.bbox_pred.out_features) == (21, 84)
    # conv5_3 without pool5: stride 16, 512 channels.
    assert detector.backbone(torch.zeros(1, 3, 64, 96))["0"].shape == (1, 512, 4, 6)
    del network, detector
    gc.collect()


def test_backbone_and_box_head_take_the_names_and_shapes_of_torchvisions_vgg16():
    """What the real vgg16-397923af.pth holds (features.*, classifier.0/3/6) is exactly what the
    two modules load: the file fits without a 550 MB fabricated copy (meta tensors, no memory)."""
    with torch.device("meta"):
        reference = models.vgg16().state_dict()
        ours = {**VGG16C5().state_dict(), **VGG16BoxHead().state_dict()}
    expected = {key: value.shape for key, value in reference.items() if not key.startswith("classifier.6.")}
    assert {key: value.shape for key, value in ours.items()} == expected


# ---------------------------------------------------------------------- forward
def test_train_mode_returns_the_four_losses_and_eval_mode_detections():
    torch.manual_seed(0)
    network = tiny_detector()
    images = [torch.rand(3, 60, 80), torch.rand(3, 72, 64)]
    targets = [
        {"boxes": torch.tensor([[5.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[10.0, 10.0, 30.0, 60.0], [0.0, 0.0, 64.0, 20.0]]), "labels": torch.tensor([2, 3])},
    ]
    losses = network.train()(images, targets)
    assert set(losses) == LOSS_TERMS
    assert all(value.ndim == 0 and torch.isfinite(value) for value in losses.values())
    sum(losses.values()).backward()
    assert network.detector.roi_heads.box_head.classifier[0].weight.grad is not None
    outputs = network.eval()(images)
    assert len(outputs) == 2
    for output, image in zip(outputs, images):
        n = output["boxes"].shape[0]
        assert output["boxes"].shape == (n, 4) and output["labels"].shape == output["scores"].shape == (n,)
        assert n <= 100 and (output["boxes"][:, 2] <= image.shape[2] + 1e-3).all() and (output["boxes"][:, 3] <= image.shape[1] + 1e-3).all()
        assert set(output["labels"].tolist()) <= {1, 2, 3}


def test_the_papers_sampling_and_proposal_numbers_reach_torchvisions_modules():
    network = tiny_detector(rpn={"pre_nms_top_n_train": 12000, "pre_nms_top_n_test": 6000, "post_nms_top_n_train": 2000, "post_nms_top_n_test": 300},
                            box_batch_size_per_image=128, box_positive_fraction=0.25, box_nms_thresh=0.3, min_size=600, max_size=1000)
    rpn, heads = network.detector.rpn, network.detector.roi_heads
    assert (rpn._pre_nms_top_n, rpn._post_nms_top_n) == ({"training": 12000, "testing": 6000}, {"training": 2000, "testing": 300})
    assert (rpn.nms_thresh, rpn.fg_bg_sampler.batch_size_per_image, rpn.fg_bg_sampler.positive_fraction) == (0.7, 256, 0.5)
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction, heads.nms_thresh) == (128, 0.25, 0.3)
    assert (network.detector.transform.min_size, network.detector.transform.max_size) == ((600,), 1000)
    pool = heads.box_roi_pool
    assert (pool.output_size, pool.sampling_ratio) == ((7, 7), 2)


# ---------------------------------------------------------------------- weights
def test_imagenet_weights_fill_the_convolutions_and_fc6_fc7_and_conv1_conv2_stay_fixed(tmp_path):
    state = fake_vgg16_file(tmp_path / "vgg16.pth")
    network = tiny_detector(weights=str(tmp_path / "vgg16.pth"))
    backbone, head = network.detector.backbone, network.detector.roi_heads.box_head
    for index in CONV_INDICES:
        assert torch.equal(backbone.features[index].weight, state[f"features.{index}.weight"])
        assert torch.equal(backbone.features[index].bias, state[f"features.{index}.bias"])
        # conv1_1 .. conv2_2 (features 0-7) fixed, conv3_1 and up fine-tuned (the paper's rule).
        assert backbone.features[index].weight.requires_grad == (index >= 10)
    assert torch.equal(head.classifier[0].weight, state["classifier.0.weight"]) and torch.equal(head.classifier[3].bias, state["classifier.3.bias"])
    head_parameters = list(head.parameters())
    assert head_parameters and all(p.requires_grad for p in head_parameters)
    assert network.detector.roi_heads.box_predictor.cls_score.weight.shape == (4, TINY_FC)  # new, not ImageNet's 1000
    # From scratch every stage trains; trainable_layers chooses how many with weights.
    for trunk in (VGG16C5(widths=TINY_WIDTHS), VGG16C5(weights=str(tmp_path / "vgg16.pth"), widths=TINY_WIDTHS, trainable_layers=5)):
        trunk_parameters = list(trunk.parameters())
        assert trunk_parameters and all(p.requires_grad for p in trunk_parameters)
    frozen = VGG16C5(weights=str(tmp_path / "vgg16.pth"), widths=TINY_WIDTHS, trainable_layers=1)
    assert [frozen.features[i].weight.requires_grad for i in CONV_INDICES] == [False] * 10 + [True] * 3


def test_a_wrong_weights_file_is_a_clear_checkpoint_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="VGG16C5.weights"):
        VGG16C5(weights=str(tmp_path / "missing.pth"), widths=TINY_WIDTHS)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        VGG16C5(weights=str(garbage), widths=TINY_WIDTHS)
    # A ResNet's file: names that VGG-16 does not have.
    torch.save(models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(CheckpointError, match=r"resnet18.pth \(VGG16C5.weights\) does not fit VGG16C5: .*unexpected"):
        VGG16C5(weights=str(tmp_path / "resnet18.pth"), widths=TINY_WIDTHS)
    with pytest.raises(CheckpointError, match=r"VGG16BoxHead.weights\) does not fit VGG16BoxHead"):
        VGG16BoxHead(weights=str(tmp_path / "resnet18.pth"), in_channels=TINY_WIDTHS[-1], width=TINY_FC)
    # A VGG-16 of other widths (the right names, tensors of the wrong shape).
    fake_vgg16_file(tmp_path / "other.pth", widths=[4, 6, 8, 8, 12], fc=8)
    expected = r"other.pth \(VGG16C5.weights\) does not fit VGG16C5: 6 tensors of another shape \(e.g. features.24.bias: \(12,\) in the file, \(8,\) here\)"
    with pytest.raises(CheckpointError, match=expected):
        VGG16C5(weights=str(tmp_path / "other.pth"), widths=TINY_WIDTHS)
    with pytest.raises(CheckpointError, match=r"other.pth \(VGG16BoxHead.weights\) does not fit VGG16BoxHead: 4 tensors of another shape"):
        VGG16BoxHead(weights=str(tmp_path / "other.pth"), in_channels=TINY_WIDTHS[-1], width=TINY_FC)


def test_a_box_head_that_contradicts_the_other_options_is_named():
    with pytest.raises(ConfigError, match="box_head replaces box_head_convs, box_head_fcs"):
        FasterRCNN(VGG16C5(widths=TINY_WIDTHS), num_classes=3, box_head=VGG16BoxHead(in_channels=8, width=TINY_FC), box_head_fcs=[16, 16])
    with pytest.raises(ConfigError, match="reads 512 channels but the backbone gives 8"):
        FasterRCNN(VGG16C5(widths=TINY_WIDTHS), num_classes=3, box_head=VGG16BoxHead(width=TINY_FC))


# ---------------------------------------------------------------------- configs
def without_weights(composer, config: str, keys: list[str]):
    return composer.instantiate_model_alone(composer.parse([config], override_tree({key: None for key in keys})))


def test_the_faster_rcnn_vgg16_voc0712_config_is_the_papers_network_and_recipe(composer):
    config = "experiments/configs/detection/faster_rcnn_vgg16_voc0712.yaml"
    resolved = composer.to_dict(composer.parse([config]))
    net = resolved["model"]["init_args"]["network"]["init_args"]
    assert net["backbone"]["init_args"]["weights"] == net["box_head"]["init_args"]["weights"] == "data/weights/vgg16-397923af.pth"
    trainer = resolved["trainer"]
    assert (trainer["max_steps"], trainer["val_check_interval"], trainer["check_val_every_n_epoch"]) == (70000, 10000, None)
    model = resolved["model"]["init_args"]
    sgd = model["optimizer"]["init_args"]
    assert (sgd["lr"], sgd["momentum"], sgd["weight_decay"]) == (0.001, 0.9, 0.0005)
    assert model["scheduler"]["init_args"]["milestones"] == [3] and model["warmup_iters"] == 0
    data = resolved["data"]["init_args"]
    assert data["batch_size"] == 1 and data["source"]["init_args"]["splits"] == {"train": ["VOC2007/trainval", "VOC2012/trainval"], "val": "VOC2007/test"}
    network = without_weights(composer, config, ["model.init_args.network.init_args.backbone.init_args.weights",
                                                 "model.init_args.network.init_args.box_head.init_args.weights"]).network
    assert params(network) == paper_count(21) == 137_073_622
    rpn, heads = network.detector.rpn, network.detector.roi_heads
    assert (rpn._pre_nms_top_n, rpn._post_nms_top_n) == ({"training": 12000, "testing": 6000}, {"training": 2000, "testing": 300})
    assert (heads.fg_bg_sampler.batch_size_per_image, heads.fg_bg_sampler.positive_fraction, heads.nms_thresh) == (128, 0.25, 0.3)
    assert (network.detector.transform.min_size, network.detector.transform.max_size) == ((600,), 1000)
    del network
    gc.collect()


def test_the_ssd300_voc0712_config_is_the_papers_schedule(composer):
    config = "experiments/configs/detection/ssd300_vgg16_voc0712.yaml"
    resolved = composer.to_dict(composer.parse([config]))
    model = resolved["model"]["init_args"]
    assert model["optimizer"]["init_args"]["lr"] == 0.001 and model["optimizer"]["init_args"]["weight_decay"] == 0.0005
    steps_per_epoch = -(-16_551 // 32)  # 518 batches of 32 of VOC 07+12 trainval
    milestones, epochs = model["scheduler"]["init_args"]["milestones"], resolved["trainer"]["max_epochs"]
    # 40k iterations at 1e-3, then 10k at 1e-4 and 10k at 1e-5, to the nearest epoch.
    assert [round(n / steps_per_epoch) for n in (40_000, 50_000, 60_000)] == [*milestones, epochs] == [77, 97, 116]
    assert resolved["data"]["init_args"]["batch_size"] == 32
    network = without_weights(composer, config, ["model.init_args.network.init_args.backbone_weights"]).network
    assert network.num_classes == 21 and params(network) == 26_285_486
