"""Segmentation networks: sizes against shared/reference/PAPER_NUMBERS.md (sections 2b, 3b, 5), output
shapes for odd input sizes, the geometry each paper fixes (FCN crops, U-Net tiles, SegNet unpooling,
DeepLab output stride), weight loading from local files, and gradients reaching every parameter."""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.resnet import Bottleneck, ResNet

from core.errors import CheckpointError, DataNotFoundError
from lightning_modules.networks.deeplab import ASPP, DeepLabV3Plus, DeepLabV3ResNet, ResNetBackbone, aspp_rates
from lightning_modules.networks.fcn import (
    FCN,
    BilinearUpsample,
    FCNResNet,
    bilinear_kernel,
    fcn8s,
    fcn16s,
    fcn32s,
    fcn_crop_offsets,
    make_upsampler,
)
from lightning_modules.networks.segnet import DecoderStage, EncoderStage, SegNet
from lightning_modules.networks.unet import UNet, unet_next_valid_input_size, unet_output_size

H, W = 97, 131  # odd, and not a multiple of any network's stride
TINY_VGG = (2, 3, 4, 5, 6)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tiny_fcn(**kwargs) -> FCN:
    return FCN(num_classes=5, widths=TINY_VGG, fc_channels=8, **kwargs)


def tiny_deeplab(output_stride: int = 16, separable: bool = False) -> DeepLabV3Plus:
    backbone = ResNetBackbone(output_stride=output_stride, blocks=(1, 1, 1, 1), width_per_group=4)
    return DeepLabV3Plus(backbone, num_classes=5, aspp_channels=8, separable=separable, low_level_projection=4, decoder_channels=8)


# --------------------------------------------------------------------------- full-size parameter counts
# Exact figures are param_counts.py's layer-by-layer counts or torchvision's num_params; the "paper"
# figures are the rounded ones the papers print, checked within 1%.
FULL_SIZE = {
    "fcn8s-21": (lambda: fcn8s(21), 134_489_759, 134.0e6),
    "fcn16s-21": (lambda: fcn16s(21), 134_815_994, None),
    "fcn32s-21": (lambda: fcn32s(21), 136_152_917, None),
    "unet-1in-2cls": (lambda: UNet(1, 2), 31_030_658, None),
    "unet-3in-2cls": (lambda: UNet(3, 2), 31_031_810, None),
    "unet-3in-2cls-bn": (lambda: UNet(3, 2, norm_layer=nn.BatchNorm2d), 31_037_698, None),
    "segnet-12": (lambda: SegNet(12), 29_449_932, 29.5e6),
    "segnet-11": (lambda: SegNet(11), 29_449_355, None),
    "fcn_resnet50-aux": (lambda: FCNResNet(50, 21, aux_loss=True), 35_322_218, None),
    "fcn_resnet101-aux": (lambda: FCNResNet(101, 21, aux_loss=True), 54_314_346, None),
    "deeplabv3_resnet50-aux": (lambda: DeepLabV3ResNet(50, 21, aux_loss=True), 42_004_074, None),
    "deeplabv3_resnet101-aux": (lambda: DeepLabV3ResNet(101, 21, aux_loss=True), 60_996_202, None),
}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_parameter_counts_match_reference(name):
    build, exact, paper = FULL_SIZE[name]
    net = build()
    count = n_params(net)
    del net
    gc.collect()  # FCN-VGG16 holds ~540 MB of weights; free it before the next build
    assert count == exact, f"{name}: {count:,} parameters, reference {exact:,}"
    if paper is not None:
        assert abs(count - paper) <= 0.01 * paper


def test_segnet_encoder_is_vgg16_bn_size():
    net = SegNet(12)
    assert n_params(net.encoder) == 14_723_136  # the paper's "14.7M"
    assert n_params(net) - n_params(net.encoder) == 29_449_932 - 14_723_136


# --------------------------------------------------------------------------- output shapes, odd sizes
@pytest.mark.parametrize("skips", [(), (4,), (4, 3)])
@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
def test_fcn_output_matches_input_size(skips, upsampling):
    net = tiny_fcn(skips=skips, upsampling=upsampling).eval()
    assert net(torch.randn(2, 3, H, W)).shape == (2, 5, H, W)
    assert net(torch.randn(1, 3, 1, 2)).shape == (1, 5, 1, 2)  # any size >= 1, thanks to the 100-pixel padding


def test_fcn_rejects_non_consecutive_skips():
    with pytest.raises(ValueError, match="skips"):
        tiny_fcn(skips=(3,))


@pytest.mark.parametrize("upsampling", ["transposed", "bilinear"])
def test_padded_unet_output_matches_input_size(upsampling):
    net = UNet(3, 4, base_channels=4, depth=3, padding=True, upsampling=upsampling).eval()
    assert net(torch.randn(2, 3, H, W)).shape == (2, 4, H, W)


def test_unpadded_unet_output_is_the_predicted_centre():
    net = UNet(1, 2, base_channels=2, depth=4).eval()
    height, width = unet_next_valid_input_size(H), unet_next_valid_input_size(2 * W)  # 188, 268
    out = net(torch.randn(1, 1, height, width))
    # 92 pixels of context on every side (the paper's 572 -> 388 tile).
    assert out.shape == (1, 2, unet_output_size(height), unet_output_size(width)) == (1, 2, height - 184, width - 184)
    with pytest.raises(ValueError, match="next valid input size"):
        net(torch.randn(1, 1, H, W))


def test_segnet_output_matches_input_size():
    net = SegNet(5, widths=TINY_VGG).eval()
    assert net(torch.randn(2, 3, H, W)).shape == (2, 5, H, W)


@pytest.mark.parametrize("separable", [False, True])
def test_deeplabv3plus_output_matches_input_size(separable):
    net = tiny_deeplab(separable=separable).eval()
    assert net(torch.randn(2, 3, H, W)).shape == (2, 5, H, W)


@pytest.mark.parametrize("cls", [FCNResNet, DeepLabV3ResNet])
def test_torchvision_wrappers_return_a_dict_in_both_modes(cls):
    x = torch.randn(2, 3, 33, 45)
    net = cls(50, num_classes=3, aux_loss=True)
    for mode in (True, False):
        out = net.train(mode)(x)
        assert type(out) is dict and set(out) == {"out", "aux"}
        assert out["out"].shape == out["aux"].shape == (2, 3, 33, 45)
    out = cls(50, num_classes=3, aux_loss=False).eval()(x)
    assert set(out) == {"out"} and out["out"].shape == (2, 3, 33, 45)


# --------------------------------------------------------------------------- geometry each paper fixes
def test_fcn_crop_offsets_are_those_of_the_caffe_models():
    assert fcn_crop_offsets(0) == ((), 19)  # voc-fcn32s
    assert fcn_crop_offsets(1) == ((5,), 27)  # voc-fcn16s
    assert fcn_crop_offsets(2) == ((5, 9), 31)  # voc-fcn8s


def test_fcn_lightly_padded_geometry_crops_the_coarser_map():
    # conv1_1 padded by 1 and a padded 3x3 fc6: the upsampled coarser scores start a cell before the
    # skip's (negative offsets, so they are the ones cropped); the output starts 16 / 8 / 4 pixels early.
    assert [fcn_crop_offsets(n, 1, 3, 1) for n in range(3)] == [((), 16), ((-1,), 8), ((-1, -1), 4)]
    # An unpadded 5x5 fc6 over a conv1_1 padded by 68 keeps Caffe's rule (crop the skip).
    assert fcn_crop_offsets(2, 68, 5) == ((3, 5), 31)
    with pytest.raises(ValueError, match="pad conv1_1 more"):
        fcn_crop_offsets(2, 36, 5)
    with pytest.raises(ValueError, match="odd"):
        fcn_crop_offsets(2, 68, 4)
    with pytest.raises(ValueError, match="fc6_padding"):
        fcn_crop_offsets(2, 1, 3, 2)
    # A geometry valid for its crops can still be too small for an input: a clear error, not a crop.
    tight = FCN(2, (4, 3), widths=[2, 2, 2, 2, 2], fc_channels=2, input_padding=36, fc6_kernel=3).eval()
    with pytest.raises(ValueError, match="too small"):
        tight(torch.zeros(1, 3, 2, 2))


@pytest.mark.parametrize("geometry", [(100, 7, 0), (68, 5, 0), (1, 3, 1)], ids=["paper", "unpadded-5x5", "padded"])
@pytest.mark.parametrize("skips", [(), (4,), (4, 3)], ids=["32s", "16s", "8s"])
def test_fcn_output_has_the_input_size_for_any_input(geometry, skips):
    padding, kernel, fc6_padding = geometry
    net = FCN(2, skips, widths=[2, 2, 2, 2, 2], fc_channels=2, input_padding=padding, fc6_kernel=kernel, fc6_padding=fc6_padding).eval()
    with torch.no_grad():
        for height, width in [(1, 1), (1, 7), (5, 2), (17, 33), (31, 64), (64, 64), (65, 97)]:
            assert net(torch.zeros(1, 3, height, width)).shape == (1, 2, height, width)


@pytest.mark.parametrize("factor", [2, 8, 32])
def test_fcn_transposed_conv_starts_as_bilinear_interpolation(factor):
    up = make_upsampler("transposed", 2, factor, learnable=True)
    assert torch.equal(up.weight, bilinear_kernel(2, factor))
    rows = torch.arange(6.0).view(1, 1, 6, 1).expand(1, 1, 6, 7)
    x = torch.cat([torch.full((1, 1, 6, 7), 3.0), rows], dim=1)  # channel 0 constant, channel 1 a ramp
    out = up(x)
    assert out.shape == (1, 2, 7 * factor, 8 * factor)
    # Away from the border (one input pixel in from each side) it is exactly bilinear interpolation, so
    # it matches the parameter-free BilinearUpsample, and a constant stays constant.
    reference = BilinearUpsample(factor)(x)
    inner = (slice(None), slice(None), slice(factor, -factor), slice(factor, -factor))
    torch.testing.assert_close(out[inner], reference[inner])
    torch.testing.assert_close(out[0, 0][inner[2:]], torch.full_like(out[0, 0][inner[2:]], 3.0))
    # Input row j lands on output row j*factor + factor - 1/2, so the ramp reads (o + 1/2)/factor - 1.
    o = torch.arange(factor, 6 * factor, dtype=torch.float32)
    torch.testing.assert_close(out[0, 1, factor:-factor, factor], (o + 0.5) / factor - 1)


def test_fcn_final_upsampling_is_fixed_and_the_2x_ones_learned():
    net = tiny_fcn(skips=(4, 3))
    assert not net.final_upscore.weight.requires_grad
    assert len(net.upscores) == 2 and all(up.weight.requires_grad for up in net.upscores)
    assert tiny_fcn(learn_final_upsampling=True).final_upscore.weight.requires_grad
    assert n_params(tiny_fcn(upsampling="bilinear")) < n_params(tiny_fcn())


def test_unet_crop_arithmetic():
    assert unet_output_size(572) == 388  # the paper's tile (Fig. 1)
    assert unet_output_size(572, padding=True) == 572
    assert unet_next_valid_input_size(570) == 572
    assert unet_next_valid_input_size(1) == 188
    valid = [size for size in range(1, 700) if _valid(size)]
    assert valid == list(range(188, 700, 16))
    assert unet_next_valid_input_size(5, depth=2) == 44
    for bad in (571, 573, 100, 0):
        with pytest.raises(ValueError, match="next valid input size"):
            unet_output_size(bad)
    with pytest.raises(ValueError, match="at least 16"):
        unet_output_size(15, padding=True)


def _valid(size: int) -> bool:
    try:
        unet_output_size(size)
    except ValueError:
        return False
    return True


def test_segnet_unpooling_puts_values_back_at_the_argmax():
    encoder, decoder = EncoderStage(1, 1, num_convs=1), DecoderStage(1, 1, num_convs=1)
    x = torch.tensor([[1.0, 5.0, 0.0, 2.0, 9.0],
                      [3.0, 2.0, 7.0, 1.0, 9.0],
                      [0.0, 0.0, 4.0, 6.0, 9.0],
                      [8.0, 1.0, 3.0, 2.0, 9.0],
                      [9.0, 9.0, 9.0, 9.0, 9.0]]).view(1, 1, 5, 5)  # odd: the last row/column is never pooled
    pooled, indices = encoder.pool(x)
    assert pooled.flatten().tolist() == [5.0, 7.0, 8.0, 6.0]
    restored = decoder.unpool(pooled, indices, output_size=(5, 5))
    expected = torch.zeros(1, 1, 5, 5)
    for row, col in ((0, 1), (1, 2), (3, 0), (2, 3)):
        expected[0, 0, row, col] = x[0, 0, row, col]
    assert torch.equal(restored, expected)


def test_deeplabv3plus_output_stride_changes_features_not_output():
    x = torch.randn(2, 3, H, W)
    shapes = {}
    for output_stride in (16, 8):
        net = tiny_deeplab(output_stride).eval()
        features = net.backbone(x)
        shapes[output_stride] = features["out"].shape[-2:]
        assert features["low_level"].shape[-2:] == (25, 33)  # layer1, stride 4 either way
        assert net(x).shape == (2, 5, H, W)
        dilations = [branch[0].dilation[0] for branch in net.aspp.branches[1:-1]]
        assert dilations == list(aspp_rates(output_stride))
    assert shapes[16] == (7, 9) and shapes[8] == (13, 17)
    assert aspp_rates(16) == (6, 12, 18) and aspp_rates(8) == (12, 24, 36)


def test_aspp_separable_option_uses_depthwise_convs():
    aspp = ASPP(16, 8, rates=(2, 3, 4), separable=True)
    depthwise = [m for m in aspp.modules() if isinstance(m, nn.Conv2d) and m.groups == 16]
    assert [m.dilation[0] for m in depthwise] == [2, 3, 4]


# --------------------------------------------------------------------------- weights from local files
def test_fcn_loads_vgg16_weights_with_fc_layers_as_convs(tmp_path):
    source = tiny_fcn()
    convs = [m for m in source.backbone.modules() if isinstance(m, nn.Conv2d)]
    vgg_indices = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]  # torchvision vgg16.features
    state = {}
    for index, conv in zip(vgg_indices, convs):
        state[f"features.{index}.weight"], state[f"features.{index}.bias"] = conv.weight, conv.bias
    state["classifier.0.weight"], state["classifier.0.bias"] = source.fc6.weight.flatten(1), source.fc6.bias
    state["classifier.3.weight"], state["classifier.3.bias"] = source.fc7.weight.flatten(1), source.fc7.bias
    state["classifier.6.weight"] = torch.zeros(1000, 8)  # ImageNet classifier: not used
    torch.save({k: v.detach().clone() for k, v in state.items()}, tmp_path / "vgg16.pth")
    net = tiny_fcn(backbone_weights=tmp_path / "vgg16.pth")
    for name in ("backbone.stages.0.0.weight", "backbone.stages.4.4.bias", "fc6.weight", "fc7.bias"):
        assert torch.equal(net.state_dict()[name], source.state_dict()[name]), name
    with pytest.raises(DataNotFoundError, match="not found"):
        tiny_fcn(backbone_weights=tmp_path / "missing.pth")


def test_fcn_with_batch_norm_loads_vgg16_bn_weights(tmp_path):
    source = tiny_fcn(norm_layer=nn.BatchNorm2d)
    layers = [m for m in source.backbone.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    assert len(layers) == 26  # a norm after each of the 13 convs
    # torchvision vgg16_bn.features: conv, bn, relu for each conv, and a max-pool after each stage.
    state, position = {}, 0
    for k, layer in enumerate(layers):
        state.update({f"features.{position}.{name}": v.detach().clone() + k for name, v in layer.state_dict().items()})
        position += 1 if isinstance(layer, nn.Conv2d) else 2
        if k in (3, 7, 13, 19, 25):  # the last norm of a stage
            position += 1
    assert max(int(key.split(".")[1]) for key in state) == 41  # vgg16_bn's last norm
    state["classifier.0.weight"], state["classifier.0.bias"] = source.fc6.weight.flatten(1), source.fc6.bias
    state["classifier.3.weight"], state["classifier.3.bias"] = source.fc7.weight.flatten(1), source.fc7.bias
    torch.save({k: v.detach().clone() for k, v in state.items()}, tmp_path / "vgg16_bn.pth")
    net = tiny_fcn(norm_layer=nn.BatchNorm2d, backbone_weights=tmp_path / "vgg16_bn.pth")
    loaded = [m for m in net.backbone.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    for k, (layer, original) in enumerate(zip(loaded, layers)):
        assert torch.equal(layer.weight, original.weight + k)
    # A plain vgg16 file for a trunk with norms: refused, naming the layout it needs.
    plain = {key: value for key, value in state.items() if key.startswith("classifier")}
    plain.update({f"features.{i}.weight": torch.zeros(1) for i in range(13)})
    torch.save(plain, tmp_path / "vgg16.pth")
    with pytest.raises(CheckpointError, match="vgg16_bn"):
        tiny_fcn(norm_layer=nn.BatchNorm2d, backbone_weights=tmp_path / "vgg16.pth")


def test_segnet_loads_vgg16_bn_encoder_weights(tmp_path):
    source = SegNet(3, widths=TINY_VGG)
    layers = [m for m in source.encoder.modules() if isinstance(m, (nn.Conv2d, nn.BatchNorm2d))]
    state = {f"features.{i}.{k}": v.clone() for i, layer in enumerate(layers) for k, v in layer.state_dict().items()}
    torch.save(state, tmp_path / "vgg16_bn.pth")
    net = SegNet(3, widths=TINY_VGG, encoder_weights=tmp_path / "vgg16_bn.pth")
    ours, theirs = net.encoder.state_dict(), source.encoder.state_dict()
    assert ours and list(ours) == list(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with pytest.raises(DataNotFoundError, match="not found"):
        SegNet(3, widths=TINY_VGG, encoder_weights=tmp_path / "missing.pth")


def test_resnet_backbone_loads_torchvision_resnet_weights(tmp_path):
    resnet = ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=4)
    torch.save(resnet.state_dict(), tmp_path / "resnet.pth")
    backbone = ResNetBackbone(blocks=(1, 1, 1, 1), width_per_group=4, weights_path=tmp_path / "resnet.pth")
    assert torch.equal(backbone.stem[0].weight, resnet.conv1.weight)
    assert torch.equal(backbone.layer4[0].conv3.weight, resnet.layer4[0].conv3.weight)
    with pytest.raises(DataNotFoundError, match="not found"):
        ResNetBackbone(blocks=(1, 1, 1, 1), weights_path=tmp_path / "missing.pth")


def test_torchvision_wrapper_loads_a_local_model_file_without_its_aux_head(tmp_path):
    source = FCNResNet(50, num_classes=3, aux_loss=True)
    torch.save(source.model.state_dict(), tmp_path / "fcn.pth")
    net = FCNResNet(50, num_classes=3, aux_loss=False, weights_path=tmp_path / "fcn.pth")
    assert torch.equal(net.model.classifier[4].weight, source.model.classifier[4].weight)
    with pytest.raises(DataNotFoundError, match="not found"):
        FCNResNet(50, backbone_weights_path=tmp_path / "missing.pth")


# --------------------------------------------------------------------------- gradients
TINY_NETS = {
    "fcn8s": lambda: tiny_fcn(skips=(4, 3), learn_final_upsampling=True),
    "fcn32s-bilinear": lambda: tiny_fcn(skips=(), upsampling="bilinear"),
    "unet-padded": lambda: UNet(3, 5, base_channels=4, depth=3, padding=True),
    "unet-bilinear-bn": lambda: UNet(3, 5, base_channels=4, depth=3, padding=True, upsampling="bilinear", norm_layer=nn.BatchNorm2d),
    "segnet": lambda: SegNet(5, widths=TINY_VGG),
    "deeplabv3plus": lambda: tiny_deeplab(16),
    "deeplabv3plus-separable": lambda: tiny_deeplab(16, separable=True),
}


@pytest.mark.parametrize("name", list(TINY_NETS))
def test_backward_reaches_every_parameter(name):
    torch.manual_seed(0)
    net = TINY_NETS[name]().train()
    out = net(torch.randn(2, 3, H, W))
    F.cross_entropy(out, torch.randint(0, 5, (2, H, W))).backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.isfinite().all())]
    assert not missing, missing


def test_unpadded_unet_backward_reaches_every_parameter():
    net = UNet(1, 2, base_channels=2, depth=4)
    out = net(torch.randn(2, 1, 188, 188))
    F.cross_entropy(out, torch.randint(0, 2, (2, *out.shape[-2:]))).backward()
    parameters = list(net.parameters())
    assert parameters and all(p.grad is not None for p in parameters)


@pytest.mark.parametrize("cls", [FCNResNet, DeepLabV3ResNet])
def test_torchvision_wrappers_backward_reaches_every_parameter(cls):
    net = cls(50, num_classes=3, aux_loss=True).train()
    out = net(torch.randn(2, 3, 33, 33))
    target = torch.randint(0, 3, (2, 33, 33))
    (F.cross_entropy(out["out"], target) + 0.5 * F.cross_entropy(out["aux"], target)).backward()
    parameters = list(net.parameters())
    assert parameters and all(p.grad is not None for p in parameters)
