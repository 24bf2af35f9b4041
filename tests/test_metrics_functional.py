"""Hand-computed cases of the R@K / mR@K protocol (docs/action_genome.md section 3) on the functional core."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch

from arn_lightning import vocab
from arn_lightning.benchmarks.metrics import random_prediction, random_target
from arn_lightning.boxes import InvalidBoxError
from arn_lightning.metrics.functional import (
    CONSTRAINTS,
    IOU_CONVENTIONS,
    K_VALUES,
    RecallConfig,
    frame_hits,
    paired_box_iou,
    ranked_triplets,
    scene_graph_recall,
)
from arn_lightning.metrics.predictions import prediction_from_ground_truth

PERSON, BOOK, CHAIR, CUP = 1, 5, 8, 11
IDX = vocab.PREDICATE_INDEX
PERSON_BOX = [0.0, 0.0, 100.0, 200.0]
CUP_BOX = [10.0, 10.0, 40.0, 40.0]
CHAIR_BOX = [50.0, 100.0, 150.0, 200.0]
FAR_BOX = [500.0, 500.0, 600.0, 600.0]


def make_target(
    boxes: Sequence[Sequence[float]], labels: Sequence[int], labels_per_object: Sequence[Sequence[str]]
) -> dict[str, torch.Tensor]:
    """GT with row 0 the person; ``labels_per_object[j]`` lists object j's predicate names (repeats count)."""
    counts = torch.zeros(len(labels_per_object), vocab.NUM_PREDICATES, dtype=torch.long)
    for j, names in enumerate(labels_per_object):
        for name in names:
            counts[j, IDX[name]] += 1
    return {
        "boxes": torch.tensor(boxes),
        "labels": torch.tensor(labels),
        "attention": counts[:, :3],
        "spatial": counts[:, 3:9],
        "contacting": counts[:, 9:],
    }


def make_pred(
    boxes: Sequence[Sequence[float]],
    labels: Sequence[int],
    pairs: Sequence[Sequence[int]],
    cells: dict[tuple[int, str], float],
    default: float = 0.01,
    scores: Sequence[float] = (),
) -> dict[str, torch.Tensor]:
    """Prediction whose predicate score is ``cells[(pair, name)]``, ``default`` elsewhere."""
    probs = torch.full((len(pairs), vocab.NUM_PREDICATES), default, dtype=torch.float64)
    for (pair, name), value in cells.items():
        probs[pair, IDX[name]] = value
    return {
        "boxes": torch.tensor(boxes),
        "labels": torch.tensor(labels),
        "scores": torch.tensor(list(scores) or [1.0] * len(boxes), dtype=torch.float64),
        "pairs": torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
        "attention": probs[:, :3],
        "spatial": probs[:, 3:9],
        "contacting": probs[:, 9:],
    }


def worked_example(chair_box: Sequence[float] = CHAIR_BOX, pairs: Sequence[Sequence[int]] = ((0, 1), (0, 2))):
    """The protocol page's PredCls frame: cup (looking_at, in_front_of, holding) and chair (not_looking_at,
    beneath + behind, sitting_on); every GT label scores 0.95-0.98, chair's behind 0.93, all others 0.01."""
    target = make_target(
        [PERSON_BOX, CUP_BOX, CHAIR_BOX],
        [PERSON, CUP, CHAIR],
        [["looking_at", "in_front_of", "holding"], ["not_looking_at", "beneath", "behind", "sitting_on"]],
    )
    cells = {
        (0, "looking_at"): 0.98,
        (0, "in_front_of"): 0.97,
        (0, "holding"): 0.96,
        (1, "not_looking_at"): 0.95,
        (1, "beneath"): 0.97,
        (1, "behind"): 0.93,
        (1, "sitting_on"): 0.96,
    }
    return make_pred([PERSON_BOX, CUP_BOX, chair_box], [PERSON, CUP, CHAIR], pairs, cells), target


def recall(pred, target, **options) -> dict[str, float]:
    results = scene_graph_recall([pred], [target], RecallConfig(**options))
    return {key: value.item() for key, value in results.items()}


def test_worked_example_with_semi_no() -> None:
    r = recall(*worked_example())
    for k in (10, 20, 50, 100):
        assert r[f"with/R@{k}"] == pytest.approx(6 / 7)  # chair has two spatial labels, one argmax
        assert r[f"semi/R@{k}"] == 1.0  # behind 0.93 > 0.9
        assert r[f"no/R@{k}"] == 1.0
    assert r["with/mR@10"] == pytest.approx(6 / 26) and r["semi/mR@10"] == pytest.approx(7 / 26)
    assert r["with/mR_per_frame@10"] == pytest.approx(6 / 26)  # one frame: both definitions agree
    assert r["with/hmean@10"] == pytest.approx(2 * (6 / 7) * (6 / 26) / (6 / 7 + 6 / 26))
    assert r["per_predicate/with/R@10/behind"] == 0.0 and r["per_predicate/with/R@10/beneath"] == 1.0


def test_worked_example_small_k_follows_the_ranking() -> None:
    # ranking: .98 cup looking_at, .97 cup in_front_of (spatial, pair 0) before .97 chair beneath (pair 1),
    # .96 cup holding before .96 chair sitting_on, .95 chair not_looking_at, .93 chair behind (semi, no)
    r = recall(*worked_example(), k_values=(5, 6, 7))
    assert [r[f"with/R@{k}"] for k in (5, 6, 7)] == pytest.approx([5 / 7, 6 / 7, 6 / 7])
    assert [r[f"semi/R@{k}"] for k in (5, 6, 7)] == pytest.approx([5 / 7, 6 / 7, 1.0])
    assert [r[f"no/R@{k}"] for k in (5, 6, 7)] == pytest.approx([5 / 7, 6 / 7, 1.0])


def test_moving_the_chair_box_removes_exactly_its_four_triplets() -> None:
    before = frame_hits(*zip(worked_example()))
    after = frame_hits(*zip(worked_example(chair_box=FAR_BOX)))
    chair = [IDX[name] for name in ("not_looking_at", "beneath", "behind", "sitting_on")]
    cup = [IDX[name] for name in ("looking_at", "in_front_of", "holding")]
    no = 2  # constraint order with, semi, no
    assert before.hits[0, no, 0].sum() == 7 and after.hits[0, no, 0].sum() == 3
    assert (after.hits[0, :, :, chair] == 0).all()
    assert (after.hits[0, :, :, cup] == before.hits[0, :, :, cup]).all()
    r = recall(*worked_example(chair_box=FAR_BOX))
    assert r["with/R@10"] == r["semi/R@10"] == r["no/R@10"] == pytest.approx(3 / 7)


def test_spatial_candidates_are_the_reversed_pair() -> None:
    pred, _ = worked_example()
    triplets = ranked_triplets(pred, "with")
    spatial = triplets["predicate"] == IDX["beneath"]
    assert triplets["subject"][spatial].tolist() == [2] and triplets["object"][spatial].tolist() == [0]
    attention = triplets["predicate"] == IDX["not_looking_at"]
    assert triplets["subject"][attention].tolist() == [0] and triplets["object"][attention].tolist() == [2]


def test_pair_given_as_object_person_does_not_hit() -> None:
    # pair (chair, person): its spatial candidate is (person, chair, .) and its attention (chair, person, .);
    # GT has (chair, person, spatial) and (person, chair, attention): none of chair's triplets is hit
    r = recall(*worked_example(pairs=((0, 1), (2, 0))))
    assert r["no/R@10"] == r["semi/R@10"] == r["with/R@10"] == pytest.approx(3 / 7)
    assert r["per_predicate/no/R@10/beneath"] == 0.0 and r["per_predicate/no/R@10/in_front_of"] == 1.0


def two_objects_target(first: Sequence[str], second: Sequence[str]):
    book_box = [60.0, 10.0, 90.0, 40.0]
    return make_target([PERSON_BOX, CUP_BOX, book_box], [PERSON, CUP, BOOK], [first, second]), [
        PERSON_BOX,
        CUP_BOX,
        book_box,
    ]


def test_equal_scores_keep_generation_order_pairs() -> None:
    target, boxes = two_objects_target(["looking_at"], ["not_looking_at"])
    cells = {(0, "looking_at"): 0.5, (1, "not_looking_at"): 0.5}
    r = recall(make_pred(boxes, [PERSON, CUP, BOOK], [(0, 1), (0, 2)], cells, default=0.0), target, k_values=(1,))
    assert r["per_predicate/with/R@1/looking_at"] == 1.0 and r["per_predicate/with/R@1/not_looking_at"] == 0.0
    swapped = {(0, "not_looking_at"): 0.5, (1, "looking_at"): 0.5}
    r = recall(make_pred(boxes, [PERSON, CUP, BOOK], [(0, 2), (0, 1)], swapped, default=0.0), target, k_values=(1,))
    assert r["per_predicate/with/R@1/looking_at"] == 0.0 and r["per_predicate/with/R@1/not_looking_at"] == 1.0


def test_equal_scores_attention_before_spatial() -> None:
    # cup's spatial (pair 0) and book's attention (pair 1) tie at 0.6: all attention candidates come first
    target, boxes = two_objects_target(["in_front_of"], ["looking_at"])
    cells = {(0, "in_front_of"): 0.6, (1, "looking_at"): 0.6}
    r = recall(make_pred(boxes, [PERSON, CUP, BOOK], [(0, 1), (0, 2)], cells, default=0.0), target, k_values=(1,))
    assert r["per_predicate/with/R@1/looking_at"] == 1.0 and r["per_predicate/with/R@1/in_front_of"] == 0.0


def test_semi_with_nothing_above_threshold_is_attention_only() -> None:
    pred, target = worked_example()
    for kind in ("spatial", "contacting"):
        pred[kind] = pred[kind].clamp(max=0.9)  # 0.9 itself is not above 0.9
    r = recall(pred, target)
    assert r["semi/R@100"] == pytest.approx(2 / 7)
    assert r["per_predicate/semi/R@100/looking_at"] == 1.0 and r["per_predicate/semi/R@100/beneath"] == 0.0
    r = recall(pred, target, semi_threshold=0.85)
    assert r["semi/R@100"] == 1.0


def crowded_frame(num_pairs: int = 5):
    """Pairs 0..P-2 point at a far box; the last pair is right; every cell scores 0.5 except the GT cell."""
    target = make_target([PERSON_BOX, CUP_BOX], [PERSON, CUP], [["writing_on"]])
    boxes = [PERSON_BOX, FAR_BOX, CUP_BOX]
    pairs = [(0, 1)] * (num_pairs - 1) + [(0, 2)]
    return boxes, pairs, target


def test_no_constraint_keeps_only_the_top_100() -> None:
    boxes, pairs, target = crowded_frame()  # 5 pairs x 26 = 130 cells
    pred = make_pred(boxes, [PERSON, CUP, CUP], pairs, {(4, "writing_on"): 0.2}, default=0.5)
    assert recall(pred, target, k_values=(100, 130))["no/R@130"] == 0.0  # rank 129 is cut at 100
    r = recall(pred, target, k_values=(100, 129, 130), no_constraint_top=130)
    assert (r["no/R@100"], r["no/R@129"], r["no/R@130"]) == (0.0, 0.0, 1.0)


def test_no_constraint_ties_across_the_cut_keep_generation_order() -> None:
    boxes, pairs, target = crowded_frame()  # all 130 cells score 0.5
    pred = make_pred(boxes, [PERSON, CUP, CUP], pairs, {}, default=0.5)
    # writing_on of the last pair is the last cell in generation order: 9P + 4 * 17 + 16 = 129
    assert recall(pred, target, k_values=(100, 130), no_constraint_top=130)["no/R@130"] == 1.0
    assert recall(pred, target, k_values=(100, 129), no_constraint_top=130)["no/R@129"] == 0.0
    # the right pair first: its contacting cells start at 9P = 45, writing_on is 45 + 16 = 61
    pred = make_pred(boxes, [PERSON, CUP, CUP], pairs[::-1], {}, default=0.5)
    r = recall(pred, target, k_values=(61, 62))
    assert (r["no/R@61"], r["no/R@62"]) == (0.0, 1.0)


def test_several_objects_duplicates_and_one_candidate_hitting_several() -> None:
    cup_b = [12.0, 10.0, 42.0, 40.0]  # overlaps cup A: the predicted cup matches both (IoU 0.935)
    book_box = [10.0, 100.0, 40.0, 130.0]
    target = make_target(
        [PERSON_BOX, CUP_BOX, cup_b, book_box],
        [PERSON, CUP, CUP, BOOK],
        [
            ["looking_at", "in_front_of", "holding", "holding"],
            ["looking_at", "beneath", "holding"],
            ["unsure", "above", "not_contacting"],
        ],
    )  # 10 GT triplets
    # rows: 0 book, 1 cup, 2 person (row 0 need not be the person)
    boxes, labels = [book_box, [11.0, 10.0, 41.0, 40.0], PERSON_BOX], [BOOK, CUP, PERSON]
    cells = {
        (0, "looking_at"): 0.9,
        (0, "in_front_of"): 0.8,
        (0, "beneath"): 0.7,
        (0, "holding"): 0.95,
        (1, "unsure"): 0.9,
        (1, "above"): 0.9,
        (1, "not_contacting"): 0.9,
    }
    r = recall(make_pred(boxes, labels, [(2, 1), (2, 0)], cells, default=0.0), target)
    assert r["with/R@10"] == pytest.approx(9 / 10)  # cup B's beneath is not the argmax
    assert r["semi/R@10"] == pytest.approx(6 / 10)  # looking_at x2, unsure, holding x3
    assert r["no/R@10"] == 1.0
    assert r["per_predicate/with/R@10/holding"] == 1.0 and r["per_predicate/with/R@10/beneath"] == 0.0


def iou_frame(object_gt: list[float], object_pred: list[float]):
    target = make_target([[0.0, 0.0, 99.0, 99.0], object_gt], [PERSON, CUP], [["looking_at"]])
    pred = make_pred([[0.0, 0.0, 99.0, 99.0], object_pred], [PERSON, CUP], [(0, 1)], {(0, "looking_at"): 0.9})
    return pred, target


def test_iou_conventions_at_the_boundary() -> None:
    a, b = np.array([[0.0, 0.0, 9.0, 9.0]]), np.array([[0.0, 0.0, 9.0, 4.0]])
    assert paired_box_iou(a, b)[0] == pytest.approx(36 / 81) and paired_box_iou(a, b, "legacy")[0] == 0.5
    pred, target = iou_frame([0.0, 0.0, 9.0, 9.0], [0.0, 0.0, 9.0, 4.0])  # continuous 0.444, legacy 0.5
    assert recall(pred, target)["with/R@10"] == 0.0
    assert recall(pred, target, iou_convention="legacy")["with/R@10"] == 1.0
    pred, target = iou_frame([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 5.0])  # continuous exactly 0.5 hits
    assert recall(pred, target)["with/R@10"] == 1.0
    assert recall(pred, target, iou_threshold=0.51)["with/R@10"] == 0.0


#: PredCls ground truth (no small-box filter): an ordinary book box, a book of width 0, a book of width and height 0.
DEGENERATE_OBJECT_BOXES = [[5.0, 5.0, 25.0, 25.0], [5.0, 5.0, 5.0, 25.0], [12.0, 8.0, 12.0, 8.0]]


@pytest.mark.parametrize("convention", IOU_CONVENTIONS)
def test_ground_truth_as_prediction_recalls_degenerate_boxes(convention: str) -> None:
    """Equal zero-area boxes have IoU 1 (0/0 was NaN: R@K was 1/3 here under the continuous IoU)."""
    targets = [
        make_target([[10.0, 5.0, 40.0, 45.0], box], [PERSON, BOOK], [["looking_at", "in_front_of", "holding"]])
        for box in DEGENERATE_OBJECT_BOXES
    ]
    preds = [prediction_from_ground_truth(target) for target in targets]
    results = scene_graph_recall(preds, targets, RecallConfig(iou_convention=convention), per_predicate=False)
    recalls = {(c, k): results[f"{c}/R@{k}"].item() for c in CONSTRAINTS for k in K_VALUES}
    assert recalls == {(c, k): 1.0 for c in CONSTRAINTS for k in K_VALUES}  # 3 constraints x K = 10, 20, 50, 100


@pytest.mark.parametrize("convention", IOU_CONVENTIONS)
def test_degenerate_person_and_object_boxes_match_only_themselves(convention: str) -> None:
    point, line = [12.0, 8.0, 12.0, 8.0], [10.0, 5.0, 10.0, 45.0]
    target = make_target([line, point], [PERSON, CUP], [["looking_at"]])
    hit = make_pred([line, point], [PERSON, CUP], [(0, 1)], {(0, "looking_at"): 0.9})
    assert recall(hit, target, iou_convention=convention)["with/R@10"] == 1.0
    moved = make_pred([line, [13.0, 8.0, 13.0, 8.0]], [PERSON, CUP], [(0, 1)], {(0, "looking_at"): 0.9})
    assert recall(moved, target)["with/R@10"] == 0.0  # another point: union 0, IoU 0 (not NaN, not 1)
    near = [12.5, 8.0, 12.5, 8.0]  # legacy: two 1 x 1 pixels overlapping by half
    iou = paired_box_iou(np.array([point, point, line]), np.array([point, near, line]), convention)
    assert iou.tolist() == ([1.0, 0.0, 1.0] if convention == "continuous" else [1.0, 1 / 3, 1.0])


def test_mean_recall_definitions_differ_on_three_frames() -> None:
    cups = [[10.0 + 30 * i, 10.0, 30.0 + 30 * i, 40.0] for i in range(3)]
    frame1 = make_target([PERSON_BOX, cups[0]], [PERSON, CUP], [["holding"]])
    frame2 = make_target([PERSON_BOX, *cups], [PERSON, CUP, CUP, CUP], [["holding"]] * 3)
    frame3 = make_target([PERSON_BOX, CUP_BOX], [PERSON, BOOK], [["touching"]])
    pred1 = make_pred([PERSON_BOX, cups[0]], [PERSON, CUP], [(0, 1)], {(0, "holding"): 0.9})
    pred2 = pred1  # hits one of the three cups of frame 2
    pred3 = make_pred([PERSON_BOX, CUP_BOX], [PERSON, BOOK], [(0, 1)], {(0, "holding"): 0.9})
    results = scene_graph_recall([pred1, pred2, pred3], [frame1, frame2, frame3])
    assert results["with/R@10"].item() == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert results["with/mR@10"].item() == pytest.approx((2 / 4) / 26)  # holding 2/4, touching 0/1
    assert results["with/mR_per_frame@10"].item() == pytest.approx(((1 + 1 / 3) / 2) / 26)
    assert results["per_predicate/with/R@10/holding"].item() == 0.5


def test_empty_frames() -> None:
    person_only = make_target([PERSON_BOX], [PERSON], [])
    nothing = make_pred([], [], [], {})
    pred, target = worked_example()
    results = scene_graph_recall([nothing, nothing, pred], [person_only, target, target])
    # the person-only frame has no GT triplet and is skipped; the empty prediction scores 0
    assert results["with/R@10"].item() == pytest.approx((0 + 6 / 7) / 2)
    assert scene_graph_recall([], [])["no/R@10"].item() == 0.0


def test_result_keys_and_config_errors() -> None:
    results = scene_graph_recall(
        *zip(worked_example()), RecallConfig(constraints=("no",), k_values=(20,)), per_predicate=False
    )
    assert list(results) == ["no/R@20", "no/mR@20", "no/mR_per_frame@20", "no/hmean@20"]
    assert all(value.dtype == torch.float64 for value in results.values())
    for bad in (
        {"constraints": ("all",)},
        {"k_values": (20, 10)},
        {"k_values": (0,)},
        {"semi_threshold": 1.0},
        {"iou_convention": "pixel"},
        {"no_constraint_top": 0},
        {"iou_threshold": 0.0},
    ):
        with pytest.raises(ValueError, match="Expected"):
            RecallConfig(**bad)


def test_input_errors_name_the_frame() -> None:
    pred, target = worked_example()
    with pytest.raises(ValueError, match=r"preds\[1\]\['pairs'\] .* but got 3"):
        frame_hits([pred, {**pred, "pairs": torch.tensor([[0, 1], [0, 3]])}], [target, target])
    with pytest.raises(ValueError, match=r"preds\[0\]\['spatial'\] of shape \[2, 6\]"):
        frame_hits([{**pred, "spatial": torch.zeros(2, 5)}], [target])
    with pytest.raises(ValueError, match=r"preds\[0\]\['scores'\] in \[0, 1\] but got nan"):
        frame_hits([{**pred, "scores": torch.tensor([1.0, float("nan"), 1.0])}], [target])
    with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\] to have the person row"):
        frame_hits([pred], [{**target, "boxes": torch.zeros(0, 4)}])
    with pytest.raises(ValueError, match=r"targets\[1\]\['labels'\] in \[1, 36\] but got 0"):
        frame_hits([pred, pred], [target, {**target, "labels": torch.tensor([1, 0, 8])}])
    with pytest.raises(ValueError, match=r"targets\[0\]\['labels'\] to hold integers"):
        frame_hits([pred], [{**target, "labels": torch.tensor([1.0, 11.0, 8.0])}])


@pytest.mark.parametrize(
    "bad_box, reason",
    [
        ([float("nan"), 10.0, 40.0, 40.0], "a non-finite coordinate"),
        ([10.0, 10.0, float("inf"), 40.0], "a non-finite coordinate"),
        ([40.0, 10.0, 10.0, 40.0], "x2 < x1"),
        ([10.0, 40.0, 40.0, 10.0], "y2 < y1"),
    ],
)
def test_boxes_breaking_the_rule_name_the_frame_and_row(bad_box: list[float], reason: str) -> None:
    pred, target = worked_example()
    bad_pred = {**pred, "boxes": torch.tensor([PERSON_BOX, bad_box, CHAIR_BOX])}
    with pytest.raises(InvalidBoxError, match=rf"Expected preds\[1\]\['boxes'\]\[1\] to be an xyxy box .*\({reason}\)"):
        frame_hits([pred, bad_pred], [target, target])
    bad_target = {**target, "boxes": torch.tensor([PERSON_BOX, CUP_BOX, bad_box])}
    with pytest.raises(InvalidBoxError, match=rf"Expected targets\[1\]\['boxes'\]\[2\] to be .*\({reason}\)"):
        frame_hits([pred, pred], [target, bad_target])
    frame_hits([pred, bad_pred], [target, bad_target], validate_args=False)  # no value checks: no error
    with pytest.raises(ValueError, match="frame"):
        frame_hits([{**pred, "frame": "a.mp4/000001.png"}], [{**target, "frame": "b.mp4/000001.png"}])
    with pytest.raises(ValueError, match="as many targets"):
        frame_hits([pred], [])


# ------------------------------------------------------------------------------- naive reference implementation
def naive_iou(a: Sequence[float], b: Sequence[float], legacy: bool) -> float:
    one = 1.0 if legacy else 0.0
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + one)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + one)
    area_a, area_b = ((box[2] - box[0] + one) * (box[3] - box[1] + one) for box in (a, b))
    return iw * ih / (area_a + area_b - iw * ih)


def naive_candidates(pred, constraint: str, config: RecallConfig) -> list[tuple[int, int, int]]:
    """(subject row, object row, predicate) in ranking order, built one by one as the protocol reads."""
    scores, pairs = pred["scores"].tolist(), pred["pairs"].tolist()
    candidates = []
    for kind in vocab.PREDICATE_TYPES:
        for p, (sub, obj) in enumerate(pairs):
            row = pred[kind][p].tolist()
            for local, value in enumerate(row):
                best = local == row.index(max(row))
                keep = {
                    "with": best,
                    "semi": best if kind == "attention" else value > config.semi_threshold,
                    "no": True,
                }[constraint]
                if keep:
                    c = vocab.TYPE_OFFSETS[kind] + local
                    triplet = (obj, sub, c) if kind == "spatial" else (sub, obj, c)
                    candidates.append((-(scores[sub] * scores[obj] * value), len(candidates), triplet))
    ranked = [triplet for *_, triplet in sorted(candidates)]
    return ranked[: config.no_constraint_top] if constraint == "no" else ranked


def naive_hits(pred, target, config: RecallConfig) -> np.ndarray:
    counts = torch.cat([target[kind] for kind in vocab.PREDICATE_TYPES], dim=1)
    gt_boxes, gt_labels = target["boxes"].tolist(), target["labels"].tolist()
    boxes, labels = pred["boxes"].tolist(), pred["labels"].tolist()
    hits = np.zeros((len(config.constraints), len(config.k_values), vocab.NUM_PREDICATES), dtype=np.int64)
    legacy = config.iou_convention == "legacy"
    for ci, constraint in enumerate(config.constraints):
        ranked = naive_candidates(pred, constraint, config)
        for j, c in zip(*np.nonzero(counts.numpy())):
            gt_sub, gt_obj = (j + 1, 0) if vocab.predicate_type(int(c)) == "spatial" else (0, j + 1)
            first = next(
                (
                    rank
                    for rank, (sub, obj, pc) in enumerate(ranked)
                    if pc == c
                    and labels[sub] == gt_labels[gt_sub]
                    and labels[obj] == gt_labels[gt_obj]
                    and naive_iou(boxes[sub], gt_boxes[gt_sub], legacy) >= config.iou_threshold
                    and naive_iou(boxes[obj], gt_boxes[gt_obj], legacy) >= config.iou_threshold
                ),
                None,
            )
            for ki, k in enumerate(config.k_values):
                hits[ci, ki, c] += int(counts[j, c]) if first is not None and first < k else 0
    return hits


def tied_random_frames(count: int, seed: int, num_pairs: int = -1):
    """Random SGDet-like frames with coarse scores (many exact ties); ``num_pairs`` -1: 0..8 pairs per frame."""
    rng = np.random.default_rng(seed)
    preds, targets = [], []
    for index in range(count):
        target = random_target(rng, f"v.mp4/{index:06d}.png")
        pred = random_prediction(rng, target, int(rng.integers(0, 9)) if num_pairs < 0 else num_pairs)
        for kind in vocab.PREDICATE_TYPES:
            pred[kind] = (pred[kind] * 4).round() / 4
        pred["scores"] = torch.where(pred["scores"] > 0.5, 1.0, 0.5)
        preds.append(pred)
        targets.append(target)
    return preds, targets


@pytest.mark.parametrize(
    "num_pairs, options",
    [
        (-1, {"k_values": (1, 3, 5, 10, 20)}),  # frames with different pair counts (padded layouts)
        (6, {"k_values": (1, 3, 5, 10, 20)}),  # all frames with 6 pairs (the unpadded "no" layout)
        (
            -1,
            {
                "k_values": (2, 7, 30),
                "no_constraint_top": 25,
                "iou_convention": "legacy",
                "semi_threshold": 0.7,
                "constraints": ("no", "with"),
            },
        ),
    ],
)
def test_batched_core_equals_naive_reference(num_pairs: int, options) -> None:
    config = RecallConfig(**options)
    preds, targets = tied_random_frames(40, seed=len(options), num_pairs=num_pairs)
    result = frame_hits(preds, targets, config)
    expected = np.stack([naive_hits(p, t, config) for p, t in zip(preds, targets, strict=True)])
    assert result.hits.sum() > 0 and (expected == result.hits).all()
    assert (
        result.gt_counts
        == np.stack([torch.cat([t[k] for k in vocab.PREDICATE_TYPES], 1).sum(0).numpy() for t in targets])
    ).all()
    for pred in preds[:10]:  # the single-frame ranking agrees with the naive one as well
        for constraint in config.constraints:
            ranked = ranked_triplets(pred, constraint, config)
            triplets = list(zip(ranked["subject"].tolist(), ranked["object"].tolist(), ranked["predicate"].tolist()))
            assert triplets == naive_candidates(pred, constraint, config)
