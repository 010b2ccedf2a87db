"""RetinaNet's classification loss as arguments (``focal_gamma``, ``focal_alpha``): gamma 0 is the
alpha-balanced cross-entropy, worked by hand; gamma 2 scales each term by (1 - p_t)^2 as Lin et al.
Eq. 5 says, so that easy negatives weigh almost nothing; the default head is torchvision's, loss
and initialisation; both losses start from the prior pi = 0.01; bad values are named."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn.functional import binary_cross_entropy_with_logits
from torchvision.models.detection import retinanet as tv_retinanet

from core.errors import ArgumentValueError, ConfigError
from lightning_modules.networks.detection_backbones import MobileNetV3FPN
from lightning_modules.networks.retinanet import FocalClassificationHead, RetinaNet, check_focal

IGNORED = tv_retinanet.det_utils.Matcher.BETWEEN_THRESHOLDS  # -2
BACKGROUND = tv_retinanet.det_utils.Matcher.BELOW_LOW_THRESHOLD  # -1


def _head(alpha, gamma, classes: int = 2, anchors: int = 1) -> FocalClassificationHead:
    return FocalClassificationHead(4, anchors, classes, alpha=alpha, gamma=gamma)


def _loss(head: FocalClassificationHead, logits: list[list[float]], labels: list[int], matched: list[int]) -> torch.Tensor:
    """The head's loss on one image: ``logits`` (anchors x classes), the image's box ``labels`` and
    each anchor's matched box (-1 background, -2 ignored)."""
    return head.compute_loss([{"labels": torch.tensor(labels)}], {"cls_logits": torch.tensor([logits])}, [torch.tensor(matched)])


def test_gamma_0_is_the_alpha_balanced_cross_entropy_by_hand():
    # Two classes, four anchors: anchor 0 is a positive of class 1 (box 0), anchor 1 a background
    # anchor, anchor 2 ignored (between the IoU thresholds), anchor 3 a positive of class 0 (box 1).
    logits = [[0.0, 2.0], [-1.0, 1.0], [5.0, 5.0], [math.log(3.0), -math.log(3.0)]]
    head = _head(alpha=0.75, gamma=0.0)
    got = _loss(head, logits, labels=[1, 0], matched=[0, BACKGROUND, IGNORED, 1])

    def ce(logit: float, positive: bool) -> float:  # -log p_t of a sigmoid output
        p = 1 / (1 + math.exp(-logit))
        return -math.log(p if positive else 1 - p)

    # alpha_t = 0.75 for a positive (class, anchor) pair, 0.25 for a negative one; the ignored
    # anchor adds nothing; the sum is divided by the 2 positive anchors.
    expected = (
        0.25 * ce(0.0, False) + 0.75 * ce(2.0, True)          # anchor 0: class 0 negative, class 1 positive
        + 0.25 * ce(-1.0, False) + 0.25 * ce(1.0, False)      # anchor 1: both negatives
        + 0.75 * ce(math.log(3.0), True) + 0.25 * ce(-math.log(3.0), False)  # anchor 3: p = 3/4 and 1/4
    ) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    # ln(4/3) twice at anchor 3: p = 3/4 for the positive, 1 - 1/4 = 3/4 for the negative.
    assert 0.75 * ce(math.log(3.0), True) + 0.25 * ce(-math.log(3.0), False) == pytest.approx(math.log(4 / 3))
    # The same as torch's BCE with the alpha weights.
    targets = torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    kept = torch.tensor([logits[0], logits[1], logits[3]])
    weights = torch.where(targets == 1, 0.75, 0.25)
    assert got.item() == pytest.approx((weights * binary_cross_entropy_with_logits(kept, targets, reduction="none")).sum().item() / 2, rel=1e-6)


def test_gamma_0_without_alpha_is_the_plain_cross_entropy():
    logits = [[0.3, -0.2], [1.5, -2.0]]
    plain = binary_cross_entropy_with_logits(torch.tensor(logits), torch.tensor([[0.0, 1.0], [0.0, 0.0]]), reduction="sum")
    for alpha in (None, -1):
        assert _loss(_head(alpha=alpha, gamma=0.0), logits, [1], [0, BACKGROUND]).item() == pytest.approx(plain.item(), rel=1e-6)


def test_gamma_2_down_weights_easy_negatives_by_one_minus_p_t_squared():
    # One class; each anchor alone in an image: the positive at p = 0.5 (the loss divided by its one
    # positive), then negatives from easy (p = 0.01) to hard (p = 0.9; no positive: divided by 1).
    # Each FL term is alpha_t (1 - p_t)^2 (-log p_t): its CE term times (1 - p_t)^2.
    def loss(gamma: float, p: float, positive: bool) -> float:
        logit = math.log(p / (1 - p))
        return _loss(_head(0.25, gamma, classes=1), [[logit]], [0], [0 if positive else BACKGROUND]).item()

    assert loss(2.0, 0.5, True) == pytest.approx(0.25 * 0.5 ** 2 * math.log(2), rel=1e-6)
    assert loss(0.0, 0.5, True) == pytest.approx(0.25 * math.log(2), rel=1e-6)
    for p in (0.01, 0.1, 0.5, 0.9):
        p_t = 1 - p
        assert loss(0.0, p, False) == pytest.approx(0.75 * -math.log(p_t), rel=1e-5)
        assert loss(2.0, p, False) == pytest.approx((1 - p_t) ** 2 * 0.75 * -math.log(p_t), rel=1e-4)
    # At the prior (p = 0.01) an easy negative weighs 1e-4 of its cross-entropy, a hard one (p = 0.9)
    # 0.81: the ~100k easy anchors of an image no longer swamp the few positives (Sec. 3.2, 3.3).
    assert loss(2.0, 0.01, False) / loss(0.0, 0.01, False) == pytest.approx(1e-4, rel=1e-3)
    assert loss(2.0, 0.9, False) / loss(0.0, 0.9, False) == pytest.approx(0.81, rel=1e-4)
    # Relative to the positive at p = 0.5, the easy negative's share falls by 2,500x (0.0001 / 0.25).
    share_ce = loss(0.0, 0.01, False) / loss(0.0, 0.5, True)
    share_fl = loss(2.0, 0.01, False) / loss(2.0, 0.5, True)
    assert share_ce / share_fl == pytest.approx(0.25 / 1e-4, rel=1e-3)


def test_default_head_is_torchvisions_loss_and_initialisation():
    torch.manual_seed(0)
    ours = FocalClassificationHead(8, 3, 5)  # the defaults: alpha 0.25, gamma 2
    assert (ours.alpha, ours.gamma) == (0.25, 2.0)
    torch.manual_seed(0)
    reference = tv_retinanet.RetinaNetClassificationHead(8, 3, 5)
    for (name, a), (_, b) in zip(ours.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(a, b), name  # the same layers, drawn in the same order
    torch.manual_seed(1)
    features = [torch.randn(2, 8, 4, 4), torch.randn(2, 8, 2, 2)]
    outputs = {"cls_logits": ours(features)}
    assert torch.equal(outputs["cls_logits"], reference(features))
    anchors = outputs["cls_logits"].shape[1]  # 3 x (16 + 4) = 60
    targets = [{"labels": torch.tensor([1, 4, 2])}, {"labels": torch.zeros(0, dtype=torch.long)}]
    matched = [torch.randint(-2, 3, (anchors,)), torch.full((anchors,), BACKGROUND)]  # image 2: no box
    assert torch.allclose(ours.compute_loss(targets, outputs, matched), reference.compute_loss(targets, outputs, matched), rtol=1e-6, atol=0)
    # ... and through the whole detector, its loss dict against torchvision's head on the same weights.
    network = RetinaNet(MobileNetV3FPN(width_mult=0.25, fpn_channels=16), num_classes=4, min_size=64, max_size=64,
                        anchor_sizes=[[16], [32], [64]])
    detector = network.detector
    ours = detector.head.classification_head
    assert isinstance(ours, FocalClassificationHead) and (ours.alpha, ours.gamma) == (0.25, 2.0)
    torch.manual_seed(2)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0], [0.0, 0.0, 12.0, 12.0]]), "labels": torch.tensor([1, 3])}]
    detector.train()
    torch.manual_seed(3)
    mine = detector(images, targets)
    reference = tv_retinanet.RetinaNetClassificationHead(16, ours.num_anchors, 4)
    reference.load_state_dict(ours.state_dict())
    detector.head.classification_head = reference
    torch.manual_seed(3)
    theirs = detector(images, targets)
    assert set(mine) == set(theirs) == {"classification", "bbox_regression"}
    for key in mine:
        assert torch.allclose(mine[key], theirs[key], rtol=1e-6, atol=0), key


@pytest.mark.parametrize("gamma, alpha", [(0.0, 0.75), (2.0, 0.25), (2.0, None)])
def test_both_losses_start_from_the_prior(gamma, alpha):
    network = RetinaNet(MobileNetV3FPN(width_mult=0.25, fpn_channels=16), num_classes=3, focal_gamma=gamma, focal_alpha=alpha,
                        min_size=64, max_size=64, anchor_sizes=[[16], [32], [64]])
    head = network.detector.head.classification_head
    assert (head.gamma, head.alpha) == (gamma, -1.0 if alpha is None else alpha)
    assert torch.allclose(head.cls_logits.bias, torch.full_like(head.cls_logits.bias, -math.log(0.99 / 0.01)))
    assert torch.sigmoid(head.cls_logits.bias).mean().item() == pytest.approx(0.01, rel=1e-5)


@pytest.mark.parametrize("kwargs, name", [
    ({"focal_gamma": -0.5}, "RetinaNet.focal_gamma"),
    ({"focal_gamma": float("nan")}, "RetinaNet.focal_gamma"),
    ({"focal_gamma": float("inf")}, "RetinaNet.focal_gamma"),
    ({"focal_alpha": 1.5}, "RetinaNet.focal_alpha"),
    ({"focal_alpha": -0.25}, "RetinaNet.focal_alpha"),
    ({"focal_alpha": float("nan")}, "RetinaNet.focal_alpha"),
])
def test_bad_values_name_the_argument(kwargs, name):
    with pytest.raises(ArgumentValueError, match=name.replace(".", r"\.") + " must be") as error:
        RetinaNet(MobileNetV3FPN(width_mult=0.25, fpn_channels=16), num_classes=3, **kwargs)
    # The class and the argument, for the CLI to name the config key.
    assert (error.value.owner, error.value.argument) == ("lightning_modules.networks.retinanet.RetinaNet", name.split(".")[1])
    other = "focal_alpha" if "gamma" in name else "focal_gamma"
    assert other not in str(error.value)
    with pytest.raises(ConfigError, match=r"FocalClassificationHead\.(alpha|gamma) must be"):
        FocalClassificationHead(4, 1, 2, alpha=kwargs.get("focal_alpha", 0.25), gamma=kwargs.get("focal_gamma", 2.0))


def test_accepted_values():
    assert check_focal(None, 0) == check_focal(-1, 2.0) == -1.0
    assert check_focal(0, 0.0) == 0.0 and check_focal(1, 5) == 1.0 and check_focal(0.75, 0.0) == 0.75
