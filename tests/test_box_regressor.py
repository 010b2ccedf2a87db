"""Regression to k boxes and its sliding window (``lightning_modules.networks.box_regressor``): the
exact assignment on hand-made and random cases (against brute force over permutations), the loss
on perfect and hand-computed predictions, the decoding's format and coordinates, the outputs of
each window kind, the configuration errors, and the table ``regression_to_detection`` composing
every row. The CLI ``fit`` is in ``tests/test_detection_units.py`` (``DETECTORS``)."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from core.errors import ConfigError
from experiments.recipe import ConfigComposer, get_dotted
from experiments.reproduce import compose_plan, load_table, plan_runs
from lightning_modules.networks.box_regressor import MAX_SLOTS, BoxRegressor, assign, decode_slots, slot_loss

SURE = 30.0  # a logit that makes a class certain: -log p = log(1 + C e^-30), about 1e-12


def one_hot_logits(classes: list[int], num_classes: int) -> torch.Tensor:
    """``(1, S, num_classes)`` logits, slot ``s`` certain of ``classes[s]`` (0: "no object")."""
    logits = torch.zeros(1, len(classes), num_classes)
    for slot, label in enumerate(classes):
        logits[0, slot, label] = SURE
    return logits


def cxcywh(*boxes: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor([boxes], dtype=torch.float32)


# Two objects in a 100 x 100 image: A = [10, 10, 30, 30] (centre (0.2, 0.2), 0.2 x 0.2), class 1;
# B = [60, 50, 100, 90] (centre (0.8, 0.7), 0.4 x 0.4), class 2.
A, B = [10.0, 10.0, 30.0, 30.0], [60.0, 50.0, 100.0, 90.0]
A_NORM, B_NORM = (0.2, 0.2, 0.2, 0.2), (0.8, 0.7, 0.4, 0.4)
SIZE = [(100, 100)]


# ---------------------------------------------------------------------- assignment
def test_two_slots_take_two_objects_given_in_swapped_order():
    # Slot 0 predicts A and slot 1 B; the targets list B first.
    cost = torch.tensor([[0.9, 0.1],   # slot 0: far from object 0 (B), near object 1 (A)
                         [0.2, 0.8]])  # slot 1: near B
    slots, objects = assign(cost)
    assert slots.tolist() == [1, 0] and objects.tolist() == [0, 1]
    # The same through the loss: a perfect prediction in slot order A, B against targets B, A.
    target = {"boxes": torch.tensor([B, A]), "labels": torch.tensor([2, 1])}
    terms = slot_loss(one_hot_logits([1, 2], 3), cxcywh(A_NORM, B_NORM), [target], SIZE)
    assert terms["loss_classifier"].item() < 1e-9 and terms["loss_box_reg"].item() < 1e-6


def test_more_objects_than_slots_assigns_k_of_them():
    # 2 slots, 3 objects: the cheapest two of the six ways.
    cost = torch.tensor([[0.5, 0.1, 0.9],
                         [0.2, 0.3, 0.05]])
    slots, objects = assign(cost)
    assert slots.tolist() == [0, 1] and objects.tolist() == [1, 2]
    # One slot, two objects: the slot's object is learnt, the other one not at all. A slot that
    # predicts B perfectly costs nothing, whichever object the targets list first.
    for order in ([A, B], [B, A]):
        labels = [1, 2] if order[0] is A else [2, 1]
        target = {"boxes": torch.tensor(order), "labels": torch.tensor(labels)}
        terms = slot_loss(one_hot_logits([2], 3), cxcywh(B_NORM), [target], SIZE)
        assert terms["loss_classifier"].item() < 1e-9 and terms["loss_box_reg"].item() < 1e-6


def test_fewer_objects_than_slots_leaves_slots_to_no_object():
    slots, objects = assign(torch.tensor([[0.7], [0.2], [0.4]]))
    assert slots.tolist() == [1] and objects.tolist() == [0]
    target = {"boxes": torch.tensor([A]), "labels": torch.tensor([1])}
    # Slots 0 and 2 say "no object", slot 1 is A: perfect.
    perfect = slot_loss(one_hot_logits([0, 1, 0], 3), cxcywh((0.5,) * 4, A_NORM, (0.5,) * 4), [target], SIZE)
    assert perfect["loss_classifier"].item() < 1e-9 and perfect["loss_box_reg"].item() < 1e-6
    # An image without objects: every slot's target is "no object", no box term.
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    terms = slot_loss(torch.zeros(1, 3, 3), cxcywh(*[(0.5,) * 4] * 3), [empty], SIZE)
    assert terms["loss_classifier"].item() == pytest.approx(3 * math.log(3)) and terms["loss_box_reg"].item() == 0.0


@pytest.mark.parametrize("k, n", [(1, 4), (2, 2), (3, 5), (4, 3), (4, 6), (MAX_SLOTS, 4)])
def test_assignment_is_the_exact_minimum(k, n):
    generator = torch.Generator().manual_seed(10 * k + n)
    for _ in range(5):
        cost = torch.rand(k, n, generator=generator, dtype=torch.float64)
        slots, objects = assign(cost)
        assert len(slots) == min(k, n) and len(set(slots.tolist())) == len(slots) and len(set(objects.tolist())) == len(objects)
        if n <= k:  # every object gets a distinct slot
            best = min(sum(cost[s, j] for j, s in enumerate(p)) for p in itertools.permutations(range(k), n))
        else:  # every slot gets a distinct object
            best = min(sum(cost[s, j] for s, j in enumerate(p)) for p in itertools.permutations(range(n), k))
        assert cost[slots, objects].sum().item() == pytest.approx(float(best))


def test_loss_by_hand():
    # One slot, uniform over "no object" + 2 classes: -log(1/3). Its box (0.5, 0.5, 0.5, 0.5)
    # against A (0.2, 0.2, 0.2, 0.2): L1 = 4 x 0.3 = 1.2, x box_weight 5 = 6; L2 = 4 x 0.09 = 0.36.
    target = {"boxes": torch.tensor([A]), "labels": torch.tensor([1])}
    for box_loss, expected in (("l1", 6.0), ("l2", 1.8)):
        terms = slot_loss(torch.zeros(1, 1, 3), cxcywh((0.5,) * 4), [target], SIZE, box_loss=box_loss, box_weight=5.0)
        assert terms["loss_classifier"].item() == pytest.approx(math.log(3))
        assert terms["loss_box_reg"].item() == pytest.approx(expected, rel=1e-5)
    # Two images: each term is the sum over images divided by their number.
    terms = slot_loss(torch.zeros(2, 1, 3), torch.full((2, 1, 4), 0.5), [target, target], SIZE * 2)
    assert terms["loss_classifier"].item() == pytest.approx(math.log(3)) and terms["loss_box_reg"].item() == pytest.approx(6.0, rel=1e-5)


def test_sliding_windows_take_the_objects_centred_in_them():
    # 2 x 2 windows of one slot each (slot = row * 2 + column). A's centre (0.2, 0.2) is in window
    # 0, B's (0.8, 0.7) in window 3: perfect when those slots predict them and the others nothing.
    target = {"boxes": torch.tensor([B, A]), "labels": torch.tensor([2, 1])}
    rest = (0.5,) * 4
    perfect = slot_loss(one_hot_logits([1, 0, 0, 2], 3), cxcywh(A_NORM, rest, rest, B_NORM), [target], SIZE, grid=2)
    assert perfect["loss_classifier"].item() < 1e-9 and perfect["loss_box_reg"].item() < 1e-6
    # The same boxes in windows 1 and 2 are not theirs to predict.
    wrong = slot_loss(one_hot_logits([0, 1, 2, 0], 3), cxcywh(rest, A_NORM, B_NORM, rest), [target], SIZE, grid=2)
    assert wrong["loss_classifier"].item() > 4 * SURE - 1
    with pytest.raises(ValueError, match="do not split"):
        slot_loss(torch.zeros(1, 3, 3), torch.zeros(1, 3, 4), [target], SIZE, grid=2)


# ---------------------------------------------------------------------- decoding and the network
def test_decoding_gives_pixel_boxes_labels_and_scores():
    # Slot 0: (0.5, 0.5, 0.5, 0.5) most probably class 2; slot 1 near-certain "no object".
    logits = torch.tensor([[[0.0, 1.0, 2.0], [SURE, 0.0, 0.0]]]).repeat(2, 1, 1)
    boxes = torch.tensor([[[0.5, 0.5, 0.5, 0.5], [0.95, 0.5, 0.2, 0.2]]]).repeat(2, 1, 1)
    out = decode_slots(logits, boxes, [(100, 200), (50, 50)])
    probabilities = logits[0, 0].softmax(-1)
    assert len(out) == 2 and all(set(o) == {"boxes", "labels", "scores"} for o in out)
    first = out[0]  # an image 200 wide, 100 high
    assert first["boxes"].shape == (2, 4) and first["labels"].tolist() == [2, 1]
    assert first["boxes"][0].tolist() == pytest.approx([50.0, 25.0, 150.0, 75.0])
    assert first["boxes"][1].tolist() == pytest.approx([170.0, 40.0, 200.0, 60.0])  # clipped at the right edge
    assert first["scores"][0].item() == pytest.approx(probabilities[2].item())
    assert out[1]["boxes"][0].tolist() == pytest.approx([12.5, 12.5, 37.5, 37.5])
    # A threshold drops the "no object" slot; NMS keeps one of two same-class duplicates.
    assert len(decode_slots(logits, boxes, [(100, 200)] * 2, score_thresh=0.01)[0]["boxes"]) == 1
    twins = decode_slots(torch.tensor([[[0.0, 3.0, 0.0], [0.0, 2.0, 0.0]]]), torch.full((1, 2, 4), 0.5), [(64, 64)], nms_thresh=0.5)
    assert len(twins[0]["boxes"]) == 1 and twins[0]["scores"][0] > 0.8


@pytest.mark.parametrize("window", ["image", "sliding"])
def test_forward_in_train_and_eval_modes(window):
    torch.manual_seed(0)
    network = BoxRegressor(num_classes=4, slots=2, window=window, widths=[4, 8], hidden=16, input_size=32)
    images = [torch.rand(3, 32, 32), torch.rand(3, 40, 60)]
    targets = [{"boxes": torch.tensor([[2.0, 3.0, 20.0, 30.0]]), "labels": torch.tensor([3])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]
    network.train()
    terms = network(images, targets)
    assert set(terms) == {"loss_classifier", "loss_box_reg"} and all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())
    sum(terms.values()).backward()
    network.eval()
    with torch.no_grad():
        out = network(images)
    # 32 / 2^2 = 8 windows per side, 2 slots each: 128 boxes, of which the 100 best (detections_per_img).
    outputs = 2 if window == "image" else 100
    assert [len(o["boxes"]) for o in out] == [outputs, outputs]
    for image, result in zip(images, out):
        height, width = image.shape[-2:]
        assert result["boxes"].shape[1] == 4 and result["boxes"][:, 2].max() <= width and result["boxes"][:, 3].max() <= height
        assert ((result["labels"] >= 1) & (result["labels"] <= 3)).all() and ((result["scores"] > 0) & (result["scores"] < 1)).all()
    logits, boxes, grid = network.detector.predict(torch.zeros(1, 3, 64, 64))  # a larger input: more windows, same k
    assert grid == (1 if window == "image" else 16) and logits.shape == (1, 2 * grid * grid, 4) and boxes.shape == (1, 2 * grid * grid, 4)


def test_the_network_is_complete_after_init_and_bad_settings_are_config_errors():
    network = BoxRegressor(num_classes=7, slots=1)
    assert network.num_classes == network.detector.num_classes == 7
    for bad in ({"slots": 0}, {"slots": MAX_SLOTS + 1}, {"slots": True}, {"window": "grid"}, {"box_loss": "smooth_l1"},
                {"widths": []}, {"input_size": 8}, {"nms_thresh": 0.0}, {"num_classes": 1}):
        with pytest.raises(ConfigError):
            BoxRegressor(**{"num_classes": 7, **bad})
    with pytest.raises(ConfigError, match="MAX_SLOTS"):
        assign(torch.zeros(MAX_SLOTS + 1, 2))


# ---------------------------------------------------------------------- the table
def test_regression_to_detection_table_composes_every_row():
    spec = load_table("regression_to_detection")
    profile = spec.profile("quick")
    assert profile.seeds >= 2 and not profile.compare and not any(row.paper for row in spec.rows.values())
    runs = plan_runs(spec, "quick", [0], "/tmp/unused")
    plan = compose_plan(spec, profile, [0], runs, ConfigComposer())
    assert len(runs) == len(spec.rows) == 9  # no two rows share a config
    objects = {"one": 1, "two": 2, "many": 6}
    for name, row in plan.spec.rows.items():
        model, count = name.split("_")
        assert row.vars == {"objects": objects[count], "k": 1 if model == "k1" else 2}, name
    for run in runs:
        config = plan.composed[run.config_hash]
        network = get_dotted(config, "model.init_args.network.init_args")
        source = get_dotted(config, "data.init_args.source.init_args")
        assert get_dotted(config, "model.init_args.network.class_path") == "lightning_modules.networks.box_regressor.BoxRegressor"
        assert network["window"] == ("sliding" if run.key.startswith("sw") else "image")
        assert source["min_objects"] == source["max_objects"] and source["crowded_prob"] == 0.0
