"""Units of the pose task: network shapes and sizes, heatmap geometry, decoding, flip, PCK/PCKh."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.geometry import apply_affine, crop_matrix, invert_affine
from core.skeletons import LSP_SKELETON, MPII_SKELETON
from datamodules.keypoints import render_heatmaps
from datamodules.pose import PoseAugmentation, PoseDataModule, warp_image
from datamodules.synthetic.pose import SyntheticPose
from lightning_modules.heatmap_decode import decode_heatmaps, flip_back, to_image_coordinates
from lightning_modules.metrics.pck import PCK
from lightning_modules.networks.hourglass import StackedHourglass
from lightning_modules.pose import heatmap_loss


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------- network
@pytest.mark.parametrize(
    "stacks, blocks, expected",
    [(8, 1, 25_434_112), (4, 2, 24_871_872), (2, 4, 24_590_752), (4, 1, 12_858_304), (2, 1, 6_570_400), (1, 1, 3_426_448)],
)
def test_hourglass_parameter_counts_match_reference(stacks, blocks, expected):
    # shared/reference/PAPER_NUMBERS.md 1b and 1d (param_counts.py, checked against bearpaw's hg).
    assert n_params(StackedHourglass(num_stacks=stacks, num_blocks=blocks, num_features=256, num_joints=16)) == expected


def test_equal_size_ablation_variants_are_within_4_percent():
    sizes = [n_params(StackedHourglass(s, b)) for s, b in ((2, 4), (4, 2), (8, 1))]
    assert max(sizes) / min(sizes) < 1.04


def test_hourglass_outputs_one_heatmap_per_stack():
    net = StackedHourglass(num_stacks=3, num_blocks=1, num_features=16, num_joints=5, depth=2)
    out = net(torch.randn(2, 3, 64, 48))
    assert len(out) == 3
    assert all(o.shape == (2, 5, 16, 12) for o in out)


def test_hg_int_predicts_at_two_lower_resolutions_without_merging_them_back():
    # The paper's HG-Int: one hourglass of 8 modules, supervised "after upsampling at the next two
    # highest resolutions before the final output resolution". Its extra parameters are the two
    # 1x1 heads only (256 * 16 + 16 each), and the final prediction is HG's: nothing is merged back.
    hg = StackedHourglass(num_stacks=1, num_blocks=8, num_features=256, num_joints=16)
    hg_int = StackedHourglass(num_stacks=1, num_blocks=8, num_features=256, num_joints=16, internal_supervision=2)
    assert n_params(hg_int) - n_params(hg) == 2 * (256 * 16 + 16)
    small = dict(num_stacks=1, num_blocks=1, num_features=16, num_joints=5, depth=3)
    torch.manual_seed(0)
    plain = StackedHourglass(**small).eval()
    torch.manual_seed(0)
    internal = StackedHourglass(**small, internal_supervision=2).eval()
    internal.load_state_dict(plain.state_dict(), strict=False)
    images = torch.randn(2, 3, 64, 64)
    out = internal(images)
    assert internal.num_outputs == len(out) == 3 and all(o.shape == (2, 5, 16, 16) for o in out)
    assert torch.equal(out[-1], plain(images)[-1])
    # The first output is the coarsest: a 1x1 head on the 4x4 level, upsampled to the output size.
    levels = internal.hourglasses[0].forward_levels(internal.stem(images))
    assert [tuple(t.shape[-2:]) for t in levels] == [(16, 16), (8, 8), (4, 4)]
    expected = torch.nn.functional.interpolate(internal.internal_scores[0][1](levels[2]), size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(out[0], expected)
    # Stacked and internal together: per stack its internal predictions, then its own.
    both = StackedHourglass(num_stacks=2, num_blocks=1, num_features=16, num_joints=5, depth=3, internal_supervision=1)
    assert both.num_outputs == len(both(images)) == 4
    with pytest.raises(ValueError, match="internal_supervision"):
        StackedHourglass(depth=2, internal_supervision=2)


def test_hourglass_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_stacks"):
        StackedHourglass(num_stacks=0)
    with pytest.raises(ValueError, match="even"):
        StackedHourglass(num_features=15)


# --------------------------------------------------------------------------- geometry
def test_crop_matrix_maps_center_to_crop_center_and_inverts():
    m = crop_matrix((100.0, 50.0), 1.0, (256, 256), rotation=17.0)
    center = apply_affine(m, torch.tensor([[100.0, 50.0]], dtype=torch.float64))
    assert torch.allclose(center, torch.tensor([[127.5, 127.5]], dtype=torch.float64))
    pts = torch.rand(10, 2, dtype=torch.float64) * 300
    back = apply_affine(invert_affine(m), apply_affine(m, pts))
    assert torch.allclose(back, pts, atol=1e-9)


def test_crop_matrix_scale_200_pixels_fill_the_crop():
    m = crop_matrix((0.0, 0.0), 1.0, (64, 64))
    # 200 image pixels span the 64-pixel crop: 100 px right of the centre is the crop's right edge,
    # which in pixel-index coordinates is 63.5 (the last pixel's centre is 63).
    p = apply_affine(m, torch.tensor([[100.0, 0.0]], dtype=torch.float64))
    assert p[0].tolist() == pytest.approx([63.5, 31.5], abs=1e-9)


def test_warp_moves_pixels_like_points():
    image = torch.zeros(3, 40, 60, dtype=torch.uint8)
    image[:, 10, 20] = 255  # pixel-index (x=20, y=10)
    # A centre between pixels makes the 90° turn and the mirror map pixel centres onto pixel centres.
    m = crop_matrix((29.5, 19.5), 40 / 200, (40, 40), rotation=90.0, flip=True)
    crop = warp_image(image, m, (40, 40))
    y, x = divmod(int(crop[0].argmax()), 40)
    expected = apply_affine(m, torch.tensor([[20.0, 10.0]], dtype=torch.float64))[0]
    assert (x, y) == pytest.approx((expected[0].item(), expected[1].item()), abs=1e-9)
    assert crop[0].max().item() == pytest.approx(255.0)


# --------------------------------------------------------------------------- decoding
def test_decode_round_trip_is_sub_pixel_and_beats_plain_argmax():
    gen = torch.Generator().manual_seed(0)
    pts = 3 + torch.rand(200, 2, generator=gen) * 26  # inside a 32x32 map, away from the border
    maps = torch.stack([render_heatmaps(p[None], torch.ones(1, dtype=torch.bool), (32, 32), 1.0)[0] for p in pts])[None]
    refined, _ = decode_heatmaps(maps, quarter_offset=True)
    plain, _ = decode_heatmaps(maps, quarter_offset=False)
    err_refined = (refined[0] - pts).abs()
    err_plain = (plain[0] - pts).abs()
    assert err_refined.max() <= 0.5 + 1e-6  # never worse than half a pixel per axis
    assert err_refined.mean() < err_plain.mean()  # the quarter offset helps on average
    assert err_refined.mean() < 0.2


def test_quarter_offset_moves_towards_higher_neighbour_and_not_at_borders():
    maps = torch.zeros(1, 2, 5, 5)
    maps[0, 0, 2, 2], maps[0, 0, 2, 3], maps[0, 0, 1, 2] = 1.0, 0.5, 0.2  # right and up neighbours
    maps[0, 1, 0, 4], maps[0, 1, 0, 3] = 1.0, 0.9  # corner: no offset
    coords, scores = decode_heatmaps(maps)
    assert coords[0, 0].tolist() == [2.25, 1.75]
    assert coords[0, 1].tolist() == [4.0, 0.0]
    assert scores[0].tolist() == [1.0, 1.0]


def test_image_coordinates_round_trip_through_crop():
    center, scale = (140.0, 90.0), 0.9
    m = crop_matrix(center, scale, (128, 128), rotation=-20.0)
    kp = torch.tensor([[120.0, 70.0], [160.0, 115.0]], dtype=torch.float64)
    on_map = (apply_affine(m, kp) + 0.5) / 4 - 0.5  # stride 4
    back = to_image_coordinates(on_map[None].float(), 4.0, m[None])
    assert torch.allclose(back[0].double(), kp, atol=1e-3)


def test_flip_back_undoes_a_mirrored_prediction():
    perm = MPII_SKELETON.flip_permutation()
    maps = torch.rand(2, 16, 8, 8)
    mirrored = maps.flip(-1)[:, perm]  # what a perfect network predicts on the mirrored input
    assert torch.equal(flip_back(mirrored, perm), maps)


@pytest.mark.parametrize("skeleton", [MPII_SKELETON, LSP_SKELETON])
def test_flip_pairs_swap_left_and_right(skeleton):
    perm = skeleton.flip_permutation()
    assert sorted(perm) == list(range(skeleton.num_joints))
    for i, name in enumerate(skeleton.joints):
        mate = skeleton.joints[perm[i]]
        if name.startswith(("l_", "r_")):
            assert mate == {"l": "r", "r": "l"}[name[0]] + name[1:]
        else:
            assert mate == name


def test_flipped_sample_keeps_anatomical_labels():
    # A flipped training crop must carry the left wrist's heatmap on the joint that is anatomically
    # left: after mirroring, label l_wrist sits where the mirror image of r_wrist is.
    source = SyntheticPose(num_train=4, num_val=0, num_test=0, image_size=64)
    dm = PoseDataModule(source, input_size=64, output_size=16, augmentation=PoseAugmentation(rotation=0, scale_range=(1, 1), flip_prob=1.0, color_scale=0))
    plain = PoseDataModule(source, input_size=64, output_size=16, augmentation=None)
    (img_f, t_f), (img_p, t_p) = dm.dataset("train", train=True)[0], plain.dataset("train")[0]
    assert torch.allclose(img_f, img_p.flip(-1), atol=1e-4)
    perm = MPII_SKELETON.flip_permutation()
    assert torch.allclose(t_f["heatmaps"], t_p["heatmaps"].flip(-1)[perm], atol=1e-5)


# --------------------------------------------------------------------------- loss
def test_missing_joints_contribute_no_loss():
    target = torch.zeros(1, 2, 4, 4)
    pred = [torch.zeros(1, 2, 4, 4)]
    pred[0][0, 1] = 5.0  # wrong only on joint 1
    assert heatmap_loss(pred, target, torch.tensor([[True, False]])).item() == 0.0
    assert heatmap_loss(pred, target, torch.tensor([[True, True]])).item() > 0.0


def test_intermediate_supervision_sums_stacks_and_can_be_switched_off():
    target = torch.zeros(1, 1, 2, 2)
    valid = torch.ones(1, 1, dtype=torch.bool)
    outs = [torch.ones(1, 1, 2, 2), torch.full((1, 1, 2, 2), 2.0)]
    assert heatmap_loss(outs, target, valid, True).item() == pytest.approx(1.0 + 4.0)
    assert heatmap_loss(outs, target, valid, False).item() == pytest.approx(4.0)


# --------------------------------------------------------------------------- PCK / PCKh
def _pck_case():
    """Two people, MPII joints, head size 10 (threshold 5 px)."""
    gt = torch.zeros(2, 16, 2)
    pred = gt.clone()
    visible = torch.ones(2, 16, dtype=torch.bool)
    pred[0, 10] = torch.tensor([3.0, 4.0])  # r_wrist off by 5.0: correct (<=)
    pred[1, 10] = torch.tensor([6.0, 0.0])  # off by 6: wrong
    pred[0, 15] = torch.tensor([0.0, 5.1])  # l_wrist off by 5.1: wrong
    visible[1, 15] = False  # unannotated: excluded
    pred[0, 6] = torch.tensor([100.0, 0.0])  # pelvis wrong, but excluded from the total
    visible[1, 0] = False  # r_ankle missing in person 2
    head = torch.tensor([10.0, 10.0])
    return pred, gt, visible, head


def test_pckh_hand_computed_case():
    pred, gt, visible, head = _pck_case()
    metric = PCK(MPII_SKELETON, threshold=0.5)
    metric.update(pred, gt, visible, head)
    out = metric.compute()
    assert out["joints"]["r_wrist"].item() == pytest.approx(0.5)
    assert out["joints"]["l_wrist"].item() == pytest.approx(0.0)  # 0 of 1 annotated
    assert out["joints"]["r_ankle"].item() == pytest.approx(1.0)  # 1 of 1 annotated
    assert out["joints"]["pelvis"].item() == pytest.approx(0.5)
    assert out["parts"]["Wrist"].item() == pytest.approx(0.25)  # mean of left and right
    # Mean: count-weighted over the 14 non-excluded joints: annotated = 28 - 2 = 26, wrong = 2.
    assert out["mean"].item() == pytest.approx(24 / 26)
    # Limbs (wrists, elbows, knees, ankles): 16 - 2 annotated, 2 wrong.
    assert out["limbs"].item() == pytest.approx(12 / 14)


def test_pck_accumulates_over_batches_and_skips_zero_normaliser():
    pred, gt, visible, head = _pck_case()
    one = PCK(MPII_SKELETON, threshold=0.5)
    one.update(pred, gt, visible, head)
    split = PCK(MPII_SKELETON, threshold=0.5)
    split.update(pred[:1], gt[:1], visible[:1], head[:1])
    split.update(pred[1:], gt[1:], visible[1:], head[1:])
    split.update(pred, gt + 100, visible, torch.zeros(2))  # no normaliser: not counted
    assert split.compute()["mean"].item() == pytest.approx(one.compute()["mean"].item())


def test_pck_torso_threshold():
    metric = PCK(LSP_SKELETON, threshold=0.2)
    gt = torch.zeros(1, 14, 2)
    pred = gt.clone()
    pred[0, :, 0] = torch.arange(14, dtype=torch.float32)  # error = joint index in pixels
    metric.update(pred, gt, torch.ones(1, 14, dtype=torch.bool), torch.tensor([20.0]))  # threshold 4 px
    assert metric.compute()["mean"].item() == pytest.approx(5 / 14)  # errors 0..4 are within


def test_head_size_is_0_6_of_the_head_box_diagonal():
    source = SyntheticPose(num_train=1, num_val=0, num_test=0, image_size=64)
    record = source.records("train")[0]
    _, target = PoseDataModule(source, input_size=64, output_size=16).dataset("train")[0]
    x1, y1, x2, y2 = record.head_box
    assert target["head_size"].item() == pytest.approx(0.6 * math.hypot(x2 - x1, y2 - y1), rel=1e-6)


def test_synthetic_data_is_deterministic_and_annotated():
    a = SyntheticPose(num_train=3, num_val=2, num_test=0, image_size=64, seed=3)
    b = SyntheticPose(num_train=3, num_val=2, num_test=0, image_size=64, seed=3)
    ra, rb = a.records("val"), b.records("val")
    assert len(ra) == len(rb) == 2 and all(np.array_equal(x.keypoints, y.keypoints) for x, y in zip(ra, rb))
    assert torch.equal(a.load_image(ra[1]), b.load_image(rb[1]))
    assert not torch.equal(a.load_image(a.records("train")[0]), a.load_image(ra[0]))
    assert ra[0].keypoints.shape == (16, 2) and ra[0].visible.dtype == bool
    with pytest.raises(ValueError, match="splits"):
        a.records("holdout")
